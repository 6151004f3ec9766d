//! Redis high availability against real servers on loopback: a master, two replicas and
//! three `redis-server --sentinel` processes (Sentinel failover, graceful and by
//! SIGKILL), and a three-master Redis Cluster made by `redis-cli --cluster create`
//! (keys hashed to slots, a slot migrated while counting: `ASK`, then `MOVED`).
//! What is asserted is what an operator relies on: across the move no more than the
//! limit is admitted, and after it exactly the limit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_counters::{
    Algorithm, Check, CountersError, Decision, EdgeCheck, EdgeDecision, FailureMode, Period, RedisCounters,
};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A private directory, removed with its servers.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("tollgate-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `redis-server` processes, killed when dropped, and the lines of each one's log.
#[derive(Default)]
struct Servers(Vec<Server>);

struct Server {
    port: u16,
    child: Child,
    log: std::sync::mpsc::Receiver<String>,
}

/// What a replica logs once it has its master's data: a full sync, or a partial one.
const SYNCED: [&str; 2] = ["MASTER <-> REPLICA sync: Finished with success", "accepted a Partial Resynchronization"];

impl Servers {
    /// Starts `redis-server` on a free loopback port with `args` (a config file
    /// first, if any) and waits until its log says it listens ("Ready to accept
    /// connections", or a sentinel's "Sentinel ID is", both written once the listener
    /// is up); returns the port. The log is read to its end, so the pipe never fills.
    fn start(&mut self, dir: &Dir, args: &[&str]) -> u16 {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(args)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(&dir.0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server (apt install redis-server)");
        let out = child.stdout.take().expect("stdout");
        let (lines, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        self.0.push(Server { port, child, log });
        self.logged(port, &[&["Ready to accept connections", "Sentinel ID is"]]);
        port
    }

    /// Waits (at most 30 s) until the log of the server on `port` has had, for each
    /// group of `events`, a line holding one of the group's texts, in any order; the
    /// lines read are consumed.
    fn logged(&self, port: u16, events: &[&[&str]]) {
        let server = self.0.iter().find(|s| s.port == port).expect("a server of ours");
        let mut waiting: Vec<&[&str]> = events.to_vec();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = server.log.recv_timeout(left).unwrap_or_else(|_| panic!("{port} never logged {waiting:?}"));
            waiting.retain(|group| !group.iter().any(|text| line.contains(text)));
        }
    }

    fn kill(&mut self, port: u16) {
        let at = self.0.iter().position(|s| s.port == port).expect("a server of ours");
        let mut server = self.0.remove(at);
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &mut self.0 {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// One command to the server on `port`, through `redis-cli` (a peer no one here wrote).
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output();
    let out = out.expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits (bounded) until `ready` holds, checking every 20 ms: for where a gateway node
/// writes, which nothing announces; servers' states are awaited on their logs and
/// failovers on their `+switch-master` message instead.
fn until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Listens on the sentinel at `port` for `+switch-master` (which every sentinel
/// publishes once it knows a failover's new master); the future resolves to the new
/// master's port. Subscribed before it returns, so a failover started afterwards is
/// not missed.
async fn switch_master(port: u16) -> impl std::future::Future<Output = u16> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("a sentinel");
    pubsub.subscribe("+switch-master").await.expect("subscribe");
    async move {
        let mut messages = pubsub.into_on_message();
        let message = tokio::time::timeout(Duration::from_secs(30), futures_util::StreamExt::next(&mut messages))
            .await
            .expect("no failover within 30 s")
            .expect("the sentinel went away");
        // `SERVICE OLD-IP OLD-PORT NEW-IP NEW-PORT`
        let payload: String = message.get_payload().expect("a text payload");
        payload.split(' ').nth(4).and_then(|p| p.parse().ok()).expect("a new master's port")
    }
}

fn role(port: u16) -> String {
    cli(port, &["ROLE"]).lines().next().unwrap_or_default().to_string()
}

fn hits(max: u64) -> [Check<'static>; 1] {
    [Check { metric: "hits", period: Period::Minute, max, delta: 1 }]
}

/// Asks until the counters answer (strict mode answers with an error, nothing
/// counted, until the node has read the sentinels' news and moved): a few
/// milliseconds after the `+switch-master` the test awaited, which the node hears on
/// its own subscription.
async fn first_answer(counters: &RedisCounters, app: &str, max: u64, now: i64) -> Decision {
    let started = Instant::now();
    loop {
        match counters.authorize(app, &hits(max), now).await {
            Ok(d) => return d,
            Err(CountersError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no answer after the failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn admitted(d: &Decision) -> u64 {
    u64::from(matches!(d, Decision::Allowed(_)))
}

// A master, two replicas and three sentinels. The counters follow the master through
// a graceful failover under load (`SENTINEL FAILOVER` to the sentinel listed first,
// which leads it) and through a SIGKILL of the new master (refused connections until
// the sentinels agree on a successor): strict mode answers meanwhile, every admitted
// request is counted on the new master, and the limit is exact across both moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_the_master_through_sentinel_failovers() {
    let dir = Dir::new("sentinel");
    let mut servers = Servers::default();
    let first = servers.start(&dir, &[]);
    let replicas: Vec<u16> =
        (0..2).map(|_| servers.start(&dir, &["--replicaof", "127.0.0.1", &first.to_string()])).collect();
    for r in &replicas {
        servers.logged(*r, &[&SYNCED]);
    }
    let mut sentinels = Vec::new();
    for i in 0..3 {
        let conf = dir.0.join(format!("sentinel-{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor tg 127.0.0.1 {first} 2\n\
                 sentinel down-after-milliseconds tg 500\n\
                 sentinel failover-timeout tg 5000\n"
            ),
        )
        .expect("sentinel config");
        sentinels.push(servers.start(&dir, &[conf.to_str().expect("utf-8 path"), "--sentinel"]));
    }
    // Each sentinel learns the replicas (`+slave`) and the other sentinels (`+sentinel`).
    for s in &sentinels {
        let replicas: Vec<String> = replicas.iter().map(|r| format!("+slave slave 127.0.0.1:{r}")).collect();
        let others: Vec<String> = sentinels.iter().filter(|o| *o != s).map(|o| format!("127.0.0.1 {o} @ tg")).collect();
        let texts: Vec<[&str; 1]> = replicas.iter().chain(&others).map(|t| [t.as_str()]).collect();
        servers.logged(*s, &texts.iter().map(|t| &t[..]).collect::<Vec<_>>());
    }

    // First in the list, a "sentinel" that accepts connections and never answers:
    // the others are asked at the same time, so it delays nobody.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming().take(1_000) {
            held.push(stream);
        }
    });
    let mut list = vec![format!("127.0.0.1:{hung_port}")];
    list.extend(sentinels.iter().map(|p| format!("127.0.0.1:{p}")));
    let url = format!("redis+sentinel://{}/tg", list.join(","));
    let node = || RedisCounters::connect(&url, "ha", FailureMode::Strict, Duration::from_millis(500));
    let counters = Arc::new(node().await.expect("a sentinel URL"));
    let other = Arc::new(node().await.expect("a sentinel URL"));
    assert_eq!(counters.server(), format!("127.0.0.1:{first}"), "the sentinels name the first master");

    let (app, now, max) = ("sentinel-app", now(), 12);
    let mut total = 0;
    for _ in 0..4 {
        total += admitted(&counters.authorize(app, &hits(max), now).await.expect("the master answers"));
    }
    assert_eq!(total, 4);

    // Graceful, under load from two nodes: the sentinels promote the replica while the
    // old master still takes writes (it is demoted seconds later). The nodes stop
    // writing to it when a sentinel says it promotes the replica, and move when it
    // says the master switched — without a failed call to tell them.
    let busy = "sentinel-busy";
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |node: Arc<RedisCounters>| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u64, 0u64);
            for _ in 0..200_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match node.authorize(busy, &hits(1_000_000), now).await {
                    Ok(Decision::Allowed(_)) => admitted += 1,
                    Ok(Decision::Exceeded(_)) => panic!("far below the limit"),
                    Err(_) => refused += 1,
                }
            }
            (admitted, refused)
        })
    };
    let loads = [load(counters.clone()), load(other.clone())];
    assert_eq!(cli(first, &["WAIT", "2", "5000"]), "2");
    let switched = switch_master(sentinels[0]).await;
    assert_eq!(cli(sentinels[0], &["SENTINEL", "FAILOVER", "tg"]), "OK");
    let second = switched.await;
    assert!(replicas.contains(&second), "a replica is promoted");
    until("both nodes to move to the promoted replica", Duration::from_secs(30), || {
        [&counters, &other].iter().all(|n| n.server() == format!("127.0.0.1:{second}"))
    });
    let moved_before_demotion = role(first) == "master";
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut busy_admitted = 0;
    for l in loads {
        let (a, _) = l.await.expect("load");
        busy_admitted += a;
    }
    // The old master, demoted, syncs from the new one.
    let from_second = format!("MASTER 127.0.0.1:{second}");
    servers.logged(first, &[&[from_second.as_str()], &SYNCED]);
    let counted = counters.status(busy, &hits(1_000_000), now).await.expect("status")[0].current;
    eprintln!(
        "graceful failover under load: {busy_admitted} admitted, {counted} counted on the new master; moved before the old master was demoted: {moved_before_demotion}"
    );
    assert!(counted <= busy_admitted, "counted more than admitted");
    assert!(busy_admitted - counted <= 2, "at most the requests in flight when the promotion began are lost");

    for _ in 0..5 {
        total += admitted(&counters.authorize(app, &hits(max), now).await.expect("the new master answers"));
    }
    assert_eq!(total, 9);
    for r in replicas.iter().filter(|r| **r != second) {
        servers.logged(*r, &[&[from_second.as_str()], &SYNCED]);
    }
    assert_eq!(cli(second, &["WAIT", "2", "5000"]), "2");

    // Abrupt: the master dies; until the sentinels agree (500 ms down-after + an
    // election), strict mode refuses; then the counters move back.
    let switched = switch_master(sentinels[1]).await;
    servers.kill(second);
    match counters.authorize(app, &hits(max), now).await {
        Err(CountersError::Unavailable(_)) => {}
        other => panic!("strict mode answers while no master is up: {other:?}"),
    }
    let third = switched.await;
    assert_ne!(third, second);
    let d = first_answer(&counters, app, max, now).await;
    total += admitted(&d);
    assert_eq!(counters.server(), format!("127.0.0.1:{third}"), "the counters moved to the promoted server");
    for _ in 0..10 {
        total += admitted(&counters.authorize(app, &hits(max), now).await.expect("the promoted master answers"));
    }
    assert_eq!(total, max, "exactly the limit across two failovers");
    let status = counters.status(app, &hits(max), now).await.expect("status");
    assert_eq!(status[0].current, max);
}

/// Three masters, slots split by `redis-cli --cluster create`.
struct Cluster {
    _dir: Dir,
    servers: Servers,
    ports: Vec<u16>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = Dir::new("cluster");
        let mut servers = Servers::default();
        let mut ports = Vec::new();
        for i in 0..3 {
            let conf = format!("nodes-{i}.conf");
            let args = ["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--cluster-node-timeout", "1000"];
            ports.push(servers.start(&dir, &args));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        for p in &ports {
            servers.logged(*p, &[&["Cluster state changed: ok"]]);
        }
        Cluster { _dir: dir, servers, ports }
    }

    fn url(&self) -> String {
        // One seed is enough: the client learns the others from it.
        format!("redis+cluster://127.0.0.1:{}", self.ports[0])
    }

    fn node_id(&self, port: u16) -> String {
        cli(port, &["CLUSTER", "MYID"])
    }

    /// The port of the master that serves `slot` now.
    fn owner(&self, slot: u16) -> u16 {
        *self
            .ports
            .iter()
            .find(|p| {
                cli(**p, &["CLUSTER", "NODES"])
                    .lines()
                    .find(|l| l.contains("myself"))
                    .is_some_and(|l| l.split_whitespace().skip(8).any(|r| covers(r, slot)))
            })
            .expect("an owner")
    }
}

/// Whether a `CLUSTER NODES` slot field (`5461-10922` or `42`) covers `slot`.
fn covers(range: &str, slot: u16) -> bool {
    match range.split_once('-') {
        Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b),
        None => range.parse::<u16>() == Ok(slot),
    }
}

// Four nodes count 40 applications (keys spread over the three masters by their
// `{application}` hash tag) with one script per request, exactly; with quota leasing
// too; edge limits with several keys (several slots) in one request work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_exactly_across_slots_and_nodes() {
    let cluster = Cluster::start();
    let now = now();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut n = RedisCounters::connect(&cluster.url(), "ha", FailureMode::Strict, Duration::from_secs(2))
            .await
            .expect("a cluster URL");
        assert!(n.cluster());
        if i >= 2 {
            n.set_lease(5);
        }
        nodes.push(Arc::new(n));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..40 {
        for r in 0..20 {
            let node = nodes[(a + r) % nodes.len()].clone();
            tasks.spawn(async move {
                let app = format!("cluster-app-{a}");
                let d = node.authorize(&app, &hits(10), now).await.expect("the cluster answers");
                (a, admitted(&d))
            });
        }
    }
    let mut per_app = [0u64; 40];
    while let Some(r) = tasks.join_next().await {
        let (a, n) = r.expect("task");
        per_app[a] += n;
    }
    assert!(per_app.iter().all(|n| *n <= 10), "never above the limit: {per_app:?}");
    for n in &nodes {
        n.give_back_idle(Duration::ZERO).await;
    }
    // Leases given back: the windows count exactly what was admitted.
    for (a, n) in per_app.iter().enumerate() {
        let status = nodes[0].status(&format!("cluster-app-{a}"), &hits(10), now).await.expect("status");
        assert_eq!(status[0].current, *n, "app {a}");
    }
    let counted: Vec<u64> = cluster.ports.iter().map(|p| cli(*p, &["DBSIZE"]).parse().expect("a number")).collect();
    assert!(counted.iter().filter(|n| **n > 0).count() >= 2, "keys on several masters: {counted:?}");

    // Exactly the limit, for those without leases outstanding: ask again until refused.
    for (a, n) in per_app.iter_mut().enumerate() {
        while *n < 10 {
            let d = nodes[0].authorize(&format!("cluster-app-{a}"), &hits(10), now).await.expect("answers");
            assert!(matches!(d, Decision::Allowed(_)), "app {a} refused at {n} of 10");
            *n += 1;
        }
        let d = nodes[1].authorize(&format!("cluster-app-{a}"), &hits(10), now).await.expect("answers");
        assert!(matches!(d, Decision::Exceeded(_)), "app {a} admitted past its limit");
    }

    // Two limiters, two keys, two slots: one script each.
    let edge = |key: &str, count| EdgeCheck {
        key: key.to_string(),
        algorithm: Algorithm::FixedWindow { count, window_ms: 60_000 },
    };
    let checks = [edge("client-a", 3), edge("route-b", 2)];
    let t = now * 1000;
    assert_eq!(nodes[0].edge(&checks, t).await.expect("edge"), EdgeDecision::Allowed);
    assert_eq!(nodes[1].edge(&checks, t).await.expect("edge"), EdgeDecision::Allowed);
    match nodes[2].edge(&checks, t).await.expect("edge") {
        EdgeDecision::Refused { index: 1, .. } => {}
        other => panic!("the second limiter refuses the third request: {other:?}"),
    }

    // A master without a replica dies: its slots have no master, and the health check
    // (`/status/ready`'s) says so although the other masters still answer PING.
    assert!(nodes[0].ping().await.is_ok());
    let mut cluster = cluster;
    let dead = cluster.ports[2];
    cluster.servers.kill(dead);
    for p in cluster.ports.iter().filter(|p| **p != dead) {
        cluster.servers.logged(*p, &[&["Cluster state changed: fail"]]);
    }
    assert!(nodes[0].ping().await.is_err(), "the cluster still counts as healthy");
}

// A slot moves between masters while an application is counted in it: during the
// migration the old owner answers ASK (its keys are gone), after it MOVED; the client
// follows both and the count stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_loses_no_count() {
    let cluster = Cluster::start();
    let now = now();
    let counters = RedisCounters::connect(&cluster.url(), "ha", FailureMode::Strict, Duration::from_secs(2))
        .await
        .expect("a cluster URL");
    let app = "migrating-app";
    let slot: u16 = cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", &format!("{{{app}}}")]).parse().expect("a slot");
    let from = cluster.owner(slot);
    let to = *cluster.ports.iter().find(|p| **p != from).expect("another master");
    let max = 9;
    let mut total = 0;
    for _ in 0..3 {
        total += admitted(&counters.authorize(app, &hits(max), now).await.expect("answers"));
    }

    let (from_id, to_id, s) = (cluster.node_id(from), cluster.node_id(to), slot.to_string());
    assert_eq!(cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]), "OK");
    assert_eq!(cli(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]), "OK");
    let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(!keys.is_empty(), "the application's window is in its slot");
    let mut migrate = vec!["MIGRATE", "127.0.0.1"];
    let to_port = to.to_string();
    migrate.extend([to_port.as_str(), "", "0", "5000", "KEYS"]);
    migrate.extend(keys.iter().copied());
    assert_eq!(cli(from, &migrate), "OK");
    // Keys moved, slot still migrating: the old owner answers ASK.
    for _ in 0..3 {
        total += admitted(&counters.authorize(app, &hits(max), now).await.expect("answers through ASK"));
    }
    for p in &cluster.ports {
        assert_eq!(cli(*p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]), "OK");
    }
    assert_eq!(cluster.owner(slot), to);
    // Slot moved: MOVED, then the new owner.
    for _ in 0..6 {
        total += admitted(&counters.authorize(app, &hits(max), now).await.expect("answers through MOVED"));
    }
    assert_eq!(total, max, "exactly the limit across the migration");
    assert_eq!(cli(to, &["GET", keys[0]]), max.to_string());
}
