//! The admin console: server-rendered HTML on the admin listener, with a few lines of
//! embedded script and no external assets.
//!
//! The console is a client of the admin API, in process: every page reads, and every
//! form writes, through the same `/api/v1` routes a script would call, with the
//! operator's own admin token. So the console validates exactly as the API does,
//! shows the API's error (with the field it names) next to the form, and every change
//! it makes is in the audit log under that token's name.
//!
//! Sessions: the login form takes an admin token; the browser gets a random session id
//! in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`), the token stays on the
//! server. Every form carries the session's CSRF token, checked on every POST, and a
//! POST whose `Origin` is not the console's own is refused. Sessions live in the
//! process's memory (12 hours): behind a load balancer, pin the console to one node.

mod accounts;
mod analytics;
mod chart;
mod dashboard;
mod html;
mod integration;
mod pages;
mod probe;
mod product;

use crate::random::random_hex;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

pub use html::Page;

const COOKIE: &str = "tollgate_console";
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What the console's handlers share: the admin API to call, the sessions, and this
/// process's gateway listeners (for "Try it").
#[derive(Clone)]
pub struct Console {
    api: Router,
    sessions: Arc<Sessions>,
    gateways: Arc<[crate::GatewayListener]>,
    /// Peers whose `X-Forwarded-Proto` is believed, besides loopback.
    trusted_proxies: Arc<[tollgate_gateway::policy::ip_check::Cidr]>,
}

#[derive(Default)]
struct Sessions(Mutex<HashMap<String, Session>>);

/// A logged-in operator.
#[derive(Clone)]
pub struct Session {
    token: String,
    pub csrf: String,
    expires: Instant,
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.get(id).cloned()
    }

    fn create(&self, token: String) -> std::io::Result<String> {
        let id = random_hex(32)?;
        let session = Session { token, csrf: random_hex(32)?, expires: Instant::now() + LIFETIME };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), session);
        Ok(id)
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The console's routes, calling `api` (the admin API router) in process.
pub fn router(
    api: Router,
    gateways: Vec<crate::GatewayListener>,
    trusted_proxies: Vec<tollgate_gateway::policy::ip_check::Cidr>,
) -> Router {
    let console =
        Console { api, sessions: Arc::default(), gateways: gateways.into(), trusted_proxies: trusted_proxies.into() };
    let guarded = dashboard::routes()
        .merge(pages::routes())
        .merge(product::routes())
        .merge(accounts::routes())
        .merge(integration::routes())
        .merge(analytics::routes())
        .layer(axum::middleware::from_fn_with_state(console.clone(), require_session));
    Router::new()
        .route("/login", axum::routing::get(login_page).post(login))
        .route("/console.css", axum::routing::get(|| async { asset("text/css", html::CSS) }))
        .route("/console.js", axum::routing::get(|| async { asset("text/javascript", html::JS) }))
        .merge(guarded)
        .with_state(console)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
}

/// Every console page but the login page needs a session; without one the browser is
/// sent to log in (and brought back afterwards, for a page it asked for).
async fn require_session(State(console): State<Console>, mut req: Request, next: Next) -> Response {
    let session = session_id(req.headers()).and_then(|id| console.sessions.get(id));
    let Some(session) = session else {
        let back = if req.method() == Method::GET { req.uri().path_and_query().map(|p| p.as_str()) } else { None };
        let to = match back {
            Some(p) if p != "/" => format!("/login?next={}", html::url_encode(p)),
            _ => "/login".to_string(),
        };
        return Redirect::to(&to).into_response();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD && !same_origin(req.headers()) {
        return forbidden("this form was sent from another site");
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// A POST's `Origin` (when the browser sends one) must be the console's own host.
fn same_origin(headers: &HeaderMap) -> bool {
    // A browser says when a request comes from another site; a script sends neither.
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

fn forbidden(why: &str) -> Response {
    Page::bare("Refused")
        .status(StatusCode::FORBIDDEN)
        .para(why)
        .para("Go back, reload the page and try again.")
        .into_response()
}

/// A handler's view of the request: the session, and the admin API as its operator.
pub struct Ctx {
    pub session: Session,
    console: Console,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Self::Rejection> {
        let session =
            parts.extensions.get::<Session>().cloned().ok_or_else(|| Redirect::to("/login").into_response())?;
        Ok(Ctx { session, console: console.clone() })
    }
}

/// An admin API answer: the status and the JSON body (or `Null`).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message and the field it names, for a form to show.
    pub fn error(&self) -> (String, Option<String>) {
        let e = &self.body["error"];
        let message = e["message"].as_str().map_or_else(|| format!("the API answered {}", self.status), str::to_string);
        (message, e["field"].as_str().map(str::to_string))
    }
}

impl Ctx {
    /// Calls the admin API (`path` below `/api/v1`) with the operator's token.
    pub async fn api(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let mut req = Request::new(Body::from(body.map(Value::to_string).unwrap_or_default()));
        *req.method_mut() = method;
        match format!("/api/v1{path}").parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return Answer { status: StatusCode::BAD_REQUEST, body: Value::Null },
        }
        let headers = req.headers_mut();
        if let Ok(auth) = HeaderValue::from_str(&format!("Bearer {}", self.session.token)) {
            headers.insert(header::AUTHORIZATION, auth);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let resp = match self.console.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024).await.unwrap_or_default();
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.api(Method::GET, path, None).await
    }
}

/// A console form's fields, after its CSRF token was checked.
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The field's value, trimmed; `None` when missing or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl FromRequest<Console> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, console: &Console) -> Result<Self, Self::Rejection> {
        let session = req.extensions().get::<Session>().cloned();
        let axum::Form(fields): axum::Form<Vec<(String, String)>> = axum::Form::from_request(req, console)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
        let sent = fields.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str());
        match session {
            Some(s) if sent.is_some_and(|t| constant_time_eq(t.as_bytes(), s.csrf.as_bytes())) => Ok(Form(fields)),
            _ => Err(forbidden("the form's security token is missing or stale")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    login_form(q.next.as_deref(), None).into_response()
}

fn login_form(next: Option<&str>, error: Option<&str>) -> Page {
    let next = next.filter(|n| is_local_path(n)).unwrap_or("/");
    Page::bare("Log in").error(error).push(html::html! {
        form.card.narrow method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            div.field {
                label for="token" { "Admin token" }
                input #token name="token" type="password" autocomplete="current-password" required autofocus
                    aria-describedby="token-hint";
                span.hint #token-hint {
                    "The token " code { "tollgate serve" } " printed when it first started, or one made with "
                    code { "POST /api/v1/tokens" } "."
                }
            }
            button type="submit" { "Log in" }
        }
    })
}

/// Only paths on this console are followed after login (no open redirect).
fn is_local_path(p: &str) -> bool {
    // Parsed, not pattern-matched: a path and query (no scheme, no authority, no control
    // character or space, which browsers would drop: `/\t/evil.example` is `//evil…`),
    // starting with one `/`.
    p.parse::<axum::http::uri::PathAndQuery>().is_ok()
        && p.starts_with('/')
        && !p.starts_with("//")
        && p.bytes().all(|b| b > b' ' && b != 0x7f && b != b'\\')
}

async fn login(
    State(console): State<Console>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Response {
    // Another site must not log a browser in (login CSRF), as it must not post a form.
    if !same_origin(&headers) {
        return forbidden("this form was sent from another site");
    }
    let token = fields.get("token").map(|t| t.trim()).unwrap_or_default();
    let next = fields.get("next").map(String::as_str).filter(|n| is_local_path(n)).unwrap_or("/");
    if token.is_empty() {
        return login_form(Some(next), Some("Enter an admin token.")).status(StatusCode::UNAUTHORIZED).into_response();
    }
    let probe = Ctx {
        session: Session { token: token.to_string(), csrf: String::new(), expires: Instant::now() },
        console: console.clone(),
    };
    if !probe.get("/products?limit=1").await.ok() {
        return login_form(Some(next), Some("That token is not an admin token here."))
            .status(StatusCode::UNAUTHORIZED)
            .into_response();
    }
    let id = match console.sessions.create(token.to_string()) {
        Ok(id) => id,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("no randomness: {e}")).into_response(),
    };
    // `Secure` when the browser reached the console over https: through a TLS-terminating
    // proxy on this machine or one the operator lists (`--admin-trusted-proxies`), which
    // says so in `X-Forwarded-Proto`. Anyone else's word for it is not taken.
    let https = peer
        .is_some_and(|axum::Extension(ConnectInfo(p))| reached_over_https(p.ip(), &console.trusted_proxies, &headers));
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", LIFETIME.as_secs());
    let mut resp = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Whether a request from `peer` came over https, as a TLS-terminating proxy says in
/// `X-Forwarded-Proto` — believed from loopback and from the `trusted` proxies only.
fn reached_over_https(
    peer: std::net::IpAddr,
    trusted: &[tollgate_gateway::policy::ip_check::Cidr],
    headers: &HeaderMap,
) -> bool {
    (peer.is_loopback() || trusted.iter().any(|c| c.contains(peer)))
        && headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

pub(crate) async fn logout(State(console): State<Console>, headers: HeaderMap, _form: Form) -> Response {
    if let Some(id) = session_id(&headers) {
        console.sessions.remove(id);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tollgate_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

/// A string field of an API object (empty when missing).
fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The items of an API list answer (none when it is not a list).
fn list(a: &Answer) -> Vec<Value> {
    a.body.as_array().cloned().unwrap_or_default()
}

/// The API's error as `(field, message)`, when it names a field.
fn err_pair(e: &Option<(String, Option<String>)>) -> Option<(&str, &str)> {
    e.as_ref().and_then(|(m, f)| f.as_deref().map(|f| (f, m.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_gateway::policy::ip_check::Cidr;

    #[test]
    fn x_forwarded_proto_is_believed_from_loopback_and_listed_proxies_only() {
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        let trusted = [Cidr::parse("10.1.0.0/16").expect("cidr"), Cidr::parse("2001:db8::7").expect("ip")];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        for (peer, believed) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("10.1.200.3", true),
            ("2001:db8::7", true),
            ("::ffff:10.1.0.9", true),
            ("10.2.0.1", false),
            ("192.0.2.1", false),
            ("2001:db8::8", false),
        ] {
            assert_eq!(reached_over_https(ip(peer), &trusted, &https), believed, "{peer}");
        }
        assert!(!reached_over_https(ip("127.0.0.1"), &trusted, &HeaderMap::new()), "no header: plain http");
    }
}
