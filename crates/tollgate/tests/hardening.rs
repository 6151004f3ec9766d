//! Kinds of fault where a gateway and its backend (or two readers of one request) could
//! disagree, each tried through a real gateway on loopback with a real backend: the
//! request path (one canonical path: what was matched is what the backend receives),
//! the `Host` header, a body on an upgrade request. docs/gateway.md says what holds.

mod support;

use http::StatusCode;
use support::*;

const HOST: &str = "api.test";

/// A product whose plan blocks `admin` (limit 0) and allows `public`; `/pub` goes to a
/// backend under the base path `/v1/public-api`, the rest to the backend's root.
fn config(backend: std::net::SocketAddr, request_path: &str) -> String {
    format!(
        r#"
backends:
  - {{ system_name: root, private_base_url: "http://{backend}" }}
  - {{ system_name: scoped, private_base_url: "http://{backend}/v1/public-api" }}
products:
  - system_name: api
    staging_public_base_url: http://{HOST}
    production_public_base_url: http://api-production.test
    backend_usages: [ {{ backend: root, path: / }}, {{ backend: scoped, path: /pub }} ]
    methods: [ {{ system_name: admin }}, {{ system_name: public }} ]
    mapping_rules:
      - {{ http_method: ANY, pattern: /admin, metric: admin, delta: 1 }}
      - {{ http_method: ANY, pattern: /public, metric: public, delta: 1 }}
      - {{ http_method: ANY, pattern: /pub, metric: public, delta: 1 }}
    policy_chain: [ {{ name: websocket }} ]
    {request_path}
    application_plans:
      - system_name: basic
        limits: [ {{ metric: admin, period: minute, value: 0 }}, {{ metric: public, period: minute, value: 1000 }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: api, plan: basic, user_key: k }} ]
"#
    )
}

/// The path the backend received, from its JSON echo.
fn seen_path(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["path"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn request_paths_are_made_canonical_before_anything_reads_them() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "")).await;
    let addr = gw.server.staging;

    // Dot-segments, plain or encoded, cannot walk past a mapping rule: the request is
    // counted (and limited) as what it reaches.
    for path in [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2E/admin/users",
        "/public/./../admin/users",
    ] {
        let (status, _, body) = get(addr, HOST, &format!("{path}?user_key=k")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path} is /admin/users, blocked: {body}");
    }
    // What was matched is what the backend receives.
    let (status, _, body) = get(addr, HOST, "/public/a/../b/%7Euser?user_key=k").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen_path(&body), "/public/b/~user");
    let (status, _, body) = get(addr, HOST, "/pub/a/../b?user_key=k").await;
    assert_eq!((status, seen_path(&body).as_str()), (StatusCode::OK, "/v1/public-api/b"), "{body}");

    // A path that would leave the root (and so the backend's base path), an encoded
    // `/` or `\`, a backslash or a broken escape: 400 `bad_path`.
    for path in ["/pub/../../internal/keys", "/../etc/passwd", "/pub/a%2Fb", "/pub/a%5cb", "/pub/a%zz"] {
        let (status, _, body) = get(addr, HOST, &format!("{path}?user_key=k")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("\"bad_path\""), "{path}: {body}");
    }
    let raw =
        support::raw(addr, b"GET /pub/a\\b?user_key=k HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&raw), 400, "a backslash: {raw}");
}

#[tokio::test]
async fn a_product_may_keep_encoded_slashes_and_merge_double_slashes() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "request_path: { encoded_slashes: keep, merge_slashes: true }")).await;
    let (status, _, body) = get(gw.server.staging, HOST, "/public//files/a%2fb?user_key=k").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen_path(&body), "/public/files/a%2Fb");
}

#[tokio::test]
async fn one_host_without_user_information() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "")).await;
    let addr = gw.server.staging;
    let two =
        support::raw(addr, b"GET /public?user_key=k HTTP/1.1\r\nHost: api.test\r\nHost: evil.example\r\n\r\n").await;
    assert_eq!(status_of(&two), 400, "RFC 9112 §3.2: {two}");
    let userinfo = support::raw(addr, b"GET /public?user_key=k HTTP/1.1\r\nHost: evil@api.test\r\n\r\n").await;
    assert_eq!(status_of(&userinfo), 400, "{userinfo}");
    // An absolute-form target is routed by its authority, as before.
    let absolute = support::raw(
        addr,
        b"GET http://api.test/public?user_key=k HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&absolute), 200, "{absolute}");
}

#[tokio::test]
async fn an_upgrade_request_with_a_body_is_refused() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "")).await;
    let head = "GET /public?user_key=k HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for framing in ["Content-Length: 5\r\n\r\nhello", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"] {
        let answer = support::raw(gw.server.staging, format!("{head}{framing}").as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{answer}");
        assert!(answer.contains("bad_upgrade") && answer.contains("must not carry a body"), "{answer}");
    }
}

#[tokio::test]
async fn forwarded_headers_describe_what_the_gateway_routed_on() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "")).await;
    // An absolute-form target is routed by its authority: X-Forwarded-Host says that one,
    // not the client's Host.
    let answer = support::raw(
        gw.server.staging,
        b"GET http://api.test/public?user_key=k HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains(r#""x-forwarded-host":"api.test""#), "{answer}");
    assert!(!answer.contains("evil.example"), "the client's Host reaches the backend nowhere: {answer}");
}

#[tokio::test]
async fn a_backends_private_address_never_reaches_the_client() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "")).await;
    let addr = gw.server.staging;
    // Under `/pub` (backend base path `/v1/public-api`): the private URL becomes the
    // public one, usage prefix included.
    let (status, headers, _) = get(addr, HOST, "/pub/redirect?to=/v1/public-api/next%3Fa=1&user_key=k").await;
    assert_eq!(status, StatusCode::FOUND);
    let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, "http://api.test/pub/next%3Fa=1");
    let refresh = headers.get("refresh").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(refresh, "0; url=http://api.test/pub/next%3Fa=1");
    // Elsewhere on the backend than its base path: left as it is (not ours to map).
    let (_, headers, _) = get(addr, HOST, "/pub/redirect?to=/other&user_key=k").await;
    let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, format!("http://{backend}/other"));

    // A product may keep them as they are.
    let kept = gateway(&config(backend, "rewrite_redirects: false")).await;
    let (_, headers, _) = get(kept.server.staging, HOST, "/pub/redirect?to=/v1/public-api/next&user_key=k").await;
    let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, format!("http://{backend}/v1/public-api/next"));
}

/// A WebSocket backend that accepts the upgrade, answers one message, then vanishes
/// (its TCP connection ends without a Close frame).
async fn vanishing_backend() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                if let Some(Ok(m)) = ws.next().await {
                    let _ = ws.send(m).await;
                }
                // Dropped: FIN, no Close frame.
            });
        }
    });
    addr
}

fn websocket_config(backend: std::net::SocketAddr) -> String {
    format!(
        r#"
backends: [ {{ system_name: b, private_base_url: "ws://{backend}" }} ]
products:
  - system_name: chat
    staging_public_base_url: http://{HOST}
    production_public_base_url: http://chat-production.test
    backend_usages: [ {{ backend: b, path: / }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits, delta: 1 }} ]
    policy_chain: [ {{ name: websocket }} ]
    application_plans: [ {{ system_name: one, max_connections: 1 }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: chat, plan: one, user_key: k }} ]
"#
    )
}

/// The gauge of open WebSockets, from the admin listener's /metrics.
async fn open_websockets(gw: &TestGateway) -> f64 {
    let (_, _, text) = get(gw.server.admin, "localhost", "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("tollgate_websocket_open{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls (bounded) until no WebSocket is open at the gateway: the release happens in
/// the gateway's own task, right after the connection ended.
async fn until_none_open(gw: &TestGateway) {
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
    for _ in 0..500 {
        poll.tick().await;
        if open_websockets(gw).await == 0.0 {
            return;
        }
    }
    panic!("the WebSocket is still held at the gateway");
}

#[tokio::test]
async fn websocket_lifecycles_always_end_and_release_their_places() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let backend = vanishing_backend().await;
    let gw = gateway(&websocket_config(backend)).await;
    let addr = gw.server.staging;

    // The client vanishes (its TCP connection ends without a Close frame): its place
    // under max_connections (1) is free again at once, not when the backend hangs up.
    let first = ws(addr, HOST, "/?user_key=k").await.expect("first connection");
    let (status, _) = ws_refused(addr, HOST, "/?user_key=k").await;
    assert_eq!(status, 429, "the cap holds while it is open");
    drop(first);
    until_none_open(&gw).await;

    // The backend vanishes: the client gets a Close frame with 1001 (never a bare end),
    // and the place is free again.
    let mut second = ws(addr, HOST, "/?user_key=k").await.expect("the place was released");
    second.send(Message::text("hello")).await.expect("send");
    assert_eq!(second.next().await.expect("echo").expect("message"), Message::text("hello"));
    match second.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
            assert_eq!(frame.reason.as_str(), "the backend went away");
        }
        other => panic!("expected a Close frame, got {other:?}"),
    }
    drop(second);
    until_none_open(&gw).await;
    let _third = ws(addr, HOST, "/?user_key=k").await.expect("free again");
}

#[tokio::test]
async fn every_connection_has_a_deadline_from_its_first_moment() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = http_backend().await;
    let gw = gateway_with(&config(backend, ""), &["--header-read-timeout", "1", "--max-connections", "16"]).await;
    let addr = gw.server.staging;
    // Sixteen connections that never send a byte, or only part of an HTTP/2 preface,
    // fill every slot: a normal client is turned away meanwhile…
    let mut silent = Vec::new();
    for i in 0..16 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            tcp.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        }
        silent.push(tcp);
    }
    // …yet a normal client is served: each new connection makes room by closing the
    // connection that has done nothing the longest.
    let mut served = 0;
    for _ in 0..8 {
        let (status, _, _) = get(addr, HOST, "/public?user_key=k").await;
        served += usize::from(status == StatusCode::OK);
    }
    assert_eq!(served, 8, "silent connections kept normal clients out");
    // The header-read timeout, counted from accept, closes every silent one anyway.
    for mut tcp in silent {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut byte)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "a silent connection was not closed: {n:?}");
    }
    let mut served = 0;
    for _ in 0..20 {
        let (status, _, _) = get(addr, HOST, "/public?user_key=k").await;
        served += usize::from(status == StatusCode::OK);
    }
    assert_eq!(served, 20, "every normal client is served once the silent ones are gone");
}

/// One product on `backend` whose every path counts one hit.
fn open_config(backend: std::net::SocketAddr) -> String {
    format!(
        r#"
backends: [ {{ system_name: b, private_base_url: "http://{backend}" }} ]
products:
  - system_name: api
    staging_public_base_url: http://{HOST}
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

/// A backend for the deadline tests, counting the connections it accepts: `/endless`
/// streams a body until the gateway lets go of it (then says so on `released`),
/// `/download` streams 5,000,000 bytes,
/// `/never` never answers, anything else answers 200 with the number of body bytes it
/// read.
struct SlowBackend {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// A body with no end, that says when it is dropped.
struct Endless(tokio::sync::mpsc::UnboundedSender<()>);

impl http_body::Body for Endless {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>> {
        static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(&CHUNK)))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

async fn slow_backend() -> SlowBackend {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tell, released) = tokio::sync::mpsc::unbounded_channel();
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let tell = tell.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tell = tell.clone();
                    async move {
                        let body = match req.uri().path() {
                            "/endless" => Endless(tell).boxed(),
                            "/download" => Generated::new(5_000_000).boxed(),
                            "/never" => std::future::pending().await,
                            _ => {
                                let n = req.into_body().collect().await.map_or(0, |b| b.to_bytes().len());
                                http_body_util::Full::new(bytes::Bytes::from(format!("{{\"bytes\":{n}}}"))).boxed()
                            }
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    SlowBackend { addr, connections, released }
}

/// Sends `head`, then `body` a few bytes at a time with `pause` between them, until the
/// gateway answers; returns the answer.
async fn trickle(addr: std::net::SocketAddr, head: &str, body: &[u8], pause: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rx, mut tx) = tcp.into_split();
    tx.write_all(head.as_bytes()).await.expect("head");
    let writer = async {
        for chunk in body.chunks(4) {
            if tx.write_all(chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        std::future::pending::<()>().await;
    };
    let mut out = Vec::new();
    tokio::select! {
        _ = rx.read_to_end(&mut out) => {}
        () = writer => {}
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_request_bodies_are_cut_off_with_408_and_hold_no_backend_connection() {
    let backend = slow_backend().await;
    let flags = ["--min-data-rate", "200", "--min-data-rate-grace", "1"];
    let gw = gateway_with(&open_config(backend.addr), &flags).await;
    let addr = gw.server.staging;
    let pause = std::time::Duration::from_millis(100);
    // A body sent at 40 bytes/s, well below 200: 408 once the grace and the bytes sent
    // are used up, and the connection closes.
    let body = vec![b'a'; 8_000];
    let head = format!("POST /upload?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n", body.len());
    let answer = trickle(addr, &head, &body, pause).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    // Small enough to be read whole first: the backend never saw the request.
    assert_eq!(backend.connections.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Streamed bodies (over --request-buffer-bytes) are cut off the same way.
    let streamed =
        gateway_with(&open_config(backend.addr), &[&flags[..], &["--request-buffer-bytes", "0"]].concat()).await;
    let answer = trickle(streamed.server.staging, &head, &body, pause).await;
    assert_eq!(status_of(&answer), 408, "{answer}");

    // A chunked body that breaks its framing is the client's fault: 400, not a 502.
    let bad =
        "POST /upload?user_key=k HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";
    let answer = raw(addr, bad.as_bytes()).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("\"bad_request_body\""), "{answer}");

    // A client keeping pace is served, its body whole.
    let (status, body) = upload(addr, 200_000).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"bytes\":200000}"));
}

/// POSTs `n` bytes to `/upload` at full speed.
async fn upload(addr: std::net::SocketAddr, n: usize) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let req = http::Request::post(format!("http://{addr}/upload?user_key=k"))
        .header("host", HOST)
        .body(full(vec![b'u'; n]))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_the_backend_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut backend = slow_backend().await;
    let flags = ["--min-data-rate", "50000", "--min-data-rate-grace", "1"];
    let gw = gateway_with(&open_config(backend.addr), &flags).await;
    let addr = gw.server.staging;
    // A fast reader of a long body is not disturbed.
    let (status, _, body) = get(addr, HOST, "/download?bytes=5000000&user_key=k").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 5_000_000));

    // A client that asks for an endless body and never reads it: once every buffer on
    // the way is full, the gateway waits for it at less than 50,000 bytes/s, closes
    // its connection and drops the backend's response.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /endless?user_key=k HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("request");
    let released = tokio::time::timeout(std::time::Duration::from_secs(60), backend.released.recv()).await;
    assert!(matches!(released, Ok(Some(()))), "the backend's response was never let go");
    // The client then reads what was buffered for it, and the end of the connection —
    // never a body it could take for complete.
    let mut sink = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), tcp.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection was not closed ({total} bytes read)"),
        }
    }
    assert!(total > 0);
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_the_default_response_deadline() {
    let backend = slow_backend().await;
    let gw = gateway_with(&open_config(backend.addr), &["--upstream-read-timeout", "1"]).await;
    let (status, _, body) = get(gw.server.staging, HOST, "/never?user_key=k").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("\"upstream_timeout\""), "{body}");
}
