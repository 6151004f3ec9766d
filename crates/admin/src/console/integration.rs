//! A product's integration: the draft against staging and staging against production
//! with a readable diff, "Promote to Staging" and "Promote to Production", version
//! history with rollback, ready examples; its policy chain, configured through forms
//! generated from each policy's JSON schema; and "Try it", a WebSocket client in the
//! page.

use super::html::{self, Field, esc, table, url_encode};
use super::pages::{base, tab_page};
use super::{Answer, Console, Ctx, Form, list, s};
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/products/{p}/integration", get(integration))
        .route("/products/{p}/integration/deploy", post(deploy))
        .route("/products/{p}/integration/promote", post(promote))
        .route("/products/{p}/policies", get(policies).post(policy_add))
        .route("/products/{p}/policies/{i}", get(policy_edit).post(policy_save))
        .route("/products/{p}/policies/{i}/{action}", post(policy_action))
        .route("/products/{p}/try", get(try_it))
}

// ------------------------------------------------------------------ integration

/// A diff as a table: one row per changed value.
fn diff_table(answer: &Answer, caption: &str) -> String {
    if !answer.ok() {
        return format!(r#"<p class="error">{}</p>"#, esc(&answer.error().0));
    }
    let changes = answer.body["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        return r#"<p class="empty">No changes.</p>"#.into();
    }
    let show =
        |v: &Value| if v.is_null() { "—".to_string() } else { format!("<code>{}</code>", esc(&v.to_string())) };
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                format!("<code>{}</code>", esc(s(c, "path"))),
                format!(r#"<span class="diff-from">{}</span>"#, show(&c["from"])),
                format!(r#"<span class="diff-to">{}</span>"#, show(&c["to"])),
            ]
        })
        .collect();
    table(caption, &["Setting", "Now", "After promote"], &rows)
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
        return tab_page(ctx, p, "Integration", Some(&product.error().0), String::new());
    }
    let staging = ctx.get(&format!("{}/configs/staging", base(p))).await;
    let production = ctx.get(&format!("{}/configs/production", base(p))).await;
    let to_staging = ctx.get(&format!("{}/configs/diff?from=staging&to=draft", base(p))).await;
    let to_production = ctx.get(&format!("{}/configs/diff?from=production&to=staging", base(p))).await;
    let v = |a: Option<i64>| a.map_or_else(|| "none yet".to_string(), |n| format!("version {n}"));
    let csrf = &ctx.session.csrf;
    let history: Vec<Vec<String>> = list(&production)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n = c["version"].as_i64().unwrap_or(0);
            vec![
                format!("version {n}"),
                html::time(&c["created_at"]),
                if i == 0 { "current".into() } else { rollback_button(p, csrf, n) },
            ]
        })
        .collect();
    let staged: Vec<Vec<String>> = list(&staging)
        .iter()
        .map(|c| {
            let n = c["version"].as_i64().unwrap_or(0);
            vec![format!("version {n}"), html::time(&c["created_at"]), rollback_button(p, csrf, n)]
        })
        .collect();
    let pr = &product.body;
    let auth = &pr["authentication"];
    let key_param = auth["user_key_param"].as_str().unwrap_or("user_key");
    let creds = if auth["mode"].as_str() == Some("app_id_app_key") {
        format!(
            "{}=APP_ID&{}=APP_KEY",
            auth["app_id_param"].as_str().unwrap_or("app_id"),
            auth["app_key_param"].as_str().unwrap_or("app_key")
        )
    } else {
        format!("{key_param}=USER_KEY")
    };
    let staging_url = s(pr, "staging_public_base_url").trim_end_matches('/').to_string();
    let ws_url = staging_url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    let examples = format!(
        "<pre>curl -i '{su}/?{creds}'\n\ntollgate ws '{wu}/?{creds}'\n\n// in a browser console\nconst ws = new WebSocket('{wu}/?{creds}');\nws.onmessage = (e) =&gt; console.log(e.data);\nws.onopen = () =&gt; ws.send('hello');</pre>",
        su = esc(&staging_url),
        wu = esc(&ws_url),
        creds = esc(&creds),
    );
    let notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(&n))).unwrap_or_default();
    let content = notice
        + &format!(
            "<p>Staging runs <strong>{}</strong>; production runs <strong>{}</strong>.</p>",
            v(version_of(&staging)),
            v(version_of(&production))
        )
        + "<h2>Promote to Staging</h2><p>What the draft changes against the staging version:</p>"
        + &diff_table(&to_staging, "Draft against staging")
        + &html::button(&format!("{}/integration/deploy", base(p)), csrf, "Promote to Staging", None)
        + "<h2>Promote to Production</h2><p>What the staging version changes against production:</p>"
        + &diff_table(&to_production, "Staging against production")
        + &html::button(
            &format!("{}/integration/promote", base(p)),
            csrf,
            "Promote to Production",
            Some("Promote the staging version to production?"),
        )
        + "<h2>Try the staging gateway</h2>"
        + &examples
        + &format!(r#"<p>Or in this page: <a href="{}/try">Try it</a>.</p>"#, base(p))
        + "<h2>History</h2>"
        + &table("Production versions (newest first)", &["Version", "Promoted at", ""], &history)
        + &table("Staging versions (newest first)", &["Version", "Created at", ""], &staged);
    tab_page(ctx, p, "Integration", error.as_deref(), content)
}

fn rollback_button(p: &str, csrf: &str, version: i64) -> String {
    format!(
        r#"<form method="post" action="{}/integration/promote" class="inline" data-confirm="Put version {version} on production?"><input type="hidden" name="_csrf" value="{}"><input type="hidden" name="version" value="{version}"><button type="submit" class="secondary">Promote version {version} to production</button></form>"#,
        base(p),
        esc(csrf)
    )
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
    integration_page(&ctx, &p, Some(format!("Version {} is on production.", answer.body["version"])), None).await
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
    let rows: Vec<Vec<String>> = current
        .iter()
        .enumerate()
        .map(|(i, pol)| {
            let name = s(pol, "name");
            let enabled = pol["enabled"].as_bool().unwrap_or(true);
            let here = format!("{}/policies/{i}", base(p));
            let mut actions = String::new();
            if i > 0 {
                actions += &html::button(&format!("{here}/up"), csrf, "Move up", None);
            }
            if i + 1 < n {
                actions += &html::button(&format!("{here}/down"), csrf, "Move down", None);
            }
            actions += &html::button(&format!("{here}/toggle"), csrf, if enabled { "Disable" } else { "Enable" }, None);
            actions +=
                &html::button(&format!("{here}/remove"), csrf, "Remove", Some("Remove this policy from the chain?"));
            let summary = catalogue.iter().find(|c| s(c, "name") == name).map(|c| s(c, "summary")).unwrap_or_default();
            vec![
                (i + 1).to_string(),
                html::link(&here, name) + &format!(r#"<br><span class="hint">{}</span>"#, esc(summary)),
                if enabled { "enabled".into() } else { "disabled".into() },
                actions,
            ]
        })
        .collect();
    let options: Vec<(String, String)> = catalogue
        .iter()
        .map(|c| (s(c, "name").to_string(), format!("{} — {}", s(c, "name"), s(c, "summary"))))
        .collect();
    let add = html::form(
        &format!("{}/policies", base(p)),
        csrf,
        &html::select("Policy", "name", &options, "websocket"),
        "Add policy",
    );
    let content = "<p>Policies run in this order; <code>tollgate</code> (authentication, mapping rules, limits) runs last unless placed elsewhere.</p>".to_string()
        + &table("Policy chain", &["#", "Policy", "State", ""], &rows)
        + "<h2>Add from the catalogue</h2>"
        + &add;
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

/// Form fields for a JSON schema object: scalars as inputs (dotted names for nested
/// objects), enums as selects, anything else (arrays, maps) as JSON in a text area.
fn schema_fields(schema: &Value, defs: &Value, prefix: &str, value: &Value, out: &mut String) {
    let resolve = |s: &Value| -> Value {
        let r = s["$ref"].as_str().or_else(|| s["allOf"][0]["$ref"].as_str());
        match r.and_then(|r| r.rsplit('/').next()) {
            Some(name) => defs[name].clone(),
            None => match s["anyOf"].as_array() {
                // Option<T>: the non-null branch.
                Some(branches) => branches.iter().find(|b| b["type"] != "null").cloned().unwrap_or(Value::Null),
                None => s.clone(),
            },
        }
    };
    let Some(props) = schema["properties"].as_object() else { return };
    for (key, prop) in props {
        let prop = resolve(prop);
        let prop = if prop["$ref"].is_string() || prop["anyOf"].is_array() { resolve(&prop) } else { prop };
        let name = format!("{prefix}{key}");
        let current = &value[key];
        let hint = prop["description"].as_str().unwrap_or_default();
        let kind = prop["type"].as_str().or_else(|| prop["type"][0].as_str()).unwrap_or_default();
        if let Some(choices) = prop["enum"].as_array() {
            let mut opts = vec![(String::new(), "(default)".to_string())];
            opts.extend(choices.iter().filter_map(Value::as_str).map(|c| (c.to_string(), c.to_string())));
            *out += &html::select(key, &name, &opts, current.as_str().unwrap_or_default());
        } else if kind == "object" && prop["properties"].is_object() {
            *out += &format!("<fieldset><legend>{}</legend>", esc(key));
            if !hint.is_empty() {
                *out += &format!(r#"<p class="hint">{}</p>"#, esc(hint));
            }
            schema_fields(&prop, defs, &format!("{name}."), current, out);
            *out += "</fieldset>";
        } else if kind == "boolean" {
            let v = if current.as_bool() == Some(true) { "true" } else { "" };
            *out += &Field::text(key, &name, v).kind("checkbox").hint(hint).html(None);
        } else if kind == "integer" || kind == "number" {
            *out += &Field::text(key, &name, &current.as_f64().map(|n| n.to_string()).unwrap_or_default())
                .kind("number")
                .hint(hint)
                .html(None);
        } else if kind == "string" {
            *out += &Field::text(key, &name, current.as_str().unwrap_or_default()).hint(hint).html(None);
        } else {
            let text = if current.is_null() {
                String::new()
            } else {
                serde_json::to_string_pretty(current).unwrap_or_default()
            };
            *out += &Field::text(key, &format!("{name}:json"), &text)
                .kind("textarea")
                .hint(&format!("{hint} (JSON)"))
                .html(None);
        }
    }
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

async fn policy_page(ctx: &Ctx, p: &str, i: usize, draft: Option<Value>, error: Option<String>) -> Response {
    let current = chain(ctx, p).await;
    let Some(policy) = current.get(i) else {
        return policies_page(ctx, p, Some("That policy is no longer in the chain.".into())).await;
    };
    let name = s(policy, "name");
    let catalogue = list(&ctx.get("/policies").await);
    let schema = catalogue.iter().find(|c| s(c, "name") == name).map(|c| c["schema"].clone()).unwrap_or(Value::Null);
    let defs = if schema["$defs"].is_object() { schema["$defs"].clone() } else { schema["definitions"].clone() };
    let value = draft.unwrap_or_else(|| policy["configuration"].clone());
    let mut fields = String::new();
    schema_fields(&schema, &defs, "", &value, &mut fields);
    if fields.is_empty() {
        fields = r#"<p class="empty">This policy takes no configuration.</p>"#.into();
    }
    let content = format!("<h2>Configure <code>{}</code></h2>", esc(name))
        + &html::form(&format!("{}/policies/{i}", base(p)), &ctx.session.csrf, &fields, "Update policy")
        + &format!(r#"<p><a href="{}/policies">Back to the policy chain</a></p>"#, base(p));
    tab_page(ctx, p, "Policies", error.as_deref(), content)
}

async fn policy_save(ctx: Ctx, Path((p, i)): Path<(String, usize)>, form: Form) -> Response {
    let config = match config_from_form(&form) {
        Ok(c) => c,
        Err(e) => return policy_page(&ctx, &p, i, None, Some(e)).await,
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
        policy_page(&ctx, &p, i, Some(config), Some(answer.error().0)).await
    }
}

// ------------------------------------------------------------------ try it

async fn try_it(ctx: Ctx, Path(p): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let product = ctx.get(&base(&p)).await;
    if !product.ok() {
        return tab_page(&ctx, &p, "Try it", Some(&product.error().0), String::new());
    }
    let pr = &product.body;
    let auth = &pr["authentication"];
    let apps: Vec<Value> = list(&ctx.get("/applications").await).into_iter().filter(|a| s(a, "product") == p).collect();
    let chosen = q.get("application").cloned().unwrap_or_default();
    let mut options = String::new();
    for a in &apps {
        let query = match (a["user_key"].as_str(), a["app_id"].as_str()) {
            (Some(k), _) => format!("{}={}", auth["user_key_param"].as_str().unwrap_or("user_key"), url_encode(k)),
            (None, Some(id)) => format!(
                "{}={}&{}={}",
                auth["app_id_param"].as_str().unwrap_or("app_id"),
                url_encode(id),
                auth["app_key_param"].as_str().unwrap_or("app_key"),
                url_encode(a["app_keys"][0].as_str().unwrap_or_default())
            ),
            _ => continue,
        };
        let selected = if a["id"].as_i64().is_some_and(|id| chosen == id.to_string()) { " selected" } else { "" };
        options += &format!(
            r#"<option value="{}"{selected}>{} ({})</option>"#,
            esc(&query),
            esc(s(a, "name")),
            esc(s(a, "plan"))
        );
    }
    let ws = |key: &str| {
        let url = s(pr, key).trim_end_matches('/').replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        esc(&url)
    };
    let content = if apps.is_empty() {
        r#"<p>No application uses this product yet: create one under <a href="/accounts">Accounts</a>.</p>"#.to_string()
    } else {
        format!(
            r#"<p>Connects from this browser, with its own WebSocket API, to the gateway — the way your consumers will.</p>
<div class="card" id="try" data-staging="{staging}" data-production="{production}">
<div class="field"><label for="try-app">Application</label><select id="try-app">{options}</select></div>
<div class="field"><label for="try-env">Gateway</label><select id="try-env"><option value="staging">Staging</option><option value="production">Production</option></select></div>
<div class="field"><label for="try-path">Path</label><input id="try-path" type="text" value="/"></div>
<p>URL: <code id="try-url"></code></p>
<button type="button" id="try-connect">Connect</button> <button type="button" id="try-close" class="secondary" disabled>Close</button>
<div class="field"><label for="try-message">Message</label><input id="try-message" type="text" value="hello"></div>
<button type="button" id="try-send" disabled>Send</button>
<h2>Log</h2><div class="log" id="try-log" role="log" aria-live="polite"></div>
</div>"#,
            staging = ws("staging_public_base_url"),
            production = ws("production_public_base_url"),
        )
    };
    tab_page(&ctx, &p, "Try it", None, content)
}
