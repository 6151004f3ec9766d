#![warn(missing_docs)]
//! Tollgate's data plane: listeners, the policy chain, authentication, mapping rules,
//! usage limits, and the HTTP and WebSocket proxy.
//!
//! The gateway depends on the configuration model and the counters only. It receives
//! compiled [`Snapshot`]s through a [`SnapshotHandle`] that the binary swaps when the
//! configuration changes; requests read the current snapshot without a lock and
//! established connections are never interrupted by a swap.
//!
//! A request's path through this crate, top-down:
//!
//! ```text
//! server.rs     accept (connection cap, TLS + ALPN), HTTP/1.1 or HTTP/2
//! deadline.rs   a deadline for every state of a connection; making room when full
//! proxy/        fields.rs: one Host, HTTP/2 field rules; the canonical path; host → product
//! policy/       rewrite phase → access phase (the `tollgate` policy: credentials,
//!               application, mapping rules → usage)
//! proxy/        limits.rs: edge limits, the WebSocket cap, plan limits (all-or-nothing)
//!               exchange.rs: backend usage by longest path prefix → upstream request
//!               phase → upstream/ (pooled, TLS-verified) → response phase → client
//!               upgrade.rs: a WebSocket upgrade, then relay/ (frames, metering, closes)
//! refusal.rs    every way a request is refused or fails, as one type (`Refusal`)
//! rescue.rs     the one place where a refusal becomes a response, a log line, a metric
//! ```

pub mod analytics;
mod auth;
pub mod deadline;
pub mod files;
pub mod frames;
/// For the fuzz targets in `fuzz/` only: the private request-head checks, reachable.
#[doc(hidden)]
pub mod fuzzing;
pub mod logs;
pub mod mapping;
pub mod metrics;
pub mod path;
pub mod policy;
mod proxy;
pub mod proxy_protocol;
pub mod refusal;
pub mod relay;
pub mod rescue;
pub mod server;
pub mod session;
mod smuggling;
pub mod snapshot;
pub mod sni;
pub mod trace;
pub mod upstream;

pub use deadline::MinDataRate;
pub use metrics::{Health, Metrics};
pub use proxy::{ExchangeDefaults, Gateway, Shared};
pub use server::{ListenerOptions, Workers, serve};
pub use snapshot::{
    Application, Applications, BackendSource, Environment, ProductSource, Snapshot, SnapshotHandle, Snapshots,
    Upstreams, check, check_loaded, compile, compile_environment,
};
pub use upstream::body::GatewayBody;
