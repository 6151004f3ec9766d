//! Redis counters against a real Redis: the machine's (REDIS_URL, default
//! redis://127.0.0.1:6379) for counting and leases, and a private `redis-server` this
//! test starts and stops for the failure modes.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_counters::{Check, Counters, CountersError, Decision, FailureMode, Period, RedisCounters};

/// Windows are keys that expire a minute after the window ends, by Redis' clock: tests
/// count in the present. Each test reads the time once and passes it everywhere, so no
/// window boundary falls between two calls.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// An application id no other run uses.
fn app(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

async fn redis(mode: FailureMode) -> RedisCounters {
    RedisCounters::connect(&url(), "tollgate-test", mode, Duration::from_secs(2)).await.expect("url")
}

fn hits(max: u64) -> [Check<'static>; 1] {
    [Check { metric: "hits", period: Period::Minute, max, delta: 1 }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_nodes_admit_exactly_the_limit() {
    let now = now();
    let app = app("exact");
    let nodes: Vec<std::sync::Arc<RedisCounters>> =
        futures_join(8, |_| redis(FailureMode::Strict)).await.into_iter().map(std::sync::Arc::new).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let (node, app) = (nodes[i % nodes.len()].clone(), app.clone());
        tasks.spawn(async move {
            let checks = [
                Check { metric: "hits", period: Period::Minute, max: 100, delta: 1 },
                Check { metric: "hits", period: Period::Day, max: 10_000, delta: 1 },
            ];
            matches!(node.authorize(&app, &checks, now).await.expect("redis answers"), Decision::Allowed(_))
        });
    }
    let mut admitted = 0;
    while let Some(r) = tasks.join_next().await {
        admitted += usize::from(r.expect("task"));
    }
    assert_eq!(admitted, 100);
    let status = nodes[0].status(&app, &hits(100), now).await.expect("status");
    assert_eq!(status[0].current, 100);
}

/// Gateway workers each call Redis on a connection of their own: three threads with
/// their own runtimes and worker slots still count as one (exactly the limit passes),
/// and each worker's connection is a separate client of Redis (a private redis-server,
/// so nothing else connects meanwhile).
#[test]
fn worker_threads_count_together_on_their_own_connections() {
    let server = PrivateRedis::start();
    let now = now();
    let probe = tokio::runtime::Runtime::new().expect("runtime");
    let shared = std::sync::Arc::new(probe.block_on(async {
        RedisCounters::connect(&server.url(), "tollgate-test", FailureMode::Strict, Duration::from_secs(2))
            .await
            .expect("url")
    }));
    let clients = || -> usize {
        probe.block_on(async {
            let client = ::redis::Client::open(server.url()).expect("url");
            let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
            let list: String = ::redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.expect("client list");
            // Less this probe's own connection.
            list.lines().count() - 1
        })
    };
    let workers: Vec<_> = (1..=3)
        .map(|slot| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                tollgate_counters::set_thread_slot(slot);
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                let admitted = rt.block_on(async {
                    let mut admitted = 0;
                    for _ in 0..100 {
                        let d = shared.authorize("app", &hits(150), now).await.expect("redis answers");
                        admitted += usize::from(matches!(d, Decision::Allowed(_)));
                    }
                    admitted
                });
                // The runtime (and the connection's task on it) lives until counted.
                (admitted, rt)
            })
        })
        .collect();
    let results: Vec<(usize, tokio::runtime::Runtime)> =
        workers.into_iter().map(|w| w.join().expect("worker")).collect();
    assert_eq!(results.iter().map(|r| r.0).sum::<usize>(), 150, "300 calls from three workers against 150");
    assert_eq!(clients(), 3, "one connection per worker (the shared one was never used)");
}

async fn futures_join<T, F: Future<Output = T>>(n: usize, f: impl Fn(usize) -> F) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(f(i).await);
    }
    out
}

#[tokio::test]
async fn all_or_nothing_and_windows_expire_after_they_end() {
    let now = now();
    let r = redis(FailureMode::Strict).await;
    let app = app("windows");
    let both = [
        Check { metric: "hits", period: Period::Minute, max: 10, delta: 2 },
        Check { metric: "connect", period: Period::Hour, max: 3, delta: 2 },
    ];
    assert!(
        matches!(r.authorize(&app, &both, now).await, Ok(Decision::Allowed(Some(ref s))) if s.metric == "connect" && s.remaining() == 1)
    );
    match r.authorize(&app, &both, now).await {
        Ok(Decision::Exceeded(s)) => {
            assert_eq!((s.metric.as_str(), s.current, s.reset_at), ("connect", 2, Period::Hour.window(now).1))
        }
        other => panic!("{other:?}"),
    }
    let st = r.status(&app, &both, now).await.expect("status");
    assert_eq!((st[0].current, st[1].current), (2, 2), "nothing of the refused request was applied");
    // The next minute is a new window.
    assert!(matches!(r.authorize(&app, &both[..1], now + 60).await, Ok(Decision::Allowed(_))));

    let mut conn = redis::Client::open(url()).expect("url").get_multiplexed_async_connection().await.expect("redis");
    let key = format!("tollgate-test:{{{app}}}:w:hits:minute:{}", Period::Minute.window(now).0);
    let at: i64 = redis::cmd("EXPIRETIME").arg(&key).query_async(&mut conn).await.expect("expiretime");
    assert_eq!(at, Period::Minute.window(now).1.expect("end") + 60);
    let eternal = [Check { metric: "hits", period: Period::Eternity, max: 5, delta: 1 }];
    assert!(matches!(r.authorize(&app, &eternal, now).await, Ok(Decision::Allowed(_))));
    let at: i64 = redis::cmd("EXPIRETIME")
        .arg(format!("tollgate-test:{{{app}}}:w:hits:eternity:0"))
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert_eq!(at, -1, "eternity never expires");
}

#[tokio::test]
async fn connection_leases_cap_free_and_expire() {
    let r = redis(FailureMode::Strict).await;
    let app = app("leases");
    let lease = Duration::from_millis(400);
    let a = r.acquire(&app, Some(2), lease, "node-a:1").await.expect("redis").expect("first slot");
    let b = r.acquire(&app, Some(2), lease, "node-b:1").await.expect("redis").expect("second slot");
    assert_eq!(r.acquire(&app, Some(2), lease, "node-a:2").await.expect("redis"), None, "the cap holds");
    assert_eq!(r.live(&app).await.expect("live"), vec![a.clone(), b.clone()], "oldest first");
    r.release(&app, &a).await.expect("release");
    let c = r.acquire(&app, Some(2), lease, "node-a:3").await.expect("redis").expect("a freed slot");
    // Node a keeps renewing c; node b "dies": its lease runs out by itself.
    let started = Instant::now();
    loop {
        assert_eq!(r.renew(&app, &[&c], lease).await.expect("renew"), 1, "c is still held");
        let live = r.live(&app).await.expect("live");
        if live == vec![c.clone()] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "b's lease never expired: {live:?}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a lease that runs on Redis' clock
    }
    assert!(r.acquire(&app, Some(2), lease, "node-a:4").await.expect("redis").is_some());
    assert!(r.acquire(&app, None, lease, "node-a:5").await.expect("redis").is_some(), "no cap");
}

/// A private Redis on a free loopback port, stopped on drop.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// After Redis restarts, the first call on a connection it dropped was answered by the
/// failure mode (503 in `strict`), however long after the restart (found by an
/// adversarial run): it is now sent again on a new connection.
#[tokio::test]
async fn after_a_redis_restart_the_next_call_is_answered() {
    let now = now();
    let mut server = PrivateRedis::start();
    let node = redis_at(&server.url()).await;
    let checks = hits(1_000);
    assert!(matches!(node.authorize("restart", &checks, now).await, Ok(Decision::Allowed(_))));
    server.stop();
    server.restart();
    for _ in 0..3 {
        let d = node.authorize("restart", &checks, now).await;
        assert!(matches!(d, Ok(Decision::Allowed(_))), "{d:?}");
    }
}

async fn redis_at(url: &str) -> RedisCounters {
    RedisCounters::connect(url, "tollgate-test", FailureMode::Strict, Duration::from_secs(2)).await.expect("url")
}

#[tokio::test]
async fn failure_modes_when_redis_goes_away_and_comes_back() {
    let now = now();
    let mut server = PrivateRedis::start();
    let url = server.url();
    let t = Duration::from_millis(500);
    let strict = Counters::open(&url, "t", FailureMode::Strict, t).await.expect("url");
    let allow = Counters::open(&url, "t", FailureMode::Allow, t).await.expect("url");
    let resilient = Counters::open(&url, "t", FailureMode::Resilient(Duration::from_secs(60)), t).await.expect("url");
    let checks = hits(3);
    for c in [&strict, &allow, &resilient] {
        assert!(matches!(c.authorize("known", &checks, now).await, Ok(Decision::Allowed(_))));
    }
    // "known" has used 3 of 3 now: resilient remembers "exceeded".
    assert!(matches!(resilient.authorize("known", &checks, now).await, Ok(Decision::Exceeded(_))));
    assert!(matches!(resilient.authorize("fresh", &checks, now).await, Ok(Decision::Allowed(_))));

    server.stop();
    assert!(strict.authorize("known", &checks, now).await.is_err(), "strict refuses");
    for _ in 0..5 {
        assert!(matches!(allow.authorize("known", &checks, now).await, Ok(Decision::Allowed(None))), "allow admits");
    }
    assert!(matches!(resilient.authorize("known", &checks, now).await, Ok(Decision::Exceeded(_))), "last: exceeded");
    assert!(matches!(resilient.authorize("fresh", &checks, now).await, Ok(Decision::Allowed(_))), "last: allowed");
    assert!(resilient.authorize("stranger", &checks, now).await.is_err(), "no decision to repeat");
    let allow_r = allow.redis().expect("redis");
    assert_eq!(allow_r.pending(), 5);
    assert!(allow_r.reconcile().await.is_err(), "still away");
    assert_eq!(allow_r.pending(), 5, "nothing lost");

    server.restart();
    // The first calls may meet the old connection's failure; within a bounded number
    // of tries the node is back.
    let started = Instant::now();
    while strict.authorize("other", &checks, now).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "strict never recovered");
    }
    while allow_r.reconcile().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "allow never reconciled");
    }
    assert_eq!(allow_r.pending(), 0);
    // A fresh Redis (no persistence) holds what was counted while it was away.
    let st = strict.status("known", &checks, now).await.expect("status");
    assert_eq!(st[0].current, 5);
    assert!(matches!(strict.authorize("known", &checks, now).await, Ok(Decision::Exceeded(_))));
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_fix() {
    let e = Counters::open("mysql://x", "t", FailureMode::Strict, Duration::from_secs(1)).await.expect_err("bad");
    for form in ["memory", "redis://[[USER]:PASSWORD@]HOST:PORT", "redis+sentinel://", "redis+cluster://"] {
        assert!(e.to_string().contains(form), "{e}");
    }
    let e = Counters::open("redis+sentinel://:pw@127.0.0.1:1", "t", FailureMode::Strict, Duration::from_secs(1))
        .await
        .expect_err("no service");
    assert!(e.to_string().contains("/SERVICE") && !e.to_string().contains("pw"), "{e}");
    assert!(matches!(
        Counters::open("memory", "t", FailureMode::Strict, Duration::from_secs(1)).await,
        Ok(Counters::Memory(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_limits_in_redis_hold_across_clients_and_match_memory() {
    use tollgate_counters::{Algorithm, EdgeCheck, EdgeDecision, EdgeMemory};
    let nodes: Vec<std::sync::Arc<RedisCounters>> =
        futures_join(4, |_| redis(FailureMode::Strict)).await.into_iter().map(std::sync::Arc::new).collect();
    let key = app("edge");
    let now_ms = now() * 1000;
    let fixed = EdgeCheck { key: key.clone(), algorithm: Algorithm::FixedWindow { count: 50, window_ms: 3_600_000 } };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (node, c) = (nodes[i % 4].clone(), fixed.clone());
        tasks.spawn(async move { node.edge(&[c], now_ms).await.expect("redis") == EdgeDecision::Allowed });
    }
    let mut allowed = 0;
    while let Some(r) = tasks.join_next().await {
        allowed += usize::from(r.expect("task"));
    }
    assert_eq!(allowed, 50, "exactly the window's count across four clients");

    // The same sequence of decisions as the in-process store, for every algorithm.
    let memory = EdgeMemory::default();
    let t0 = now_ms - now_ms % 60_000;
    let cases = [
        Algorithm::SlidingWindow { count: 10, window_ms: 60_000 },
        Algorithm::TokenBucket { rate_per_s: 2.0, burst: 3.0 },
        Algorithm::FixedWindow { count: 3, window_ms: 60_000 },
    ];
    for (n, algorithm) in cases.into_iter().enumerate() {
        let c = [EdgeCheck { key: format!("{key}-{n}"), algorithm }];
        // (No instant exactly on a refill boundary: float rounding may differ there.)
        for at in [0, 1, 2, 3, 10, 520, 1_020, 30_000, 60_000, 75_000, 75_001, 75_002, 75_003, 119_000] {
            let (r, m) = (nodes[0].edge(&c, t0 + at).await.expect("redis"), memory.check(&c, t0 + at));
            assert_eq!(
                r == EdgeDecision::Allowed,
                m == EdgeDecision::Allowed,
                "{algorithm:?} at +{at} ms: redis {r:?}, memory {m:?}"
            );
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

// A Redis that stops answering without refusing (SIGSTOP: connections accepted, no
// reply): after FROZEN_AFTER timeouts in a row, calls no longer wait for it — the
// failure mode answers at once — and once it answers a background probe, limits are
// counted in it again. Counts, not times, are asserted.
#[tokio::test]
async fn a_frozen_redis_is_not_waited_for_after_a_few_timeouts() {
    let now = now();
    let server = PrivateRedis::start();
    let allow =
        Counters::open(&server.url(), "frozen", FailureMode::Allow, Duration::from_millis(200)).await.expect("url");
    let checks = hits(1_000);
    assert!(matches!(allow.authorize("a", &checks, now).await, Ok(Decision::Allowed(_))));
    let redis = allow.redis().expect("redis");
    assert_eq!(redis.calls(), (1, 0));

    let pid = server.child.as_ref().expect("running").id();
    signal(pid, "STOP");
    for _ in 0..20 {
        assert!(matches!(allow.authorize("a", &checks, now).await, Ok(Decision::Allowed(None))), "allow admits");
    }
    let frozen_after = u64::from(tollgate_counters::FROZEN_AFTER);
    assert_eq!(redis.calls(), (1 + frozen_after, 20 - frozen_after), "only the first timeouts waited for Redis");
    assert!(redis.frozen());
    assert_eq!(redis.pending(), 20, "what was admitted meanwhile is kept for later");

    signal(pid, "CONT");
    tokio::time::timeout(Duration::from_secs(10), redis.answering()).await.expect("the probe never saw Redis answer");
    let started = Instant::now();
    assert!(matches!(allow.authorize("a", &checks, now).await, Ok(Decision::Allowed(_))));
    assert_eq!(redis.calls().0, 2 + frozen_after, "asked again");
    while redis.reconcile().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "never reconciled");
    }
    assert_eq!(redis.pending(), 0);
}

// ------------------------------------------------------------------ quota leasing

/// A `strict` node leasing `units` from the Redis at `url`.
async fn leasing_at(url: &str, timeout: Duration, units: u64) -> RedisCounters {
    let mut r = RedisCounters::connect(url, "tollgate-test", FailureMode::Strict, timeout).await.expect("url");
    r.set_lease(units);
    r
}

async fn leasing(units: u64) -> RedisCounters {
    leasing_at(&url(), Duration::from_secs(2), units).await
}

/// Admits `attempts` requests of one unit on `node`, one after the other; returns how
/// many passed.
async fn admit(node: &RedisCounters, app: &str, checks: &[Check<'_>], now: i64, attempts: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..attempts {
        admitted += usize::from(matches!(node.authorize(app, checks, now).await.expect("redis"), Decision::Allowed(_)));
    }
    admitted
}

/// Four nodes leasing from one window, concurrently: never more than the limit passes
/// while leases are out; once they are given back, exactly the limit has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leasing_nodes_never_admit_more_than_the_limit_and_reach_it_once_leases_return() {
    let now = now();
    let app = app("lease-exact");
    let nodes: Vec<std::sync::Arc<RedisCounters>> =
        futures_join(4, |_| leasing(50)).await.into_iter().map(std::sync::Arc::new).collect();
    let checks = [
        Check { metric: "hits", period: Period::Minute, max: 1_000, delta: 1 },
        Check { metric: "hits", period: Period::Day, max: 100_000, delta: 1 },
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let (node, app) = (nodes[i % nodes.len()].clone(), app.clone());
        tasks.spawn(
            async move { matches!(node.authorize(&app, &checks, now).await.expect("redis"), Decision::Allowed(_)) },
        );
    }
    let mut admitted = 0;
    while let Some(r) = tasks.join_next().await {
        admitted += usize::from(r.expect("task"));
    }
    let outstanding: u64 = nodes.iter().map(|n| n.leased()).sum();
    assert!(admitted <= 1_000, "admitted {admitted} of a limit of 1,000");
    let granted: u64 = nodes[0].status(&app, &checks, now).await.expect("status").iter().map(|s| s.current).sum();
    assert_eq!(granted, 2 * admitted as u64 + outstanding, "Redis holds what was admitted plus what is leased");
    assert!(outstanding <= 4 * 2 * 50, "each node holds at most one lease of 50 per window: {outstanding}");

    for node in &nodes {
        node.give_back_idle(Duration::ZERO).await;
    }
    assert_eq!(nodes[0].status(&app, &checks[..1], now).await.expect("status")[0].current, admitted as u64);
    // One node takes what is left, its leases shrinking to one unit at the end.
    admitted += admit(&nodes[1], &app, &checks, now, 1_100).await;
    assert_eq!(admitted, 1_000, "exactly the limit");
    let minute = nodes[1].status(&app, &checks[..1], now).await.expect("status");
    assert_eq!(minute[0].current, 1_000, "nothing of the minute is left leased");
}

/// Away from the limit, a lease serves many requests: at most one in twenty reaches
/// Redis (the target: ≤ 0.05 calls per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_from_the_limit_few_requests_reach_redis() {
    let now = now();
    let app = app("lease-calls");
    let node = leasing(100).await;
    let checks = [
        Check { metric: "hits", period: Period::Minute, max: 1_000_000, delta: 1 },
        Check { metric: "messages", period: Period::Hour, max: 1_000_000, delta: 2 },
    ];
    // One request after another, each once the refills it started have landed (as
    // when requests come slower than a Redis round trip, or from many clients: the
    // gateway's own work per request is longer than the refill's call).
    let mut admitted = 0;
    for _ in 0..4_000 {
        let d = node.authorize(&app, &checks, now).await.expect("redis");
        admitted += usize::from(matches!(d, Decision::Allowed(_)));
        tokio::time::timeout(Duration::from_secs(10), node.refills_landed()).await.expect("a refill never landed");
    }
    assert_eq!(admitted, 4_000);
    let (asked, skipped) = node.calls();
    let (refills, _) = node.refills();
    assert_eq!(skipped, 0);
    // Only the first request waited on Redis: every lease after it was refilled in
    // the background before it ran out.
    assert_eq!(asked - refills, 1, "{asked} calls, {refills} of them refills: requests waited on Redis");
    // Each refill leases up to 100 units and starts when a quarter of the last is left:
    // `hits` (one per request) every 100 requests or so, `messages` (two) every 50,
    // together when both run low at once.
    assert!(asked * 20 <= 4_000, "{asked} Redis calls for 4,000 requests");
    assert!(asked >= 4_000 / 100, "{asked}: every lease was asked for");
    let status = node.status(&app, &checks, now).await.expect("status");
    assert_eq!(status[0].current + status[1].current, 4_000 + 8_000 + node.leased(), "granted = used + leased");
}

/// `tasks` tasks each making `each` requests with `checks` at `now` on `node`, all at once;
/// returns how many were admitted.
async fn concurrently(
    node: &Arc<RedisCounters>,
    app: &str,
    checks: &[Check<'static>],
    now: i64,
    tasks: usize,
    each: usize,
) -> usize {
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (node, app, checks) = (node.clone(), app.to_string(), checks.to_vec());
        joins.spawn(async move {
            let mut admitted = 0;
            for _ in 0..each {
                let d = node.authorize(&app, &checks, now).await.expect("redis");
                admitted += usize::from(matches!(d, Decision::Allowed(_)));
            }
            admitted
        });
    }
    let mut admitted = 0;
    while let Some(n) = joins.join_next().await {
        admitted += n.expect("task");
    }
    admitted
}

/// Many requests at once, as a gateway under load serves them: one that finds its
/// lease short while a refill is in flight waits for that refill rather than calling
/// Redis for its own need, so calls stay near one per lease however many requests are
/// in flight (before, 50 connections made 0.15 calls per request).
#[tokio::test]
async fn concurrent_requests_wait_for_the_refill_in_flight() {
    let now = now();
    let app = app("lease-concurrent");
    let node = Arc::new(leasing(100).await);
    let (tasks, each) = (50, 80);
    let checks = [
        Check { metric: "hits", period: Period::Minute, max: 1_000_000, delta: 1 },
        Check { metric: "messages", period: Period::Hour, max: 1_000_000, delta: 2 },
    ];
    let admitted = concurrently(&node, &app, &checks, now, tasks, each).await;
    let requests = tasks * each;
    assert_eq!(admitted, requests);
    tokio::time::timeout(Duration::from_secs(10), node.refills_landed()).await.expect("a refill never landed");
    let (asked, skipped) = node.calls();
    let (refills, _) = node.refills();
    println!("{requests} requests: {asked} Redis calls, {refills} of them refills, {} waits", node.lease_waits());
    assert_eq!(skipped, 0);
    assert!(node.lease_waits() > 0, "requests found a refill in flight and waited for it");
    assert!(asked as usize * 20 <= requests, "{asked} Redis calls for {requests} requests (at most 0.05 per request)");
    let status = node.status(&app, &checks, now).await.expect("status");
    assert_eq!(status[0].current + status[1].current, requests as u64 * 3 + node.leased(), "granted = used + leased");
}

/// Requests with two windows at their limit, many at once on two threads: a request
/// that holds an ask never waits for another's, so two requests cannot each wait for
/// the ask the other holds (they did, for the whole Redis timeout, found by an
/// adversarial run). Exactly the limit passes, and no wait reaches the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_holding_an_ask_never_wait_for_each_other() {
    let now = now();
    let app = app("lease-cross");
    let node = Arc::new(leasing_at(&url(), Duration::from_secs(5), 100).await);
    let checks = [
        Check { metric: "hits", period: Period::Day, max: 50, delta: 1 },
        Check { metric: "hits", period: Period::Week, max: 50, delta: 1 },
    ];
    let admitted = concurrently(&node, &app, &checks, now, 16, 30).await;
    assert_eq!(admitted, 50, "exactly the limit of both windows");
    assert_eq!(node.lease_wait_timeouts(), 0, "{} waits, some until the timeout", node.lease_waits());
}

/// Redis frozen while a lease refill is in flight: the requests waiting for it are
/// answered by the failure mode when it times out, without a call of their own (which
/// would have made them wait the timeout twice).
#[tokio::test]
async fn waiters_for_a_refill_that_timed_out_get_the_failure_mode_at_once() {
    let now = now();
    let server = PrivateRedis::start();
    let node = Arc::new(leasing_at(&server.url(), Duration::from_secs(2), 100).await);
    let app = app("lease-frozen");
    let checks = hits(1_000_000);
    assert!(matches!(node.authorize(&app, &checks, now).await, Ok(Decision::Allowed(_))));
    assert_eq!(node.leased(), 100);
    let pid = server.child.as_ref().expect("running").id();
    signal(pid, "STOP");
    // 99 from the lease; the 75th leaves a quarter and starts a refill, which hangs.
    for _ in 0..100 {
        assert!(matches!(node.authorize(&app, &checks, now).await, Ok(Decision::Allowed(_))));
    }
    assert_eq!(node.leased(), 0);
    let (calls, _) = node.calls();
    assert_eq!(node.refills().1, 1, "a refill is in flight");
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (node, app) = (node.clone(), app.clone());
        joins.spawn(async move { node.authorize(&app, &hits(1_000_000), now).await });
    }
    while let Some(r) = joins.join_next().await {
        assert!(matches!(r.expect("task"), Err(CountersError::Unavailable(_))), "strict refuses");
    }
    assert_eq!(node.calls().0, calls, "the waiters made no call of their own");
    assert_eq!(node.lease_wait_timeouts(), 10);
    signal(pid, "CONT");
}

/// A node that dies without giving its leases back costs the window at most its
/// outstanding lease (under-admission, never an excess); a plan change that lowers a
/// limit holds from the next request (the lease under the old value is given back);
/// idle leases go back, and usage read from Redis is then what was used.
#[tokio::test]
async fn a_dead_nodes_lease_a_lowered_limit_and_idle_leases() {
    let now = now();
    let id = app;
    let app = id("lease-death");
    let hits = |max| [Check { metric: "hits", period: Period::Minute, max, delta: 1 }];
    let dead = leasing(100).await;
    assert_eq!(admit(&dead, &app, &hits(10_000), now, 1).await, 1);
    let lost = dead.leased();
    assert_eq!(lost, 100, "a lease of 100 beyond the request (10,000 left / 16 is more)");
    drop(dead);
    let alive = leasing(100).await;
    let admitted = admit(&alive, &app, &hits(10_000), now, 11_000).await;
    assert_eq!(admitted as u64, 10_000 - 1 - lost, "the dead node's lease is lost, nothing more");

    // A lowered limit: 5 used under 1,000, then the limit is 10.
    let app = id("lease-plan");
    let node = leasing(100).await;
    assert_eq!(admit(&node, &app, &hits(1_000), now, 5).await, 5);
    assert!(node.leased() > 0);
    assert_eq!(admit(&node, &app, &hits(10), now, 20).await, 5, "10 - 5 already used");
    assert_eq!(node.status(&app, &hits(10), now).await.expect("status")[0].current, 10);

    // Idle leases go back: Redis then holds what was used.
    let app = id("lease-idle");
    let node = leasing(100).await;
    assert_eq!(admit(&node, &app, &hits(100), now, 3).await, 3);
    // 1 + (100 - 1) / 16 = 7 granted at the first request.
    assert_eq!(node.status(&app, &hits(100), now).await.expect("status")[0].current, 7);
    assert_eq!(node.give_back_idle(Duration::from_secs(3_600)).await, 0, "used just now");
    assert_eq!(node.give_back_idle(Duration::ZERO).await, 4);
    assert_eq!(node.status(&app, &hits(100), now).await.expect("status")[0].current, 3);
}

/// While Redis is away, a node admits on the leases it holds without asking it; past
/// them the failure mode decides, as without leasing.
#[tokio::test]
async fn leases_keep_admitting_while_redis_is_away() {
    let now = now();
    let mut server = PrivateRedis::start();
    let node = leasing_at(&server.url(), Duration::from_millis(500), 10).await;
    let checks = hits(1_000);
    assert_eq!(admit(&node, "a", &checks, now, 1).await, 1);
    assert_eq!((node.calls().0, node.leased()), (1, 10));
    server.stop();
    assert_eq!(admit(&node, "a", &checks, now, 10).await, 10, "the lease serves");
    // Running low, the lease tried a refill in the background (which failed); no
    // request asked Redis.
    assert_eq!(node.calls().0 - node.refills().0, 1, "without asking Redis");
    assert!(node.authorize("a", &checks, now).await.is_err(), "strict, once the lease is used up");
}

/// A lease call that times out while Redis is frozen runs once Redis resumes: the node
/// finds the call's receipt and gives back everything it granted (the failure mode
/// answered that request), so no unit of the window is lost.
#[tokio::test]
async fn a_lease_call_that_timed_out_is_given_back_once_redis_answers() {
    let now = now();
    let server = PrivateRedis::start();
    let node = leasing_at(&server.url(), Duration::from_millis(200), 50).await;
    let checks = hits(1_000);
    // Connected, and the script loaded, before Redis freezes (as on a running node).
    assert_eq!(admit(&node, "b", &checks, now, 1).await, 1);
    let pid = server.child.as_ref().expect("running").id();
    signal(pid, "STOP");
    assert!(node.authorize("a", &checks, now).await.is_err(), "strict: refused while Redis is frozen");
    signal(pid, "CONT");
    // The call ran on resume: 1 + 50 granted. The receipt is read as soon as Redis
    // answers (bounded: it is only observable by asking).
    let started = Instant::now();
    let mut back = 0;
    while back < 51 {
        back += node.give_back_idle(Duration::from_secs(3_600)).await;
        assert!(started.elapsed() < Duration::from_secs(10), "given back {back} of 51");
    }
    assert_eq!(back, 51);
    assert_eq!(node.status("a", &checks, now).await.expect("status")[0].current, 0, "nothing of the window is lost");
    assert_eq!(admit(&node, "a", &checks, now, 1_100).await, 1_000, "the whole limit is still there");
}
