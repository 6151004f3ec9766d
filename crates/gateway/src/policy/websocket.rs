//! The `websocket` policy: its presence in a product's chain allows WebSocket upgrades
//! (without it an upgrade is refused with 400 before any other work), and its
//! configuration governs the connection after the upgrade:
//!
//! ```yaml
//! - name: websocket
//!   configuration:
//!     max_message_bytes: 1048576   # close 1009 beyond it
//!     meter_messages: { metric: messages, direction: client_to_server, delta: 1 }
//!     meter_bytes: { metric: bytes, direction: both }
//!     on_limit_exceeded: close     # close 1008 "usage limits exceeded" (default), or drop
//!     idle_timeout: 300            # seconds without a frame → close 1001
//!     ping_interval: 30            # seconds between the gateway's pings to both sides
//!     pong_timeout: 10             # seconds a side may stay silent after a ping → close 1001
//!     max_connection_duration: 86400
//! ```

use super::{Policy, PolicyError};
use serde::Deserialize;

/// Which messages a meter counts: `client_to_server`, `server_to_client` or `both`
/// (default).
// No doc comment per variant: one would turn this enum's JSON Schema from `enum` into
// `oneOf`, which the console's policy forms cannot show as a select.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    #[default]
    Both,
}

impl Direction {
    /// Whether a message is counted, given whether the client (`from_client`) or the backend
    /// sent it.
    pub fn includes(self, from_client: bool) -> bool {
        match self {
            Direction::Both => true,
            Direction::ClientToServer => from_client,
            Direction::ServerToClient => !from_client,
        }
    }
}

/// Counts WebSocket messages on a metric.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterMessages {
    /// Metric or method to count on.
    pub metric: String,
    /// Which messages count (default `both`).
    #[serde(default)]
    pub direction: Direction,
    /// How much each message adds, at least 1 (default 1).
    #[serde(default = "one")]
    pub delta: u64,
}

fn one() -> u64 {
    1
}

/// Counts WebSocket payload bytes, as on the wire, on a metric.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterBytes {
    /// Metric or method to count on.
    pub metric: String,
    /// Which messages' bytes count (default `both`).
    #[serde(default)]
    pub direction: Direction,
}

/// What a metered message beyond a usage limit does: `close` (default) closes the
/// connection with 1008; `drop` drops the message when its first frame is over the
/// limit (a later frame over it still closes).
// No doc comment per variant: one would turn this enum's JSON Schema from `enum` into
// `oneOf`, which the console's policy forms cannot show as a select.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnLimitExceeded {
    #[default]
    Close,
    Drop,
}

/// The `websocket` policy's configuration.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Largest message in payload bytes as on the wire (compressed where
    /// permessage-deflate is negotiated); a bigger one closes the connection with 1009.
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// Count each message on a metric, checked against the plan's limits like a request.
    #[serde(default)]
    pub meter_messages: Option<MeterMessages>,
    /// Count payload bytes (as on the wire) on a metric, checked like messages.
    #[serde(default)]
    pub meter_bytes: Option<MeterBytes>,
    /// What a message beyond a usage limit does (default `close`).
    #[serde(default)]
    pub on_limit_exceeded: OnLimitExceeded,
    /// Seconds without a frame from either side after which the connection closes (1001).
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// Seconds between pings the gateway sends both sides (their pongs are activity).
    #[serde(default)]
    pub ping_interval: Option<u64>,
    /// Seconds after each ping within which each side must send something (its pong,
    /// or any frame); a silent side is dead: the connection closes with 1001 and its
    /// holds are released. At most `ping_interval`, which it needs; defaults to it.
    #[serde(default)]
    pub pong_timeout: Option<u64>,
    /// Seconds after which a connection closes (1001), however busy.
    #[serde(default)]
    pub max_connection_duration: Option<u64>,
}

/// The `websocket` policy: it allows upgrades, and its settings govern the connections
/// ([`Policy::websocket_settings`]).
pub struct WebSocketPolicy {
    config: Config,
}

impl WebSocketPolicy {
    pub(super) fn new(config: Config) -> Result<Self, PolicyError> {
        if config.max_message_bytes == Some(0) {
            return Err(PolicyError::new("max_message_bytes", "must be at least 1"));
        }
        for (key, v) in [
            ("idle_timeout", config.idle_timeout),
            ("ping_interval", config.ping_interval),
            ("pong_timeout", config.pong_timeout),
            ("max_connection_duration", config.max_connection_duration),
        ] {
            if v == Some(0) {
                return Err(PolicyError::new(key, "must be at least 1 (seconds)"));
            }
        }
        if let (Some(ping), Some(idle)) = (config.ping_interval, config.idle_timeout)
            && ping >= idle
        {
            return Err(PolicyError::new("ping_interval", "must be shorter than idle_timeout, or live peers time out"));
        }
        match (config.pong_timeout, config.ping_interval) {
            (Some(_), None) => {
                return Err(PolicyError::new("pong_timeout", "needs ping_interval: pongs answer the gateway's pings"));
            }
            (Some(pong), Some(ping)) if pong > ping => {
                return Err(PolicyError::new("pong_timeout", format!("must be at most ping_interval ({ping})")));
            }
            _ => {}
        }
        if config.meter_messages.as_ref().is_some_and(|m| m.delta == 0) {
            return Err(PolicyError::new("meter_messages.delta", "must be at least 1"));
        }
        Ok(WebSocketPolicy { config })
    }
}

impl Policy for WebSocketPolicy {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn websocket_settings(&self) -> Option<&Config> {
        Some(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(configuration: serde_json::Value) -> Option<PolicyError> {
        let config: Config = serde_json::from_value(configuration).expect("shape");
        WebSocketPolicy::new(config).err()
    }

    #[test]
    fn timers_that_cannot_work_together_name_the_field_and_the_fix() {
        let field = |c| refused(c).map(|e| e.field);
        assert_eq!(field(serde_json::json!({ "pong_timeout": 5 })).as_deref(), Some("pong_timeout"));
        assert_eq!(
            field(serde_json::json!({ "ping_interval": 10, "pong_timeout": 11 })).as_deref(),
            Some("pong_timeout")
        );
        assert_eq!(
            field(serde_json::json!({ "ping_interval": 10, "pong_timeout": 0 })).as_deref(),
            Some("pong_timeout")
        );
        assert_eq!(
            field(serde_json::json!({ "ping_interval": 30, "idle_timeout": 30 })).as_deref(),
            Some("ping_interval")
        );
        assert_eq!(refused(serde_json::json!({ "ping_interval": 10, "pong_timeout": 10 })), None);
        assert_eq!(refused(serde_json::json!({ "ping_interval": 10 })), None);
    }
}
