//! A certificate per product on one TLS listener (issue 18), chosen by SNI and checked
//! with OpenSSL's `s_client` as the peer: two products with their own certificates,
//! one on the listener's default, a certificate replaced by a reload without a restart,
//! and the certificate errors `check` reports.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

/// A self-signed certificate for `name` (subject `CN=name, O=org`, SAN `DNS:name`):
/// (certificate, key) files named after `file`.
fn cert_for(dir: &Path, file: &str, name: &str, org: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}/O={org}"), "-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::piped())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// The subject of the certificate the listener on `port` serves for `name`.
fn served_subject(port: u16, name: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no certificate for {name}: {text}"))
        .replace(' ', "")
}

fn config(a: &Path, a_key: &Path, b: &Path, b_key: &Path) -> String {
    let product = |name: &str, tls: &str| {
        format!(
            "  - system_name: {name}\n    staging_public_base_url: https://{name}.test\n    production_public_base_url: https://{name}-production.test\n    backend_usages: [ {{ backend: b, path: / }} ]\n    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]\n{tls}"
        )
    };
    let tls = |c: &Path, k: &Path| format!("    tls: {{ cert_file: {}, key_file: {} }}\n", c.display(), k.display());
    format!(
        "backends: [ {{ system_name: b, private_base_url: \"http://127.0.0.1:9\" }} ]\nproducts:\n{}{}{}",
        product("a", &tls(a, a_key)),
        product("b", &tls(b, b_key)),
        product("c", "")
    )
}

// Multi-threaded: `openssl s_client` runs as a blocking call while the gateway serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_product_has_its_certificate_on_one_listener_and_a_reload_replaces_it() {
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let (a, a_key) = cert_for(dir.path(), "a", "a.test", "first");
    let (b, b_key) = cert_for(dir.path(), "b", "b.test", "first");
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, config(&a, &a_key, &b, &b_key)).expect("config");
    let (default_s, default_key_s) = (default.display().to_string(), default_key.display().to_string());
    let mut args = serve_args(&["--tls-cert", &default_s, "--tls-key", &default_key_s]);
    args.staging_listen = "tls://127.0.0.1:0".into();
    let server =
        tollgate::serve::Server::start(&args, tollgate::serve::Source::File(config_file.clone())).await.expect("serve");
    let port = server.staging.port();

    assert_eq!(served_subject(port, "a.test"), "CN=a.test,O=first");
    assert_eq!(served_subject(port, "b.test"), "CN=b.test,O=first");
    let default_subject = served_subject(port, "localhost");
    assert!(default_subject.contains("CN=localhost"), "{default_subject}");
    assert_eq!(served_subject(port, "c.test"), default_subject, "a product without a certificate: the default");
    assert_eq!(served_subject(port, "A.TEST"), "CN=a.test,O=first", "names are case-insensitive");

    // Renewed in place, then reloaded: new handshakes get the new certificate.
    cert_for(dir.path(), "a", "a.test", "renewed");
    server.reload().await.expect("reload");
    assert_eq!(served_subject(port, "a.test"), "CN=a.test,O=renewed");
    assert_eq!(served_subject(port, "b.test"), "CN=b.test,O=first");

    // A key that is not the certificate's: the reload is refused, the running
    // certificates stay.
    std::fs::write(&config_file, config(&a, &b_key, &b, &b_key)).expect("config");
    let refused = server.reload().await.expect_err("refused");
    assert!(refused.contains("products[0].tls.key_file") && refused.contains("does not belong"), "{refused}");
    assert_eq!(served_subject(port, "a.test"), "CN=a.test,O=renewed");
}

#[test]
fn check_names_the_certificate_file_at_fault() {
    let dir = TempDir::new();
    let (b, b_key) = cert_for(dir.path(), "b", "b.test", "first");
    let missing = dir.path().join("missing.pem");
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, config(&missing, &b_key, &b, &b)).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate")).arg("check").arg(&config_file).output().expect("check");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("products[0].tls.cert_file"), "{said}");
    assert!(said.contains("products[1].tls.key_file"), "a certificate given as the key: {said}");
}
