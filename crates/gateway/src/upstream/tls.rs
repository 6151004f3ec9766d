//! TLS towards backends: the client configuration (system roots, a `ca_file`, or no
//! verification when `verify: false` says so), and certificate problems told in words
//! that name the setting to change.

use super::*;

/// What went wrong in a TLS handshake with a backend, in an operator's words, each
/// with its fix (the backend's `tls` options of docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate signs itself and is not in `tls.ca_file`/`tls.ca_pem`.
    SelfSigned {
        /// The certificate's subject.
        subject: String,
    },
    /// Signed by an authority that neither the system nor `tls.ca_file` trusts.
    UnknownIssuer {
        /// The certificate's issuer.
        issuer: String,
    },
    /// The certificate does not name the host Tollgate asked for.
    NameMismatch {
        /// The name Tollgate asked for.
        expected: String,
        /// The names the certificate is valid for.
        presented: Vec<String>,
    },
    /// The certificate's validity ended (`not_after`, RFC 3339).
    Expired {
        /// When it ended.
        not_after: String,
    },
    /// The certificate is not valid yet (`not_before`, RFC 3339).
    NotYetValid {
        /// When it begins.
        not_before: String,
    },
    /// The certificate was refused for another reason (revoked, wrong key usage…).
    BadCertificate(String),
    /// The backend does not answer TLS on this port (a plain HTTP server, say).
    NotTls,
    /// The backend closed the connection or sent an alert during the handshake.
    HandshakeRefused(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::SelfSigned { subject } => write!(
                f,
                "its certificate ({subject}) is self-signed and not trusted; fix: set the backend's `tls.ca_file` to that certificate (PEM), or `tls.verify: false` to skip the check (never in production)"
            ),
            TlsFailure::UnknownIssuer { issuer } => write!(
                f,
                "its certificate is signed by an unknown certificate authority ({issuer}); fix: set the backend's `tls.ca_file` to that authority's certificate (PEM)"
            ),
            TlsFailure::NameMismatch { expected, presented } => {
                let names = if presented.is_empty() { "no host name".to_string() } else { presented.join(", ") };
                write!(
                    f,
                    "its certificate is for {names}, not for `{expected}` (name mismatch); fix: reach the backend by a name its certificate has, or set `tls.server_name` to one of them"
                )
            }
            TlsFailure::Expired { not_after } => write!(
                f,
                "its certificate expired at {not_after}; fix: renew the backend's certificate (and check the clocks)"
            ),
            TlsFailure::NotYetValid { not_before } => {
                write!(f, "its certificate is not valid before {not_before}; fix: check the clocks of both machines")
            }
            TlsFailure::BadCertificate(why) => {
                write!(f, "its certificate was refused: {why}; fix: give the backend a certificate for TLS servers")
            }
            TlsFailure::NotTls => write!(
                f,
                "it does not speak TLS on this port; fix: use `http://` or `ws://` in `private_base_url`, or the backend's TLS port"
            ),
            TlsFailure::HandshakeRefused(why) => write!(
                f,
                "the TLS handshake failed: {why}; fix: check that the backend accepts TLS 1.2 or 1.3 from Tollgate"
            ),
        }
    }
}

impl TlsFailure {
    /// Classifies a failed handshake: the rustls error inside `e` (with the rejected
    /// certificate when the verifier kept it), or what happened to the connection.
    pub(super) fn classify(e: &io::Error) -> TlsFailure {
        use rustls::{AlertDescription, CertificateError, Error};
        let Some(error) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
            return TlsFailure::HandshakeRefused(match e.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                    "the backend closed the connection".to_string()
                }
                _ => "the connection failed".to_string(),
            });
        };
        match error {
            Error::InvalidCertificate(CertificateError::Other(other)) => match other.0.downcast_ref::<Rejected>() {
                Some(Rejected(failure)) => failure.clone(),
                None => TlsFailure::BadCertificate(other.to_string()),
            },
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => TlsFailure::NameMismatch { expected: "the backend's host".into(), presented: Vec::new() },
            Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. }) => {
                TlsFailure::Expired { not_after: rfc3339(not_after.as_secs()) }
            }
            Error::InvalidCertificate(CertificateError::Expired) => {
                TlsFailure::Expired { not_after: "a time already past".into() }
            }
            Error::InvalidCertificate(CertificateError::NotValidYetContext { not_before, .. }) => {
                TlsFailure::NotYetValid { not_before: rfc3339(not_before.as_secs()) }
            }
            Error::InvalidCertificate(CertificateError::NotValidYet) => {
                TlsFailure::NotYetValid { not_before: "a time still to come".into() }
            }
            Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                TlsFailure::UnknownIssuer { issuer: "an issuer Tollgate does not trust".into() }
            }
            Error::InvalidCertificate(CertificateError::Revoked) => TlsFailure::BadCertificate("it is revoked".into()),
            Error::InvalidCertificate(other) => TlsFailure::BadCertificate(format!("{other:?}")),
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. } => TlsFailure::NotTls,
            Error::AlertReceived(AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure) => {
                TlsFailure::HandshakeRefused("the backend and Tollgate share no TLS version or cipher suite".into())
            }
            Error::AlertReceived(alert) => {
                TlsFailure::HandshakeRefused(format!("the backend sent the alert {alert:?}"))
            }
            Error::PeerIncompatible(_) => {
                TlsFailure::HandshakeRefused("the backend and Tollgate share no TLS version or cipher suite".into())
            }
            _ => TlsFailure::HandshakeRefused("the backend broke the protocol".into()),
        }
    }
}

/// A server name as the certificate would have to show it.
fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "the backend's host".to_string(),
    }
}

fn rfc3339(secs: u64) -> String {
    tollgate_model::period::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A verification error said with what the certificate shows: self-signed or by which
/// issuer, which names it has.
fn in_words(e: rustls::Error, info: Option<CertificateInfo>, server_name: &ServerName<'_>) -> rustls::Error {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext, UnknownIssuer};
    let Some(info) = info else { return e };
    match e {
        // A self-signed certificate no trust anchor names: webpki says UnknownIssuer, or
        // CaUsedAsEndEntity when it is marked as a CA (what `openssl req -x509` makes) —
        // either way the fix is to trust it with `tls.ca_file`.
        rustls::Error::InvalidCertificate(UnknownIssuer | rustls::CertificateError::Other(_)) if info.self_signed => {
            rejected(TlsFailure::SelfSigned { subject: info.subject })
        }
        rustls::Error::InvalidCertificate(UnknownIssuer) => rejected(TlsFailure::UnknownIssuer { issuer: info.issuer }),
        rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }) => {
            rejected(TlsFailure::NameMismatch { expected: server_name_text(server_name), presented: info.names })
        }
        e => e,
    }
}

fn rejected(failure: TlsFailure) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(Rejected(failure)))))
}

/// What a person needs to know of a certificate: who it is for, who signed it, when it
/// is valid, and its fingerprint (to compare with `openssl x509 -fingerprint -sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's distinguished name, e.g. `CN=localhost`.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Whether subject and issuer are the same (a self-signed certificate).
    pub self_signed: bool,
    /// The names it is valid for (subjectAltName DNS names and IP addresses).
    pub names: Vec<String>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER encoding, as upper-case hex pairs joined by `:`.
    pub sha256: String,
}

impl CertificateInfo {
    /// Reads a DER certificate; `None` when it does not parse as X.509.
    pub fn parse(der: &[u8]) -> Option<CertificateInfo> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                            16 => <[u8; 16]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let upper = hex::encode_upper(digest);
        let sha256 = upper.as_bytes().chunks(2).map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>().join(":");
        Some(CertificateInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
            names,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            sha256,
        })
    }

    /// Every certificate of PEM text, described; an error for text that holds none.
    pub fn from_pem(pem: &str) -> Result<Vec<CertificateInfo>, String> {
        pem_certs(pem)?
            .iter()
            .map(|c| CertificateInfo::parse(c).ok_or_else(|| "not an X.509 certificate".into()))
            .collect()
    }
}

/// A certificate refusal the verifier already put in words (it has the certificate,
/// the error alone does not), carried through rustls as `CertificateError::Other`.
#[derive(Debug)]
struct Rejected(TlsFailure);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Rejected {}

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

/// Reads every certificate of a PEM file; the error says in words why not (no such
/// file, not allowed to read it, not PEM, no certificate in it).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    pem_certificates(Pem::File(path))
}

/// PEM text given by a configuration: a file (`…_file`, read on each node) or the text
/// itself (`…_pem`, stored with the configuration).
#[derive(Debug, Clone, Copy)]
pub enum Pem<'a> {
    /// A file's path.
    File(&'a Path),
    /// The text.
    Inline(&'a str),
}

impl<'a> Pem<'a> {
    /// The file if given, else the text.
    pub fn pick(file: Option<&'a std::path::PathBuf>, inline: Option<&'a String>) -> Option<Pem<'a>> {
        file.map(|f| Pem::File(f)).or_else(|| inline.map(|t| Pem::Inline(t)))
    }

    /// Which of the two keys it came from.
    pub fn key(&self, file_key: &'static str, pem_key: &'static str) -> &'static str {
        match self {
            Pem::File(_) => file_key,
            Pem::Inline(_) => pem_key,
        }
    }

    /// What messages call it: the file's path, or "the PEM text".
    pub fn describe(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => "the PEM text".into(),
        }
    }

    fn bytes(&self) -> Result<std::borrow::Cow<'a, [u8]>, String> {
        match self {
            Pem::File(p) => crate::files::read_bounded(p, crate::files::MAX_CERTIFICATES).map(Into::into),
            Pem::Inline(t) if t.len() > crate::files::MAX_CERTIFICATES as usize => {
                Err(format!("the PEM text is larger than {} bytes", crate::files::MAX_CERTIFICATES))
            }
            Pem::Inline(t) => Ok(t.as_bytes().into()),
        }
    }
}

/// Every certificate of PEM text from a file or inline; the error says in words why not.
pub fn pem_certificates(source: Pem<'_>) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = source.bytes()?;
    let what = source.describe();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} is not PEM certificate text: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The unencrypted private key (PKCS#8, PKCS#1 or SEC1) of PEM text from a file or
/// inline; the error says in words why not (an encrypted key, no key).
pub fn pem_private_key(source: Pem<'_>) -> Result<rustls_pki_types::PrivateKeyDer<'static>, String> {
    let bytes = source.bytes()?;
    let what = source.describe();
    if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(format!(
            "{what} holds an encrypted key: Tollgate reads unencrypted keys (decrypt it with `openssl pkcs8 -in KEY -out KEY.plain`)"
        ));
    }
    rustls_pki_types::PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("{what} holds no PEM private key: {e}"))
}

/// A backend's `tls` options that cannot be used: which key (`ca_file`, `ca_pem`,
/// `server_name`, `client_cert_file`, `client_key_file`, or none for the whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError {
    /// The key at fault (`ca_file`, `ca_pem`, `server_name`, `client_cert_file`,
    /// `client_key_file`), or empty for the whole.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<TlsConfigError> for String {
    fn from(e: TlsConfigError) -> String {
        e.message
    }
}

pub(super) fn tls_error(field: &'static str) -> impl Fn(String) -> TlsConfigError {
    move |message| TlsConfigError { field, message }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS client configuration for a backend's `tls` options.
///
/// # Errors
/// A [`TlsConfigError`] naming the key at fault: a CA file that cannot be read or holds
/// no PEM certificate, PEM text that holds none.
pub fn client_tls_config(tls: &BackendTls) -> Result<ClientConfig, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("")(e.to_string()))?;
    let trust = if !tls.verify {
        Trust::Nothing
    } else if tls.ca_file.is_some() || tls.ca_pem.is_some() {
        let (pinned, field) = match (&tls.ca_file, &tls.ca_pem) {
            (Some(ca), _) => (load_certs(ca).map_err(tls_error("ca_file"))?, "ca_file"),
            (None, Some(pem)) => (pem_certs(pem).map_err(tls_error("ca_pem"))?, "ca_pem"),
            (None, None) => unreachable!("one of them is set"),
        };
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            roots.add(cert.clone()).map_err(|e| tls_error(field)(format!("not a usable certificate: {e}")))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| tls_error(field)(e.to_string()))?;
        Trust::CaFile { webpki, pinned }
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(native_roots(), provider())
            .build()
            .map_err(|e| tls_error("")(format!("the system's root certificates: {e}")))?;
        Trust::System { webpki }
    };
    let verifier = BackendVerifier { trust, provider: provider() };
    let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier));
    let client_cert = Pem::pick(tls.client_cert_file.as_ref(), tls.client_cert_pem.as_ref());
    let client_key = Pem::pick(tls.client_key_file.as_ref(), tls.client_key_pem.as_ref());
    let mut config = match (client_cert, client_key) {
        // Upstream mutual TLS: the certificate the backend may ask for.
        (Some(cert), Some(key)) => {
            let (cert_key, key_key) =
                (cert.key("client_cert_file", "client_cert_pem"), key.key("client_key_file", "client_key_pem"));
            let chain = pem_certificates(cert).map_err(tls_error(cert_key))?;
            let key = pem_private_key(key).map_err(tls_error(key_key))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| match e {
                rustls::Error::InvalidCertificate(c) => tls_error(cert_key)(format!(
                    "the client certificate cannot be used ({c:?}); an X.509 v1 certificate (`openssl x509 -req` without extensions) must be reissued as v3"
                )),
                other => tls_error(key_key)(format!(
                    "the key does not fit the client certificate ({other}): it must be that certificate's own key, and {cert_key} its certificate first, then the chain"
                )),
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How a backend's certificate is checked.
#[derive(Debug)]
enum Trust {
    /// The system's root certificates (webpki's usual path check).
    System { webpki: Arc<WebPkiServerVerifier> },
    /// Trusts what a `ca_file` holds: certificates signed by an authority in it (the
    /// usual path check), and also a self-signed certificate that is itself in the file
    /// even when it is marked as a CA — which is what `openssl req -x509` makes by
    /// default, and what webpki alone rejects as `CaUsedAsEndEntity`. The pinned
    /// certificate must still be valid now and name the server.
    CaFile { webpki: Arc<WebPkiServerVerifier>, pinned: Vec<CertificateDer<'static>> },
    /// `verify: false`: any certificate. The operator has been warned in the log.
    Nothing,
}

/// Certificate checks per [`Trust`]; in every case the handshake signatures are
/// verified, so the server still proves it holds the certificate's key. A refused
/// certificate is described from the certificate itself (self-signed or not, by which
/// issuer), which rustls' error alone cannot say.
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
        let (webpki, pinned) = match &self.trust {
            Trust::Nothing => return Ok(ServerCertVerified::assertion()),
            Trust::System { webpki } => (webpki, &[][..]),
            Trust::CaFile { webpki, pinned } => (webpki, pinned.as_slice()),
        };
        let e = match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let info = CertificateInfo::parse(end_entity);
        if pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            if let Some(info) = &info {
                let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                if now > info.not_after {
                    return Err(rejected(TlsFailure::Expired {
                        not_after: tollgate_model::period::rfc3339(info.not_after),
                    }));
                }
                if now < info.not_before {
                    return Err(rejected(TlsFailure::NotYetValid {
                        not_before: tollgate_model::period::rfc3339(info.not_before),
                    }));
                }
            }
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
            return match rustls::client::verify_server_name(&parsed, server_name) {
                Ok(()) => Ok(ServerCertVerified::assertion()),
                Err(e) => Err(in_words(e, info, server_name)),
            };
        }
        Err(in_words(e, info, server_name))
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
