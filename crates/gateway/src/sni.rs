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
    certified_key(certs, key_der).map(Arc::new)
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
