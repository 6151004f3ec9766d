//! Connecting to a backend: TCP with a connect timeout, then TLS when the base URL
//! says so, as one stream type.

use super::*;

/// The connect timeout (TCP and TLS) of a backend without `connect_timeout_ms`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a backend connection failed. The message names the backend (its
/// `system_name`, or the URL a policy sends to) and its address.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or TLS did not complete within the connect timeout; names the backend.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The TCP connection failed; names the backend, with the cause.
    #[error("connecting to {0}: {1}")]
    Io(String, io::Error),
    /// The backend was reached, but the TLS handshake failed: the message says in
    /// words what failed and the fix.
    #[error("{0}: {1}")]
    Tls(String, TlsFailure),
}

impl From<ConnectError> for crate::refusal::Refusal {
    fn from(e: ConnectError) -> Self {
        use crate::refusal::Refusal;
        match e {
            ConnectError::Timeout(_) => Refusal::UpstreamTimeout(e.to_string()),
            ConnectError::Io(..) => Refusal::UpstreamUnavailable(e.to_string()),
            ConnectError::Tls(..) => Refusal::UpstreamTls(e.to_string()),
        }
    }
}

/// A stream to a backend, plain or TLS.
pub enum UpstreamStream {
    /// A plain TCP connection.
    Plain(TcpStream),
    /// A TLS session over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The TLS side of a backend's connector: the session for requests (offering HTTP/2
/// by ALPN when the backend's `protocol` allows it) and for HTTP/1.1 only (WebSocket
/// upgrades, probes), with the name verified.
#[derive(Clone)]
pub(super) struct TlsConnectors {
    pub(super) requests: TlsConnector,
    pub(super) http1: TlsConnector,
    pub(super) name: ServerName<'static>,
}

pub(super) struct ConnectorInner {
    /// `host:port`, for connecting.
    pub(super) address: String,
    /// The backend's name and address, for messages: "backend `echo` (127.0.0.1:8443)".
    pub(super) label: String,
    pub(super) tls: Option<TlsConnectors>,
    pub(super) connect_timeout: Duration,
    /// The HTTP version requests use.
    pub(super) protocol: tollgate_model::UpstreamProtocol,
    /// A listed endpoint's host name not yet resolved by its backend's [`super::dns`]
    /// task: each connection resolves it the same way (the same name servers).
    pub(super) resolve: Option<String>,
}

/// Connects to one backend, whatever URI it is asked for.
#[derive(Clone)]
pub struct Connector(pub(super) Arc<ConnectorInner>);

impl Connector {
    /// Which backend, in messages: "backend `name` (host:port)".
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// Connects for requests: TCP, then TLS when the base URL says so (offering HTTP/2
    /// by ALPN when the backend's `protocol` allows), each within the connect timeout.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Timeout`], [`ConnectError::Io`] when TCP fails, or
    /// [`ConnectError::Tls`] when the handshake fails.
    pub async fn connect(&self) -> Result<UpstreamStream, ConnectError> {
        self.connect_with(false).await
    }

    /// Connects for HTTP/1.1 whatever the backend's `protocol` (WebSocket upgrades,
    /// health probes).
    ///
    /// # Errors
    /// As [`Connector::connect`].
    pub async fn connect_http1(&self) -> Result<UpstreamStream, ConnectError> {
        self.connect_with(true).await
    }

    /// Whether a connection made by [`Connector::connect`] speaks HTTP/2: always for
    /// `protocol: http2` (h2c with prior knowledge over plain TCP), by ALPN for `auto`.
    pub fn speaks_h2(&self, stream: &UpstreamStream) -> bool {
        use tollgate_model::UpstreamProtocol;
        match self.0.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => match stream {
                UpstreamStream::Plain(_) => false,
                UpstreamStream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            },
        }
    }

    /// Whether connections are TLS (`https`, `wss`).
    pub fn is_tls(&self) -> bool {
        self.0.tls.is_some()
    }

    /// Whether requests may go over HTTP/2 (`protocol` other than `http1`).
    pub fn may_speak_h2(&self) -> bool {
        self.0.protocol != tollgate_model::UpstreamProtocol::Http1
    }

    async fn connect_with(&self, http1: bool) -> Result<UpstreamStream, ConnectError> {
        let inner = &self.0;
        let connect = async {
            match &inner.resolve {
                None => TcpStream::connect(&inner.address).await,
                Some(host) => {
                    let port = inner.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
                    let (ips, _) = super::dns::resolve(host).await.map_err(std::io::Error::other)?;
                    let addresses: Vec<std::net::SocketAddr> =
                        ips.into_iter().map(|ip| std::net::SocketAddr::new(ip, port)).collect();
                    TcpStream::connect(&addresses[..]).await
                }
            }
        };
        let tcp = tokio::time::timeout(inner.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout(inner.label.clone()))?
            .map_err(|e| ConnectError::Io(inner.label.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let keepalive = TCP_KEEPALIVE_SECS.load(std::sync::atomic::Ordering::Relaxed);
        crate::deadline::set_tcp_keepalive(&tcp, (keepalive > 0).then(|| Duration::from_secs(keepalive)));
        match &inner.tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(tls) => {
                let connector = if http1 { &tls.http1 } else { &tls.requests };
                let tls = tokio::time::timeout(inner.connect_timeout, connector.connect(tls.name.clone(), tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout(inner.label.clone()))?
                    .map_err(|e| ConnectError::Tls(inner.label.clone(), TlsFailure::classify(&e)))?;
                Ok(UpstreamStream::Tls(Box::new(tls)))
            }
        }
    }
}
