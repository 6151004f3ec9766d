//! The `url_rewriting` policy (as APIcast's): rewrites the request path with regular
//! expressions and edits query arguments, in the rewrite phase — before mapping rules
//! are matched and before the request is routed to a backend.
//!
//! ```yaml
//! - name: url_rewriting
//!   configuration:
//!     commands:
//!       - { op: sub, regex: "^/api/v1/", replace: "/v1/", break: true }
//!       - { op: gsub, regex: "//+", replace: "/" }
//!     query_args_commands:
//!       - { op: set, arg: source, value: gateway }
//!       - { op: delete, arg: debug }
//! ```
//!
//! `sub` replaces the first match, `gsub` every match; `replace` may use `$1`, `${name}`
//! groups. A command with `break: true` that changed the path stops the remaining
//! commands. `methods` limits a command to some HTTP methods. Query operations are as
//! the `headers` policy's: `set` replaces (or adds) an argument, `push` adds one more
//! value, `add` adds a value only if the argument exists, `delete` removes it; values
//! are templates. A rewritten path must start with `/`, or the request gets 400.

use super::template::Template;
use super::{Context, Flow, Policy, PolicyError};
use crate::refusal::Refusal;
use http::{Method, Uri, request};
use schemars::JsonSchema;
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PathOp {
    Sub,
    Gsub,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PathCommand {
    op: PathOp,
    /// A regular expression matched against the path.
    regex: String,
    /// The replacement; `$1`, `${name}` refer to groups.
    replace: String,
    /// Stop the remaining commands if this one changed the path.
    #[serde(default, rename = "break")]
    stop: bool,
    /// Only for these methods (default: all).
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ArgOp {
    Set,
    Add,
    #[serde(alias = "append")]
    Push,
    Delete,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ArgCommand {
    op: ArgOp,
    arg: String,
    /// Required except for `delete`; a template.
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// Path rewrites, in order.
    #[serde(default)]
    commands: Vec<PathCommand>,
    /// Query argument changes, in order, after the path rewrites.
    #[serde(default)]
    query_args_commands: Vec<ArgCommand>,
}

struct Rewrite {
    global: bool,
    regex: regex::Regex,
    replace: String,
    stop: bool,
    methods: Vec<Method>,
}

struct ArgEdit {
    op: ArgOp,
    arg: String,
    value: Option<Template>,
}

pub struct UrlRewritingPolicy {
    rewrites: Vec<Rewrite>,
    args: Vec<ArgEdit>,
}

impl UrlRewritingPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let mut rewrites = Vec::new();
        for (i, cmd) in c.commands.into_iter().enumerate() {
            let regex = super::regex(&cmd.regex).map_err(|e| PolicyError::new(format!("commands[{i}].regex"), e))?;
            let mut methods = Vec::new();
            for (j, m) in cmd.methods.iter().enumerate() {
                methods.push(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    PolicyError::new(format!("commands[{i}].methods[{j}]"), format!("`{m}` is not an HTTP method"))
                })?);
            }
            rewrites.push(Rewrite {
                global: cmd.op == PathOp::Gsub,
                regex,
                replace: cmd.replace,
                stop: cmd.stop,
                methods,
            });
        }
        let mut args = Vec::new();
        for (i, a) in c.query_args_commands.into_iter().enumerate() {
            if a.arg.is_empty() {
                return Err(PolicyError::new(format!("query_args_commands[{i}].arg"), "must not be empty"));
            }
            let value = match (a.op, a.value) {
                (ArgOp::Delete, _) => None,
                (_, None) => {
                    return Err(PolicyError::new(
                        format!("query_args_commands[{i}].value"),
                        "is required for set, add and push",
                    ));
                }
                (_, Some(v)) => Some(
                    Template::parse(&v).map_err(|e| PolicyError::new(format!("query_args_commands[{i}].value"), e))?,
                ),
            };
            args.push(ArgEdit { op: a.op, arg: a.arg, value });
        }
        Ok(UrlRewritingPolicy { rewrites, args })
    }
}

/// Percent-encodes a query component (everything but RFC 3986's unreserved characters).
fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn decode(s: &str) -> String {
    tollgate_model::pattern::QueryArgs::parse(Some(&format!("x={s}"))).get("x").unwrap_or_default().to_string()
}

impl Policy for UrlRewritingPolicy {
    fn name(&self) -> &'static str {
        "url_rewriting"
    }

    fn rewrite(&self, req: &mut request::Parts, ctx: &mut Context<'_>) -> Flow {
        let mut path: Cow<'_, str> = Cow::Owned(req.uri.path().to_string());
        let mut changed = false;
        for r in &self.rewrites {
            if !r.methods.is_empty() && !r.methods.contains(&req.method) {
                continue;
            }
            let new = if r.global {
                r.regex.replace_all(&path, r.replace.as_str())
            } else {
                r.regex.replace(&path, r.replace.as_str())
            };
            if let Cow::Owned(new) = new {
                path = Cow::Owned(new);
                changed = true;
                if r.stop {
                    break;
                }
            }
        }
        // Query: a list of (raw name, raw value) pairs, edited in place.
        let mut pairs: Vec<(String, String)> = req
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        for a in &self.args {
            changed = true;
            let has = |pairs: &[(String, String)]| pairs.iter().any(|(k, _)| decode(k) == a.arg);
            let value = a.value.as_ref().map(|t| {
                let mut v = String::new();
                encode(&t.render(req, ctx), &mut v);
                v
            });
            let mut name = String::new();
            encode(&a.arg, &mut name);
            match (a.op, value) {
                (ArgOp::Delete, _) => pairs.retain(|(k, _)| decode(k) != a.arg),
                (ArgOp::Set, Some(v)) => {
                    pairs.retain(|(k, _)| decode(k) != a.arg);
                    pairs.push((name, v));
                }
                (ArgOp::Push, Some(v)) => pairs.push((name, v)),
                (ArgOp::Add, Some(v)) => {
                    if has(&pairs) {
                        pairs.push((name, v));
                    }
                }
                (_, None) => {}
            }
        }
        if !changed {
            return Flow::Continue;
        }
        if !path.starts_with('/') {
            return Flow::Refuse(Refusal::BadRequest("the rewritten path does not start with `/`"));
        }
        let mut pq = path.into_owned();
        if !pairs.is_empty() {
            pq.push('?');
            let joined: Vec<String> =
                pairs.into_iter().map(|(k, v)| if v.is_empty() { k } else { format!("{k}={v}") }).collect();
            pq.push_str(&joined.join("&"));
        }
        let mut parts = req.uri.clone().into_parts();
        match pq.parse() {
            Ok(p) => parts.path_and_query = Some(p),
            Err(_) => return Flow::Refuse(Refusal::BadRequest("the rewritten URL is not valid")),
        }
        match Uri::from_parts(parts) {
            Ok(uri) => req.uri = uri,
            Err(_) => return Flow::Refuse(Refusal::BadRequest("the rewritten URL is not valid")),
        }
        Flow::Continue
    }
}
