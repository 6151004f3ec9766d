//! Certificates per product on the TLS listeners, chosen by SNI (RFC 6066 §3): the
//! certificate of the product published on the name the client asks for, in the
//! listener's current snapshot, else the listener's default (`--tls-cert`). A reload
//! brings new certificates to new handshakes; open connections keep theirs.

use crate::snapshot::SnapshotHandle;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// A product's certificate from its `tls.cert_file` (or `cert_pem`) and `tls.key_file`
/// (or `key_pem`), checked as a handshake would need it: a readable chain and
/// unencrypted key that belong together, and a leaf valid now (not expired, not yet
/// valid).
///
/// # Errors
/// The key at fault (`cert_file`, `cert_pem`, `key_file`, `key_pem`) and why, in words.
pub fn load_product_certificate(
    cert: crate::upstream::Pem<'_>,
    key: crate::upstream::Pem<'_>,
    ocsp: Option<&std::path::Path>,
) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let (cert_key, key_key) = (cert.key("cert_file", "cert_pem"), key.key("key_file", "key_pem"));
    let certs = crate::upstream::pem_certificates(cert).map_err(|e| (cert_key, e))?;
    let leaf = certs.first().ok_or((cert_key, format!("{} holds no certificate", cert.describe())))?;
    check_validity(leaf).map_err(|e| (cert_key, format!("{}: {e}", cert.describe())))?;
    let key_der = crate::upstream::pem_private_key(key).map_err(|e| (key_key, e))?;
    let mut certified = certified_key(certs, key_der).map_err(|(_, e)| match (key, cert) {
        (crate::upstream::Pem::File(k), crate::upstream::Pem::File(c)) => {
            (key_key, format!("{}: {e} ({})", k.display(), c.display()))
        }
        _ => (key_key, e),
    })?;
    if let Some(path) = ocsp {
        let response =
            crate::files::read_bounded(path, crate::files::MAX_CERTIFICATES).map_err(|e| ("ocsp_file", e))?;
        // Its form only (a DER SEQUENCE filling the file, RFC 6960 §4.2.1): its content
        // is the responder's, for the client to check.
        if !crate::server::is_der_sequence(&response) {
            return Err((
                "ocsp_file",
                format!("{} is not a DER OCSP response (as `openssl ocsp -respout` writes one)", path.display()),
            ));
        }
        certified.ocsp = Some(response);
    }
    Ok(Arc::new(certified))
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

/// A product's [`ClientAuth`] from its `tls.client_ca_file` (or `client_ca_pem`).
///
/// # Errors
/// What is wrong with the authorities, in words.
pub fn load_client_auth(authorities: crate::upstream::Pem<'_>, required: bool) -> Result<ClientAuth, String> {
    let roots = crate::upstream::pem_certificates(authorities)?;
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
    /// The leaf's SHA-256 digest and its lower-case hex, made on first use.
    digest: std::sync::OnceLock<([u8; 32], Box<str>)>,
    /// The leaf's names, parsed on first use (by templates and conditions).
    details: std::sync::OnceLock<CertificateDetails>,
}

/// What templates and conditions read of a client certificate's leaf (the
/// `client_certificate.*` variables). Empty strings where the certificate has none or
/// could not be parsed (the handshake verified it, so that is not expected).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CertificateDetails {
    /// The subject as an RFC 4514 string: most specific first (`CN=client,O=Example`),
    /// special characters escaped (§2.4).
    pub subject: String,
    /// The issuer, as `subject`.
    pub issuer: String,
    /// The subject's first common name (CN), unescaped.
    pub common_name: String,
    /// The serial number, lower-case hex without separators, in whole bytes (as
    /// `openssl x509 -serial` prints it, lower-cased).
    pub serial: String,
    /// The subject alternative names in OpenSSL's notation, comma and space separated:
    /// `DNS:api.example.com, URI:spiffe://example/client, email:a@example.com,
    /// IP Address:127.0.0.1`.
    pub sans: String,
}

impl CertificateDetails {
    /// Reads a certificate (DER); `None` when it does not parse.
    pub fn parse(der: &[u8]) -> Option<CertificateDetails> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) => sans.push(format!("DNS:{n}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                    GeneralName::IPAddress(ip) => {
                        let ip = match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                            16 => <[u8; 16]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            sans.push(format!("IP Address:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(CertificateDetails {
            subject: rfc4514(cert.subject()),
            issuer: rfc4514(cert.issuer()),
            common_name: common_name.to_owned(),
            // As OpenSSL prints it (`openssl x509 -serial`, lower-case): the number's
            // bytes without the leading zero bytes of its DER encoding, at least one.
            serial: {
                let raw = cert.raw_serial();
                let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
                hex::encode(&raw[first..])
            },
            sans: sans.join(", "),
        })
    }
}

/// A distinguished name as RFC 4514 §2 writes it: the RDNs in reverse order of the
/// encoding, `+` within a multi-valued RDN, short names where known (else the dotted
/// OID), values escaped per §2.4 (non-string values as `#` and hex DER, §2.4).
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_rfc4514(value, &mut out),
                Err(_) => {
                    out.push('#');
                    out.push_str(&hex::encode(attr.attr_value().data));
                }
            }
        }
    }
    out
}

/// RFC 4514 §2.4: `"+,;<>\` always, `#` and space first, space last, NUL as `\00`.
fn escape_rfc4514(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
}

impl PeerCertificate {
    /// A chain as the handshake gave it.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> PeerCertificate {
        PeerCertificate {
            chain,
            checked: std::sync::Mutex::new(None),
            digest: std::sync::OnceLock::new(),
            details: std::sync::OnceLock::new(),
        }
    }

    /// The leaf's subject, issuer, serial and alternative names, parsed on first use.
    pub fn details(&self) -> &CertificateDetails {
        self.details.get_or_init(|| {
            self.chain.first().and_then(|leaf| CertificateDetails::parse(leaf.as_ref())).unwrap_or_default()
        })
    }

    /// The SHA-256 fingerprint of the leaf, lower-case hex (as an application's
    /// `client_certificates` lists it, normalized).
    pub fn fingerprint(&self) -> &str {
        &self.digest().1
    }

    /// The SHA-256 digest of the leaf (DER), as RFC 8705's `x5t#S256` hashes it.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.digest().0
    }

    fn digest(&self) -> &([u8; 32], Box<str>) {
        self.digest.get_or_init(|| {
            let leaf = self.chain.first().map_or(&[][..], |c| c.as_ref());
            let mut digest = [0u8; 32];
            digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, leaf).as_ref());
            (digest, hex::encode(digest).into())
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
