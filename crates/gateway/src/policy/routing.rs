//! Choosing the backend per request: the `upstream` policy (3scale's Upstream: path
//! regular expressions → URLs) and the `routing` policy (3scale's Routing: conditions on
//! path, headers, query arguments or JWT claims → a URL or one of the product's
//! backends, with path replacement and a Host header).
//!
//! ```yaml
//! - name: upstream
//!   configuration:
//!     rules:
//!       - { regex: "^/v2/", url: "http://api-v2.internal:8080" }
//! - name: routing
//!   configuration:
//!     rules:
//!       - url: "http://beta.internal:8080"
//!         condition: { operations: [ { left: "{{ headers['X-Beta'] }}", op: "==", right: "1" } ] }
//!         host_header: beta.example.com
//!       - backend: legacy                   # a backend the product uses
//!         condition: { operations: [ { left: "{{ jwt.plan }}", op: "==", right: "legacy" } ] }
//!         replace_path: "/compat{{ path }}"
//! ```
//!
//! The first rule that matches decides; when none does, the product's backend usages
//! route the request as usual. A URL's path comes before the request's path (as a
//! backend's `private_base_url` does); the request path is sent whole (no usage prefix is
//! removed) unless `replace_path` (a template) says otherwise. The choice is made in the
//! access phase, after the rewrite phase, so `url_rewriting` applies first; mapping
//! rules and limits are those of the product, whichever backend serves the request.

use super::condition::{Condition, ConditionConfig};
use super::template::Template;
use super::{Context, Decision, Flow, Policy, PolicyError};
use crate::upstream::Upstream;
use http::{HeaderValue, header, request};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::BackendTls;
use tollgate_model::validate::BaseUrl;

/// Where a policy sends the request, instead of the product's backend usages.
#[derive(Clone)]
pub struct Route {
    /// Where it goes.
    pub target: Target,
    /// The path to send (before the target's base path is prepended).
    pub path: String,
    /// A Host header to send instead of the target's authority.
    pub host: Option<HeaderValue>,
}

/// The destination of a [`Route`].
#[derive(Clone)]
pub enum Target {
    /// A URL of the policy's configuration.
    Url(Arc<Upstream>),
    /// A backend of the product, by system_name (resolved per request).
    Backend(Arc<str>),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn upstream(url: &str, field: &str) -> Result<Arc<Upstream>, PolicyError> {
    let base =
        BaseUrl::parse(url, &["http", "https", "ws", "wss"]).map_err(|e| PolicyError::new(field.to_string(), e))?;
    Upstream::new(url, base, &BackendTls::default(), CONNECT_TIMEOUT)
        .map(Arc::new)
        .map_err(|e| PolicyError::new(field, e.message))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpstreamRule {
    /// A regular expression matched against the request path.
    regex: String,
    /// Where matching requests go: `http(s)://host[:port][/path]` (or `ws(s)://`).
    url: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamConfig {
    /// Tried in order; the first whose regex matches decides.
    rules: Vec<UpstreamRule>,
}

/// The `upstream` policy (3scale's Upstream): the first rule whose regular expression
/// matches the path routes the request to its URL.
pub struct UpstreamPolicy {
    rules: Vec<(regex::Regex, Arc<Upstream>)>,
}

impl UpstreamPolicy {
    pub(super) fn new(c: UpstreamConfig) -> Result<Self, PolicyError> {
        if c.rules.is_empty() {
            return Err(PolicyError::new("rules", "give at least one rule"));
        }
        let mut rules = Vec::new();
        for (i, r) in c.rules.into_iter().enumerate() {
            let re = super::regex(&r.regex).map_err(|e| PolicyError::new(format!("rules[{i}].regex"), e))?;
            rules.push((re, upstream(&r.url, &format!("rules[{i}].url"))?));
        }
        Ok(UpstreamPolicy { rules })
    }
}

impl Policy for UpstreamPolicy {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        if ctx.plan().route.is_none()
            && let Some((_, u)) = self.rules.iter().find(|(re, _)| re.is_match(req.uri.path()))
        {
            let path = req.uri.path().to_string();
            ctx.decide(Decision::Route(Route { target: Target::Url(u.clone()), path, host: None }));
        }
        Flow::Continue
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RoutingRule {
    /// Send to this URL …
    #[serde(default)]
    url: Option<String>,
    /// … or to this backend of the product (its system_name).
    #[serde(default)]
    backend: Option<String>,
    /// When the rule applies (default: always).
    #[serde(default)]
    condition: Option<ConditionConfig>,
    /// The path to send instead of the request's (a template, e.g. `/v2{{ path }}`).
    #[serde(default)]
    replace_path: Option<String>,
    /// The Host header to send (default: the target's host and port).
    #[serde(default)]
    host_header: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutingConfig {
    /// Tried in order; the first that applies decides.
    rules: Vec<RoutingRule>,
}

struct Rule {
    condition: Option<Condition>,
    target: Target,
    replace_path: Option<Template>,
    host: Option<HeaderValue>,
}

/// The `routing` policy (3scale's Routing): the first rule whose condition holds routes
/// the request to its URL or backend.
pub struct RoutingPolicy {
    rules: Vec<Rule>,
}

impl RoutingPolicy {
    pub(super) fn new(c: RoutingConfig) -> Result<Self, PolicyError> {
        if c.rules.is_empty() {
            return Err(PolicyError::new("rules", "give at least one rule"));
        }
        let mut rules = Vec::new();
        for (i, r) in c.rules.into_iter().enumerate() {
            let at = |k: &str| format!("rules[{i}].{k}");
            let target = match (r.url, r.backend) {
                (Some(url), None) => Target::Url(upstream(&url, &at("url"))?),
                (None, Some(b)) if !b.is_empty() => Target::Backend(b.into()),
                (Some(_), Some(_)) => return Err(PolicyError::new(at("url"), "give either url or backend, not both")),
                _ => return Err(PolicyError::new(at("url"), "give url or backend")),
            };
            let condition = r
                .condition
                .map(|c| {
                    Condition::new(c).map_err(|e| PolicyError { field: at(&format!("condition.{}", e.field)), ..e })
                })
                .transpose()?;
            let replace_path = r
                .replace_path
                .map(|p| Template::parse(&p).map_err(|e| PolicyError::new(at("replace_path"), e)))
                .transpose()?;
            let host = r
                .host_header
                .map(|h| {
                    HeaderValue::try_from(h)
                        .map_err(|_| PolicyError::new(at("host_header"), "is not a valid header value"))
                })
                .transpose()?;
            rules.push(Rule { condition, target, replace_path, host });
        }
        Ok(RoutingPolicy { rules })
    }
}

impl Policy for RoutingPolicy {
    fn name(&self) -> &'static str {
        "routing"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        if ctx.plan().route.is_some() {
            return Flow::Continue;
        }
        let Some(rule) = self.rules.iter().find(|r| r.condition.as_ref().is_none_or(|c| c.holds(req, ctx))) else {
            return Flow::Continue;
        };
        let path = match &rule.replace_path {
            Some(t) => t.render(req, ctx).into_owned(),
            None => req.uri.path().to_string(),
        };
        ctx.decide(Decision::Route(Route { target: rule.target.clone(), path, host: rule.host.clone() }));
        Flow::Continue
    }

    fn upstream_request(&self, req: &mut request::Parts, ctx: &Context<'_>) {
        if let Some(host) = ctx.plan().route.as_ref().and_then(|r| r.host.clone()) {
            req.headers.insert(header::HOST, host);
        }
    }
}
