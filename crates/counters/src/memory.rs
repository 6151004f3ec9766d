//! In-memory counters for a single gateway process.
//!
//! All windows of one application live together in one small vector, inside one of a
//! fixed number of shards. A std `Mutex` is right here: the critical section is a few
//! comparisons and additions with no `.await` inside, so an async mutex would only add
//! cost; sharding keeps unrelated applications from contending.

use crate::IdHash;
use crate::{Check, Decision, LimitStatus, Period};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Each application's windows, by application id.
type Shard = HashMap<Box<str>, Vec<Window>, IdHash>;

#[derive(Debug)]
struct Window {
    metric: Box<str>,
    period: Period,
    start: i64,
    count: u64,
}

/// Usage counters of this process, sharded by application.
#[derive(Debug)]
pub struct MemoryCounters {
    hasher: IdHash,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        MemoryCounters { hasher: IdHash, shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl MemoryCounters {
    fn shard(&self, application: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(application) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked mid-update of plain
        // integers; the data is still consistent enough to keep counting.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks every limit at `now` (Unix seconds) and, if all pass, applies every increment
    /// (see [`Counters::authorize`](crate::Counters::authorize)).
    pub fn authorize(&self, application: &str, checks: &[Check<'_>], now: i64) -> Decision {
        self.apply(application, checks, now, true)
    }

    /// As [`MemoryCounters::authorize`], but an admitted call carries no status (no
    /// allocation): for metered WebSocket frames, which send no rate-limit headers.
    pub fn admit(&self, application: &str, checks: &[Check<'_>], now: i64) -> Decision {
        self.apply(application, checks, now, false)
    }

    fn apply(&self, application: &str, checks: &[Check<'_>], now: i64, report: bool) -> Decision {
        if checks.is_empty() {
            return Decision::Allowed(None);
        }
        let mut shard = self.shard(application);
        let windows = match shard.get_mut(application) {
            Some(w) => w,
            None => shard.entry(application.into()).or_default(),
        };
        // First pass: find (or create) each window and check it; nothing changes yet
        // except that expired windows are reset, which is the same as reading zero.
        let mut slots = [usize::MAX; 16];
        let mut overflow = Vec::new();
        for (i, c) in checks.iter().enumerate() {
            let (start, end) = c.period.window(now);
            let idx = match windows.iter().position(|w| w.period == c.period && *w.metric == *c.metric) {
                Some(idx) => idx,
                None => {
                    windows.push(Window { metric: c.metric.into(), period: c.period, start, count: 0 });
                    windows.len() - 1
                }
            };
            let w = &mut windows[idx];
            if w.start != start {
                w.start = start;
                w.count = 0;
            }
            if w.count.saturating_add(c.delta) > c.max {
                return Decision::Exceeded(LimitStatus {
                    metric: c.metric.to_string(),
                    period: c.period,
                    max: c.max,
                    current: w.count,
                    reset_at: end,
                });
            }
            if i < slots.len() {
                slots[i] = idx;
            } else {
                overflow.push(idx);
            }
        }
        // Second pass: every check passed; apply every increment.
        let mut tightest: Option<(u64, usize)> = None;
        for (i, c) in checks.iter().enumerate() {
            let idx = if i < slots.len() { slots[i] } else { overflow[i - slots.len()] };
            let w = &mut windows[idx];
            w.count += c.delta;
            let remaining = c.max - w.count;
            if report && tightest.is_none_or(|(r, _)| remaining < r) {
                tightest = Some((remaining, i));
            }
        }
        Decision::Allowed(tightest.map(|(_, i)| {
            let c = &checks[i];
            let idx = if i < slots.len() { slots[i] } else { overflow[i - slots.len()] };
            LimitStatus {
                metric: c.metric.to_string(),
                period: c.period,
                max: c.max,
                current: windows[idx].count,
                reset_at: c.period.window(now).1,
            }
        }))
    }

    /// Current usage of `application` on each limit at `now` (Unix seconds); deltas are
    /// ignored.
    pub fn status(&self, application: &str, checks: &[Check<'_>], now: i64) -> Vec<LimitStatus> {
        let shard = self.shard(application);
        let windows = shard.get(application);
        checks
            .iter()
            .map(|c| {
                let (start, end) = c.period.window(now);
                let current = windows
                    .and_then(|ws| {
                        ws.iter().find(|w| w.period == c.period && *w.metric == *c.metric && w.start == start)
                    })
                    .map_or(0, |w| w.count);
                LimitStatus { metric: c.metric.to_string(), period: c.period, max: c.max, current, reset_at: end }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const NOW: i64 = 1_795_716_000; // 2026-11-26T18:00:00Z, a Thursday

    fn check(metric: &str, period: Period, max: u64, delta: u64) -> Check<'_> {
        Check { metric, period, max, delta }
    }

    #[test]
    fn exactly_the_limit_passes_then_the_window_resets() {
        let c = MemoryCounters::default();
        let checks = [check("hits", Period::Minute, 3, 1)];
        for _ in 0..3 {
            assert!(matches!(c.authorize("app", &checks, NOW), Decision::Allowed(_)));
        }
        match c.authorize("app", &checks, NOW + 59) {
            Decision::Exceeded(s) => {
                assert_eq!((s.current, s.max, s.reset_at), (3, 3, Some(NOW + 60)));
            }
            other => panic!("expected exceeded, got {other:?}"),
        }
        assert!(matches!(c.authorize("app", &checks, NOW + 60), Decision::Allowed(_)));
    }

    #[test]
    fn admit_counts_on_the_same_windows_without_a_status() {
        let c = MemoryCounters::default();
        let checks = [check("messages", Period::Minute, 3, 1)];
        assert!(matches!(c.authorize("app", &checks, NOW), Decision::Allowed(Some(_))));
        for _ in 0..2 {
            assert!(matches!(c.admit("app", &checks, NOW), Decision::Allowed(None)));
        }
        assert!(matches!(c.admit("app", &checks, NOW), Decision::Exceeded(s) if s.current == 3));
        assert!(matches!(c.authorize("app", &checks, NOW), Decision::Exceeded(_)));
        assert_eq!(c.status("app", &checks, NOW)[0].current, 3);
    }

    #[test]
    fn all_or_nothing_across_windows() {
        let c = MemoryCounters::default();
        let both = [check("hits", Period::Minute, 10, 2), check("connect", Period::Hour, 3, 2)];
        assert!(matches!(c.authorize("app", &both, NOW), Decision::Allowed(_)));
        // connect would reach 4 > 3: nothing may be applied, hits stays at 2.
        assert!(matches!(c.authorize("app", &both, NOW), Decision::Exceeded(ref s) if s.metric == "connect"));
        let st = c.status("app", &both, NOW);
        assert_eq!((st[0].current, st[1].current), (2, 2));
    }

    #[test]
    fn a_delta_larger_than_the_limit_never_passes_and_zero_blocks() {
        let c = MemoryCounters::default();
        assert!(matches!(c.authorize("a", &[check("hits", Period::Day, 1, 2)], NOW), Decision::Exceeded(_)));
        assert!(matches!(c.authorize("a", &[check("hits", Period::Day, 0, 1)], NOW), Decision::Exceeded(_)));
    }

    #[test]
    fn eternity_never_resets_and_applications_are_separate() {
        let c = MemoryCounters::default();
        let e = [check("hits", Period::Eternity, 1, 1)];
        assert!(matches!(c.authorize("a", &e, NOW), Decision::Allowed(Some(_))));
        assert!(
            matches!(c.authorize("a", &e, NOW + 10 * 365 * 86_400), Decision::Exceeded(ref s) if s.reset_at.is_none())
        );
        assert!(matches!(c.authorize("b", &e, NOW), Decision::Allowed(_)));
    }

    #[test]
    fn tightest_limit_is_reported() {
        let c = MemoryCounters::default();
        let checks = [check("hits", Period::Minute, 100, 1), check("hits", Period::Day, 5, 1)];
        match c.authorize("a", &checks, NOW) {
            Decision::Allowed(Some(s)) => assert_eq!((s.period, s.remaining()), (Period::Day, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_checks_beyond_the_inline_slots() {
        let c = MemoryCounters::default();
        let names: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        let checks: Vec<Check<'_>> = names.iter().map(|n| check(n, Period::Minute, 1, 1)).collect();
        assert!(matches!(c.authorize("a", &checks, NOW), Decision::Allowed(_)));
        assert!(matches!(c.authorize("a", &checks, NOW), Decision::Exceeded(_)));
    }

    #[test]
    fn exact_under_contention() {
        let c = Arc::new(MemoryCounters::default());
        let passed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, passed) = (c.clone(), passed.clone());
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        let checks = [check("hits", Period::Minute, 50, 1), check("hits", Period::Hour, 1_000, 1)];
                        if matches!(c.authorize("app", &checks, NOW), Decision::Allowed(_)) {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(passed.load(Ordering::SeqCst), 50);
    }
}
