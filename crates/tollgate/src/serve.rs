//! `tollgate serve`: both gateways and the admin listener in one process.
//!
//! DB-less mode (`--config FILE`): the file is the configuration of both environments.
//! SIGHUP re-reads it; if the new file is invalid the error is logged and the running
//! configuration stays. A swap never touches established connections.

use crate::cli::{GatewayArgs, ServeArgs};
use anyhow::{Context as _, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tollgate_admin::AdminState;
use tollgate_counters::{Clock, Counters, FailureMode, SystemClock};
use tollgate_gateway::analytics::Analytics;
use tollgate_gateway::metrics::ProductTotals;
use tollgate_gateway::policy::Registry;
use tollgate_gateway::session::Connections;
use tollgate_gateway::{
    Environment, Gateway, Health, ListenerOptions, Metrics, Shared, SnapshotHandle, Snapshots, Workers, compile,
};
use tollgate_model::{Config, ConfigErrors};
use tollgate_store::{Store, TrafficRow, UsageRow};

/// Reads, validates and compiles a configuration file.
pub fn load(path: &Path, registry: &Registry) -> Result<Snapshots, ConfigErrors> {
    let config = tollgate_model::load_file(path)?;
    compile(&config, registry)
}

/// [`load`] on a thread of its own, awaited without holding up the async runtime:
/// compiling 10,000 products and 100,000 applications takes one to two seconds, during
/// which the admin listener (`/status/ready`, `/metrics`, the admin API), signals and
/// the counters' background work would otherwise wait (the gateways' worker threads
/// serve either way).
pub async fn load_apart(path: &Path, registry: &Arc<Registry>) -> Result<Snapshots, ConfigErrors> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (owned, shared) = (path.to_path_buf(), registry.clone());
    let spawned = std::thread::Builder::new().name("tollgate-config".into()).spawn(move || {
        let _ = tx.send(load(&owned, &shared));
    });
    match spawned {
        Ok(_) => rx.await.unwrap_or_else(|_| {
            Err(ConfigErrors(vec![tollgate_model::ConfigError::new(
                path.display().to_string(),
                "loading the configuration failed unexpectedly (see the log)",
            )]))
        }),
        // No thread to be had: here, then.
        Err(_) => load(path, registry),
    }
}

/// A listen address: `HOST:PORT` or `tls://HOST:PORT`.
fn parse_listen(flag: &str, value: &str) -> anyhow::Result<(String, bool)> {
    let (addr, tls) = match value.strip_prefix("tls://") {
        Some(a) => (a, true),
        None => (value.strip_prefix("http://").unwrap_or(value), false),
    };
    if addr.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
        bail!("--{flag} `{value}`: write HOST:PORT, or tls://HOST:PORT for TLS");
    }
    Ok((addr.to_string(), tls))
}

async fn bind(flag: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("--{flag}: cannot listen on {addr}"))
}

/// Where the configuration comes from.
pub enum Source {
    /// DB-less: a declarative file, re-read on SIGHUP.
    File(PathBuf),
    /// DB-less: a configuration built in memory (the demo).
    Inline(Box<Config>),
    /// The store (SQLite or PostgreSQL URL), edited through the admin API; the gateways
    /// follow every change.
    Store(String),
}

/// What a process runs: everything (`serve`), or one environment's data plane
/// (`gateway`: no admin API, the configuration followed from the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Node(Environment),
}

/// A running `serve`: its bound addresses and the means to reload and stop it.
pub struct Server {
    pub staging: SocketAddr,
    pub production: SocketAddr,
    pub admin: SocketAddr,
    pub staging_tls: bool,
    pub production_tls: bool,
    /// A token created on first start, to print once.
    pub admin_token: Option<String>,
    /// In store mode: the admin API's state and the generation of changes the gateways
    /// have applied.
    admin_state: Option<(Arc<AdminState>, watch::Receiver<u64>)>,
    analytics: Option<Arc<Analytics>>,
    /// This node's traffic and open WebSockets, for the console's dashboard (store mode).
    reporter: Arc<TrafficReporter>,
    /// Taken by every write of analytics: a flush on demand waits for one in flight,
    /// so when it returns everything recorded before it is in the store.
    flushing: Arc<tokio::sync::Mutex<()>>,
    source: Source,
    registry: Arc<Registry>,
    /// The usage counters, to give leased units back at shutdown.
    counters: Arc<Counters>,
    handles: [SnapshotHandle; 2],
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    pub async fn start(args: &ServeArgs, source: Source) -> anyhow::Result<Server> {
        Server::start_as(args, source, Role::All).await
    }

    pub async fn start_as(args: &ServeArgs, source: Source, role: Role) -> anyhow::Result<Server> {
        Server::start_with_clock(args, source, role, Arc::new(SystemClock)).await
    }

    /// [`Server::start_as`] reading Unix time from `clock` wherever a request, a usage
    /// window, an analytics minute or a dashboard reads it (trace and log timestamps
    /// keep the wall clock): tests run at a time they choose, never across a minute
    /// they did not choose.
    pub async fn start_with_clock(
        args: &ServeArgs,
        source: Source,
        role: Role,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        // Flags that contradict each other are refused before anything is opened.
        if args.shared.counters_lease > 0 && args.shared.counters == "memory" {
            bail!(
                "--counters-lease (TOLLGATE_COUNTERS_LEASE): quota leasing shares Redis counters between nodes; set --counters redis://… or leave --counters-lease at 0"
            );
        }
        // Before any configuration is activated: activation starts resolving names.
        if let Some(list) = &args.listener.resolver {
            let servers = list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    let s = s.trim();
                    s.parse::<std::net::SocketAddr>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                        .map_err(|_| anyhow::anyhow!("--resolver: `{s}` is not an IP address or IP:PORT (write 10.0.0.2, 10.0.0.2:5353 or [fd00::2]:53)"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if servers.is_empty() {
                bail!("--resolver: name at least one name server (IP or IP:PORT)");
            }
            let taken = tollgate_gateway::upstream::dns::use_name_servers(servers)
                .map_err(|e| anyhow::anyhow!("--resolver: {e}"))?;
            if !taken {
                tracing::warn!(
                    "--resolver: this process already resolves with other name servers; the first ones stay"
                );
            }
        }
        let trusted_proxies = args
            .admin_trusted_proxies
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| tollgate_gateway::policy::ip_check::Cidr::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                anyhow::anyhow!("--admin-trusted-proxies: {e} (write addresses or CIDR ranges, comma-separated)")
            })?;
        let registry = Arc::new(Registry::default());
        let mut store = None;
        let mut revision = 0;
        let snapshots = match &source {
            Source::File(path) => load_apart(path, &registry)
                .await
                .map_err(|e| anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display()))?,
            Source::Inline(config) => {
                compile(config, &registry).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?
            }
            Source::Store(url) => {
                let opened = Store::open(url).await.with_context(|| format!("--store {url}"))?;
                // Read before loading: a change made meanwhile is then seen as new.
                revision = opened.config_revision().await.with_context(|| format!("--store {url}"))?;
                let (staging, production) = tollgate_admin::live::snapshots(&opened, &registry)
                    .await
                    .map_err(|e| anyhow::anyhow!("loading the configuration from the store: {}", e.message))?;
                store = Some(opened);
                Snapshots { staging, production }
            }
        };
        // The network work compiling never does (JWK Set fetches). A file or an inline
        // configuration that cannot be prepared does not start, as one that does not
        // compile; the store's is served, and its failures are said (the policy retries
        // in the background).
        if let Err(errors) = snapshots.prepare().await {
            let errors = errors.join("\n  ");
            match &source {
                Source::Store(_) => tracing::error!("configuration from the store, not fully prepared:\n  {errors}"),
                _ => bail!("the configuration cannot be served:\n  {errors}"),
            }
        }
        let (staging_addr, staging_tls) = parse_listen("staging-listen", &args.staging_listen)?;
        let (production_addr, production_tls) = parse_listen("production-listen", &args.production_listen)?;
        let acceptor = if staging_tls || production_tls {
            let (Some(cert), Some(key)) = (&args.listener.tls_cert, &args.listener.tls_key) else {
                bail!("a tls:// listener needs --tls-cert FILE and --tls-key FILE");
            };
            let settings = tollgate_gateway::server::TlsSettings {
                tls13_only: args.listener.tls_min_version == "1.3",
                cipher_suites: args
                    .listener
                    .tls_ciphers
                    .as_ref()
                    .map(|list| list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
                ocsp_file: args.listener.tls_ocsp_file.clone(),
            };
            // Checked now, so a bad flag stops `serve` before anything listens; each TLS
            // listener then gets its own, choosing products' certificates by SNI.
            tollgate_gateway::server::tls_acceptor_with(cert, key, &settings, None)
                .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key/--tls-ciphers/--tls-ocsp-file: {e}"))?;
            Some((cert.clone(), key.clone(), settings))
        } else {
            None
        };

        let serves = |env| role == Role::All || role == Role::Node(env);
        let staging_listener = match serves(Environment::Staging) {
            true => Some(bind(if role == Role::All { "staging-listen" } else { "listen" }, &staging_addr).await?),
            false => None,
        };
        let production_listener = match serves(Environment::Production) {
            true => Some(bind(if role == Role::All { "production-listen" } else { "listen" }, &production_addr).await?),
            false => None,
        };
        let admin_listener =
            bind("admin-listen", args.admin_listen.strip_prefix("http://").unwrap_or(&args.admin_listen)).await?;

        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        // Analytics are kept only where they can be persisted: in store mode.
        let analytics = store.as_ref().map(|_| Arc::new(Analytics::default()));
        let flags = &args.shared;
        let mode = FailureMode::parse(&flags.counters_failure_mode, Duration::from_secs(flags.counters_resilient_ttl))
            .context("--counters-failure-mode: use strict, allow or resilient")?;
        let counters = Counters::open(
            &flags.counters,
            &flags.counters_namespace,
            mode,
            Duration::from_millis(flags.counters_timeout_ms.max(1)),
        )
        .await
        .map_err(|e| anyhow::anyhow!("--counters: {e}"))?;
        let mut counters = counters;
        // Leasing with memory counters was refused at the start.
        if let Counters::Redis(redis) = &mut counters {
            redis.set_lease(flags.counters_lease);
        }
        let counters = Arc::new(counters);
        let node = node_name();
        let connections =
            Arc::new(Connections::shared(counters.clone(), node.clone(), Duration::from_secs(flags.connection_lease)));
        let shared = Shared {
            counters: counters.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            analytics: analytics.clone(),
            connections: connections.clone(),
            defaults: tollgate_gateway::ExchangeDefaults {
                read_timeout: Duration::from_secs(args.listener.upstream_read_timeout),
                request_buffer_bytes: args.listener.request_buffer_bytes,
            },
            edge: Arc::default(),
            tracer: tollgate_gateway::trace::Tracer::from_env(|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!(e))?,
        };
        snapshots.staging.activate();
        snapshots.production.activate();
        let staging_handle = SnapshotHandle::new(snapshots.staging);
        let production_handle = SnapshotHandle::new(snapshots.production);
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let workers = match args.listener.workers {
            0 => Workers::per_core(),
            n => Workers::start(n),
        }
        .context("--workers: cannot start the worker threads")?;
        tollgate_gateway::upstream::set_response_head_limits(tollgate_gateway::upstream::ResponseHeadLimits {
            bytes: args.listener.max_response_header_bytes as usize,
            count: args.listener.max_response_header_count as usize,
        });
        let keepalive = (args.listener.tcp_keepalive > 0).then(|| Duration::from_secs(args.listener.tcp_keepalive));
        tollgate_gateway::upstream::set_tcp_keepalive(keepalive);
        let proxy_protocol = match &args.listener.proxy_protocol {
            None => None,
            Some(list) => {
                let trusted = list
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| tollgate_gateway::policy::ip_check::Cidr::parse(s.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        anyhow::anyhow!("--proxy-protocol: {e} (write addresses or CIDR ranges, comma-separated)")
                    })?;
                if trusted.is_empty() {
                    bail!("--proxy-protocol: name the load balancers' addresses or CIDR ranges, comma-separated");
                }
                Some(tollgate_gateway::proxy_protocol::ProxyProtocol { trusted })
            }
        };
        let base = ListenerOptions {
            proxy_protocol,
            tcp_keepalive: keepalive,
            workers: Some(workers),
            max_connections: usize::try_from(args.listener.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(args.listener.header_read_timeout.max(1)),
            max_header_bytes: args.listener.max_header_bytes as usize,
            max_header_count: args.listener.max_header_count as usize,
            drain_timeout: Duration::from_secs(args.listener.drain_timeout),
            min_data_rate: (args.listener.min_data_rate > 0).then(|| tollgate_gateway::MinDataRate {
                bytes_per_second: args.listener.min_data_rate,
                grace: Duration::from_secs(args.listener.min_data_rate_grace),
            }),
            ..ListenerOptions::default()
        };
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let server = Server {
            staging: staging_listener.as_ref().map_or(Ok(unbound), TcpListener::local_addr)?,
            production: production_listener.as_ref().map_or(Ok(unbound), TcpListener::local_addr)?,
            admin: admin_listener.local_addr()?,
            staging_tls,
            production_tls,
            admin_token: None,
            admin_state: None,
            analytics: None,
            reporter: Arc::new(TrafficReporter {
                metrics: metrics.clone(),
                node: node.clone(),
                environments: [Environment::Staging, Environment::Production]
                    .into_iter()
                    .filter(|e| serves(*e))
                    .collect(),
                last: std::sync::Mutex::default(),
                clock: clock.clone(),
            }),
            flushing: Arc::default(),
            source,
            registry: registry.clone(),
            counters: counters.clone(),
            handles: [staging_handle.clone(), production_handle.clone()],
            stop,
            tasks: JoinSet::new(),
        };
        for (env, listener, handle, tls) in [
            (Environment::Staging, staging_listener, staging_handle, staging_tls),
            (Environment::Production, production_listener, production_handle, production_tls),
        ] {
            let Some(listener) = listener else { continue };
            let tls = match (&acceptor, tls) {
                (Some((cert, key, settings)), true) => Some(
                    tollgate_gateway::server::tls_acceptor_with(cert, key, settings, Some(handle.clone()))
                        .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?,
                ),
                _ => None,
            };
            let gateway = Arc::new(Gateway::new(env, handle, shared.clone()));
            let opts = ListenerOptions { tls, ..base.clone() };
            let mut stop = server.stop.subscribe();
            tasks.spawn(tollgate_gateway::serve(listener, gateway, opts, async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
        }
        let mut stop = server.stop.subscribe();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if counters.redis().is_some() {
            tasks.spawn(tend_counters(counters.clone(), health.clone(), server.stop.subscribe()));
            let mut stop = server.stop.subscribe();
            tasks.spawn(connections.renew_leases(async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
        }
        let mut admin_token = None;
        let mut admin_state = None;
        let poll = Duration::from_secs(flags.config_poll_interval);
        let app = match (store, role) {
            (None, _) => tollgate_admin::health_router(metrics, health, false),
            (Some(store), Role::Node(_)) => {
                if let Some(analytics) = &analytics {
                    let retention = (args.analytics_minute_retention * 3_600, args.analytics_hour_retention * 86_400);
                    tasks.spawn(flush_analytics(
                        store.clone(),
                        analytics.clone(),
                        server.reporter.clone(),
                        server.flushing.clone(),
                        retention,
                        server.stop.subscribe(),
                    ));
                }
                let follower = Follower {
                    store,
                    registry: registry.clone(),
                    handles: server.handles.clone(),
                    health: health.clone(),
                };
                let (applied_tx, _) = watch::channel(0);
                tasks.spawn(follower.run(revision, None, applied_tx, poll, server.stop.subscribe()));
                tollgate_admin::health_router(metrics, health, true)
            }
            (Some(store), Role::All) => {
                let from_env = std::env::var("TOLLGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
                admin_token = tollgate_admin::ensure_admin_token(&store, from_env.as_deref()).await?;
                match tollgate_admin::redact_audit_history(&store).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(entries = n, "redacted secrets from audit entries written before redaction")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot redact old audit entries; will try at the next start"),
                }
                if let Some(analytics) = &analytics {
                    let retention = (args.analytics_minute_retention * 3_600, args.analytics_hour_retention * 86_400);
                    tasks.spawn(flush_analytics(
                        store.clone(),
                        analytics.clone(),
                        server.reporter.clone(),
                        server.flushing.clone(),
                        retention,
                        server.stop.subscribe(),
                    ));
                }
                let gateways = vec![
                    tollgate_admin::GatewayListener {
                        environment: Environment::Staging,
                        addr: server.staging,
                        tls: staging_tls,
                    },
                    tollgate_admin::GatewayListener {
                        environment: Environment::Production,
                        addr: server.production,
                        tls: production_tls,
                    },
                ];
                let (applied_tx, applied_rx) = watch::channel(0);
                let state = Arc::new(AdminState {
                    metrics: Some(metrics),
                    counters: Some(counters.clone()),
                    gateways,
                    applied: Some(applied_rx.clone()),
                    trusted_proxies,
                    clock: clock.clone(),
                    ..AdminState::new(store.clone(), registry.clone())
                });
                let follower = Follower { store, registry: registry.clone(), handles: server.handles.clone(), health };
                let local = state.changes.subscribe();
                tasks.spawn(follower.run(revision, Some(local), applied_tx, poll, server.stop.subscribe()));
                admin_state = Some((state.clone(), applied_rx));
                tollgate_admin::router(state)
            }
        };
        tasks.spawn(async move {
            // The peer's address: the console trusts `X-Forwarded-Proto` from loopback only.
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(admin_listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        Ok(Server { tasks, admin_token, admin_state, analytics, ..server })
    }

    /// Re-reads the configuration file, compiles it, prepares it (the network work of
    /// its policies, such as JWK Set fetches) and swaps it in; on error nothing changes.
    ///
    /// # Errors
    /// The configuration's errors, or the preparations that failed, one per line.
    pub async fn reload(&self) -> Result<(), String> {
        let Source::File(path) = &self.source else {
            return Ok(());
        };
        let snapshots = load_apart(path, &self.registry).await.map_err(|e| e.to_string())?;
        snapshots.prepare().await.map_err(|errors| errors.join("\n"))?;
        snapshots.staging.activate();
        snapshots.production.activate();
        self.handles[0].store(snapshots.staging);
        self.handles[1].store(snapshots.production);
        Ok(())
    }

    /// In store mode, waits until the gateways serve every change made so far through
    /// the admin API (an event, not a delay: the follower reports each generation).
    pub async fn wait_applied(&self) {
        if let Some((state, applied)) = &self.admin_state {
            let target = *state.changes.borrow();
            let mut applied = applied.clone();
            let _ = applied.wait_for(|g| *g >= target).await;
        }
    }

    /// Writes the usage aggregated so far to the store now (it is otherwise flushed every
    /// few seconds and at shutdown).
    pub async fn flush_analytics(&self) -> anyhow::Result<()> {
        if let (Some(analytics), Some((state, _))) = (&self.analytics, &self.admin_state) {
            let _turn = self.flushing.lock().await;
            persist(&state.store, analytics, &self.reporter).await?;
        }
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        // Once nothing admits any more: the units this node leased and did not use go
        // back to their windows for the other nodes.
        if let Some(redis) = self.counters.redis().filter(|r| r.leasing()) {
            let units = redis.give_back_idle(Duration::ZERO).await;
            tracing::info!(units, "gave the unused leased units back to Redis");
        }
    }

    pub fn url(&self, env: Environment) -> String {
        let (addr, tls) = match env {
            Environment::Staging => (self.staging, self.staging_tls),
            Environment::Production => (self.production, self.production_tls),
        };
        format!("{}://{addr}", if tls { "https" } else { "http" })
    }
}

/// What a node tells the store for the console's dashboard: its traffic per product,
/// environment and minute (the difference of its metrics since the last report) and
/// the WebSockets it has open now, with a row per environment it serves so that an
/// idle node is still seen as alive.
struct TrafficReporter {
    metrics: Arc<Metrics>,
    node: String,
    environments: Vec<Environment>,
    /// Each product's totals at the last report the store took.
    last: std::sync::Mutex<std::collections::HashMap<(Environment, String), ProductTotals>>,
    /// The server's clock: minutes and report times as the gateways count them.
    clock: Arc<dyn Clock>,
}

impl TrafficReporter {
    /// Writes the traffic since the last report and the open WebSockets now. Reports
    /// are serialized by the caller (the `flushing` lock); what a failed write did not
    /// take goes with the next report.
    async fn report(&self, store: &Store) -> Result<(), tollgate_store::StoreError> {
        let now_ms = self.clock.now_ms();
        let minute = now_ms / 1000 - (now_ms / 1000).rem_euclid(60);
        let totals = self.metrics.product_totals();
        let mut rows = Vec::new();
        let mut open = Vec::new();
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            for (env, product, now) in &totals {
                let (env, now) = (*env, *now);
                let before = last.get(&(env, product.clone())).copied().unwrap_or_default();
                let d = |a: u64, b: u64| a.saturating_sub(b) as i64;
                let responses = std::array::from_fn(|i| d(now.responses[i], before.responses[i]));
                let (from_clients, from_backends) =
                    (d(now.messages[0], before.messages[0]), d(now.messages[1], before.messages[1]));
                if responses.iter().any(|n| *n > 0) || from_clients > 0 || from_backends > 0 {
                    rows.push(TrafficRow {
                        product: product.clone(),
                        environment: env.as_str().to_string(),
                        minute,
                        responses,
                        messages_from_clients: from_clients,
                        messages_from_backends: from_backends,
                    });
                }
                open.push((env, product.as_str(), now.websocket_open as i64));
            }
        }
        let mut reports: Vec<(&str, &str, i64)> = self.environments.iter().map(|e| (e.as_str(), "", 0)).collect();
        reports.extend(open.iter().map(|(env, product, n)| (env.as_str(), *product, *n)));
        store.add_traffic(&rows).await?;
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(totals.iter().map(|(env, product, now)| ((*env, product.clone()), *now)));
        store.report_node(&self.node, &reports, now_ms).await
    }
}

async fn persist(
    store: &Store,
    analytics: &Analytics,
    reporter: &TrafficReporter,
) -> Result<(), tollgate_store::StoreError> {
    // Both are attempted: a failure of one does not hold the other back.
    let traffic = reporter.report(store).await;
    let records = analytics.drain();
    let rows: Vec<UsageRow> = records
        .iter()
        .map(|r| UsageRow {
            application: r.application.clone(),
            product: r.product.clone(),
            metric: r.metric.clone(),
            minute: r.minute,
            value: r.value as i64,
        })
        .collect();
    let usage = store.add_usage(&rows).await;
    // One transaction: nothing of it was stored. The records wait for the next write.
    if usage.is_err() {
        analytics.requeue(records);
    }
    traffic.and(usage)
}

/// Flushes usage to the store every few seconds (and once more at shutdown), and rolls
/// old minute buckets up into hours and days every hour.
async fn flush_analytics(
    store: Store,
    analytics: Arc<Analytics>,
    reporter: Arc<TrafficReporter>,
    flushing: Arc<tokio::sync::Mutex<()>>,
    retention: (u64, u64),
    mut stop: watch::Receiver<bool>,
) {
    let mut flush = tokio::time::interval(Duration::from_secs(5));
    let mut roll_up = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        let stopping = tokio::select! {
            _ = flush.tick() => false,
            _ = roll_up.tick() => {
                let now = reporter.clock.now();
                if let Err(e) = store.roll_up(now, retention.0 as i64, retention.1 as i64).await {
                    tracing::warn!(error = %e, "analytics roll-up failed; will retry");
                }
                if let Err(e) = store.forget_traffic(now - retention.0 as i64).await {
                    tracing::warn!(error = %e, "cannot remove old traffic minutes; will retry");
                }
                false
            }
            () = async { let _ = stop.wait_for(|s| *s).await; } => true,
        };
        let turn = flushing.lock().await;
        let written = persist(&store, &analytics, &reporter).await;
        drop(turn);
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write analytics to the store (the usage is kept for the next write)");
        }
        if stopping {
            return;
        }
    }
}

/// Keeps the gateways on the store's configuration: rebuilds both snapshots when this
/// process's admin API reports a change, when PostgreSQL announces one (any process's),
/// and when a periodic check finds the store's revision moved (announcements missed
/// while the connection was down, or SQLite). While the store is unreachable the
/// gateways keep the last configuration and the node reports itself degraded.
/// How long the follower waits for the store before calling it unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

struct Follower {
    store: Store,
    registry: Arc<Registry>,
    handles: [SnapshotHandle; 2],
    health: Arc<Health>,
}

impl Follower {
    async fn run(
        self,
        mut seen: i64,
        mut local: Option<watch::Receiver<u64>>,
        applied: watch::Sender<u64>,
        poll: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut changes = self.listen().await;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Some(generation): this process's admin API changed something.
            let generation = tokio::select! {
                r = async {
                    match local.as_mut() {
                        Some(l) => l.changed().await.map(|()| *l.borrow_and_update()),
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(g) => Some(g),
                    Err(_) => { local = None; continue }
                },
                announced = async {
                    match changes.as_mut() {
                        Some(c) => c.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = announced {
                        tracing::warn!(error = %e, "lost the store's change notifications; polling until they are back");
                        changes = None;
                    }
                    None
                }
                _ = tick.tick() => {
                    if changes.is_none() {
                        changes = self.listen().await;
                    }
                    None
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            };
            // Bounded: a store that does not answer must not keep the node from
            // reporting it (the pool would wait for a connection much longer).
            let revision = match tokio::time::timeout(STORE_TIMEOUT, self.store.config_revision()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    if self.health.store(false) {
                        tracing::error!(error = %e, "the store is unreachable; the gateways keep the last configuration");
                    }
                    continue;
                }
                Err(_) => {
                    if self.health.store(false) {
                        tracing::error!("the store does not answer; the gateways keep the last configuration");
                    }
                    continue;
                }
            };
            if revision == seen && generation.is_none() {
                self.up();
                continue;
            }
            match tollgate_admin::live::snapshots(&self.store, &self.registry).await {
                Ok((staging, production)) => {
                    let snapshots = Snapshots { staging, production };
                    if let Err(errors) = snapshots.prepare().await {
                        // Tried again at the next change or poll.
                        tracing::error!(
                            "the new configuration cannot be served yet; the gateways keep the previous one:\n  {}",
                            errors.join("\n  ")
                        );
                        continue;
                    }
                    snapshots.staging.activate();
                    snapshots.production.activate();
                    self.handles[0].store(snapshots.staging);
                    self.handles[1].store(snapshots.production);
                    seen = revision;
                    if let Some(g) = generation {
                        applied.send_replace(g);
                    }
                    self.up();
                    tracing::debug!(revision, "gateways follow the new configuration");
                }
                Err(e) => {
                    self.health.store(false);
                    tracing::error!(error = %e.message, "cannot load the configuration from the store; the gateways keep the previous one")
                }
            }
        }
    }

    fn up(&self) {
        if self.health.store(true) {
            tracing::info!("the store answers again");
        }
    }

    async fn listen(&self) -> Option<tollgate_store::Changes> {
        match tokio::time::timeout(STORE_TIMEOUT, self.store.changes()).await.unwrap_or(Ok(None)) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot subscribe to the store's change notifications yet");
                None
            }
        }
    }
}

/// A name no other node shares: host, process and start time.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("{}-{}-{started}", host.trim(), std::process::id())
}

/// Watches Redis: reports whether it answers, and adds the usage admitted while it was
/// away (failure modes `allow` and `resilient`) once it is back.
async fn tend_counters(counters: Arc<Counters>, health: Arc<Health>, mut stop: watch::Receiver<bool>) {
    let Some(redis) = counters.redis() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        let up = redis.ping().await.is_ok();
        health.counters_activity(redis.calls(), redis.leased());
        if health.counters(up) {
            match up {
                true => tracing::info!("the counters' Redis answers again"),
                false => {
                    tracing::error!(mode = ?redis.mode(), "the counters' Redis is unreachable; the failure mode decides")
                }
            }
        }
        if up {
            redis.give_back_idle(tollgate_counters::lease::IDLE).await;
        }
        if up && redis.pending() > 0 {
            match redis.reconcile().await {
                Ok(n) => tracing::info!(windows = n, "added the usage counted while Redis was away"),
                Err(e) => tracing::warn!(error = %e, "cannot add the usage counted while Redis was away yet"),
            }
        }
    }
}

/// `tollgate gateway`: one environment's data plane, following the store.
pub async fn run_gateway(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let env = if args.env == "staging" { Environment::Staging } else { Environment::Production };
    let (mine, other) = (args.listen.clone(), "127.0.0.1:0".to_string());
    let serve = ServeArgs {
        config: None,
        store: args.store.clone(),
        demo: false,
        production_listen: if env == Environment::Production { mine.clone() } else { other.clone() },
        staging_listen: if env == Environment::Staging { mine } else { other },
        admin_listen: args.admin_listen,
        // A gateway node serves no console.
        admin_trusted_proxies: Vec::new(),
        listener: args.listener,
        analytics_minute_retention: 48,
        analytics_hour_retention: 90,
        shared: args.shared,
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let server = Server::start_as(&serve, Source::Store(args.store.clone()), Role::Node(env)).await?;
    say!("tollgate: {} gateway {}", env.as_str(), server.url(env));
    // The admin line comes last: scripts may read up to it.
    say!("tollgate: admin {} (/status/live, /status/ready, /metrics)", server.admin);
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_cli(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (source, demo) = match (&args.config, args.demo) {
        (Some(_), true) => {
            bail!("--config and --demo do not go together: the demo brings its own configuration")
        }
        (Some(path), false) => (Source::File(path.clone()), None),
        (None, true) => {
            let demo = crate::demo::start(&args).await?;
            (Source::Inline(Box::new(demo.config.clone())), Some(demo))
        }
        (None, false) => (Source::Store(args.store.clone()), None),
    };
    // Signals are caught before the readiness lines are printed: a script that reads
    // up to them and then sends SIGHUP must find a reload, not the default (exit).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let server = Server::start(&args, source).await?;
    say!("tollgate: staging gateway    {}", server.url(Environment::Staging));
    say!("tollgate: production gateway {}", server.url(Environment::Production));
    if let Some(token) = &server.admin_token {
        say!("tollgate: created the first admin token (shown once; keep it): {token}");
        say!("          use it as `Authorization: Bearer <token>` or TOLLGATE_ADMIN_TOKEN");
    }
    // The admin line comes last: scripts may read up to it.
    if matches!(server.source, Source::Store(_)) {
        say!("tollgate: console            http://{}/ (log in with an admin token)", server.admin);
        say!("tollgate: admin API          http://{}/api/v1 (store {})", server.admin, args.store);
    } else {
        say!("tollgate: admin              http://{} (/status/live, /status/ready, /metrics)", server.admin);
    }

    if let Some(demo) = &demo {
        demo.print_instructions(&server);
    }

    loop {
        tokio::select! {
            _ = hangup.recv() => match server.reload().await {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(e) => tracing::error!("configuration NOT reloaded, the running one stays:\n{e}"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
