//! Live views for operators: where an application stands against its plan's limits now
//! (`GET /applications/{app}/usage`, read from the counters — memory or Redis — as the
//! gateways decide with them), and a product's last hour (`GET /analytics/dashboard`):
//! traffic per minute by environment and status class, WebSocket messages, open
//! WebSockets, top applications and those nearest to a limit — what the console's
//! dashboard draws.
//!
//! The dashboard reads what every gateway node writes to the store (each flushes every
//! few seconds), so with several nodes it shows all of them; it says how many reported
//! and how long ago, which is how far behind it may be.

use crate::AdminState;
use crate::error::{ApiError, ApiResult};
use crate::resources::Q;
use crate::world::World;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tollgate_counters::{Check, Counters};
use tollgate_model::Limit;

/// How often nodes write their traffic and reports (the flush interval of `serve` and
/// `gateway`), in seconds.
pub const FLUSH_SECONDS: i64 = 5;

/// A node whose last report is older than this (ms) is not counted as reporting.
const FRESH_MS: i64 = 30_000;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub(crate) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/applications/{app}/usage", get(application_usage))
        .route("/analytics/dashboard", get(dashboard))
        .route("/analytics/totals", get(totals))
}

/// Where `application` (the counters' id, `account/application`) stands on `limits`,
/// as `{metric, period, value, current, remaining, resets_at}` objects.
async fn limit_status(counters: &Counters, application: &str, limits: &[Limit], now: i64) -> ApiResult<Vec<Value>> {
    let checks: Vec<Check<'_>> =
        limits.iter().map(|l| Check { metric: &l.metric, period: l.period, max: l.value, delta: 0 }).collect();
    let status = counters
        .status(application, &checks, now)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "counters_unavailable", format!("{e}; retry")))?;
    Ok(status
        .iter()
        .map(|s| {
            json!({
                "metric": s.metric,
                "period": s.period,
                "value": s.max,
                "current": s.current,
                "remaining": s.remaining(),
                "resets_at": s.reset_at,
            })
        })
        .collect())
}

fn counters(s: &AdminState) -> ApiResult<&Counters> {
    s.counters.as_deref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "counters_unavailable", "this process holds no usage counters")
    })
}

/// The limits of an application's plan, and the counters' id of the application.
fn plan_of(world: &World, app: &tollgate_store::Row<tollgate_store::ApplicationDoc>) -> (String, Vec<Limit>) {
    let account = world.accounts.iter().find(|a| Some(a.id) == app.parent_id).map_or("", |a| a.system_name.as_str());
    let product = world.products.iter().find(|p| p.system_name == app.doc.product);
    let limits = product
        .and_then(|p| world.plans.iter().find(|pl| pl.parent_id == Some(p.id) && pl.system_name == app.doc.plan))
        .map(|pl| pl.doc.limits.iter().map(|l| l.value.clone()).collect())
        .unwrap_or_default();
    (format!("{account}/{}", app.doc.name), limits)
}

async fn application_usage(State(s): State<Arc<AdminState>>, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    let row = crate::resources::find_app(&s, &app).await?;
    let world = World::load(&s.store).await?;
    let (id, limits) = plan_of(&world, &row);
    let now = s.clock.now();
    Ok(Json(Value::Array(limit_status(counters(&s)?, &id, &limits, now).await?)))
}

#[derive(Deserialize)]
struct DashboardQuery {
    product: String,
}

/// Per environment: 60 minutes of traffic, totals, and the open WebSockets.
fn environment_view(rows: &[tollgate_store::TrafficRow], env: &str, since: i64, open: i64) -> Value {
    let by_minute: BTreeMap<i64, &tollgate_store::TrafficRow> =
        rows.iter().filter(|r| r.environment == env).map(|r| (r.minute, r)).collect();
    let mut totals = [0i64; 5];
    let (mut from_clients, mut from_backends) = (0, 0);
    let minutes: Vec<Value> = (0..60)
        .map(|i| {
            let at = since + i * 60;
            let empty = tollgate_store::TrafficRow::default();
            let r = by_minute.get(&at).copied().unwrap_or(&empty);
            for (t, v) in totals.iter_mut().zip(r.responses) {
                *t += v;
            }
            from_clients += r.messages_from_clients;
            from_backends += r.messages_from_backends;
            let responses: serde_json::Map<String, Value> =
                CLASSES.iter().zip(r.responses).map(|(c, v)| (c.to_string(), json!(v))).collect();
            json!({
                "at": at,
                "responses": responses,
                "messages_from_clients": r.messages_from_clients,
                "messages_from_backends": r.messages_from_backends,
            })
        })
        .collect();
    let responses: serde_json::Map<String, Value> =
        CLASSES.iter().zip(totals).map(|(c, v)| (c.to_string(), json!(v))).collect();
    json!({
        "minutes": minutes,
        "responses": responses,
        "requests": totals.iter().sum::<i64>(),
        "messages_from_clients": from_clients,
        "messages_from_backends": from_backends,
        "open_websockets": open,
    })
}

async fn dashboard(State(s): State<Arc<AdminState>>, Q(q): Q<DashboardQuery>) -> ApiResult<Json<Value>> {
    let world = World::load(&s.store).await?;
    let Some(product) = world.products.iter().find(|p| p.system_name == q.product) else {
        return Err(ApiError::not_found(&format!("product `{}`", q.product)).field("product"));
    };
    let now_ms = s.clock.now_ms();
    let now = now_ms / 1000;
    // The last 60 whole minutes, the current one included.
    let since = now - now.rem_euclid(60) - 59 * 60;
    let traffic = s.store.traffic(&product.system_name, since, now + 60).await?;
    let reports = s.store.node_reports(now_ms - FRESH_MS).await?;
    let open = |env: &str| {
        reports
            .iter()
            .filter(|r| r.environment == env && r.product == product.system_name)
            .map(|r| r.open_websockets)
            .sum()
    };
    let mut nodes: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &reports {
        let at = nodes.entry(r.node.as_str()).or_insert(r.reported_at);
        *at = (*at).max(r.reported_at);
    }
    let ages: Vec<i64> = nodes.values().map(|at| (now_ms - at).max(0)).collect();

    // Top applications by hits in the last hour; the limits of those that had traffic
    // in the last day (at most 200), read from the counters.
    fn split(id: &str) -> (&str, &str) {
        id.split_once('/').unwrap_or(("", id))
    }
    let top = s.store.usage_by_application(&product.system_name, "hits", since, now + 60, 10).await?;
    let recent = s.store.usage_by_application(&product.system_name, "hits", now - 86_400, now + 60, 200).await?;
    let accounts: HashMap<i64, &str> = world.accounts.iter().map(|a| (a.id, a.system_name.as_str())).collect();
    let applications: HashMap<String, &tollgate_store::Row<tollgate_store::ApplicationDoc>> = world
        .applications
        .iter()
        .filter(|a| a.doc.product == product.system_name)
        .filter_map(|a| Some((format!("{}/{}", accounts.get(&a.parent_id?)?, a.doc.name), a)))
        .collect();
    let mut nearest = Vec::new();
    if let Some(counters) = s.counters.as_deref() {
        for (id, _) in &recent {
            let Some(row) = applications.get(id).copied() else { continue };
            let (_, limits) = plan_of(&world, row);
            for l in limit_status(counters, id, &limits, now).await? {
                let (current, value) = (l["current"].as_u64().unwrap_or(0), l["value"].as_u64().unwrap_or(0));
                if current == 0 && value > 0 {
                    continue;
                }
                let ratio = if value == 0 { 1.0 } else { current as f64 / value as f64 };
                let mut entry = l;
                let (account, name) = split(id);
                (entry["account"], entry["application"]) = (json!(account), json!(name));
                entry["application_id"] = json!(row.id);
                entry["ratio"] = json!((ratio * 1000.0).round() / 1000.0);
                nearest.push(entry);
            }
        }
    }
    nearest.sort_by(|a, b| b["ratio"].as_f64().partial_cmp(&a["ratio"].as_f64()).unwrap_or(std::cmp::Ordering::Equal));
    nearest.truncate(10);

    Ok(Json(json!({
        "product": product.system_name,
        "now": now,
        "since": since,
        "environments": {
            "staging": environment_view(&traffic, "staging", since, open("staging")),
            "production": environment_view(&traffic, "production", since, open("production")),
        },
        "nodes": {
            "reporting": nodes.len(),
            "newest_report_ms": ages.iter().min(),
            "oldest_report_ms": ages.iter().max(),
            "flush_seconds": FLUSH_SECONDS,
        },
        "top_applications": top
            .iter()
            .map(|(id, hits)| json!({ "account": split(id).0, "application": split(id).1, "hits": hits }))
            .collect::<Vec<_>>(),
        "nearest_limits": nearest,
    })))
}

#[derive(Deserialize)]
struct TotalsQuery {
    product: String,
    application: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

/// Usage per metric over a period — methods, and the WebSocket pseudo-metrics
/// (`websocket:client_messages`, `websocket:closes:1000`, … of docs/websocket.md) — of a
/// product or one of its applications.
async fn totals(State(s): State<Arc<AdminState>>, Q(q): Q<TotalsQuery>) -> ApiResult<Json<Value>> {
    let (since, until) = crate::resources::period(&s, q.since, q.until)?;
    let world = World::load(&s.store).await?;
    if !world.products.iter().any(|p| p.system_name == q.product) {
        return Err(ApiError::not_found(&format!("product `{}`", q.product)).field("product"));
    }
    let application = match q.application.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(plan_of(&world, &crate::resources::find_app(&s, a).await?).0),
        None => None,
    };
    let totals = s.store.usage_totals(&q.product, application.as_deref(), since, until).await?;
    let totals: serde_json::Map<String, Value> = totals.into_iter().map(|(m, v)| (m, json!(v))).collect();
    Ok(Json(json!({ "product": q.product, "since": since, "until": until, "totals": totals })))
}
