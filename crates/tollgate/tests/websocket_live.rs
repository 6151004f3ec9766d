//! Open WebSockets under a live control plane (store mode, admin API): they survive
//! deploys, promotes and plan edits while the edited limits apply to them; a plan
//! change closes the connections the new plan's cap no longer allows; a new key closes
//! the old key's connections; and each application's connections, messages, bytes and
//! seconds reach analytics while /metrics counts upgrades, messages and closes.
//!
//! SQLite only: what is tested here is the gateway's reaction to changes, which does
//! not depend on the store (admin_api.rs runs the store paths on PostgreSQL too).

mod support;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tollgate::serve::Server;

const STAGING: &str = "chat-staging.localhost";
const PRODUCTION: &str = "chat.localhost";
const KEY: &str = "live-key";

async fn setup(backend: &NodeBackend, dir: &TempDir) -> Server {
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let server = store_server(&url).await;
    let yaml = format!(
        r#"
backends:
  - {{ system_name: echo, private_base_url: "{url}", tls: {{ ca_file: "{cert}" }} }}
products:
  - system_name: chat
    staging_public_base_url: http://{STAGING}
    production_public_base_url: http://{PRODUCTION}
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: messages }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain:
      - name: websocket
        configuration: {{ meter_messages: {{ metric: messages, direction: client_to_server }} }}
    application_plans:
      - system_name: basic
        max_connections: 5
        limits: [ {{ metric: messages, period: hour, value: 1000 }} ]
      - system_name: single
        max_connections: 1
accounts:
  - name: acme
    applications:
      - {{ name: acme-chat, product: chat, plan: basic, user_key: {KEY} }}
"#,
        url = backend.url(),
        cert = backend.cert.display(),
    );
    let config: Value = serde_norway::from_str(&yaml).expect("yaml");
    let (status, body) = api(&server, "PUT", "/config", Some(config)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    deploy_and_promote(&server).await;
    server
}

async fn deploy_and_promote(server: &Server) {
    let (status, body) = api(server, "POST", "/products/chat/deploy", None).await;
    assert!(status.is_success(), "deploy: {body}");
    let (status, body) = api(server, "POST", "/products/chat/promote", None).await;
    assert!(status.is_success(), "promote: {body}");
    server.wait_applied().await;
}

async fn expect_close(socket: &mut Ws, code: u16, reason: &str) {
    match ws_message(socket).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (code, reason)),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_open_websocket_survives_promotes_and_plan_edits_and_the_edited_limit_applies() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let server = setup(&backend, &dir).await;
    let path = format!("/?user_key={KEY}");
    let mut socket = ws(server.production, PRODUCTION, &path).await.expect("upgrade");
    assert_eq!(ask(&mut socket, "m1").await, "reply from server : m1");

    // Three changed versions deployed and promoted while the socket stays open.
    for i in 0..3 {
        let (status, body) =
            api(&server, "POST", "/products/chat/methods", Some(json!({ "system_name": format!("extra{i}") }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        deploy_and_promote(&server).await;
        assert_eq!(ask(&mut socket, &format!("after {i}")).await, format!("reply from server : after {i}"));
    }
    let history = api(&server, "GET", "/products/chat/configs/production", None).await.1;
    assert_eq!(history.as_array().map(Vec::len), Some(4), "{history}");

    // 4 messages so far; the plan now allows 6 an hour: two more pass, the third closes.
    let limits = api(&server, "GET", "/products/chat/application_plans/basic/limits", None).await.1;
    let id = limits[0]["id"].as_i64().expect("limit id");
    let (status, body) = api(
        &server,
        "PUT",
        &format!("/products/chat/application_plans/basic/limits/{id}"),
        Some(json!({ "metric": "messages", "period": "hour", "value": 6 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.wait_applied().await;
    assert_eq!(ask(&mut socket, "m5").await, "reply from server : m5", "the plan edit did not close it");
    assert_eq!(ask(&mut socket, "m6").await, "reply from server : m6");
    socket.send(Message::text("m7")).await.expect("send");
    expect_close(&mut socket, 1008, "usage limits exceeded").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_plan_change_closes_what_the_new_plan_does_not_allow_and_a_new_key_closes_the_rest() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let server = setup(&backend, &dir).await;
    let path = format!("/?user_key={KEY}");
    let mut older = ws(server.staging, STAGING, &path).await.expect("first");
    let mut newer = ws(server.production, PRODUCTION, &path).await.expect("second");
    assert_eq!(ask(&mut older, "a").await, "reply from server : a");
    assert_eq!(ask(&mut newer, "b").await, "reply from server : b");

    // `single` allows one connection: the newer one closes, the older one stays.
    let (status, body) =
        api(&server, "POST", "/applications/acme-chat/change_plan", Some(json!({ "plan": "single" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.wait_applied().await;
    expect_close(&mut newer, 1008, "the application's new plan does not allow this connection").await;
    assert_eq!(ask(&mut older, "still").await, "reply from server : still");
    let (status, body) = ws_refused(server.staging, STAGING, &path).await;
    assert_eq!(status, 429, "the new cap applies to upgrades: {body}");

    // A new user_key revokes the old one: its connection closes, the new key works.
    let (status, app) = api(&server, "POST", "/applications/acme-chat/keys", None).await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    server.wait_applied().await;
    expect_close(&mut older, 1008, "credentials revoked").await;
    drop(older);
    let new_key = app["user_key"].as_str().expect("user_key");
    assert_ne!(new_key, KEY);
    let new_path = format!("/?user_key={new_key}");
    let mut fresh = None;
    for _ in 0..200 {
        // The closed connection's place frees once its relay ends; bounded retries.
        match ws(server.staging, STAGING, &new_path).await {
            Ok(s) => {
                fresh = Some(s);
                break;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    let mut fresh = fresh.expect("the new key connects");
    assert_eq!(ask(&mut fresh, "new").await, "reply from server : new");
    drop(fresh);
    server.shutdown().await;
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

async fn usage(server: &Server, metric: &str) -> i64 {
    let (status, v) =
        api(server, "GET", &format!("/analytics/usage?application=acme-chat&metric={metric}&granularity=minute"), None)
            .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["total"].as_i64().expect("total")
}

#[tokio::test]
async fn connections_messages_bytes_and_closes_reach_analytics_and_metrics() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    let server = setup(&backend, &dir).await;
    let path = format!("/?user_key={KEY}");
    for round in 0..2 {
        let mut socket = ws(server.staging, STAGING, &path).await.expect("upgrade");
        for i in 0..3 {
            assert_eq!(ask(&mut socket, &format!("{round}{i}")).await, format!("reply from server : {round}{i}"));
        }
        socket.close(None).await.expect("close");
        while socket.next().await.is_some() {}
    }
    // One refused upgrade (bad key).
    assert_eq!(ws_refused(server.staging, STAGING, "/?user_key=nope").await.0, 403);

    // The relays finish asynchronously after the client sees the close: wait for both
    // closes to be counted (bounded), then read everything.
    let metrics_url = "/metrics";
    let mut text = String::new();
    for _ in 0..500 {
        text = get(server.admin, "localhost", metrics_url).await.2;
        if series(&text, "tollgate_websocket_duration_seconds_count{environment=\"staging\"}") >= 2.0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let s = |labels: &str| series(&text, labels);
    assert_eq!(
        s("tollgate_websocket_upgrades_total{environment=\"staging\",version=\"1.1\",result=\"accepted\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        s("tollgate_websocket_upgrades_total{environment=\"staging\",version=\"1.1\",result=\"unauthorized\"}"),
        1.0
    );
    assert_eq!(s("tollgate_websocket_messages_total{environment=\"staging\",direction=\"client_to_server\"}"), 6.0);
    assert_eq!(s("tollgate_websocket_messages_total{environment=\"staging\",direction=\"server_to_client\"}"), 6.0);
    assert!(s("tollgate_websocket_bytes_total{environment=\"staging\",direction=\"server_to_client\"}") > 6.0 * 20.0);
    assert_eq!(
        s("tollgate_websocket_closes_total{environment=\"staging\",initiator=\"client\",code=\"1005\"}"),
        2.0,
        "tungstenite's close(None) sends no code: {text}"
    );
    assert_eq!(s("tollgate_websocket_open{environment=\"staging\"}"), 0.0);
    assert_eq!(s("tollgate_websocket_duration_seconds_bucket{environment=\"staging\",le=\"+Inf\"}"), 2.0);

    server.flush_analytics().await.expect("flush");
    assert_eq!(usage(&server, "websocket:connections").await, 2);
    assert_eq!(usage(&server, "websocket:client_messages").await, 6);
    assert_eq!(usage(&server, "websocket:server_messages").await, 6);
    assert_eq!(usage(&server, "messages").await, 6, "the metered metric, as the plan counts it");
    // Each client frame is 2 bytes of payload, 2 of header and 4 of mask (8 bytes).
    assert_eq!(usage(&server, "websocket:client_bytes").await, 6 * 8 + 2 * 6, "six messages and two closes");
    assert!(usage(&server, "websocket:server_bytes").await > 6 * 20);
    server.shutdown().await;
}
