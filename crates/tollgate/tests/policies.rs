//! The policy catalogue through a real gateway (DB-less, a Rust HTTP backend that
//! answers with the request it got, and the example's Node WebSocket server): each
//! policy's behaviour, its order relative to `tollgate`, conditions, and the
//! configuration errors each reports with its path.

mod support;

use http::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use support::*;

/// One product per chain, all on the echoing backend: `{name}-staging.localhost`.
fn config(backend: SocketAddr, chains: &[(&str, &str)]) -> String {
    let mut yaml =
        format!("backends: [ {{ system_name: echo, private_base_url: \"http://{backend}\" }} ]\nproducts:\n");
    for (name, chain) in chains {
        yaml += &format!(
            r#"  - system_name: {name}
    staging_public_base_url: http://{name}-staging.localhost
    production_public_base_url: http://{name}.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: v1 }} ]
    mapping_rules:
      - {{ http_method: ANY, pattern: /, metric: hits }}
      - {{ http_method: ANY, pattern: /v1/, metric: v1 }}
    policy_chain: {chain}
    application_plans:
      - system_name: open
      - system_name: v1-once
        limits: [ {{ metric: v1, period: eternity, value: 1 }} ]
      - system_name: one
        limits: [ {{ metric: hits, period: eternity, value: 1 }} ]
"#
        );
    }
    yaml += "accounts:\n  - name: acme\n    applications:\n";
    for (name, _) in chains {
        yaml += &format!(
            "      - {{ name: {name}-app, product: {name}, plan: open, user_key: {name}-key }}\n      - {{ name: {name}-v1, product: {name}, plan: v1-once, user_key: {name}-v1key }}\n      - {{ name: {name}-anon, product: {name}, plan: one, user_key: {name}-anon }}\n"
        );
    }
    yaml
}

fn host(name: &str) -> String {
    format!("{name}-staging.localhost")
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn call(
    addr: SocketAddr,
    name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    request(addr, &host(name), "GET", path, boxed(http_body_util::Empty::new()), headers).await
}

#[tokio::test]
async fn ip_check_allows_denies_and_its_place_in_the_chain_decides_what_comes_first() {
    let backend = http_backend().await;
    let gw = gateway(&config(
        backend,
        &[
            ("denyfirst", r#"[ { name: ip_check, configuration: { check_type: deny, ips: ["127.0.0.0/8"], error_message: "go away" } }, { name: tollgate } ]"#),
            ("denyafter", r#"[ { name: tollgate }, { name: ip_check, configuration: { check_type: deny, ips: ["127.0.0.1"] } } ]"#),
            ("allow", r#"[ { name: ip_check, configuration: { check_type: allow, ips: ["::1", "127.0.0.1/32"] } } ]"#),
            ("allowother", r#"[ { name: ip_check, configuration: { check_type: allow, ips: ["10.0.0.0/8"] } } ]"#),
            ("xff", r#"[ { name: ip_check, configuration: { check_type: deny, ips: ["203.0.113.0/24"], client_ip_sources: [X-Forwarded-For, last_caller], trusted_proxies: ["127.0.0.1"] } } ]"#),
        ],
    ))
    .await;
    let addr = gw.server.staging;
    // Before tollgate: refused before credentials are looked at (no key: 403, not 401).
    let (status, _, body) = call(addr, "denyfirst", "/x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(json(&body)["error"], serde_json::json!({ "code": "ip_denied", "message": "go away" }));
    // After tollgate: authentication answers first.
    assert_eq!(call(addr, "denyafter", "/x", &[]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(addr, "denyafter", "/x?user_key=denyafter-key", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(addr, "allow", "/x?user_key=allow-key", &[]).await.0, StatusCode::OK);
    assert_eq!(call(addr, "allowother", "/x?user_key=allowother-key", &[]).await.0, StatusCode::FORBIDDEN);
    // X-Forwarded-For from a trusted proxy (we are 127.0.0.1) names the client.
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    assert_eq!(call(addr, "xff", "/x?user_key=xff-key", &xff("203.0.113.9")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(addr, "xff", "/x?user_key=xff-key", &xff("198.51.100.1")).await.0, StatusCode::OK);
    // A forged entry on the left does not help a denied client behind the proxy.
    assert_eq!(
        call(addr, "xff", "/x?user_key=xff-key", &xff("198.51.100.1, 203.0.113.9")).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn maintenance_mode_answers_alone_or_under_a_condition() {
    let backend = http_backend().await;
    let gw = gateway(&config(
        backend,
        &[
            ("down", r#"[ { name: maintenance_mode }, { name: tollgate } ]"#),
            ("custom", r#"[ { name: maintenance_mode, configuration: { status: 501, message: "<h1>soon</h1>", content_type: text/html } } ]"#),
            ("admin", r#"[ { name: maintenance_mode, configuration: { condition: { operations: [ { left: "{{ path }}", op: matches, right: "^/admin" } ] } } } ]"#),
        ],
    ))
    .await;
    let addr = gw.server.staging;
    let (status, headers, body) = call(addr, "down", "/anything", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json(&body)["error"]["code"], "maintenance");
    let (status, headers, body) = call(addr, "custom", "/", &[]).await;
    assert_eq!(
        (status, headers["content-type"].to_str().ok(), body.as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("text/html"), "<h1>soon</h1>")
    );
    assert_eq!(call(addr, "admin", "/admin/users?user_key=admin-key", &[]).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(addr, "admin", "/public?user_key=admin-key", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_code_overwrite_changes_the_backends_and_the_gateways_statuses() {
    let backend = http_backend().await;
    let gw = gateway(&config(
        backend,
        &[(
            "masked",
            r#"[ { name: tollgate }, { name: status_code_overwrite, configuration: { http_statuses: [ { upstream: 500, gateway: 503 }, { upstream: 401, gateway: 403 } ] } } ]"#,
        )],
    ))
    .await;
    let addr = gw.server.staging;
    let (status, _, body) = call(addr, "masked", "/status/500?user_key=masked-key", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the backend's 500: {body}");
    assert_eq!(call(addr, "masked", "/status/502?user_key=masked-key", &[]).await.0, StatusCode::BAD_GATEWAY);
    // The gateway's own refusal too (as APIcast's policy does); its body stays.
    let (status, _, body) = call(addr, "masked", "/x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["error"]["code"], "auth_missing");
}

#[tokio::test]
async fn url_rewriting_changes_what_mapping_rules_and_the_backend_see() {
    let backend = http_backend().await;
    let gw = gateway(&config(
        backend,
        &[(
            "rw",
            r#"[ { name: url_rewriting, configuration: {
                   commands: [ { op: sub, regex: "^/api/v1/", replace: "/v1/", break: true }, { op: gsub, regex: "//+", replace: "/" }, { op: sub, regex: "^/old/(\\w+)", replace: "/new/$1", methods: [POST] } ],
                   query_args_commands: [ { op: set, arg: source, value: "gw {{ method }}" }, { op: delete, arg: debug }, { op: add, arg: tag, value: extra }, { op: push, arg: seen, value: "1" } ] } },
                 { name: tollgate } ]"#,
        )],
    ))
    .await;
    let addr = gw.server.staging;
    let (status, _, body) = call(addr, "rw", "/api/v1/items?user_key=rw-v1key&debug=1&tag=a", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(v["path"], "/v1/items", "sub with break: the gsub did not run");
    assert_eq!(v["query"], "user_key=rw-v1key&tag=a&source=gw%20GET&tag=extra&seen=1");
    // The mapping rule on /v1/ counted the rewritten path: the plan allows one.
    assert_eq!(call(addr, "rw", "/api/v1/items?user_key=rw-v1key", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    let (_, _, body) = call(addr, "rw", "/a//b///c?user_key=rw-key", &[]).await;
    assert_eq!(json(&body)["path"], "/a/b/c", "gsub replaced every match");
    let (_, _, body) = call(addr, "rw", "/old/thing?user_key=rw-key", &[]).await;
    assert_eq!(json(&body)["path"], "/old/thing", "a command for POST only leaves GET alone");
}

#[tokio::test]
async fn headers_templates_cors_default_credentials_echo_and_logging() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let log = dir.path().join("access.log");
    let chains = [
        (
            "hdr",
            r#"[ { name: tollgate }, { name: headers, configuration: {
                   request: [ { op: set, header: X-Client-Ip, value: "{{ remote_addr }}" }, { op: set, header: X-App, value: "{{ application.id }} on {{ application.plan }}" }, { op: append, header: X-Trace, value: "gw" } ],
                   response: [ { op: set, header: X-Asked-For, value: "{{ query['q'] }}" } ] } },
                 { name: headers, configuration: { condition: { operations: [ { left: "{{ headers['x-debug'] }}", op: "==", right: "1" } ] }, response: [ { op: set, header: X-Debug-Path, value: "{{ path }}" } ] } } ]"#,
        ),
        (
            "cors",
            r#"[ { name: cors, configuration: { allow_origins: ["https://app.example.com"], allow_origin_patterns: ['https://[a-z]+\.example\.org'], expose_headers: [RateLimit-Remaining], allow_credentials: true, max_age: 60 } }, { name: tollgate } ]"#,
        ),
        ("anon", r#"[ { name: default_credentials, configuration: { user_key: anon-anon } }, { name: tollgate } ]"#),
        ("echo", r#"[ { name: tollgate }, { name: echo, configuration: { status: 201 } } ]"#),
    ];
    let logging = format!(
        r#"[ {{ name: logging, configuration: {{ file: "{}", fields: [status, method, path, application, remote_addr] }} }}, {{ name: tollgate }} ]"#,
        log.display()
    );
    let text_log = dir.path().join("text.log");
    let texting = format!(
        r#"[ {{ name: logging, configuration: {{ format: text, file: "{}", fields: [method, path, status, user_agent, application] }} }} ]"#,
        text_log.display()
    );
    let mut all: Vec<(&str, &str)> = chains.to_vec();
    all.push(("logged", &logging));
    all.push(("texted", &texting));
    let gw = gateway(&config(backend, &all)).await;
    let addr = gw.server.staging;

    // headers: templates read the request and the application; a condition gates a policy.
    let (status, headers, body) = call(addr, "hdr", "/x?user_key=hdr-key&q=cats", &[("x-trace", "client")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(v["headers"]["x-client-ip"], "127.0.0.1");
    assert_eq!(v["headers"]["x-app"], "acme/hdr-app on open");
    assert_eq!(headers["x-asked-for"], "cats");
    assert!(headers.get("x-debug-path").is_none(), "condition false: the second headers policy did nothing");
    let (_, headers, _) = call(addr, "hdr", "/x/y?user_key=hdr-key", &[("x-debug", "1")]).await;
    assert_eq!(headers["x-debug-path"], "/x/y");

    // cors: listed and patterned origins; others get nothing, their preflight 403.
    let preflight = |origin: &'static str| async move {
        request(
            addr,
            &host("cors"),
            "OPTIONS",
            "/x",
            boxed(http_body_util::Empty::new()),
            &[("origin", origin), ("access-control-request-method", "POST")],
        )
        .await
    };
    let (status, headers, _) = preflight("https://app.example.com").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "60");
    assert_eq!(preflight("https://shop.example.org").await.0, StatusCode::NO_CONTENT);
    let (status, headers, body) = preflight("https://evil.example.net").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(headers.get("access-control-allow-origin").is_none());
    let (_, headers, _) = call(addr, "cors", "/x?user_key=cors-key", &[("origin", "https://app.example.com")]).await;
    assert_eq!(headers["access-control-expose-headers"], "RateLimit-Remaining");
    let (_, headers, _) = call(addr, "cors", "/x?user_key=cors-key", &[("origin", "https://evil.example.net")]).await;
    assert!(headers.get("access-control-allow-origin").is_none());

    // default_credentials: no key counts as the anonymous application (its plan allows one).
    assert_eq!(call(addr, "anon", "/x", &[]).await.0, StatusCode::OK);
    assert_eq!(call(addr, "anon", "/x", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(addr, "anon", "/x?user_key=anon-key", &[]).await.0, StatusCode::OK, "own key: own plan");
    assert_eq!(call(addr, "anon", "/x?user_key=wrong", &[]).await.0, StatusCode::FORBIDDEN, "a wrong key stays wrong");

    // echo after tollgate: authenticated requests are answered with themselves.
    assert_eq!(call(addr, "echo", "/x", &[]).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(addr, "echo", "/e/1?user_key=echo-key", &[("x-hello", "there")]).await;
    assert_eq!(status, StatusCode::CREATED);
    let v = json(&body);
    assert_eq!((v["path"].as_str(), v["headers"]["x-hello"].as_str()), (Some("/e/1"), Some("there")));
    assert_eq!(v["application"], "acme/echo-app");

    // logging: one JSON line per request, the refused one included.
    assert_eq!(call(addr, "logged", "/l?user_key=logged-key", &[]).await.0, StatusCode::OK);
    assert_eq!(call(addr, "logged", "/l", &[]).await.0, StatusCode::UNAUTHORIZED);
    let lines: Vec<Value> = written(&log, 2).await.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        serde_json::json!({ "status": 200, "method": "GET", "path": "/l", "application": "acme/logged-app", "remote_addr": "127.0.0.1" })
    );
    assert_eq!((lines[1]["status"].as_u64(), &lines[1]["application"]), (Some(401), &Value::Null));
    // Text: values separated by spaces, quoted when they hold spaces, `-` when absent.
    call(addr, "texted", "/t?user_key=texted-key", &[("user-agent", "curl/8 (test)")]).await;
    let text = written(&text_log, 1).await;
    assert_eq!(text, "GET /t 200 \"curl/8 (test)\" acme/texted-app\n");
    call(addr, "texted", "/t", &[]).await;
    let text = written(&text_log, 2).await;
    assert_eq!(text.lines().nth(1), Some("GET /t 401 - -"), "absent values are `-`");
}

/// The access log at `path` once it holds `lines` lines: the `logging` policy queues
/// lines and a thread of its own writes them, so they land shortly after the response.
/// Polled, bounded (5 s).
async fn written(path: &std::path::Path, lines: usize) -> String {
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
    let mut text = String::new();
    for _ in 0..500 {
        poll.tick().await;
        text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return text;
        }
    }
    panic!("{} has {} lines, not {lines}: {text}", path.display(), text.lines().count())
}

#[tokio::test]
async fn websocket_upgrades_meet_ip_check_and_maintenance_before_the_backend() {
    let backend = node_backend().await;
    let yaml = format!(
        r#"
backends: [ {{ system_name: echo, private_base_url: "{url}", tls: {{ ca_file: "{cert}" }} }} ]
products:
  - system_name: ws
    staging_public_base_url: http://ws-staging.localhost
    production_public_base_url: http://ws.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain:
      - {{ name: ip_check, configuration: {{ check_type: deny, ips: ["127.0.0.2"] }} }}
      - {{ name: maintenance_mode, configuration: {{ condition: {{ operations: [ {{ left: "{{{{ query['closed'] }}}}", op: "==", right: "1" }} ] }} }} }}
      - {{ name: rate_limit, configuration: {{ limiters: [ {{ algorithm: connections, key: "{{{{ query['slot'] }}}}", max: 1 }} ] }} }}
      - {{ name: websocket }}
      - {{ name: tollgate }}
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: a
    applications: [ {{ name: app, product: ws, plan: basic, user_key: k }} ]
"#,
        url = backend.url(),
        cert = backend.cert.display()
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    let mut socket = ws(addr, "ws-staging.localhost", "/?user_key=k").await.expect("allowed client upgrades");
    let reply = ask(&mut socket, "hello").await;
    assert!(reply.ends_with("hello"), "the example server echoes: {reply}");
    let (status, body) = ws_refused(addr, "ws-staging.localhost", "/?user_key=k&closed=1").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("maintenance"), "{body}");
    // rate_limit's connections limiter holds a place for the WebSocket's lifetime.
    let mut first = ws(addr, "ws-staging.localhost", "/?user_key=k&slot=a").await.expect("first in slot a");
    let (status, body) = ws_refused(addr, "ws-staging.localhost", "/?user_key=k&slot=a").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limited"), "{body}");
    futures_util::SinkExt::close(&mut first).await.expect("close");
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut first).await {}
    drop(first);
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Ok(s) = ws(addr, "ws-staging.localhost", "/?user_key=k&slot=a").await {
                return s;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(again.is_ok(), "the place came back when the WebSocket closed");
    // From 127.0.0.2 (a loopback address of its own): denied before the backend.
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let stream = tcp.connect(addr).await.expect("connect");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/?user_key=k"
    ))
    .expect("request");
    req.headers_mut().insert("host", "ws-staging.localhost".parse().expect("host"));
    match tokio_tungstenite::client_async(req, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn upstream_and_routing_choose_the_backend() {
    let (a, b) = (http_backend().await, http_backend().await);
    let yaml = format!(
        r#"
backends:
  - {{ system_name: main, private_base_url: "http://{a}" }}
  - {{ system_name: second, private_base_url: "http://{b}/two" }}
products:
  - system_name: up
    staging_public_base_url: http://up-staging.localhost
    production_public_base_url: http://up.localhost
    backend_usages: [ {{ backend: main, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain:
      - {{ name: upstream, configuration: {{ rules: [ {{ regex: "^/v2/", url: "http://{b}/base" }} ] }} }}
    application_plans: [ {{ system_name: open }} ]
  - system_name: route
    staging_public_base_url: http://route-staging.localhost
    production_public_base_url: http://route.localhost
    backend_usages: [ {{ backend: main, path: / }}, {{ backend: second, path: /second }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain:
      - name: routing
        configuration:
          rules:
            - {{ url: "http://{b}", host_header: beta.example.com, condition: {{ operations: [ {{ left: "{{{{ headers['x-beta'] }}}}", op: "==", right: "1" }} ] }} }}
            - {{ backend: second, replace_path: "/compat{{{{ path }}}}", condition: {{ operations: [ {{ left: "{{{{ query['legacy'] }}}}", op: "==", right: "1" }} ] }} }}
            - {{ backend: second, replace_path: "{{{{ headers['x-p'] }}}}", condition: {{ operations: [ {{ left: "{{{{ query['raw'] }}}}", op: "==", right: "1" }} ] }} }}
    application_plans: [ {{ system_name: open }} ]
accounts:
  - name: acme
    applications:
      - {{ name: u, product: up, plan: open, user_key: k }}
      - {{ name: r, product: route, plan: open, user_key: k2 }}
"#
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    let seen = |body: &str| {
        let v = json(body);
        (
            v["headers"]["host"].as_str().unwrap_or_default().to_string(),
            v["path"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (status, _, body) = call(addr, "up", "/v2/items?user_key=k", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen(&body), (b.to_string(), "/base/v2/items".into()), "upstream: matched, the URL's path first");
    assert_eq!(seen(&call(addr, "up", "/v1/items?user_key=k", &[]).await.2), (a.to_string(), "/v1/items".into()));

    let (_, _, body) = call(addr, "route", "/x?user_key=k2", &[("x-beta", "1")]).await;
    assert_eq!(seen(&body), ("beta.example.com".into(), "/x".into()), "routing: URL with a Host header");
    let (_, _, body) = call(addr, "route", "/x?user_key=k2&legacy=1", &[]).await;
    assert_eq!(seen(&body), (b.to_string(), "/two/compat/x".into()), "routing: a backend, path replaced");
    assert_eq!(
        seen(&call(addr, "route", "/x?user_key=k2", &[]).await.2),
        (a.to_string(), "/x".into()),
        "no rule: usages"
    );
    assert_eq!(
        seen(&call(addr, "route", "/second/y?user_key=k2", &[]).await.2),
        (b.to_string(), "/two/y".into()),
        "no rule: the usage prefix is removed as always"
    );
    // A replaced path is a path: without its `/` it would be glued to the backend's
    // base path (`/twoetc`), outside it.
    let (status, _, body) = call(addr, "route", "/x?user_key=k2&raw=1", &[("x-p", "etc")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("bad_path"), "{body}");
    let (_, _, body) = call(addr, "route", "/x?user_key=k2&raw=1", &[("x-p", "/etc")]).await;
    assert_eq!(seen(&body), (b.to_string(), "/two/etc".into()), "a replaced path with its `/`");
}

#[tokio::test]
async fn rate_limit_windows_buckets_scopes_and_concurrency() {
    let backend = http_backend().await;
    let gw = gateway(&config(
        backend,
        &[
            ("fixed", r#"[ { name: rate_limit, configuration: { limiters: [ { algorithm: fixed_window, key: "{{ remote_addr }}", count: 3, window: 3600 } ], error_message: "slow down" } } ]"#),
            ("bucket", r#"[ { name: rate_limit, configuration: { limiters: [ { algorithm: token_bucket, key: "{{ headers['x-tenant'] }}", rate: 0.001, burst: 2 } ] } } ]"#),
            ("g1", r#"[ { name: rate_limit, configuration: { scope: global, limiters: [ { algorithm: sliding_window, key: "{{ remote_addr }}", count: 2, window: 3600 } ] } } ]"#),
            ("g2", r#"[ { name: rate_limit, configuration: { scope: global, limiters: [ { algorithm: sliding_window, key: "{{ remote_addr }}", count: 2, window: 3600 } ] } } ]"#),
            ("after", r#"[ { name: tollgate }, { name: rate_limit, configuration: { limiters: [ { algorithm: fixed_window, key: "{{ application.id }}", count: 1, window: 3600 } ] } } ]"#),
            ("conc", r#"[ { name: rate_limit, configuration: { limiters: [ { algorithm: connections, key: "{{ remote_addr }}", max: 1 } ] } } ]"#),
        ],
    ))
    .await;
    let addr = gw.server.staging;
    for _ in 0..3 {
        assert_eq!(call(addr, "fixed", "/x?user_key=fixed-key", &[]).await.0, StatusCode::OK);
    }
    let (status, headers, body) = call(addr, "fixed", "/x?user_key=fixed-key", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(json(&body)["error"], serde_json::json!({ "code": "rate_limited", "message": "slow down" }));
    let retry: u64 = headers["retry-after"].to_str().ok().and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=3600).contains(&retry), "{retry}");

    // A bucket per tenant; no header, no limiter.
    let tenant = |t: &'static str| [("x-tenant", t)];
    for _ in 0..2 {
        assert_eq!(call(addr, "bucket", "/x?user_key=bucket-key", &tenant("a")).await.0, StatusCode::OK);
    }
    assert_eq!(call(addr, "bucket", "/x?user_key=bucket-key", &tenant("a")).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(addr, "bucket", "/x?user_key=bucket-key", &tenant("b")).await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(call(addr, "bucket", "/x?user_key=bucket-key", &[]).await.0, StatusCode::OK);
    }

    // Global scope: two products share one count.
    assert_eq!(call(addr, "g1", "/x?user_key=g1-key", &[]).await.0, StatusCode::OK);
    assert_eq!(call(addr, "g2", "/x?user_key=g2-key", &[]).await.0, StatusCode::OK);
    assert_eq!(call(addr, "g1", "/x?user_key=g1-key", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);

    // After tollgate, keyed by application: each application its own window, and a
    // request refused here consumes no plan quota (the v1-once plan still has its one).
    assert_eq!(call(addr, "after", "/x?user_key=after-key", &[]).await.0, StatusCode::OK);
    assert_eq!(call(addr, "after", "/x?user_key=after-key", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(addr, "after", "/x?user_key=after-v1key", &[]).await.0, StatusCode::OK);

    // Concurrency: a download in progress holds the place until its body is done.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        b"GET /download?bytes=50000000&user_key=conc-key HTTP/1.1\r\nHost: conc-staging.localhost\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut slow, &mut head).await.expect("response head");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(call(addr, "conc", "/x?user_key=conc-key", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    drop(slow);
    let freed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if call(addr, "conc", "/x?user_key=conc-key", &[]).await.0 == StatusCode::OK {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(freed.is_ok(), "the place came back when the client went away");
    // A finished response gives its place back at once.
    assert_eq!(call(addr, "conc", "/x?user_key=conc-key", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn rate_limit_in_redis_holds_across_gateways() {
    let backend = http_backend().await;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let ns = format!("tollgate-test-edge-{}-{nanos}", std::process::id());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let yaml = config(
        backend,
        &[
            (
                "shared",
                r#"[ { name: rate_limit, configuration: { store: redis, limiters: [ { algorithm: fixed_window, key: "{{ remote_addr }}", count: 5, window: 3600 } ] } } ]"#,
            ),
            (
                "conc",
                r#"[ { name: rate_limit, configuration: { store: redis, limiters: [ { algorithm: connections, key: "{{ remote_addr }}", max: 1 } ] } } ]"#,
            ),
        ],
    );
    let flags = ["--counters", redis.as_str(), "--counters-namespace", ns.as_str()];
    let (one, two) = (gateway_with(&yaml, &flags).await, gateway_with(&yaml, &flags).await);
    let mut admitted = 0;
    for i in 0..10 {
        let addr = if i % 2 == 0 { one.server.staging } else { two.server.staging };
        if call(addr, "shared", "/x?user_key=shared-key", &[]).await.0 == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "one window across two gateways");

    // A concurrency limit in Redis: a download in progress through one gateway holds
    // the only place, the other gateway refuses until it is done.
    let mut slow = tokio::net::TcpStream::connect(one.server.staging).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        b"GET /download?bytes=50000000&user_key=conc-key HTTP/1.1\r\nHost: conc-staging.localhost\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut slow, &mut head).await.expect("response head");
    assert_eq!(&head, b"HTTP/1.1 200");
    let other = two.server.staging;
    assert_eq!(call(other, "conc", "/x?user_key=conc-key", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    drop(slow);
    let freed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while call(other, "conc", "/x?user_key=conc-key", &[]).await.0 != StatusCode::OK {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(freed.is_ok(), "the place was given back in Redis");
}

#[tokio::test]
async fn payload_limits_cut_bodies_without_buffering() {
    use http_body_util::BodyExt as _;
    let backend = http_backend().await;
    let gw = gateway(&config(
        backend,
        &[
            ("small", r#"[ { name: payload_limits, configuration: { request: 100000, response: 100000 } } ]"#),
            ("tiny", r#"[ { name: payload_limits, configuration: { response: 4 } } ]"#),
        ],
    ))
    .await;
    let addr = gw.server.staging;
    let small = host("small");
    let upload = |body: BoxBody| request(addr, &small, "POST", "/upload?user_key=small-key", body, &[]);
    // Declared too large: refused before the backend is called.
    let (status, _, body) = upload(full(vec![b'x'; 100_001])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(json(&body)["error"]["code"], "request_too_large");
    // Streamed (chunked) and too large: cut off on the way, 413.
    let (status, _, body) = upload(boxed(Generated::new(300_000))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Within the limit, streamed or not: passes whole.
    let (status, _, body) = upload(boxed(Generated::new(100_000))).await;
    assert_eq!((status, json(&body)["bytes"].as_u64()), (StatusCode::OK, Some(100_000)));

    // A response with a declared length over the limit becomes 502.
    let (status, _, body) = call(addr, "tiny", "/status/200?user_key=tiny-key", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(json(&body)["error"]["code"], "response_too_large");
    // A streamed one is cut off where it goes over: the client sees the body fail.
    let req = http::Request::get(format!("http://{addr}/download?bytes=300000&user_key=small-key"))
        .header("host", host("small"))
        .body(full(""))
        .expect("request");
    let resp = client().request(req).await.expect("response head");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.into_body().collect().await.is_err(), "the body was cut off");
    let (status, _, body) = call(addr, "small", "/download?bytes=1000&user_key=small-key", &[]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 1000));
}

/// A loopback address whose accept queue is full: a new connection hangs in SYN retries.
async fn blackhole() -> (SocketAddr, tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("fill the accept queue"));
    }
    (addr, listener, held)
}

/// A backend that accepts connections and never answers.
async fn silent() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn upstream_connection_timeouts_give_504() {
    let (hole, _l, _held) = blackhole().await;
    let quiet = silent().await;
    let backend = http_backend().await;
    let yaml = format!(
        r#"
backends:
  - {{ system_name: hole, private_base_url: "http://{hole}", connect_timeout_ms: 60000 }}
  - {{ system_name: quiet, private_base_url: "http://{quiet}" }}
  - {{ system_name: echo, private_base_url: "http://{backend}" }}
products:
  - system_name: c
    staging_public_base_url: http://c-staging.localhost
    production_public_base_url: http://c.localhost
    backend_usages: [ {{ backend: hole, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: upstream_connection, configuration: {{ connect_timeout: 0.2 }} }} ]
    application_plans: [ {{ system_name: open }} ]
  - system_name: r
    staging_public_base_url: http://r-staging.localhost
    production_public_base_url: http://r.localhost
    backend_usages: [ {{ backend: quiet, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: upstream_connection, configuration: {{ read_timeout: 0.2 }} }} ]
    application_plans: [ {{ system_name: open }} ]
  - system_name: s
    staging_public_base_url: http://s-staging.localhost
    production_public_base_url: http://s.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: upstream_connection, configuration: {{ send_timeout: 0.3 }} }} ]
    application_plans: [ {{ system_name: open }} ]
accounts:
  - name: a
    applications:
      - {{ name: c, product: c, plan: open, user_key: k }}
      - {{ name: r, product: r, plan: open, user_key: k2 }}
      - {{ name: s, product: s, plan: open, user_key: k3 }}
"#
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    // connect_timeout replaces the backend's minute for this product.
    let (status, _, body) = call(addr, "c", "/x?user_key=k", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(json(&body)["error"]["code"], "upstream_timeout");
    // read_timeout: a backend that never answers.
    let (status, _, body) = call(addr, "r", "/x?user_key=k2", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    // send_timeout: a request body that never ends.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        b"POST /upload?user_key=k3 HTTP/1.1\r\nHost: s-staging.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut slow, &mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    // A request that is sent in time passes.
    let (status, _, body) =
        request(addr, "s-staging.localhost", "POST", "/upload?user_key=k3", boxed(Generated::new(1000)), &[]).await;
    assert_eq!((status, json(&body)["bytes"].as_u64()), (StatusCode::OK, Some(1000)));
}

/// A backend that answers 503 to the first `failures` requests, then 200; it counts
/// the requests it got.
async fn flaky(failures: usize) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let status = if n < failures { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                    async move {
                        let mut r = http::Response::new(full(format!("attempt {}", n + 1)));
                        *r.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn retry_repeats_safe_requests_only() {
    use std::sync::atomic::Ordering;
    let (backend, seen) = flaky(2).await;
    let gw = gateway(&config(
        backend,
        &[("retry", r#"[ { name: retry, configuration: { retries: 2, statuses: [503] } } ]"#)],
    ))
    .await;
    let addr = gw.server.staging;
    let (status, _, body) = call(addr, "retry", "/x?user_key=retry-key", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "attempt 3"), "two 503s retried, the third attempt answered");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    // A POST with a body is never repeated: the backend's first answer is the client's.
    seen.store(0, Ordering::SeqCst);
    let (status, _, body) = request(addr, &host("retry"), "POST", "/x?user_key=retry-key", full("payload"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "attempt 1"));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Retries run out: the last answer stands.
    seen.store(0, Ordering::SeqCst);
    let (backend, seen) = flaky(10).await;
    let gw = gateway(&config(
        backend,
        &[("retry", r#"[ { name: retry, configuration: { retries: 1, statuses: [503], delay: 0.01 } } ]"#)],
    ))
    .await;
    let (status, _, body) = call(gw.server.staging, "retry", "/x?user_key=retry-key", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "attempt 2"));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn every_policy_reports_configuration_errors_with_their_path() {
    let registry = tollgate_gateway::policy::Registry::default();
    let cases: &[(&str, &str, &str)] = &[
        (
            "ip_check",
            r#"{"check_type":"allow","ips":["10.0.0.0/33"]}"#,
            "configuration.ips[0]: `10.0.0.0/33`: the prefix length must be 0–32",
        ),
        (
            "ip_check",
            r#"{"check_type":"allow","ips":[]}"#,
            "configuration.ips: an allow list needs at least one address",
        ),
        ("ip_check", r#"{"check_type":"block","ips":[]}"#, "configuration.check_type"),
        (
            "ip_check",
            r#"{"check_type":"deny","ips":[],"client_ip_sources":["X-Forwarded-Fro"]}"#,
            "configuration.client_ip_sources[0]",
        ),
        (
            "url_rewriting",
            r#"{"commands":[{"op":"sub","regex":"(","replace":"x"}]}"#,
            "configuration.commands[0].regex: `(` is not a regular expression: unclosed group",
        ),
        (
            "url_rewriting",
            r#"{"query_args_commands":[{"op":"set","arg":"a"}]}"#,
            "configuration.query_args_commands[0].value: is required",
        ),
        (
            "url_rewriting",
            r#"{"commands":[{"op":"sub","regex":"a","replace":"b","methods":["G T"]}]}"#,
            "configuration.commands[0].methods[0]: `G T` is not an HTTP method",
        ),
        ("maintenance_mode", r#"{"status":99}"#, "configuration.status: 99 is not a status between 200 and 599"),
        ("maintenance_mode", r#"{"mesage":"x"}"#, "configuration.mesage: unknown key (did you mean `message`?)"),
        ("default_credentials", r#"{}"#, "configuration.user_key: give user_key, or app_id and app_key"),
        ("default_credentials", r#"{"app_id":"a"}"#, "configuration.app_key: is required with app_id"),
        ("logging", r#"{"file":"/nonexistent-dir/x.log"}"#, "configuration.file: cannot open `/nonexistent-dir/x.log`"),
        ("logging", r#"{"fields":["stauts"]}"#, "configuration.fields[0]"),
        ("echo", r#"{"status":700}"#, "configuration.status: 700 is not a status between 200 and 599"),
        (
            "headers",
            r#"{"request":[{"op":"set","header":"x","value":"{{ remot_addr }}"}]}"#,
            "configuration.request[0].value: unknown variable `remot_addr`",
        ),
        (
            "cors",
            r#"{"allow_origin_patterns":["("]}"#,
            "configuration.allow_origin_patterns[0]: `(` is not a regular expression: unclosed group",
        ),
        (
            "headers",
            r#"{"condition":{"operations":[{"left":"{{ path }}","op":"~=","right":"x"}]}}"#,
            "configuration.condition.operations[0].op",
        ),
        (
            "echo",
            r#"{"condition":{"operations":[{"left":"{{ nope }}","op":"==","right":"x"}]}}"#,
            "configuration.condition.operations[0].left: unknown variable `nope`",
        ),
        (
            "echo",
            r#"{"condition":{"operations":[]}}"#,
            "configuration.condition.operations: a condition needs at least one operation",
        ),
    ];
    for (name, configuration, expected) in cases {
        let c: Value = serde_json::from_str(configuration).expect("json");
        let err = match registry.build("policy_chain[0]", name, &c) {
            Ok(_) => panic!("{name} {configuration}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("policy_chain[0].{expected}")),
            "{name} {configuration}:\n  got {err}\n  want policy_chain[0].{expected}"
        );
    }
    // Every policy has a schema that describes its options and the condition.
    for p in registry.policies() {
        let schema = p.schema();
        assert_eq!(schema["type"], "object", "{}", p.name);
        assert!(schema["properties"]["condition"]["properties"]["operations"].is_object(), "{}: {schema}", p.name);
        assert!(!schema.to_string().contains("$ref"), "{}: subschemas are inline", p.name);
    }
}
