//! The `headers` policy (as APIcast's): change request headers on their way to the
//! backend and response headers on their way to the client.
//!
//! ```yaml
//! - name: headers
//!   configuration:
//!     request:
//!       - { op: set, header: X-Api-Version, value: "2" }
//!       - { op: set, header: X-Client-Ip, value: "{{ remote_addr }}" }
//!       - { op: delete, header: Cookie }
//!     response: [ { op: add, header: X-Served-By, value: tollgate } ]
//! ```
//! `set` replaces every value, `add` appends a value only if the header exists
//! (as APIcast), `push` (or `append`) appends a value whether it exists or not,
//! `delete` removes it. Values are templates (see `template`): in `request` commands
//! they read the request as it goes to the backend, in `response` commands the
//! client's request. A value that renders to something a header cannot hold (a line
//! break) is not set.

use super::template::Template;
use super::{Context, Policy, PolicyError};
use http::{HeaderMap, HeaderName, HeaderValue, request, response};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Op {
    Set,
    Add,
    #[serde(alias = "append")]
    Push,
    Delete,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Command {
    op: Op,
    header: String,
    /// Required except for `delete`; a template.
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// Changes to the request headers sent to the backend, in order.
    #[serde(default)]
    request: Vec<Command>,
    /// Changes to the response headers sent to the client, in order.
    #[serde(default)]
    response: Vec<Command>,
}

enum Value {
    Fixed(HeaderValue),
    Template(Template),
}

struct Compiled {
    op: Op,
    name: HeaderName,
    value: Option<Value>,
}

pub struct HeadersPolicy {
    request: Vec<Compiled>,
    response: Vec<Compiled>,
}

fn compile(side: &str, commands: Vec<Command>) -> Result<Vec<Compiled>, PolicyError> {
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = |k: &str| format!("{side}[{i}].{k}");
            let name = HeaderName::try_from(c.header.as_str())
                .map_err(|_| PolicyError::new(at("header"), format!("`{}` is not a valid header name", c.header)))?;
            let value = match (c.op, c.value) {
                (Op::Delete, _) => None,
                (_, None) => return Err(PolicyError::new(at("value"), "is required for set, add and push")),
                (_, Some(v)) => {
                    let t = Template::parse(&v).map_err(|e| PolicyError::new(at("value"), e))?;
                    Some(if t.is_static() {
                        Value::Fixed(
                            HeaderValue::try_from(v)
                                .map_err(|_| PolicyError::new(at("value"), "is not a valid header value"))?,
                        )
                    } else {
                        Value::Template(t)
                    })
                }
            };
            Ok(Compiled { op: c.op, name, value })
        })
        .collect()
}

impl HeadersPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        Ok(HeadersPolicy { request: compile("request", c.request)?, response: compile("response", c.response)? })
    }
}

/// The value each command sets, rendered against the request before any change.
fn values(commands: &[Compiled], req: &request::Parts, ctx: &Context<'_>) -> Vec<Option<HeaderValue>> {
    commands
        .iter()
        .map(|c| match &c.value {
            None => None,
            Some(Value::Fixed(v)) => Some(v.clone()),
            // A rendered value a header cannot hold (a line break) is not set.
            Some(Value::Template(t)) => HeaderValue::from_str(&t.render(req, ctx)).ok(),
        })
        .collect()
}

fn apply(commands: &[Compiled], values: Vec<Option<HeaderValue>>, headers: &mut HeaderMap) {
    for (c, value) in commands.iter().zip(values) {
        match (c.op, value) {
            (Op::Delete, _) => {
                headers.remove(&c.name);
            }
            (Op::Set, Some(v)) => {
                headers.insert(c.name.clone(), v);
            }
            // `set` replaces every value: one it cannot render (a line break, a NUL)
            // still removes what the client sent, so the backend never takes a header
            // the client forged for the one the gateway vouches for.
            (Op::Set, None) => {
                headers.remove(&c.name);
            }
            (Op::Add, Some(v)) => {
                if headers.contains_key(&c.name) {
                    headers.append(c.name.clone(), v);
                }
            }
            (Op::Push, Some(v)) => {
                headers.append(c.name.clone(), v);
            }
            (_, None) => {}
        }
    }
}

impl Policy for HeadersPolicy {
    fn name(&self) -> &'static str {
        "headers"
    }

    fn upstream_request(&self, req: &mut request::Parts, ctx: &Context<'_>) {
        let values = values(&self.request, req, ctx);
        apply(&self.request, values, &mut req.headers);
    }

    fn response(&self, resp: &mut response::Parts, req: &request::Parts, ctx: &Context<'_>) {
        apply(&self.response, values(&self.response, req, ctx), &mut resp.headers);
    }
}
