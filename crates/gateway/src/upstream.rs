//! Connections to backends: TCP with a connect timeout, TLS verified against the
//! system roots or the backend's `ca_file` (or not at all, when `verify: false` says
//! so), and a keep-alive pool per backend for ordinary HTTP ([`crate::pool`]). WebSocket
//! upgrades take a fresh connection each, since an upgraded connection can never return
//! to a pool.

use crate::body::GatewayBody;
use crate::pool::{Pool, RequestError};
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

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a backend connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("connecting to {0}: {1}")]
    Io(String, io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Tls(String, io::Error),
}

/// A stream to a backend, plain or TLS.
pub enum UpstreamStream {
    Plain(TcpStream),
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

struct ConnectorInner {
    /// `host:port`, for connecting and for messages.
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

/// Connects to one backend, whatever URI it is asked for.
#[derive(Clone)]
pub struct Connector(Arc<ConnectorInner>);

impl Connector {
    pub async fn connect(&self) -> Result<UpstreamStream, ConnectError> {
        let inner = &self.0;
        let tcp = tokio::time::timeout(inner.connect_timeout, TcpStream::connect(&inner.address))
            .await
            .map_err(|_| ConnectError::Timeout(inner.address.clone()))?
            .map_err(|e| ConnectError::Io(inner.address.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        match &inner.tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(inner.connect_timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout(inner.address.clone()))?
                    .map_err(|e| ConnectError::Tls(inner.address.clone(), e))?;
                Ok(UpstreamStream::Tls(Box::new(tls)))
            }
        }
    }
}

/// A backend as the gateway reaches it.
pub struct Upstream {
    pub base: BaseUrl,
    pub authority: http::uri::Authority,
    /// What requests carry as `Host` unless a policy set one: the authority, without
    /// the scheme's default port.
    pub host: http::HeaderValue,
    pub connector: Connector,
    pub pool: Pool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the connector and pool for a backend. Errors are messages for the
    /// configuration's `tls` field.
    pub fn new(base: BaseUrl, tls: &BackendTls, connect_timeout: Duration) -> Result<Upstream, String> {
        let host_for_uri = if base.host.contains(':') { format!("[{}]", base.host) } else { base.host.clone() };
        let address = format!("{host_for_uri}:{}", base.port);
        let tls_connector = if base.is_tls() {
            let config = client_tls_config(tls)?;
            let name = tls.server_name.clone().unwrap_or_else(|| base.host.clone());
            let name = ServerName::try_from(name).map_err(|e| format!("`server_name`: {e}"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let connector =
            Connector(Arc::new(ConnectorInner { address: address.clone(), tls: tls_connector, connect_timeout }));
        let pool = Pool::new(connector.clone());
        let authority = address.parse().map_err(|e| format!("`{address}` is not a valid authority: {e}"))?;
        let default_port = if base.is_tls() { 443 } else { 80 };
        let host = if base.port == default_port { host_for_uri } else { address };
        let host = http::HeaderValue::try_from(host).map_err(|e| format!("the host is not a valid header: {e}"))?;
        Ok(Upstream { base, authority, host, connector, pool })
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

    /// Sends a request (its `Host` is set here unless a policy set one) and returns
    /// the response once its head has come.
    pub async fn request(
        &self,
        mut req: http::Request<crate::body::UpstreamBody>,
    ) -> Result<http::Response<GatewayBody>, crate::error::GatewayError> {
        use crate::error::GatewayError;
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(http::header::HOST, self.host.clone());
        }
        match self.pool.request(req).await {
            Ok(resp) => Ok(resp.map(GatewayBody::from)),
            Err(RequestError::Connect(e @ ConnectError::Timeout(_))) => {
                Err(GatewayError::UpstreamTimeout(e.to_string()))
            }
            Err(RequestError::Connect(e)) => Err(GatewayError::UpstreamUnavailable(e.to_string())),
            Err(RequestError::Http(e)) => Err(GatewayError::UpstreamFailed(error_chain(&e))),
        }
    }
}

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

fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "could not load some system root certificates");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "loaded system root certificates");
            Arc::new(store)
        })
        .clone()
}

/// Every certificate of PEM text (`tls.ca_pem`).
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_pem is not PEM certificate text: {e}"))?;
    if certs.is_empty() {
        return Err("ca_pem holds no certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn client_tls_config(tls: &BackendTls) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if !tls.verify {
        let verifier = BackendVerifier { trust: Trust::Nothing, provider: provider() };
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
    } else if tls.ca_file.is_some() || tls.ca_pem.is_some() {
        let (pinned, source) = match (&tls.ca_file, &tls.ca_pem) {
            (Some(ca), _) => (load_certs(ca)?, ca.display().to_string()),
            (None, Some(pem)) => (pem_certs(pem)?, "ca_pem".to_string()),
            (None, None) => unreachable!("one of them is set"),
        };
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            roots.add(cert.clone()).map_err(|e| format!("{source}: {e}"))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("{source}: {e}"))?;
        let verifier = BackendVerifier { trust: Trust::CaFile { webpki, pinned }, provider: provider() };
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
    } else {
        builder.with_root_certificates(native_roots()).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How a backend's certificate is checked when the system roots are not used.
#[derive(Debug)]
enum Trust {
    /// Trusts what a `ca_file` holds: certificates signed by an authority in it (the
    /// usual path check), and also a self-signed certificate that is itself in the file
    /// even when it is marked as a CA — which is what `openssl req -x509` makes by
    /// default, and what webpki alone rejects as `CaUsedAsEndEntity`. The pinned
    /// certificate must still name the server.
    CaFile { webpki: Arc<WebPkiServerVerifier>, pinned: Vec<CertificateDer<'static>> },
    /// `verify: false`: any certificate. The operator has been warned in the log.
    Nothing,
}

/// Certificate checks per [`Trust`]; in every case the handshake signatures are
/// verified, so the server still proves it holds the certificate's key.
#[derive(Debug)]
struct BackendVerifier {
    trust: Trust,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Trust::CaFile { webpki, pinned } = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => Ok(v),
            Err(e) if pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
