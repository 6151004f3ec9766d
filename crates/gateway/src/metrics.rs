//! Process-wide gateway metrics as plain atomics, rendered in the Prometheus text
//! format. No labels beyond a fixed set, so recording is one relaxed atomic add with
//! no lock and no allocation.

use crate::snapshot::Environment;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Name, type, help, and where to read the value.
type Family = (&'static str, &'static str, &'static str, fn(&EnvMetrics) -> &AtomicU64);

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Default)]
pub struct EnvMetrics {
    responses: [AtomicU64; 5],
    rejected_limits: AtomicU64,
    upstream_errors: AtomicU64,
    websocket_upgrades: AtomicU64,
    websocket_open: AtomicU64,
    websocket_messages_up: AtomicU64,
    websocket_messages_down: AtomicU64,
    websocket_bytes_up: AtomicU64,
    websocket_bytes_down: AtomicU64,
    websocket_closed_by_gateway: AtomicU64,
    connections_refused: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    staging: EnvMetrics,
    production: EnvMetrics,
}

impl Metrics {
    pub fn env(&self, env: Environment) -> &EnvMetrics {
        match env {
            Environment::Staging => &self.staging,
            Environment::Production => &self.production,
        }
    }

    pub fn render(&self, out: &mut String) {
        const ENVS: [Environment; 2] = [Environment::Staging, Environment::Production];
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(out, "tollgate_responses_total", "counter", "Responses sent to clients, by status class.");
        for env in ENVS {
            for (class, v) in CLASSES.iter().zip(&self.env(env).responses) {
                let _ = writeln!(
                    out,
                    "tollgate_responses_total{{environment=\"{}\",class=\"{class}\"}} {}",
                    env.as_str(),
                    v.load(Relaxed)
                );
            }
        }
        let scalars: [Family; 10] = [
            (
                "tollgate_websocket_messages_up_total",
                "counter",
                "WebSocket messages from clients, counted when connections close.",
                |m| &m.websocket_messages_up,
            ),
            (
                "tollgate_websocket_messages_down_total",
                "counter",
                "WebSocket messages to clients, counted when connections close.",
                |m| &m.websocket_messages_down,
            ),
            (
                "tollgate_websocket_bytes_up_total",
                "counter",
                "WebSocket bytes from clients, counted when connections close.",
                |m| &m.websocket_bytes_up,
            ),
            (
                "tollgate_websocket_bytes_down_total",
                "counter",
                "WebSocket bytes to clients, counted when connections close.",
                |m| &m.websocket_bytes_down,
            ),
            (
                "tollgate_websocket_closed_by_gateway_total",
                "counter",
                "WebSockets the gateway closed (limits, sizes, revocation, shutdown).",
                |m| &m.websocket_closed_by_gateway,
            ),
            ("tollgate_limits_exceeded_total", "counter", "Requests refused by usage limits.", |m| &m.rejected_limits),
            ("tollgate_upstream_errors_total", "counter", "Requests that failed at the backend (502/504).", |m| {
                &m.upstream_errors
            }),
            ("tollgate_websocket_upgrades_total", "counter", "WebSocket upgrades proxied.", |m| &m.websocket_upgrades),
            ("tollgate_websocket_open", "gauge", "WebSocket connections open now.", |m| &m.websocket_open),
            (
                "tollgate_connections_refused_total",
                "counter",
                "Connections refused at the listener's connection limit.",
                |m| &m.connections_refused,
            ),
        ];
        for (name, kind, help, get) in scalars {
            head(out, name, kind, help);
            for env in ENVS {
                let _ =
                    writeln!(out, "{name}{{environment=\"{}\"}} {}", env.as_str(), get(self.env(env)).load(Relaxed));
            }
        }
    }
}

impl EnvMetrics {
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }
    pub fn limits_exceeded(&self) {
        self.rejected_limits.fetch_add(1, Relaxed);
    }
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    pub fn websocket_opened(&self) {
        self.websocket_upgrades.fetch_add(1, Relaxed);
        self.websocket_open.fetch_add(1, Relaxed);
    }
    pub fn websocket_closed(&self, totals: &crate::relay::Totals) {
        self.websocket_open.fetch_sub(1, Relaxed);
        self.websocket_messages_up.fetch_add(totals.messages_up, Relaxed);
        self.websocket_messages_down.fetch_add(totals.messages_down, Relaxed);
        self.websocket_bytes_up.fetch_add(totals.bytes_up, Relaxed);
        self.websocket_bytes_down.fetch_add(totals.bytes_down, Relaxed);
        if totals.closed_by_gateway.is_some() {
            self.websocket_closed_by_gateway.fetch_add(1, Relaxed);
        }
    }
}
