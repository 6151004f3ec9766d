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

pub use auth::{AuthError, add_token, ensure_admin_token, hash_token};
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
        }
    }

    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::audit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    // The document is public, like any API description.
    let doc = Arc::new(openapi::document());
    let openapi = axum::routing::get(move || {
        let doc = doc.clone();
        async move { axum::Json((*doc).clone()) }
    });
    let gateways = state.gateways.clone();
    let app = Router::new()
        .route("/api/v1/openapi.json", openapi)
        .nest("/api/v1", api)
        .merge(resources::open_routes())
        .with_state(state);
    // The console at `/` calls the API above in process.
    app.clone().merge(console::router(app, gateways))
}
