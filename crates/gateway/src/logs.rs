//! Logs that stay useful under attack: a warning that repeats (a backend down for
//! every request, a listener out of file descriptors) is written at most once per
//! second per kind; the line that is written says how many of its kind were left out
//! since the last one (`suppressed=N`). An attack or an outage then costs a log line a
//! second, not one per request, and the count keeps its size visible.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The state of one kind of warning: the second its last line was written and how
/// many were left out since. Lock-free, `const`-constructible for a `static`.
#[derive(Debug, Default)]
pub struct LogLimit {
    second: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A kind that has written nothing yet (`const`, for a `static`).
    pub const fn new() -> LogLimit {
        LogLimit { second: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Whether a line of this kind may be written at `now` (seconds on any clock that
    /// does not go back): `Some(n)` with the number left out since the last line, or
    /// `None` (counted as left out).
    pub fn admit(&self, now: u64) -> Option<u64> {
        let last = self.second.load(Relaxed);
        if (now > last || last == 0) && self.second.compare_exchange(last, now.max(1), Relaxed, Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }

    /// [`LogLimit::admit`] on the process's monotonic clock.
    pub fn admit_now(&self) -> Option<u64> {
        self.admit(seconds_now())
    }

    /// The number of lines left out before `now` that no line has reported yet, if
    /// any: the caller writes one line for them, which counts as the line of `now`.
    pub fn take_overdue(&self, now: u64) -> Option<u64> {
        let last = self.second.load(Relaxed);
        if self.suppressed.load(Relaxed) == 0 || now <= last {
            return None;
        }
        self.second.compare_exchange(last, now, Relaxed, Relaxed).ok()?;
        Some(self.suppressed.swap(0, Relaxed)).filter(|n| *n > 0)
    }

    /// [`LogLimit::take_overdue`] on the process's monotonic clock.
    pub fn take_overdue_now(&self) -> Option<u64> {
        self.take_overdue(seconds_now())
    }
}

/// Seconds on the process's monotonic clock, from 1.
fn seconds_now() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs() + 1
}

/// `tracing::warn!` at most once per second for this call site, with
/// `suppressed = N` (how many of its lines were left out since the last one).
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::logs::LogLimit = $crate::logs::LogLimit::new();
        if let Some(suppressed) = LIMIT.admit_now() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// The warnings of failed requests (the backend's fault, or the gateway's), kept from
/// flooding the log. One line a second per code and detail (which names the backend and
/// the cause): a backend that is down fails every request, yet five backends with five
/// faults still get five lines. At most 128 details per code are told apart; past that,
/// a code's other details share one line a second. The lines left out are counted: the
/// next line of the same kind says how many (`suppressed`), and when no further failure
/// comes, a background thread writes the count within about a second, so a burst is
/// never under-reported in the log.
pub mod failures {
    use super::LogLimit;
    use crate::refusal::Side;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Details told apart per code.
    const MAX_DETAILS: usize = 128;

    #[derive(Default)]
    struct Failures {
        by_detail: HashMap<String, (LogLimit, Side)>,
        /// Details past [`MAX_DETAILS`].
        others: LogLimit,
    }

    /// By code (failures are few kinds; a short list beats a map).
    static FAILURES: Mutex<Vec<(&'static str, Failures)>> = Mutex::new(Vec::new());

    /// Logs one failed request (`code`: its refusal's, or `upstream_body_failed`;
    /// `detail`: the backend and the cause), or counts it as left out.
    pub fn record(code: &'static str, side: Side, detail: &str) {
        let admitted = {
            let mut all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
            let i = match all.iter().position(|(c, _)| *c == code) {
                Some(i) => i,
                None => {
                    all.push((code, Failures::default()));
                    all.len() - 1
                }
            };
            let failures = &mut all[i].1;
            // The lookup borrows the detail; a new one is copied once.
            if let Some((limit, _)) = failures.by_detail.get(detail) {
                limit.admit_now()
            } else if failures.by_detail.len() < MAX_DETAILS {
                failures.by_detail.entry(detail.to_string()).or_insert_with(|| (LogLimit::new(), side)).0.admit_now()
            } else {
                failures.others.admit_now()
            }
        };
        match admitted {
            Some(suppressed) => tracing::warn!(code, ?side, detail, suppressed, "request failed"),
            None => start_flusher(),
        }
    }

    /// Starts, once, the thread that writes the counts of lines left out when no later
    /// line of their kind came to carry them.
    fn start_flusher() {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let spawned = std::thread::Builder::new().name("tollgate-log-counts".into()).spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    flush();
                }
            });
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "could not start the thread that reports left-out log lines");
            }
        });
    }

    /// Writes a line for every kind with lines left out in an earlier second.
    fn flush() {
        let all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
        for (code, failures) in all.iter() {
            for (detail, (limit, side)) in &failures.by_detail {
                if let Some(suppressed) = limit.take_overdue_now() {
                    tracing::warn!(code, ?side, detail, suppressed, "request failed (repeats, counted)");
                }
            }
            if let Some(suppressed) = failures.others.take_overdue_now() {
                tracing::warn!(code, detail = "(other details)", suppressed, "request failed (repeats, counted)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_next_one_counts_those_left_out() {
        let limit = LogLimit::new();
        assert_eq!(limit.admit(1), Some(0));
        assert_eq!(limit.admit(1), None);
        assert_eq!(limit.admit(1), None);
        assert_eq!(limit.admit(2), Some(2));
        assert_eq!(limit.admit(2), None);
        assert_eq!(limit.admit(9), Some(1));
        // A clock that shows an earlier second does not reopen it.
        assert_eq!(limit.admit(5), None);
        assert_eq!(limit.admit(10), Some(1));
    }

    #[test]
    fn lines_left_out_are_reported_once_their_second_is_over_even_with_no_next_line() {
        let limit = LogLimit::new();
        assert_eq!(limit.admit(1), Some(0));
        assert_eq!(limit.take_overdue(2), None, "nothing left out");
        assert_eq!(limit.admit(3), Some(0));
        assert_eq!(limit.admit(3), None);
        assert_eq!(limit.admit(3), None);
        assert_eq!(limit.take_overdue(3), None, "the second is not over");
        assert_eq!(limit.take_overdue(4), Some(2));
        assert_eq!(limit.take_overdue(5), None, "reported once");
        // The report was the line of second 4: another failure then waits for 5.
        assert_eq!(limit.admit(4), None);
        assert_eq!(limit.take_overdue(5), Some(1));
        assert_eq!(limit.admit(6), Some(0));
    }
}
