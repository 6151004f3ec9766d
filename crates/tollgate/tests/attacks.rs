//! The attack suite: a real `tollgate serve` process under attacks of each kind, its
//! resident memory read from `/proc/PID/status`, and normal clients served meanwhile —
//! their success is what is asserted, never a time.
//!
//! - slow clients of every kind (slow heads, slow bodies, slow readers) by the hundred;
//! - HTTP/2 floods written frame by frame (`tests/peers/h2_attacks.py`, Python's
//!   `hyperframe` and `hpack`): SETTINGS flood, HPACK bomb, CONTINUATION flood,
//!   zero-window streams;
//! - `kill -9` of the process during admin writes: the SQLite store passes
//!   `PRAGMA integrity_check` and holds every write that was acknowledged.
//!
//! Other kinds have their own files: request smuggling and framing (hardening.rs),
//! rapid reset and running out of file descriptors (hostile.rs), malformed WebSocket
//! frames from each side (the relay's tests and websocket.rs).

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "api-staging.test";

/// How much the gateway's resident memory may grow over its baseline under an attack
/// and after it (the budget).
const RSS_BUDGET_KIB: u64 = 64 * 1024;

/// Slow clients in the attack, a third of each kind.
const ATTACKERS: usize = 300;
const EACH: f64 = (ATTACKERS / 3) as f64;

fn config(backend: SocketAddr) -> String {
    support::open_config(backend, HOST)
}

/// The resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Normal clients, `n` requests on fresh connections, 8 at a time: how many got 200.
async fn normal_clients(addr: SocketAddr, n: usize) -> usize {
    let mut served = 0;
    for chunk in 0..n.div_ceil(8) {
        let batch = (0..8.min(n - chunk * 8)).map(|_| async move {
            let mut tcp = TcpStream::connect(addr).await.ok()?;
            let req = format!("GET /x?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await.ok()?.ok()?;
            Some(answer.starts_with(b"HTTP/1.1 200"))
        });
        served += futures_util::future::join_all(batch).await.into_iter().filter(|ok| *ok == Some(true)).count();
    }
    served
}

/// Reads until the gateway closes the connection (bounded: 30 s, a safety net, not
/// what is measured).
async fn closed_by_gateway((kind, mut tcp): (&str, TcpStream)) {
    let mut sink = vec![0u8; 1 << 16];
    let mut total = 0;
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the gateway never closed a {kind}'s connection ({total} bytes read)");
}

/// A connection as an attacker opens it: a small receive buffer (8 KiB), so that what
/// the gateway may write before it must wait for the client is small too.
async fn attacker(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8192).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test]
async fn slow_clients_by_the_hundred_leave_normal_clients_served_and_memory_bounded() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config(backend)).expect("write");
    let flags = ["--header-read-timeout", "3", "--min-data-rate", "2000", "--min-data-rate-grace", "2"];
    let serve = spawn_serve_with(&file, &flags).await;
    let (addr, pid) = (serve.staging, serve.child.id().expect("pid"));
    assert_eq!(normal_clients(addr, 40).await, 40, "warm-up");
    let baseline = rss_kib(pid);

    // 300 attackers: slow heads (half a head, then silence), slow bodies (a few bytes
    // of a 1 MB upload), slow readers (a 20 MB download never read).
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        let mut tcp = attacker(addr).await;
        let (kind, head) = match i % 3 {
            0 => ("slow head", format!("GET /x?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: 1")),
            1 => (
                "slow body",
                format!("POST /upload?user_key=k HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000000\r\n\r\nabc"),
            ),
            _ => ("slow reader", format!("GET /download?bytes=20000000&user_key=k HTTP/1.1\r\nHost: {HOST}\r\n\r\n")),
        };
        tcp.write_all(head.as_bytes()).await.expect("write");
        attackers.push((kind, tcp));
    }
    // Meanwhile every normal client is served.
    assert_eq!(normal_clients(addr, 100).await, 100, "a normal client was refused during the attack");
    let during = rss_kib(pid);
    // The gateway ends every slow connection by itself: the slow heads at the
    // header-read timeout, the slow bodies with 408 and the slow readers for the
    // minimum data rate, each counted (bounded polling: a slow reader is found once
    // every buffer on its way is full)…
    let closed = |name: &'static str| metric(serve.admin, name);
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..600 {
        poll.tick().await;
        if closed("tollgate_connections_slow_closed_total").await >= EACH {
            break;
        }
    }
    futures_util::future::join_all(attackers.into_iter().map(closed_by_gateway)).await;
    assert_eq!(closed("tollgate_connections_slow_closed_total").await, EACH, "the slow readers");
    assert_eq!(normal_clients(addr, 40).await, 40, "after the attack");
    // …and its memory returns to within the budget of where it was.
    let after = rss_kib(pid);
    eprintln!("resident memory: baseline {baseline} KiB, during the attack {during} KiB, after it {after} KiB");
    // While they are there, each slow client costs at most 256 KiB (measured: about 120).
    let during_budget = baseline + ATTACKERS as u64 * 256;
    assert!(during < during_budget, "{during} KiB during the attack, baseline {baseline} KiB");
    assert!(after < baseline + RSS_BUDGET_KIB, "{after} KiB after the attack, baseline {baseline} KiB");
}

/// What the server did to one HTTP/2 attack, as `h2_attacks.py` saw it.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    goaway: Option<u32>,
    closed: bool,
    stalled: bool,
    statuses: Vec<u16>,
    resets: Vec<u32>,
    sent: u64,
}

async fn h2_attack(mode: &str, addr: SocketAddr, path: &str) -> Seen {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/h2_attacks.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([mode, "127.0.0.1", &addr.port().to_string(), HOST, path])
        .output()
        .await
        .expect("python3 (with the h2 package: pip install h2)");
    assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{mode}: {e}: {line}"))
}

#[tokio::test]
async fn http2_floods_are_refused_and_memory_stays_bounded() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config(backend)).expect("write");
    let flags = ["--min-data-rate", "2000", "--min-data-rate-grace", "1"];
    let serve = spawn_serve_with(&file, &flags).await;
    let (addr, pid) = (serve.staging, serve.child.id().expect("pid"));
    assert_eq!(normal_clients(addr, 16).await, 16, "warm-up");
    let baseline = rss_kib(pid);

    // SETTINGS flood: the gateway either keeps up, stops reading until its ACKs are
    // taken, or ends the connection — it never queues ACKs without bound.
    let seen = h2_attack("settings", addr, "/x?user_key=k").await;
    assert!(seen.stalled || seen.closed || seen.goaway.is_some() || seen.sent >= 200_000, "{seen:?}");

    // HPACK bomb: 16 KB on the wire that decode to 64 MB of fields. Refused (431, a
    // reset or a connection error), never forwarded.
    let seen = h2_attack("hpack", addr, "/x?user_key=k").await;
    assert!(!seen.statuses.contains(&200), "an HPACK bomb was forwarded: {seen:?}");
    assert!(
        seen.statuses.contains(&431) || !seen.resets.is_empty() || seen.goaway.is_some() || seen.closed,
        "{seen:?}"
    );

    // CONTINUATION flood: the head never ends; the connection does.
    let seen = h2_attack("continuation", addr, "/x?user_key=k").await;
    assert!(!seen.statuses.contains(&200), "{seen:?}");
    assert!(seen.goaway.is_some() || seen.closed, "a CONTINUATION flood was not cut: {seen:?}");

    // Zero-window streams: 100 streams that can never take their 10 MB bodies. The
    // minimum data rate applies to what an HTTP/2 client takes, too.
    let seen = h2_attack("zero_window", addr, "/download?bytes=10000000&user_key=k").await;
    assert!(seen.goaway.is_some() || seen.closed || !seen.resets.is_empty(), "{seen:?}");

    assert_eq!(normal_clients(addr, 40).await, 40, "the gateway serves after the floods");
    let after = rss_kib(pid);
    eprintln!("resident memory: baseline {baseline} KiB, after the HTTP/2 floods {after} KiB");
    assert!(after < baseline + RSS_BUDGET_KIB, "{after} KiB after the floods, baseline {baseline} KiB");
}

/// `serve` in store mode, with its admin URL and (on the first start) its token.
struct StoreServe {
    child: tokio::process::Child,
    admin: SocketAddr,
    token: Option<String>,
}

async fn spawn_store(store: &str) -> StoreServe {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--store", store])
        .args(PORT0)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut admin, mut token) = (None, None);
    while let Some(line) = lines.next_line().await.expect("stdout") {
        if let Some(rest) = line.split("keep it): ").nth(1) {
            token = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("tollgate: admin API") {
            let url = rest.split_whitespace().next().expect("admin URL");
            admin = url.trim_start_matches("http://").trim_end_matches("/api/v1").parse().ok();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    StoreServe { child, admin: admin.expect("admin address"), token }
}

#[tokio::test]
async fn kill_9_during_admin_writes_loses_no_acknowledged_write() {
    let dir = TempDir::new();
    let db = dir.path().join("tollgate.db");
    let store = format!("sqlite://{}", db.display());
    let mut serve = spawn_store(&store).await;
    let token = serve.token.clone().expect("the first start prints a token");
    let auth = format!("Bearer {token}");

    // Four writers create backends one after another; each 201 is an acknowledged write.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (enough_tx, enough) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acknowledged, auth, enough_tx, admin) =
            (acknowledged.clone(), auth.clone(), enough_tx.clone(), serve.admin);
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let name = format!("b{w}x{i}");
                let body = serde_json::json!({ "system_name": name, "private_base_url": "http://127.0.0.1:9" });
                let client = client();
                let req = http::Request::post(format!("http://{admin}/api/v1/backends"))
                    .header("host", "localhost")
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(full(body.to_string()))
                    .expect("request");
                match client.request(req).await {
                    Ok(resp) if resp.status() == StatusCode::CREATED => {
                        let mut acked = acknowledged.lock().expect("lock");
                        acked.push(name);
                        if acked.len() >= 120 {
                            let _ = enough_tx.send(true);
                        }
                    }
                    Ok(resp) => panic!("a write was refused: {}", resp.status()),
                    // The process is gone: this write was never acknowledged.
                    Err(_) => return,
                }
            }
        }));
    }
    // Writes are still in flight when the process is killed (SIGKILL: no shutdown).
    let mut enough = enough;
    tokio::time::timeout(Duration::from_secs(120), enough.wait_for(|e| *e)).await.expect("120 writes").expect("watch");
    serve.child.start_kill().expect("kill -9");
    serve.child.wait().await.expect("wait");
    for w in writers {
        w.await.expect("writer");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();

    // The database file is sound…
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&store).await.expect("open the store");
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.expect("check");
        assert_eq!(check, "ok");
        conn.close().await.expect("close");
    }
    // …and a restarted process holds every acknowledged write.
    let serve = spawn_store(&store).await;
    assert!(serve.token.is_none(), "the token is kept, not made again");
    let mut names = std::collections::HashSet::new();
    for page in 1.. {
        let (status, _, body) = request(
            serve.admin,
            "localhost",
            "GET",
            &format!("/api/v1/backends?page={page}&per_page=500"),
            full(bytes::Bytes::new()),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON list");
        if list.is_empty() {
            break;
        }
        names.extend(list.iter().filter_map(|b| b["system_name"].as_str().map(str::to_string)));
    }
    let lost: Vec<&String> = acknowledged.iter().filter(|n| !names.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
    assert!(acknowledged.len() >= 120);
}
