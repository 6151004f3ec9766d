//! The one place where gateway failures become HTTP responses. Each failure knows its
//! status, a stable machine-readable code and which side caused it; internal detail is
//! logged, never sent to the client.

use crate::upstream::body::GatewayBody;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Who caused a failure: a label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The backend failed or could not be reached.
    Upstream,
    /// Tollgate itself (or a store it depends on) failed.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no product is published on this host")]
    UnknownHost,
    /// A request path that can be read in two ways (docs/gateway.md#the-request-path).
    #[error("{0}")]
    BadPath(crate::path::PathError),
    #[error("no backend serves this path")]
    NoBackend,
    /// CONNECT other than a WebSocket's extended CONNECT: a gateway opens no tunnels.
    #[error("CONNECT is not served here")]
    NotImplemented,
    #[error("WebSocket is not enabled for this product: add the `websocket` policy to its policy chain")]
    WebSocketDisabled,
    #[error("invalid WebSocket upgrade: {0}")]
    BadUpgrade(&'static str),
    #[error("the application has as many WebSocket connections open as its plan allows (max_connections)")]
    TooManyConnections,
    #[error("the backend could not be reached")]
    UpstreamUnavailable(String),
    /// The backend was reached but its TLS handshake failed (an untrusted, expired or
    /// misnamed certificate…); the detail says which backend, what failed and the fix.
    #[error("the backend's TLS certificate or handshake was not accepted")]
    UpstreamTls(String),
    #[error("the backend did not answer in time")]
    UpstreamTimeout(String),
    #[error("the backend failed")]
    UpstreamFailed(String),
    /// The backend's response could not be read as HTTP (a malformed head, or one over
    /// the response-head limits); the detail says which backend and what.
    #[error("the backend's response was not valid HTTP or was over the gateway's limits")]
    UpstreamInvalidResponse(String),
    #[error("usage counters are unavailable")]
    CountersUnavailable(String),
    #[error("the request body is larger than this API accepts")]
    RequestTooLarge,
    /// The client sent its request body below the minimum data rate (`--min-data-rate`).
    #[error("the request body came too slowly")]
    RequestTimeout,
    /// The client's request body could not be read to its end (bad chunked framing, a
    /// reset stream, a connection that closed early); the detail says how.
    #[error("the request body could not be read")]
    BadRequestBody(String),
    #[error("the backend's response is larger than this API allows")]
    ResponseTooLarge,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UnknownHost | GatewayError::NoBackend => StatusCode::NOT_FOUND,
            GatewayError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            GatewayError::BadRequest(_)
            | GatewayError::BadPath(_)
            | GatewayError::WebSocketDisabled
            | GatewayError::BadUpgrade(_) => StatusCode::BAD_REQUEST,
            GatewayError::UpstreamUnavailable(_)
            | GatewayError::UpstreamTls(_)
            | GatewayError::UpstreamFailed(_)
            | GatewayError::UpstreamInvalidResponse(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::CountersUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::BadRequestBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::ResponseTooLarge => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::UnknownHost => "unknown_host",
            GatewayError::BadPath(_) => "bad_path",
            GatewayError::NoBackend => "no_backend",
            GatewayError::NotImplemented => "not_implemented",
            GatewayError::WebSocketDisabled => "websocket_disabled",
            GatewayError::BadUpgrade(_) => "bad_upgrade",
            GatewayError::TooManyConnections => "too_many_connections",
            GatewayError::UpstreamUnavailable(_) => "upstream_unavailable",
            GatewayError::UpstreamTls(_) => "upstream_tls",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::UpstreamFailed(_) => "upstream_failed",
            GatewayError::UpstreamInvalidResponse(_) => "upstream_invalid_response",
            GatewayError::CountersUnavailable(_) => "counters_unavailable",
            GatewayError::RequestTooLarge => "request_too_large",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::BadRequestBody(_) => "bad_request_body",
            GatewayError::ResponseTooLarge => "response_too_large",
        }
    }

    pub fn side(&self) -> Side {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::BadPath(_)
            | GatewayError::UnknownHost
            | GatewayError::NoBackend
            | GatewayError::NotImplemented
            | GatewayError::WebSocketDisabled
            | GatewayError::BadUpgrade(_)
            | GatewayError::TooManyConnections
            | GatewayError::RequestTooLarge
            | GatewayError::RequestTimeout
            | GatewayError::BadRequestBody(_) => Side::Downstream,
            GatewayError::UpstreamUnavailable(_)
            | GatewayError::UpstreamTls(_)
            | GatewayError::UpstreamTimeout(_)
            | GatewayError::UpstreamFailed(_)
            | GatewayError::UpstreamInvalidResponse(_)
            | GatewayError::ResponseTooLarge => Side::Upstream,
            GatewayError::CountersUnavailable(_) => Side::Internal,
        }
    }

    /// Detail for the log line; never for the client.
    pub fn detail(&self) -> Option<&str> {
        match self {
            GatewayError::UpstreamUnavailable(d)
            | GatewayError::UpstreamTls(d)
            | GatewayError::UpstreamTimeout(d)
            | GatewayError::UpstreamFailed(d)
            | GatewayError::UpstreamInvalidResponse(d)
            | GatewayError::BadRequestBody(d)
            | GatewayError::CountersUnavailable(d) => Some(d),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<GatewayBody> {
        match self.side() {
            Side::Downstream => {
                tracing::debug!(code = self.code(), detail = self.detail().unwrap_or(""), "request refused")
            }
            side => failure_logs::record(self.code(), side, self.detail().unwrap_or("")),
        }
        let mut resp = ErrorTemplate::json(self.status(), self.code(), &self.to_string()).respond();
        if matches!(self, GatewayError::BadUpgrade(_)) {
            resp.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        // A request the gateway could not frame or read one way (two Hosts, a body on an
        // upgrade…) ends its connection: what follows on it cannot be trusted either.
        if matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::BadUpgrade(_)
                | GatewayError::RequestTimeout
                | GatewayError::BadRequestBody(_)
        ) {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

pub fn local_response(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, content_type);
    resp
}

/// A prepared error response (a product's own, or the default), cheap to clone.
#[derive(Debug, Clone)]
pub struct ErrorTemplate {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

impl ErrorTemplate {
    /// `{"error":{"code":…,"message":…}}` with the given status.
    pub fn json(status: StatusCode, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
        ErrorTemplate { status, content_type: HeaderValue::from_static("application/json"), body: body.into() }
    }

    pub fn respond(&self) -> Response<GatewayBody> {
        local_response(self.status, self.content_type.clone(), self.body.clone())
    }
}

/// The warnings of failed requests (the backend's fault, or the gateway's), kept from
/// flooding the log. One line a second per code and detail (which names the backend and
/// the cause): a backend that is down fails every request, yet five backends with five
/// faults still get five lines. At most 128 details per code are told apart; past that,
/// a code's other details share one line a second. The lines left out are counted: the
/// next line of the same kind says how many (`suppressed`), and when no further failure
/// comes, a background thread writes the count within about a second, so a burst is
/// never under-reported in the log.
mod failure_logs {
    use super::Side;
    use crate::logs::LogLimit;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Details told apart per code.
    const MAX_DETAILS: usize = 128;

    #[derive(Default)]
    struct Failures {
        by_detail: HashMap<String, (LogLimit, Side)>,
        /// Details past [`MAX_DETAILS`].
        others: LogLimit,
    }

    /// By code (failures are few kinds; a short list beats a map).
    static FAILURES: Mutex<Vec<(&'static str, Failures)>> = Mutex::new(Vec::new());

    /// Logs one failed request, or counts it as left out.
    pub(super) fn record(code: &'static str, side: Side, detail: &str) {
        let admitted = {
            let mut all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
            let i = match all.iter().position(|(c, _)| *c == code) {
                Some(i) => i,
                None => {
                    all.push((code, Failures::default()));
                    all.len() - 1
                }
            };
            let failures = &mut all[i].1;
            // The lookup borrows the detail; a new one is copied once.
            if let Some((limit, _)) = failures.by_detail.get(detail) {
                limit.admit_now()
            } else if failures.by_detail.len() < MAX_DETAILS {
                failures.by_detail.entry(detail.to_string()).or_insert_with(|| (LogLimit::new(), side)).0.admit_now()
            } else {
                failures.others.admit_now()
            }
        };
        match admitted {
            Some(suppressed) => tracing::warn!(code, ?side, detail, suppressed, "request failed"),
            None => start_flusher(),
        }
    }

    /// Starts, once, the thread that writes the counts of lines left out when no later
    /// line of their kind came to carry them.
    fn start_flusher() {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let spawned = std::thread::Builder::new().name("tollgate-log-counts".into()).spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    flush();
                }
            });
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "could not start the thread that reports left-out log lines");
            }
        });
    }

    /// Writes a line for every kind with lines left out in an earlier second.
    fn flush() {
        let all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
        for (code, failures) in all.iter() {
            for (detail, (limit, side)) in &failures.by_detail {
                if let Some(suppressed) = limit.take_overdue_now() {
                    tracing::warn!(code, ?side, detail, suppressed, "request failed (repeats, counted)");
                }
            }
            if let Some(suppressed) = failures.others.take_overdue_now() {
                tracing::warn!(code, detail = "(other details)", suppressed, "request failed (repeats, counted)");
            }
        }
    }
}
