//! The command line: `check` names every error with its path and a fix; `serve` refuses
//! bad flags and bad files with a clear message.

mod support;

use std::process::{Command, Output};
use support::TempDir;

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate")).args(args).output().expect("run tollgate")
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn check_accepts_the_example() {
    let example = support::example_dir().join("tollgate.yaml");
    // The example trusts a certificate made by make-cert.sh; make one beside a copy.
    let dir = TempDir::new();
    support::make_cert(&dir.path().join("ssl-cert"));
    let copy = write(&dir, "tollgate.yaml", &std::fs::read_to_string(example).expect("read example"));
    let out = tollgate(&["check", "-f", &copy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 backend(s), 1 product(s), 1 application(s))"));
}

#[test]
fn printing_to_a_closed_pipe_ends_quietly_as_sigpipe_would() {
    // `tollgate check … | head -0`: the reader is gone before anything is printed.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let dir = TempDir::new();
    let file = write(&dir, "empty.yaml", "backends: []\nproducts: []\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-f", &file])
        .stdout(writer)
        .output()
        .expect("run tollgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_reports_every_error_with_path_and_fix() {
    let dir = TempDir::new();
    let file = write(
        &dir,
        "bad.yaml",
        r#"
backends:
  - system_name: echo
    private_base_url: ftp://127.0.0.1:21
  - system_name: api
    private_base_url: http://127.0.0.1:9000
    tls: { ca_fil: x.pem }
products:
  - system_name: chat
    staging_public_base_url: http://chat-staging.localhost
    production_public_base_url: http://chat.localhost
    backend_usages: [ { backend: ecko, path: / } ]
    metrics: [ { system_name: messages } ]
    mapping_rules:
      - { http_method: GET, pattern: /, metric: messages }
      - { http_method: GTE, pattern: /rooms, metric: hits }
      - { http_method: GET, pattern: "rooms/{id", metric: hits }
      - { http_method: GET, pattern: /x, metric: mesages }
    application_plans:
      - system_name: basic
        limits: [ { metric: hits, period: minute, value: 10 }, { metric: hits, period: minute, value: 5 } ]
accounts:
  - name: acme
    applications:
      - { name: a, product: chat, plan: basc, user_key: k }
      - { name: b, product: chat, plan: basic }
"#,
    );
    let out = tollgate(&["check", "-f", &file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Structural errors first (one per item): the misspelt key in backends[1].
    assert!(err.contains("backends[1].tls.ca_fil: unknown key (did you mean `ca_file`?)"), "{err}");

    let file = write(
        &dir,
        "bad2.yaml",
        &std::fs::read_to_string(&file).expect("read").replace("ca_fil: x.pem", "verify: false"),
    );
    let out = tollgate(&["check", "-f", &file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "backends[0].private_base_url: scheme `ftp` is not allowed here",
        "products[0].backend_usages[0].backend: no backend named `ecko` (did you mean `echo`?)",
        "products[0].mapping_rules[1].http_method: `GTE` is not an HTTP method (did you mean `GET`?)",
        "products[0].mapping_rules[2].pattern: a pattern must start with `/`",
        "products[0].mapping_rules[3].metric: no metric or method named `mesages` (did you mean `messages`?)",
        "products[0].application_plans[0].limits[1].period: `hits` already has a minute limit in this plan",
        "accounts[0].applications[0].plan: no application plan named `basc` (did you mean `basic`?)",
        "accounts[0].applications[1].user_key: product `chat` authenticates with user_key (add `user_key:",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("8 error(s)"), "{err}");
}

#[test]
fn check_reports_compile_errors_unknown_policies_and_unreadable_ca_files() {
    let dir = TempDir::new();
    let file = write(
        &dir,
        "bad.yaml",
        r#"
backends:
  - { system_name: echo, private_base_url: "wss://127.0.0.1:8443", tls: { ca_file: missing.pem } }
  - { system_name: inline, private_base_url: "wss://127.0.0.1:8443", tls: { ca_pem: "not a certificate" } }
products:
  - system_name: chat
    staging_public_base_url: http://s.localhost
    production_public_base_url: http://p.localhost
    backend_usages: [ { backend: echo, path: / } ]
    mapping_rules: [ { http_method: GET, pattern: /, metric: hits } ]
    policy_chain:
      - { name: websockets }
      - { name: headers, configuration: { request: [ { op: set, header: "bad header", value: x } ] } }
      - { name: cors, configuration: { allow_origns: ["*"] } }
"#,
    );
    let out = tollgate(&["check", "-f", &file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "backends[0].tls.ca_file: cannot read",
        "missing.pem",
        "backends[1].tls.ca_pem: ca_pem holds no certificate",
        "products[0].policy_chain[0].name: no policy named `websockets` (did you mean `websocket`?)",
        "products[0].policy_chain[1].configuration.request[0].header: `bad header` is not a valid header name",
        "products[0].policy_chain[2].configuration.allow_origns: unknown key (did you mean `allow_origins`?)",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let both = write(
        &dir,
        "both.yaml",
        r#"
backends:
  - { system_name: both, private_base_url: "wss://127.0.0.1:8443", tls: { ca_file: a.pem, ca_pem: "x" } }
"#,
    );
    let err = String::from_utf8_lossy(&tollgate(&["check", "-f", &both]).stderr).into_owned();
    assert!(err.contains("backends[0].tls.ca_pem: both `ca_file` and `ca_pem` are set (keep one of them)"), "{err}");
}

#[test]
fn serve_refuses_bad_setups_clearly() {
    let out = tollgate(&[
        "serve",
        "--store",
        "mysql://db/x",
        "--admin-listen",
        "127.0.0.1:0",
        "--staging-listen",
        "127.0.0.1:0",
        "--production-listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use sqlite://PATH or postgres://USER@HOST:PORT/DB"), "{err}");

    let dir = TempDir::new();
    let file = write(&dir, "bad.yaml", "products: [ { system_name: x } ]\n");
    let out = tollgate(&[
        "serve",
        "--config",
        &file,
        "--staging-listen",
        "127.0.0.1:0",
        "--production-listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("products[0].staging_public_base_url: is required"),
        "{err}"
    );

    let file = write(&dir, "empty.yaml", "");
    let out = tollgate(&[
        "serve",
        "--config",
        &file,
        "--staging-listen",
        "tls://127.0.0.1:0",
        "--production-listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a tls:// listener needs --tls-cert FILE and --tls-key FILE")
    );

    let out = tollgate(&["serve", "--config", &file, "--staging-listen", "nonsense"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--staging-listen `nonsense`: write HOST:PORT"));

    // A listener that could serve no connection at all is a mistake, not a setting.
    let out = tollgate(&["serve", "--config", &file, "--max-connections", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-connections") && err.contains("0 is not in 1..=10000000"), "{err}");

    // More fields than the `http` crate's header map holds (24,576) would fail in the
    // parser instead of answering 431: the flag stops at 10,000.
    let out = tollgate(&["serve", "--config", &file, "--max-header-count", "24576"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("24576 is not in 1..=10000"), "{err}");

    // Quota leasing shares Redis counters: with counters in memory it has no meaning
    // (refused before any listener is bound).
    let out = tollgate(&["serve", "--config", &file, "--counters-lease", "10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--counters-lease") && err.contains("set --counters redis://"), "{err}");
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = TempDir::new();
    let file = write(&dir, "t.yaml", "backends: []\nproducts: []\n");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--log-format", "json", "serve", "--config", &file])
        .args(support::PORT0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // Ready once the admin line is printed; then a reload logs one line.
    while let Some(line) = out.next_line().await.expect("stdout") {
        if line.starts_with("tollgate: admin") {
            break;
        }
    }
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let line = err.next_line().await.expect("stderr").expect("a log line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!((v["level"].as_str(), v["message"].as_str()), (Some("INFO"), Some("configuration reloaded")), "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
}

#[test]
fn completions_and_a_man_page_come_from_the_cli_itself() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tollgate(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        // (fish spells long options `-l NAME`.)
        for word in ["serve", "gateway", "counters-failure-mode", "usage"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = tollgate(&["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell is refused");
    let man = tollgate(&["man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{}", &page[..page.len().min(200)]);
    assert!(
        page.contains("tollgate") && page.contains("gateway") && page.contains("serve"),
        "the page lists the commands"
    );
}
