//! The console's pages. Each reads through the admin API and each form writes through
//! it (see the module above): a page is a view of the API's JSON, a form builds the
//! JSON the API takes.

use super::html::{self, Field, Page, esc, link, table, url_encode};
use super::{Console, Ctx, Form, list, logout, s};
use axum::Router;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/products") }))
        .route("/logout", post(logout))
        .route("/backends", get(backends).post(backend_create))
        .route("/backends/new", get(backend_new))
        .route("/backends/{b}", get(backend_edit).post(backend_update))
        .route("/backends/{b}/delete", post(backend_delete))
        .route("/products", get(products).post(product_create))
        .route("/products/new", get(product_new))
        .route("/products/{p}", get(product_overview).post(product_update))
}

/// A page for an API answer that is not a success (404, 500…).
fn api_failure(ctx: &Ctx, section: &'static str, answer: &super::Answer) -> Response {
    let (message, _) = answer.error();
    let status = if answer.status.is_success() { StatusCode::INTERNAL_SERVER_ERROR } else { answer.status };
    (status, Page::new("Not available", section, &ctx.session.csrf).error(Some(&message)).render()).into_response()
}

/// Puts `value` at `key`, or removes the key when the form left it blank.
fn set_opt(map: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    match value {
        Some(v) => map.insert(key.into(), json!(v)),
        None => map.remove(key),
    };
}

// ------------------------------------------------------------------------ backends

async fn backends(ctx: Ctx) -> Response {
    let answer = ctx.get("/backends").await;
    if !answer.ok() {
        return api_failure(&ctx, "Backends", &answer);
    }
    let rows: Vec<Vec<String>> = list(&answer)
        .iter()
        .map(|b| {
            let name = s(b, "system_name");
            vec![
                link(&format!("/backends/{}", url_encode(name)), b["name"].as_str().unwrap_or(name)),
                format!("<code>{}</code>", esc(name)),
                format!("<code>{}</code>", esc(s(b, "private_base_url"))),
            ]
        })
        .collect();
    Page::new("Backends", "Backends", &ctx.session.csrf)
        .para("A backend is a private service Tollgate forwards to: HTTP(S) or WebSocket (ws/wss).")
        .raw(table("Backends", &["Name", "System name", "Private Base URL"], &rows))
        .raw(r#"<p><a href="/backends/new">Create a backend</a></p>"#)
        .render()
        .into_response()
}

/// The backend form, filled from `b` (a backend's JSON), showing `error` if any.
fn backend_form(
    ctx: &Ctx,
    action: &str,
    b: &Value,
    creating: bool,
    error: Option<&(String, Option<String>)>,
) -> String {
    let err = error.and_then(|(m, f)| f.as_deref().map(|f| (f, m.as_str())));
    let tls = &b["tls"];
    let verify = if tls["verify"].as_bool().unwrap_or(true) { "true" } else { "false" };
    let timeout = b["connect_timeout_ms"].as_u64().map(|t| t.to_string()).unwrap_or_default();
    let mut fields = String::new();
    if creating {
        fields += &Field::text("System name", "system_name", s(b, "system_name"))
            .required()
            .hint("Letters, digits, _, - or .; used in paths and the configuration; cannot change later.")
            .html(err);
    }
    fields += &Field::text("Name", "name", s(b, "name")).html(err);
    fields += &Field::text("Description", "description", s(b, "description")).html(err);
    fields += &Field::text("Private Base URL", "private_base_url", s(b, "private_base_url"))
        .required()
        .hint("http://, https://, ws:// or wss://, with an optional path prefix, e.g. wss://echo.internal:8443/api")
        .html(err);
    fields += r#"<fieldset><legend>TLS (https and wss)</legend>"#;
    fields += &Field::text("CA certificate file", "tls.ca_file", s(tls, "ca_file"))
        .hint("Path on the gateway's machine of a PEM file with the CA (or the self-signed certificate) to trust instead of the system roots.")
        .html(err);
    fields += &Field::text("CA certificate (PEM)", "tls.ca_pem", s(tls, "ca_pem"))
        .kind("textarea")
        .hint("Or paste (or upload) the certificate itself; it is stored with the configuration, so every gateway node has it.")
        .html(err)
        .replace("</textarea>", r#"</textarea><input type="file" accept=".pem,.crt,.cer" data-fills="f-tls-ca_pem" aria-label="Upload a CA certificate file">"#);
    fields += &Field::text("Server name", "tls.server_name", s(tls, "server_name"))
        .hint("Name to verify the certificate for, when it differs from the URL's host.")
        .html(err);
    fields += &Field::text("Verify the certificate", "tls.verify", verify).kind("checkbox").html(err);
    if verify == "false" {
        fields += r#"<p class="warning" role="note">Verification is off: anyone on the path to this backend can read and change its traffic. Pin its certificate with a CA file instead.</p>"#;
    }
    fields += "</fieldset>";
    fields += &Field::text("Connect timeout (ms)", "connect_timeout_ms", &timeout).kind("number").html(err);
    html::form(action, &ctx.session.csrf, &fields, if creating { "Create backend" } else { "Save" })
}

/// Applies the backend form's fields to `b` (a backend's JSON).
fn backend_from_form(mut b: Value, form: &Form, creating: bool) -> Value {
    let Some(map) = b.as_object_mut() else { return b };
    map.remove("id");
    if creating {
        set_opt(map, "system_name", form.get("system_name"));
    }
    set_opt(map, "name", form.get("name"));
    set_opt(map, "description", form.get("description"));
    map.insert("private_base_url".into(), json!(form.get("private_base_url").unwrap_or_default()));
    let mut tls = Map::new();
    set_opt(&mut tls, "ca_file", form.get("tls.ca_file"));
    set_opt(&mut tls, "ca_pem", form.get("tls.ca_pem"));
    set_opt(&mut tls, "server_name", form.get("tls.server_name"));
    tls.insert("verify".into(), json!(form.checked("tls.verify")));
    map.insert("tls".into(), Value::Object(tls));
    match form.get("connect_timeout_ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => map.insert("connect_timeout_ms".into(), json!(ms)),
        // Not a number: sent as text, so the API names the field in its error.
        Some(Err(_)) => map.insert("connect_timeout_ms".into(), json!(form.get("connect_timeout_ms"))),
        None => map.remove("connect_timeout_ms"),
    };
    b
}

async fn backend_new(ctx: Ctx) -> Html<String> {
    let blank = json!({ "tls": { "verify": true } });
    Page::new("Create a backend", "Backends", &ctx.session.csrf)
        .crumb("Backends", "/backends")
        .raw(backend_form(&ctx, "/backends", &blank, true, None))
        .render()
}

async fn backend_create(ctx: Ctx, form: Form) -> Response {
    let doc = backend_from_form(json!({}), &form, true);
    let answer = ctx.api(Method::POST, "/backends", Some(&doc)).await;
    if answer.ok() {
        return Redirect::to(&format!("/backends/{}?saved=1", url_encode(s(&doc, "system_name")))).into_response();
    }
    let error = answer.error();
    let page = Page::new("Create a backend", "Backends", &ctx.session.csrf)
        .crumb("Backends", "/backends")
        .error(Some(&error.0))
        .raw(backend_form(&ctx, "/backends", &doc, true, Some(&error)));
    (StatusCode::UNPROCESSABLE_ENTITY, page.render()).into_response()
}

async fn backend_edit(ctx: Ctx, Path(b): Path<String>, query: axum::extract::RawQuery) -> Response {
    let answer = ctx.get(&format!("/backends/{}", url_encode(&b))).await;
    if !answer.ok() {
        return api_failure(&ctx, "Backends", &answer);
    }
    let saved = query.0.is_some_and(|q| q.contains("saved=1"));
    let action = format!("/backends/{}", url_encode(&b));
    let mut page = Page::new(format!("Backend {b}"), "Backends", &ctx.session.csrf).crumb("Backends", "/backends");
    if saved {
        page = page.raw(r#"<p class="notice" role="status">Saved.</p>"#);
    }
    page.raw(backend_form(&ctx, &action, &answer.body, false, None))
        .raw(html::button(
            &format!("{action}/delete"),
            &ctx.session.csrf,
            "Delete backend",
            Some("Delete this backend? Products using it must drop it first."),
        ))
        .render()
        .into_response()
}

async fn backend_update(ctx: Ctx, Path(b): Path<String>, form: Form) -> Response {
    let path = format!("/backends/{}", url_encode(&b));
    let current = ctx.get(&path).await;
    if !current.ok() {
        return api_failure(&ctx, "Backends", &current);
    }
    let doc = backend_from_form(current.body, &form, false);
    let answer = ctx.api(Method::PUT, &path, Some(&doc)).await;
    if answer.ok() {
        return Redirect::to(&format!("{path}?saved=1")).into_response();
    }
    let error = answer.error();
    let page = Page::new(format!("Backend {b}"), "Backends", &ctx.session.csrf)
        .crumb("Backends", "/backends")
        .error(Some(&error.0))
        .raw(backend_form(&ctx, &path, &doc, false, Some(&error)));
    (StatusCode::UNPROCESSABLE_ENTITY, page.render()).into_response()
}

async fn backend_delete(ctx: Ctx, Path(b): Path<String>, _form: Form) -> Response {
    let answer = ctx.api(Method::DELETE, &format!("/backends/{}", url_encode(&b)), None).await;
    if answer.ok() { Redirect::to("/backends").into_response() } else { api_failure(&ctx, "Backends", &answer) }
}

// ------------------------------------------------------------------------ products

async fn products(ctx: Ctx) -> Response {
    let answer = ctx.get("/products").await;
    if !answer.ok() {
        return api_failure(&ctx, "Products", &answer);
    }
    let rows: Vec<Vec<String>> = list(&answer)
        .iter()
        .map(|p| {
            let name = s(p, "system_name");
            vec![
                link(&format!("/products/{}", url_encode(name)), p["name"].as_str().unwrap_or(name)),
                format!("<code>{}</code>", esc(s(p, "staging_public_base_url"))),
                format!("<code>{}</code>", esc(s(p, "production_public_base_url"))),
            ]
        })
        .collect();
    Page::new("Products", "Products", &ctx.session.csrf)
        .para("A product is the API your consumers see: public hostnames for a staging and a production gateway, in front of one or more backends.")
        .raw(table("Products", &["Name", "Staging Public Base URL", "Production Public Base URL"], &rows))
        .raw(r#"<p><a href="/products/new">Create a product</a></p>"#)
        .render()
        .into_response()
}

const AUTH_MODES: [(&str, &str); 2] =
    [("user_key", "API key (user_key)"), ("app_id_app_key", "App ID and App Key pair")];
const LOCATIONS: [(&str, &str); 3] = [
    ("query", "As query parameters (GET) or body parameters"),
    ("headers", "As HTTP headers"),
    ("authorization", "As HTTP Basic authentication or a bearer token"),
];

/// The product's settings form (integration settings of 3scale's product page).
fn product_form(
    ctx: &Ctx,
    action: &str,
    p: &Value,
    creating: bool,
    error: Option<&(String, Option<String>)>,
) -> String {
    let err = error.and_then(|(m, f)| f.as_deref().map(|f| (f, m.as_str())));
    let auth = &p["authentication"];
    let mut fields = String::new();
    if creating {
        fields += &Field::text("System name", "system_name", s(p, "system_name"))
            .required()
            .hint("Letters, digits, _, - or .; cannot change later.")
            .html(err);
    }
    fields += &Field::text("Name", "name", s(p, "name")).html(err);
    fields += &Field::text("Description", "description", s(p, "description")).html(err);
    fields += &Field::text("Staging Public Base URL", "staging_public_base_url", s(p, "staging_public_base_url"))
        .required()
        .hint("Where consumers reach the staging gateway, e.g. https://api-staging.example.com")
        .html(err);
    fields +=
        &Field::text("Production Public Base URL", "production_public_base_url", s(p, "production_public_base_url"))
            .required()
            .html(err);
    if !creating {
        let opts = |list: &[(&str, &str)]| list.iter().map(|(v, l)| (v.to_string(), l.to_string())).collect::<Vec<_>>();
        fields += r#"<fieldset><legend>Authentication</legend>"#;
        fields += &html::select(
            "Authentication mode",
            "authentication.mode",
            &opts(&AUTH_MODES),
            auth["mode"].as_str().unwrap_or("user_key"),
        );
        fields += &html::select(
            "Credentials location",
            "authentication.credentials_location",
            &opts(&LOCATIONS),
            auth["credentials_location"].as_str().unwrap_or("query"),
        );
        fields += &Field::text(
            "user_key parameter",
            "authentication.user_key_param",
            auth["user_key_param"].as_str().unwrap_or("user_key"),
        )
        .html(err);
        fields += &Field::text(
            "app_id parameter",
            "authentication.app_id_param",
            auth["app_id_param"].as_str().unwrap_or("app_id"),
        )
        .html(err);
        fields += &Field::text(
            "app_key parameter",
            "authentication.app_key_param",
            auth["app_key_param"].as_str().unwrap_or("app_key"),
        )
        .html(err);
        fields += "</fieldset>";
        fields += r#"<fieldset><legend>Error messages</legend><p class="hint">Leave a status blank for Tollgate's default answer (a short JSON body).</p>"#;
        for (key, label) in ERRORS {
            let e = &p["errors"][key];
            let status = e["status"].as_u64().map(|n| n.to_string()).unwrap_or_default();
            fields += &format!("<h3>{}</h3>", esc(label));
            fields += &Field::text("Status", &format!("errors.{key}.status"), &status).kind("number").html(err);
            fields += &Field::text("Body", &format!("errors.{key}.body"), s(e, "body")).kind("textarea").html(err);
            fields += &Field::text("Content type", &format!("errors.{key}.content_type"), s(e, "content_type"))
                .hint("default: text/plain; charset=utf-8")
                .html(err);
        }
        fields += "</fieldset>";
    }
    html::form(action, &ctx.session.csrf, &fields, if creating { "Create product" } else { "Update product" })
}

/// The error answers a product can override (3scale's "Gateway response").
const ERRORS: [(&str, &str); 4] = [
    ("auth_missing", "Authentication missing"),
    ("auth_failed", "Authentication failed"),
    ("no_match", "No mapping rule matched"),
    ("limits_exceeded", "Usage limit exceeded"),
];

fn product_from_form(mut p: Value, form: &Form, creating: bool) -> Value {
    let Some(map) = p.as_object_mut() else { return p };
    map.remove("id");
    // The API's view numbers nested items; a PUT takes them without, and plans are
    // managed under their own resource.
    map.remove("application_plans");
    for list in map.values_mut().filter_map(Value::as_array_mut) {
        for item in list.iter_mut().filter_map(Value::as_object_mut) {
            item.remove("id");
            item.remove("position");
        }
    }
    if creating {
        set_opt(map, "system_name", form.get("system_name"));
    }
    set_opt(map, "name", form.get("name"));
    set_opt(map, "description", form.get("description"));
    for key in ["staging_public_base_url", "production_public_base_url"] {
        map.insert(key.into(), json!(form.get(key).unwrap_or_default()));
    }
    if !creating {
        let mut auth = Map::new();
        for key in ["mode", "credentials_location", "user_key_param", "app_id_param", "app_key_param"] {
            set_opt(&mut auth, key, form.get(&format!("authentication.{key}")));
        }
        map.insert("authentication".into(), Value::Object(auth));
        let mut errors = Map::new();
        for (key, _) in ERRORS {
            let field = |f: &str| form.get(&format!("errors.{key}.{f}"));
            let Some(status) = field("status") else { continue };
            let mut e = Map::new();
            e.insert("status".into(), status.parse::<u64>().map_or_else(|_| json!(status), |n| json!(n)));
            e.insert("body".into(), json!(field("body").unwrap_or_default()));
            set_opt(&mut e, "content_type", field("content_type"));
            errors.insert(key.into(), Value::Object(e));
        }
        map.insert("errors".into(), Value::Object(errors));
    }
    p
}

async fn product_new(ctx: Ctx) -> Html<String> {
    Page::new("Create a product", "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .raw(product_form(&ctx, "/products", &json!({}), true, None))
        .render()
}

async fn product_create(ctx: Ctx, form: Form) -> Response {
    let doc = product_from_form(json!({}), &form, true);
    let answer = ctx.api(Method::POST, "/products", Some(&doc)).await;
    if answer.ok() {
        return Redirect::to(&format!("/products/{}", url_encode(s(&doc, "system_name")))).into_response();
    }
    let error = answer.error();
    let page = Page::new("Create a product", "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .error(Some(&error.0))
        .raw(product_form(&ctx, "/products", &doc, true, Some(&error)));
    (StatusCode::UNPROCESSABLE_ENTITY, page.render()).into_response()
}

/// A product's console path.
pub(super) fn base(p: &str) -> String {
    format!("/products/{}", url_encode(p))
}

/// One of a product's tabs: `content` below the tabs, `error` above it (422 then).
pub(super) fn tab_page(ctx: &Ctx, p: &str, tab: &str, error: Option<&str>, content: String) -> Response {
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = Page::new(format!("{p} · {tab}"), "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .crumb(p, &base(p))
        .raw(product_tabs(p, tab))
        .error(error)
        .raw(content);
    (status, page.render()).into_response()
}

/// The tabs of a product's pages.
pub fn product_tabs(product: &str, current: &str) -> String {
    let base = format!("/products/{}", url_encode(product));
    let tabs = [
        ("Overview", String::new()),
        ("Backends", "/backend_usages".into()),
        ("Metrics & methods", "/metrics".into()),
        ("Mapping rules", "/mapping_rules".into()),
        ("Policies", "/policies".into()),
        ("Application plans", "/plans".into()),
        ("Integration", "/integration".into()),
        ("Try it", "/try".into()),
    ];
    let mut out = String::from(r#"<nav class="tabs" aria-label="Product">"#);
    for (label, suffix) in tabs {
        let cur = if label == current { r#" aria-current="page""# } else { "" };
        out += &format!(r#"<a href="{base}{suffix}"{cur}>{label}</a>"#);
    }
    out + "</nav>"
}

async fn product_overview(ctx: Ctx, Path(p): Path<String>, query: axum::extract::RawQuery) -> Response {
    let answer = ctx.get(&format!("/products/{}", url_encode(&p))).await;
    if !answer.ok() {
        return api_failure(&ctx, "Products", &answer);
    }
    let saved = query.0.is_some_and(|q| q.contains("saved=1"));
    let action = format!("/products/{}", url_encode(&p));
    let title = answer.body["name"].as_str().unwrap_or(&p).to_string();
    let mut page = Page::new(title, "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .raw(product_tabs(&p, "Overview"));
    if saved {
        page = page.raw(r#"<p class="notice" role="status">Saved.</p>"#);
    }
    page.raw("<h2>Integration settings</h2>")
        .raw(product_form(&ctx, &action, &answer.body, false, None))
        .render()
        .into_response()
}

async fn product_update(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let path = format!("/products/{}", url_encode(&p));
    let current = ctx.get(&path).await;
    if !current.ok() {
        return api_failure(&ctx, "Products", &current);
    }
    let doc = product_from_form(current.body, &form, false);
    let answer = ctx.api(Method::PUT, &path, Some(&doc)).await;
    if answer.ok() {
        return Redirect::to(&format!("{path}?saved=1")).into_response();
    }
    let error = answer.error();
    let page = Page::new(p.clone(), "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .raw(product_tabs(&p, "Overview"))
        .error(Some(&error.0))
        .raw(product_form(&ctx, &path, &doc, false, Some(&error)));
    (StatusCode::UNPROCESSABLE_ENTITY, page.render()).into_response()
}
