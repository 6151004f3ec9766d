//! Listeners: accept with a connection cap, optional TLS (ALPN `h2`, `http/1.1`),
//! HTTP/1.1 and HTTP/2 on one port, and the limits that keep hostile clients from
//! exhausting the gateway: header-read and idle timeouts (slowloris), header size,
//! HTTP/2 stream and reset-flood limits. Running out of file descriptors slows the
//! accept loop down instead of crashing it.
//!
//! Connections are served on [`Workers`]: one thread per core, each running a
//! single-threaded runtime with its own event loop (epoll), like nginx's worker
//! processes. A connection — the client's socket, its backend connections, its
//! WebSocket relay — lives on the worker that accepted it until it closes, so a
//! request never wakes another thread, and no thread parks on a lock or a futex to
//! hand work over. Every worker accepts on the one listening socket (rather than one
//! socket per worker with `SO_REUSEPORT`: a second Tollgate started on the same port
//! by mistake fails to bind instead of silently sharing its traffic).

use crate::deadline::{Activity, Busy, MinDataRate, Registry};
use crate::proxy::{ConnInfo, Gateway};
use crate::smuggling::SmugglingGuard;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// How one listener accepts and serves client connections.
#[derive(Clone)]
pub struct ListenerOptions {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Time allowed to send a complete request head, and to start the next request on
    /// an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Largest request head accepted, in bytes (HTTP/1.1: request line and field lines,
    /// bigger → 431; HTTP/2: the decoded field list, bigger → the stream is refused);
    /// at least 8 KiB. Default 32 KiB.
    pub max_header_bytes: usize,
    /// Most field lines in an HTTP/1.1 request head (more → 431). Default 100: up to
    /// 100, hyper parses a head into a table on the stack; above, it allocates and
    /// zeroes one of this many entries per request (16 KiB at 512).
    pub max_header_count: usize,
    /// The TLS acceptor for connections; `None`: plain TCP.
    pub tls: Option<TlsAcceptor>,
    /// Time allowed for a client's TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams open at once per connection.
    pub h2_max_concurrent_streams: u32,
    /// How long in-flight HTTP requests may take to finish at shutdown.
    pub drain_timeout: Duration,
    /// The threads connections are served on; `None`: the caller's runtime.
    pub workers: Option<Arc<Workers>>,
    /// The least a client must send (request bodies: slower → 408) and take (responses:
    /// slower → connection closed); `None`: no minimum.
    pub min_data_rate: Option<MinDataRate>,
    /// TCP keep-alive on client connections (idle time before the first probe; see
    /// [`crate::deadline::set_tcp_keepalive`]); `None`: off. Default 60 s.
    pub tcp_keepalive: Option<Duration>,
    /// The sources trusted to send PROXY protocol headers (`--proxy-protocol`); `None`:
    /// no header is expected (and one is then not read: it would fail as HTTP).
    pub proxy_protocol: Option<crate::proxy_protocol::ProxyProtocol>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_connections: 8_192,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_header_count: 100,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 256,
            drain_timeout: Duration::from_secs(30),
            workers: None,
            min_data_rate: Some(MinDataRate::default()),
            tcp_keepalive: Some(Duration::from_secs(60)),
            proxy_protocol: None,
        }
    }
}

/// Threads that serve gateway connections, each a single-threaded runtime.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    runtime: tokio::runtime::Handle,
    /// Dropped with [`Workers`]: the thread then ends, and its runtime with it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Arc<Workers>> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("tollgate-worker-{i}")).spawn(move || {
                tollgate_counters::set_thread_slot(i + 1);
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
            workers.push(Worker { runtime: handle, _stop: stop });
        }
        Ok(Arc::new(Workers { workers }))
    }

    /// One per available core.
    pub fn per_core() -> std::io::Result<Arc<Workers>> {
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no worker threads.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    fn runtimes(&self) -> impl Iterator<Item = &tokio::runtime::Handle> {
        self.workers.iter().map(|w| &w.runtime)
    }
}

/// A TLS acceptor from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN, with the
/// default [`TlsSettings`].
///
/// # Errors
/// What is wrong with the files, in words.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    tls_acceptor_with(cert, key, &TlsSettings::default(), None)
}

/// Whether `der` is one DER SEQUENCE, its length filling it exactly.
pub(crate) fn is_der_sequence(der: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = der else { return false };
    let (len, body) = match *first {
        n @ 0..=0x7f => (usize::from(n), rest),
        0x81..=0x84 => {
            let k = usize::from(first & 0x7f);
            let Some((len, body)) = rest.split_at_checked(k) else { return false };
            (len.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)), body)
        }
        _ => return false,
    };
    len == body.len() && len > 0
}

/// What operators set of the gateway listeners' TLS (`--tls-min-version`,
/// `--tls-ciphers`, `--tls-ocsp-file`).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Refuse TLS 1.2 (the default accepts 1.2 and 1.3).
    pub tls13_only: bool,
    /// Cipher suites by their IANA names (`TLS13_AES_128_GCM_SHA256`, …), from rustls's
    /// safe set; `None`: all of it.
    pub cipher_suites: Option<Vec<String>>,
    /// A DER OCSP response for the certificate, stapled to every handshake (RFC 6066
    /// §8); the operator renews the file and reloads.
    pub ocsp_file: Option<std::path::PathBuf>,
}

/// [`tls_acceptor`] with `settings`. Session resumption is on: a session cache of 4,096
/// entries and stateless tickets (RFC 8446 §4.6.1) whose keys rotate every 6 hours.
/// With `snapshot`, the certificate is chosen per handshake by SNI: the certificate of
/// the product published on that host in the current snapshot, else `cert` (the
/// default) — so a reload changes certificates without a restart.
///
/// # Errors
/// What is wrong with the files or the settings, in words (an unknown cipher suite
/// lists the known ones).
pub fn tls_acceptor_with(
    cert: &Path,
    key: &Path,
    settings: &TlsSettings,
    snapshot: Option<crate::snapshot::SnapshotHandle>,
) -> Result<TlsAcceptor, String> {
    // The checks a product's certificate passes: current, and the key the certificate's.
    crate::sni::load_product_certificate(crate::upstream::Pem::File(cert), crate::upstream::Pem::File(key), None)
        .map_err(|(_, e)| e)?;
    let certs = crate::upstream::load_certs(cert)?;
    let pem = crate::files::read_bounded(key, crate::files::MAX_CERTIFICATES)?;
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &settings.cipher_suites {
        let name_of = |s: &rustls::SupportedCipherSuite| s.suite().as_str().unwrap_or("?");
        let known: Vec<&str> = provider.cipher_suites.iter().map(name_of).collect();
        if names.is_empty() {
            return Err(format!("no cipher suite named; choose from {}", known.join(", ")));
        }
        if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(format!(
                "cipher suite `{unknown}` is not one Tollgate offers; choose from {}",
                known.join(", ")
            ));
        }
        provider.cipher_suites.retain(|s| names.iter().any(|n| n == name_of(s)));
        // A suite must be usable with this certificate: TLS 1.3 suites with any key; a
        // TLS 1.2 suite with the key type it names (ECDSA or RSA), and only when 1.2 is on.
        let key_type = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("the private key cannot sign: {e}"))?
            .algorithm();
        let fits = |s: &rustls::SupportedCipherSuite| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) if settings.tls13_only => false,
            rustls::SupportedCipherSuite::Tls12(_) => match key_type {
                rustls::SignatureAlgorithm::RSA => name_of(s).contains("_RSA_WITH_"),
                _ => name_of(s).contains("_ECDSA_WITH_"),
            },
        };
        if !provider.cipher_suites.iter().any(fits) {
            return Err(format!(
                "none of the cipher suites can be used with this certificate ({key_type:?} key{}): add a TLS 1.3 suite, or a TLS 1.2 suite for that key type",
                if settings.tls13_only { ", TLS 1.3 only" } else { "" }
            ));
        }
    }
    let versions: &[&rustls::SupportedProtocolVersion] =
        if settings.tls13_only { &[&rustls::version::TLS13] } else { rustls::DEFAULT_VERSIONS };
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("the cipher suites and TLS versions do not fit together: {e}"))?;
    // Client certificates are asked for whenever a product of the listener's snapshot
    // wants them (the product is not known before SNI and the request).
    let builder = match &snapshot {
        Some(snapshot) => {
            builder.with_client_cert_verifier(Arc::new(crate::sni::SnapshotClientVerifier::new(snapshot.clone())))
        }
        None => builder.with_no_client_auth(),
    };
    let ocsp = match &settings.ocsp_file {
        None => None,
        Some(path) => {
            let ocsp = crate::files::read_bounded(path, crate::files::MAX_CERTIFICATES)?;
            // Its form only (a DER SEQUENCE filling the file, RFC 6960 §4.2.1): its
            // content is the responder's and is not verified here.
            if !is_der_sequence(&ocsp) {
                return Err(format!(
                    "{} is not a DER OCSP response (as `openssl ocsp -respout` writes one)",
                    path.display()
                ));
            }
            Some(ocsp)
        }
    };
    let mut config = match snapshot {
        Some(snapshot) => {
            let mut default = crate::sni::certified_key(certs, key).map_err(|(_, e)| e)?;
            default.ocsp = ocsp;
            builder.with_cert_resolver(Arc::new(crate::sni::SniResolver::new(Arc::new(default), snapshot)))
        }
        None => match ocsp {
            None => builder.with_single_cert(certs, key),
            Some(ocsp) => builder.with_single_cert_with_ocsp(certs, key, ocsp),
        }
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?,
    };
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn builder(opts: &ListenerOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // The connection's idle watch (`serve_connection`) closes a connection that has
        // no request in flight for `--header-read-timeout`, from accept and from the end
        // of each response: a head that takes longer is cut off there. hyper's own timer
        // (the same timeout, started at the same moments) was a second timer per
        // request, about 800 instructions each (callgrind).
        .header_read_timeout(None)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .max_headers(opts.max_header_count.max(1))
        // A client may end its sending side once its request is complete (as `nc -N`,
        // some HTTP/1.0 clients and scripts do) and still get its response.
        .half_close(true)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(1024)
        .max_header_list_size(opts.max_header_bytes.max(8192) as u32)
        // WebSockets over HTTP/2 (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL.
        .enable_connect_protocol()
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// What every accept loop of a listener shares.
struct Accepting {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    opts: ListenerOptions,
    slots: Arc<Semaphore>,
    /// The connections being served, to make room when `slots` run out.
    registry: Arc<Registry>,
    /// Turns true when connections must finish (drain).
    stop: watch::Receiver<bool>,
}

/// Serves `gateway` on an already-bound listener until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (up to `drain_timeout`). With workers,
/// each worker accepts on the listener itself, so a connection starts on the event
/// loop that serves it (no hand-over); a busy worker sits out of `epoll_wait`, so idle
/// ones take the new connections.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    opts: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let (stop_tx, stop) = watch::channel(false);
    let (closing_tx, closing) = watch::channel(false);
    let accepting = Arc::new(Accepting {
        gateway: gateway.clone(),
        builder: Arc::new(builder(&opts)),
        opts: opts.clone(),
        slots: slots.clone(),
        registry: Arc::default(),
        stop,
    });
    let mut loops = Vec::new();
    match (&opts.workers, listener.into_std()) {
        (Some(workers), Ok(listener)) => {
            for runtime in workers.runtimes() {
                let (accepting, closing) = (accepting.clone(), closing.clone());
                match listener.try_clone() {
                    Ok(listener) => loops.push(runtime.spawn(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => accept_loop(listener, accepting, closing).await,
                            Err(e) => tracing::error!(error = %e, "a worker cannot accept on the listener"),
                        }
                    })),
                    Err(e) => tracing::error!(error = %e, "cannot share the listener with a worker"),
                }
            }
        }
        (None, Ok(listener)) => match TcpListener::from_std(listener) {
            Ok(listener) => loops.push(tokio::spawn(accept_loop(listener, accepting, closing))),
            Err(e) => tracing::error!(error = %e, "cannot accept on the listener"),
        },
        (_, Err(e)) => tracing::error!(error = %e, "cannot accept on the listener"),
    }
    shutdown.await;
    let _ = closing_tx.send(true);
    for accept in loops {
        let _ = accept.await;
    }
    let _ = stop_tx.send(true);
    gateway.drain();
    // Wait for connections to finish their requests, up to the drain timeout.
    let all = opts.max_connections as u32;
    let _ = tokio::time::timeout(opts.drain_timeout, slots.acquire_many(all)).await;
}

/// Accepts connections and serves each in a task of this runtime, until `closing`.
async fn accept_loop(listener: TcpListener, accepting: Arc<Accepting>, mut closing: watch::Receiver<bool>) {
    let env = accepting.gateway.environment;
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => break,
            r = listener.accept() => r,
        };
        let (tcp, client_addr) = match accepted {
            Ok(c) => c,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off so the loop does not spin, and keep
                // serving the connections we have.
                crate::warn_limited!(error = %e, "accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match accepting.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Full: a connection that does nothing, or sends or reads too slowly, makes room.
            Err(_) if accepting.registry.evict(accepting.opts.min_data_rate) => {
                match tokio::time::timeout(EVICTION_WAIT, accepting.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        accepting.gateway.metrics().env(env).connection_refused();
                        continue;
                    }
                }
            }
            Err(_) => {
                accepting.gateway.metrics().env(env).connection_refused();
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        crate::deadline::set_tcp_keepalive(&tcp, accepting.opts.tcp_keepalive);
        tokio::spawn(connection(tcp, client_addr, permit, accepting.clone()));
    }
}

/// A client connection's place under the listener's cap, counted in
/// `tollgate_connections_open`, until the connection ends (a WebSocket's relay keeps
/// it after the upgrade).
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gateway: Arc<Gateway>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gateway.metrics().env(self.gateway.environment).connection_closed();
    }
}

/// How long a new connection waits for the one evicted for it to close.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// One client connection, from the TLS handshake (if any) to its close.
async fn connection(
    mut tcp: TcpStream,
    client_addr: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    accepting: Arc<Accepting>,
) {
    let (gateway, builder, opts) = (&accepting.gateway, &*accepting.builder, &accepting.opts);
    let mut stop = accepting.stop.clone();
    let metrics = gateway.metrics().env(gateway.environment);
    metrics.connection_opened();
    let slot = Arc::new(Slot { _permit: permit, gateway: gateway.clone() });
    let activity = Activity::new();
    let _registered = accepting.registry.register(activity.clone());
    let min_data_rate = opts.min_data_rate;
    // A load balancer's PROXY protocol header names the client, before anything else
    // (and before TLS); it has the header-read timeout to arrive.
    let client_addr = match &opts.proxy_protocol {
        None => client_addr,
        Some(pp) => match tokio::time::timeout(opts.header_read_timeout, pp.client_of(&mut tcp, client_addr)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return tracing::debug!(%client_addr, "connection refused: {e}"),
            Err(_) => return tracing::debug!(%client_addr, "no PROXY protocol header in time: connection closed"),
        },
    };
    let tcp = crate::deadline::Taking::new(tcp, activity.clone());
    match &opts.tls {
        None => {
            let info = ConnInfo {
                client_addr,
                tls: false,
                sni: None,
                client_certificate: None,
                slot,
                activity,
                min_data_rate,
                max_header_count: opts.max_header_count,
                forwarded: Arc::new(crate::proxy::Forwarded::new(client_addr.ip(), false)),
            };
            let guarded = TokioIo::new(SmugglingGuard::new(tcp));
            serve_connection(guarded, info, gateway, builder, &mut stop, opts.header_read_timeout).await;
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(opts.tls_handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!(error = %e, %client_addr, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%client_addr, "TLS handshake timed out"),
                },
                () = activity.evicted() => {
                    metrics.connection_evicted();
                    return tracing::debug!(%client_addr, "TLS handshake cut to make room");
                }
            };
            // `--header-read-timeout` counts from the end of the handshake (which has
            // its own timeout), as documented.
            activity.touch();
            let client_certificate = tls.get_ref().1.peer_certificates().map(|chain| {
                Arc::new(crate::sni::PeerCertificate::new(chain.iter().map(|c| c.clone().into_owned()).collect()))
            });
            let sni = tls.get_ref().1.server_name().map(|n| n.trim_end_matches('.').to_ascii_lowercase().into());
            let info = ConnInfo {
                client_addr,
                tls: true,
                sni,
                client_certificate,
                slot,
                activity,
                min_data_rate,
                max_header_count: opts.max_header_count,
                forwarded: Arc::new(crate::proxy::Forwarded::new(client_addr.ip(), true)),
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_connection(TokioIo::new(tls), info, gateway, builder, &mut stop, opts.header_read_timeout).await;
            } else {
                let guarded = SmugglingGuard::new(tls);
                serve_connection(TokioIo::new(guarded), info, gateway, builder, &mut stop, opts.header_read_timeout)
                    .await;
            }
        }
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    info: ConnInfo,
    gateway: &Arc<Gateway>,
    builder: &auto::Builder<TokioExecutor>,
    stop: &mut watch::Receiver<bool>,
    idle: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let gw = gateway.clone();
    let metrics = gateway.metrics().env(gateway.environment);
    let client_addr = info.client_addr;
    let activity = info.activity.clone();
    let min_rate = info.min_data_rate;
    let service = service_fn(move |req| {
        let (gw, info) = (gw.clone(), info.clone());
        // Boxed: hyper's HTTP/1 dispatcher keeps the request's future in a box made
        // once per connection and kept as long as it, so unboxed every kept-alive
        // connection held room for the proxy's every state — kilobytes — idle or not;
        // boxed, that box holds a pointer and the memory is taken only while a request
        // is in flight.
        Box::pin(async move {
            let mut busy = info.activity.begin();
            let resp = gw.handle(req, info).await;
            if !http_body::Body::is_end_stream(resp.body()) {
                busy.head_handed();
            }
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, busy }))
        })
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // What may end the connection besides hyper, each polled only when it was woken
    // (the tasks of a `FuturesUnordered`, one type for the four through `Either`). In
    // one `select!` with the connection, each was polled at every wake of the
    // connection's task — several per request, and about 1,900 instructions of each
    // request's 47,000 (callgrind) for watches that fire once in a connection's life,
    // if ever.
    use futures_util::future::Either;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
        Watch::Stop
    };
    // Nothing asked of it for `idle` — before its first byte, between requests, an
    // HTTP/2 connection with no stream that only answers pings, a partial preface —
    // and nothing in flight: closed, so it cannot hold a slot for ever.
    let idled = async {
        activity.idle_for(idle).await;
        Watch::Idle
    };
    // A client that stopped taking its responses (or takes them below the minimum
    // rate) would hold the backend connection each response streams from.
    let slow = async {
        match min_rate {
            Some(rate) => activity.too_slow(rate).await,
            None => std::future::pending().await,
        }
        Watch::Slow
    };
    let evicted = async {
        activity.evicted().await;
        Watch::Evicted
    };
    let mut watches: futures_util::stream::FuturesUnordered<_> = [
        Either::Left(Either::Left(stopped)),
        Either::Left(Either::Right(idled)),
        Either::Right(Either::Left(slow)),
        Either::Right(Either::Right(evicted)),
    ]
    .into_iter()
    .collect();
    let watch = tokio::select! {
        biased;
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, client = %client_addr, "connection ended with an error");
            }
            return;
        }
        Some(watch) = futures_util::StreamExt::next(&mut watches) => watch,
    };
    drop(watches);
    match watch {
        Watch::Stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        Watch::Idle => {
            metrics.connection_idle_closed();
            tracing::debug!(client = %client_addr, "connection idle: closed");
        }
        Watch::Slow => {
            metrics.connection_slow_closed();
            tracing::debug!(client = %client_addr, "client reads responses below the minimum data rate: closed");
        }
        Watch::Evicted => {
            metrics.connection_evicted();
            tracing::debug!(client = %client_addr, "connection closed to make room for a new one");
        }
    }
}

/// Which of a connection's watches fired.
enum Watch {
    /// The server is shutting down: the connection ends gracefully.
    Stop,
    /// Nothing asked of the connection and nothing in flight for the idle timeout.
    Idle,
    /// The client takes its responses below the minimum data rate.
    Slow,
    /// The listener chose the connection to make room for a new one.
    Evicted,
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it ends, and
    /// tells its connection when the client has yet to take a frame of it.
    struct Tracked<B> {
        #[pin]
        body: B,
        busy: Busy,
    }
}

impl<B: http_body::Body<Data = bytes::Bytes>> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        this.busy.asked();
        let frame = this.body.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(f))) = &frame {
            this.busy.handed(f.data_ref().map_or(0, |d| d.len() as u64));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_is_a_thread_of_its_own_that_ends_with_the_workers() {
        let workers = Workers::start(3).expect("threads");
        assert_eq!(workers.len(), 3);
        let (ran, names) = std::sync::mpsc::channel::<(String, usize)>();
        for runtime in workers.runtimes() {
            let ran = ran.clone();
            runtime.spawn(async move {
                let name = std::thread::current().name().unwrap_or_default().to_string();
                let _ = ran.send((name, tollgate_counters::thread_slot()));
            });
        }
        let mut seen: Vec<(String, usize)> = (0..3).map(|_| names.recv().expect("ran")).collect();
        seen.sort();
        let expected: Vec<(String, usize)> = (0..3).map(|i| (format!("tollgate-worker-{i}"), i + 1)).collect();
        assert_eq!(seen, expected, "each worker has its own thread and pool slot");
        // Dropping the workers ends their threads: their runtimes drop the tasks left.
        let (dropped_tx, dropped) = std::sync::mpsc::channel::<()>();
        struct Tell(std::sync::mpsc::Sender<()>);
        impl Drop for Tell {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        for runtime in workers.runtimes() {
            let tell = Tell(dropped_tx.clone());
            runtime.spawn(async move {
                let _tell = tell;
                std::future::pending::<()>().await;
            });
        }
        drop(dropped_tx);
        drop(workers);
        for _ in 0..3 {
            dropped.recv().expect("a worker's pending task was dropped with its runtime");
        }
    }
}
