//! A WebSocket after the upgrade, as the gateway governs it: every message is checked
//! against the *current* configuration (metering on the plan's limits, as a request
//! would be), the connection closes when its application is suspended, deleted or its
//! key changes (within a moment of the change: connections watch the snapshot's
//! generation instead of polling), and it closes with 1001 when the gateway drains.
//! Concurrent connections per application are capped by the plan's `max_connections`;
//! moving an application to a plan whose cap its open connections exceed closes the
//! newest of them (editing a plan's limits never closes a connection).
//!
//! Analytics per application record, as pseudo-metrics whose names no metric can take
//! (`:` is not allowed in a system_name): `websocket:connections` when a connection
//! opens, and `websocket:client_messages`, `websocket:server_messages`,
//! `websocket:client_bytes`, `websocket:server_bytes` and `websocket:seconds`
//! (connection-seconds) every minute while it is open and when it closes.

use crate::analytics::Analytics;
use crate::mapping::Usage;
use crate::policy::Credential;
use crate::policy::websocket::OnLimitExceeded;
use crate::relay::{CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, FrameInfo, Tally, Totals, Verdict};
use crate::snapshot::{Application, Product, SnapshotHandle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tollgate_counters::{Check, Clock, Counters, CountersError, Decision, FailureMode};

/// The checks a usage makes against an application's plan limits.
///
/// On the stack for up to four limits (a plan's usual few): this runs for every
/// request and metered message.
pub(crate) fn plan_checks<'a>(
    product: &'a Product,
    app: &Application,
    usage: &Usage,
) -> smallvec::SmallVec<[Check<'a>; 4]> {
    app.plan
        .limits
        .iter()
        .filter_map(|l| {
            let delta = usage.delta(l.metric);
            (delta > 0).then(|| Check { metric: product.metrics.name(l.metric), period: l.period, max: l.value, delta })
        })
        .collect()
}

/// Open WebSocket connections per application, oldest first: in this process, and
/// with Redis counters also across nodes, as leases (see `RedisCounters::acquire`).
#[derive(Debug, Default)]
pub struct Connections {
    /// Application id → sequence numbers of its open connections, ascending.
    open: Mutex<HashMap<Box<str>, Vec<u64>>>,
    next: std::sync::atomic::AtomicU64,
    leases: Option<Leases>,
}

/// This node's places in the applications' shared connection sets.
#[derive(Debug)]
struct Leases {
    counters: Arc<Counters>,
    /// Names this node's leases apart from other nodes'.
    node: String,
    lease: std::time::Duration,
    /// Connection sequence number → (application, lease member).
    held: Mutex<HashMap<u64, (Box<str>, String)>>,
}

/// One open connection; dropping it frees its place.
pub struct ConnectionSlot {
    owner: Arc<Connections>,
    application: Box<str>,
    seq: u64,
}

impl Connections {
    /// Connections counted in this process only.
    pub fn local() -> Self {
        Connections::default()
    }

    /// Connections counted across every node sharing `counters`' Redis (if they are
    /// Redis counters), each held by a lease of `lease` that
    /// [`Connections::renew_leases`] renews; `node` must be unique among nodes.
    pub fn shared(counters: Arc<Counters>, node: String, lease: std::time::Duration) -> Self {
        if counters.redis().is_none() {
            return Connections::default();
        }
        Connections { leases: Some(Leases { counters, node, lease, held: Mutex::default() }), ..Connections::default() }
    }

    /// Takes a place for `application` unless `max` are open already. With shared
    /// counters the place is leased in Redis; if Redis does not answer, the counters'
    /// failure mode decides: `strict` refuses (the error), the others count here only.
    pub async fn try_open(
        self: &Arc<Self>,
        application: &str,
        max: Option<u32>,
    ) -> Result<Option<ConnectionSlot>, CountersError> {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut local_cap = max;
        if let Some(leases) = &self.leases
            && let Some(redis) = leases.counters.redis()
        {
            let name = format!("{}:{seq}", leases.node);
            match redis.acquire(application, max, leases.lease, &name).await {
                Ok(Some(member)) => {
                    lock(&leases.held).insert(seq, (application.into(), member));
                    local_cap = None;
                }
                Ok(None) => return Ok(None),
                Err(e) if redis.mode() == FailureMode::Strict => return Err(e),
                Err(_) => {}
            }
        }
        let mut map = lock(&self.open);
        let list = map.entry(application.into()).or_default();
        if local_cap.is_some_and(|m| list.len() >= m as usize) {
            return Ok(None);
        }
        list.push(seq);
        Ok(Some(ConnectionSlot { owner: self.clone(), application: application.into(), seq }))
    }

    /// How many WebSocket connections of `application` are open through this process.
    pub fn open(&self, application: &str) -> usize {
        lock(&self.open).get(application).map_or(0, Vec::len)
    }

    /// How many of `application`'s open connections (on every node, when leased) are
    /// older than `slot`.
    async fn rank(&self, slot: &ConnectionSlot) -> usize {
        if let Some(leases) = &self.leases
            && let Some(redis) = leases.counters.redis()
        {
            let member = lock(&leases.held).get(&slot.seq).map(|(_, m)| m.clone());
            if let Some(member) = member
                && let Ok(live) = redis.live(&slot.application).await
            {
                return live.iter().take_while(|m| **m != member).count();
            }
        }
        let map = lock(&self.open);
        map.get(&slot.application).map_or(0, |l| l.partition_point(|s| *s < slot.seq))
    }

    /// Renews this node's leases every third of a lease period until `stop`. A lease
    /// that lapsed anyway (Redis was away longer than a lease, or lost its data) is
    /// taken again, without a cap: the connection is open.
    pub async fn renew_leases(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let Some(leases) = &self.leases else { return };
        let Some(redis) = leases.counters.redis() else { return };
        let mut tick = tokio::time::interval(leases.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => return,
            }
            let mut by_app: HashMap<Box<str>, Vec<(u64, String)>> = HashMap::new();
            for (seq, (app, member)) in lock(&leases.held).iter() {
                by_app.entry(app.clone()).or_default().push((*seq, member.clone()));
            }
            for (app, members) in by_app {
                let names: Vec<&str> = members.iter().map(|(_, m)| m.as_str()).collect();
                match redis.renew(&app, &names, leases.lease).await {
                    Ok(n) if n == members.len() => {}
                    Ok(_) => {
                        for (seq, member) in &members {
                            let Ok(live) = redis.live(&app).await else { break };
                            if live.contains(member) {
                                continue;
                            }
                            let name = format!("{}:{seq}", leases.node);
                            if let Ok(Some(again)) = redis.acquire(&app, None, leases.lease, &name).await
                                && let Some(entry) = lock(&leases.held).get_mut(seq)
                            {
                                entry.1 = again;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot renew connection leases yet"),
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        {
            let mut map = lock(&self.owner.open);
            if let Some(list) = map.get_mut(&self.application) {
                list.retain(|s| *s != self.seq);
                if list.is_empty() {
                    map.remove(&self.application);
                }
            }
        }
        let Some(leases) = &self.owner.leases else { return };
        let Some((app, member)) = lock(&leases.held).remove(&self.seq) else { return };
        // Give the place back now; if Redis does not answer, the lease runs out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let owner = self.owner.clone();
            runtime.spawn(async move {
                if let Some(redis) = owner.leases.as_ref().and_then(|l| l.counters.redis()) {
                    let _ = redis.release(&app, &member).await;
                }
            });
        }
    }
}

/// A snapshot generation and what a session's application was in it.
pub(crate) type Current = (u64, Arc<Product>, Arc<Application>);

pub(crate) struct Session {
    pub snapshot: SnapshotHandle,
    pub host: Box<str>,
    pub product: Arc<str>,
    pub app_id: Arc<str>,
    /// The plan the application was on when the connection opened.
    pub plan: Arc<str>,
    pub slot: Option<ConnectionSlot>,
    pub credential: Credential,
    pub counters: Arc<Counters>,
    pub clock: Arc<dyn Clock>,
    pub analytics: Option<Arc<Analytics>>,
    /// `current()` as of a snapshot generation: metering looks the product and the
    /// application up once per configuration change, not once per frame (host and
    /// credential lookups were a fifth of metering's cost).
    pub cache: Mutex<Option<Current>>,
    /// When the token the connection was opened with expires (Unix seconds).
    pub token_expires: Option<i64>,
}

/// A frame's usage and what it counts on.
struct Metered {
    product: Arc<Product>,
    app: Arc<Application>,
    usage: Usage,
    now: i64,
}

impl crate::relay::Decide for Session {
    /// With counters in this process the verdict is had at once, without making a
    /// future per frame (or a status nobody reads).
    fn decide_now(&self, frame: FrameInfo) -> Option<Verdict> {
        let Counters::Memory(memory) = &*self.counters else { return None };
        let m = match self.metered(frame) {
            Ok(m) => m,
            Err(verdict) => return Some(verdict),
        };
        let decision = memory.admit(&m.app.id, &plan_checks(&m.product, &m.app, &m.usage), m.now);
        Some(self.verdict(frame, &m, Ok(decision)))
    }

    fn decide(&self, frame: FrameInfo) -> std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send + '_>> {
        Box::pin(self.frame(frame))
    }

    /// A read's frames are metered together: one counter update (one Redis call) and
    /// one analytics record per read, all-or-nothing — a run that does not fit is asked
    /// for again frame by frame, so limits stay exact.
    fn decides_runs(&self) -> bool {
        true
    }
}

impl Session {
    /// The product and application as the current configuration has them, or why the
    /// connection may no longer stay open.
    fn current(&self) -> Result<(Arc<Product>, Arc<Application>), &'static str> {
        let snapshot = self.snapshot.load();
        let product = snapshot.product_for_host(&self.host).ok_or("product no longer published")?.clone();
        let app = product.reauthorize(&self.credential, &self.app_id)?;
        Ok((product, app))
    }

    /// `current()`, remembered until the next snapshot is stored.
    fn current_cached(&self) -> Result<(Arc<Product>, Arc<Application>), &'static str> {
        let generation = self.snapshot.generation();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, product, app)) = cache.as_ref()
            && *g == generation
        {
            return Ok((product.clone(), app.clone()));
        }
        let (product, app) = self.current()?;
        *cache = Some((generation, product.clone(), app.clone()));
        Ok((product, app))
    }

    /// What data frames use: their messages (counted on first frames) and bytes, as the
    /// `websocket` policy meters them, with the product and application they count on;
    /// `Err` when the frame is decided without counting (nothing metered, or revoked).
    fn metered(&self, frame: FrameInfo) -> Result<Metered, Verdict> {
        let (product, app) = self.current_cached().map_err(|reason| Verdict::Close(CLOSE_POLICY_VIOLATION, reason))?;
        let ws = &product.websocket_config;
        let mut usage = Usage::default();
        if let Some((metric, direction, delta)) = ws.meter
            && frame.messages > 0
            && direction.includes(frame.from_client)
        {
            usage.add(metric, delta.saturating_mul(u64::from(frame.messages)));
        }
        if let Some((metric, direction)) = ws.meter_bytes
            && direction.includes(frame.from_client)
            && frame.payload_len > 0
        {
            usage.add(metric, frame.payload_len);
        }
        if usage.is_empty() {
            return Err(Verdict::Forward);
        }
        let usage = usage.with_ancestors(&product.metrics);
        Ok(Metered { product, app, usage, now: self.clock.now() })
    }

    /// The verdict on a metered frame, given the counters' decision.
    fn verdict(&self, frame: FrameInfo, m: &Metered, decision: Result<Decision, CountersError>) -> Verdict {
        match decision {
            Ok(Decision::Allowed(_)) => {
                if let Some(a) = &self.analytics {
                    let names = m.usage.0.iter().map(|(metric, d)| (m.product.metrics.name(*metric), *d));
                    a.record(&m.app.id, &m.product.system_name, names, m.now);
                }
                Verdict::Forward
            }
            // A run that does not fit as a whole: the relay asks for its frames in turn.
            Ok(Decision::Exceeded(_)) if frame.frames > 1 => Verdict::Drop,
            // Only whole messages can be dropped; a frame inside one closes the connection.
            Ok(Decision::Exceeded(_)) => match m.product.websocket_config.on_limit_exceeded {
                OnLimitExceeded::Drop if frame.starts_message() => Verdict::Drop,
                _ => Verdict::Close(CLOSE_POLICY_VIOLATION, "usage limits exceeded"),
            },
            Err(_) => Verdict::Close(1011, "usage counters unavailable"),
        }
    }

    /// Decides on data frames (one, or a read's run): what they use is checked against
    /// the plan's limits, together and all-or-nothing like a request.
    pub async fn frame(&self, frame: FrameInfo) -> Verdict {
        let m = match self.metered(frame) {
            Ok(m) => m,
            Err(verdict) => return verdict,
        };
        let checks = plan_checks(&m.product, &m.app, &m.usage);
        let decision = self.counters.authorize(&m.app.id, &checks, m.now).await;
        self.verdict(frame, &m, decision)
    }

    /// Resolves when the connection must close: its application was revoked by a
    /// configuration change or moved to a plan that does not allow it (1008), or the
    /// gateway drains (1001). One wait, on the snapshot's generations: the drain wakes
    /// it too, and `draining` is read, not waited on (each wait is held by every open
    /// WebSocket).
    pub async fn until_closed(
        &self,
        mut generations: watch::Receiver<u64>,
        draining: watch::Receiver<bool>,
    ) -> (u16, &'static str) {
        let mut plan = self.plan.clone();
        // The token's expiry, on the monotonic clock (a boxed sleep only when there is one).
        let mut expiry = self.token_expires.map(|exp| {
            let left = (exp - self.clock.now()).max(0) as u64;
            Box::pin(tokio::time::sleep(std::time::Duration::from_secs(left)))
        });
        loop {
            if *draining.borrow() {
                return (CLOSE_GOING_AWAY, "the gateway is shutting down");
            }
            tokio::select! {
                () = async { match expiry.as_mut() { Some(s) => s.as_mut().await, None => std::future::pending().await } } => {
                    return (CLOSE_POLICY_VIOLATION, "token expired");
                }
                r = generations.changed() => {
                    if r.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if *draining.borrow() {
                        continue;
                    }
                    // What the old snapshot said is stale now; let it go rather than
                    // keep it alive while the connection is quiet.
                    *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    let app = match self.current() {
                        Ok((_, app)) => app,
                        Err(reason) => return (CLOSE_POLICY_VIOLATION, reason),
                    };
                    if app.plan.system_name != plan {
                        if let (Some(max), Some(slot)) = (app.plan.max_connections, &self.slot)
                            && Box::pin(slot.owner.rank(slot)).await >= max as usize
                        {
                            return (CLOSE_POLICY_VIOLATION, "the application's new plan does not allow this connection");
                        }
                        plan = app.plan.system_name.clone();
                    }
                }
            }
        }
    }
}

/// Resolves when the gateway drains, for a WebSocket no application governs: woken by
/// the snapshot's generations, as [`Session::until_closed`].
pub(crate) async fn until_drained(mut generations: watch::Receiver<u64>, draining: watch::Receiver<bool>) {
    while !*draining.borrow() {
        if generations.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Names of the pseudo-metrics WebSocket analytics are recorded under.
pub const CONNECTIONS: &str = "websocket:connections";
/// Messages from the client.
pub const CLIENT_MESSAGES: &str = "websocket:client_messages";
/// Messages from the backend.
pub const SERVER_MESSAGES: &str = "websocket:server_messages";
/// Bytes from the client, frames as on the wire.
pub const CLIENT_BYTES: &str = "websocket:client_bytes";
/// Bytes from the backend, frames as on the wire.
pub const SERVER_BYTES: &str = "websocket:server_bytes";
/// Seconds connections were open.
pub const SECONDS: &str = "websocket:seconds";
/// Closes by close code: `websocket:closes:1000`, … (1006 for a connection that ended
/// without a close frame, RFC 6455 §7.1.5).
pub const CLOSES: &str = "websocket:closes:";

impl Session {
    /// Runs `relay` (which adds to `tally`) and records the connection in analytics:
    /// its opening now, its messages, bytes and seconds every minute and at the end.
    /// `relay` is borrowed, not moved: moving it would give this future a second copy
    /// of it, and both live as long as the connection.
    pub async fn accounted<F: Future<Output = Totals>>(
        &self,
        mut relay: std::pin::Pin<&mut F>,
        tally: &Tally,
    ) -> Totals {
        let Some(analytics) = &self.analytics else { return relay.await };
        let record = |usage: &[(&str, u64)]| {
            analytics.record(&self.app_id, &self.product, usage.iter().copied(), self.clock.now());
        };
        record(&[(CONNECTIONS, 1)]);
        let started = std::time::Instant::now();
        // What was recorded so far: [client messages, server messages, client bytes, server bytes, ms].
        let mut done = [0u64; 5];
        let mut flush = |last: bool| {
            let [a, b, c, d] = tally.get();
            let ms = started.elapsed().as_millis() as u64 - done[4];
            // Whole seconds while open; the rest, rounded, at the end.
            let secs = if last { (ms + 500) / 1000 } else { ms / 1000 };
            let delta = [a - done[0], b - done[1], c - done[2], d - done[3], secs];
            let usage: Vec<(&str, u64)> = [CLIENT_MESSAGES, SERVER_MESSAGES, CLIENT_BYTES, SERVER_BYTES, SECONDS]
                .into_iter()
                .zip(delta)
                .filter(|(_, d)| *d > 0)
                .collect();
            if !usage.is_empty() {
                record(&usage);
            }
            done = [a, b, c, d, done[4] + secs * 1000];
        };
        let mut minutes = tokio::time::interval(std::time::Duration::from_secs(60));
        minutes.tick().await;
        let totals = loop {
            tokio::select! {
                totals = relay.as_mut() => break totals,
                _ = minutes.tick() => flush(false),
            }
        };
        flush(true);
        let code = totals.close.map_or(1006, |(_, code)| code);
        record(&[(&format!("{CLOSES}{code}"), 1)]);
        totals
    }
}
