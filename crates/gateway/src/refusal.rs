//! Every way a request can be refused or fail, as one type: [`Refusal`] —
//! authentication, mapping, limits, edge limits, policy denials, the client's faults,
//! upstream failures, timeouts, payload limits, WebSocket refusals. Each knows its
//! status, a stable machine-readable code and which side caused it; internal detail is
//! for the log, never for the client. What a refusal becomes (the response, the log
//! line, the metric) is decided in one place, [`crate::rescue`]: this module builds no
//! response, so the upstream subsystem and the policies can name a refusal without
//! depending on how it is answered.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use std::sync::Arc;
use tollgate_counters::LimitStatus;

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

/// Why a request was refused or failed (see the module's documentation).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 400 `bad_request`: a request that cannot be served as sent; says what is wrong.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 404 `unknown_host`: no product is published on the request's host here.
    #[error("no product is published on this host")]
    UnknownHost,
    /// A request path that can be read in two ways (docs/gateway.md#the-request-path).
    #[error("{0}")]
    BadPath(crate::path::PathError),
    /// 404 `no_backend`: no backend usage matches the path.
    #[error("no backend serves this path")]
    NoBackend,
    /// CONNECT other than a WebSocket's extended CONNECT: a gateway opens no tunnels.
    #[error("CONNECT is not served here")]
    NotImplemented,
    /// 400 `websocket_disabled`: an upgrade to a product without the `websocket` policy.
    #[error("WebSocket is not enabled for this product: add the `websocket` policy to its policy chain")]
    WebSocketDisabled,
    /// 400 `bad_upgrade`: an invalid WebSocket upgrade request; says what is wrong.
    #[error("invalid WebSocket upgrade: {0}")]
    BadUpgrade(&'static str),
    /// 429 `too_many_connections`: the application has its plan's `max_connections`
    /// WebSockets open.
    #[error("the application has as many WebSocket connections open as its plan allows (max_connections)")]
    TooManyConnections,
    /// 502 `upstream_unavailable`: the backend refused the connection or could not be
    /// reached; the detail is for the log.
    #[error("the backend could not be reached")]
    UpstreamUnavailable(String),
    /// 508 `loop_detected`: the request already passed this gateway (its own `Via`
    /// entry came back): a backend or endpoint that is the gateway itself.
    #[error("the request came back to this gateway (a backend that points at the gateway itself)")]
    LoopDetected,
    /// 421 `misdirected_request`: the TLS connection was opened for another product's
    /// name (SNI) than the request's `Host`; the client should open a new connection.
    #[error("this connection was opened for another host; open a new one")]
    Misdirected,
    /// 403 `client_certificate_required`: the product requires a client certificate
    /// (`tls.client_certificates: required`) and the connection presented none.
    #[error("this API requires a client certificate")]
    ClientCertificateRequired,
    /// 403 `client_certificate_refused`: the client's certificate was not issued by the
    /// product's authorities (`tls.client_ca_file`).
    #[error("the client certificate is not one this API accepts")]
    ClientCertificateRefused,
    /// 503 `upstream_overloaded`: every endpoint of the backend is at its
    /// `circuit_breaker` caps; refused at once rather than queued. The detail is for the log.
    #[error("the backend is at capacity")]
    UpstreamOverloaded(String),
    /// 503 `no_healthy_endpoint`: every endpoint of the backend drains, or none is
    /// healthy and the backend fails closed (`when_all_unhealthy: refuse`).
    #[error("no instance of the backend can take the request")]
    NoHealthyEndpoint(String),
    /// The backend was reached but its TLS handshake failed (an untrusted, expired or
    /// misnamed certificate…); the detail says which backend, what failed and the fix.
    #[error("the backend's TLS certificate or handshake was not accepted")]
    UpstreamTls(String),
    /// 504 `upstream_timeout`: the backend did not accept the connection, take the request
    /// or answer in time; the detail is for the log.
    #[error("the backend did not answer in time")]
    UpstreamTimeout(String),
    /// 502 `upstream_failed`: the backend broke the exchange; the detail is for the log.
    #[error("the backend failed")]
    UpstreamFailed(String),
    /// The backend's response could not be read as HTTP (a malformed head, or one over
    /// the response-head limits); the detail says which backend and what.
    #[error("the backend's response was not valid HTTP or was over the gateway's limits")]
    UpstreamInvalidResponse(String),
    /// 503 `counters_unavailable`: the usage counters did not answer and their failure
    /// mode refuses; the detail is for the log.
    #[error("usage counters are unavailable")]
    CountersUnavailable(String),
    /// 413 `request_too_large`: a request body over `payload_limits`' `request`.
    #[error("the request body is larger than this API accepts")]
    RequestTooLarge,
    /// The client sent its request body below the minimum data rate (`--min-data-rate`).
    #[error("the request body came too slowly")]
    RequestTimeout,
    /// The client's request body could not be read to its end (bad chunked framing, a
    /// reset stream, a connection that closed early); the detail says how.
    #[error("the request body could not be read")]
    BadRequestBody(String),
    /// 502 `response_too_large`: a backend's response body over `payload_limits`'
    /// `response`.
    #[error("the backend's response is larger than this API allows")]
    ResponseTooLarge,
    /// An HTTP/2 request with more header fields than `--max-header-count` (HTTP/1's
    /// parser answers 431 itself).
    #[error("the request has more header fields than this gateway accepts")]
    TooManyHeaderFields,
    /// No credentials (3scale's "Authentication parameters missing"): the product's
    /// `auth_missing` answer (401 by default).
    #[error("authentication parameters missing")]
    AuthenticationMissing(Arc<ErrorTemplate>),
    /// Credentials of no application, or of a suspended one (3scale's "Authentication
    /// failed"): the product's `auth_failed` answer (403 by default).
    #[error("authentication failed")]
    AuthenticationFailed(Arc<ErrorTemplate>),
    /// No mapping rule matched the request (3scale's "No Mapping Rule matched"): the
    /// product's `no_match` answer (404 by default).
    #[error("no mapping rule matched")]
    NoMappingRule(Arc<ErrorTemplate>),
    /// The request would take a metric past its plan's usage limit (nothing was
    /// counted): the product's `limits_exceeded` answer (429 by default) with
    /// `RateLimit-*` and `Retry-After` headers from the tightest limit's `status`, as
    /// of `now` (Unix seconds).
    #[error("usage limits are exceeded")]
    LimitsExceeded {
        /// The product's `limits_exceeded` answer.
        answer: Arc<ErrorTemplate>,
        /// The limit that would have been exceeded.
        status: LimitStatus,
        /// Unix seconds of the decision, for the headers' seconds until reset.
        now: i64,
    },
    /// A `rate_limit` policy's limiter is full: its answer (429 by default), with
    /// `Retry-After` in seconds when a time is known.
    #[error("a rate_limit policy's limit is reached")]
    EdgeLimited {
        /// The policy's refusal answer.
        answer: Arc<ErrorTemplate>,
        /// Seconds until a retry could pass, for `Retry-After`.
        retry_after_secs: Option<u64>,
    },
    /// A policy refused the request with its configured answer: `ip_check`, a `jwt`
    /// claim check, `cors` for an origin it does not allow, `maintenance_mode`. `code`
    /// names the refusal in logs and metrics.
    #[error("refused by the `{policy}` policy")]
    Denied {
        /// The refusing policy's name.
        policy: &'static str,
        /// The refusal's code, e.g. `ip_denied`.
        code: &'static str,
        /// The policy's configured answer.
        answer: Arc<ErrorTemplate>,
    },
    /// The `jwt` policy refused the request's token: 401 when it is missing or invalid
    /// (with `WWW-Authenticate: Bearer`, RFC 6750 §3), 403 when it names no application.
    #[error("{message}")]
    TokenRefused {
        /// 401 or 403.
        status: StatusCode,
        /// The refusal's code, e.g. `jwt_invalid`.
        code: &'static str,
        /// What the client is told.
        message: &'static str,
    },
}

impl Refusal {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownHost | Refusal::NoBackend => StatusCode::NOT_FOUND,
            Refusal::ClientCertificateRequired | Refusal::ClientCertificateRefused => StatusCode::FORBIDDEN,
            Refusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Refusal::LoopDetected => StatusCode::LOOP_DETECTED,
            Refusal::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Refusal::BadRequest(_) | Refusal::BadPath(_) | Refusal::WebSocketDisabled | Refusal::BadUpgrade(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::UpstreamUnavailable(_)
            | Refusal::UpstreamTls(_)
            | Refusal::UpstreamFailed(_)
            | Refusal::UpstreamInvalidResponse(_) => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Refusal::CountersUnavailable(_) | Refusal::UpstreamOverloaded(_) | Refusal::NoHealthyEndpoint(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::BadRequestBody(_) => StatusCode::BAD_REQUEST,
            Refusal::ResponseTooLarge => StatusCode::BAD_GATEWAY,
            Refusal::TooManyHeaderFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::AuthenticationMissing(a)
            | Refusal::AuthenticationFailed(a)
            | Refusal::NoMappingRule(a)
            | Refusal::LimitsExceeded { answer: a, .. }
            | Refusal::EdgeLimited { answer: a, .. }
            | Refusal::Denied { answer: a, .. } => a.status,
            Refusal::TokenRefused { status, .. } => *status,
        }
    }

    /// A stable, machine-readable name: the JSON body's `error.code` and the label of
    /// logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::UnknownHost => "unknown_host",
            Refusal::BadPath(_) => "bad_path",
            Refusal::NoBackend => "no_backend",
            Refusal::NotImplemented => "not_implemented",
            Refusal::WebSocketDisabled => "websocket_disabled",
            Refusal::BadUpgrade(_) => "bad_upgrade",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::UpstreamUnavailable(_) => "upstream_unavailable",
            Refusal::ClientCertificateRequired => "client_certificate_required",
            Refusal::Misdirected => "misdirected_request",
            Refusal::LoopDetected => "loop_detected",
            Refusal::ClientCertificateRefused => "client_certificate_refused",
            Refusal::UpstreamOverloaded(_) => "upstream_overloaded",
            Refusal::NoHealthyEndpoint(_) => "no_healthy_endpoint",
            Refusal::UpstreamTls(_) => "upstream_tls",
            Refusal::UpstreamTimeout(_) => "upstream_timeout",
            Refusal::UpstreamFailed(_) => "upstream_failed",
            Refusal::UpstreamInvalidResponse(_) => "upstream_invalid_response",
            Refusal::CountersUnavailable(_) => "counters_unavailable",
            Refusal::RequestTooLarge => "request_too_large",
            Refusal::RequestTimeout => "request_timeout",
            Refusal::BadRequestBody(_) => "bad_request_body",
            Refusal::ResponseTooLarge => "response_too_large",
            Refusal::TooManyHeaderFields => "too_many_header_fields",
            Refusal::AuthenticationMissing(_) => "auth_missing",
            Refusal::AuthenticationFailed(_) => "auth_failed",
            Refusal::NoMappingRule(_) => "no_match",
            Refusal::LimitsExceeded { .. } => "limits_exceeded",
            Refusal::EdgeLimited { .. } => "rate_limited",
            Refusal::Denied { code, .. } | Refusal::TokenRefused { code, .. } => code,
        }
    }

    /// Whether a limit refused it: a plan's usage limit or `max_connections`, or a
    /// `rate_limit` policy's limiter (`tollgate_limits_exceeded_total`).
    pub fn is_limit(&self) -> bool {
        matches!(self, Refusal::LimitsExceeded { .. } | Refusal::EdgeLimited { .. } | Refusal::TooManyConnections)
    }

    /// Who caused it.
    pub fn side(&self) -> Side {
        match self {
            Refusal::BadRequest(_)
            | Refusal::BadPath(_)
            | Refusal::UnknownHost
            | Refusal::NoBackend
            | Refusal::NotImplemented
            | Refusal::ClientCertificateRequired
            | Refusal::ClientCertificateRefused
            | Refusal::Misdirected
            | Refusal::WebSocketDisabled
            | Refusal::BadUpgrade(_)
            | Refusal::TooManyConnections
            | Refusal::RequestTooLarge
            | Refusal::RequestTimeout
            | Refusal::BadRequestBody(_)
            | Refusal::TooManyHeaderFields
            | Refusal::AuthenticationMissing(_)
            | Refusal::AuthenticationFailed(_)
            | Refusal::NoMappingRule(_)
            | Refusal::LimitsExceeded { .. }
            | Refusal::EdgeLimited { .. }
            | Refusal::Denied { .. }
            | Refusal::TokenRefused { .. } => Side::Downstream,
            Refusal::UpstreamUnavailable(_)
            | Refusal::UpstreamTls(_)
            | Refusal::UpstreamTimeout(_)
            | Refusal::UpstreamFailed(_)
            | Refusal::UpstreamInvalidResponse(_)
            | Refusal::UpstreamOverloaded(_)
            | Refusal::NoHealthyEndpoint(_)
            | Refusal::ResponseTooLarge
            | Refusal::LoopDetected => Side::Upstream,
            Refusal::CountersUnavailable(_) => Side::Internal,
        }
    }

    /// Detail for the log line; never for the client.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Refusal::UpstreamUnavailable(d)
            | Refusal::UpstreamTls(d)
            | Refusal::UpstreamTimeout(d)
            | Refusal::UpstreamFailed(d)
            | Refusal::UpstreamInvalidResponse(d)
            | Refusal::UpstreamOverloaded(d)
            | Refusal::NoHealthyEndpoint(d)
            | Refusal::BadRequestBody(d)
            | Refusal::CountersUnavailable(d) => Some(d),
            _ => None,
        }
    }
}

/// An answer prepared from the configuration: a product's error message (3scale's
/// `error_auth_missing`, `error_auth_failed`, `error_no_match`,
/// `error_limits_exceeded`) or a policy's refusal — status, `Content-Type` and body.
/// Cheap to clone (the body is reference-counted). Only [`crate::rescue`] turns it
/// into a response.
#[derive(Debug, Clone)]
pub struct ErrorTemplate {
    /// The response status.
    pub status: StatusCode,
    /// The `Content-Type` of the body.
    pub content_type: HeaderValue,
    /// The body, sent as it is.
    pub body: Bytes,
}

impl ErrorTemplate {
    /// `{"error":{"code":…,"message":…}}` with the given status.
    pub fn json(status: StatusCode, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
        ErrorTemplate { status, content_type: HeaderValue::from_static("application/json"), body: body.into() }
    }

    /// [`ErrorTemplate::json`], shared (as refusals carry it).
    pub fn shared_json(status: StatusCode, code: &str, message: &str) -> Arc<Self> {
        Arc::new(Self::json(status, code, message))
    }
}
