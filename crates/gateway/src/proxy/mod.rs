//! The request path, top-down as a request travels it ([`Gateway::handle`]):
//!
//! 1. the head is checked and made canonical (`fields`: one Host, HTTP/2 field rules;
//!    the path without dot-segments) and the host picks the product;
//! 2. the policy chain's rewrite and access phases run ([`Gateway::request_phases`]);
//! 3. limits (`limits`): edge limits, the WebSocket cap, the plan's usage limits;
//! 4. the exchange with the backend (`exchange`: head, body, retries, response) or the
//!    WebSocket upgrade and its relay (`upgrade`);
//! 5. the response phases, metrics, the request id and the trace span.

use crate::analytics::Analytics;
use crate::deadline::BodyPace;
use crate::metrics::Metrics;
use crate::policy::routing::Target;
use crate::policy::{Context, Flow};
use crate::refusal::Refusal;
use crate::relay::{self, RelayOptions};
use crate::session::{ConnectionSlot, Connections, Session, plan_checks};
use crate::snapshot::{Environment, Product, SnapshotHandle};
use crate::trace::{Attr, Span, TraceCtx, Tracer, now_ns, traceparent};
use crate::upstream::body::GatewayBody;
use crate::upstream::body::{BrokenBodies, Held, Stopped, Timer, UpstreamBody};
use crate::upstream::{Upstream, error_chain};
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version, request};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tollgate_counters::{Clock, Counters, Decision, EdgeDecision, EdgeMemory, FailureMode};

mod exchange;
mod fields;
mod limits;
mod upgrade;

pub(crate) use exchange::Forwarded;
use exchange::*;
pub(crate) use fields::*;
pub(crate) use upgrade::*;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client_addr: SocketAddr,
    pub tls: bool,
    /// The server name the client asked for in the TLS handshake (SNI), lower-case.
    pub sni: Option<Box<str>>,
    /// The certificate the client presented in the TLS handshake (verified against
    /// some product's authorities), if any.
    pub client_certificate: Option<Arc<crate::sni::PeerCertificate>>,
    /// The connection's place under the listener's cap. A WebSocket relay keeps a clone,
    /// so an upgraded connection still counts until it closes.
    pub(crate) slot: Arc<crate::server::Slot>,
    /// What the connection is doing (requests in flight, bodies behind the minimum rate).
    pub(crate) activity: Arc<crate::deadline::Activity>,
    /// The least the client must send and take; `None`: no minimum.
    pub(crate) min_data_rate: Option<crate::deadline::MinDataRate>,
    /// Most header fields a request may carry (`--max-header-count`). HTTP/1's parser
    /// enforces it; HTTP/2's has no such setting, so the gateway does.
    pub(crate) max_header_count: usize,
    /// What the gateway writes about this client in forwarding fields, made once per
    /// connection rather than per request.
    pub(crate) forwarded: Arc<Forwarded>,
}

/// What the gateways of one process share.
#[derive(Clone)]
pub struct Shared {
    /// Usage counters, in this process or in Redis.
    pub counters: Arc<Counters>,
    /// Where requests read the time, once each.
    pub clock: Arc<dyn Clock>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Where usage is aggregated for analytics, when something persists it.
    pub analytics: Option<Arc<Analytics>>,
    /// Open WebSockets per application (`max_connections` spans both environments).
    pub connections: Arc<Connections>,
    /// Edge limits (`rate_limit`) kept in this process.
    pub edge: Arc<EdgeMemory>,
    /// Where spans go, when tracing is on.
    pub tracer: Option<Arc<Tracer>>,
    /// Limits on every exchange with a backend, unless a product's policies say otherwise.
    pub defaults: ExchangeDefaults,
}

/// Limits on every exchange with a backend that hold unless a product's policy chain
/// says otherwise.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeDefaults {
    /// Time for a backend's response head once the request is sent, and between two
    /// parts of its body — as nginx's `proxy_read_timeout` (60 s). Over it: 504
    /// `upstream_timeout` (or a response that ends abnormally once begun). The
    /// `upstream_connection` policy's `read_timeout` replaces it per product.
    /// `--upstream-read-timeout`.
    pub read_timeout: std::time::Duration,
    /// HTTP/1 request bodies with a `Content-Length` of at most this many bytes are read
    /// whole before a backend connection is taken (nginx's `proxy_request_buffering`),
    /// so a client that trickles one holds no backend connection; larger ones are
    /// streamed. 0: always streamed. `--request-buffer-bytes`.
    pub request_buffer_bytes: u64,
}

impl Default for ExchangeDefaults {
    /// 60 s and 64 KiB.
    fn default() -> Self {
        ExchangeDefaults { read_timeout: std::time::Duration::from_secs(60), request_buffer_bytes: 64 * 1024 }
    }
}

/// One environment's gateway: the state every request of that environment shares.
pub struct Gateway {
    /// The environment it serves.
    pub environment: Environment,
    snapshot: SnapshotHandle,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    analytics: Option<Arc<Analytics>>,
    connections: Arc<Connections>,
    edge: Arc<EdgeMemory>,
    tracer: Option<Arc<Tracer>>,
    defaults: ExchangeDefaults,
    /// Set at shutdown: open WebSockets close with 1001.
    draining: watch::Sender<bool>,
}

impl Gateway {
    /// A gateway for `environment`, serving the snapshots stored in `snapshot`.
    pub fn new(environment: Environment, snapshot: SnapshotHandle, shared: Shared) -> Self {
        Gateway {
            environment,
            snapshot,
            counters: shared.counters,
            clock: shared.clock,
            metrics: shared.metrics,
            analytics: shared.analytics,
            connections: shared.connections,
            edge: shared.edge,
            tracer: shared.tracer,
            defaults: shared.defaults,
            draining: watch::channel(false).0,
        }
    }

    /// Closes every open WebSocket with 1001 (going away); used at shutdown. They wait
    /// on the snapshot's channel only (one wait per connection, not two): the flag is
    /// set, then they are woken to read it.
    pub fn drain(&self) {
        self.draining.send_replace(true);
        self.snapshot.wake();
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one request. Never fails: every failure becomes a response here.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        let upgrade_field = req.headers().contains_key(header::UPGRADE);
        let upgrade_requested = upgrade_field || (req.method() == Method::CONNECT && req.version() < Version::HTTP_2);
        let websocket_requested = (upgrade_field && header_has_token(req.headers(), header::UPGRADE, "websocket"))
            || req.extensions().get::<hyper::ext::Protocol>().is_some();
        let version = req.version();
        // Every request carries an id to the backend and back to the client: the
        // client's own if it sent a usable one, else a new one.
        let request_id = match req.headers().get(REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => {
                let id = v.clone();
                // One id for both: a second `X-Request-Id` would reach the backend only.
                if req.headers().get_all(REQUEST_ID).iter().nth(1).is_some() {
                    req.headers_mut().insert(REQUEST_ID, id.clone());
                }
                id
            }
            _ => {
                let id = new_request_id();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let traced = self.tracer.as_ref().and_then(|t| t.start(req.headers().get(TRACEPARENT)).map(|c| (t, c)));
        let started_ns = if traced.is_some() { now_ns() } else { 0 };
        let (method, path) = match traced {
            Some(_) => (req.method().to_string(), req.uri().path().to_string()),
            None => (String::new(), String::new()),
        };
        if let Some((_, c)) = traced {
            req.extensions_mut().insert(c);
        }
        let grpc = crate::rescue::is_grpc(req.headers());
        let mut resp = match self.route(req, &conn).await {
            Ok(resp) => resp,
            Err(refusal) => self.rescue(refusal),
        };
        if grpc && let Some(refused) = resp.extensions().get::<crate::rescue::Refused>().copied() {
            resp = crate::rescue::grpc_status(resp, refused);
        }
        // A refused upgrade (or HTTP/1 CONNECT) closes the connection: the client meant
        // to leave HTTP, and what it sent after the head may not be HTTP (nor was it
        // checked for smuggling, which steps aside after such a head).
        if upgrade_requested && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some((tracer, c)) = traced {
            let mut attrs = vec![
                ("http.request.method", Attr::Str(method)),
                ("url.path", Attr::Str(path)),
                ("http.response.status_code", Attr::Int(i64::from(resp.status().as_u16()))),
                ("tollgate.environment", Attr::Str(self.environment.as_str().into())),
                ("http.request.header.x-request-id", Attr::Str(String::from_utf8_lossy(request_id.as_bytes()).into())),
            ];
            if let Some(who) = resp.extensions_mut().remove::<Identified>() {
                attrs.push(("tollgate.product", Attr::Str(who.product)));
                if let Some(app) = who.application {
                    attrs.push(("tollgate.application", Attr::Str(app)));
                }
            }
            tracer.record(Span {
                trace_id: c.trace_id,
                span_id: c.span_id,
                parent: c.parent,
                name: "request",
                kind: 2,
                start_ns: started_ns,
                end_ns: now_ns(),
                attrs,
                error: resp.status().is_server_error(),
            });
        }
        resp.headers_mut().insert(REQUEST_ID, request_id);
        let metrics = self.metrics.env(self.environment);
        metrics.response(resp.status().as_u16());
        if websocket_requested {
            metrics.upgrade_answered(resp.status().as_u16(), version);
        }
        resp
    }

    async fn route(&self, mut req: Request<Incoming>, conn: &ConnInfo) -> Result<Response<GatewayBody>, Refusal> {
        // One atomic increment; the snapshot stays alive for this request even if a
        // new one is swapped in meanwhile.
        let snapshot = self.snapshot.load();
        let host_field = check_host_headers(req.headers())?;
        // The same for an absolute-form target or HTTP/2's :authority: the gateway routes
        // on it, and user information in it is either a trick or a leak.
        if req.uri().authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(Refusal::BadRequest("the request target must not carry user information"));
        }
        // An absolute-form target (or HTTP/2's :scheme) names HTTP: a gateway serves no
        // other scheme, and forwards none.
        if req.uri().scheme_str().is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https")) {
            return Err(Refusal::BadRequest("the request target's scheme must be http or https"));
        }
        if req.version() == Version::HTTP_2 {
            if req.headers().len() > conn.max_header_count {
                return Err(Refusal::TooManyHeaderFields);
            }
            check_http2_fields(&req)?;
        }
        // A gateway is no forward proxy: CONNECT opens a tunnel only as the extended
        // CONNECT of a WebSocket over HTTP/2 (RFC 8441).
        if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_none() {
            return Err(Refusal::NotImplemented);
        }
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET, yet a backend
        // that upper-cases methods would serve it as GET, past mapping rules and limits
        // written for GET. As nginx does, methods with lower-case letters are refused.
        if req.method().as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(Refusal::BadRequest(
                "methods are case-sensitive and written in upper case (RFC 9110 §9.1): send GET, not get",
            ));
        }
        // A backend or endpoint that is this gateway would send each request round
        // without end (each pass a connection and a task more).
        if exchange::came_back(req.headers()) {
            return Err(Refusal::LoopDetected);
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused, whatever the form
        // of its target (an absolute-form target names the host, but the rule has no
        // exception).
        if host_field.is_none() && req.version() == Version::HTTP_11 {
            return Err(Refusal::BadRequest("an HTTP/1.1 request must carry a Host header"));
        }
        let host = host_in(req.uri(), host_field).ok_or(Refusal::BadRequest("the request has no Host"))?;
        let product = match snapshot.product_for_host(host) {
            Some(p) => p,
            None if host.bytes().any(|b| b.is_ascii_uppercase()) => {
                snapshot.product_for_host(&host.to_ascii_lowercase()).ok_or(Refusal::UnknownHost)?
            }
            None => return Err(Refusal::UnknownHost),
        };
        let product = product.clone();
        // A connection opened (and its certificate chosen, and its client certificate
        // checked) for one product's name carries requests for that product only: a
        // Host of another product is misdirected (RFC 9110 §15.5.20), as when a client
        // reuses a connection across hosts a wildcard certificate covers.
        if let Some(sni) = &conn.sni
            && let Some(named) = snapshot.product_for_host(sni)
            && !Arc::ptr_eq(named, &product)
        {
            return Err(Refusal::Misdirected);
        }
        // Mutual TLS: the handshake checked the certificate against every product's
        // authorities; this product accepts only its own.
        if let Some(auth) = &product.client_auth {
            match &conn.client_certificate {
                None if auth.required => return Err(Refusal::ClientCertificateRequired),
                Some(cert) if !cert.verified_by(auth) => return Err(Refusal::ClientCertificateRefused),
                _ => {}
            }
        }
        // One canonical path from here on: what policies, mapping rules and routing
        // read is what the backend receives.
        match crate::path::canonical(req.uri().path(), product.path_rules) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(path)) => *req.uri_mut() = with_path(req.uri(), &path)?,
            Err(e) => return Err(Refusal::BadPath(e)),
        }
        let handshake = websocket_upgrade(&req)?;
        let websocket = handshake != Handshake::None;
        if websocket && !product.websocket {
            return Err(Refusal::WebSocketDisabled);
        }
        if handshake == Handshake::Http2 {
            // An extended CONNECT is the HTTP/2 spelling of the GET that opens a
            // WebSocket: mapping rules, policies and the backend see that GET.
            *req.method_mut() = Method::GET;
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // RFC 9112 §6.1: a transfer coding the gateway does not decode (anything but
        // `chunked`) is refused with 501, before any usage counts: the body would reach
        // the backend still coded and no longer labelled. (Only a body can have one.)
        if !body.is_end_stream() && other_transfer_coding(&parts.headers) {
            return Err(Refusal::NotImplemented);
        }
        let mut ctx = Context::new(&product, conn.client_addr, conn.tls, websocket, self.clock.now());
        // Verified for this product above (or none was presented).
        if product.client_auth.is_some() {
            ctx.client_certificate = conn.client_certificate.clone();
        }
        ctx.forwarded = Some(conn.forwarded.clone());
        ctx.trace = parts.extensions.get::<TraceCtx>().copied();
        // The gateway's default, which an `upstream_connection` policy may replace.
        ctx.decide(crate::policy::Decision::Timeouts { send: None, read: Some(self.defaults.read_timeout) });

        let mut resp = match self.request_phases(&mut parts, &mut ctx).await {
            Ok(app_slot) => match client_upgrade {
                Some(client) => {
                    let mut guards = std::mem::take(&mut ctx.plan_mut().held);
                    if handshake == Handshake::Http2 {
                        // A WebSocket on an HTTP/2 stream keeps its connection busy (never
                        // idle, never evicted) for as long as it is open.
                        guards.push(Box::new(conn.activity.begin()));
                    }
                    let slots = (conn.slot.clone(), app_slot, guards);
                    // Boxed, as the backend exchange is (`exchange::exchange`): the
                    // upgrade's 2 KB of future would otherwise be part of every
                    // request's.
                    Box::pin(self.websocket(&parts, &ctx, client, handshake == Handshake::Http2, slots)).await
                }
                None => {
                    let guards = std::mem::take(&mut ctx.plan_mut().held);
                    let pace = match (conn.min_data_rate, body.is_end_stream()) {
                        (Some(rate), false) => Some(BodyPace::new(rate, Some(conn.activity.clone()))),
                        _ => None,
                    };
                    // Places under a `connections` limiter are held until the body ends.
                    self.forward(&parts, body, &ctx, pace).await.map(|r| match guards.is_empty() {
                        true => r,
                        false => r.map(|b| b.holding(guards)),
                    })
                }
            },
            Err(local) => Ok(local),
        };
        // Response phases run for proxied and local responses alike (a 401 needs its
        // CORS headers as much as a 200 does).
        if let Ok(r) = resp.as_mut() {
            let started = self.span_start(&ctx);
            let (mut head, body) = std::mem::replace(r, Response::new(GatewayBody::empty())).into_parts();
            for policy in &product.chain {
                policy.response(&mut head, &parts, &ctx);
            }
            *r = Response::from_parts(head, body);
            self.span_end(&ctx, "response", started, None, Vec::new());
            if ctx.trace.is_some() {
                let application = ctx.application.as_ref().map(|a| a.id.to_string());
                r.extensions_mut().insert(Identified { product: product.system_name.to_string(), application });
            }
        }
        let status = match &resp {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        self.product_metrics(&product).response(status.as_u16(), ctx.started.elapsed());
        recycle_map(std::mem::take(&mut parts.headers));
        resp
    }

    fn product_metrics<'p>(&self, product: &'p Product) -> &'p Arc<crate::metrics::ProductMetrics> {
        product.stats.get_or_init(|| self.metrics.product(self.environment, &product.system_name))
    }

    /// Rewrite and access phases, then the limits check. `Err` is a local response.
    async fn request_phases(
        &self,
        parts: &mut request::Parts,
        ctx: &mut Context<'_>,
    ) -> Result<Option<ConnectionSlot>, Response<GatewayBody>> {
        let chain = &ctx.product.chain;
        let started = self.span_start(ctx);
        // The path as `route` made it canonical: whether a rewrite changes it decides
        // whether the backend's part of it is checked again (`destination_with_prefix`).
        let entry = parts.uri.clone();
        for policy in chain {
            if let Some(answer) = self.stopped(policy.rewrite(parts, ctx)) {
                self.span_end(ctx, "rewrite", started, None, Vec::new());
                return Err(answer);
            }
        }
        ctx.path_as_entered = parts.uri.path() == entry.path();
        self.span_end(ctx, "rewrite", started, None, Vec::new());
        let started = self.span_start(ctx);
        for policy in chain {
            if let Some(answer) = self.stopped(policy.access(parts, ctx)) {
                self.span_end(ctx, "access", started, None, Vec::new());
                return Err(answer);
            }
        }
        self.span_end(ctx, "access", started, None, Vec::new());
        let started = self.span_start(ctx);
        let limited = self.limits(parts, ctx).await;
        self.span_end(ctx, "limits", started, None, Vec::new());
        limited.map_err(|refusal| self.rescue(refusal))
    }

    /// What a request phase's decision answers, if it stops the request.
    fn stopped(&self, flow: Flow) -> Option<Response<GatewayBody>> {
        match flow {
            Flow::Continue => None,
            Flow::Respond(answer) => Some(answer),
            Flow::Refuse(refusal) => Some(self.rescue(refusal)),
        }
    }

    /// The answer to a refusal ([`crate::rescue::respond`]), counted in this
    /// environment's metrics.
    fn rescue(&self, refusal: Refusal) -> Response<GatewayBody> {
        crate::rescue::respond(refusal, self.metrics.env(self.environment))
    }

    /// When traced: a span id for the call to the backend, announced to it in
    /// `traceparent` (with its start time).
    fn trace_upstream(&self, ctx: &Context<'_>, head: &mut request::Parts) -> Option<([u8; 8], u64)> {
        let (t, tracer) = (ctx.trace.as_ref()?, self.tracer.as_ref()?);
        let id = tracer.span_id();
        head.headers.insert(TRACEPARENT, traceparent(&t.trace_id, &id));
        Some((id, now_ns()))
    }

    /// `now_ns()` when the request is traced (0 otherwise: no clock read).
    fn span_start(&self, ctx: &Context<'_>) -> u64 {
        if ctx.trace.is_some() { now_ns() } else { 0 }
    }

    /// Records a child span of the request's server span, when traced.
    fn span_end(
        &self,
        ctx: &Context<'_>,
        name: &'static str,
        start_ns: u64,
        id: Option<[u8; 8]>,
        attrs: Vec<(&'static str, Attr)>,
    ) {
        if let (Some(t), Some(tracer)) = (&ctx.trace, &self.tracer) {
            tracer.record(Span {
                trace_id: t.trace_id,
                span_id: id.unwrap_or_else(|| tracer.span_id()),
                parent: Some(t.span_id),
                name,
                kind: if id.is_some() { 3 } else { 1 },
                start_ns,
                end_ns: now_ns(),
                attrs,
                error: false,
            });
        }
    }
}

/// The request id header every request carries to the backend and back (see
/// [`new_request_id`]).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C trace context header (tracing).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Who a traced request turned out to be for (carried on the response to the server span).
#[derive(Clone)]
struct Identified {
    product: String,
    application: Option<String>,
}

/// A request id: 32 hex digits, 128 random bits (`rand`'s thread generator, seeded by
/// the operating system) — unique across nodes and runs, and saying nothing of how many
/// requests came before. Not a secret: clients and backends see it.
///
/// Its bytes are one reference-counted allocation (`Bytes::from_owner`): the id goes to
/// the backend and back to the client, and a copied slice was made shared — a second
/// allocation — at its first clone.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    if hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut buf).is_err() {
        return HeaderValue::from_static("0");
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf)).unwrap_or(HeaderValue::from_static("0"))
}
