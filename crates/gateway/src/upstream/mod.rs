//! Connections to backends: TCP with a connect timeout, TLS verified against the
//! system roots or the backend's `ca_file` (or not at all, when `verify: false` says
//! so), and a keep-alive pool per backend for ordinary HTTP ([`pool`]). WebSocket
//! upgrades take a fresh connection each, since an upgraded connection can never return
//! to a pool.

pub mod body;
mod connect;
pub mod dns;
pub mod fleet;
pub mod handshake;
pub mod http1;
pub mod pool;
mod tls;

pub use connect::*;
pub use fleet::{Endpoint, EndpointReport, EndpointState, Fleet, FleetOptions, Lease, endpoint_reports};
pub use tls::*;

use crate::upstream::body::GatewayBody;
use crate::upstream::pool::{Pool, RequestError};
use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tollgate_model::{BackendTls, BaseUrl};

/// A backend as the gateway reaches it: its base URL and its endpoints.
pub struct Upstream {
    /// The backend's base URL.
    pub base: BaseUrl,
    /// The base URL's `host:port`, the port always given.
    pub authority: http::uri::Authority,
    /// What requests carry as `Host` unless a policy set one: the authority, without
    /// the scheme's default port.
    pub host: http::HeaderValue,
    /// The endpoints and how one is chosen; replaced when a name among the endpoints
    /// resolves to other addresses ([`dns`]).
    fleet: Arc<ArcSwap<Fleet>>,
    /// "backend `NAME` (ADDRESS)", or "backend `NAME`" for several endpoints.
    label: Box<str>,
    /// How to build the fleet again, when endpoints are given by host name.
    members: Option<Arc<Members>>,
    /// The task that resolves those names, once the configuration serves.
    resolving: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.resolving.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// One configured endpoint of a backend whose endpoints include host names.
struct Spec {
    /// As configured (`host:port`).
    address: String,
    /// Its host, when it is a name to resolve; `None` for an IP address.
    name: Option<String>,
    port: u16,
    weight: u32,
    drain: bool,
}

/// What a fleet is built from: the configured endpoints and how to reach them. Each
/// address a name resolves to becomes an endpoint with the name's weight and drain.
struct Members {
    backend: String,
    specs: Vec<Spec>,
    tls: Option<TlsConnectors>,
    connect_timeout: Duration,
    protocol: tollgate_model::UpstreamProtocol,
    environment: Option<tollgate_model::Environment>,
    options: FleetOptions,
}

impl Members {
    /// The endpoint at `address`: the one `reuse` has there (its pooled connections and
    /// probes go on), else a new one.
    fn endpoint(&self, address: &str, spec: &Spec, reuse: &[Endpoint]) -> Endpoint {
        if let Some(e) =
            reuse.iter().find(|e| &*e.address == address && e.weight == spec.weight && e.drain == spec.drain)
        {
            return e.clone();
        }
        let connector = Connector(Arc::new(ConnectorInner {
            address: address.to_owned(),
            label: match &spec.name {
                Some(_) if address != spec.address => {
                    format!("backend `{}` ({address}, {})", self.backend, spec.address)
                }
                _ => format!("backend `{}` ({address})", self.backend),
            },
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout,
            protocol: self.protocol,
            resolve: spec.name.clone().filter(|_| address == spec.address),
        }));
        let state = match self.environment {
            Some(env) => EndpointState::shared(env, &self.backend, address),
            None => Arc::new(EndpointState::new(None, &self.backend, address)),
        };
        state.set_resolved_from(spec.name.as_ref().filter(|_| address != spec.address).map(|_| spec.address.as_str()));
        Endpoint::new(address, spec.weight, spec.drain, connector, state)
    }

    /// The endpoints: each name's addresses where it has some (`resolved`, by host),
    /// else the name itself; an address reached twice is listed once.
    fn endpoints(
        &self,
        resolved: &std::collections::HashMap<String, Vec<std::net::IpAddr>>,
        reuse: &[Endpoint],
    ) -> Vec<Endpoint> {
        // An address listed by IP is that endpoint, with its own weight and drain; a
        // name's address that is also listed is the listed one.
        let listed: Vec<std::net::SocketAddr> =
            self.specs.iter().filter(|s| s.name.is_none()).filter_map(|s| s.address.parse().ok()).collect();
        let mut out: Vec<Endpoint> = Vec::new();
        for spec in &self.specs {
            let addresses: Vec<String> = match spec.name.as_ref().and_then(|n| resolved.get(n)) {
                Some(ips) if !ips.is_empty() => ips
                    .iter()
                    .map(|ip| std::net::SocketAddr::new(*ip, spec.port))
                    .filter(|a| !listed.contains(a))
                    .map(|a| a.to_string())
                    .collect(),
                _ => vec![spec.address.clone()],
            };
            for a in addresses {
                if !out.iter().any(|e| *e.address == *a) {
                    out.push(self.endpoint(&a, spec, reuse));
                }
            }
        }
        out
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Where a backend's endpoints come from: its `endpoints` with their weights and
/// drain flags, or none (the base URL's host is the one endpoint).
pub struct EndpointSpec<'a> {
    /// `host:port`.
    pub address: &'a str,
    /// 1–1000.
    pub weight: u32,
    /// Draining.
    pub drain: bool,
}

impl Upstream {
    /// Builds the connector and pool for a backend of one endpoint, the base URL's
    /// host; `name` says which in messages (its `system_name`, or the URL a policy sends
    /// to). Its health is its own (not shared with snapshots).
    ///
    /// # Errors
    /// The configuration's `tls` options that cannot be used ([`TlsConfigError`]).
    pub fn new(
        name: &str,
        base: BaseUrl,
        tls: &BackendTls,
        connect_timeout: Duration,
    ) -> Result<Upstream, TlsConfigError> {
        Upstream::with_endpoints(name, base, tls, connect_timeout, &[], FleetOptions::default(), None)
    }

    /// Builds a backend's endpoints (`endpoints`; none: the base URL's host) with
    /// `balancing`. With an environment, each endpoint's health, load and drain are
    /// those every snapshot of that environment naming the same backend and address
    /// sees ([`EndpointState::shared`]); without, its own.
    ///
    /// # Errors
    /// The configuration's `tls` options that cannot be used ([`TlsConfigError`]).
    pub fn with_endpoints(
        name: &str,
        base: BaseUrl,
        tls: &BackendTls,
        connect_timeout: Duration,
        endpoints: &[EndpointSpec<'_>],
        balancing: FleetOptions,
        environment: Option<tollgate_model::Environment>,
    ) -> Result<Upstream, TlsConfigError> {
        let host_for_uri = if base.host.contains(':') { format!("[{}]", base.host) } else { base.host.clone() };
        let address = format!("{host_for_uri}:{}", base.port);
        let protocol = balancing.protocol;
        let tls_connector = if base.is_tls() {
            let config = client_tls_config(tls)?;
            let name = tls.server_name.clone().unwrap_or_else(|| base.host.clone());
            let name =
                ServerName::try_from(name).map_err(|e| tls_error("server_name")(format!("not a host name: {e}")))?;
            // Requests offer what `protocol` allows by ALPN; upgrades and probes, which
            // need HTTP/1.1, offer only that (when the backend could pick h2).
            let (requests, http1) = match protocol {
                tollgate_model::UpstreamProtocol::Http1 => {
                    let c = TlsConnector::from(Arc::new(config));
                    (c.clone(), c)
                }
                other => {
                    let mut requests = config.clone();
                    requests.alpn_protocols = match other {
                        tollgate_model::UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
                        _ => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                    };
                    let mut http1 = config;
                    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
                    (TlsConnector::from(Arc::new(requests)), TlsConnector::from(Arc::new(http1)))
                }
            };
            Some(TlsConnectors { requests, http1, name })
        } else {
            None
        };
        let own = [EndpointSpec { address: &address, weight: 1, drain: false }];
        let listed = !endpoints.is_empty();
        let specs = if listed { endpoints } else { &own[..] };
        let members = Members {
            backend: name.to_owned(),
            specs: specs
                .iter()
                .map(|spec| {
                    let (host, port) = split_host_port(spec.address);
                    // Listed endpoints given by name are resolved here (every address an
                    // endpoint); the base URL's own host is resolved per connection.
                    let name = (listed && host.parse::<std::net::IpAddr>().is_err()).then(|| host.to_owned());
                    Spec { address: spec.address.to_owned(), name, port, weight: spec.weight, drain: spec.drain }
                })
                .collect(),
            tls: tls_connector,
            connect_timeout,
            protocol,
            environment,
            options: balancing.clone(),
        };
        // A name resolved before (by the configuration this one replaces) starts from
        // its latest addresses.
        let known: std::collections::HashMap<String, Vec<std::net::IpAddr>> = members
            .specs
            .iter()
            .filter_map(|s| s.name.as_ref())
            .filter_map(|n| Some((n.clone(), dns::last(n)?)))
            .collect();
        let endpoints = members.endpoints(&known, &[]);
        let members = members.specs.iter().any(|s| s.name.is_some()).then(|| Arc::new(members));
        let label = match &endpoints[..] {
            [one] => one.connector.label().into(),
            _ => format!("backend `{name}`").into(),
        };
        let authority =
            address.parse().map_err(|e| tls_error("")(format!("`{address}` is not a valid authority: {e}")))?;
        let default_port = if base.is_tls() { 443 } else { 80 };
        let host = if base.port == default_port { host_for_uri } else { address };
        let host = http::HeaderValue::try_from(host)
            .map_err(|e| tls_error("")(format!("the host is not a valid header: {e}")))?;
        Ok(Upstream {
            base,
            authority,
            host,
            fleet: Arc::new(ArcSwap::from_pointee(Fleet::new(endpoints, balancing))),
            label,
            members,
            resolving: std::sync::Mutex::new(None),
        })
    }

    /// The URI of a request to this backend, in origin form: the base path, then
    /// `path`, then `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<http::Uri, http::Error> {
        let mut pq = String::with_capacity(self.base.path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(&self.base.path);
        pq.push_str(path);
        if pq.is_empty() {
            pq.push('/');
        }
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        http::Uri::builder().path_and_query(pq).build()
    }

    /// What its messages call it: `backend `NAME` (ADDRESS)` (one endpoint) or
    /// `backend `NAME``.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The endpoints as they are now (a name's addresses may change them).
    pub fn fleet(&self) -> arc_swap::Guard<Arc<Fleet>> {
        self.fleet.load()
    }

    /// Starts what this backend's configuration asks of its endpoints once it serves:
    /// probes, drains ([`Fleet::activate`]), and the resolution of endpoints given by
    /// name ([`dns`]). Needs a Tokio runtime.
    pub fn activate(&self) {
        self.fleet.load().activate(&self.host, &self.base.path);
        let Some(members) = &self.members else { return };
        let mut resolving = self.resolving.lock().unwrap_or_else(|p| p.into_inner());
        if resolving.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let task = track(members.clone(), Arc::downgrade(&self.fleet), self.host.clone(), self.base.path.clone());
        *resolving = Some(runtime.spawn(task).abort_handle());
    }

    /// [`Upstream::send`] with no balancing key and no deadline.
    ///
    /// # Errors
    /// As [`Upstream::send`].
    pub async fn request(
        &self,
        req: http::Request<crate::upstream::body::UpstreamBody>,
    ) -> Result<http::Response<GatewayBody>, crate::refusal::Refusal> {
        self.send(req, None, None).await
    }

    /// Sends a request (its `Host` is set here unless a policy set one) to the endpoint
    /// the balancer picks (`key`: the consistent hash's) and returns the response once
    /// its head has come — by `head_due`, if given. A request whose connection could
    /// not be made was never sent, so it goes to another endpoint, whatever its method.
    /// Every outcome counts towards the endpoint's passive health.
    ///
    /// # Errors
    ///
    /// The refusal the client gets: `upstream_unavailable`, `upstream_timeout` or
    /// `upstream_tls` when no endpoint could be connected to, `upstream_overloaded`
    /// when every endpoint is at its circuit breaker's caps, `upstream_invalid_response`
    /// for a malformed or oversized response head, `upstream_failed` otherwise.
    pub async fn send(
        &self,
        mut req: http::Request<crate::upstream::body::UpstreamBody>,
        key: Option<&[u8]>,
        head_due: Option<Duration>,
    ) -> Result<http::Response<GatewayBody>, crate::refusal::Refusal> {
        use crate::refusal::Refusal;
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(http::header::HOST, self.host.clone());
        }
        let deadline = head_due.map(|d| tokio::time::Instant::now() + d);
        let mut tried = Vec::new();
        // Once a connection failed, what the client hears when no endpoint is left.
        let mut failed: Option<Refusal> = None;
        // One fleet for the whole request, whatever DNS changes meanwhile.
        let fleet = self.fleet.load_full();
        loop {
            let i = fleet.pick(key, &tried).map_err(|refusal| failed.take().unwrap_or(refusal))?;
            let endpoint = &fleet.endpoints[i];
            // Another request took the last place under the caps since the pick.
            let Some(mut lease) = fleet.lease(i) else {
                tried.push(i);
                continue;
            };
            let sent = endpoint.pool.request(req);
            let result = match deadline {
                None => sent.await,
                Some(at) => match tokio::time::timeout_at(at, sent).await {
                    Ok(r) => r,
                    Err(_) => {
                        fleet.report(i, false);
                        return Err(Refusal::UpstreamTimeout(format!(
                            "{}: no response head within the read timeout (or the call's grpc-timeout)",
                            endpoint.connector.label()
                        )));
                    }
                },
            };
            match result {
                Ok(mut resp) => {
                    // The client hears the gateway's version, not the backend's (RFC 9110
                    // §2.5: an intermediary sends its own); hyper's HTTP/2 server ignores it.
                    *resp.version_mut() = http::Version::HTTP_11;
                    lease.answered();
                    match fleet.failed_status(resp.status()) {
                        true => fleet.report(i, false),
                        // A good head: whether the body ends or breaks decides.
                        false => lease.await_body(),
                    }
                    return Ok(resp.map(|mut body| {
                        body.hold(lease);
                        GatewayBody::from(body)
                    }));
                }
                Err(RequestError::Connect(e, unsent)) => {
                    fleet.report(i, false);
                    tried.push(i);
                    tracing::debug!(error = %e, "connect failed; the request goes to another endpoint if one is left");
                    failed = Some(e.into());
                    req = *unsent;
                }
                Err(RequestError::Http(e)) => {
                    fleet.report(i, false);
                    let label = endpoint.connector.label();
                    return Err(http_failure(label, &e));
                }
                Err(RequestError::Exchange(e)) => {
                    fleet.report(i, false);
                    return Err(exchange_failure(endpoint.connector.label(), &e));
                }
                Err(RequestError::Failed(e)) => {
                    fleet.report(i, false);
                    return Err(Refusal::UpstreamFailed(format!("{}: {e}", endpoint.connector.label())));
                }
            }
        }
    }

    /// A fresh connection for a WebSocket upgrade, to the endpoint the balancer picks
    /// (another one when connecting fails), with the endpoint's lease to hold while
    /// the connection lives. The outcome of the handshake is for the caller to
    /// [`Upstream::report`].
    ///
    /// # Errors
    /// As [`Upstream::send`]'s connection failures.
    pub async fn connect(
        &self,
        key: Option<&[u8]>,
    ) -> Result<(UpstreamStream, Lease, Picked), crate::refusal::Refusal> {
        let fleet = self.fleet.load_full();
        let mut tried = Vec::new();
        let mut failed: Option<crate::refusal::Refusal> = None;
        loop {
            let i = fleet.pick(key, &tried).map_err(|refusal| failed.take().unwrap_or(refusal))?;
            let Some(lease) = fleet.lease(i) else {
                tried.push(i);
                continue;
            };
            match fleet.endpoints[i].connector.connect_http1().await {
                Ok(stream) => return Ok((stream, lease, Picked { fleet, index: i })),
                Err(e) => {
                    fleet.report(i, false);
                    tried.push(i);
                    failed = Some(e.into());
                }
            }
        }
    }
}

/// The endpoint a WebSocket upgrade was connected to, in the fleet it was picked from.
pub struct Picked {
    fleet: Arc<Fleet>,
    index: usize,
}

impl Picked {
    /// Records how the exchange went, for the endpoint's passive health.
    pub fn report(&self, ok: bool) {
        self.fleet.report(self.index, ok);
    }

    /// "backend `NAME` (ADDRESS)".
    pub fn label(&self) -> &str {
        self.fleet.endpoints[self.index].connector.label()
    }

    /// Whether a response status counts as a failure of the endpoint.
    pub fn failed_status(&self, status: http::StatusCode) -> bool {
        self.fleet.failed_status(status)
    }
}

/// `host:port` → (host without brackets, port); the address was validated.
fn split_host_port(address: &str) -> (&str, u16) {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "0"));
    (host.trim_start_matches('[').trim_end_matches(']'), port.parse().unwrap_or(0))
}

/// Resolves the names among a backend's endpoints as long as the backend serves
/// (`fleet` alive): at each answer's TTL (or every `dns_refresh_ms`), within
/// [`dns::RETRY`] after a failure; a changed set of addresses becomes a new fleet,
/// activated, then swapped in — requests in flight finish on the one they picked from.
async fn track(
    members: Arc<Members>,
    fleet: std::sync::Weak<ArcSwap<Fleet>>,
    host: http::HeaderValue,
    base_path: String,
) {
    let mut names: Vec<&str> = members.specs.iter().filter_map(|s| s.name.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    let mut resolved: std::collections::HashMap<String, Vec<std::net::IpAddr>> =
        names.iter().filter_map(|n| Some(((*n).to_owned(), dns::last(n)?))).collect();
    let mut failing = std::collections::HashSet::new();
    let env = members.environment.map_or("", tollgate_model::Environment::as_str);
    loop {
        let mut next = members.options.dns_refresh.unwrap_or(dns::MAX_TTL);
        let mut changed = Vec::new();
        // All names at once: one that never answers does not hold up the others.
        let mut lookups = tokio::task::JoinSet::new();
        for name in &names {
            let name = (*name).to_owned();
            lookups.spawn(async move {
                let answer = dns::resolve(&name).await;
                (name, answer)
            });
        }
        let answers = lookups.join_all().await;
        for (name, answer) in answers {
            let name = names.iter().copied().find(|n| *n == name).unwrap_or_default();
            match answer {
                Ok((ips, ttl)) => {
                    failing.remove(name);
                    if members.options.dns_refresh.is_none() {
                        next = next.min(ttl);
                    }
                    if resolved.get(name) != Some(&ips) {
                        resolved.insert(name.to_owned(), ips);
                        changed.push(name);
                    }
                }
                Err(e) => {
                    next = next.min(dns::RETRY);
                    // Once per outage at warning level; the addresses it had stay.
                    if failing.insert(name.to_owned()) {
                        let what = match resolved.contains_key(name) {
                            true => "cannot resolve an endpoint name; its addresses stay as they were",
                            false => "cannot resolve an endpoint name; each connection resolves it until it answers",
                        };
                        tracing::warn!(
                            environment = env, backend = %members.backend, name, error = %e,
                            code = "endpoint_unresolved", "{what}"
                        );
                    }
                }
            }
        }
        let Some(fleet) = fleet.upgrade() else { return };
        if !changed.is_empty() {
            let current = fleet.load_full();
            let next_fleet = Fleet::new(members.endpoints(&resolved, &current.endpoints), members.options.clone());
            next_fleet.activate(&host, &base_path);
            fleet.store(Arc::new(next_fleet));
            for name in changed {
                let all = resolved.get(name).map_or(&[][..], Vec::as_slice);
                // The first 16 addresses, and how many more: a line stays a line.
                let mut list: Vec<String> = all.iter().take(16).map(ToString::to_string).collect();
                if all.len() > 16 {
                    list.push(format!("and {} more", all.len() - 16));
                }
                tracing::info!(
                    environment = env, backend = %members.backend, name, addresses = %list.join(","), count = all.len(),
                    code = "endpoint_resolved", "endpoint name resolved to new addresses (in use)"
                );
            }
        }
        drop(fleet);
        tokio::time::sleep(next).await;
    }
}

/// The refusal for an exchange that failed after connecting.
fn http_failure(label: &str, e: &hyper::Error) -> crate::refusal::Refusal {
    use crate::refusal::Refusal;
    if is_invalid_response(e) {
        return Refusal::UpstreamInvalidResponse(format!("{label}: {}", error_chain(e)));
    }
    // With TLS 1.3 a backend that refuses the client (no certificate, or one it does
    // not trust) says so with an alert after the handshake, as the request is read: a
    // TLS failure all the same.
    if let Some(alert) = tls_alert(e) {
        return Refusal::UpstreamTls(format!(
            "{label}: the backend refused the TLS connection (alert {alert:?}); fix: if it requires a client certificate, set the backend's `tls.client_cert_file` and `tls.client_key_file` to one it trusts"
        ));
    }
    Refusal::UpstreamFailed(format!("{label}: {}", error_chain(e)))
}

/// The refusal for an exchange of the gateway's own HTTP/1.1 client that failed
/// after connecting: as [`http_failure`] for the same causes.
fn exchange_failure(label: &str, e: &http1::ExchangeError) -> crate::refusal::Refusal {
    use crate::refusal::Refusal;
    if let http1::ExchangeError::Invalid(_) = e {
        return Refusal::UpstreamInvalidResponse(format!("{label}: {}", error_chain(e)));
    }
    if let Some(alert) = tls_alert(e) {
        return Refusal::UpstreamTls(format!(
            "{label}: the backend refused the TLS connection (alert {alert:?}); fix: if it requires a client certificate, set the backend's `tls.client_cert_file` and `tls.client_key_file` to one it trusts"
        ));
    }
    Refusal::UpstreamFailed(format!("{label}: {}", error_chain(e)))
}

/// Limits on a backend's response head, process-wide (`--max-response-header-bytes`,
/// `--max-response-header-count`): a head over either is refused and the client gets 502
/// `upstream_invalid_response`. Bytes count the status line and every field line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeadLimits {
    /// Bytes of the whole head; at least 8192. Default 64 KiB.
    pub bytes: usize,
    /// Field lines; at least 1. Default 100 (see `--max-response-header-count`).
    pub count: usize,
}

impl Default for ResponseHeadLimits {
    fn default() -> Self {
        ResponseHeadLimits { bytes: 64 * 1024, count: 100 }
    }
}

static TCP_KEEPALIVE_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60);

/// TCP keep-alive on backend connections opened from now on (idle time before the
/// first probe; see [`crate::deadline::set_tcp_keepalive`]); `None`: off. Process-wide,
/// set by `serve` from `--tcp-keepalive`. Default 60 s.
pub fn set_tcp_keepalive(time: Option<Duration>) {
    TCP_KEEPALIVE_SECS.store(time.map_or(0, |t| t.as_secs().max(1)), std::sync::atomic::Ordering::Relaxed);
}

static RESPONSE_HEAD_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(64 * 1024);
static RESPONSE_HEAD_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(100);

/// Sets the limits on backends' response heads for connections opened from now on.
/// One setting for the process (set by `serve` from its flags), as the limits are the
/// operator's, not a product's.
pub fn set_response_head_limits(limits: ResponseHeadLimits) {
    use std::sync::atomic::Ordering::Relaxed;
    RESPONSE_HEAD_BYTES.store(limits.bytes.max(8192), Relaxed);
    RESPONSE_HEAD_COUNT.store(limits.count.max(1), Relaxed);
}

/// The limits on backends' response heads in force (see [`set_response_head_limits`]).
pub fn response_head_limits() -> ResponseHeadLimits {
    use std::sync::atomic::Ordering::Relaxed;
    ResponseHeadLimits { bytes: RESPONSE_HEAD_BYTES.load(Relaxed), count: RESPONSE_HEAD_COUNT.load(Relaxed) }
}

/// An HTTP/1.1 client connection builder with the response-head limits applied. hyper
/// already refuses what RFC 9112 lets a recipient refuse in a response (obsolete line
/// folding, whitespace before a colon, invalid field names or values, bare CR).
pub fn http1_client() -> hyper::client::conn::http1::Builder {
    use std::sync::atomic::Ordering::Relaxed;
    let bytes = RESPONSE_HEAD_BYTES.load(Relaxed);
    let mut b = hyper::client::conn::http1::Builder::new();
    // The read buffer grows from 8 KiB while reads fill it, up to 64 KiB (or the head
    // limit, if larger) rather than hyper's 400 KiB: a response held for a slow client
    // keeps its buffer alive, so this bounds what each one costs (measured by the
    // attack suite) while 64 KiB reads keep streaming cheap.
    b.max_headers(RESPONSE_HEAD_COUNT.load(Relaxed)).max_header_size(bytes).max_buf_size(bytes.max(64 * 1024));
    b
}

/// An HTTP/2 client connection builder: the response-head limit as the largest header
/// list the backend may send (RFC 9113 §6.5.2), adaptive flow-control windows (so a
/// fast backend is not held to 64 KiB per round trip), PING keep-alive.
pub fn http2_client() -> hyper::client::conn::http2::Builder<hyper_util::rt::TokioExecutor> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut b = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.max_header_list_size(u32::try_from(RESPONSE_HEAD_BYTES.load(Relaxed)).unwrap_or(u32::MAX))
        .adaptive_window(true)
        // A backend gone silent (half-open, or one that never acknowledges) is found by
        // PING within 50 s and the connection closed, rather than reused for ever.
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Whether a hyper client error means the backend's response could not be read as
/// HTTP/1.1 (a malformed or oversized head) rather than a failed exchange.
pub fn is_invalid_response(e: &hyper::Error) -> bool {
    e.is_parse() || e.is_parse_too_large() || e.is_parse_status()
}

/// The TLS alert a backend sent, if that is what broke the exchange.
fn tls_alert(e: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(err), inner].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) = candidate.downcast_ref::<rustls::Error>() {
                return Some(*alert);
            }
        }
        cur = err.source();
    }
    None
}

/// `e`'s message followed by those of its sources, joined by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // A name whose address is also listed by IP: the listed endpoint is that address,
    // with its own weight and drain (the name's copy is left out).
    #[test]
    fn an_address_listed_by_ip_wins_over_a_names_copy() {
        let base = BaseUrl::parse("http://svc.test", &["http"]).expect("url");
        let specs = [
            EndpointSpec { address: "svc.test:80", weight: 3, drain: false },
            EndpointSpec { address: "127.0.0.3:80", weight: 1, drain: true },
        ];
        let up = Upstream::with_endpoints(
            "b",
            base,
            &BackendTls::default(),
            Duration::from_secs(1),
            &specs,
            FleetOptions::default(),
            None,
        )
        .expect("upstream");
        let members = up.members.as_ref().expect("a name to resolve");
        let ips = ["127.0.0.3", "127.0.0.4"].map(|ip| ip.parse().expect("ip")).to_vec();
        let resolved = std::collections::HashMap::from([("svc.test".to_owned(), ips)]);
        let endpoints = members.endpoints(&resolved, &[]);
        let got: Vec<(&str, u32, bool)> = endpoints.iter().map(|e| (&*e.address, e.weight, e.drain)).collect();
        assert_eq!(got, [("127.0.0.4:80", 3, false), ("127.0.0.3:80", 1, true)]);
        // Unresolved, the name is its own endpoint.
        let got: Vec<String> =
            members.endpoints(&Default::default(), &[]).iter().map(|e| e.address.to_string()).collect();
        assert_eq!(got, ["svc.test:80", "127.0.0.3:80"]);
    }
}
