//! The `payload_limits` policy: request and response body sizes, enforced as the bytes
//! flow — nothing is buffered to measure it.
//!
//! ```yaml
//! - name: payload_limits
//!   configuration:
//!     request: 1048576       # bytes; larger → 413 request_too_large
//!     response: 10485760     # bytes; larger → 502 response_too_large
//! ```
//!
//! A request whose `Content-Length` is over the limit is refused at once (413, before
//! the backend is called); one without a length (chunked) is streamed to the backend
//! and cut off when it goes over, and the client gets 413. A response whose
//! `Content-Length` is over the limit is replaced by 502; a streamed one is cut off
//! where it goes over (the client sees the response end abnormally: the status line
//! had already been sent). WebSocket messages are limited by the `websocket` policy's
//! `max_message_bytes` instead.

use super::{Context, Decision, Flow, Policy, PolicyError};
use crate::refusal::Refusal;
use http::{header, request};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// The largest request body, in bytes.
    #[serde(default)]
    request: Option<u64>,
    /// The largest response body, in bytes.
    #[serde(default)]
    response: Option<u64>,
}

pub struct PayloadLimitsPolicy {
    request: Option<u64>,
    response: Option<u64>,
}

impl PayloadLimitsPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        if c.request.is_none() && c.response.is_none() {
            return Err(PolicyError::new("request", "give request and/or response (bytes)"));
        }
        Ok(PayloadLimitsPolicy { request: c.request, response: c.response })
    }
}

impl Policy for PayloadLimitsPolicy {
    fn name(&self) -> &'static str {
        "payload_limits"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        if let Some(max) = self.request {
            let declared =
                req.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Flow::Refuse(Refusal::RequestTooLarge);
            }
        }
        // The tightest of several policies wins (the plan's rule).
        ctx.decide(Decision::PayloadLimits { request: self.request, response: self.response });
        Flow::Continue
    }
}
