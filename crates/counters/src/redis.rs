//! Counters shared by every gateway node, in Redis.
//!
//! One request (or one metered WebSocket message) is one `EVALSHA` of [`AUTHORIZE`]: the
//! script reads every window the request touches, and only if all of them have room
//! applies every increment — Redis runs a script alone, so N nodes admit exactly what
//! one would. Each worker thread of a node sends its requests over a multiplexed
//! connection of its own (the rest share one): the client pipelines them, so throughput
//! does not wait on round trips.
//!
//! Keys (`NAMESPACE:{APP}:w:METRIC:PERIOD:START`, namespace `tollgate` unless told
//! otherwise, so several installations can share one Redis) carry the application in a hash tag,
//! so in Redis Cluster all windows of one application live in one slot and a script
//! may touch them together. A window's key expires a minute after the window ends
//! (`eternity` never does), so Redis holds only live windows. Windows are computed from
//! the node's clock: keep nodes' clocks in sync (NTP), as for any distributed limiter.
//!
//! When Redis cannot be reached the [`FailureMode`] decides (3scale's caching policy
//! modes): `strict` refuses, `allow` admits and keeps the increments to apply when
//! Redis is back, `resilient` repeats each application's last decision for a while.
//!
//! WebSocket connection caps use leases: each open connection is a member of the
//! application's sorted set, scored by its lease's expiry (Redis time), renewed by its
//! node; the slots of a node that dies free themselves when their leases run out.

use crate::edge::{Algorithm, EdgeCheck, EdgeDecision};
use crate::{Check, CountersError, Decision, LimitStatus, Period};
use redis::aio::ConnectionManagerConfig;

use crate::link::{Conn, Link, Target};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Timeouts in a row after which Redis counts as frozen: calls stop waiting for it.
pub const FROZEN_AFTER: u32 = 3;

/// A Redis that stops answering (frozen, not refusing) would cost every request the
/// full timeout. After [`FROZEN_AFTER`] timeouts in a row the hot-path calls (limits,
/// edge limits) go straight to the failure mode, and one background task pings Redis
/// (every timeout) until it answers; then calls go to Redis again.
#[derive(Debug, Default)]
struct Breaker {
    timeouts_in_a_row: AtomicU32,
    open: AtomicBool,
    /// Calls made to Redis, and calls the failure mode answered without asking.
    asked: AtomicU64,
    skipped: AtomicU64,
    /// Woken when Redis answers again.
    answering: tokio::sync::Notify,
}

/// What a node does when Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refuse (503; a WebSocket message closes its connection with 1011) rather than
    /// risk exceeding a limit. The default.
    Strict,
    /// Admit, count locally, and add what was counted to Redis when it returns.
    Allow,
    /// Repeat the application's last decision from Redis if it is at most this old
    /// (counting admitted usage as `allow` does); refuse when there is none.
    Resilient(Duration),
}

impl FailureMode {
    /// `strict`, `allow` or `resilient` (with `resilient_ttl`).
    pub fn parse(s: &str, resilient_ttl: Duration) -> Option<FailureMode> {
        match s {
            "strict" => Some(FailureMode::Strict),
            "allow" => Some(FailureMode::Allow),
            "resilient" => Some(FailureMode::Resilient(resilient_ttl)),
            _ => None,
        }
    }
}

/// Checks every window (KEYS) against ARGV = [max, delta, expire_at] per key; applies
/// every delta only if all fit. Returns {1, value after, ...} or {0, index, current}.
const AUTHORIZE: &str = r"
local cur = {}
for i = 1, #KEYS do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if c + tonumber(ARGV[3*i-1]) > tonumber(ARGV[3*i-2]) then
    return {0, i, c}
  end
  cur[i] = c
end
local out = {1}
for i = 1, #KEYS do
  local d = tonumber(ARGV[3*i-1])
  local v = cur[i]
  if d > 0 then
    v = redis.call('INCRBY', KEYS[i], d)
    local at = tonumber(ARGV[3*i])
    if at > 0 and v == d then redis.call('EXPIREAT', KEYS[i], at) end
  end
  out[i+1] = v
end
return out
";

/// Quota leasing (see `lease`): KEYS = the windows, then a receipt key; ARGV[1] = the
/// share of a window's room a lease may take (1/ARGV[1]); then per window ARGV = [max,
/// need, expire_at, give_back, lease]. Gives back first (never below zero), then
/// checks every window as [`AUTHORIZE`] does and, if all have room, grants each window
/// with need > 0 or lease > 0 (a refill: need 0) `need` units plus up to `lease` more, and adds what it granted to the
/// receipt (a hash: window index → units; summed, should a call run twice), kept for
/// [`RECEIPT_SECONDS`] (a node whose call timed out reads it to give the grants back). Returns {1, granted total, granted, ...} or {0, index, current}.
const LEASE: &str = r"
local share = tonumber(ARGV[1])
local n = #KEYS - 1
local cur = {}
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  local back = math.min(tonumber(ARGV[5*i]), c)
  if back > 0 then c = redis.call('DECRBY', KEYS[i], back) end
  cur[i] = c
end
for i = 1, n do
  if cur[i] + tonumber(ARGV[5*i-2]) > tonumber(ARGV[5*i-3]) then return {0, i, cur[i]} end
end
local out = {1}
for i = 1, n do
  local max, need, at, lease = tonumber(ARGV[5*i-3]), tonumber(ARGV[5*i-2]), tonumber(ARGV[5*i-1]), tonumber(ARGV[5*i+1])
  local grant = 0
  if need > 0 or lease > 0 then
    grant = need + math.min(lease, math.floor((max - cur[i] - need) / share))
    local v = redis.call('INCRBY', KEYS[i], grant)
    if at > 0 and v == grant then redis.call('EXPIREAT', KEYS[i], at) end
    cur[i] = v
  end
  out[2*i] = cur[i]
  out[2*i+1] = grant
  if grant > 0 then redis.call('HINCRBY', KEYS[n + 1], i, grant) end
end
redis.call('EXPIRE', KEYS[n + 1], tonumber(ARGV[5*n + 2]))
return out
";

/// Seconds a lease call's receipt stays in Redis: long enough for a node whose call
/// timed out to read it once Redis answers again (it looks every second).
const RECEIPT_SECONDS: u64 = 10;

/// A lease call whose answer never came: Redis may have run it (a frozen Redis runs
/// what it was sent once it resumes). Its receipt, if any, says what was granted.
#[derive(Debug)]
struct Doubt {
    receipt: String,
    /// The windows asked for, in the call's order.
    keys: Vec<String>,
    since: Instant,
}

/// How long a doubtful call's receipt is looked for after Redis answers again.
const DOUBT_SECONDS: u64 = 30;

/// Gives back ARGV[1] units of a lease on KEYS[1] (never below zero; nothing when the
/// window's key is gone). Returns the units given back.
const GIVE_BACK: &str = r"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
local back = math.min(c, tonumber(ARGV[1]))
if back > 0 then redis.call('DECRBY', KEYS[1], back) end
return back
";

/// Adds ARGV = [delta, expire_at] per key (usage counted while Redis was away).
const ADD: &str = r"
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2*i-1])
  local at = tonumber(ARGV[2*i])
  if at > 0 then redis.call('EXPIREAT', KEYS[i], at) end
end
return #KEYS
";

/// Takes a connection slot in KEYS[1] (a sorted set scored by lease expiry) if fewer
/// than ARGV[1] live leases are there (ARGV[1] < 0: no cap). ARGV[2]: lease ms,
/// ARGV[3]: the node's name for the connection. Returns the member, or false.
/// Members start with the opening time, so sorting them sorts connections by age.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local max = tonumber(ARGV[1])
if max >= 0 and redis.call('ZCARD', KEYS[1]) >= max then return false end
local member = string.format('%015d', now) .. ':' .. ARGV[3]
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, member)
redis.call('PEXPIRE', KEYS[1], lease * 2)
return member
";

/// Extends the leases of members ARGV[2..] of KEYS[1] by ARGV[1] ms from now (only
/// those still there: an expired lease is not revived).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    n = n + 1
  end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return n
";

/// Live members of KEYS[1], oldest connection first.
const LIVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
table.sort(m)
return m
";

/// A window's key and what was admitted on it while Redis was away: (delta, expire_at).
type Pending = (String, (u64, i64));

/// Edge limits (see `edge`): KEYS are base keys, ARGV = [now_ms, then per key: kind
/// (`f` fixed, `s` sliding, `b` bucket), a, b] with a, b = count, window ms (windows) or
/// rate per second, burst (bucket). All-or-nothing. Returns {1} or {0, index, retry ms}.
const EDGE: &str = r"
local now = tonumber(ARGV[1])
local plan = {}
for i = 1, #KEYS do
  local t, a, b = ARGV[3*i-1], tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if t == 'b' then
    local h = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local tokens = tonumber(h[1]) or b
    local at = tonumber(h[2]) or now
    tokens = math.min(b, tokens + math.max(0, now - at) * a / 1000)
    if tokens < 1 then return {0, i, math.ceil((1 - tokens) * 1000 / a)} end
    plan[i] = tokens
  else
    local start = now - (now % b)
    local cur = tonumber(redis.call('GET', KEYS[i] .. ':' .. start) or '0')
    local est, prev = cur, 0
    if t == 's' then
      prev = tonumber(redis.call('GET', KEYS[i] .. ':' .. (start - b)) or '0')
      est = cur + prev * (1 - (now - start) / b)
    end
    if est + 1 > a then
      local retry = start + b - now
      if t == 's' and cur + 1 <= a then
        retry = math.min(retry, math.max(1, math.ceil((est + 1 - a) / math.max(prev, 1) * b)))
      end
      return {0, i, retry}
    end
    plan[i] = start
  end
end
for i = 1, #KEYS do
  local t, a, b = ARGV[3*i-1], tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if t == 'b' then
    redis.call('HSET', KEYS[i], 'tokens', tostring(plan[i] - 1), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[i], math.ceil(b / a * 1000) + 1000)
  else
    local k = KEYS[i] .. ':' .. plan[i]
    redis.call('INCR', k)
    redis.call('PEXPIRE', k, 2 * b + 1000)
  end
end
return {1}
";

/// Seconds a window's key outlives its window (clock differences between nodes).
const EXPIRY_SLACK: i64 = 60;

/// Usage counters, edge limits and WebSocket connection leases shared by every node
/// through one Redis.
pub struct RedisCounters {
    /// The connections: to one server, a sentinel-named master or a cluster. Calls
    /// every request or metered frame makes use the worker thread's own
    /// ([`Link::worker`]), the rest the shared one.
    link: Arc<Link>,
    authorize: redis::Script,
    add: redis::Script,
    acquire: redis::Script,
    renew: redis::Script,
    live: redis::Script,
    edge: redis::Script,
    mode: FailureMode,
    namespace: String,
    /// Usage admitted while Redis was away, by window key: (delta, expire_at).
    pending: Mutex<HashMap<String, (u64, i64)>>,
    /// `resilient`: each application's last decision from Redis, and when.
    last: Mutex<HashMap<Box<str>, (Instant, Decision)>>,
    /// Whether Redis counts as frozen (see [`Breaker`]).
    breaker: Arc<Breaker>,
    /// The timeout of one call, for the breaker's probes.
    timeout: Duration,
    /// Quota leasing, when on (`--counters-lease`).
    leases: Option<Arc<crate::lease::Leases>>,
    lease: redis::Script,
    give_back: redis::Script,
    /// Lease calls that timed out, to check their receipts.
    doubts: Arc<Mutex<Vec<Doubt>>>,
    /// Lease refills started, and those not yet answered.
    refills: Arc<RefillCounts>,
    /// Names this node's lease receipts apart from other nodes'.
    receipt_prefix: String,
    receipts: AtomicU64,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters").field("mode", &self.mode).finish_non_exhaustive()
    }
}

pub(crate) fn window_key(ns: &str, application: &str, metric: &str, period: Period, start: i64) -> String {
    format!("{ns}:{{{application}}}:w:{metric}:{}:{start}", period.as_str())
}

fn connections_key(ns: &str, application: &str) -> String {
    format!("{ns}:{{{application}}}:connections")
}

fn unavailable(e: redis::RedisError) -> CountersError {
    CountersError::Unavailable(e.to_string())
}

impl RedisCounters {
    /// Connects to `url`: `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, or Sentinel's or
    /// a cluster's form (see [`crate::link`]). A node starts even if Redis is down (it
    /// then follows `mode`), but a malformed URL is an error.
    pub async fn connect(
        url: &str,
        namespace: &str,
        mode: FailureMode,
        timeout: Duration,
    ) -> Result<RedisCounters, CountersError> {
        let target = Target::parse(url)?;
        // Fail fast while Redis is away (the failure mode answers meanwhile); every
        // request after a failure starts a new connection attempt.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let link = Arc::new(Link::connect(&target, config, timeout).await?);
        Ok(RedisCounters {
            link,
            authorize: redis::Script::new(AUTHORIZE),
            add: redis::Script::new(ADD),
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            live: redis::Script::new(LIVE),
            edge: redis::Script::new(EDGE),
            mode,
            namespace: namespace.to_string(),
            pending: Mutex::default(),
            last: Mutex::default(),
            breaker: Arc::default(),
            timeout,
            leases: None,
            lease: redis::Script::new(LEASE),
            give_back: redis::Script::new(GIVE_BACK),
            doubts: Arc::default(),
            refills: Arc::default(),
            receipt_prefix: {
                let nanos =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                format!("{}-{nanos}", std::process::id())
            },
            receipts: AtomicU64::new(0),
        })
    }

    /// Turns quota leasing on: a grant takes up to `units` units beyond what the
    /// request needs (and at most 1/[`crate::lease::SHARE`] of what the window has
    /// left), admitted here without asking Redis. 0 turns it off. See `lease` for what
    /// it guarantees.
    pub fn set_lease(&mut self, units: u64) {
        self.leases = (units > 0).then(|| Arc::new(crate::lease::Leases::new(units, &self.namespace)));
    }

    /// Whether quota leasing is on.
    pub fn leasing(&self) -> bool {
        self.leases.is_some()
    }

    /// Units leased to this node and not yet admitted, over every window.
    pub fn leased(&self) -> u64 {
        self.leases.as_ref().map_or(0, |l| l.outstanding())
    }

    /// Lease refills started since the start, and those in flight now (each is one
    /// Redis call made beside the requests, not by one).
    pub fn refills(&self) -> (u64, u64) {
        (self.refills.started.load(Relaxed), self.refills.in_flight.load(Relaxed))
    }

    /// Requests that found a lease short while another request or a refill was asking
    /// Redis for more, and waited for that ask to end instead of calling Redis.
    pub fn lease_waits(&self) -> u64 {
        self.refills.waited.load(Relaxed)
    }

    /// Waits of [`RedisCounters::lease_waits`] that reached the Redis timeout (the
    /// failure mode answered those requests).
    pub fn lease_wait_timeouts(&self) -> u64 {
        self.refills.wait_timeouts.load(Relaxed)
    }

    /// Resolves once no lease refill is in flight (at once if none is).
    pub async fn refills_landed(&self) {
        loop {
            let landed = self.refills.landed.notified();
            if self.refills.in_flight.load(Relaxed) == 0 {
                return;
            }
            landed.await;
        }
    }

    /// Gives back to Redis the leases not used for `idle` (every lease when zero: at
    /// shutdown) and forgets those of windows that are over; returns the units given
    /// back. A give-back that fails is not retried: those units stay out of the
    /// window until it ends (fewer admitted, never more).
    pub async fn give_back_idle(&self, idle: Duration) -> u64 {
        let Some(leases) = &self.leases else { return 0 };
        let mut idle = leases.take_idle(idle, Instant::now(), crate::Clock::now(&crate::SystemClock));
        let mut conn = self.link.shared();
        idle.extend(self.settle_doubts(&mut conn).await);
        let mut back = 0;
        for (key, units) in idle {
            match self.give_back.key(&key).arg(units).invoke_async::<u64>(&mut conn).await {
                Ok(n) => back += n,
                Err(e) => tracing::debug!(error = %e, key, units, "cannot give a lease back"),
            }
        }
        back
    }

    /// Whether Redis counts as frozen now: hot-path calls do not wait for it.
    pub fn frozen(&self) -> bool {
        self.breaker.open.load(Relaxed)
    }

    /// Resolves once Redis does not count as frozen (at once if it does not).
    pub async fn answering(&self) {
        loop {
            let woken = self.breaker.answering.notified();
            if !self.frozen() {
                return;
            }
            woken.await;
        }
    }

    /// Hot-path calls made to Redis, and those the failure mode answered without
    /// asking it (Redis frozen), since the start.
    pub fn calls(&self) -> (u64, u64) {
        (self.breaker.asked.load(Relaxed), self.breaker.skipped.load(Relaxed))
    }

    /// Whether the last call to Redis (a request's, or a lease refill's) timed out.
    fn timing_out(&self) -> bool {
        self.breaker.timeouts_in_a_row.load(Relaxed) > 0 || self.refills.timed_out.load(Relaxed)
    }

    /// Before a hot-path call: `Err` (why) when Redis counts as frozen.
    fn gate(&self) -> Result<(), String> {
        if self.breaker.open.load(Relaxed) {
            self.breaker.skipped.fetch_add(1, Relaxed);
            return Err(format!(
                "Redis did not answer {FROZEN_AFTER} calls in a row within the timeout; it is not asked until it answers a probe"
            ));
        }
        self.breaker.asked.fetch_add(1, Relaxed);
        Ok(())
    }

    /// After a hot-path call: a timeout counts towards freezing, anything else resets.
    fn outcome<T>(&self, result: &Result<T, redis::RedisError>) {
        let b = &self.breaker;
        match result {
            Err(e) if e.is_timeout() => {
                if b.timeouts_in_a_row.fetch_add(1, Relaxed) + 1 >= FROZEN_AFTER && !b.open.swap(true, Relaxed) {
                    tracing::warn!(
                        code = "counters_frozen",
                        "Redis stopped answering ({FROZEN_AFTER} timeouts in a row): the failure mode answers at once until it does again"
                    );
                    self.probe();
                }
            }
            _ => b.timeouts_in_a_row.store(0, Relaxed),
        }
    }

    /// Pings Redis every timeout until it answers, then lets calls through again.
    fn probe(&self) {
        let (breaker, link, timeout) = (self.breaker.clone(), self.link.clone(), self.timeout);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            breaker.open.store(false, Relaxed);
            return;
        };
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(timeout).await;
                let (ping, mut conn) = (redis::cmd("PING"), link.shared());
                if let Ok(Ok(())) = tokio::time::timeout(timeout, ping.query_async::<()>(&mut conn)).await {
                    breaker.timeouts_in_a_row.store(0, Relaxed);
                    breaker.open.store(false, Relaxed);
                    breaker.answering.notify_waiters();
                    tracing::info!(code = "counters_answering", "Redis answers again: limits are counted in it");
                    return;
                }
            }
        });
    }

    /// What this node does when Redis does not answer.
    pub fn mode(&self) -> FailureMode {
        self.mode
    }

    /// Whether the counters live in a Redis Cluster.
    pub fn cluster(&self) -> bool {
        self.link.cluster()
    }

    /// `host:port` of the Redis server calls go to now: the master the sentinels
    /// named (empty until they answer), or the one server; empty for a cluster.
    pub fn server(&self) -> String {
        self.link.address()
    }

    /// Whether Redis answers now.
    ///
    /// For a cluster, whether it serves every slot: a PING would reach a live node while
    /// a master without a replica is down and the requests of its slots fail, so the
    /// cluster's own state is asked (`CLUSTER INFO`, `cluster_state:ok`).
    pub async fn ping(&self) -> Result<(), CountersError> {
        let mut conn = self.link.shared();
        if !self.link.cluster() {
            return redis::cmd("PING").query_async::<()>(&mut conn).await.map_err(unavailable);
        }
        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.map_err(unavailable)?;
        // Every slot served: `cluster_state:ok` alone is not enough, since a cluster
        // with `cluster-require-full-coverage no` stays ok without some slots' master.
        let field = |name: &str| info.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'));
        match (field("cluster_state"), field("cluster_slots_ok")) {
            (Some("ok"), Some("16384")) => Ok(()),
            (state, slots) => Err(CountersError::Unavailable(format!(
                "the Redis Cluster serves {} of 16384 slots (cluster_state {})",
                slots.unwrap_or("?"),
                state.unwrap_or("?")
            ))),
        }
    }

    /// Checks every limit at `now` (Unix seconds) and, if all pass, applies every
    /// increment, in one Redis script.
    ///
    /// # Errors
    ///
    /// [`CountersError::Unavailable`] when Redis does not answer and the failure mode
    /// refuses (`strict`, or `resilient` without a recent enough decision), or when the
    /// script's reply cannot be read.
    pub async fn authorize(
        &self,
        application: &str,
        checks: &[Check<'_>],
        now: i64,
    ) -> Result<Decision, CountersError> {
        if checks.is_empty() {
            return Ok(Decision::Allowed(None));
        }
        if let Some(leases) = &self.leases {
            return self.authorize_leased(leases, application, checks, now).await;
        }
        let mut call = self.authorize.prepare_invoke();
        for c in checks {
            let (start, end) = c.period.window(now);
            call.key(window_key(&self.namespace, application, c.metric, c.period, start));
            call.arg(c.max).arg(c.delta).arg(end.map_or(0, |e| e + EXPIRY_SLACK));
        }
        if let Err(why) = self.gate() {
            return self.without_redis(application, checks, now, why);
        }
        let mut conn = self.link.worker();
        let result = call.invoke_async::<Vec<i64>>(&mut conn).await;
        self.outcome(&result);
        match result {
            Ok(reply) => {
                let decision = decide(checks, &reply, now)?;
                self.remember(application, &decision);
                Ok(decision)
            }
            Err(e) => self.without_redis(application, checks, now, e.to_string()),
        }
    }

    /// The grants of lease calls that timed out but that Redis ran after all (their
    /// receipts say so): the requests were answered by the failure mode, so every
    /// unit granted goes back. Receipts not found are looked for again, for
    /// [`DOUBT_SECONDS`].
    async fn settle_doubts(&self, conn: &mut Conn) -> Vec<(String, u64)> {
        let doubts = std::mem::take(&mut *lock(&self.doubts));
        let mut back = Vec::new();
        let mut keep = Vec::new();
        for d in doubts {
            let receipt: Result<(HashMap<usize, u64>, i64), _> =
                redis::pipe().atomic().hgetall(&d.receipt).del(&d.receipt).query_async(conn).await;
            match receipt {
                Ok((grants, _)) if !grants.is_empty() => {
                    for (i, units) in grants {
                        if let Some(key) = d.keys.get(i.wrapping_sub(1)) {
                            back.push((key.clone(), units));
                        }
                    }
                }
                Ok(_) if d.since.elapsed() > Duration::from_secs(DOUBT_SECONDS) => {}
                _ => keep.push(d),
            }
        }
        lock(&self.doubts).extend(keep);
        back
    }

    /// [`RedisCounters::authorize`] with quota leasing: the windows whose lease covers
    /// the request are taken locally; the others (if any) go to Redis in one [`LEASE`]
    /// call, which also gives back the leases that ran short. Refused or undecided, the
    /// units taken locally are put back.
    async fn authorize_leased<'a>(
        &self,
        leases: &Arc<crate::lease::Leases>,
        application: &'a str,
        checks: &[Check<'a>],
        now: i64,
    ) -> Result<Decision, CountersError> {
        let at = Instant::now();
        // Leases are looked up by application and window: a window's Redis key is
        // built only when Redis is asked.
        let window = |c: &Check<'a>| crate::lease::Window::of(application, c, now);
        // Per check: the usage after this request as this node sees it (granted total
        // less its own unused units), once known.
        let mut current = vec![0u64; checks.len()];
        let mut asks = Vec::new();
        let mut refills = Refills { leases, application, checks, indices: Vec::new(), now };
        // Whether this request holds an ask of a window (a lease it will ask Redis for,
        // or a refill it will start): it must then never wait for another's ask, or
        // two requests could each wait for the ask the other holds.
        let mut holds = false;
        // (A macro, not a closure: the pass below also reads and clears `asks`.)
        macro_rules! sort {
            ($i:expr, $taken:expr) => {
                match $taken {
                    Ok(taken) => {
                        current[$i] = taken.held.seen.saturating_sub(taken.held.units);
                        if taken.refill {
                            refills.indices.push($i);
                            holds = true;
                        }
                    }
                    Err(ask) => {
                        if ask.lease {
                            holds = true;
                        }
                        asks.push(crate::lease::Ask { index: $i, ..ask });
                    }
                }
            };
        }
        // Windows whose lease is short while another request or a refill asks Redis
        // for more of it: wait for asks to end and take again (a window nobody asks
        // for any more is then asked for by this request, with a lease), so one call
        // at a time serves a window however many requests are in flight. A request
        // waits holding nothing: not an ask (two requests could each wait for the ask
        // the other holds — a request that holds one takes without waiting), and not
        // units (what it took of its other windows goes back first: a waiting
        // request's units would otherwise be missed by the lease, which would ask for
        // more, and on their return the node would hold more than a lease). The wait
        // is bounded by Redis's response timeout: an ask that took that long, or that
        // timed out, means Redis is not answering, and the failure mode answers.
        let mut waiting = Vec::new();
        let mut landed: Option<std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>> = None;
        let mut deadline = None;
        loop {
            waiting.clear();
            for (i, c) in checks.iter().enumerate() {
                match leases.take_or_wait(&window(c), c.max, c.delta, at, !holds) {
                    Some(taken) => sort!(i, taken),
                    None => waiting.push(i),
                }
            }
            if waiting.is_empty() {
                break;
            }
            if holds {
                for &i in &waiting {
                    let c = &checks[i];
                    // (`holds` is not read again: the request asks without waiting.)
                    #[allow(unused_assignments)]
                    {
                        sort!(i, leases.take(&window(c), c.max, c.delta, at));
                    }
                }
                break;
            }
            // Nothing held: asks are only for a request's own need (no lease marked),
            // and the units taken go back.
            for (i, c) in checks.iter().enumerate() {
                if !waiting.contains(&i) && !asks.iter().any(|a| a.index == i) {
                    leases.untake(&window(c), c.max, c.delta, at);
                }
            }
            asks.clear();
            match landed.take() {
                // Registered, then taken again: an ask that ends after that take wakes it.
                None => {
                    let mut notified = Box::pin(leases.landed().notified());
                    notified.as_mut().enable();
                    landed = Some(notified);
                }
                Some(notified) => {
                    let until = *deadline.get_or_insert_with(|| {
                        self.refills.waited.fetch_add(1, Relaxed);
                        tokio::time::Instant::now() + self.timeout
                    });
                    if tokio::time::timeout_at(until, notified).await.is_err() || self.timing_out() {
                        self.refills.wait_timeouts.fetch_add(1, Relaxed);
                        drop(refills);
                        let why = "a lease call of this window did not end within the Redis timeout".to_string();
                        return self.without_redis(application, checks, now, why);
                    }
                }
            }
        }
        // However this ends (answer, error, or the request dropped mid-call), the
        // windows this request asked a lease for may be asked for again.
        let _asked = Asked { leases, application, checks, asks: &asks, now };
        // The checks served from leases: their units go back if the request is not
        // admitted.
        let untake = || {
            for (_, c) in checks.iter().enumerate().filter(|(i, _)| !asks.iter().any(|a| a.index == *i)) {
                leases.untake(&window(c), c.max, c.delta, at);
            }
        };
        let keys: Vec<String> = asks.iter().map(|a| leases.key(&window(&checks[a.index]))).collect();
        if !asks.is_empty() {
            let mut call = self.lease.prepare_invoke();
            call.arg(crate::lease::SHARE);
            for (a, key) in asks.iter().zip(&keys) {
                let c = &checks[a.index];
                call.key(key);
                call.arg(c.max).arg(c.delta).arg(c.period.window(now).1.map_or(0, |e| e + EXPIRY_SLACK));
                // A check that adds nothing (delta 0) takes no lease: it would only hold
                // units of a window the request does not use.
                call.arg(a.give_back).arg(if a.lease && c.delta > 0 { leases.units } else { 0 });
            }
            let receipt = self.receipt_key(application);
            call.key(&receipt).arg(RECEIPT_SECONDS);
            if let Err(why) = self.gate() {
                untake();
                return self.without_redis(application, checks, now, why);
            }
            let mut conn = self.link.worker();
            let result = call.invoke_async::<Vec<i64>>(&mut conn).await;
            self.outcome(&result);
            let reply = match result {
                Ok(reply) => reply,
                Err(e) => {
                    // Redis may still run the call (a frozen Redis runs what it was sent
                    // once it resumes): its receipt will tell, and its grants go back
                    // then. Give-backs are not kept either way (fewer admitted, never
                    // more).
                    untake();
                    lock(&self.doubts).push(Doubt { receipt, keys, since: Instant::now() });
                    return self.without_redis(application, checks, now, e.to_string());
                }
            };
            let malformed = || CountersError::Unavailable(format!("unexpected reply from the lease script: {reply:?}"));
            match reply.as_slice() {
                [0, i, cur] => {
                    untake();
                    let c = &checks[asks.get((*i as usize).wrapping_sub(1)).ok_or_else(malformed)?.index];
                    let decision = Decision::Exceeded(c.status(*cur as u64, now));
                    self.remember(application, &decision);
                    return Ok(decision);
                }
                [1, granted @ ..] if granted.len() == 2 * asks.len() => {
                    for (a, pair) in asks.iter().zip(granted.chunks_exact(2)) {
                        let c = &checks[a.index];
                        let (total, grant) = (pair[0].max(0) as u64, pair[1].max(0) as u64);
                        let spare = grant.saturating_sub(c.delta);
                        current[a.index] = total.saturating_sub(spare);
                        if grant > 0 && a.lease {
                            leases.granted(&window(c), c.max, spare, total, at);
                        } else if grant > 0 {
                            leases.keep(&window(c), c.max, spare, total, at);
                        }
                    }
                }
                _ => {
                    untake();
                    return Err(malformed());
                }
            }
        }
        let decision = Decision::Allowed(crate::tightest(checks.iter().zip(current), now));
        if !asks.is_empty() {
            self.remember(application, &decision);
        }
        // A refill under way takes along this request's other windows that are past
        // half their lease: windows used together (a request's several limits) are
        // then refilled in one call, not drifting into a call each.
        if !refills.indices.is_empty() {
            for (i, c) in checks.iter().enumerate() {
                if !refills.indices.contains(&i)
                    && !asks.iter().any(|a| a.index == i)
                    && leases.join_refill(&window(c), c.max)
                {
                    refills.indices.push(i);
                }
            }
        }
        self.refill(&mut refills);
        Ok(decision)
    }

    /// Refills the leases of `refills` in the background: one [`LEASE`] call asking for
    /// a lease and nothing for a request (need 0), whose grants are added to the leases
    /// when it answers. A call that fails leaves a doubt, as a request's does (its
    /// receipt gives back what Redis granted after all). The windows may be refilled
    /// again once it is over.
    fn refill(&self, refills: &mut Refills<'_, '_>) {
        let indices = std::mem::take(&mut refills.indices);
        let (Some(leases), false) = (self.leases.clone(), indices.is_empty()) else { return };
        let (application, checks, now) = (refills.application, refills.checks, refills.now);
        let release = |leases: &crate::lease::Leases| {
            for &i in &indices {
                leases.asked(&crate::lease::Window::of(application, &checks[i], now), checks[i].max);
            }
        };
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(r) if !self.frozen() => r,
            _ => return release(&leases),
        };
        let windows: Vec<RefillWindow> = indices
            .iter()
            .map(|&i| {
                let (c, w) = (&checks[i], crate::lease::Window::of(application, &checks[i], now));
                RefillWindow {
                    metric: w.metric.into(),
                    period: w.period,
                    start: w.start,
                    max: c.max,
                    key: leases.key(&w),
                    expire_at: c.period.window(now).1.map_or(0, |e| e + EXPIRY_SLACK),
                }
            })
            .collect();
        let receipt = self.receipt_key(application);
        let (script, link, doubts, counts) =
            (self.lease.clone(), self.link.clone(), self.doubts.clone(), self.refills.clone());
        let application: Box<str> = application.into();
        self.breaker.asked.fetch_add(1, Relaxed);
        counts.started.fetch_add(1, Relaxed);
        counts.in_flight.fetch_add(1, Relaxed);
        runtime.spawn(async move {
            let mut call = script.prepare_invoke();
            call.arg(crate::lease::SHARE);
            for w in &windows {
                call.key(&w.key).arg(w.max).arg(0).arg(w.expire_at).arg(0).arg(leases.units);
            }
            call.key(&receipt).arg(RECEIPT_SECONDS);
            let result = call.invoke_async::<Vec<i64>>(&mut link.worker()).await;
            let result_ok = result.is_ok();
            match result {
                Ok(reply) => {
                    if let [1, granted @ ..] = reply.as_slice()
                        && granted.len() == 2 * windows.len()
                    {
                        for (w, pair) in windows.iter().zip(granted.chunks_exact(2)) {
                            let (total, grant) = (pair[0].max(0) as u64, pair[1].max(0) as u64);
                            // Even none: a window whose room is gone is not refilled again.
                            leases.granted(&w.window(&application), w.max, grant, total, Instant::now());
                        }
                    }
                }
                Err(e) => {
                    counts.timed_out.store(e.is_timeout(), Relaxed);
                    let keys = windows.iter().map(|w| w.key.clone()).collect();
                    lock(&doubts).push(Doubt { receipt, keys, since: Instant::now() });
                }
            }
            if result_ok {
                counts.timed_out.store(false, Relaxed);
            }
            for w in &windows {
                leases.asked(&w.window(&application), w.max);
            }
            counts.in_flight.fetch_sub(1, Relaxed);
            counts.landed.notify_waiters();
        });
    }

    /// A new lease call's receipt key, in the application's hash slot as its windows
    /// (Redis Cluster).
    fn receipt_key(&self, application: &str) -> String {
        let n = self.receipts.fetch_add(1, Relaxed);
        format!("{}:{{{application}}}:receipt:{}:{n}", self.namespace, self.receipt_prefix)
    }

    /// `resilient`: keeps an application's last decision from Redis.
    fn remember(&self, application: &str, decision: &Decision) {
        if let FailureMode::Resilient(_) = self.mode {
            lock(&self.last).insert(application.into(), (Instant::now(), decision.clone()));
        }
    }

    /// Redis did not answer: the failure mode decides.
    fn without_redis(
        &self,
        application: &str,
        checks: &[Check<'_>],
        now: i64,
        why: String,
    ) -> Result<Decision, CountersError> {
        let decision = match self.mode {
            FailureMode::Strict => return Err(CountersError::Unavailable(why)),
            FailureMode::Allow => Decision::Allowed(None),
            FailureMode::Resilient(ttl) => match lock(&self.last).get(application) {
                Some((at, d)) if at.elapsed() <= ttl => d.clone(),
                _ => return Err(CountersError::Unavailable(why)),
            },
        };
        if let Decision::Allowed(_) = decision {
            let mut pending = lock(&self.pending);
            for c in checks.iter().filter(|c| c.delta > 0) {
                let (start, end) = c.period.window(now);
                let slot = pending
                    .entry(window_key(&self.namespace, application, c.metric, c.period, start))
                    .or_insert((0, end.map_or(0, |e| e + EXPIRY_SLACK)));
                slot.0 += c.delta;
            }
        }
        Ok(decision)
    }

    /// Applies the usage admitted while Redis was away; returns how many windows were
    /// written. What cannot be written stays for the next call.
    pub async fn reconcile(&self) -> Result<usize, CountersError> {
        let batch: Vec<Pending> = lock(&self.pending).drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        // One script per application: in Redis Cluster a script's keys share a slot.
        let mut written = 0;
        let mut by_app: HashMap<&str, Vec<&Pending>> = HashMap::new();
        for item in &batch {
            let app = item.0.split('}').next().unwrap_or_default();
            by_app.entry(app).or_default().push(item);
        }
        let mut conn = self.link.shared();
        let mut failed = None;
        for items in by_app.values() {
            let mut call = self.add.prepare_invoke();
            for (key, (delta, at)) in items.iter().copied() {
                call.key(key).arg(*delta).arg(*at);
            }
            match call.invoke_async::<i64>(&mut conn).await {
                Ok(_) => written += items.len(),
                Err(e) => {
                    let mut pending = lock(&self.pending);
                    for (key, (delta, at)) in items.iter().copied() {
                        pending.entry(key.clone()).or_insert((0, *at)).0 += delta;
                    }
                    failed = Some(e);
                }
            }
        }
        // Decisions older than the resilient period are of no more use.
        if let FailureMode::Resilient(ttl) = self.mode {
            lock(&self.last).retain(|_, (at, _)| at.elapsed() <= ttl);
        }
        match failed {
            Some(e) => Err(unavailable(e)),
            None => Ok(written),
        }
    }

    /// Usage admitted while Redis was away and not yet written to it.
    pub fn pending(&self) -> u64 {
        lock(&self.pending).values().map(|(d, _)| d).sum()
    }

    /// Current usage of `application` on each limit at `now` (Unix seconds), read with one
    /// `MGET`; deltas are ignored.
    ///
    /// # Errors
    ///
    /// [`CountersError::Unavailable`] when Redis does not answer, whatever the failure mode.
    pub async fn status(
        &self,
        application: &str,
        checks: &[Check<'_>],
        now: i64,
    ) -> Result<Vec<LimitStatus>, CountersError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = checks
            .iter()
            .map(|c| window_key(&self.namespace, application, c.metric, c.period, c.period.window(now).0))
            .collect();
        let mut conn = self.link.shared();
        let values: Vec<Option<u64>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(checks.iter().zip(values).map(|(c, v)| c.status(v.unwrap_or(0), now)).collect())
    }

    /// Takes a connection slot for `application` under a cap of `max` (none: no cap);
    /// `Ok(None)` when the cap is reached. The returned member names the lease.
    pub async fn acquire(
        &self,
        application: &str,
        max: Option<u32>,
        lease: Duration,
        name: &str,
    ) -> Result<Option<String>, CountersError> {
        let mut conn = self.link.shared();
        self.acquire
            .key(connections_key(&self.namespace, application))
            .arg(max.map_or(-1, i64::from))
            .arg(lease.as_millis() as u64)
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Extends the leases of `members` of `application`; returns how many were still held.
    pub async fn renew(&self, application: &str, members: &[&str], lease: Duration) -> Result<usize, CountersError> {
        let mut conn = self.link.shared();
        let mut call = self.renew.key(connections_key(&self.namespace, application));
        call.arg(lease.as_millis() as u64);
        for m in members {
            call.arg(*m);
        }
        call.invoke_async(&mut conn).await.map_err(unavailable)
    }

    /// Gives back the connection slot `member` of `application` (see
    /// [`RedisCounters::acquire`]).
    ///
    /// # Errors
    ///
    /// [`CountersError::Unavailable`] when Redis does not answer.
    pub async fn release(&self, application: &str, member: &str) -> Result<(), CountersError> {
        let mut conn = self.link.shared();
        redis::cmd("ZREM")
            .arg(connections_key(&self.namespace, application))
            .arg(member)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Edge limits shared by every node (the `rate_limit` policy), all-or-nothing (in a
    /// cluster, see below).
    pub async fn edge(&self, checks: &[EdgeCheck], now_ms: i64) -> Result<EdgeDecision, CountersError> {
        if self.link.cluster() && checks.len() > 1 {
            // In a cluster each limiter's key hashes to its own slot, and one script's
            // keys must share one: one script per limiter, in order, stopping at the
            // first refusal. The limiters before it have counted the request (fewer
            // admitted, never more; a single node decides them all-or-nothing).
            for (i, c) in checks.iter().enumerate() {
                if let EdgeDecision::Refused { retry_after_ms, .. } =
                    self.edge_script(std::slice::from_ref(c), now_ms).await?
                {
                    return Ok(EdgeDecision::Refused { index: i, retry_after_ms });
                }
            }
            return Ok(EdgeDecision::Allowed);
        }
        self.edge_script(checks, now_ms).await
    }

    /// [`RedisCounters::edge`] in one script.
    async fn edge_script(&self, checks: &[EdgeCheck], now_ms: i64) -> Result<EdgeDecision, CountersError> {
        if checks.is_empty() {
            return Ok(EdgeDecision::Allowed);
        }
        let mut call = self.edge.prepare_invoke();
        call.arg(now_ms);
        for c in checks {
            call.key(format!("{}:edge:{{{}}}", self.namespace, c.key));
            match c.algorithm {
                Algorithm::FixedWindow { count, window_ms } => call.arg("f").arg(count).arg(window_ms),
                Algorithm::SlidingWindow { count, window_ms } => call.arg("s").arg(count).arg(window_ms),
                Algorithm::TokenBucket { rate_per_s, burst } => call.arg("b").arg(rate_per_s).arg(burst),
            };
        }
        self.gate().map_err(CountersError::Unavailable)?;
        let mut conn = self.link.worker();
        let result = call.invoke_async::<Vec<i64>>(&mut conn).await;
        self.outcome(&result);
        let reply = result.map_err(unavailable)?;
        match reply.as_slice() {
            [1] => Ok(EdgeDecision::Allowed),
            [0, i, retry] => {
                Ok(EdgeDecision::Refused { index: (*i as usize).saturating_sub(1), retry_after_ms: *retry })
            }
            other => Err(CountersError::Unavailable(format!("unexpected reply from the edge script: {other:?}"))),
        }
    }

    /// The live leases of `application`, oldest connection first.
    pub async fn live(&self, application: &str) -> Result<Vec<String>, CountersError> {
        let mut conn = self.link.shared();
        self.live.key(connections_key(&self.namespace, application)).invoke_async(&mut conn).await.map_err(unavailable)
    }
}

/// Lease refills started and in flight; woken as each lands.
#[derive(Default)]
struct RefillCounts {
    started: AtomicU64,
    in_flight: AtomicU64,
    /// Requests that waited for another's ask of a lease to end.
    waited: AtomicU64,
    /// Those whose wait reached the Redis timeout, or ended with the ask timed out
    /// (the failure mode answered them).
    wait_timeouts: AtomicU64,
    /// The last refill's call timed out.
    timed_out: AtomicBool,
    landed: tokio::sync::Notify,
}

/// A window a refill asks for, owned by its task.
struct RefillWindow {
    metric: Box<str>,
    period: Period,
    /// Unix seconds at which the window starts.
    start: i64,
    /// The limit's value the lease is under.
    max: u64,
    /// The window's Redis key, and when it expires (Unix seconds; 0: never).
    key: String,
    expire_at: i64,
}

impl RefillWindow {
    fn window<'w>(&'w self, application: &'w str) -> crate::lease::Window<'w> {
        crate::lease::Window { application, metric: &self.metric, period: self.period, start: self.start }
    }
}

/// The windows whose leases a request found running low: refilled when it is admitted
/// ([`RedisCounters::refill`] takes them), released for another to refill otherwise.
struct Refills<'a, 'c> {
    leases: &'a crate::lease::Leases,
    application: &'a str,
    checks: &'a [Check<'c>],
    indices: Vec<usize>,
    now: i64,
}

impl Drop for Refills<'_, '_> {
    fn drop(&mut self) {
        for &i in &self.indices {
            let c = &self.checks[i];
            self.leases.asked(&crate::lease::Window::of(self.application, c, self.now), c.max);
        }
    }
}

/// Marks the windows a request asked a lease for as no longer asked for, when dropped.
struct Asked<'a, 'c> {
    leases: &'a crate::lease::Leases,
    application: &'a str,
    checks: &'a [Check<'c>],
    asks: &'a [crate::lease::Ask],
    now: i64,
}

impl Drop for Asked<'_, '_> {
    fn drop(&mut self) {
        for a in self.asks.iter().filter(|a| a.lease) {
            let c = &self.checks[a.index];
            self.leases.asked(&crate::lease::Window::of(self.application, c, self.now), c.max);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turns the script's reply into a decision.
fn decide(checks: &[Check<'_>], reply: &[i64], now: i64) -> Result<Decision, CountersError> {
    let malformed = || CountersError::Unavailable(format!("unexpected reply from the counters script: {reply:?}"));
    match reply {
        [0, i, current] => {
            let c = checks.get((*i as usize).wrapping_sub(1)).ok_or_else(malformed)?;
            Ok(Decision::Exceeded(c.status(*current as u64, now)))
        }
        [1, values @ ..] if values.len() == checks.len() => {
            Ok(Decision::Allowed(crate::tightest(checks.iter().zip(values.iter().map(|v| *v as u64)), now)))
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_application_hash_tag() {
        let k = window_key("tollgate", "acme/app-1", "hits", Period::Minute, 60);
        assert_eq!(k, "tollgate:{acme/app-1}:w:hits:minute:60");
        assert!(connections_key("t2", "acme/app-1").starts_with("t2:{acme/app-1}:"));
    }

    #[test]
    fn replies_become_decisions() {
        let checks = [
            Check { metric: "hits", period: Period::Minute, max: 10, delta: 1 },
            Check { metric: "hits", period: Period::Day, max: 5, delta: 1 },
        ];
        match decide(&checks, &[1, 3, 4], 0) {
            Ok(Decision::Allowed(Some(s))) => assert_eq!((s.period, s.remaining()), (Period::Day, 1)),
            other => panic!("{other:?}"),
        }
        match decide(&checks, &[0, 2, 5], 0) {
            Ok(Decision::Exceeded(s)) => assert_eq!((s.period, s.current), (Period::Day, 5)),
            other => panic!("{other:?}"),
        }
        assert!(decide(&checks, &[0, 3, 5], 0).is_err());
        assert!(decide(&checks, &[1, 3], 0).is_err());
        assert!(decide(&checks, &[], 0).is_err());
    }
}
