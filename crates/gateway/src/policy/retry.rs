//! The `retry` policy: sends a request to the backend again when the connection fails
//! or the backend answers with a chosen status — only for requests that are safe to
//! repeat.
//!
//! ```yaml
//! - name: retry
//!   configuration:
//!     retries: 2                      # attempts after the first (at most 5)
//!     statuses: [502, 503, 504]       # default: connection failures only
//!     delay: 0.05                     # seconds between attempts (default 0)
//!     methods: [GET, HEAD, OPTIONS, PUT, DELETE]   # the default: idempotent methods
//! ```
//!
//! A request is retried only if its method is listed (by default the idempotent ones —
//! never POST or PATCH unless listed) and it has no body: a streamed body has been
//! consumed by the first attempt and cannot be sent again, and the gateway does not
//! buffer bodies to make that possible. Connection failures (refused, timed out) are
//! retried always; statuses only when listed. The last attempt's answer is the client's.

use super::{Context, Decision, Flow, Policy, PolicyError};
use http::{Method, StatusCode, header, request};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// Attempts after the first (1–5).
    retries: u8,
    /// Backend statuses that are retried (default: none; connection failures always are).
    #[serde(default)]
    statuses: Vec<u16>,
    /// Seconds between attempts (default 0).
    #[serde(default)]
    delay: f64,
    /// Methods that may be retried (default: GET, HEAD, OPTIONS, PUT, DELETE).
    #[serde(default)]
    methods: Vec<String>,
}

/// What the gateway needs to retry a request.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts after the first, 1 to 5.
    pub retries: u8,
    /// Backend statuses that are retried; connection failures always are.
    pub statuses: Vec<StatusCode>,
    /// Wait between attempts.
    pub delay: Duration,
}

/// The `retry` policy: decides a [`Retry`] for bodyless requests with a listed method.
pub struct RetryPolicy {
    retry: Retry,
    methods: Vec<Method>,
}

impl RetryPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        if !(1..=5).contains(&c.retries) {
            return Err(PolicyError::new("retries", format!("{} is not between 1 and 5", c.retries)));
        }
        let mut statuses = Vec::new();
        for (i, s) in c.statuses.iter().enumerate() {
            statuses.push(
                StatusCode::from_u16(*s)
                    .ok()
                    .filter(|s| s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS)
                    .ok_or_else(|| {
                        PolicyError::new(format!("statuses[{i}]"), format!("{s} is not a 5xx status (or 429)"))
                    })?,
            );
        }
        if !(c.delay.is_finite() && (0.0..=60.0).contains(&c.delay)) {
            return Err(PolicyError::new("delay", format!("{} is not between 0 and 60 seconds", c.delay)));
        }
        let methods = if c.methods.is_empty() {
            vec![Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE]
        } else {
            let mut m = Vec::new();
            for (i, name) in c.methods.iter().enumerate() {
                m.push(Method::from_bytes(name.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    PolicyError::new(format!("methods[{i}]"), format!("`{name}` is not an HTTP method"))
                })?);
            }
            m
        };
        Ok(RetryPolicy {
            retry: Retry { retries: c.retries, statuses, delay: Duration::from_secs_f64(c.delay) },
            methods,
        })
    }
}

/// Whether the request has no body to replay.
fn bodyless(req: &request::Parts) -> bool {
    let length = req.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    !req.headers.contains_key(header::TRANSFER_ENCODING) && length.is_none_or(|n| n == 0)
}

impl Policy for RetryPolicy {
    fn name(&self) -> &'static str {
        "retry"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        if !ctx.websocket && self.methods.contains(&req.method) && bodyless(req) {
            ctx.decide(Decision::Retry(self.retry.clone()));
        }
        Flow::Continue
    }
}
