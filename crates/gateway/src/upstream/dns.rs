//! Endpoints given by host name. Every address a name resolves to (A and AAAA) is an
//! endpoint of its own — balanced, health-checked, drained and counted like a listed
//! one — and the name is resolved again when its answer's TTL runs out (or every
//! `dns_refresh_ms`), so an instance that comes or goes in DNS is picked up without a
//! reload. Resolution uses hickory-resolver with the system's `/etc/resolv.conf`, or
//! the name servers given to [`use_name_servers`] (`--resolver`).
//!
//! A failed resolution keeps the addresses the name had (a DNS outage never empties a
//! backend) and is tried again within [`RETRY`]. Until a name's first answer, the name
//! itself is the endpoint and each new connection resolves it (the system's resolver).

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The longest a failed resolution waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// Bounds on how long an answer is used: a TTL of 0 would mean a query per request,
/// and a day-long TTL would keep a removed instance for a day.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// See [`MIN_TTL`].
pub const MAX_TTL: Duration = Duration::from_secs(3600);

static NAME_SERVERS: OnceLock<Vec<SocketAddr>> = OnceLock::new();
static RESOLVER: OnceLock<Option<TokioResolver>> = OnceLock::new();
/// The addresses each name had at its latest answer, so that a backend rebuilt by a
/// reload starts from them rather than from the name.
static LAST: Mutex<Option<HashMap<String, Vec<IpAddr>>>> = Mutex::new(None);

/// Resolves endpoint names with these name servers instead of `/etc/resolv.conf`'s
/// (`--resolver IP[:PORT],…`; port 53 by default). Call before the first resolution;
/// a later call changes nothing and answers `false`.
///
/// # Errors
/// A server that cannot be asked (port 0, an unspecified, multicast or broadcast
/// address), in words; nothing is changed then.
pub fn use_name_servers(servers: Vec<SocketAddr>) -> Result<bool, String> {
    if let Some(bad) = servers.iter().find(|s| s.port() == 0 || !usable(&s.ip())) {
        return Err(format!(
            "`{bad}` is not a name server's address (port 0, or an unspecified, multicast or broadcast address)"
        ));
    }
    Ok(use_name_servers_unchecked(servers))
}

fn use_name_servers_unchecked(servers: Vec<SocketAddr>) -> bool {
    RESOLVER.get().is_none() && NAME_SERVERS.set(servers).is_ok()
}

/// The process's resolver, made on first use; `None` (logged once) when the system's
/// configuration cannot be read: names are then resolved by each connection only.
fn resolver() -> Option<&'static TokioResolver> {
    RESOLVER
        .get_or_init(|| {
            let builder = match NAME_SERVERS.get() {
                Some(servers) => {
                    let mut config = ResolverConfig::from_name_servers(Vec::new());
                    for s in servers {
                        let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                        for c in &mut ns.connections {
                            c.port = s.port();
                        }
                        config.add_name_server(ns);
                    }
                    Ok(TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()))
                }
                None => TokioResolver::builder_tokio(),
            };
            let built = builder.and_then(|mut b| {
                // Every address of a name, both families. No cache: each name is asked
                // for by one task, when its answer runs out or `dns_refresh_ms` says.
                let options = b.options_mut();
                options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                options.cache_size = 0;
                b.build()
            });
            match built {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up DNS resolution (/etc/resolv.conf); endpoint names are resolved per connection");
                    None
                }
            }
        })
        .as_ref()
}

/// Whether a connection can be meant for `ip`: not unspecified (0.0.0.0 reaches the
/// local host), multicast or broadcast.
fn usable(ip: &IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_multicast() && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The addresses `host` had at its latest answer in this process, if any.
pub(super) fn last(host: &str) -> Option<Vec<IpAddr>> {
    LAST.lock().unwrap_or_else(|p| p.into_inner()).as_ref()?.get(host).cloned()
}

/// Resolves `host`: its addresses (sorted, so that an answer in another order is the
/// same answer) and how long they may be used.
///
/// # Errors
/// Why not, in words: no resolver, no such name, no address, a server that does not
/// answer.
pub(super) async fn resolve(host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
    let resolver = resolver().ok_or("no DNS resolver could be set up")?;
    let answer = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
    let ttl = answer.valid_until().saturating_duration_since(std::time::Instant::now());
    // Addresses a connection cannot be meant for are left out: unspecified (0.0.0.0
    // reaches the local host), multicast, broadcast.
    let usable =
        |ip: &IpAddr| !ip.is_unspecified() && !ip.is_multicast() && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    let mut ips: Vec<IpAddr> = answer.iter().filter(usable).collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(format!("`{host}` has no usable address"));
    }
    LAST.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(host.to_owned(), ips.clone());
    Ok((ips, ttl.clamp(MIN_TTL, MAX_TTL)))
}
