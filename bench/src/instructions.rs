//! User-space instructions per HTTP request and per WebSocket session (`--only
//! instructions`), counted by valgrind's callgrind: a count that does not depend on
//! what else the machine is doing, so two commits (or Tollgate and nginx) compare on a
//! noisy machine where CPU time does not.
//!
//! Each proxy runs under `valgrind --tool=callgrind` (nginx with one process:
//! `master_process off`). A warm-up goes first (requests on the kept-alive connection
//! that is then measured; whole sessions), then `callgrind_control --zero` clears the
//! counts, the measured requests or sessions go one after another, and
//! `callgrind_control --dump` writes the counts: their `summary` (every instruction of
//! every thread, the runtime's idle wake-ups included) divided by the requests or
//! sessions. Runs of the same binary agree to a few instructions per request.
//! `TOLLGATE_BENCH_KEEP=1` keeps the dumps, for `callgrind_annotate --inclusive=yes`.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peers::{self, Backends, Process, which};
use crate::report::{Row, Table};
use crate::ws::{self, Target};

/// Requests sent before the counts are cleared (connections to the backend made,
/// caches warm): a tenth of those counted, from 10 to 200.
fn warm_up(requests: usize) -> usize {
    (requests / 10).clamp(10, 200)
}

/// One proxy under callgrind.
struct Counted {
    process: Process,
    pid: u32,
    /// The dump files' common prefix (`callgrind.NAME.PID`).
    prefix: PathBuf,
}

/// Two tables: per HTTP request (Tollgate key only and with key + 20 rules + limits,
/// nginx's plain proxy) and per WebSocket session (connect, upgrade with key auth, one
/// 32-byte message each way, close; Tollgate metering every message, nginx passing the
/// upgrade), the baseline binary likewise when one is named (`TOLLGATE_BASELINE`);
/// `requests` requests and a tenth as many sessions, each after its warm-up.
pub async fn table(dir: &Path, to: Backends, cert: &Path, key: &Path, requests: usize) -> Result<Vec<Table>> {
    which("valgrind").context("the instructions measure runs the proxies under valgrind: install valgrind")?;
    let root = dir.join("callgrind");
    std::fs::create_dir_all(&root)?;
    let sessions = (requests / 10).max(2);
    let (mut http, mut ws) = (Vec::new(), Vec::new());

    let (nginx, fronts) = nginx(&root, to).await?;
    http.push(row("nginx", count(&nginx, requests, Client::run(fronts.http, "plain.localhost", requests)).await?));
    ws.push(row("nginx", count(&nginx, sessions, run_sessions(target(fronts.ws, "127.0.0.1"), sessions)).await?));
    drop(nginx);

    let mut binaries = vec![("tollgate", peers::tollgate_bin()?)];
    if let Some(b) = peers::baseline_bin() {
        binaries.push(("baseline tollgate", b));
    }
    for (name, bin) in binaries {
        let (tollgate, fronts) = tollgate(&root, name, &bin, dir, to, cert, key).await?;
        for (what, host) in [("key only", "plain.localhost"), ("key + 20 rules + limits", "full.localhost")] {
            let per = count(&tollgate, requests, Client::run(fronts.http, host, requests)).await?;
            http.push(row(&format!("{name}, {what}"), per));
        }
        let per = count(&tollgate, sessions, run_sessions(target(fronts.ws, "metered.localhost"), sessions)).await?;
        ws.push(row(&format!("{name}, metering on"), per));
    }
    let table =
        |key, title: String, unit, rows| Table { key, title, unit, rows, higher_is_better: false, baseline: None };
    Ok(vec![
        table(
            "instructions",
            format!(
                "User-space instructions per HTTP request of the proxy process (callgrind; one kept-alive connection, {requests} requests after {}; lower is better)",
                warm_up(requests)
            ),
            "instructions/request",
            http,
        ),
        table(
            "instructions_ws",
            format!(
                "User-space instructions per WebSocket session of the proxy process (callgrind; connect, upgrade with key auth, one 32-byte message and its echo, close; {sessions} sessions one after another after {}; lower is better)",
                warm_up(sessions)
            ),
            "instructions/session",
            ws,
        ),
    ])
}

fn target(addr: SocketAddr, host: &str) -> Target {
    Target { addr, host: host.to_string(), path: format!("/?{}", crate::KEY) }
}

/// `n` WebSocket sessions to `t`, one after another (after a warm-up of
/// [`warm_up`]`(n)`, run by [`count`] first).
async fn run_sessions(t: Target, n: usize) -> Result<Work> {
    let warm = warm_up(n);
    for i in 0..warm {
        ws::session(&t, i).await.context("a warm-up WebSocket session")?;
    }
    Ok(Box::pin(async move {
        for i in 0..n {
            ws::session(&t, warm + i).await.context("a counted WebSocket session")?;
        }
        Ok(())
    }))
}

fn row(name: &str, per: f64) -> Row {
    Row { name: name.to_string(), rate: per, p50: None, p99: None, rounds: vec![per], split: None }
}

/// The valgrind command line that counts into `root` under `name`.
fn callgrind(root: &Path, name: &str) -> Vec<String> {
    let file = root.join(format!("callgrind.{}.%p", name.replace([' ', ','], "-")));
    vec!["--tool=callgrind".into(), "--quiet".into(), format!("--callgrind-out-file={}", file.display())]
}

async fn tollgate(
    root: &Path,
    name: &str,
    bin: &Path,
    dir: &Path,
    to: Backends,
    cert: &Path,
    key: &Path,
) -> Result<(Counted, Fronts)> {
    let wrapper = callgrind(root, name);
    let (process, fronts) = peers::tollgate_from(Some((&which("valgrind")?, &wrapper)), bin, dir, to, cert, key, &[])
        .await
        .with_context(|| format!("{name} under callgrind"))?;
    let pid = process.id().context("tollgate exited")?;
    let prefix = root.join(format!("callgrind.{}.{pid}", name.replace([' ', ','], "-")));
    Ok((Counted { process, pid, prefix }, Fronts { http: fronts.http, ws: fronts.ws }))
}

/// Where a proxy takes HTTP requests and WebSocket upgrades.
struct Fronts {
    http: SocketAddr,
    ws: SocketAddr,
}

/// nginx in one process (no master, one worker's work in it), proxying to the backend
/// with kept-alive connections as the `http` measure's nginx does, and WebSocket
/// upgrades to the echo backend as the `handshakes` measure's nginx does.
async fn nginx(root: &Path, to: Backends) -> Result<(Counted, Fronts)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let ws_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = format!(
        r#"master_process off;
daemon off;
{prelude}
  upstream backend {{ server {backend}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
  server {{
    listen 127.0.0.1:{ws_port};
    location / {{
      proxy_pass http://{echo};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
    }}
  }}
}}
"#,
        prelude = peers::nginx_prelude(root, 1),
        backend = to.http,
        echo = to.ws,
    );
    let file = root.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let mut cmd = tokio::process::Command::new(which("valgrind")?);
    cmd.args(callgrind(root, "nginx")).arg(which("nginx")?).arg("-p").arg(root).arg("-c").arg(&file);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let process = peers::spawn_listening("nginx under callgrind", cmd, peers::loopback(port)).await?;
    let pid = process.id().context("nginx exited")?;
    let fronts = Fronts { http: peers::loopback(port), ws: peers::loopback(ws_port) };
    Ok((Counted { process, pid, prefix: root.join(format!("callgrind.nginx.{pid}")) }, fronts))
}

/// What is counted, prepared (connected, warmed up) and not yet started.
type Work = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Instructions per operation: `prepare` warms up and hands back the work, whose `n`
/// operations are counted alone (counts zeroed before it, dumped after it).
async fn count(proxy: &Counted, n: usize, prepare: impl std::future::Future<Output = Result<Work>>) -> Result<f64> {
    let work = prepare.await?;
    control(proxy, "--zero").await?;
    work.await?;
    let before = dumps(&proxy.prefix)?;
    control(proxy, "--dump").await?;
    let after = dumps(&proxy.prefix)?;
    let file = after.into_iter().find(|f| !before.contains(f)).context("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&file)?;
    let total: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .with_context(|| format!("no summary line in {}", file.display()))?
        .trim()
        .parse()?;
    Ok(total / n as f64)
}

async fn control(proxy: &Counted, what: &str) -> Result<()> {
    let _alive = &proxy.process;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(which("callgrind_control")?).arg(what).arg(proxy.pid.to_string()).output(),
    )
    .await
    .context("callgrind_control did not return within 60 s")??;
    if !out.status.success() {
        bail!("callgrind_control {what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The dump files written so far (`PREFIX.1`, `PREFIX.2`, …).
fn dumps(prefix: &Path) -> Result<Vec<PathBuf>> {
    let dir = prefix.parent().context("dump dir")?;
    let name = format!("{}.", prefix.file_name().context("dump name")?.to_string_lossy());
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&name)))
        .collect())
}

/// One kept-alive HTTP/1.1 connection sending `GET /v1/items/42?user_key=…` and reading
/// each response (Content-Length framed, status 200) before the next.
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    /// `requests` requests on a new connection, after the warm-up (sent here).
    async fn run(addr: SocketAddr, host: &str, requests: usize) -> Result<Work> {
        let mut conn = Client::connect(addr, host).await?;
        conn.send(warm_up(requests)).await?;
        Ok(Box::pin(async move { conn.send(requests).await }))
    }

    async fn connect(addr: SocketAddr, host: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let request = format!("GET /v1/items/42?{} HTTP/1.1\r\nHost: {host}\r\n\r\n", crate::KEY).into_bytes();
        Ok(Client { stream, request, buf: Vec::with_capacity(4096) })
    }

    async fn send(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.stream.write_all(&self.request).await?;
            self.response().await?;
        }
        Ok(())
    }

    async fn response(&mut self) -> Result<()> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?;
                if !head.starts_with("HTTP/1.1 200") {
                    bail!("expected 200, got: {}", head.lines().next().unwrap_or(""));
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                    .context("a response without Content-Length")?
                    .1
                    .trim()
                    .parse()?;
                if self.buf.len() >= end + 4 + length {
                    self.buf.drain(..end + 4 + length);
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(std::time::Duration::from_secs(60), self.stream.read(&mut chunk))
                .await
                .context("no response within 60 s")??;
            if n == 0 {
                bail!("the proxy closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
