//! The dashboard, the console's first page: one product's last hour in each
//! environment — requests per minute by status class, WebSocket messages per minute,
//! WebSockets open now, responses by class — the applications with the most traffic
//! and those nearest to a limit. The panel is HTML made here from the admin API's
//! `GET /analytics/dashboard`; the page's script fetches it again every few seconds
//! (`/dashboard/panel`), so it follows live traffic without a reload.

use super::chart::{self, Chart, Series, number};
use super::html::{Markup, Page, html, url_encode};
use super::{Answer, Console, Ctx, list, s};
use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::collections::HashMap;

/// How often the page fetches the panel again, in milliseconds.
const REFRESH_MS: u64 = 5_000;

pub fn routes() -> Router<Console> {
    Router::new().route("/", get(dashboard)).route("/dashboard/panel", get(panel))
}

const CLASSES: [(&str, &str); 5] = [
    ("1xx", "WebSocket upgrades (1xx)"),
    ("2xx", "success (2xx)"),
    ("3xx", "redirects (3xx)"),
    ("4xx", "refused (4xx)"),
    ("5xx", "failed (5xx)"),
];

/// The product shown: the one asked for, else the first.
async fn chosen(ctx: &Ctx, q: &HashMap<String, String>) -> (Vec<Value>, Option<String>) {
    let products = list(&ctx.get("/products").await);
    let asked = q.get("product").filter(|p| !p.is_empty()).cloned();
    let product = asked.or_else(|| products.first().map(|p| s(p, "system_name").to_string()));
    (products, product)
}

async fn dashboard(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    let (products, product) = chosen(&ctx, &q).await;
    let page = Page::new("Dashboard", "Dashboard", &ctx.session.csrf);
    let Some(product) = product else {
        return page
            .push(html! {
                p.empty { "No products yet, so no traffic to show. " a href="/products/new" { "Create a product" } " to start." }
            })
            .into_response();
    };
    let answer = ctx.get(&format!("/analytics/dashboard?product={}", url_encode(&product))).await;
    page.push(html! {
        form.filters method="get" action="/" {
            div.field {
                label for="f-product" { "Product" }
                select #f-product name="product" data-autosubmit {
                    @for p in &products {
                        option value=(s(p, "system_name")) selected[s(p, "system_name") == product] {
                            (p["name"].as_str().unwrap_or(s(p, "system_name")))
                        }
                    }
                }
            }
            noscript { button type="submit" { "Show" } }
        }
        div #dashboard data-src={ "/dashboard/panel?product=" (url_encode(&product)) } data-refresh-ms=(REFRESH_MS) {
            (panel_of(&answer, &product))
        }
    })
    .into_response()
}

async fn panel(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    let (_, product) = chosen(&ctx, &q).await;
    let Some(product) = product else { return html! { p.empty { "No products yet." } }.into_response() };
    let answer = ctx.get(&format!("/analytics/dashboard?product={}", url_encode(&product))).await;
    panel_of(&answer, &product).into_response()
}

/// Seconds (from milliseconds), rounded, for "3 s ago".
fn secs(ms: &Value) -> String {
    ms.as_i64().map_or_else(|| "—".to_string(), |ms| format!("{} s", (ms + 500) / 1000))
}

fn panel_of(answer: &Answer, product: &str) -> Markup {
    if !answer.ok() {
        return html! { p.error role="alert" { (answer.error().0) } };
    }
    let d = &answer.body;
    let now = d["now"].as_i64().unwrap_or(0);
    let nodes = &d["nodes"];
    let reporting = nodes["reporting"].as_u64().unwrap_or(0);
    html! {
        p.freshness {
            "Updated " (super::html::time(&serde_json::json!(now * 1000))) ". "
            @if reporting == 0 {
                strong { "No gateway node has reported in the last 30 s" } ": the figures below may be stale."
            } @else {
                (reporting) " gateway node" @if reporting != 1 { "s" } " reporting; the newest report is "
                (secs(&nodes["newest_report_ms"])) " old, the oldest " (secs(&nodes["oldest_report_ms"])) ". "
                "Nodes write every " (nodes["flush_seconds"]) " s, so the figures may be up to "
                (nodes["flush_seconds"].as_i64().unwrap_or(5) + (nodes["oldest_report_ms"].as_i64().unwrap_or(0) + 999) / 1000)
                " s behind."
            }
        }
        div.environments {
            @for env in ["production", "staging"] {
                (environment(product, env, &d["environments"][env]))
            }
        }
        div.columns {
            section {
                h2 { "Top applications, last hour" }
                @let top = d["top_applications"].as_array().cloned().unwrap_or_default();
                @if top.is_empty() {
                    p.empty { "No application has called this product in the last hour." }
                } @else {
                    table {
                        caption { "By hits, both environments" }
                        thead { tr { th scope="col" { "Application" } th scope="col" { "Account" } th scope="col" { "Hits" } } }
                        tbody {
                            @for a in &top {
                                tr { td { (s(a, "application")) } td { (s(a, "account")) } td.num { (number(a["hits"].as_i64().unwrap_or(0))) } }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Nearest to a limit" }
                @let near = d["nearest_limits"].as_array().cloned().unwrap_or_default();
                @if near.is_empty() {
                    p.empty { "No application with traffic in the last day is using any of its limits." }
                } @else {
                    table {
                        caption { "Usage in the current period, from the counters" }
                        thead { tr { th scope="col" { "Application" } th scope="col" { "Limit" } th scope="col" { "Used" } } }
                        tbody {
                            @for l in &near {
                                @let (current, value) = (l["current"].as_u64().unwrap_or(0), l["value"].as_u64().unwrap_or(0));
                                tr {
                                    td { a href={ "/applications/" (l["application_id"]) } { (s(l, "application")) } }
                                    td { code { (s(l, "metric")) } " per " (s(l, "period")) }
                                    td {
                                        meter min="0" max=(value.max(1)) value=(current.min(value.max(1))) low=(value * 8 / 10) high=(value * 95 / 100)
                                            aria-label={ (s(l, "application")) ": " (s(l, "metric")) " per " (s(l, "period")) } {}
                                        " " (number(current as i64)) " of " (number(value as i64))
                                        " (" ((l["ratio"].as_f64().unwrap_or(0.0) * 100.0).round()) " %)"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn environment(product: &str, env: &str, e: &Value) -> Markup {
    let minutes = e["minutes"].as_array().cloned().unwrap_or_default();
    let buckets: Vec<i64> = minutes.iter().map(|m| m["at"].as_i64().unwrap_or(0)).collect();
    let class_series = CLASSES
        .iter()
        .map(|(c, label)| Series {
            label,
            class: match *c {
                "1xx" => "s-1xx",
                "2xx" => "s-2xx",
                "3xx" => "s-3xx",
                "4xx" => "s-4xx",
                _ => "s-5xx",
            },
            values: minutes.iter().map(|m| m["responses"][c].as_i64().unwrap_or(0)).collect(),
        })
        .collect();
    let title = if env == "production" { "Production" } else { "Staging" };
    let requests_title = format!("{title}: requests");
    let messages_title = format!("{title}: WebSocket messages");
    let requests = Chart {
        title: &requests_title,
        unit: "requests per minute",
        buckets: buckets.clone(),
        step: 60,
        series: class_series,
        empty: "No requests in the last hour on this gateway.",
    };
    let messages = Chart {
        title: &messages_title,
        unit: "messages per minute",
        buckets,
        step: 60,
        series: vec![
            Series {
                label: "from clients",
                class: "s-in",
                values: minutes.iter().map(|m| m["messages_from_clients"].as_i64().unwrap_or(0)).collect(),
            },
            Series {
                label: "from backends",
                class: "s-out",
                values: minutes.iter().map(|m| m["messages_from_backends"].as_i64().unwrap_or(0)).collect(),
            },
        ],
        empty: "No WebSocket messages in the last hour on this gateway.",
    };
    html! {
        section.environment aria-labelledby={ "env-" (env) } {
            h2 id={ "env-" (env) } { (title) " " span.hint { "product " code { (product) } } }
            dl.figures {
                div { dt { "WebSockets open now" } dd data-figure={ (env) "-open" } { (number(e["open_websockets"].as_i64().unwrap_or(0))) } }
                div { dt { "Requests, last hour" } dd data-figure={ (env) "-requests" } { (number(e["requests"].as_i64().unwrap_or(0))) } }
                div {
                    dt { "WebSocket messages, last hour" }
                    dd data-figure={ (env) "-messages" } {
                        (number(e["messages_from_clients"].as_i64().unwrap_or(0) + e["messages_from_backends"].as_i64().unwrap_or(0)))
                    }
                }
            }
            table.classes {
                caption { "Responses by status class, last hour" }
                thead { tr { @for (c, _) in CLASSES { th scope="col" { (c) } } } }
                tbody { tr { @for (c, _) in CLASSES { td.num data-figure={ (env) "-" (c) } { (number(e["responses"][c].as_i64().unwrap_or(0))) } } } }
            }
            (chart::bars(&requests))
            (chart::bars(&messages))
        }
    }
}
