//! The one place where gateway failures become HTTP responses. Each failure knows its
//! status, a stable machine-readable code and which side caused it; internal detail is
//! logged, never sent to the client.

use crate::body::GatewayBody;
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
            side => {
                // One line a second per code and detail (which names the backend and the
                // cause): a backend that is down fails every request, yet five backends
                // with five faults still get five lines. At most 128 details per code are
                // told apart; past that, a code's other details share one line a second.
                // (Failures only: the lookup borrows the detail, a new one is copied once.)
                type Limits = std::collections::HashMap<String, crate::logs::LogLimit>;
                static LIMITS: [std::sync::Mutex<Option<Limits>>; 8] = [const { std::sync::Mutex::new(None) }; 8];
                static SHARED: [crate::logs::LogLimit; 8] = [const { crate::logs::LogLimit::new() }; 8];
                let kind = match self {
                    GatewayError::UpstreamUnavailable(_) => 0,
                    GatewayError::UpstreamTls(_) => 1,
                    GatewayError::UpstreamTimeout(_) => 2,
                    GatewayError::UpstreamFailed(_) => 3,
                    GatewayError::UpstreamInvalidResponse(_) => 4,
                    GatewayError::ResponseTooLarge => 5,
                    GatewayError::CountersUnavailable(_) => 6,
                    _ => 7,
                };
                let detail = self.detail().unwrap_or("");
                let admitted = {
                    let mut guard = LIMITS[kind].lock().unwrap_or_else(|e| e.into_inner());
                    let map = guard.get_or_insert_with(Default::default);
                    if let Some(limit) = map.get(detail) {
                        limit.admit_now()
                    } else if map.len() < 128 {
                        map.entry(detail.to_string()).or_default().admit_now()
                    } else {
                        SHARED[kind].admit_now()
                    }
                };
                if let Some(suppressed) = admitted {
                    tracing::warn!(code = self.code(), ?side, detail, suppressed, "request failed");
                }
            }
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
