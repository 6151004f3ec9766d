//! `tollgate-bench websocket`: WebSocket messages per second through Tollgate with
//! metering off and on, against a direct connection to the same echo backend, a raw
//! byte copy (a proxy that copies bytes and understands nothing) and nginx when it is
//! installed, in one run and on one machine. Results are ratios to the direct
//! connection and to the raw copy; single timings mean little on a shared machine.
//!
//! Every server runs as its own process: the echo backend and the raw copy are this
//! binary's `echo` and `copy` subcommands, Tollgate is the release binary next to this
//! one. Every run is bounded in messages and in time.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The load: `connections` sockets, each sending `messages` binary messages of `size`
/// bytes with at most `window` awaiting their echo.
#[derive(Debug, Clone, Copy)]
struct Load {
    connections: usize,
    messages: usize,
    size: usize,
    window: usize,
    rounds: usize,
}

/// The longest a single round may take before the benchmark gives up on the target.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

const USAGE: &str =
    "usage: tollgate-bench websocket [--connections N] [--messages N] [--size BYTES] [--window N] [--rounds N]
       tollgate-bench idle [--connections N]   (memory per idle proxied WebSocket)
       tollgate-bench echo          (an echo WebSocket server; prints its port)
       tollgate-bench copy PORT     (a raw TCP byte copy to 127.0.0.1:PORT; prints its port)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("echo") => runtime.block_on(echo()),
        Some("copy") => {
            let port: u16 = args.get(1).and_then(|p| p.parse().ok()).ok_or_else(|| anyhow!("{USAGE}"))?;
            runtime.block_on(copy(port))
        }
        Some("websocket") => runtime.block_on(websocket(parse_load(&args[1..])?)),
        Some("idle") => {
            let n: usize = match args.get(1).map(String::as_str) {
                Some("--connections") => args.get(2).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("{USAGE}"))?,
                None => 1000,
                _ => bail!("{USAGE}"),
            };
            runtime.block_on(idle(n))
        }
        _ => bail!("{USAGE}"),
    }
}

fn parse_load(args: &[String]) -> Result<Load> {
    let mut load = Load { connections: 16, messages: 100_000, size: 64, window: 32, rounds: 3 };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| anyhow!("{flag} needs a positive number\n{USAGE}"))?;
        match flag.as_str() {
            "--connections" => load.connections = value,
            "--messages" => load.messages = value,
            "--size" => load.size = value,
            "--window" => load.window = value,
            "--rounds" => load.rounds = value,
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    Ok(load)
}

/// The echo backend: every data message goes back as it came.
async fn echo() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
            let (sink, stream) = ws.split();
            // `forward` feeds the sink and flushes only when the stream has nothing
            // ready, so a window of messages leaves in few writes.
            let _ = stream
                .filter(|m| std::future::ready(matches!(m, Ok(Message::Binary(_) | Message::Text(_)))))
                .forward(sink)
                .await;
        });
    }
}

/// A raw byte copy: the floor any proxy is measured against.
async fn copy(upstream: u16) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut backend) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
            let _ = (client.set_nodelay(true), backend.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
    }
}

/// A server process that prints the line it listens on; killed when dropped.
struct Process {
    _child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Resident memory of the process (and of its children, for nginx's workers), in bytes.
    fn rss(&self) -> Result<u64> {
        let pid = self._child.id().context("exited")?;
        let mut total = 0;
        let mut pids = vec![pid];
        while let Some(p) = pids.pop() {
            let status = std::fs::read_to_string(format!("/proc/{p}/status"))?;
            let kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total += kb * 1024;
            let children = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
        Ok(total)
    }
}

async fn spawn(mut cmd: Command, port_of: impl Fn(&str) -> Option<u16>) -> Result<Process> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(p) = port_of(&line) {
                return Ok(p);
            }
        }
        Err(anyhow!("exited before printing its port"))
    })
    .await
    .map_err(|_| anyhow!("did not print its port within 30 s"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Process { _child: child, addr: ([127, 0, 0, 1], port).into() })
}

fn own(sub: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(sub);
    Ok(cmd)
}

fn listening(line: &str) -> Option<u16> {
    line.strip_prefix("listening on ").and_then(|p| p.trim().parse().ok())
}

/// The Tollgate binary built next to this one (`cargo build --release`), or $TOLLGATE.
fn tollgate_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TOLLGATE") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("tollgate");
    if !bin.exists() {
        bail!("{} is missing: run `cargo build --release -p tollgate` (bench/websocket.sh does)", bin.display());
    }
    Ok(bin)
}

fn tollgate_config(echo: SocketAddr, metering: bool) -> String {
    let websocket = if metering {
        "{ name: websocket, configuration: { meter_messages: { metric: messages, direction: both } } }"
    } else {
        "{ name: websocket }"
    };
    format!(
        r#"
backends: [ {{ system_name: echo, private_base_url: "ws://{echo}" }} ]
products:
  - system_name: bench
    staging_public_base_url: http://bench.localhost
    production_public_base_url: http://bench-production.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: messages }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain: [ {websocket} ]
    application_plans:
      - system_name: unlimited
        limits: [ {{ metric: messages, period: minute, value: 1000000000000 }} ]
accounts:
  - name: bench
    applications: [ {{ name: load, product: bench, plan: unlimited, user_key: bench-key }} ]
"#
    )
}

async fn tollgate(dir: &Path, echo: SocketAddr, metering: bool) -> Result<Process> {
    let config = dir.join(if metering { "metering-on.yaml" } else { "metering-off.yaml" });
    std::fs::write(&config, tollgate_config(echo, metering))?;
    let mut cmd = Command::new(tollgate_bin()?);
    cmd.args(["--log", "warn", "serve", "--config"]).arg(&config).args([
        "--staging-listen",
        "127.0.0.1:0",
        "--production-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    spawn(cmd, |line| {
        line.strip_prefix("tollgate: staging gateway")
            .and_then(|url| url.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok())
    })
    .await
}

/// nginx as a WebSocket reverse proxy (as its documentation configures one), if
/// installed. It cannot listen on port 0: a free port is taken and released first.
async fn nginx(dir: &Path, echo: SocketAddr) -> Result<Option<Process>> {
    let Ok(bin) = which("nginx") else { return Ok(None) };
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("logs"))?;
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/logs/error.log crit;
worker_rlimit_nofile 20000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{echo};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s;
    }}
  }}
}}
"#,
            root = root.display()
        ),
    )?;
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(&root)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // Ready when it accepts connections (bounded).
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(Some(Process { _child: child, addr }));
        }
        if let Some(status) = child.try_wait()? {
            bail!("nginx exited ({status}); is port {port} taken?");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nginx did not start listening on {addr}")
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} not found"))
}

/// One connection's share of a round: sends its messages with a bounded window and
/// reads every echo back, checking each one's length.
async fn one_connection(addr: SocketAddr, host: &str, path: &str, load: Load) -> Result<()> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    req.headers_mut().insert("host", host.parse()?);
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    let (mut sink, mut stream) = ws.split();
    let window = Arc::new(Semaphore::new(load.window));
    let payload = vec![0x5Au8; load.size];
    let credit = window.clone();
    let reader = async move {
        for _ in 0..load.messages {
            match stream.next().await {
                Some(Ok(Message::Binary(b))) if b.len() == load.size => credit.add_permits(1),
                other => bail!("unexpected reply: {other:?}"),
            }
        }
        Ok(stream)
    };
    let writer = async move {
        for _ in 0..load.messages {
            let permit = match window.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    // The window is full: send what is queued, then wait for echoes.
                    sink.flush().await?;
                    window.acquire().await?
                }
            };
            permit.forget();
            sink.feed(Message::binary(payload.clone())).await?;
        }
        sink.flush().await?;
        Ok::<_, anyhow::Error>(sink)
    };
    let (sink, stream) = tokio::try_join!(writer, reader)?;
    let mut ws = sink.reunite(stream).map_err(|_| anyhow!("reunite"))?;
    let _ = ws.close(None).await;
    Ok(())
}

/// Messages per second (each message counted once, although it crosses the proxy
/// twice) for one round against `addr`.
async fn round(addr: SocketAddr, host: &str, path: &str, load: Load) -> Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..load.connections)
        .map(|_| {
            let (host, path) = (host.to_string(), path.to_string());
            tokio::spawn(async move { one_connection(addr, &host, &path, load).await })
        })
        .collect();
    let all = async {
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(ROUND_LIMIT, all).await.map_err(|_| anyhow!("the round took over {ROUND_LIMIT:?}"))??;
    Ok((load.connections * load.messages) as f64 / started.elapsed().as_secs_f64())
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    host: &'static str,
    path: &'static str,
    _process: Option<Process>,
}

async fn websocket(load: Load) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = websocket_in(&dir, load).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn websocket_in(dir: &Path, load: Load) -> Result<()> {
    let echo = spawn(own(&["echo"])?, listening).await.context("echo backend")?;
    let copy = spawn(own(&["copy", &echo.addr.port().to_string()])?, listening).await.context("raw copy")?;
    let mut targets = vec![
        Target { name: "direct", addr: echo.addr, host: "127.0.0.1", path: "/", _process: None },
        Target { name: "raw byte copy", addr: copy.addr, host: "127.0.0.1", path: "/", _process: None },
    ];
    match nginx(dir, echo.addr).await? {
        Some(p) => {
            targets.push(Target { name: "nginx", addr: p.addr, host: "127.0.0.1", path: "/", _process: Some(p) })
        }
        None => eprintln!("nginx is not installed: its row is left out (apt-get install nginx)"),
    }
    for (name, metering) in [("tollgate, metering off", false), ("tollgate, metering on", true)] {
        let p = tollgate(dir, echo.addr, metering).await.with_context(|| name.to_string())?;
        targets.push(Target {
            name,
            addr: p.addr,
            host: "bench.localhost",
            path: "/?user_key=bench-key",
            _process: Some(p),
        });
    }
    println!(
        "WebSocket echo: {} connections x {} messages of {} bytes, window {}, best of {} rounds (rounds interleaved)",
        load.connections, load.messages, load.size, load.window, load.rounds
    );
    // Rounds interleave the targets, so a slow moment of the machine hits all alike.
    let mut best = vec![0f64; targets.len()];
    for _ in 0..load.rounds {
        for (t, b) in targets.iter().zip(best.iter_mut()) {
            let rate = round(t.addr, t.host, t.path, load).await.with_context(|| t.name)?;
            *b = b.max(rate);
        }
    }
    let (direct, raw) = (best[0], best[1]);
    println!("{:<24} {:>14} {:>10} {:>12}", "target", "messages/s", "÷ direct", "÷ raw copy");
    for (t, b) in targets.iter().zip(&best) {
        println!("{:<24} {:>14.0} {:>10.2} {:>12.2}", t.name, b, b / direct, b / raw);
    }
    Ok(())
}

/// Memory per idle proxied WebSocket: the proxy's resident memory with `n` open, idle
/// connections (each has exchanged one message), minus its memory before they opened,
/// over `n`. Client addresses are spread over 127.0.0.0/8.
async fn idle(n: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = idle_in(&dir, n).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn idle_in(dir: &Path, n: usize) -> Result<()> {
    let echo = spawn(own(&["echo"])?, listening).await.context("echo backend")?;
    let mut targets: Vec<(&str, Process, &str, &str)> = Vec::new();
    if let Some(p) = nginx(dir, echo.addr).await? {
        targets.push(("nginx", p, "127.0.0.1", "/"));
    }
    targets.push((
        "tollgate, metering off",
        tollgate(dir, echo.addr, false).await?,
        "bench.localhost",
        "/?user_key=bench-key",
    ));
    targets.push((
        "tollgate, metering on",
        tollgate(dir, echo.addr, true).await?,
        "bench.localhost",
        "/?user_key=bench-key",
    ));
    println!("Idle proxied WebSockets: {n} connections, each after one echoed message");
    println!("{:<24} {:>14} {:>16}", "proxy", "RSS growth", "bytes/connection");
    for (name, process, host, path) in &targets {
        let before = process.rss()?;
        let mut open = Vec::with_capacity(n);
        for i in 0..n {
            // Each connection from its own loopback address of 127.0.0.0/8, so repeated
            // runs never run out of ports (closed ones linger in TIME_WAIT).
            let src: SocketAddr = ([127, 1 + (i / 250 % 250) as u8, 1 + (i % 250) as u8, 1], 0).into();
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(src)?;
            let tcp = socket.connect(process.addr).await?;
            let mut req = format!("ws://{}{path}", process.addr).into_client_request()?;
            req.headers_mut().insert("host", host.parse()?);
            let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.with_context(|| name.to_string())?;
            ws.send(Message::binary(vec![1u8; 32])).await?;
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => {}
                other => bail!("{name}: unexpected reply {other:?}"),
            }
            open.push(ws);
        }
        let after = process.rss()?;
        let growth = after.saturating_sub(before);
        println!("{:<24} {:>11} KiB {:>16}", name, growth / 1024, growth / n as u64);
        drop(open);
    }
    Ok(())
}
