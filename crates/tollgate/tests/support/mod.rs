//! Test support: real peers on loopback port 0 — the example's Node `ws` backend over
//! https with an openssl-made certificate, a Rust HTTP backend, in-process gateways —
//! and small clients. Nothing here waits on time: every step waits for an event (a
//! line printed, a port accepting, a message arriving).
#![allow(dead_code)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tollgate::cli::{Cli, Command, ServeArgs};
use tollgate::serve::{Server, Source};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "tollgate-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

pub fn example_dir() -> PathBuf {
    repo_root().join("examples/websocket-echo")
}

/// A self-signed certificate made by the example's openssl script: (certificate, key).
pub fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let out = std::process::Command::new("sh")
        .arg(example_dir().join("make-cert.sh"))
        .arg(dir)
        .output()
        .expect("run make-cert.sh (needs openssl)");
    assert!(out.status.success(), "make-cert.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    (dir.join("certificate.pem"), dir.join("key.pem"))
}

/// The example's Node `ws` server over https, on a free port.
pub struct NodeBackend {
    pub port: u16,
    pub cert: PathBuf,
    _child: tokio::process::Child,
    _dir: TempDir,
}

impl NodeBackend {
    pub fn url(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }
}

pub async fn node_backend() -> NodeBackend {
    let example = example_dir();
    assert!(
        example.join("node_modules/ws").exists(),
        "the example's npm packages are missing: run `npm ci --prefix examples/websocket-echo` (the README's test command does)"
    );
    let dir = TempDir::new();
    let (cert, _) = make_cert(dir.path());
    let mut child = tokio::process::Command::new("node")
        .arg(example.join("server.js"))
        .env("PORT", "0")
        .env("CERT_DIR", dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let port = listening_port(&mut child).await;
    NodeBackend { port, cert, _child: child, _dir: dir }
}

/// The port a Node peer says it listens on (its first line, `listening on PORT`); its
/// stdout is drained from then on, so the child never blocks on a full pipe.
async fn listening_port(child: &mut tokio::process::Child) -> u16 {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("read node stdout").expect("node printed nothing");
    let port = first
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected: {first}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    port
}

/// Node's `ws` as a plain WebSocket echo server (`tests/peers/plain_echo.js`,
/// permessage-deflate on): the child, killed on drop, and its port.
pub async fn plain_echo() -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new("node")
        .arg(repo_root().join("crates/tollgate/tests/peers/plain_echo.js"))
        .env("WS_MODULE", example_dir().join("node_modules/ws"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (run `npm ci --prefix examples/websocket-echo`)");
    let port = listening_port(&mut child).await;
    (child, port)
}

/// A body of `n` bytes produced in 64 KiB chunks, never held whole in memory.
pub struct Generated {
    pub remaining: u64,
    chunk: Bytes,
}

impl Generated {
    pub fn new(n: u64) -> Self {
        Generated { remaining: n, chunk: Bytes::from(vec![b'x'; 64 * 1024]) }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
}

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).boxed()
}

/// A Rust HTTP backend: `/upload` counts a streamed body, `/download?bytes=N` streams N
/// bytes, `/status/N` answers N, `/never` never answers, anything else describes the
/// request as JSON (with the port the gateway connected from, to see connection reuse).
pub async fn http_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(backend_route(req, peer).await)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

async fn backend_route(req: Request<Incoming>, peer: SocketAddr) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    if path == "/never" {
        return std::future::pending().await;
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Response::new(full(format!("{{\"bytes\":{n}}}")));
    }
    if path == "/download" {
        let n = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("bytes=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return Response::new(Generated::new(n).boxed());
    }
    if path.ends_with("/redirect") {
        // A redirect to its own address, as backends write them: `?to=PATH`.
        let own = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
        let to =
            req.uri().query().and_then(|q| q.strip_prefix("to=")).map_or("/", |t| t.split('&').next().unwrap_or(t));
        let to = to.to_string();
        let mut r = Response::new(full("moved"));
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert("location", format!("http://{own}{to}").parse().expect("location"));
        r.headers_mut().insert("refresh", format!("0; url=http://{own}{to}").parse().expect("refresh"));
        return r;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse::<u16>().ok()) {
        let mut r = Response::new(full("status"));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return r;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), serde_json::Value::String(v.to_str().unwrap_or("").to_string())))
        .collect();
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "headers": headers,
        "peer": peer.port(),
    });
    let mut r = Response::new(full(body.to_string()));
    r.headers_mut().insert("connection", http::HeaderValue::from_static("keep-alive, x-secret"));
    r.headers_mut().insert("x-secret", http::HeaderValue::from_static("hop-by-hop"));
    r
}

/// Every listener of `serve` on a free loopback port.
pub const PORT0: [&str; 6] =
    ["--staging-listen", "127.0.0.1:0", "--production-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];

pub fn serve_args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["tollgate", "serve"];
    argv.extend_from_slice(&PORT0);
    argv.extend_from_slice(extra);
    let cli = <Cli as clap::Parser>::try_parse_from(argv).expect("serve flags");
    match cli.command {
        Command::Serve(args) => args,
        _ => unreachable!(),
    }
}

/// A gateway serving `yaml` (written to a file, so reloads can be tested).
pub struct TestGateway {
    pub server: Server,
    pub config: PathBuf,
    pub dir: TempDir,
}

pub async fn gateway(yaml: &str) -> TestGateway {
    gateway_with(yaml, &[]).await
}

pub async fn gateway_with(yaml: &str, extra: &[&str]) -> TestGateway {
    gateway_at(yaml, extra, std::sync::Arc::new(tollgate_counters::SystemClock)).await
}

/// [`gateway_with`] reading time from `clock` (see [`stopped_clock`]).
pub async fn gateway_at(
    yaml: &str,
    extra: &[&str],
    clock: std::sync::Arc<dyn tollgate_counters::Clock>,
) -> TestGateway {
    let dir = TempDir::new();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let server =
        Server::start_with_clock(&serve_args(extra), Source::File(config.clone()), tollgate::serve::Role::All, clock)
            .await
            .expect("start gateway");
    TestGateway { server, config, dir }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `addr` with the given Host and path (e.g. `/?user_key=k`).
pub async fn ws(addr: SocketAddr, host: &str, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request().expect("request");
    req.headers_mut().insert("host", host.parse().expect("host"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async_tls_with_config(req, tcp, None, None).await.map(|(ws, _)| ws)
}

/// The HTTP status of a refused WebSocket handshake, with its body.
pub async fn ws_refused(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    match ws(addr, host, path).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

/// Sends a text message and returns the next text reply.
pub async fn ask(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("send");
    loop {
        match ws.next().await.expect("stream ended").expect("receive") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A plain HTTP/1.1 client that keeps connections alive.
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, BoxBody> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` with `Host: host` on `addr`: (status, headers, body).
/// A metric from the admin listener's `/metrics` at `admin`, summed over its labels.
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (_, _, text) = get(admin, "localhost", "/metrics").await;
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
    request(addr, host, "GET", path, full(Bytes::new()), &[]).await
}

pub async fn request(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: BoxBody,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client().request(b.body(body).expect("request")).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

pub fn boxed<B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static>(b: B) -> BoxBody {
    b.boxed()
}

/// Writes raw bytes on a new connection and reads until the server closes or `limit`
/// bytes arrived; returns what was read.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 64 * 1024 {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request head from `tcp`, a byte at a time so that nothing after it is
/// taken (a hand-written backend answers by the head, then reads the next one);
/// `None` once the connection ends first.
pub async fn read_request_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The status code of the first response in raw HTTP/1.1 text.
pub fn status_of(raw: &str) -> u16 {
    raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {raw:?}"))
}

pub async fn ws_message(ws: &mut Ws) -> Message {
    ws.next().await.expect("stream ended").expect("receive")
}

pub async fn send(ws: &mut Ws, m: Message) {
    ws.send(m).await.expect("send");
}

/// Reads the spawned server's stdout for its staging port.
pub async fn staging_port(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> u16 {
    while let Some(line) = lines.next_line().await.expect("stdout") {
        if let Some(url) = line.strip_prefix("tollgate: staging gateway") {
            return url.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        }
    }
    panic!("the server exited before printing its addresses");
}

/// Store URLs for the store-mode tests: a fresh SQLite file and a fresh PostgreSQL
/// schema (on 127.0.0.1:5432, database `test`, or TOLLGATE_TEST_POSTGRES).
pub async fn store_urls(dir: &TempDir) -> Vec<(&'static str, String)> {
    static N: AtomicU64 = AtomicU64::new(0);
    let sqlite = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let base =
        std::env::var("TOLLGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "it_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        dir.path().display().to_string().len()
    );
    sqlx::any::install_default_drivers();
    let mut admin =
        <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    vec![("sqlite", sqlite), ("postgres", format!("{base}{sep}options=-c%20search_path%3D{schema}"))]
}

/// A whole `serve` in store mode.
pub async fn store_server(url: &str) -> Server {
    Server::start(&serve_args(&[]), Source::Store(url.to_string())).await.expect("start in store mode")
}

/// [`store_server`] whose gateways, counters, analytics and live views read `clock`
/// (see [`stopped_clock`]).
pub async fn store_server_at(url: &str, clock: std::sync::Arc<dyn tollgate_counters::Clock>) -> Server {
    let source = Source::Store(url.to_string());
    Server::start_with_clock(&serve_args(&[]), source, tollgate::serve::Role::All, clock)
        .await
        .expect("start in store mode")
}

/// A clock stopped at the wall clock's now: usage windows never turn under a test
/// (a minute limit counts all its traffic, however long it runs), and what it records
/// still falls in the admin API's default periods (a day before now).
pub fn stopped_clock() -> std::sync::Arc<tollgate_counters::ManualClock> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    std::sync::Arc::new(tollgate_counters::ManualClock::new(now))
}

/// Calls the admin API: (status, JSON body or Null).
pub async fn api(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let token = server.admin_token.clone().expect("first start creates a token");
    api_as(server, &token, method, path, body).await
}

pub async fn api_as(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = format!("Bearer {token}");
    let (status, _, text) = request(
        server.admin,
        "localhost",
        method,
        &format!("/api/v1{path}"),
        full(bytes),
        &[("authorization", auth.as_str()), ("content-type", "application/json")],
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// A `tollgate serve --config FILE` process on port 0.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub staging: SocketAddr,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
    /// Its log lines, to wait for a log event.
    pub err: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

pub async fn spawn_serve(config: &Path) -> Spawned {
    spawn_serve_with(config, &[]).await
}

/// [`spawn_serve`] with more `serve` flags.
pub async fn spawn_serve_with(config: &Path, extra: &[&str]) -> Spawned {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--log", "info", "serve", "--config"])
        .arg(config)
        .args(PORT0)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let port = staging_port(&mut out).await;
    let mut admin = None;
    while let Some(line) = out.next_line().await.expect("stdout") {
        if let Some(rest) = line.strip_prefix("tollgate: admin") {
            let url = rest.split_whitespace().next().expect("admin URL");
            admin = url.trim_start_matches("http://").parse().ok();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    Spawned { child, staging: ([127, 0, 0, 1], port).into(), admin: admin.expect("admin address"), err }
}

/// A configuration of one product published on `staging_host` (staging) over `backend`,
/// whose every path counts one hit, with an application whose `user_key` is `k`.
pub fn open_config(backend: SocketAddr, staging_host: &str) -> String {
    format!(
        r#"
backends: [ {{ system_name: b, private_base_url: "http://{backend}" }} ]
products:
  - system_name: api
    staging_public_base_url: http://{staging_host}
    production_public_base_url: http://api-production.test
    backend_usages: [ {{ backend: b, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits, delta: 1 }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: api, plan: basic, user_key: k }} ]
"#
    )
}
