#![warn(missing_docs)]
//! Usage counters: one window per (metric, period) limited on an application, checked
//! and applied all-or-nothing.
//!
//! A request passes only if, for every limit it touches, `current + delta <= value`;
//! then all its increments are applied together, in one critical section, so under any
//! concurrency a limit of N lets exactly N units through. Counters belong to the
//! application (not the environment), so staging and production share them.
//!
//! Time is injected: callers read a [`Clock`] once per request and pass the value in.
//! This crate owns the counting only; which limits apply is the snapshot's business.

mod clock;
pub mod edge;
mod idhash;
pub mod lease;
pub mod link;
mod memory;
mod redis;

pub use clock::{Clock, ManualClock, SystemClock};
pub use edge::{Algorithm, EdgeCheck, EdgeDecision, EdgeGuard, EdgeMemory};
pub use idhash::{IdHash, IdHasher};
pub use memory::MemoryCounters;
pub use redis::{FROZEN_AFTER, FailureMode, RedisCounters};
pub use tollgate_model::period::Period;

thread_local! {
    static THREAD_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as the gateway's worker `n` (from 1). Per-thread resources (idle
/// backend connections, Redis connections) are kept by slot, so a worker uses those
/// registered with its own event loop; every other thread shares slot 0.
pub fn set_thread_slot(n: usize) {
    THREAD_SLOT.with(|s| s.set(n));
}

/// This thread's slot: 0 unless [`set_thread_slot`] said otherwise.
pub fn thread_slot() -> usize {
    THREAD_SLOT.with(std::cell::Cell::get)
}

/// One limit that a request touches, with the amount the request would add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    /// System name of the metric or method.
    pub metric: &'a str,
    /// The limit's period.
    pub period: Period,
    /// The limit's value: the most the window may hold.
    pub max: u64,
    /// What the request would add.
    pub delta: u64,
}

impl Check<'_> {
    /// Where the application stands on this limit with `current` in the window of
    /// `now` (Unix seconds).
    pub fn status(&self, current: u64, now: i64) -> LimitStatus {
        LimitStatus {
            metric: self.metric.to_string(),
            period: self.period,
            max: self.max,
            current,
            reset_at: self.period.window(now).1,
        }
    }
}

/// The status of the limit with the least room among `checks` with their current
/// usage, for rate-limit headers; `None` without limits.
fn tightest<'c>(checks: impl Iterator<Item = (&'c Check<'c>, u64)>, now: i64) -> Option<LimitStatus> {
    checks.min_by_key(|(c, v)| c.max.saturating_sub(*v)).map(|(c, v)| c.status(v, now))
}

/// Where an application stands on one limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// System name of the metric or method.
    pub metric: String,
    /// The limit's period.
    pub period: Period,
    /// The limit's value: the most the window may hold.
    pub max: u64,
    /// Usage in the current window (after the increments, when they were applied).
    pub current: u64,
    /// Unix time at which the window resets; `None` for `eternity`.
    pub reset_at: Option<i64>,
}

impl LimitStatus {
    /// What the window still allows: `max - current`, or 0.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.current)
    }
}

/// The outcome of [`Counters::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every increment was applied. Carries the tightest limit afterwards (the one with
    /// the least remaining), if any limit applied, for rate-limit headers.
    Allowed(Option<LimitStatus>),
    /// Nothing was applied; this is the first limit that would have been exceeded.
    Exceeded(LimitStatus),
}

/// Why the counters could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// Redis could not be reached, or its reply could not be read; carries the cause.
    #[error("the counters store is unavailable: {0}")]
    Unavailable(String),
    /// A counters URL that is neither `memory` nor a Redis URL; carries the URL.
    #[error(
        "invalid counters URL {0}; write memory, redis://[[USER]:PASSWORD@]HOST:PORT[/DB], redis+sentinel://HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB] or redis+cluster://HOST[:PORT][,HOST[:PORT]…]"
    )]
    BadUrl(String),
}

/// The counters a gateway uses. An enum rather than a trait object: the set of
/// implementations is closed (memory for one process, Redis for several nodes) and the
/// call stays statically dispatched.
#[derive(Debug)]
pub enum Counters {
    /// In this process only.
    Memory(MemoryCounters),
    /// In Redis, shared by every node using it.
    // Boxed: the Redis client is large and there is one `Counters` per process.
    Redis(Box<RedisCounters>),
}

impl Counters {
    /// Empty in-memory counters.
    pub fn memory() -> Self {
        Counters::Memory(MemoryCounters::default())
    }

    /// `memory` (this process only) or `redis://…` (shared by every node using it, its
    /// keys under `namespace`).
    pub async fn open(
        url: &str,
        namespace: &str,
        mode: FailureMode,
        timeout: std::time::Duration,
    ) -> Result<Self, CountersError> {
        if url == "memory" {
            return Ok(Counters::memory());
        }
        let schemes = ["redis://", "rediss://", "redis+unix://", "redis+sentinel://", "redis+cluster://"];
        if !schemes.iter().any(|s| url.starts_with(s)) {
            return Err(CountersError::BadUrl(format!("`{}`", link::redact(url))));
        }
        Ok(Counters::Redis(Box::new(RedisCounters::connect(url, namespace, mode, timeout).await?)))
    }

    /// The Redis counters, when these are Redis counters.
    pub fn redis(&self) -> Option<&RedisCounters> {
        match self {
            Counters::Redis(r) => Some(r),
            Counters::Memory(_) => None,
        }
    }

    /// Checks every limit and, if all pass, applies every increment, atomically.
    pub async fn authorize(
        &self,
        application: &str,
        checks: &[Check<'_>],
        now: i64,
    ) -> Result<Decision, CountersError> {
        match self {
            Counters::Memory(m) => Ok(m.authorize(application, checks, now)),
            Counters::Redis(r) => r.authorize(application, checks, now).await,
        }
    }

    /// Current usage of an application on the given limits (deltas are ignored).
    pub async fn status(
        &self,
        application: &str,
        checks: &[Check<'_>],
        now: i64,
    ) -> Result<Vec<LimitStatus>, CountersError> {
        match self {
            Counters::Memory(m) => Ok(m.status(application, checks, now)),
            Counters::Redis(r) => r.status(application, checks, now).await,
        }
    }
}
