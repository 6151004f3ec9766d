//! The `tollgate` binary's library: command-line surface and process wiring. Kept as a
//! library so integration tests can run a whole gateway in-process on port 0.

pub mod admin;
pub mod check;
pub mod cli;
pub mod client;
pub mod demo;
pub mod serve;
pub mod ws;

/// Logs to stderr; `RUST_LOG` (e.g. `tollgate=debug`) overrides `--log`.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
