//! Accounts and their applications: create, show keys and where the application stands
//! against its limits, regenerate a key, suspend and resume, change plan.

use super::html::{self, Field, Markup, Page, code, html, table, url_encode};
use super::{Console, Ctx, Form, err_pair, list, s};
use axum::Router;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/accounts", get(accounts).post(account_add))
        .route("/accounts/{a}", get(account).post(app_add))
        .route("/applications", get(applications))
        .route("/applications/{app}", get(application))
        .route("/applications/{app}/{action}", post(app_action))
}

fn page(ctx: &Ctx, title: String, section: &'static str, error: Option<&str>, content: Markup) -> Response {
    Page::new(title, section, &ctx.session.csrf).error(error).push(content).into_response()
}

/// A page under a section, with its breadcrumbs: `crumbs` are (label, href).
fn page_under(
    ctx: &Ctx,
    title: String,
    section: &'static str,
    crumbs: &[(&str, String)],
    error: Option<&str>,
    content: Markup,
) -> Response {
    let mut page = Page::new(title, section, &ctx.session.csrf);
    for (label, href) in crumbs {
        page = page.crumb(label, href);
    }
    page.error(error).push(content).into_response()
}

async fn accounts(ctx: Ctx) -> Response {
    accounts_page(&ctx, None, None).await
}

async fn accounts_page(ctx: &Ctx, form: Option<&Form>, error: Option<(String, Option<String>)>) -> Response {
    let apps = list(&ctx.get("/applications").await);
    let rows = list(&ctx.get("/accounts").await)
        .iter()
        .map(|a| {
            let name = s(a, "name");
            let count = apps.iter().filter(|x| x["account_id"] == a["id"]).count();
            vec![html::link(&format!("/accounts/{}", url_encode(name)), name), html! { (count) }]
        })
        .collect();
    let name = form.and_then(|f| f.get("name")).unwrap_or_default();
    let fields = Field::text("Name", "name", name)
        .required()
        .hint("The developer or organization that consumes your APIs.")
        .html(err_pair(&error));
    let content = html! {
        (table("Accounts", &["Account", "Applications"], rows))
        h2 { "Create an account" }
        (html::form("/accounts", &ctx.session.csrf, fields, "Create account"))
    };
    page(ctx, "Accounts".into(), "Accounts", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn account_add(ctx: Ctx, form: Form) -> Response {
    let name = form.get("name").unwrap_or_default().to_string();
    let answer = ctx.api(Method::POST, "/accounts", Some(&json!({ "name": name }))).await;
    if answer.ok() {
        return Redirect::to(&format!("/accounts/{}", url_encode(&name))).into_response();
    }
    accounts_page(&ctx, Some(&form), Some(answer.error())).await
}

/// `(product, plan)` pairs for the new-application form.
async fn plan_options(ctx: &Ctx) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in list(&ctx.get("/products").await) {
        let product = s(&p, "system_name");
        for plan in list(&ctx.get(&format!("/products/{}/application_plans", url_encode(product))).await) {
            let plan = s(&plan, "system_name");
            out.push((format!("{product}/{plan}"), format!("{product} — {plan}")));
        }
    }
    out
}

fn app_rows(apps: &[Value]) -> Vec<Vec<Markup>> {
    apps.iter()
        .map(|a| {
            vec![
                html::link(&format!("/applications/{}", a["id"]), s(a, "name")),
                code(s(a, "product")),
                html! { (s(a, "plan")) },
                html! { span class={ "state " (s(a, "state")) } { (s(a, "state")) } },
            ]
        })
        .collect()
}

async fn account(ctx: Ctx, Path(a): Path<String>) -> Response {
    account_page(&ctx, &a, None, None).await
}

async fn account_page(ctx: &Ctx, a: &str, form: Option<&Form>, error: Option<(String, Option<String>)>) -> Response {
    let acct = ctx.get(&format!("/accounts/{}", url_encode(a))).await;
    if !acct.ok() {
        return super::pages::api_failure(ctx, "Accounts", &acct);
    }
    let apps = list(&ctx.get(&format!("/accounts/{}/applications", url_encode(a))).await);
    let plans = plan_options(ctx).await;
    let name = form.and_then(|f| f.get("name")).unwrap_or_default();
    let chosen = form.and_then(|f| f.get("plan")).unwrap_or_default();
    let fields = html! {
        (Field::text("Name", "name", name).required().html(err_pair(&error)))
        (html::select("Product and application plan", "plan", &plans, chosen))
    };
    let content = html! {
        (table("Applications", &["Application", "Product", "Plan", "State"], app_rows(&apps)))
        h2 { "Create an application" }
        p { "Its credentials are generated as the product's authentication mode needs." }
        @if plans.is_empty() {
            p { "Create a product with an application plan first (" a href="/products" { "Products" } ")." }
        } @else {
            (html::form(&format!("/accounts/{}", url_encode(a)), &ctx.session.csrf, fields, "Create application"))
        }
    };
    let crumbs = [("Accounts", "/accounts".to_string())];
    page_under(ctx, format!("Account {a}"), "Accounts", &crumbs, error.as_ref().map(|e| e.0.as_str()), content)
}

async fn app_add(ctx: Ctx, Path(a): Path<String>, form: Form) -> Response {
    let (product, plan) = form.get("plan").and_then(|p| p.split_once('/')).unwrap_or_default();
    let body = json!({ "name": form.get("name").unwrap_or_default(), "product": product, "plan": plan });
    let answer = ctx.api(Method::POST, &format!("/accounts/{}/applications", url_encode(&a)), Some(&body)).await;
    if answer.ok() {
        return Redirect::to(&format!("/applications/{}", answer.body["id"])).into_response();
    }
    account_page(&ctx, &a, Some(&form), Some(answer.error())).await
}

async fn applications(ctx: Ctx) -> Response {
    let apps = list(&ctx.get("/applications").await);
    let content = html! {
        (table("Applications", &["Application", "Product", "Plan", "State"], app_rows(&apps)))
        p { "Applications are created within an account (" a href="/accounts" { "Accounts" } ")." }
    };
    page(&ctx, "Applications".into(), "Applications", None, content)
}

async fn application(ctx: Ctx, Path(app): Path<String>) -> Response {
    application_page(&ctx, &app, None).await
}

/// Where the application stands on each limit of its plan, now.
fn usage_table(usage: &super::Answer) -> Markup {
    if !usage.ok() {
        return html! { p.empty { "Current usage is not available: " (usage.error().0) } };
    }
    let rows = list(usage)
        .iter()
        .map(|l| {
            let (current, max) = (l["current"].as_u64().unwrap_or(0), l["value"].as_u64().unwrap_or(0));
            let pct = current.saturating_mul(100).checked_div(max).map_or(100, |p| p.min(100));
            vec![
                code(s(l, "metric")),
                html! { (s(l, "period")) },
                html! {
                    meter min="0" max=(max.max(1)) value=(current.min(max.max(1))) low=(max * 8 / 10) high=(max * 95 / 100)
                        aria-label={ (s(l, "metric")) " per " (s(l, "period")) } {}
                    " " (current) " of " (max) " (" (pct) " %)"
                },
                html! { @if let Some(at) = l["resets_at"].as_i64() { (html::time(&json!(at * 1000))) } @else { "never" } },
            ]
        })
        .collect();
    table("Usage against the plan's limits", &["Metric", "Period", "Used", "Resets"], rows)
}

async fn application_page(ctx: &Ctx, app: &str, error: Option<(String, Option<String>)>) -> Response {
    // The key the message is about, and the message (for the field that shows it).
    let error_field = error.as_ref().and_then(|(m, f)| Some((f.clone()?, m.clone())));
    let error = error.map(|(m, _)| m);
    let answer = ctx.get(&format!("/applications/{}", url_encode(app))).await;
    if !answer.ok() {
        return super::pages::api_failure(ctx, "Applications", &answer);
    }
    let a = &answer.body;
    let here = format!("/applications/{}", a["id"]);
    let usage = ctx.get(&format!("{here}/usage")).await;
    let csrf = &ctx.session.csrf;
    let regenerate = if a["app_id"].is_string() { "Add an app_key" } else { "Regenerate user_key" };
    let state = s(a, "state");
    let product = s(a, "product");
    let plans: Vec<(String, String)> =
        list(&ctx.get(&format!("/products/{}/application_plans", url_encode(product))).await)
            .iter()
            .map(|p| (s(p, "system_name").to_string(), s(p, "system_name").to_string()))
            .collect();
    let account = list(&ctx.get("/accounts").await).into_iter().find(|x| x["id"] == a["account_id"]);
    let account_name = account.as_ref().map(|x| s(x, "name").to_string()).unwrap_or_default();
    let content = html! {
        p {
            "Account " a href={ "/accounts/" (url_encode(&account_name)) } { (account_name) } " · "
            "Product " a href={ "/products/" (url_encode(product)) } { (product) }
            " · plan " strong { (s(a, "plan")) } " · state " strong class={ "state " (state) } { (state) }
        }
        h2 { "Credentials" }
        dl {
            @if let Some(k) = a["user_key"].as_str() { dt { "user_key" } dd { code { (k) } } }
            @if let Some(id) = a["app_id"].as_str() {
                dt { "app_id" } dd { code { (id) } }
                @for k in a["app_keys"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    dt { "app_key" } dd { code { (k) } }
                }
            }
        }
        @let fingerprints: Vec<&str> = a["client_certificates"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        h3 { "Client certificates" }
        p.hint { "SHA-256 fingerprints of the TLS client certificates that identify this application on a product with "
            code { "authentication.mode: client_certificate" } " (" code { "openssl x509 -noout -fingerprint -sha256 -in CERT" } ")." }
        (html::form(&format!("{here}/client_certificates"), csrf,
            Field::text("Fingerprints, one per line", "client_certificates", &fingerprints.join("\n")).kind("textarea").html(error_field.as_ref().map(|(f, m)| (f.as_str(), m.as_str()))),
            "Save fingerprints"))
        (html::danger_button(&format!("{here}/keys"), csrf, regenerate,
            "Replace the key? Clients using the old one are refused and their WebSockets close."))
        " "
        @if state == "suspended" {
            (html::button(&format!("{here}/resume"), csrf, "Resume", None))
        } @else {
            (html::danger_button(&format!("{here}/suspend"), csrf, "Suspend",
                "Suspend this application? Its requests are refused and its WebSockets close."))
        }
        h2 { "Usage now" }
        (usage_table(&usage))
        h2 { "Change plan" }
        (html::form(&format!("{here}/change_plan"), csrf, html::select("Application plan", "plan", &plans, s(a, "plan")), "Change plan"))
        p {
            a href={ "/products/" (url_encode(product)) "/try?application=" (a["id"]) } { "Try it" }
            " · "
            a href={ "/analytics?product=" (url_encode(product)) "&application=" (url_encode(s(a, "name"))) } { "Analytics" }
        }
    };
    let crumbs = [("Applications", "/applications".to_string())];
    page_under(ctx, format!("Application {}", s(a, "name")), "Applications", &crumbs, error.as_deref(), content)
}

async fn app_action(ctx: Ctx, Path((app, action)): Path<(String, String)>, form: Form) -> Response {
    let path = format!("/applications/{}", url_encode(&app));
    let answer = match action.as_str() {
        "suspend" | "resume" | "keys" => ctx.api(Method::POST, &format!("{path}/{action}"), None).await,
        "change_plan" => {
            ctx.api(
                Method::POST,
                &format!("{path}/change_plan"),
                Some(&json!({ "plan": form.get("plan").unwrap_or_default() })),
            )
            .await
        }
        "client_certificates" => {
            let current = ctx.get(&path).await;
            if !current.ok() {
                return super::pages::api_failure(&ctx, "Applications", &current);
            }
            let mut doc = current.body;
            if let Some(map) = doc.as_object_mut() {
                // The view's own keys are not the application's.
                map.remove("id");
                map.remove("account_id");
                let lines: Vec<&str> = form
                    .get("client_certificates")
                    .unwrap_or_default()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                map.insert("client_certificates".into(), json!(lines));
            }
            ctx.api(Method::PUT, &path, Some(&doc)).await
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if answer.ok() {
        return Redirect::to(&format!("/applications/{}", url_encode(&app))).into_response();
    }
    let (message, field) = answer.error();
    application_page(&ctx, &app, Some((message, field))).await
}
