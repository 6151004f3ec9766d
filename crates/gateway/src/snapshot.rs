//! The compiled, immutable configuration a gateway serves from: host → product,
//! compiled mapping rules, built policy chains, plans and applications. Built once per
//! configuration change, then read lock-free by every request through an `ArcSwap`.

use crate::error::ErrorTemplate;
use crate::mapping::{HITS, Mapper, MetricId, MetricTable, Rule};
use crate::policy::{Policy, Registry, TollgatePolicy};
use crate::upstream::{DEFAULT_CONNECT_TIMEOUT, Upstream};
use arc_swap::ArcSwap;
use http::{HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::pattern::Pattern;
use tollgate_model::period::Period;
use tollgate_model::{
    ApplicationState, Authentication, BaseUrl, Config, ConfigError, ConfigErrors, CredentialsLocation, ErrorMessage,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// Where a gateway reads its current snapshot; the binary swaps in new ones.
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;

pub struct Snapshot {
    pub environment: Environment,
    products: HashMap<Box<str>, Arc<Product>>,
}

impl Snapshot {
    pub fn empty(environment: Environment) -> Self {
        Snapshot { environment, products: HashMap::new() }
    }

    /// The product published on `host` (lower-case, without port) in this environment.
    pub fn product_for_host(&self, host: &str) -> Option<&Arc<Product>> {
        self.products.get(host)
    }

    pub fn product_count(&self) -> usize {
        self.products.len()
    }
}

/// Both environments' snapshots, compiled from one configuration.
pub struct Snapshots {
    pub staging: Snapshot,
    pub production: Snapshot,
}

pub struct BackendUsage {
    /// Path prefix without a trailing `/`; empty for `/`.
    pub prefix: Box<str>,
    pub upstream: Arc<Upstream>,
}

pub struct ErrorTemplates {
    pub auth_missing: ErrorTemplate,
    pub auth_failed: ErrorTemplate,
    pub no_match: ErrorTemplate,
    pub limits_exceeded: ErrorTemplate,
}

pub struct PlanLimit {
    pub metric: MetricId,
    pub period: Period,
    pub value: u64,
}

pub struct Plan {
    pub system_name: Box<str>,
    pub limits: Vec<PlanLimit>,
    pub max_connections: Option<u32>,
}

pub struct Application {
    /// Stable identity for counters: `account/application`.
    pub id: Box<str>,
    pub plan: Arc<Plan>,
    pub state: ApplicationState,
    pub app_keys: Vec<Box<str>>,
}

pub struct Product {
    pub system_name: Box<str>,
    pub metrics: MetricTable,
    pub mapper: Mapper,
    /// Sorted by prefix length, longest first.
    pub usages: Vec<BackendUsage>,
    pub authentication: Authentication,
    pub errors: ErrorTemplates,
    pub chain: Vec<Arc<dyn Policy>>,
    /// Whether the chain holds the `websocket` policy.
    pub websocket: bool,
    pub applications_by_user_key: HashMap<Box<str>, Arc<Application>>,
    pub applications_by_app_id: HashMap<Box<str>, Arc<Application>>,
}

impl Product {
    pub fn credentials_in_query(&self) -> bool {
        self.authentication.credentials_location == CredentialsLocation::Query
    }

    /// The backend usage with the longest prefix matching `path` on a segment boundary,
    /// and the path that remains once the prefix is removed.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&BackendUsage, &'p str)> {
        self.usages.iter().find_map(|u| {
            let rest = path.strip_prefix(&*u.prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((u, rest))
        })
    }
}

fn template(custom: &Option<ErrorMessage>, status: StatusCode, code: &str, message: &str) -> ErrorTemplate {
    match custom {
        Some(m) => ErrorTemplate {
            status: StatusCode::from_u16(m.status).unwrap_or(status),
            content_type: HeaderValue::from_str(&m.content_type).unwrap_or(HeaderValue::from_static("text/plain")),
            body: m.body.clone().into(),
        },
        None => ErrorTemplate::json(status, code, message),
    }
}

/// Compiles a validated configuration into both environments' snapshots. Errors are
/// those only compilation finds: unreadable CA files, unknown policies and bad policy
/// configuration.
pub fn compile(config: &Config, registry: &Registry) -> Result<Snapshots, ConfigErrors> {
    let mut errors = ConfigErrors::default();

    let mut upstreams: HashMap<&str, Arc<Upstream>> = HashMap::new();
    for (i, b) in config.backends.iter().enumerate() {
        let base = match BaseUrl::parse(&b.private_base_url, &["http", "https", "ws", "wss"]) {
            Ok(b) => b,
            Err(e) => {
                errors.push(ConfigError::new(format!("backends[{i}].private_base_url"), e));
                continue;
            }
        };
        if base.is_tls() && !b.tls.verify {
            tracing::warn!(backend = %b.system_name, "TLS certificate verification is OFF for this backend (tls.verify: false)");
        }
        let timeout = b.connect_timeout_ms.map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis);
        match Upstream::new(base, &b.tls, timeout) {
            Ok(u) => {
                upstreams.insert(&b.system_name, Arc::new(u));
            }
            Err(e) => errors.push(
                ConfigError::new(format!("backends[{i}].tls"), e)
                    .hint("point `tls.ca_file` at a readable PEM certificate, or set `tls.verify: false` to opt out"),
            ),
        }
    }
    let backends: HashMap<&str, &tollgate_model::Backend> =
        config.backends.iter().map(|b| (b.system_name.as_str(), b)).collect();

    let mut products: HashMap<&str, Arc<Product>> = HashMap::new();
    let mut hosts: Vec<(String, String, Arc<Product>)> = Vec::new();
    for (i, p) in config.products.iter().enumerate() {
        let path = format!("products[{i}]");
        let mut metrics = MetricTable::new();
        for m in &p.metrics {
            metrics.add(&m.system_name, None);
        }
        for m in &p.methods {
            metrics.add(&m.system_name, Some(HITS));
        }
        let mut usages = Vec::new();
        let mut backend_rules = Vec::new();
        for u in &p.backend_usages {
            let (Some(upstream), Some(backend)) = (upstreams.get(u.backend.as_str()), backends.get(u.backend.as_str()))
            else {
                continue; // reported above, or by validation
            };
            for m in &backend.metrics {
                metrics.add(&m.system_name, None);
            }
            for m in &backend.methods {
                metrics.add(&m.system_name, Some(HITS));
            }
            usages.push(BackendUsage { prefix: u.path.trim_end_matches('/').into(), upstream: upstream.clone() });
            backend_rules.push((u.path.as_str(), &backend.mapping_rules));
        }
        usages.sort_by_key(|u| std::cmp::Reverse(u.prefix.len()));

        let rule = |r: &tollgate_model::MappingRule, under: Option<&str>, metrics: &MetricTable| -> Option<Rule> {
            let pattern = Pattern::parse(&r.pattern).ok()?;
            Some(Rule {
                method: (r.http_method != "ANY").then(|| r.http_method.parse().ok()).flatten(),
                pattern: under.map_or_else(|| pattern.clone(), |u| pattern.under(u)),
                metric: metrics.id(&r.metric)?,
                delta: r.delta,
                last: r.last,
            })
        };
        let mut rules: Vec<Rule> = p.mapping_rules.iter().filter_map(|r| rule(r, None, &metrics)).collect();
        for (under, list) in backend_rules {
            rules.extend(list.iter().filter_map(|r| rule(r, Some(under), &metrics)));
        }

        let mut chain: Vec<Arc<dyn Policy>> = Vec::new();
        let mut has_tollgate = false;
        for (j, entry) in p.policy_chain.iter().enumerate() {
            has_tollgate |= entry.name == "tollgate";
            if !entry.enabled {
                continue;
            }
            match registry.build(&format!("{path}.policy_chain[{j}]"), &entry.name, &entry.configuration) {
                Ok(policy) => chain.push(policy),
                Err(e) => errors.push(e),
            }
        }
        if !has_tollgate {
            chain.push(Arc::new(TollgatePolicy));
        }
        let websocket = chain.iter().any(|p| p.name() == "websocket");

        let plans: HashMap<&str, Arc<Plan>> = p
            .application_plans
            .iter()
            .map(|plan| {
                let limits = plan
                    .limits
                    .iter()
                    .filter_map(|l| {
                        Some(PlanLimit { metric: metrics.id(&l.metric)?, period: l.period, value: l.value })
                    })
                    .collect();
                let compiled = Plan {
                    system_name: plan.system_name.as_str().into(),
                    limits,
                    max_connections: plan.max_connections,
                };
                (plan.system_name.as_str(), Arc::new(compiled))
            })
            .collect();

        let mut by_user_key = HashMap::new();
        let mut by_app_id = HashMap::new();
        for account in &config.accounts {
            for app in account.applications.iter().filter(|a| a.product == p.system_name) {
                let Some(plan) = plans.get(app.plan.as_str()) else {
                    continue;
                };
                let application = Arc::new(Application {
                    id: format!("{}/{}", account.name, app.name).into(),
                    plan: plan.clone(),
                    state: app.state,
                    app_keys: app.app_keys.iter().map(|k| k.as_str().into()).collect(),
                });
                if let Some(k) = &app.user_key {
                    by_user_key.insert(k.as_str().into(), application.clone());
                }
                if let Some(id) = &app.app_id {
                    by_app_id.insert(id.as_str().into(), application);
                }
            }
        }

        let param = &p.authentication.user_key_param;
        let e = &p.errors;
        let product = Arc::new(Product {
            system_name: p.system_name.as_str().into(),
            metrics,
            mapper: Mapper::new(rules),
            usages,
            authentication: p.authentication.clone(),
            errors: ErrorTemplates {
                auth_missing: template(
                    &e.auth_missing,
                    StatusCode::UNAUTHORIZED,
                    "auth_missing",
                    &format!("credentials are missing (e.g. `{param}`)"),
                ),
                auth_failed: template(&e.auth_failed, StatusCode::FORBIDDEN, "auth_failed", "authentication failed"),
                no_match: template(&e.no_match, StatusCode::NOT_FOUND, "no_match", "no mapping rule matched"),
                limits_exceeded: template(
                    &e.limits_exceeded,
                    StatusCode::TOO_MANY_REQUESTS,
                    "limits_exceeded",
                    "usage limit exceeded",
                ),
            },
            chain,
            websocket,
            applications_by_user_key: by_user_key,
            applications_by_app_id: by_app_id,
        });
        for url in [&p.staging_public_base_url, &p.production_public_base_url] {
            if BaseUrl::parse(url, &["http", "https"]).is_err() {
                errors.push(ConfigError::new(path.clone(), format!("invalid public base URL `{url}`")));
            }
        }
        let host = |u: &str| BaseUrl::parse(u, &["http", "https"]).map(|b| b.host).unwrap_or_default();
        hosts.push((host(&p.staging_public_base_url), host(&p.production_public_base_url), product.clone()));
        products.insert(&p.system_name, product);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut staging = Snapshot::empty(Environment::Staging);
    let mut production = Snapshot::empty(Environment::Production);
    for (s, p, product) in hosts {
        staging.products.insert(s.into(), product.clone());
        production.products.insert(p.into(), product);
    }
    Ok(Snapshots { staging, production })
}
