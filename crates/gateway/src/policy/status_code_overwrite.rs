//! The `status_code_overwrite` policy (APIcast's `statuscode_overwrite`): changes the
//! status of responses before they reach the client — a backend's 500 shown as 503,
//! say — in the response phase, for every response of the product (the backend's and
//! the gateway's own, as APIcast's does).
//!
//! ```yaml
//! - name: status_code_overwrite
//!   configuration:
//!     http_statuses:
//!       - { upstream: 500, gateway: 503 }
//!       - { upstream: 201, gateway: 200 }
//! ```
//!
//! It is also the example of a policy that touches nothing but its own file and its
//! registration (docs/architecture.md).

use super::{Context, Policy, PolicyError};
use http::{StatusCode, request, response};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// Which status becomes which; the first entry for a status wins.
    http_statuses: Vec<Overwrite>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Overwrite {
    /// The status as it comes (from the backend, or the gateway's own refusal).
    #[schemars(range(min = 100, max = 599))]
    upstream: u16,
    /// The status the client gets instead.
    #[schemars(range(min = 100, max = 599))]
    gateway: u16,
}

pub struct StatusCodeOverwritePolicy {
    /// (from, to), in the configuration's order.
    map: Vec<(StatusCode, StatusCode)>,
}

impl StatusCodeOverwritePolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let status = |code: u16, at: String| {
            StatusCode::from_u16(code)
                .ok()
                .filter(|s| (100..=599).contains(&s.as_u16()))
                .ok_or_else(|| PolicyError::new(at, format!("{code} is not a status between 100 and 599")))
        };
        if c.http_statuses.is_empty() {
            return Err(PolicyError::new("http_statuses", "needs at least one { upstream, gateway } pair"));
        }
        let mut map = Vec::with_capacity(c.http_statuses.len());
        for (i, o) in c.http_statuses.iter().enumerate() {
            let from = status(o.upstream, format!("http_statuses[{i}].upstream"))?;
            let to = status(o.gateway, format!("http_statuses[{i}].gateway"))?;
            // A 101 carries the protocol switch itself; a status cannot become one.
            if to == StatusCode::SWITCHING_PROTOCOLS || from == StatusCode::SWITCHING_PROTOCOLS {
                return Err(PolicyError::new(
                    format!("http_statuses[{i}]"),
                    "101 (Switching Protocols) cannot be changed",
                ));
            }
            if !map.iter().any(|(f, _)| *f == from) {
                map.push((from, to));
            }
        }
        Ok(StatusCodeOverwritePolicy { map })
    }
}

impl Policy for StatusCodeOverwritePolicy {
    fn name(&self) -> &'static str {
        "status_code_overwrite"
    }

    fn response(&self, resp: &mut response::Parts, _req: &request::Parts, _ctx: &Context<'_>) {
        if let Some((_, to)) = self.map.iter().find(|(from, _)| *from == resp.status) {
            resp.status = *to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<StatusCodeOverwritePolicy, PolicyError> {
        StatusCodeOverwritePolicy::new(serde_json::from_value(json).expect("config"))
    }

    #[test]
    fn statuses_are_checked_and_the_first_entry_wins() {
        let p = config(serde_json::json!({ "http_statuses": [
            { "upstream": 500, "gateway": 503 },
            { "upstream": 500, "gateway": 502 },
        ]}))
        .expect("valid");
        assert_eq!(p.map, vec![(StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE)]);
        let e = config(serde_json::json!({ "http_statuses": [ { "upstream": 500, "gateway": 700 } ] })).err();
        assert_eq!(e.map(|e| e.field), Some("http_statuses[0].gateway".to_string()));
        assert!(config(serde_json::json!({ "http_statuses": [] })).is_err());
        assert!(config(serde_json::json!({ "http_statuses": [ { "upstream": 200, "gateway": 101 } ] })).is_err());
    }
}
