//! Distributed tracing through a real `tollgate serve` process configured by the
//! standard OTEL_* variables, exporting to an OTLP/HTTP receiver this test runs: the
//! caller's trace continues through the gateway, the backend gets a `traceparent`
//! naming the gateway's client span, and the spans arrive with their parents.

mod support;

use http_body_util::BodyExt as _;
use serde_json::Value;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP (JSON) receiver: every span it was sent, with its resource's service
/// name; `arrived` is notified after each batch.
async fn receiver() -> (std::net::SocketAddr, Received, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let spans: Received = Arc::default();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (store, notify) = (spans.clone(), arrived.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (store, notify) = (store.clone(), notify.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (store, notify) = (store.clone(), notify.clone());
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let doc: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                        for rs in doc["resourceSpans"].as_array().expect("resourceSpans") {
                            let name = rs["resource"]["attributes"][0]["value"]["stringValue"]
                                .as_str()
                                .unwrap_or("")
                                .to_string();
                            for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
                                for s in ss["spans"].as_array().expect("spans") {
                                    store.lock().expect("spans").push((name.clone(), s.clone()));
                                }
                            }
                        }
                        notify.notify_one();
                        Ok::<_, std::convert::Infallible>(http::Response::new(full("{}")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans, arrived)
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_continues_the_callers_trace_and_reaches_the_collector() {
    let (collector, spans, arrived) = receiver().await;
    let backend = http_backend().await;
    let dir = TempDir::new();
    let config = dir.path().join("t.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
backends: [ {{ system_name: api, private_base_url: "http://{backend}" }} ]
products:
  - system_name: shop
    staging_public_base_url: http://shop-staging.localhost
    production_public_base_url: http://shop.localhost
    backend_usages: [ {{ backend: api, path: / }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: shop, plan: basic, user_key: k }} ]
"#
        ),
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(PORT0)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_SERVICE_NAME", "gateway-under-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = staging_port(&mut out).await;
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let (status, _, body) = request(
        addr,
        "shop-staging.localhost",
        "GET",
        "/items?user_key=k",
        full(""),
        &[("traceparent", &format!("00-{trace}-{caller}-01"))],
    )
    .await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("json");
    let sent = seen["headers"]["traceparent"].as_str().expect("the backend got a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"), "{sent}");
    let upstream_span = parts[2].to_string();
    assert_ne!(upstream_span, caller, "the backend's parent is the gateway's client span");

    // Spans arrive in batches; look again after each one the receiver gets (bounded).
    let mine = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            let got: Vec<(String, Value)> =
                spans.lock().expect("spans").iter().filter(|(_, s)| s["traceId"] == trace).cloned().collect();
            if got.iter().any(|(_, s)| s["name"] == "request") && got.len() >= 6 {
                return got;
            }
            arrived.notified().await;
        }
    })
    .await
    .expect("the spans reached the collector");
    assert!(mine.iter().all(|(service, _)| service == "gateway-under-test"));
    let by_name =
        |n: &str| mine.iter().map(|(_, s)| s).find(|s| s["name"] == n).unwrap_or_else(|| panic!("no {n} span"));
    let server = by_name("request");
    assert_eq!((server["kind"].as_u64(), server["parentSpanId"].as_str()), (Some(2), Some(caller)));
    assert_eq!(attr(server, "http.response.status_code").and_then(|v| v["intValue"].as_str()), Some("200"));
    assert_eq!(attr(server, "tollgate.product").and_then(|v| v["stringValue"].as_str()), Some("shop"));
    assert_eq!(attr(server, "tollgate.application").and_then(|v| v["stringValue"].as_str()), Some("acme/app"));
    let server_id = server["spanId"].as_str().expect("id");
    for child in ["rewrite", "access", "limits", "upstream", "response"] {
        assert_eq!(by_name(child)["parentSpanId"].as_str(), Some(server_id), "{child} is a child of the request span");
    }
    let upstream = by_name("upstream");
    assert_eq!((upstream["spanId"].as_str(), upstream["kind"].as_u64()), (Some(upstream_span.as_str()), Some(3)));
    let (start, end) = (
        server["startTimeUnixNano"].as_str().and_then(|v| v.parse::<u64>().ok()).expect("start"),
        server["endTimeUnixNano"].as_str().and_then(|v| v.parse::<u64>().ok()).expect("end"),
    );
    assert!(start <= end);

    // A request without a traceparent starts a trace of its own.
    let (status, _, body) = get(addr, "shop-staging.localhost", "/items?user_key=k").await;
    assert_eq!(status, http::StatusCode::OK);
    let fresh: Value = serde_json::from_str(&body).expect("json");
    let sent = fresh["headers"]["traceparent"].as_str().expect("a new trace is propagated too");
    assert!(!sent.contains(trace));
}
