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
//! The first `Respond` or `Refuse` stops the request phases; response phases still run.
//! Policies are built by name from their YAML configuration by the [`Registry`]; bad
//! configuration is a config error (with its path), never a request-time failure.

pub mod apicast;
pub mod condition;
mod cors;
mod default_credentials;
mod echo;
mod headers;
pub mod ip_check;
pub mod jwt;
mod logging;
mod maintenance;
mod payload_limits;
pub mod plan;
pub mod rate_limit;
pub mod retry;
pub mod routing;
mod status_code_overwrite;
pub mod template;
mod tollgate;
pub mod upstream_connection;
mod url_rewriting;
pub mod websocket;

use crate::mapping::Usage;
use crate::snapshot::{Application, Product};
use crate::upstream::body::GatewayBody;
use http::{Response, request, response};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_model::{ConfigError, did_you_mean, explain};

pub use plan::{Decision, RequestPlan};
pub use tollgate::TollgatePolicy;

/// What a request phase decided.
pub enum Flow {
    /// Go on with the next policy.
    Continue,
    /// Answer the client with this response, which is no refusal (a CORS preflight's
    /// answer, `echo`); the backend is not called.
    Respond(Response<GatewayBody>),
    /// Refuse the request; [`crate::rescue`] makes the answer (a policy never builds an
    /// error response itself).
    Refuse(crate::refusal::Refusal),
}

/// What the gateway knows about one request while the chain runs.
pub struct Context<'a> {
    /// The product the request is for.
    pub product: &'a Product,
    /// The client's address: the TCP peer of the connection.
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
    /// Credentials to use when the request carries none (`default_credentials`).
    pub default_credentials: Option<Arc<Credential>>,
    /// The claims of the request's validated JWT.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Each conditional policy's decision for this request (see `condition`).
    pub conditions: Vec<(usize, bool)>,
    /// When the gateway started on this request.
    pub started: std::time::Instant,
    /// The request's trace, when it is traced.
    pub trace: Option<crate::trace::TraceCtx>,
    /// The client certificate of the TLS connection, verified against the product's
    /// authorities (`tls.client_ca_file`), if one was presented.
    pub client_certificate: Option<Arc<crate::sni::PeerCertificate>>,
    /// The connection's forwarding values ([`crate::proxy::Forwarded`]); `None` where
    /// a context is made without a connection, and they are then written per request.
    pub(crate) forwarded: Option<Arc<crate::proxy::Forwarded>>,
    /// Whether the request's path is still the canonical one it had on entry (no
    /// rewrite changed it): its backend part then needs no second check for
    /// dot-segments.
    pub(crate) path_as_entered: bool,
    /// What the policies decided so far ([`Context::decide`]); the proxy carries it out.
    plan: RequestPlan,
}

impl<'a> Context<'a> {
    /// A request's context as it arrives, before any policy ran: who asked (`client_addr`,
    /// over TLS or not, an upgrade or not) and when (`now`, Unix seconds).
    pub fn new(product: &'a Product, client_addr: SocketAddr, tls: bool, websocket: bool, now: i64) -> Self {
        Context {
            product,
            client_addr,
            tls,
            websocket,
            now,
            application: None,
            usage: Default::default(),
            credential: None,
            default_credentials: None,
            claims: None,
            conditions: Vec::new(),
            started: std::time::Instant::now(),
            trace: None,
            client_certificate: None,
            forwarded: None,
            path_as_entered: false,
            plan: RequestPlan::default(),
        }
    }

    /// Records what a policy decided (see [`plan`]): the only way a policy shapes what
    /// the proxy does with the request.
    pub fn decide(&mut self, decision: Decision) {
        self.plan.apply(decision);
    }

    /// What the policies decided so far.
    pub fn plan(&self) -> &RequestPlan {
        &self.plan
    }

    /// The plan, for the proxy that carries it out (it takes the edge limits to check
    /// and adds the places it took).
    pub(crate) fn plan_mut(&mut self) -> &mut RequestPlan {
        &mut self.plan
    }
}

/// Credentials as presented, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A `user_key`.
    UserKey(Box<str>),
    /// An `app_id` with one of its `app_keys`.
    AppId {
        /// The application's `app_id`.
        app_id: Box<str>,
        /// The key presented with it.
        app_key: Box<str>,
    },
    /// An application named by a verified token's client id claim (`jwt`): its app_id,
    /// no key needed.
    ClientId(Box<str>),
    /// The SHA-256 fingerprint (lower-case hex) of the verified client certificate of
    /// the connection (`client_certificate` products).
    ClientCertificate(Box<str>),
}

/// A policy of a product's chain: hooks called at each phase of a request, in chain
/// order. Every hook has a default that does nothing.
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

    /// Network work the policy needs before it serves (the `jwt` policy's JWK Set fetch),
    /// run by [`Snapshot::prepare`](crate::Snapshot::prepare) after the configuration is
    /// compiled and before it is swapped in: never on the request path, never blocking a
    /// worker. `Err` says what failed, naming the option (`jwks_url: cannot fetch …`);
    /// the caller then keeps serving the configuration it had.
    fn prepare(&self) -> Option<Prepare<'_>> {
        None
    }

    /// The WebSocket settings this policy brings to its product (`websocket`): a product
    /// allows upgrades when a policy of its chain has some, and the first one governs
    /// its connections.
    fn websocket_settings(&self) -> Option<&websocket::Config> {
        None
    }
}

/// A policy's preparation ([`Policy::prepare`]).
pub type Prepare<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// The policy that runs last when a chain does not name it: `tollgate` (3scale's
/// `apicast`), so that every product authenticates, maps and limits, with a chain or
/// without one.
pub const IMPLICIT_LAST: &str = "tollgate";

/// One policy of a built chain, with the index of its entry in the configuration's
/// `policy_chain` (`None` for the implicit one).
pub struct Built {
    /// Index of the entry in `policy_chain`; `None` for the implicit `tollgate`.
    pub entry: Option<usize>,
    /// The built policy.
    pub policy: Arc<dyn Policy>,
}

type Builder = fn(&serde_json::Value) -> Result<Arc<dyn Policy>, PolicyError>;

/// What a user can learn about a policy without reading the source.
pub struct PolicyInfo {
    /// Registry name, as in `policy_chain[].name`.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// JSON Schema of the policy's `configuration` (without `condition`).
    schema: fn() -> serde_json::Value,
    build: Builder,
    /// Builds without side effects beyond reading files — no network, no file made —
    /// for validation ([`Registry::offline`]); `None` when `build` has none anyway.
    offline: Option<Builder>,
    /// At most one entry of a chain may name it (`tollgate`: credentials and limits
    /// once per request; `websocket`: one set of connection settings).
    once: bool,
}

impl PolicyInfo {
    /// JSON Schema (draft 2020-12, every subschema inline) of the policy's
    /// `configuration`, `condition` included.
    pub fn schema(&self) -> serde_json::Value {
        let mut schema = (self.schema)();
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("$schema");
            obj.remove("title");
            let props = obj.entry("properties").or_insert_with(|| serde_json::json!({}));
            if let Some(props) = props.as_object_mut() {
                let mut condition = schema_of::<condition::ConditionConfig>();
                if let Some(c) = condition.as_object_mut() {
                    c.remove("$schema");
                    c.insert(
                        "description".into(),
                        "Run the policy only for requests this holds for (see docs/policies.md#conditions).".into(),
                    );
                }
                props.insert("condition".into(), condition);
            }
        }
        schema
    }
}

/// A configuration type's JSON Schema with every subschema inline (no `$ref`), so the
/// console can build a form from it directly.
fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

fn build_as<T, P>(c: &serde_json::Value, new: fn(T) -> Result<P, PolicyError>) -> Result<Arc<dyn Policy>, PolicyError>
where
    T: DeserializeOwned,
    P: Policy,
{
    parse::<T>(c).and_then(new).map(|p| Arc::new(p) as Arc<dyn Policy>)
}

/// Builds policies by name from their configuration.
pub struct Registry {
    policies: Vec<PolicyInfo>,
    /// Validation only: policies are built without network or files made (see
    /// [`Registry::offline`]).
    offline: bool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            policies: vec![
                PolicyInfo {
                    name: "tollgate",
                    schema: schema_of::<tollgate::Config>,
                    summary: "Authenticates the application, maps the request to metrics and enforces usage limits (3scale's `apicast` policy). Runs last if absent from the chain.",
                    build: |c| parse::<tollgate::Config>(c).map(|_| Arc::new(TollgatePolicy) as Arc<dyn Policy>),
                    offline: None,
                    once: true,
                },
                PolicyInfo {
                    name: "websocket",
                    schema: schema_of::<websocket::Config>,
                    summary: "Allows WebSocket upgrades for the product and governs the connections (message caps, metering, timeouts); without it an upgrade gets 400.",
                    build: |c| build_as(c, websocket::WebSocketPolicy::new),
                    offline: None,
                    once: true,
                },
                PolicyInfo {
                    name: "headers",
                    schema: schema_of::<headers::Config>,
                    summary: "Sets, adds, pushes or deletes request headers (to the backend) and response headers (to the client); values are templates.",
                    build: |c| build_as(c, headers::HeadersPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "cors",
                    schema: schema_of::<cors::Config>,
                    summary: "Answers CORS preflight requests and adds Access-Control-* headers for allowed origins (lists or patterns).",
                    build: |c| build_as(c, cors::CorsPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "ip_check",
                    schema: schema_of::<ip_check::Config>,
                    summary: "Allows or denies clients by IP address (IPv4/IPv6 CIDRs, from the peer, X-Forwarded-For or X-Real-IP); a denied client gets 403.",
                    build: |c| build_as(c, ip_check::IpCheckPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "url_rewriting",
                    schema: schema_of::<url_rewriting::Config>,
                    summary: "Rewrites the path with regular expressions (sub, gsub, break) and edits query arguments, before mapping rules and routing.",
                    build: |c| build_as(c, url_rewriting::UrlRewritingPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "maintenance_mode",
                    schema: schema_of::<maintenance::Config>,
                    summary: "Answers every request (or those its condition selects) with a fixed status (default 503) and message.",
                    build: |c| build_as(c, maintenance::MaintenancePolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "default_credentials",
                    schema: schema_of::<default_credentials::Config>,
                    summary: "Anonymous access: a request without credentials counts as the configured application.",
                    build: |c| build_as(c, default_credentials::DefaultCredentialsPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "logging",
                    schema: schema_of::<logging::Config>,
                    summary: "Writes an access-log line per request, JSON or text, with chosen fields, to stdout or a file.",
                    build: |c| build_as(c, logging::LoggingPolicy::new),
                    offline: Some(|c| build_as(c, logging::LoggingPolicy::offline)),
                    once: false,
                },
                PolicyInfo {
                    name: "jwt",
                    schema: schema_of::<jwt::Config>,
                    summary: "Validates a JWT (RS256/ES256/HS256, JWKS with rotation, issuer, audience, expiry), maps a claim to the application, checks claims per method and path; WebSocket tokens may come in Sec-WebSocket-Protocol.",
                    build: |c| build_as(c, jwt::JwtPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "upstream_connection",
                    schema: schema_of::<upstream_connection::Config>,
                    summary: "Connect, send and read timeouts towards the product's backends.",
                    build: |c| build_as(c, upstream_connection::UpstreamConnectionPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "retry",
                    schema: schema_of::<retry::Config>,
                    summary: "Retries bodyless requests with idempotent methods on connection failures and chosen statuses.",
                    build: |c| build_as(c, retry::RetryPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "payload_limits",
                    schema: schema_of::<payload_limits::Config>,
                    summary: "Limits request bodies (413) and response bodies (502) in bytes, without buffering them.",
                    build: |c| build_as(c, payload_limits::PayloadLimitsPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "rate_limit",
                    schema: schema_of::<rate_limit::Config>,
                    summary: "Edge limiting independent of plans: fixed window, sliding window, token bucket and concurrent connections, keyed by a template, in memory or Redis.",
                    build: |c| build_as(c, rate_limit::RateLimitPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "upstream",
                    schema: schema_of::<routing::UpstreamConfig>,
                    summary: "Sends requests whose path matches a regular expression to another URL (3scale's Upstream policy).",
                    build: |c| build_as(c, routing::UpstreamPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "routing",
                    schema: schema_of::<routing::RoutingConfig>,
                    summary: "Sends a request to a URL or backend chosen by conditions on path, headers, query arguments or JWT claims, with path replacement and Host header.",
                    build: |c| build_as(c, routing::RoutingPolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "status_code_overwrite",
                    schema: schema_of::<status_code_overwrite::Config>,
                    summary: "Changes response statuses before they reach the client (a backend's 500 as 503), APIcast's statuscode_overwrite.",
                    build: |c| build_as(c, status_code_overwrite::StatusCodeOverwritePolicy::new),
                    offline: None,
                    once: false,
                },
                PolicyInfo {
                    name: "echo",
                    schema: schema_of::<echo::Config>,
                    summary: "Answers with the request as the gateway sees it, as JSON (debugging).",
                    build: |c| build_as(c, echo::EchoPolicy::new),
                    offline: None,
                    once: false,
                },
            ],
            offline: false,
        }
    }
}

impl Registry {
    /// A registry for validating configurations (`tollgate check`, the admin API's
    /// saves): every policy is built and checked as the gateway would, except that no
    /// file is created — `logging` checks its `file` can be written. (No build touches
    /// the network in either registry: fetches are [`Policy::prepare`]'s.)
    pub fn offline() -> Registry {
        Registry { offline: true, ..Registry::default() }
    }

    /// Whether this registry only validates ([`Registry::offline`]).
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Every policy this registry can build, in registration order.
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }

    /// Builds a product's chain from its `policy_chain` entries (`path` names the chain
    /// in errors), by the chain's rules — stated here and nowhere else: disabled entries
    /// are left out; a policy registered `once` may appear once (a second entry is an
    /// error naming the first); [`IMPLICIT_LAST`] runs last when no entry names it.
    /// The chain, and every error found (all entries are tried).
    pub fn build_chain(&self, path: &str, entries: &[tollgate_model::PolicyConfig]) -> (Vec<Built>, Vec<ConfigError>) {
        let mut chain = Vec::new();
        let mut errors = Vec::new();
        for (j, entry) in entries.iter().enumerate() {
            let once = self.policies.iter().any(|p| p.name == entry.name && p.once);
            if once && let Some(first) = entries[..j].iter().position(|e| e.name == entry.name) {
                errors.push(
                    ConfigError::new(
                        format!("{path}[{j}].name"),
                        format!("`{}` is already in the chain at [{first}]", entry.name),
                    )
                    .hint("keep one of them"),
                );
                continue;
            }
            if !entry.enabled {
                continue;
            }
            match self.build(&format!("{path}[{j}]"), &entry.name, &entry.configuration) {
                Ok(policy) => chain.push(Built { entry: Some(j), policy }),
                Err(e) => errors.push(e),
            }
        }
        if !entries.iter().any(|e| e.name == IMPLICIT_LAST) {
            match self.build(path, IMPLICIT_LAST, &serde_json::Value::Null) {
                Ok(policy) => chain.push(Built { entry: None, policy }),
                Err(e) => errors.push(e),
            }
        }
        (chain, errors)
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
            if let Some(hint) = apicast::hint(name) {
                return Err(e.hint(hint));
            }
            return Err(match did_you_mean(name, names.clone()) {
                Some(s) => e.hint(format!("did you mean `{s}`?")),
                None => e.hint(format!("available policies: {}", names.collect::<Vec<_>>().join(", "))),
            });
        };
        // The policy's own hint, else what `explain` finds, else its page.
        let fail = |e: PolicyError, under: &str| {
            let at = format!("{under}{}", e.field).trim_end_matches('.').to_string();
            let c = explain(&format!("{path}.configuration"), if at.is_empty() { "." } else { &at }, &e.message);
            match (e.hint, c.hint.is_some()) {
                (Some(h), _) => c.hint(h),
                (None, true) => c,
                (None, false) => c.hint(format!("see docs/policies/{name}.md")),
            }
        };
        // `condition` is every policy's; the rest is the policy's own.
        let mut own = configuration.clone();
        let condition = own.as_object_mut().and_then(|o| o.remove("condition"));
        let build = match (self.offline, info.offline) {
            (true, Some(offline)) => offline,
            _ => info.build,
        };
        let policy = build(&own).map_err(|e| fail(e, ""))?;
        let Some(condition) = condition else { return Ok(policy) };
        let condition = parse::<condition::ConditionConfig>(&condition)
            .and_then(condition::Condition::new)
            .map_err(|e| fail(e, "condition."))?;
        Ok(Arc::new(condition::Conditional { condition, inner: policy }))
    }
}

/// A policy's `status` option: a status code within `range`, or the error to report.
pub(crate) fn status_option(code: u16, range: std::ops::RangeInclusive<u16>) -> Result<http::StatusCode, PolicyError> {
    http::StatusCode::from_u16(code).ok().filter(|s| range.contains(&s.as_u16())).ok_or_else(|| {
        PolicyError::new("status", format!("{code} is not a status between {} and {}", range.start(), range.end()))
    })
}

/// Compiles a regular expression of a policy's configuration; the error says in one
/// line what is wrong (the regex crate's own message spans several lines).
pub(crate) fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| {
        let why = match &e {
            regex::Error::Syntax(s) => s.lines().last().unwrap_or_default().trim_start_matches("error: ").to_string(),
            other => other.to_string(),
        };
        format!("`{pattern}` is not a regular expression: {why}")
    })
}

/// Deserializes a policy's configuration; on error, the path inside it and the message.
pub(crate) fn parse<T: DeserializeOwned>(configuration: &serde_json::Value) -> Result<T, PolicyError> {
    let value =
        if configuration.is_null() { serde_json::Value::Object(Default::default()) } else { configuration.clone() };
    serde_path_to_error::deserialize(value).map_err(|e| PolicyError::new(e.path().to_string(), e.inner().to_string()))
}

/// What is wrong with a policy's configuration — every builder's one error type. The
/// registry turns it into the configuration error `check` reports, with the policy's
/// place in the chain: `products[0].policy_chain[2].configuration.FIELD: MESSAGE`, and
/// the hint (or, without one, the policy's documentation page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The option, as a path inside the policy's `configuration` (`rules[0].url`);
    /// empty for the configuration as a whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when the message does not say.
    pub hint: Option<String>,
}

impl PolicyError {
    /// An error about `field` (a path inside `configuration`; empty for the whole), without
    /// a hint.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { field: field.into(), message: message.into(), hint: None }
    }

    /// This error with a fix.
    pub fn hint(self, hint: impl Into<String>) -> PolicyError {
        PolicyError { hint: Some(hint.into()), ..self }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field.as_str() {
            "" => write!(f, "{}", self.message),
            field => write!(f, "{field}: {}", self.message),
        }
    }
}
