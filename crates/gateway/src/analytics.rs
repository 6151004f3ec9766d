//! Usage analytics, aggregated in memory per application × metric × minute and
//! drained by whoever persists them (the binary flushes to the store every few
//! seconds). Recording is one short critical section on one of a few shards.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use tollgate_counters::IdHash;

const SHARDS: usize = 16;

/// Usage by application id.
type Shard = HashMap<Box<str>, AppUsage, IdHash>;

/// One aggregated bucket, ready to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The application's counter identity, `account/application`.
    pub application: String,
    /// System name of the product the usage was recorded under.
    pub product: String,
    /// System name of the metric or method.
    pub metric: String,
    /// Unix seconds at the start of the minute.
    pub minute: i64,
    /// Usage added in that minute.
    pub value: u64,
}

#[derive(Default)]
struct AppUsage {
    product: Box<str>,
    /// (metric, minute) → value; a handful of entries between flushes.
    counts: Vec<(Box<str>, i64, u64)>,
}

/// Usage not yet persisted, summed per application × metric × minute and sharded by
/// application.
pub struct Analytics {
    hasher: IdHash,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Analytics {
    fn default() -> Self {
        Analytics { hasher: IdHash, shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analytics")
    }
}

impl Analytics {
    /// Adds a request's usage (`(metric name, delta)`) at `now` (Unix seconds).
    pub fn record<'a>(&self, application: &str, product: &str, usage: impl Iterator<Item = (&'a str, u64)>, now: i64) {
        let minute = now - now.rem_euclid(60);
        let shard = &self.shards[(self.hasher.hash_one(application) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match map.get_mut(application) {
            Some(e) => e,
            None => map
                .entry(application.into())
                .or_insert_with(|| AppUsage { product: product.into(), counts: Vec::new() }),
        };
        for (metric, delta) in usage {
            match entry.counts.iter_mut().find(|(m, t, _)| t == &minute && &**m == metric) {
                Some((_, _, v)) => *v += delta,
                None => entry.counts.push((metric.into(), minute, delta)),
            }
        }
    }

    /// Puts back records a write could not store, to go with the next write (summed
    /// with what was recorded meanwhile): a store that fails for a while loses no usage.
    pub fn requeue(&self, records: Vec<UsageRecord>) {
        for r in records {
            self.record(&r.application, &r.product, std::iter::once((r.metric.as_str(), r.value)), r.minute);
        }
    }

    /// Takes everything recorded so far.
    pub fn drain(&self) -> Vec<UsageRecord> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for (app, usage) in taken {
                for (metric, minute, value) in usage.counts {
                    out.push(UsageRecord {
                        application: app.to_string(),
                        product: usage.product.to_string(),
                        metric: metric.into(),
                        minute,
                        value,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_per_application_metric_and_minute() {
        let a = Analytics::default();
        a.record("acme/app", "chat", [("hits", 1), ("connect", 1)].into_iter(), 120);
        a.record("acme/app", "chat", [("hits", 2)].into_iter(), 179);
        a.record("acme/app", "chat", [("hits", 1)].into_iter(), 180);
        let mut got = a.drain();
        got.sort_by(|x, y| (x.minute, &x.metric).cmp(&(y.minute, &y.metric)));
        let summary: Vec<(&str, i64, u64)> = got.iter().map(|r| (r.metric.as_str(), r.minute, r.value)).collect();
        assert_eq!(summary, vec![("connect", 120, 1), ("hits", 120, 3), ("hits", 180, 1)]);
        assert!(a.drain().is_empty(), "drained");
    }

    #[test]
    fn records_put_back_join_what_came_meanwhile() {
        let a = Analytics::default();
        a.record("acme/app", "chat", [("hits", 2)].into_iter(), 120);
        let failed = a.drain();
        a.record("acme/app", "chat", [("hits", 1)].into_iter(), 130);
        a.requeue(failed);
        let got: Vec<(String, i64, u64)> = a.drain().into_iter().map(|r| (r.metric, r.minute, r.value)).collect();
        assert_eq!(got, vec![("hits".to_string(), 120, 3)]);
    }
}
