//! Analytics buckets: usage per application × metric, by minute, rolled up into hours
//! and days once older than the retention, so the table does not grow without bound.
//! Writes are additive upserts, so several writers (gateway nodes) never overwrite each
//! other.

use crate::{Result, Store};
use serde::Serialize;
use sqlx::Row as _;

/// The width of usage buckets: stored minutes roll up into hours, then days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds.
    Day,
}

impl Granularity {
    /// `minute`, `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
    /// The bucket width in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3_600,
            Granularity::Day => 86_400,
        }
    }
    /// Parses `minute`, `hour` or `day`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "minute" => Some(Granularity::Minute),
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            _ => None,
        }
    }
}

/// One minute of one metric of one application.
#[derive(Debug, Clone)]
pub struct UsageRow {
    /// The application, `account/application`.
    pub application: String,
    /// System name of the application's product.
    pub product: String,
    /// System name of the metric or method.
    pub metric: String,
    /// Unix seconds at the start of the minute.
    pub minute: i64,
    /// Usage added in that minute.
    pub value: i64,
}

/// Which usage to read.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Only this product's usage, when set.
    pub product: Option<String>,
    /// `account/application`.
    pub application: Option<String>,
    /// Only this metric's usage, when set.
    pub metric: Option<String>,
    /// Unix seconds, inclusive.
    pub since: i64,
    /// Unix seconds, exclusive.
    pub until: i64,
}

const UPSERT: &str = "INSERT INTO usage_buckets (application, product, metric, granularity, bucket, value) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (application, metric, granularity, bucket) DO UPDATE SET value = usage_buckets.value + excluded.value";

impl Store {
    /// Adds minute buckets (additively), in one transaction.
    pub async fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for r in rows {
            sqlx::query(UPSERT)
                .bind(r.application.clone())
                .bind(r.product.clone())
                .bind(r.metric.clone())
                .bind("minute")
                .bind(r.minute)
                .bind(r.value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Folds minute buckets older than `now - minute_retention` into hours, and hour
    /// buckets older than `now - hour_retention` into days (all in seconds).
    pub async fn roll_up(&self, now: i64, minute_retention: i64, hour_retention: i64) -> Result<()> {
        for (from, to, cutoff) in [
            (Granularity::Minute, Granularity::Hour, now - minute_retention),
            (Granularity::Hour, Granularity::Day, now - hour_retention),
        ] {
            let cutoff = cutoff - cutoff.rem_euclid(to.seconds());
            let mut tx = self.pool().begin().await?;
            // Delete and read in one statement: the rows rolled up are exactly the rows
            // removed, even while other nodes flush or roll up at the same time (a
            // concurrent roll-up waits on these rows and then finds them gone).
            let rows = sqlx::query(
                "DELETE FROM usage_buckets WHERE granularity = $1 AND bucket < $2 RETURNING application, product, metric, bucket, value",
            )
            .bind(from.as_str())
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                let bucket: i64 = r.try_get("bucket")?;
                sqlx::query(UPSERT)
                    .bind(r.try_get::<String, _>("application")?)
                    .bind(r.try_get::<String, _>("product")?)
                    .bind(r.try_get::<String, _>("metric")?)
                    .bind(to.as_str())
                    .bind(bucket - bucket.rem_euclid(to.seconds()))
                    .bind(r.try_get::<i64, _>("value")?)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// The usage matching `q`, summed into `granularity` buckets: `(bucket, value)` in
    /// time order. Data already rolled up into coarser buckets is counted in them.
    pub async fn usage_series(&self, q: &UsageQuery, granularity: Granularity) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT application, product, metric, granularity, bucket, value FROM usage_buckets WHERE bucket >= $1 AND bucket < $2",
        )
        .bind(q.since - q.since.rem_euclid(86_400))
        .bind(q.until)
        .fetch_all(self.pool())
        .await?;
        let mut series = std::collections::BTreeMap::new();
        for r in &rows {
            let (app, product, metric): (String, String, String) =
                (r.try_get("application")?, r.try_get("product")?, r.try_get("metric")?);
            if q.application.as_ref().is_some_and(|a| *a != app)
                || q.product.as_ref().is_some_and(|p| *p != product)
                || q.metric.as_ref().is_some_and(|m| *m != metric)
            {
                continue;
            }
            let bucket: i64 = r.try_get("bucket")?;
            let stored = Granularity::parse(&r.try_get::<String, _>("granularity")?).unwrap_or(Granularity::Minute);
            // A coarse bucket counts if it overlaps the range; a fine one if it starts in it.
            if bucket + stored.seconds() <= q.since {
                continue;
            }
            let at = bucket - bucket.rem_euclid(granularity.seconds());
            *series.entry(at).or_insert(0) += r.try_get::<i64, _>("value")?;
        }
        Ok(series.into_iter().collect())
    }
}
