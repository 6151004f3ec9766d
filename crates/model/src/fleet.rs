//! A backend's fleet: the instances (endpoints) behind its base URL, how requests are
//! spread over them, how a sick one is taken out (health checks) and how much one may
//! be given at once (circuit breaking). The keys follow the contract and the
//! vocabulary of Envoy and nginx where 3scale has none (3scale's backends are one URL).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One instance of a backend. Requests to it keep the backend's base URL's scheme,
/// `Host`, TLS server name and base path: only the address connected to changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `IP:port`, `[IPv6]:port` or `host:port`; a host name is resolved at each new
    /// connection.
    pub address: String,
    /// Its share of requests relative to the other endpoints' weights: 1 to 1000.
    /// Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// `true` drains it: no new requests or WebSockets; its open WebSockets stay until
    /// they end or the backend's `drain_timeout_ms` passes, then close with 1001.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drain: bool,
}

/// How a backend's requests are spread over its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    /// The algorithm; default `round_robin`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// What `consistent_hash` hashes; default `remote_addr`. Only with `consistent_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
}

/// A load-balancing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Weighted round robin, smooth (nginx's): with weights 5, 1, 1 the order is
    /// a a b a c a a, not a a a a a b c.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests and WebSockets in flight relative to its
    /// weight (ties in turn).
    LeastRequests,
    /// The same key always goes to the same endpoint while it is healthy (weighted
    /// rendezvous hashing): adding or removing an endpoint moves only its share of keys.
    /// A request without the key goes round robin.
    ConsistentHash,
}

/// The key `consistent_hash` uses: `remote_addr`, `application_id`,
/// `{ header: NAME }` or `{ cookie: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum HashOn {
    /// `remote_addr` or `application_id`.
    Named(HashKey),
    /// The value of a request header: `{ header: X-Session-Id }`.
    Header {
        /// The header's name.
        header: String,
    },
    /// The value of a cookie: `{ cookie: session }`.
    Cookie {
        /// The cookie's name.
        cookie: String,
    },
}

const HASH_ON_EXPECTED: &str = "expected `remote_addr`, `application_id`, `{ header: NAME }` or `{ cookie: NAME }`";

impl<'de> Deserialize<'de> for HashOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Map(std::collections::BTreeMap<String, String>),
        }
        let suggest = |got: &str, known: &[&'static str]| {
            crate::did_you_mean(got, known.iter().copied()).map_or(String::new(), |s| format!(" (did you mean `{s}`?)"))
        };
        match Raw::deserialize(d).map_err(|_| D::Error::custom(HASH_ON_EXPECTED))? {
            Raw::Name(n) => match n.as_str() {
                "remote_addr" => Ok(HashOn::Named(HashKey::RemoteAddr)),
                "application_id" => Ok(HashOn::Named(HashKey::ApplicationId)),
                other => Err(D::Error::custom(format!(
                    "`{other}` is not a hash key{}: {HASH_ON_EXPECTED}",
                    suggest(other, &["remote_addr", "application_id"])
                ))),
            },
            Raw::Map(map) => {
                let mut entries = map.into_iter();
                let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                    return Err(D::Error::custom(format!("give one key, `header` or `cookie`: {HASH_ON_EXPECTED}")));
                };
                match key.as_str() {
                    "header" => Ok(HashOn::Header { header: value }),
                    "cookie" => Ok(HashOn::Cookie { cookie: value }),
                    other => Err(D::Error::custom(format!(
                        "unknown key `{other}`{}: {HASH_ON_EXPECTED}",
                        suggest(other, &["header", "cookie"])
                    ))),
                }
            }
        }
    }
}

/// The keys `consistent_hash` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// The client's address (as `ip_check` sees it, PROXY protocol included).
    RemoteAddr,
    /// The application the request authenticated as (the `tollgate` policy's).
    ApplicationId,
}

/// How endpoints are found sick and taken out, and what happens when all are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthChecks {
    /// Probes sent to every endpoint in the background; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    /// Outlier ejection from the traffic itself; on by default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub passive: PassiveHealthCheck,
    /// What a request gets when no endpoint is healthy; default `try_all`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub when_all_unhealthy: WhenAllUnhealthy,
}

/// The probe an active health check sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `GET path` (with the backend's `Host`, over TLS when the URL says so); healthy
    /// when the status is expected.
    #[default]
    Http,
    /// A TCP connection (and the TLS handshake, for `https`/`wss`); healthy when it opens.
    Tcp,
    /// A WebSocket opening handshake on `path`; healthy on `101 Switching Protocols`.
    Websocket,
}

fn default_path() -> String {
    "/".into()
}
fn default_interval() -> u64 {
    5000
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

/// Probes sent to each endpoint every `interval_ms`. An endpoint starts healthy; it
/// becomes unhealthy after `unhealthy_threshold` failed probes in a row and healthy again
/// after `healthy_threshold` good ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthCheck {
    /// `http` (default), `tcp` or `websocket`.
    #[serde(rename = "type", default)]
    pub kind: ProbeKind,
    /// Path of the probe, after the backend's base path; default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Statuses that mean healthy (`http`); default any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
    /// Milliseconds between probes of one endpoint; at least 100. Default 5000.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Milliseconds a probe may take (connect, TLS, answer); at least 1 and at most
    /// `interval_ms`. Default 2000, or `interval_ms` if that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Good probes in a row that bring an unhealthy endpoint back; default 2.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that take a healthy endpoint out; default 3.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

fn five() -> u32 {
    5
}
fn default_unhealthy_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}
fn default_ejection() -> u64 {
    10_000
}

/// Outlier ejection (Envoy's name): an endpoint whose requests fail
/// `consecutive_failures` times in a row — connection refused or timed out, TLS failed,
/// reset, no answer within the read timeout, or one of `unhealthy_statuses` — gets no
/// requests for `ejection_ms`, doubled at each ejection in a row up to
/// `max_ejection_ms`; a successful request after it resets the doubling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// `false` turns ejection off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failures in a row that eject; at least 1. Default 5.
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// Response statuses that count as failures; default 502, 503, 504.
    #[serde(default = "default_unhealthy_statuses")]
    pub unhealthy_statuses: Vec<u16>,
    /// First ejection, in milliseconds; at least 1. Default 10000.
    #[serde(default = "default_ejection")]
    pub ejection_ms: u64,
    /// Longest ejection, in milliseconds; at least `ejection_ms`. Default 300000, or
    /// `ejection_ms` if that is longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_ms: Option<u64>,
}

impl PassiveHealthCheck {
    /// The longest ejection in milliseconds: `max_ejection_ms`, else 300000 or
    /// `ejection_ms` if that is longer.
    pub fn longest_ejection_ms(&self) -> u64 {
        self.max_ejection_ms.unwrap_or(self.ejection_ms.max(300_000))
    }
}

impl ActiveHealthCheck {
    /// A probe's time in milliseconds: `timeout_ms`, else 2000 or `interval_ms` if that
    /// is shorter.
    pub fn probe_timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(self.interval_ms.min(2000))
    }
}

impl Default for PassiveHealthCheck {
    fn default() -> Self {
        PassiveHealthCheck {
            enabled: true,
            consecutive_failures: five(),
            unhealthy_statuses: default_unhealthy_statuses(),
            ejection_ms: default_ejection(),
            max_ejection_ms: None,
        }
    }
}

/// What a request gets when every endpoint of its backend is unhealthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenAllUnhealthy {
    /// Fail open: spread over all (non-draining) endpoints as if they were healthy, as
    /// health checks may be wrong and a try costs less than a certain refusal.
    #[default]
    TryAll,
    /// Fail closed: 503 `no_healthy_endpoint` at once.
    Refuse,
}

/// Per-endpoint caps; beyond them a request goes to another endpoint, and when none has
/// room the client gets 503 `upstream_overloaded` at once instead of queueing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Busy connections per endpoint: requests in flight (until their response body
    /// ends) and open WebSockets — over HTTP/1.1 each holds one connection. Idle
    /// keep-alive connections do not count. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests per endpoint sent and waiting for their response head. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
}

impl Endpoint {
    /// The endpoint's identity however its address is spelled — the host lower-case
    /// without a trailing dot, an IP address in its canonical form, the port as a
    /// number — so that `API-1.internal.:08080` and `api-1.internal:8080` are one.
    /// `None` when the address is not valid ([`Endpoint::host_port`]).
    pub fn canonical(&self) -> Option<(String, u16)> {
        let (host, port) = self.host_port().ok()?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        Some((host.parse::<std::net::IpAddr>().map_or(host, |ip| ip.to_string()), port))
    }

    /// The address's host (without brackets) and port.
    ///
    /// # Errors
    /// What is wrong with the address, in words: no port, a port out of 1–65535, an
    /// empty or malformed host, a scheme or path.
    pub fn host_port(&self) -> Result<(&str, u16), String> {
        let a = self.address.as_str();
        if a.contains("://") || a.contains('/') {
            return Err(format!("`{a}` is not an address: write host:port, without a scheme or path"));
        }
        let (host, port) = match a.strip_prefix('[') {
            Some(rest) => {
                let (host, after) =
                    rest.split_once(']').ok_or_else(|| format!("`{a}`: an IPv6 address needs its closing `]`"))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("`{host}` is not an IPv6 address"));
                }
                let port = after.strip_prefix(':').ok_or_else(|| format!("`{a}` has no port: write [{host}]:PORT"))?;
                (host, port)
            }
            None => {
                let (host, port) = a.rsplit_once(':').ok_or_else(|| format!("`{a}` has no port: write {a}:PORT"))?;
                if host.contains(':') {
                    return Err(format!("`{a}`: write an IPv6 address in brackets, as [{host}]:PORT"));
                }
                (host, port)
            }
        };
        if host.is_empty() {
            return Err(format!("`{a}` has no host: write HOST:PORT"));
        }
        // An IP address, or a DNS name: labels of letters, digits, `-` and `_`, none
        // empty or beginning or ending with `-` (RFC 1123 §2.1); a trailing dot is fine.
        let ip = host.parse::<std::net::IpAddr>().is_ok();
        let name = host.strip_suffix('.').unwrap_or(host);
        let looks_numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let valid_name = !looks_numeric
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ip && !valid_name {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('+') => Ok((host, p)),
            _ => Err(format!("`{port}` is not a port: use 1 to 65535")),
        }
    }
}

/// The HTTP version Tollgate speaks to a backend's endpoints. WebSocket upgrades and
/// health probes use HTTP/1.1 whatever it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive connections (default).
    #[default]
    Http1,
    /// HTTP/2 (RFC 9113): over TLS negotiated by ALPN (`h2`), over `http://` with prior
    /// knowledge (h2c). Requests share connections; gRPC needs it.
    Http2,
    /// Over TLS, ALPN decides (`h2` preferred, else HTTP/1.1); over `http://`, HTTP/1.1.
    Auto,
}
