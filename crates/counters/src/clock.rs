//! The time source for usage windows, injected so tests are exact and instant.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of Unix time, read once per request.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix time in seconds.
    fn now(&self) -> i64;

    /// Unix time in milliseconds (edge limits' windows and buckets). By default the
    /// seconds, times 1000.
    fn now_ms(&self) -> i64 {
        self.now().saturating_mul(1000)
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock stopped at `now` (Unix seconds).
    pub fn new(now: i64) -> Self {
        ManualClock(AtomicI64::new(now))
    }
    /// Moves the clock to `now` (Unix seconds).
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
    /// Moves the clock `secs` seconds forward (back when negative).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
