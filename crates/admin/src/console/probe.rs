//! Asks this process's own gateway what it answers to a WebSocket upgrade, for "Try
//! it": a browser's WebSocket API reports a refused upgrade only as close code 1006,
//! hiding the status and the error body that say why.

use crate::GatewayListener;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tollgate_model::{BackendTls, BaseUrl};

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's status and body (at most 16 KiB) for an upgrade of `target` (path and
/// query) on `host`, sent to `listener` (loopback when it listens on every address).
/// A 101 is not kept open: the connection is dropped at once.
///
/// # Errors
/// When the listener cannot be reached or answers no HTTP: the reason, in words.
pub async fn upgrade(listener: &GatewayListener, host: &str, target: &str) -> Result<(u16, String), String> {
    let mut addr = listener.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let scheme = if listener.tls { "https" } else { "http" };
    let base = BaseUrl::parse(&format!("{scheme}://{addr}"), &["http", "https"])?;
    // This process's own listener, on loopback: its certificate is the operator's,
    // issued for the product's host — the host is what is sent, nothing is verified.
    let tls = BackendTls { verify: false, server_name: Some(host.to_string()), ..BackendTls::default() };
    let gateway = tollgate_gateway::upstream::Upstream::new("console probe", base, &tls, TIMEOUT)?;
    let exchange = async {
        let (stream, _lease, _) = gateway.connect(None).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection.with_upgrades());
        let request = http::Request::get(target)
            .header(http::header::HOST, host)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::SEC_WEBSOCKET_VERSION, "13")
            // Any 16 bytes in base64 make a valid key (RFC 6455 §4.1); this is RFC 6455's
            // own sample: the probe never reads the accept value.
            .header(http::header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if status == 101 {
            return Ok((status, String::new()));
        }
        let body = Limited::new(response.into_body(), 16 * 1024).collect().await.map_err(|e| e.to_string())?;
        Ok((status, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| "no answer within 5 s".to_string())?
}
