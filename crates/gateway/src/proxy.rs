//! The request path: host → product, the policy chain, limits, routing to a backend
//! usage, and the proxied exchange (HTTP, or a WebSocket upgrade and its relay).

use crate::analytics::Analytics;
use crate::body::GatewayBody;
use crate::body::{BrokenBodies, Held, Stopped, Timer, UpstreamBody};
use crate::deadline::BodyPace;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::routing::Target;
use crate::policy::{Context, Flow};
use crate::relay::{self, RelayOptions};
use crate::session::{ConnectionSlot, Connections, Session, plan_checks};
use crate::snapshot::{Environment, Product, SnapshotHandle};
use crate::trace::{Attr, Span, TraceCtx, Tracer, now_ns, traceparent};
use crate::upstream::{Upstream, error_chain};
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version, request};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tollgate_counters::{Clock, Counters, Decision, EdgeDecision, EdgeMemory, FailureMode, LimitStatus};

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client_addr: SocketAddr,
    pub tls: bool,
    /// The connection's place under the listener's cap. A WebSocket relay keeps a clone,
    /// so an upgraded connection still counts until it closes.
    pub(crate) slot: Arc<crate::server::Slot>,
    /// What the connection is doing (requests in flight, bodies behind the minimum rate).
    pub(crate) activity: Arc<crate::deadline::Activity>,
    /// The least the client must send and take; `None`: no minimum.
    pub(crate) min_data_rate: Option<crate::deadline::MinDataRate>,
}

/// What the gateways of one process share.
#[derive(Clone)]
pub struct Shared {
    pub counters: Arc<Counters>,
    pub clock: Arc<dyn Clock>,
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

    /// Closes every open WebSocket with 1001 (going away); used at shutdown.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one request. Never fails: every failure becomes a response here.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        let upgrade_requested = req.headers().contains_key(header::UPGRADE)
            || (req.method() == Method::CONNECT && req.version() < Version::HTTP_2);
        let websocket_requested = header_has_token(req.headers(), header::UPGRADE, "websocket")
            || req.extensions().get::<hyper::ext::Protocol>().is_some();
        let version = req.version();
        // Every request carries an id to the backend and back to the client: the
        // client's own if it sent a usable one, else a new one.
        let request_id = match req.headers().get(REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
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
        let mut resp = match self.route(req, &conn).await {
            Ok(resp) => resp,
            Err(e) => {
                if e.side() == crate::error::Side::Upstream {
                    self.metrics.env(self.environment).upstream_error();
                }
                e.into_response()
            }
        };
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

    async fn route(&self, mut req: Request<Incoming>, conn: &ConnInfo) -> Result<Response<GatewayBody>, GatewayError> {
        // One atomic increment; the snapshot stays alive for this request even if a
        // new one is swapped in meanwhile.
        let snapshot = self.snapshot.load();
        check_host_headers(req.headers())?;
        // The same for an absolute-form target or HTTP/2's :authority: the gateway routes
        // on it, and user information in it is either a trick or a leak.
        if req.uri().authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(GatewayError::BadRequest("the request target must not carry user information"));
        }
        if req.version() == Version::HTTP_2 {
            check_http2_fields(&req)?;
        }
        // A gateway is no forward proxy: CONNECT opens a tunnel only as the extended
        // CONNECT of a WebSocket over HTTP/2 (RFC 8441).
        if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_none() {
            return Err(GatewayError::NotImplemented);
        }
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET, yet a backend
        // that upper-cases methods would serve it as GET, past mapping rules and limits
        // written for GET. As nginx does, methods with lower-case letters are refused.
        if req.method().as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(GatewayError::BadRequest(
                "methods are case-sensitive and written in upper case (RFC 9110 §9.1): send GET, not get",
            ));
        }
        let host = request_host(&req).ok_or(GatewayError::BadRequest("the request has no Host"))?;
        let product = match snapshot.product_for_host(host) {
            Some(p) => p,
            None if host.bytes().any(|b| b.is_ascii_uppercase()) => {
                snapshot.product_for_host(&host.to_ascii_lowercase()).ok_or(GatewayError::UnknownHost)?
            }
            None => return Err(GatewayError::UnknownHost),
        };
        let product = product.clone();
        // One canonical path from here on: what policies, mapping rules and routing
        // read is what the backend receives.
        match crate::path::canonical(req.uri().path(), product.path_rules) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(path)) => *req.uri_mut() = with_path(req.uri(), &path)?,
            Err(e) => return Err(GatewayError::BadPath(e)),
        }
        let handshake = websocket_upgrade(&req)?;
        let websocket = handshake != Handshake::None;
        if websocket && !product.websocket {
            return Err(GatewayError::WebSocketDisabled);
        }
        if handshake == Handshake::Http2 {
            // An extended CONNECT is the HTTP/2 spelling of the GET that opens a
            // WebSocket: mapping rules, policies and the backend see that GET.
            *req.method_mut() = Method::GET;
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let mut ctx = Context {
            upstream_timeouts: (None, Some(self.defaults.read_timeout)),
            trace: parts.extensions.get::<TraceCtx>().copied(),
            ..Context::new(&product, conn.client_addr, conn.tls, websocket, self.clock.now())
        };

        let mut resp = match self.request_phases(&mut parts, &mut ctx).await {
            Ok(app_slot) => match client_upgrade {
                Some(client) => {
                    let mut guards = std::mem::take(&mut ctx.guards);
                    if handshake == Handshake::Http2 {
                        // A WebSocket on an HTTP/2 stream keeps its connection busy (never
                        // idle, never evicted) for as long as it is open.
                        guards.push(Box::new(conn.activity.begin()));
                    }
                    let slots = (conn.slot.clone(), app_slot, guards);
                    self.websocket(&parts, &ctx, client, handshake == Handshake::Http2, slots).await
                }
                None => {
                    let guards = std::mem::take(&mut ctx.guards);
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
        for policy in chain {
            if let Flow::Respond(r) = policy.rewrite(parts, ctx) {
                self.span_end(ctx, "rewrite", started, None, Vec::new());
                return Err(r);
            }
        }
        self.span_end(ctx, "rewrite", started, None, Vec::new());
        let started = self.span_start(ctx);
        for policy in chain {
            if let Flow::Respond(r) = policy.access(parts, ctx) {
                self.span_end(ctx, "access", started, None, Vec::new());
                return Err(r);
            }
        }
        self.span_end(ctx, "access", started, None, Vec::new());
        let started = self.span_start(ctx);
        let limited = self.limits(parts, ctx).await;
        self.span_end(ctx, "limits", started, None, Vec::new());
        limited
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

    /// After the access phase: edge limits, the connection cap, the plan's limits.
    async fn limits(
        &self,
        _parts: &request::Parts,
        ctx: &mut Context<'_>,
    ) -> Result<Option<ConnectionSlot>, Response<GatewayBody>> {
        self.edge_limits(ctx).await?;
        let Some(app) = ctx.application.as_ref() else { return Ok(None) };
        let product = ctx.product;
        // The cap comes before the limits, so a refused connection consumes no quota.
        let app_slot = if ctx.websocket {
            match self.connections.try_open(&app.id, app.plan.max_connections).await {
                Ok(Some(slot)) => Some(slot),
                Ok(None) => return Err(GatewayError::TooManyConnections.into_response()),
                Err(e) => return Err(GatewayError::CountersUnavailable(e.to_string()).into_response()),
            }
        } else {
            None
        };
        let checks = plan_checks(product, app, &ctx.usage);
        match self.counters.authorize(&app.id, &checks, ctx.now).await {
            Ok(Decision::Allowed(_)) => {
                if let Some(analytics) = &self.analytics {
                    let usage = ctx.usage.0.iter().map(|(m, d)| (product.metrics.name(*m), *d));
                    analytics.record(&app.id, &product.system_name, usage, ctx.now);
                }
                Ok(app_slot)
            }
            Ok(Decision::Exceeded(status)) => {
                self.metrics.env(self.environment).limits_exceeded();
                let mut resp = product.errors.limits_exceeded.respond();
                rate_limit_headers(resp.headers_mut(), &status, ctx.now);
                Err(resp)
            }
            Err(e) => Err(GatewayError::CountersUnavailable(e.to_string()).into_response()),
        }
    }

    /// The upstream request's head: the client's, minus hop-by-hop headers, with
    /// `X-Forwarded-*` added and the upstream request phase applied.
    /// The `rate_limit` policies' checks, after every access phase and before the plan's
    /// limits. `Err` is the refusal.
    async fn edge_limits(&self, ctx: &mut Context<'_>) -> Result<(), Response<GatewayBody>> {
        if ctx.edge.is_empty() {
            return Ok(());
        }
        // Edge windows and buckets need milliseconds (the clock gives seconds).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(ctx.now * 1000, |d| d.as_millis() as i64);
        for edge in std::mem::take(&mut ctx.edge) {
            let decision = match (edge.redis, self.counters.redis()) {
                (true, Some(redis)) => match redis.edge(&edge.checks, now_ms).await {
                    Ok(d) => d,
                    Err(e) if redis.mode() == FailureMode::Strict => {
                        return Err(GatewayError::CountersUnavailable(e.to_string()).into_response());
                    }
                    // `allow` and `resilient`: this node's own counts meanwhile.
                    Err(_) => self.edge.check(&edge.checks, now_ms),
                },
                _ => self.edge.check(&edge.checks, now_ms),
            };
            if let EdgeDecision::Refused { retry_after_ms, .. } = decision {
                self.metrics.env(self.environment).limits_exceeded();
                let mut resp = edge.refusal.respond();
                let secs = (retry_after_ms + 999) / 1000;
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                return Err(resp);
            }
            for (key, max) in &edge.connections {
                // In Redis: a lease like a WebSocket's under max_connections (renewed by
                // this node, freed by its expiry if the node dies).
                let place: Option<Held> = match (edge.redis, self.counters.redis()) {
                    (true, Some(_)) => match self.connections.try_open(&format!("edge:{key}"), Some(*max)).await {
                        Ok(slot) => slot.map(|s| Box::new(s) as Held),
                        Err(e) => return Err(GatewayError::CountersUnavailable(e.to_string()).into_response()),
                    },
                    _ => self.edge.acquire(key, *max).map(|g| Box::new(g) as Held),
                };
                match place {
                    Some(p) => ctx.guards.push(p),
                    None => {
                        self.metrics.env(self.environment).limits_exceeded();
                        ctx.guards.clear();
                        return Err(edge.refusal.respond());
                    }
                }
            }
        }
        Ok(())
    }

    fn upstream_head(
        &self,
        parts: &request::Parts,
        ctx: &Context<'_>,
        upstream: &Upstream,
        rest: &str,
    ) -> Result<request::Parts, GatewayError> {
        let uri = upstream
            .uri(rest, parts.uri.query())
            .map_err(|_| GatewayError::BadRequest("the request path cannot be forwarded"))?;
        let (mut head, ()) = Request::new(()).into_parts();
        head.method = parts.method.clone();
        head.uri = uri;
        head.version = Version::HTTP_11;
        head.headers = forwardable_headers(&parts.headers);
        add_forwarded(&mut head.headers, parts, ctx);
        for policy in &ctx.product.chain {
            policy.upstream_request(&mut head, ctx);
        }
        Ok(head)
    }

    async fn forward(
        &self,
        parts: &request::Parts,
        body: Incoming,
        ctx: &Context<'_>,
        pace: Option<BodyPace>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let (upstream, rest, prefix) = destination_with_prefix(parts, ctx)?;
        let resp = self.forward_to(parts, body, ctx, upstream, rest, pace).await;
        match resp {
            Ok(mut r) if ctx.product.rewrite_redirects => {
                rewrite_redirects(r.headers_mut(), upstream, &ctx.product.public_base, prefix);
                Ok(r)
            }
            other => other,
        }
    }

    async fn forward_to(
        &self,
        parts: &request::Parts,
        body: Incoming,
        ctx: &Context<'_>,
        upstream: &Upstream,
        rest: &str,
        pace: Option<BodyPace>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if let Some(retry) = &ctx.retry {
            // A bodyless request: each attempt sends a fresh empty body.
            let mut attempt = 0;
            loop {
                let mut head = self.upstream_head(parts, ctx, upstream, rest)?;
                let span = self.trace_upstream(ctx, &mut head);
                let last = attempt == retry.retries;
                let result =
                    exchange(upstream, Request::from_parts(head, UpstreamBody::Empty), ctx.upstream_timeouts.1).await;
                if let Some((id, start)) = span {
                    let status = result.as_ref().map_or(0, |r| i64::from(r.status().as_u16()));
                    self.span_end(
                        ctx,
                        "upstream",
                        start,
                        Some(id),
                        vec![("http.response.status_code", Attr::Int(status))],
                    );
                }
                let again = match &result {
                    Ok(r) => retry.statuses.contains(&r.status()),
                    Err(GatewayError::UpstreamUnavailable(_) | GatewayError::UpstreamTimeout(_)) => true,
                    Err(_) => false,
                };
                if last || !again {
                    return self.shape_response(result?, ctx.upstream_timeouts.1, ctx.payload_limits.1);
                }
                attempt += 1;
                self.metrics.env(self.environment).upstream_error();
                tracing::debug!(attempt, "retrying the request");
                if !retry.delay.is_zero() {
                    tokio::time::sleep(retry.delay).await;
                }
            }
        }
        let mut head = self.upstream_head(parts, ctx, upstream, rest)?;
        let upstream_span = self.trace_upstream(ctx, &mut head);
        let (request_limit, response_limit) = ctx.payload_limits;
        let read_timeout = ctx.upstream_timeouts.1;
        let send_timeout = ctx.upstream_timeouts.0;
        let stopped = Stopped::default();
        let body = if body.is_end_stream() {
            UpstreamBody::from(body)
        } else {
            let timer = send_timeout.map(Timer::deadline);
            let limited = UpstreamBody::limited(body, request_limit, timer, pace, stopped.clone());
            // A small body is read whole before a backend connection is taken (as
            // nginx's `proxy_request_buffering`): a client that trickles it holds no
            // backend connection meanwhile. Over HTTP/1 only, where a body with a
            // Content-Length has no trailers to lose.
            let buffered = parts.version < http::Version::HTTP_2
                && limited.size_hint().exact().is_some_and(|n| n <= self.defaults.request_buffer_bytes);
            if buffered {
                match limited.collect().await {
                    Ok(whole) => UpstreamBody::bytes(whole.to_bytes()),
                    Err(e) => {
                        return Err(body_stopped(&stopped, upstream)
                            .unwrap_or_else(|| GatewayError::BadRequestBody(e.to_string())));
                    }
                }
            } else {
                limited
            }
        };
        let sent = std::time::Instant::now();
        // The whole request is sent before the backend answers (usually): the head is
        // due within both timeouts.
        let head_due = read_timeout.map(|read| read + send_timeout.unwrap_or_default());
        let resp = exchange(upstream, Request::from_parts(head, body), head_due).await;
        if resp.is_ok() {
            self.product_metrics(ctx.product).upstream.observe(sent.elapsed());
        }
        if let Some((id, start)) = upstream_span {
            let status = resp.as_ref().map_or(0, |r| i64::from(r.status().as_u16()));
            let attrs = vec![
                ("server.address", Attr::Str(upstream.authority.to_string())),
                ("http.response.status_code", Attr::Int(status)),
            ];
            self.span_end(ctx, "upstream", start, Some(id), attrs);
        }
        // The body stopped on the way: that, not the backend's reaction to it, is what
        // the client hears.
        if let Some(e) = body_stopped(&stopped, upstream) {
            return Err(e);
        }
        self.shape_response(resp?, read_timeout, response_limit)
    }

    /// A backend's response as the client gets it: hop-by-hop headers removed, the
    /// `upstream_connection` read timeout and the `payload_limits` response limit
    /// applied, and a body that fails after the head reported (metrics, log).
    fn shape_response(
        &self,
        resp: Response<GatewayBody>,
        read_timeout: Option<std::time::Duration>,
        response_limit: Option<u64>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let report = BrokenBodies { metrics: self.metrics.clone(), environment: self.environment };
        shape_response(resp, read_timeout, response_limit).map(|r| r.map(|b| b.reporting(report)))
    }

    async fn websocket(
        &self,
        parts: &request::Parts,
        ctx: &Context<'_>,
        client: hyper::upgrade::OnUpgrade,
        over_h2: bool,
        (listener_slot, app_slot, guards): (Arc<crate::server::Slot>, Option<ConnectionSlot>, Vec<Held>),
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let (upstream, rest, prefix) = destination_with_prefix(parts, ctx)?;
        let mut head = self.upstream_head(parts, ctx, upstream, rest)?;
        let upgrade_span = self.trace_upstream(ctx, &mut head);
        // Upgrade requests go on a connection of their own.
        head.headers.insert(header::HOST, upstream.host.clone());
        head.headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        head.headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if over_h2 {
            // RFC 8441 has no key exchange; the backend's HTTP/1.1 handshake needs one.
            head.headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
            head.headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }

        let stream = upstream.connector.connect().await?;
        let (mut sender, connection) = crate::upstream::http1_client()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| GatewayError::UpstreamFailed(format!("{}: {}", upstream.label(), error_chain(&e))))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream WebSocket handshake connection ended");
            }
        });
        // The backend answers the upgrade within the read timeout, as any request.
        let answer = sender.send_request(Request::from_parts(head, Empty::new()));
        let mut resp = match ctx.upstream_timeouts.1 {
            Some(due) => tokio::time::timeout(due, answer).await.map_err(|_| {
                GatewayError::UpstreamTimeout(format!(
                    "{}: no answer to the WebSocket upgrade within read_timeout",
                    upstream.label()
                ))
            })?,
            None => answer.await,
        }
        .map_err(|e| {
            let detail = format!("{}: {}", upstream.label(), error_chain(&e));
            match crate::upstream::is_invalid_response(&e) {
                true => GatewayError::UpstreamInvalidResponse(detail),
                false => GatewayError::UpstreamFailed(detail),
            }
        })?;
        if let Some((id, start)) = upgrade_span {
            let status = vec![("http.response.status_code", Attr::Int(i64::from(resp.status().as_u16())))];
            self.span_end(ctx, "upstream", start, Some(id), status);
        }
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The backend refused the upgrade: its answer goes to the client as it is.
            strip_hop_by_hop(resp.headers_mut());
            if ctx.product.rewrite_redirects {
                rewrite_redirects(resp.headers_mut(), upstream, &ctx.product.public_base, prefix);
            }
            return Ok(resp.map(GatewayBody::from));
        }
        let backend = hyper::upgrade::on(&mut resp);
        let deflate = header_has_token_prefix(resp.headers(), header::SEC_WEBSOCKET_EXTENSIONS, "permessage-deflate");
        // Governed only when the `tollgate` policy identified an application.
        let session = match (&ctx.application, &ctx.credential) {
            (Some(app), Some(credential)) => Some(Arc::new(Session {
                snapshot: self.snapshot.clone(),
                host: request_host_of(parts).unwrap_or_default().to_ascii_lowercase().into(),
                product: ctx.product.system_name.clone(),
                app_id: app.id.clone(),
                plan: app.plan.system_name.clone(),
                slot: app_slot,
                credential: credential.clone(),
                counters: self.counters.clone(),
                clock: self.clock.clone(),
                analytics: self.analytics.clone(),
                cache: Default::default(),
                token_expires: ctx.token_expires,
            })),
            _ => None,
        };
        let gate: Option<relay::Gate> = session.clone().map(|s| s as relay::Gate);
        let ws = &ctx.product.websocket_config;
        let metrics = self.metrics.clone();
        let product_metrics = self.product_metrics(ctx.product).clone();
        let env = self.environment;
        let tally = Arc::new(relay::Tally::default());
        let options = RelayOptions {
            tallies: vec![product_metrics.websocket_tally.clone(), tally.clone()],
            deflate,
            max_message_bytes: ws.max_message_bytes,
            gate,
            idle_timeout: ws.idle_timeout,
            ping_interval: ws.ping_interval,
            pong_timeout: ws.pong_timeout,
            max_duration: ws.max_connection_duration,
        };
        let (generations, draining) = (self.snapshot.subscribe(), self.draining.subscribe());
        let mut out = Response::new(GatewayBody::empty());
        *out.headers_mut() = forwardable_headers(resp.headers());
        if over_h2 {
            // A 2xx to the CONNECT opens the stream as the WebSocket (RFC 8441 §5).
            out.headers_mut().remove(header::SEC_WEBSOCKET_ACCEPT);
        } else {
            *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            out.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            out.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        tokio::spawn(async move {
            let (client, backend) = tokio::join!(client, backend);
            let (client, backend) = match (client, backend) {
                (Ok(c), Ok(b)) => (c, b),
                (c, b) => {
                    tracing::debug!(
                        client_ok = c.is_ok(),
                        backend_ok = b.is_ok(),
                        "WebSocket upgrade did not complete"
                    );
                    return;
                }
            };
            metrics.env(env).websocket_opened();
            product_metrics.websocket_opened();
            let governed = session.clone();
            // Boxed: the relay polls it in place, and it is a few hundred bytes that
            // every open connection would otherwise carry twice.
            let stop = Box::pin(async move {
                match &governed {
                    Some(s) => s.until_closed(generations, draining).await,
                    None => {
                        let mut draining = draining;
                        let _ = draining.wait_for(|d| *d).await;
                        (relay::CLOSE_GOING_AWAY, "the gateway is shutting down")
                    }
                }
            });
            // Pinned where it is made: this task lives as long as the connection, and
            // each copy of the relay future would be memory held per open WebSocket.
            let mut relayed = std::pin::pin!(relay::relay(TokioIo::new(client), TokioIo::new(backend), options, stop));
            let totals = match &session {
                Some(s) => s.accounted(relayed.as_mut(), &tally).await,
                None => relayed.await,
            };
            tracing::debug!(?totals, "WebSocket closed");
            metrics.env(env).websocket_closed(&totals);
            product_metrics.websocket_closed();
            drop((session, listener_slot, guards));
        });
        Ok(out)
    }
}

/// `uri` with its path replaced (scheme, authority and query kept).
fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, GatewayError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(pq.parse().map_err(|_| GatewayError::BadRequest("the request target cannot be forwarded"))?);
    http::Uri::from_parts(parts).map_err(|_| GatewayError::BadRequest("the request target cannot be forwarded"))
}

/// RFC 9112 §3.2: one Host, with no user information; otherwise two readers may pick
/// two different products or backends.
pub(crate) fn check_host_headers(headers: &HeaderMap) -> Result<(), GatewayError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    if let (Some(first), second) = (hosts.next(), hosts.next()) {
        if second.is_some() {
            return Err(GatewayError::BadRequest("the request has more than one Host header"));
        }
        if first.as_bytes().contains(&b'@') {
            return Err(GatewayError::BadRequest("a Host header must not carry user information"));
        }
    }
    Ok(())
}

fn request_host(req: &Request<Incoming>) -> Option<&str> {
    host_of(req.uri(), req.headers())
}

fn request_host_of(parts: &request::Parts) -> Option<&str> {
    host_of(&parts.uri, &parts.headers)
}

/// The request's host, without port: the `Host` header (HTTP/1.1) or the `:authority`.
pub(crate) fn host_of<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// Whether a comma-separated header lists an item starting with `token` (extension
/// offers carry parameters: `permessage-deflate; client_max_window_bits`).
fn header_has_token_prefix(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case(token)))
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How a request opens a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    None,
    /// `GET` with `Upgrade: websocket` (RFC 6455).
    Http1,
    /// Extended CONNECT with `:protocol: websocket` (RFC 8441).
    Http2,
}

/// A fresh `Sec-WebSocket-Key`: 16 unpredictable bytes, base64-encoded.
fn websocket_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&relay::random_u64().to_be_bytes());
    nonce[8..].copy_from_slice(&relay::random_u64().to_be_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Whether the request asks for a WebSocket, and how; an invalid request is an error.
pub(crate) fn websocket_upgrade<B>(req: &Request<B>) -> Result<Handshake, GatewayError> {
    let headers = req.headers();
    if let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() {
        if req.method() != Method::CONNECT || !protocol.as_str().eq_ignore_ascii_case("websocket") {
            return Err(GatewayError::BadUpgrade("extended CONNECT tunnels the websocket protocol only"));
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            return Err(GatewayError::BadUpgrade("Sec-WebSocket-Version must be 13"));
        }
        return Ok(Handshake::Http2);
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Ok(Handshake::None);
    }
    if req.version() != Version::HTTP_11 {
        return Err(GatewayError::BadUpgrade("WebSocket upgrades need HTTP/1.1"));
    }
    if req.method() != Method::GET {
        return Err(GatewayError::BadUpgrade("the upgrade request must be a GET"));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(GatewayError::BadUpgrade("`Connection: Upgrade` is missing"));
    }
    let key_ok = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k.as_bytes()).ok())
        .is_some_and(|k| k.len() == 16);
    if !key_ok {
        return Err(GatewayError::BadUpgrade("Sec-WebSocket-Key is missing or not 16 base64-encoded bytes"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(GatewayError::BadUpgrade("Sec-WebSocket-Version must be 13"));
    }
    // A body before the upgrade would be read by one side as the first WebSocket
    // frames and by the other as a body: refused (RFC 6455 §4.1 sends none).
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(GatewayError::BadUpgrade("an upgrade request must not carry a body"));
    }
    Ok(Handshake::Http1)
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// The header names a `Connection` header lists (hop-by-hop by declaration). Empty,
/// without allocating, in the usual case of no `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// A copy of `headers` without hop-by-hop headers (RFC 9110 §7.6.1) and `Host`.
/// Copying clones reference-counted bytes, not data.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
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
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in rand::random::<u128>().to_be_bytes().iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

/// Why a request body stopped on its way to the backend, if it did.
fn body_stopped(stopped: &Stopped, upstream: &Upstream) -> Option<GatewayError> {
    match stopped.load(std::sync::atomic::Ordering::Relaxed) {
        crate::body::STOPPED_TOO_LARGE => Some(GatewayError::RequestTooLarge),
        crate::body::STOPPED_SEND_TIMEOUT => Some(GatewayError::UpstreamTimeout(format!(
            "{}: the request was not sent within send_timeout",
            upstream.label()
        ))),
        crate::body::STOPPED_TOO_SLOW => Some(GatewayError::RequestTimeout),
        crate::body::STOPPED_UNREADABLE => {
            Some(GatewayError::BadRequestBody("the client's body ended before its end or was malformed".into()))
        }
        _ => None,
    }
}

/// Sends a request to the backend; with `head_due`, its response head must come by then.
async fn exchange(
    upstream: &Upstream,
    req: Request<UpstreamBody>,
    head_due: Option<std::time::Duration>,
) -> Result<Response<GatewayBody>, GatewayError> {
    match head_due {
        None => upstream.request(req).await,
        Some(d) => tokio::time::timeout(d, upstream.request(req)).await.unwrap_or_else(|_| {
            Err(GatewayError::UpstreamTimeout(format!("{}: no response head within read_timeout", upstream.label())))
        }),
    }
}

/// A backend's response as the client gets it: hop-by-hop headers removed, the
/// `upstream_connection` read timeout and the `payload_limits` response limit applied.
fn shape_response(
    mut resp: Response<GatewayBody>,
    read_timeout: Option<std::time::Duration>,
    response_limit: Option<u64>,
) -> Result<Response<GatewayBody>, GatewayError> {
    if let Some(max) = response_limit {
        let declared = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(GatewayError::ResponseTooLarge);
        }
        resp = resp.map(|b| b.capped(max));
    }
    if let Some(read) = read_timeout {
        resp = resp.map(|b| b.idle_timeout(read));
    }
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

/// Where the request goes: where a policy (`upstream`, `routing`) sent it, or the
/// product's backend usage with the longest matching prefix; with the path to send.
/// Also the public path prefix the backend sits under (its usage's; none for a policy's
/// target), for rewriting its redirects.
fn destination_with_prefix<'c>(
    parts: &'c request::Parts,
    ctx: &'c Context<'_>,
) -> Result<(&'c Upstream, &'c str, &'c str), GatewayError> {
    let (upstream, rest, prefix) = destination_of(parts, ctx)?;
    // The path was made canonical on entry, but a policy may have rewritten it since:
    // what goes after the backend's base path must still have no dot-segments, so the
    // request can never leave that base path.
    if rest.starts_with('/') && !matches!(crate::path::canonical(rest, ctx.product.path_rules), Ok(c) if c == rest) {
        return Err(GatewayError::BadPath(crate::path::PathError::AboveRoot));
    }
    Ok((upstream, rest, prefix))
}

fn destination_of<'c>(
    parts: &'c request::Parts,
    ctx: &'c Context<'_>,
) -> Result<(&'c Upstream, &'c str, &'c str), GatewayError> {
    match &ctx.route {
        None => {
            let (usage, rest) = ctx.product.route(parts.uri.path()).ok_or(GatewayError::NoBackend)?;
            Ok((&usage.upstream, rest, &usage.prefix))
        }
        Some(route) => {
            let upstream = match &route.target {
                Target::Url(u) => u,
                Target::Backend(name) => {
                    &ctx.product.usages.iter().find(|u| *u.backend == **name).ok_or(GatewayError::NoBackend)?.upstream
                }
            };
            Ok((upstream, route.path.as_str(), ""))
        }
    }
}

/// `Location`, `Content-Location` and the URL of `Refresh` that point at the backend's
/// private base URL point at the public base URL the request came through instead
/// (`public`: its scheme, host and port; then the usage's path `prefix`), as nginx's
/// default `proxy_redirect` does: a backend's own address never reaches a client.
/// Nothing is allocated unless a header is rewritten.
fn rewrite_redirects(headers: &mut HeaderMap, upstream: &Upstream, public: &str, prefix: &str) {
    const REFRESH: HeaderName = HeaderName::from_static("refresh");
    let map = |url: &str| {
        upstream.private_prefixes.iter().find_map(|p| {
            let rest = url.strip_prefix(p.as_str())?;
            (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then(|| format!("{public}{prefix}{rest}"))
        })
    };
    for name in [header::LOCATION, header::CONTENT_LOCATION, REFRESH] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        let rewritten = if name == REFRESH {
            // `5; url=http://…`
            let at = value.to_ascii_lowercase().find("url=").map(|i| i + 4);
            at.and_then(|i| map(value[i..].trim_matches(['"', '\''])).map(|u| format!("{}{u}", &value[..i])))
        } else {
            map(value)
        };
        if let Some(v) = rewritten.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
}

pub(crate) fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    let named = connection_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.len() + 4);
    for (name, value) in headers {
        // The request id is the gateway's (it set it, or took the client's as its own):
        // a client's Connection list cannot take it off the request.
        if !HOP_BY_HOP.contains(name) && (!named.contains(name) || *name == REQUEST_ID) {
            out.append(name.clone(), value.clone());
        }
    }
    // RFC 9113 §8.2.3: HTTP/2 may split Cookie into several fields; they are joined
    // with "; " before they go to HTTP/1.1 (where one Cookie field is allowed).
    let mut cookies = out.get_all(header::COOKIE).iter();
    if let (Some(first), Some(_)) = (cookies.next(), cookies.next()) {
        let mut joined = first.as_bytes().to_vec();
        for more in out.get_all(header::COOKIE).iter().skip(1) {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(more.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            out.insert(header::COOKIE, v);
        }
    }
    out
}

/// RFC 9113 §8.2.1 and §8.3.1: what makes an HTTP/2 request malformed beyond what the
/// HTTP/2 layer checks — a field value with leading or trailing whitespace, a `Host`
/// naming another authority than `:authority`.
pub(crate) fn check_http2_fields<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let padded = |v: &HeaderValue| {
        let b = v.as_bytes();
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    };
    if req.headers().values().any(padded) {
        return Err(GatewayError::BadRequest("an HTTP/2 field value must not begin or end with whitespace"));
    }
    if let (Some(authority), Some(host)) = (req.uri().authority(), req.headers().get(header::HOST))
        && !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err(GatewayError::BadRequest("the Host header names another authority than :authority"));
    }
    Ok(())
}

/// Removes hop-by-hop headers in place (on a backend's response).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // RFC 9112 §6.3: with Transfer-Encoding, Content-Length says nothing about the body
    // and an intermediary must remove it before forwarding.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    for n in connection_tokens(headers) {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP[..7] {
        headers.remove(n);
    }
}

fn add_forwarded(headers: &mut HeaderMap, parts: &request::Parts, ctx: &Context<'_>) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    let ip = ctx.client_addr.ip().to_string();
    let xff = match headers.get(&XFF).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(XFF, v);
    }
    headers.insert(XFP, HeaderValue::from_static(if ctx.tls { "https" } else { "http" }));
    // The authority the gateway routed on (see `host_of`): the target's own in absolute
    // form and HTTP/2, else `Host` — never a second, client-chosen value.
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    // RFC 7239: the same facts in one `Forwarded` element, after those of earlier
    // proxies (an IPv6 address and a host with a port are quoted strings, §6).
    let for_ = match ctx.client_addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={for_};proto={}", if ctx.tls { "https" } else { "http" });
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()).filter(|h| !h.contains(['"', '\\'])) {
        element.push_str(&format!(";host=\"{h}\""));
    }
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if let Some(h) = host {
        headers.insert(XFH, h);
    }
}

/// `RateLimit-Limit/-Remaining/-Reset` and `Retry-After` (omitted for `eternity`).
fn rate_limit_headers(headers: &mut HeaderMap, status: &LimitStatus, now: i64) {
    headers.insert("ratelimit-limit", HeaderValue::from(status.max));
    headers.insert("ratelimit-remaining", HeaderValue::from(status.remaining()));
    if let Some(reset) = status.reset_at {
        let secs = (reset - now).max(0);
        headers.insert("ratelimit-reset", HeaderValue::from(secs));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}
