//! The `websocket` policy: its presence in a product's chain allows WebSocket upgrades.
//! Without it, an upgrade request is refused with 400 before any other work.

use super::Policy;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {}

pub struct WebSocketPolicy;

impl WebSocketPolicy {
    pub(super) fn new(_config: Config) -> Self {
        WebSocketPolicy
    }
}

impl Policy for WebSocketPolicy {
    fn name(&self) -> &'static str {
        "websocket"
    }
}
