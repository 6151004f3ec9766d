//! `request_head`: the checks the gateway applies to a request head before routing it.
//!
//! Feeds: one byte of flags (bit 0: the request came over HTTP/2, bit 1: an extended
//! CONNECT `:protocol`, the other bits seed read sizes), then raw HTTP/1 bytes.
//!
//! 1. The smuggling guard (`server.rs` wraps every HTTP/1 connection in
//!    `SmugglingGuard`): the raw bytes are read through it in pieces of varying sizes,
//!    into buffers that already hold bytes. Asserts: it changes at most one byte, a line
//!    feed into NUL, and only past bytes read in the same call; the result does not
//!    depend on how the bytes were split into reads; a first head that has both
//!    `Content-Length` and `Transfer-Encoding` is always poisoned, and nothing is
//!    poisoned unless the bytes have both.
//! 2. The head as hyper's parser (`httparse`) reads it, as an `http::Request`, through
//!    the Host checks, the HTTP/2 field checks, the routing host, the WebSocket upgrade
//!    checks, the forwarded-header filter and the response hop-by-hop filter. Asserts:
//!    an accepted head has at most one Host, without user information; an accepted
//!    HTTP/2 head has no padded value and a Host equal to `:authority`; the routing
//!    host is never empty nor carries user information; an accepted HTTP/1 upgrade is a
//!    GET with `Connection: upgrade`, a 16-byte key, version 13 and no body; forwarded
//!    headers carry no hop-by-hop header nor any the `Connection` header names (read
//!    byte by byte: a value with bytes beyond ASCII still names its tokens), one
//!    Cookie at most, and every other header unchanged; a response keeps no
//!    `Content-Length` beside `Transfer-Encoding`.

#![no_main]

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName};
use libfuzzer_sys::fuzz_target;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};
use tollgate_gateway::fuzzing;

/// Hands out `data` in reads of the given sizes (cycled).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    n: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.n % self.sizes.len()].min(buf.remaining()).min(self.data.len());
        self.n += 1;
        let (now, later) = self.data.split_at(size);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// The bytes as hyper would see them through the guard, read in `sizes` pieces into a
/// buffer that holds `junk` bytes already.
fn guarded(data: &[u8], sizes: Vec<usize>, junk: usize) -> Vec<u8> {
    let mut guard = fuzzing::SmugglingGuard::new(Pieces { data, sizes, n: 0 });
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::with_capacity(data.len());
    let mut storage = vec![0xAAu8; junk + 4096];
    while out.len() < data.len() {
        let mut buf = ReadBuf::new(&mut storage);
        buf.put_slice(&vec![b'\n'; junk]);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => {}
            other => panic!("a ready reader made the guard answer {other:?}"),
        }
        assert!(buf.filled()[..junk].iter().all(|&b| b == b'\n'), "the guard changed bytes read before");
        out.extend_from_slice(&buf.filled()[junk..]);
    }
    out
}

/// Whether the first head of `data` has both framing headers, on lines ended by a line
/// feed and short enough for the guard to see whole (it remembers 1024 bytes a line).
fn first_head_has_both(data: &[u8]) -> bool {
    let pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let ended = &pieces[..pieces.len() - 1];
    let mut request_line = false;
    let (mut cl, mut te) = (false, false);
    for line in ended {
        if line.len() + 1 >= 1024 {
            return false;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !request_line {
            if line.is_empty() {
                continue;
            }
            if line.starts_with(b"PRI * HTTP/2.0") {
                return false;
            }
            request_line = true;
            continue;
        }
        if line.is_empty() {
            return false;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            cl |= line[..colon].eq_ignore_ascii_case(b"content-length");
            te |= line[..colon].eq_ignore_ascii_case(b"transfer-encoding");
        }
        if cl && te {
            return true;
        }
    }
    false
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn check_guard(flags: u8, data: &[u8]) {
    let whole = guarded(data, vec![usize::MAX], 0);
    let sizes = vec![1 + usize::from(flags >> 2 & 7), 1, 3 + usize::from(flags >> 5)];
    let pieces = guarded(data, sizes, usize::from(flags >> 4));
    let bytewise = guarded(data, vec![1], 1);
    assert_eq!(whole, pieces, "the guard's result depends on read sizes");
    assert_eq!(whole, bytewise, "the guard's result depends on read sizes (one byte at a time)");
    let changed: Vec<usize> = (0..data.len()).filter(|&i| whole[i] != data[i]).collect();
    assert!(changed.len() <= 1, "the guard changed {} bytes", changed.len());
    if let Some(&i) = changed.first() {
        assert_eq!((data[i], whole[i]), (b'\n', 0), "the guard changed something else than a line feed");
        assert!(
            contains_ignore_case(data, b"content-length") && contains_ignore_case(data, b"transfer-encoding"),
            "poisoned without both framing headers"
        );
    }
    if first_head_has_both(data) {
        assert_eq!(changed.len(), 1, "a head with both framing headers was not poisoned");
    }
}

fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
    ]
    .contains(name)
}

fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

fn check_head(flags: u8, data: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut raw);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else { return };
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else { return };
    let h2 = flags & 1 != 0;
    let mut builder = http::Request::builder().method(method).uri(path).version(if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    });
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    if h2 && flags & 2 != 0 {
        builder = builder.extension(hyper::ext::Protocol::from_static("websocket"));
    }
    let Ok(req) = builder.body(()) else { return };
    let headers = req.headers();

    if fuzzing::check_host_headers(headers).is_ok() {
        let hosts: Vec<_> = headers.get_all(header::HOST).iter().collect();
        assert!(hosts.len() <= 1, "two Host headers accepted");
        assert!(hosts.iter().all(|h| !h.as_bytes().contains(&b'@')), "a Host with user information accepted");
    }
    if h2 && fuzzing::check_http2_fields(&req).is_ok() {
        let padded = |b: &[u8]| matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'));
        assert!(!headers.values().any(|v| padded(v.as_bytes())), "a padded HTTP/2 field accepted");
        if let (Some(a), Some(h)) = (req.uri().authority(), headers.get(header::HOST)) {
            assert!(h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()), "Host and :authority differ");
        }
    }
    if let Some(host) = fuzzing::request_host(&req) {
        assert!(!host.is_empty() && !host.contains('@'), "routing host {host:?}");
    }
    match fuzzing::websocket_upgrade(&req) {
        Ok("http1") => {
            assert_eq!(req.method(), http::Method::GET);
            assert!(!h2, "an HTTP/1 upgrade over HTTP/2");
            assert!(tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade")));
            assert!(tokens(headers, &header::UPGRADE).any(|t| t.eq_ignore_ascii_case("websocket")));
            let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
            let key = base64::engine::general_purpose::STANDARD.decode(key);
            assert!(key.is_ok_and(|k| k.len() == 16), "an upgrade without a 16-byte key");
            assert_eq!(headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()), Some(&b"13"[..]));
            assert!(!headers.contains_key(header::TRANSFER_ENCODING), "an upgrade with a chunked body");
            assert!(headers.get_all(header::CONTENT_LENGTH).iter().all(|v| v.as_bytes() == b"0"));
        }
        Ok("http2") => {
            assert!(h2 && req.method() == http::Method::CONNECT, "an extended CONNECT that is not one");
        }
        _ => {}
    }

    let forwarded = fuzzing::forwardable_headers(headers);
    // Read byte by byte, as the gateway does: a value with a byte beyond ASCII still
    // names its tokens.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in forwarded.keys() {
        assert!(!hop_by_hop(name) && !named.contains(name), "{name} forwarded");
    }
    assert!(forwarded.get_all(header::COOKIE).iter().count() <= 1, "several Cookie fields forwarded");
    for name in headers.keys() {
        if !hop_by_hop(name) && !named.contains(name) && name != header::COOKIE {
            let before: Vec<_> = headers.get_all(name).iter().collect();
            let after: Vec<_> = forwarded.get_all(name).iter().collect();
            assert_eq!(before, after, "{name} changed on its way to the backend");
        }
    }

    let mut response = headers.clone();
    fuzzing::strip_hop_by_hop(&mut response);
    assert!(!response.contains_key(header::TRANSFER_ENCODING) && !response.contains_key(header::CONNECTION));
    if headers.contains_key(header::TRANSFER_ENCODING) {
        assert!(!response.contains_key(header::CONTENT_LENGTH), "Content-Length kept beside Transfer-Encoding");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    check_guard(flags, rest);
    check_head(flags, rest);
});
