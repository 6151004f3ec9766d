//! The `websocket` policy: its presence in a product's chain allows WebSocket upgrades
//! (without it an upgrade is refused with 400 before any other work), and its
//! configuration governs the connection after the upgrade:
//!
//! ```yaml
//! - name: websocket
//!   configuration:
//!     max_message_bytes: 1048576   # close 1009 beyond it
//! ```

use super::Policy;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// Largest message in payload bytes as on the wire (compressed where
    /// permessage-deflate is negotiated); a bigger one closes the connection with 1009.
    #[serde(default)]
    #[allow(dead_code)] // read by the snapshot from the raw configuration
    max_message_bytes: Option<u64>,
}

pub struct WebSocketPolicy;

impl WebSocketPolicy {
    pub(super) fn new(config: Config) -> Result<Self, (String, String)> {
        if config.max_message_bytes == Some(0) {
            return Err(("max_message_bytes".into(), "must be at least 1".into()));
        }
        Ok(WebSocketPolicy)
    }
}

impl Policy for WebSocketPolicy {
    fn name(&self) -> &'static str {
        "websocket"
    }
}
