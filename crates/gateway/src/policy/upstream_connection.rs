//! The `upstream_connection` policy (as APIcast's): timeouts towards the product's
//! backends, in seconds (fractions allowed).
//!
//! ```yaml
//! - name: upstream_connection
//!   configuration: { connect_timeout: 2, send_timeout: 10, read_timeout: 30 }
//! ```
//!
//! - `connect_timeout`: the TCP connection and TLS handshake to a backend (replaces the
//!   backend's `connect_timeout_ms` for this product); applied when the configuration
//!   is compiled, so it holds for pooled connections and WebSocket upgrades alike.
//! - `send_timeout`: the whole request, body included, must have been sent by then.
//! - `read_timeout`: the backend must answer (its response head) within it once the
//!   request is sent, and then send each part of its body within it of the last.
//!
//! Over a timeout the client gets 504 `upstream_timeout` (or, once the response has
//! begun, sees it end abnormally).

use super::{Context, Decision, Flow, Policy, PolicyError};
use http::request;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// The `upstream_connection` policy's configuration: timeouts towards the product's
/// backends, in seconds (fractions allowed, at most 86400).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds to connect (TCP and TLS).
    #[serde(default)]
    pub connect_timeout: Option<f64>,
    /// Seconds to send the whole request.
    #[serde(default)]
    pub send_timeout: Option<f64>,
    /// Seconds for the response head, and between parts of the response body.
    #[serde(default)]
    pub read_timeout: Option<f64>,
}

fn seconds(v: Option<f64>, field: &str) -> Result<Option<Duration>, PolicyError> {
    v.map(|s| {
        if s.is_finite() && s > 0.0 && s <= 86_400.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(PolicyError::new(field.to_string(), format!("{s} is not a number of seconds between 0 and 86400")))
        }
    })
    .transpose()
}

/// The connect timeout of a chain entry's configuration, for the compiler.
pub fn connect_timeout(configuration: &serde_json::Value) -> Option<Duration> {
    super::parse::<Config>(configuration).ok().and_then(|c| seconds(c.connect_timeout, "").ok().flatten())
}

/// The `upstream_connection` policy: decides the send and read timeouts of each request.
pub struct UpstreamConnectionPolicy {
    send: Option<Duration>,
    read: Option<Duration>,
}

impl UpstreamConnectionPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        seconds(c.connect_timeout, "connect_timeout")?;
        let (send, read) = (seconds(c.send_timeout, "send_timeout")?, seconds(c.read_timeout, "read_timeout")?);
        if c.connect_timeout.is_none() && send.is_none() && read.is_none() {
            return Err(PolicyError::new("connect_timeout", "give connect_timeout, send_timeout and/or read_timeout"));
        }
        Ok(UpstreamConnectionPolicy { send, read })
    }
}

impl Policy for UpstreamConnectionPolicy {
    fn name(&self) -> &'static str {
        "upstream_connection"
    }

    fn access(&self, _req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        ctx.decide(Decision::Timeouts { send: self.send, read: self.read });
        Flow::Continue
    }
}
