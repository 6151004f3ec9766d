//! Bodies and WebSocket streams are streamed, never held whole: 100 MiB each way through
//! the gateway with bounded memory, and a WebSocket client that stops reading makes the
//! backend's writes stall instead of growing the gateway's memory.
//!
//! This file is its own test binary so that its memory readings see no other test.

mod support;

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

fn config(http: SocketAddr, ws: SocketAddr) -> String {
    format!(
        r#"
backends:
  - {{ system_name: files, private_base_url: "http://{http}" }}
  - {{ system_name: flood, private_base_url: "ws://{ws}" }}
products:
  - system_name: big
    staging_public_base_url: http://big-staging.localhost
    production_public_base_url: http://big.localhost
    backend_usages: [ {{ backend: files, path: / }}, {{ backend: flood, path: /ws }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: websocket }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: a
    applications: [ {{ name: app, product: big, plan: basic, user_key: k }} ]
"#
    )
}

/// A WebSocket backend that, once a client connects, sends `count` binary messages of
/// `size` bytes (numbered in their first 8 bytes) as fast as it is allowed to, and
/// reports how many it managed to send before a send stalled for `stall`.
async fn flooding_backend(
    count: u64,
    size: usize,
    stall: Duration,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<(u64, tokio::sync::oneshot::Sender<()>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("handshake");
        let mut payload = vec![7u8; size];
        let mut sent = 0;
        let mut report = Some(report_tx);
        let mut resume = None;
        while sent < count {
            payload[..8].copy_from_slice(&sent.to_be_bytes());
            let send = ws.send(Message::binary(payload.clone()));
            match tokio::time::timeout(stall, send).await {
                Ok(r) => {
                    r.expect("send");
                    sent += 1;
                }
                Err(_) if report.is_some() => {
                    // Stalled: the client is not reading and nobody buffers for it.
                    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
                    let _ = report.take().map(|r| r.send((sent, go_tx)));
                    resume = Some(go_rx);
                    // The interrupted send left its frame queued; it is flushed below.
                    let _ = resume.take().expect("resume").await;
                    ws.flush().await.expect("flush");
                    sent += 1;
                }
                Err(_) => panic!("stalled again"),
            }
        }
        let _ = report.take().map(|r| r.send((sent, tokio::sync::oneshot::channel().0)));
        let _ = ws.close(None).await;
        let _ = resume;
    });
    (addr, report_rx)
}

#[tokio::test]
async fn a_hundred_mib_each_way_streams_with_bounded_memory_and_backpressure_holds() {
    let http = http_backend().await;
    const COUNT: u64 = 256;
    const SIZE: usize = 512 * 1024; // 128 MiB in all
    let (ws_addr, report) = flooding_backend(COUNT, SIZE, Duration::from_secs(2)).await;
    let gw = gateway(&config(http, ws_addr)).await;
    let addr = gw.server.staging;
    let host = "big-staging.localhost";
    let before = peak_rss();

    // Upload: a generated 100 MiB body, counted by the backend as it streams in.
    let (status, _, body) =
        request(addr, host, "POST", "/upload?user_key=k", boxed(Generated::new(100 * MIB)), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("{{\"bytes\":{}}}", 100 * MIB));

    // Download: 100 MiB counted as it streams out.
    let req = http::Request::builder()
        .uri(format!("http://{addr}/download?bytes={}&user_key=k", 100 * MIB))
        .header("host", host)
        .body(boxed(http_body_util::Empty::new()))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.expect("frame").data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, 100 * MIB);

    // WebSocket: connect, read nothing, and let the backend flood.
    let mut socket = ws(addr, host, "/ws?user_key=k").await.expect("upgrade");
    let (sent_before_stall, resume) = report.await.expect("the backend never stalled");
    let in_flight = sent_before_stall * SIZE as u64;
    assert!(in_flight < 48 * MIB, "{} MiB were accepted for a client that reads nothing", in_flight / MIB);
    let _ = resume.send(());
    // Nothing was lost: every message arrives, in order.
    for i in 0..COUNT {
        match socket.next().await.expect("stream ended").expect("receive") {
            Message::Binary(b) => {
                assert_eq!(b.len(), SIZE);
                assert_eq!(u64::from_be_bytes(b[..8].try_into().expect("8 bytes")), i);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let growth = peak_rss().saturating_sub(before);
    assert!(growth < 64 * MIB, "peak memory grew by {} MiB while streaming", growth / MIB);
}
