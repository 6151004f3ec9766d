//! The policy chain: ordered policies run for each request of a product.
//!
//! A [`Policy`] implements only the phases it needs; every phase defaults to doing
//! nothing (continuing). Phases run in this order, each across the whole chain, in the
//! chain's order:
//!
//! 1. [`Policy::rewrite`]: before credentials are read. May change the request, or answer
//!    it ([`Flow::Respond`]) — CORS preflights are answered here.
//! 2. [`Policy::access`]: decides whether the request may go on. The `tollgate` policy
//!    reads credentials, finds the application and maps the request to usage here.
//!    After the last access phase the gateway checks and applies the usage against the
//!    application's limits, all-or-nothing; so a request refused by a later policy
//!    never consumes quota.
//! 3. [`Policy::upstream_request`]: just before the request leaves for the backend.
//! 4. [`Policy::response`]: on the response head before it reaches the client, for
//!    proxied and locally generated responses alike.
//!
//! The first `Respond` stops the request phases; response phases still run.
//! Policies are built by name from their YAML configuration by the [`Registry`]; bad
//! configuration is a config error (with its path), never a request-time failure.

mod cors;
mod headers;
mod tollgate;
pub mod websocket;

use crate::body::GatewayBody;
use crate::mapping::Usage;
use crate::snapshot::{Application, Product};
use http::{Response, request, response};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_model::{ConfigError, did_you_mean, explain};

pub use tollgate::TollgatePolicy;

/// What a request phase decided.
pub enum Flow {
    Continue,
    /// Answer the client with this response; the backend is not called.
    Respond(Response<GatewayBody>),
}

/// What the gateway knows about one request while the chain runs.
pub struct Context<'a> {
    pub product: &'a Product,
    pub client_addr: SocketAddr,
    /// Whether the client reached the gateway over TLS.
    pub tls: bool,
    /// Whether this is a WebSocket upgrade.
    pub websocket: bool,
    /// Unix seconds, read once per request.
    pub now: i64,
    /// Set by the `tollgate` policy once credentials are verified.
    pub application: Option<Arc<Application>>,
    /// Set by the `tollgate` policy from the mapping rules.
    pub usage: Usage,
    /// The credentials the application was identified by (a WebSocket re-checks them
    /// when the configuration changes).
    pub credential: Option<Credential>,
}

/// Credentials as presented, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    UserKey(Box<str>),
    AppId { app_id: Box<str>, app_key: Box<str> },
}

pub trait Policy: Send + Sync + 'static {
    /// The policy's registry name.
    fn name(&self) -> &'static str;

    /// Before credentials are read; may rewrite the request or answer it.
    fn rewrite(&self, _req: &mut request::Parts, _ctx: &mut Context<'_>) -> Flow {
        Flow::Continue
    }

    /// Decides whether the request may go on.
    fn access(&self, _req: &request::Parts, _ctx: &mut Context<'_>) -> Flow {
        Flow::Continue
    }

    /// Just before the request goes to the backend.
    fn upstream_request(&self, _req: &mut request::Parts, _ctx: &Context<'_>) {}

    /// On the response head, before it goes to the client.
    fn response(&self, _resp: &mut response::Parts, _req: &request::Parts, _ctx: &Context<'_>) {}
}

type Builder = fn(&serde_json::Value) -> Result<Arc<dyn Policy>, (String, String)>;

/// What a user can learn about a policy without reading the source.
pub struct PolicyInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// JSON Schema of the policy's `configuration`.
    schema: &'static str,
    build: Builder,
}

impl PolicyInfo {
    pub fn schema(&self) -> serde_json::Value {
        serde_json::from_str(self.schema).unwrap_or(serde_json::Value::Null)
    }
}

const EMPTY_SCHEMA: &str = r#"{"type":"object","additionalProperties":false}"#;
const fn const_format_headers() -> &'static str {
    r#"{"type":"object","additionalProperties":false,"properties":{"request":{"type":"array","items":{"type":"object","additionalProperties":false,"required":["op","header"],"properties":{"op":{"enum":["set","add","push","delete"]},"header":{"type":"string"},"value":{"type":"string"}}}},"response":{"type":"array","items":{"type":"object","additionalProperties":false,"required":["op","header"],"properties":{"op":{"enum":["set","add","push","delete"]},"header":{"type":"string"},"value":{"type":"string"}}}}}}"#
}

/// Builds policies by name from their configuration.
pub struct Registry {
    policies: Vec<PolicyInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            policies: vec![
                PolicyInfo {
                    name: "tollgate",
                    schema: EMPTY_SCHEMA,
                    summary: "Authenticates the application, maps the request to metrics and enforces usage limits (3scale's `apicast` policy). Runs last if absent from the chain.",
                    build: |c| parse::<tollgate::Config>(c).map(|_| Arc::new(TollgatePolicy) as Arc<dyn Policy>),
                },
                PolicyInfo {
                    name: "websocket",
                    schema: r#"{"type":"object","additionalProperties":false,"properties":{"max_message_bytes":{"type":"integer","minimum":1},"meter_messages":{"type":"object","additionalProperties":false,"required":["metric"],"properties":{"metric":{"type":"string"},"direction":{"enum":["client_to_server","server_to_client","both"]},"delta":{"type":"integer","minimum":1}}},"meter_bytes":{"type":"object","additionalProperties":false,"required":["metric"],"properties":{"metric":{"type":"string"},"direction":{"enum":["client_to_server","server_to_client","both"]}}},"on_limit_exceeded":{"enum":["close","drop"]},"idle_timeout":{"type":"integer","minimum":1},"ping_interval":{"type":"integer","minimum":1},"max_connection_duration":{"type":"integer","minimum":1}}}"#,
                    summary: "Allows WebSocket upgrades for the product; without it an upgrade gets 400.",
                    build: |c| {
                        parse::<websocket::Config>(c)
                            .and_then(websocket::WebSocketPolicy::new)
                            .map(|p| Arc::new(p) as Arc<dyn Policy>)
                    },
                },
                PolicyInfo {
                    name: "headers",
                    schema: const_format_headers(),
                    summary: "Sets, adds, pushes or deletes request headers (to the backend) and response headers (to the client).",
                    build: |c| {
                        parse::<headers::Config>(c)
                            .and_then(headers::HeadersPolicy::new)
                            .map(|p| Arc::new(p) as Arc<dyn Policy>)
                    },
                },
                PolicyInfo {
                    name: "cors",
                    schema: r#"{"type":"object","additionalProperties":false,"properties":{"allow_origin":{"type":"string"},"allow_methods":{"type":"array","items":{"type":"string"}},"allow_headers":{"type":"array","items":{"type":"string"}},"allow_credentials":{"type":"boolean"},"max_age":{"type":"integer","minimum":0}}}"#,
                    summary: "Answers CORS preflight requests and adds Access-Control-* headers to responses.",
                    build: |c| {
                        parse::<cors::Config>(c).and_then(cors::CorsPolicy::new).map(|p| Arc::new(p) as Arc<dyn Policy>)
                    },
                },
            ],
        }
    }
}

impl Registry {
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }

    /// Builds the policy `name`; `path` names the chain entry in errors.
    pub fn build(
        &self,
        path: &str,
        name: &str,
        configuration: &serde_json::Value,
    ) -> Result<Arc<dyn Policy>, ConfigError> {
        let Some(info) = self.policies.iter().find(|p| p.name == name) else {
            let names = self.policies.iter().map(|p| p.name);
            let e = ConfigError::new(format!("{path}.name"), format!("no policy named `{name}`"));
            return Err(match did_you_mean(name, names.clone()) {
                Some(s) => e.hint(format!("did you mean `{s}`?")),
                None => e.hint(format!("available policies: {}", names.collect::<Vec<_>>().join(", "))),
            });
        };
        (info.build)(configuration).map_err(|(at, msg)| {
            let e = explain(&format!("{path}.configuration"), if at.is_empty() { "." } else { &at }, &msg);
            match e.hint {
                Some(_) => e,
                None => e.hint(format!("see the `{name}` policy in docs/policies.md")),
            }
        })
    }
}

/// Deserializes a policy's configuration; on error, the path inside it and the message.
pub(crate) fn parse<T: DeserializeOwned>(configuration: &serde_json::Value) -> Result<T, (String, String)> {
    let value =
        if configuration.is_null() { serde_json::Value::Object(Default::default()) } else { configuration.clone() };
    serde_path_to_error::deserialize(value).map_err(|e| (e.path().to_string(), e.inner().to_string()))
}
