//! Quota leasing: a node takes units of a window from Redis in advance and admits
//! locally until they are used up, so most requests make no Redis call.
//!
//! Redis keeps, per window, the units *granted* to nodes (used or still leased). A
//! grant never takes the window past its limit, and a node admits only units it was
//! granted, so across every node never more than the limit is admitted — the same
//! guarantee as a Redis call per request. What leasing gives up is the other side: a
//! request can be refused while other nodes still hold unused units of the window
//! (under-admission). That is bounded three ways:
//!
//! - a lease is at most `--counters-lease` units and at most 1/[`SHARE`] of what the
//!   window had left when it was granted, so leases shrink as the window fills, down to
//!   the units the request itself needs at the end;
//! - a lease not used for [`IDLE`] is given back (the node's counters task, every
//!   second), and every lease is given back when the node stops;
//! - a node that dies without stopping loses its outstanding leases: at most
//!   `--counters-lease` units per window it was admitting on.
//!
//! A lease is refilled before it runs out: when a request leaves a quarter of the last
//! grant, the node asks Redis for another lease in the background (one per window at a
//! time) while requests go on admitting from what is left, so under steady traffic no
//! request waits on Redis. A refill takes what any grant takes (at most
//! `--counters-lease` units and 1/[`SHARE`] of what the window has left) and adds it to
//! the lease.
//!
//! A lease is bound to the limit's value: when a plan change alters it, the next
//! request gives the lease back and takes one against the new value, so a lowered
//! limit holds from the next request on.
//!
//! Accounting is exact: the window's granted total in Redis is what was admitted plus
//! what nodes hold (leases, and units owed back after a limit changed), until a node
//! dies or a give-back call fails — then those units stay out of the window until it
//! ends.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::{IdHash, Period};

/// A lease is at most this fraction (1/SHARE) of what its window had left.
pub const SHARE: u64 = 16;

/// A lease not used for this long is given back.
pub const IDLE: Duration = Duration::from_secs(1);

/// A lease is refilled once what is left of it is at most 1/REFILL_AT of its last
/// grant.
pub const REFILL_AT: u64 = 4;

/// A lease with at most 1/JOIN_AT of its last grant left is refilled along with
/// another window of the same request that reached [`REFILL_AT`].
pub const JOIN_AT: u64 = 2;

/// Grants smaller than this are not refilled ahead (the end of a window, where grants
/// shrink to what a request needs).
const REFILL_MIN: u64 = 4;

const SHARDS: usize = 16;

/// One window's units leased to this node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// Units granted and not yet admitted.
    pub units: u64,
    /// The limit's value the units were granted under.
    pub max: u64,
    /// The window's granted total in Redis after the last grant to this node.
    pub seen: u64,
    /// Last time a request admitted on it, or it was granted.
    pub used_at: Instant,
    /// A request is asking Redis for a new lease of this window, or a refill is under
    /// way: others that find it short ask only for what they need, so a burst of them
    /// does not take a lease each.
    pub asking: bool,
    /// Units of the last grant beyond what its request needed: refills start when
    /// [`Held::units`] falls to a [`REFILL_AT`]th of it.
    pub granted: u64,
}

/// Units taken from a lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    /// The lease after the take.
    pub held: Held,
    /// The caller should refill the lease in the background (and then call
    /// [`Leases::asked`]): it is running low and no other request is asking.
    pub refill: bool,
}

/// What one window of a request needs from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// Index of the check in the request.
    pub index: usize,
    /// Units of a lease given back with the call (the lease ran short, or its limit
    /// changed).
    pub give_back: u64,
    /// Whether this request asks for a lease beyond its need (no other is asking).
    pub lease: bool,
}

/// One window of one application, as a lease is looked up: no string is built for it
/// unless Redis is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    pub application: &'a str,
    pub metric: &'a str,
    pub period: Period,
    /// Unix seconds at which the window starts.
    pub start: i64,
}

impl<'a> Window<'a> {
    /// The window of `check` for `application` at `now` (Unix seconds).
    pub fn of(application: &'a str, check: &crate::Check<'a>, now: i64) -> Self {
        Window { application, metric: check.metric, period: check.period, start: check.period.window(now).0 }
    }
}

#[derive(Debug)]
struct Entry {
    metric: Box<str>,
    period: Period,
    start: i64,
    held: Held,
}

/// Each application's leased windows (a handful), by application id.
type Shard = HashMap<Box<str>, Vec<Entry>, IdHash>;

fn find<'s>(shard: &'s mut Shard, w: &Window<'_>) -> Option<&'s mut Held> {
    let entries = shard.get_mut(w.application)?;
    entries
        .iter_mut()
        .find(|e| e.start == w.start && e.period == w.period && *e.metric == *w.metric)
        .map(|e| &mut e.held)
}

fn insert<'s>(shard: &'s mut Shard, w: &Window<'_>, held: Held) -> &'s mut Held {
    if !shard.contains_key(w.application) {
        shard.insert(w.application.into(), Vec::new());
    }
    let entries = shard.get_mut(w.application).expect("inserted above");
    entries.push(Entry { metric: w.metric.into(), period: w.period, start: w.start, held });
    &mut entries.last_mut().expect("pushed above").held
}

/// The leases this node holds, by application and window, sharded by application.
#[derive(Debug)]
pub(crate) struct Leases {
    /// Most units a grant adds beyond what the request needs (`--counters-lease`).
    pub units: u64,
    /// The Redis key namespace, to name a window when its units go back.
    namespace: String,
    hasher: IdHash,
    shards: Box<[Mutex<Shard>]>,
    /// Units held outside any lease (one under a limit's old value was replaced), to
    /// be given back with the next idle leases: (window key, units).
    owed: Mutex<Vec<(String, u64)>>,
    /// Notified whenever an ask for a lease ends (see [`Leases::asked`]).
    landed: Notify,
}

impl Leases {
    pub fn new(units: u64, namespace: &str) -> Leases {
        Leases {
            units,
            namespace: namespace.to_string(),
            hasher: IdHash,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            owed: Mutex::default(),
            landed: Notify::new(),
        }
    }

    /// The window's key in Redis.
    pub fn key(&self, w: &Window<'_>) -> String {
        crate::redis::window_key(&self.namespace, w.application, w.metric, w.period, w.start)
    }

    fn shard(&self, application: &str) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(self.hasher.hash_one(application) as usize) % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `delta` units under `max` from the lease of `w` if it has them; else
    /// empties it and returns what to ask Redis for (`index` 0: the caller sets it).
    /// An [`Ask`] with `lease` must be followed by [`Leases::asked`].
    pub fn take(&self, w: &Window<'_>, max: u64, delta: u64, now: Instant) -> Result<Taken, Ask> {
        self.take_or_wait(w, max, delta, now, false).unwrap_or_else(|| unreachable!("asked not to wait"))
    }

    /// [`Leases::take`], but when the lease is short while a request or a refill is
    /// asking Redis for more of it (its units will be here within one Redis round
    /// trip) and `delta` is at most 1/[`REFILL_AT`] of a lease, returns `None` and
    /// changes nothing if `wait` is set: the caller waits for
    /// [`Leases::landed`] and takes again, instead of sending Redis a call of its own
    /// for its need. Under concurrent requests, a refill in flight otherwise turned
    /// every request that found the lease empty meanwhile into a Redis call (0.15
    /// calls per request at 50 connections, against 0.01–0.04 by the lease's size).
    pub fn take_or_wait(
        &self,
        w: &Window<'_>,
        max: u64,
        delta: u64,
        now: Instant,
        wait: bool,
    ) -> Option<Result<Taken, Ask>> {
        let mut shard = self.shard(w.application);
        let fresh = Held { units: 0, max, seen: 0, used_at: now, asking: true, granted: 0 };
        Some(match find(&mut shard, w) {
            Some(h) if h.max == max && h.units >= delta => {
                h.units -= delta;
                h.used_at = now;
                let refill = !h.asking && h.granted >= REFILL_MIN && h.units * REFILL_AT <= h.granted;
                h.asking |= refill;
                Ok(Taken { held: *h, refill })
            }
            // Only a small need waits: one that is more than 1/REFILL_AT of a lease
            // (a metered WebSocket read of dozens of messages) would take most of what
            // the ask brings, so requests waiting behind one call would go one by one
            // at Redis's round trip; it asks for itself, in parallel with the others.
            Some(h) if wait && h.max == max && h.asking && delta.saturating_mul(REFILL_AT) <= self.units => {
                return None;
            }
            Some(h) if h.max == max => {
                let give_back = std::mem::take(&mut h.units);
                let lease = !std::mem::replace(&mut h.asking, true);
                Err(Ask { index: 0, give_back, lease })
            }
            // Under another value of the limit: given back whole, a new lease taken.
            Some(h) => Err(Ask { index: 0, give_back: std::mem::replace(h, fresh).units, lease: true }),
            None => {
                insert(&mut shard, w, fresh);
                Err(Ask { index: 0, give_back: 0, lease: true })
            }
        })
    }

    /// Marks the lease of `w` under `max` as being refilled if nothing asks for it and
    /// at most 1/[`JOIN_AT`] of its last grant is left; true if so (the caller then
    /// refills it, and calls [`Leases::asked`]).
    pub fn join_refill(&self, w: &Window<'_>, max: u64) -> bool {
        let mut shard = self.shard(w.application);
        match find(&mut shard, w) {
            Some(h) if h.max == max && !h.asking && h.granted >= REFILL_MIN && h.units * JOIN_AT <= h.granted => {
                h.asking = true;
                true
            }
            _ => false,
        }
    }

    /// Wakes the requests waiting for a lease (see [`Leases::take_or_wait`]); they
    /// register with `notified()` and `enable()` before they take again.
    pub fn landed(&self) -> &Notify {
        &self.landed
    }

    /// The request that asked for a lease of `w` under `max` has its answer (or gave
    /// up): another may ask.
    pub fn asked(&self, w: &Window<'_>, max: u64) {
        if let Some(h) = find(&mut self.shard(w.application), w).filter(|h| h.max == max) {
            h.asking = false;
        }
        // Every end of an ask wakes every waiter (whatever window it waits on): a
        // waiter takes again, and asks Redis itself if still short, so a wake-up too
        // many costs a lock, never a wrong answer.
        self.landed.notify_waiters();
    }

    /// Puts back `delta` units taken by [`Leases::take`] for a request that was then
    /// refused or could not be decided: they are still this node's in Redis.
    pub fn untake(&self, w: &Window<'_>, max: u64, delta: u64, now: Instant) {
        if delta > 0 {
            self.keep(w, max, delta, 0, now);
        }
    }

    /// Keeps `units` granted on `w` under `max` (added to a lease another request took
    /// meanwhile). A lease under another value of the limit is replaced and its units
    /// owed back to Redis.
    pub fn keep(&self, w: &Window<'_>, max: u64, units: u64, seen: u64, now: Instant) {
        self.keep_held(w, max, units, seen, now, None);
    }

    /// Keeps the `spare` units of a grant (see [`Leases::keep`]), which is also what
    /// the next refill is measured against; `total` is the window's granted total
    /// after it.
    pub fn granted(&self, w: &Window<'_>, max: u64, spare: u64, total: u64, now: Instant) {
        self.keep_held(w, max, spare, total, now, Some(spare));
    }

    fn keep_held(&self, w: &Window<'_>, max: u64, units: u64, seen: u64, now: Instant, granted: Option<u64>) {
        let mut shard = self.shard(w.application);
        let fresh = Held { units: 0, max, seen, used_at: now, asking: false, granted: 0 };
        let held = match find(&mut shard, w) {
            Some(h) => h,
            None => insert(&mut shard, w, fresh),
        };
        if held.max != max {
            let old = std::mem::replace(held, fresh);
            if old.units > 0 {
                self.owed.lock().unwrap_or_else(|p| p.into_inner()).push((self.key(w), old.units));
            }
        }
        held.units += units;
        held.seen = held.seen.max(seen);
        held.used_at = now;
        if let Some(g) = granted {
            held.granted = g;
        }
    }

    /// Removes and returns the leases idle for at least `idle` at `now` (every one
    /// when `idle` is zero) whose window is not over at `unix_now`, as (window key,
    /// units); leases of windows that are over are forgotten.
    pub fn take_idle(&self, idle: Duration, now: Instant, unix_now: i64) -> Vec<(String, u64)> {
        let mut out = std::mem::take(&mut *self.owed.lock().unwrap_or_else(|p| p.into_inner()));
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|application, entries| {
                entries.retain(|e| {
                    let h = &e.held;
                    let over = e.period.window(e.start).1.is_some_and(|end| end <= unix_now);
                    let idle = now.saturating_duration_since(h.used_at) >= idle;
                    if !over && idle && h.units > 0 {
                        let w = Window { application, metric: &e.metric, period: e.period, start: e.start };
                        out.push((self.key(&w), h.units));
                    }
                    !(over || idle)
                });
                !entries.is_empty()
            });
        }
        out
    }

    /// Units leased and not yet admitted, over every window (owed ones included).
    pub fn outstanding(&self) -> u64 {
        let owed: u64 = self.owed.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, u)| u).sum();
        owed + self
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().map(|e| e.held.units).sum::<u64>())
            .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(metric: &str) -> Window<'_> {
        Window { application: "acme/app", metric, period: Period::Eternity, start: 0 }
    }

    #[test]
    fn a_lease_serves_until_short_then_is_given_back() {
        let leases = Leases::new(100, "ns");
        let now = Instant::now();
        let ask = |give_back, lease| Err(Ask { index: 0, give_back, lease });
        let units = |t: Result<Taken, Ask>| t.map(|t| t.held.units);
        assert_eq!(units(leases.take(&w("k"), 10, 1, now)), ask(0, true), "nothing leased yet");
        assert_eq!(units(leases.take(&w("k"), 10, 1, now)), ask(0, false), "one asks for a lease at a time");
        leases.keep(&w("k"), 10, 3, 4, now);
        leases.asked(&w("k"), 10);
        assert_eq!(units(leases.take(&w("k"), 10, 2, now)), Ok(1));
        assert_eq!(units(leases.take(&w("k"), 10, 2, now)), ask(1, true), "short: the one unit goes back");
        assert_eq!(leases.outstanding(), 0);
    }

    #[test]
    fn a_lease_running_low_is_refilled_once_at_a_time() {
        let leases = Leases::new(100, "ns");
        let now = Instant::now();
        leases.granted(&w("k"), 1_000, 8, 9, now);
        let refill = |t: Result<Taken, Ask>| t.map(|t| (t.held.units, t.refill));
        for left in (3..8).rev() {
            assert_eq!(refill(leases.take(&w("k"), 1_000, 1, now)), Ok((left, false)));
        }
        assert_eq!(refill(leases.take(&w("k"), 1_000, 1, now)), Ok((2, true)), "a quarter of 8 left");
        assert_eq!(refill(leases.take(&w("k"), 1_000, 1, now)), Ok((1, false)), "one refill at a time");
        // Run short while the refill is out: only the request's need is asked for.
        leases.take(&w("k"), 1_000, 1, now).expect("the last unit");
        assert_eq!(
            leases.take(&w("k"), 1_000, 1, now).map(|t| t.held.units),
            Err(Ask { index: 0, give_back: 0, lease: false })
        );
        // The refill lands: its grant is the new measure.
        leases.granted(&w("k"), 1_000, 20, 30, now);
        leases.asked(&w("k"), 1_000);
        assert_eq!(refill(leases.take(&w("k"), 1_000, 1, now)), Ok((19, false)));
        // Small grants (the end of a window) are not refilled ahead.
        leases.granted(&w("small"), 1_000, 3, 3, now);
        assert_eq!(refill(leases.take(&w("small"), 1_000, 3, now)), Ok((0, false)));
    }

    #[test]
    fn a_short_lease_waits_for_the_ask_in_flight_and_half_used_ones_join_a_refill() {
        let leases = Leases::new(100, "ns");
        let now = Instant::now();
        assert!(leases.take_or_wait(&w("k"), 10, 1, now, true).expect("nothing asks").is_err());
        assert!(leases.take_or_wait(&w("k"), 10, 1, now, true).is_none(), "short while asked for: wait");
        assert_eq!(
            leases.take_or_wait(&w("k"), 10, 26, now, true).map(|t| t.map(|t| t.held.units)),
            Some(Err(Ask { index: 0, give_back: 0, lease: false })),
            "a need above a quarter of a lease asks for itself"
        );
        assert_eq!(
            leases.take(&w("k"), 10, 1, now).map(|t| t.held.units),
            Err(Ask { index: 0, give_back: 0, lease: false })
        );
        leases.granted(&w("k"), 10, 8, 9, now);
        leases.asked(&w("k"), 10);
        assert!(matches!(leases.take_or_wait(&w("k"), 10, 1, now, true), Some(Ok(_))));
        // 7 of 8 left: too early to join; at half, it joins once.
        assert!(!leases.join_refill(&w("k"), 10));
        for _ in 0..3 {
            leases.take(&w("k"), 10, 1, now).expect("units");
        }
        assert!(leases.join_refill(&w("k"), 10), "4 of 8 left");
        assert!(!leases.join_refill(&w("k"), 10), "already being refilled");
        assert!(!leases.join_refill(&w("other"), 10), "no lease");
    }

    #[test]
    fn a_changed_limit_gives_the_lease_back() {
        let leases = Leases::new(100, "ns");
        let now = Instant::now();
        leases.keep(&w("k"), 10, 5, 6, now);
        assert_eq!(
            leases.take(&w("k"), 3, 1, now).map(|t| t.held.units),
            Err(Ask { index: 0, give_back: 5, lease: true })
        );
        // A request under the old value that had taken a unit and was refused puts it
        // back: it is still this node's.
        leases.untake(&w("k"), 10, 1, now);
        assert_eq!(leases.outstanding(), 1);
        // A grant under the new value replaces it; the old unit is owed back to Redis.
        leases.keep(&w("k"), 3, 2, 3, now);
        assert_eq!(leases.outstanding(), 3);
        assert_eq!(
            leases.take_idle(Duration::from_secs(60), now, 0),
            vec![("ns:{acme/app}:w:k:eternity:0".to_string(), 1)]
        );
        assert_eq!(leases.take(&w("k"), 3, 2, now).map(|t| t.held.units), Ok(0));
    }

    #[test]
    fn idle_leases_and_windows_that_are_over() {
        let leases = Leases::new(100, "ns");
        let start = Instant::now();
        leases.keep(&w("busy"), 10, 2, 2, start + IDLE);
        leases.keep(&w("idle"), 10, 4, 4, start);
        let over = Window { application: "acme/app", metric: "over", period: Period::Minute, start: 0 };
        leases.keep(&over, 10, 7, 7, start + IDLE);
        let back = leases.take_idle(IDLE, start + IDLE, 100);
        assert_eq!(back, vec![("ns:{acme/app}:w:idle:eternity:0".to_string(), 4)]);
        assert_eq!(leases.outstanding(), 2, "the busy lease stays; the window that is over is forgotten");
        assert_eq!(
            leases.take_idle(Duration::ZERO, start, 0),
            vec![("ns:{acme/app}:w:busy:eternity:0".to_string(), 2)]
        );
    }
}
