//! One rescue: the only place where a [`Refusal`] becomes what the client, the log and
//! the metrics see — the response (status; the product's or policy's configured body,
//! else the JSON error shape `{"error":{"code","message"}}`; headers such as
//! `RateLimit-*`, `Retry-After`, `WWW-Authenticate`, `Connection: close`), one log line
//! (debug for the client's faults; a rate-limited warning naming the backend for
//! failures) and the environment's counters (`limits_exceeded`, `upstream_errors`).
//! Like linkerd2-proxy's rescue and axum's `IntoResponse`: code that refuses returns a
//! `Refusal`, and never builds a response itself.

use crate::metrics::EnvMetrics;
use crate::refusal::{ErrorTemplate, Refusal, Side};
use crate::upstream::body::GatewayBody;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tollgate_counters::LimitStatus;

/// The response for `refusal`, logged and counted in `metrics` (the environment's).
pub fn respond(refusal: Refusal, metrics: &EnvMetrics) -> Response<GatewayBody> {
    match refusal.side() {
        Side::Downstream => {
            tracing::debug!(code = refusal.code(), detail = refusal.detail().unwrap_or(""), "request refused")
        }
        side => crate::logs::failures::record(refusal.code(), side, refusal.detail().unwrap_or("")),
    }
    if refusal.side() == Side::Upstream {
        metrics.upstream_error();
    }
    if refusal.is_limit() {
        metrics.limits_exceeded();
    }
    let mut resp = match &refusal {
        Refusal::AuthenticationMissing(a)
        | Refusal::AuthenticationFailed(a)
        | Refusal::NoMappingRule(a)
        | Refusal::Denied { answer: a, .. } => answer(a),
        Refusal::LimitsExceeded { answer: a, status, now } => {
            let mut resp = answer(a);
            rate_limit_headers(resp.headers_mut(), status, *now);
            resp
        }
        Refusal::EdgeLimited { answer: a, retry_after_secs } => {
            let mut resp = answer(a);
            if let Some(secs) = retry_after_secs {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from((*secs).max(1)));
            }
            resp
        }
        other => answer(&ErrorTemplate::json(other.status(), other.code(), &other.to_string())),
    };
    match &refusal {
        Refusal::BadUpgrade(_) => {
            resp.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        // RFC 6750 §3: no token, the bare challenge; a token refused, `invalid_token`
        // (RFC 8705 §3 for a token bound to another certificate).
        Refusal::TokenRefused { status: StatusCode::UNAUTHORIZED, code, .. } => {
            let challenge = if *code == "jwt_missing" { "Bearer" } else { "Bearer error=\"invalid_token\"" };
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        _ => {}
    }
    resp.extensions_mut().insert(Refused { code: refusal.code() });
    // A request the gateway could not frame or read one way (two Hosts, a body on an
    // upgrade…) ends its connection: what follows on it cannot be trusted either.
    if matches!(
        refusal,
        Refusal::BadRequest(_) | Refusal::BadUpgrade(_) | Refusal::RequestTimeout | Refusal::BadRequestBody(_)
    ) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A configured answer as a response.
fn answer(a: &ErrorTemplate) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::local(a.body.clone()));
    *resp.status_mut() = a.status;
    resp.headers_mut().insert(header::CONTENT_TYPE, a.content_type.clone());
    resp
}

/// `RateLimit-Limit/-Remaining/-Reset` and `Retry-After` (omitted for `eternity`), as
/// 3scale's APIcast sends them (draft-ietf-httpapi-ratelimit-headers).
fn rate_limit_headers(headers: &mut HeaderMap, status: &LimitStatus, now: i64) {
    headers.insert("ratelimit-limit", HeaderValue::from(status.max));
    headers.insert("ratelimit-remaining", HeaderValue::from(status.remaining()));
    if let Some(reset) = status.reset_at {
        let secs = (reset - now).max(0);
        headers.insert("ratelimit-reset", HeaderValue::from(secs));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// Marks a response as the gateway's refusal (its `code`), so that a gRPC request's
/// refusal can be said in gRPC's terms ([`grpc_status`]).
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// The refusal's code (`limits_exceeded`, `auth_failed`, …).
    pub code: &'static str,
}

/// Whether a request is a gRPC call: `Content-Type: application/grpc` with any subtype
/// (`+proto`, `+json`; gRPC over HTTP/2, PROTOCOL-HTTP2.md).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The gRPC status code (grpc/doc/statuscodes.md) for a refusal's HTTP status: 401
/// `UNAUTHENTICATED` (16), 403 `PERMISSION_DENIED` (7), 429, 413 and 431
/// `RESOURCE_EXHAUSTED` (8), 404 and 501 `UNIMPLEMENTED` (12), 400 `INVALID_ARGUMENT`
/// (3), 408 and 504 `DEADLINE_EXCEEDED` (4), 502 and 503 `UNAVAILABLE` (14), otherwise
/// `UNKNOWN` (2).
pub fn grpc_code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 3,
        401 => 16,
        403 => 7,
        404 | 501 => 12,
        408 | 504 => 4,
        413 | 429 | 431 => 8,
        502 | 503 => 14,
        _ => 2,
    }
}

/// A refusal of a gRPC call as gRPC clients read it: a Trailers-Only response — status
/// 200, `Content-Type: application/grpc`, `grpc-status` and `grpc-message` (the
/// refusal's code) in the one header block, no body. Its other headers (`RateLimit-*`,
/// `Retry-After`, `WWW-Authenticate`) stay.
pub fn grpc_status(resp: Response<GatewayBody>, refused: Refused) -> Response<GatewayBody> {
    let (mut parts, _) = resp.into_parts();
    let code = grpc_code(parts.status);
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONNECTION);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts.headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    parts.headers.insert("grpc-message", HeaderValue::from_static(refused.code));
    Response::from_parts(parts, GatewayBody::empty())
}
