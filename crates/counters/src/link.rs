//! Where the counters live: one Redis server, the master that a set of Redis Sentinels
//! name, or a Redis Cluster — and the connections to it.
//!
//! - `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` (and `redis+unix://`): one server.
//! - `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB]`: the
//!   sentinels (port 26379 unless given) are asked which server is the master of
//!   `SERVICE` (the name in their `sentinel monitor` line); the credentials and the
//!   database are the master's (the sentinels are asked without a password). When a
//!   call to the master fails — refused, dropped, timed out, or `READONLY` because a
//!   failover made it a replica — the sentinels are asked again (at most every
//!   [`REDISCOVER_EVERY`]) and the node's connections move to the master they name.
//! - `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]`: seed nodes of a
//!   Redis Cluster (port 6379 unless given); keys are hashed to slots and `MOVED`/`ASK`
//!   redirections followed by the `redis` crate's cluster client. Every key of one
//!   script shares its application's hash tag (`{application}`), so one request's
//!   limits stay one atomic script on one node.
//!
//! The scheme names follow the `redis+…` convention of other multi-host URLs
//! (`postgres`'s host lists, Celery's `sentinel://`): one `--counters` value says all.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

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
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match hosts.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, hosts),
        };
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

/// `url` with its password replaced by `***` (for messages and logs).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            let slash = if rest.contains('/') { "/" } else { "" };
            format!("{scheme}://{user}:***@{hosts}{slash}{path}")
        }
        None => url.to_string(),
    }
}

/// A connection to where the counters live, for one call or many (cheap to clone).
#[derive(Clone)]
pub enum Conn {
    /// One server, or the master that sentinels named.
    Server(ConnectionManager, Option<Weak<Shared>>),
    /// A Redis Cluster (slots and redirections handled by the client).
    Cluster(ClusterConnection),
    /// No master is known yet: the sentinels have not answered.
    Unknown(Weak<Shared>),
}

impl Conn {
    /// After a call to a sentinel-named master: ask the sentinels again when the
    /// failure could mean that the master moved.
    fn watch<T>(watch: Option<&Weak<Shared>>, result: &Result<T, RedisError>) {
        if let (Some(w), Err(e)) = (watch, result)
            && moved(e)
            && let Some(shared) = w.upgrade()
        {
            shared.rediscover();
        }
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
        "the sentinels have not named the master of the service; they are asked again at every call".to_string(),
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c, None) => c.req_packed_command(cmd),
            Conn::Server(c, Some(w)) => Box::pin(async move {
                let result = c.req_packed_command(cmd).await;
                Conn::watch(Some(w), &result);
                result
            }),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Unknown(w) => {
                Conn::watch(Some(w), &Err::<(), _>(no_master()));
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
            Conn::Server(c, None) => c.req_packed_commands(pipeline, offset, count),
            Conn::Server(c, Some(w)) => Box::pin(async move {
                let result = c.req_packed_commands(pipeline, offset, count).await;
                Conn::watch(Some(w), &result);
                result
            }),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Unknown(w) => {
                Conn::watch(Some(w), &Err::<(), _>(no_master()));
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
pub struct Shared {
    nodes: ArcSwap<Nodes>,
    config: ConnectionManagerConfig,
    sentinel: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    asking: AtomicBool,
    asked_at: Mutex<Option<Instant>>,
    /// Sentinel only: how long asking the sentinels may take.
    timeout: Duration,
}

impl Shared {
    /// Asks the sentinels for the master in the background (one question at a time,
    /// at most every [`REDISCOVER_EVERY`]); moves the connections when it changed.
    fn rediscover(self: Arc<Self>) {
        if self.sentinel.is_none() || self.asking.swap(true, Relaxed) {
            return;
        }
        {
            let mut at = self.asked_at.lock().unwrap_or_else(|p| p.into_inner());
            if at.is_some_and(|t| t.elapsed() < REDISCOVER_EVERY) {
                self.asking.store(false, Relaxed);
                return;
            }
            *at = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.asking.store(false, Relaxed);
            return;
        };
        runtime.spawn(async move {
            self.ask_sentinels().await;
            self.asking.store(false, Relaxed);
        });
    }

    /// Asks the sentinels which server is the master now and moves to it.
    async fn ask_sentinels(self: &Arc<Self>) {
        let Some(sentinel) = &self.sentinel else { return };
        let answer = tokio::time::timeout(self.timeout, async { sentinel.lock().await.async_get_client().await }).await;
        let client = match answer {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the sentinels named no usable master");
                return;
            }
            Err(_) => {
                tracing::debug!("the sentinels did not answer in time");
                return;
            }
        };
        let address = client.get_connection_info().addr().to_string();
        if address == self.nodes.load().address {
            return;
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
                let watch = Some(Arc::downgrade(self));
                self.nodes.store(Arc::new(Nodes::server(address, client, Conn::Server(conn, watch))));
            }
            Err(e) => tracing::debug!(error = %e, "cannot connect to the master the sentinels named"),
        }
    }
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
                let node_info = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(info.redis_settings().clone());
                let client = redis::sentinel::SentinelClient::build(
                    sentinels.iter().map(String::as_str).collect(),
                    service.clone(),
                    Some(node_info),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| bad(sentinels.first().map_or("", String::as_str), e))?;
                (Nodes::without_workers(Conn::Unknown(Weak::new())), Some(tokio::sync::Mutex::new(client)))
            }
        };
        let is_sentinel = sentinel.is_some();
        let shared = Arc::new(Shared {
            nodes: ArcSwap::from_pointee(nodes),
            config,
            sentinel,
            asking: AtomicBool::new(false),
            asked_at: Mutex::new(None),
            timeout,
        });
        if is_sentinel {
            shared.nodes.store(Arc::new(Nodes::without_workers(Conn::Unknown(Arc::downgrade(&shared)))));
            // The master, if the sentinels answer now; otherwise at the first call.
            shared.ask_sentinels().await;
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
    }
}
