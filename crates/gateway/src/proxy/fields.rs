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
/// two different products or backends.
pub(crate) fn check_host_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    if let (Some(first), second) = (hosts.next(), hosts.next()) {
        if second.is_some() {
            return Err(Refusal::BadRequest("the request has more than one Host header"));
        }
        if first.as_bytes().contains(&b'@') {
            return Err(Refusal::BadRequest("a Host header must not carry user information"));
        }
    }
    Ok(())
}

pub(super) fn request_host(req: &Request<Incoming>) -> Option<&str> {
    host_of(req.uri(), req.headers())
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
    // Byte searches: `rsplit_once` with a `char` costs several times as much, and this
    // runs on every request.
    let raw = raw.bytes().rposition(|b| b == b'@').map_or(raw, |at| &raw[at + 1..]);
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

/// The header names a `Connection` header lists (hop-by-hop by declaration). Empty,
/// without allocating, in the usual case of no `Connection` header.
pub(super) fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = Vec::new();
    // Bytes split on bytes: a chain of `str` adapters cost several hundred
    // instructions for a `Connection: keep-alive` on every response.
    for value in headers.get_all(header::CONNECTION) {
        // `keep-alive` is hop-by-hop whether listed or not, and `close` is an option,
        // not a field (its name is reserved, RFC 9110 §7.6.1): no name to make. Most
        // values are one of the two alone.
        let plain = |t: &[u8]| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close");
        if plain(value.as_bytes()) {
            continue;
        }
        for token in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() || plain(token) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                names.push(name);
            }
        }
    }
    names
}

/// A copy of `headers` without hop-by-hop headers (RFC 9110 §7.6.1) and `Host`.
/// Copying clones reference-counted bytes, not data.
pub(crate) fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    let named = connection_tokens(headers);
    // Room for what the gateway adds (`Via`, `X-Forwarded-*`, `Forwarded`, `Host`,
    // the request id) without the map growing on the way.
    let mut out = HeaderMap::with_capacity(headers.len() + 8);
    for (name, value) in headers {
        // The request id is the gateway's (it set it, or took the client's as its own):
        // a client's Connection list cannot take it off the request.
        if !HOP_BY_HOP.contains(name) && (!named.contains(name) || *name == REQUEST_ID) {
            out.append(name.clone(), value.clone());
        }
    }
    // RFC 9113 §8.2.3: HTTP/2 may split Cookie into several fields; they are joined
    // with "; " before they go to HTTP/1.1 (where one Cookie field is allowed).
    let mut cookies = out.get_all(header::COOKIE).iter();
    if let (Some(first), Some(_)) = (cookies.next(), cookies.next()) {
        let mut joined = first.as_bytes().to_vec();
        for more in out.get_all(header::COOKIE).iter().skip(1) {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(more.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
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
    // RFC 9112 §6.3: with Transfer-Encoding, Content-Length says nothing about the body
    // and an intermediary must remove it before forwarding.
    // Which hop-by-hop fields are there, in one pass over the names: a response has
    // `Connection` at most, usually, and a removal is a hash lookup each.
    let hop_by_hop = &HOP_BY_HOP[..7];
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Transfer-Encoding` is the sixth.
    if present & (1 << 5) != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
    // `Connection` is the first of them.
    if present & 1 != 0 {
        for n in connection_tokens(headers) {
            headers.remove(n);
        }
    }
    for (i, n) in hop_by_hop.iter().enumerate() {
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
    fn a_connection_field_names_its_tokens_and_keep_alive_names_nothing() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::CONNECTION, http::HeaderValue::from_static("Keep-Alive, X-Secret ,, close"));
        headers.append(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        let names = super::connection_tokens(&headers);
        assert_eq!(names, ["x-secret", "upgrade"]);
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
        }
    }
}
