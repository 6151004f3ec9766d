//! TLS settings of the gateway listeners, checked with OpenSSL's `s_client` as the peer:
//! the oldest version (`--tls-min-version`), the cipher suites (`--tls-ciphers`), an OCSP
//! response stapled from a file (`--tls-ocsp-file`, made here by `openssl ocsp`), and
//! session resumption.

mod support;

use std::process::{Command, Stdio};
use support::*;
use tokio::io::BufReader;

const CONFIG: &str = "backends: []\nproducts: []\n";

/// `tollgate serve` with a TLS staging listener and `extra` flags: (process, port), or
/// what it said when it would not start.
async fn serve_tls(dir: &TempDir, extra: &[&str]) -> Result<(tokio::process::Child, u16), String> {
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(&config, CONFIG).expect("config");
    let (cert, key) = (dir.path().join("certificate.pem"), dir.path().join("key.pem"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--log", "warn", "serve", "--config"])
        .arg(&config)
        .args([
            "--staging-listen",
            "tls://127.0.0.1:0",
            "--production-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut out = tokio::io::AsyncBufReadExt::lines(BufReader::new(child.stdout.take().expect("stdout")));
    match out.next_line().await {
        Ok(Some(line)) if line.starts_with("tollgate: staging gateway") => {
            let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
            tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
            Ok((child, port))
        }
        _ => {
            let output = child.wait_with_output().await.expect("exit");
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// `openssl s_client` against 127.0.0.1:`port` with `args`: (succeeded, what it printed).
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn versions_ciphers_ocsp_and_resumption_are_what_the_operator_set() {
    let dir = TempDir::new();
    make_cert(dir.path());

    // Defaults: TLS 1.2 and 1.3; a session resumes.
    let (_serve, port) = serve_tls(&dir, &[]).await.expect("starts");
    assert!(s_client(port, &["-tls1_2"]).0, "TLS 1.2 accepted by default");
    let session = dir.path().join("session.pem");
    let session = session.to_str().expect("utf-8");
    let (ok, said) = s_client(port, &["-tls1_2", "-sess_out", session]);
    assert!(ok, "{said}");
    let (ok, said) = s_client(port, &["-tls1_2", "-sess_in", session]);
    assert!(ok && said.contains("Reused, TLSv1.2"), "the session is resumed: {said}");

    // 1.3 only, one cipher suite.
    let (_serve, port) =
        serve_tls(&dir, &["--tls-min-version", "1.3", "--tls-ciphers", "TLS13_CHACHA20_POLY1305_SHA256"])
            .await
            .expect("starts");
    assert!(!s_client(port, &["-tls1_2"]).0, "TLS 1.2 refused");
    let (ok, said) = s_client(port, &["-tls1_3"]);
    assert!(ok && said.contains("TLS_CHACHA20_POLY1305_SHA256"), "{said}");

    // An unknown suite: the listener does not start, and says which are known.
    let err = serve_tls(&dir, &["--tls-ciphers", "TLS_RSA_WITH_RC4_128_MD5"]).await.expect_err("refused");
    assert!(
        err.contains("`TLS_RSA_WITH_RC4_128_MD5` is not one Tollgate offers")
            && err.contains("TLS13_AES_128_GCM_SHA256"),
        "{err}"
    );

    // A list no suite of which fits the certificate's key (make-cert.sh makes RSA keys),
    // and a file that is no OCSP response: refused at start, not at every handshake.
    let err =
        serve_tls(&dir, &["--tls-ciphers", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]).await.expect_err("refused");
    assert!(err.contains("none of the cipher suites can be used with this certificate"), "{err}");
    let junk = dir.path().join("junk.der");
    std::fs::write(&junk, b"not an OCSP response").expect("write");
    let err = serve_tls(&dir, &["--tls-ocsp-file", junk.to_str().expect("utf-8")]).await.expect_err("refused");
    assert!(err.contains("is not a DER OCSP response"), "{err}");

    // OCSP stapling: a response made by `openssl ocsp` for the certificate, as its CA
    // would sign it.
    let script = r#"
set -e
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 4096 -days 2 -extfile ext.cnf -out certificate.pem 2>/dev/null
expiry=$(date -u -d '+2 days' +%y%m%d%H%M%SZ)
printf 'V\t%s\t\t1000\tunknown\t/CN=localhost\n' "$expiry" > index.txt
openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -issuer ca.pem -serial 4096 -respout ocsp.der -ndays 1 2>/dev/null >/dev/null
"#;
    let made = Command::new("bash").arg("-c").arg(script).arg("ocsp").arg(dir.path()).output().expect("bash");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let ocsp = dir.path().join("ocsp.der");
    let (_serve, port) = serve_tls(&dir, &["--tls-ocsp-file", ocsp.to_str().expect("utf-8")]).await.expect("starts");
    let (ok, said) = s_client(port, &["-status"]);
    assert!(ok && said.contains("OCSP Response Status: successful"), "the response is stapled: {said}");
}
