//! The contestants and the backends they front, each its own process on 127.0.0.1:
//! an nginx serving a fixed 200 (the HTTP backend), this binary's `echo` (the WebSocket
//! backend), nginx and HAProxy as reverse proxies, and Tollgate. Every configuration
//! is written here, in one place, so the comparison's fairness can be read off it:
//! every proxy runs two workers (nginx `worker_processes 2`, HAProxy `nbthread 2`,
//! Tollgate's two runtime threads on this 2-core machine), keeps connections to the
//! backend alive, and passes WebSocket upgrades.

use anyhow::{Context, Result, anyhow, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Worker processes or threads of every proxy: the machine's cores.
pub fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// A server process; killed when dropped.
pub struct Process {
    child: Child,
}

impl Drop for Process {
    /// SIGTERM first, and a bounded wait: nginx's master stops its workers on SIGTERM,
    /// whereas the SIGKILL of `kill_on_drop` (which still follows if the process
    /// lingers) would leave them running, orphaned.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Process {
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its stderr, when the command that started it piped it (once).
    pub fn take_stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Resident memory of the process and of its children (nginx's workers), in bytes.
    pub fn rss(&self) -> Result<u64> {
        let pid = self.child.id().context("exited")?;
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

/// Starts `cmd` and reads its stdout until `ports_of` has found every port it needs.
/// Its stderr is the caller's to set (inherited unless set).
pub async fn spawn_reading(
    mut cmd: Command,
    mut ports_of: impl FnMut(&str) -> Option<Vec<u16>>,
) -> Result<(Process, Vec<u16>)> {
    let mut child = cmd.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let ports = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(p) = ports_of(&line) {
                return Ok(p);
            }
        }
        Err(anyhow!("exited before printing its ports"))
    })
    .await
    .map_err(|_| anyhow!("did not print its ports within 30 s"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Process { child }, ports))
}

/// One of this binary's own server subcommands, which print `listening on PORT`.
pub async fn own(sub: &[&str]) -> Result<(Process, SocketAddr)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(sub);
    let (p, ports) = spawn_reading(cmd, |line| {
        line.strip_prefix("listening on ").and_then(|p| p.trim().parse().ok()).map(|p| vec![p])
    })
    .await
    .with_context(|| sub.join(" "))?;
    Ok((p, loopback(ports[0])))
}

pub fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// nginx and HAProxy cannot listen on port 0: a free port is taken and released first.
async fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

/// Starts `cmd` and waits (up to a minute: a program under valgrind starts slowly)
/// until it accepts connections on `addr`.
pub async fn spawn_listening(name: &str, mut cmd: Command, addr: SocketAddr) -> Result<Process> {
    let mut child = cmd.kill_on_drop(true).spawn().with_context(|| format!("{name}: cannot start"))?;
    accepting_within(name, &mut child, addr, Duration::from_secs(60)).await?;
    Ok(Process { child })
}

/// Waits (bounded) until `addr` accepts connections or the process exits.
async fn accepting(name: &str, child: &mut Child, addr: SocketAddr) -> Result<()> {
    accepting_within(name, child, addr, Duration::from_secs(5)).await
}

/// [`accepting`], for up to `patience`. (A listener tells no one it is ready: the
/// port is tried every 25 ms.)
async fn accepting_within(name: &str, child: &mut Child, addr: SocketAddr, patience: Duration) -> Result<()> {
    let every = Duration::from_millis(25);
    for _ in 0..patience.as_millis() / every.as_millis() {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}); is port {} taken?", addr.port());
        }
        tokio::time::sleep(every).await;
    }
    bail!("{name} did not start listening on {addr} within {} s", patience.as_secs())
}

pub fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} not found: `bench/run` installs it (apt-get install -y nginx haproxy wrk)"))
}

/// First line a command prints of its own version, for the report.
pub fn version(cmd: &str, arg: &str) -> String {
    std::process::Command::new(which(cmd).unwrap_or_else(|_| cmd.into()))
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|_| "not found".into())
}

/// A self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1, by openssl:
/// (certificate, key, both in one file for HAProxy).
pub fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (cert, key, both) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("both.pem"));
    let status = std::process::Command::new(which("openssl")?)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("openssl could not make a certificate");
    }
    std::fs::write(&both, [std::fs::read(&cert)?, std::fs::read(&key)?].concat())?;
    Ok((cert, key, both))
}

/// Ports of the services every proxy offers: plain HTTP, WebSocket, HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct Fronts {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub tls: SocketAddr,
}

/// Where the proxies send traffic.
#[derive(Debug, Clone, Copy)]
pub struct Backends {
    /// nginx answering every request with a fixed 200.
    pub http: SocketAddr,
    /// The same nginx over TLS: the "direct" row of the TLS table.
    pub https: SocketAddr,
    /// This binary's `echo` WebSocket server.
    pub ws: SocketAddr,
    /// This binary's `grpc` server (h2c).
    pub grpc: SocketAddr,
}

pub(crate) fn nginx_prelude(root: &Path, workers: usize) -> String {
    let root = root.display();
    format!(
        r#"
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log crit;
worker_rlimit_nofile 20000;
events {{ worker_connections 20000; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  keepalive_requests 1000000;
  ssl_session_cache off;
  ssl_session_tickets off;
"#
    )
}

async fn nginx(root: &Path, conf: String, wait: SocketAddr) -> Result<Process> {
    std::fs::create_dir_all(root)?;
    let file = root.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let mut child = Command::new(which("nginx")?)
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&file)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    accepting("nginx", &mut child, wait).await?;
    Ok(Process { child })
}

/// The HTTP backend: nginx with one worker answering `200 ok` on plain and TLS ports;
/// the plain port also on 127.0.0.2 and 127.0.0.3 (one server reached at three
/// addresses: the `fleet` measure's three endpoints, so it measures the balancing only).
pub async fn http_backend(dir: &Path, cert: &Path, key: &Path) -> Result<(Process, SocketAddr, SocketAddr)> {
    let (http, https) = (free_port().await?, free_port().await?);
    let root = dir.join("nginx-backend");
    let conf = format!(
        r#"{prelude}
  server {{
    listen 127.0.0.1:{http} reuseport backlog=4096;
    listen 127.0.0.2:{http} reuseport backlog=4096;
    listen 127.0.0.3:{http} reuseport backlog=4096;
    listen 127.0.0.1:{https} ssl reuseport backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ return 200 "ok\n"; }}
  }}
}}
"#,
        prelude = nginx_prelude(&root, 1),
        cert = cert.display(),
        key = key.display(),
    );
    let p = nginx(&root, conf, loopback(http)).await.context("nginx backend")?;
    Ok((p, loopback(http), loopback(https)))
}

/// nginx as the reverse proxy its documentation describes: upstream keep-alive for
/// HTTP, `Upgrade`/`Connection` passed for WebSocket, TLS terminated with the same
/// certificate as every other contestant.
pub async fn nginx_proxy(dir: &Path, to: Backends, cert: &Path, key: &Path) -> Result<(Process, Fronts)> {
    let fronts = Fronts {
        http: loopback(free_port().await?),
        ws: loopback(free_port().await?),
        tls: loopback(free_port().await?),
    };
    let root = dir.join("nginx-proxy");
    let conf = format!(
        r#"{prelude}
  upstream backend {{ server {backend}; keepalive 128; }}
  upstream fleet {{
    server 127.0.0.1:{port}; server 127.0.0.2:{port}; server 127.0.0.3:{port};
    keepalive 128;
  }}
  upstream echo {{ server {echo}; }}
  server {{
    listen {http} backlog=4096;
    listen {tls} ssl backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
  server {{
    listen {http};
    server_name fleet.localhost;
    location / {{
      proxy_pass http://fleet;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
  server {{
    listen {ws} backlog=4096;
    location / {{
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s;
    }}
  }}
}}
"#,
        prelude = nginx_prelude(&root, workers()),
        backend = to.http,
        port = to.http.port(),
        echo = to.ws,
        http = fronts.http,
        tls = fronts.tls,
        ws = fronts.ws,
        cert = cert.display(),
        key = key.display(),
    );
    let p = nginx(&root, conf, fronts.ws).await.context("nginx proxy")?;
    Ok((p, fronts))
}

/// HAProxy in HTTP mode: `nbthread` as many as the cores, connection reuse to the
/// backend, WebSocket upgrades (which HAProxy passes by itself), `maxconn` 9,500 as
/// this machine's open-files limit of 20,000 allows.
pub async fn haproxy(dir: &Path, to: Backends, both: &Path) -> Result<(Process, Fronts)> {
    let fronts = Fronts {
        http: loopback(free_port().await?),
        ws: loopback(free_port().await?),
        tls: loopback(free_port().await?),
    };
    let root = dir.join("haproxy");
    std::fs::create_dir_all(&root)?;
    let file = root.join("haproxy.cfg");
    std::fs::write(
        &file,
        format!(
            r#"
global
  nbthread {workers}
  maxconn 9500
  tune.ssl.cachesize 0
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout tunnel 300s
  http-reuse always
  option http-keep-alive
frontend http
  bind {http}
  bind {tls} ssl crt {both} no-tls-tickets
  default_backend backend
frontend ws
  bind {ws}
  default_backend echo
backend backend
  server b {backend}
backend echo
  server e {echo}
"#,
            workers = workers(),
            http = fronts.http,
            tls = fronts.tls,
            ws = fronts.ws,
            both = both.display(),
            backend = to.http,
            echo = to.ws,
        ),
    )?;
    let mut child = Command::new(which("haproxy")?)
        .arg("-f")
        .arg(&file)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    accepting("haproxy", &mut child, fronts.ws).await?;
    Ok((Process { child }, fronts))
}

/// The Tollgate binary built next to this one, or $TOLLGATE.
pub fn tollgate_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TOLLGATE") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("tollgate");
    if !bin.exists() {
        bail!("{} is missing: run `cargo build --release -p tollgate` (bench/run does)", bin.display());
    }
    Ok(bin)
}

/// The Tollgate products of the benchmark, one per host name:
/// - `plain.localhost`: `user_key` authentication, one mapping rule, no limits, no policies;
/// - `full.localhost`: `user_key`, 20 mapping rules (the request matches the 17th and
///   the catch-all), limits per minute, hour and day on two metrics;
/// - `ws.localhost`: the `websocket` policy, no metering;
/// - `metered.localhost`: the `websocket` policy metering every message both ways
///   against a per-minute limit.
pub fn tollgate_config(to: Backends) -> String {
    let mut rules = String::new();
    for (i, resource) in
        ["users", "orders", "carts", "payments", "invoices", "reviews", "sessions", "search"].iter().enumerate()
    {
        rules.push_str(&format!(
            "      - {{ http_method: GET, pattern: \"/v1/{resource}/{{id}}\", metric: reads }}\n      \
             - {{ http_method: POST, pattern: /v1/{resource}, metric: writes }}\n"
        ));
        if i == 3 {
            rules.push_str("      - { http_method: GET, pattern: /v1/health$, metric: hits }\n");
        }
    }
    rules.push_str("      - { http_method: GET, pattern: \"/v1/items/{id}\", metric: reads }\n");
    rules.push_str("      - { http_method: DELETE, pattern: \"/v1/items/{id}\", metric: writes }\n");
    rules.push_str("      - { http_method: GET, pattern: /, metric: hits }\n");
    format!(
        r#"
backends:
  - {{ system_name: ok, private_base_url: "http://{http}" }}
  - {{ system_name: echo, private_base_url: "ws://{ws}" }}
  - {{ system_name: grpc, private_base_url: "http://{grpc}", protocol: http2 }}
  - system_name: fleet
    private_base_url: "http://{http}"
    endpoints: [ {{ address: "127.0.0.1:{port}" }}, {{ address: "127.0.0.2:{port}" }}, {{ address: "127.0.0.3:{port}" }} ]
products:
  - system_name: grpc
    staging_public_base_url: http://grpc.localhost
    production_public_base_url: https://grpc.localhost
    authentication: {{ credentials_location: headers }}
    backend_usages: [ {{ backend: grpc, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    mapping_rules: [ {{ http_method: POST, pattern: /bench.Echo/Unary, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
  - system_name: fleet
    staging_public_base_url: http://fleet.localhost
    production_public_base_url: https://fleet.localhost
    backend_usages: [ {{ backend: fleet, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
  - system_name: plain
    staging_public_base_url: http://plain.localhost
    production_public_base_url: https://plain.localhost
    backend_usages: [ {{ backend: ok, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
  - system_name: full
    staging_public_base_url: http://full.localhost
    production_public_base_url: https://full.localhost
    backend_usages: [ {{ backend: ok, path: / }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: reads }}, {{ system_name: writes }} ]
    mapping_rules:
{rules}    application_plans:
      - system_name: gold
        limits:
          - {{ metric: hits, period: minute, value: 1000000000000 }}
          - {{ metric: hits, period: hour, value: 1000000000000 }}
          - {{ metric: hits, period: day, value: 1000000000000 }}
          - {{ metric: reads, period: minute, value: 1000000000000 }}
  - system_name: ws
    staging_public_base_url: http://ws.localhost
    production_public_base_url: https://ws.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: messages }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: websocket }} ]
    application_plans: [ {{ system_name: basic }} ]
  - system_name: metered
    staging_public_base_url: http://metered.localhost
    production_public_base_url: https://metered.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: messages }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: websocket, configuration: {{ meter_messages: {{ metric: messages, direction: both }} }} }} ]
    application_plans:
      - system_name: metered
        limits: [ {{ metric: messages, period: minute, value: 1000000000000 }} ]
accounts:
  - name: bench
    applications:
      - {{ name: plain, product: plain, plan: basic, user_key: bench-key }}
      - {{ name: fleet, product: fleet, plan: basic, user_key: bench-key }}
      - {{ name: grpc, product: grpc, plan: basic, user_key: bench-key }}
      - {{ name: full, product: full, plan: gold, user_key: bench-key }}
      - {{ name: ws, product: ws, plan: basic, user_key: bench-key }}
      - {{ name: metered, product: metered, plan: metered, user_key: bench-key }}
"#,
        http = to.http,
        port = to.http.port(),
        ws = to.ws,
        grpc = to.grpc,
    )
}

/// Tollgate with the products above: plain HTTP and WebSocket on the staging
/// listener, TLS on the production one (same products, `https://` hosts).
/// `extra` flags go to `serve` (e.g. `--counters redis://…`).
pub async fn tollgate(
    dir: &Path,
    to: Backends,
    cert: &Path,
    key: &Path,
    extra: &[String],
) -> Result<(Process, Fronts)> {
    tollgate_from(None, &tollgate_bin()?, dir, to, cert, key, extra).await
}

/// A second Tollgate to compare with (`TOLLGATE_BASELINE`: another build's binary, say
/// the commit before a change), when one is named.
pub fn baseline_bin() -> Option<PathBuf> {
    std::env::var_os("TOLLGATE_BASELINE").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// [`tollgate`] with the binary `bin`, run by `wrapper` (a program and its arguments,
/// before the binary: valgrind) when one is given.
pub async fn tollgate_from(
    wrapper: Option<(&Path, &[String])>,
    bin: &Path,
    dir: &Path,
    to: Backends,
    cert: &Path,
    key: &Path,
    extra: &[String],
) -> Result<(Process, Fronts)> {
    let config = dir.join("tollgate.yaml");
    std::fs::write(&config, tollgate_config(to))?;
    let mut cmd = match wrapper {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.args(["--log", "warn", "serve", "--config"])
        .arg(&config)
        .args(["--staging-listen", "127.0.0.1:0", "--production-listen", "tls://127.0.0.1:0"])
        // The listener's connection cap (8,192 by default) above the 9,000 idle sockets.
        .args(["--admin-listen", "127.0.0.1:0", "--max-connections", "19000", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
    cmd.args(extra);
    let (mut staging, mut production) = (None, None);
    let (p, ports) = spawn_reading(cmd, move |line| {
        let port = |rest: &str| rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        if let Some(rest) = line.strip_prefix("tollgate: staging gateway") {
            staging = port(rest);
        } else if let Some(rest) = line.strip_prefix("tollgate: production gateway") {
            production = port(rest);
        }
        Some(vec![staging?, production?])
    })
    .await
    .context("tollgate")?;
    let fronts = Fronts { http: loopback(ports[0]), ws: loopback(ports[0]), tls: loopback(ports[1]) };
    Ok((p, fronts))
}
