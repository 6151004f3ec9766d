//! Process-wide gateway metrics as plain atomics, rendered in the Prometheus text
//! format (the catalogue: docs/metrics.md). Labels come from fixed sets (environment,
//! status, direction, upgrade result, close initiator and code bucket) and from the
//! configuration (product), so the series stay bounded; recording on the request path
//! is relaxed atomic adds with no lock and no allocation (a product's metrics are found
//! once per configuration, then cached in the product; closes, recorded once per
//! connection, take a short lock).

use crate::relay::{Tally, Totals};
use crate::snapshot::Environment;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Name, type, help, and where to read the value.
type Family = (&'static str, &'static str, &'static str, fn(&EnvMetrics) -> &AtomicU64);

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Outcomes of a WebSocket upgrade request.
const UPGRADE_RESULTS: [&str; 5] = ["accepted", "unauthorized", "limited", "refused", "failed"];

/// Upper bounds (seconds) of the connection duration histogram's buckets.
const DURATION_BUCKETS: [f64; 9] = [1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0];

const DIRECTIONS: [&str; 2] = ["client_to_server", "server_to_client"];

/// One environment's metrics: responses, refusals, client connections, WebSockets.
#[derive(Debug, Default)]
pub struct EnvMetrics {
    responses: [AtomicU64; 5],
    rejected_limits: AtomicU64,
    upstream_errors: AtomicU64,
    connections_refused: AtomicU64,
    /// Client connections held now (WebSockets included).
    connections_open: AtomicU64,
    /// Client connections the gateway closed: idle past the header-read timeout, a
    /// client taking responses below the minimum data rate, closed to make room.
    connections_idle_closed: AtomicU64,
    connections_slow_closed: AtomicU64,
    connections_evicted: AtomicU64,
    /// By HTTP version (1.1, 2), then result.
    websocket_upgrades: [[AtomicU64; 5]; 2],
    websocket_open: AtomicU64,
    /// (initiator, code bucket) → closes.
    websocket_closes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Counts per bucket of `DURATION_BUCKETS`, then the overflow; and the sum in ms.
    websocket_durations: [AtomicU64; 10],
    websocket_duration_ms: AtomicU64,
}

/// The process's metrics, per environment and per product (see docs/metrics.md).
#[derive(Debug, Default)]
pub struct Metrics {
    staging: EnvMetrics,
    production: EnvMetrics,
    /// Per product and environment: responses by status, latency. Products come and
    /// go with the configuration; their series stay (counters must not go back).
    products: std::sync::RwLock<BTreeMap<ProductKey, Arc<ProductMetrics>>>,
}

/// (environment, product system_name).
type ProductKey = (&'static str, Box<str>);

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram: counts per bucket (then the overflow) and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 14],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one latency of `d`.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// One product's numbers in one environment.
#[derive(Debug)]
pub struct ProductMetrics {
    /// Responses by status code (100–599).
    statuses: Box<[AtomicU64; 500]>,
    /// From the request's arrival to its response head.
    pub latency: Histogram,
    /// From sending to the backend to its response head.
    pub upstream: Histogram,
    /// WebSocket connections open now.
    websocket_open: AtomicU64,
    /// WebSocket messages and bytes by direction, added as they are relayed (the
    /// environment's totals are the sum over its products).
    pub(crate) websocket_tally: Arc<Tally>,
}

impl Default for ProductMetrics {
    fn default() -> Self {
        ProductMetrics {
            statuses: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            latency: Histogram::default(),
            upstream: Histogram::default(),
            websocket_open: AtomicU64::new(0),
            websocket_tally: Arc::default(),
        }
    }
}

/// What a product has seen in one environment since the process started: the
/// dashboard's per-minute traffic is the difference between two of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProductTotals {
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [u64; 5],
    /// WebSocket messages from clients, from backends.
    pub messages: [u64; 2],
    /// WebSocket connections open now.
    pub websocket_open: u64,
}

impl ProductMetrics {
    /// What the product has seen so far.
    pub fn totals(&self) -> ProductTotals {
        let mut responses = [0; 5];
        for (i, v) in self.statuses.iter().enumerate() {
            responses[(i / 100).min(4)] += v.load(Relaxed);
        }
        let t = self.websocket_tally.get();
        ProductTotals { responses, messages: [t[0], t[1]], websocket_open: self.websocket_open.load(Relaxed) }
    }

    pub(crate) fn websocket_opened(&self) {
        self.websocket_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn websocket_closed(&self) {
        self.websocket_open.fetch_sub(1, Relaxed);
    }

    /// Counts a response with `status`, `took` after the request arrived.
    pub fn response(&self, status: u16, took: std::time::Duration) {
        if let Some(slot) = status.checked_sub(100).and_then(|i| self.statuses.get(usize::from(i))) {
            slot.fetch_add(1, Relaxed);
        }
        self.latency.observe(took);
    }
}

const ENVS: [Environment; 2] = [Environment::Staging, Environment::Production];

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Metrics {
    /// Every product's totals, by environment and product `system_name`.
    pub fn product_totals(&self) -> Vec<(Environment, String, ProductTotals)> {
        let products = self.products.read().unwrap_or_else(|e| e.into_inner());
        products
            .iter()
            .map(|((env, product), m)| {
                let env =
                    if *env == Environment::Staging.as_str() { Environment::Staging } else { Environment::Production };
                (env, product.to_string(), m.totals())
            })
            .collect()
    }

    /// A product's metrics in an environment (made on first use).
    pub fn product(&self, env: Environment, product: &str) -> Arc<ProductMetrics> {
        let key = (env.as_str(), Box::<str>::from(product));
        if let Some(m) = self.products.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return m.clone();
        }
        self.products.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone()
    }

    fn render_products(&self, out: &mut String) {
        let products = self.products.read().unwrap_or_else(|e| e.into_inner());
        head(out, "tollgate_requests_total", "counter", "Responses sent, by environment, product and status code.");
        for ((env, product), m) in products.iter() {
            for (i, v) in m.statuses.iter().enumerate() {
                let n = v.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_requests_total{{environment=\"{env}\",product=\"{product}\",status=\"{}\"}} {n}",
                        i + 100
                    );
                }
            }
        }
        head(out, "tollgate_product_websocket_open", "gauge", "WebSocket connections open now, by product.");
        for ((env, product), m) in products.iter() {
            let open = m.websocket_open.load(Relaxed);
            let _ =
                writeln!(out, "tollgate_product_websocket_open{{environment=\"{env}\",product=\"{product}\"}} {open}");
        }
        let name = "tollgate_product_websocket_messages_total";
        head(out, name, "counter", "WebSocket messages relayed, by product and direction.");
        for ((env, product), m) in products.iter() {
            for (dir, v) in DIRECTIONS.iter().zip(&m.websocket_tally.messages) {
                let v = v.load(Relaxed);
                let _ = writeln!(out, "{name}{{environment=\"{env}\",product=\"{product}\",direction=\"{dir}\"}} {v}");
            }
        }
        for (name, help, upstream) in [
            ("tollgate_request_duration_seconds", "From a request's arrival to its response head, by product.", false),
            ("tollgate_upstream_duration_seconds", "From sending to a backend to its response head, by product.", true),
        ] {
            head(out, name, "histogram", help);
            for ((env, product), m) in products.iter() {
                let h = if upstream { &m.upstream } else { &m.latency };
                h.render(out, name, &format!("environment=\"{env}\",product=\"{product}\""));
            }
        }
    }

    /// The metrics of `env`.
    pub fn env(&self, env: Environment) -> &EnvMetrics {
        match env {
            Environment::Staging => &self.staging,
            Environment::Production => &self.production,
        }
    }

    /// Appends every series in the Prometheus text format to `out`.
    pub fn render(&self, out: &mut String) {
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
        let scalars: [Family; 8] = [
            (
                "tollgate_limits_exceeded_total",
                "counter",
                "Requests refused by plan limits (usage limits, max_connections) or rate_limit policies.",
                |m| &m.rejected_limits,
            ),
            (
                "tollgate_upstream_errors_total",
                "counter",
                "Requests that failed at the backend: answered 502/504, or their response body failed after its head.",
                |m| &m.upstream_errors,
            ),
            ("tollgate_websocket_open", "gauge", "WebSocket connections open now.", |m| &m.websocket_open),
            (
                "tollgate_connections_refused_total",
                "counter",
                "Connections refused at the listener's connection limit.",
                |m| &m.connections_refused,
            ),
            ("tollgate_connections_open", "gauge", "Client connections held now.", |m| &m.connections_open),
            (
                "tollgate_connections_idle_closed_total",
                "counter",
                "Client connections closed after --header-read-timeout with no request in flight.",
                |m| &m.connections_idle_closed,
            ),
            (
                "tollgate_connections_slow_closed_total",
                "counter",
                "Client connections closed for taking responses below --min-data-rate.",
                |m| &m.connections_slow_closed,
            ),
            (
                "tollgate_connections_evicted_total",
                "counter",
                "Client connections closed to make room for a new one at the connection limit.",
                |m| &m.connections_evicted,
            ),
        ];
        for (name, kind, help, get) in scalars {
            head(out, name, kind, help);
            for env in ENVS {
                let _ =
                    writeln!(out, "{name}{{environment=\"{}\"}} {}", env.as_str(), get(self.env(env)).load(Relaxed));
            }
        }
        self.render_websocket(out);
        self.render_products(out);
    }

    fn render_websocket(&self, out: &mut String) {
        let name = "tollgate_websocket_upgrades_total";
        head(out, name, "counter", "WebSocket upgrade requests, by HTTP version and result.");
        for env in ENVS {
            for (version, results) in ["1.1", "2"].iter().zip(&self.env(env).websocket_upgrades) {
                for (result, v) in UPGRADE_RESULTS.iter().zip(results) {
                    let _ = writeln!(
                        out,
                        "{name}{{environment=\"{}\",version=\"{version}\",result=\"{result}\"}} {}",
                        env.as_str(),
                        v.load(Relaxed)
                    );
                }
            }
        }
        for (name, help, pick) in [
            ("tollgate_websocket_messages_total", "WebSocket messages relayed, by direction.", 0),
            ("tollgate_websocket_bytes_total", "WebSocket bytes relayed (frames as on the wire), by direction.", 1),
        ] {
            head(out, name, "counter", help);
            let products = self.products.read().unwrap_or_else(|e| e.into_inner());
            for env in ENVS {
                let mut sums = [0u64; 2];
                for ((_, _), m) in products.iter().filter(|((e, _), _)| *e == env.as_str()) {
                    let values = if pick == 0 { &m.websocket_tally.messages } else { &m.websocket_tally.bytes };
                    for (sum, v) in sums.iter_mut().zip(values) {
                        *sum += v.load(Relaxed);
                    }
                }
                for (dir, v) in DIRECTIONS.iter().zip(sums) {
                    let _ = writeln!(out, "{name}{{environment=\"{}\",direction=\"{dir}\"}} {v}", env.as_str());
                }
            }
        }
        let name = "tollgate_websocket_closes_total";
        head(
            out,
            name,
            "counter",
            "Closed WebSockets, by who sent the first close frame (client, backend, gateway, none) and its code.",
        );
        for env in ENVS {
            let closes = self.env(env).websocket_closes.lock().unwrap_or_else(|e| e.into_inner());
            for ((by, code), n) in closes.iter() {
                let _ =
                    writeln!(out, "{name}{{environment=\"{}\",initiator=\"{by}\",code=\"{code}\"}} {n}", env.as_str());
            }
        }
        let name = "tollgate_websocket_duration_seconds";
        head(out, name, "histogram", "How long closed WebSockets were open.");
        for env in ENVS {
            let m = self.env(env);
            let mut cumulative = 0;
            for (i, v) in m.websocket_durations.iter().enumerate() {
                cumulative += v.load(Relaxed);
                let le = DURATION_BUCKETS.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{environment=\"{}\",le=\"{le}\"}} {cumulative}", env.as_str());
            }
            let sum = m.websocket_duration_ms.load(Relaxed) as f64 / 1000.0;
            let _ = writeln!(out, "{name}_sum{{environment=\"{}\"}} {sum}", env.as_str());
            let _ = writeln!(out, "{name}_count{{environment=\"{}\"}} {cumulative}", env.as_str());
        }
    }
}

/// A close code as a label: the codes RFC 6455 and IANA define one by one, the ranges
/// for libraries and applications as `3xxx` and `4xxx`, anything else as `invalid`.
fn code_label(code: u16) -> &'static str {
    const DEFINED: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010", "1011", "1012", "1013",
        "1014", "1015",
    ];
    match code {
        1000..=1015 => DEFINED[usize::from(code - 1000)],
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "invalid",
    }
}

impl EnvMetrics {
    /// Counts a response by its status class (`tollgate_responses_total`).
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }
    /// Counts a refusal by a limit (`tollgate_limits_exceeded_total`).
    pub fn limits_exceeded(&self) {
        self.rejected_limits.fetch_add(1, Relaxed);
    }
    /// Counts a request that failed at the backend (`tollgate_upstream_errors_total`).
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }
    /// Counts a connection refused at the listener's connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    /// Counts a client connection opened (`tollgate_connections_open` up).
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }
    /// Counts a client connection closed (`tollgate_connections_open` down).
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }
    /// Counts a connection closed idle past the header-read timeout.
    pub fn connection_idle_closed(&self) {
        self.connections_idle_closed.fetch_add(1, Relaxed);
    }
    /// Counts a connection closed for taking responses below the minimum data rate.
    pub fn connection_slow_closed(&self) {
        self.connections_slow_closed.fetch_add(1, Relaxed);
    }
    /// Counts a connection closed to make room at the connection limit.
    pub fn connection_evicted(&self) {
        self.connections_evicted.fetch_add(1, Relaxed);
    }
    /// The answer to a WebSocket upgrade request (HTTP/1.1) or extended CONNECT
    /// (HTTP/2), by its status.
    pub fn upgrade_answered(&self, status: u16, version: http::Version) {
        let h2 = version == http::Version::HTTP_2;
        let result = match status {
            101 => 0,
            200..=299 if h2 => 0,
            401 | 403 => 1,
            429 => 2,
            500.. => 4,
            _ => 3,
        };
        self.websocket_upgrades[usize::from(h2)][result].fetch_add(1, Relaxed);
    }
    /// Counts a WebSocket connection opened (`tollgate_websocket_open` up).
    pub fn websocket_opened(&self) {
        self.websocket_open.fetch_add(1, Relaxed);
    }
    /// Counts a WebSocket connection closed: the open gauge down, its close (by initiator
    /// and code) and its duration.
    pub fn websocket_closed(&self, totals: &Totals) {
        self.websocket_open.fetch_sub(1, Relaxed);
        let key = match totals.close {
            Some((by, code)) => (by.as_str(), code_label(code)),
            None => ("none", "1006"),
        };
        *self.websocket_closes.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
        let secs = totals.duration.as_secs_f64();
        let bucket = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.websocket_durations[bucket].fetch_add(1, Relaxed);
        self.websocket_duration_ms.fetch_add(totals.duration.as_millis() as u64, Relaxed);
    }
}

/// What a node depends on, and whether it answers now: `/status/ready` reports it. A
/// node whose store or counters are unreachable keeps serving (the last configuration;
/// the counters' failure mode), so it stays ready but says it is degraded.
#[derive(Debug, Default)]
pub struct Health {
    store_down: std::sync::atomic::AtomicBool,
    counters_down: std::sync::atomic::AtomicBool,
    /// Redis counters: limit checks that asked Redis, those the failure mode answered
    /// without asking (Redis frozen), and units leased and not yet used; as of the
    /// last check.
    counters_calls: [std::sync::atomic::AtomicU64; 2],
    leased_units: std::sync::atomic::AtomicU64,
}

impl Health {
    /// Records whether the store answered; true if that changed.
    pub fn store(&self, up: bool) -> bool {
        self.store_down.swap(!up, std::sync::atomic::Ordering::Relaxed) == up
    }

    /// Records whether the counters answered; true if that changed.
    pub fn counters(&self, up: bool) -> bool {
        self.counters_down.swap(!up, std::sync::atomic::Ordering::Relaxed) == up
    }

    /// Records the Redis counters' activity: hot-path calls made to Redis and answered
    /// by the failure mode without asking it (totals since the start), units leased now.
    pub fn counters_activity(&self, (asked, skipped): (u64, u64), leased: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters_calls[0].store(asked, Relaxed);
        self.counters_calls[1].store(skipped, Relaxed);
        self.leased_units.store(leased, Relaxed);
    }

    /// Prometheus series: gauges `tollgate_store_up`, `tollgate_counters_up` (1 or 0)
    /// and `tollgate_counters_leased_units`, counter `tollgate_counters_calls_total`
    /// by `answered_by` (`redis`, `failure_mode`); the last two stay 0 with memory
    /// counters.
    pub fn render(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        let (store, counters) = self.get();
        for (name, help, up) in [
            ("tollgate_store_up", "Whether the store (configuration, analytics) answered at the last check.", store),
            ("tollgate_counters_up", "Whether the counters' Redis answered at the last check.", counters),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n", u8::from(up)));
        }
        out.push_str(
            "# HELP tollgate_counters_calls_total Limit checks with Redis counters, by path: a call to Redis (answered in time or not), or the failure mode without asking (Redis frozen); with quota leasing most checks are neither.\n\
             # TYPE tollgate_counters_calls_total counter\n",
        );
        for (i, by) in ["redis", "failure_mode"].iter().enumerate() {
            out.push_str(&format!(
                "tollgate_counters_calls_total{{answered_by=\"{by}\"}} {}\n",
                self.counters_calls[i].load(Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP tollgate_counters_leased_units Units of limits' windows leased to this node and not yet used (quota leasing).\n\
             # TYPE tollgate_counters_leased_units gauge\ntollgate_counters_leased_units {}\n",
            self.leased_units.load(Relaxed)
        ));
    }

    /// (store up, counters up).
    pub fn get(&self) -> (bool, bool) {
        use std::sync::atomic::Ordering::Relaxed;
        (!self.store_down.load(Relaxed), !self.counters_down.load(Relaxed))
    }
}
