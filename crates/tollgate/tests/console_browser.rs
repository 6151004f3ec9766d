//! The whole 3scale story of a WebSocket product, clicked through the console in
//! headless Chromium (Debian's package, driven by playwright-core): from an empty store,
//! create the backend (wss, the example's self-signed certificate uploaded), the product, a
//! metric, a mapping rule, a plan with a limit, the WebSocket policy, an account and an
//! application; promote to staging; "Try it" connects from the browser and gets the
//! echo; promote to production. Then the operator's day: the dashboard following live
//! traffic, "Try it" explaining refusals, editing a metric and a limit, a save refused
//! with `tollgate check`'s message, the promote diff after a certificate upload. Every
//! page is audited with axe-core (no serious or critical violation). Screenshots of
//! every step land in `target/screenshots/console/`, or in `$TOLLGATE_SCREENSHOTS`
//! (`TOLLGATE_SCREENSHOTS=docs/console` regenerates the ones the docs show).

mod support;

use support::*;

/// Logs in to the console over HTTP: the session cookie.
async fn login(server: &tollgate::serve::Server) -> String {
    let token = server.admin_token.clone().expect("token");
    let (status, headers, _) = request(
        server.admin,
        "localhost",
        "POST",
        "/login",
        full(format!("token={token}&next=%2F")),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(status, 303);
    let cookie = headers.get("set-cookie").and_then(|v| v.to_str().ok()).expect("cookie");
    cookie.split(';').next().expect("cookie").to_string()
}

/// A console page as a logged-in operator sees it (200 expected).
async fn console_page(server: &tollgate::serve::Server, path: &str) -> String {
    let cookie = login(server).await;
    let (status, _, page) = request(server.admin, "localhost", "GET", path, full(""), &[("cookie", &cookie)]).await;
    assert_eq!(status, 200, "{path}: {page}");
    page
}

#[tokio::test]
async fn the_websocket_story_in_the_browser() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let server = store_server(&url).await;
    let shots = std::env::var("TOLLGATE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/screenshots/console"));
    let staging = format!("http://chat-staging.localhost:{}", server.staging.port());
    let production = format!("http://chat.localhost:{}", server.production.port());
    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("crates/tollgate/tests/browser/console_story.js"))
        .arg(format!("http://localhost:{}", server.admin.port()))
        .arg(server.admin_token.as_deref().expect("token"))
        .arg(backend.url())
        .arg(&backend.cert)
        .arg(&staging)
        .arg(&production)
        .arg(&shots)
        .output()
        .await
        .expect("node (and `npm ci --prefix crates/tollgate/tests/browser`, Debian's chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["a11y"], serde_json::json!({}), "axe-core found serious violations: {seen}");
    assert_eq!(seen["reply"], "reply from server : hello", "{seen}");
    assert!(!seen["pattern_error"].as_str().unwrap_or_default().is_empty(), "checked as typed: {seen}");
    assert_eq!(seen["staging"], "Version 1 is on staging.", "{seen}");
    assert_eq!(seen["production"], "Version 1 is on production.", "{seen}");
    assert!(seen["before"].as_str().unwrap_or_default().contains("production runs none yet"), "{seen}");
    assert!(seen["after"].as_str().unwrap_or_default().contains("production runs version 1"), "{seen}");
    assert!(seen["try_url"].as_str().unwrap_or_default().starts_with(&staging.replace("http://", "ws://")), "{seen}");

    let backend_doc = api(&server, "GET", "/backends/echo", None).await.1;
    assert!(backend_doc["tls"]["ca_pem"].as_str().unwrap_or_default().contains("BEGIN CERTIFICATE"), "{backend_doc}");
    assert!(backend_doc["tls"]["ca_file"].is_null(), "uploaded, not a path: {backend_doc}");

    // What the browser built serves a WebSocket on production too.
    server.wait_applied().await;
    let key = seen["user_key"].as_str().expect("user_key");
    let mut socket = ws(server.production, "chat.localhost", &format!("/?user_key={key}")).await.expect("production");
    assert_eq!(ask(&mut socket, "hello").await, "reply from server : hello");
    drop(socket);
    assert!(seen["diff_rows"].as_u64().unwrap_or(0) >= 10, "the first promote lists every value: {seen}");

    // Analytics: the two upgrades counted on hits, shown on the console's chart.
    server.flush_analytics().await.expect("flush");
    let page = console_page(&server, "/analytics?product=chat&metric=hits&granularity=minute").await;
    assert!(page.contains("<strong>2</strong> in this period") && page.contains("<svg"), "{page}");
    let taken = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(taken >= 12, "a screenshot per step: {taken}");
    server.shutdown().await;
}

fn screenshots() -> std::path::PathBuf {
    std::env::var("TOLLGATE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/screenshots/console"))
}

/// The gauge of open WebSockets on the admin listener's `/metrics`.
async fn open_websockets(server: &tollgate::serve::Server) -> f64 {
    let (_, _, text) = request(server.admin, "localhost", "GET", "/metrics", full(""), &[]).await;
    text.lines()
        .filter(|l| l.starts_with("tollgate_websocket_open{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_operators_day_dashboard_try_it_forms_and_diff() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let server = store_server(&url).await;
    let (sp, pp) = (server.staging.port(), server.production.port());
    let pem = std::fs::read_to_string(&backend.cert).expect("backend certificate");
    let keys = ["a1".repeat(16), "b2".repeat(16), "c3".repeat(16), "d4".repeat(16)];
    let hits = serde_json::json!([{ "http_method": "GET", "pattern": "/", "metric": "hits", "delta": 1 }]);
    let config = serde_json::json!({
        "backends": [{ "system_name": "echo", "private_base_url": backend.url(), "tls": { "ca_pem": pem } }],
        "products": [
            {
                "system_name": "chat",
                "staging_public_base_url": format!("http://chat-staging.localhost:{sp}"),
                "production_public_base_url": format!("http://chat.localhost:{pp}"),
                "backend_usages": [{ "backend": "echo", "path": "/" }],
                "metrics": [{ "system_name": "hits" }, { "system_name": "messages", "unit": "message" }],
                "mapping_rules": hits,
                "policy_chain": [
                    { "name": "websocket", "configuration": { "meter_messages": { "metric": "messages" } } },
                    { "name": "tollgate" }
                ],
                "application_plans": [
                    { "system_name": "basic", "limits": [{ "metric": "hits", "period": "minute", "value": 1000 }] },
                    { "system_name": "blocked", "limits": [{ "metric": "hits", "period": "minute", "value": 0 }] }
                ]
            },
            {
                "system_name": "plain",
                "staging_public_base_url": format!("http://plain-staging.localhost:{sp}"),
                "production_public_base_url": format!("http://plain.localhost:{pp}"),
                "backend_usages": [{ "backend": "echo", "path": "/" }],
                "mapping_rules": hits,
                "application_plans": [{ "system_name": "basic" }]
            }
        ],
        "accounts": [{ "name": "acme", "applications": [
            { "name": "live-app", "product": "chat", "plan": "basic", "user_key": keys[0] },
            { "name": "held-app", "product": "chat", "plan": "basic", "user_key": keys[1], "state": "suspended" },
            { "name": "spent-app", "product": "chat", "plan": "blocked", "user_key": keys[2] },
            { "name": "plain-app", "product": "plain", "plan": "basic", "user_key": keys[3] }
        ] }]
    });
    let (status, body) = api(&server, "PUT", "/config", Some(config)).await;
    assert!(status.is_success(), "{status} {body}");
    for p in ["chat", "plain"] {
        let (status, body) = api(&server, "POST", &format!("/products/{p}/deploy"), None).await;
        assert!(status.is_success(), "{status} {body}");
    }
    server.wait_applied().await;
    // Another certificate, to upload in the browser.
    let (upload, _) = make_cert(dir.path());

    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("crates/tollgate/tests/browser/console_live.js"))
        .arg(format!("http://localhost:{}", server.admin.port()))
        .arg(server.admin_token.as_deref().expect("token"))
        .arg(sp.to_string())
        .arg(pp.to_string())
        .arg(&upload)
        .arg(screenshots())
        .output()
        .await
        .expect("node (and `npm ci --prefix crates/tollgate/tests/browser`, Debian's chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let text = |k: &str| seen[k].as_str().unwrap_or_default().to_string();
    assert_eq!(seen["a11y"], serde_json::json!({}), "axe-core found serious violations: {seen}");

    // The dashboard followed the traffic without a reload.
    assert!(text("empty_chart").contains("No requests in the last hour on this gateway."), "{seen}");
    assert!(
        text("empty_chart").contains("requests per minute") && text("empty_chart").contains("time (UTC)"),
        "{seen}"
    );
    assert_eq!(seen["opened"], 3, "{seen}");
    let statuses: Vec<u64> = seen["statuses"].as_array().expect("statuses").iter().filter_map(|v| v.as_u64()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 12, "{seen}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 4, "{seen}");
    assert_eq!(seen["same_document"], true, "updated in place: {seen}");
    let figure =
        |f: &str| seen["figures"][f].as_str().unwrap_or_default().replace('\u{2009}', "").parse::<u64>().unwrap_or(0);
    assert!(figure("staging-open") >= 3 && figure("staging-2xx") >= 12 && figure("staging-4xx") >= 4, "{seen}");
    assert!(figure("staging-1xx") >= 3, "the upgrades count as 1xx: {seen}");
    assert_eq!(figure("production-requests"), 0, "{seen}");
    assert!(text("hover").contains(" UTC: "), "values on hover: {seen}");
    assert!(text("freshness").contains("1 gateway node reporting") && text("freshness").contains("behind"), "{seen}");

    // Try it says why each connection was refused, and what to do.
    let refusal = |k: &str| seen["refusals"][k].as_str().unwrap_or_default().to_string();
    assert!(refusal("not_promoted").contains("answered 404 unknown_host"), "{seen}");
    assert!(refusal("not_promoted").contains("Not promoted to production yet"), "{seen}");
    assert!(
        refusal("no_credentials").contains("answered 401") && refusal("no_credentials").contains("No credentials"),
        "{seen}"
    );
    assert!(refusal("suspended").contains("answered 403") && refusal("suspended").contains("suspended"), "{seen}");
    assert!(refusal("limit").contains("answered 429") && refusal("limit").contains("Retry-After"), "{seen}");
    assert!(refusal("websocket_disabled").contains("websocket_disabled"), "{seen}");
    assert!(refusal("websocket_disabled").contains("add the `websocket` policy"), "{seen}");
    assert!(text("closed_line").contains("code 1006 (ended without a close frame"), "{seen}");

    // Edits, and a save refused with `tollgate check`'s own message.
    assert!(text("limit_row").contains("500"), "{seen}");
    let metric = api(&server, "GET", "/products/chat/metrics", None).await.1;
    assert!(metric.to_string().contains("Chat messages"), "{metric}");
    let yaml = dir.path().join("check.yaml");
    std::fs::write(
        &yaml,
        format!(
            "backends:\n  - {{ system_name: echo, private_base_url: '{}', tls: {{ ca_file: /nonexistent/ca.pem }} }}\n",
            backend.url()
        ),
    )
    .expect("write");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-f"])
        .arg(&yaml)
        .output()
        .expect("check");
    let said = String::from_utf8_lossy(&check.stderr);
    let line = said.lines().find(|l| l.contains("/nonexistent/ca.pem")).expect("check names the file").trim();
    let message = line.split_once(": ").map(|(_, m)| m).expect("path: message");
    assert_eq!(text("refused_save"), message, "the console refuses with check's message ({said})");
    assert!(!text("field_error").is_empty(), "the error is on the field: {seen}");

    // The promote diff shows certificates by subject and fingerprint, never as PEM.
    assert!(text("backend_certificate").contains("SHA-256"), "{seen}");
    let diff = text("diff");
    assert!(diff.contains("backends") && diff.contains("SHA-256") && diff.contains("CN=localhost"), "{diff}");
    assert_eq!(seen["diff_has_pem"], false, "{seen}");
    assert!(text("unchanged").starts_with("Unchanged:"), "{seen}");

    // The browser saw every close handshake end; the gateway records a connection's
    // analytics as its relay ends, which the gauge of open connections reaches 0 after:
    // poll that gauge (bounded) rather than guess a delay.
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(50));
    for _ in 0..200 {
        poll.tick().await;
        if open_websockets(&server).await == 0.0 {
            break;
        }
    }
    assert_eq!(open_websockets(&server).await, 0.0, "the WebSockets did not end at the gateway");
    server.flush_analytics().await.expect("flush");
    let page = console_page(
        &server,
        "/analytics?product=chat&application=live-app&metric=websocket:client_messages&granularity=minute",
    )
    .await;
    assert!(page.contains("Closes by close code") && page.contains("normal closure"), "{page}");
    assert!(page.contains("<strong>3</strong> connections opened"), "{page}");
    server.shutdown().await;
}
