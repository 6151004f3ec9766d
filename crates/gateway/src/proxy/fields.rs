//! The request head as the gateway reads and forwards it: one Host (RFC 9112 §3.2),
//! HTTP/2 field rules (RFC 9113 §8.2), hop-by-hop headers (RFC 9110 §7.6.1).

use super::*;

/// `uri` with its path replaced (scheme, authority and query kept).
pub(super) fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, Refusal> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| Refusal::BadRequest("the request target cannot be forwarded"))?);
    http::Uri::from_parts(parts).map_err(|_| Refusal::BadRequest("the request target cannot be forwarded"))
}

/// RFC 9112 §3.2: one Host, with no user information; otherwise two readers may pick
/// two different products or backends. Gives the `Host` field, if there is one.
pub(crate) fn check_host_headers(headers: &HeaderMap) -> Result<Option<&HeaderValue>, Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if let Some(first) = first {
        if hosts.next().is_some() {
            return Err(Refusal::BadRequest("the request has more than one Host header"));
        }
        if first.as_bytes().contains(&b'@') {
            return Err(Refusal::BadRequest("a Host header must not carry user information"));
        }
    }
    Ok(first)
}

pub(super) fn request_host_of(parts: &request::Parts) -> Option<&str> {
    host_of(&parts.uri, &parts.headers)
}

/// The request's host, without port: the `Host` header (HTTP/1.1) or the `:authority`.
pub(crate) fn host_of<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    host_part(without_user_information(raw))
}

/// [`host_of`], with the `Host` field already found and checked by
/// [`check_host_headers`] (so without user information: only the target's authority
/// is searched for it).
pub(super) fn host_in<'a>(uri: &'a http::Uri, host: Option<&'a HeaderValue>) -> Option<&'a str> {
    match uri.authority() {
        Some(a) => host_part(without_user_information(a.as_str())),
        None => host_part(host?.to_str().ok()?),
    }
}

/// What follows the last `@` of an authority.
fn without_user_information(raw: &str) -> &str {
    // Byte searches: `rsplit_once` with a `char` costs several times as much, and this
    // runs on every request.
    raw.bytes().rposition(|b| b == b'@').map_or(raw, |at| &raw[at + 1..])
}

/// The host of `host[:port]` (an IPv6 address without its brackets), without a final
/// dot; `None` when empty.
fn host_part(raw: &str) -> Option<&str> {
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        match raw.bytes().rposition(|b| b == b':') {
            Some(colon) if raw.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => &raw[..colon],
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// The elements of a field value that is a comma-separated list (RFC 9110 §5.6.1):
/// each without its surrounding spaces and tabs, empty ones left out. Bytes, not text:
/// a value with a byte beyond ASCII still has its elements.
pub(crate) fn list_elements(value: &HeaderValue) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty())
}

/// Whether a `Transfer-Encoding` lists a coding other than `chunked`.
pub(super) fn other_transfer_coding(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| list_elements(v).any(|c| !c.eq_ignore_ascii_case(b"chunked")))
}

/// A `static`, not a `const`: a `const` array is made anew (and dropped) at each use.
pub(super) static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// Where `name` is in [`HOP_BY_HOP`], if it is there. Names are told apart by their
/// length first: most fields have none of the listed lengths, and comparing names
/// (a standard one with a custom one, in particular) costs more than that.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let candidates: &[usize] = match name.as_str().len() {
        2 => &[3],
        4 => &[7],
        7 => &[4, 6],
        10 => &[0, 1],
        16 => &[2],
        17 => &[5],
        _ => return None,
    };
    candidates.iter().copied().find(|&i| HOP_BY_HOP[i] == *name)
}

/// The header names a `Connection` header lists (hop-by-hop by declaration). Empty,
/// without allocating, in the usual case of no `Connection` header.
pub(super) fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        push_connection_tokens(value, &mut names);
    }
    names
}

/// Adds the header names one `Connection` value lists to `names`.
fn push_connection_tokens(value: &HeaderValue, names: &mut Vec<HeaderName>) {
    // `keep-alive` is hop-by-hop whether listed or not: no name to make; most values
    // are that alone. `close` is an option, and a field of that name goes with it (RFC
    // 9110 §7.6.1). Bytes, not text: a chain of `str` adapters cost several hundred
    // instructions on every response — and a value with a byte beyond ASCII still
    // names its tokens (the fields it names are removed, not kept).
    if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
        return;
    }
    for token in list_elements(value) {
        if token.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            names.push(name);
        }
    }
}

thread_local! {
    /// A header map kept for the next request of this worker thread (see
    /// [`recycle_map`]).
    static SPARE_MAP: std::cell::Cell<Option<HeaderMap>> = const { std::cell::Cell::new(None) };
}

/// Keeps `map` — a request's, once answered — as the next upstream head's, cleared:
/// hyper already keeps each response's map for the connection's next request, and
/// with this a request's maps are made without allocating once a worker has served
/// one (two allocations and two frees less per request). A map grown past 64 fields
/// is let go, so a thread keeps at most a few kilobytes.
pub(super) fn recycle_map(mut map: HeaderMap) {
    if map.capacity() <= 64 {
        map.clear();
        SPARE_MAP.with(|spare| spare.set(Some(map)));
    }
}

/// An empty header map with room for `fields`: the thread's spare one, if it has it.
fn spare_map(fields: usize) -> HeaderMap {
    let mut map = SPARE_MAP.with(std::cell::Cell::take).unwrap_or_default();
    map.reserve(fields);
    map
}

/// A copy of `headers` without hop-by-hop headers (RFC 9110 §7.6.1) and `Host`.
/// Copying clones reference-counted bytes, not data.
pub(crate) fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    // Room for what the gateway adds (`Via`, `X-Forwarded-*`, `Forwarded`, `Host`,
    // the request id) without the map growing on the way.
    let mut out = spare_map(headers.len() + 8);
    // One pass copies the fields and notes a `Connection` field and how many `Cookie`
    // lines there are; most requests have neither to act on, and then no name is
    // looked up again.
    let (mut connection, mut cookies) = (false, 0usize);
    for (name, value) in headers {
        if *name == header::CONNECTION {
            connection = true;
        } else if hop_by_hop_index(name).is_none() {
            cookies += usize::from(*name == header::COOKIE);
            out.append(name.clone(), value.clone());
        }
    }
    // The fields a `Connection` field lists go too — but not the request id: it is the
    // gateway's (it set it, or took the client's as its own).
    if connection {
        for name in connection_tokens(headers).iter().filter(|n| **n != REQUEST_ID) {
            out.remove(name);
        }
    }
    // RFC 9113 §8.2.3: HTTP/2 may split Cookie into several fields; they are joined
    // with "; " before they go to HTTP/1.1 (where one Cookie field is allowed).
    // (Counted before the `Connection` list applied: it may have named `Cookie`.)
    if cookies > 1 && out.get_all(header::COOKIE).iter().nth(1).is_some() {
        let mut joined = Vec::new();
        for (i, value) in out.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
            out.insert(header::COOKIE, v);
        }
    }
    out
}

/// RFC 9113 §8.2.1 and §8.3.1: what makes an HTTP/2 request malformed beyond what the
/// HTTP/2 layer checks — a field value with leading or trailing whitespace, a `Host`
/// naming another authority than `:authority`.
pub(crate) fn check_http2_fields<B>(req: &Request<B>) -> Result<(), Refusal> {
    let padded = |v: &HeaderValue| {
        let b = v.as_bytes();
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    };
    if req.headers().values().any(padded) {
        return Err(Refusal::BadRequest("an HTTP/2 field value must not begin or end with whitespace"));
    }
    if let (Some(authority), Some(host)) = (req.uri().authority(), req.headers().get(header::HOST))
        && !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err(Refusal::BadRequest("the Host header names another authority than :authority"));
    }
    Ok(())
}

/// Removes hop-by-hop headers in place (on a backend's response).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Which hop-by-hop fields are there, in one pass over the names: a response has
    // `Connection` at most, usually, and a removal is a hash lookup each.
    // `Host` (the last) is no hop-by-hop field of a response.
    let hop_by_hop = &HOP_BY_HOP[..7];
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name).filter(|&i| i < hop_by_hop.len()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // RFC 9112 §6.3: with Transfer-Encoding, Content-Length says nothing about the body
    // and an intermediary must remove it before forwarding. `Transfer-Encoding` is the
    // sixth of them.
    if present & (1 << 5) != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
    // `Connection` is the first of them: its lines are taken out and read in one
    // lookup, then what they name goes.
    if present & 1 != 0 {
        let mut named = Vec::new();
        if let http::header::Entry::Occupied(lines) = headers.entry(header::CONNECTION) {
            for value in lines.remove_entry_mult().1 {
                push_connection_tokens(&value, &mut named);
            }
        }
        for n in named {
            headers.remove(n);
        }
    }
    for (i, n) in hop_by_hop.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`;
/// gRPC's PROTOCOL-HTTP2.md). `None` for anything else.
pub(crate) fn grpc_timeout(v: &HeaderValue) -> Option<std::time::Duration> {
    use std::time::Duration;
    let b = v.as_bytes();
    let (digits, unit) = b.split_at(b.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hop_by_hop_list_is_in_the_order_its_readers_rely_on() {
        use http::header;
        // `strip_hop_by_hop` reads these places as bits.
        assert_eq!(super::HOP_BY_HOP[0], header::CONNECTION);
        assert_eq!(super::HOP_BY_HOP[5], header::TRANSFER_ENCODING);
        assert_eq!(super::HOP_BY_HOP[7], header::HOST);
    }

    #[test]
    fn every_hop_by_hop_name_is_found_whatever_its_case_and_no_other() {
        for (i, name) in super::HOP_BY_HOP.iter().enumerate() {
            assert_eq!(super::hop_by_hop_index(name), Some(i), "{name}");
            let upper = http::HeaderName::from_bytes(name.as_str().to_ascii_uppercase().as_bytes()).expect("name");
            assert_eq!(super::hop_by_hop_index(&upper), Some(i), "{name}");
        }
        for other in
            ["date", "server", "content-length", "x-forwarded-for", "tf", "trailers", "keep-alivf", "upgrade-x"]
        {
            let name = http::HeaderName::from_bytes(other.as_bytes()).expect("name");
            assert_eq!(super::hop_by_hop_index(&name), None, "{other}");
        }
    }

    #[test]
    fn cookie_lines_are_joined_unless_the_connection_field_names_them() {
        use http::{HeaderMap, HeaderValue, header};
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let out = super::forwardable_headers(&headers);
        assert_eq!(out.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        // Found by an adversarial pass: the lines counted, then removed, then joined
        // into an empty field.
        headers.append(header::CONNECTION, HeaderValue::from_static("Cookie"));
        let out = super::forwardable_headers(&headers);
        assert!(out.get(header::COOKIE).is_none(), "{out:?}");
        assert!(out.get(header::CONNECTION).is_none(), "{out:?}");
    }

    #[test]
    fn a_connection_field_names_its_tokens_and_keep_alive_names_nothing() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::CONNECTION, http::HeaderValue::from_static("Keep-Alive, X-Secret ,, close"));
        headers.append(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        let names = super::connection_tokens(&headers);
        assert_eq!(names, ["x-secret", "close", "upgrade"]);
    }

    #[test]
    fn the_host_is_read_without_user_information_port_or_final_dot() {
        for (host, expected) in [
            ("shop.example", Some("shop.example")),
            ("shop.example:8080", Some("shop.example")),
            ("shop.example.", Some("shop.example")),
            ("user:pass@shop.example:443", Some("shop.example")),
            ("[::1]:8443", Some("::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("shop.example:http", Some("shop.example:http")),
            ("shop.example:", Some("shop.example")),
            ("@", None),
            (":80", None),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::HOST, http::HeaderValue::from_static(host));
            let uri = http::Uri::from_static("/");
            assert_eq!(super::host_of(&uri, &headers), expected, "Host: {host}");
            // What the router reads once the field passed its check (no `@`) is the same.
            if let Ok(checked) = super::check_host_headers(&headers) {
                assert_eq!(super::host_in(&uri, checked), expected, "Host: {host}");
            }
            // And in the target's authority, user information and all.
            if let Ok(target) = http::Uri::try_from(format!("http://{host}/")) {
                let empty = http::HeaderMap::new();
                assert_eq!(super::host_in(&target, None), super::host_of(&target, &empty), "authority: {host}");
            }
        }
    }
}
