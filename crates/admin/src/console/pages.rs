//! The console's pages for backends and products. Each reads through the admin API and
//! each form writes through it (see the module above): a page is a view of the API's
//! JSON, a form builds the JSON the API takes.

use super::html::{self, Field, Markup, Page, code, html, link, table, url_encode};
use super::{Console, Ctx, Form, list, logout, s};
use axum::Router;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/logout", post(logout))
        .route("/backends", get(backends).post(backend_create))
        .route("/backends/new", get(backend_new))
        .route("/backends/{b}", get(backend_edit).post(backend_update))
        .route("/backends/{b}/delete", post(backend_delete))
        .route("/backends/{b}/endpoints/{address}/drain", post(endpoint_drain))
        .route("/backends/{b}/endpoints/{address}/undrain", post(endpoint_undrain))
        .route("/products", get(products).post(product_create))
        .route("/products/new", get(product_new))
        .route("/products/{p}", get(product_overview).post(product_update))
}

/// A page for an API answer that is not a success (404, 500…).
pub(super) fn api_failure(ctx: &Ctx, section: &'static str, answer: &super::Answer) -> Response {
    let (message, _) = answer.error();
    let status = if answer.status.is_success() { StatusCode::INTERNAL_SERVER_ERROR } else { answer.status };
    Page::new("Not available", section, &ctx.session.csrf).error(Some(&message)).status(status).into_response()
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
    let rows = list(&answer)
        .iter()
        .map(|b| {
            let name = s(b, "system_name");
            vec![
                link(&format!("/backends/{}", url_encode(name)), b["name"].as_str().unwrap_or(name)),
                code(name),
                code(s(b, "private_base_url")),
            ]
        })
        .collect();
    Page::new("Backends", "Backends", &ctx.session.csrf)
        .para("A backend is a private service Tollgate forwards to: HTTP(S) or WebSocket (ws/wss).")
        .push(table("Backends", &["Name", "System name", "Private Base URL"], rows))
        .push(html! { p { a.action href="/backends/new" { "Create a backend" } } })
        .into_response()
}

/// The backend form, filled from `b` (a backend's JSON), showing `error` if any.
fn backend_form(
    ctx: &Ctx,
    action: &str,
    b: &Value,
    creating: bool,
    error: Option<&(String, Option<String>)>,
) -> Markup {
    let err = error.and_then(|(m, f)| f.as_deref().map(|f| (f, m.as_str())));
    let tls = &b["tls"];
    let verify = if tls["verify"].as_bool().unwrap_or(true) { "true" } else { "false" };
    let timeout = b["connect_timeout_ms"].as_u64().map(|t| t.to_string()).unwrap_or_default();
    let default_timeout = format!("{} (the default)", tollgate_gateway::upstream::DEFAULT_CONNECT_TIMEOUT.as_millis());
    let fields = html! {
        @if creating {
            (Field::text("System name", "system_name", s(b, "system_name"))
                .required()
                .hint("Letters, digits, _, - or .; used in paths and the configuration; cannot change later.")
                .html(err))
        }
        (Field::text("Name", "name", s(b, "name")).html(err))
        (Field::text("Description", "description", s(b, "description")).html(err))
        (Field::text("Private Base URL", "private_base_url", s(b, "private_base_url"))
            .required()
            .hint("http://, https://, ws:// or wss://, with an optional path prefix, e.g. wss://echo.internal:8443/api")
            .html(err))
        fieldset {
            legend { "TLS (https and wss)" }
            (Field::text("CA certificate file", "tls.ca_file", s(tls, "ca_file"))
                .hint("Path on the gateway's machine of a PEM file with the CA (or the self-signed certificate) to trust instead of the system roots.")
                .html(err))
            (Field::text("CA certificate (PEM)", "tls.ca_pem", s(tls, "ca_pem"))
                .kind("textarea")
                .hint("Or paste (or upload) the certificate itself; it is stored with the configuration, so every gateway node has it.")
                .html(err))
            div.field {
                label for="f-tls-ca_pem-file" { "Upload a CA certificate file" }
                input #f-tls-ca_pem-file type="file" accept=".pem,.crt,.cer" data-fills="f-tls-ca_pem";
            }
            @if let Some(pem) = tls["ca_pem"].as_str() { (super::integration::certificates(pem)) }
            (Field::text("Server name", "tls.server_name", s(tls, "server_name"))
                .hint("Name to verify the certificate for, when it differs from the URL's host.")
                .html(err))
            (Field::text("Verify the certificate", "tls.verify", verify).kind("checkbox").html(err))
            @if verify == "false" {
                p.warning role="note" {
                    "Verification is off: anyone on the path to this backend can read and change its traffic. Pin its certificate with a CA file instead."
                }
            }
        }
        (Field::text("Connect timeout (ms)", "connect_timeout_ms", &timeout)
            .kind("number")
            .placeholder(&default_timeout)
            .hint("How long to wait for the backend to accept a connection (and finish the TLS handshake).")
            .html(err))
    };
    html::form(action, &ctx.session.csrf, fields, if creating { "Create backend" } else { "Save" })
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
    // Keys the form does not show (client certificates) are kept as they were.
    let mut tls = match map.remove("tls") {
        Some(Value::Object(tls)) => tls,
        _ => Map::new(),
    };
    set_opt(&mut tls, "ca_file", form.get("tls.ca_file"));
    // A file read by the browser keeps its line ends; PEM text is stored with `\n`.
    let pem = form.get("tls.ca_pem").map(|p| p.replace("\r\n", "\n"));
    set_opt(&mut tls, "ca_pem", pem.as_deref());
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

async fn backend_new(ctx: Ctx) -> Page {
    let blank = json!({ "tls": { "verify": true } });
    Page::new("Create a backend", "Backends", &ctx.session.csrf).crumb("Backends", "/backends").push(backend_form(
        &ctx,
        "/backends",
        &blank,
        true,
        None,
    ))
}

async fn backend_create(ctx: Ctx, form: Form) -> Response {
    let doc = backend_from_form(json!({}), &form, true);
    let answer = ctx.api(Method::POST, "/backends", Some(&doc)).await;
    if answer.ok() {
        return Redirect::to(&format!("/backends/{}?saved=1", url_encode(s(&doc, "system_name")))).into_response();
    }
    let error = answer.error();
    Page::new("Create a backend", "Backends", &ctx.session.csrf)
        .crumb("Backends", "/backends")
        .error(Some(&error.0))
        .push(backend_form(&ctx, "/backends", &doc, true, Some(&error)))
        .into_response()
}

async fn backend_edit(ctx: Ctx, Path(b): Path<String>, query: axum::extract::RawQuery) -> Response {
    let answer = ctx.get(&format!("/backends/{}", url_encode(&b))).await;
    if !answer.ok() {
        return api_failure(&ctx, "Backends", &answer);
    }
    let saved = query.0.is_some_and(|q| q.contains("saved=1"));
    let action = format!("/backends/{}", url_encode(&b));
    let endpoints = ctx.get(&format!("/backends/{}/endpoints", url_encode(&b))).await;
    Page::new(format!("Backend {b}"), "Backends", &ctx.session.csrf)
        .crumb("Backends", "/backends")
        .notice(saved.then_some("Saved."))
        .push(endpoints_table(&ctx, &action, &endpoints.body))
        .push(backend_form(&ctx, &action, &answer.body, false, None))
        .push(html::danger_button(
            &format!("{action}/delete"),
            &ctx.session.csrf,
            "Delete backend",
            "Delete this backend? Products using it must drop it first.",
        ))
        .into_response()
}

/// One environment's state of an endpoint, in words: health (why not), drain, load.
fn endpoint_state(state: &Value) -> String {
    if state.is_null() {
        return "not served".into();
    }
    let mut words = Vec::new();
    if state["draining"] == true {
        words.push("draining".to_owned());
    }
    match (state["healthy"] == true, state["ejected_for_ms"].as_u64().unwrap_or(0)) {
        (true, _) => words.push("healthy".into()),
        (false, ms) if ms > 0 => words.push(format!("ejected for {:.1} s more", ms as f64 / 1000.0)),
        (false, _) => match state["probe_error"].as_str() {
            Some(why) => words.push(format!("unhealthy: {why}")),
            None => words.push("unhealthy".into()),
        },
    }
    let (requests, websockets) =
        (state["active_requests"].as_u64().unwrap_or(0), state["websockets_open"].as_u64().unwrap_or(0));
    words.push(format!("{requests} in flight, {websockets} WebSockets"));
    if let Some(n) = state["ejections_total"].as_u64().filter(|n| *n > 0) {
        words.push(format!("ejected {n}×"));
    }
    words.join(" · ")
}

/// The backend's endpoints with their state on this node, and a drain button each.
fn endpoints_table(ctx: &Ctx, backend_path: &str, view: &Value) -> Markup {
    let empty = Vec::new();
    let mut rows = Vec::new();
    for e in view["endpoints"].as_array().unwrap_or(&empty) {
        let address = e["address"].as_str().unwrap_or_default();
        let at = format!("{backend_path}/endpoints/{}", url_encode(address));
        let action = match (e["configured"] == true, e["drain"] == true) {
            (false, _) => html! { "no longer listed" },
            (true, false) => html::button(
                &format!("{at}/drain"),
                &ctx.session.csrf,
                "Drain",
                Some(
                    "Drain this endpoint? It takes no new requests or WebSockets, in staging and production, at once.",
                ),
            ),
            (true, true) => html::button(&format!("{at}/undrain"), &ctx.session.csrf, "Stop draining", None),
        };
        let addresses = e["addresses"].as_array().unwrap_or(&empty);
        // A resolved name's own state is its addresses'.
        let state = |env: &str| match addresses.is_empty() {
            true => endpoint_state(&e[env]),
            false => format!("{} addresses, below", addresses.len()),
        };
        rows.push(vec![
            code(address),
            html! { (e["weight"].as_u64().map(|w| w.to_string()).unwrap_or_default()) },
            html! { (state("staging")) },
            html! { (state("production")) },
            action,
        ]);
        for a in addresses {
            rows.push(vec![
                html! { "↳ " (code(a["address"].as_str().unwrap_or_default())) },
                html! { (e["weight"].as_u64().map(|w| w.to_string()).unwrap_or_default()) },
                html! { (endpoint_state(&a["staging"])) },
                html! { (endpoint_state(&a["production"])) },
                html! { "drains with its name" },
            ]);
        }
    }
    html! {
        section {
            h2 { "Endpoints" }
            p.hint { "As this gateway node sees them now. Draining applies at once to both environments, without a deploy." }
            (table("Endpoints", &["Endpoint", "Weight", "Staging", "Production", "Drain"], rows))
        }
    }
}

async fn endpoint_drain(ctx: Ctx, Path((b, address)): Path<(String, String)>, _form: Form) -> Response {
    set_drain(ctx, &b, &address, Method::POST).await
}

async fn endpoint_undrain(ctx: Ctx, Path((b, address)): Path<(String, String)>, _form: Form) -> Response {
    set_drain(ctx, &b, &address, Method::DELETE).await
}

async fn set_drain(ctx: Ctx, b: &str, address: &str, method: Method) -> Response {
    let path = format!("/backends/{}", url_encode(b));
    let answer = ctx.api(method, &format!("{path}/endpoints/{}/drain", url_encode(address)), None).await;
    if answer.ok() {
        Redirect::to(&format!("{path}?saved=1")).into_response()
    } else {
        api_failure(&ctx, "Backends", &answer)
    }
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
    Page::new(format!("Backend {b}"), "Backends", &ctx.session.csrf)
        .crumb("Backends", "/backends")
        .error(Some(&error.0))
        .push(backend_form(&ctx, &path, &doc, false, Some(&error)))
        .into_response()
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
    let rows = list(&answer)
        .iter()
        .map(|p| {
            let name = s(p, "system_name");
            vec![
                link(&format!("/products/{}", url_encode(name)), p["name"].as_str().unwrap_or(name)),
                code(s(p, "staging_public_base_url")),
                code(s(p, "production_public_base_url")),
            ]
        })
        .collect();
    Page::new("Products", "Products", &ctx.session.csrf)
        .para("A product is the API your consumers see: public hostnames for a staging and a production gateway, in front of one or more backends.")
        .push(table("Products", &["Name", "Staging Public Base URL", "Production Public Base URL"], rows))
        .push(html! { p { a.action href="/products/new" { "Create a product" } } })
        .into_response()
}

const AUTH_MODES: [(&str, &str); 3] = [
    ("user_key", "API key (user_key)"),
    ("app_id_app_key", "App ID and App Key pair"),
    ("client_certificate", "Client certificate (mutual TLS; needs the product's client CA)"),
];
const LOCATIONS: [(&str, &str); 3] = [
    ("query", "As query parameters (GET) or body parameters"),
    ("headers", "As HTTP headers"),
    ("authorization", "As HTTP Basic authentication or a bearer token"),
];

/// The error answers a product can override (3scale's "Gateway response").
const ERRORS: [(&str, &str); 4] = [
    ("auth_missing", "Authentication missing"),
    ("auth_failed", "Authentication failed"),
    ("no_match", "No mapping rule matched"),
    ("limits_exceeded", "Usage limit exceeded"),
];

fn options(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(v, l)| (v.to_string(), l.to_string())).collect()
}

/// The product's settings form (integration settings of 3scale's product page).
fn product_form(
    ctx: &Ctx,
    action: &str,
    p: &Value,
    creating: bool,
    error: Option<&(String, Option<String>)>,
) -> Markup {
    let err = error.and_then(|(m, f)| f.as_deref().map(|f| (f, m.as_str())));
    let auth = &p["authentication"];
    let fields = html! {
        @if creating {
            (Field::text("System name", "system_name", s(p, "system_name"))
                .required()
                .hint("Letters, digits, _, - or .; cannot change later.")
                .html(err))
        }
        (Field::text("Name", "name", s(p, "name")).html(err))
        (Field::text("Description", "description", s(p, "description")).html(err))
        (Field::text("Staging Public Base URL", "staging_public_base_url", s(p, "staging_public_base_url"))
            .required()
            .hint("Where consumers reach the staging gateway, e.g. https://api-staging.example.com")
            .html(err))
        (Field::text("Production Public Base URL", "production_public_base_url", s(p, "production_public_base_url"))
            .required()
            .hint("Where consumers reach the production gateway, e.g. https://api.example.com")
            .html(err))
        @if !creating {
            fieldset {
                legend { "Authentication" }
                (html::select("Authentication mode", "authentication.mode", &options(&AUTH_MODES),
                    auth["mode"].as_str().unwrap_or("user_key")))
                (html::select("Credentials location", "authentication.credentials_location", &options(&LOCATIONS),
                    auth["credentials_location"].as_str().unwrap_or("query")))
                (Field::text("user_key parameter", "authentication.user_key_param",
                    auth["user_key_param"].as_str().unwrap_or("user_key")).html(err))
                (Field::text("app_id parameter", "authentication.app_id_param",
                    auth["app_id_param"].as_str().unwrap_or("app_id")).html(err))
                (Field::text("app_key parameter", "authentication.app_key_param",
                    auth["app_key_param"].as_str().unwrap_or("app_key")).html(err))
            }
            fieldset {
                legend { "Error messages" }
                p.hint { "Leave a status blank for Tollgate's default answer (a short JSON body)." }
                @for (key, label) in ERRORS {
                    @let e = &p["errors"][key];
                    @let status = e["status"].as_u64().map(|n| n.to_string()).unwrap_or_default();
                    h3 { (label) }
                    (Field::text("Status", &format!("errors.{key}.status"), &status).kind("number").html(err))
                    (Field::text("Body", &format!("errors.{key}.body"), s(e, "body")).kind("textarea").html(err))
                    (Field::text("Content type", &format!("errors.{key}.content_type"), s(e, "content_type"))
                        .placeholder("text/plain; charset=utf-8")
                        .html(err))
                }
            }
        }
    };
    html::form(action, &ctx.session.csrf, fields, if creating { "Create product" } else { "Update product" })
}

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

async fn product_new(ctx: Ctx) -> Page {
    Page::new("Create a product", "Products", &ctx.session.csrf).crumb("Products", "/products").push(product_form(
        &ctx,
        "/products",
        &json!({}),
        true,
        None,
    ))
}

async fn product_create(ctx: Ctx, form: Form) -> Response {
    let doc = product_from_form(json!({}), &form, true);
    let answer = ctx.api(Method::POST, "/products", Some(&doc)).await;
    if answer.ok() {
        return Redirect::to(&format!("/products/{}", url_encode(s(&doc, "system_name")))).into_response();
    }
    let error = answer.error();
    Page::new("Create a product", "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .error(Some(&error.0))
        .push(product_form(&ctx, "/products", &doc, true, Some(&error)))
        .into_response()
}

/// A product's console path.
pub(super) fn base(p: &str) -> String {
    format!("/products/{}", url_encode(p))
}

/// One of a product's tabs: `content` below the tabs, `error` above it (422 then).
pub(super) fn tab_page(ctx: &Ctx, p: &str, tab: &str, error: Option<&str>, content: Markup) -> Response {
    Page::new(format!("{p} · {tab}"), "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .crumb(p, &base(p))
        .push(product_tabs(p, tab))
        .error(error)
        .push(content)
        .into_response()
}

/// The tabs of a product's pages.
pub fn product_tabs(product: &str, current: &str) -> Markup {
    let base = base(product);
    let tabs = [
        ("Overview", ""),
        ("Backends", "/backend_usages"),
        ("Metrics & methods", "/metrics"),
        ("Mapping rules", "/mapping_rules"),
        ("Policies", "/policies"),
        ("Application plans", "/plans"),
        ("Integration", "/integration"),
        ("Try it", "/try"),
    ];
    html! {
        nav.tabs aria-label="Product" {
            @for (label, suffix) in tabs {
                a href={ (base) (suffix) } aria-current=[(label == current).then_some("page")] { (label) }
            }
        }
    }
}

async fn product_overview(ctx: Ctx, Path(p): Path<String>, query: axum::extract::RawQuery) -> Response {
    let answer = ctx.get(&base(&p)).await;
    if !answer.ok() {
        return api_failure(&ctx, "Products", &answer);
    }
    let saved = query.0.is_some_and(|q| q.contains("saved=1"));
    let action = base(&p);
    let title = answer.body["name"].as_str().unwrap_or(&p).to_string();
    Page::new(title, "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .push(product_tabs(&p, "Overview"))
        .notice(saved.then_some("Saved."))
        .push(html! { h2 { "Integration settings" } })
        .push(product_form(&ctx, &action, &answer.body, false, None))
        .into_response()
}

async fn product_update(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let path = base(&p);
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
    Page::new(p.clone(), "Products", &ctx.session.csrf)
        .crumb("Products", "/products")
        .push(product_tabs(&p, "Overview"))
        .error(Some(&error.0))
        .push(product_form(&ctx, &path, &doc, false, Some(&error)))
        .into_response()
}
