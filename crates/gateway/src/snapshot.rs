//! The compiled, immutable configuration a gateway serves from: host → product,
//! compiled mapping rules, built policy chains, plans and applications. Built once per
//! configuration change, then read lock-free by every request through an `ArcSwap`.

use crate::mapping::{HITS, Mapper, MetricId, MetricTable, Rule};
use crate::policy::{Policy, Registry};
use crate::refusal::ErrorTemplate;
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

pub use tollgate_model::Environment;

/// Where a gateway reads its current snapshot; the binary swaps in new ones. Requests
/// read it lock-free; established WebSockets watch its generation to re-check their
/// application (revocation) without polling.
#[derive(Clone)]
pub struct SnapshotHandle(Arc<SnapshotCell>);

struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    generation: tokio::sync::watch::Sender<u64>,
    /// The generation as a plain atomic, raised after each swap: one load tells a
    /// WebSocket whether what it derived from the snapshot is still current.
    stored: std::sync::atomic::AtomicU64,
}

impl SnapshotHandle {
    /// A handle whose current snapshot is `snapshot`, at generation 0.
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotHandle(Arc::new(SnapshotCell {
            current: ArcSwap::from_pointee(snapshot),
            generation: tokio::sync::watch::channel(0).0,
            stored: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The current snapshot (one atomic increment; it stays valid while held).
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.current.load_full()
    }

    /// Swaps in a new snapshot and tells every watcher.
    pub fn store(&self, snapshot: Snapshot) {
        self.0.current.store(Arc::new(snapshot));
        self.0.stored.fetch_add(1, std::sync::atomic::Ordering::Release);
        self.0.generation.send_modify(|g| *g += 1);
    }

    /// Wakes every watcher without a new snapshot (the generation stays): the gateway
    /// drains, and open WebSockets, which wait on this one channel only, look at why.
    pub fn wake(&self) {
        self.0.generation.send_modify(|_| {});
    }

    /// How many snapshots were stored so far. Read it before `load`: the snapshot
    /// loaded after is at least as new as the generation read.
    pub fn generation(&self) -> u64 {
        self.0.stored.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves at every swap after this call.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.generation.subscribe()
    }
}

/// One environment's compiled configuration: its products by public host. Immutable:
/// a change is a new snapshot.
pub struct Snapshot {
    /// The environment it serves.
    pub environment: Environment,
    products: HashMap<Box<str>, Arc<Product>>,
    /// Verifies client certificates during handshakes against every product's
    /// authorities; `None` when no product asks for client certificates.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl Snapshot {
    /// A snapshot of `environment` with no product.
    pub fn empty(environment: Environment) -> Self {
        Snapshot { environment, products: HashMap::new(), client_verifier: None }
    }

    /// Runs every policy's preparation ([`crate::policy::Policy::prepare`]: the network
    /// work compiling never does, such as a `jwt` policy's JWK Set fetch), before the
    /// snapshot is swapped in. A product published on two hosts is prepared once.
    ///
    /// # Errors
    /// Every preparation that failed, as `staging: product `NAME`: policy `jwt`: jwks_url:
    /// cannot fetch …` (the environment first: a product's two environments prepare
    /// policies of their own, and each says what failed); the caller keeps serving what it served before (or, with nothing
    /// before it, serves this snapshot and says what failed).
    pub async fn prepare(&self) -> Result<(), Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let mut errors = Vec::new();
        for product in self.products.values() {
            if !seen.insert(Arc::as_ptr(product) as usize) {
                continue;
            }
            for policy in &product.chain {
                if let Some(preparing) = policy.prepare()
                    && let Err(e) = preparing.await
                {
                    errors.push(format!(
                        "{}: product `{}`: policy `{}`: {e}",
                        self.environment.as_str(),
                        product.system_name,
                        policy.name()
                    ));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Starts what its backends' endpoints need once it serves — active health checks,
    /// drains, passive-check settings ([`Upstream::activate`]) — and stops what the
    /// previous configuration started that this one no longer asks for. Called as it
    /// is swapped in (after [`Snapshot::prepare`] succeeded), never for a configuration
    /// that was refused.
    pub fn activate(&self) {
        let mut seen = std::collections::HashSet::new();
        for product in self.products.values() {
            for usage in &product.usages {
                if seen.insert(Arc::as_ptr(&usage.upstream) as usize) {
                    usage.upstream.activate();
                }
            }
        }
    }

    /// The product published on `host` (lower-case, without port) in this environment.
    pub fn product_for_host(&self, host: &str) -> Option<&Arc<Product>> {
        self.products.get(host)
    }

    /// How many public hosts have a product.
    pub fn product_count(&self) -> usize {
        self.products.len()
    }
}

/// Both environments' snapshots, compiled from one configuration.
pub struct Snapshots {
    /// The staging gateway's snapshot.
    pub staging: Snapshot,
    /// The production gateway's snapshot.
    pub production: Snapshot,
}

impl Snapshots {
    /// [`Snapshot::prepare`] for both environments.
    ///
    /// # Errors
    /// Every preparation that failed, in either environment.
    pub async fn prepare(&self) -> Result<(), Vec<String>> {
        let (staging, production) = tokio::join!(self.staging.prepare(), self.production.prepare());
        match (staging, production) {
            (Ok(()), Ok(())) => Ok(()),
            (a, b) => Err(a.err().into_iter().chain(b.err()).flatten().collect()),
        }
    }
}

/// A compiled backend usage: the backend that serves a path prefix.
pub struct BackendUsage {
    /// The backend's system_name (the `routing` policy may name it).
    pub backend: Box<str>,
    /// Path prefix without a trailing `/`; empty for `/`.
    pub prefix: Box<str>,
    /// The backend's connector and connection pool.
    pub upstream: Arc<Upstream>,
}

/// A product's answers to the refusals its `errors` may replace.
pub struct ErrorTemplates {
    /// 401 `auth_missing`, unless replaced.
    pub auth_missing: Arc<ErrorTemplate>,
    /// 403 `auth_failed`, unless replaced.
    pub auth_failed: Arc<ErrorTemplate>,
    /// 404 `no_match`, unless replaced.
    pub no_match: Arc<ErrorTemplate>,
    /// 429 `limits_exceeded`, unless replaced.
    pub limits_exceeded: Arc<ErrorTemplate>,
}

/// A usage limit of a compiled application plan.
pub struct PlanLimit {
    /// The metric or method it limits.
    pub metric: MetricId,
    /// The period it counts over.
    pub period: Period,
    /// Most usage allowed in one period.
    pub value: u64,
}

/// A compiled application plan.
pub struct Plan {
    /// The plan's system name (shared with each WebSocket session on the plan).
    pub system_name: Arc<str>,
    /// Its usage limits (on metrics the product knows).
    pub limits: Vec<PlanLimit>,
    /// Most WebSockets open at once per application; `None`: no cap.
    pub max_connections: Option<u32>,
}

/// A compiled application.
pub struct Application {
    /// Stable identity for counters: `account/application` (shared with the key of
    /// [`Applications::by_id`]).
    pub id: Arc<str>,
    /// Its application plan.
    pub plan: Arc<Plan>,
    /// `live`, or `suspended` (refused as `auth_failed`).
    pub state: ApplicationState,
    /// Its app keys (`app_id_app_key` products); any one is accepted.
    pub app_keys: Vec<Box<str>>,
}

/// A product's applications by each credential that identifies one.
///
/// Both environments' snapshots of one compilation hold the same `Arc` when the
/// product's plans compile alike in both (always in DB-less mode; in store mode, when
/// the two versions declare the same metrics for the plans' limits): with 100,000
/// applications, the second copy was about a fifth of a serving node's memory.
#[derive(Default)]
pub struct Applications {
    /// By `account/application`.
    pub by_id: HashMap<Arc<str>, Arc<Application>>,
    /// By `user_key`.
    pub by_user_key: HashMap<Box<str>, Arc<Application>>,
    /// By `app_id`.
    pub by_app_id: HashMap<Box<str>, Arc<Application>>,
    /// By their client certificates' SHA-256 fingerprints (lower-case hex).
    pub by_certificate: HashMap<Box<str>, Arc<Application>>,
}

/// What a product's applications compile from, beside the applications themselves:
/// each plan's name, connection cap and limits with their metrics by name (ids differ
/// between tables). Equal signatures compile to equal [`Applications`].
type PlanSignature = Vec<(Arc<str>, Option<u32>, Vec<(Box<str>, Period, u64)>)>;

/// Applications compiled for one product in this compilation, for the next environment.
struct SharedApplications {
    /// The accounts they came from (address and length: the same slice).
    accounts: (usize, usize),
    plans: PlanSignature,
    built: Arc<Applications>,
}

/// A compiled product, as requests read it.
pub struct Product {
    /// The product's system name (shared with each WebSocket session of the product).
    pub system_name: Arc<str>,
    /// The certificate TLS listeners serve for its public host (SNI), if it has one.
    pub certificate: Option<Arc<rustls::sign::CertifiedKey>>,
    /// What it asks of clients' certificates (mutual TLS), if anything.
    pub client_auth: Option<crate::sni::ClientAuth>,
    /// This product's metrics, found on its first request.
    pub stats: std::sync::OnceLock<Arc<crate::metrics::ProductMetrics>>,
    /// Its metrics and methods, with those of the backends it uses.
    pub metrics: MetricTable,
    /// Its mapping rules: the product's, then each backend usage's under its path.
    pub mapper: Mapper,
    /// Sorted by prefix length, longest first.
    pub usages: Vec<BackendUsage>,
    /// How requests identify their application.
    pub authentication: Authentication,
    /// Its answers to the configurable refusals.
    pub errors: ErrorTemplates,
    /// The built policy chain, in order (`tollgate` last unless the chain names it).
    pub chain: Vec<Arc<dyn Policy>>,
    /// Whether the chain holds the `websocket` policy.
    pub websocket: bool,
    /// What the `websocket` policy asks of upgraded connections.
    pub websocket_config: WebSocketConfig,
    /// Its applications, by each credential that identifies one; shared with the other
    /// environment's compilation of the product when both have the same plans.
    pub applications: Arc<Applications>,
    /// How its request paths are made canonical (`request_path`).
    pub path_rules: crate::path::PathRules,
    /// This environment's public base URL, `scheme://host[:port]`, and whether
    /// redirects to a backend's private URL are rewritten to it (`rewrite_redirects`).
    pub public_base: Box<str>,
    /// Whether such redirects are rewritten (`rewrite_redirects`).
    pub rewrite_redirects: bool,
}

impl Product {
    /// Whether credentials are read from the query string (`credentials_location: query`).
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

/// A product's answer to a configurable refusal: its own (`custom`), or the JSON one,
/// made once per compilation and shared by every product that answers alike (with
/// 10,000 products, four answers each in two environments were 5 MB of copies).
fn template(
    shared: &mut HashMap<(StatusCode, &'static str, String), Arc<ErrorTemplate>>,
    custom: &Option<ErrorMessage>,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Arc<ErrorTemplate> {
    match custom {
        Some(m) => Arc::new(ErrorTemplate {
            status: StatusCode::from_u16(m.status).unwrap_or(status),
            content_type: HeaderValue::from_str(&m.content_type).unwrap_or(HeaderValue::from_static("text/plain")),
            body: m.body.clone().into(),
        }),
        None => shared
            .entry((status, code, message))
            .or_insert_with_key(|(status, code, message)| Arc::new(ErrorTemplate::json(*status, code, message)))
            .clone(),
    }
}

/// A product to compile, with the backends it may use and the paths errors name.
pub struct ProductSource<'a> {
    /// Where errors about the product point, e.g. `products[0]`.
    pub path: String,
    /// The declarative product.
    pub product: &'a tollgate_model::Product,
    /// The backends it may use.
    pub backends: Vec<BackendSource<'a>>,
}

/// A backend a product may use, with where errors about it point.
pub struct BackendSource<'a> {
    /// Where errors about the backend point, e.g. `backends[2]`; also the key under
    /// which its connection pool is shared within one compilation.
    pub path: String,
    /// The declarative backend.
    pub backend: &'a tollgate_model::Backend,
}

/// Connection pools by backend path, shared by the products (and environments) of one
/// compilation.
#[derive(Default)]
pub struct Upstreams {
    built: HashMap<String, Option<Arc<Upstream>>>,
    /// Backends (by path) that failed to build: reported once, not per environment.
    failed: std::collections::HashSet<String>,
    /// Backends (by path) whose unverified TLS was logged.
    warned: std::collections::HashSet<String>,
    /// The environment being compiled: each keeps its own view of an endpoint's
    /// health, load and drain ([`EndpointState::shared`]); `None` builds unshared
    /// upstreams (validation).
    environment: Option<Environment>,
    /// Validation only (`check`): nothing is logged, as nothing will serve.
    quiet: bool,
    /// Products' certificates by product path, loaded once for both environments.
    certificates: HashMap<String, Option<Arc<rustls::sign::CertifiedKey>>>,
    /// Products' applications by product system name, compiled once for both
    /// environments when they compile alike ([`Applications`]).
    applications: HashMap<Box<str>, SharedApplications>,
    /// The JSON answers to configurable refusals, shared by the products ([`template`]).
    templates: HashMap<(StatusCode, &'static str, String), Arc<ErrorTemplate>>,
}

impl Upstreams {
    /// The backend's connector and pool; `connect` (a product's `upstream_connection`)
    /// overrides the backend's connect timeout, in an upstream of its own.
    fn get_or_build(
        &mut self,
        source: &BackendSource<'_>,
        connect: Option<Duration>,
        errors: &mut ConfigErrors,
    ) -> Option<Arc<Upstream>> {
        let env = self.environment.map_or("", Environment::as_str);
        let key = match connect {
            None => format!("{env}:{}", source.path),
            Some(d) => format!("{env}:{}@{}ms", source.path, d.as_millis()),
        };
        if let Some(u) = self.built.get(&key) {
            return u.clone();
        }
        // Failures are remembered too, so each is reported once.
        if self.failed.contains(&source.path) {
            return None;
        }
        let (b, path) = (source.backend, &source.path);
        let base = match BaseUrl::parse(&b.private_base_url, &["http", "https", "ws", "wss"]) {
            Ok(b) => b,
            Err(e) => {
                errors.push(ConfigError::new(format!("{path}.private_base_url"), e));
                self.failed.insert(source.path.clone());
                return None;
            }
        };
        if base.is_tls() && !b.tls.verify && !self.quiet && self.warned.insert(source.path.clone()) {
            tracing::warn!(backend = %b.system_name, "TLS certificate verification is OFF for this backend (tls.verify: false)");
        }
        let timeout =
            connect.unwrap_or_else(|| b.connect_timeout_ms.map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis));
        let endpoints: Vec<crate::upstream::EndpointSpec<'_>> = b
            .endpoints
            .iter()
            .map(|e| crate::upstream::EndpointSpec { address: &e.address, weight: e.weight, drain: e.drain })
            .collect();
        let balancing = crate::upstream::FleetOptions {
            protocol: b.protocol,
            algorithm: b.load_balancing.algorithm,
            hash_on: b.load_balancing.hash_on.clone(),
            passive: b.health_checks.passive.clone(),
            active: b.health_checks.active.clone(),
            when_all_unhealthy: b.health_checks.when_all_unhealthy,
            circuit_breaker: b.circuit_breaker.clone(),
            drain_timeout: b.drain_timeout_ms.map_or(Duration::from_secs(60), Duration::from_millis),
            dns_refresh: b.dns_refresh_ms.map(Duration::from_millis),
        };
        match Upstream::with_endpoints(&b.system_name, base, &b.tls, timeout, &endpoints, balancing, self.environment) {
            Ok(u) => {
                let u = Arc::new(u);
                self.built.insert(key, Some(u.clone()));
                Some(u)
            }
            Err(e) => {
                let at = if e.field.is_empty() { format!("{path}.tls") } else { format!("{path}.tls.{}", e.field) };
                let hint = if e.field.starts_with("client_") {
                    "point `tls.client_cert_file` and `tls.client_key_file` at the PEM certificate and its private key"
                } else {
                    "point `tls.ca_file` at a readable PEM certificate (or paste it as `tls.ca_pem`), or set `tls.verify: false` to opt out"
                };
                errors.push(ConfigError::new(at, e.message).hint(hint));
                self.failed.insert(source.path.clone());
                None
            }
        }
    }
}

/// The one validation of a configuration, shared by `tollgate check`, the admin API's
/// saves and the console (which saves through the admin API), so that all three refuse
/// the same things with the same message: the model's rules (names, references,
/// patterns, credentials) and then everything compiling checks — CA files read and
/// parsed, every policy built from its configuration — as the gateways would, but
/// offline (nothing fetched, no file made; see [`Registry::offline`]). With `draft`, a
/// product may still lack backend usages (the admin API's drafts).
///
/// # Errors
/// Every problem found, each with its path (`products[0].policy_chain[1].configuration.…`)
/// and a fix.
pub fn check(config: &Config, draft: bool) -> Result<(), ConfigErrors> {
    match draft {
        true => tollgate_model::validate_draft(config)?,
        false => tollgate_model::validate(config)?,
    }
    check_loaded(config)
}

/// [`check`] of a configuration that [`tollgate_model::parse_str`] or
/// [`tollgate_model::load_file`] returned, which hold the model's rules already: only
/// what compiling checks is left (`tollgate check` of 100,000 applications validated
/// them twice).
///
/// # Errors
/// As [`check`].
pub fn check_loaded(config: &Config) -> Result<(), ConfigErrors> {
    // Each environment's snapshot dropped before the next is compiled: checking holds
    // no more than one of them at a time.
    let errors = compile_each(config, &Registry::offline(), drop);
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Compiles a validated declarative configuration into both environments' snapshots
/// (DB-less mode: the file is the configuration of both). Errors are those only
/// compilation finds: unreadable CA files, unknown policies, bad policy configuration.
pub fn compile(config: &Config, registry: &Registry) -> Result<Snapshots, ConfigErrors> {
    let mut compiled = Vec::with_capacity(2);
    let errors = compile_each(config, registry, |snapshot| compiled.push(snapshot));
    let mut compiled = compiled.into_iter();
    match (errors.is_empty(), compiled.next(), compiled.next()) {
        (true, Some(staging), Some(production)) => Ok(Snapshots { staging, production }),
        _ => Err(errors),
    }
}

/// Compiles staging's snapshot and then production's, handing each to `each` as it is
/// made; the problems found, each once.
fn compile_each(config: &Config, registry: &Registry, mut each: impl FnMut(Snapshot)) -> ConfigErrors {
    let mut errors = ConfigErrors::default();
    let mut upstreams = Upstreams { quiet: registry.is_offline(), ..Upstreams::default() };
    let backends: Vec<BackendSource<'_>> = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| BackendSource { path: format!("backends[{i}]"), backend: b })
        .collect();
    for b in &backends {
        upstreams.get_or_build(b, None, &mut errors);
    }
    let sources: Vec<ProductSource<'_>> = config
        .products
        .iter()
        .enumerate()
        .map(|(i, p)| ProductSource {
            path: format!("products[{i}]"),
            product: p,
            backends: backends.iter().map(|b| BackendSource { path: b.path.clone(), backend: b.backend }).collect(),
        })
        .collect();
    let (staging, staging_errors) =
        compile_environment(Environment::Staging, &sources, &config.accounts, registry, &mut upstreams);
    each(staging);
    let (production, production_errors) =
        compile_environment(Environment::Production, &sources, &config.accounts, registry, &mut upstreams);
    each(production);
    // The production pass finds the same problems as staging: each is reported once,
    // and one only production finds (none is known, but none may go unsaid) as well.
    for e in staging_errors.0.into_iter().chain(production_errors.0) {
        if !errors.0.contains(&e) {
            errors.push(e);
        }
    }
    errors
}

/// Compiles one environment's snapshot from its products (each with the backends it
/// may use) and the accounts whose applications use them. A product that fails to
/// compile is left out of the snapshot and its errors are returned beside it, so one
/// broken product never takes the others down.
pub fn compile_environment(
    environment: Environment,
    sources: &[ProductSource<'_>],
    accounts: &[tollgate_model::Account],
    registry: &Registry,
    upstreams: &mut Upstreams,
) -> (Snapshot, ConfigErrors) {
    let mut errors = ConfigErrors::default();
    let mut snapshot = Snapshot::empty(environment);
    upstreams.environment = (!upstreams.quiet).then_some(environment);
    // Each product's applications, found once: a scan of every application per product
    // would cost products × applications (10,000 × 100,000 string comparisons).
    let mut applications: HashMap<&str, Vec<(&tollgate_model::Account, &tollgate_model::Application)>> = HashMap::new();
    for account in accounts {
        for app in &account.applications {
            applications.entry(app.product.as_str()).or_default().push((account, app));
        }
    }
    for source in sources {
        let p = source.product;
        let url = match environment {
            Environment::Staging => &p.staging_public_base_url,
            Environment::Production => &p.production_public_base_url,
        };
        let base = match BaseUrl::parse(url, &["http", "https"]) {
            Ok(base) => base,
            Err(e) => {
                errors.push(ConfigError::new(format!("{}.{}_public_base_url", source.path, environment.as_str()), e));
                continue;
            }
        };
        // What redirects to a backend's private URL become (scheme, host and port as
        // published; the public base URL's path is not part of routing).
        let default_port = if base.scheme == "https" { 443 } else { 80 };
        let host = if base.host.contains(':') { format!("[{}]", base.host) } else { base.host.clone() };
        let public = match base.port == default_port {
            true => format!("{}://{host}", base.scheme),
            false => format!("{}://{host}:{}", base.scheme, base.port),
        };
        let apps = applications.get(source.product.system_name.as_str()).map_or(&[][..], Vec::as_slice);
        let apps = (apps, (accounts.as_ptr() as usize, accounts.len()));
        if let Some(product) = compile_product(source, &public, apps, registry, upstreams, &mut errors) {
            snapshot.products.insert(base.host.into(), product);
        }
    }
    let verifier =
        crate::sni::listener_client_verifier(snapshot.products.values().filter_map(|p| p.client_auth.as_ref()));
    snapshot.client_verifier = verifier;
    (snapshot, errors)
}

fn compile_product(
    source: &ProductSource<'_>,
    public_base: &str,
    (applications, accounts): (&[(&tollgate_model::Account, &tollgate_model::Application)], (usize, usize)),
    registry: &Registry,
    upstreams: &mut Upstreams,
    errors: &mut ConfigErrors,
) -> Option<Arc<Product>> {
    let (p, path) = (source.product, &source.path);
    let before = errors.0.len();
    let mut metrics = MetricTable::new();
    for m in &p.metrics {
        metrics.add(&m.system_name, None);
    }
    for m in &p.methods {
        metrics.add(&m.system_name, Some(HITS));
    }
    let mut usages = Vec::new();
    let mut backend_rules = Vec::new();
    let connect = p
        .policy_chain
        .iter()
        .find(|e| e.enabled && e.name == "upstream_connection")
        .and_then(|e| crate::policy::upstream_connection::connect_timeout(&e.configuration));
    for u in &p.backend_usages {
        let Some(backend) = source.backends.iter().find(|b| b.backend.system_name == u.backend) else {
            errors
                .push(ConfigError::new(format!("{path}.backend_usages"), format!("no backend named `{}`", u.backend)));
            continue;
        };
        let Some(upstream) = upstreams.get_or_build(backend, connect, errors) else { continue };
        for m in &backend.backend.metrics {
            metrics.add(&m.system_name, None);
        }
        for m in &backend.backend.methods {
            metrics.add(&m.system_name, Some(HITS));
        }
        usages.push(BackendUsage {
            backend: u.backend.as_str().into(),
            prefix: u.path.trim_end_matches('/').into(),
            upstream,
        });
        backend_rules.push((u.path.as_str(), &backend.backend.mapping_rules));
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

    let (built, chain_errors) = registry.build_chain(&format!("{path}.policy_chain"), &p.policy_chain);
    for e in chain_errors {
        errors.push(e);
    }
    // The first policy with WebSocket settings allows upgrades and governs them.
    let websocket_policy = built.iter().find_map(|b| Some((b.entry?, b.policy.websocket_settings()?.clone())));
    let websocket = websocket_policy.is_some();
    let websocket_config = match &websocket_policy {
        Some((j, settings)) => websocket_config(settings, &format!("{path}.policy_chain[{j}]"), &metrics, errors),
        None => WebSocketConfig::default(),
    };
    let chain: Vec<Arc<dyn Policy>> = built.into_iter().map(|b| b.policy).collect();

    let plans: HashMap<&str, Arc<Plan>> = p
        .application_plans
        .iter()
        .map(|plan| {
            let limits = plan
                .limits
                .iter()
                .filter_map(|l| Some(PlanLimit { metric: metrics.id(&l.metric)?, period: l.period, value: l.value }))
                .collect();
            let compiled =
                Plan { system_name: plan.system_name.as_str().into(), limits, max_connections: plan.max_connections };
            (plan.system_name.as_str(), Arc::new(compiled))
        })
        .collect();

    let signature: PlanSignature = plans
        .values()
        .map(|plan| {
            let limits = plan.limits.iter().map(|l| (metrics.name(l.metric).into(), l.period, l.value)).collect();
            (plan.system_name.clone(), plan.max_connections, limits)
        })
        .collect();
    let shared = upstreams
        .applications
        .get(p.system_name.as_str())
        .filter(|s| s.accounts == accounts && same_plans(&s.plans, &signature))
        .map(|s| s.built.clone());
    let applications = match shared {
        Some(built) => built,
        None => {
            let built = Arc::new(compile_applications(applications, &plans));
            let entry = SharedApplications { accounts, plans: signature, built: built.clone() };
            upstreams.applications.insert(p.system_name.as_str().into(), entry);
            built
        }
    };
    if errors.0.len() > before {
        return None;
    }

    use crate::upstream::Pem;
    let pair = p.tls.as_ref().and_then(|t| {
        Some((
            Pem::pick(t.cert_file.as_ref(), t.cert_pem.as_ref())?,
            Pem::pick(t.key_file.as_ref(), t.key_pem.as_ref())?,
        ))
    });
    let certificate = match pair {
        None => None,
        Some((cert, key)) => {
            let loaded = upstreams.certificates.entry(path.clone()).or_insert_with(|| {
                crate::sni::load_product_certificate(cert, key, p.tls.as_ref().and_then(|t| t.ocsp_file.as_deref()))
                    .map_err(|(field, e)| {
                        let hint = match field {
                            "ocsp_file" => "point `tls.ocsp_file` at a DER OCSP response for the product's certificate (`openssl ocsp … -respout FILE`), or drop it",
                            _ => "give `tls.cert_file` and `tls.key_file` (or `cert_pem` and `key_pem`) a current PEM certificate (chain, leaf first) and its unencrypted key",
                        };
                        errors.push(ConfigError::new(format!("{path}.tls.{field}"), e).hint(hint));
                    })
                    .ok()
            });
            Some(loaded.clone()?)
        }
    };
    let authorities = p
        .tls
        .as_ref()
        .and_then(|t| Some((Pem::pick(t.client_ca_file.as_ref(), t.client_ca_pem.as_ref())?, t.client_certificates)));
    let client_auth = match authorities {
        None => None,
        Some((ca, mode)) => {
            let required = mode == Some(tollgate_model::ClientCertificates::Required);
            match crate::sni::load_client_auth(ca, required) {
                Ok(auth) => Some(auth),
                Err(e) => {
                    let field = ca.key("client_ca_file", "client_ca_pem");
                    errors.push(ConfigError::new(format!("{path}.tls.{field}"), e).hint(
                        "give `client_ca_file` (or `client_ca_pem`) the PEM certificates of the authorities that issue the clients' certificates",
                    ));
                    return None;
                }
            }
        }
    };
    let param = &p.authentication.user_key_param;
    let e = &p.errors;
    Some(Arc::new(Product {
        system_name: p.system_name.as_str().into(),
        stats: std::sync::OnceLock::new(),
        metrics,
        mapper: Mapper::new(rules),
        usages,
        authentication: p.authentication.clone(),
        errors: ErrorTemplates {
            auth_missing: template(
                &mut upstreams.templates,
                &e.auth_missing,
                StatusCode::UNAUTHORIZED,
                "auth_missing",
                format!("credentials are missing (e.g. `{param}`)"),
            ),
            auth_failed: template(
                &mut upstreams.templates,
                &e.auth_failed,
                StatusCode::FORBIDDEN,
                "auth_failed",
                "authentication failed".into(),
            ),
            no_match: template(
                &mut upstreams.templates,
                &e.no_match,
                StatusCode::NOT_FOUND,
                "no_match",
                "no mapping rule matched".into(),
            ),
            limits_exceeded: template(
                &mut upstreams.templates,
                &e.limits_exceeded,
                StatusCode::TOO_MANY_REQUESTS,
                "limits_exceeded",
                "usage limit exceeded".into(),
            ),
        },
        public_base: public_base.into(),
        certificate,
        client_auth,
        rewrite_redirects: p.rewrite_redirects,
        path_rules: crate::path::PathRules {
            keep_encoded_slashes: p.request_path.encoded_slashes == tollgate_model::EncodedSlashes::Keep,
            merge_slashes: p.request_path.merge_slashes,
        },
        chain,
        websocket,
        websocket_config,
        applications,
    }))
}

/// Whether two plan signatures are the same plans (in any order: they come from a map).
fn same_plans(a: &PlanSignature, b: &PlanSignature) -> bool {
    a.len() == b.len() && a.iter().all(|plan| b.contains(plan))
}

/// The product's applications (those on a plan it has), indexed by each credential.
fn compile_applications(
    applications: &[(&tollgate_model::Account, &tollgate_model::Application)],
    plans: &HashMap<&str, Arc<Plan>>,
) -> Applications {
    let mut out = Applications::default();
    for &(account, app) in applications {
        let Some(plan) = plans.get(app.plan.as_str()) else { continue };
        let application = Arc::new(Application {
            id: format!("{}/{}", account.name, app.name).into(),
            plan: plan.clone(),
            state: app.state,
            app_keys: app.app_keys.iter().map(|k| k.as_str().into()).collect(),
        });
        out.by_id.insert(application.id.clone(), application.clone());
        if let Some(k) = &app.user_key {
            out.by_user_key.insert(k.as_str().into(), application.clone());
        }
        for fingerprint in app.client_certificates.iter().filter_map(|f| tollgate_model::normalize_fingerprint(f)) {
            out.by_certificate.insert(fingerprint.into(), application.clone());
        }
        if let Some(id) = &app.app_id {
            out.by_app_id.insert(id.as_str().into(), application);
        }
    }
    out
}

/// What the `websocket` policy asks of upgraded connections, compiled.
#[derive(Debug, Clone, Default)]
pub struct WebSocketConfig {
    /// Largest message in payload bytes as on the wire; a bigger one closes with 1009.
    pub max_message_bytes: Option<u64>,
    /// (metric, direction, delta)
    pub meter: Option<(MetricId, crate::policy::websocket::Direction, u64)>,
    /// (metric, direction)
    pub meter_bytes: Option<(MetricId, crate::policy::websocket::Direction)>,
    /// What a message beyond a usage limit does.
    pub on_limit_exceeded: crate::policy::websocket::OnLimitExceeded,
    /// Time without a frame from either side after which the connection closes (1001).
    pub idle_timeout: Option<Duration>,
    /// Time between the gateway's pings to both sides.
    pub ping_interval: Option<Duration>,
    /// `pong_timeout`, or `ping_interval` when only that is set.
    pub pong_timeout: Option<Duration>,
    /// Age at which a connection closes (1001), however busy.
    pub max_connection_duration: Option<Duration>,
}

/// The product's WebSocket settings (its `websocket` policy's, at `at` in the
/// configuration), with their metrics resolved.
fn websocket_config(
    c: &crate::policy::websocket::Config,
    at: &str,
    metrics: &MetricTable,
    errors: &mut ConfigErrors,
) -> WebSocketConfig {
    // A metered metric must exist in the product; a missing one is a configuration error.
    let mut resolve = |key: &str, metric: &str| match metrics.id(metric) {
        Some(id) => Some(id),
        None => {
            errors.push(
                ConfigError::new(
                    format!("{at}.configuration.{key}.metric"),
                    format!("no metric or method named `{metric}`"),
                )
                .hint("declare it under `metrics` first"),
            );
            None
        }
    };
    let meter = c
        .meter_messages
        .as_ref()
        .and_then(|m| resolve("meter_messages", &m.metric).map(|id| (id, m.direction, m.delta)));
    let meter_bytes =
        c.meter_bytes.as_ref().and_then(|m| resolve("meter_bytes", &m.metric).map(|id| (id, m.direction)));
    WebSocketConfig {
        max_message_bytes: c.max_message_bytes,
        meter,
        meter_bytes,
        on_limit_exceeded: c.on_limit_exceeded,
        idle_timeout: c.idle_timeout.map(Duration::from_secs),
        ping_interval: c.ping_interval.map(Duration::from_secs),
        pong_timeout: c.ping_interval.map(|ping| Duration::from_secs(c.pong_timeout.unwrap_or(ping))),
        max_connection_duration: c.max_connection_duration.map(Duration::from_secs),
    }
}

impl Product {
    /// The application a WebSocket was opened for, if its credentials still identify
    /// it and it is live; otherwise why the connection must close.
    pub fn reauthorize(
        &self,
        credential: &crate::policy::Credential,
        app_id: &str,
    ) -> Result<Arc<Application>, &'static str> {
        use crate::policy::Credential;
        let app = match credential {
            Credential::UserKey(k) => self.applications.by_user_key.get(k),
            Credential::AppId { app_id, app_key } => {
                self.applications.by_app_id.get(app_id).filter(|a| a.app_keys.iter().any(|k| k == app_key))
            }
            Credential::ClientId(app_id) => self.applications.by_app_id.get(app_id),
            Credential::ClientCertificate(fingerprint) => self.applications.by_certificate.get(fingerprint),
        };
        match app {
            Some(a) if &*a.id != app_id => Err("credentials revoked"),
            Some(a) if a.state == ApplicationState::Suspended => Err("application suspended"),
            Some(a) => Ok(a.clone()),
            None => Err("credentials revoked"),
        }
    }
}
