//! What the console's dashboard reads: each gateway node's traffic per product,
//! environment and minute (responses by status class, WebSocket messages each way) and
//! its latest report of the WebSockets it has open. Writes are additive upserts (traffic)
//! or a node's own rows replaced (reports), so any number of nodes write side by side.

use crate::{Result, Store};
use sqlx::Row as _;

/// One minute of one product's traffic in one environment (as one node saw it, or
/// summed over nodes when read back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficRow {
    /// System name of the product.
    pub product: String,
    /// `staging` or `production`.
    pub environment: String,
    /// Unix seconds at the start of the minute.
    pub minute: i64,
    /// Responses by status class: 1xx (WebSocket upgrades), 2xx, 3xx, 4xx, 5xx.
    pub responses: [i64; 5],
    /// WebSocket messages from clients.
    pub messages_from_clients: i64,
    /// WebSocket messages from backends.
    pub messages_from_backends: i64,
}

/// A node's latest word on one product in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Name of the reporting gateway node (one per process).
    pub node: String,
    /// `staging` or `production`.
    pub environment: String,
    /// Empty for the node's own row (sent even when it serves no traffic).
    pub product: String,
    /// WebSocket connections open when the node reported.
    pub open_websockets: i64,
    /// Unix milliseconds.
    pub reported_at: i64,
}

const UPSERT: &str = "INSERT INTO traffic_buckets (product, environment, minute, responses_1xx, responses_2xx, responses_3xx, responses_4xx, responses_5xx, messages_from_clients, messages_from_backends) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (product, environment, minute) DO UPDATE SET \
    responses_1xx = traffic_buckets.responses_1xx + excluded.responses_1xx, \
    responses_2xx = traffic_buckets.responses_2xx + excluded.responses_2xx, \
    responses_3xx = traffic_buckets.responses_3xx + excluded.responses_3xx, \
    responses_4xx = traffic_buckets.responses_4xx + excluded.responses_4xx, \
    responses_5xx = traffic_buckets.responses_5xx + excluded.responses_5xx, \
    messages_from_clients = traffic_buckets.messages_from_clients + excluded.messages_from_clients, \
    messages_from_backends = traffic_buckets.messages_from_backends + excluded.messages_from_backends";

impl Store {
    /// Adds traffic (additively), in one transaction.
    pub async fn add_traffic(&self, rows: &[TrafficRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for r in rows {
            let [a, b, c, d, e] = r.responses;
            sqlx::query(UPSERT)
                .bind(r.product.clone())
                .bind(r.environment.clone())
                .bind(r.minute)
                .bind(a)
                .bind(b)
                .bind(c)
                .bind(d)
                .bind(e)
                .bind(r.messages_from_clients)
                .bind(r.messages_from_backends)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces what `node` reported before with `reports` (each `(environment,
    /// product, open WebSockets)`; product `""` for the node itself), at `now_ms`.
    pub async fn report_node(&self, node: &str, reports: &[(&str, &str, i64)], now_ms: i64) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM gateway_reports WHERE node = $1").bind(node.to_string()).execute(&mut *tx).await?;
        for (environment, product, open) in reports {
            sqlx::query(
                "INSERT INTO gateway_reports (node, environment, product, open_websockets, reported_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(node.to_string())
            .bind(environment.to_string())
            .bind(product.to_string())
            .bind(*open)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A product's traffic per environment and minute, summed over nodes, for minutes
    /// in `[since, until)` (Unix seconds), in time order.
    pub async fn traffic(&self, product: &str, since: i64, until: i64) -> Result<Vec<TrafficRow>> {
        let rows = sqlx::query(
            "SELECT product, environment, minute, responses_1xx, responses_2xx, responses_3xx, responses_4xx, responses_5xx, messages_from_clients, messages_from_backends \
             FROM traffic_buckets WHERE product = $1 AND minute >= $2 AND minute < $3 ORDER BY minute, environment",
        )
        .bind(product.to_string())
        .bind(since)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TrafficRow {
                    product: r.try_get("product")?,
                    environment: r.try_get("environment")?,
                    minute: r.try_get("minute")?,
                    responses: [
                        r.try_get("responses_1xx")?,
                        r.try_get("responses_2xx")?,
                        r.try_get("responses_3xx")?,
                        r.try_get("responses_4xx")?,
                        r.try_get("responses_5xx")?,
                    ],
                    messages_from_clients: r.try_get("messages_from_clients")?,
                    messages_from_backends: r.try_get("messages_from_backends")?,
                })
            })
            .collect()
    }

    /// Every node's reports made at or after `since_ms` (Unix milliseconds).
    pub async fn node_reports(&self, since_ms: i64) -> Result<Vec<NodeReport>> {
        let rows = sqlx::query(
            "SELECT node, environment, product, open_websockets, reported_at FROM gateway_reports WHERE reported_at >= $1 ORDER BY node, environment, product",
        )
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeReport {
                    node: r.try_get("node")?,
                    environment: r.try_get("environment")?,
                    product: r.try_get("product")?,
                    open_websockets: r.try_get("open_websockets")?,
                    reported_at: r.try_get("reported_at")?,
                })
            })
            .collect()
    }

    /// Removes traffic minutes before `before` (Unix seconds) and reports older than a
    /// day (a node that stopped long ago): the dashboard shows the last hour.
    pub async fn forget_traffic(&self, before: i64) -> Result<()> {
        sqlx::query("DELETE FROM traffic_buckets WHERE minute < $1").bind(before).execute(self.pool()).await?;
        sqlx::query("DELETE FROM gateway_reports WHERE reported_at < $1")
            .bind((before - 86_400).max(0) * 1000)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A product's usage of `metric` per application for buckets in `[since, until)`
    /// (Unix seconds), largest first, at most `limit` of them.
    pub async fn usage_by_application(
        &self,
        product: &str,
        metric: &str,
        since: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT application, CAST(SUM(value) AS BIGINT) AS total FROM usage_buckets WHERE product = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4 \
             GROUP BY application ORDER BY total DESC, application LIMIT $5",
        )
        .bind(product.to_string())
        .bind(metric.to_string())
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("application")?, r.try_get::<i64, _>("total")?))).collect()
    }

    /// Usage per metric (methods and WebSocket pseudo-metrics included) of a product —
    /// or of one application of it, `account/application` — in buckets starting in
    /// `[since, until)`, Unix seconds.
    pub async fn usage_totals(
        &self,
        product: &str,
        application: Option<&str>,
        since: i64,
        until: i64,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT metric, CAST(SUM(value) AS BIGINT) AS total FROM usage_buckets WHERE product = $1 AND bucket >= $2 AND bucket < $3 \
             AND ($4 = '' OR application = $4) GROUP BY metric ORDER BY metric",
        )
        .bind(product.to_string())
        .bind(since)
        .bind(until)
        .bind(application.unwrap_or_default().to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("metric")?, r.try_get::<i64, _>("total")?))).collect()
    }
}
