//! Keep-alive HTTP/1.1 connections to one backend, driven by the request using them.
//!
//! hyper-util's pooled client runs every backend connection as a task of its own and
//! hands it each request over a channel: two task wake-ups per request on top of the
//! socket events, often across threads, and a pool keyed by URI. Here the task serving
//! the client polls the backend connection itself: while it waits for the response
//! head ([`Pool::request`]), then while the client reads the response body
//! ([`PooledBody`]). A proxied HTTP/1 request is then one task end to end, woken only
//! by its two sockets — the shape of nginx's event loop.
//!
//! A request without a body takes the gateway's own HTTP/1.1 exchange
//! ([`crate::upstream::http1`]); one with a body goes through hyper's client connection,
//! made over the same socket for that request. A connection in the pool is kept in the
//! form its last request left it in, and changes form only when the next request needs
//! the other ([`Kept`]).
//!
//! When the body has ended the connection goes back to the pool (last in, first out,
//! so the warmest connections stay busy and the surplus ages out). Idle connections are
//! kept per thread: a socket answers to the event loop of the thread that opened it,
//! and a connection used from another thread would have that thread's event loop wake
//! the user's across threads on every read — so each worker thread
//! ([`crate::server::Workers`]) takes and returns connections in its own list. Nobody polls an idle
//! connection: a checkout polls it once without a waker and drops it if the backend
//! closed it meanwhile, and a reaper task drops idle connections that closed or waited
//! longer than [`IDLE_TIMEOUT`]. A request that finds its reused connection closed
//! before the request went out is sent again on another one — hyper hands such a
//! request back unsent. A bodiless request whose reused connection closed or failed
//! before a byte of an answer came is sent again on another connection only if its
//! method is idempotent (RFC 9110 §9.2.2), as nginx's `proxy_next_upstream error` does:
//! the backend may have closed that idle connection just as the request went out.

use crate::upstream::body::{BoxError, UpstreamBody};
use crate::upstream::http1::{self, ExchangeError, Failure};
use crate::upstream::{ConnectError, Connector, UpstreamStream};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1 as hyper1, http2};
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long an idle connection is kept (hyper-util's default too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per backend; more are closed, oldest first.
pub const MAX_IDLE: usize = 1024;

/// One connection to the backend: the handle requests go in by, and the connection
/// state machine that must be polled for them to move.
struct Conn {
    send: hyper1::SendRequest<UpstreamBody>,
    conn: hyper1::Connection<TokioIo<UpstreamStream>, UpstreamBody>,
    closed: bool,
}

impl Conn {
    /// Moves the connection along; true once it has closed (or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed
            && let Poll::Ready(result) = Pin::new(&mut self.conn).poll(cx)
        {
            if let Err(e) = result {
                tracing::debug!(error = %e, "backend connection ended with an error");
            }
            self.closed = true;
        }
        self.closed
    }

    /// Whether it can carry another request now: polled once without a waker, so a
    /// close or a stray byte from the backend since it went idle is noticed.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !self.drive(&mut cx) && self.send.is_ready()
    }
}

impl Conn {
    /// hyper's client connection over `own`'s socket; `None` when `own` has unread
    /// bytes (it could not carry a request).
    async fn over(own: Box<http1::Connection>) -> Option<Result<Box<Conn>, hyper::Error>> {
        let io = own.into_io()?;
        Some(
            crate::upstream::http1_client()
                .handshake(TokioIo::new(io))
                .await
                .map(|(send, conn)| Box::new(Conn { send, conn, closed: false })),
        )
    }

    /// The socket back from hyper, for the gateway's own exchange; `None` when hyper
    /// holds unread bytes.
    fn into_own(self) -> Option<Box<http1::Connection>> {
        let parts = self.conn.into_parts();
        parts.read_buf.is_empty().then(|| Box::new(http1::Connection::new(parts.io.into_inner())))
    }
}

/// An idle HTTP/1.1 connection, in the form its last request left it.
enum Kept {
    /// Under hyper's client (its last request had a body).
    Hyper(Box<Conn>),
    /// The bare socket, for the gateway's own exchange.
    Own(Box<http1::Connection>),
}

impl Kept {
    fn reusable(&mut self) -> bool {
        match self {
            Kept::Hyper(c) => c.reusable(),
            Kept::Own(c) => c.reusable(),
        }
    }
}

struct Idle {
    conn: Kept,
    since: Instant,
}

/// An HTTP/2 connection to the backend: requests share it, up to the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`; its task drives it.
#[derive(Clone)]
struct H2Conn {
    send: http2::SendRequest<UpstreamBody>,
    /// Streams open on it now (requests until their response body is done).
    streams: Arc<AtomicUsize>,
    /// The connection, for the server's `SETTINGS_MAX_CONCURRENT_STREAMS`; `None` once
    /// it has ended (its task drops it, so requests handed to it fail at once and
    /// unsent rather than wait in a channel nobody reads).
    conn: H2Connection,
}

type H2Connection = Arc<
    Mutex<Option<Pin<Box<http2::Connection<TokioIo<UpstreamStream>, UpstreamBody, hyper_util::rt::TokioExecutor>>>>>,
>;

/// Streams one HTTP/2 connection to a backend carries at most, whatever the server
/// allows: h2 refuses a connection that buffers too many small unread DATA frames
/// (`too_many_data_frames`), which hundreds of busy gRPC streams on one connection do;
/// more connections spread them.
pub const MAX_STREAMS_PER_CONNECTION: usize = 100;

impl H2Conn {
    /// Whether it is open and can take another stream now.
    fn has_room(&self) -> bool {
        let limit = match self.conn.lock() {
            Ok(c) => match c.as_ref() {
                Some(c) => c.current_max_send_streams().clamp(1, MAX_STREAMS_PER_CONNECTION),
                None => return false,
            },
            Err(_) => return false,
        };
        !self.send.is_closed() && self.streams.load(Relaxed) < limit
    }

    /// Whether it has ended.
    fn closed(&self) -> bool {
        self.send.is_closed() || self.conn.lock().map_or(true, |c| c.is_none())
    }
}

/// A stream's place on an HTTP/2 connection, given back when dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A new connection, by the protocol it speaks.
enum Fresh {
    Http1(Box<http1::Connection>),
    Http2(H2Conn),
}

struct Shared {
    connector: Connector,
    /// Idle connections by thread ([`thread_slot`]).
    idle: Mutex<Vec<Vec<Idle>>>,
    /// HTTP/2 connections, shared by every thread.
    h2: Mutex<Vec<H2Conn>>,
    reaper: std::sync::Once,
}

use tollgate_counters::thread_slot;

/// Why a request to the backend failed.
pub enum RequestError {
    /// The connection could not be made; the request, never sent, is handed back (so
    /// it may go to another endpoint).
    Connect(ConnectError, Box<http::Request<UpstreamBody>>),
    /// The exchange failed after connecting.
    Http(hyper::Error),
    /// The gateway's own exchange failed after connecting.
    Exchange(ExchangeError),
    /// The request could not be sent for another reason, in words.
    Failed(String),
}

impl std::fmt::Debug for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Connect(e, _) => f.debug_tuple("Connect").field(e).finish_non_exhaustive(),
            RequestError::Http(e) => f.debug_tuple("Http").field(e).finish(),
            RequestError::Exchange(e) => f.debug_tuple("Exchange").field(e).finish(),
            RequestError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

/// The keep-alive connections to one backend.
#[derive(Clone)]
pub struct Pool(Arc<Shared>);

impl Pool {
    /// An empty pool using `connector` for new connections.
    pub fn new(connector: Connector) -> Pool {
        Pool(Arc::new(Shared {
            connector,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            reaper: std::sync::Once::new(),
        }))
    }

    /// Sends `req` (in origin form, with its `Host`) on an idle connection or a new
    /// one, and returns the response once its head has come; the body keeps driving
    /// the connection and gives it back when it ends.
    ///
    /// Connecting (TCP and TLS: 1.3 KB of future) and HTTP/2 (1.4–1.8 KB) are boxed
    /// where they are awaited: a future is as large as its largest state, and this
    /// one is inside every request's future, which is moved (copied) several times
    /// as it is made and boxed — for a keep-alive request that connects nowhere.
    pub async fn request(
        &self,
        mut req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<PooledBody>, RequestError> {
        if self.0.connector.may_speak_h2()
            && let Some(conn) = self.h2_checkout()
        {
            match Box::pin(self.h2_send(conn, req)).await {
                Ok(resp) => return Ok(resp),
                // The connection was closing: the request, unsent, takes a new one.
                Err(Ok(unsent)) => req = unsent,
                Err(Err(e)) => return Err(e),
            }
        }
        if http1::fits(&req) {
            return self.request_own(req).await;
        }
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(Kept::Hyper(c)) => (c, true),
                Some(Kept::Own(own)) => match Conn::over(own).await {
                    Some(Ok(c)) => (c, true),
                    Some(Err(e)) => return Err(RequestError::Http(e)),
                    None => continue,
                },
                None => match Box::pin(self.connect()).await {
                    Ok(Fresh::Http1(own)) => match Conn::over(own).await {
                        Some(Ok(c)) => (c, false),
                        Some(Err(e)) => return Err(RequestError::Http(e)),
                        None => {
                            return Err(RequestError::Failed("the new connection had bytes before a request".into()));
                        }
                    },
                    Ok(Fresh::Http2(c)) => return Box::pin(self.h2_fresh(c, req)).await,
                    Err(Ok(e)) => return Err(RequestError::Connect(e, Box::new(req))),
                    Err(Err(e)) => return Err(RequestError::Http(e)),
                },
            };
            let mut sending = pin!(conn.send.try_send_request(req));
            let result = poll_fn(|cx| {
                conn.drive(cx);
                sending.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = PooledBody::new(Source::Hyper { body, conn: Some(conn) }, Some(self.0.clone()));
                    return Ok(http::Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // The backend closed the idle connection just as it was taken: the
                    // request never went out, so another connection may carry it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(RequestError::Http(e.into_error())),
                },
            }
        }
    }

    /// A bodiless request through the gateway's own HTTP/1.1 exchange.
    async fn request_own(&self, req: http::Request<UpstreamBody>) -> Result<http::Response<PooledBody>, RequestError> {
        let limits = crate::upstream::response_head_limits();
        let idempotent = req.method().is_idempotent();
        let (mut parts, body) = req.into_parts();
        // Once a reused connection closed unanswered, the request goes once more, on a
        // new connection — never on the next idle one, which may be in the same state
        // (a backend that crashes on this request would see it once per idle connection).
        let mut resent = false;
        loop {
            let kept = if resent { None } else { self.checkout() };
            let (mut conn, reused) = match kept {
                Some(Kept::Own(c)) => (c, true),
                Some(Kept::Hyper(c)) => match c.into_own() {
                    Some(c) => (c, true),
                    None => continue,
                },
                None => match Box::pin(self.connect()).await {
                    Ok(Fresh::Http1(c)) => (c, false),
                    Ok(Fresh::Http2(c)) => {
                        return Box::pin(self.h2_fresh(c, http::Request::from_parts(parts, body))).await;
                    }
                    Err(Ok(e)) => {
                        return Err(RequestError::Connect(e, Box::new(http::Request::from_parts(parts, body))));
                    }
                    Err(Err(e)) => return Err(RequestError::Http(e)),
                },
            };
            // The request's field map, once sent, holds the response's fields.
            match http1::exchange(&mut conn, &parts.method, &parts.uri, &mut parts.headers, limits).await {
                Ok((head, delimited)) => {
                    let body = http1::ResponseBody::new(conn, delimited);
                    return Ok(http::Response::from_parts(
                        head,
                        PooledBody::new(Source::Own(body), Some(self.0.clone())),
                    ));
                }
                // The backend closed or dropped the idle connection as the request
                // went out: an idempotent request may go again (RFC 9110 §9.2.2).
                Err(Failure::Unanswered(e)) if reused && idempotent && !resent => {
                    tracing::debug!(error = %e, "a reused backend connection closed unanswered; sent again on a new one");
                    resent = true;
                }
                Err(Failure::Unanswered(e)) => return Err(RequestError::Exchange(ExchangeError::Io(e))),
                Err(Failure::Exchange(e)) => return Err(RequestError::Exchange(e)),
            }
        }
    }

    /// `req` on a new HTTP/2 connection.
    async fn h2_fresh(
        &self,
        c: H2Conn,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<PooledBody>, RequestError> {
        self.h2_send(c, req).await.map_err(|e| match e {
            Ok(_unsent) => RequestError::Failed("the new HTTP/2 connection closed at once".into()),
            Err(e) => e,
        })
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.0.idle.lock().map_or(0, |slots| slots.iter().map(Vec::len).sum())
    }

    fn checkout(&self) -> Option<Kept> {
        let slot = thread_slot();
        loop {
            let mut conn = self.0.idle.lock().ok()?.get_mut(slot)?.pop()?.conn;
            if conn.reusable() {
                return Some(conn);
            }
        }
    }

    /// A new connection, HTTP/1.1 or HTTP/2 as the backend's `protocol` and ALPN say;
    /// `Err(Ok(_))` when it could not be made.
    async fn connect(&self) -> Result<Fresh, Result<ConnectError, hyper::Error>> {
        let stream = self.0.connector.connect().await.map_err(Ok)?;
        if self.0.connector.speaks_h2(&stream) {
            let (send, conn) = crate::upstream::http2_client().handshake(TokioIo::new(stream)).await.map_err(Err)?;
            // The server's stream limit (its SETTINGS, which may come or change at any
            // time) is read from the connection itself, shared with its task.
            let conn: H2Connection = Arc::new(Mutex::new(Some(Box::pin(conn))));
            let driven = conn.clone();
            tokio::spawn(poll_fn(move |cx| {
                let Ok(mut slot) = driven.lock() else { return Poll::Ready(()) };
                let Some(conn) = slot.as_mut() else { return Poll::Ready(()) };
                let done = conn.as_mut().poll(cx);
                if let Poll::Ready(result) = done {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP/2 backend connection ended with an error");
                    }
                    // Dropped here: its handles see it closed.
                    *slot = None;
                    return Poll::Ready(());
                }
                Poll::Pending
            }));
            let conn = H2Conn { send, streams: Arc::new(AtomicUsize::new(0)), conn };
            if let Ok(mut list) = self.0.h2.lock() {
                list.retain(|c| !c.closed());
                list.push(conn.clone());
            }
            return Ok(Fresh::Http2(conn));
        }
        self.start_reaper();
        Ok(Fresh::Http1(Box::new(http1::Connection::new(stream))))
    }

    /// An open HTTP/2 connection with a free stream, if any.
    fn h2_checkout(&self) -> Option<H2Conn> {
        let mut list = self.0.h2.lock().ok()?;
        list.retain(|c| !c.closed());
        list.iter().find(|c| c.has_room()).cloned()
    }

    /// HTTP/2 connections open now.
    pub fn http2_connections(&self) -> usize {
        self.0.h2.lock().map_or(0, |mut list| {
            list.retain(|c| !c.closed());
            list.len()
        })
    }

    /// Sends `req` as a stream of `conn`: in absolute form (`:scheme`, `:authority` from
    /// its `Host`, RFC 9113 §8.3.1). `Err(Ok(req))`: the connection was closing and the
    /// request did not go out.
    async fn h2_send(
        &self,
        conn: H2Conn,
        mut req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<PooledBody>, Result<http::Request<UpstreamBody>, RequestError>> {
        let scheme = if self.0.connector.is_tls() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        let authority = req
            .headers_mut()
            .remove(http::header::HOST)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(scheme);
        parts.authority = authority;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = http::Uri::from_parts(parts)
            .map_err(|e| Err(RequestError::Failed(format!("no valid HTTP/2 target: {e}"))))?;
        *req.version_mut() = http::Version::HTTP_2;
        conn.streams.fetch_add(1, Relaxed);
        let slot = StreamSlot(conn.streams.clone());
        let mut send = conn.send.clone();
        match send.try_send_request(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut body = PooledBody::new(Source::Hyper { body, conn: None }, None);
                body._stream = Some(slot);
                Ok(http::Response::from_parts(parts, body))
            }
            Err(mut e) => match e.take_message() {
                Some(mut unsent) => {
                    // Back to the form the HTTP/1.1 path and another connection expect.
                    let host = unsent.uri().authority().and_then(|a| http::HeaderValue::try_from(a.as_str()).ok());
                    if let Some(host) = host {
                        unsent.headers_mut().insert(http::header::HOST, host);
                    }
                    Err(Ok(unsent))
                }
                None => Err(Err(RequestError::Http(e.into_error()))),
            },
        }
    }

    /// One task per pool, from its first connection until the pool is dropped.
    fn start_reaper(&self) {
        self.0.reaper.call_once(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
            let pool = Arc::downgrade(&self.0);
            runtime.spawn(reap(pool));
        });
    }
}

impl Shared {
    fn checkin(&self, mut conn: Kept) {
        if !conn.reusable() {
            return;
        }
        let slot = thread_slot();
        let oldest = {
            let Ok(mut slots) = self.idle.lock() else { return };
            if slots.len() <= slot {
                slots.resize_with(slot + 1, Vec::new);
            }
            let idle = &mut slots[slot];
            idle.push(Idle { conn, since: Instant::now() });
            // Closing the oldest keeps the most recently useful ones.
            (idle.len() > MAX_IDLE).then(|| idle.remove(0))
        };
        drop(oldest);
    }
}

/// Drops idle connections that the backend closed or that waited too long.
async fn reap(pool: Weak<Shared>) {
    let every = IDLE_TIMEOUT / 6;
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let stale: Vec<Idle> = {
            let Ok(mut slots) = pool.idle.lock() else { return };
            let now = Instant::now();
            let mut stale = Vec::new();
            for idle in slots.iter_mut() {
                let (keep, old): (Vec<Idle>, Vec<Idle>) =
                    std::mem::take(idle).into_iter().partition(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                *idle = keep;
                idle.retain_mut(|i| i.conn.reusable());
                stale.extend(old);
            }
            stale
        };
        drop(stale);
    }
}

/// A backend's response body that moves its connection along as it is read, and
/// gives the connection back to the pool once it has ended.
pub struct PooledBody {
    source: Source,
    pool: Option<Arc<Shared>>,
    ended: bool,
    /// The endpoint's share held until the body is done.
    lease: Option<crate::upstream::fleet::Lease>,
    /// The HTTP/2 stream's place on its connection, for a response over HTTP/2.
    _stream: Option<StreamSlot>,
}

/// Where a body is read from.
enum Source {
    /// hyper's client (HTTP/2, requests with a body, refused upgrades), with the
    /// HTTP/1.1 connection to drive while reading, if pooled.
    Hyper { body: Incoming, conn: Option<Box<Conn>> },
    /// The gateway's own HTTP/1.1 exchange.
    Own(http1::ResponseBody),
}

impl PooledBody {
    fn new(source: Source, pool: Option<Arc<Shared>>) -> PooledBody {
        PooledBody { source, pool, ended: false, lease: None, _stream: None }
    }

    /// A body whose connection is not pooled (a refused WebSocket upgrade's answer).
    pub fn unpooled(body: Incoming) -> PooledBody {
        PooledBody::new(Source::Hyper { body, conn: None }, None)
    }

    /// Holds the endpoint's lease until the body is dropped.
    pub fn hold(&mut self, lease: crate::upstream::fleet::Lease) {
        self.lease = Some(lease);
    }

    /// Which backend sends it, for messages (`backend `NAME` (ADDRESS)`); `None` for
    /// an unpooled body.
    pub fn backend(&self) -> Option<&str> {
        self.pool.as_ref().map(|p| p.connector.label())
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame: Poll<Option<Result<Frame<Bytes>, BoxError>>> = match &mut this.source {
            Source::Hyper { body, conn } => {
                if let Some(conn) = conn.as_mut() {
                    conn.drive(cx);
                }
                let frame = Pin::new(&mut *body).poll_frame(cx);
                // A broken body leaves the connection in an unknown state: close it.
                if let Poll::Ready(Some(Err(_))) = &frame {
                    *conn = None;
                }
                frame.map_err(BoxError::from)
            }
            Source::Own(body) => body.poll_frame(cx).map_err(BoxError::from),
        };
        let frame = frame.map_ok(|f| match f.into_trailers() {
            Ok(trailers) => Frame::trailers(clean_trailers(trailers)),
            Err(f) => f,
        });
        match &frame {
            Poll::Ready(None) => {
                this.ended = true;
                if let Some(lease) = this.lease.as_mut() {
                    lease.body_ended(true);
                }
            }
            // It counts against the endpoint (passive health).
            Poll::Ready(Some(Err(_))) => {
                if let Some(lease) = this.lease.as_mut() {
                    lease.body_ended(false);
                }
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Hyper { body, .. } => body.is_end_stream(),
            Source::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Hyper { body, .. } => body.size_hint(),
            Source::Own(body) => body.size_hint(),
        }
    }
}

/// A backend's trailer section without the fields a trailer may not carry (RFC 9110
/// §6.5.1): those of the connection (hop-by-hop, and any a trailer `Connection` names),
/// of framing (`Content-Length`, `Transfer-Encoding`, `Trailer`) and of routing
/// (`Host`). Passed on, they would break the client's connection — an HTTP/2 client
/// must treat a connection-specific field as a malformed message (RFC 9113 §8.2.2).
fn clean_trailers(mut trailers: http::HeaderMap) -> http::HeaderMap {
    use http::header;
    let named: Vec<http::HeaderName> = trailers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| http::HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in named {
        trailers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::HOST,
    ] {
        trailers.remove(name);
    }
    trailers
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let end_stream = self.is_end_stream();
        // A body with nothing to read (a 204, a HEAD's answer) may never be polled to
        // its end: it ended all the same.
        if end_stream && let Some(lease) = self.lease.as_mut() {
            lease.body_ended(true);
        }
        // A body dropped before its end (the client went away) would leave the rest
        // of the response on the connection: it closes instead.
        let Some(pool) = self.pool.take() else { return };
        match &mut self.source {
            Source::Hyper { conn, .. } => {
                if let Some(conn) = conn.take()
                    && (self.ended || end_stream)
                {
                    pool.checkin(Kept::Hyper(conn));
                }
            }
            Source::Own(body) => {
                if let Some(conn) = body.finish() {
                    pool.checkin(Kept::Own(conn));
                }
            }
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pooled = match &self.source {
            Source::Hyper { conn, .. } => conn.is_some(),
            Source::Own(_) => self.pool.is_some(),
        };
        f.debug_struct("PooledBody").field("pooled", &pooled).field("ended", &self.ended).finish()
    }
}
