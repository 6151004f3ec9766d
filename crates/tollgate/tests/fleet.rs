//! Backends of several endpoints (issue 18): weighted round robin over three Node
//! processes, one killed and brought back, consistent hashing across a reload that
//! removes an endpoint, draining with open WebSockets, circuit breaking, failing closed.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One endpoint: `tests/peers/fleet_endpoint.js`, answering with its name.
struct Instance {
    host: &'static str,
    port: u16,
    child: tokio::process::Child,
}

impl Instance {
    async fn start(name: &str, port: u16) -> Instance {
        Instance::start_on(name, "127.0.0.1", port).await
    }

    /// On loopback address `host` (127.0.0.0/8).
    async fn start_on(name: &str, host: &'static str, port: u16) -> Instance {
        let mut child = tokio::process::Command::new("node")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/fleet_endpoint.js"))
            .env("WS_MODULE", example_dir().join("node_modules/ws"))
            .env("NAME", name)
            .env("HOST", host)
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next_line().await.expect("stdout").expect("node printed nothing");
        let port = first.strip_prefix("listening on ").and_then(|p| p.parse().ok()).expect("port line");
        Instance { host, port, child }
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }
}

fn config(endpoints: &str, backend_extra: &str) -> String {
    format!(
        r#"
backends:
  - system_name: fleet
    private_base_url: http://fleet.internal
    endpoints: [ {endpoints} ]
{backend_extra}
products:
  - system_name: api
    staging_public_base_url: http://api.test
    production_public_base_url: http://api-production.test
    backend_usages: [ {{ backend: fleet, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits, delta: 1 }} ]
    policy_chain: [ {{ name: websocket }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: api, plan: basic, user_key: k }} ]
"#
    )
}

/// `n` requests, `concurrency` at a time: answers by endpoint name (errors under
/// `ERROR <status>`).
async fn spread(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    header: Option<(&str, String)>,
) -> HashMap<String, usize> {
    let client = client();
    let mut counts = HashMap::new();
    let mut sent = 0;
    while sent < n {
        let batch = concurrency.min(n - sent);
        let answers = futures_util::future::join_all((0..batch).map(|_| {
            let client = client.clone();
            let header = header.clone();
            async move {
                let mut b = http::Request::get(format!("http://{addr}/?user_key=k")).header("host", "api.test");
                if let Some((k, v)) = header {
                    b = b.header(k, v);
                }
                let resp = client.request(b.body(full(bytes::Bytes::new())).expect("request")).await.expect("response");
                let status = resp.status();
                let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
                match status.is_success() {
                    true => String::from_utf8_lossy(&body).into_owned(),
                    false => format!("ERROR {status} {}", String::from_utf8_lossy(&body)),
                }
            }
        }))
        .await;
        for a in answers {
            *counts.entry(a).or_default() += 1;
        }
        sent += batch;
    }
    counts
}

/// An endpoint's series from `/metrics`, as the staging gateway sees it.
async fn endpoint_metric(admin: SocketAddr, name: &str, endpoint: &str) -> Option<f64> {
    let (_, _, text) = get(admin, "localhost", "/metrics").await;
    let needle = format!("environment=\"staging\",backend=\"fleet\",endpoint=\"{endpoint}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `/metrics` until the endpoint's series has `value` (bounded: 20 s).
async fn until_metric(admin: SocketAddr, name: &str, endpoint: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if endpoint_metric(admin, name, endpoint).await == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}{{endpoint={endpoint}}} never became {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn within_5_percent(counts: &HashMap<String, usize>, name: &str, expected: usize) {
    let got = counts.get(name).copied().unwrap_or(0) as f64;
    let e = expected as f64;
    assert!((got - e).abs() <= e * 0.05, "{name} got {got} of an expected {expected}: {counts:?}");
}

#[tokio::test]
async fn weighted_spread_and_an_endpoint_that_dies_and_comes_back_unnoticed_by_clients() {
    let a = Instance::start("a", 0).await;
    let b = Instance::start("b", 0).await;
    let mut c = Instance::start("c", 0).await;
    let endpoints = format!(
        r#"{{ address: "{}" }}, {{ address: "{}", weight: 1 }}, {{ address: "{}", weight: 2 }}"#,
        a.address(),
        b.address(),
        c.address()
    );
    let health = "    health_checks:\n      active: { path: /health, interval_ms: 100, timeout_ms: 100, healthy_threshold: 2, unhealthy_threshold: 2 }\n      passive: { ejection_ms: 200, max_ejection_ms: 1000 }\n";
    let gw = gateway(&config(&endpoints, health)).await;
    let addr = gw.server.staging;

    let counts = spread(addr, 3000, 8, None).await;
    assert_eq!(counts.values().sum::<usize>(), 3000);
    within_5_percent(&counts, "a", 750);
    within_5_percent(&counts, "b", 750);
    within_5_percent(&counts, "c", 1500);

    // Killed between requests: none is in flight to it, so no client sees an error.
    let c_address = c.address();
    c.kill().await;
    let counts = spread(addr, 400, 8, None).await;
    assert_eq!(counts.len(), 2, "only a and b answer, and nobody got an error: {counts:?}");
    within_5_percent(&counts, "a", 200);
    until_metric(gw.server.admin, "tollgate_endpoint_healthy", &c_address, 0.0).await;
    let counts = spread(addr, 200, 8, None).await;
    assert_eq!(counts.len(), 2, "{counts:?}");

    // Back on its port: it rejoins once its probes pass (and its ejection ended).
    let c = Instance::start("c", c.port).await;
    until_metric(gw.server.admin, "tollgate_endpoint_healthy", &c.address(), 1.0).await;
    let counts = spread(addr, 400, 8, None).await;
    within_5_percent(&counts, "c", 200);
    within_5_percent(&counts, "a", 100);
    assert!(endpoint_metric(gw.server.admin, "tollgate_endpoint_ejections_total", &c_address).await >= Some(1.0));
}

#[tokio::test]
async fn consistent_hash_keeps_keys_and_moves_only_a_removed_endpoints_share() {
    let instances = [Instance::start("a", 0).await, Instance::start("b", 0).await, Instance::start("c", 0).await];
    let list = |which: &[usize]| {
        which.iter().map(|i| format!(r#"{{ address: "{}" }}"#, instances[*i].address())).collect::<Vec<_>>().join(", ")
    };
    let lb = "    load_balancing: { algorithm: consistent_hash, hash_on: { header: X-Session } }\n";
    let gw = gateway(&config(&list(&[0, 1, 2]), lb)).await;
    let addr = gw.server.staging;
    let keys: Vec<String> = (0..300).map(|i| format!("session-{i}")).collect();
    let mut before = HashMap::new();
    for k in &keys {
        let counts = spread(addr, 3, 3, Some(("x-session", k.clone()))).await;
        assert_eq!(counts.len(), 1, "one key, one endpoint: {counts:?}");
        before.insert(k.clone(), counts.into_keys().next().expect("answer"));
    }
    for name in ["a", "b", "c"] {
        let share = before.values().filter(|v| *v == name).count();
        assert!((50..=150).contains(&share), "{name} holds {share} of 300 keys");
    }

    std::fs::write(&gw.config, config(&list(&[0, 2]), lb)).expect("write");
    gw.server.reload().await.expect("reload");
    for k in &keys {
        let now = spread(addr, 1, 1, Some(("x-session", k.clone()))).await.into_keys().next().expect("answer");
        match before[k].as_str() {
            "b" => assert_ne!(now, "b"),
            kept => assert_eq!(now, kept, "{k} moved although its endpoint stayed"),
        }
    }
}

#[tokio::test]
async fn a_draining_endpoint_keeps_its_websockets_takes_no_new_ones_then_closes_them_with_1001() {
    let (a, b) = (Instance::start("a", 0).await, Instance::start("b", 0).await);
    let list =
        |drain: bool| format!(r#"{{ address: "{}", drain: {drain} }}, {{ address: "{}" }}"#, a.address(), b.address());
    let gw = gateway(&config(&list(false), "")).await;
    let addr = gw.server.staging;
    let mut on = HashMap::<String, Vec<Ws>>::new();
    for _ in 0..4 {
        let mut ws = ws(addr, "api.test", "/?user_key=k").await.expect("open");
        let who = ask(&mut ws, "hi").await;
        on.entry(who.split(':').next().expect("name").to_owned()).or_default().push(ws);
    }
    assert_eq!((on["a"].len(), on["b"].len()), (2, 2), "round robin");

    std::fs::write(&gw.config, config(&list(true), "    drain_timeout_ms: 60000\n")).expect("write");
    gw.server.reload().await.expect("reload");
    assert_eq!(endpoint_metric(gw.server.admin, "tollgate_endpoint_draining", &a.address()).await, Some(1.0));
    for _ in 0..4 {
        let mut ws = ws(addr, "api.test", "/?user_key=k").await.expect("open");
        assert_eq!(ask(&mut ws, "new").await, "b: new", "a draining endpoint takes no new WebSocket");
    }
    for ws in on.get_mut("a").expect("a") {
        assert_eq!(ask(ws, "still there?").await, "a: still there?");
    }
    assert_eq!(spread(addr, 10, 2, None).await, HashMap::from([("b".to_owned(), 10)]));
    assert_eq!(endpoint_metric(gw.server.admin, "tollgate_endpoint_websockets_open", &a.address()).await, Some(2.0));

    // The deadline shortened: a's WebSockets close with 1001, b's stay.
    std::fs::write(&gw.config, config(&list(true), "    drain_timeout_ms: 1\n")).expect("write");
    gw.server.reload().await.expect("reload");
    for ws in on.get_mut("a").expect("a") {
        match ws_message(ws).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a Close 1001, got {other:?}"),
        }
    }
    for ws in on.get_mut("b").expect("b") {
        assert_eq!(ask(ws, "fine").await, "b: fine");
    }
}

#[tokio::test]
async fn beyond_the_circuit_breaker_a_request_is_refused_at_once_with_503() {
    // A backend that accepts and never answers: the first request holds its one connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
    let gw =
        gateway(&config(&format!(r#"{{ address: "{backend}" }}"#), "    circuit_breaker: { max_connections: 1 }\n"))
            .await;
    let addr = gw.server.staging;
    let held = tokio::spawn(async move { get(addr, "api.test", "/?user_key=k").await });
    let (_conn, _) = listener.accept().await.expect("the first request reached the backend");
    let (status, _, body) = get(addr, "api.test", "/?user_key=k").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"upstream_overloaded\""), "{body}");
    held.abort();
}

#[tokio::test]
async fn a_backend_that_fails_closed_refuses_with_503_once_its_only_endpoint_is_ejected() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let gw = gateway(&config(
        &format!(r#"{{ address: "{dead}" }}"#),
        "    health_checks: { passive: { consecutive_failures: 1 }, when_all_unhealthy: refuse }\n",
    ))
    .await;
    let addr = gw.server.staging;
    let (status, _, body) = get(addr, "api.test", "/?user_key=k").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("\"upstream_unavailable\""), "{body}");
    let (status, _, body) = get(addr, "api.test", "/?user_key=k").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"no_healthy_endpoint\""), "{body}");
}

#[tokio::test]
async fn least_requests_keeps_to_the_weights_when_nothing_is_in_flight() {
    let (a, b) = (Instance::start("a", 0).await, Instance::start("b", 0).await);
    let endpoints = format!(r#"{{ address: "{}", weight: 3 }}, {{ address: "{}" }}"#, a.address(), b.address());
    let gw = gateway(&config(&endpoints, "    load_balancing: { algorithm: least_requests }\n")).await;
    let counts = spread(gw.server.staging, 400, 1, None).await;
    within_5_percent(&counts, "a", 300);
    within_5_percent(&counts, "b", 100);
}

#[tokio::test]
async fn an_endpoint_that_breaks_its_bodies_is_ejected() {
    // Announces 100 bytes, sends 7 and closes: every response breaks after its head.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let broken = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nbroken!").await;
            });
        }
    });
    let good = Instance::start("good", 0).await;
    let endpoints = format!(r#"{{ address: "{broken}" }}, {{ address: "{}" }}"#, good.address());
    let gw = gateway(&config(
        &endpoints,
        "    health_checks: { passive: { consecutive_failures: 2, ejection_ms: 60000 } }\n",
    ))
    .await;
    let addr = gw.server.staging;
    // Round robin: the broken endpoint gets every other request until its second break.
    let client = client();
    let mut broken_bodies = 0;
    for _ in 0..20 {
        let req = http::Request::get(format!("http://{addr}/?user_key=k"))
            .header("host", "api.test")
            .body(full(bytes::Bytes::new()))
            .expect("request");
        // The client sees the break as an incomplete body, or (when nothing of the
        // response was written yet) as an incomplete message.
        let broken = match client.request(req).await {
            Ok(resp) => http_body_util::BodyExt::collect(resp.into_body()).await.is_err(),
            Err(_) => true,
        };
        broken_bodies += usize::from(broken);
    }
    assert_eq!(broken_bodies, 2, "ejected after its second broken body");
    assert_eq!(
        endpoint_metric(gw.server.admin, "tollgate_endpoint_ejections_total", &broken.to_string()).await,
        Some(1.0)
    );
    assert_eq!(endpoint_metric(gw.server.admin, "tollgate_endpoint_healthy", &broken.to_string()).await, Some(0.0));
}

#[tokio::test]
async fn a_refused_reload_starts_no_drain() {
    let (a, b) = (Instance::start("a", 0).await, Instance::start("b", 0).await);
    let list =
        |drain: bool| format!(r#"{{ address: "{}", drain: {drain} }}, {{ address: "{}" }}"#, a.address(), b.address());
    let gw = gateway(&config(&list(false), "")).await;
    // The new configuration drains a, but cannot be prepared (its JWK Set is unreachable).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let refused = config(&list(true), "").replace(
        "policy_chain: [ { name: websocket } ]",
        &format!("policy_chain: [ {{ name: jwt, configuration: {{ jwks_url: \"http://{dead}/certs\" }} }} ]"),
    );
    std::fs::write(&gw.config, refused).expect("write");
    assert!(gw.server.reload().await.is_err(), "the reload is refused");
    assert_eq!(endpoint_metric(gw.server.admin, "tollgate_endpoint_draining", &a.address()).await, Some(0.0));
    let counts = spread(gw.server.staging, 10, 2, None).await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&5), Some(&5)), "a still takes its share: {counts:?}");
}

// Store mode: the admin API shows each endpoint's state on this node and drains one at
// once — in every serving version, without a deploy — and stops draining it.
#[tokio::test]
async fn the_admin_api_shows_endpoints_and_drains_one_without_a_deploy() {
    let (a, b) = (Instance::start("a", 0).await, Instance::start("b", 0).await);
    let dir = TempDir::new();
    let url = store_urls(&dir).await.swap_remove(0).1;
    let server = store_server(&url).await;
    let ok = |(status, body): (http::StatusCode, serde_json::Value), want: http::StatusCode, what: &str| {
        assert_eq!(status, want, "{what}: {body}");
        body
    };
    // A backend name of its own: the endpoints' state is per process, and this test
    // binary runs other gateways with backends named `fleet`.
    let yaml = config(&format!(r#"{{ address: "{}" }}, {{ address: "{}", weight: 2 }}"#, a.address(), b.address()), "")
        .replace("fleet", "orders");
    let doc: serde_json::Value = serde_norway::from_str(&yaml).expect("yaml");
    ok(api(&server, "PUT", "/config", Some(doc)).await, http::StatusCode::OK, "apply");
    ok(api(&server, "POST", "/products/api/deploy", None).await, http::StatusCode::CREATED, "deploy");
    let addr = server.staging;
    let first = spread(addr, 30, 3, None).await;
    assert_eq!((first["a"], first["b"]), (10, 20), "weights 1:2: {first:?}");

    let view = ok(api(&server, "GET", "/backends/orders/endpoints", None).await, http::StatusCode::OK, "endpoints");
    let endpoints = view["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 2, "{view}");
    assert_eq!((endpoints[0]["address"].as_str(), endpoints[0]["weight"].as_u64()), (Some(&*a.address()), Some(1)));
    assert_eq!(endpoints[1]["weight"], 2);
    let staging = &endpoints[0]["staging"];
    assert_eq!((staging["healthy"].as_bool(), staging["draining"].as_bool()), (Some(true), Some(false)), "{view}");
    assert_eq!((staging["active_requests"].as_u64(), staging["ejections_total"].as_u64()), (Some(0), Some(0)));
    assert!(endpoints[0]["production"].is_null(), "nothing promoted: {view}");

    // Spelled another way, the address still names endpoint a.
    let other_spelling = a.address().replace("127.0.0.1", "127.000.000.001");
    let (status, body) =
        api(&server, "POST", &format!("/backends/orders/endpoints/{other_spelling}/drain"), None).await;
    assert_eq!(status, http::StatusCode::NOT_FOUND, "127.000.000.001 is not an IP address: {body}");
    let view = ok(
        api(&server, "POST", &format!("/backends/orders/endpoints/{}/drain", a.address()), None).await,
        http::StatusCode::OK,
        "drain",
    );
    assert_eq!(view["endpoints"][0]["drain"], true, "{view}");
    assert_eq!(view["endpoints"][0]["staging"]["draining"], true, "served when the call answers: {view}");
    assert_eq!(spread(addr, 10, 2, None).await, HashMap::from([("b".to_owned(), 10)]), "no deploy needed");
    // Stored on the backend: an export shows it, and the staging version is unchanged.
    let exported = ok(api(&server, "GET", "/config", None).await, http::StatusCode::OK, "export");
    assert_eq!(exported["backends"][0]["endpoints"][0]["drain"], true, "{exported}");
    let (_, configs) = api(&server, "GET", "/products/api/configs/staging", None).await;
    assert_eq!(configs.as_array().map(Vec::len), Some(1), "no new version: {configs}");

    ok(
        api(&server, "DELETE", &format!("/backends/orders/endpoints/{}/drain", a.address()), None).await,
        http::StatusCode::OK,
        "undrain",
    );
    let back = spread(addr, 30, 3, None).await;
    assert_eq!((back["a"], back["b"]), (10, 20), "a takes its share again: {back:?}");

    // Both drained at once: each write that loses the race reads again; none is lost.
    let (pa, pb) = (
        format!("/backends/orders/endpoints/{}/drain", a.address()),
        format!("/backends/orders/endpoints/{}/drain", b.address()),
    );
    let (ra, rb) = tokio::join!(api(&server, "POST", &pa, None), api(&server, "POST", &pb, None));
    assert_eq!((ra.0, rb.0), (http::StatusCode::OK, http::StatusCode::OK), "{} {}", ra.1, rb.1);
    let view = ok(api(&server, "GET", "/backends/orders/endpoints", None).await, http::StatusCode::OK, "both");
    assert_eq!(
        (&view["endpoints"][0]["drain"], &view["endpoints"][1]["drain"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{view}"
    );

    let (status, body) = api(&server, "POST", "/backends/orders/endpoints/127.0.0.1:1/drain", None).await;
    assert_eq!(status, http::StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(&a.address())), "lists them: {body}");
    ok(
        api(
            &server,
            "POST",
            "/backends",
            Some(serde_json::json!({ "system_name": "one", "private_base_url": "http://127.0.0.1:9" })),
        )
        .await,
        http::StatusCode::CREATED,
        "a backend of one",
    );
    let (status, body) = api(&server, "POST", "/backends/one/endpoints/127.0.0.1:9/drain", None).await;
    assert_eq!(status, http::StatusCode::CONFLICT, "{body}");
    let view = ok(api(&server, "GET", "/backends/one/endpoints", None).await, http::StatusCode::OK, "one");
    assert_eq!(view["endpoints"][0]["address"], "127.0.0.1:9", "its URL's host: {view}");
}

/// A DNS server on loopback (`tests/peers/dns_server.py`, dnslib from PyPI) whose records
/// the test sets.
struct Dns {
    port: u16,
    child: tokio::process::Child,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Dns {
    async fn start() -> Dns {
        let mut child = tokio::process::Command::new("python3")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dns_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 (dnslib: pip install dnslib)");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first =
            out.next_line().await.expect("stdout").expect("the DNS server printed nothing (is dnslib installed?)");
        let port = first.strip_prefix("listening on ").and_then(|p| p.parse().ok()).expect("port line");
        Dns { port, child, out }
    }

    /// Gives `name` these addresses (none: NXDOMAIN), once in effect.
    async fn set(&mut self, name: &str, ips: &[&str]) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{name} {}\n", ips.join(" ")).as_bytes()).await.expect("write");
        assert_eq!(self.out.next_line().await.expect("stdout").as_deref(), Some("ok"));
    }
}

/// Reads the gateway's log until a line holds every one of `needles` (bounded: 20 s).
async fn until_log(err: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>, needles: &[&str]) {
    let wait = async {
        while let Some(line) = err.next_line().await.expect("stderr") {
            if needles.iter().all(|n| line.contains(n)) {
                return;
            }
        }
        panic!("the gateway exited before logging {needles:?}");
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no log line with {needles:?}"));
}

// An endpoint given by host name: every address it resolves to is an endpoint; a
// record changed in a real DNS server is followed at its TTL (1 s) without a reload; a
// name that stops resolving keeps its addresses.
#[tokio::test]
async fn a_host_name_endpoint_follows_its_dns_records_without_a_reload() {
    let mut dns = Dns::start().await;
    dns.set("svc.test", &["127.0.0.2"]).await;
    // Three instances on one port, on three loopback addresses.
    let a = Instance::start_on("a", "127.0.0.2", 0).await;
    let port = a.port;
    let (_b, _c) = (Instance::start_on("b", "127.0.0.3", port).await, Instance::start_on("c", "127.0.0.4", port).await);
    let dir = TempDir::new();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config(&format!(r#"{{ address: "svc.test:{port}" }}"#), "")).expect("config");
    let resolver = format!("127.0.0.1:{}", dns.port);
    // A name server that cannot be asked is refused at start, naming the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&file)
        .args(PORT0)
        .args(["--resolver", "127.0.0.1:0"])
        .output()
        .expect("serve");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--resolver: `127.0.0.1:0` is not a name server"), "{said}");
    let mut gw = spawn_serve_with(&file, &["--resolver", &resolver]).await;
    let at = |ip: &str| format!("{ip}:{port}");

    until_log(&mut gw.err, &["endpoint_resolved", "staging", "127.0.0.2"]).await;
    assert_eq!(spread(gw.staging, 10, 2, None).await, HashMap::from([("a".to_owned(), 10)]));
    assert_eq!(endpoint_metric(gw.admin, "tollgate_endpoint_healthy", &at("127.0.0.2")).await, Some(1.0));

    dns.set("svc.test", &["127.0.0.2", "127.0.0.3"]).await;
    until_log(&mut gw.err, &["endpoint_resolved", "staging", "127.0.0.2,127.0.0.3"]).await;
    let both = spread(gw.staging, 20, 2, None).await;
    assert_eq!((both.get("a"), both.get("b")), (Some(&10), Some(&10)), "every address is an endpoint: {both:?}");

    dns.set("svc.test", &["127.0.0.4"]).await;
    until_log(&mut gw.err, &["endpoint_resolved", "staging", "127.0.0.4"]).await;
    assert_eq!(spread(gw.staging, 10, 2, None).await, HashMap::from([("c".to_owned(), 10)]), "the old addresses left");
    assert_eq!(endpoint_metric(gw.admin, "tollgate_endpoint_healthy", &at("127.0.0.2")).await, None);

    // NXDOMAIN: the name keeps the addresses it had.
    dns.set("svc.test", &[]).await;
    until_log(&mut gw.err, &["endpoint_unresolved", "staging", "svc.test"]).await;
    assert_eq!(spread(gw.staging, 10, 2, None).await, HashMap::from([("c".to_owned(), 10)]));
}

// Store mode: a host-name endpoint's addresses are shown under it, each with its state;
// the name itself is served through them.
#[tokio::test]
async fn the_admin_api_shows_a_names_addresses_under_it() {
    let a = Instance::start("a", 0).await;
    let dir = TempDir::new();
    let url = store_urls(&dir).await.swap_remove(0).1;
    let server = store_server(&url).await;
    // `localhost` resolves from /etc/hosts, without a DNS server.
    let yaml = config(&format!(r#"{{ address: "localhost:{}" }}"#, a.port), "").replace("fleet", "named");
    let doc: serde_json::Value = serde_norway::from_str(&yaml).expect("yaml");
    assert_eq!(api(&server, "PUT", "/config", Some(doc)).await.0, http::StatusCode::OK);
    assert_eq!(api(&server, "POST", "/products/api/deploy", None).await.0, http::StatusCode::CREATED);
    let ipv4 = format!("127.0.0.1:{}", a.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let (_, view) = api(&server, "GET", "/backends/named/endpoints", None).await;
        let resolved = view["endpoints"][0]["addresses"]
            .as_array()
            .is_some_and(|list| list.iter().any(|x| x["address"] == ipv4.as_str() && x["staging"]["healthy"] == true));
        if resolved {
            break view;
        }
        assert!(Instant::now() < deadline, "localhost never resolved: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let name = &view["endpoints"][0];
    assert_eq!(name["address"], format!("localhost:{}", a.port), "{view}");
    assert!(name["staging"].is_null() && name["production"].is_null(), "its state is its addresses': {view}");
    let first =
        name["addresses"].as_array().and_then(|l| l.iter().find(|x| x["address"] == ipv4.as_str())).expect("v4");
    assert_eq!(first["staging"]["resolved_from"], format!("localhost:{}", a.port), "{view}");
    assert!(first["production"].is_null(), "nothing promoted: {view}");
    assert_eq!(view["endpoints"].as_array().map(Vec::len), Some(1), "no address listed twice: {view}");
}

// An endpoint that is the gateway itself: the request comes back carrying the gateway's
// own `Via` entry and is refused with 508 at once, instead of going round until a
// header limit stops it.
#[tokio::test]
async fn an_endpoint_that_is_the_gateway_itself_is_a_loop_refused_with_508() {
    let a = Instance::start("a", 0).await;
    let gw = gateway(&config(&format!(r#"{{ address: "{}" }}"#, a.address()), "")).await;
    let own = gw.server.staging;
    let (status, headers, body) = get(own, "api.test", "/?user_key=k").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"), "{headers:?}");
    std::fs::write(&gw.config, config(&format!(r#"{{ address: "{own}" }}"#), "")).expect("write");
    gw.server.reload().await.expect("reload");
    let (status, _, body) = get(own, "api.test", "/?user_key=k").await;
    assert_eq!(status.as_u16(), 508, "{body}");
    assert!(body.contains("\"loop_detected\""), "{body}");
    // One pass came back, no more: two responses in all (the inner 508 and the outer).
    let (_, _, metrics) = get(gw.server.admin, "localhost", "/metrics").await;
    let server_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_responses_total{") && l.contains("class=\"5xx\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(server_errors, 2.0, "{metrics}");
}
