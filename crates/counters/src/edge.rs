//! Edge rate limiting (the `rate_limit` policy): limits on arbitrary keys (a client
//! address, a header, an application, a JWT claim), independent of plans.
//!
//! Three algorithms, checked together and applied all-or-nothing, in memory (this
//! process) or in Redis (every node; see `RedisCounters::edge`):
//! - **fixed window**: at most `count` per calendar-aligned `window` seconds;
//! - **sliding window**: the fixed window's count plus the previous window's, weighted
//!   by how much of it still overlaps the last `window` seconds (the estimate that
//!   nginx-like proxies and Cloudflare use; no burst at window edges);
//! - **token bucket**: `rate` tokens per second up to `burst`; a request takes one.
//!
//! Time is milliseconds, passed in by the caller.

use std::collections::HashMap;
use std::sync::Mutex;

/// An edge limiter's algorithm and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// At most `count` requests per window of `window_ms`, windows aligned on multiples
    /// of `window_ms` since the Unix epoch.
    FixedWindow {
        /// Requests allowed per window.
        count: u64,
        /// Window length in milliseconds.
        window_ms: i64,
    },
    /// As `FixedWindow`, plus the previous window's count weighted by how much of it
    /// still overlaps the last `window_ms`.
    SlidingWindow {
        /// Requests allowed per window.
        count: u64,
        /// Window length in milliseconds.
        window_ms: i64,
    },
    /// Up to `burst` tokens, refilled at `rate_per_s`; a request takes one.
    TokenBucket {
        /// Tokens added per second.
        rate_per_s: f64,
        /// Most tokens the bucket holds; a new bucket starts full.
        burst: f64,
    },
}

/// One limiter applied to one key.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeCheck {
    /// Unique per limiter and key (the policy builds it from scope, limiter and key).
    pub key: String,
    /// How the key is limited.
    pub algorithm: Algorithm,
}

/// What the checks decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeDecision {
    /// Every check passed, and the request was counted on each.
    Allowed,
    /// Refused by the check at this index; retry after this many milliseconds.
    Refused {
        /// Index in the checks of the one that refused.
        index: usize,
        /// Milliseconds until a retry could pass; at least 1.
        retry_after_ms: i64,
    },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Window { start: i64, count: u64, previous: u64 },
    Bucket { tokens: f64, at: i64 },
}

/// Edge limits of this process.
#[derive(Debug, Default)]
pub struct EdgeMemory {
    state: Mutex<HashMap<String, State>>,
    /// Requests (and WebSocket connections) in progress per key.
    open: Mutex<HashMap<String, u32>>,
    /// Entries count at the last sweep of stale ones (sweeps happen when it doubles).
    swept_at: std::sync::atomic::AtomicUsize,
}

/// The fixed/sliding window outcome for a window state at `now`: (allowed, retry after).
fn window(state: Option<State>, count: u64, window_ms: i64, sliding: bool, now: i64) -> (State, bool, i64) {
    let start = now - now.rem_euclid(window_ms);
    let (current, previous) = match state {
        Some(State::Window { start: s, count: c, .. }) if s == start => (c, previous_of(state)),
        Some(State::Window { start: s, count: c, .. }) if s == start - window_ms => (0, c),
        _ => (0, 0),
    };
    let estimate = if sliding {
        let overlap = 1.0 - (now - start) as f64 / window_ms as f64;
        current as f64 + previous as f64 * overlap
    } else {
        current as f64
    };
    let allowed = estimate + 1.0 <= count as f64;
    let retry = if allowed {
        0
    } else if !sliding || current + 1 > count {
        start + window_ms - now
    } else {
        // The previous window's weight must fall enough for one more.
        let need = (estimate + 1.0 - count as f64) / (previous.max(1) as f64) * window_ms as f64;
        (need.ceil() as i64).clamp(1, start + window_ms - now)
    };
    (State::Window { start, count: current, previous }, allowed, retry)
}

fn previous_of(state: Option<State>) -> u64 {
    match state {
        Some(State::Window { previous, .. }) => previous,
        _ => 0,
    }
}

impl EdgeMemory {
    /// Checks every limiter at `now` (Unix milliseconds) and, only if all pass, counts the
    /// request on each.
    pub fn check(&self, checks: &[EdgeCheck], now: i64) -> EdgeDecision {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::with_capacity(checks.len());
        for (index, c) in checks.iter().enumerate() {
            let state = map.get(&c.key).copied();
            let (new, allowed, retry) = match c.algorithm {
                Algorithm::FixedWindow { count, window_ms } => window(state, count, window_ms, false, now),
                Algorithm::SlidingWindow { count, window_ms } => window(state, count, window_ms, true, now),
                Algorithm::TokenBucket { rate_per_s, burst } => {
                    let (tokens, at) = match state {
                        Some(State::Bucket { tokens, at }) => (tokens, at),
                        _ => (burst, now),
                    };
                    let tokens = (tokens + (now - at).max(0) as f64 * rate_per_s / 1000.0).min(burst);
                    let allowed = tokens >= 1.0;
                    let retry = if allowed { 0 } else { ((1.0 - tokens) * 1000.0 / rate_per_s).ceil() as i64 };
                    (State::Bucket { tokens, at: now }, allowed, retry)
                }
            };
            if !allowed {
                return EdgeDecision::Refused { index, retry_after_ms: retry.max(1) };
            }
            next.push(new);
        }
        for (c, s) in checks.iter().zip(next) {
            let applied = match s {
                State::Window { start, count, previous } => State::Window { start, count: count + 1, previous },
                State::Bucket { tokens, at } => State::Bucket { tokens: tokens - 1.0, at },
            };
            match map.get_mut(&c.key) {
                Some(slot) => *slot = applied,
                None => {
                    map.insert(c.key.clone(), applied);
                }
            }
        }
        self.sweep(&mut map, checks, now);
        EdgeDecision::Allowed
    }

    /// Drops entries that no longer hold anything (windows two windows old, full
    /// buckets) whenever the map has doubled since the last sweep, so keys such as
    /// client addresses cannot grow it without bound.
    fn sweep(&self, map: &mut HashMap<String, State>, checks: &[EdgeCheck], now: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.swept_at.load(Relaxed).max(1024);
        if map.len() < last * 2 {
            return;
        }
        // The longest window or refill time among these checks bounds what is still live.
        let horizon = checks
            .iter()
            .map(|c| match c.algorithm {
                Algorithm::FixedWindow { window_ms, .. } | Algorithm::SlidingWindow { window_ms, .. } => 2 * window_ms,
                Algorithm::TokenBucket { rate_per_s, burst } => (burst / rate_per_s * 1000.0).ceil() as i64,
            })
            .max()
            .unwrap_or(0)
            .max(3_600_000);
        map.retain(|_, s| match s {
            State::Window { start, .. } => now - *start < horizon,
            State::Bucket { at, .. } => now - *at < horizon,
        });
        self.swept_at.store(map.len(), Relaxed);
    }

    /// Takes one of `max` places for `key` (concurrent requests or connections), held
    /// until the guard drops; `None` when all are taken.
    pub fn acquire(self: &std::sync::Arc<Self>, key: &str, max: u32) -> Option<EdgeGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(EdgeGuard { owner: self.clone(), key: key.into() })
    }

    /// Places taken for `key`.
    pub fn in_progress(&self, key: &str) -> u32 {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0)
    }

    /// How many keys have window or bucket state.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key has window or bucket state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A place taken by [`EdgeMemory::acquire`]; dropping it gives the place back.
#[derive(Debug)]
pub struct EdgeGuard {
    owner: std::sync::Arc<EdgeMemory>,
    key: Box<str>,
}

impl Drop for EdgeGuard {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&*self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&*self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, algorithm: Algorithm) -> EdgeCheck {
        EdgeCheck { key: key.into(), algorithm }
    }

    const T: i64 = 1_795_750_800_000;

    #[test]
    fn fixed_window_counts_and_resets_at_the_edge() {
        let m = EdgeMemory::default();
        let c = [check("ip", Algorithm::FixedWindow { count: 2, window_ms: 60_000 })];
        assert_eq!(m.check(&c, T), EdgeDecision::Allowed);
        assert_eq!(m.check(&c, T + 1), EdgeDecision::Allowed);
        assert_eq!(m.check(&c, T + 10_000), EdgeDecision::Refused { index: 0, retry_after_ms: 50_000 });
        assert_eq!(m.check(&c, T + 60_000), EdgeDecision::Allowed);
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        let m = EdgeMemory::default();
        let c = [check("k", Algorithm::SlidingWindow { count: 10, window_ms: 60_000 })];
        for i in 0..10 {
            assert_eq!(m.check(&c, T + i), EdgeDecision::Allowed);
        }
        // 15 s into the next window, 75 % of the previous 10 still count: 7.5 + 1 ≤ 10.
        assert_eq!(m.check(&c, T + 75_000), EdgeDecision::Allowed);
        assert_eq!(m.check(&c, T + 75_000), EdgeDecision::Allowed);
        // 7.5 + 2 = 9.5; a third would be 10.5 > 10.
        assert!(matches!(m.check(&c, T + 75_000), EdgeDecision::Refused { .. }));
        // By the window's end the previous one weighs nothing.
        assert_eq!(m.check(&c, T + 119_000), EdgeDecision::Allowed);
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let m = EdgeMemory::default();
        let c = [check("b", Algorithm::TokenBucket { rate_per_s: 2.0, burst: 3.0 })];
        for _ in 0..3 {
            assert_eq!(m.check(&c, T), EdgeDecision::Allowed);
        }
        assert_eq!(m.check(&c, T), EdgeDecision::Refused { index: 0, retry_after_ms: 500 });
        assert_eq!(m.check(&c, T + 500), EdgeDecision::Allowed, "one token after half a second");
        assert!(matches!(m.check(&c, T + 500), EdgeDecision::Refused { .. }));
    }

    #[test]
    fn checks_are_all_or_nothing() {
        let m = EdgeMemory::default();
        let loose = check("loose", Algorithm::FixedWindow { count: 10, window_ms: 60_000 });
        let tight = check("tight", Algorithm::FixedWindow { count: 1, window_ms: 60_000 });
        assert_eq!(m.check(&[loose.clone(), tight.clone()], T), EdgeDecision::Allowed);
        assert!(matches!(m.check(&[loose.clone(), tight], T), EdgeDecision::Refused { index: 1, .. }));
        // The refused request did not count on `loose`: 9 more fit.
        for _ in 0..9 {
            assert_eq!(m.check(std::slice::from_ref(&loose), T), EdgeDecision::Allowed);
        }
        assert!(matches!(m.check(&[loose], T), EdgeDecision::Refused { .. }));
    }

    #[test]
    fn concurrent_places_are_taken_and_given_back() {
        let m = std::sync::Arc::new(EdgeMemory::default());
        let a = m.acquire("ip", 2).expect("first");
        let _b = m.acquire("ip", 2).expect("second");
        assert!(m.acquire("ip", 2).is_none());
        drop(a);
        assert_eq!(m.in_progress("ip"), 1);
        assert!(m.acquire("ip", 2).is_some());
    }

    #[test]
    fn stale_entries_are_swept() {
        let m = EdgeMemory::default();
        let one = |k: String| [check(&k, Algorithm::FixedWindow { count: 1, window_ms: 1_000 })];
        for i in 0..3_000 {
            m.check(&one(format!("old{i}")), T);
        }
        assert_eq!(m.len(), 3_000, "all live: nothing swept");
        // Hours later new keys arrive; when the map has doubled, the old windows go.
        let later = T + 10 * 3_600_000;
        for i in 0..1_200 {
            m.check(&one(format!("new{i}")), later);
        }
        assert!(m.len() <= 1_200, "old windows were dropped: {}", m.len());
    }
}
