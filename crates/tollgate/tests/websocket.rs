//! The WebSocket user story, end to end: the example's Node `ws` backend over https with
//! an openssl-made self-signed certificate, behind staging and production gateways.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tollgate_gateway::Environment;

const KEY: &str = "2d4c1f0e9b8a7d6c5b4a3f2e1d0c9b8a";

fn config(backend: &NodeBackend, extra_chain: &str, hits_per_minute: u64) -> String {
    format!(
        r#"
backends:
  - system_name: echo
    private_base_url: {url}
    tls: {{ ca_file: {cert} }}
products:
  - system_name: chat
    staging_public_base_url: http://chat-staging.localhost:8081
    production_public_base_url: http://chat.localhost:8080
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits, unit: hit }} ]
    methods: [ {{ system_name: connect }} ]
    mapping_rules:
      - {{ http_method: GET, pattern: /, metric: connect, delta: 1 }}
    policy_chain: [ {extra_chain} {{ name: tollgate }} ]
    application_plans:
      - system_name: basic
        limits: [ {{ metric: hits, period: minute, value: {hits_per_minute} }} ]
accounts:
  - name: acme
    applications:
      - {{ name: acme-chat, product: chat, plan: basic, user_key: {KEY} }}
      - {{ name: acme-old, product: chat, plan: basic, user_key: suspended-key, state: suspended }}
"#,
        url = backend.url(),
        cert = backend.cert.display(),
    )
}

/// Every gateway here counts minute limits on a stopped clock: a test's traffic never
/// straddles two windows (this shadows `support::gateway`).
async fn gateway(yaml: &str) -> TestGateway {
    gateway_at(yaml, &[], stopped_clock()).await
}

#[tokio::test]
async fn hello_through_staging_and_production() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 100)).await;
    let path = format!("/?user_key={KEY}");

    let mut staging = ws(gw.server.staging, "chat-staging.localhost", &path).await.expect("staging upgrade");
    assert_eq!(ask(&mut staging, "hello").await, "reply from server : hello");

    let mut production = ws(gw.server.production, "chat.localhost:8080", &path).await.expect("production upgrade");
    assert_eq!(ask(&mut production, "hello").await, "reply from server : hello");

    // Hosts are per environment: the staging host means nothing to production.
    let (status, body) = ws_refused(gw.server.production, "chat-staging.localhost", &path).await;
    assert_eq!(status, 404);
    assert!(body.contains("unknown_host"), "{body}");
}

#[tokio::test]
async fn upgrades_are_authenticated_mapped_and_limited() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 2)).await;
    let addr = gw.server.staging;
    let host = "chat-staging.localhost";

    let (status, body) = ws_refused(addr, host, "/").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("auth_missing"), "{body}");
    let (status, body) = ws_refused(addr, host, "/?user_key=wrong").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("auth_failed"), "{body}");
    let (status, _) = ws_refused(addr, host, "/?user_key=suspended-key").await;
    assert_eq!(status, 403);

    // Two hits a minute: the third upgrade is refused with rate-limit headers.
    let path = format!("/?user_key={KEY}");
    let _a = ws(addr, host, &path).await.expect("first");
    let _b = ws(addr, host, &path).await.expect("second");
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}{path}"))
            .expect("req");
    req.headers_mut().insert("host", host.parse().expect("host"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let h = resp.headers();
            assert_eq!(h["ratelimit-limit"], "2");
            assert_eq!(h["ratelimit-remaining"], "0");
            let retry: u64 = h["retry-after"].to_str().expect("ascii").parse().expect("number");
            assert!((1..=60).contains(&retry), "retry-after {retry}");
            assert_eq!(h["ratelimit-reset"], h["retry-after"]);
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn websocket_needs_the_websocket_policy() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "", 100)).await;
    let (status, body) = ws_refused(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await;
    assert_eq!(status, 400);
    assert!(body.contains("websocket_disabled") && body.contains("`websocket` policy"), "{body}");
}

#[tokio::test]
async fn invalid_upgrades_get_400() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 100)).await;
    let addr = gw.server.staging;
    let base = format!(
        "GET /?user_key={KEY} HTTP/1.1\r\nHost: chat-staging.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    );
    for (what, extra) in [
        ("no key", "Sec-WebSocket-Version: 13\r\n"),
        ("short key", "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n"),
        ("wrong version", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"),
    ] {
        let resp = raw(addr, format!("{base}{extra}Connection: close\r\n\r\n").as_bytes()).await;
        assert_eq!(status_of(&resp), 400, "{what}: {resp}");
        assert!(resp.contains("bad_upgrade"), "{what}: {resp}");
        assert!(resp.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{what}: {resp}");
    }
    let post = format!(
        "POST /?user_key={KEY} HTTP/1.1\r\nHost: chat-staging.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(status_of(&raw(addr, post.as_bytes()).await), 400);
}

#[tokio::test]
async fn ten_thousand_messages_each_way_arrive_complete_and_in_order() {
    const N: usize = 10_000;
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 100)).await;
    let socket = ws(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    let (mut sink, mut stream) = socket.split();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            sink.feed(Message::text(format!("m{i}"))).await.expect("send");
        }
        sink.flush().await.expect("flush");
        sink
    });
    for i in 0..N {
        match stream.next().await.expect("stream ended").expect("receive") {
            Message::Text(t) => assert_eq!(t.as_str(), format!("reply from server : m{i}")),
            other => panic!("unexpected {other:?} at {i}"),
        }
    }
    let mut sink = sender.await.expect("sender");
    sink.send(Message::Close(None)).await.expect("close");
}

#[tokio::test]
async fn close_codes_travel_both_ways_and_pings_pass_through() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 100)).await;
    let path = format!("/?user_key={KEY}");

    // Client → backend: the backend (Node ws) answers a close with the code it received.
    let mut a = ws(gw.server.staging, "chat-staging.localhost", &path).await.expect("upgrade");
    a.send(Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    match ws_message(&mut a).await {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the backend's pong, got {other:?}"),
    }
    a.send(Message::Close(Some(CloseFrame { code: CloseCode::Library(4000), reason: "client-bye".into() })))
        .await
        .expect("close");
    match ws_message(&mut a).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "client-bye")),
        other => panic!("expected close 4000, got {other:?}"),
    }

    // Backend → client.
    let mut b = ws(gw.server.staging, "chat-staging.localhost", &path).await.expect("upgrade");
    b.send(Message::text("close 4001 server-bye")).await.expect("send");
    match ws_message(&mut b).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4001, "server-bye")),
        other => panic!("expected close 4001, got {other:?}"),
    }
    // 1000 (normal) too.
    let mut c = ws(gw.server.staging, "chat-staging.localhost", &path).await.expect("upgrade");
    c.send(Message::text("close 1000")).await.expect("send");
    assert!(matches!(ws_message(&mut c).await, Message::Close(Some(f)) if f.code == CloseCode::Normal));
}

#[tokio::test]
async fn node_client_negotiates_subprotocol_and_permessage_deflate_end_to_end() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 100)).await;
    let script = r#"
const WebSocket = require(process.env.WS_MODULE);
const ws = new WebSocket(process.env.URL, ['chat'], { headers: { host: 'chat-staging.localhost' }, perMessageDeflate: true });
ws.on('error', (e) => { console.error(e.message); process.exit(1); });
const big = 'compressible '.repeat(5000);
ws.on('open', () => ws.send(big));
ws.on('message', (m) => {
  console.log(JSON.stringify({ protocol: ws.protocol, extensions: ws.extensions, ok: String(m) === 'reply from server : ' + big }));
  ws.close(1000);
});
ws.on('close', (code) => process.exit(code === 1000 ? 0 : 3));
"#;
    let out = tokio::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .env("WS_MODULE", example_dir().join("node_modules/ws"))
        .env("URL", format!("ws://{}/?user_key={KEY}", gw.server.staging))
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node client failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(v["protocol"], "chat");
    assert_eq!(v["extensions"], "permessage-deflate");
    assert_eq!(v["ok"], true);
}

/// A gateway whose staging listener is TLS (a self-signed certificate): (gateway,
/// certificate, the directory holding both).
async fn tls_gateway(backend: &NodeBackend) -> (tollgate::serve::Server, std::path::PathBuf, TempDir) {
    let dir = TempDir::new();
    let (cert, key) = make_cert(dir.path());
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let config_path = dir.path().join("tollgate.yaml");
    std::fs::write(&config_path, config(backend, "{ name: websocket },", 100)).expect("write");
    let args = serve_args(&["--tls-cert", &cert_s, "--tls-key", &key_s]);
    let args = tollgate::cli::ServeArgs { staging_listen: "tls://127.0.0.1:0".into(), ..args };
    let server =
        tollgate::serve::Server::start(&args, tollgate::serve::Source::File(config_path)).await.expect("start");
    assert!(server.url(Environment::Staging).starts_with("https://"));
    (server, cert, dir)
}

#[tokio::test]
async fn chromium_opens_its_websocket_over_http2_through_the_gateway() {
    let backend = node_backend().await;
    let (server, _cert, _dir) = tls_gateway(&backend).await;
    let origin = format!("https://chat-staging.localhost:{}", server.staging.port());
    let script = repo_root().join("crates/tollgate/tests/browser/websocket.js");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("{origin}/"))
        .arg(format!("wss://chat-staging.localhost:{}/?user_key={KEY}", server.staging.port()))
        .args(["hello", "from chromium"])
        .output()
        .await
        .expect("node (and `npm ci --prefix crates/tollgate/tests/browser`, Debian's chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        result["replies"],
        serde_json::json!(["reply from server : hello", "reply from server : from chromium"])
    );
    assert_eq!(result["close"]["code"], 1000, "{result}");
    // Chromium used the HTTP/2 connection of the page (RFC 8441), not a new HTTP/1.1 one.
    let metrics = get(server.admin, "localhost", "/metrics").await.2;
    let accepted = |version: &str| {
        let series = format!(
            "tollgate_websocket_upgrades_total{{environment=\"staging\",version=\"{version}\",result=\"accepted\"}} "
        );
        metrics.lines().find_map(|l| l.strip_prefix(&series)).map(str::to_string)
    };
    assert_eq!((accepted("2").as_deref(), accepted("1.1").as_deref()), (Some("1"), Some("0")), "{metrics}");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_listener_serves_wss_and_http2() {
    let backend = node_backend().await;
    let (server, cert, _dir) = tls_gateway(&backend).await;

    let tls = tollgate_model::BackendTls { ca_file: Some(cert.clone()), ..tollgate_model::BackendTls::default() };
    let client_config = Arc::new(tollgate_gateway::upstream::client_tls_config(&tls).expect("tls config"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "wss://127.0.0.1:{}/?user_key={KEY}",
        server.staging.port()
    ))
    .expect("req");
    req.headers_mut().insert("host", "chat-staging.localhost".parse().expect("host"));
    let tcp = tokio::net::TcpStream::connect(server.staging).await.expect("connect");
    let (mut socket, _) = tokio_tungstenite::client_async_tls_with_config(
        req,
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(client_config)),
    )
    .await
    .expect("wss upgrade");
    assert_eq!(ask(&mut socket, "hello").await, "reply from server : hello");
    // Close it: an open WebSocket would hold shutdown for the drain timeout.
    socket.close(None).await.expect("close");
    while socket.next().await.is_some() {}
    drop(socket);

    // HTTP/2 by ALPN on the same listener, proxied to the https backend.
    let mut h2_config = tollgate_gateway::upstream::client_tls_config(&tls).expect("tls config");
    h2_config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.staging).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls_stream = tokio_rustls::TlsConnector::from(Arc::new(h2_config)).connect(name, tcp).await.expect("tls");
    assert_eq!(tls_stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls_stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("https://chat-staging.localhost/anything?user_key={KEY}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["url"], format!("/anything?user_key={KEY}"));
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // A WebSocket over HTTP/2 (RFC 8441) on the same connection: an extended CONNECT,
    // bridged to the backend's HTTP/1.1 upgrade.
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://chat-staging.localhost/?user_key={KEY}"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = sender.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert!(resp.headers().get("sec-websocket-accept").is_none(), "no HTTP/1.1 handshake leaks through");
    let tunnel = hyper::upgrade::on(&mut resp).await.expect("tunnel");
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(tunnel),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    for text in ["over h2", "again"] {
        socket.send(Message::text(text)).await.expect("send");
        match socket.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("reply from server : {text}")),
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    socket.close(None).await.expect("close");
    while socket.next().await.is_some() {}
    let metrics = get(server.admin, "localhost", "/metrics").await.2;
    assert!(
        metrics
            .contains("tollgate_websocket_upgrades_total{environment=\"staging\",version=\"2\",result=\"accepted\"} 1"),
        "{metrics}"
    );

    // The `tollgate ws` client over wss: trusting the certificate, or told not to check.
    let url = format!("wss://localhost:{}/?user_key={KEY}", server.staging.port());
    let cacert = cert.display().to_string();
    for extra in [vec!["--cacert", cacert.as_str()], vec!["--insecure"]] {
        let mut args = vec!["ws", "-H", "Host: chat-staging.localhost"];
        args.extend(extra.iter().copied());
        args.push(url.as_str());
        let out = run_ws(args.iter().map(|s| s.to_string()).collect(), "hello\n").await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "reply from server : hello\n");
    }
    // Without trust the handshake fails, clearly.
    let out = run_ws(vec!["ws".into(), "-H".into(), "Host: chat-staging.localhost".into(), url.clone()], "").await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("handshake failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sender);
    server.shutdown().await;
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// Runs `tollgate ARGS` with `input` on stdin, to completion.
async fn run_ws(args: Vec<String>, input: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut child = bin()
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tollgate ws");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), input.as_bytes()).expect("write");
        drop(child.stdin.take());
        child.wait_with_output().expect("wait")
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn the_tollgate_ws_client_prints_replies_and_fails_clearly() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket },", 100)).await;
    let port = gw.server.staging.port();
    let run = |url: String, input: &'static str| run_ws(vec!["ws".into(), url], input);
    let out = run(format!("ws://chat-staging.localhost:{port}/?user_key={KEY}"), "hello\n").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reply from server : hello\n");

    let out = run(format!("ws://chat-staging.localhost:{port}/?user_key=nope"), "").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 403") && err.contains("auth_failed"), "{err}");
}

/// Reads stderr until a line contains `needle`.
async fn wait_for_log(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>, needle: &str) {
    while let Some(line) = lines.next_line().await.expect("stderr") {
        if line.contains(needle) {
            return;
        }
    }
    panic!("the server exited before logging {needle:?}");
}

#[tokio::test]
async fn sighup_reloads_without_dropping_an_open_websocket() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let path = dir.path().join("tollgate.yaml");
    let original = config(&backend, "{ name: websocket },", 100);
    std::fs::write(&path, &original).expect("write");
    let Spawned { mut child, mut err, staging: addr, .. } = spawn_serve(&path).await;
    let host = "chat-staging.localhost";

    let mut open = ws(addr, host, &format!("/?user_key={KEY}")).await.expect("upgrade");
    assert_eq!(ask(&mut open, "before").await, "reply from server : before");

    // A change of configuration (a new application, a new limit) keeps it open.
    let edited = original.replace("value: 100 }", "value: 99 }").replace(
        "      - { name: acme-old,",
        "      - { name: acme-new, product: chat, plan: basic, user_key: rotated-key }\n      - { name: acme-old,",
    );
    std::fs::write(&path, &edited).expect("write");
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    wait_for_log(&mut err, "configuration reloaded").await;
    let mut fresh = ws(addr, host, "/?user_key=rotated-key").await.expect("new key works");
    assert_eq!(ask(&mut fresh, "new").await, "reply from server : new");
    assert_eq!(
        ask(&mut open, "after").await,
        "reply from server : after",
        "the connection opened before the reload keeps flowing"
    );

    // A broken file is rejected and the running configuration stays.
    std::fs::write(&path, "products:\n  - system_name: [\n").expect("write");
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    wait_for_log(&mut err, "configuration NOT reloaded").await;
    let mut still = ws(addr, host, "/?user_key=rotated-key").await.expect("old config still serves");
    assert_eq!(ask(&mut still, "still").await, "reply from server : still");
    assert_eq!(ask(&mut open, "again").await, "reply from server : again");

    // Revoking the key the connection was opened with closes it, with 1008.
    std::fs::write(&path, edited.replace(&format!("user_key: {KEY}"), "user_key: another-key")).expect("write");
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    wait_for_log(&mut err, "configuration reloaded").await;
    match ws_message(&mut open).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (1008, "credentials revoked")),
        other => panic!("expected close 1008, got {other:?}"),
    }
    assert_eq!(ask(&mut still, "unaffected").await, "reply from server : unaffected");

    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let _ = AsyncWriteExt::flush(&mut tokio::io::sink()).await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_smaller_ones_pass() {
    let backend = node_backend().await;
    let gw = gateway(&config(&backend, "{ name: websocket, configuration: { max_message_bytes: 1024 } },", 100)).await;
    let mut socket =
        ws(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    assert_eq!(ask(&mut socket, &"a".repeat(1000)).await.len(), "reply from server : ".len() + 1000);
    socket.send(Message::text("b".repeat(2000))).await.expect("send");
    match ws_message(&mut socket).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (1009, "message too big")),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

/// A product whose plan allows 5 messages a minute and 2 connections.
fn governed(backend: &NodeBackend, on_limit: &str) -> String {
    config(
        backend,
        &format!(
            "{{ name: websocket, configuration: {{ meter_messages: {{ metric: messages, direction: client_to_server }}, on_limit_exceeded: {on_limit} }} }},"
        ),
        100,
    )
    .replace("metrics: [ { system_name: hits, unit: hit } ]", "metrics: [ { system_name: hits, unit: hit }, { system_name: messages } ]")
    .replace(
        "limits: [ { metric: hits, period: minute, value: 100 } ]",
        "limits: [ { metric: hits, period: minute, value: 100 }, { metric: messages, period: minute, value: 5 } ]\n        max_connections: 2",
    )
}

#[tokio::test]
async fn the_sixth_message_with_a_limit_of_five_closes_with_1008() {
    let backend = node_backend().await;
    let gw = gateway(&governed(&backend, "close")).await;
    let mut socket =
        ws(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    for i in 0..5 {
        assert_eq!(ask(&mut socket, &format!("m{i}")).await, format!("reply from server : m{i}"));
    }
    socket.send(Message::text("m5")).await.expect("send");
    match ws_message(&mut socket).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (1008, "usage limits exceeded")),
        other => panic!("expected close 1008, got {other:?}"),
    }
}

/// Sends `n` messages in one write to a product whose plan allows 5 a minute (closing
/// over the limit), then reads until the connection ends: the replies, and the Close.
/// A read that fails (a reset) fails the test: every byte the gateway sent is read.
async fn burst_over_the_limit(n: usize) -> (Vec<String>, Option<(u16, String)>) {
    let backend = node_backend().await;
    let gw = gateway(&governed(&backend, "close")).await;
    let mut socket =
        ws(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    // Buffered, then written at once: the gateway reads them in one go (or a few).
    for i in 0..n {
        socket.feed(Message::text(format!("m{i}"))).await.expect("feed");
    }
    socket.flush().await.expect("flush");
    let (mut replies, mut close) = (Vec::new(), None);
    while let Some(message) = socket.next().await {
        match message.expect("no reset: every byte the gateway sent is read") {
            Message::Text(t) => replies.push(t.to_string()),
            Message::Close(Some(f)) => close = Some((u16::from(f.code), f.reason.to_string())),
            other => panic!("unexpected {other:?}"),
        }
    }
    (replies, close)
}

/// Messages that arrive together are metered together (one counter update per read);
/// when they do not all fit, exactly those that do pass before the close.
#[tokio::test]
async fn messages_sent_in_one_write_are_limited_exactly() {
    let (replies, close) = burst_over_the_limit(8).await;
    let want: Vec<String> = (0..5).map(|i| format!("reply from server : m{i}")).collect();
    assert_eq!(replies, want, "the five messages within the limit, then the close");
    assert_eq!(close, Some((1008, "usage limits exceeded".to_string())));
}

/// A client that sends a burst far over its limit before it reads gets every reply
/// the limit allowed and the Close 1008: the gateway reads and discards what the client
/// still sends after its Close (a lingering close) instead of closing a socket with
/// unread bytes, whose reset would make the client's kernel throw both away.
#[tokio::test]
async fn a_burst_over_the_limit_still_gets_its_replies_and_the_close() {
    let (replies, close) = burst_over_the_limit(5_000).await;
    assert_eq!(replies.len(), 5);
    assert_eq!(close, Some((1008, "usage limits exceeded".to_string())));
}

#[tokio::test]
async fn over_the_limit_messages_can_be_dropped_instead() {
    let backend = node_backend().await;
    let gw = gateway(&governed(&backend, "drop")).await;
    let mut socket =
        ws(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    for i in 0..7 {
        socket.send(Message::text(format!("m{i}"))).await.expect("send");
    }
    // Pings are not metered: the pong proves every earlier message was handled.
    socket.send(Message::Ping(b"sync".to_vec().into())).await.expect("ping");
    let mut replies = Vec::new();
    loop {
        match ws_message(&mut socket).await {
            Message::Text(t) => replies.push(t.to_string()),
            Message::Pong(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let want: Vec<String> = (0..5).map(|i| format!("reply from server : m{i}")).collect();
    assert_eq!(replies, want, "messages 6 and 7 were dropped, the connection stays");
}

#[tokio::test]
async fn a_third_connection_with_max_connections_2_gets_429_and_the_first_two_keep_working() {
    let backend = node_backend().await;
    let gw = gateway(&governed(&backend, "close")).await;
    let path = format!("/?user_key={KEY}");
    let host = "chat-staging.localhost";
    let mut a = ws(gw.server.staging, host, &path).await.expect("first");
    let mut b = ws(gw.server.production, "chat.localhost", &path).await.expect("second (the cap spans environments)");
    let (status, body) = ws_refused(gw.server.staging, host, &path).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too_many_connections"), "{body}");
    assert_eq!(ask(&mut a, "a").await, "reply from server : a");
    assert_eq!(ask(&mut b, "b").await, "reply from server : b");
    // Closing one frees its place.
    a.close(None).await.expect("close");
    while a.next().await.is_some() {}
    drop(a);
    let mut c = None;
    for _ in 0..200 {
        // The relay notices the close asynchronously; bounded retries.
        match ws(gw.server.staging, host, &path).await {
            Ok(s) => {
                c = Some(s);
                break;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    let mut c = c.expect("a place freed");
    assert_eq!(ask(&mut c, "c").await, "reply from server : c");
}

#[tokio::test]
async fn sigterm_sends_1001_to_open_websockets() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, config(&backend, "{ name: websocket },", 100)).expect("write");
    // Its log pipe is closed at once: losing its log reader must not stop a gateway
    // from draining cleanly.
    let Spawned { mut child, staging, .. } = spawn_serve(&path).await;
    let mut socket = ws(staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    assert_eq!(ask(&mut socket, "hi").await, "reply from server : hi");
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    match ws_message(&mut socket).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    drop(socket);
    let status = child.wait().await.expect("wait");
    assert!(status.success(), "the gateway exits cleanly after draining");
}

#[tokio::test]
async fn bytes_are_metered_on_their_own_metric() {
    let backend = node_backend().await;
    let yaml = config(
        &backend,
        "{ name: websocket, configuration: { meter_bytes: { metric: bytes, direction: client_to_server } } },",
        100,
    )
    .replace(
        "metrics: [ { system_name: hits, unit: hit } ]",
        "metrics: [ { system_name: hits, unit: hit }, { system_name: bytes, unit: byte } ]",
    )
    .replace(
        "limits: [ { metric: hits, period: minute, value: 100 } ]",
        "limits: [ { metric: hits, period: minute, value: 100 }, { metric: bytes, period: minute, value: 10 } ]",
    );
    let gw = gateway(&yaml).await;
    let mut socket =
        ws(gw.server.staging, "chat-staging.localhost", &format!("/?user_key={KEY}")).await.expect("upgrade");
    assert_eq!(ask(&mut socket, "hello").await, "reply from server : hello");
    assert_eq!(ask(&mut socket, "world").await, "reply from server : world", "10 bytes: exactly the limit");
    socket.send(Message::text("!")).await.expect("send");
    match ws_message(&mut socket).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (1008, "usage limits exceeded")),
        other => panic!("expected close 1008, got {other:?}"),
    }
}

/// A backend written here, byte by byte, answering each upgrade by its path: a refusal
/// with a chunked body (`/refuse`), a refusal whose body stops half-way (`/stall`), a
/// `101` for another protocol (`/h2c`), bytes that are no HTTP (`/garbage`), nothing at
/// all (`/hangup`), or a `101` followed at once, in the same write, by a text frame
/// (`/early`).
async fn scripted_backend() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_request_head(&mut tcp).await else { return };
                let key = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key")))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let mut switching = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .into_bytes();
                switching.extend_from_slice(b"\x81\x05early");
                let answer: &[u8] = if head.starts_with("GET /refuse") {
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nlogin\r\n6\r\n first\r\n0\r\n\r\n"
                } else if head.starts_with("GET /stall") {
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 100\r\n\r\nhalf "
                } else if head.starts_with("GET /h2c") {
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                } else if head.starts_with("GET /garbage") {
                    b"SSH-2.0-OpenSSH_9.2\r\n\r\n"
                } else if head.starts_with("GET /early") {
                    &switching
                } else {
                    return;
                };
                let _ = tcp.write_all(answer).await;
                // Held open until the gateway closes it.
                let mut rest = [0u8; 64];
                while matches!(tcp.read(&mut rest).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backends_answer_to_the_upgrade_is_passed_on_or_refused_by_what_it_is() {
    use tokio::io::AsyncReadExt;
    let backend = scripted_backend().await;
    let yaml = format!(
        r#"
backends:
  - {{ system_name: scripted, private_base_url: "http://{backend}" }}
products:
  - system_name: chat
    staging_public_base_url: http://chat-staging.localhost
    production_public_base_url: http://chat.localhost
    backend_usages: [ {{ backend: scripted, path: / }} ]
    metrics: [ {{ system_name: hits, unit: hit }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits, delta: 1 }} ]
    policy_chain:
      - {{ name: upstream_connection, configuration: {{ read_timeout: 1 }} }}
      - {{ name: websocket }}
      - {{ name: tollgate }}
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: acme-chat, product: chat, plan: basic, user_key: {KEY} }} ]
"#
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    let host = "chat-staging.localhost";

    // A refusal reaches the client as the backend sent it, body and all.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let upgrade = format!(
        "GET /refuse?user_key={KEY} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains(" first") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("the refusal within 10 s")
            .expect("read");
        assert!(n > 0, "closed before the body: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("www-authenticate: bearer"), "{text}");
    assert!(text.contains("login") && text.contains(" first"), "the body, in its chunks: {text}");

    // A refusal's body has the read timeout between its parts, as any response's: the
    // client sees it cut off rather than waiting for as long as the backend likes.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(upgrade.replace("/refuse", "/stall").as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), tcp.read(&mut chunk))
            .await
            .expect("cut off within 20 s (the read timeout is 1 s)")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401") && !text.contains("half half"), "{text}");

    // RFC 6455 §4.1: a 101 for another protocol is no WebSocket handshake.
    let (status, body) = ws_refused(addr, host, &format!("/h2c?user_key={KEY}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_invalid_response"), "{body}");

    let (status, body) = ws_refused(addr, host, &format!("/garbage?user_key={KEY}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_invalid_response"), "{body}");
    let (status, body) = ws_refused(addr, host, &format!("/hangup?user_key={KEY}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_failed"), "{body}");

    // What the backend sent right after its 101 is the client's first message.
    let mut early = ws(addr, host, &format!("/early?user_key={KEY}")).await.expect("upgrade");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), early.next()).await;
    match first.expect("the early message within 10 s").expect("a message").expect("receive") {
        Message::Text(t) => assert_eq!(t.as_str(), "early"),
        other => panic!("unexpected {other:?}"),
    }
}
