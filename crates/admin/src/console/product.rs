//! A product's own pages: backend usages, metrics and methods, mapping rules,
//! application plans and their limits — each listed, added, edited and deleted.

use super::html::{self, Field, Markup, code, html, table, url_encode};
use super::pages::{base, tab_page};
use super::{Answer, Console, Ctx, Form, err_pair, list, s};
use axum::Router;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/products/{p}/backend_usages", get(usages).post(usage_add))
        .route("/products/{p}/metrics", get(metrics).post(metric_add))
        .route("/products/{p}/methods", post(method_add))
        .route("/products/{p}/{kind}/{id}/edit", get(metric_edit).post(metric_save))
        .route("/products/{p}/mapping_rules", get(rules).post(rule_add))
        .route("/products/{p}/mapping_rules/{id}", get(rule_edit).post(rule_save))
        .route("/products/{p}/mapping_rules/{id}/move", post(rule_move))
        .route("/check/pattern", get(check_pattern))
        .route("/products/{p}/plans", get(plans).post(plan_add))
        .route("/products/{p}/plans/{plan}", get(plan).post(plan_save))
        .route("/products/{p}/plans/{plan}/limits", post(limit_add))
        .route("/products/{p}/plans/{plan}/limits/{id}", get(limit_edit).post(limit_save))
        .route("/products/{p}/plans/{plan}/limits/{id}/delete", post(limit_delete))
        // Deleting any nested item: `kind` is the API's collection name.
        .route("/products/{p}/{kind}/{id}/delete", post(nested_delete))
}

type ApiErr = Option<(String, Option<String>)>;

/// After a form: back to `to` on success, or the page again with the API's error.
async fn after(answer: Answer, to: String, again: impl AsyncFnOnce(ApiErr) -> Response) -> Response {
    if answer.ok() { Redirect::to(&to).into_response() } else { again(Some(answer.error())).await }
}

fn delete_button(ctx: &Ctx, p: &str, kind: &str, id: &Value, what: &str) -> Markup {
    html::danger_button(
        &format!("{}/{kind}/{id}/delete", base(p)),
        &ctx.session.csrf,
        "Delete",
        &format!("Delete this {what}? This cannot be undone."),
    )
}

async fn nested_delete(ctx: Ctx, Path((p, kind, id)): Path<(String, String, i64)>, _form: Form) -> Response {
    let (api_kind, back) = match kind.as_str() {
        "backend_usages" => ("backend_usages", "backend_usages"),
        "metrics" => ("metrics", "metrics"),
        "methods" => ("methods", "metrics"),
        "mapping_rules" => ("mapping_rules", "mapping_rules"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let answer = ctx.api(Method::DELETE, &format!("{}/{api_kind}/{id}", base(&p)), None).await;
    if answer.ok() {
        return Redirect::to(&format!("{}/{back}", base(&p))).into_response();
    }
    tab_page(&ctx, &p, "Overview", Some(&answer.error().0), html! {})
}

// ------------------------------------------------------------------ backend usages

async fn usages(ctx: Ctx, Path(p): Path<String>) -> Response {
    usages_page(&ctx, &p, None, None).await
}

async fn usages_page(ctx: &Ctx, p: &str, form: Option<&Form>, error: ApiErr) -> Response {
    let current = ctx.get(&format!("{}/backend_usages", base(p))).await;
    let backends = ctx.get("/backends").await;
    let rows = list(&current)
        .iter()
        .map(|u| {
            vec![
                html::link(&format!("/backends/{}", url_encode(s(u, "backend"))), s(u, "backend")),
                code(s(u, "path")),
                delete_button(ctx, p, "backend_usages", &u["id"], "backend usage"),
            ]
        })
        .collect();
    let options: Vec<(String, String)> =
        list(&backends).iter().map(|b| (s(b, "system_name").to_string(), s(b, "system_name").to_string())).collect();
    let chosen = form.and_then(|f| f.get("backend")).unwrap_or_default();
    let path = form.and_then(|f| f.get("path")).unwrap_or("/");
    let fields = html! {
        (html::select("Backend", "backend", &options, chosen))
        (Field::text("Path", "path", path)
            .required()
            .hint("Requests under this public path go to the backend (the path is removed, the backend's own path prepended). The longest matching path wins.")
            .html(err_pair(&error)))
    };
    let content = html! {
        (table("Backends used", &["Backend", "Public path", "Actions"], rows))
        h2 { "Add a backend" }
        @if options.is_empty() {
            p { "Create a backend first: " a href="/backends/new" { "Create a backend" } "." }
        } @else {
            (html::form(&format!("{}/backend_usages", base(p)), &ctx.session.csrf, fields, "Add backend"))
        }
    };
    tab_page(ctx, p, "Backends", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn usage_add(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let body =
        json!({ "backend": form.get("backend").unwrap_or_default(), "path": form.get("path").unwrap_or_default() });
    let answer = ctx.api(Method::POST, &format!("{}/backend_usages", base(&p)), Some(&body)).await;
    after(answer, format!("{}/backend_usages", base(&p)), async |e| usages_page(&ctx, &p, Some(&form), e).await).await
}

// ------------------------------------------------------------------ metrics & methods

async fn metrics(ctx: Ctx, Path(p): Path<String>) -> Response {
    metrics_page(&ctx, &p, None, None).await
}

async fn metrics_page(ctx: &Ctx, p: &str, form: Option<&Form>, error: ApiErr) -> Response {
    let ms = list(&ctx.get(&format!("{}/metrics", base(p))).await);
    let ds = list(&ctx.get(&format!("{}/methods", base(p))).await);
    let row = |m: &Value, kind: &str| {
        vec![
            code(s(m, "system_name")),
            html! { (s(m, "friendly_name")) },
            html! { (s(m, "unit")) },
            html! {
                a.action href={ (base(p)) "/" (kind) "/" (m["id"]) "/edit" } aria-label={ "Edit " (s(m, "system_name")) } { "Edit" }
                " "
                @if s(m, "system_name") != "hits" { (delete_button(ctx, p, kind, &m["id"], &kind[..kind.len() - 1])) }
            },
        ]
    };
    let mut metric_rows: Vec<Vec<Markup>> = Vec::new();
    // `hits` exists in every product, declared or not (3scale's default metric).
    if !ms.iter().any(|m| s(m, "system_name") == "hits") {
        metric_rows.push(vec![
            code("hits"),
            html! { "Hits" },
            html! { "hit" },
            html! { span.hint { "built in: counts every request, and every method" } },
        ]);
    }
    metric_rows.extend(ms.iter().map(|m| row(m, "metrics")));
    let method_rows: Vec<Vec<Markup>> = ds.iter().map(|m| row(m, "methods")).collect();
    let v = |k: &str| form.and_then(|f| f.get(k)).unwrap_or_default();
    let err = err_pair(&error);
    let metric_form = html! {
        (Field::text("System name", "system_name", v("system_name")).required().html(err))
        (Field::text("Friendly name", "friendly_name", v("friendly_name")).html(err))
        (Field::text("Unit", "unit", v("unit")).hint("e.g. hit, message, byte").html(err))
    };
    let method_form = html! {
        (Field::text("System name", "system_name", "").required().html(None))
        (Field::text("Friendly name", "friendly_name", "").html(None))
    };
    let content = html! {
        p { "Methods count on " code { "hits" } " as well as on themselves; other metrics count alone." }
        (table("Metrics", &["System name", "Friendly name", "Unit", "Actions"], metric_rows))
        (table("Methods", &["System name", "Friendly name", "Unit", "Actions"], method_rows))
        h2 { "Add a metric" }
        (html::form(&format!("{}/metrics", base(p)), &ctx.session.csrf, metric_form, "Add metric"))
        h2 { "Add a method" }
        (html::form(&format!("{}/methods", base(p)), &ctx.session.csrf, method_form, "Add method"))
    };
    tab_page(ctx, p, "Metrics & methods", error.as_ref().map(|e| e.0.as_str()), content)
}

fn named(form: &Form, with_unit: bool) -> Value {
    let mut v = json!({ "system_name": form.get("system_name").unwrap_or_default() });
    for key in ["friendly_name", "description"].into_iter().chain(with_unit.then_some("unit")) {
        if let Some(x) = form.get(key) {
            v[key] = json!(x);
        }
    }
    v
}

async fn metric_add(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let answer = ctx.api(Method::POST, &format!("{}/metrics", base(&p)), Some(&named(&form, true))).await;
    after(answer, format!("{}/metrics", base(&p)), async |e| metrics_page(&ctx, &p, Some(&form), e).await).await
}

async fn method_add(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let answer = ctx.api(Method::POST, &format!("{}/methods", base(&p)), Some(&named(&form, false))).await;
    after(answer, format!("{}/metrics", base(&p)), async |e| metrics_page(&ctx, &p, Some(&form), e).await).await
}

/// `metrics` or `methods`, from a console path segment.
fn metric_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "metrics" => Some("metrics"),
        "methods" => Some("methods"),
        _ => None,
    }
}

async fn metric_edit(ctx: Ctx, Path((p, kind, id)): Path<(String, String, i64)>) -> Response {
    let Some(kind) = metric_kind(&kind) else { return StatusCode::NOT_FOUND.into_response() };
    let current = ctx.get(&format!("{}/{kind}/{id}", base(&p))).await;
    if !current.ok() {
        return tab_page(&ctx, &p, "Metrics & methods", Some(&current.error().0), html! {});
    }
    metric_edit_page(&ctx, &p, kind, id, &current.body, None)
}

fn metric_edit_page(ctx: &Ctx, p: &str, kind: &str, id: i64, m: &Value, error: ApiErr) -> Response {
    let err = err_pair(&error);
    let what = if kind == "methods" { "method" } else { "metric" };
    let fields = html! {
        (Field::text("System name", "system_name", s(m, "system_name"))
            .required()
            .hint("Renaming it is refused while mapping rules, limits or policies use it.")
            .html(err))
        (Field::text("Friendly name", "friendly_name", s(m, "friendly_name")).html(err))
        @if kind == "metrics" { (Field::text("Unit", "unit", s(m, "unit")).hint("e.g. hit, message, byte").html(err)) }
        (Field::text("Description", "description", s(m, "description")).html(err))
    };
    let content = html! {
        h2 { "Edit " (what) " " code { (s(m, "system_name")) } }
        (html::form(&format!("{}/{kind}/{id}/edit", base(p)), &ctx.session.csrf, fields, &format!("Save {what}")))
        p { a href={ (base(p)) "/metrics" } { "Back to metrics and methods" } }
    };
    tab_page(ctx, p, "Metrics & methods", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn metric_save(ctx: Ctx, Path((p, kind, id)): Path<(String, String, i64)>, form: Form) -> Response {
    let Some(kind) = metric_kind(&kind) else { return StatusCode::NOT_FOUND.into_response() };
    let body = named(&form, kind == "metrics");
    let answer = ctx.api(Method::PUT, &format!("{}/{kind}/{id}", base(&p)), Some(&body)).await;
    let to = format!("{}/metrics", base(&p));
    after(answer, to, async |e| metric_edit_page(&ctx, &p, kind, id, &body, e)).await
}

// ------------------------------------------------------------------ mapping rules

const VERBS: [&str; 10] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "ANY"];

/// The metrics and methods of a product, as select options.
pub(super) async fn metric_options(ctx: &Ctx, p: &str) -> Vec<(String, String)> {
    // `hits` exists in every product, listed or not.
    let mut out = vec![("hits".to_string(), "hits (metric)".to_string())];
    for kind in ["metrics", "methods"] {
        for m in list(&ctx.get(&format!("{}/{kind}", base(p))).await) {
            let name = s(&m, "system_name").to_string();
            if name == "hits" {
                continue;
            }
            out.push((name.clone(), format!("{name} ({})", &kind[..kind.len() - 1])));
        }
    }
    out
}

fn rule_fields(rule: &Value, metrics: &[(String, String)], error: &ApiErr) -> Markup {
    let verbs: Vec<(String, String)> = VERBS.iter().map(|v| (v.to_string(), v.to_string())).collect();
    let delta = rule["delta"].as_u64().map_or_else(|| s(rule, "delta").to_string(), |d| d.to_string());
    let delta = if delta.is_empty() { "1".to_string() } else { delta };
    let last = if rule["last"].as_bool().unwrap_or(false) { "true" } else { "" };
    let err = err_pair(error);
    html! {
        (html::select("Verb", "http_method", &verbs, rule["http_method"].as_str().unwrap_or("GET")))
        div data-validate-pattern {
            (Field::text("Pattern", "pattern", s(rule, "pattern"))
                .required()
                .hint("A path from /, with {placeholders}, an optional query (?key={value}) and $ to anchor the end, e.g. /chat/{room}$")
                .html(err))
        }
        (html::select("Metric or method", "metric", metrics, s(rule, "metric")))
        (Field::text("Increment by", "delta", &delta).kind("number").html(err))
        (Field::text("Last (stop matching after this rule)", "last", last).kind("checkbox").html(None))
    }
}

fn rule_from(form: &Form) -> Value {
    let delta = form.get("delta").unwrap_or("1");
    json!({
        "http_method": form.get("http_method").unwrap_or("GET"),
        "pattern": form.get("pattern").unwrap_or_default(),
        "metric": form.get("metric").unwrap_or("hits"),
        "delta": delta.parse::<u64>().map_or_else(|_| json!(delta), |d| json!(d)),
        "last": form.checked("last"),
    })
}

async fn rules(ctx: Ctx, Path(p): Path<String>) -> Response {
    rules_page(&ctx, &p, None, None).await
}

async fn rules_page(ctx: &Ctx, p: &str, form: Option<&Form>, error: ApiErr) -> Response {
    let current = list(&ctx.get(&format!("{}/mapping_rules", base(p))).await);
    let n = current.len();
    let csrf = &ctx.session.csrf;
    let rows = current
        .iter()
        .map(|r| {
            let id = &r["id"];
            let pos = r["position"].as_u64().unwrap_or(0);
            let mv = |to: u64, label: &str, arrow: &str| {
                html! {
                    form.inline method="post" action={ (base(p)) "/mapping_rules/" (id) "/move" } {
                        input type="hidden" name="_csrf" value=(csrf);
                        input type="hidden" name="position" value=(to);
                        button.secondary type="submit" aria-label={ (label) " rule " (pos) } { (arrow) }
                    }
                }
            };
            vec![
                html! { (pos) },
                html! { (s(r, "http_method")) },
                code(s(r, "pattern")),
                html! { code { (s(r, "metric")) } " +" (r["delta"]) },
                html! { @if r["last"].as_bool().unwrap_or(false) { "last" } },
                html! {
                    @if pos > 1 { (mv(pos - 1, "Move up", "↑")) }
                    @if (pos as usize) < n { (mv(pos + 1, "Move down", "↓")) }
                },
                html! {
                    a.action href={ (base(p)) "/mapping_rules/" (id) } aria-label={ "Edit rule " (pos) } { "Edit" }
                    " "
                    (delete_button(ctx, p, "mapping_rules", id, "mapping rule"))
                },
            ]
        })
        .collect();
    let metrics = metric_options(ctx, p).await;
    let draft = form
        .map(rule_from)
        .unwrap_or_else(|| json!({ "http_method": "GET", "pattern": "/", "metric": "hits", "delta": 1 }));
    let content = html! {
        p { "Rules run in order; every rule that matches counts (unless one marked last stops the scan)." }
        (table("Mapping rules", &["#", "Verb", "Pattern", "Counts", "Last", "Order", "Actions"], rows))
        h2 { "Add a mapping rule" }
        (html::form(&format!("{}/mapping_rules", base(p)), csrf, rule_fields(&draft, &metrics, &error), "Add mapping rule"))
    };
    tab_page(ctx, p, "Mapping rules", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn rule_add(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let answer = ctx.api(Method::POST, &format!("{}/mapping_rules", base(&p)), Some(&rule_from(&form))).await;
    after(answer, format!("{}/mapping_rules", base(&p)), async |e| rules_page(&ctx, &p, Some(&form), e).await).await
}

async fn rule_edit(ctx: Ctx, Path((p, id)): Path<(String, i64)>) -> Response {
    let rule = ctx.get(&format!("{}/mapping_rules/{id}", base(&p))).await;
    if !rule.ok() {
        return tab_page(&ctx, &p, "Mapping rules", Some(&rule.error().0), html! {});
    }
    rule_edit_page(&ctx, &p, id, &rule.body, None).await
}

async fn rule_edit_page(ctx: &Ctx, p: &str, id: i64, rule: &Value, error: ApiErr) -> Response {
    let metrics = metric_options(ctx, p).await;
    let action = format!("{}/mapping_rules/{id}", base(p));
    let content = html::form(&action, &ctx.session.csrf, rule_fields(rule, &metrics, &error), "Save mapping rule");
    tab_page(ctx, p, "Mapping rules", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn rule_save(ctx: Ctx, Path((p, id)): Path<(String, i64)>, form: Form) -> Response {
    let rule = rule_from(&form);
    let answer = ctx.api(Method::PUT, &format!("{}/mapping_rules/{id}", base(&p)), Some(&rule)).await;
    after(answer, format!("{}/mapping_rules", base(&p)), async |e| rule_edit_page(&ctx, &p, id, &rule, e).await).await
}

async fn rule_move(ctx: Ctx, Path((p, id)): Path<(String, i64)>, form: Form) -> Response {
    let path = format!("{}/mapping_rules/{id}", base(&p));
    let rule = ctx.get(&path).await;
    let position = form.get("position").and_then(|x| x.parse::<u64>().ok()).unwrap_or(1);
    let mut body = rule.body.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("id");
        m.remove("position");
    }
    let answer = ctx.api(Method::PUT, &format!("{path}?position={position}"), Some(&body)).await;
    after(answer, format!("{}/mapping_rules", base(&p)), async |e| rules_page(&ctx, &p, None, e).await).await
}

// ------------------------------------------------------------------ plans & limits

const PERIODS: [&str; 7] = ["eternity", "year", "month", "week", "day", "hour", "minute"];

async fn plans(ctx: Ctx, Path(p): Path<String>) -> Response {
    plans_page(&ctx, &p, None, None).await
}

async fn plans_page(ctx: &Ctx, p: &str, form: Option<&Form>, error: ApiErr) -> Response {
    let current = list(&ctx.get(&format!("{}/application_plans", base(p))).await);
    let rows = current
        .iter()
        .map(|pl| {
            let name = s(pl, "system_name");
            vec![
                html::link(&format!("{}/plans/{}", base(p), url_encode(name)), pl["name"].as_str().unwrap_or(name)),
                html! { (pl["limits"].as_array().map_or(0, Vec::len)) },
                html! { (pl["max_connections"].as_u64().map_or_else(|| "unlimited".into(), |n| n.to_string())) },
            ]
        })
        .collect();
    let v = |k: &str| form.and_then(|f| f.get(k)).unwrap_or_default();
    let err = err_pair(&error);
    let fields = html! {
        (Field::text("System name", "system_name", v("system_name")).required().html(err))
        (Field::text("Name", "name", v("name")).html(err))
        (Field::text("Max WebSocket connections", "max_connections", v("max_connections"))
            .kind("number")
            .placeholder("unlimited")
            .hint("Concurrent WebSockets per application; blank for no cap.")
            .html(err))
    };
    let content = html! {
        (table("Application plans", &["Plan", "Limits", "Max connections"], rows))
        h2 { "Create an application plan" }
        (html::form(&format!("{}/plans", base(p)), &ctx.session.csrf, fields, "Create application plan"))
    };
    tab_page(ctx, p, "Application plans", error.as_ref().map(|e| e.0.as_str()), content)
}

fn number_or_text(x: &str) -> Value {
    x.parse::<u64>().map_or_else(|_| json!(x), |n| json!(n))
}

async fn plan_add(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let mut body = json!({ "system_name": form.get("system_name").unwrap_or_default() });
    if let Some(n) = form.get("name") {
        body["name"] = json!(n);
    }
    if let Some(m) = form.get("max_connections") {
        body["max_connections"] = number_or_text(m);
    }
    let answer = ctx.api(Method::POST, &format!("{}/application_plans", base(&p)), Some(&body)).await;
    let to = format!("{}/plans/{}", base(&p), url_encode(form.get("system_name").unwrap_or_default()));
    after(answer, to, async |e| plans_page(&ctx, &p, Some(&form), e).await).await
}

async fn plan(ctx: Ctx, Path((p, plan)): Path<(String, String)>) -> Response {
    plan_page(&ctx, &p, &plan, None).await
}

fn limit_fields(metrics: &[(String, String)], l: &Value, err: Option<(&str, &str)>) -> Markup {
    let periods: Vec<(String, String)> = PERIODS.iter().map(|x| (x.to_string(), x.to_string())).collect();
    let value = l["value"].as_u64().map(|v| v.to_string()).or_else(|| l["value"].as_str().map(str::to_string));
    let value = value.unwrap_or_default();
    html! {
        (html::select("Metric or method", "metric", metrics, l["metric"].as_str().unwrap_or("hits")))
        (html::select_with("Period", "period", &periods, l["period"].as_str().unwrap_or("minute"),
            "Calendar-aligned in UTC; a week starts on Monday; eternity never resets."))
        (Field::text("Max value", "value", &value).kind("number").required()
            .hint("The most the period may count; 0 blocks the metric.").html(err))
    }
}

async fn plan_page(ctx: &Ctx, p: &str, plan: &str, error: ApiErr) -> Response {
    plan_page_with(ctx, p, plan, &json!({}), error).await
}

/// The plan's page; `limit` fills the new-limit form (what was typed, after a refusal).
async fn plan_page_with(ctx: &Ctx, p: &str, plan: &str, limit: &Value, error: ApiErr) -> Response {
    let path = format!("{}/application_plans/{}", base(p), url_encode(plan));
    let current = ctx.get(&path).await;
    if !current.ok() {
        return tab_page(ctx, p, "Application plans", Some(&current.error().0), html! {});
    }
    let limits = list(&ctx.get(&format!("{path}/limits")).await);
    let here = format!("{}/plans/{}", base(p), url_encode(plan));
    let csrf = &ctx.session.csrf;
    let rows = limits
        .iter()
        .map(|l| {
            vec![
                code(s(l, "metric")),
                html! { (s(l, "period")) },
                html! { (l["value"]) },
                html! {
                    a.action href={ (here) "/limits/" (l["id"]) } aria-label={ "Edit the " (s(l, "metric")) " limit per " (s(l, "period")) } { "Edit" }
                    " "
                    (html::danger_button(&format!("{here}/limits/{}/delete", l["id"]), csrf, "Delete",
                        "Delete this limit? Applications on the plan are no longer limited on it."))
                },
            ]
        })
        .collect();
    let err = err_pair(&error);
    let settings = html! {
        (Field::text("Name", "name", s(&current.body, "name")).html(err))
        (Field::text("Max WebSocket connections", "max_connections",
            &current.body["max_connections"].as_u64().map(|n| n.to_string()).unwrap_or_default())
            .kind("number")
            .placeholder("unlimited")
            .hint("Concurrent WebSockets per application; blank for no cap.")
            .html(err))
    };
    let metrics = metric_options(ctx, p).await;
    let content = html! {
        h2 { "Plan " (plan) }
        (html::form(&here, csrf, settings, "Save plan"))
        (table("Usage limits", &["Metric", "Period", "Max", "Actions"], rows))
        h2 { "Add a usage limit" }
        (html::form(&format!("{here}/limits"), csrf, limit_fields(&metrics, limit, err), "Add limit"))
    };
    tab_page(ctx, p, "Application plans", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn plan_save(ctx: Ctx, Path((p, plan)): Path<(String, String)>, form: Form) -> Response {
    let path = format!("{}/application_plans/{}", base(&p), url_encode(&plan));
    let mut body = ctx.get(&path).await.body;
    if let Some(m) = body.as_object_mut() {
        m.remove("id");
        match form.get("name") {
            Some(n) => m.insert("name".into(), json!(n)),
            None => m.remove("name"),
        };
        match form.get("max_connections") {
            Some(n) => m.insert("max_connections".into(), number_or_text(n)),
            None => m.remove("max_connections"),
        };
    }
    let answer = ctx.api(Method::PUT, &path, Some(&body)).await;
    let here = format!("{}/plans/{}", base(&p), url_encode(&plan));
    after(answer, here, async |e| plan_page(&ctx, &p, &plan, e).await).await
}

fn limit_from(form: &Form) -> Value {
    json!({
        "metric": form.get("metric").unwrap_or("hits"),
        "period": form.get("period").unwrap_or("minute"),
        "value": number_or_text(form.get("value").unwrap_or_default()),
    })
}

async fn limit_add(ctx: Ctx, Path((p, plan)): Path<(String, String)>, form: Form) -> Response {
    let path = format!("{}/application_plans/{}/limits", base(&p), url_encode(&plan));
    let limit = limit_from(&form);
    let answer = ctx.api(Method::POST, &path, Some(&limit)).await;
    let here = format!("{}/plans/{}", base(&p), url_encode(&plan));
    after(answer, here, async |e| plan_page_with(&ctx, &p, &plan, &limit, e).await).await
}

async fn limit_edit(ctx: Ctx, Path((p, plan, id)): Path<(String, String, i64)>) -> Response {
    let path = format!("{}/application_plans/{}/limits/{id}", base(&p), url_encode(&plan));
    let current = ctx.get(&path).await;
    if !current.ok() {
        return tab_page(&ctx, &p, "Application plans", Some(&current.error().0), html! {});
    }
    limit_edit_page(&ctx, &p, &plan, id, &current.body, None).await
}

async fn limit_edit_page(ctx: &Ctx, p: &str, plan: &str, id: i64, l: &Value, error: ApiErr) -> Response {
    let metrics = metric_options(ctx, p).await;
    let here = format!("{}/plans/{}", base(p), url_encode(plan));
    let content = html! {
        h2 { "Edit a usage limit of plan " (plan) }
        (html::form(&format!("{here}/limits/{id}"), &ctx.session.csrf, limit_fields(&metrics, l, err_pair(&error)), "Save limit"))
        p { a href=(here) { "Back to the plan" } }
    };
    tab_page(ctx, p, "Application plans", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn limit_save(ctx: Ctx, Path((p, plan, id)): Path<(String, String, i64)>, form: Form) -> Response {
    let path = format!("{}/application_plans/{}/limits/{id}", base(&p), url_encode(&plan));
    let body = limit_from(&form);
    let answer = ctx.api(Method::PUT, &path, Some(&body)).await;
    let here = format!("{}/plans/{}", base(&p), url_encode(&plan));
    after(answer, here, async |e| limit_edit_page(&ctx, &p, &plan, id, &body, e).await).await
}

async fn limit_delete(ctx: Ctx, Path((p, plan, id)): Path<(String, String, i64)>, _form: Form) -> Response {
    let path = format!("{}/application_plans/{}/limits/{id}", base(&p), url_encode(&plan));
    let answer = ctx.api(Method::DELETE, &path, None).await;
    let here = format!("{}/plans/{}", base(&p), url_encode(&plan));
    after(answer, here, async |e| plan_page(&ctx, &p, &plan, e).await).await
}

#[derive(serde::Deserialize)]
struct PatternQuery {
    pattern: String,
}

/// Checks a mapping rule pattern with the gateway's own parser, for the form to show
/// as the operator types: `{"ok": true}` or `{"ok": false, "error": "..."}`.
async fn check_pattern(_ctx: Ctx, axum::extract::Query(q): axum::extract::Query<PatternQuery>) -> axum::Json<Value> {
    axum::Json(match tollgate_model::pattern::Pattern::parse(&q.pattern) {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e }),
    })
}
