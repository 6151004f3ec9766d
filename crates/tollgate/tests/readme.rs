//! The README's quick start and the example's walkthrough, run as a newcomer types them.
//!
//! Each step reads its command from the document — the one line of a ```sh block that
//! starts with the words the step names — and runs it as written with `sh -c`, from
//! the folder the document says. The commands use the documents' fixed ports (8080,
//! 8081, 8090, 8443, 8444), so they run in a network namespace of this test's own
//! (`unshare --net --map-root-user`: loopback only, nothing else listening), whatever
//! else runs on the machine. A document whose command stops working fails here, in
//! CI, instead of failing a user.
//!
//! Nothing waits on time: every step waits for a line a program prints or for a
//! program to end (each bounded, so a hang fails instead of blocking CI).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{TempDir, repo_root};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long one step may take at most: a release build from scratch on a loaded
/// two-core machine is the slowest.
const STEP: Duration = Duration::from_secs(1500);

/// A Markdown document's shell commands: the lines of its ```sh blocks.
struct Doc {
    name: &'static str,
    commands: Vec<String>,
}

impl Doc {
    fn read(name: &'static str) -> Doc {
        let text = std::fs::read_to_string(repo_root().join(name)).expect("read the document");
        let mut commands = Vec::new();
        let mut in_sh = false;
        for line in text.lines() {
            match line.trim() {
                "```sh" => in_sh = true,
                "```" => in_sh = false,
                l if in_sh && !l.is_empty() => commands.push(without_comment(l)),
                _ => {}
            }
        }
        Doc { name, commands }
    }

    /// The command of the document that is `prefix`, or else the one that starts with it.
    fn command(&self, prefix: &str) -> String {
        if let Some(exact) = self.commands.iter().find(|c| *c == prefix) {
            return exact.clone();
        }
        let found: Vec<&String> = self.commands.iter().filter(|c| c.starts_with(prefix)).collect();
        match found.as_slice() {
            [one] => one.to_string(),
            [] => panic!("{} has no command starting with `{prefix}`: it changed; update it or this test", self.name),
            _ => panic!("{} has several commands starting with `{prefix}`: {found:?}", self.name),
        }
    }
}

/// A shell line without its trailing `# comment` (a `#` outside quotes, after a space).
fn without_comment(line: &str) -> String {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].trim_end().to_string(),
            _ => {}
        }
        prev = c;
    }
    line.trim_end().to_string()
}

/// A network namespace with loopback up, held open by a process of its own.
struct Netns {
    holder: std::process::Child,
}

impl Netns {
    fn new() -> Netns {
        let mut holder = std::process::Command::new("unshare")
            .args(["--net", "--map-root-user", "sh", "-c", "ip link set lo up && echo up && exec cat"])
            .env("PATH", format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) starts a network namespace");
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
        assert_eq!(line.trim(), "up", "the namespace's loopback did not come up (unprivileged user namespaces off?)");
        Netns { holder }
    }

    /// Runs `line` with `sh -c` in `dir`, inside the namespace, in a process group of
    /// its own (so that stopping it stops what it started, such as the program
    /// `cargo run` runs).
    fn sh(&self, line: &str, dir: &Path) -> Running {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.holder.id().to_string(), "--user", "--net", "--preserve-credentials"])
            .args(["sh", "-c", line])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The release build `cargo run --release` makes is what takes this test
            // minutes: without cross-crate LTO and with more codegen units it takes
            // about half as long. The commands stay as written; what they build is
            // the same program, optimised a little less.
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("nsenter");
        // Standard error is collected (a build prints there) and shown if a step fails.
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&l);
                log.push('\n');
            }
        });
        let out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Running { line: line.to_string(), child, out, log, seen: String::new() }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A command running in the namespace.
struct Running {
    line: String,
    child: Child,
    out: tokio::io::Lines<BufReader<ChildStdout>>,
    log: Arc<Mutex<String>>,
    seen: String,
}

impl Running {
    fn failure(&self, why: &str) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let tail: String =
            log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("`{}`: {why}\n--- stdout:\n{}--- stderr (end):\n{tail}", self.line, self.seen)
    }

    /// Reads standard output up to the first line containing `text`; returns it.
    async fn line_with(&mut self, text: &str) -> String {
        let found = tokio::time::timeout(STEP, async {
            while let Ok(Some(l)) = self.out.next_line().await {
                self.seen.push_str(&l);
                self.seen.push('\n');
                if l.contains(text) {
                    return Some(l);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(l)) => l,
            Ok(None) => panic!("{}", self.failure(&format!("ended without printing `{text}`"))),
            Err(_) => panic!("{}", self.failure(&format!("printed no `{text}` within {STEP:?}"))),
        }
    }

    /// Sends `input` on standard input, closes it, and waits for the command to end;
    /// returns its standard output.
    async fn finish(mut self, input: &str) -> String {
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).await.expect("write stdin");
        drop(stdin);
        let status = tokio::time::timeout(STEP, async {
            while let Ok(Some(l)) = self.out.next_line().await {
                self.seen.push_str(&l);
                self.seen.push('\n');
            }
            self.child.wait().await
        })
        .await;
        match status {
            Ok(Ok(s)) if s.success() => self.seen.clone(),
            Ok(Ok(s)) => panic!("{}", self.failure(&format!("ended with {s}"))),
            Ok(Err(e)) => panic!("{}", self.failure(&format!("could not be waited for: {e}"))),
            Err(_) => panic!("{}", self.failure(&format!("did not end within {STEP:?}"))),
        }
    }

    /// Stops the command and everything it started, as Ctrl-C in its terminal would,
    /// and waits for it to end (so its ports are free again).
    async fn interrupt(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-INT", "--", &format!("-{pid}")]).status();
        }
        let _ = tokio::time::timeout(STEP, self.child.wait()).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The whole group: `cargo run`'s child too.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

/// Runs `line` to its end in `dir` with `input` on standard input; its output.
async fn run(ns: &Netns, line: &str, dir: &Path, input: &str) -> String {
    ns.sh(line, dir).finish(input).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_reaches_the_demo_backend() {
    let readme = Doc::read("README.md");
    let root = repo_root();
    let ns = Netns::new();

    // The main command, verbatim; it prints the commands to try it with a fresh key.
    let mut demo = ns.sh(&readme.command("cargo run --release -- serve --demo"), &root);
    let ws = demo.line_with("cargo run --release -- ws '").await.trim().to_string();
    let curl_hint = demo.line_with("curl '").await;
    let key = ws.split("user_key=").nth(1).and_then(|k| k.split('\'').next()).expect("a key").to_string();

    // The README shows the same commands, with an example key.
    let shown = readme.command("cargo run --release -- ws ");
    let example_key = shown.split("user_key=").nth(1).and_then(|k| k.split('\'').next()).expect("README's key");
    assert_eq!(shown.replace(example_key, &key), ws, "the README's ws command is not what the demo prints");
    let shown_curl = readme.command("curl ");
    assert_eq!(shown_curl.replace(example_key, &key), curl_hint.trim(), "the README's curl command");

    // Typing `hello` gets the backend's answer through the gateway.
    let out = run(&ns, &ws, &root, "hello\n").await;
    assert!(out.lines().any(|l| l == "reply from server : hello"), "{out}");

    // Plain HTTP reaches the same backend.
    let out = run(&ns, curl_hint.trim(), &root, "").await;
    let echoed: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!((echoed["backend"].as_str(), echoed["method"].as_str()), (Some("tollgate demo"), Some("GET")), "{out}");
    demo.interrupt().await;

    // The console: `serve` with its SQLite store (in a folder of the test's own), the
    // console URL and a first admin token printed; the console answers there.
    let scratch = Scratch::new();
    let mut serve = ns.sh(&readme.command("cargo run --release -- serve"), scratch.0.path());
    let token = serve.line_with("created the first admin token").await;
    let token = token.rsplit(' ').next().expect("token").to_string();
    let console = serve.line_with("tollgate: console").await;
    let url = console.split_whitespace().find(|w| w.starts_with("http://")).expect("the console's URL").to_string();
    assert_eq!(url, "http://127.0.0.1:8090/", "the README says where the console is: {console}");
    let out = run(&ns, &format!("curl -s -o /dev/null -w '%{{http_code}}' {url}login"), &root, "").await;
    assert_eq!(out.trim(), "200", "the console's login page");
    let out = run(
        &ns,
        &format!("curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {token}' {url}api/v1/products"),
        &root,
        "",
    )
    .await;
    assert_eq!(out.trim(), "200", "the printed token is an admin token");
    assert!(scratch.0.path().join("tollgate-data/tollgate.db").exists(), "the store is in the current folder");
    serve.interrupt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walkthrough_works_as_written() {
    let doc = Doc::read("examples/websocket-echo/README.md");
    // A copy of the example folder (inside the clone, where cargo finds the workspace),
    // so the walkthrough's certificates and packages do not land in the source tree.
    let scratch = Scratch::new();
    let here = scratch.copy_of_example();
    let ns = Netns::new();
    let key = "2d4c1f0e9b8a7d6c5b4a3f2e1d0c9b8a";

    // 1. The backend. `npm install` needs the registry: it runs outside the namespace.
    let npm = doc.command("npm install");
    let out = Command::new("sh").args(["-c", &npm]).current_dir(&here).output().await.expect("npm");
    assert!(out.status.success(), "`{npm}`: {}", String::from_utf8_lossy(&out.stderr));
    run(&ns, &doc.command("sh make-cert.sh"), &here, "").await;
    assert!(here.join("ssl-cert/certificate.pem").exists());
    let mut backend = ns.sh(&doc.command("node server.js"), &here);
    backend.line_with("listening on 8443").await;

    // 2. Tollgate with the file.
    let out = run(&ns, &doc.command("cargo run --release -- check -f"), &here, "").await;
    assert!(out.contains("tollgate.yaml: OK"), "{out}");
    let mut serve = ns.sh(&doc.command("cargo run --release -- serve --config tollgate.yaml"), &here);
    serve.line_with("tollgate: admin").await;

    // 3. Staging: the ws client, Node's ws, and curl with and without a key.
    let out = run(&ns, &doc.command("cargo run --release -- ws 'ws://chat-staging"), &here, "hello\n").await;
    assert!(out.lines().any(|l| l == "reply from server : hello"), "{out}");
    let out = run(&ns, &doc.command("node -e"), &here, "").await;
    assert_eq!(out.trim(), "reply from server : hello");
    for (prefix, status) in [
        (format!("curl -i 'http://chat-staging.localhost:8081/?user_key={key}'"), "200"),
        ("curl -i 'http://chat-staging.localhost:8081/'".to_string(), "401"),
        ("curl -i 'http://chat-staging.localhost:8081/?user_key=wrong'".to_string(), "403"),
    ] {
        let out = run(&ns, &doc.command(&prefix), &here, "").await;
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "`{prefix}`: {out}");
    }

    // 4. Production.
    let out = run(&ns, &doc.command("cargo run --release -- ws 'ws://chat.localhost"), &here, "hello\n").await;
    assert!(out.lines().any(|l| l == "reply from server : hello"), "{out}");

    // 5. TLS to the gateway: Tollgate stopped (Ctrl-C) and started again with TLS.
    serve.interrupt().await;
    run(&ns, &doc.command("sh make-cert.sh gw-cert"), &here, "").await;
    let mut tls =
        ns.sh(&doc.command("cargo run --release -- serve --config tollgate.yaml --staging-listen tls://"), &here);
    tls.line_with("tollgate: admin").await;
    let out =
        run(&ns, &doc.command("cargo run --release -- ws --cacert gw-cert/certificate.pem"), &here, "hello\n").await;
    assert!(out.lines().any(|l| l == "reply from server : hello"), "{out}");
    tls.interrupt().await;
    backend.interrupt().await;
}

/// A folder under the clone's `target/`, removed at the end.
struct Scratch(TempDir);

impl Scratch {
    fn new() -> Scratch {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = repo_root().join(format!("target/readme-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(TempDir(dir))
    }

    /// The example's files (not its installed packages or certificates), copied.
    fn copy_of_example(&self) -> PathBuf {
        let to = self.0.path().join("websocket-echo");
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(support::example_dir()).expect("example folder") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        }
        to
    }
}

#[test]
fn comments_are_cut_outside_quotes_only() {
    assert_eq!(
        without_comment("cargo run --release -- serve --demo     # a gateway"),
        "cargo run --release -- serve --demo"
    );
    assert_eq!(without_comment("curl 'http://h/#x' # fetch"), "curl 'http://h/#x'");
    assert_eq!(without_comment("echo a#b"), "echo a#b");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let command = Doc::read("README.md").command("bash scripts/test.sh");
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    assert!(ci.lines().any(|l| l.trim().trim_start_matches("exec ") == command), "{ci}");
}
