//! `tollgate-bench`: Tollgate measured side by side with nginx, HAProxy and a direct
//! connection, in one run on one machine, the contestants alternating round by round
//! so a slow moment of the machine hits all alike. Results are ratios; single timings
//! mean little on a shared machine. Nothing here asserts anything about speed.
//!
//! `tollgate-bench all` runs every measure and writes `latest.md` and `latest.json` to
//! `--out` (`bench/run` passes `bench/results`). The other subcommands are its parts:
//! the echo backend and the raw byte copy run as their own processes.

mod cpu;
mod grpc;
mod http;
mod instructions;
mod peers;
mod report;
mod scale;
mod soak;
mod ws;

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

use peers::{Backends, Fronts, Process};
use report::{Row, Table, median};
use ws::Target;

const USAGE: &str =
    "usage: tollgate-bench all [--smoke] [--rounds N] [--seconds S] [--only LIST] [--soak-minutes M] [--out DIR]
         LIST: comma-separated of http, cpu, instructions, fleet, grpc, redis, tls, pingpong, handshakes, stream, memory, scale, soak
         (soak runs only when named, or under --smoke for a few seconds)
       tollgate-bench echo          (an echo WebSocket server; prints its port)
       tollgate-bench grpc          (a gRPC echo server over h2c, tonic; prints its port)
       tollgate-bench copy PORT     (a raw TCP byte copy to 127.0.0.1:PORT; prints its port)";

/// How much of everything: the defaults take about ten minutes; `--smoke` seconds.
#[derive(Debug, Clone)]
struct Settings {
    rounds: usize,
    /// Length of one contestant's turn in a round, for timed measures.
    turn: Duration,
    http_connections: usize,
    ws_connections: usize,
    /// gRPC: HTTP/2 connections, and calls in flight on each.
    grpc_connections: usize,
    grpc_streams: usize,
    handshake_concurrency: usize,
    /// Upper bound on handshakes per turn (each uses a fresh source address).
    handshake_max: usize,
    stream_messages: usize,
    /// `instructions`: requests counted per contestant (after a warm-up).
    instruction_requests: usize,
    idle: Vec<usize>,
    /// `scale`: configuration sizes, in products (ten applications each).
    scale: Vec<usize>,
    /// `soak`: how long and with what.
    soak: soak::Plan,
    smoke: bool,
    only: Vec<String>,
    out: Option<PathBuf>,
}

impl Settings {
    fn full() -> Self {
        Settings {
            rounds: 3,
            turn: Duration::from_secs(5),
            http_connections: 50,
            ws_connections: 50,
            grpc_connections: 4,
            grpc_streams: 16,
            handshake_concurrency: 16,
            handshake_max: 60_000,
            stream_messages: 50_000,
            instruction_requests: 2_000,
            idle: vec![1_000, 9_000],
            scale: vec![10, 100, 1_000, 10_000],
            soak: soak::Plan {
                duration: Duration::from_secs(30 * 60),
                sample_every: Duration::from_secs(10),
                reload_every: Duration::from_secs(60),
                capacity_turn: Duration::from_secs(5),
                http_connections: 16,
                ws_sessions: 50,
                churn_loops: 8,
            },
            smoke: false,
            only: Vec::new(),
            out: None,
        }
    }

    fn smoke() -> Self {
        Settings {
            rounds: 1,
            turn: Duration::from_millis(300),
            http_connections: 4,
            ws_connections: 4,
            grpc_connections: 1,
            grpc_streams: 2,
            handshake_concurrency: 2,
            handshake_max: 50,
            stream_messages: 200,
            instruction_requests: 20,
            idle: vec![20],
            scale: vec![10, 100],
            soak: soak::Plan {
                duration: Duration::from_secs(3),
                sample_every: Duration::from_millis(500),
                reload_every: Duration::from_secs(1),
                capacity_turn: Duration::from_millis(500),
                http_connections: 2,
                ws_sessions: 2,
                churn_loops: 1,
            },
            smoke: true,
            ..Settings::full()
        }
    }

    /// Whether `phase` runs: every one when `--only` is not given, except the soak
    /// (half an hour) unless `--smoke` shortens it to seconds.
    fn wants(&self, phase: &str) -> bool {
        if self.only.is_empty() {
            return phase != "soak" || self.smoke;
        }
        self.only.iter().any(|p| p == phase)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("echo") => runtime.block_on(ws::echo_server()),
        Some("grpc") => runtime.block_on(grpc::server()),
        Some("copy") => {
            let port: u16 = args.get(1).and_then(|p| p.parse().ok()).ok_or_else(|| anyhow!("{USAGE}"))?;
            runtime.block_on(ws::copy_server(port))
        }
        Some("all") => runtime.block_on(all(parse(&args[1..])?)),
        _ => bail!("{USAGE}"),
    }
}

fn parse(args: &[String]) -> Result<Settings> {
    let mut s = if args.iter().any(|a| a == "--smoke") { Settings::smoke() } else { Settings::full() };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--smoke" => {}
            "--rounds" => s.rounds = value()?.parse().ok().filter(|n| *n > 0).context("--rounds: a positive number")?,
            "--seconds" => {
                let secs: f64 = value()?.parse().ok().filter(|n| *n > 0.0).context("--seconds: a positive number")?;
                s.turn = Duration::from_secs_f64(secs);
            }
            "--only" => s.only = value()?.split(',').map(str::to_string).collect(),
            "--soak-minutes" => {
                let m: f64 = value()?.parse().ok().filter(|n| *n > 0.0).context("--soak-minutes: a positive number")?;
                s.soak.duration = Duration::from_secs_f64(m * 60.0);
            }
            "--out" => s.out = Some(value()?.into()),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    const PHASES: [&str; 13] = [
        "http",
        "cpu",
        "instructions",
        "fleet",
        "grpc",
        "redis",
        "tls",
        "pingpong",
        "handshakes",
        "stream",
        "memory",
        "scale",
        "soak",
    ];
    if let Some(p) = s.only.iter().find(|p| !PHASES.contains(&p.as_str())) {
        bail!("--only: unknown measure `{p}`; choose from {}", PHASES.join(", "));
    }
    Ok(s)
}

/// Everything the run starts: backends and the three proxies.
struct Field {
    _processes: Vec<Process>,
    /// Process ids of the HTTP backend, nginx, HAProxy and Tollgate (CPU measure).
    pids: [Option<u32>; 4],
    /// Process id of the gRPC server.
    grpc_pid: Option<u32>,
    backends: Backends,
    nginx: Fronts,
    haproxy: Fronts,
    tollgate: Fronts,
    /// The same Tollgate with Redis counters, without and with quota leasing (only
    /// when the `redis` measure runs).
    tollgate_redis: Option<(Fronts, Fronts)>,
    /// Another Tollgate binary run as a contestant of its own (`TOLLGATE_BASELINE`), and
    /// its process id.
    baseline: Option<(Fronts, Option<u32>)>,
    raw_copy: std::net::SocketAddr,
}

/// Contestant names of the baseline Tollgate (`TOLLGATE_BASELINE`).
const BASELINE_KEY_ONLY: &str = "baseline tollgate, key only";
const BASELINE_FULL: &str = "baseline tollgate, key + 20 rules + limits";
const BASELINE_METERED: &str = "baseline tollgate, metering on";

struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    both: PathBuf,
}

async fn start(files: &Files, s: &Settings) -> Result<Field> {
    let (echo, echo_addr) = peers::own(&["echo"]).await?;
    let (copy, raw_copy) = peers::own(&["copy", &echo_addr.port().to_string()]).await?;
    let (grpc_server, grpc) = peers::own(&["grpc"]).await?;
    let (backend, http, https) = peers::http_backend(&files.dir, &files.cert, &files.key).await?;
    let backends = Backends { http, https, ws: echo_addr, grpc };
    let (n, nginx) = peers::nginx_proxy(&files.dir, backends, &files.cert, &files.key).await?;
    let (h, haproxy) = peers::haproxy(&files.dir, backends, &files.both).await?;
    let (t, tollgate) = peers::tollgate(&files.dir, backends, &files.cert, &files.key, &[]).await?;
    let pids = [backend.id(), n.id(), h.id(), t.id()];
    let grpc_pid = grpc_server.id();
    let mut processes = vec![echo, copy, grpc_server, backend, n, h, t];
    let tollgate_redis = if s.wants("redis") {
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let flags = [
            "--counters".into(),
            redis.clone(),
            "--counters-namespace".into(),
            format!("bench-{}", std::process::id()),
        ];
        let (p, fronts) = peers::tollgate(&files.dir, backends, &files.cert, &files.key, &flags).await?;
        processes.push(p);
        let leased = [
            "--counters".into(),
            redis,
            "--counters-namespace".into(),
            format!("bench-lease-{}", std::process::id()),
            "--counters-lease".into(),
            LEASE.to_string(),
        ];
        let (p, leased) = peers::tollgate(&files.dir, backends, &files.cert, &files.key, &leased).await?;
        processes.push(p);
        Some((fronts, leased))
    } else {
        None
    };
    let baseline = match peers::baseline_bin() {
        Some(bin) => {
            let (p, fronts) = peers::tollgate_from(None, &bin, &files.dir, backends, &files.cert, &files.key, &[])
                .await
                .with_context(|| format!("TOLLGATE_BASELINE={}", bin.display()))?;
            let pid = p.id();
            processes.push(p);
            Some((fronts, pid))
        }
        None => None,
    };
    Ok(Field {
        _processes: processes,
        pids,
        grpc_pid,
        backends,
        nginx,
        haproxy,
        tollgate,
        tollgate_redis,
        baseline,
        raw_copy,
    })
}

async fn all(s: Settings) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = all_in(&dir, &s).await;
    // TOLLGATE_BENCH_KEEP=1 keeps the working files (configurations, callgrind's
    // dumps for `callgrind_annotate`) for a closer look.
    match std::env::var_os("TOLLGATE_BENCH_KEEP").is_some_and(|v| v == "1") {
        true => eprintln!("tollgate-bench: working files kept in {}", dir.display()),
        false => drop(std::fs::remove_dir_all(&dir)),
    }
    result
}

async fn all_in(dir: &Path, s: &Settings) -> Result<()> {
    let (cert, key, both) = peers::certificate(dir)?;
    let files = Files { dir: dir.to_path_buf(), cert, key, both };
    let mut tables = Report::default();
    let field = start(&files, s).await?;
    for phase in ["http", "cpu", "instructions", "fleet", "grpc", "redis", "tls", "pingpong", "handshakes", "stream"] {
        if !s.wants(phase) {
            continue;
        }
        let new = match phase {
            "http" => vec![http_table(&field, s, false).await?],
            "cpu" => vec![cpu_table(&field, s).await?],
            "fleet" => vec![fleet_table(&field, s).await?],
            "grpc" => grpc_table(&field, s).await?,
            "redis" => vec![redis_table(&field, s).await?, redis_stream(&field, s).await?],
            "tls" => vec![http_table(&field, s, true).await?, tls_handshakes(&field, s).await?],
            "pingpong" => vec![ping_pong(&field, s, 32).await?, ping_pong(&field, s, 4096).await?],
            "handshakes" => vec![handshakes(&field, s).await?],
            "instructions" => {
                instructions::table(&files.dir, field.backends, &files.cert, &files.key, s.instruction_requests).await?
            }
            _ => vec![stream(&field, s).await?],
        };
        publish(s, &mut tables, new)?;
    }
    if s.wants("scale") {
        let points = scale::measure(dir, field.backends.http, &s.scale, s.turn, s.http_connections).await?;
        println!("{}", scale::markdown(&points));
        if let Some(out) = &s.out {
            std::fs::create_dir_all(out)?;
            scale::plot(&points, &out.join("scale.svg"))?;
        }
        tables.scale = points;
        publish(s, &mut tables, Vec::new())?;
    }
    if s.wants("soak") {
        let outcome = soak::run(dir, field.backends, &s.soak).await?;
        println!("{}", soak::markdown(&outcome));
        if let Some(out) = &s.out {
            std::fs::create_dir_all(out)?;
            soak::plot(&outcome, &out.join("soak.svg"))?;
        }
        tables.soak = Some(outcome);
        publish(s, &mut tables, Vec::new())?;
    }
    drop(field);
    if s.wants("memory") {
        for &n in &s.idle {
            publish(s, &mut tables, vec![memory(&files, n).await?])?;
        }
    }
    eprintln!("done");
    Ok(())
}

/// Prints tables as they are measured and rewrites the results files with everything
/// so far, so an interrupted run still leaves its numbers.
fn publish(s: &Settings, report: &mut Report, new: Vec<Table>) -> Result<()> {
    for t in &new {
        println!("{}", t.markdown());
    }
    report.tables.extend(new);
    if let Some(out) = &s.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("latest.md"), render(s, report))?;
        let mut tables: serde_json::Map<_, _> = report.tables.iter().map(|t| (t.key.to_string(), t.json())).collect();
        if !report.scale.is_empty() {
            tables.insert("scale".into(), scale::json(&report.scale));
        }
        if let Some(o) = &report.soak {
            tables.insert("soak".into(), soak::json(o));
        }
        let json = serde_json::json!({ "machine": machine(), "settings": format!("{s:?}"), "tables": tables });
        std::fs::write(out.join("latest.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    }
    Ok(())
}

/// Everything measured so far.
#[derive(Default)]
struct Report {
    tables: Vec<Table>,
    /// The `scale` measure's points (plotted to `scale.svg` beside the results).
    scale: Vec<scale::Point>,
    /// The `soak` measure's outcome (plotted to `soak.svg`).
    soak: Option<soak::Outcome>,
}

pub(crate) const KEY: &str = "user_key=bench-key";

/// Runs `measure` for every contestant, `rounds` times, alternating contestants.
async fn rounds<T, F, Fut>(s: &Settings, names: &[&str], mut measure: F) -> Result<Vec<Vec<T>>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut results: Vec<Vec<T>> = names.iter().map(|_| Vec::new()).collect();
    for _ in 0..s.rounds {
        for (i, name) in names.iter().enumerate() {
            results[i].push(measure(i).await.with_context(|| name.to_string())?);
        }
    }
    Ok(results)
}

/// HTTP (or HTTPS) requests per second and latency, keep-alive, 50 connections.
async fn http_table(f: &Field, s: &Settings, tls: bool) -> Result<Table> {
    let path = format!("/v1/items/42?{KEY}");
    let (scheme, direct, pick): (_, _, fn(&Fronts) -> std::net::SocketAddr) =
        if tls { ("https", f.backends.https, |x| x.tls) } else { ("http", f.backends.http, |x| x.http) };
    let mut contestants = vec![
        ("direct", direct, "plain.localhost"),
        ("nginx", pick(&f.nginx), "plain.localhost"),
        ("haproxy", pick(&f.haproxy), "plain.localhost"),
        ("tollgate, key only", pick(&f.tollgate), "plain.localhost"),
    ];
    if !tls {
        contestants.push(("tollgate, key + 20 rules + limits", f.tollgate.http, "full.localhost"));
    }
    if let Some((b, _)) = &f.baseline {
        contestants.push((BASELINE_KEY_ONLY, pick(b), "plain.localhost"));
        if !tls {
            contestants.push((BASELINE_FULL, b.http, "full.localhost"));
        }
    }
    let rows = keep_alive_rows(s, scheme, &path, &contestants).await?;
    let what = if tls { "HTTPS requests over kept-alive TLS connections" } else { "HTTP requests, keep-alive" };
    Ok(Table {
        key: if tls { "tls_requests" } else { "http" },
        title: format!("{what}: {} connections, wrk -t1, {} s turns", s.http_connections, wrk_seconds(s)),
        unit: "requests/s",
        rows,
        higher_is_better: true,
        baseline: None,
    })
}

/// The balancer's cost: requests/s to a backend of three endpoints (round robin) against
/// the same backend as one endpoint — the three are one nginx server on 127.0.0.1, .2
/// and .3, so only the balancing differs — for nginx (`upstream` of three `server`s)
/// and Tollgate (`endpoints`, key only).
async fn fleet_table(f: &Field, s: &Settings) -> Result<Table> {
    let path = format!("/v1/items/42?{KEY}");
    let contestants = [
        ("nginx, 1 server", f.nginx.http, "plain.localhost"),
        ("nginx, 3 servers", f.nginx.http, "fleet.localhost"),
        (ONE_ENDPOINT, f.tollgate.http, "plain.localhost"),
        ("tollgate, 3 endpoints", f.tollgate.http, "fleet.localhost"),
    ];
    let rows = keep_alive_rows(s, "http", &path, &contestants).await?;
    Ok(Table {
        key: "fleet",
        title: format!(
            "HTTP to one backend as 1 or 3 endpoints (round robin), keep-alive: {} connections, {} s turns",
            s.http_connections,
            wrk_seconds(s)
        ),
        unit: "requests/s",
        rows,
        higher_is_better: true,
        baseline: Some(ONE_ENDPOINT),
    })
}

const ONE_ENDPOINT: &str = "tollgate, 1 endpoint";

/// gRPC unary calls per second (tonic client, 64-byte messages, h2c), directly to a
/// tonic server and through Tollgate (a backend with `protocol: http2`, the key in
/// metadata, one mapping rule) — and through the baseline Tollgate when there is one —
/// and the CPU each call costs the serving process (the server for "direct").
async fn grpc_table(f: &Field, s: &Settings) -> Result<Vec<Table>> {
    let tollgate = f.pids[3];
    let mut contestants = vec![
        ("direct", f.backends.grpc, "grpc.localhost", f.grpc_pid),
        ("tollgate", f.tollgate.http, "grpc.localhost", tollgate),
    ];
    if let Some((b, pid)) = &f.baseline {
        contestants.push(("baseline tollgate", b.http, "grpc.localhost", *pid));
    }
    let names: Vec<&str> = contestants.iter().map(|c| c.0).collect();
    let (connections, streams) = (s.grpc_connections, s.grpc_streams);
    let results = rounds(s, &names, |i| {
        let (target, authority, pid) = (contestants[i].1, contestants[i].2, contestants[i].3);
        let turn = s.turn;
        async move {
            let pid = pid.context("the process has exited")?;
            let before = cpu::used(pid);
            let run =
                tokio::task::spawn_blocking(move || grpc::unary_load(target, authority, connections, streams, turn))
                    .await??;
            let after = cpu::used(pid);
            let per = |a: Duration, b: Duration| (a - b).as_secs_f64() * 1e6 / run.calls.max(1) as f64;
            Ok::<_, anyhow::Error>((run, per(after.0, before.0), per(after.1, before.1)))
        }
    })
    .await?;
    let shape = format!(
        "tonic, 64-byte messages, h2c: {connections} connections × {streams} calls in flight, one client thread, {} s turns",
        s.turn.as_secs_f64()
    );
    let cpu_rows = names
        .iter()
        .zip(&results)
        .map(|(name, runs)| {
            let user = median(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
            let kernel = median(&runs.iter().map(|r| r.2).collect::<Vec<_>>());
            Row {
                name: name.to_string(),
                rate: user + kernel,
                p50: None,
                p99: None,
                rounds: runs.iter().map(|r| r.1 + r.2).collect(),
                split: Some((user, kernel)),
            }
        })
        .collect();
    let results: Vec<Vec<grpc::Calls>> =
        results.into_iter().map(|runs| runs.into_iter().map(|r| r.0).collect()).collect();
    Ok(vec![
        Table {
            key: "grpc",
            title: format!("gRPC unary calls ({shape})"),
            unit: "calls/s",
            rows: rows_of(&names, results, |r| (r.rate, Some(r.p50), Some(r.p99))),
            higher_is_better: true,
            baseline: None,
        },
        Table {
            key: "grpc_cpu",
            title: format!("CPU per gRPC unary call of the serving process (µs, from /proc; lower is better; {shape})"),
            unit: "µs CPU/call",
            rows: cpu_rows,
            higher_is_better: false,
            baseline: None,
        },
    ])
}

/// Limits shared by nodes cost a Redis round trip and a script per request: requests/s
/// with key + 20 rules + limits on three periods, memory counters against Redis
/// counters (Redis on loopback), nginx's plain proxy for scale.
async fn redis_table(f: &Field, s: &Settings) -> Result<Table> {
    let (redis, leased) = f.tollgate_redis.context("the Redis contestant was not started")?;
    let path = format!("/v1/items/42?{KEY}");
    let leasing = format!("tollgate, Redis counters, --counters-lease {LEASE}");
    let contestants = [
        ("nginx", f.nginx.http, "plain.localhost"),
        (MEMORY, f.tollgate.http, "full.localhost"),
        ("tollgate, Redis counters", redis.http, "full.localhost"),
        (leasing.as_str(), leased.http, "full.localhost"),
    ];
    let rows = keep_alive_rows(s, "http", &path, &contestants).await?;
    Ok(Table {
        key: "redis",
        title: format!(
            "HTTP with key + 20 rules + limits on 3 periods, counters in memory vs in Redis (127.0.0.1; one script per request, or per lease of {LEASE} units): {} connections, {} s turns",
            s.http_connections,
            wrk_seconds(s)
        ),
        unit: "requests/s",
        rows,
        higher_is_better: true,
        baseline: Some(MEMORY),
    })
}

/// WebSocket streaming with every message metered on the plan's limits, counters in
/// memory against counters in Redis: with a read's frames metered together, the Redis
/// contestant makes one call per read of the socket, not one per message.
async fn redis_stream(f: &Field, s: &Settings) -> Result<Table> {
    let (redis, leased) = f.tollgate_redis.context("the Redis contestant was not started")?;
    let path = format!("/?{KEY}");
    let t = |addr| Target { addr, host: "metered.localhost".to_string(), path: path.clone() };
    let leasing = format!("tollgate, Redis counters, --counters-lease {LEASE}");
    let targets =
        [(MEMORY, t(f.tollgate.ws)), ("tollgate, Redis counters", t(redis.ws)), (leasing.as_str(), t(leased.ws))];
    stream_table(s, "redis_stream", "metered both ways, counters in memory vs in Redis", &targets, Some(MEMORY)).await
}

const MEMORY: &str = "tollgate, memory counters";

/// Units per quota lease of the leasing Redis contestant.
const LEASE: u64 = 100;

/// CPU time per proxied request, from /proc, under the `http` measure's load: the
/// proxy's own code (user) and the kernel's work for it. On loopback the sender's
/// system call also runs the receiver's TCP stack, so the kernel share is what any
/// proxy pays for its four socket operations per request (read the client, write the
/// backend, read the backend, write the client); the user share is what the proxy
/// itself adds. `direct` is the backend alone, serving wrk.
async fn cpu_table(f: &Field, s: &Settings) -> Result<Table> {
    let path = format!("/v1/items/42?{KEY}");
    let [backend, nginx, haproxy, tollgate] = f.pids;
    let mut contestants = vec![
        ("direct", f.backends.http, "plain.localhost", backend),
        ("nginx", f.nginx.http, "plain.localhost", nginx),
        ("haproxy", f.haproxy.http, "plain.localhost", haproxy),
        ("tollgate, key only", f.tollgate.http, "plain.localhost", tollgate),
        ("tollgate, key + 20 rules + limits", f.tollgate.http, "full.localhost", tollgate),
    ];
    if let Some((b, pid)) = &f.baseline {
        contestants.push((BASELINE_KEY_ONLY, b.http, "plain.localhost", *pid));
        contestants.push((BASELINE_FULL, b.http, "full.localhost", *pid));
    }
    let names: Vec<&str> = contestants.iter().map(|c| c.0).collect();
    let urls: Vec<String> = contestants.iter().map(|c| format!("http://{}{path}", c.1)).collect();
    let results = rounds(s, &names, |i| {
        let load = kept_alive(s, &urls[i], contestants[i].2);
        let pid = contestants[i].3;
        async move {
            let pid = pid.context("the process has exited")?;
            let before = cpu::used(pid);
            let run = http::wrk(&load).await?;
            let after = cpu::used(pid);
            let requests = (run.rate * wrk_seconds(s)).max(1.0);
            let per = |a: std::time::Duration, b: std::time::Duration| (a - b).as_secs_f64() * 1e6 / requests;
            Ok::<_, anyhow::Error>((per(after.0, before.0), per(after.1, before.1)))
        }
    })
    .await?;
    let rows = names
        .iter()
        .zip(results)
        .map(|(name, runs)| {
            let user = median(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
            let kernel = median(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
            Row {
                name: name.to_string(),
                rate: user + kernel,
                p50: None,
                p99: None,
                rounds: runs.iter().map(|r| r.0 + r.1).collect(),
                split: Some((user, kernel)),
            }
        })
        .collect();
    Ok(Table {
        key: "http_cpu",
        title: format!(
            "CPU per HTTP request, keep-alive, of the serving process (µs, from /proc; lower is better): {} connections, {} s turns",
            s.http_connections,
            wrk_seconds(s)
        ),
        unit: "µs CPU/request",
        rows,
        higher_is_better: false,
        baseline: None,
    })
}

/// The `http` measure's load: wrk's kept-alive connections for one turn.
fn kept_alive<'a>(s: &Settings, url: &'a str, host: &'a str) -> http::Load<'a> {
    http::Load { url, host, connections: s.http_connections, duration: s.turn, close: false }
}

/// wrk over kept-alive connections against each `(name, address, Host)`, rounds
/// alternating: one row per contestant.
async fn keep_alive_rows(
    s: &Settings,
    scheme: &str,
    path: &str,
    contestants: &[(&str, std::net::SocketAddr, &str)],
) -> Result<Vec<Row>> {
    let names: Vec<&str> = contestants.iter().map(|c| c.0).collect();
    let urls: Vec<String> = contestants.iter().map(|c| format!("{scheme}://{}{path}", c.1)).collect();
    let results = rounds(s, &names, |i| {
        let load = kept_alive(s, &urls[i], contestants[i].2);
        async move { http::wrk(&load).await }
    })
    .await?;
    Ok(rows_of(&names, results, |r| (r.rate, Some(r.p50), Some(r.p99))))
}

/// TLS handshakes per second: every request on a new connection (`Connection: close`),
/// full handshakes (no session resumption anywhere).
async fn tls_handshakes(f: &Field, s: &Settings) -> Result<Table> {
    let path = format!("/v1/items/42?{KEY}");
    let contestants = [
        ("direct", f.backends.https),
        ("nginx", f.nginx.tls),
        ("haproxy", f.haproxy.tls),
        ("tollgate, key only", f.tollgate.tls),
    ];
    let names: Vec<&str> = contestants.iter().map(|c| c.0).collect();
    let urls: Vec<String> = contestants.iter().map(|c| format!("https://{}{path}", c.1)).collect();
    let results = rounds(s, &names, |i| {
        let load = http::Load {
            url: &urls[i],
            host: "plain.localhost",
            connections: s.handshake_concurrency,
            duration: s.turn,
            close: true,
        };
        async move { http::wrk(&load).await }
    })
    .await?;
    Ok(Table {
        key: "tls_handshakes",
        title: format!(
            "TLS handshakes (one request per connection, ECDSA P-256, no resumption): {} concurrent, {} s turns",
            s.handshake_concurrency,
            wrk_seconds(s)
        ),
        unit: "handshakes/s",
        rows: rows_of(&names, results, |r| (r.rate, Some(r.p50), Some(r.p99))),
        higher_is_better: true,
        baseline: None,
    })
}

/// wrk runs whole seconds.
fn wrk_seconds(s: &Settings) -> f64 {
    s.turn.as_secs_f64().ceil().max(1.0)
}

/// A WebSocket run's rate and its latency percentiles.
fn round_trips(r: &ws::Run) -> Sample {
    (r.rate(), Some(r.latency.value_at_quantile(0.5) as f64), Some(r.latency.value_at_quantile(0.99) as f64))
}

/// One round's numbers: the rate and, where measured, p50 and p99 latency.
type Sample = (f64, Option<f64>, Option<f64>);

fn rows_of<T>(names: &[&str], results: Vec<Vec<T>>, f: impl Fn(&T) -> Sample) -> Vec<Row> {
    names
        .iter()
        .zip(results)
        .map(|(name, runs)| {
            let v: Vec<_> = runs.iter().map(&f).collect();
            let pick = |g: fn(&Sample) -> Option<f64>| {
                let xs: Vec<f64> = v.iter().filter_map(g).collect();
                (!xs.is_empty()).then(|| median(&xs))
            };
            Row {
                name: name.to_string(),
                rate: median(&v.iter().map(|x| x.0).collect::<Vec<_>>()),
                p50: pick(|x| x.1),
                p99: pick(|x| x.2),
                rounds: v.iter().map(|x| x.0).collect(),
                split: None,
            }
        })
        .collect()
}

fn ws_targets(f: &Field) -> Vec<(&'static str, Target)> {
    let path = format!("/?{KEY}");
    let t = |addr, host: &str| Target { addr, host: host.to_string(), path: path.clone() };
    vec![
        ("direct", t(f.backends.ws, "127.0.0.1")),
        ("nginx", t(f.nginx.ws, "127.0.0.1")),
        ("haproxy", t(f.haproxy.ws, "127.0.0.1")),
        ("tollgate, metering off", t(f.tollgate.ws, "ws.localhost")),
        ("tollgate, metering on", t(f.tollgate.ws, "metered.localhost")),
    ]
    .into_iter()
    .chain(f.baseline.as_ref().map(|(b, _)| (BASELINE_METERED, t(b.ws, "metered.localhost"))))
    .collect()
}

async fn ping_pong(f: &Field, s: &Settings, size: usize) -> Result<Table> {
    let targets = ws_targets(f);
    let names: Vec<&str> = targets.iter().map(|t| t.0).collect();
    let results =
        rounds(s, &names, |i| ws::ping_pong(&targets[i].1, s.ws_connections, size, s.turn, 10_000_000)).await?;
    Ok(Table {
        key: if size <= 32 { "pingpong_32" } else { "pingpong_4k" },
        title: format!(
            "WebSocket ping-pong, {size}-byte messages: {} connections, each waiting for its echo, {:?} turns; round-trip latency",
            s.ws_connections, s.turn
        ),
        unit: "messages/s",
        rows: rows_of(&names, results, round_trips),
        higher_is_better: true,
        baseline: None,
    })
}

async fn handshakes(f: &Field, s: &Settings) -> Result<Table> {
    let targets = ws_targets(f);
    let names: Vec<&str> = targets.iter().map(|t| t.0).collect();
    let results =
        rounds(s, &names, |i| ws::handshakes(&targets[i].1, s.handshake_concurrency, s.turn, s.handshake_max)).await?;
    Ok(Table {
        key: "ws_handshakes",
        title: format!(
            "WebSocket sessions (connect, upgrade, one 32-byte echo, close): {} concurrent, {:?} turns",
            s.handshake_concurrency, s.turn
        ),
        unit: "sessions/s",
        rows: rows_of(&names, results, round_trips),
        higher_is_better: true,
        baseline: None,
    })
}

/// Streaming: 16 connections each with 32 messages of 64 bytes in flight.
async fn stream(f: &Field, s: &Settings) -> Result<Table> {
    let mut targets = ws_targets(f);
    targets
        .insert(1, ("raw byte copy", Target { addr: f.raw_copy, host: "127.0.0.1".into(), path: format!("/?{KEY}") }));
    stream_table(s, "stream", "", &targets, None).await
}

/// Streams through each of `targets` (16 connections each with 32 messages of 64 bytes
/// in flight), in rounds; `what` qualifies the title.
async fn stream_table(
    s: &Settings,
    key: &'static str,
    what: &str,
    targets: &[(&str, Target)],
    baseline: Option<&'static str>,
) -> Result<Table> {
    let names: Vec<&str> = targets.iter().map(|t| t.0).collect();
    let results = rounds(s, &names, |i| ws::stream(&targets[i].1, 16, s.stream_messages, 64, 32)).await?;
    let what = if what.is_empty() { String::new() } else { format!(" {what}") };
    Ok(Table {
        key,
        title: format!(
            "WebSocket streaming, 64-byte messages{what}: 16 connections x {} messages, 32 in flight each",
            s.stream_messages
        ),
        unit: "messages/s",
        rows: rows_of(&names, results, |r| (*r, None, None)),
        higher_is_better: true,
        baseline,
    })
}

/// Bytes of resident memory per idle proxied WebSocket: each proxy freshly started,
/// RSS after `n` connections (each after one echoed message) minus RSS before, over n.
async fn memory(files: &Files, n: usize) -> Result<Table> {
    let mut rows = Vec::new();
    let mut names = vec!["nginx", "haproxy", "tollgate, metering off", "tollgate, metering on"];
    let baseline = peers::baseline_bin();
    if baseline.is_some() {
        names.push(BASELINE_METERED);
    }
    for name in names {
        // Fresh processes: memory freed by earlier measures would hide the growth.
        let (_echo, echo) = peers::own(&["echo"]).await?;
        let backends = Backends { http: echo, https: echo, ws: echo, grpc: echo };
        let (process, fronts, host) = match name {
            "nginx" => {
                let (p, fr) = peers::nginx_proxy(&files.dir, backends, &files.cert, &files.key).await?;
                (p, fr, "127.0.0.1")
            }
            "haproxy" => {
                let (p, fr) = peers::haproxy(&files.dir, backends, &files.both).await?;
                (p, fr, "127.0.0.1")
            }
            BASELINE_METERED => {
                let bin = baseline.as_deref().context("no baseline")?;
                let (p, fr) =
                    peers::tollgate_from(None, bin, &files.dir, backends, &files.cert, &files.key, &[]).await?;
                (p, fr, "metered.localhost")
            }
            _ => {
                let (p, fr) = peers::tollgate(&files.dir, backends, &files.cert, &files.key, &[]).await?;
                (p, fr, if name.ends_with("on") { "metered.localhost" } else { "ws.localhost" })
            }
        };
        let target = Target { addr: fronts.ws, host: host.into(), path: format!("/?{KEY}") };
        let before = process.rss()?;
        let open = ws::open_idle(&target, n).await.with_context(|| name.to_string())?;
        let after = process.rss()?;
        drop(open);
        let per = after.saturating_sub(before) as f64 / n as f64;
        rows.push(Row { name: name.into(), rate: per, p50: None, p99: None, rounds: vec![per], split: None });
    }
    Ok(Table {
        key: if n >= 5000 { "memory_many" } else { "memory_few" },
        title: format!("Memory per idle proxied WebSocket, {n} connections (RSS growth ÷ connections)"),
        unit: "bytes/connection",
        rows,
        higher_is_better: false,
        baseline: None,
    })
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|c| c.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string()))
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": peers::workers(),
        "memory_kib": mem,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "nginx": peers::version("nginx", "-v"),
        "haproxy": peers::version("haproxy", "-v"),
        "wrk": peers::version("wrk", "-v"),
        "openssl": peers::version("openssl", "version"),
        "tollgate": peers::tollgate_bin().map(|b| peers::version(&b.display().to_string(), "--version")).unwrap_or_default(),
        "commit": std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
    })
}

fn render(s: &Settings, report: &Report) -> String {
    let m = machine();
    let field = |k: &str| m[k].as_str().map(str::to_string).unwrap_or_else(|| m[k].to_string());
    let mut out = format!(
        "## Run of {} (commit {})\n\nMachine: {} × {}, {} KiB memory, Linux {}. Peers: {}; {}; {}; {}. Tollgate: {}.\n\
         Settings: {} rounds, contestants alternating within each round; rates are medians of the rounds.\n\n",
        today(),
        field("commit"),
        field("cores"),
        field("cpu"),
        field("memory_kib"),
        field("kernel"),
        field("nginx"),
        field("haproxy"),
        field("wrk"),
        field("openssl"),
        field("tollgate"),
        s.rounds,
    );
    for t in &report.tables {
        out.push_str(&t.markdown());
        out.push('\n');
    }
    if !report.scale.is_empty() {
        out.push_str(&scale::markdown(&report.scale));
        out.push_str("\nPlotted in `scale.svg` beside this file.\n");
    }
    if let Some(o) = &report.soak {
        out.push_str(&soak::markdown(o));
        out.push_str("\nPlotted in `soak.svg` beside this file; every sample is in `latest.json`.\n");
    }
    out
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
