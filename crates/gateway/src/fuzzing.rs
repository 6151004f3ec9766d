//! Entry points for the fuzz targets in `fuzz/` (a crate outside the workspace) to the
//! request-head checks that are private to the proxy. Nothing here is API: the
//! functions only forward to the code the gateway runs, so that what is fuzzed is what
//! serves. Hidden from the documentation; no other caller should use it.

use crate::refusal::Refusal;
use http::{HeaderMap, Request};

pub use crate::smuggling::SmugglingGuard;

/// The Host header checks every request passes first (one Host, no user information).
pub fn check_host_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    crate::proxy::check_host_headers(headers).map(|_| ())
}

/// The HTTP/2 field checks (RFC 9113 §8.2.1, §8.3.1).
pub fn check_http2_fields<B>(req: &Request<B>) -> Result<(), Refusal> {
    crate::proxy::check_http2_fields(req)
}

/// The host a request is routed by, without port.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    crate::proxy::host_of(req.uri(), req.headers())
}

/// How a request asks for a WebSocket: `Ok("none" | "http1" | "http2")`, or why the
/// upgrade is refused.
pub fn websocket_upgrade<B>(req: &Request<B>) -> Result<&'static str, Refusal> {
    use crate::proxy::Handshake;
    crate::proxy::websocket_upgrade(req).map(|h| match h {
        Handshake::None => "none",
        Handshake::Http1 => "http1",
        Handshake::Http2 => "http2",
    })
}

/// The request headers as they are forwarded to a backend.
pub fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    crate::proxy::forwardable_headers(headers)
}

/// A backend response's headers with the hop-by-hop ones removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    crate::proxy::strip_hop_by_hop(headers)
}

/// A `grpc-timeout` header's deadline, if it is one.
pub fn grpc_timeout(v: &http::HeaderValue) -> Option<std::time::Duration> {
    crate::proxy::grpc_timeout(v)
}
