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
    ActiveHealthCheck, Algorithm, CircuitBreaker, HashOn, PassiveHealthCheck, ProbeKind, UpstreamProtocol,
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
    /// The running probe task and the settings it probes with.
    prober: Mutex<Option<(ActiveHealthCheck, tokio::task::AbortHandle)>>,
}

impl EndpointState {
    pub(super) fn new(backend: &str, address: &str) -> EndpointState {
        EndpointState {
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
        }
    }

    /// The state of `address` in backend `backend`, shared with every other snapshot
    /// that uses it (made on first use).
    pub fn shared(backend: &str, address: &str) -> Arc<EndpointState> {
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.retain(|_, w| w.strong_count() > 0);
        let key = (Box::<str>::from(backend), Box::<str>::from(address));
        if let Some(s) = registry.get(&key).and_then(std::sync::Weak::upgrade) {
            return s;
        }
        let s = Arc::new(EndpointState::new(backend, address));
        registry.insert(key, Arc::downgrade(&s));
        s
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
        Lease { state: self.clone(), pending: true, websocket: false }
    }

    /// Records the outcome of a request under the passive check's rules.
    fn report(&self, ok: bool, passive: &PassiveHealthCheck) {
        if !passive.enabled {
            return;
        }
        if ok {
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            let until = self.ejected_until.load(Relaxed);
            if until != 0 && until <= now_ms() {
                self.ejected_until.store(0, Relaxed);
                self.ejections_in_a_row.store(0, Relaxed);
            }
            return;
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < passive.consecutive_failures {
            return;
        }
        self.failures.store(0, Relaxed);
        let n = self.ejections_in_a_row.fetch_add(1, Relaxed).min(20);
        let ms = passive.ejection_ms.saturating_mul(1 << n).min(passive.max_ejection_ms);
        self.ejected_until.store(now_ms() + ms, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        tracing::warn!(
            backend = %self.backend, endpoint = %self.address, ejection_ms = ms, code = "endpoint_ejected",
            "endpoint ejected after {failures} failures in a row"
        );
    }

    /// Records a probe's result; flips the verdict at the thresholds.
    fn probed(&self, ok: bool, check: &ActiveHealthCheck) {
        let streak = self.probe_streak.load(Relaxed);
        let streak = match ok {
            true => streak.max(0).saturating_add(1),
            false => streak.min(0).saturating_sub(1),
        };
        self.probe_streak.store(streak, Relaxed);
        let healthy = self.probed_healthy.load(Relaxed);
        if !healthy && ok && streak >= check.healthy_threshold as i32 {
            self.probed_healthy.store(true, Relaxed);
            tracing::info!(backend = %self.backend, endpoint = %self.address, code = "endpoint_healthy", "endpoint healthy again (active check)");
        } else if healthy && !ok && -streak >= check.unhealthy_threshold as i32 {
            self.probed_healthy.store(false, Relaxed);
            tracing::warn!(backend = %self.backend, endpoint = %self.address, code = "endpoint_unhealthy", "endpoint unhealthy (active check)");
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
                        _ = tokio::time::sleep_until(at.into()) => return,
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

type Registry = std::collections::BTreeMap<(Box<str>, Box<str>), std::sync::Weak<EndpointState>>;
static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

/// One endpoint's share of a request or WebSocket: counted while held.
#[derive(Debug)]
pub struct Lease {
    state: Arc<EndpointState>,
    pending: bool,
    websocket: bool,
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
    /// Where least_requests starts looking, so ties go in turn.
    turn: std::sync::atomic::AtomicUsize,
}

impl Fleet {
    /// A fleet of `endpoints` chosen among by `balancing`.
    pub fn new(endpoints: Vec<Endpoint>, balancing: FleetOptions) -> Fleet {
        let current = Mutex::new(vec![0; endpoints.len()]);
        Fleet { endpoints, options: balancing, current, turn: Default::default() }
    }

    /// Chooses the endpoint for a request: among those not draining and not in
    /// `tried`, the healthy ones (all of them when none is, unless the backend refuses
    /// then), with room under the circuit breaker, by the algorithm (`key`: the
    /// consistent hash's, if the request has one).
    ///
    /// # Errors
    /// `upstream_unavailable` when every endpoint drains or was tried, or none is
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
        let open: Vec<usize> = (0..eps.len()).filter(open).collect();
        if open.is_empty() {
            return Err(self.none_open());
        }
        let mut candidates: Vec<usize> = open.iter().copied().filter(|i| eps[*i].state.healthy()).collect();
        if candidates.is_empty() {
            if self.options.when_all_unhealthy == WhenAllUnhealthy::Refuse {
                return Err(self.none_healthy());
            }
            candidates = open;
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

    /// The fewest in flight per unit of weight; ties in turn.
    fn least_requests(&self, candidates: &[usize]) -> usize {
        let start = self.turn.fetch_add(1, Relaxed) % candidates.len();
        let load = |i: usize| (u64::from(self.endpoints[i].state.in_flight()), u64::from(self.endpoints[i].weight));
        let mut best = candidates[start];
        for k in 1..candidates.len() {
            let i = candidates[(start + k) % candidates.len()];
            let ((a, wa), (b, wb)) = (load(i), load(best));
            if a * wb < b * wa {
                best = i;
            }
        }
        best
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
        self.endpoints[i].state.report(ok, &self.options.passive);
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
            let deadline = since.map(|at| at + self.options.drain_timeout);
            e.state.draining.store(deadline.is_some(), Relaxed);
            e.state.drain.send_if_modified(|d| {
                let changed = *d != deadline;
                *d = deadline;
                changed
            });
            let mut prober = e.state.prober.lock().unwrap_or_else(|p| p.into_inner());
            let same = match (&*prober, &self.options.active) {
                (Some((running, _)), Some(wanted)) => running == wanted,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            if let Some((_, task)) = prober.take() {
                task.abort();
            }
            e.state.probed_healthy.store(true, Relaxed);
            e.state.probe_streak.store(0, Relaxed);
            if let Some(check) = &self.options.active {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { continue };
                let probe = Probe {
                    state: Arc::downgrade(&e.state),
                    connector: e.connector.clone(),
                    host: host.clone(),
                    path: format!("{base_path}{}", check.path),
                    check: check.clone(),
                };
                let task = runtime.spawn(probe.run());
                *prober = Some((check.clone(), task.abort_handle()));
            }
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
        let timeout = Duration::from_millis(self.check.timeout_ms);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let ok = tokio::time::timeout(timeout, self.once()).await.unwrap_or(false);
            let Some(state) = self.state.upgrade() else { return };
            state.probed(ok, &self.check);
        }
    }

    /// One probe: true when it passed.
    async fn once(&self) -> bool {
        let Ok(stream) = self.connector.connect_http1().await else { return false };
        if self.check.kind == ProbeKind::Tcp {
            return true;
        }
        let Ok((mut sender, connection)) = super::http1_client()
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
        else {
            return false;
        };
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
        let Ok(req) = req.body(http_body_util::Empty::new()) else { return false };
        let status = sender.send_request(req).await.map(|r| r.status());
        driving.abort();
        let Ok(status) = status else { return false };
        match self.check.kind {
            ProbeKind::Websocket => status == http::StatusCode::SWITCHING_PROTOCOLS,
            _ if self.check.expected_statuses.is_empty() => status.is_success() || status.is_redirection(),
            _ => self.check.expected_statuses.contains(&status.as_u16()),
        }
    }
}

/// A fresh `Sec-WebSocket-Key` for a probe: 16 random bytes in base64 (RFC 6455 §4.1).
fn probe_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
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
            let _ = writeln!(out, "{name}{{backend=\"{}\",endpoint=\"{}\"}} {}", s.backend, s.address, get(s));
        }
    }
}
