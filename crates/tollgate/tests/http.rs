//! Ordinary HTTP through the gateway: routing by host and backend usage, the policy
//! chain, authentication modes, limits, error statuses and hostile input. The backend is
//! a real Rust HTTP server on loopback port 0.

mod support;

use bytes::Bytes;
use http::StatusCode;
use std::net::SocketAddr;
use support::*;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A loopback address whose accept queue is full, so a new connection hangs in SYN
/// retries: the way to get a connect timeout without leaving loopback.
async fn blackhole() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    // With a backlog of 1 Linux queues two established connections; later SYNs are dropped.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.expect("fill the accept queue"));
    }
    (addr, listener, held)
}

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

fn shop(backend: SocketAddr, down: SocketAddr, hole: SocketAddr) -> String {
    format!(
        r#"
backends:
  - system_name: api
    private_base_url: http://{backend}/base
  - system_name: files
    private_base_url: http://{backend}
    metrics: [ {{ system_name: uploads }} ]
    mapping_rules:
      - {{ http_method: POST, pattern: /upload, metric: uploads, delta: 1 }}
      - {{ http_method: GET, pattern: /download, metric: hits, delta: 1 }}
  - system_name: down
    private_base_url: http://{down}
  - system_name: hole
    private_base_url: http://{hole}
    connect_timeout_ms: 300
products:
  - system_name: shop
    staging_public_base_url: http://shop-staging.localhost
    production_public_base_url: https://shop.example.com
    backend_usages:
      - {{ backend: api, path: / }}
      - {{ backend: files, path: /files }}
      - {{ backend: down, path: /down }}
      - {{ backend: hole, path: /hole }}
    metrics: [ {{ system_name: hits }} ]
    methods: [ {{ system_name: read }}, {{ system_name: write }} ]
    mapping_rules:
      - {{ http_method: GET, pattern: /items, metric: read, delta: 1 }}
      - {{ http_method: POST, pattern: /items$, metric: write, delta: 1 }}
      - {{ http_method: GET, pattern: /down, metric: hits }}
      - {{ http_method: GET, pattern: /hole, metric: hits }}
      - {{ http_method: GET, pattern: /filesystem, metric: hits }}
    errors:
      no_match: {{ status: 404, body: "nothing mapped here", content_type: text/plain }}
    policy_chain:
      - {{ name: cors, configuration: {{ allow_methods: [GET, POST], max_age: 600 }} }}
      - {{ name: headers, configuration: {{ request: [ {{ op: set, header: x-api-version, value: "2" }}, {{ op: delete, header: cookie }} ], response: [ {{ op: set, header: x-served-by, value: tollgate }} ] }} }}
      - {{ name: tollgate }}
    application_plans:
      - system_name: unlimited
      - system_name: tight
        limits: [ {{ metric: hits, period: minute, value: 50 }} ]
      - system_name: writes
        limits: [ {{ metric: write, period: hour, value: 1 }}, {{ metric: hits, period: eternity, value: 3 }} ]
  - system_name: legacy
    staging_public_base_url: http://legacy-staging.localhost
    production_public_base_url: http://legacy.localhost
    backend_usages: [ {{ backend: api, path: / }} ]
    authentication: {{ mode: app_id_app_key, credentials_location: authorization }}
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
  - system_name: headerkeys
    staging_public_base_url: http://hk-staging.localhost
    production_public_base_url: http://hk.localhost
    backend_usages: [ {{ backend: api, path: / }} ]
    authentication: {{ credentials_location: headers, user_key_param: x-api-key }}
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications:
      - {{ name: main, product: shop, plan: unlimited, user_key: k1 }}
      - {{ name: burst, product: shop, plan: tight, user_key: k2 }}
      - {{ name: writer, product: shop, plan: writes, user_key: k3 }}
      - {{ name: old, product: legacy, plan: basic, app_id: id1, app_keys: [secret1, secret2] }}
      - {{ name: hk, product: headerkeys, plan: basic, user_key: hk1 }}
"#
    )
}

struct Setup {
    gw: TestGateway,
    _hole: (TcpListener, Vec<TcpStream>),
}

async fn setup() -> Setup {
    let backend = http_backend().await;
    let down = closed_port().await;
    let (hole, l, held) = blackhole().await;
    let gw = gateway(&shop(backend, down, hole)).await;
    Setup { gw, _hole: (l, held) }
}

const STAGING: &str = "shop-staging.localhost";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Every gateway here counts minute limits on a stopped clock: a test's traffic never
/// straddles two windows (this shadows `support::gateway`).
async fn gateway(yaml: &str) -> TestGateway {
    gateway_at(yaml, &[], stopped_clock()).await
}

#[tokio::test]
async fn forwards_to_the_backend_with_prefix_removed_and_forwarded_headers() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let (status, headers, body) = request(
        addr,
        STAGING,
        "GET",
        "/items/7?user_key=k1&x=1",
        boxed(http_body_util::Empty::new()),
        &[("cookie", "a=b"), ("x-forwarded-for", "10.9.8.7"), ("forwarded", "for=10.9.8.7"), ("via", "1.0 edge")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(v["path"], "/base/items/7", "the backend's base path comes first");
    assert_eq!(v["query"], "user_key=k1&x=1");
    assert_eq!(v["headers"]["x-forwarded-for"], "10.9.8.7, 127.0.0.1");
    assert_eq!(v["headers"]["forwarded"], format!("for=10.9.8.7, for=127.0.0.1;proto=http;host=\"{STAGING}\""));
    let via = v["headers"]["via"].as_str().unwrap_or_default();
    let hop = via.strip_prefix("1.0 edge, 1.1 tollgate-").unwrap_or_default();
    assert!(hop.len() == 8 && hop.bytes().all(|b| b.is_ascii_hexdigit()), "Via: {via}");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    assert_eq!(v["headers"]["x-forwarded-host"], STAGING);
    assert_eq!(v["headers"]["x-api-version"], "2", "headers policy, request side");
    assert!(v["headers"].get("cookie").is_none(), "headers policy deleted the cookie");
    assert_eq!(
        v["headers"]["host"],
        s.gw.server.staging.ip().to_string() + ":" + &backend_port(&v),
        "Host is the backend's"
    );
    assert_eq!(headers["x-served-by"], "tollgate", "headers policy, response side");
    assert!(headers.get("x-secret").is_none(), "a header named in Connection is hop-by-hop");

    // The longest backend usage prefix wins and is removed; prefixes match whole segments.
    let (status, _, body) = get(addr, STAGING, "/files/download?bytes=5&user_key=k1").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "xxxxx"));
    let (status, _, body) = get(addr, STAGING, "/filesystem?user_key=k1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["path"], "/base/filesystem");
}

fn backend_port(v: &serde_json::Value) -> String {
    v["headers"]["host"].as_str().and_then(|h| h.rsplit(':').next()).unwrap_or_default().to_string()
}

#[tokio::test]
async fn every_refusal_has_its_status_and_a_short_body() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let cases: [(&str, &str, StatusCode, &str); 8] = [
        ("nowhere.localhost", "/items?user_key=k1", StatusCode::NOT_FOUND, "unknown_host"),
        (STAGING, "/items", StatusCode::UNAUTHORIZED, "auth_missing"),
        (STAGING, "/items?user_key=nope", StatusCode::FORBIDDEN, "auth_failed"),
        (STAGING, "/unmapped?user_key=k1", StatusCode::NOT_FOUND, "nothing mapped here"),
        (STAGING, "/down?user_key=k1", StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        (STAGING, "/hole?user_key=k1", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        ("shop.example.com", "/items?user_key=k1", StatusCode::NOT_FOUND, "unknown_host"), // production host on staging
        ("SHOP-Staging.localhost:1234", "/items?user_key=k1", StatusCode::OK, "/base/items"),
    ];
    for (host, path, want, needle) in cases {
        let (status, headers, body) = get(addr, host, path).await;
        assert_eq!(status, want, "{host}{path}: {body}");
        assert!(body.contains(needle), "{host}{path}: {body}");
        if want != StatusCode::OK {
            assert!(body.len() < 200, "short body: {body}");
        }
        if want != StatusCode::OK && needle != "nothing mapped here" {
            assert_eq!(headers["content-type"], "application/json");
        }
    }
    // The production gateway serves the production host.
    let (status, _, _) = get(s.gw.server.production, "shop.example.com", "/items?user_key=k1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn of_200_concurrent_requests_exactly_50_pass_a_limit_of_50() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let tasks: Vec<_> =
        (0..200).map(|_| tokio::spawn(async move { get(addr, STAGING, "/items?user_key=k2").await })).collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, headers, _) = t.await.expect("task");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(headers["ratelimit-limit"], "50");
                assert_eq!(headers["ratelimit-remaining"], "0");
                assert!(headers.contains_key("retry-after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (50, 150));
}

#[tokio::test]
async fn methods_count_on_hits_and_eternity_limits_have_no_retry_after() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let post = |path: &'static str| async move {
        request(addr, STAGING, "POST", path, boxed(http_body_util::Full::new(Bytes::from("{}"))), &[]).await
    };
    // `write` is limited to 1 an hour; `hits` (its parent) to 3 for ever.
    assert_eq!(post("/items?user_key=k3").await.0, StatusCode::OK);
    let (status, headers, body) = post("/items?user_key=k3").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("limits_exceeded"));
    assert_eq!(headers["ratelimit-limit"], "1");
    assert!(headers.contains_key("retry-after"));
    // The refused request consumed nothing: two more reads fit in hits' eternity limit of 3.
    assert_eq!(get(addr, STAGING, "/items?user_key=k3").await.0, StatusCode::OK);
    assert_eq!(get(addr, STAGING, "/items?user_key=k3").await.0, StatusCode::OK);
    let (status, headers, _) = get(addr, STAGING, "/items?user_key=k3").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["ratelimit-limit"], "3");
    assert!(!headers.contains_key("retry-after"), "eternity never resets");
    assert!(!headers.contains_key("ratelimit-reset"));
    // Counters belong to the application: production shares them.
    assert_eq!(
        get(s.gw.server.production, "shop.example.com", "/items?user_key=k3").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn cors_answers_preflights_and_decorates_responses_even_refusals() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let origin = [("origin", "https://app.example"), ("access-control-request-method", "POST")];
    let (status, headers, _) =
        request(addr, STAGING, "OPTIONS", "/items", boxed(http_body_util::Empty::new()), &origin).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a preflight needs no credentials");
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(headers["access-control-max-age"], "600");

    let o = [("origin", "https://app.example")];
    let (status, headers, _) =
        request(addr, STAGING, "GET", "/items?user_key=k1", boxed(http_body_util::Empty::new()), &o).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    let (status, headers, _) = request(addr, STAGING, "GET", "/items", boxed(http_body_util::Empty::new()), &o).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example", "browsers must be able to read a 401");
}

#[tokio::test]
async fn app_id_and_app_key_in_basic_auth_and_user_key_in_a_header() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let empty = || boxed(http_body_util::Empty::new());
    let basic = |v: &'static str| [("authorization", v)];
    // id1:secret2 and id1:wrong, base64.
    let (status, _, body) =
        request(addr, "legacy-staging.localhost", "DELETE", "/x", empty(), &basic("Basic aWQxOnNlY3JldDI=")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) =
        request(addr, "legacy-staging.localhost", "GET", "/x", empty(), &basic("Basic aWQxOndyb25n")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = request(addr, "legacy-staging.localhost", "GET", "/x", empty(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, _) = request(addr, "hk-staging.localhost", "GET", "/x", empty(), &[("x-api-key", "hk1")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(addr, "hk-staging.localhost", "/x?x-api-key=hk1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "credentials are read only where configured");
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    assert_eq!(status_of(&raw(addr, b"GARBAGE\r\n\r\n").await), 400);
    assert_eq!(status_of(&raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n").await), 400);
    let big = format!("GET /items?user_key=k1 HTTP/1.1\r\nHost: {STAGING}\r\nX-Big: {}\r\n\r\n", "a".repeat(40 * 1024));
    assert_eq!(status_of(&raw(addr, big.as_bytes()).await), 431);
    assert_eq!(
        status_of(&raw(addr, b"GET /items?user_key=k1 HTTP/1.1\r\nConnection: close\r\n\r\n").await),
        400,
        "no Host"
    );
    // Request smuggling: both Content-Length and Transfer-Encoding.
    let smuggle = format!(
        "POST /items?user_key=k1 HTTP/1.1\r\nHost: {STAGING}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /items?user_key=k1 HTTP/1.1\r\nHost: {STAGING}\r\n\r\n"
    );
    let resp = raw(addr, smuggle.as_bytes()).await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1").count(), 1, "the smuggled request is never served: {resp}");
}

#[tokio::test]
async fn http2_cleartext_with_prior_knowledge() {
    let s = setup().await;
    let tcp = TcpStream::connect(s.gw.server.staging).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2c");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{STAGING}/items/1?user_key=k1"))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("req");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}

#[tokio::test]
async fn admin_listener_serves_health_and_metrics() {
    let s = setup().await;
    let admin = s.gw.server.admin;
    let (status, _, body) = get(admin, "localhost", "/status/live").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"status":"live"}"#));
    // DB-less: no store to report on.
    let (status, _, body) = get(admin, "localhost", "/status/ready").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"counters":"ok","status":"ready"}"#));
    let _ = get(s.gw.server.staging, STAGING, "/items?user_key=k1").await;
    let _ = get(s.gw.server.staging, STAGING, "/items").await;
    let (status, headers, body) = get(admin, "localhost", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap_or("").starts_with("text/plain"));
    assert!(body.contains("tollgate_responses_total{environment=\"staging\",class=\"2xx\"} 1"), "{body}");
    assert!(body.contains("tollgate_responses_total{environment=\"staging\",class=\"4xx\"} 1"), "{body}");
    // Per product: responses by status, request and upstream latency histograms.
    assert!(
        body.contains("tollgate_requests_total{environment=\"staging\",product=\"shop\",status=\"200\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("tollgate_requests_total{environment=\"staging\",product=\"shop\",status=\"401\"} 1"),
        "{body}"
    );
    let shop = "environment=\"staging\",product=\"shop\"";
    assert!(body.contains(&format!("tollgate_request_duration_seconds_count{{{shop}}} 2")), "{body}");
    assert!(body.contains(&format!("tollgate_request_duration_seconds_bucket{{{shop},le=\"+Inf\"}} 2")), "{body}");
    assert!(body.contains(&format!("tollgate_upstream_duration_seconds_count{{{shop}}} 1")), "{body}");
    assert!(body.contains("# TYPE tollgate_upstream_duration_seconds histogram"), "{body}");
    assert_eq!(get(admin, "localhost", "/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    // Idle backend connections are kept per worker thread: with one worker, ten
    // sequential requests (each on a new client connection) share one.
    let backend = http_backend().await;
    let down = closed_port().await;
    let (hole, _l, _held) = blackhole().await;
    let gw = gateway_with(&shop(backend, down, hole), &["--workers", "1"]).await;
    let addr = gw.server.staging;
    let mut ports = std::collections::HashSet::new();
    for _ in 0..10 {
        let (status, _, body) = get(addr, STAGING, "/items?user_key=k1").await;
        assert_eq!(status, StatusCode::OK);
        ports.insert(json(&body)["peer"].as_u64().expect("peer port"));
    }
    assert_eq!(ports.len(), 1, "ten sequential requests should reuse one backend connection: {ports:?}");
}

#[tokio::test]
async fn every_request_carries_a_request_id_to_the_backend_and_back() {
    let s = setup().await;
    let addr = s.gw.server.staging;
    let (status, headers, body) = get(addr, STAGING, "/items/1?user_key=k1").await;
    assert_eq!(status, StatusCode::OK);
    let id = headers["x-request-id"].to_str().expect("ascii").to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(json(&body)["headers"]["x-request-id"], id.as_str(), "the backend saw the same id");
    let (_, again, _) = get(addr, STAGING, "/items/1?user_key=k1").await;
    assert_ne!(again["x-request-id"], id.as_str(), "each request its own");
    // A client's own id is kept; refusals carry one too.
    let (_, headers, body) = request(
        addr,
        STAGING,
        "GET",
        "/items/1?user_key=k1",
        boxed(http_body_util::Empty::new()),
        &[("x-request-id", "client-chosen-1")],
    )
    .await;
    assert_eq!(
        (headers["x-request-id"].to_str().ok(), json(&body)["headers"]["x-request-id"].as_str()),
        (Some("client-chosen-1"), Some("client-chosen-1"))
    );
    let (status, headers, _) = get(addr, STAGING, "/items/1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("x-request-id"));
}

/// A keep-alive HTTP/1.1 backend that answers by path with bytes written by hand, and
/// says in `x-conn` which of its connections (counted from 1) carried the request.
/// `/hold` answers once `hold` of them are waiting (so that many connections are
/// open at once); `/crash` is counted and never answered.
async fn framing_backend(hold: usize) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let crashes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = crashes.clone();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(hold));
    tokio::spawn(async move {
        let mut conns = 0u32;
        while let Ok((mut tcp, _)) = listener.accept().await {
            conns += 1;
            let c = conns;
            let (crashes, barrier) = (counted.clone(), barrier.clone());
            tokio::spawn(async move {
                for nth in 1.. {
                    let Some(head) = read_request_head(&mut tcp).await else { return };
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let path = line.split(' ').nth(1).unwrap_or_default().split('?').next().unwrap_or_default();
                    let answer = match path {
                        "/length" if line.starts_with("HEAD") => {
                            format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-conn: {c}\r\n\r\n")
                        }
                        "/length" => format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-conn: {c}\r\n\r\nhello"),
                        "/chunked" => format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-conn: {c}\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n"
                        ),
                        "/eof" => format!("HTTP/1.1 200 OK\r\nx-conn: {c}\r\n\r\nuntil close"),
                        "/both" => format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nx-conn: {c}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                        ),
                        "/interim" => "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
                        "/garbage" => "NOT HTTP AT ALL\r\n\r\n".into(),
                        "/hold" => {
                            barrier.wait().await;
                            format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nx-conn: {c}\r\n\r\nheld")
                        }
                        "/crash" => {
                            crashes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        "/two-lengths" => "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n".into(),
                        "/old" => "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
                        "/reason" => "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok".into(),
                        "/trailers" => format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-conn: {c}\r\n\r\n2\r\nok\r\n0\r\nx-sum: 7\r\nConnection: x-secret\r\nx-secret: 1\r\nContent-Length: 99\r\nKeep-Alive: timeout=5\r\n\r\n"
                        ),
                        "/bad-chunk" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX".into(),
                        // Closed unanswered when it is not the connection's first request:
                        // the race of a backend closing an idle connection as a request
                        // goes out on it.
                        "/vanish" if nth > 1 => return,
                        "/vanish" => format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-conn: {c}\r\n\r\nfirst"),
                        _ => return,
                    };
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if matches!(path, "/eof" | "/garbage" | "/bad-chunk") {
                        return;
                    }
                }
            });
        }
    });
    (addr, crashes)
}

#[tokio::test]
async fn a_backends_http1_answers_are_framed_as_rfc_9112_says() {
    const HOLD: usize = 3;
    let (backend, crashes) = framing_backend(HOLD).await;
    let yaml = format!(
        r#"
backends:
  - {{ system_name: raw, private_base_url: "http://{backend}" }}
products:
  - system_name: framing
    staging_public_base_url: http://framing-staging.localhost
    production_public_base_url: http://framing.localhost
    backend_usages: [ {{ backend: raw, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: a
    applications: [ {{ name: app, product: framing, plan: basic, user_key: k }} ]
"#
    );
    let gw = gateway_with(&yaml, &["--workers", "1"]).await;
    let addr = gw.server.staging;
    let host = "framing-staging.localhost";
    let send = |method: &'static str, path: &'static str| async move {
        let (status, headers, body) =
            request(addr, host, method, &format!("{path}?user_key=k"), boxed(http_body_util::Empty::new()), &[]).await;
        let conn = headers.get("x-conn").map(|v| v.to_str().expect("ascii").to_string()).unwrap_or_default();
        (status, headers, body, conn)
    };

    // A length-delimited body, then a chunked one (its extension skipped) on the same
    // connection; a HEAD's answer has no body whatever its length says, and the
    // connection carries the next request.
    let (status, _, body, first) = send("GET", "/length").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    let (status, headers, body, conn) = send("GET", "/chunked").await;
    assert_eq!((status, body.as_str(), conn.as_str()), (StatusCode::OK, "hello world", first.as_str()));
    assert!(!headers.contains_key("content-length"), "{headers:?}");
    let (status, headers, body, conn) = send("HEAD", "/length").await;
    assert_eq!((status, body.as_str(), conn.as_str()), (StatusCode::OK, "", first.as_str()));
    assert_eq!(headers["content-length"], "5");
    let (_, _, body, conn) = send("GET", "/length").await;
    assert_eq!((body.as_str(), conn.as_str()), ("hello", first.as_str()), "reused after a HEAD");

    // An interim answer is skipped.
    let (status, _, body, _) = send("GET", "/interim").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    // Transfer-Encoding with Content-Length: the chunks decide, the length is not
    // passed on, and the connection is not used again (RFC 9112 §6.3).
    let (status, headers, body, both) = send("GET", "/both").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    assert!(!headers.contains_key("content-length"), "{headers:?}");
    let (_, _, _, after) = send("GET", "/length").await;
    assert_ne!(after, both, "a connection that sent both framings is closed");

    // A body delimited by the close: read to the end, the connection not reused.
    let (status, _, body, eof) = send("GET", "/eof").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "until close"));
    let (_, _, _, next) = send("GET", "/length").await;
    assert_ne!(next, eof);

    // The backend closes a kept connection as the next request goes out on it: an
    // idempotent request goes again on a new connection; a POST gets 502.
    let (_, _, _, kept) = send("GET", "/length").await;
    let (status, _, body, retried) = send("GET", "/vanish").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "first"), "the GET was sent again");
    assert_ne!(retried, kept);
    let (status, _, body, _) = send("POST", "/vanish").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream_failed"), "{body}");

    // Several kept connections, and a request the backend closes every connection on
    // unanswered: sent once on a kept connection and once more on a new one, never on
    // each kept connection in turn.
    let holds: Vec<_> = (0..HOLD).map(|_| tokio::spawn(send("GET", "/hold"))).collect();
    for h in holds {
        assert_eq!(h.await.expect("a request").2, "held");
    }
    let (status, _, body, _) = send("GET", "/crash").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(crashes.load(std::sync::atomic::Ordering::SeqCst), 2, "sent twice at most");

    // A length that frames nothing (a HEAD's answer) is checked too: two lengths are 502,
    // not a client connection dropped for a head the gateway cannot send.
    let (status, _, body, _) = send("HEAD", "/two-lengths").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    // The gateway's version and the backend's reason phrase.
    let answer =
        raw(addr, format!("GET /old?user_key=k HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let answer =
        raw(addr, format!("GET /reason?user_key=k HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
    assert!(answer.starts_with("HTTP/1.1 200 Fine Thanks\r\n"), "{answer}");
    // Trailers reach an HTTP/2 client without the fields a trailer may not carry.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2c");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{host}/trailers?user_key=k"))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("req");
    let resp = h2.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = http_body_util::BodyExt::collect(resp.into_body()).await.expect("the body and its trailers");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers.get("x-sum").map(|v| v.as_bytes()), Some(&b"7"[..]));
    for gone in ["connection", "x-secret", "content-length", "keep-alive"] {
        assert!(!trailers.contains_key(gone), "{gone} in {trailers:?}");
    }
    assert_eq!(&collected.to_bytes()[..], b"ok");

    // Bytes that are not a response: 502 upstream_invalid_response.
    let (status, _, body, _) = send("GET", "/garbage").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("upstream_invalid_response"), "{body}");

    // A malformed chunk after the head: the client's connection is closed with the
    // response cut short (or, as here where the head and the first chunk would go out
    // in one write, before any of it), never completed with bytes the backend did
    // not frame.
    let answer = raw(addr, format!("GET /bad-chunk?user_key=k HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert!(answer.is_empty() || status_of(&answer) == 200, "{answer}");
    assert!(!answer.contains("helloXX") && !answer.ends_with("0\r\n\r\n"), "{answer:?}");
}
