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
        "//admin/users",
        "/public/..//admin/users",
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
async fn a_product_may_keep_encoded_slashes_and_double_slashes() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend, "request_path: { encoded_slashes: keep }")).await;
    let (status, _, body) = get(gw.server.staging, HOST, "/public//files/a%2fb?user_key=k").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen_path(&body), "/public/files/a%2Fb", "merged by default");
    let kept = gateway(&config(backend, "request_path: { merge_slashes: false }")).await;
    let (status, _, body) = get(kept.server.staging, HOST, "/public//files?user_key=k").await;
    assert_eq!((status, seen_path(&body).as_str()), (StatusCode::OK, "/public//files"), "{body}");
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
    // …with its Host: RFC 9112 §3.2 makes no exception for an absolute-form target.
    let hostless =
        support::raw(addr, b"GET http://api.test/public?user_key=k HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&hostless), 400, "{hostless}");
    // A transfer coding other than chunked is refused (RFC 9112 §6.1): forwarded, the
    // body would still be coded and no longer say so.
    let gzip = support::raw(
        addr,
        b"POST /public?user_key=k HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&gzip), 501, "{gzip}");
    // …but not with user information in it (it chose X-Forwarded-Host's value).
    let tricked = support::raw(
        addr,
        b"GET http://evil.example,x@api.test/public?user_key=k HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&tricked), 400, "{tricked}");
    // …nor with a scheme other than HTTP's.
    let ftp = support::raw(addr, b"GET ftp://api.test/public?user_key=k HTTP/1.1\r\nHost: api.test\r\n\r\n").await;
    assert_eq!(status_of(&ftp), 400, "{ftp}");

    // Methods are case-sensitive: `get` is no GET, and is refused before a backend that
    // upper-cases methods could serve it as one, past rules written for GET.
    let lower = support::raw(addr, b"get /public?user_key=k HTTP/1.1\r\nHost: api.test\r\n\r\n").await;
    assert_eq!(status_of(&lower), 400, "{lower}");
    assert!(lower.contains("upper case"), "{lower}");

    // A CONNECT answered with a refusal closes its connection: what follows it is not
    // checked for smuggling, so it must not be read as the next request.
    let after_connect = support::raw(
        addr,
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\nPOST /public?user_key=k HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        after_connect.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closed: {after_connect}"
    );
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

    // Two X-Request-Id fields: the first is the request's id, for the client and the
    // backend alike.
    let answer = support::raw(
        gw.server.staging,
        b"GET /public?user_key=k HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: one\r\nX-Request-Id: two\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.to_ascii_lowercase().contains("\r\nx-request-id: one\r\n"), "{answer}");
    assert!(answer.contains(r#""x-request-id":"one""#) && !answer.contains("two"), "{answer}");

    // A client's Connection list names the headers the gateway adds: they reach the
    // backend all the same (the list removes only what the client itself sent).
    // Tokens of Connection are case-insensitive (RFC 9110 §7.6.1).
    let answer = support::raw(
        gw.server.staging,
        b"GET /public?user_key=k HTTP/1.1\r\nHost: api.test\r\nX-Hop: 1\r\nConnection: CLOSE, x-hop, X-Forwarded-For, x-forwarded-host, X-Forwarded-Proto, Forwarded, X-Request-Id\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    for added in ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-request-id"] {
        assert!(answer.contains(&format!(r#""{added}":"#)), "{added} was removed by the client: {answer}");
    }
    assert!(!answer.contains(r#""x-hop""#), "a header the client named in Connection is hop-by-hop: {answer}");
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

/// However the backend spells its own address — scheme in capitals, scheme-relative,
/// user information, a trailing dot, a port with a leading zero — and in every field of
/// `Location`, `Content-Location` and `Link`, it is rewritten.
#[tokio::test]
async fn a_backends_address_is_rewritten_however_it_is_spelled() {
    let response = b"HTTP/1.1 302 Found\r\n\
        location: HTTP://{addr}/next\r\n\
        content-location: //{addr}/c\r\n\
        link: <http://user@{addr}/l>; rel=\"next\", </rel>; rel=\"prev\"\r\n\
        link: <http://localhost:1/elsewhere>\r\n\
        content-length: 0\r\n\r\n"
        .to_vec();
    let backend = canned_backend(vec![("/moved", response)]).await;
    let gw = gateway(&open_config(backend)).await;
    let (status, headers, _) = get(gw.server.staging, HOST, "/moved?user_key=k").await;
    assert_eq!(status, StatusCode::FOUND);
    let all = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().map(|v| v.to_str().expect("text").to_string()).collect()
    };
    assert_eq!(all("location"), ["http://api.test/next"]);
    assert_eq!(all("content-location"), ["http://api.test/c"]);
    assert_eq!(
        all("link"),
        ["<http://api.test/l>; rel=\"next\", </rel>; rel=\"prev\"", "<http://localhost:1/elsewhere>"]
    );
    let text = format!("{headers:?}");
    assert!(!text.contains(&backend.to_string()), "{text}");
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

/// A metric from the admin listener's /metrics, summed over its labels.
async fn metric(gw: &TestGateway, name: &str) -> f64 {
    support::metric(gw.server.admin, name).await
}

/// The gauge of open WebSockets, from the admin listener's /metrics.
async fn open_websockets(gw: &TestGateway) -> f64 {
    metric(gw, "tollgate_websocket_open").await
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
    until_metric(&gw, "tollgate_connections_open", 16.0).await;
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
    // Each connection closed by the gateway is counted by why.
    let evicted = metric(&gw, "tollgate_connections_evicted_total").await;
    let idle = metric(&gw, "tollgate_connections_idle_closed_total").await;
    // The first normal client made room; each one's own connection, once closed,
    // left room for the next (a client reconnecting while the gateway had yet to see
    // the last one close made room again).
    assert!((1.0..=8.0).contains(&evicted), "normal clients made room: {evicted}");
    assert!(idle >= 16.0 - evicted, "the silent connections left were closed as idle: {idle} ({evicted} evicted)");
    // The gauge of open connections goes back to none once every client is gone.
    until_metric(&gw, "tollgate_connections_open", 0.0).await;
}

/// Polls /metrics (bounded: 5 s) until `name` reads `value`.
async fn until_metric(gw: &TestGateway, name: &str, value: f64) {
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
    let mut last = f64::NAN;
    for _ in 0..500 {
        poll.tick().await;
        last = metric(gw, name).await;
        if last == value {
            return;
        }
    }
    panic!("{name} is {last}, never {value}");
}

/// One product on `backend` whose every path counts one hit.
fn open_config(backend: std::net::SocketAddr) -> String {
    support::open_config(backend, HOST)
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
    // The default rate (240 bytes/s): measured over windows of the grace, so the
    // megabytes the system's buffers take at first buy no time.
    let flags = ["--min-data-rate-grace", "1"];
    let gw = gateway_with(&open_config(backend.addr), &flags).await;
    let addr = gw.server.staging;
    // A fast reader of a long body is not disturbed.
    let (status, _, body) = get(addr, HOST, "/download?bytes=5000000&user_key=k").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 5_000_000));

    // A client that asks for an endless body and never reads it: once every buffer on
    // the way is full, it takes less than 240 bytes in a second: the gateway closes its
    // connection and drops the backend's response.
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
    assert_eq!(metric(&gw, "tollgate_connections_slow_closed_total").await, 1.0, "counted by why");
}

#[tokio::test]
async fn at_the_connection_cap_a_client_reading_below_the_rate_makes_room() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut backend = slow_backend().await;
    // One connection per listener; a grace long enough that the slow reader is not
    // closed for its rate before a new client needs its place.
    let flags = ["--min-data-rate", "50000", "--min-data-rate-grace", "600", "--max-connections", "1"];
    let gw = gateway_with(&open_config(backend.addr), &flags).await;
    let addr = gw.server.staging;
    let mut reader = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /endless?user_key=k HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    reader.write_all(head.as_bytes()).await.expect("request");
    // Its response has begun (until then it is merely idle, and idle goes first).
    let mut status = [0u8; 12];
    reader.read_exact(&mut status).await.expect("status line");
    assert_eq!(&status, b"HTTP/1.1 200");
    // A new client is refused while the reader keeps pace (its buffers are filling),
    // and served once the reader is behind the rate: the reader's connection is closed
    // for it and the backend's endless response let go. Bounded polling: at most 30 s.
    let mut served = false;
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
    for _ in 0..1500 {
        pace.tick().await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET /public?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        if tcp.write_all(req.as_bytes()).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        }
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
    }
    assert!(served, "the slow reader was never evicted for a new client");
    let released = tokio::time::timeout(std::time::Duration::from_secs(10), backend.released.recv()).await;
    assert!(matches!(released, Ok(Some(()))), "the slow reader's response was never let go");
    assert_eq!(metric(&gw, "tollgate_connections_evicted_total").await, 1.0);
    assert_eq!(metric(&gw, "tollgate_connections_slow_closed_total").await, 0.0, "evicted, not timed out");
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_the_default_response_deadline() {
    let backend = slow_backend().await;
    let gw = gateway_with(&open_config(backend.addr), &["--upstream-read-timeout", "1"]).await;
    let (status, _, body) = get(gw.server.staging, HOST, "/never?user_key=k").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("\"upstream_timeout\""), "{body}");
}

/// A backend that answers each request with canned bytes chosen by the request's path
/// (`responses`; `{addr}` in them is the backend's own address), then closes the
/// connection.
async fn canned_backend(responses: Vec<(&'static str, Vec<u8>)>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let responses: Vec<(&str, Vec<u8>)> = responses
        .into_iter()
        .map(|(path, bytes)| (path, String::from_utf8_lossy(&bytes).replace("{addr}", &addr.to_string()).into_bytes()))
        .collect();
    let responses = std::sync::Arc::new(responses);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let responses = responses.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                let path = line.split(' ').nth(1).unwrap_or_default().split('?').next().unwrap_or_default().to_string();
                if let Some((_, bytes)) = responses.iter().find(|(p, _)| *p == path) {
                    let _ = tcp.write_all(bytes).await;
                }
            });
        }
    });
    addr
}

/// `n` header fields `x-f<i>: v` as one string of field lines.
fn fields(n: usize) -> String {
    (0..n).map(|i| format!("x-f{i}: v\r\n")).collect()
}

#[tokio::test]
async fn framing_is_strict_and_unambiguous_in_both_directions() {
    let ok = |extra: &str| format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{extra}\r\nok").into_bytes();
    let backend = canned_backend(vec![
        ("/fields-90", ok(&fields(90))),
        ("/fields-200", ok(&fields(200))),
        ("/big-head", ok(&format!("x-big: {}\r\n", "b".repeat(70 * 1024)))),
        ("/folded", ok("x-folded: a\r\n b\r\n")),
        ("/space-before-colon", ok("x-space : a\r\n")),
        ("/two-lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!".to_vec()),
        (
            "/cl-and-te",
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
        ),
        ("/cut-short", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec()),
        ("/cut-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec()),
    ])
    .await;
    let gw = gateway(&open_config(backend)).await;
    let addr = gw.server.staging;
    let get_raw = |path: &str, extra: &str| {
        format!("GET {path}?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n{extra}\r\n")
    };

    // Responses: up to the limits they pass whole; a head the gateway will not read one
    // way is refused with 502 upstream_invalid_response.
    let answer = raw(addr, get_raw("/fields-90", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "90 fields are not refused (the default limit is 100)");
    assert!(answer.contains("x-f89: v"), "{answer}");
    for path in ["/fields-200", "/big-head", "/folded", "/space-before-colon", "/two-lengths"] {
        let answer = raw(addr, get_raw(path, "").as_bytes()).await;
        assert_eq!(status_of(&answer), 502, "{path}: {answer}");
        assert!(answer.contains("\"upstream_invalid_response\""), "{path}: {answer}");
    }
    // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3), and the client never
    // sees both.
    let answer = raw(addr, get_raw("/cl-and-te", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("content-length: 50"), "{answer}");
    assert!(answer.ends_with("2\r\nok\r\n0\r\n\r\n") || answer.ends_with("\r\n\r\nok"), "{answer}");
    // A backend that closes mid-body: the client never gets a body it could take for
    // complete — fewer bytes than its Content-Length, or no last chunk.
    let answer = raw(addr, get_raw("/cut-short", "").as_bytes()).await;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(answer.is_empty() || (answer.contains("content-length: 100") && body.len() < 100), "{answer}");
    let answer = raw(addr, get_raw("/cut-chunked", "").as_bytes()).await;
    assert!(!answer.ends_with("0\r\n\r\n"), "a cut chunked body must not end with a last chunk: {answer:?}");

    // Requests: 90 fields are not refused, 200 are (431; the default is 100), as is a
    // head over 32 KiB;
    // whitespace before a colon, obsolete line folding, a bare CR, NUL or a control
    // character in a field, and conflicting lengths are 400.
    let ok_backend = canned_backend(vec![("/", ok(""))]).await;
    let gw = gateway(&open_config(ok_backend)).await;
    let addr = gw.server.staging;
    let answer = raw(addr, get_raw("/", &fields(90)).as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "90 request fields are not refused");
    assert_eq!(status_of(&raw(addr, get_raw("/", &fields(200)).as_bytes()).await), 431);
    let big = format!("x-big: {}\r\n", "b".repeat(33 * 1024));
    assert_eq!(status_of(&raw(addr, get_raw("/", &big).as_bytes()).await), 431);
    for extra in [
        "x-space : a\r\n",
        "x-folded: a\r\n b\r\n",
        "x-cr: a\rb\r\n",
        "x-nul: a\0b\r\n",
        "x-ctl: a\x01b\r\n",
        "x\x01ctl: a\r\n",
        "Content-Length: 1\r\nContent-Length: 2\r\n",
    ] {
        let answer = raw(addr, get_raw("/", extra).as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{extra:?}: {answer}");
    }
    // A gateway is no forward proxy.
    let connect = format!("CONNECT {HOST}:80 HTTP/1.1\r\nHost: {HOST}:80\r\nConnection: close\r\n\r\n");
    let answer = raw(addr, connect.as_bytes()).await;
    assert_eq!(status_of(&answer), 501, "{answer}");
}

/// A backend that answers every request with its head exactly as received (one line
/// per field line), plus canned response fields from `/hop` (every hop-by-hop kind) and
/// `/cookies` (two Set-Cookie).
async fn head_echo_backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let extra = if text.starts_with("GET /hop") {
                    "Connection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: other\r\n"
                } else if text.starts_with("GET /cookies") {
                    "Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\n"
                } else {
                    ""
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Sends `requests` (JSON, see peers/h2_requests.py) over HTTP/2 to `addr`.
async fn h2_requests(addr: std::net::SocketAddr, requests: serde_json::Value) -> Vec<serde_json::Value> {
    use tokio::io::AsyncWriteExt;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/h2_requests.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &addr.port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with the h2 package: pip install h2)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(requests.to_string().as_bytes()).await.expect("requests");
    drop(stdin);
    let out = child.wait_with_output().await.expect("h2_requests.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn http2_requests_cross_to_http1_as_rfc_9113_says() {
    let backend = head_echo_backend().await;
    let gw = gateway(&open_config(backend)).await;
    let base = |path: &str| {
        serde_json::json!([
            [":method", "GET"],
            [":scheme", "http"],
            [":authority", HOST],
            [":path", format!("{path}?user_key=k")]
        ])
    };
    let with = |path: &str, extra: serde_json::Value| {
        let mut h = base(path);
        h.as_array_mut().expect("array").extend(extra.as_array().expect("array").iter().cloned());
        serde_json::json!({ "headers": h })
    };
    let cases = serde_json::json!([
        with("/cookies-in", serde_json::json!([["cookie", "a=1"], ["cookie", "b=2"]])),
        with("/host", serde_json::json!([["host", "other.test"]])),
        with("/same-host", serde_json::json!([["host", "API.test"]])),
        with("/conn", serde_json::json!([["connection", "keep-alive"]])),
        with("/te-trailers", serde_json::json!([["te", "trailers"]])),
        with("/te-gzip", serde_json::json!([["te", "gzip"]])),
        with("/upper", serde_json::json!([["X-Upper", "1"]])),
        with("/lead", serde_json::json!([["x-lead", " a"]])),
        with("/trail", serde_json::json!([["x-trail", "a\t"]])),
        with("/crlf", serde_json::json!([["x-crlf", "a\r\nx-injected: 1"]])),
        with("/nul", serde_json::json!([["x-nul", "a\u{0}b"]])),
        with("/hop", serde_json::json!([])),
        with("/cookies", serde_json::json!([])),
        { "headers": [[":method", "CONNECT"], [":authority", HOST]] },
        { "headers": [[":method", "GET"], [":scheme", "http"], [":path", "/no-authority?user_key=k"], ["host", HOST]] },
        { "headers": [[":method", "POST"], [":scheme", "http"], [":authority", HOST], [":path", "/len?user_key=k"], ["content-length", "10"]], "body": "abc" },
    ]);
    let results = h2_requests(gw.server.staging, cases).await;
    let [
        cookies_in,
        host,
        same_host,
        conn,
        te_trailers,
        te_gzip,
        upper,
        lead,
        trail,
        crlf,
        nul,
        hop,
        cookies,
        connect,
        no_authority,
        length,
    ] = &results[..]
    else {
        panic!("one result per request: {results:?}")
    };
    let sent = |r: &serde_json::Value| r["body"].as_str().unwrap_or_default().to_ascii_lowercase();
    let status = |r: &serde_json::Value| r["status"].as_u64().unwrap_or(0);
    // §8.2.3: Cookie fields are joined into one for HTTP/1.1.
    assert!(sent(cookies_in).contains("\r\ncookie: a=1; b=2\r\n"), "{cookies_in}");
    assert_eq!(sent(cookies_in).matches("cookie:").count(), 1, "{cookies_in}");
    // §8.3.1: a Host naming another authority than :authority is malformed; the same
    // one (any case) is fine, and a request with only Host is routed by it.
    assert_eq!(status(host), 400, "{host}");
    assert_eq!(status(same_host), 200, "{same_host}");
    assert_eq!(status(no_authority), 200, "{no_authority}");
    // §8.2.2: connection-specific fields are malformed, TE other than "trailers" too;
    // TE: trailers is accepted and, hop-by-hop, not forwarded.
    let refused = |r: &serde_json::Value| r.get("reset").is_some() || r.get("goaway").is_some() || status(r) == 400;
    assert!(refused(conn), "{conn}");
    assert!(refused(te_gzip), "{te_gzip}");
    assert_eq!(status(te_trailers), 200, "{te_trailers}");
    assert!(!sent(te_trailers).contains("\r\nte:"), "{te_trailers}");
    // §8.2.1: uppercase names, whitespace around a value, CR, LF or NUL: malformed.
    for r in [upper, lead, trail, crlf, nul] {
        assert!(refused(r), "{r}");
    }
    // §8.2.2 the other way: no connection-specific field of the backend's response
    // reaches the HTTP/2 client; Set-Cookie stays one field per cookie.
    let names: Vec<&str> = hop["headers"].as_array().expect("headers").iter().filter_map(|h| h[0].as_str()).collect();
    for hop_by_hop in ["connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding", "x-hop"] {
        assert!(!names.contains(&hop_by_hop), "{hop_by_hop} reached the client: {hop}");
    }
    let set_cookies = cookies["headers"].as_array().expect("headers").iter().filter(|h| h[0] == "set-cookie").count();
    assert_eq!(set_cookies, 2, "{cookies}");
    // A gateway opens no tunnels: CONNECT other than a WebSocket's is 501.
    assert_eq!(status(connect), 501, "{connect}");
    // §8.1.1: a Content-Length that the DATA frames do not match is malformed.
    assert!(refused(length), "{length}");
}

/// `--max-header-count` holds over HTTP/2 as over HTTP/1 (HTTP/2 has no setting for it:
/// the gateway counts).
#[tokio::test]
async fn the_header_count_limit_holds_over_both_versions() {
    let backend = head_echo_backend().await;
    let gw = gateway_with(&open_config(backend), &["--max-header-count", "16"]).await;
    let request = |n: usize| {
        let mut headers = serde_json::json!([
            [":method", "GET"],
            [":scheme", "http"],
            [":authority", HOST],
            [":path", "/count?user_key=k"]
        ]);
        let list = headers.as_array_mut().expect("array");
        list.extend((0..n).map(|i| serde_json::json!([format!("x-f{i}"), "v"])));
        serde_json::json!({ "headers": headers })
    };
    let results = h2_requests(gw.server.staging, serde_json::json!([request(10), request(40)])).await;
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[1]["status"], 431, "{results:?}");
    let over = format!("GET /count?user_key=k HTTP/1.1\r\nHost: {HOST}\r\n{}\r\n", fields(40));
    assert_eq!(status_of(&support::raw(gw.server.staging, over.as_bytes()).await), 431);
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = http_backend().await;
    let gw = gateway(&open_config(backend)).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.server.staging).await.expect("connect");
    let body = "hello";
    let request =
        format!("POST /upload?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    tcp.write_all(request.as_bytes()).await.expect("request");
    tcp.shutdown().await.expect("half-close");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("response");
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("{\"bytes\":5}"), "{answer}");
}

/// The TCP connections of this process with a peer or local port `port`, as `ss` shows
/// them with their timers.
fn sockets_on(port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tno", "state", "established", &format!("( sport = :{port} or dport = :{port} )")])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn tcp_keepalive_finds_dead_peers_on_both_sides() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = http_backend().await;
    let gw = gateway_with(&open_config(backend), &["--tcp-keepalive", "30"]).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.server.staging).await.expect("connect");
    let request = format!("GET /x?user_key=k HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut first = [0u8; 12];
    tcp.read_exact(&mut first).await.expect("response");
    assert_eq!(&first, b"HTTP/1.1 200");
    // The gateway's end of the client's connection, and its pooled connection to the
    // backend, both carry the keep-alive timer; the client's own end (ours) does not.
    let client_side = sockets_on(gw.server.staging.port());
    let own = tcp.local_addr().expect("addr").port();
    let (gateway_addr, client_addr) = (gw.server.staging.to_string(), format!("127.0.0.1:{own}"));
    let gateway_end = client_side
        .lines()
        .find(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(2) == Some(&gateway_addr.as_str()) && cols.get(3) == Some(&client_addr.as_str())
        })
        .unwrap_or_else(|| panic!("the gateway's end of the connection: {client_side}"));
    assert!(gateway_end.contains("keepalive"), "{gateway_end}");
    let backend_side = sockets_on(backend.port());
    let to_backend = backend_side
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(&format!("127.0.0.1:{}", backend.port())))
        .unwrap_or_else(|| panic!("the gateway's connection to the backend: {backend_side}"));
    assert!(to_backend.contains("keepalive"), "{to_backend}");
}

#[tokio::test]
async fn repeated_warnings_are_rate_limited_with_a_count_of_those_left_out() {
    // A backend that is down: every request fails the same way.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let dir = TempDir::new();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, open_config(closed)).expect("config");
    let Spawned { child: _child, staging, mut err, .. } = spawn_serve(&path).await;
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            if line.contains("request failed") && tx.send(line).is_err() {
                break;
            }
        }
    });
    // The failures a line accounts for: its own (unless it only counts repeats) and
    // those it says were left out.
    let suppressed = |line: &str| -> u64 {
        let left_out: u64 = line
            .split("suppressed=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line}"));
        left_out + u64::from(!line.contains("(repeats, counted)"))
    };
    for _ in 0..300 {
        assert_eq!(get(staging, HOST, "/x?user_key=k").await.0, StatusCode::BAD_GATEWAY);
    }
    // No further failure comes: the lines left out are still counted, by a line of
    // their own once their second is over. Every failure is accounted for, exactly.
    let mut seen: Vec<String> = Vec::new();
    let wait = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while seen.iter().map(|l| suppressed(l)).sum::<u64>() < 300 {
            seen.push(lines.recv().await.expect("the gateway's log"));
        }
    });
    let accounted = |seen: &[String]| seen.iter().map(|l| suppressed(l)).sum::<u64>();
    wait.await.unwrap_or_else(|_| panic!("{} of 300 failures accounted for: {seen:?}", accounted(&seen)));
    assert_eq!(accounted(&seen), 300, "{seen:?}");
    assert!(seen.len() < 30, "{} lines for 300 failures", seen.len());
    assert!(
        seen.iter().all(|l| l.contains("backend `b`") && l.contains(&closed.to_string())),
        "the backend is named: {seen:?}"
    );
}

/// A backend that breaks its body off after the head: the client's response ends
/// abnormally (it was already under way with its status), and the operator hears of it —
/// `tollgate_upstream_errors_total` counts it and a warning names the backend.
#[tokio::test]
async fn a_body_the_backend_breaks_off_is_counted_and_logged() {
    let backend = canned_backend(vec![
        ("/cut", b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b".to_vec()),
        ("/whole", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nwhole".to_vec()),
    ])
    .await;
    let dir = TempDir::new();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, open_config(backend)).expect("config");
    let Spawned { child: _child, staging, admin, mut err } = spawn_serve(&path).await;
    assert_eq!(get(staging, HOST, "/whole?user_key=k").await.2, "whole");
    assert_eq!(support::metric(admin, "tollgate_upstream_errors_total").await, 0.0);
    let raw = raw(staging, format!("GET /cut?user_key=k HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await;
    // hyper ends the connection at the error: the client gets the response cut short,
    // or nothing at all if the head had not been flushed yet — never a whole one.
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(raw.is_empty() || (raw.starts_with("HTTP/1.1 200") && body.len() < 100), "cut short: {raw:?}");
    let line = loop {
        let line = err.next_line().await.expect("log").expect("the gateway's log ended");
        if line.contains("response body failed") {
            break line;
        }
    };
    assert!(line.contains(&format!("backend `b` ({backend})")), "{line}");
    assert_eq!(support::metric(admin, "tollgate_upstream_errors_total").await, 1.0);
}
