//! Analytics: usage of one metric over time (minute, hour or day buckets), for a
//! product or one application, as a chart with its numbers; and what WebSockets did in
//! the period — messages and bytes each way, connection-seconds, connections and closes
//! by close code — from the pseudo-metrics every connection records.

use super::chart::{self, Chart, Series, number};
use super::html::{self, Markup, Page, html};
use super::{Console, Ctx, list, s};
use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::collections::HashMap;

pub fn routes() -> Router<Console> {
    Router::new().route("/analytics", get(analytics))
}

/// Pseudo-metrics every WebSocket connection records (see docs/websocket.md).
const WEBSOCKET: [(&str, &str, &str); 6] = [
    ("websocket:connections", "WebSocket connections", "connections"),
    ("websocket:client_messages", "WebSocket messages from clients", "messages"),
    ("websocket:server_messages", "WebSocket messages from backends", "messages"),
    ("websocket:client_bytes", "WebSocket bytes from clients", "bytes"),
    ("websocket:server_bytes", "WebSocket bytes from backends", "bytes"),
    ("websocket:seconds", "WebSocket connection-seconds", "seconds"),
];

const RANGES: [(&str, &str, i64); 3] = [
    ("minute", "Last hour, per minute", 3600),
    ("hour", "Last day, per hour", 86_400),
    ("day", "Last 30 days, per day", 30 * 86_400),
];

/// What a close code means (RFC 6455 §7.4.1, and Tollgate's use of them).
pub fn close_meaning(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away (a server shutting down, a page left)",
        1002 => "protocol error",
        1003 => "unacceptable data type",
        1005 => "closed without a code",
        1006 => "ended without a close frame (connection lost)",
        1007 => "invalid message data (not UTF-8)",
        1008 => "policy violation (limits exceeded, application suspended or re-keyed, token expired)",
        1009 => "message too big (max_message_bytes)",
        1010 => "a needed extension was not negotiated",
        1011 => "server error (the backend or Tollgate failed, or counters unavailable)",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        1015 => "TLS handshake failure",
        3000..=3999 => "registered for libraries and frameworks",
        4000..=4999 => "the application's own code",
        _ => "not a standard code",
    }
}

async fn analytics(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let products = list(&ctx.get("/products").await);
    let product = get("product")
        .map(str::to_string)
        .or_else(|| products.first().and_then(|p| p["system_name"].as_str()).map(str::to_string));
    let metric = get("metric").unwrap_or("hits");
    let granularity = get("granularity").filter(|g| RANGES.iter().any(|r| r.0 == *g)).unwrap_or("hour");
    let application = get("application");
    let page = Page::new("Analytics", "Analytics", &ctx.session.csrf);
    let Some(product) = product else {
        return page
            .push(html! { p.empty { "No products yet: analytics appear once a product has traffic." } })
            .into_response();
    };

    let mut metric_opts = vec![("hits".to_string(), "hits".to_string())];
    for kind in ["metrics", "methods"] {
        for m in list(&ctx.get(&format!("/products/{}/{kind}", html::url_encode(&product))).await) {
            let name = s(&m, "system_name");
            if name != "hits" {
                metric_opts.push((name.to_string(), name.to_string()));
            }
        }
    }
    metric_opts.extend(WEBSOCKET.iter().map(|(v, l, _)| (v.to_string(), l.to_string())));
    let mut app_opts = vec![(String::new(), "All applications".to_string())];
    for a in list(&ctx.get("/applications").await).iter().filter(|a| s(a, "product") == product) {
        app_opts.push((s(a, "name").to_string(), s(a, "name").to_string()));
    }
    let product_opts: Vec<(String, String)> =
        products.iter().map(|p| (s(p, "system_name").to_string(), s(p, "system_name").to_string())).collect();
    let range_opts: Vec<(String, String)> = RANGES.iter().map(|(v, l, _)| (v.to_string(), l.to_string())).collect();
    let filters = html! {
        form.card.filters method="get" action="/analytics" {
            (html::select("Product", "product", &product_opts, &product))
            (html::select("Application", "application", &app_opts, application.unwrap_or_default()))
            (html::select("Metric", "metric", &metric_opts, metric))
            (html::select("Period", "granularity", &range_opts, granularity))
            button type="submit" { "Show" }
        }
    };

    let span = RANGES.iter().find(|r| r.0 == granularity).map_or(86_400, |r| r.2);
    let mut query = format!(
        "/analytics/usage?product={}&metric={}&granularity={granularity}",
        html::url_encode(&product),
        html::url_encode(metric)
    );
    let mut totals_query = format!("/analytics/totals?product={}", html::url_encode(&product));
    if let Some(a) = application {
        query += &format!("&application={}", html::url_encode(a));
        totals_query += &format!("&application={}", html::url_encode(a));
    }
    let answer = ctx.get(&query).await;
    let body = if answer.ok() {
        let until = answer.body["until"].as_i64().unwrap_or(0);
        totals_query += &format!("&since={}&until={until}", until - span);
        let totals = ctx.get(&totals_query).await;
        html! {
            (usage_chart(&answer.body, until - span, until, granularity, metric, application))
            (websocket_summary(&totals.body, application))
        }
    } else {
        html! { p.error role="alert" { (answer.error().0) } }
    };
    page.push(filters).push(body).into_response()
}

/// The unit a metric counts in, for the y axis.
fn unit_of(metric: &str) -> &'static str {
    WEBSOCKET.iter().find(|w| w.0 == metric).map_or(if metric == "hits" { "hits" } else { "calls" }, |w| w.2)
}

/// Bars for every bucket between `since` and `until` (empty buckets drawn as zero).
fn usage_chart(usage: &Value, since: i64, until: i64, granularity: &str, metric: &str, app: Option<&str>) -> Markup {
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
    let buckets: Vec<i64> = (0..).map(|i| first + i * step).take_while(|t| *t < until).collect();
    let series_values: Vec<i64> = buckets.iter().map(|t| *values.get(t).unwrap_or(&0)).collect();
    let max = series_values.iter().copied().max().unwrap_or(0);
    let total = usage["total"].as_i64().unwrap_or(0);
    let unit = format!("{} per {granularity}", unit_of(metric));
    let title = format!("{metric}{}", app.map(|a| format!(" of {a}")).unwrap_or_default());
    let empty = match app {
        Some(a) => format!("{a} recorded no {metric} in this period."),
        None => {
            format!("No {metric} recorded in this period (usage reaches analytics within seconds of each request).")
        }
    };
    html! {
        p { strong { (number(total)) } " in this period; the busiest " (granularity) " had " strong { (number(max)) } "." }
        (chart::bars(&Chart {
            title: &title,
            unit: &unit,
            buckets,
            step,
            series: vec![Series { label: metric, class: "s-2xx", values: series_values }],
            empty: &empty,
        }))
    }
}

/// What WebSockets did in the period, from the totals of the pseudo-metrics.
fn websocket_summary(totals: &Value, app: Option<&str>) -> Markup {
    let t = |m: &str| totals["totals"][m].as_i64().unwrap_or(0);
    let mut closes: Vec<(u16, i64)> = totals["totals"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix("websocket:closes:")?.parse().ok()?, v.as_i64()?)))
        .collect();
    closes.sort();
    let whose = app.map_or_else(|| "all applications".to_string(), str::to_string);
    html! {
        h2 { "WebSockets in this period" }
        @if t("websocket:connections") == 0 && closes.is_empty() {
            p.empty { "No WebSocket connection was opened by " (whose) " in this period." }
        } @else {
            table {
                caption { "WebSocket usage of " (whose) }
                thead { tr { th scope="col" { "" } th scope="col" { "From clients" } th scope="col" { "From backends" } } }
                tbody {
                    tr { th scope="row" { "Messages" } td.num { (number(t("websocket:client_messages"))) } td.num { (number(t("websocket:server_messages"))) } }
                    tr { th scope="row" { "Bytes" } td.num { (number(t("websocket:client_bytes"))) } td.num { (number(t("websocket:server_bytes"))) } }
                }
            }
            p {
                strong { (number(t("websocket:connections"))) } " connections opened, "
                strong { (number(t("websocket:seconds"))) } " connection-seconds."
            }
            @if !closes.is_empty() {
                table {
                    caption { "Closes by close code" }
                    thead { tr { th scope="col" { "Code" } th scope="col" { "Meaning" } th scope="col" { "Closes" } } }
                    tbody {
                        @for (c, n) in &closes {
                            tr { td { code { (c) } } td { (close_meaning(*c)) } td.num { (number(*n)) } }
                        }
                    }
                }
            }
        }
    }
}
