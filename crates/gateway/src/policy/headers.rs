//! The `headers` policy (as APIcast's): change request headers on their way to the
//! backend and response headers on their way to the client.
//!
//! ```yaml
//! - name: headers
//!   configuration:
//!     request:  [ { op: set, header: X-Api-Version, value: "2" }, { op: delete, header: Cookie } ]
//!     response: [ { op: add, header: X-Served-By, value: tollgate } ]
//! ```
//! `set` replaces every value, `add` appends a value only if the header exists
//! (as APIcast), `push` appends a value whether it exists or not, `delete` removes it.

use super::{Context, Policy};
use http::{HeaderMap, HeaderName, HeaderValue, request, response};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Op {
    Set,
    Add,
    Push,
    Delete,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    op: Op,
    header: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    #[serde(default)]
    request: Vec<Command>,
    #[serde(default)]
    response: Vec<Command>,
}

struct Compiled {
    op: Op,
    name: HeaderName,
    value: Option<HeaderValue>,
}

pub struct HeadersPolicy {
    request: Vec<Compiled>,
    response: Vec<Compiled>,
}

fn compile(side: &str, commands: Vec<Command>) -> Result<Vec<Compiled>, (String, String)> {
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = |k: &str| format!("{side}[{i}].{k}");
            let name = HeaderName::try_from(c.header.as_str())
                .map_err(|_| (at("header"), format!("`{}` is not a valid header name", c.header)))?;
            let value = match (c.op, c.value) {
                (Op::Delete, _) => None,
                (_, None) => return Err((at("value"), "is required for set, add and push".into())),
                (_, Some(v)) => {
                    Some(HeaderValue::try_from(v).map_err(|_| (at("value"), "is not a valid header value".into()))?)
                }
            };
            Ok(Compiled { op: c.op, name, value })
        })
        .collect()
}

impl HeadersPolicy {
    pub(super) fn new(c: Config) -> Result<Self, (String, String)> {
        Ok(HeadersPolicy { request: compile("request", c.request)?, response: compile("response", c.response)? })
    }
}

fn apply(commands: &[Compiled], headers: &mut HeaderMap) {
    for c in commands {
        match (c.op, &c.value) {
            (Op::Delete, _) => {
                headers.remove(&c.name);
            }
            (Op::Set, Some(v)) => {
                headers.insert(c.name.clone(), v.clone());
            }
            (Op::Add, Some(v)) => {
                if headers.contains_key(&c.name) {
                    headers.append(c.name.clone(), v.clone());
                }
            }
            (Op::Push, Some(v)) => {
                headers.append(c.name.clone(), v.clone());
            }
            (_, None) => {}
        }
    }
}

impl Policy for HeadersPolicy {
    fn name(&self) -> &'static str {
        "headers"
    }

    fn upstream_request(&self, req: &mut request::Parts, _ctx: &Context<'_>) {
        apply(&self.request, &mut req.headers);
    }

    fn response(&self, resp: &mut response::Parts, _req: &request::Parts, _ctx: &Context<'_>) {
        apply(&self.response, &mut resp.headers);
    }
}
