//! Tollgate's admin REST API (`/api/v1`, JSON, bearer tokens), in the vocabulary and
//! the YAML keys of the declarative configuration.
//!
//! Every write is validated against the whole configuration it would produce (drafts
//! may lack backend usages; `deploy` needs a complete product) and stored with
//! optimistic locking; then the gateways are told, through [`AdminState::changes`], to
//! rebuild their snapshots. The router is built by [`router`] and tested in-process.

mod apply;
mod auth;
pub mod console;
mod dashboard;
mod error;
pub mod live;
pub mod openapi;
pub mod random;
pub(crate) mod resources;
mod world;

pub use auth::{AuthError, add_token, ensure_admin_token, hash_token, redact_audit_history};
pub use error::ApiError;
pub use resources::health_router;
pub use world::{World, parse_proxy_config, proxy_config};

use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;
use tollgate_gateway::Metrics;
use tollgate_gateway::policy::Registry;
use tollgate_store::Store;

pub struct AdminState {
    pub store: Store,
    pub registry: Arc<Registry>,
    /// Bumped after every change the gateways must see.
    pub changes: watch::Sender<u64>,
    pub metrics: Option<Arc<Metrics>>,
    /// The usage counters the gateways decide with (for `applications/{app}/usage` and
    /// the dashboard's limits).
    pub counters: Option<Arc<tollgate_counters::Counters>>,
    /// This process's own gateway listeners, which the console's "Try it" asks when a
    /// browser cannot say why a WebSocket was refused.
    pub gateways: Vec<GatewayListener>,
    /// The generation of [`AdminState::changes`] this process's gateways serve, when
    /// they follow the same store: a write answers once they serve it.
    pub applied: Option<watch::Receiver<u64>>,
    /// Proxies in front of the admin listener whose `X-Forwarded-Proto` the console
    /// believes (besides loopback peers, always believed): a login through an https
    /// proxy gets a `Secure` cookie. `--admin-trusted-proxies`.
    pub trusted_proxies: Vec<tollgate_gateway::policy::ip_check::Cidr>,
    /// The time the live views read (usage windows, the dashboard's minutes): the
    /// gateways' clock, so both count the same window.
    pub clock: Arc<dyn tollgate_counters::Clock>,
}

/// One of this process's gateway listeners.
#[derive(Debug, Clone)]
pub struct GatewayListener {
    pub environment: tollgate_gateway::Environment,
    pub addr: std::net::SocketAddr,
    pub tls: bool,
}

impl AdminState {
    /// The state of an admin API on `store`, with no metrics, counters or gateways yet
    /// (set the fields before sharing it).
    pub fn new(store: Store, registry: Arc<Registry>) -> AdminState {
        AdminState {
            store,
            registry,
            changes: watch::channel(0).0,
            metrics: None,
            counters: None,
            gateways: Vec::new(),
            applied: None,
            trusted_proxies: Vec::new(),
            clock: Arc::new(tollgate_counters::SystemClock),
        }
    }

    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits (at most [`SETTLE`]) until this process's gateways serve every change made
    /// so far, so that a client that deploys, promotes or suspends and then calls the
    /// gateway meets the new configuration. Other gateway nodes follow by notification.
    pub async fn settle(&self) {
        let Some(applied) = &self.applied else { return };
        let target = *self.changes.borrow();
        let mut applied = applied.clone();
        let _ = tokio::time::timeout(SETTLE, applied.wait_for(|g| *g >= target)).await;
    }
}

/// The longest a write waits for this process's gateways to serve it.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// After a successful write, wait until this process's gateways serve it.
async fn settle(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let writes = !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let resp = next.run(req).await;
    if writes && resp.status().is_success() {
        state.settle().await;
    }
    resp
}

/// The admin API: `/api/v1/…` behind bearer tokens, `/status/*` and `/metrics` open,
/// and the console (HTML, behind a login) at `/`.
pub fn router(state: Arc<AdminState>) -> Router {
    // Layers run outside-in: the token is checked first, then the change is audited.
    let api = resources::routes()
        .merge(dashboard::routes())
        .route("/audit", axum::routing::get(auth::audit_list))
        .route("/tokens", axum::routing::get(auth::token_list).post(auth::token_create))
        .route("/tokens/{name}", axum::routing::delete(auth::token_delete))
        // Unknown paths and methods answer JSON like every other error.
        .fallback(|| async { ApiError::not_found("endpoint").field("path") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint takes other methods",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), settle))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::audit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    // The document is public, like any API description.
    let doc = Arc::new(openapi::document());
    let openapi = axum::routing::get(move || {
        let doc = doc.clone();
        async move { axum::Json((*doc).clone()) }
    });
    let gateways = state.gateways.clone();
    let trusted = state.trusted_proxies.clone();
    let app = Router::new()
        .route("/api/v1/openapi.json", openapi)
        .nest("/api/v1", api)
        .merge(resources::open_routes())
        .with_state(state);
    // The console at `/` calls the API above in process.
    app.clone().merge(console::router(app, gateways, trusted))
}
