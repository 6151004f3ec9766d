//! gRPC through the gateway (issue 18): a grpcio server (Python, C-core) behind a
//! backend with `protocol: http2`, called by a grpcio client over h2c — the four call
//! shapes, trailers, a backend's error status, deadlines, a backend that resets its
//! stream, and the gateway's own refusals said as gRPC statuses.

mod support;

use std::process::Stdio;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

fn peer() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/grpc_peer.py")
}

async fn grpc_server() -> (u16, tokio::process::Child) {
    let mut child = tokio::process::Command::new("python3")
        .arg(peer())
        .arg("server")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the grpcio server (pip install grpcio; the README's test command does)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("stdout").expect("the grpcio server printed nothing");
    let port = first.strip_prefix("listening on ").and_then(|p| p.parse().ok()).expect("port line");
    (port, child)
}

async fn call(gateway: std::net::SocketAddr, user_key: &str, case: &str) -> serde_json::Value {
    let out = tokio::process::Command::new("python3")
        .arg(peer())
        .args(["client", &gateway.to_string(), "grpc.test", user_key, case])
        .output()
        .await
        .expect("run the grpcio client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{case}: {e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn grpc_calls_of_every_shape_pass_with_trailers_statuses_and_deadlines() {
    let (port, _server) = grpc_server().await;
    let yaml = format!(
        r#"
backends:
  - {{ system_name: grpc, private_base_url: "http://127.0.0.1:{port}", protocol: http2 }}
products:
  - system_name: api
    staging_public_base_url: http://grpc.test
    production_public_base_url: http://grpc-production.test
    authentication: {{ credentials_location: headers }}
    backend_usages: [ {{ backend: grpc, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    methods: [ {{ system_name: unary }} ]
    mapping_rules:
      - {{ http_method: POST, pattern: /test.Echo/Unary, metric: unary }}
      - {{ http_method: POST, pattern: /test.Echo/, metric: hits }}
    application_plans:
      - {{ system_name: basic }}
      - {{ system_name: none, limits: [ {{ metric: hits, period: eternity, value: 0 }} ] }}
accounts:
  - name: acme
    applications:
      - {{ name: app, product: api, plan: basic, user_key: k }}
      - {{ name: broke, product: api, plan: none, user_key: spent }}
"#
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;

    let unary = call(addr, "k", "unary").await;
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["replies"], serde_json::json!(["hello"]));
    assert_eq!(unary["trailers"]["x-served-by"], "grpcio", "the backend's trailers reach the client: {unary}");

    let server_stream = call(addr, "k", "server_stream").await;
    assert_eq!(server_stream["replies"], serde_json::json!(["s0", "s1", "s2"]), "{server_stream}");
    let client_stream = call(addr, "k", "client_stream").await;
    assert_eq!(client_stream["replies"], serde_json::json!(["a+b+c"]), "{client_stream}");
    let bidi = call(addr, "k", "bidi").await;
    assert_eq!(bidi["replies"], serde_json::json!(["X", "Y", "Z"]), "{bidi}");

    let fail = call(addr, "k", "fail").await;
    assert_eq!((fail["code"].as_str(), fail["details"].as_str()), (Some("NOT_FOUND"), Some("no such thing")));
    let deadline = call(addr, "k", "deadline").await;
    assert_eq!(deadline["code"], "DEADLINE_EXCEEDED", "{deadline}");
    // A backend that resets its stream: the client gets what came before, then the
    // status the reset means, not a hang.
    // A cancelled call's status travels on (CANCELLED), mid-stream and at once.
    let reset = call(addr, "k", "reset").await;
    assert_eq!(
        (reset["code"].as_str(), &reset["replies"]),
        (Some("CANCELLED"), &serde_json::json!(["one"])),
        "{reset}"
    );
    let reset_unary = call(addr, "k", "reset_unary").await;
    assert_eq!(reset_unary["code"], "CANCELLED", "{reset_unary}");

    let missing = call(addr, "", "unary").await;
    assert_eq!(missing["code"], "UNAUTHENTICATED", "{missing}");
    let wrong = call(addr, "nope", "unary").await;
    assert_eq!(wrong["code"], "PERMISSION_DENIED", "{wrong}");
    let limited = call(addr, "spent", "unary").await;
    assert_eq!(
        (limited["code"].as_str(), limited["details"].as_str()),
        (Some("RESOURCE_EXHAUSTED"), Some("limits_exceeded"))
    );
}
