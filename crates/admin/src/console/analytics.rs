//! Analytics: usage of one metric over time (minute, hour or day buckets), for a
//! product or one application, drawn as an SVG bar chart on the server (no script),
//! with the numbers in a table under it.

use super::html::{self, Page, esc};
use super::{Console, Ctx};
use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;

pub fn routes() -> Router<Console> {
    Router::new().route("/analytics", get(analytics))
}

/// Pseudo-metrics every WebSocket connection records (see docs/websocket.md).
const WEBSOCKET: [(&str, &str); 6] = [
    ("websocket:connections", "WebSocket connections"),
    ("websocket:client_messages", "WebSocket messages from clients"),
    ("websocket:server_messages", "WebSocket messages from backends"),
    ("websocket:client_bytes", "WebSocket bytes from clients"),
    ("websocket:server_bytes", "WebSocket bytes from backends"),
    ("websocket:seconds", "WebSocket connection-seconds"),
];

const RANGES: [(&str, &str, i64); 3] = [
    ("minute", "Last hour, per minute", 3600),
    ("hour", "Last day, per hour", 86_400),
    ("day", "Last 30 days, per day", 30 * 86_400),
];

async fn analytics(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let products = ctx.get("/products").await.body.as_array().cloned().unwrap_or_default();
    let product = get("product")
        .map(str::to_string)
        .or_else(|| products.first().and_then(|p| p["system_name"].as_str()).map(str::to_string));
    let metric = get("metric").unwrap_or("hits");
    let granularity = get("granularity").filter(|g| RANGES.iter().any(|r| r.0 == *g)).unwrap_or("hour");
    let application = get("application");

    let mut metric_opts = vec![("hits".to_string(), "hits".to_string())];
    let mut app_opts = vec![(String::new(), "All applications".to_string())];
    if let Some(p) = &product {
        for kind in ["metrics", "methods"] {
            for m in ctx
                .get(&format!("/products/{}/{kind}", html::url_encode(p)))
                .await
                .body
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = m["system_name"].as_str().unwrap_or_default();
                if name != "hits" {
                    metric_opts.push((name.to_string(), name.to_string()));
                }
            }
        }
        for a in ctx.get("/applications").await.body.as_array().into_iter().flatten() {
            if a["product"].as_str() == Some(p.as_str()) {
                let name = a["name"].as_str().unwrap_or_default();
                app_opts.push((name.to_string(), name.to_string()));
            }
        }
    }
    metric_opts.extend(WEBSOCKET.iter().map(|(v, l)| (v.to_string(), l.to_string())));
    let product_opts: Vec<(String, String)> =
        products.iter().filter_map(|p| p["system_name"].as_str()).map(|n| (n.to_string(), n.to_string())).collect();
    let range_opts: Vec<(String, String)> = RANGES.iter().map(|(v, l, _)| (v.to_string(), l.to_string())).collect();
    let filters = format!(
        r#"<form method="get" action="/analytics" class="card">{}{}{}{}<button type="submit">Show</button></form>"#,
        html::select("Product", "product", &product_opts, product.as_deref().unwrap_or_default()),
        html::select("Application", "application", &app_opts, application.unwrap_or_default()),
        html::select("Metric", "metric", &metric_opts, metric),
        html::select("Period", "granularity", &range_opts, granularity),
    );
    let Some(product) = product else {
        let page = Page::new("Analytics", "Analytics", &ctx.session.csrf).para("No products yet.");
        return page.render().into_response();
    };
    let span = RANGES.iter().find(|r| r.0 == granularity).map_or(86_400, |r| r.2);
    let mut query = format!(
        "/analytics/usage?product={}&metric={}&granularity={granularity}",
        html::url_encode(&product),
        html::url_encode(metric)
    );
    if let Some(a) = application {
        let _ = write!(query, "&application={}", html::url_encode(a));
    }
    let answer = ctx.get(&query).await;
    let body = if answer.ok() {
        let until = answer.body["until"].as_i64().unwrap_or(0);
        chart(&answer.body, until - span, until, granularity, metric)
    } else {
        format!(r#"<p class="error" role="alert">{}</p>"#, esc(&answer.error().0))
    };
    Page::new("Analytics", "Analytics", &ctx.session.csrf).raw(filters).raw(body).render().into_response()
}

/// Bars for every bucket between `since` and `until` (empty buckets drawn as zero).
fn chart(usage: &Value, since: i64, until: i64, granularity: &str, metric: &str) -> String {
    let step = match granularity {
        "minute" => 60,
        "day" => 86_400,
        _ => 3600,
    };
    let values: HashMap<i64, i64> = usage["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["at"].as_i64()?, v["value"].as_i64()?)))
        .collect();
    let first = since - since.rem_euclid(step) + step;
    let buckets: Vec<(i64, i64)> = (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= until)
        .map(|t| (t, *values.get(&t).unwrap_or(&0)))
        .collect();
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let total = usage["total"].as_i64().unwrap_or(0);
    let (w, h) = (960.0, 240.0);
    let bar = w / buckets.len().max(1) as f64;
    let mut svg = format!(
        r##"<svg viewBox="0 0 {w} {h2}" width="100%" role="img" aria-labelledby="chart-title"><title id="chart-title">{metric}: {total} in all, at most {max} per {granularity}</title><line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#8a96a3"/>"##,
        h2 = h + 20.0,
        metric = esc(metric),
    );
    for (i, (_, v)) in buckets.iter().enumerate() {
        let bh = (*v as f64 / max as f64) * (h - 10.0);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#0b5cad"/>"##,
            i as f64 * bar + 1.0,
            h - bh,
            (bar - 2.0).max(1.0),
            bh
        );
    }
    let _ = write!(
        svg,
        r##"<text x="0" y="{}" font-size="12" fill="#4a5560">{}</text><text x="{w}" y="{}" font-size="12" fill="#4a5560" text-anchor="end">{}</text></svg>"##,
        h + 16.0,
        html::time(&serde_json::json!(first * 1000)),
        h + 16.0,
        html::time(&serde_json::json!(until * 1000))
    );
    let rows: Vec<Vec<String>> = buckets
        .iter()
        .filter(|b| b.1 > 0)
        .map(|(t, v)| vec![html::time(&serde_json::json!(t * 1000)), v.to_string()])
        .collect();
    format!(
        "<p><strong>{total}</strong> in this period; the busiest {granularity} had <strong>{max}</strong>.</p>",
        max = buckets.iter().map(|b| b.1).max().unwrap_or(0)
    ) + &svg
        + &html::table("Non-empty buckets", &["From", "Value"], &rows)
}
