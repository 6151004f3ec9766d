//! The `ip_check` policy (as APIcast's): allows or denies clients by IP address
//! (IPv4 and IPv6 CIDRs); a denied client gets 403.
//!
//! ```yaml
//! - name: ip_check
//!   configuration:
//!     check_type: deny                 # or allow: only these may pass
//!     ips: ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]
//!     client_ip_sources: [X-Forwarded-For, last_caller]   # tried in order; default [last_caller]
//!     trusted_proxies: ["10.0.0.0/8"]   # whose X-Forwarded-For / X-Real-IP are believed
//!     error_message: "IP address not allowed"
//! ```
//!
//! `last_caller` is the TCP peer. `X-Forwarded-For` and `X-Real-IP` are believed only
//! from a peer in `trusted_proxies`; from X-Forwarded-For the client is the right-most
//! address that is not itself a trusted proxy (so a client cannot forge its way in by
//! sending the header itself). With no `trusted_proxies`, X-Forwarded-For's first
//! address is taken, as APIcast does — use that only behind a proxy that overwrites the
//! header. The check runs in the access phase: before `tollgate` in the chain, a denied
//! client is refused before its credentials are looked at.

use super::{Context, Flow, Policy, PolicyError};
use crate::refusal::{ErrorTemplate, Refusal};
use http::{StatusCode, request};
use schemars::JsonSchema;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum CheckType {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
enum Source {
    #[serde(rename = "last_caller")]
    LastCaller,
    #[serde(rename = "X-Forwarded-For")]
    ForwardedFor,
    #[serde(rename = "X-Real-IP")]
    RealIp,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// `allow`: only the listed addresses pass; `deny`: the listed addresses are refused.
    check_type: CheckType,
    /// Addresses and CIDR ranges, IPv4 or IPv6.
    ips: Vec<String>,
    /// Where the client's address is read, tried in order (default: `last_caller`).
    #[serde(default)]
    client_ip_sources: Vec<Source>,
    /// Peers whose X-Forwarded-For and X-Real-IP are believed.
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// The message of the 403 (default "IP address not allowed").
    #[serde(default)]
    error_message: Option<String>,
}

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    prefix: u8,
    v4: bool,
}

impl Cidr {
    /// Parses an address (a single host) or `address/prefix`, IPv4 or IPv6; host bits
    /// are cleared.
    ///
    /// # Errors
    ///
    /// A message naming `s` when it is not an IP address, or its prefix length is over
    /// 32 (IPv4) or 128 (IPv6).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?;
        let (bits, v4, max) = match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, true, 32),
            IpAddr::V6(v) => (u128::from(v), false, 128),
        };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0–{max}"))?,
        };
        Ok(Cidr { net: bits & mask(prefix), prefix, v4 })
    }

    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (bits, v4) = match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, true),
            IpAddr::V6(v) => (u128::from(v), false),
        };
        v4 == self.v4 && bits & mask(self.prefix) == self.net
    }
}

/// The top `prefix` bits (IPv4 addresses sit in the top 32 bits).
fn mask(prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) }
}

fn cidrs(list: &[String], field: &str) -> Result<Vec<Cidr>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| Cidr::parse(s).map_err(|e| PolicyError::new(format!("{field}[{i}]"), e)))
        .collect()
}

/// The `ip_check` policy: allows or denies clients by IP address, with 403 `ip_denied`.
pub struct IpCheckPolicy {
    check: CheckType,
    ips: Vec<Cidr>,
    sources: Vec<Source>,
    trusted: Vec<Cidr>,
    denied: std::sync::Arc<ErrorTemplate>,
}

impl IpCheckPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let ips = cidrs(&c.ips, "ips")?;
        if ips.is_empty() && c.check_type == CheckType::Allow {
            return Err(PolicyError::new(
                "ips",
                "an allow list needs at least one address (or every client is refused)",
            ));
        }
        Ok(IpCheckPolicy {
            check: c.check_type,
            ips,
            sources: if c.client_ip_sources.is_empty() { vec![Source::LastCaller] } else { c.client_ip_sources },
            trusted: cidrs(&c.trusted_proxies, "trusted_proxies")?,
            denied: ErrorTemplate::shared_json(
                StatusCode::FORBIDDEN,
                "ip_denied",
                c.error_message.as_deref().unwrap_or("IP address not allowed"),
            ),
        })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client's address by the configured sources.
    pub fn client_ip(&self, req: &request::Parts, peer: IpAddr) -> IpAddr {
        let from_proxy = self.trusted.is_empty() || self.trusted(peer);
        for source in &self.sources {
            let found = match source {
                Source::LastCaller => Some(peer),
                Source::ForwardedFor if from_proxy => {
                    let addrs: Vec<IpAddr> = req
                        .headers
                        .get_all("x-forwarded-for")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(','))
                        .filter_map(|a| a.trim().parse().ok())
                        .collect();
                    if self.trusted.is_empty() {
                        addrs.first().copied()
                    } else {
                        addrs.iter().rev().find(|a| !self.trusted(**a)).or(addrs.first()).copied()
                    }
                }
                Source::RealIp if from_proxy => {
                    req.headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
                }
                _ => None,
            };
            if let Some(ip) = found {
                return ip;
            }
        }
        peer
    }
}

impl Policy for IpCheckPolicy {
    fn name(&self) -> &'static str {
        "ip_check"
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        let ip = self.client_ip(req, ctx.client_addr.ip());
        let listed = self.ips.iter().any(|c| c.contains(ip));
        let pass = match self.check {
            CheckType::Allow => listed,
            CheckType::Deny => !listed,
        };
        if pass {
            Flow::Continue
        } else {
            Flow::Refuse(Refusal::Denied { policy: "ip_check", code: "ip_denied", answer: self.denied.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains(ip("10.1.255.3")) && !c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(!c.contains(ip("::1")));
        let six = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(six.contains(ip("2001:db8:1::7")) && !six.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").expect("all").contains(ip("8.8.8.8")));
        assert!(Cidr::parse("127.0.0.1").expect("one").contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").expect("one").contains(ip("127.0.0.2")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("::/129").is_err());
    }

    fn policy(sources: Vec<Source>, trusted: &[&str]) -> IpCheckPolicy {
        IpCheckPolicy::new(Config {
            check_type: CheckType::Deny,
            ips: vec!["192.0.2.1".into()],
            client_ip_sources: sources,
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            error_message: None,
        })
        .expect("valid")
    }

    fn req(xff: &str) -> request::Parts {
        http::Request::builder().header("x-forwarded-for", xff).body(()).expect("req").into_parts().0
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let p = policy(vec![Source::ForwardedFor, Source::LastCaller], &["10.0.0.0/8"]);
        // From a trusted proxy: the right-most untrusted address (a forged left entry is ignored).
        assert_eq!(p.client_ip(&req("192.0.2.1, 198.51.100.4, 10.0.0.2"), ip("10.0.0.1")), ip("198.51.100.4"));
        // From anyone else: the header is not believed.
        assert_eq!(p.client_ip(&req("198.51.100.4"), ip("203.0.113.9")), ip("203.0.113.9"));
        // Without trusted proxies: the first address (APIcast's rule).
        let open = policy(vec![Source::ForwardedFor], &[]);
        assert_eq!(open.client_ip(&req("198.51.100.4, 10.0.0.2"), ip("10.0.0.1")), ip("198.51.100.4"));
    }

    #[test]
    fn real_ip_is_believed_from_trusted_proxies_and_sources_fall_through() {
        let p = policy(vec![Source::RealIp, Source::LastCaller], &["10.0.0.0/8"]);
        let with = |v: &str| http::Request::builder().header("x-real-ip", v).body(()).expect("req").into_parts().0;
        assert_eq!(p.client_ip(&with("198.51.100.9"), ip("10.1.2.3")), ip("198.51.100.9"));
        assert_eq!(p.client_ip(&with("198.51.100.9"), ip("203.0.113.1")), ip("203.0.113.1"), "untrusted peer");
        assert_eq!(p.client_ip(&with("not an address"), ip("10.1.2.3")), ip("10.1.2.3"), "falls through to the peer");
    }
}
