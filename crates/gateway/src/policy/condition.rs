//! Conditions: any policy runs only for the requests its `condition` holds for.
//!
//! ```yaml
//! - name: headers
//!   configuration:
//!     condition:
//!       combine_op: and            # or `or`; default `and`
//!       operations:
//!         - { left: "{{ path }}", op: matches, right: "^/admin/" }
//!         - { left: "{{ headers['X-Debug'] }}", op: "==", right: "1" }
//!     request: [ … ]
//! ```
//!
//! `left` and `right` are templates (see `template`); `op` is `==`, `!=`, `matches` or
//! `not_matches` (a regular expression in `right`, fixed when the configuration loads).
//! A policy's condition is evaluated once per request, on the request as it reaches
//! that policy in the rewrite phase (after the rewrites of the policies before it), and
//! the answer holds for every phase of that policy — so a condition on the path keeps
//! its meaning in the response phase and when a policy rewrote the path meanwhile.

use super::template::Template;
use super::{Context, Flow, Policy, PolicyError};
use http::request::Parts;
use http::response;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// A policy's `condition`: operations combined with `and` or `or`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// How the operations combine.
    #[serde(default)]
    pub combine_op: Combine,
    /// The tests; at least one.
    pub operations: Vec<OperationConfig>,
}

/// How a condition's operations combine: `and` (default), every one holds; `or`, any
/// one does.
// No doc comment per variant: one would turn this enum's JSON Schema from `enum` into
// `oneOf`, which the console's policy forms cannot show as a select.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    #[default]
    And,
    Or,
}

/// One test of a condition: `left` compared with `right` by `op`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// A template, e.g. `{{ path }}`.
    pub left: String,
    /// `==`, `!=`, `matches` or `not_matches`.
    pub op: Op,
    /// A template (`==`, `!=`) or a regular expression (`matches`, `not_matches`).
    #[serde(default)]
    pub right: String,
}

/// A comparison: `==` and `!=` compare rendered templates; `matches` and `not_matches`
/// match a regular expression.
// No doc comment per variant: one would turn this enum's JSON Schema from `enum` into
// `oneOf`, which the console's policy forms cannot show as a select.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum Op {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "matches")]
    Matches,
    #[serde(rename = "not_matches")]
    NotMatches,
}

#[derive(Debug)]
enum Right {
    Text(Template),
    Regex(regex::Regex),
}

#[derive(Debug)]
struct Operation {
    left: Template,
    op: Op,
    right: Right,
}

/// A compiled condition.
#[derive(Debug)]
pub struct Condition {
    combine: Combine,
    operations: Vec<Operation>,
}

impl Condition {
    /// Compiles a condition; errors carry the path inside `condition`.
    pub fn new(c: ConditionConfig) -> Result<Condition, PolicyError> {
        if c.operations.is_empty() {
            return Err(PolicyError::new("operations", "a condition needs at least one operation"));
        }
        let mut operations = Vec::with_capacity(c.operations.len());
        for (i, o) in c.operations.into_iter().enumerate() {
            let left = Template::parse(&o.left).map_err(|e| PolicyError::new(format!("operations[{i}].left"), e))?;
            let right = match o.op {
                Op::Eq | Op::Ne => Right::Text(
                    Template::parse(&o.right).map_err(|e| PolicyError::new(format!("operations[{i}].right"), e))?,
                ),
                Op::Matches | Op::NotMatches => Right::Regex(
                    super::regex(&o.right).map_err(|e| PolicyError::new(format!("operations[{i}].right"), e))?,
                ),
            };
            operations.push(Operation { left, op: o.op, right });
        }
        Ok(Condition { combine: c.combine_op, operations })
    }

    /// Whether the condition holds for `req` in `ctx`.
    pub fn holds(&self, req: &Parts, ctx: &Context<'_>) -> bool {
        let one = |o: &Operation| {
            let left = o.left.render(req, ctx);
            match (&o.right, o.op) {
                (Right::Text(r), Op::Eq) => *left == *r.render(req, ctx),
                (Right::Text(r), _) => *left != *r.render(req, ctx),
                (Right::Regex(r), Op::Matches) => r.is_match(&left),
                (Right::Regex(r), _) => !r.is_match(&left),
            }
        };
        match self.combine {
            Combine::And => self.operations.iter().all(one),
            Combine::Or => self.operations.iter().any(one),
        }
    }
}

/// A policy that runs only when its condition holds.
pub struct Conditional {
    /// When the inner policy runs.
    pub condition: Condition,
    /// The policy that runs when the condition holds.
    pub inner: Arc<dyn Policy>,
}

impl Conditional {
    /// This policy's decision for the current request: taken in the rewrite phase and
    /// remembered in the context (keyed by this policy's address).
    fn active(&self, req: &Parts, ctx: &Context<'_>) -> bool {
        let me = self as *const Self as usize;
        match ctx.conditions.iter().find(|(k, _)| *k == me) {
            Some((_, v)) => *v,
            None => self.condition.holds(req, ctx),
        }
    }
}

impl Policy for Conditional {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn prepare(&self) -> Option<super::Prepare<'_>> {
        self.inner.prepare()
    }

    fn websocket_settings(&self) -> Option<&super::websocket::Config> {
        self.inner.websocket_settings()
    }

    fn rewrite(&self, req: &mut Parts, ctx: &mut Context<'_>) -> Flow {
        let holds = self.condition.holds(req, ctx);
        ctx.conditions.push((self as *const Self as usize, holds));
        if holds { self.inner.rewrite(req, ctx) } else { Flow::Continue }
    }

    fn access(&self, req: &Parts, ctx: &mut Context<'_>) -> Flow {
        if self.active(req, ctx) { self.inner.access(req, ctx) } else { Flow::Continue }
    }

    fn upstream_request(&self, req: &mut Parts, ctx: &Context<'_>) {
        if self.active(req, ctx) {
            self.inner.upstream_request(req, ctx)
        }
    }

    fn response(&self, resp: &mut response::Parts, req: &Parts, ctx: &Context<'_>) {
        if self.active(req, ctx) {
            self.inner.response(resp, req, ctx)
        }
    }
}
