//! The PROXY protocol on a gateway listener (`--proxy-protocol`), with a real sender:
//! Debian's HAProxy, forwarding TCP with `send-proxy` (v1) and `send-proxy-v2`. The client
//! address the header carries becomes the request's (`X-Forwarded-For` shows it); a
//! trusted source that sends no header, or an untrusted one that sends one, is refused.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "api.test";

/// A port free now on 127.0.0.1, for HAProxy's configuration (it cannot report one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// HAProxy forwarding TCP from two frontends to `to`: one sends v1 headers, one v2.
/// (The process, the v1 frontend, the v2 frontend.)
async fn haproxy(dir: &TempDir, to: SocketAddr) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let (v1, v2) = (free_port(), free_port());
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend v1\nbackend v1\n  server gw {to} send-proxy\n\
             frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend v2\nbackend v2\n  server gw {to} send-proxy-v2\n"
        ),
    )
    .expect("haproxy.cfg");
    let bin = if std::path::Path::new("/usr/sbin/haproxy").exists() { "/usr/sbin/haproxy" } else { "haproxy" };
    let child = tokio::process::Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy (Debian's package; scripts/test.sh installs it)");
    // Until both frontends accept (bounded: 10 s).
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(20));
    for port in [v1, v2] {
        let mut up = false;
        for _ in 0..500 {
            poll.tick().await;
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                up = true;
                break;
            }
        }
        assert!(up, "haproxy did not listen on {port}");
    }
    (child, ([127, 0, 0, 1], v1).into(), ([127, 0, 0, 1], v2).into())
}

/// A GET from the loopback address `from` to `to`, with `prefix` sent first: the
/// answer, or what came before the connection closed.
async fn get_from(from: [u8; 4], to: SocketAddr, prefix: &[u8]) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind the source address");
    let mut tcp = socket.connect(to).await.expect("connect");
    let mut request = prefix.to_vec();
    request.extend_from_slice(
        format!("GET /who?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let _ = tcp.write_all(&request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_client_address_comes_from_a_trusted_balancers_header_only() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, open_config(backend, HOST)).expect("config");
    let gw = spawn_serve_with(&path, &["--proxy-protocol", "127.0.0.1/32"]).await;
    let (_haproxy, v1, v2) = haproxy(&dir, gw.staging).await;

    // Through HAProxy, from 127.0.0.3: the gateway's peer is HAProxy (127.0.0.1), the
    // client the header names is 127.0.0.3 — what the backend's X-Forwarded-For says.
    for (version, front) in [("v1", v1), ("v2", v2)] {
        let answer = get_from([127, 0, 0, 3], front, b"").await;
        assert_eq!(status_of(&answer), 200, "{version}: {answer}");
        assert!(answer.contains(r#""x-forwarded-for":"127.0.0.3""#), "{version}: {answer}");
    }
    // The trusted source without a header: refused (closed, no answer).
    let answer = get_from([127, 0, 0, 1], gw.staging, b"").await;
    assert!(answer.is_empty(), "a trusted source must send the header: {answer}");
    // An untrusted source claiming an address: refused; plain HTTP from it is served,
    // with its own address.
    let forged = get_from([127, 0, 0, 2], gw.staging, b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n").await;
    assert!(forged.is_empty(), "an untrusted source's header must not pass: {forged}");
    let plain = get_from([127, 0, 0, 2], gw.staging, b"").await;
    assert_eq!(status_of(&plain), 200, "{plain}");
    assert!(plain.contains(r#""x-forwarded-for":"127.0.0.2""#), "{plain}");
}
