//! Backends whose TLS certificate does not verify: the client gets 502 with the code
//! `upstream_tls` (the backend was reached, so not `upstream_unavailable`), and the log
//! says in one line, in words, which backend, what failed and the fix — never a raw
//! library error, and without colour codes when the log is not a terminal.
//!
//! Real TLS servers on 127.0.0.1 port 0 with certificates made here (rcgen): signed by
//! a private authority, self-signed, for another host name, expired.

mod support;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use support::TempDir;
use tokio::net::TcpListener;

/// A certificate and its key, as rcgen made them.
struct Made {
    pem: String,
    der: Vec<u8>,
    key: Vec<u8>,
}

fn params(names: &[&str], common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    p.distinguished_name.push(DnType::CommonName, common_name);
    p
}

fn self_signed(p: &CertificateParams) -> Made {
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Made { pem: cert.pem(), der: cert.der().to_vec(), key: key.serialize_der() }
}

/// An HTTPS server on 127.0.0.1 presenting `cert`, answering 200 `ok`.
async fn tls_backend(cert: &Made) -> SocketAddr {
    let chain = vec![CertificateDer::from(cert.der.clone())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused certificate ends the handshake here, as it should.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service =
                    service_fn(|_req| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path.display().to_string()
}

#[tokio::test]
async fn certificates_that_do_not_verify_get_upstream_tls_and_a_log_line_that_says_the_fix() {
    let dir = TempDir::new();
    // A private authority and a server certificate it signed.
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = params(&[], "Tollgate Test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("key");
    let signed = params(&["127.0.0.1", "localhost"], "backend.test").signed_by(&server_key, &issuer).expect("signed");
    let signed = Made { pem: signed.pem(), der: signed.der().to_vec(), key: server_key.serialize_der() };
    // Self-signed for the right name; for another name; and long expired.
    let own = self_signed(&params(&["127.0.0.1"], "self-made"));
    // Self-signed and marked as an authority, as `openssl req -x509` makes them.
    let mut own_ca_params = params(&["127.0.0.1"], "self-made-ca");
    own_ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let own_ca = self_signed(&own_ca_params);
    let other = self_signed(&params(&["other.example"], "other.example"));
    let mut old = params(&["127.0.0.1"], "old");
    (old.not_before, old.not_after) = (date_time_ymd(2019, 1, 1), date_time_ymd(2020, 1, 1));
    let expired = self_signed(&old);

    let ca_file = write(dir.path(), "ca.pem", &ca_cert.pem());
    let other_file = write(dir.path(), "other.pem", &other.pem);
    let expired_file = write(dir.path(), "expired.pem", &expired.pem);
    let plain = support::http_backend().await;
    let backends = [
        ("trusted", format!("https://{}", tls_backend(&signed).await), format!("tls: {{ ca_file: '{ca_file}' }}")),
        ("private_ca", format!("https://{}", tls_backend(&signed).await), String::new()),
        ("self_signed", format!("https://{}", tls_backend(&own).await), String::new()),
        ("self_signed_ca", format!("https://{}", tls_backend(&own_ca).await), String::new()),
        ("misnamed", format!("https://{}", tls_backend(&other).await), format!("tls: {{ ca_file: '{other_file}' }}")),
        (
            "expired",
            format!("https://{}", tls_backend(&expired).await),
            format!("tls: {{ ca_file: '{expired_file}' }}"),
        ),
        ("plain", format!("https://{plain}"), String::new()),
    ];
    let mut yaml = String::from("backends:\n");
    for (name, url, tls) in &backends {
        yaml += &format!("  - {{ system_name: {name}, private_base_url: '{url}', {tls} }}\n");
    }
    yaml += "products:\n  - system_name: api\n    staging_public_base_url: http://api-staging.test\n    production_public_base_url: http://api.test\n    backend_usages:\n";
    for (name, _, _) in &backends {
        yaml += &format!("      - {{ backend: {name}, path: /{name} }}\n");
    }
    yaml += "    mapping_rules: [ { http_method: ANY, pattern: /, metric: hits, delta: 1 } ]\n    application_plans: [ { system_name: basic } ]\naccounts:\n  - name: acme\n    applications: [ { name: app, product: api, plan: basic, user_key: k } ]\n";
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(&config, yaml).expect("write");
    let mut serve = support::spawn_serve(&config).await;

    let (status, _, body) = support::get(serve.staging, "api-staging.test", "/trusted/?user_key=k").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "a certificate from ca_file's authority verifies");

    for (backend, words) in [
        ("private_ca", &["unknown certificate authority", "CN=Tollgate Test CA", "`tls.ca_file`"][..]),
        ("self_signed", &["CN=self-made", "self-signed", "`tls.ca_file`"][..]),
        ("self_signed_ca", &["CN=self-made-ca", "self-signed", "`tls.ca_file`"][..]),
        ("misnamed", &["other.example", "not for `127.0.0.1`", "name mismatch", "`tls.server_name`"][..]),
        ("expired", &["expired at 2020-01-01T00:00:00Z", "renew"][..]),
        ("plain", &["does not speak TLS on this port", "`http://`"][..]),
    ] {
        let (status, _, body) =
            support::get(serve.staging, "api-staging.test", &format!("/{backend}/?user_key=k")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{backend}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(v["error"]["code"], "upstream_tls", "{backend}: {body}");
        assert!(!body.contains("ca_file") && !body.contains(backend), "no detail for the client: {body}");

        let needle = format!("backend `{backend}`");
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                let line = serve.err.next_line().await.expect("stderr").expect("a log line");
                if line.contains(&needle) {
                    break line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line for {needle} within 20 s"));
        assert!(line.contains("upstream_tls"), "{line}");
        for w in words {
            assert!(line.contains(w), "{backend}: `{w}` missing in the log line: {line}");
        }
        assert!(!line.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {line:?}");
        for raw in ["invalid peer certificate", "InvalidCertificate", "UnknownIssuer", "io error"] {
            assert!(!line.contains(raw), "a raw library error in the log: {line}");
        }
    }
}

#[test]
fn certificates_are_described_for_people() {
    let made = self_signed(&params(&["127.0.0.1", "api.example"], "api.example"));
    let infos = tollgate_gateway::upstream::CertificateInfo::from_pem(&made.pem).expect("parses");
    let info = &infos[0];
    assert_eq!(
        (info.subject.as_str(), info.issuer.as_str(), info.self_signed),
        ("CN=api.example", "CN=api.example", true)
    );
    assert_eq!(info.names, ["127.0.0.1", "api.example"]);
    assert_eq!(info.sha256.len(), 32 * 3 - 1, "{}", info.sha256);
    assert!(info.not_before < info.not_after);
    assert!(tollgate_gateway::upstream::CertificateInfo::from_pem("not a certificate").is_err());
}

/// Upstream mutual TLS: a backend (Node's https, `requestCert`) that accepts only clients
/// with a certificate from its authority. With `tls.client_cert_file` and
/// `tls.client_key_file` the gateway presents one and is served; without, the backend
/// refuses the handshake and the client gets 502 `upstream_tls`. A key that does not
/// fit the certificate is refused by `check`, naming the option.
#[tokio::test]
async fn a_backend_that_requires_a_client_certificate_gets_the_configured_one() {
    let dir = TempDir::new();
    let server = self_signed(&params(&["127.0.0.1"], "backend.test"));
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = params(&[], "Client CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let client_key = KeyPair::generate().expect("key");
    let client = params(&[], "gateway-client").signed_by(&client_key, &issuer).expect("signed");
    let server_cert = write(dir.path(), "server.pem", &server.pem);
    let server_key = write(dir.path(), "server-key.pem", &pem_of("PRIVATE KEY", &server.key));
    let client_ca = write(dir.path(), "client-ca.pem", &ca_cert.pem());
    let client_cert = write(dir.path(), "client.pem", &client.pem());
    let client_key_file = write(dir.path(), "client-key.pem", &client_key.serialize_pem());
    let other_key = write(dir.path(), "other-key.pem", &KeyPair::generate().expect("key").serialize_pem());

    let mut node = tokio::process::Command::new("node")
        .arg(support::repo_root().join("crates/tollgate/tests/peers/mtls_backend.js"))
        .env("SERVER_CERT", &server_cert)
        .env("SERVER_KEY", &server_key)
        .env("CLIENT_CA", &client_ca)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    use tokio::io::AsyncBufReadExt as _;
    let first = lines.next_line().await.expect("node stdout").expect("node printed nothing");
    let port: u16 = first.strip_prefix("listening on ").and_then(|p| p.parse().ok()).expect("a port");

    let backend = |name: &str, extra: &str| {
        format!(
            "  - {{ system_name: {name}, private_base_url: 'https://127.0.0.1:{port}', tls: {{ ca_file: '{server_cert}'{extra} }} }}\n"
        )
    };
    let yaml = |with_bad_key: bool| {
        let key = if with_bad_key { &other_key } else { &client_key_file };
        let mut y = String::from("backends:\n");
        y += &backend("mtls", &format!(", client_cert_file: '{client_cert}', client_key_file: '{key}'"));
        y += &backend("plain", "");
        // The same certificate and key inline (as the admin API stores them).
        let inline = |pem: &str| serde_json::to_string(pem).expect("json string");
        y += &backend(
            "inline",
            &format!(
                ", client_cert_pem: {}, client_key_pem: {}",
                inline(&client.pem()),
                inline(&client_key.serialize_pem())
            ),
        );
        y += "products:\n  - system_name: api\n    staging_public_base_url: http://api-staging.test\n    production_public_base_url: http://api.test\n    backend_usages: [ { backend: mtls, path: /mtls }, { backend: plain, path: /plain }, { backend: inline, path: /inline } ]\n    mapping_rules: [ { http_method: ANY, pattern: /, metric: hits } ]\n    application_plans: [ { system_name: basic } ]\naccounts:\n  - name: acme\n    applications: [ { name: app, product: api, plan: basic, user_key: k } ]\n";
        y
    };
    // A key that does not fit the certificate: `check` says which option.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, yaml(true)).expect("write");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate")).arg("check").arg(&bad).output().expect("check");
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("backends[0].tls.client_key_file"), "{said}");

    let config = dir.path().join("tollgate.yaml");
    std::fs::write(&config, yaml(false)).expect("write");
    let serve = support::spawn_serve(&config).await;
    let (status, _, body) = support::get(serve.staging, "api-staging.test", "/mtls/?user_key=k").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "client gateway-client"));
    let (status, _, body) = support::get(serve.staging, "api-staging.test", "/inline/?user_key=k").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "client gateway-client"), "client_cert_pem, client_key_pem");
    let (status, _, body) = support::get(serve.staging, "api-staging.test", "/plain/?user_key=k").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream_tls"), "{body}");
}

/// DER bytes as PEM with the given label.
fn pem_of(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}
