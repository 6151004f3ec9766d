//! A backend's endpoints and the choice among them: load balancing (smooth weighted
//! round robin, least requests, weighted rendezvous hashing), health (active probes and
//! outlier ejection), circuit breaking and draining.
//!
//! Health outlives configurations: an endpoint's state ([`EndpointState`]) is shared
//! by every snapshot that names the same backend and address, so a reload neither
//! forgets an ejection nor restarts the probes. The state lives as long as a snapshot
//! uses it; the probe task holds it weakly and stops with it.

use super::*;
use crate::refusal::Refusal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tollgate_model::{
    ActiveHealthCheck, Algorithm, CircuitBreaker, Environment, HashOn, PassiveHealthCheck, ProbeKind, UpstreamProtocol,
    WhenAllUnhealthy,
};

/// Milliseconds since the process's first use of the fleet clock: the time base of
/// ejections (monotonic, so a wall-clock step never ends or extends one).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The live state of one endpoint of one backend: its load, health and drain, read by
/// the balancer on every pick and by `/metrics`.
#[derive(Debug)]
pub struct EndpointState {
    /// The environment whose snapshots share it; `None`: one upstream's own.
    pub environment: Option<Environment>,
    /// The backend's `system_name`.
    pub backend: Box<str>,
    /// The endpoint's address as configured (`host:port`).
    pub address: Box<str>,
    /// Requests (until their response body ends) and WebSockets in flight.
    in_flight: AtomicU32,
    /// Requests sent and waiting for their response head.
    pending: AtomicU32,
    /// Open WebSockets.
    websockets: AtomicU32,
    /// Passive failures in a row.
    failures: AtomicU32,
    /// Ejected until this time ([`now_ms`]); 0: not ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row, for the doubling of the ejection time.
    ejections_in_a_row: AtomicU32,
    /// Ejections since the state was made.
    ejections_total: AtomicU64,
    /// The active probes' verdict (true without probes).
    probed_healthy: AtomicBool,
    /// Good (positive) or failed (negative) probes in a row.
    probe_streak: std::sync::atomic::AtomicI32,
    /// Draining: `Some(deadline of its WebSockets)`.
    drain: tokio::sync::watch::Sender<Option<Instant>>,
    /// `drain` is `Some`, read without the channel's lock on every pick.
    draining: AtomicBool,
    /// When draining began.
    drain_since: Mutex<Option<Instant>>,
    /// The running probe task, what it probes and with which settings.
    prober: Mutex<Option<(ProbeIdentity, tokio::task::AbortHandle)>>,
    /// Why the last failed probe failed (kept until a probe succeeds).
    probe_error: Mutex<Option<Box<str>>>,
    /// The configured endpoint (a host name) this address was resolved from.
    resolved_from: Mutex<Option<Box<str>>>,
    /// The passive check's settings (the latest serving configuration's).
    passive_enabled: AtomicBool,
    passive_failures: AtomicU32,
    ejection_ms: AtomicU64,
    max_ejection_ms: AtomicU64,
}

/// What a probe task probes: a change restarts it (a new base URL, `Host`, TLS
/// setting or connector), and a change of `check` also resets the probes' verdict.
#[derive(Debug, PartialEq)]
struct ProbeIdentity {
    check: ActiveHealthCheck,
    host: http::HeaderValue,
    path: String,
    /// The connector's address in memory: each configuration makes its own.
    connector: usize,
}

impl EndpointState {
    pub(super) fn new(environment: Option<Environment>, backend: &str, address: &str) -> EndpointState {
        let passive = PassiveHealthCheck::default();
        EndpointState {
            environment,
            backend: backend.into(),
            address: address.into(),
            in_flight: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            websockets: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            probed_healthy: AtomicBool::new(true),
            probe_streak: std::sync::atomic::AtomicI32::new(0),
            drain: tokio::sync::watch::Sender::new(None),
            draining: AtomicBool::new(false),
            drain_since: Mutex::new(None),
            prober: Mutex::new(None),
            probe_error: Mutex::new(None),
            resolved_from: Mutex::new(None),
            passive_enabled: AtomicBool::new(passive.enabled),
            passive_failures: AtomicU32::new(passive.consecutive_failures),
            ejection_ms: AtomicU64::new(passive.ejection_ms),
            max_ejection_ms: AtomicU64::new(passive.longest_ejection_ms()),
        }
    }

    /// Records the configured endpoint (a host name) this address came from.
    pub(super) fn set_resolved_from(&self, name: Option<&str>) {
        *self.resolved_from.lock().unwrap_or_else(|p| p.into_inner()) = name.map(Into::into);
    }

    /// Takes the passive check's settings.
    fn set_passive(&self, passive: &PassiveHealthCheck) {
        self.passive_enabled.store(passive.enabled, Relaxed);
        self.passive_failures.store(passive.consecutive_failures.max(1), Relaxed);
        self.ejection_ms.store(passive.ejection_ms.max(1), Relaxed);
        self.max_ejection_ms.store(passive.longest_ejection_ms(), Relaxed);
    }

    /// The state of `address` in backend `backend` for `environment`, shared with
    /// every other snapshot of that environment that uses it (made on first use).
    /// Staging and production keep their own: they may serve different versions of a
    /// backend (store mode), with other probes or drains.
    pub fn shared(environment: Environment, backend: &str, address: &str) -> Arc<EndpointState> {
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.retain(|_, w| w.strong_count() > 0);
        let key = (environment.as_str(), Box::<str>::from(backend), Box::<str>::from(address));
        if let Some(s) = registry.get(&key).and_then(std::sync::Weak::upgrade) {
            return s;
        }
        let s = Arc::new(EndpointState::new(Some(environment), backend, address));
        registry.insert(key, Arc::downgrade(&s));
        s
    }

    /// Its environment's name for logs and metrics (empty for an upstream's own).
    fn env_name(&self) -> &'static str {
        self.environment.map_or("", Environment::as_str)
    }

    /// Whether it may get requests: not ejected and not failed by its probes.
    pub fn healthy(&self) -> bool {
        // The clock is read only while an ejection is recorded.
        let until = self.ejected_until.load(Relaxed);
        self.probed_healthy.load(Relaxed) && (until == 0 || until <= now_ms())
    }

    /// Whether it is draining (takes nothing new).
    pub fn draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Requests and WebSockets in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Ejections since the process started using this endpoint.
    pub fn ejections(&self) -> u64 {
        self.ejections_total.load(Relaxed)
    }

    /// Takes a share of the endpoint for one request: counted in flight and pending
    /// until the lease is told the head came ([`Lease::answered`]) and dropped.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.in_flight.fetch_add(1, Relaxed);
        self.pending.fetch_add(1, Relaxed);
        Lease { state: self.clone(), pending: true, websocket: false, outcome_due: false }
    }

    /// [`EndpointState::lease`] within the circuit breaker's caps, checked and taken
    /// at once (two requests cannot both take the last place); `None` when full.
    fn try_lease(self: &Arc<Self>, caps: &CircuitBreaker) -> Option<Lease> {
        let max = caps.max_connections.unwrap_or(u32::MAX);
        self.in_flight.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        let max = caps.max_pending_requests.unwrap_or(u32::MAX);
        if self.pending.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).is_err() {
            self.in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Lease { state: self.clone(), pending: true, websocket: false, outcome_due: false })
    }

    /// Records the outcome of a request under the passive check's rules.
    fn report(&self, ok: bool) {
        if !self.passive_enabled.load(Relaxed) {
            return;
        }
        if ok {
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            let until = self.ejected_until.load(Relaxed);
            if until != 0 && until <= now_ms() && self.ejected_until.swap(0, Relaxed) != 0 {
                self.ejections_in_a_row.store(0, Relaxed);
                tracing::info!(
                    environment = self.env_name(), backend = %self.backend, endpoint = %self.address,
                    code = "endpoint_healthy", "endpoint healthy again (a request succeeded after its ejection)"
                );
            }
            return;
        }
        // Requests in flight when it was ejected fail too: they are that incident, not
        // a new one, and do not eject it again (nor double the next ejection).
        let until = self.ejected_until.load(Relaxed);
        if until != 0 && until > now_ms() {
            return;
        }
        let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if failures < self.passive_failures.load(Relaxed) {
            return;
        }
        self.failures.store(0, Relaxed);
        let n = self.ejections_in_a_row.fetch_add(1, Relaxed).min(20);
        let ms = self.ejection_ms.load(Relaxed).saturating_mul(1 << n).min(self.max_ejection_ms.load(Relaxed));
        self.ejected_until.store(now_ms().saturating_add(ms).max(1), Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        tracing::warn!(
            environment = self.env_name(), backend = %self.backend, endpoint = %self.address, ejection_ms = ms,
            code = "endpoint_ejected",
            "endpoint ejected after {failures} failures in a row"
        );
    }

    /// Records a probe's result; flips the verdict at the thresholds.
    fn probed(&self, result: Result<(), String>, check: &ActiveHealthCheck) {
        let ok = result.is_ok();
        let why = result.err().unwrap_or_default();
        if !ok {
            tracing::debug!(backend = %self.backend, endpoint = %self.address, reason = why, "probe failed");
        }
        *self.probe_error.lock().unwrap_or_else(|p| p.into_inner()) = (!ok).then(|| why.as_str().into());
        let streak = self.probe_streak.load(Relaxed);
        let streak = match ok {
            true => streak.max(0).saturating_add(1),
            false => streak.min(0).saturating_sub(1),
        };
        self.probe_streak.store(streak, Relaxed);
        let healthy = self.probed_healthy.load(Relaxed);
        if !healthy && ok && i64::from(streak) >= i64::from(check.healthy_threshold) {
            self.probed_healthy.store(true, Relaxed);
            tracing::info!(
                environment = self.env_name(), backend = %self.backend, endpoint = %self.address,
                code = "endpoint_healthy", "endpoint healthy again (active check)"
            );
        } else if healthy && !ok && -i64::from(streak) >= i64::from(check.unhealthy_threshold) {
            self.probed_healthy.store(false, Relaxed);
            tracing::warn!(
                environment = self.env_name(), backend = %self.backend, endpoint = %self.address,
                code = "endpoint_unhealthy", reason = why,
                "endpoint unhealthy (active check)"
            );
        }
    }

    /// Resolves when the endpoint's WebSockets must close: once it is draining and its
    /// drain deadline has passed. Pending forever otherwise.
    pub async fn drained(&self) {
        let mut rx = self.drain.subscribe();
        loop {
            let deadline = *rx.borrow_and_update();
            match deadline {
                Some(at) => {
                    tokio::select! {
                        // Boxed: every WebSocket on the endpoint waits here while it lives.
                        () = Box::pin(tokio::time::sleep_until(at.into())) => return,
                        changed = rx.changed() => if changed.is_err() { std::future::pending::<()>().await },
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

type Registry = std::collections::BTreeMap<(&'static str, Box<str>, Box<str>), std::sync::Weak<EndpointState>>;
static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

/// One endpoint's share of a request or WebSocket: counted while held.
#[derive(Debug)]
pub struct Lease {
    state: Arc<EndpointState>,
    pending: bool,
    websocket: bool,
    /// The request's outcome waits for its response body: it succeeds if the body
    /// ends, fails if it breaks ([`Lease::body_ended`]).
    outcome_due: bool,
}

impl Lease {
    /// The response head came: no longer pending.
    pub fn answered(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.state.pending.fetch_sub(1, Relaxed);
        }
    }

    /// The request became a WebSocket, held until the lease is dropped.
    pub fn websocket(&mut self) {
        self.answered();
        if !std::mem::replace(&mut self.websocket, true) {
            self.state.websockets.fetch_add(1, Relaxed);
        }
    }

    /// The endpoint it holds.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.state
    }

    /// The response head was good: the body's end decides the outcome.
    pub fn await_body(&mut self) {
        self.outcome_due = true;
    }

    /// The response body ended (`true`) or broke (`false`): the request's outcome for
    /// the passive check. A body dropped before either (the client left) counts as
    /// neither.
    pub fn body_ended(&mut self, ok: bool) {
        if std::mem::take(&mut self.outcome_due) {
            self.state.report(ok);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.answered();
        if self.websocket {
            self.state.websockets.fetch_sub(1, Relaxed);
        }
        self.state.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One instance of a backend.
#[derive(Clone)]
pub struct Endpoint {
    /// Its address as configured.
    pub address: Box<str>,
    /// Its weight (1–1000).
    pub weight: u32,
    /// Makes connections to it.
    pub connector: Connector,
    /// Its idle keep-alive connections.
    pub pool: Pool,
    /// Its live state.
    pub state: Arc<EndpointState>,
    /// Draining in this configuration.
    pub drain: bool,
    /// Its rendezvous-hash seed, from its address.
    seed: u64,
}

impl Endpoint {
    pub(super) fn new(
        address: &str,
        weight: u32,
        drain: bool,
        connector: Connector,
        state: Arc<EndpointState>,
    ) -> Self {
        let seed = xxhash_rust::xxh3::xxh3_64(address.as_bytes());
        Endpoint { address: address.into(), weight, pool: Pool::new(connector.clone()), connector, state, drain, seed }
    }
}

/// How a backend reaches its endpoints, chooses among them and judges them.
#[derive(Clone)]
pub struct FleetOptions {
    /// The HTTP version of requests (upgrades and probes use HTTP/1.1).
    pub protocol: UpstreamProtocol,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The key of `consistent_hash`.
    pub hash_on: Option<HashOn>,
    /// Outlier ejection.
    pub passive: PassiveHealthCheck,
    /// Probes, if any.
    pub active: Option<ActiveHealthCheck>,
    /// What happens when no endpoint is healthy.
    pub when_all_unhealthy: WhenAllUnhealthy,
    /// Per-endpoint caps.
    pub circuit_breaker: CircuitBreaker,
    /// How long a draining endpoint's WebSockets may stay.
    pub drain_timeout: Duration,
    /// How often endpoint names are resolved again (`dns_refresh_ms`); `None`: at
    /// each answer's TTL.
    pub dns_refresh: Option<Duration>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            protocol: UpstreamProtocol::Http1,
            algorithm: Algorithm::RoundRobin,
            hash_on: None,
            passive: PassiveHealthCheck::default(),
            active: None,
            when_all_unhealthy: WhenAllUnhealthy::TryAll,
            circuit_breaker: CircuitBreaker::default(),
            drain_timeout: Duration::from_secs(60),
            dns_refresh: None,
        }
    }
}

/// The endpoints of one backend with their balancing state.
pub struct Fleet {
    /// The endpoints, in configuration order.
    pub endpoints: Vec<Endpoint>,
    /// The rules.
    pub options: FleetOptions,
    /// Smooth weighted round robin's current weights, by endpoint.
    current: Mutex<Vec<i64>>,
}

impl Fleet {
    /// A fleet of `endpoints` chosen among by `balancing`.
    pub fn new(endpoints: Vec<Endpoint>, balancing: FleetOptions) -> Fleet {
        for e in &endpoints {
            if e.state.environment.is_none() {
                e.state.set_passive(&balancing.passive);
            }
        }
        let current = Mutex::new(vec![0; endpoints.len()]);
        Fleet { endpoints, options: balancing, current }
    }

    /// Chooses the endpoint for a request: among those not draining and not in
    /// `tried`, the healthy ones (all of them when none is, unless the backend refuses
    /// then), with room under the circuit breaker, by the algorithm (`key`: the
    /// consistent hash's, if the request has one).
    ///
    /// # Errors
    /// `no_healthy_endpoint` when every endpoint drains or was tried, or none is
    /// healthy and the backend fails closed; `upstream_overloaded` when every
    /// candidate is at its circuit breaker's caps.
    pub fn pick(&self, key: Option<&[u8]>, tried: &[usize]) -> Result<usize, Refusal> {
        let eps = &self.endpoints;
        let open = |i: &usize| !eps[*i].drain && !eps[*i].state.draining() && !tried.contains(i);
        let has_room = |i: &usize| {
            let s = &eps[*i].state;
            let cb = &self.options.circuit_breaker;
            cb.max_connections.is_none_or(|m| s.in_flight.load(Relaxed) < m)
                && cb.max_pending_requests.is_none_or(|m| s.pending.load(Relaxed) < m)
        };
        // The common case, one endpoint, without collecting anything.
        if eps.len() == 1 {
            if !open(&0) {
                return Err(self.none_open());
            }
            if !eps[0].state.healthy() && self.options.when_all_unhealthy == WhenAllUnhealthy::Refuse {
                return Err(self.none_healthy());
            }
            return if has_room(&0) { Ok(0) } else { Err(self.overloaded()) };
        }
        // One list, narrowed in place: open, then healthy (unless none is), then with room.
        let mut candidates: Vec<usize> = (0..eps.len()).filter(open).collect();
        if candidates.is_empty() {
            return Err(self.none_open());
        }
        let healthy = |i: &usize| eps[*i].state.healthy();
        if candidates.iter().any(healthy) {
            candidates.retain(healthy);
        } else if self.options.when_all_unhealthy == WhenAllUnhealthy::Refuse {
            return Err(self.none_healthy());
        }
        candidates.retain(has_room);
        if candidates.is_empty() {
            return Err(self.overloaded());
        }
        Ok(match (self.options.algorithm, key) {
            (Algorithm::ConsistentHash, Some(key)) => self.rendezvous(&candidates, key),
            (Algorithm::LeastRequests, _) => self.least_requests(&candidates),
            _ => self.round_robin(&candidates),
        })
    }

    /// nginx's smooth weighted round robin over `candidates`: each gains its weight,
    /// the largest is chosen and loses the candidates' total.
    fn round_robin(&self, candidates: &[usize]) -> usize {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (mut best, mut total) = (candidates[0], 0i64);
        for &i in candidates {
            let w = i64::from(self.endpoints[i].weight);
            current[i] += w;
            total += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        best
    }

    /// The fewest in flight per unit of weight; among equals (always, when nothing is
    /// in flight) smooth weighted round robin, so weights hold under light load too
    /// (nginx's `least_conn`).
    fn least_requests(&self, candidates: &[usize]) -> usize {
        let load = |i: usize| (u64::from(self.endpoints[i].state.in_flight()), u64::from(self.endpoints[i].weight));
        let mut best = candidates[0];
        for &i in &candidates[1..] {
            let ((a, wa), (b, wb)) = (load(i), load(best));
            if a * wb < b * wa {
                best = i;
            }
        }
        let (b, wb) = load(best);
        let tied: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| {
                let (a, wa) = load(i);
                a * wb == b * wa
            })
            .collect();
        match tied.len() {
            1 => best,
            _ => self.round_robin(&tied),
        }
    }

    /// Weighted rendezvous hashing: the largest `weight / -ln(hash)` wins, so a key
    /// moves only when its endpoint goes away (or one that outscores it comes).
    fn rendezvous(&self, candidates: &[usize], key: &[u8]) -> usize {
        let score = |i: usize| {
            let e = &self.endpoints[i];
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, e.seed);
            // A uniform number in (0, 1) from the hash's top 53 bits.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            f64::from(e.weight) / -u.ln()
        };
        let mut best = (candidates[0], score(candidates[0]));
        for &i in &candidates[1..] {
            let s = score(i);
            if s > best.1 {
                best = (i, s);
            }
        }
        best.0
    }

    /// Records how a request to endpoint `i` went (passive health).
    pub fn report(&self, i: usize, ok: bool) {
        self.endpoints[i].state.report(ok);
    }

    /// A lease on endpoint `i` within the circuit breaker's caps; `None` when another
    /// request took the last place since [`Fleet::pick`].
    pub fn lease(&self, i: usize) -> Option<Lease> {
        let cb = &self.options.circuit_breaker;
        let state = &self.endpoints[i].state;
        match cb.max_connections.is_none() && cb.max_pending_requests.is_none() {
            true => Some(state.lease()),
            false => state.try_lease(cb),
        }
    }

    /// Whether a response status counts as a failure of its endpoint.
    pub fn failed_status(&self, status: http::StatusCode) -> bool {
        self.options.passive.unhealthy_statuses.contains(&status.as_u16())
    }

    fn none_open(&self) -> Refusal {
        Refusal::NoHealthyEndpoint(format!("{}: every endpoint is draining", self.name()))
    }

    fn none_healthy(&self) -> Refusal {
        Refusal::NoHealthyEndpoint(format!(
            "{}: no endpoint is healthy (health_checks.when_all_unhealthy: refuse)",
            self.name()
        ))
    }

    fn overloaded(&self) -> Refusal {
        Refusal::UpstreamOverloaded(format!("{}: every endpoint is at its circuit_breaker caps", self.name()))
    }

    fn name(&self) -> String {
        self.endpoints.first().map_or_else(String::new, |e| format!("backend `{}`", e.state.backend))
    }

    /// Brings the live states in line with this configuration, once it serves: drain
    /// flags set or cleared, probe tasks started, restarted with new settings, or
    /// stopped. Needs a Tokio runtime.
    pub fn activate(&self, host: &http::HeaderValue, base_path: &str) {
        for e in &self.endpoints {
            // The deadline counts from when draining began, so a changed
            // `drain_timeout_ms` moves it without restarting it.
            let since = {
                let mut since = e.state.drain_since.lock().unwrap_or_else(|p| p.into_inner());
                *since = if e.drain { Some(since.unwrap_or_else(Instant::now)) } else { None };
                *since
            };
            // A timeout beyond what the clock can count is no deadline.
            let deadline = since.and_then(|at| at.checked_add(self.options.drain_timeout));
            e.state.draining.store(since.is_some(), Relaxed);
            e.state.set_passive(&self.options.passive);
            e.state.drain.send_if_modified(|d| {
                let changed = *d != deadline;
                *d = deadline;
                changed
            });
            let mut prober = e.state.prober.lock().unwrap_or_else(|p| p.into_inner());
            let wanted = self.options.active.as_ref().map(|check| ProbeIdentity {
                check: check.clone(),
                host: host.clone(),
                path: format!("{base_path}{}", check.path),
                connector: Arc::as_ptr(&e.connector.0) as usize,
            });
            let running = prober.as_ref().map(|(identity, _)| identity);
            if running == wanted.as_ref() {
                continue;
            }
            // New settings (or none): the verdict starts over; only a new URL or
            // connector: the probes go on from the verdict they reached.
            if running.map(|r| &r.check) != wanted.as_ref().map(|w| &w.check) {
                e.state.probed_healthy.store(true, Relaxed);
                e.state.probe_streak.store(0, Relaxed);
            }
            if let Some((_, task)) = prober.take() {
                task.abort();
            }
            let Some(identity) = wanted else { continue };
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { continue };
            let probe = Probe {
                state: Arc::downgrade(&e.state),
                connector: e.connector.clone(),
                host: identity.host.clone(),
                path: identity.path.clone(),
                check: identity.check.clone(),
            };
            let task = runtime.spawn(probe.run());
            *prober = Some((identity, task.abort_handle()));
        }
    }
}

impl Drop for EndpointState {
    fn drop(&mut self) {
        if let Some((_, task)) = self.prober.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// The active health check of one endpoint.
struct Probe {
    state: std::sync::Weak<EndpointState>,
    connector: Connector,
    host: http::HeaderValue,
    path: String,
    check: ActiveHealthCheck,
}

impl Probe {
    async fn run(self) {
        let interval = Duration::from_millis(self.check.interval_ms);
        let timeout = Duration::from_millis(self.check.probe_timeout_ms());
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = tokio::time::timeout(timeout, self.once())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within timeout_ms ({} ms)", self.check.probe_timeout_ms())));
            let Some(state) = self.state.upgrade() else { return };
            state.probed(result, &self.check);
        }
    }

    /// One probe: `Err` says why it failed.
    async fn once(&self) -> Result<(), String> {
        let stream = self.connector.connect_http1().await.map_err(|e| e.to_string())?;
        if self.check.kind == ProbeKind::Tcp {
            return Ok(());
        }
        let (mut sender, connection) = super::http1_client()
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driving = tokio::spawn(connection.with_upgrades());
        let mut req = http::Request::get(self.path.as_str())
            .header(http::header::HOST, self.host.clone())
            .header(http::header::USER_AGENT, "tollgate-health-check");
        if self.check.kind == ProbeKind::Websocket {
            req = req
                .header(http::header::CONNECTION, "Upgrade")
                .header(http::header::UPGRADE, "websocket")
                .header(http::header::SEC_WEBSOCKET_VERSION, "13")
                .header(http::header::SEC_WEBSOCKET_KEY, probe_key());
        } else {
            req = req.header(http::header::CONNECTION, "close");
        }
        let req = req.body(http_body_util::Empty::new()).map_err(|e| format!("the probe request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| super::error_chain(&e));
        let result = match resp {
            Err(e) => Err(e),
            Ok(resp) if self.check.kind == ProbeKind::Websocket => {
                match resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    true => {
                        // Closed as a WebSocket client closes: Close 1000, masked (RFC 6455 §5.3).
                        if let Ok(upgraded) = hyper::upgrade::on(resp).await {
                            use tokio::io::AsyncWriteExt;
                            let mask: [u8; 4] = rand::random();
                            let code = 1000u16.to_be_bytes();
                            let frame =
                                [0x88, 0x82, mask[0], mask[1], mask[2], mask[3], code[0] ^ mask[0], code[1] ^ mask[1]];
                            let mut io = hyper_util::rt::TokioIo::new(upgraded);
                            let _ = io.write_all(&frame).await;
                            let _ = io.shutdown().await;
                        }
                        Ok(())
                    }
                    false => Err(format!("the WebSocket handshake was answered {}", resp.status())),
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let expected = match self.check.expected_statuses.is_empty() {
                    true => status.is_success() || status.is_redirection(),
                    false => self.check.expected_statuses.contains(&status.as_u16()),
                };
                if expected { Ok(()) } else { Err(format!("answered {status}")) }
            }
        };
        driving.abort();
        result
    }
}

/// A fresh `Sec-WebSocket-Key` for a probe: 16 random bytes in base64 (RFC 6455 §4.1).
fn probe_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// One endpoint's state as this process sees it (the admin API's
/// `GET /api/v1/backends/{b}/endpoints` and the console): each gateway node keeps its
/// own, from its own traffic and probes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointReport {
    /// `staging` or `production`.
    pub environment: &'static str,
    /// The backend's `system_name`.
    pub backend: String,
    /// `host:port`, as configured, or an address a configured name resolved to.
    pub address: String,
    /// The configured endpoint (`name:port`) `address` was resolved from, if any.
    pub resolved_from: Option<String>,
    /// Gets requests: not ejected, not failed by active checks.
    pub healthy: bool,
    /// Milliseconds until a passive ejection ends; 0 when not ejected.
    pub ejected_for_ms: u64,
    /// The active checks' verdict (`true` without active checks).
    pub probes_healthy: bool,
    /// Why the last probe failed, until one succeeds.
    pub probe_error: Option<String>,
    /// Takes no new requests or WebSockets.
    pub draining: bool,
    /// Requests in flight (until their response body ends), WebSockets excluded.
    pub active_requests: u32,
    /// WebSockets open.
    pub websockets_open: u32,
    /// Passive ejections since this process started using the endpoint.
    pub ejections_total: u64,
}

/// The state of every endpoint of `backend` this process's snapshots use, in both
/// environments, ordered by environment and address.
pub fn endpoint_reports(backend: &str) -> Vec<EndpointReport> {
    let states: Vec<Arc<EndpointState>> = {
        let registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.iter().filter(|((_, b, _), _)| &**b == backend).filter_map(|(_, w)| w.upgrade()).collect()
    };
    let now = now_ms();
    states
        .iter()
        .map(|s| {
            let websockets = s.websockets.load(Relaxed);
            EndpointReport {
                environment: s.env_name(),
                backend: s.backend.to_string(),
                address: s.address.to_string(),
                resolved_from: s.resolved_from.lock().unwrap_or_else(|p| p.into_inner()).as_deref().map(str::to_owned),
                healthy: s.healthy(),
                ejected_for_ms: s.ejected_until.load(Relaxed).saturating_sub(now),
                probes_healthy: s.probed_healthy.load(Relaxed),
                probe_error: s.probe_error.lock().unwrap_or_else(|p| p.into_inner()).as_deref().map(str::to_owned),
                draining: s.draining(),
                active_requests: s.in_flight().saturating_sub(websockets),
                websockets_open: websockets,
                ejections_total: s.ejections(),
            }
        })
        .collect()
}

/// Appends the endpoints' series in the Prometheus text format: health, draining,
/// requests and WebSockets in flight, ejections — per backend and endpoint.
pub fn render_endpoints(out: &mut String) {
    use std::fmt::Write;
    let states: Vec<Arc<EndpointState>> = {
        let registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.values().filter_map(std::sync::Weak::upgrade).collect()
    };
    type Get = fn(&EndpointState) -> u64;
    let families: [(&str, &str, &str, Get); 5] = [
        (
            "tollgate_endpoint_healthy",
            "gauge",
            "Whether the endpoint gets requests: not ejected and not failed by active checks (1 or 0).",
            |s| u64::from(s.healthy()),
        ),
        ("tollgate_endpoint_draining", "gauge", "Whether the endpoint drains (takes nothing new; 1 or 0).", |s| {
            u64::from(s.draining())
        }),
        (
            "tollgate_endpoint_active_requests",
            "gauge",
            "Requests in flight to the endpoint (until their response body ends), WebSockets excluded.",
            |s| u64::from(s.in_flight().saturating_sub(s.websockets.load(Relaxed))),
        ),
        ("tollgate_endpoint_websockets_open", "gauge", "WebSockets open to the endpoint.", |s| {
            u64::from(s.websockets.load(Relaxed))
        }),
        (
            "tollgate_endpoint_ejections_total",
            "counter",
            "Times the endpoint was ejected by passive health checks.",
            |s| s.ejections(),
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &states {
            let env = s.environment.map_or("", Environment::as_str);
            let _ = writeln!(
                out,
                "{name}{{environment=\"{env}\",backend=\"{}\",endpoint=\"{}\"}} {}",
                s.backend,
                s.address,
                get(s)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(failures: u32) -> PassiveHealthCheck {
        PassiveHealthCheck { consecutive_failures: failures, ejection_ms: 60_000, ..Default::default() }
    }

    #[test]
    fn failures_in_a_row_eject_once_and_those_in_flight_do_not_eject_again() {
        let state = EndpointState::new(None, "b", "127.0.0.1:1");
        state.set_passive(&passive(3));
        state.report(false);
        state.report(true);
        state.report(false);
        state.report(false);
        assert!(state.healthy(), "a success in between starts the count over");
        state.report(false);
        assert!(!state.healthy());
        assert_eq!(state.ejections(), 1);
        // The requests that were in flight when it was ejected fail too.
        for _ in 0..20 {
            state.report(false);
        }
        assert_eq!(state.ejections(), 1, "one incident, one ejection");
        assert_eq!(state.ejections_in_a_row.load(Relaxed), 1, "the next ejection is not doubled by it");
    }

    #[test]
    fn circuit_breaker_places_are_taken_and_given_back() {
        let state = Arc::new(EndpointState::new(None, "b", "127.0.0.1:1"));
        let caps = CircuitBreaker { max_connections: Some(2), max_pending_requests: Some(1) };
        let mut first = state.try_lease(&caps).expect("room");
        assert!(state.try_lease(&caps).is_none(), "one pending at most");
        first.answered();
        let second = state.try_lease(&caps).expect("the head came: no longer pending");
        assert!(state.try_lease(&caps).is_none(), "two in flight at most");
        drop((first, second));
        assert_eq!((state.in_flight(), state.pending.load(Relaxed)), (0, 0));
    }
}
