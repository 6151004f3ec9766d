//! Connections to backends: TCP with a connect timeout, TLS verified against the
//! system roots or the backend's `ca_file` (or not at all, when `verify: false` says
//! so), and a keep-alive pool per backend for ordinary HTTP ([`pool`]). WebSocket
//! upgrades take a fresh connection each, since an upgraded connection can never return
//! to a pool.

pub mod body;
mod connect;
pub mod fleet;
pub mod pool;
mod tls;

pub use connect::*;
pub use fleet::{Endpoint, EndpointReport, EndpointState, Fleet, FleetOptions, Lease, endpoint_reports};
pub use tls::*;

use crate::upstream::body::GatewayBody;
use crate::upstream::pool::{Pool, RequestError};
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
    /// The endpoints and how one is chosen.
    pub fleet: Fleet,
    /// "backend `NAME` (ADDRESS)", or "backend `NAME`" for several endpoints.
    label: Box<str>,
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
        let specs = if endpoints.is_empty() { &own[..] } else { endpoints };
        let endpoints = specs
            .iter()
            .map(|spec| {
                let connector = Connector(Arc::new(ConnectorInner {
                    address: spec.address.to_owned(),
                    label: format!("backend `{name}` ({})", spec.address),
                    tls: tls_connector.clone(),
                    connect_timeout,
                    protocol,
                }));
                let state = match environment {
                    Some(env) => EndpointState::shared(env, name, spec.address),
                    None => Arc::new(EndpointState::new(None, name, spec.address)),
                };
                Endpoint::new(spec.address, spec.weight, spec.drain, connector, state)
            })
            .collect::<Vec<_>>();
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
        Ok(Upstream { base, authority, host, fleet: Fleet::new(endpoints, balancing), label })
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

    /// Starts what this backend's configuration asks of its endpoints once it serves:
    /// probes, drains ([`Fleet::activate`]).
    pub fn activate(&self) {
        self.fleet.activate(&self.host, &self.base.path);
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
        loop {
            let i = self.fleet.pick(key, &tried).map_err(|refusal| failed.take().unwrap_or(refusal))?;
            let endpoint = &self.fleet.endpoints[i];
            // Another request took the last place under the caps since the pick.
            let Some(mut lease) = self.fleet.lease(i) else {
                tried.push(i);
                continue;
            };
            let sent = endpoint.pool.request(req);
            let result = match deadline {
                None => sent.await,
                Some(at) => match tokio::time::timeout_at(at, sent).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.fleet.report(i, false);
                        return Err(Refusal::UpstreamTimeout(format!(
                            "{}: no response head within the read timeout (or the call's grpc-timeout)",
                            endpoint.connector.label()
                        )));
                    }
                },
            };
            match result {
                Ok(resp) => {
                    lease.answered();
                    match self.fleet.failed_status(resp.status()) {
                        true => self.fleet.report(i, false),
                        // A good head: whether the body ends or breaks decides.
                        false => lease.await_body(),
                    }
                    return Ok(resp.map(|mut body| {
                        body.hold(lease);
                        GatewayBody::from(body)
                    }));
                }
                Err(RequestError::Connect(e, unsent)) => {
                    self.fleet.report(i, false);
                    tried.push(i);
                    tracing::debug!(error = %e, "connect failed; the request goes to another endpoint if one is left");
                    failed = Some(e.into());
                    req = *unsent;
                }
                Err(RequestError::Http(e)) => {
                    self.fleet.report(i, false);
                    let label = endpoint.connector.label();
                    return Err(http_failure(label, &e));
                }
                Err(RequestError::Failed(e)) => {
                    self.fleet.report(i, false);
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
    pub async fn connect(&self, key: Option<&[u8]>) -> Result<(UpstreamStream, Lease, usize), crate::refusal::Refusal> {
        let mut tried = Vec::new();
        let mut failed: Option<crate::refusal::Refusal> = None;
        loop {
            let i = self.fleet.pick(key, &tried).map_err(|refusal| failed.take().unwrap_or(refusal))?;
            let endpoint = &self.fleet.endpoints[i];
            let Some(lease) = self.fleet.lease(i) else {
                tried.push(i);
                continue;
            };
            match endpoint.connector.connect_http1().await {
                Ok(stream) => return Ok((stream, lease, i)),
                Err(e) => {
                    self.fleet.report(i, false);
                    tried.push(i);
                    failed = Some(e.into());
                }
            }
        }
    }

    /// Records how an exchange with endpoint `i` went, for its passive health.
    pub fn report(&self, i: usize, ok: bool) {
        self.fleet.report(i, ok);
    }

    /// The label of endpoint `i`: "backend `NAME` (ADDRESS)".
    pub fn endpoint_label(&self, i: usize) -> &str {
        self.fleet.endpoints[i].connector.label()
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

/// Limits on a backend's response head, process-wide (`--max-response-header-bytes`,
/// `--max-response-header-count`): a head over either is refused and the client gets 502
/// `upstream_invalid_response`. Bytes count the status line and every field line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeadLimits {
    /// Bytes of the whole head; at least 8192. Default 64 KiB.
    pub bytes: usize,
    /// Field lines; at least 1. Default 512.
    pub count: usize,
}

impl Default for ResponseHeadLimits {
    fn default() -> Self {
        ResponseHeadLimits { bytes: 64 * 1024, count: 512 }
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
static RESPONSE_HEAD_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(512);

/// Sets the limits on backends' response heads for connections opened from now on.
/// One setting for the process (set by `serve` from its flags), as the limits are the
/// operator's, not a product's.
pub fn set_response_head_limits(limits: ResponseHeadLimits) {
    use std::sync::atomic::Ordering::Relaxed;
    RESPONSE_HEAD_BYTES.store(limits.bytes.max(8192), Relaxed);
    RESPONSE_HEAD_COUNT.store(limits.count.max(1), Relaxed);
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
