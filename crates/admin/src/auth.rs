//! Admin tokens: stored as SHA-256 hashes (a leaked database reveals no token), looked
//! up by hash (so no comparison of secret bytes happens in our code at all), with
//! read-only tokens limited to GET. The first start creates a token and prints it
//! once, unless `TOLLGATE_ADMIN_TOKEN` provides one.

use crate::AdminState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::Row as _;
use std::sync::Arc;
use tollgate_store::{Store, now_millis};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("cannot read random bytes for a token: {0}")]
    Random(std::io::Error),
}

pub fn hash_token(token: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()))
}

fn random_token() -> Result<String, AuthError> {
    crate::random::random_hex(24).map_err(AuthError::Random)
}

/// Makes sure an admin token exists. With `from_env`, that token is (re)registered as
/// `env`; otherwise, if the store has no token yet, one is created and returned so the
/// caller can print it once.
pub async fn ensure_admin_token(store: &Store, from_env: Option<&str>) -> Result<Option<String>, AuthError> {
    let pool = store.pool();
    if let Some(token) = from_env {
        let hash = hash_token(token);
        let found = sqlx::query("SELECT id FROM admin_tokens WHERE token_hash = $1")
            .bind(hash.clone())
            .fetch_optional(pool)
            .await?;
        if found.is_none() {
            sqlx::query("DELETE FROM admin_tokens WHERE name = 'env'").execute(pool).await?;
            sqlx::query("INSERT INTO admin_tokens (name, token_hash, read_only, created_at) VALUES ('env', $1, 0, $2)")
                .bind(hash)
                .bind(now_millis())
                .execute(pool)
                .await?;
        }
        return Ok(None);
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens").fetch_one(pool).await?;
    if count > 0 {
        return Ok(None);
    }
    let token = random_token()?;
    sqlx::query("INSERT INTO admin_tokens (name, token_hash, read_only, created_at) VALUES ('initial', $1, 0, $2)")
        .bind(hash_token(&token))
        .bind(now_millis())
        .execute(pool)
        .await?;
    Ok(Some(token))
}

/// Adds a token (read-only or not); for tests and `tollgate` token management.
pub async fn add_token(store: &Store, name: &str, token: &str, read_only: bool) -> Result<(), AuthError> {
    sqlx::query("INSERT INTO admin_tokens (name, token_hash, read_only, created_at) VALUES ($1, $2, $3, $4)")
        .bind(name.to_string())
        .bind(hash_token(token))
        .bind(i64::from(read_only))
        .bind(now_millis())
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The caller's token, by name, for the audit log.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let unauthorized =
        || ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send `Authorization: Bearer <admin token>`");
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    let row = sqlx::query("SELECT name, read_only FROM admin_tokens WHERE token_hash = $1")
        .bind(hash_token(token))
        .fetch_optional(state.store.pool())
        .await
        .map_err(|e| ApiError::from(tollgate_store::StoreError::from(e)))?
        .ok_or_else(unauthorized)?;
    let name: String = row.try_get("name").unwrap_or_default();
    let read_only: i64 = row.try_get("read_only").unwrap_or(1);
    if read_only != 0 && req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "read_only", "this token may only read"));
    }
    req.extensions_mut().insert(Caller(name));
    let resp = next.run(req).await;
    if read_only == 0 {
        return Ok(resp);
    }
    // A token that may only read sees no private key (a product's `key_pem`, a
    // backend's `client_key_pem`): reading is for dashboards and audits, and a key read
    // is a key leaked.
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) if bytes.windows(16).any(|w| w == b"PRIVATE KEY-----") => {
            hide_private_keys(&mut v);
            axum::body::Bytes::from(v.to_string())
        }
        _ => bytes,
    };
    let mut resp = Response::from_parts(parts, axum::body::Body::from(bytes));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    Ok(resp)
}

/// Replaces every text holding a PEM private key by `[redacted]`.
fn hide_private_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(t) if t.contains("PRIVATE KEY-----") => *t = "[redacted]".into(),
        serde_json::Value::Array(list) => list.iter_mut().for_each(hide_private_keys),
        serde_json::Value::Object(map) => map.values_mut().for_each(hide_private_keys),
        _ => {}
    }
}

/// Records every change made through the API: when, which token, what (method and
/// path), the outcome, the state before (for updates, deletions and application
/// actions), the request body and the response body (the state after).
pub async fn audit(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let caller = req.extensions().get::<Caller>().map(|c| c.0.clone()).unwrap_or_default();
    let method = req.method().to_string();
    // Nested routers see their own suffix; the log wants the path as requested.
    let uri = req.extensions().get::<axum::extract::OriginalUri>().map_or(req.uri(), |u| &u.0);
    let path = uri.path().to_string();
    // A whole configuration (`PUT /config`) may be large; its "before" would be the whole
    // export, so the audit keeps the request and the list of changes instead, and the
    // options it was applied with (`?promote=true`, `?dry_run=true`; other writes take
    // none).
    let whole = path == "/api/v1/config";
    let logged = match uri.path_and_query() {
        Some(p) if whole => p.as_str().to_string(),
        _ => path.clone(),
    };
    let (limit, words) = if whole { (CONFIG_BODY_LIMIT, "64 MiB") } else { (BODY_LIMIT, "1 MiB") };
    let before = if whole { None } else { state_before(&state, &method, &path).await };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        let message = format!("request bodies are limited to {words}");
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).into_response();
    };
    let request_text = kept(&bytes);
    // Written before the change runs, completed after: a process that stops in between
    // (after the change committed, or before) leaves the entry without its outcome
    // (status 0, listed as null) rather than no entry at all.
    let entry = sqlx::query(
        "INSERT INTO audit_log (at, token, method, path, status, before_doc, after_doc) VALUES ($1, $2, $3, $4, 0, $5, NULL) RETURNING id",
    )
    .bind(now_millis())
    .bind(caller)
    .bind(method)
    .bind(logged)
    .bind(Some(json_audit(before.as_deref().unwrap_or("null"), &request_text)))
    .fetch_one(state.store.pool())
    .await
    .and_then(|row| row.try_get::<i64, _>("id"));
    let entry = entry.map_err(|e| tracing::error!(error = %e, "cannot write the audit log")).ok();
    let resp = next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.unwrap_or_default();
    let after = kept(&bytes);
    if let Some(id) = entry {
        let outcome = sqlx::query("UPDATE audit_log SET status = $1, after_doc = $2 WHERE id = $3")
            .bind(i64::from(status.as_u16()))
            .bind((!after.is_empty()).then(|| redacted_text(&after)))
            .bind(id)
            .execute(state.store.pool())
            .await;
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot complete an audit log entry");
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The largest request body of the admin API, in bytes, but for `PUT /config`.
pub const BODY_LIMIT: usize = 1 << 20;

/// The largest body of `PUT /config` (a whole configuration), in bytes: 64 MiB, five
/// times a file of 10,000 products and 100,000 applications as JSON.
pub const CONFIG_BODY_LIMIT: usize = 64 << 20;

/// A body as the audit log keeps it: its text up to [`BODY_LIMIT`] bytes, else only its
/// size (a whole configuration's request, or its list of 100,000 changes, would make
/// the log the biggest table of the store).
fn kept(bytes: &[u8]) -> String {
    match bytes.len() <= BODY_LIMIT {
        true => String::from_utf8_lossy(bytes).into_owned(),
        false => serde_json::Value::String(format!("[not kept: {} bytes]", bytes.len())).to_string(),
    }
}

/// The resource a change touches, read before the change: the same path for PUT and
/// DELETE, the application for its actions (`…/suspend`, `…/keys`, …).
async fn state_before(state: &Arc<AdminState>, method: &str, path: &str) -> Option<String> {
    use tower::ServiceExt;
    let target = match method {
        "PUT" | "DELETE" => path.to_string(),
        "POST" if path.starts_with("/api/v1/applications/") => path
            .trim_start_matches("/api/v1/applications/")
            .split('/')
            .next()
            .map(|a| format!("/api/v1/applications/{a}"))?,
        _ => return None,
    };
    let inner = target.strip_prefix("/api/v1")?.to_string();
    let req = Request::builder().uri(inner).body(axum::body::Body::empty()).ok()?;
    let resp = crate::resources::routes().with_state(state.clone()).oneshot(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The audit's `before` column holds `{"before": …, "request": …}`.
fn json_audit(before: &str, request: &str) -> String {
    let parse = |t: &str| serde_json::from_str(t).unwrap_or(serde_json::Value::String(t.to_string()));
    // A body that is not JSON was refused (400) and cannot be searched for secrets
    // reliably (form-encoded, escaped): only its size is kept.
    let request = match request.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::from_str(request).unwrap_or_else(|_| not_kept(request.len())),
    };
    let mut doc = serde_json::json!({ "before": parse(before), "request": request });
    redact(&mut doc);
    doc.to_string()
}

/// What the audit log keeps of a request body that is not JSON.
fn not_kept(bytes: usize) -> serde_json::Value {
    serde_json::Value::String(format!("[not JSON, {bytes} bytes, not kept]"))
}

/// Keys whose values are secrets: admin tokens, application keys, passwords, HMAC
/// secrets. Their values never reach the audit log.
const SECRET_KEYS: [&str; 7] = ["token", "user_key", "app_key", "app_keys", "secret", "password", "client_secret"];

/// Replaces every secret in `v` by `[redacted sha256:…]` (the first 12 hex digits of
/// its SHA-256: enough to tell two values apart in the log, useless to use one) — the
/// values of [`SECRET_KEYS`], and any text holding a PEM private key.
pub(crate) fn redact(v: &mut serde_json::Value) {
    use serde_json::Value;
    fn hidden(text: &str) -> Value {
        // Already redacted (a history pass over redacted entries changes nothing).
        if text.starts_with("[redacted") {
            return Value::String(text.to_owned());
        }
        let digest = hex::encode(&ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref()[..6]);
        Value::String(format!("[redacted sha256:{digest}]"))
    }
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) {
                    match item {
                        Value::String(t) => *item = hidden(t),
                        Value::Array(list) => {
                            for x in list.iter_mut() {
                                if let Value::String(t) = x {
                                    *x = hidden(t);
                                }
                            }
                        }
                        other => redact(other),
                    }
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(redact),
        Value::String(t) if t.contains("PRIVATE KEY-----") => *v = hidden(t),
        // Credentials in a header value a policy sets (`Authorization: Bearer …`).
        Value::String(t) if has_auth_scheme(t) => *v = hidden(t),
        // A password in a URL's user information (`http://user:password@host/`).
        Value::String(t) => {
            if let Some(without) = url_password_redacted(t, |p| match hidden(p) {
                Value::String(h) => h,
                _ => String::new(),
            }) {
                *t = without;
            }
        }
        _ => {}
    }
}

/// Whether `text` is credentials with an HTTP authentication scheme (RFC 9110 §11):
/// `Bearer` or `Basic` and one token of 8 characters or more (not "Basic plan").
fn has_auth_scheme(text: &str) -> bool {
    let Some((scheme, token)) = text.trim().split_once(' ') else { return false };
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic"))
        && token.len() >= 8
        && !token.contains(char::is_whitespace)
}

/// `text` with the password of a URL's user information replaced by `hide(password)`;
/// `None` when it has none.
fn url_password_redacted(text: &str, hide: impl Fn(&str) -> String) -> Option<String> {
    let scheme_end = text.find("://")? + 3;
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    let password = &rest[colon + 1..at];
    Some(format!("{}{}:{}{}", &text[..scheme_end], &rest[..colon], hide(password), &rest[at..]))
}

/// Text for the audit log, its secrets redacted (JSON parsed and written back; any
/// other text kept unless it holds a private key).
fn redacted_text(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            // An entry written before non-JSON bodies were left out: its `request` is
            // that body's text (a JSON body is never a bare string).
            if let Some(request) = v.get_mut("request")
                && let serde_json::Value::String(t) = request
                && !t.starts_with("[not JSON")
                && !t.starts_with("[not kept")
            {
                *request = not_kept(t.len());
            }
            redact(&mut v);
            v.to_string()
        }
        Err(_) if text.contains("PRIVATE KEY-----") => "[redacted]".to_string(),
        Err(_) => text.to_string(),
    }
}

/// Redacts the secrets that entries written before redaction existed may hold (run
/// at start; a redacted entry stays as it is).
pub async fn redact_audit_history(store: &Store) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query("SELECT id, before_doc, after_doc FROM audit_log").fetch_all(store.pool()).await?;
    let mut changed = 0;
    for r in rows {
        let id: i64 = r.try_get("id")?;
        let before: Option<String> = r.try_get("before_doc")?;
        let after: Option<String> = r.try_get("after_doc")?;
        let (b2, a2) = (before.as_deref().map(redacted_text), after.as_deref().map(redacted_text));
        if b2 != before || a2 != after {
            sqlx::query("UPDATE audit_log SET before_doc = $1, after_doc = $2 WHERE id = $3")
                .bind(b2)
                .bind(a2)
                .bind(id)
                .execute(store.pool())
                .await?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// `GET /api/v1/audit`: the newest entries first.
pub async fn audit_list(
    State(state): State<Arc<AdminState>>,
    crate::resources::Q(q): crate::resources::Q<AuditQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = sqlx::query(
        "SELECT id, at, token, method, path, status, before_doc, after_doc FROM audit_log ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(state.store.pool())
    .await
    .map_err(|e| ApiError::from(tollgate_store::StoreError::from(e)))?;
    let parse = |t: Option<String>| t.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)));
    let entries = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.try_get::<i64, _>("id").unwrap_or_default(),
                "at": r.try_get::<i64, _>("at").unwrap_or_default(),
                "token": r.try_get::<String, _>("token").unwrap_or_default(),
                "method": r.try_get::<String, _>("method").unwrap_or_default(),
                "path": r.try_get::<String, _>("path").unwrap_or_default(),
                // 0: the entry's outcome is not known (see `audit`).
                "status": r.try_get::<i64, _>("status").ok().filter(|s| *s != 0),
                "before": parse(r.try_get::<Option<String>, _>("before_doc").unwrap_or_default()).map(|v| v["before"].clone()),
                "request": parse(r.try_get::<Option<String>, _>("before_doc").unwrap_or_default()).map(|v| v["request"].clone()),
                "after": parse(r.try_get::<Option<String>, _>("after_doc").unwrap_or_default()),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::Value::Array(entries)))
}

#[derive(serde::Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    #[serde(default)]
    read_only: bool,
}

/// `POST /api/v1/tokens`: a new token, shown once in the response.
pub async fn token_create(
    State(state): State<Arc<AdminState>>,
    crate::resources::Body(body): crate::resources::Body<NewToken>,
) -> Result<Response, ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("is empty").field("name"));
    }
    let token =
        random_token().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match add_token(&state.store, &body.name, &token, body.read_only).await {
        Ok(()) => {}
        Err(AuthError::Store(e)) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
            return Err(ApiError::conflict(format!("a token named `{}` exists", body.name)).field("name"));
        }
        Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
    }
    let v = serde_json::json!({ "name": body.name, "read_only": body.read_only, "token": token });
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

/// `GET /api/v1/tokens`: names and rights, never the tokens.
pub async fn token_list(State(state): State<Arc<AdminState>>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let rows = sqlx::query("SELECT name, read_only, created_at FROM admin_tokens ORDER BY id")
        .fetch_all(state.store.pool())
        .await
        .map_err(|e| ApiError::from(tollgate_store::StoreError::from(e)))?;
    Ok(axum::Json(serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.try_get::<String, _>("name").unwrap_or_default(),
                    "read_only": r.try_get::<i64, _>("read_only").unwrap_or(1) != 0,
                    "created_at": r.try_get::<i64, _>("created_at").unwrap_or_default(),
                })
            })
            .collect(),
    )))
}

/// `DELETE /api/v1/tokens/{name}`.
pub async fn token_delete(
    State(state): State<Arc<AdminState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let done = sqlx::query("DELETE FROM admin_tokens WHERE name = $1")
        .bind(name.clone())
        .execute(state.store.pool())
        .await
        .map_err(|e| ApiError::from(tollgate_store::StoreError::from(e)))?;
    if done.rows_affected() == 0 {
        Err(ApiError::not_found(&format!("token `{name}`")))
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_and_credentials_in_header_values_are_redacted() {
        let mut v = serde_json::json!({
            "private_base_url": "http://admin:S3CRET@10.0.0.1:8080/v1",
            "plain": "http://host/path?a=b@c",
            "headers": [{ "op": "set", "header": "Authorization", "value": "Bearer UPSTREAMSECRET123" }],
        });
        redact(&mut v);
        let text = v.to_string();
        assert!(!text.contains("S3CRET") && !text.contains("UPSTREAMSECRET123"), "{text}");
        assert!(text.contains("http://admin:[redacted sha256:") && text.contains("@10.0.0.1:8080/v1"), "{text}");
        assert!(text.contains("http://host/path?a=b@c"), "no user information: kept: {text}");
        let mut plain = serde_json::json!({ "description": "Basic plan for everyone" });
        redact(&mut plain);
        assert_eq!(plain["description"], "Basic plan for everyone");
    }
}
