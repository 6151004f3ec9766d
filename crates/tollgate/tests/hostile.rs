//! Hostile clients: slow heads (slowloris), idle keep-alive connections, connection
//! floods past the listener's cap, running out of file descriptors, and an HTTP/2
//! rapid-reset flood from Python's `h2` library. The gateway must stay up and keep
//! serving — never panic, never hang.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn config(backend: SocketAddr) -> String {
    format!(
        r#"
backends: [ {{ system_name: api, private_base_url: "http://{backend}" }} ]
products:
  - system_name: api
    staging_public_base_url: http://api-staging.localhost
    production_public_base_url: http://api.localhost
    backend_usages: [ {{ backend: api, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: a
    applications: [ {{ name: app, product: api, plan: basic, user_key: k }} ]
"#
    )
}

const GOOD: &[u8] = b"GET /x?user_key=k HTTP/1.1\r\nHost: api-staging.localhost\r\n\r\n";

/// Reads until the server closes the connection; a safety net of 20 s keeps a broken
/// server from hanging the suite (it is not what the test measures).
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut out))
        .await
        .expect("the server never closed the connection");
    out
}

#[tokio::test]
async fn slow_heads_and_idle_keep_alive_connections_are_closed() {
    let backend = http_backend().await;
    let gw = gateway_with(&config(backend), &["--header-read-timeout", "1"]).await;

    // Slowloris: half a head, then silence.
    let mut slow = TcpStream::connect(gw.server.staging).await.expect("connect");
    slow.write_all(b"GET /x?user_key=k HTTP/1.1\r\nHost: api-staging.localhost\r\nX-Slow: 1").await.expect("write");
    let _ = read_until_closed(&mut slow).await;

    // Idle keep-alive: one complete exchange, then nothing.
    let mut idle = TcpStream::connect(gw.server.staging).await.expect("connect");
    idle.write_all(GOOD).await.expect("write");
    let got = read_until_closed(&mut idle).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "the request itself was served");

    // The gateway still serves.
    assert_eq!(get(gw.server.staging, "api-staging.localhost", "/x?user_key=k").await.0, 200);
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_counted_when_every_one_is_busy() {
    // A backend that says when it has a request it will never answer.
    let (seen, mut never) = tokio::sync::mpsc::unbounded_channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        if req.uri().path() == "/never" {
                            let _ = seen.send(());
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(full("ok")))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    let gw = gateway_with(&config(backend), &["--max-connections", "2"]).await;
    let addr = gw.server.staging;
    // Two connections, each proven accepted by a served request, then busy with a
    // request the backend never answers.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(GOOD).await.expect("write");
        let mut line = String::new();
        let mut reader = BufReader::new(&mut tcp);
        reader.read_line(&mut line).await.expect("read");
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        tcp.write_all(b"GET /never?user_key=k HTTP/1.1\r\nHost: api-staging.localhost\r\n\r\n").await.expect("write");
        held.push(tcp);
    }
    // Until the gateway reads a request, its connection counts as idle and would make
    // room: wait for the backend to have both.
    for _ in 0..2 {
        never.recv().await.expect("the backend got the request");
    }
    // A third is closed without an answer: no connection is idle or too slow to go.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let _ = third.write_all(GOOD).await;
    let got = read_until_closed(&mut third).await;
    assert!(got.is_empty(), "refused connections get no response: {}", String::from_utf8_lossy(&got));
    let (_, _, metrics) = get(gw.server.admin, "localhost", "/metrics").await;
    assert!(metrics.contains("tollgate_connections_refused_total{environment=\"staging\"} 1"), "{metrics}");
    drop(held);
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_crash_the_gateway() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, config(backend)).expect("write");
    // 64 descriptors in all: a few dozen connections exhaust them.
    let script = format!(
        "ulimit -n 64 && exec '{}' serve --config '{}' --staging-listen 127.0.0.1:0 --production-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_tollgate"),
        path.display()
    );
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = staging_port(&mut lines).await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();

    let mut flood = Vec::new();
    for _ in 0..120 {
        flood.push(TcpStream::connect(addr).await.expect("the kernel still queues connections"));
    }
    // The server says it is out of descriptors, and keeps running.
    loop {
        let line = stderr.next_line().await.expect("stderr").expect("the server exited");
        if line.contains("accept failed") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    assert!(child.try_wait().expect("try_wait").is_none(), "the gateway must not exit");
    drop(flood);
    // Once the flood is gone the gateway serves again. Its accept loop retries every
    // 50 ms, so this is bounded polling of a recovering server, not synchronisation.
    let mut served = false;
    for _ in 0..200 {
        let Ok(mut tcp) = TcpStream::connect(addr).await else { continue };
        if tcp.write_all(GOOD).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 12];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), tcp.read_exact(&mut buf)).await
            && &buf == b"HTTP/1.1 200"
        {
            served = true;
            break;
        }
    }
    assert!(served, "the gateway never recovered");
    assert!(child.try_wait().expect("try_wait").is_none());
}

#[tokio::test]
async fn http2_rapid_reset_flood_gets_goaway_and_the_gateway_keeps_serving() {
    let backend = http_backend().await;
    let gw = gateway(&config(backend)).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/h2_rapid_reset.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &gw.server.staging.port().to_string(), "api-staging.localhost", "5000"])
        .output()
        .await
        .expect("python3 (with the h2 package: pip install h2)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    // ENHANCE_YOUR_CALM (0xb) is hyper/h2's answer to a reset flood.
    assert!(v["goaway"] == 11 || v["closed"] == true, "the flood was not stopped: {v}");
    assert!(v["opened"].as_u64().unwrap_or(0) < 5000, "{v}");
    assert_eq!(get(gw.server.staging, "api-staging.localhost", "/x?user_key=k").await.0, 200);
}
