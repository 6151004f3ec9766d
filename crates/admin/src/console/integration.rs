//! A product's integration: the draft against staging and staging against production
//! with a readable diff (sections that did not change folded away, certificates shown
//! by subject, issuer, validity and fingerprint), "Promote to Staging" and "Promote to
//! Production", version history with rollback, ready examples; its policy chain,
//! configured through forms generated from each policy's JSON schema; and "Try it", a
//! WebSocket client in the page that explains a refused connection.

use super::html::{self, Field, Markup, html, table, url_encode};
use super::pages::{base, tab_page};
use super::{Answer, Console, Ctx, Form, list, s};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/products/{p}/integration", get(integration))
        .route("/products/{p}/integration/deploy", post(deploy))
        .route("/products/{p}/integration/promote", post(promote))
        .route("/products/{p}/policies", get(policies).post(policy_add))
        .route("/products/{p}/policies/{i}", get(policy_edit).post(policy_save))
        .route("/products/{p}/policies/{i}/{action}", post(policy_action))
        .route("/products/{p}/try", get(try_it))
        .route("/products/{p}/try/probe", get(probe))
}

// ------------------------------------------------------------------ certificates

/// Every certificate of PEM text, described for a person: subject, issuer, validity
/// (and whether it holds now), names, SHA-256 fingerprint — never the PEM itself.
pub(super) fn certificates(pem: &str) -> Markup {
    let now = tollgate_store::now_millis() / 1000;
    match tollgate_gateway::upstream::CertificateInfo::from_pem(pem) {
        Err(e) => html! { p.field-error { "Not a certificate: " (e) } },
        Ok(certs) => html! {
            @for c in &certs {
                dl.certificate {
                    dt { "Subject" } dd { (c.subject) @if c.self_signed { " " span.hint { "(self-signed)" } } }
                    @if !c.self_signed { dt { "Issuer" } dd { (c.issuer) } }
                    dt { "Valid" }
                    dd {
                        (tollgate_model::period::rfc3339(c.not_before)) " to " (tollgate_model::period::rfc3339(c.not_after))
                        @if now > c.not_after { " " strong.bad { "expired" } }
                        @else if now < c.not_before { " " strong.bad { "not valid yet" } }
                    }
                    @if !c.names.is_empty() { dt { "Names" } dd { (c.names.join(", ")) } }
                    dt { "SHA-256" } dd { code.fingerprint { (c.sha256) } }
                }
            }
        },
    }
}

// ------------------------------------------------------------------ integration

/// A value of a diff: certificates described, the rest as compact JSON.
fn value_view(v: &Value) -> Markup {
    match v {
        Value::Null => html! { span.hint { "—" } },
        Value::String(t) if t.contains("-----BEGIN CERTIFICATE-----") => certificates(t),
        other => html! { code.value { (other.to_string()) } },
    }
}

/// The section a diff path belongs to — its first key, below `product.` for the
/// product's own settings (`product.mapping_rules[2].pattern` → `mapping_rules`,
/// `backends[0].tls.ca_pem` → `backends`) — and the rest.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix("product.").unwrap_or(path);
    let end = path.find(['.', '[']).unwrap_or(path.len());
    (&path[..end], path[end..].trim_start_matches('.'))
}

/// A diff, section by section: changed sections open, each change a row; sections
/// that did not change listed, folded.
fn diff_view(answer: &Answer, caption: &str) -> Markup {
    if !answer.ok() {
        return html! { p.error { (answer.error().0) } };
    }
    let changes = answer.body["changes"].as_array().cloned().unwrap_or_default();
    let unchanged: Vec<&str> =
        answer.body["unchanged"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut sections: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for c in &changes {
        sections.entry(split_path(s(c, "path")).0).or_default().push(c);
    }
    html! {
        @if changes.is_empty() {
            p.empty { "No changes." }
        } @else {
            div.diff aria-label=(caption) {
                @for (section, items) in &sections {
                    details open {
                        summary { code { (section) } " — " (items.len()) " change" @if items.len() != 1 { "s" } }
                        table {
                            caption.visually-hidden { (caption) ": " (section) }
                            thead { tr { th scope="col" { "Setting" } th scope="col" { "Now" } th scope="col" { "After promote" } } }
                            tbody {
                                @for c in items {
                                    @let rest = split_path(s(c, "path")).1;
                                    tr {
                                        td.path { code { (if rest.is_empty() { section } else { rest }) } }
                                        td.diff-from { (value_view(&c["from"])) }
                                        td.diff-to { (value_view(&c["to"])) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !unchanged.is_empty() {
            details.unchanged {
                summary { "Unchanged: " (unchanged.len()) " section" @if unchanged.len() != 1 { "s" } }
                p { @for (i, u) in unchanged.iter().enumerate() { @if i > 0 { ", " } code { (u.strip_prefix("product.").unwrap_or(u)) } } }
            }
        }
    }
}

fn version_of(a: &Answer) -> Option<i64> {
    a.body.as_array().and_then(|l| l.first()).and_then(|v| v["version"].as_i64())
}

async fn integration(ctx: Ctx, Path(p): Path<String>) -> Response {
    integration_page(&ctx, &p, None, None).await
}

async fn integration_page(ctx: &Ctx, p: &str, notice: Option<String>, error: Option<String>) -> Response {
    let product = ctx.get(&base(p)).await;
    if !product.ok() {
        return super::pages::api_failure(ctx, "Products", &product);
    }
    let staging = ctx.get(&format!("{}/configs/staging", base(p))).await;
    let production = ctx.get(&format!("{}/configs/production", base(p))).await;
    let to_staging = ctx.get(&format!("{}/configs/diff?from=staging&to=draft", base(p))).await;
    let to_production = ctx.get(&format!("{}/configs/diff?from=production&to=staging", base(p))).await;
    let v = |a: Option<i64>| a.map_or_else(|| "none yet".to_string(), |n| format!("version {n}"));
    let csrf = &ctx.session.csrf;
    let history = list(&production)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n = c["version"].as_i64().unwrap_or(0);
            vec![
                html! { "version " (n) },
                html! { (html::time(&c["created_at"])) },
                if i == 0 {
                    html! { "current" }
                } else {
                    rollback_button(p, csrf, n)
                },
            ]
        })
        .collect();
    let staged = list(&staging)
        .iter()
        .map(|c| {
            let n = c["version"].as_i64().unwrap_or(0);
            vec![html! { "version " (n) }, html! { (html::time(&c["created_at"])) }, rollback_button(p, csrf, n)]
        })
        .collect();
    let pr = &product.body;
    let auth = &pr["authentication"];
    // The first application's credentials, when there is one: examples that work as
    // pasted (else placeholders).
    let app = list(&ctx.get("/applications").await).into_iter().find(|a| s(a, "product") == p);
    let app = app.as_ref();
    let creds = if auth["mode"].as_str() == Some("app_id_app_key") {
        format!(
            "{}={}&{}={}",
            auth["app_id_param"].as_str().unwrap_or("app_id"),
            app.and_then(|a| a["app_id"].as_str()).unwrap_or("APP_ID"),
            auth["app_key_param"].as_str().unwrap_or("app_key"),
            app.and_then(|a| a["app_keys"][0].as_str()).unwrap_or("APP_KEY"),
        )
    } else {
        format!(
            "{}={}",
            auth["user_key_param"].as_str().unwrap_or("user_key"),
            app.and_then(|a| a["user_key"].as_str()).unwrap_or("USER_KEY")
        )
    };
    let staging_url = s(pr, "staging_public_base_url").trim_end_matches('/').to_string();
    let ws_url = staging_url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    let examples = format!(
        "curl -i '{staging_url}/?{creds}'\n\ntollgate ws '{ws_url}/?{creds}'\n# or, from a clone of Tollgate's repository:\ncargo run --release -- ws '{ws_url}/?{creds}'\n\n// in a browser console\nconst ws = new WebSocket('{ws_url}/?{creds}');\nws.onmessage = (e) => console.log(e.data);\nws.onopen = () => ws.send('hello');"
    );
    let content = html! {
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        p {
            "Staging runs " strong { (v(version_of(&staging))) } "; production runs " strong { (v(version_of(&production))) } "."
        }
        h2 { "Promote to Staging" }
        p { "What the draft changes against the staging version:" }
        (diff_view(&to_staging, "Draft against staging"))
        (html::form(&format!("{}/integration/deploy", base(p)), csrf, html! {}, "Promote to Staging"))
        h2 { "Promote to Production" }
        p { "What the staging version changes against production:" }
        (diff_view(&to_production, "Staging against production"))
        @if version_of(&staging).is_some() {
            form.card method="post" action={ (base(p)) "/integration/promote" } data-confirm="Promote the staging version to production?" {
                input type="hidden" name="_csrf" value=(csrf);
                button type="submit" { "Promote to Production" }
            }
        } @else {
            p.card {
                button type="button" disabled aria-describedby="promote-why" { "Promote to Production" }
                " " span.hint #promote-why { "Nothing is on staging yet: Promote to Staging first." }
            }
        }
        h2 { "Try the staging gateway" }
        pre { (examples) }
        p { "Or in this page: " a href={ (base(p)) "/try" } { "Try it" } "." }
        h2 { "History" }
        (html::table_or("Production versions, newest first", &["Version", "Promoted at", "Rollback"], history, "Nothing was promoted to production yet."))
        (html::table_or("Staging versions, newest first", &["Version", "Created at", "Rollback"], staged, "Nothing was promoted to staging yet."))
    };
    tab_page(ctx, p, "Integration", error.as_deref(), content)
}

fn rollback_button(p: &str, csrf: &str, version: i64) -> Markup {
    html! {
        form.inline method="post" action={ (base(p)) "/integration/promote" } data-confirm={ "Put version " (version) " on production?" } {
            input type="hidden" name="_csrf" value=(csrf);
            input type="hidden" name="version" value=(version);
            button.secondary type="submit" { "Promote version " (version) " to production" }
        }
    }
}

async fn deploy(ctx: Ctx, Path(p): Path<String>, _form: Form) -> Response {
    let answer = ctx.api(Method::POST, &format!("{}/deploy", base(&p)), None).await;
    if !answer.ok() {
        return integration_page(&ctx, &p, None, Some(answer.error().0)).await;
    }
    let note = if answer.body["unchanged"].as_bool() == Some(true) {
        format!("Nothing changed: staging keeps version {}.", answer.body["version"])
    } else {
        format!("Version {} is on staging.", answer.body["version"])
    };
    integration_page(&ctx, &p, Some(note), None).await
}

async fn promote(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let body = form.get("version").and_then(|v| v.parse::<i64>().ok()).map(|v| json!({ "version": v }));
    let answer = ctx.api(Method::POST, &format!("{}/promote", base(&p)), body.as_ref()).await;
    if !answer.ok() {
        return integration_page(&ctx, &p, None, Some(answer.error().0)).await;
    }
    let note = if answer.body["unchanged"].as_bool() == Some(true) {
        format!("Nothing changed: production serves version {} already.", answer.body["version"])
    } else {
        format!("Version {} is on production.", answer.body["version"])
    };
    integration_page(&ctx, &p, Some(note), None).await
}

// ------------------------------------------------------------------ policy chain

async fn chain(ctx: &Ctx, p: &str) -> Vec<Value> {
    list(&ctx.get(&format!("{}/policy_chain", base(p))).await)
}

async fn put_chain(ctx: &Ctx, p: &str, chain: &[Value]) -> Answer {
    ctx.api(Method::PUT, &format!("{}/policy_chain", base(p)), Some(&Value::Array(chain.to_vec()))).await
}

async fn policies(ctx: Ctx, Path(p): Path<String>) -> Response {
    policies_page(&ctx, &p, None).await
}

async fn policies_page(ctx: &Ctx, p: &str, error: Option<String>) -> Response {
    let current = chain(ctx, p).await;
    let catalogue = list(&ctx.get("/policies").await);
    let csrf = &ctx.session.csrf;
    let n = current.len();
    let rows = current
        .iter()
        .enumerate()
        .map(|(i, pol)| {
            let name = s(pol, "name");
            let enabled = pol["enabled"].as_bool().unwrap_or(true);
            let here = format!("{}/policies/{i}", base(p));
            let summary = catalogue.iter().find(|c| s(c, "name") == name).map(|c| s(c, "summary")).unwrap_or_default();
            vec![
                html! { (i + 1) },
                html! { a href=(here) { (name) } br; span.hint { (inline_code(summary)) } },
                html! { @if enabled { "enabled" } @else { span.hint { "disabled" } } },
                html! {
                    @if i > 0 { (html::button(&format!("{here}/up"), csrf, "Move up", None)) }
                    @if i + 1 < n { (html::button(&format!("{here}/down"), csrf, "Move down", None)) }
                    (html::button(&format!("{here}/toggle"), csrf, if enabled { "Disable" } else { "Enable" }, None))
                    (html::danger_button(&format!("{here}/remove"), csrf, "Remove", "Remove this policy from the chain?"))
                },
            ]
        })
        .collect();
    let options: Vec<(String, String)> = catalogue
        .iter()
        .map(|c| (s(c, "name").to_string(), format!("{} — {}", s(c, "name"), s(c, "summary"))))
        .collect();
    let content = html! {
        p {
            "Policies run in this order; " code { "tollgate" } " (authentication, mapping rules, limits) runs last unless placed elsewhere."
        }
        (table("Policy chain", &["#", "Policy", "State", "Actions"], rows))
        h2 { "Add from the catalogue" }
        (html::form(&format!("{}/policies", base(p)), csrf, html::select("Policy", "name", &options, "websocket"), "Add policy"))
    };
    tab_page(ctx, p, "Policies", error.as_deref(), content)
}

async fn policy_add(ctx: Ctx, Path(p): Path<String>, form: Form) -> Response {
    let mut current = chain(&ctx, &p).await;
    let name = form.get("name").unwrap_or_default();
    // Before `tollgate` when it is in the chain: it usually belongs last.
    let at = current.iter().position(|c| s(c, "name") == "tollgate").unwrap_or(current.len());
    current.insert(at, json!({ "name": name }));
    let answer = put_chain(&ctx, &p, &current).await;
    if answer.ok() {
        Redirect::to(&format!("{}/policies", base(&p))).into_response()
    } else {
        policies_page(&ctx, &p, Some(answer.error().0)).await
    }
}

async fn policy_action(ctx: Ctx, Path((p, i, action)): Path<(String, usize, String)>, _form: Form) -> Response {
    let mut current = chain(&ctx, &p).await;
    if i >= current.len() {
        return policies_page(&ctx, &p, Some("That policy is no longer in the chain; the page was stale.".into()))
            .await;
    }
    match action.as_str() {
        "up" if i > 0 => current.swap(i, i - 1),
        "down" if i + 1 < current.len() => current.swap(i, i + 1),
        "toggle" => {
            let enabled = current[i]["enabled"].as_bool().unwrap_or(true);
            current[i]["enabled"] = json!(!enabled);
        }
        "remove" => {
            current.remove(i);
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    let answer = put_chain(&ctx, &p, &current).await;
    if answer.ok() {
        Redirect::to(&format!("{}/policies", base(&p))).into_response()
    } else {
        policies_page(&ctx, &p, Some(answer.error().0)).await
    }
}

/// Text with `backticked` parts shown as code (the catalogue's summaries are written so).
fn inline_code(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// A configuration key in words: `max_message_bytes` → `Max message bytes`.
fn words(key: &str) -> String {
    let mut out = key.replace('_', " ");
    if let Some(first) = out.get(..1) {
        out = first.to_uppercase() + &out[1..];
    }
    out
}

/// What a form needs besides the schema: the product's metrics and backends, for the
/// fields that name one.
struct Choices {
    metrics: Vec<(String, String)>,
    backends: Vec<(String, String)>,
}

/// Form fields for a JSON schema object: scalars as inputs (dotted names for nested
/// objects), enums and references to metrics or backends as selects, anything else
/// (arrays, maps) as JSON in a text area. Labels are the keys in words, hints the
/// schema's descriptions, and defaults show in empty fields and their hints.
fn schema_fields(
    schema: &Value,
    prefix: &str,
    value: &Value,
    choices: &Choices,
    error: Option<(&str, &str)>,
) -> Markup {
    let option_of = |s: &Value| -> Value {
        match s["anyOf"].as_array().or_else(|| s["oneOf"].as_array()) {
            // Option<T>: the non-null branch.
            Some(branches) if branches.len() == 2 => {
                branches.iter().find(|b| b["type"] != "null").cloned().unwrap_or(Value::Null)
            }
            _ => s.clone(),
        }
    };
    let Some(props) = schema["properties"].as_object() else { return html! {} };
    html! {
        @for (key, raw) in props {
            @let prop = option_of(raw);
            @let name = format!("{prefix}{key}");
            @let current = &value[key];
            @let default = raw.get("default").or_else(|| prop.get("default")).filter(|d| !d.is_null());
            @let default_text = default.map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string));
            @let description = prop["description"].as_str().or_else(|| raw["description"].as_str()).unwrap_or_default();
            @let hint = match &default_text {
                Some(d) if !description.is_empty() => format!("{description} Default: {d}."),
                Some(d) => format!("Default: {d}."),
                None => description.to_string(),
            };
            @let kind = prop["type"].as_str().or_else(|| prop["type"][0].as_str()).unwrap_or_default();
            // A schema's title may be its Rust type's name (`ConditionConfig`): only a
            // title in words is used.
            @let label = prop["title"].as_str().filter(|t| t.contains(' ')).map_or_else(|| words(key), str::to_string);
            @if let Some(options) = prop["enum"].as_array() {
                (html::select_with(&label, &name, &enum_options(options, default_text.as_deref()), current.as_str().unwrap_or_default(), &hint))
            } @else if kind == "string" && key == "metric" && !choices.metrics.is_empty() {
                (html::select_with(&label, &name, &with_none(&choices.metrics), current.as_str().unwrap_or_default(), &hint))
            } @else if kind == "string" && key == "backend" && !choices.backends.is_empty() {
                (html::select_with(&label, &name, &with_none(&choices.backends), current.as_str().unwrap_or_default(), &hint))
            } @else if kind == "object" && prop["properties"].is_object() {
                fieldset {
                    legend { (words(key)) }
                    @if !hint.is_empty() { p.hint { (hint) } }
                    (schema_fields(&prop, &format!("{name}."), current, choices, error))
                }
            } @else if kind == "boolean" {
                @let on = current.as_bool().or_else(|| default.and_then(Value::as_bool)) == Some(true);
                (Field::text(&label, &name, if on { "true" } else { "" }).kind("checkbox").hint(&hint).html(error))
            } @else if kind == "integer" || kind == "number" {
                (Field::text(&label, &name, &current.as_f64().map(|n| n.to_string()).unwrap_or_default())
                    .kind("number")
                    .placeholder(default_text.as_deref().unwrap_or_default())
                    .hint(&hint)
                    .html(error))
            } @else if kind == "string" {
                (Field::text(&label, &name, current.as_str().unwrap_or_default())
                    .placeholder(default_text.as_deref().unwrap_or_default())
                    .hint(&hint)
                    .html(error))
            } @else {
                @let text = if current.is_null() { String::new() } else { serde_json::to_string_pretty(current).unwrap_or_default() };
                (Field::text(&label, &format!("{name}:json"), &text)
                    .kind("textarea")
                    .hint(&format!("{hint} JSON, for example: {}", example(&prop)))
                    .html(error))
            }
        }
    }
}

/// Options with a first "(none)": the field left out (an optional object, such as
/// `meter_bytes`, is then not configured at all).
fn with_none(options: &[(String, String)]) -> Vec<(String, String)> {
    std::iter::once((String::new(), "(none)".to_string())).chain(options.iter().cloned()).collect()
}

/// A small example of a JSON value a schema describes, for the hint of a JSON field:
/// a list of one item, an object with its required keys.
fn example(schema: &Value) -> String {
    fn sample(s: &Value, depth: usize) -> Value {
        let s = match s["anyOf"].as_array() {
            Some(b) => b.iter().find(|x| x["type"] != "null").cloned().unwrap_or(Value::Null),
            None => s.clone(),
        };
        if let Some(first) = s["enum"].as_array().and_then(|e| e.first()) {
            return first.clone();
        }
        match s["type"].as_str().or_else(|| s["type"][0].as_str()).unwrap_or_default() {
            _ if depth > 3 => json!("…"),
            "array" => json!([sample(&s["items"], depth + 1)]),
            "object" => {
                let required: Vec<&str> =
                    s["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let props = s["properties"].as_object().cloned().unwrap_or_default();
                let keys: Vec<&String> =
                    props.keys().filter(|k| required.is_empty() || required.contains(&k.as_str())).collect();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sample(&props[k.as_str()], depth + 1))).collect())
            }
            "integer" | "number" => json!(1),
            "boolean" => json!(true),
            _ => json!("…"),
        }
    }
    sample(schema, 0).to_string()
}

/// A select's options for a schema enum: first the default (the field left out).
fn enum_options(values: &[Value], default: Option<&str>) -> Vec<(String, String)> {
    let first = default.map_or_else(|| "(default)".to_string(), |d| format!("(default: {d})"));
    std::iter::once((String::new(), first))
        .chain(values.iter().filter_map(Value::as_str).map(|c| (c.to_string(), c.to_string())))
        .collect()
}

/// Builds the configuration object back from the form (blank fields are left out).
fn config_from_form(form: &Form) -> Result<Value, String> {
    let mut root = Map::new();
    for (key, raw) in &form.0 {
        if key == "_csrf" || raw.trim().is_empty() {
            continue;
        }
        let (path, json_field) = match key.strip_suffix(":json") {
            Some(p) => (p, true),
            None => (key.as_str(), false),
        };
        let value = if json_field {
            serde_json::from_str(raw).map_err(|e| format!("{path}: not valid JSON ({e})"))?
        } else if raw == "true" {
            json!(true)
        } else if let Ok(n) = raw.trim().parse::<u64>() {
            json!(n)
        } else if let Ok(f) = raw.trim().parse::<f64>() {
            json!(f)
        } else {
            json!(raw.trim())
        };
        let mut node = &mut root;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let entry = node.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            node = entry.as_object_mut().ok_or("nested field")?;
        }
        node.insert(parts[parts.len() - 1].to_string(), value);
    }
    Ok(Value::Object(root))
}

async fn policy_edit(ctx: Ctx, Path((p, i)): Path<(String, usize)>) -> Response {
    policy_page(&ctx, &p, i, None, None).await
}

async fn policy_page(
    ctx: &Ctx,
    p: &str,
    i: usize,
    draft: Option<Value>,
    error: Option<(String, Option<String>)>,
) -> Response {
    let current = chain(ctx, p).await;
    let Some(policy) = current.get(i) else {
        return policies_page(ctx, p, Some("That policy is no longer in the chain.".into())).await;
    };
    let name = s(policy, "name");
    let catalogue = list(&ctx.get("/policies").await);
    let schema = catalogue.iter().find(|c| s(c, "name") == name).map(|c| c["schema"].clone()).unwrap_or(Value::Null);
    let value = draft.unwrap_or_else(|| policy["configuration"].clone());
    let choices = Choices {
        metrics: super::product::metric_options(ctx, p).await,
        backends: list(&ctx.get(&format!("{}/backend_usages", base(p))).await)
            .iter()
            .map(|u| (s(u, "backend").to_string(), format!("{} (at {})", s(u, "backend"), s(u, "path"))))
            .collect(),
    };
    // The API names the field as `[i].configuration.key…`: the form's name is `key…`.
    let field = error.as_ref().and_then(|(m, f)| {
        let f = f.as_deref()?;
        let rest = f.split_once(".configuration.").map_or(f, |(_, r)| r);
        Some((rest, m.as_str()))
    });
    let fields = schema_fields(&schema, "", &value, &choices, field);
    let summary = catalogue.iter().find(|c| s(c, "name") == name).map(|c| s(c, "summary")).unwrap_or_default();
    let content = html! {
        h2 { "Configure " code { (name) } }
        p.hint { (inline_code(summary)) " Every option is described in docs/policies/" (name) ".md." }
        @if fields.0.is_empty() {
            (html::form(&format!("{}/policies/{i}", base(p)), &ctx.session.csrf, html! { p.empty { "This policy takes no configuration." } }, "Update policy"))
        } @else {
            (html::form(&format!("{}/policies/{i}", base(p)), &ctx.session.csrf, fields, "Update policy"))
        }
        p { a href={ (base(p)) "/policies" } { "Back to the policy chain" } }
    };
    tab_page(ctx, p, "Policies", error.as_ref().map(|e| e.0.as_str()), content)
}

async fn policy_save(ctx: Ctx, Path((p, i)): Path<(String, usize)>, form: Form) -> Response {
    let config = match config_from_form(&form) {
        Ok(c) => c,
        Err(e) => return policy_page(&ctx, &p, i, None, Some((e, None))).await,
    };
    let mut current = chain(&ctx, &p).await;
    let Some(policy) = current.get_mut(i) else {
        return policies_page(&ctx, &p, Some("That policy is no longer in the chain.".into())).await;
    };
    policy["configuration"] = config.clone();
    let answer = put_chain(&ctx, &p, &current).await;
    if answer.ok() {
        Redirect::to(&format!("{}/policies", base(&p))).into_response()
    } else {
        policy_page(&ctx, &p, i, Some(config), Some(answer.error())).await
    }
}

// ------------------------------------------------------------------ try it

/// The close codes a page may show, with their meaning, as JSON for its script.
fn close_codes() -> String {
    let codes: Map<String, Value> =
        (1000..=1015).chain([3000, 4000]).map(|c| (c.to_string(), json!(super::analytics::close_meaning(c)))).collect();
    Value::Object(codes).to_string()
}

async fn try_it(ctx: Ctx, Path(p): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let product = ctx.get(&base(&p)).await;
    if !product.ok() {
        return super::pages::api_failure(&ctx, "Products", &product);
    }
    let pr = &product.body;
    let auth = &pr["authentication"];
    let apps: Vec<Value> = list(&ctx.get("/applications").await).into_iter().filter(|a| s(a, "product") == p).collect();
    let chosen = q.get("application").cloned().unwrap_or_default();
    let options: Vec<(String, String, bool)> = apps
        .iter()
        .filter_map(|a| {
            let query = match (a["user_key"].as_str(), a["app_id"].as_str()) {
                (Some(k), _) => format!("{}={}", auth["user_key_param"].as_str().unwrap_or("user_key"), url_encode(k)),
                (None, Some(id)) => format!(
                    "{}={}&{}={}",
                    auth["app_id_param"].as_str().unwrap_or("app_id"),
                    url_encode(id),
                    auth["app_key_param"].as_str().unwrap_or("app_key"),
                    url_encode(a["app_keys"][0].as_str().unwrap_or_default())
                ),
                _ => return None,
            };
            let label = format!("{} ({}, {})", s(a, "name"), s(a, "plan"), s(a, "state"));
            Some((query, label, a["id"].as_i64().is_some_and(|id| chosen == id.to_string())))
        })
        .collect();
    let ws =
        |key: &str| s(pr, key).trim_end_matches('/').replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    let content = html! {
        @if apps.is_empty() {
            p { "No application uses this product yet: create one under " a href="/accounts" { "Accounts" } "." }
        } @else {
            p { "Connects from this browser, with its own WebSocket API, to the gateway — the way your consumers will. When the gateway refuses the connection, this page asks it why." }
            div.card #try data-staging=(ws("staging_public_base_url")) data-production=(ws("production_public_base_url"))
                data-probe={ (base(&p)) "/try/probe" } data-close-codes=(close_codes()) {
                div.field {
                    label for="try-app" { "Application" }
                    select #try-app {
                        @for (query, label, selected) in &options { option value=(query) selected[*selected] { (label) } }
                        option value="" { "(no credentials)" }
                    }
                }
                div.field {
                    label for="try-env" { "Gateway" }
                    select #try-env { option value="staging" { "Staging" } option value="production" { "Production" } }
                }
                div.field { label for="try-path" { "Path" } input #try-path type="text" value="/"; }
                p { "URL: " code #try-url {} }
                button #try-connect type="button" { "Connect" }
                " "
                button.secondary #try-close type="button" disabled { "Close" }
                div.field { label for="try-message" { "Message" } input #try-message type="text" value="hello"; }
                button #try-send type="button" disabled { "Send" }
                div #try-why role="alert" hidden {}
                h2 { "Log" }
                div.log #try-log role="log" aria-live="polite" tabindex="0" aria-label="Connection log" {}
            }
        }
    };
    tab_page(&ctx, &p, "Try it", None, content)
}

/// Why a WebSocket to the product would be refused: the same upgrade request sent from
/// here to this process's gateway listener (a browser's WebSocket API hides the status
/// and body of a refused upgrade), with the gateway's status, its error and the fix.
async fn probe(
    State(console): State<Console>,
    ctx: Ctx,
    Path(p): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let refuse = |why: &str| axum::Json(json!({ "error": why })).into_response();
    let env = match q.get("env").map(String::as_str) {
        Some("staging") | None => "staging",
        Some("production") => "production",
        Some(_) => return refuse("`env` is staging or production"),
    };
    let path = q.get("path").map_or("/", String::as_str);
    if !path.starts_with('/') || path.starts_with("//") {
        return refuse("the path must start with a single `/`");
    }
    let product = ctx.get(&base(&p)).await;
    if !product.ok() {
        return axum::Json(json!({ "error": product.error().0 })).into_response();
    }
    let public = s(&product.body, &format!("{env}_public_base_url")).to_string();
    let host = tollgate_model::BaseUrl::parse(&public, &["http", "https"]).map(|b| b.host).unwrap_or_default();
    let target = match q.get("query").filter(|x| !x.is_empty()) {
        Some(query) => format!("{path}{}{query}", if path.contains('?') { "&" } else { "?" }),
        None => path.to_string(),
    };
    let Some(listener) = console.gateways.iter().find(|g| g.environment.as_str() == env) else {
        return axum::Json(json!({ "error": "this process runs no gateway to ask" })).into_response();
    };
    let (status, body) = match super::probe::upgrade(listener, &host, &target).await {
        Ok(answer) => answer,
        Err(e) => {
            return axum::Json(json!({ "error": format!("the gateway could not be asked: {e}") })).into_response();
        }
    };
    let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let code = error["error"]["code"].as_str().unwrap_or_default().to_string();
    let promoted = version_of(&ctx.get(&format!("{}/configs/{env}", base(&p))).await).is_some();
    let fix = explain(status, &code, env, promoted);
    axum::Json(json!({
        "environment": env,
        "status": status,
        "code": code,
        "message": error["error"]["message"].as_str().unwrap_or(body.trim()),
        "fix": fix,
    }))
    .into_response()
}

/// What to do about a refused upgrade, by the gateway's status and error code.
fn explain(status: u16, code: &str, env: &str, promoted: bool) -> String {
    match (status, code) {
        (101, _) => "The gateway accepts this upgrade now: the failure came after it (the backend closed the connection, or the network).".into(),
        (_, "unknown_host") if !promoted && env == "production" => {
            "Not promoted to production yet: promote the staging version on the Integration tab.".into()
        }
        (_, "unknown_host") if !promoted => "Not on staging yet: use Promote to Staging on the Integration tab.".into(),
        (_, "unknown_host") => format!("No product answers on this host on the {env} gateway: check the {env} public base URL (its host must be the one the browser uses), then promote again."),
        (_, "websocket_disabled") => "WebSocket is not enabled for this product: add the `websocket` policy on the Policies tab, then promote.".into(),
        (_, "bad_upgrade") => "The gateway found the upgrade request malformed.".into(),
        (_, "too_many_connections") => "The application has as many WebSockets open as its plan's max_connections: close one, or raise the cap.".into(),
        (_, "no_backend") => "No backend usage covers this path: add one on the Backends tab.".into(),
        (_, "upstream_tls") => "The backend's certificate is not trusted: the gateway's log says which and the fix (tls.ca_file or tls.server_name).".into(),
        (_, "upstream_unavailable") => "The backend refused the connection: is it running at its private base URL?".into(),
        (_, "upstream_timeout") => "The backend did not answer in time.".into(),
        (401, _) => "No credentials: pick an application, or check where the product expects them (Overview → Authentication).".into(),
        (403, _) => "The credentials are unknown, the key is wrong, or the application is suspended.".into(),
        (404, _) => "No mapping rule matches this method and path: add one on the Mapping rules tab, then promote.".into(),
        (429, _) => "A usage limit of the application's plan is used up: it resets at the time Retry-After gives.".into(),
        (503, _) => "The gateway is in maintenance or its counters are unreachable.".into(),
        _ => "See the gateway's error table (docs/gateway.md).".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_paths_split_into_sections() {
        assert_eq!(split_path("backends[0].tls.ca_pem"), ("backends", "[0].tls.ca_pem"));
        assert_eq!(split_path("product.authentication.mode"), ("authentication", "mode"));
        assert_eq!(split_path("product.mapping_rules[2].pattern"), ("mapping_rules", "[2].pattern"));
        assert_eq!(split_path("name"), ("name", ""));
        assert_eq!(words("max_message_bytes"), "Max message bytes");
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert!(explain(404, "unknown_host", "production", false).contains("Not promoted to production yet"));
        assert!(explain(400, "websocket_disabled", "staging", true).contains("`websocket` policy"));
        assert!(explain(429, "limits_exceeded", "staging", true).contains("Retry-After"));
    }
}
