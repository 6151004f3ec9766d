//! Certificates per product on the TLS listeners, chosen by SNI (RFC 6066 §3): the
//! certificate of the product published on the name the client asks for, in the
//! listener's current snapshot, else the listener's default (`--tls-cert`). A reload
//! brings new certificates to new handshakes; open connections keep theirs.

use crate::snapshot::SnapshotHandle;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;

/// Chooses the certificate of a TLS handshake by its server name.
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    snapshot: SnapshotHandle,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    /// A resolver serving `default` for names no product with a certificate is
    /// published on (and for handshakes without SNI).
    pub fn new(default: Arc<CertifiedKey>, snapshot: SnapshotHandle) -> SniResolver {
        SniResolver { default, snapshot }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let product_cert = hello.server_name().and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.snapshot.load().product_for_host(&name).and_then(|p| p.certificate.clone())
        });
        Some(product_cert.unwrap_or_else(|| self.default.clone()))
    }
}

/// A certificate chain (leaf first) and its key, as a handshake signs with them.
///
/// # Errors
/// `("key_file", why)` when the key cannot sign or does not belong to the certificate.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, (&'static str, String)> {
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("key_file", format!("the private key cannot sign: {e}")))?;
    let certified = CertifiedKey::new(certs, signer);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(("key_file", "the key does not belong to the certificate (its public key differs)".into())),
    }
}

/// A product's certificate from its `tls.cert_file` and `tls.key_file`, checked as a
/// handshake would need it: a readable chain and unencrypted key that belong together,
/// and a leaf valid now (not expired, not yet valid).
///
/// # Errors
/// The field at fault (`cert_file`, `key_file`) and why, in words.
pub fn load_product_certificate(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let certs = crate::upstream::load_certs(cert).map_err(|e| ("cert_file", e))?;
    let leaf = certs.first().ok_or(("cert_file", format!("{} holds no certificate", cert.display())))?;
    check_validity(leaf).map_err(|e| ("cert_file", format!("{}: {e}", cert.display())))?;
    let bytes = crate::files::read_bounded(key, crate::files::MAX_CERTIFICATES).map_err(|e| ("key_file", e))?;
    if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err((
            "key_file",
            format!("{} holds an encrypted key: decrypt it (`openssl pkcs8 -in KEY -out KEY.plain`)", key.display()),
        ));
    }
    use rustls_pki_types::pem::PemObject;
    let key_der = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| ("key_file", format!("{}: no usable private key: {e}", key.display())))?;
    certified_key(certs, key_der)
        .map(Arc::new)
        .map_err(|(field, e)| (field, format!("{}: {e} ({})", key.display(), cert.display())))
}

/// Whether the certificate is valid now (RFC 5280 §4.1.2.5).
fn check_validity(der: &CertificateDer<'_>) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(format!("the certificate expired at {}; renew it", validity.not_after));
    }
    if now < validity.not_before {
        return Err(format!("the certificate is not valid before {}; check the clocks", validity.not_before));
    }
    Ok(())
}

/// A product's mutual TLS: the authorities its client certificates come from, and
/// whether one is required.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Verifies a certificate against the product's authorities only.
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// The product's authorities (for the listener's union of every product's).
    pub roots: Vec<CertificateDer<'static>>,
    /// `client_certificates: required`.
    pub required: bool,
    /// Unique to this load of the authorities (what connections cache verdicts by).
    pub id: u64,
}

/// A product's [`ClientAuth`] from its `tls.client_ca_file`.
///
/// # Errors
/// What is wrong with the file, in words.
pub fn load_client_auth(ca_file: &Path, required: bool) -> Result<ClientAuth, String> {
    let roots = crate::upstream::load_certs(ca_file)?;
    let verifier = client_verifier(&roots)?;
    static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(ClientAuth { verifier, roots, required, id })
}

/// A verifier of client certificates issued by `roots`, which lets connections
/// without a certificate through (the product decides, per request).
fn client_verifier(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone()).map_err(|e| format!("not a usable authority certificate: {e}"))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("the authorities cannot verify client certificates: {e}"))
}

/// The verifier a listener uses during the handshake, before it knows the product:
/// every product's authorities together (a certificate none of them issued fails the
/// handshake). `None` when no product asks for client certificates.
pub fn listener_client_verifier<'a>(
    auths: impl Iterator<Item = &'a ClientAuth>,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let roots: Vec<CertificateDer<'static>> = auths.flat_map(|a| a.roots.iter().cloned()).collect();
    if roots.is_empty() {
        return None;
    }
    client_verifier(&roots).ok()
}

/// Asks for client certificates when the listener's current snapshot has a product
/// that wants them, and verifies them against every such product's authorities; the
/// product of the request then checks against its own ([`ClientAuth`]).
pub struct SnapshotClientVerifier {
    snapshot: SnapshotHandle,
    /// The provider's signature algorithms, taken once (not per handshake).
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl SnapshotClientVerifier {
    /// A verifier following `snapshot`.
    pub fn new(snapshot: SnapshotHandle) -> SnapshotClientVerifier {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        SnapshotClientVerifier { snapshot, algorithms }
    }
}

impl std::fmt::Debug for SnapshotClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotClientVerifier").finish_non_exhaustive()
    }
}

impl rustls::server::danger::ClientCertVerifier for SnapshotClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.snapshot.load().client_verifier.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        match &self.snapshot.load().client_verifier {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("no product accepts client certificates".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client's certificate chain as the handshake verified it (leaf first).
#[derive(Debug)]
pub struct PeerCertificate {
    /// The leaf, then intermediates, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The last product verifier asked and its answer: a connection's requests go to
    /// one product, so the chain is verified once, not per request.
    checked: std::sync::Mutex<Option<(u64, bool)>>,
    /// The leaf's SHA-256 fingerprint, lower-case hex, made on first use.
    fingerprint: std::sync::OnceLock<Box<str>>,
}

impl PeerCertificate {
    /// A chain as the handshake gave it.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> PeerCertificate {
        PeerCertificate { chain, checked: std::sync::Mutex::new(None), fingerprint: std::sync::OnceLock::new() }
    }

    /// The SHA-256 fingerprint of the leaf, lower-case hex (as an application's
    /// `client_certificates` lists it, normalized).
    pub fn fingerprint(&self) -> &str {
        self.fingerprint.get_or_init(|| {
            let leaf = self.chain.first().map_or(&[][..], |c| c.as_ref());
            hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf)).into()
        })
    }

    /// Whether `auth`'s authorities issued it.
    pub fn verified_by(&self, auth: &ClientAuth) -> bool {
        let key = auth.id;
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, ok)) = *checked
            && k == key
        {
            return ok;
        }
        let Some((leaf, rest)) = self.chain.split_first() else { return false };
        let ok = auth.verifier.verify_client_cert(leaf, rest, rustls::pki_types::UnixTime::now()).is_ok();
        *checked = Some((key, ok));
        ok
    }
}
