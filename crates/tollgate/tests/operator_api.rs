//! What an operator relies on beyond the resources, on SQLite and on PostgreSQL:
//!
//! - one validation path: the admin API refuses at save time exactly what `tollgate
//!   check` refuses — a CA file that does not exist or does not parse, a pattern that
//!   does not compile, an unknown metric, a policy's bad configuration — with the same
//!   message (the console saves through the API, and its browser test checks the page);
//! - the live views: `applications/{app}/usage` from the counters, and
//!   `analytics/dashboard` and `analytics/totals` from what the gateways wrote, after
//!   real HTTP and WebSocket traffic through the gateway.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use support::*;

/// `tollgate check`'s lines for `yaml` (written next to `dir`'s other files).
fn check(dir: &TempDir, yaml: &str) -> Vec<String> {
    let file = dir.path().join("check.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-f"])
        .arg(&file)
        .output()
        .expect("check");
    assert!(!out.status.success(), "check accepted {yaml}");
    String::from_utf8_lossy(&out.stderr).lines().skip(1).map(|l| l.trim().to_string()).collect()
}

/// The message of `check`'s line about `path` (the text after `path: `).
fn message_at(lines: &[String], path: &str) -> String {
    let line =
        lines.iter().find(|l| l.starts_with(&format!("{path}: "))).unwrap_or_else(|| panic!("no {path} in {lines:?}"));
    line[path.len() + 2..].to_string()
}

async fn refused_like_check(db: &str, url: &str) {
    let dir = TempDir::new();
    let server = store_server(url).await;
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let backend =
        |ca: &str| json!({ "system_name": "b", "private_base_url": "https://127.0.0.1:9", "tls": { "ca_file": ca } });
    let yaml_backend = |ca: &str| {
        format!(
            "backends:\n  - {{ system_name: b, private_base_url: 'https://127.0.0.1:9', tls: {{ ca_file: '{ca}' }} }}\n"
        )
    };

    // A CA file that does not exist, and one that is not PEM.
    for ca in ["/nonexistent/ca.pem".to_string(), not_pem.display().to_string()] {
        let (status, body) = api(&server, "POST", "/backends", Some(backend(&ca))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
        assert_eq!(body["error"]["field"], "tls.ca_file", "{db}: {body}");
        assert_eq!(
            body["error"]["message"],
            message_at(&check(&dir, &yaml_backend(&ca)), "backends[0].tls.ca_file"),
            "{db}: {ca}"
        );
    }

    // Special files and huge ones are refused at once, without reading them: a device,
    // a FIFO (which would wait for a writer), a directory.
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    for special in ["/dev/zero".to_string(), fifo.display().to_string(), "/".to_string()] {
        let (status, body) = api(&server, "POST", "/backends", Some(backend(&special))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {special}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("it is"), "{db}: {body}");
        assert_eq!(
            body["error"]["message"],
            message_at(&check(&dir, &yaml_backend(&special)), "backends[0].tls.ca_file")
        );
    }

    // A product whose rule pattern does not compile, or counts an unknown metric, or whose
    // policy's configuration is wrong: the same message as `check`, on the same field.
    let (status, body) = api(
        &server,
        "POST",
        "/backends",
        Some(json!({ "system_name": "b", "private_base_url": "http://127.0.0.1:9" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{db}: {body}");
    let product = json!({
        "system_name": "p",
        "staging_public_base_url": "http://p-staging.test",
        "production_public_base_url": "http://p.test",
        "backend_usages": [{ "backend": "b", "path": "/" }],
    });
    let (status, body) = api(&server, "POST", "/products", Some(product)).await;
    assert_eq!(status, StatusCode::CREATED, "{db}: {body}");
    let yaml_product = |extra: &str| {
        format!(
            "backends:\n  - {{ system_name: b, private_base_url: 'http://127.0.0.1:9' }}\nproducts:\n  - system_name: p\n    staging_public_base_url: http://p-staging.test\n    production_public_base_url: http://p.test\n    backend_usages: [ {{ backend: b, path: / }} ]\n{extra}"
        )
    };
    for (what, resource, body, yaml, path, field) in [
        (
            "a pattern that does not compile",
            "/products/p/mapping_rules",
            json!({ "http_method": "GET", "pattern": "/a/{", "metric": "hits", "delta": 1 }),
            "    mapping_rules: [ { http_method: GET, pattern: '/a/{', metric: hits, delta: 1 } ]\n",
            "products[0].mapping_rules[0].pattern",
            "pattern",
        ),
        (
            "an unknown metric",
            "/products/p/mapping_rules",
            json!({ "http_method": "GET", "pattern": "/", "metric": "mesages", "delta": 1 }),
            "    mapping_rules: [ { http_method: GET, pattern: /, metric: mesages, delta: 1 } ]\n",
            "products[0].mapping_rules[0].metric",
            "metric",
        ),
    ] {
        let (status, answer) = api(&server, "POST", resource, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {what}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{db}: {what}: {answer}");
        assert_eq!(answer["error"]["message"], message_at(&check(&dir, &yaml_product(yaml)), path), "{db}: {what}");
    }
    let chain = json!([{ "name": "url_rewriting", "configuration": { "commands": [{ "op": "sub", "regex": "(", "replace": "x" }] } }]);
    let (status, answer) = api(&server, "PUT", "/products/p/policy_chain", Some(chain)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {answer}");
    let lines = check(
        &dir,
        &yaml_product(
            "    policy_chain: [ { name: url_rewriting, configuration: { commands: [ { op: sub, regex: '(', replace: x } ] } } ]\n",
        ),
    );
    let field = answer["error"]["field"].as_str().expect("a field");
    assert!(field.starts_with("[0].configuration.commands"), "{db}: {answer}");
    assert_eq!(answer["error"]["message"], message_at(&lines, &format!("products[0].policy_chain{field}")), "{db}");
    // A log file the gateway could not open is refused at save time too.
    for file in ["", "/tmp/", fifo.display().to_string().as_str()] {
        let chain = json!([{ "name": "logging", "configuration": { "file": file } }]);
        let (status, answer) = api(&server, "PUT", "/products/p/policy_chain", Some(chain)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: `{file}`: {answer}");
        assert_eq!(answer["error"]["field"], "[0].configuration.file", "{db}: {answer}");
    }
    // A body of the wrong shape names the key, in words.
    let (status, answer) = api(
        &server,
        "POST",
        "/products/p/application_plans",
        Some(json!({ "system_name": "x", "limits": [{ "metric": "hits", "period": "fortnight", "value": 1 }] })),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limits[0].period")),
        "{db}: {answer}"
    );
    let (status, answer) = api(
        &server,
        "POST",
        "/products/p/application_plans",
        Some(json!({ "system_name": "x", "max_connections": -1 })),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("max_connections")),
        "{db}: {answer}"
    );
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("is not a whole number"), "{answer}");
    // Unknown endpoints and methods answer JSON.
    let (status, answer) = api(&server, "GET", "/nope", None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{db}");
    let (status, answer) = api(&server, "PATCH", "/products", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // `websocket` and `tollgate` act once per request: twice is refused, at the second.
    let twice = json!([{ "name": "websocket" }, { "name": "tollgate" }, { "name": "websocket" }]);
    let (status, answer) = api(&server, "PUT", "/products/p/policy_chain", Some(twice)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {answer}");
    assert_eq!(answer["error"]["field"], "[2].name", "{db}: {answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap_or_default().contains("already in the chain at [0]"),
        "{answer}"
    );
    // An APIcast policy name gets a hint naming Tollgate's.
    let (status, answer) =
        api(&server, "PUT", "/products/p/policy_chain", Some(json!([{ "name": "jwt_claim_check" }]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("`jwt` in Tollgate"), "{db}: {answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn saves_are_refused_for_what_check_refuses_with_the_same_message() {
    let dir = TempDir::new();
    for (db, url) in store_urls(&dir).await {
        refused_like_check(db, &url).await;
    }
}

async fn live_views(db: &str, url: &str, backend: &NodeBackend) {
    // Time stands still: the minute limit's window holds all the traffic.
    let server = store_server_at(url, stopped_clock()).await;
    let key = "e5".repeat(16);
    let config = json!({
        "backends": [{ "system_name": "echo", "private_base_url": backend.url(), "tls": { "ca_file": backend.cert } }],
        "products": [{
            "system_name": "chat",
            "staging_public_base_url": "http://chat-staging.localhost",
            "production_public_base_url": "http://chat.localhost",
            "backend_usages": [{ "backend": "echo", "path": "/" }],
            "mapping_rules": [{ "http_method": "GET", "pattern": "/", "metric": "hits", "delta": 1 }],
            "policy_chain": [{ "name": "websocket" }],
            "application_plans": [{ "system_name": "basic", "limits": [
                { "metric": "hits", "period": "minute", "value": 10 },
                { "metric": "hits", "period": "eternity", "value": 1000 }
            ] }]
        }],
        "accounts": [{ "name": "acme", "applications": [{ "name": "app", "product": "chat", "plan": "basic", "user_key": key }] }]
    });
    let (status, body) = api(&server, "PUT", "/config", Some(config)).await;
    assert!(status.is_success(), "{db}: {body}");
    // A write answers once this process's gateways serve it: no waiting here.
    let (status, body) = api(&server, "POST", "/products/chat/deploy", None).await;
    assert!(status.is_success(), "{db}: {body}");

    // Traffic: 7 requests with the key, 3 without, one WebSocket with 4 messages.
    for _ in 0..7 {
        let (status, _, _) = get(server.staging, "chat-staging.localhost", &format!("/?user_key={key}")).await;
        assert_eq!(status, StatusCode::OK, "{db}");
    }
    for _ in 0..3 {
        assert_eq!(get(server.staging, "chat-staging.localhost", "/").await.0, StatusCode::UNAUTHORIZED);
    }
    let mut socket = ws(server.staging, "chat-staging.localhost", &format!("/?user_key={key}")).await.expect("ws");
    for i in 0..4 {
        assert_eq!(ask(&mut socket, &format!("m{i}")).await, format!("reply from server : m{i}"));
    }

    // Where the application stands now, from the counters: 8 hits (7 + the upgrade);
    // `account/name` names it too.
    let (status, usage) = api(&server, "GET", "/applications/acme%2Fapp/usage", None).await;
    assert_eq!(status, StatusCode::OK, "{db}: {usage}");
    let minute = usage.as_array().and_then(|l| l.iter().find(|x| x["period"] == "minute")).expect("minute limit");
    assert_eq!((minute["current"].as_u64(), minute["remaining"].as_u64()), (Some(8), Some(2)), "{db}: {usage}");
    assert!(minute["resets_at"].as_i64().is_some(), "{db}: {usage}");
    let eternity = usage.as_array().and_then(|l| l.iter().find(|x| x["period"] == "eternity")).expect("eternity");
    assert_eq!(eternity["resets_at"], Value::Null, "{db}: {usage}");

    // The dashboard, once this process has written what it saw (the open WebSocket too).
    server.flush_analytics().await.expect("flush");
    let (status, d) = api(&server, "GET", "/analytics/dashboard?product=chat", None).await;
    assert_eq!(status, StatusCode::OK, "{db}: {d}");
    let staging = &d["environments"]["staging"];
    assert_eq!(staging["minutes"].as_array().map(Vec::len), Some(60), "{db}");
    assert_eq!(staging["responses"]["2xx"], 7, "{db}: {staging}");
    assert_eq!(staging["responses"]["4xx"], 3, "{db}: {staging}");
    assert_eq!(staging["responses"]["1xx"], 1, "{db}: the upgrade: {staging}");
    assert_eq!(staging["open_websockets"], 1, "{db}: {staging}");
    assert_eq!(staging["messages_from_clients"], 4, "{db}: {staging}");
    assert_eq!(staging["messages_from_backends"], 4, "{db}: {staging}");
    assert_eq!(d["environments"]["production"]["requests"], 0, "{db}");
    assert_eq!(d["nodes"]["reporting"], 1, "{db}: {d}");
    assert_eq!(d["top_applications"][0]["application"], "app", "{db}: {d}");
    assert_eq!(d["top_applications"][0]["hits"], 8, "{db}: {d}");
    let nearest = &d["nearest_limits"][0];
    assert_eq!((nearest["application"].as_str(), nearest["ratio"].as_f64()), (Some("app"), Some(0.8)), "{db}: {d}");
    let (status, missing) = api(&server, "GET", "/analytics/dashboard?product=nope", None).await;
    assert_eq!((status, missing["error"]["field"].as_str()), (StatusCode::NOT_FOUND, Some("product")), "{db}");

    // Closed: the totals have the messages each way and the close by its code.
    let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    };
    socket.close(Some(normal)).await.expect("close");
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut socket).await {}
    drop(socket);
    // The gateway records the close when its relay ends, just after the handshake:
    // read again (bounded) until it has.
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(20));
    let mut totals = Value::Null;
    for _ in 0..250 {
        poll.tick().await;
        server.flush_analytics().await.expect("flush");
        let (status, t) = api(&server, "GET", "/analytics/totals?product=chat&application=app", None).await;
        assert_eq!(status, StatusCode::OK, "{db}: {t}");
        totals = t;
        if totals["totals"]["websocket:closes:1000"] == 1 {
            break;
        }
    }
    assert_eq!(totals["totals"]["websocket:closes:1000"], 1, "{db}: {totals}");
    let t = &totals["totals"];
    assert_eq!((t["hits"].as_i64(), t["websocket:connections"].as_i64()), (Some(8), Some(1)), "{db}: {totals}");
    assert_eq!((t["websocket:client_messages"].as_i64(), t["websocket:server_messages"].as_i64()), (Some(4), Some(4)));

    // Two accounts with an application of one name: a name alone is ambiguous (409),
    // never two applications' usage added together; `account/name` says which.
    let (status, body) = api(&server, "POST", "/accounts", Some(json!({ "name": "other" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{db}: {body}");
    let twin = json!({ "name": "app", "product": "chat", "plan": "basic" });
    let (status, body) = api(&server, "POST", "/accounts/other/applications", Some(twin)).await;
    assert_eq!(status, StatusCode::CREATED, "{db}: {body}");
    let (status, _) = api(&server, "GET", "/analytics/usage?application=app&granularity=minute", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{db}");
    let (status, usage) = api(&server, "GET", "/analytics/usage?application=acme/app&granularity=minute", None).await;
    assert_eq!((status, usage["total"].as_i64()), (StatusCode::OK, Some(8)), "{db}: {usage}");

    // Suspended: refused on the very next request (the write answered once applied).
    let (status, body) = api(&server, "POST", "/applications/acme%2Fapp/suspend", None).await;
    assert!(status.is_success(), "{db}: {body}");
    let (status, _, _) = get(server.staging, "chat-staging.localhost", &format!("/?user_key={key}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{db}");
    server.shutdown().await;
}

#[tokio::test]
async fn live_views_show_real_traffic_on_both_stores() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    for (db, url) in store_urls(&dir).await {
        live_views(db, &url, &backend).await;
    }
}

#[tokio::test]
async fn the_audit_log_never_holds_a_secret_and_a_read_only_token_gains_nothing() {
    let dir = TempDir::new();
    for (db, url) in store_urls(&dir).await {
        let server = store_server(&url).await;
        let (status, admin) = api(&server, "POST", "/tokens", Some(json!({ "name": "ops" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{db}: {admin}");
        let secret = admin["token"].as_str().expect("the new token, shown once").to_string();
        let (status, viewer) =
            api(&server, "POST", "/tokens", Some(json!({ "name": "viewer", "read_only": true }))).await;
        assert_eq!(status, StatusCode::CREATED, "{db}: {viewer}");
        let viewer = viewer["token"].as_str().expect("token").to_string();
        // An application's key and a PEM private key go through the API too.
        let (status, _) = api(&server, "POST", "/accounts", Some(json!({ "name": "acme" }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let key = "f0".repeat(16);
        let app = json!({ "name": "app", "product": "none", "plan": "none", "user_key": key });
        let _ = api(&server, "POST", "/accounts/acme/applications", Some(app)).await;

        let (status, audit) = api_as(&server, &viewer, "GET", "/audit?limit=100", None).await;
        assert_eq!(status, StatusCode::OK, "{db}: read-only tokens read the audit log");
        let text = audit.to_string();
        assert!(!text.contains(&secret) && !text.contains(&viewer), "{db}: a token in the audit log: {text}");
        assert!(!text.contains(&key), "{db}: an application key in the audit log: {text}");
        assert!(text.contains("[redacted sha256:"), "{db}: {text}");
        // And the read-only token cannot write.
        let (status, _) = api_as(&server, &viewer, "POST", "/accounts", Some(json!({ "name": "x" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}");
        server.shutdown().await;
    }
}
