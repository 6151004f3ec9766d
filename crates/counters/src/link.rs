//! Where the counters live: one Redis server, the master that a set of Redis Sentinels
//! name, or a Redis Cluster — and the connections to it.
//!
//! - `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` (and `redis+unix://`): one server.
//! - `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB]`: the
//!   sentinels (port 26379 unless given) are asked which server is the master of
//!   `SERVICE` (the name in their `sentinel monitor` line); the credentials and the
//!   database are the master's (the sentinels are asked without a password). They are
//!   asked every [`SENTINEL_POLL`], again when a call to the master fails (at most every
//!   [`REDISCOVER_EVERY`]), and listened to for a failover's messages: a master being
//!   replaced is not written to from the moment a sentinel promotes a replica (see
//!   `still_deposed`), and the node's connections move to the master they name next.
//! - `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]`: seed nodes of a
//!   Redis Cluster (port 6379 unless given); keys are hashed to slots and `MOVED`/`ASK`
//!   redirections followed by the `redis` crate's cluster client. Every key of one
//!   script shares its application's hash tag (`{application}`), so one request's
//!   limits stay one atomic script on one node.
//!
//! The scheme names follow the `redis+…` convention of other multi-host URLs
//! (`postgres`'s host lists, Celery's `sentinel://`): one `--counters` value says all.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::Notify;

use crate::CountersError;

/// Sentinels are asked for the master at most this often (every failed call asks).
pub const REDISCOVER_EVERY: Duration = Duration::from_millis(100);

/// Worker connections kept at most (workers past this share them).
const WORKER_CONNECTIONS: usize = 64;

/// Default port of a sentinel (`redis-sentinel`'s).
const SENTINEL_PORT: u16 = 26379;

/// What a `--counters` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (`redis://`, `rediss://`, `redis+unix://`): the URL as given.
    Server(String),
    /// Sentinels watching the master of a service.
    Sentinel {
        /// The sentinels, as `redis://HOST:PORT` URLs (asked without credentials).
        sentinels: Vec<String>,
        /// The master's name in the sentinels' `sentinel monitor` lines.
        service: String,
        /// A `redis://` URL carrying the master's credentials and database (its host
        /// is not used: the sentinels name the master).
        node: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// Seed nodes, as `redis://` URLs with the credentials.
        nodes: Vec<String>,
    },
}

impl Target {
    /// Reads a Redis URL (see the module's documentation for the forms).
    ///
    /// # Errors
    ///
    /// [`CountersError::BadUrl`] naming what is wrong: no host, a bad port, no
    /// service name for Sentinel, a database for a cluster (clusters have only 0).
    pub fn parse(url: &str) -> Result<Target, CountersError> {
        let bad = |why: &str| CountersError::BadUrl(format!("`{}`: {why}", redact(url)));
        let (rest, sentinel) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
            (r, true)
        } else if let Some(r) = url.strip_prefix("redis+cluster://") {
            (r, false)
        } else {
            return Ok(Target::Server(url.to_string()));
        };
        // The credentials end at the last `@` (a password may hold one); hosts then
        // end at the first `/`.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        if userinfo.is_some_and(|u| u.contains(['/', '?', '#'])) {
            return Err(bad("percent-encode `/`, `?` and `#` in the user name and password (%2F, %3F, %23)"));
        }
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let auth = userinfo.map_or(String::new(), |u| format!("{u}@"));
        let default_port = if sentinel { SENTINEL_PORT } else { 6379 };
        let mut addresses = Vec::new();
        for host in hosts.split(',') {
            addresses.push(host_port(host, default_port).map_err(|why| bad(&why))?);
        }
        if sentinel {
            let mut segments = path.split('/');
            let service = segments.next().unwrap_or_default();
            if service.is_empty() {
                return Err(bad("name the master's service after the hosts: redis+sentinel://HOST:PORT,…/SERVICE"));
            }
            let db = match segments.next() {
                None | Some("") => 0,
                Some(d) => d.parse::<i64>().map_err(|_| bad(&format!("the database `{d}` is not a number")))?,
            };
            if segments.next().is_some() {
                return Err(bad("the path is /SERVICE[/DB]"));
            }
            let node = format!("redis://{auth}127.0.0.1/{db}");
            node.as_str().into_connection_info().map_err(|e| bad(&e.to_string()))?;
            let sentinels = addresses.iter().map(|a| format!("redis://{a}")).collect();
            Ok(Target::Sentinel { sentinels, service: service.to_string(), node })
        } else {
            if !path.is_empty() {
                return Err(bad("a Redis Cluster has only database 0: leave the path out"));
            }
            let nodes: Vec<String> = addresses.iter().map(|a| format!("redis://{auth}{a}")).collect();
            for n in &nodes {
                n.as_str().into_connection_info().map_err(|e| bad(&e.to_string()))?;
            }
            Ok(Target::Cluster { nodes })
        }
    }
}

/// `HOST[:PORT]` (IPv6 in brackets) as `HOST:PORT`, or why not.
fn host_port(s: &str, default_port: u16) -> Result<String, String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("`{s}`: an IPv6 address ends with `]`"))?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("a host is missing (HOST[:PORT], separated by commas)".to_string());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("`{s}`: the port is 1–65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// `url` with its password replaced by `***` (for messages and logs): whatever lies
/// between `://` and the last `@` is credentials, so a password holding `/` or `@` is
/// hidden too.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not even a scheme: whatever comes before an `@` may be a password.
        return match url.rsplit_once('@') {
            Some((_, after)) => format!("***@{after}"),
            None => url.to_string(),
        };
    };
    match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{after}")
        }
        None => url.to_string(),
    }
}

/// A connection to where the counters live, for one call or many (cheap to clone).
#[derive(Clone)]
pub enum Conn {
    /// One server, or the master that sentinels named (with the sentinel watcher's
    /// wake-up, for failed calls).
    Server(ConnectionManager, Option<Arc<Notify>>),
    /// A Redis Cluster (slots and redirections handled by the client).
    Cluster(ClusterConnection),
    /// No master to write to: the sentinels have not named one (or a failover
    /// deposed it). Every call fails and wakes the sentinel watcher.
    Unknown(Arc<Notify>),
}

/// After a call to a sentinel-named master: the watcher asks the sentinels again (at
/// most every [`REDISCOVER_EVERY`]) when the failure could mean that the master moved.
fn wake_if_moved<T>(wake: &Notify, result: &Result<T, RedisError>) {
    if result.as_ref().is_err_and(moved) {
        wake.notify_one();
    }
}

/// Whether a failed call may mean the master is elsewhere now.
fn moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown)
        )
}

fn no_master() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "no Redis master known yet",
        "the sentinels have not named a master to write to (none answers, or a failover is promoting a replica); they are asked again every second".to_string(),
    ))
}

/// Whether a call failed on a connection that the server had dropped (it restarted,
/// or closed an idle connection): the connection manager makes a new connection, and
/// the call is sent once more on it. A node would otherwise answer the first call of
/// every connection after a Redis restart with the failure mode, however long after.
/// Sending again is safe for limits: the server that dropped the connection cannot
/// have run the call unless it ran it just before closing, and then the retry counts
/// the request twice — one unit fewer admitted, never one more.
fn dropped(e: &RedisError) -> bool {
    e.is_connection_dropped() && !e.is_connection_refusal() && !e.is_timeout()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c, wake) => Box::pin(async move {
                let mut result = c.req_packed_command(cmd).await;
                if result.as_ref().is_err_and(dropped) {
                    result = c.req_packed_command(cmd).await;
                }
                if let Some(wake) = wake {
                    wake_if_moved(wake, &result);
                }
                result
            }),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Unknown(wake) => {
                wake.notify_one();
                Box::pin(async { Err(no_master()) })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c, wake) => Box::pin(async move {
                let mut result = c.req_packed_commands(pipeline, offset, count).await;
                if result.as_ref().is_err_and(dropped) {
                    result = c.req_packed_commands(pipeline, offset, count).await;
                }
                if let Some(wake) = wake {
                    wake_if_moved(wake, &result);
                }
                result
            }),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Unknown(wake) => {
                wake.notify_one();
                Box::pin(async { Err(no_master()) })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c, _) => c.get_db(),
            Conn::Cluster(_) | Conn::Unknown(_) => 0,
        }
    }
}

/// The connections to one server: a shared one and one per gateway worker thread
/// ([`crate::thread_slot`]), made on first use, so that a worker's calls run on its
/// own event loop instead of waking another thread per call.
struct Nodes {
    /// `host:port` of the server (the master, under Sentinel); empty when unknown.
    address: String,
    client: Option<redis::Client>,
    shared: Conn,
    per_worker: Box<[OnceLock<Conn>]>,
}

/// What the connections of a sentinel-watched master share.
struct Shared {
    nodes: ArcSwap<Nodes>,
    config: ConnectionManagerConfig,
    sentinels: Option<Sentinels>,
    /// Wakes the sentinel watcher at once (a failed call, a `+switch-master` event).
    wake: Arc<Notify>,
    /// How long one sentinel (and the master it names) may take to answer.
    timeout: Duration,
    /// The last warning about the sentinels, so that it is logged once, not per poll.
    warned: Mutex<String>,
    /// The configuration epoch of the master written to (Sentinel).
    epoch: std::sync::atomic::AtomicU64,
    /// A failover is promoting a replica: the master at this address and of this
    /// epoch is deposed (see [`still_deposed`]).
    deposed: Mutex<Option<Deposed>>,
}

/// Whether the sentinels' answer (`address` under `epoch`) must wait, `deposed` being
/// the master a failover deposed (address, epoch, when). It ends when another master
/// is named under a newer epoch (the successor), at a `-failover-abort-slave-timeout`
/// message (see [`Shared::undepose`]), once every sentinel answers and none runs a
/// failover any more (`failing_over` false; it ended without a successor), or once
/// the sentinels' `failover-timeout` has passed since the deposition (a promotion
/// completes or is aborted within it). Until then the deposed master is not written
/// to, whatever epoch a sentinel gives it (the sentinel leading a failover reports the
/// new epoch with the old address for a while), and a sentinel that does not answer
/// may be the one leading the failover: a promotion that completes later would drop
/// what the old master took meanwhile. The failure mode answers for as long.
fn still_deposed(deposed: Option<&Deposed>, named: &Named, now: std::time::Instant) -> bool {
    let address = format!("{}:{}", named.address.0, named.address.1);
    deposed.is_some_and(|d| {
        let successor = address != d.address && named.epoch > d.epoch;
        let over = now.saturating_duration_since(d.since) >= named.failover_timeout + Duration::from_secs(1);
        !successor && !over && (named.failing_over || !named.all_answered)
    })
}

/// A master a failover is promoting a replica of.
#[derive(Debug, Clone)]
struct Deposed {
    address: String,
    epoch: u64,
    since: std::time::Instant,
}

/// The sentinels of one service, asked all at once.
struct Sentinels {
    service: String,
    /// One client per sentinel, with its `host:port` for messages.
    clients: Vec<(String, redis::Client)>,
    /// The master's credentials and database (its address is the sentinels' to say).
    node: redis::ConnectionInfo,
}

/// The master one sentinel names, and the configuration epoch it has it from.
#[derive(Debug, PartialEq, Eq)]
struct Named {
    address: (String, u16),
    epoch: u64,
    /// The sentinel is running a failover of the service (`failover_in_progress`);
    /// over every sentinel, whether one is.
    failing_over: bool,
    /// The sentinel's `failover-timeout`; over every sentinel, the longest.
    failover_timeout: Duration,
    /// Over every sentinel: whether each answered.
    all_answered: bool,
}

/// Reads a `SENTINEL MASTER` reply (field, value, field, value, …).
fn named(fields: &[String]) -> Result<Named, String> {
    let field = |name: &str| {
        fields.chunks_exact(2).find(|kv| kv[0] == name).map(|kv| kv[1].as_str()).ok_or(format!("no `{name}` field"))
    };
    let port = field("port")?.parse::<u16>().map_err(|_| "a bad `port` field".to_string())?;
    let epoch = field("config-epoch")?.parse::<u64>().map_err(|_| "a bad `config-epoch` field".to_string())?;
    let failing_over = field("flags")?.split(',').any(|f| f == "failover_in_progress");
    // Sentinel's default when a reply lacks it: 3 minutes.
    let failover_timeout =
        Duration::from_millis(field("failover-timeout").ok().and_then(|t| t.parse().ok()).unwrap_or(180_000));
    Ok(Named { address: (field("ip")?.to_string(), port), epoch, failing_over, failover_timeout, all_answered: true })
}

impl Sentinels {
    /// What one sentinel says, within `timeout`.
    async fn ask(&self, client: &redis::Client, timeout: Duration) -> Result<Named, String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let asked = async {
            let mut conn =
                client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
            // The epoch from `SENTINEL MASTER`, the address from
            // `GET-MASTER-ADDR-BY-NAME`: while the sentinel that led a failover
            // reconfigures the other replicas, the former already has the new epoch
            // but still the old address (for up to seconds); the latter names the
            // promoted replica as soon as it is promoted.
            let (fields, address): (Vec<String>, Option<(String, u16)>) = redis::pipe()
                .cmd("SENTINEL")
                .arg("MASTER")
                .arg(&self.service)
                .cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.service)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let named = named(&fields)?;
            Ok(Named { address: address.ok_or("no address for the service")?, ..named })
        };
        tokio::time::timeout(timeout * 2, asked).await.map_err(|_| "did not answer in time".to_string())?
    }

    /// The master of the service: every sentinel is asked at once, each within
    /// `timeout` (one that hangs delays nobody), and the answer of the highest
    /// configuration epoch wins — after a failover the sentinel that led it has the
    /// new master under a new epoch while others may still name the old one. The
    /// reasons, per sentinel, when none answers.
    ///
    /// The answer says a failover is running if any sentinel runs one.
    async fn master(&self, timeout: Duration) -> Result<Named, String> {
        let asked = self.clients.iter().map(|(name, client)| async move { (name, self.ask(client, timeout).await) });
        let mut best: Option<Named> = None;
        let (mut why, mut failing_over, mut failover_timeout) = (Vec::new(), false, Duration::ZERO);
        for (name, answer) in futures_util::future::join_all(asked).await {
            match answer {
                Ok(n) => {
                    failing_over |= n.failing_over;
                    failover_timeout = failover_timeout.max(n.failover_timeout);
                    if best.as_ref().is_none_or(|b| n.epoch > b.epoch) {
                        best = Some(n);
                    }
                }
                Err(e) => why.push(format!("{name}: {e}")),
            }
        }
        let all_answered = why.is_empty();
        best.map(|b| Named { failing_over, failover_timeout, all_answered, ..b }).ok_or_else(|| why.join("; "))
    }
}

/// Sentinels are asked for the master this often even when nothing happens.
pub const SENTINEL_POLL: Duration = Duration::from_secs(1);

impl Shared {
    /// Logs `message` as a warning unless it was the last one; an empty message clears.
    fn warn_once(&self, message: String) {
        let mut last = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if *last != message {
            if !message.is_empty() {
                tracing::warn!(code = "counters_no_master", "{message}");
            }
            *last = message;
        }
    }

    /// Asks the sentinels which server is the master now and moves to it.
    async fn ask_sentinels(self: &Arc<Self>) {
        let Some(sentinels) = &self.sentinels else { return };
        let service = &sentinels.service;
        let named = match sentinels.master(self.timeout).await {
            Ok(named) => named,
            Err(why) => {
                return self.warn_once(format!(
                    "no sentinel named the master of `{service}` ({why}); the failure mode answers until one does"
                ));
            }
        };
        {
            let mut deposed = self.deposed.lock().unwrap_or_else(|p| p.into_inner());
            if still_deposed(deposed.as_ref(), &named, std::time::Instant::now()) {
                return;
            }
            *deposed = None;
        }
        let Named { address: (host, port), epoch, .. } = named;
        let address = format!("{host}:{port}");
        if address == self.nodes.load().address {
            self.epoch.store(epoch, std::sync::atomic::Ordering::Relaxed);
            return self.warn_once(String::new());
        }
        let info = sentinels.node.clone().set_addr(redis::ConnectionAddr::Tcp(host, port));
        let client = match redis::Client::open(info) {
            Ok(c) => c,
            Err(e) => return self.warn_once(format!("the master the sentinels name, {address}, cannot be used: {e}")),
        };
        // A sentinel may name a server that is not (or not yet) a master: only one that
        // says so is written to.
        if let Err(e) = master_role(&client, self.timeout).await {
            return self.warn_once(format!("the sentinels name {address} as the master of `{service}`, but {e}"));
        }
        match ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone()) {
            Ok(conn) => {
                let was = self.nodes.load().address.clone();
                tracing::warn!(
                    code = "counters_master_moved",
                    from = %if was.is_empty() { "none" } else { &was },
                    to = %address,
                    "the sentinels name a new Redis master: counters move to it"
                );
                let wake = Some(self.wake.clone());
                self.nodes.store(Arc::new(Nodes::server(address, client, Conn::Server(conn, wake))));
                self.epoch.store(epoch, std::sync::atomic::Ordering::Relaxed);
                self.warn_once(String::new());
            }
            Err(e) => self.warn_once(format!("cannot connect to the master the sentinels name, {address}: {e}")),
        }
    }

    /// A sentinel is promoting a replica of the master written to: stop writing to it
    /// now — what it takes from here on, its resynchronisation as a replica would drop
    /// — and let the failure mode answer until the sentinels name the new master.
    fn depose(self: &Arc<Self>) {
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let was = self.nodes.load().address.clone();
        *self.deposed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Deposed { address: was.clone(), epoch, since: std::time::Instant::now() });
        tracing::warn!(
            code = "counters_master_deposed",
            master = %was,
            "a sentinel is promoting a replica: counters are not written until the new master is named"
        );
        self.nodes.store(Arc::new(Nodes::without_workers(Conn::Unknown(self.wake.clone()))));
    }

    /// A failover that deposed the master gave up: the sentinels' answer counts again.
    fn undepose(&self) {
        *self.deposed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.wake.notify_one();
    }

    /// Watches the sentinels for as long as the link lives: asks them every
    /// [`SENTINEL_POLL`], at once when woken (a failed call), and listens on each for
    /// `+switch-master`, which a sentinel publishes the moment a failover promotes a
    /// new master — so the node moves before the old master, still writable until the
    /// sentinels demote it (up to ten seconds later), takes more counts that its
    /// resynchronisation would then drop.
    fn watch(self: &Arc<Self>) {
        let Some(sentinels) = &self.sentinels else { return };
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SENTINEL_POLL) => {}
                    () = wake.notified() => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                shared.ask_sentinels().await;
                drop(shared);
                tokio::time::sleep(REDISCOVER_EVERY).await;
            }
        });
        for (_, client) in &sentinels.clients {
            let (weak, client, timeout) = (Arc::downgrade(self), client.clone(), self.timeout);
            let service = sentinels.service.clone();
            tokio::spawn(async move {
                while weak.strong_count() > 0 {
                    if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout, client.get_async_pubsub()).await
                        && pubsub.subscribe(&[SWITCH, PROMOTING, ABORTED][..]).await.is_ok()
                    {
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                message = futures_util::StreamExt::next(&mut messages) => match message {
                                    Some(m) => {
                                        let Some(shared) = weak.upgrade() else { return };
                                        let payload = m.get_payload::<String>().unwrap_or_default();
                                        match sentinel_event(m.get_channel_name(), &payload, &service) {
                                            Some(Event::Promoting) => shared.depose(),
                                            Some(Event::Switched) => shared.wake.notify_one(),
                                            Some(Event::Aborted) => shared.undepose(),
                                            None => {}
                                        }
                                    }
                                    None => break,
                                },
                                () = tokio::time::sleep(SENTINEL_POLL) => if weak.strong_count() == 0 { return },
                            }
                        }
                    }
                    tokio::time::sleep(SENTINEL_POLL).await;
                }
            });
        }
    }
}

/// A sentinel's message (Redis Sentinel's "Pub/Sub messages"): a failover sent
/// `REPLICAOF NO ONE` to the replica it promotes (payload `slave NAME IP PORT @ SERVICE
/// IP PORT`), the master switched (`SERVICE OLD-IP OLD-PORT NEW-IP NEW-PORT`), or the
/// promotion timed out (`master SERVICE IP PORT`).
const PROMOTING: &str = "+failover-state-send-slaveof-noone";
const SWITCH: &str = "+switch-master";
const ABORTED: &str = "-failover-abort-slave-timeout";

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Promoting,
    Switched,
    Aborted,
}

/// What a sentinel's message on `channel` says about `service`, if anything.
fn sentinel_event(channel: &str, payload: &str, service: &str) -> Option<Event> {
    let of_service = match channel {
        SWITCH => payload.split(' ').next() == Some(service),
        // `%@` instance details: `master NAME IP PORT`, or `TYPE NAME IP PORT @ MASTER IP PORT`.
        _ => match payload.split_once(" @ ") {
            Some((_, master)) => master.split(' ').next() == Some(service),
            None => payload.strip_prefix("master ").and_then(|p| p.split(' ').next()) == Some(service),
        },
    };
    match channel {
        _ if !of_service => None,
        PROMOTING => Some(Event::Promoting),
        SWITCH => Some(Event::Switched),
        ABORTED => Some(Event::Aborted),
        _ => None,
    }
}

/// `Ok` when the server behind `client` answers `ROLE` as a master, within `timeout`.
async fn master_role(client: &redis::Client, timeout: Duration) -> Result<(), String> {
    let config =
        redis::AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    let asked = async {
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.map_err(|e| e.to_string())?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r == b"master" => Ok(()),
            Some(redis::Value::BulkString(r)) => Err(format!("it says it is a {}", String::from_utf8_lossy(r))),
            _ => Err("its ROLE reply cannot be read".to_string()),
        }
    };
    tokio::time::timeout(timeout * 2, asked).await.map_err(|_| "it did not answer ROLE in time".to_string())?
}

impl Nodes {
    fn server(address: String, client: redis::Client, shared: Conn) -> Nodes {
        Nodes {
            address,
            client: Some(client),
            shared,
            per_worker: (0..WORKER_CONNECTIONS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn without_workers(shared: Conn) -> Nodes {
        Nodes { address: String::new(), client: None, shared, per_worker: Box::new([]) }
    }
}

/// The connections to where the counters live (see the module's documentation).
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    /// Connects to `target`, lazily: a node starts even if Redis (or every sentinel)
    /// is away. `config` bounds every connection attempt and call.
    ///
    /// # Errors
    ///
    /// [`CountersError::BadUrl`] when a URL cannot be used (unknown scheme, TLS without
    /// TLS support, cluster nodes with different credentials).
    pub async fn connect(
        target: &Target,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> Result<Link, CountersError> {
        let bad = |u: &str, e: RedisError| CountersError::BadUrl(format!("`{}`: {e}", redact(u)));
        let wake = Arc::new(Notify::new());
        let (nodes, sentinel) = match target {
            Target::Server(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| bad(url, e))?;
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map_err(|e| CountersError::Unavailable(e.to_string()))?;
                let address = client.get_connection_info().addr().to_string();
                (Nodes::server(address, client, Conn::Server(conn, None)), None)
            }
            Target::Cluster { nodes } => {
                let first = nodes.first().map_or("", String::as_str);
                let client = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()
                    .map_err(|e| bad(first, e))?;
                let conn = client.get_pending_async_connection_with_config(
                    redis::cluster::ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout),
                );
                (Nodes::without_workers(Conn::Cluster(conn)), None)
            }
            Target::Sentinel { sentinels, service, node } => {
                let info = node.as_str().into_connection_info().map_err(|e| bad(node, e))?;
                let mut clients = Vec::new();
                for url in sentinels {
                    let client = redis::Client::open(url.as_str()).map_err(|e| bad(url, e))?;
                    clients.push((url.trim_start_matches("redis://").to_string(), client));
                }
                let sentinels = Sentinels { service: service.clone(), clients, node: info };
                (Nodes::without_workers(Conn::Unknown(wake.clone())), Some(sentinels))
            }
        };
        let is_sentinel = sentinel.is_some();
        let shared = Arc::new(Shared {
            nodes: ArcSwap::from_pointee(nodes),
            config,
            sentinels: sentinel,
            wake,
            timeout,
            warned: Mutex::default(),
            epoch: std::sync::atomic::AtomicU64::new(0),
            deposed: Mutex::new(None),
        });
        if is_sentinel {
            // The master, if the sentinels answer now; otherwise at the next poll.
            shared.ask_sentinels().await;
            shared.watch();
        }
        Ok(Link { shared })
    }

    /// The shared connection (calls off the request path).
    pub fn shared(&self) -> Conn {
        self.shared.nodes.load().shared.clone()
    }

    /// The connection for this thread's hot-path calls: its worker's own, else the
    /// shared one (always the shared one for a cluster, whose client multiplexes).
    pub fn worker(&self) -> Conn {
        let nodes = self.shared.nodes.load();
        let slot = crate::thread_slot();
        let (Some(client), false) = (&nodes.client, slot == 0 || nodes.per_worker.is_empty()) else {
            return nodes.shared.clone();
        };
        nodes.per_worker[(slot - 1) % nodes.per_worker.len()]
            .get_or_init(|| {
                match (
                    &nodes.shared,
                    ConnectionManager::new_lazy_with_config(client.clone(), self.shared.config.clone()),
                ) {
                    (Conn::Server(_, watch), Ok(c)) => Conn::Server(c, watch.clone()),
                    (shared, _) => shared.clone(),
                }
            })
            .clone()
    }

    /// Whether the counters live in a Redis Cluster (a script's keys must share a slot).
    pub fn cluster(&self) -> bool {
        matches!(self.shared.nodes.load().shared, Conn::Cluster(_))
    }

    /// `host:port` of the server calls go to now (the master under Sentinel; empty
    /// while unknown or for a cluster).
    pub fn address(&self) -> String {
        self.shared.nodes.load().address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_sentinels_or_a_cluster() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2").ok(),
            Some(Target::Server("redis://127.0.0.1:6379/2".into()))
        );
        let s =
            Target::parse("redis+sentinel://:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:5000/mymaster/3").expect("parses");
        assert_eq!(
            s,
            Target::Sentinel {
                sentinels: vec![
                    "redis://10.0.0.1:26379".into(),
                    "redis://10.0.0.2:26380".into(),
                    "redis://[::1]:5000".into()
                ],
                service: "mymaster".into(),
                node: "redis://:s%40cret@127.0.0.1/3".into(),
            }
        );
        let info = match &s {
            Target::Sentinel { node, .. } => node.as_str().into_connection_info().expect("info"),
            _ => unreachable!(),
        };
        assert_eq!((info.redis_settings().password(), info.redis_settings().db()), (Some("s@cret"), 3));
        let c = Target::parse("redis+cluster://u:p@a:7000,b").expect("parses");
        assert_eq!(c, Target::Cluster { nodes: vec!["redis://u:p@a:7000".into(), "redis://u:p@b:6379".into()] });
    }

    #[test]
    fn sentinel_messages_about_the_service_and_others() {
        let promoting = "slave 127.0.0.1:6380 127.0.0.1 6380 @ tg 127.0.0.1 6379";
        assert_eq!(sentinel_event(PROMOTING, promoting, "tg"), Some(Event::Promoting));
        assert_eq!(sentinel_event(PROMOTING, promoting, "t"), None);
        assert_eq!(sentinel_event(SWITCH, "tg 127.0.0.1 6379 127.0.0.1 6380", "tg"), Some(Event::Switched));
        assert_eq!(sentinel_event(SWITCH, "tgx 127.0.0.1 6379 127.0.0.1 6380", "tg"), None);
        assert_eq!(sentinel_event(ABORTED, "master tg 127.0.0.1 6379", "tg"), Some(Event::Aborted));
        assert_eq!(sentinel_event(ABORTED, "master tgx 127.0.0.1 6379", "tg"), None);
        assert_eq!(sentinel_event("+sdown", promoting, "tg"), None);
    }

    #[test]
    fn a_deposed_master_is_not_written_to_until_a_successor_is_named() {
        let t = std::time::Instant::now();
        let deposed = Deposed { address: "127.0.0.1:6379".into(), epoch: 3, since: t };
        let named = |port, epoch, failing_over, all_answered| Named {
            address: ("127.0.0.1".into(), port),
            epoch,
            failing_over,
            failover_timeout: Duration::from_secs(180),
            all_answered,
        };
        let held = |n: Named, at| still_deposed(Some(&deposed), &n, at);
        assert!(held(named(6379, 4, true, true), t), "the old address under the new epoch");
        assert!(held(named(6380, 3, true, true), t), "another address under the old epoch");
        assert!(!held(named(6380, 4, true, true), t), "the successor");
        assert!(!held(named(6379, 3, false, true), t), "every sentinel says the failover ended without one");
        assert!(held(named(6379, 3, false, false), t), "a silent sentinel may be leading it");
        assert!(!held(named(6379, 3, true, false), t + Duration::from_secs(181)), "past failover-timeout");
        assert!(!still_deposed(None, &named(6379, 0, true, true), t));
    }

    #[test]
    fn sentinel_answers_name_a_master_and_its_epoch() {
        let reply: Vec<String> = [
            "name",
            "tg",
            "ip",
            "127.0.0.1",
            "port",
            "6380",
            "flags",
            "master,failover_in_progress",
            "config-epoch",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let expected = Named {
            address: ("127.0.0.1".into(), 6380),
            epoch: 3,
            failing_over: true,
            failover_timeout: Duration::from_secs(180),
            all_answered: true,
        };
        assert_eq!(named(&reply), Ok(expected));
        assert!(named(&reply[..6]).is_err_and(|e| e.contains("config-epoch")));
    }

    #[test]
    fn bad_urls_say_what_to_fix_and_hide_the_password() {
        for (url, says) in [
            ("redis+sentinel://h1,h2", "SERVICE"),
            ("redis+sentinel://h1/", "SERVICE"),
            ("redis+sentinel://h1/m/x", "not a number"),
            ("redis+sentinel://h1/m/1/2", "/SERVICE[/DB]"),
            ("redis+sentinel://:pw@h1:0/m", "1–65535"),
            ("redis+cluster://h1,,h2", "host is missing"),
            ("redis+cluster://h1:99999", "1–65535"),
            ("redis+cluster://:pw@h1/1", "only database 0"),
            ("redis+cluster://[::1:7000", "ends with `]`"),
        ] {
            let e = Target::parse(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pw@"), "{url} shows its password: {e}");
        }
        assert_eq!(redact("redis://user:pw@h:1/2"), "redis://user:***@h:1/2");
        assert_eq!(redact("redis+cluster://:pw@a,b"), "redis+cluster://:***@a,b");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("redis://:SECRET/x@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("redis:/:S3CRETpw@127.0.0.1:1"), "***@127.0.0.1:1");
        let e = Target::parse("redis+sentinel://:pa/ss@127.0.0.1:27001/svc").expect_err("raw /").to_string();
        assert!(e.contains("percent-encode") && !e.contains("pa/ss"), "{e}");
        let raw_at = Target::parse("redis+cluster://:p@ss@h1").expect("a raw @ in a password");
        assert_eq!(raw_at, Target::Cluster { nodes: vec!["redis://:p@ss@h1:6379".into()] });
    }
}
