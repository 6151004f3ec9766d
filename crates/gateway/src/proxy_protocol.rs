//! The PROXY protocol (HAProxy's, <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>)
//! in front of a gateway listener: a load balancer that accepted the client's connection
//! says, in a header before anything else, whose connection it is. With
//! `--proxy-protocol CIDR[,CIDR…]`, a connection from one of those networks must begin
//! with a v1 (text) or v2 (binary) header, and the client address it carries becomes the
//! request's client address — what `ip_check`, `rate_limit` keys, access logs and
//! `X-Forwarded-For` see; a connection from any other source that begins with one is
//! refused, so no client can claim another's address.
//!
//! The header is read exactly (never a byte of what follows it) and parsed by the `ppp`
//! crate; `LOCAL` (v2) and `UNKNOWN` (v1) headers — a balancer's own health checks — keep
//! the connection's own address.

use crate::policy::ip_check::Cidr;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A v1 header is at most 107 bytes, `\r\n` included (the specification's §2.1).
const V1_MAX: usize = 107;
/// The v2 signature (§2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v2 header accepted: its addresses and a few TLVs (the format allows 64 KiB).
const V2_MAX: usize = 16 + 2048;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// A trusted source's connection did not begin with a PROXY protocol header.
    Missing,
    /// The header could not be read: malformed, longer than accepted, or cut short.
    Malformed(&'static str),
    /// An untrusted source's connection began with a PROXY protocol header.
    Untrusted,
}

impl std::fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyHeaderError::Missing => f.write_str("a trusted source sent no PROXY protocol header"),
            ProxyHeaderError::Malformed(why) => write!(f, "the PROXY protocol header is not valid: {why}"),
            ProxyHeaderError::Untrusted => f.write_str("a PROXY protocol header from a source not trusted to send one"),
        }
    }
}

/// Whether `bytes` (the first bytes a connection sent) begin a PROXY protocol header, of
/// either version, as far as they go.
pub fn looks_like_header(bytes: &[u8]) -> bool {
    let v1 = b"PROXY ";
    !bytes.is_empty()
        && (v1.starts_with(&bytes[..bytes.len().min(6)]) || V2_SIGNATURE.starts_with(&bytes[..bytes.len().min(12)]))
}

/// Reads a PROXY protocol header from the start of `io` — exactly its bytes — and returns
/// the client address it carries (`peer`, the connection's own, for `LOCAL`/`UNKNOWN`).
///
/// # Errors
/// [`ProxyHeaderError::Missing`] when the connection begins otherwise;
/// [`ProxyHeaderError::Malformed`] for a header that cannot be read or is too long.
pub async fn read_header<I: AsyncRead + Unpin>(io: &mut I, peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let short = |_| ProxyHeaderError::Malformed("the connection ended inside it");
    let mut header = vec![0u8; 5];
    io.read_exact(&mut header).await.map_err(|_| ProxyHeaderError::Missing)?;
    if &header[..] == b"PROXY" {
        // v1: text up to `\r\n`, read a byte at a time so nothing after it is taken.
        while !header.ends_with(b"\r\n") {
            if header.len() == V1_MAX {
                return Err(ProxyHeaderError::Malformed("a v1 header longer than 107 bytes"));
            }
            header.push(io.read_u8().await.map_err(short)?);
        }
    } else if header[..] == V2_SIGNATURE[..5] {
        header.resize(16, 0);
        io.read_exact(&mut header[5..]).await.map_err(short)?;
        if header[..12] != V2_SIGNATURE {
            return Err(ProxyHeaderError::Missing);
        }
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if 16 + length > V2_MAX {
            return Err(ProxyHeaderError::Malformed("a v2 header longer than accepted"));
        }
        header.resize(16 + length, 0);
        io.read_exact(&mut header[16..]).await.map_err(short)?;
    } else {
        return Err(ProxyHeaderError::Missing);
    }
    client_address(&header, peer)
}

/// The client address of a complete header (as [`read_header`] reads it).
///
/// # Errors
/// [`ProxyHeaderError::Malformed`] when `ppp` does not accept it.
pub fn client_address(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    use ppp::v1::Addresses as V1;
    use ppp::v2::{Addresses as V2, Command};
    match ppp::HeaderResult::parse(header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            V1::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
            V1::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
            V1::Unknown => peer,
        }),
        ppp::HeaderResult::V2(Ok(h)) if h.command == Command::Local => Ok(peer),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match h.addresses {
            V2::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
            V2::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
            V2::Unspecified | V2::Unix(_) => peer,
        }),
        ppp::HeaderResult::V1(Err(_)) => Err(ProxyHeaderError::Malformed("not a v1 header")),
        ppp::HeaderResult::V2(Err(_)) => Err(ProxyHeaderError::Malformed("not a v2 header")),
    }
}

/// The sources trusted to send PROXY protocol headers, and what the listener does with a
/// new connection (`--proxy-protocol`).
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// Networks whose connections must begin with a header (and no other may).
    pub trusted: Vec<Cidr>,
}

impl ProxyProtocol {
    /// The client address of a connection from `peer`: read from its header when `peer`
    /// is trusted; `peer` itself otherwise, once its first bytes (peeked, not taken)
    /// show no header.
    ///
    /// # Errors
    /// [`ProxyHeaderError`]: the connection is to be closed.
    pub async fn client_of(
        &self,
        tcp: &mut tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, ProxyHeaderError> {
        if self.trusted.iter().any(|c| c.contains(peer.ip())) {
            return read_header(tcp, peer).await;
        }
        let mut first = [0u8; 12];
        let n = tcp.peek(&mut first).await.unwrap_or(0);
        // Fewer than five bytes that could start one are let through: HTTP parsing
        // refuses them anyway.
        if n >= 5 && looks_like_header(&first[..n]) {
            return Err(ProxyHeaderError::Untrusted);
        }
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const PEER: &str = "127.0.0.1:5000";

    async fn read(bytes: &[u8]) -> (Result<SocketAddr, ProxyHeaderError>, Vec<u8>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(bytes).await.expect("write");
        drop(a);
        let got = read_header(&mut b, PEER.parse().expect("addr")).await;
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
        (got, rest)
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_client_address_and_nothing_after_them_is_taken() {
        let (addr, rest) = read(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 8080\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(addr, Ok("192.0.2.7:40000".parse().expect("addr")));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (addr, _) = read(b"PROXY TCP6 2001:db8::1 ::1 40000 8080\r\n").await;
        assert_eq!(addr, Ok("[2001:db8::1]:40000".parse().expect("addr")));
        let (addr, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(addr, Ok(PEER.parse().expect("addr")), "UNKNOWN keeps the connection's own");
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:41000".parse::<SocketAddr>().expect("a"),
                "127.0.0.1:8080".parse::<SocketAddr>().expect("b"),
            ),
        )
        .build()
        .expect("v2 header");
        let mut bytes = v2.clone();
        bytes.extend_from_slice(b"GET");
        let (addr, rest) = read(&bytes).await;
        assert_eq!(addr, Ok("198.51.100.9:41000".parse().expect("addr")));
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert_eq!(read(b"GET / HTTP/1.1\r\n\r\n").await.0, Err(ProxyHeaderError::Missing));
        assert_eq!(read(b"PRO").await.0, Err(ProxyHeaderError::Missing), "cut short before the prefix");
        assert!(matches!(read(b"PROXY TCP4 nonsense\r\n").await.0, Err(ProxyHeaderError::Malformed(_))));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(read(long.as_bytes()).await.0, Err(ProxyHeaderError::Malformed(_))));
        assert!(matches!(read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2").await.0, Err(ProxyHeaderError::Malformed(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(read(&huge).await.0, Err(ProxyHeaderError::Malformed(_))));
    }

    #[test]
    fn the_start_of_a_header_is_recognised_as_far_as_it_goes() {
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(b"PROX"));
        assert!(looks_like_header(&V2_SIGNATURE[..7]));
        assert!(!looks_like_header(b"POST /"));
        assert!(!looks_like_header(b""));
    }
}
