//! The whole 3scale story of a WebSocket product, clicked through the console in
//! headless Chromium (Debian's package, driven by playwright-core): from an empty store,
//! create the backend (wss, the example's self-signed certificate uploaded), the product, a
//! metric, a mapping rule, a plan with a limit, the WebSocket policy, an account and an
//! application; promote to staging; "Try it" connects from the browser and gets the
//! echo; promote to production. Screenshots of every step land in
//! `target/screenshots/console/` (the docs show them).

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

#[tokio::test]
async fn the_websocket_story_in_the_browser() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let server = store_server(&url).await;
    let shots = std::env::var("TOLLGATE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/screenshots/console"));
    let _ = std::fs::remove_dir_all(&shots);
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
    let cookie = login(&server).await;
    let (status, _, page) = request(
        server.admin,
        "localhost",
        "GET",
        "/analytics?product=chat&metric=hits&granularity=minute",
        full(""),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("<strong>2</strong> in this period") && page.contains("<svg"), "{page}");
    let taken = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(taken >= 12, "a screenshot per step: {taken}");
    server.shutdown().await;
}
