//! The `maintenance_mode` policy: answers every request (or those its `condition`
//! selects) itself, before authentication, with a fixed status and message.
//!
//! ```yaml
//! - name: maintenance_mode
//!   configuration:
//!     status: 503                                  # default
//!     message: "Back at 14:00 UTC"                 # default: a JSON error body
//!     content_type: "text/plain; charset=utf-8"    # default for a message
//! ```

use super::{Context, Flow, Policy, PolicyError};
use crate::refusal::{ErrorTemplate, Refusal};
use http::{HeaderValue, request};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// The status to answer with (default 503).
    #[serde(default = "default_status")]
    #[schemars(range(min = 200, max = 599))]
    status: u16,
    /// The body; default `{"error":{"code":"maintenance",…}}`.
    #[serde(default)]
    message: Option<String>,
    /// The body's Content-Type (default `text/plain; charset=utf-8` for a message).
    #[serde(default)]
    content_type: Option<String>,
}

fn default_status() -> u16 {
    503
}

pub struct MaintenancePolicy {
    answer: std::sync::Arc<ErrorTemplate>,
}

impl MaintenancePolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let status = super::status_option(c.status, 200..=599)?;
        let answer = match c.message {
            None => {
                let mut t = ErrorTemplate::json(status, "maintenance", "the service is under maintenance; retry later");
                if let Some(ct) = c.content_type {
                    t.content_type = header_value(ct, "content_type")?;
                }
                t
            }
            Some(m) => ErrorTemplate {
                status,
                content_type: header_value(
                    c.content_type.unwrap_or_else(|| "text/plain; charset=utf-8".into()),
                    "content_type",
                )?,
                body: m.into(),
            },
        };
        Ok(MaintenancePolicy { answer: answer.into() })
    }
}

fn header_value(v: String, field: &str) -> Result<HeaderValue, PolicyError> {
    HeaderValue::try_from(v).map_err(|_| PolicyError::new(field, "is not a valid header value"))
}

impl Policy for MaintenancePolicy {
    fn name(&self) -> &'static str {
        "maintenance_mode"
    }

    fn rewrite(&self, _req: &mut request::Parts, _ctx: &mut Context<'_>) -> Flow {
        Flow::Refuse(Refusal::Denied { policy: "maintenance_mode", code: "maintenance", answer: self.answer.clone() })
    }
}
