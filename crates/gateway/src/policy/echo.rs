//! The `echo` policy (debugging): answers with the request as the gateway sees it, as
//! JSON, instead of calling the backend. Placed after `tollgate`, it answers only
//! authenticated requests and shows the application.
//!
//! ```yaml
//! - name: echo
//!   configuration: { status: 200 }
//! ```

use super::{Context, Flow, Policy, PolicyError};
use crate::upstream::body::GatewayBody;
use http::{HeaderValue, Response, StatusCode, request};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// The status of the answer (default 200).
    #[serde(default = "default_status")]
    #[schemars(range(min = 200, max = 599))]
    status: u16,
}

fn default_status() -> u16 {
    200
}

pub struct EchoPolicy {
    status: StatusCode,
}

impl EchoPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let status = super::status_option(c.status, 200..=599)?;
        Ok(EchoPolicy { status })
    }
}

impl Policy for EchoPolicy {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        let mut headers = serde_json::Map::new();
        for (name, value) in &req.headers {
            let v = serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
            match headers.get_mut(name.as_str()) {
                Some(serde_json::Value::Array(list)) => list.push(v),
                Some(first) => *first = serde_json::Value::Array(vec![first.take(), v]),
                None => {
                    headers.insert(name.as_str().to_string(), v);
                }
            }
        }
        let body = serde_json::json!({
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "version": format!("{:?}", req.version),
            "headers": headers,
            "remote_addr": ctx.client_addr.ip().to_string(),
            "product": ctx.product.system_name.as_ref(),
            "application": ctx.application.as_ref().map(|a| a.id.as_ref()),
        });
        let mut answer = Response::new(GatewayBody::local(body.to_string()));
        *answer.status_mut() = self.status;
        answer.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Flow::Respond(answer)
    }
}
