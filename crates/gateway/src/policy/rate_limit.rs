//! The `rate_limit` policy: edge limiting, independent of application plans — per
//! client address, header, application, JWT claim or any template — with fixed-window,
//! sliding-window and token-bucket limiters and a cap on concurrent requests or
//! connections, in this process's memory or in Redis (shared by every node).
//!
//! ```yaml
//! - name: rate_limit
//!   configuration:
//!     limiters:
//!       - { algorithm: fixed_window, key: "{{ remote_addr }}", count: 100, window: 60 }
//!       - { algorithm: sliding_window, key: "{{ headers['X-Tenant'] }}", count: 1000, window: 3600 }
//!       - { algorithm: token_bucket, key: "{{ application.id }}", rate: 10, burst: 20 }
//!       - { algorithm: connections, key: "{{ remote_addr }}", max: 10 }
//!     scope: product        # or global: one count across every product using the key
//!     store: memory         # or redis: the gateway's --counters Redis (connections as leases)
//!     status: 429
//!     error_message: "rate limit exceeded"
//! ```
//!
//! The policy renders each key in the access phase (a key that renders empty — an
//! absent header — skips its limiter) and the gateway then checks every limiter of the
//! policy together, all-or-nothing, before the plan's limits: a request refused here
//! consumes neither edge nor plan quota. Refusals carry `Retry-After`.

use super::template::Template;
use super::{Context, Decision, Flow, Policy, PolicyError};
use crate::refusal::ErrorTemplate;
use http::request;
use schemars::JsonSchema;
use serde::Deserialize;
use tollgate_counters::{Algorithm, EdgeCheck};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    FixedWindow,
    SlidingWindow,
    TokenBucket,
    Connections,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LimiterConfig {
    algorithm: Kind,
    /// A template, e.g. `{{ remote_addr }}`; an empty result skips the limiter.
    key: String,
    /// Windows: requests allowed per window.
    #[serde(default)]
    count: Option<u64>,
    /// Windows: seconds.
    #[serde(default)]
    window: Option<u64>,
    /// Token bucket: tokens added per second (may be fractional).
    #[serde(default)]
    rate: Option<f64>,
    /// Token bucket: the most tokens held (the burst allowed).
    #[serde(default)]
    burst: Option<u64>,
    /// Connections: requests or WebSocket connections in progress at once.
    #[serde(default)]
    max: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Scope {
    #[default]
    Product,
    Global,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Store {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    limiters: Vec<LimiterConfig>,
    /// `product` (default): counts per product; `global`: across products.
    #[serde(default)]
    scope: Scope,
    /// `memory` (default): this process; `redis`: every node (needs --counters redis://…).
    #[serde(default)]
    store: Store,
    /// The status of a refusal (default 429).
    #[serde(default = "default_status")]
    #[schemars(range(min = 400, max = 599))]
    status: u16,
    #[serde(default)]
    error_message: Option<String>,
}

fn default_status() -> u16 {
    429
}

struct Limiter {
    key: Template,
    kind: LimiterKind,
}

enum LimiterKind {
    Rate(Algorithm),
    Connections(u32),
}

/// What one `rate_limit` policy asks the gateway to check for this request.
pub struct EdgeRequest {
    /// Window and token-bucket checks, one per limiter whose key rendered non-empty.
    pub checks: Vec<EdgeCheck>,
    /// (key, max) of concurrency limiters.
    pub connections: Vec<(String, u32)>,
    /// Whether the checks run in Redis (`store: redis`) rather than in this process.
    pub redis: bool,
    /// The answer when a limiter refuses.
    pub refusal: std::sync::Arc<ErrorTemplate>,
}

/// The `rate_limit` policy: edge limits on keys rendered from each request.
pub struct RateLimitPolicy {
    /// Distinguishes this policy's keys from other policies' (`global` shares one prefix).
    prefix: String,
    limiters: Vec<Limiter>,
    scope: Scope,
    redis: bool,
    refusal: std::sync::Arc<ErrorTemplate>,
}

impl RateLimitPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        if c.limiters.is_empty() {
            return Err(PolicyError::new("limiters", "give at least one limiter"));
        }
        let status = super::status_option(c.status, 400..=599)?;
        let mut limiters = Vec::new();
        let mut signature = String::new();
        for (i, l) in c.limiters.into_iter().enumerate() {
            let at = |k: &str| format!("limiters[{i}].{k}");
            let need = |v: Option<u64>, k: &str| -> Result<u64, PolicyError> {
                v.filter(|v| *v > 0)
                    .ok_or_else(|| PolicyError::new(at(k), format!("is required (above 0) for {:?}", l.algorithm)))
            };
            let key = Template::parse(&l.key).map_err(|e| PolicyError::new(at("key"), e))?;
            let kind = match l.algorithm {
                Kind::FixedWindow | Kind::SlidingWindow => {
                    let (count, window_ms) = (need(l.count, "count")?, need(l.window, "window")? as i64 * 1000);
                    LimiterKind::Rate(if l.algorithm == Kind::FixedWindow {
                        Algorithm::FixedWindow { count, window_ms }
                    } else {
                        Algorithm::SlidingWindow { count, window_ms }
                    })
                }
                Kind::TokenBucket => {
                    let rate = l.rate.filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| {
                        PolicyError::new(at("rate"), "is required (tokens per second, above 0) for a token bucket")
                    })?;
                    LimiterKind::Rate(Algorithm::TokenBucket {
                        rate_per_s: rate,
                        burst: need(l.burst, "burst")? as f64,
                    })
                }
                Kind::Connections => LimiterKind::Connections(
                    l.max
                        .filter(|m| *m > 0)
                        .ok_or_else(|| PolicyError::new(at("max"), "is required (above 0) for connections"))?,
                ),
            };
            // What the stored counts mean: the key, the algorithm and its window (or a
            // bucket's rate and burst). The count and the maximum are left out: raising a
            // limit keeps the counts so far.
            let meaning = match &kind {
                LimiterKind::Rate(Algorithm::FixedWindow { window_ms, .. }) => format!("fixed:{window_ms}"),
                LimiterKind::Rate(Algorithm::SlidingWindow { window_ms, .. }) => format!("sliding:{window_ms}"),
                LimiterKind::Rate(Algorithm::TokenBucket { rate_per_s, burst }) => {
                    format!("bucket:{rate_per_s}:{burst}")
                }
                LimiterKind::Connections(_) => "connections".to_string(),
            };
            signature += &format!("{}|{meaning};", l.key);
            limiters.push(Limiter { key, kind });
        }
        let refusal = ErrorTemplate::shared_json(
            status,
            "rate_limited",
            c.error_message.as_deref().unwrap_or("too many requests; retry later"),
        );
        // Limiters with the same key template, algorithm and window (or bucket) share
        // counts within the scope — the two environments, a reload that changes a count;
        // the prefix keeps limiters whose counts mean something else apart (a 10 s and a
        // 60 s window would otherwise reset each other's counts).
        let prefix = format!("{:016x}", fnv(&signature));
        Ok(RateLimitPolicy { prefix, limiters, scope: c.scope, redis: c.store == Store::Redis, refusal })
    }
}

/// FNV-1a: a stable short name for a limiter set (not security relevant).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Policy for RateLimitPolicy {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        let scope = match self.scope {
            Scope::Product => &*ctx.product.system_name,
            Scope::Global => "*",
        };
        let mut edge = EdgeRequest {
            checks: Vec::new(),
            connections: Vec::new(),
            redis: self.redis,
            refusal: self.refusal.clone(),
        };
        for (i, l) in self.limiters.iter().enumerate() {
            let value = l.key.render(req, ctx);
            if value.is_empty() {
                continue;
            }
            let key = format!("{scope}:{}:{i}:{value}", self.prefix);
            match l.kind {
                LimiterKind::Rate(algorithm) => edge.checks.push(EdgeCheck { key, algorithm }),
                LimiterKind::Connections(max) => edge.connections.push((key, max)),
            }
        }
        if !edge.checks.is_empty() || !edge.connections.is_empty() {
            ctx.decide(Decision::EdgeLimit(edge));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(limiter: serde_json::Value) -> String {
        let config: Config = serde_json::from_value(serde_json::json!({ "limiters": [limiter] })).expect("config");
        RateLimitPolicy::new(config).expect("valid").prefix
    }

    /// Found by documenting the code: limiters whose stored counts mean different things
    /// (a 10 s and a 60 s window on the same key) shared their counts, and reset each
    /// other's windows; a changed count keeps them.
    #[test]
    fn limiters_share_counts_only_when_their_counts_mean_the_same() {
        let window = |count: u64, window: u64| {
            prefix(
                serde_json::json!({ "key": "{{ remote_addr }}", "algorithm": "fixed_window", "count": count, "window": window }),
            )
        };
        assert_eq!(window(10, 60), window(20, 60), "a new count keeps the counts so far");
        assert_ne!(window(10, 60), window(10, 10), "another window is another count");
        let bucket = |rate: f64| {
            prefix(
                serde_json::json!({ "key": "{{ remote_addr }}", "algorithm": "token_bucket", "rate": rate, "burst": 5 }),
            )
        };
        assert_ne!(bucket(1.0), bucket(2.0));
        assert_ne!(window(10, 60), bucket(1.0));
    }
}
