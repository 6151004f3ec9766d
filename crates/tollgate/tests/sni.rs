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

/// `serve` with a TLS staging listener whose default certificate is `cert`.
async fn serve_tls(cert: &Path, key: &Path, config: &Path) -> tollgate::serve::Server {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let mut args = serve_args(&["--tls-cert", &cert, "--tls-key", &key]);
    args.staging_listen = "tls://127.0.0.1:0".into();
    tollgate::serve::Server::start(&args, tollgate::serve::Source::File(config.to_path_buf())).await.expect("serve")
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
    let server = serve_tls(&default, &default_key, &config_file).await;
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

/// A CA (`name`), and a client certificate it issued: (ca, client cert, client key).
fn ca_and_client(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    ca_and_client_with(dir, name, &format!("/CN={name} client"), "")
}

/// As `ca_and_client`, the client's certificate with subject `subj` (openssl's `/K=V`
/// notation) and `ext` added to its v3 extensions.
fn ca_and_client_with(dir: &Path, name: &str, subj: &str, ext: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca-key.pem"));
    let (csr, cert, key) = (format!("{name}.csr"), format!("{name}-client.pem"), format!("{name}-client-key.pem"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", &format!("/CN={name} CA"), "-keyout", &ca_key, "-out", &ca],
    ]
    .concat());
    run(&[&["req", "-new"][..], &ec, &["-subj", subj, "-keyout", &key, "-out", &csr]].concat());
    // A v3 certificate for client authentication (webpki refuses v1 certificates).
    let extensions = format!("{name}.ext");
    std::fs::write(
        dir.join(&extensions),
        format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n{ext}"),
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &extensions,
        "-out",
        &cert,
    ]);
    (dir.join(ca), dir.join(cert), dir.join(key))
}

/// curl to `host` on the TLS listener at `port`, with a client certificate if given:
/// (status, body), or `None` when the TLS handshake failed.
fn curl(port: u16, host: &str, client: Option<(&Path, &Path)>) -> Option<(u16, String)> {
    curl_with(port, host, client, &[])
}

fn curl_with(port: u16, host: &str, client: Option<(&Path, &Path)>, extra: &[&str]) -> Option<(u16, String)> {
    curl_at(port, host, "/?user_key=k", client, extra)
}

fn curl_at(
    port: u16,
    host: &str,
    target: &str,
    client: Option<(&Path, &Path)>,
    extra: &[&str],
) -> Option<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(extra);
    cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}", "--resolve", &format!("{host}:{port}:127.0.0.1")]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(format!("https://{host}:{port}{target}")).output().expect("curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    Some((status.parse().expect("status"), body.to_owned()))
}

// Multi-threaded: curl runs as a blocking call while the gateway serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_that_requires_client_certificates_gets_only_its_own_authorities() {
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let (ca1, client1, client1_key) = ca_and_client(dir.path(), "one");
    let (ca2, client2, client2_key) = ca_and_client(dir.path(), "two");
    let (_, stranger, stranger_key) = ca_and_client(dir.path(), "stranger");
    let product = |name: &str, tls: &str| {
        format!(
            "  - system_name: {name}\n    staging_public_base_url: https://{name}.test\n    production_public_base_url: https://{name}-production.test\n    backend_usages: [ {{ backend: b, path: / }} ]\n    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]\n    policy_chain: [ {{ name: tollgate, enabled: false }} ]\n{tls}"
        )
    };
    let yaml = format!(
        "backends: [ {{ system_name: b, private_base_url: \"http://127.0.0.1:9\" }} ]\nproducts:\n{}{}{}",
        product(
            "secure",
            &format!("    tls: {{ client_ca_file: {}, client_certificates: required }}\n", ca1.display())
        ),
        product("other", &format!("    tls: {{ client_ca_file: {} }}\n", ca2.display())),
        product("open", ""),
    );
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, yaml).expect("config");
    let server = serve_tls(&default, &default_key, &config_file).await;
    let port = server.staging.port();
    // Past the certificate check, the request reaches for the (absent) backend: 502.
    let passed = |r: Option<(u16, String)>| {
        r.is_some_and(|(status, body)| status == 502 && body.contains("upstream_unavailable"))
    };

    let (status, body) = curl(port, "secure.test", None).expect("handshake without a certificate");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"client_certificate_required\""), "{body}");
    assert!(passed(curl(port, "secure.test", Some((&client1, &client1_key)))), "its own authority's certificate");
    let (status, body) = curl(port, "secure.test", Some((&client2, &client2_key))).expect("handshake");
    assert_eq!(status, 403, "another product's authority: {body}");
    assert!(body.contains("\"client_certificate_refused\""), "{body}");
    assert_eq!(
        curl(port, "secure.test", Some((&stranger, &stranger_key))),
        None,
        "no authority of the listener: the handshake fails"
    );

    assert!(passed(curl(port, "other.test", None)), "optional: no certificate is fine");
    assert!(passed(curl(port, "other.test", Some((&client2, &client2_key)))));
    assert!(passed(curl(port, "open.test", None)), "a product without mutual TLS");

    // A connection opened for one product's name carries no request for another.
    let (status, body) =
        curl_with(port, "secure.test", Some((&client1, &client1_key)), &["-H", "Host: open.test"]).expect("handshake");
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("\"misdirected_request\""), "{body}");
}

/// `openssl x509 -fingerprint -sha256` of `cert`, as it prints it (`AB:CD:…`).
fn fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().rsplit('=').next().expect("fingerprint").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_identified_by_its_client_certificate() {
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let (ca1, client1, client1_key) = ca_and_client(dir.path(), "one");
    let (ca2, client2, client2_key) = ca_and_client(dir.path(), "two");
    // One product trusting both authorities; only client1 is registered.
    let both = dir.path().join("both-ca.pem");
    let pems = std::fs::read_to_string(&ca1).expect("ca1") + &std::fs::read_to_string(&ca2).expect("ca2");
    std::fs::write(&both, pems).expect("both");
    let yaml = format!(
        r#"
backends: [ {{ system_name: b, private_base_url: "http://127.0.0.1:9" }} ]
products:
  - system_name: partners
    staging_public_base_url: https://partners.test
    production_public_base_url: https://partners-production.test
    authentication: {{ mode: client_certificate }}
    tls: {{ client_ca_file: {both}, client_certificates: required }}
    backend_usages: [ {{ backend: b, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: shop, product: partners, plan: basic, client_certificates: [ "{fp}" ] }} ]
"#,
        both = both.display(),
        fp = fingerprint(&client1),
    );
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, yaml).expect("config");
    let server = serve_tls(&default, &default_key, &config_file).await;
    let port = server.staging.port();

    let (status, body) = curl(port, "partners.test", Some((&client1, &client1_key))).expect("handshake");
    assert_eq!(status, 502, "authenticated by its certificate, on to the (absent) backend: {body}");
    assert!(body.contains("upstream_unavailable"), "{body}");
    let (status, body) = curl(port, "partners.test", Some((&client2, &client2_key))).expect("handshake");
    assert_eq!(status, 403, "a verified certificate no application holds: {body}");
    assert!(body.contains("\"auth_failed\""), "{body}");
    let (status, body) = curl(port, "partners.test", None).expect("handshake");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"client_certificate_required\""), "{body}");
}

/// `openssl x509 -noout -FIELD` of `cert`: the value after `=`.
fn openssl_field(cert: &Path, field: &str) -> String {
    let out = Command::new("openssl").args(["x509", "-noout", field, "-in"]).arg(cert).output().expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().split_once('=').expect("field=value").1.to_owned()
}

// The example of docs/policies.md ("client_certificate.*" templates): the certificate's
// names reach the backend in headers, and a condition on its subject guards a path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_fields_fill_templates_and_conditions() {
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let sans = "subjectAltName=DNS:client.example,URI:spiffe://example/ops,email:ops@example.com,IP:10.0.0.1\n";
    let (ca_ops, ops, ops_key) = ca_and_client_with(dir.path(), "ops", "/O=Example, Inc./OU=ops/CN=ops client", sans);
    let (ca_dev, dev, dev_key) = ca_and_client_with(dir.path(), "dev", "/O=Example, Inc./OU=dev/CN=dev client", "");
    // An organizational unit whose name holds `,OU=ops` (escaped in the subject).
    let (ca_sneaky, sneaky, sneaky_key) =
        ca_and_client_with(dir.path(), "sneaky", "/O=Example/OU=dev,OU=ops/CN=sneaky", "");
    let both = dir.path().join("both-ca.pem");
    let pems =
        [&ca_ops, &ca_dev, &ca_sneaky].iter().map(|p| std::fs::read_to_string(p).expect("ca")).collect::<String>();
    std::fs::write(&both, pems).expect("both");
    let backend = http_backend().await;
    let yaml = format!(
        r#"
backends: [ {{ system_name: b, private_base_url: "http://{backend}" }} ]
products:
  - system_name: secure
    staging_public_base_url: https://secure.test
    production_public_base_url: https://secure-production.test
    tls: {{ client_ca_file: {both} }}
    backend_usages: [ {{ backend: b, path: / }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
    policy_chain:
      - name: headers
        configuration:
          request:
            - {{ op: set, header: X-Client-Subject, value: "{{{{ client_certificate.subject }}}}" }}
            - {{ op: set, header: X-Client-Fingerprint, value: "{{{{ client_certificate.fingerprint }}}}" }}
            - {{ op: set, header: X-Client-Rest, value: "{{{{ client_certificate.common_name }}}}|{{{{ client_certificate.issuer }}}}|{{{{ client_certificate.serial }}}}|{{{{ client_certificate.sans }}}}" }}
            - {{ op: set, header: X-User, value: "{{{{ query['u'] }}}}" }}
      - name: ip_check
        configuration:
          check_type: deny
          ips: ["0.0.0.0/0", "::/0"]
          error_message: "an ops certificate is required"
          condition:
            operations:
              - {{ left: "{{{{ path }}}}", op: matches, right: "^/admin/" }}
              - {{ left: "{{{{ client_certificate.subject }}}}", op: not_matches, right: '(^|[^\\],)OU=ops(,|$)' }}
      - name: tollgate
accounts:
  - name: acme
    applications: [ {{ name: shop, product: secure, plan: basic, user_key: k }} ]
"#,
        both = both.display(),
    );
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, yaml).expect("config");
    let server = serve_tls(&default, &default_key, &config_file).await;
    let port = server.staging.port();
    let header = |body: &str, name: &str| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("json: {body}"));
        v["headers"][name].as_str().unwrap_or_default().to_owned()
    };

    let (status, body) = curl_at(port, "secure.test", "/items?user_key=k", Some((&ops, &ops_key)), &[]).expect("tls");
    assert_eq!(status, 200, "{body}");
    // RFC 4514: most specific first, the comma in the organization escaped.
    assert_eq!(header(&body, "x-client-subject"), "CN=ops client,OU=ops,O=Example\\, Inc.");
    assert_eq!(header(&body, "x-client-fingerprint"), fingerprint(&ops).replace(':', "").to_lowercase());
    let serial = openssl_field(&ops, "-serial").to_lowercase();
    assert_eq!(
        header(&body, "x-client-rest"),
        format!(
            "ops client|CN=ops CA|{serial}|DNS:client.example, URI:spiffe://example/ops, email:ops@example.com, IP Address:10.0.0.1"
        )
    );
    let (status, body) = curl_at(port, "secure.test", "/admin/x?user_key=k", Some((&ops, &ops_key)), &[]).expect("tls");
    assert_eq!(status, 200, "an ops certificate reaches /admin/: {body}");

    let (status, body) = curl_at(port, "secure.test", "/admin/x?user_key=k", Some((&dev, &dev_key)), &[]).expect("tls");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"ip_denied\"") && body.contains("an ops certificate is required"), "{body}");
    let (status, body) =
        curl_at(port, "secure.test", "/admin/x?user_key=k", Some((&sneaky, &sneaky_key)), &[]).expect("tls");
    assert_eq!(status, 403, "an escaped `,OU=ops` inside another value is not OU=ops: {body}");
    let (status, body) = curl_at(port, "secure.test", "/items?user_key=k", Some((&dev, &dev_key)), &[]).expect("tls");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&body, "x-client-subject"), "CN=dev client,OU=dev,O=Example\\, Inc.");
    let (status, body) = curl_at(port, "secure.test", "/admin/x?user_key=k", None, &[]).expect("tls");
    assert_eq!(status, 403, "no certificate, no /admin/: {body}");
    let (status, body) = curl_at(port, "secure.test", "/items?user_key=k", None, &[]).expect("tls");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&body, "x-client-subject"), "", "no certificate: the variables are empty");
    // A forged header stays out even when the value cannot be rendered (a line break).
    let forged = ["-H", "X-User: admin", "-H", "X-Client-Subject: OU=ops,CN=admin"];
    let (status, body) = curl_at(port, "secure.test", "/items?user_key=k&u=%0d%0a", None, &forged).expect("tls");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(v["headers"].get("x-user").is_none(), "`set` removed the client's own value: {body}");
    assert_eq!(header(&body, "x-client-subject"), "", "{body}");
}

/// An HS256 JWT of `claims` under `secret`.
fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("{input}.{}", b64(ring::hmac::sign(&key, input.as_bytes()).as_ref()))
}

/// RFC 8705 §3.1's `x5t#S256` of `cert`: base64url of the SHA-256 openssl prints.
fn x5t_s256(cert: &Path) -> String {
    use base64::Engine as _;
    let hex = fingerprint(cert).replace(':', "");
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// RFC 8705 (OAuth 2.0 mutual TLS): a token bound to one client certificate passes only
// with that certificate; `require_certificate_binding` refuses unbound tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_token_passes_only_with_its_certificate() {
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let (ca, one, one_key) = ca_and_client(dir.path(), "one");
    let (ca2, two, two_key) = ca_and_client(dir.path(), "two");
    // Both authorities: the second client's certificate verifies, its thumbprint differs.
    let ca = {
        let both = dir.path().join("both-ca.pem");
        let pems = std::fs::read_to_string(&ca).expect("ca") + &std::fs::read_to_string(&ca2).expect("ca2");
        std::fs::write(&both, pems).expect("both");
        both
    };
    let product = |name: &str, required: bool| {
        format!(
            "  - system_name: {name}\n    staging_public_base_url: https://{name}.test\n    production_public_base_url: https://{name}-production.test\n    tls: {{ client_ca_file: {ca} }}\n    backend_usages: [ {{ backend: b, path: / }} ]\n    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]\n    policy_chain:\n      - {{ name: jwt, configuration: {{ secret: \"{SECRET}\", require_certificate_binding: {required} }} }}\n      - {{ name: tollgate, enabled: false }}\n",
            ca = ca.display()
        )
    };
    let yaml = format!(
        "backends: [ {{ system_name: b, private_base_url: \"http://127.0.0.1:9\" }} ]\nproducts:\n{}{}",
        product("bound", false),
        product("strict", true)
    );
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, yaml).expect("config");
    let server = serve_tls(&default, &default_key, &config_file).await;
    let port = server.staging.port();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_secs() + 600;
    let bound = hs256(SECRET, &serde_json::json!({ "sub": "c", "exp": exp, "cnf": { "x5t#S256": x5t_s256(&one) } }));
    let unbound = hs256(SECRET, &serde_json::json!({ "sub": "c", "exp": exp }));
    let call = |host: &str, token: &str, client: Option<(&Path, &Path)>| {
        let auth = format!("Authorization: Bearer {token}");
        // `-D -`: the response's head before its body.
        let args = if token.is_empty() { vec!["-D", "-"] } else { vec!["-H", &auth, "-D", "-"] };
        curl_at(port, host, "/", client, &args).expect("handshake")
    };
    // Past the token, the request reaches for the (absent) backend: 502.
    let (status, body) = call("bound.test", &bound, Some((&one, &one_key)));
    assert_eq!(status, 502, "its certificate: {body}");
    let (status, body) = call("bound.test", &bound, Some((&two, &two_key)));
    assert_eq!(status, 401, "another certificate of the same authority: {body}");
    assert!(body.contains("\"jwt_certificate_mismatch\"") && body.contains("bound to another"), "{body}");
    assert!(body.to_lowercase().contains("www-authenticate: bearer error=\"invalid_token\""), "RFC 6750 §3: {body}");
    let (status, body) = call("bound.test", &bound, None);
    assert_eq!(status, 401, "no certificate: {body}");
    assert!(body.contains("presented none this API verifies"), "{body}");
    let (status, body) = call("bound.test", "", None);
    assert_eq!(status, 401, "no token: {body}");
    assert!(body.to_lowercase().contains("www-authenticate: bearer\r\n"), "RFC 6750 §3: {body}");
    let (status, body) = call("bound.test", &unbound, None);
    assert_eq!(status, 502, "an unbound token where binding is not required: {body}");
    // Bound some way this API cannot check (a DPoP key): refused, not ignored.
    let dpop = hs256(
        SECRET,
        &serde_json::json!({ "sub": "c", "exp": exp, "cnf": { "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" } }),
    );
    let (status, body) = call("bound.test", &dpop, Some((&one, &one_key)));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("confirmation method this API does not check"), "{body}");

    let (status, body) = call("strict.test", &unbound, Some((&one, &one_key)));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not bound to a client certificate"), "{body}");
    let (status, body) = call("strict.test", &bound, Some((&one, &one_key)));
    assert_eq!(status, 502, "{body}");
}

// Store mode: a product's certificate, key and client authorities given inline through
// the admin API (`cert_pem`, `key_pem`, `client_ca_pem`), so that every node has them;
// a key of another certificate is refused naming `key_pem`; the audit log keeps no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_products_certificate_and_authorities_are_given_inline_through_the_admin_api() {
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let (cert, key) = cert_for(dir.path(), "inline", "inline.test", "Inline Org");
    let (_, other_key) = cert_for(dir.path(), "other", "other.test", "Other Org");
    let (ca, client, client_key) = ca_and_client(dir.path(), "partner");
    let read = |p: &Path| std::fs::read_to_string(p).expect("pem");
    let (default, default_key) = (default.display().to_string(), default_key.display().to_string());
    let mut args = serve_args(&["--tls-cert", &default, "--tls-key", &default_key]);
    args.staging_listen = "tls://127.0.0.1:0".into();
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let server =
        tollgate::serve::Server::start(&args, tollgate::serve::Source::Store(url)).await.expect("serve in store mode");
    let port = server.staging.port();
    let backend = serde_json::json!({ "system_name": "b", "private_base_url": "http://127.0.0.1:9" });
    assert_eq!(api(&server, "POST", "/backends", Some(backend)).await.0, http::StatusCode::CREATED);
    let product = |key_pem: &str| {
        serde_json::json!({
            "system_name": "inline",
            "staging_public_base_url": "https://inline.test",
            "production_public_base_url": "https://inline-production.test",
            "tls": { "cert_pem": read(&cert), "key_pem": key_pem, "client_ca_pem": read(&ca), "client_certificates": "required" },
            "backend_usages": [ { "backend": "b", "path": "/" } ],
            "mapping_rules": [ { "http_method": "ANY", "pattern": "/", "metric": "hits" } ],
            "policy_chain": [ { "name": "tollgate", "enabled": false } ],
        })
    };
    let (status, body) = api(&server, "POST", "/products", Some(product(&read(&other_key)))).await;
    assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["field"].as_str().is_some_and(|f| f.ends_with("tls.key_pem")), "{body}");
    let (status, body) = api(&server, "POST", "/products", Some(product(&read(&key)))).await;
    assert_eq!(status, http::StatusCode::CREATED, "{body}");
    let (status, body) = api(&server, "POST", "/products/inline/deploy", None).await;
    assert_eq!(status, http::StatusCode::CREATED, "{body}");

    let subject = tokio::task::spawn_blocking(move || served_subject(port, "inline.test")).await.expect("s_client");
    assert!(subject.contains("InlineOrg"), "the inline certificate is served: {subject}");
    let (status, body) = curl(port, "inline.test", None).expect("handshake");
    assert_eq!(status, 403, "the inline authorities require a certificate: {body}");
    assert!(curl(port, "inline.test", Some((&client, &client_key))).is_some_and(|(s, _)| s == 502));

    let (_, audit) = api(&server, "GET", "/audit?limit=10", None).await;
    assert!(!audit.to_string().contains("PRIVATE KEY-----"), "no private key in the audit log: {audit}");
    // A token that may only read sees the certificate, not the key.
    let (_, made) = api(&server, "POST", "/tokens", Some(serde_json::json!({ "name": "ro", "read_only": true }))).await;
    let read_only = made["token"].as_str().expect("token").to_owned();
    let (status, seen) = api_as(&server, &read_only, "GET", "/products/inline", None).await;
    assert_eq!(status, http::StatusCode::OK, "{seen}");
    assert_eq!(seen["tls"]["key_pem"], "[redacted]", "{seen}");
    assert!(seen["tls"]["cert_pem"].as_str().is_some_and(|c| c.contains("BEGIN CERTIFICATE")), "{seen}");
    let (_, export) = api_as(&server, &read_only, "GET", "/config", None).await;
    assert!(!export.to_string().contains("PRIVATE KEY-----"), "{export}");
    let (_, full) = api(&server, "GET", "/products/inline", None).await;
    assert!(full["tls"]["key_pem"].as_str().is_some_and(|k| k.contains("PRIVATE KEY-----")), "an admin token reads it");
    server.shutdown().await;
}

// A product's OCSP response (`tls.ocsp_file`, made by `openssl ocsp` as its authority
// would sign it) is stapled to the handshakes that serve its certificate — not to
// another product's; a file that is no OCSP response is refused naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_products_ocsp_response_is_stapled_to_its_handshakes() {
    let dir = TempDir::new();
    let (default, default_key) = make_cert(dir.path());
    let script = r#"
set -e
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout stapled-key.pem -out stapled.csr -subj /CN=stapled.test 2>/dev/null
printf 'subjectAltName=DNS:stapled.test\n' > stapled.cnf
openssl x509 -req -in stapled.csr -CA ca.pem -CAkey ca.key -set_serial 4096 -days 2 -extfile stapled.cnf -out stapled.pem 2>/dev/null
expiry=$(date -u -d '+2 days' +%y%m%d%H%M%SZ)
printf 'V\t%s\t\t1000\tunknown\t/CN=stapled.test\n' "$expiry" > index.txt
openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -issuer ca.pem -serial 4096 -respout ocsp.der -ndays 1 2>/dev/null >/dev/null
"#;
    let made = Command::new("bash").arg("-c").arg(script).arg("ocsp").arg(dir.path()).output().expect("bash");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (plain, plain_key) = cert_for(dir.path(), "plain", "plain.test", "Plain Org");
    let yaml = |ocsp: &str| {
        format!(
            "backends: [ {{ system_name: b, private_base_url: \"http://127.0.0.1:9\" }} ]\nproducts:\n  - system_name: stapled\n    staging_public_base_url: https://stapled.test\n    production_public_base_url: https://stapled-production.test\n    tls: {{ cert_file: stapled.pem, key_file: stapled-key.pem, ocsp_file: {ocsp} }}\n    backend_usages: [ {{ backend: b, path: / }} ]\n    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]\n  - system_name: plain\n    staging_public_base_url: https://plain.test\n    production_public_base_url: https://plain-production.test\n    tls: {{ cert_file: {}, key_file: {} }}\n    backend_usages: [ {{ backend: b, path: / }} ]\n    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]\n",
            plain.display(),
            plain_key.display()
        )
    };
    // Relative to the configuration file, like the certificate beside it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, yaml("ca.pem")).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate")).arg("check").arg(&bad).output().expect("check");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("products[0].tls.ocsp_file"), "{said}");
    assert!(said.contains("not a DER OCSP response"), "{said}");

    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, yaml("ocsp.der")).expect("config");
    let server = serve_tls(&default, &default_key, &config_file).await;
    let port = server.staging.port();
    let status = move |name: &'static str| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name, "-status"])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stapled = tokio::task::spawn_blocking(move || status("stapled.test")).await.expect("s_client");
    assert!(stapled.contains("OCSP Response Status: successful"), "stapled: {stapled}");
    let plain = tokio::task::spawn_blocking(move || status("plain.test")).await.expect("s_client");
    assert!(plain.contains("OCSP response: no response sent"), "another product's: {plain}");
}
