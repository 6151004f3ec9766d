//! Listeners: accept with a connection cap, optional TLS (ALPN `h2`, `http/1.1`),
//! HTTP/1.1 and HTTP/2 on one port, and the limits that keep hostile clients from
//! exhausting the gateway: header-read and idle timeouts (slowloris), header size,
//! HTTP/2 stream and reset-flood limits. Running out of file descriptors slows the
//! accept loop down instead of crashing it.
//!
//! Connections are served on [`Workers`]: one thread per core, each running a
//! single-threaded runtime with its own event loop (epoll), like nginx's worker
//! processes. A connection — the client's socket, its backend connections, its
//! WebSocket relay — lives on one worker from accept to close, so a request never
//! wakes another thread, and no thread parks on a lock or a futex to hand work over.
//! The accept loop gives each connection to the worker serving the fewest. (One
//! listening socket rather than one per worker with `SO_REUSEPORT`: a second Tollgate
//! started on the same port by mistake fails to bind instead of silently sharing it.)

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
pub struct ListenerOptions {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Time allowed to send a complete request head, and to start the next request on
    /// an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1: bigger → 431); at least 8 KiB.
    pub max_header_bytes: usize,
    pub tls: Option<TlsAcceptor>,
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams open at once per connection.
    pub h2_max_concurrent_streams: u32,
    /// How long in-flight HTTP requests may take to finish at shutdown.
    pub drain_timeout: Duration,
    /// The threads connections are served on; `None`: the caller's runtime.
    pub workers: Option<Arc<Workers>>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_connections: 8_192,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 256,
            drain_timeout: Duration::from_secs(30),
            workers: None,
        }
    }
}

/// Threads that serve gateway connections, each a single-threaded runtime.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    runtime: tokio::runtime::Handle,
    /// Connections it serves now.
    load: Arc<AtomicUsize>,
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
                crate::pool::set_thread_slot(i + 1);
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
            workers.push(Worker { runtime: handle, load: Arc::default(), _stop: stop });
        }
        Ok(Arc::new(Workers { workers }))
    }

    /// One per available core.
    pub fn per_core() -> std::io::Result<Arc<Workers>> {
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs a connection on the worker serving the fewest.
    fn run<F>(&self, connection: impl FnOnce() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self.workers.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)) else { return };
        let load = worker.load.clone();
        load.fetch_add(1, Ordering::Relaxed);
        worker.runtime.spawn(async move {
            // Counted down however the connection ends, even if its task is dropped.
            struct Leave(Arc<AtomicUsize>);
            impl Drop for Leave {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _leave = Leave(load);
            connection().await;
        });
    }
}

/// A TLS acceptor from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = crate::upstream::load_certs(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn builder(opts: &ListenerOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
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

/// Serves `gateway` on an already-bound listener until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (up to `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    opts: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(builder(&opts));
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let env = gateway.environment;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (tcp, client_addr) = match accepted {
            Ok(c) => c,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off so the loop does not spin, and keep
                // serving the connections we have.
                tracing::warn!(error = %e, "accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            gateway.metrics().env(env).connection_refused();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (gateway, builder, opts, stop) = (gateway.clone(), builder.clone(), opts.clone(), stop_rx.clone());
        match opts.workers.clone() {
            None => {
                tokio::spawn(connection(tcp, client_addr, permit, gateway, builder, opts, stop));
            }
            Some(workers) => {
                // The socket moves to the worker's event loop.
                let Ok(tcp) = tcp.into_std() else { continue };
                workers.run(move || async move {
                    let Ok(tcp) = TcpStream::from_std(tcp) else { return };
                    connection(tcp, client_addr, permit, gateway, builder, opts, stop).await;
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    gateway.drain();
    // Wait for connections to finish their requests, up to the drain timeout.
    let all = opts.max_connections as u32;
    let _ = tokio::time::timeout(opts.drain_timeout, slots.acquire_many(all)).await;
}

/// One client connection, from the TLS handshake (if any) to its close.
async fn connection(
    tcp: TcpStream,
    client_addr: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    opts: ListenerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let slot = Arc::new(permit);
    match &opts.tls {
        None => {
            let info = ConnInfo { client_addr, tls: false, slot };
            serve_connection(TokioIo::new(SmugglingGuard::new(tcp)), info, &gateway, &builder, &mut stop).await;
        }
        Some(acceptor) => {
            let tls = match tokio::time::timeout(opts.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return tracing::debug!(error = %e, %client_addr, "TLS handshake failed");
                }
                Err(_) => return tracing::debug!(%client_addr, "TLS handshake timed out"),
            };
            let info = ConnInfo { client_addr, tls: true, slot };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_connection(TokioIo::new(tls), info, &gateway, &builder, &mut stop).await;
            } else {
                let guarded = SmugglingGuard::new(tls);
                serve_connection(TokioIo::new(guarded), info, &gateway, &builder, &mut stop).await;
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
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let gw = gateway.clone();
    let client_addr = info.client_addr;
    let service = service_fn(move |req| {
        let (gw, info) = (gw.clone(), info.clone());
        async move { Ok::<_, Infallible>(gw.handle(req, info).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, client = %client_addr, "connection ended with an error");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
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
    fn connections_go_to_the_least_loaded_worker_and_run_on_its_thread() {
        let workers = Workers::start(3).expect("threads");
        let (done_tx, done) = std::sync::mpsc::channel::<String>();
        let (release_tx, release) = watch::channel(false);
        // Six connections that stay open until released: two per worker.
        for _ in 0..6 {
            let (done_tx, mut release) = (done_tx.clone(), release.clone());
            workers.run(move || async move {
                let name = std::thread::current().name().unwrap_or_default().to_string();
                let _ = done_tx.send(name);
                let _ = release.wait_for(|r| *r).await;
            });
        }
        let mut threads: Vec<String> = (0..6).map(|_| done.recv().expect("ran")).collect();
        threads.sort();
        assert_eq!(
            threads,
            [
                "tollgate-worker-0",
                "tollgate-worker-0",
                "tollgate-worker-1",
                "tollgate-worker-1",
                "tollgate-worker-2",
                "tollgate-worker-2"
            ]
        );
        assert!(workers.workers.iter().all(|w| w.load.load(Ordering::Relaxed) == 2));
        // Closed connections leave their worker's count.
        let _ = release_tx.send(true);
        drop(release);
        let (gone_tx, gone) = std::sync::mpsc::channel();
        for w in &workers.workers {
            let (load, gone_tx) = (w.load.clone(), gone_tx.clone());
            // Runs after the worker's released connections (same thread, queued later).
            w.runtime.spawn(async move {
                tokio::task::yield_now().await;
                let _ = gone_tx.send(load.load(Ordering::Relaxed));
            });
        }
        let left: Vec<usize> = (0..3).map(|_| gone.recv().expect("counted")).collect();
        assert_eq!(left, [0, 0, 0]);
    }
}
