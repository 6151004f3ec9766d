//! The exchange with a backend: the upstream request's head, the body under its
//! limits, retries, the response head due within the read timeout, and the
//! response as the client gets it (hop-by-hop headers, redirects, body limits).

use super::*;

impl Gateway {
    /// The upstream request's head: the client's, minus hop-by-hop headers, with
    /// `X-Forwarded-*` and `Forwarded` added and the upstream request phase applied.
    pub(super) fn upstream_head(
        &self,
        parts: &request::Parts,
        ctx: &Context<'_>,
        upstream: &Upstream,
        rest: &str,
    ) -> Result<request::Parts, Refusal> {
        let uri = upstream
            .uri(rest, parts.uri.query())
            .map_err(|_| Refusal::BadRequest("the request path cannot be forwarded"))?;
        let (mut head, ()) = Request::new(()).into_parts();
        head.method = parts.method.clone();
        head.uri = uri;
        head.version = Version::HTTP_11;
        head.headers = forwardable_headers(&parts.headers);
        // `TE: trailers` is the one TE HTTP/2 allows (RFC 9113 §8.2.2); gRPC servers
        // read it as the client's (and every proxy's) promise to relay trailers, which
        // the gateway keeps. Only towards a backend that may speak HTTP/2.
        if upstream.fleet().options.protocol != tollgate_model::UpstreamProtocol::Http1
            && header_has_token(&parts.headers, header::TE, "trailers")
        {
            head.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        add_forwarded(&mut head.headers, parts, ctx);
        for policy in &ctx.product.chain {
            policy.upstream_request(&mut head, ctx);
        }
        Ok(head)
    }

    /// Sends the request to where it goes (a policy's route, else the backend usage
    /// with the longest matching prefix) and returns the response as the client gets
    /// it, the backend's redirects pointed at the public base URL.
    pub(super) async fn forward(
        &self,
        parts: &request::Parts,
        body: Incoming,
        ctx: &Context<'_>,
        pace: Option<BodyPace>,
    ) -> Result<Response<GatewayBody>, Refusal> {
        let (upstream, rest, prefix) = destination_with_prefix(parts, ctx)?;
        let resp = self.forward_to(parts, body, ctx, upstream, rest, pace).await;
        match resp {
            Ok(mut r) if ctx.product.rewrite_redirects => {
                rewrite_redirects(r.headers_mut(), upstream, &ctx.product.public_base, prefix);
                Ok(r)
            }
            other => other,
        }
    }

    /// The exchange with `upstream`: retried as the `retry` policy allows (bodyless
    /// requests only), else once with the client's body under its limits.
    pub(super) async fn forward_to(
        &self,
        parts: &request::Parts,
        body: Incoming,
        ctx: &Context<'_>,
        upstream: &Upstream,
        rest: &str,
        pace: Option<BodyPace>,
    ) -> Result<Response<GatewayBody>, Refusal> {
        let plan = ctx.plan();
        let key = balance_key(parts, ctx, upstream);
        let key = key.as_deref();
        if let Some(retry) = &plan.retry {
            // A bodyless request: each attempt sends a fresh empty body.
            let mut attempt = 0;
            loop {
                let mut head = self.upstream_head(parts, ctx, upstream, rest)?;
                let span = self.trace_upstream(ctx, &mut head);
                let last = attempt == retry.retries;
                let result =
                    exchange(upstream, Request::from_parts(head, UpstreamBody::Empty), key, plan.timeouts.read).await;
                if let Some((id, start)) = span {
                    let status = result.as_ref().map_or(0, |r| i64::from(r.status().as_u16()));
                    self.span_end(
                        ctx,
                        "upstream",
                        start,
                        Some(id),
                        vec![("http.response.status_code", Attr::Int(status))],
                    );
                }
                let again = match &result {
                    Ok(r) => retry.statuses.contains(&r.status()),
                    Err(Refusal::UpstreamUnavailable(_) | Refusal::UpstreamTimeout(_)) => true,
                    Err(_) => false,
                };
                if last || !again {
                    return self.shape_response(result?, plan.timeouts.read, plan.payload_limits.response);
                }
                attempt += 1;
                self.metrics.env(self.environment).upstream_error();
                tracing::debug!(attempt, "retrying the request");
                if !retry.delay.is_zero() {
                    tokio::time::sleep(retry.delay).await;
                }
            }
        }
        let mut head = self.upstream_head(parts, ctx, upstream, rest)?;
        let upstream_span = self.trace_upstream(ctx, &mut head);
        let (request_limit, response_limit) = (plan.payload_limits.request, plan.payload_limits.response);
        let (send_timeout, read_timeout) = (plan.timeouts.send, plan.timeouts.read);
        let stopped = Stopped::default();
        let body = if body.is_end_stream() {
            UpstreamBody::from(body)
        } else {
            let timer = send_timeout.map(Timer::deadline);
            let limited = UpstreamBody::limited(body, request_limit, timer, pace, stopped.clone());
            // A small body is read whole before a backend connection is taken (as
            // nginx's `proxy_request_buffering`): a client that trickles it holds no
            // backend connection meanwhile. Over HTTP/1 only, where a body with a
            // Content-Length has no trailers to lose.
            let buffered = parts.version < http::Version::HTTP_2
                && limited.size_hint().exact().is_some_and(|n| n <= self.defaults.request_buffer_bytes);
            if buffered {
                match limited.collect().await {
                    Ok(whole) => UpstreamBody::bytes(whole.to_bytes()),
                    Err(e) => {
                        return Err(
                            body_stopped(&stopped, upstream).unwrap_or_else(|| Refusal::BadRequestBody(e.to_string()))
                        );
                    }
                }
            } else {
                limited
            }
        };
        let sent = std::time::Instant::now();
        // The whole request is sent before the backend answers (usually): the head is
        // due within both timeouts.
        let head_due = read_timeout.map(|read| read + send_timeout.unwrap_or_default());
        // A gRPC call's deadline bounds the wait for the head too (the backend gets the
        // header and ends the call itself; this covers a backend that does not).
        // (A constant name: a `&str` is parsed into a name at each lookup.)
        const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
        let head_due = match (head_due, parts.headers.get(GRPC_TIMEOUT).and_then(grpc_timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let resp = exchange(upstream, Request::from_parts(head, body), key, head_due).await;
        if resp.is_ok() {
            self.product_metrics(ctx.product).upstream.observe(sent.elapsed());
        }
        if let Some((id, start)) = upstream_span {
            let status = resp.as_ref().map_or(0, |r| i64::from(r.status().as_u16()));
            let attrs = vec![
                ("server.address", Attr::Str(upstream.authority.to_string())),
                ("http.response.status_code", Attr::Int(status)),
            ];
            self.span_end(ctx, "upstream", start, Some(id), attrs);
        }
        // The body stopped on the way: that, not the backend's reaction to it, is what
        // the client hears.
        if let Some(e) = body_stopped(&stopped, upstream) {
            return Err(e);
        }
        self.shape_response(resp?, read_timeout, response_limit)
    }

    /// A backend's response as the client gets it: hop-by-hop headers removed, the
    /// `upstream_connection` read timeout and the `payload_limits` response limit
    /// applied, and a body that fails after the head reported (metrics, log).
    pub(super) fn shape_response(
        &self,
        resp: Response<GatewayBody>,
        read_timeout: Option<std::time::Duration>,
        response_limit: Option<u64>,
    ) -> Result<Response<GatewayBody>, Refusal> {
        let report = BrokenBodies { metrics: self.metrics.clone(), environment: self.environment };
        shape_response(resp, read_timeout, response_limit).map(|r| r.map(|b| b.reporting(report)))
    }
}

/// Why a request body stopped on its way to the backend, if it did.
pub(super) fn body_stopped(stopped: &Stopped, upstream: &Upstream) -> Option<Refusal> {
    match stopped.load(std::sync::atomic::Ordering::Relaxed) {
        crate::upstream::body::STOPPED_TOO_LARGE => Some(Refusal::RequestTooLarge),
        crate::upstream::body::STOPPED_SEND_TIMEOUT => Some(Refusal::UpstreamTimeout(format!(
            "{}: the request was not sent within send_timeout",
            upstream.label()
        ))),
        crate::upstream::body::STOPPED_TOO_SLOW => Some(Refusal::RequestTimeout),
        crate::upstream::body::STOPPED_UNREADABLE => {
            Some(Refusal::BadRequestBody("the client's body ended before its end or was malformed".into()))
        }
        _ => None,
    }
}

/// Sends a request to the backend (`key`: the consistent hash's); with `head_due`, its
/// response head must come by then.
///
/// Boxed: the send's future (3.5 KB: the request, the pool's states) would otherwise
/// be part of every future above it up to the request's own, and a future is copied
/// whole each time it is made and moved — three times as hyper's service boxes it, and
/// once at each level on the way down. One allocation per request costs less than
/// those copies (counted with callgrind: `docs/BENCHMARKS.md`).
pub(super) fn exchange<'a>(
    upstream: &'a Upstream,
    req: Request<UpstreamBody>,
    key: Option<&'a [u8]>,
    head_due: Option<std::time::Duration>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, Refusal>> + Send + 'a>> {
    Box::pin(upstream.send(req, key, head_due))
}

/// The key a `consistent_hash` backend balances this request on, if it has one: the
/// configured header's or cookie's value, the client's address, or the application's id.
pub(super) fn balance_key<'r>(
    parts: &'r request::Parts,
    ctx: &'r Context<'_>,
    upstream: &Upstream,
) -> Option<std::borrow::Cow<'r, [u8]>> {
    use std::borrow::Cow;
    use tollgate_model::{Algorithm, HashKey, HashOn};
    let fleet = upstream.fleet();
    let balancing = &fleet.options;
    if balancing.algorithm != Algorithm::ConsistentHash || fleet.endpoints.len() < 2 {
        return None;
    }
    match balancing.hash_on.as_ref().unwrap_or(&HashOn::Named(HashKey::RemoteAddr)) {
        HashOn::Header { header: name } => parts.headers.get(name.as_str()).map(|v| Cow::Borrowed(v.as_bytes())),
        HashOn::Cookie { cookie: name } => parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(v.trim_matches('"').as_bytes())),
        HashOn::Named(HashKey::RemoteAddr) => Some(Cow::Owned(match ctx.client_addr.ip() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        })),
        HashOn::Named(HashKey::ApplicationId) => ctx.application.as_ref().map(|a| Cow::Owned(a.id.as_bytes().to_vec())),
    }
}

/// A backend's response as the client gets it: hop-by-hop headers removed, the
/// `upstream_connection` read timeout and the `payload_limits` response limit applied.
pub(super) fn shape_response(
    mut resp: Response<GatewayBody>,
    read_timeout: Option<std::time::Duration>,
    response_limit: Option<u64>,
) -> Result<Response<GatewayBody>, Refusal> {
    if let Some(max) = response_limit {
        let declared = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(Refusal::ResponseTooLarge);
        }
        resp = resp.map(|b| b.capped(max));
    }
    if let Some(read) = read_timeout {
        resp = resp.map(|b| b.idle_timeout(read));
    }
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

/// Where the request goes: where a policy (`upstream`, `routing`) sent it, or the
/// product's backend usage with the longest matching prefix; with the path to send.
/// Also the public path prefix the backend sits under (its usage's; none for a policy's
/// target), for rewriting its redirects.
pub(super) fn destination_with_prefix<'c>(
    parts: &'c request::Parts,
    ctx: &'c Context<'_>,
) -> Result<(&'c Upstream, &'c str, &'c str), Refusal> {
    let (upstream, rest, prefix) = destination_of(parts, ctx)?;
    if rest.is_empty() {
        return Ok((upstream, rest, prefix));
    }
    // A path of a policy's making must be one: `etc` after a base path `/base` would
    // make `/baseetc`, outside it (found by an adversarial pass with a `routing`
    // template).
    if !rest.starts_with('/') {
        return Err(Refusal::BadPath(crate::path::PathError::NotAbsolute));
    }
    // The path was made canonical on entry, but a policy may have rewritten it since
    // (or routed the request to a path of its own): what goes after the backend's base
    // path must still have no dot-segments, so the request can never leave that base
    // path. A path left as it entered is canonical already, and so is its part after
    // a usage's prefix (which ends where a segment begins).
    let unchanged = ctx.path_as_entered && ctx.plan().route.is_none();
    if !unchanged && !matches!(crate::path::canonical(rest, ctx.product.path_rules), Ok(c) if c == rest) {
        return Err(Refusal::BadPath(crate::path::PathError::AboveRoot));
    }
    Ok((upstream, rest, prefix))
}

pub(super) fn destination_of<'c>(
    parts: &'c request::Parts,
    ctx: &'c Context<'_>,
) -> Result<(&'c Upstream, &'c str, &'c str), Refusal> {
    match &ctx.plan().route {
        None => {
            let (usage, rest) = ctx.product.route(parts.uri.path()).ok_or(Refusal::NoBackend)?;
            Ok((&usage.upstream, rest, &usage.prefix))
        }
        Some(route) => {
            let upstream = match &route.target {
                Target::Url(u) => u,
                Target::Backend(name) => {
                    &ctx.product.usages.iter().find(|u| *u.backend == **name).ok_or(Refusal::NoBackend)?.upstream
                }
            };
            Ok((upstream, route.path.as_str(), ""))
        }
    }
}

/// `Location`, `Content-Location`, the URL of `Refresh` and the targets of `Link` that
/// point at the backend's private base URL point at the public base URL the request
/// came through instead (`public`: its scheme, host and port; then the usage's path
/// `prefix`), as nginx's default `proxy_redirect` does: a backend's own address never
/// reaches a client. Every field of those names is rewritten, however the backend
/// spelled its address (see [`backend_rest`]). Nothing is allocated unless a header is
/// rewritten.
pub(super) fn rewrite_redirects(headers: &mut HeaderMap, upstream: &Upstream, public: &str, prefix: &str) {
    const REFRESH: HeaderName = HeaderName::from_static("refresh");
    let names = [header::LOCATION, header::CONTENT_LOCATION, REFRESH, header::LINK];
    // Most responses carry none of them: one pass over the names instead of a lookup
    // of each.
    if !headers.keys().any(|n| names.contains(n)) {
        return;
    }
    let map = |url: &str| backend_rest(url, &upstream.base).map(|rest| format!("{public}{prefix}{rest}"));
    for name in names {
        let values = headers.get_all(&name);
        if values.iter().next().is_none() {
            continue;
        }
        let mut changed = false;
        let rewritten: Vec<HeaderValue> = values
            .iter()
            .map(|v| {
                let Ok(text) = v.to_str() else { return v.clone() };
                let new = match name {
                    ref n if *n == REFRESH => {
                        // `5; url=http://…`
                        let at = text.to_ascii_lowercase().find("url=").map(|i| i + 4);
                        at.and_then(|i| map(text[i..].trim_matches(['"', '\''])).map(|u| format!("{}{u}", &text[..i])))
                    }
                    ref n if *n == header::LINK => rewrite_link(text, &map),
                    _ => map(text),
                };
                match new.and_then(|n| HeaderValue::from_str(&n).ok()) {
                    Some(n) => {
                        changed = true;
                        n
                    }
                    None => v.clone(),
                }
            })
            .collect();
        if changed {
            headers.remove(&name);
            for v in rewritten {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// A `Link` field (RFC 8288) with each `<target>` the backend's `map` rewrites replaced;
/// `None` when none is.
fn rewrite_link(field: &str, map: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = field;
    let mut changed = false;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else { break };
        out.push_str(&rest[..=open]);
        let target = &rest[open + 1..close];
        match map(target) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(target),
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// If `url` points at the backend at `base`, what follows its base path (empty, or
/// starting with `/`, `?` or `#`). The backend may spell its address in any case, with
/// user information, a trailing dot, an explicit or implied default port, leading
/// zeros in the port, `ws(s)` for `http(s)`, or scheme-relative (`//host:port/…`).
fn backend_rest<'u>(url: &'u str, base: &tollgate_model::BaseUrl) -> Option<&'u str> {
    let url = url.trim();
    let (tls, rest) = match url.strip_prefix("//") {
        Some(rest) => (base.is_tls(), rest),
        None => {
            let (scheme, rest) = url.split_once("://")?;
            let tls = match scheme.to_ascii_lowercase().as_str() {
                "http" | "ws" => false,
                "https" | "wss" => true,
                _ => return None,
            };
            (tls, rest)
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once(']')?;
            (h, p.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let port = match port {
        None | Some("") => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse::<u16>().ok()?,
    };
    if !host.eq_ignore_ascii_case(&base.host) || port != base.port {
        return None;
    }
    let rest = after.strip_prefix(base.path.as_str())?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// This process's name in `Via` (RFC 9110 §7.6.3): `tollgate-` and 8 random hex digits,
/// made once, so that a request that comes back to the same gateway is recognised.
pub(crate) fn via_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("tollgate-{:08x}", rand::random::<u32>()))
}

/// Whether the request already passed this gateway: its `Via` names [`via_name`].
pub(crate) fn came_back(headers: &HeaderMap) -> bool {
    let me = via_name();
    headers.get_all(header::VIA).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        // `received-protocol received-by [comment]`, comma-separated.
        v.split(',').any(|hop| hop.split_whitespace().nth(1) == Some(me))
    })
}

/// `Via`'s hop for a request of `version`: `1.1 tollgate-…` (made once per process).
fn via_hop(version: http::Version) -> &'static HeaderValue {
    static HOPS: std::sync::OnceLock<[HeaderValue; 3]> = std::sync::OnceLock::new();
    let hops = HOPS.get_or_init(|| {
        ["1.0", "1.1", "2"].map(|protocol| {
            // `via_name` is `tollgate-` and eight hexadecimal digits: always a valid value.
            HeaderValue::from_str(&format!("{protocol} {}", via_name())).unwrap_or(HeaderValue::from_static("1.1"))
        })
    });
    match version {
        http::Version::HTTP_10 => &hops[0],
        http::Version::HTTP_2 => &hops[2],
        _ => &hops[1],
    }
}

/// Appends `element` to the field `name` as the last of its comma-separated list
/// (after the value of the first such field, if any), or sets it. One lookup of the
/// name either way.
fn append_element(headers: &mut HeaderMap, name: HeaderName, element: &HeaderValue) {
    match headers.entry(name) {
        http::header::Entry::Vacant(v) => drop(v.insert(element.clone())),
        http::header::Entry::Occupied(mut o) => {
            let prev = o.get().as_bytes();
            let mut value = Vec::with_capacity(prev.len() + 2 + element.len());
            value.extend_from_slice(prev);
            value.extend_from_slice(b", ");
            value.extend_from_slice(element.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
                o.insert(v);
            }
        }
    }
}

/// Writes an address as `X-Forwarded-For` and RFC 7239's `for=` spell it (IPv4 in
/// dotted decimal, IPv6 as `std` writes it, RFC 5952's form).
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        // Not `Display`: it formats through a padding buffer (a seventh of the HTTP
        // path's instructions when it ran per request, measured with callgrind).
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// What the gateway writes about one client in the forwarding fields of each request
/// it forwards, made once per connection (the address and the scheme do not change on
/// it): the address as `X-Forwarded-For` spells it, and RFC 7239's `Forwarded`
/// element, without and with the request's host.
#[derive(Debug)]
pub(crate) struct Forwarded {
    /// The client's address (`203.0.113.7`, `2001:db8::1`).
    address: HeaderValue,
    /// `for=…;proto=…` (an IPv6 address quoted and in brackets, RFC 7239 §6).
    element: HeaderValue,
    /// The last element written with a host, and that host: the requests of a
    /// connection name the same host, as a rule, and then share one value.
    with_host: std::sync::Mutex<Option<(HeaderValue, HeaderValue)>>,
}

impl Forwarded {
    /// The values for a client at `ip` that reached the gateway over TLS or not.
    pub(crate) fn new(ip: std::net::IpAddr, tls: bool) -> Self {
        let mut address = Vec::with_capacity(48);
        push_ip(&mut address, ip);
        let mut element = Vec::with_capacity(address.len() + 20);
        element.extend_from_slice(b"for=");
        match ip {
            std::net::IpAddr::V4(_) => element.extend_from_slice(&address),
            std::net::IpAddr::V6(_) => {
                element.extend_from_slice(b"\"[");
                element.extend_from_slice(&address);
                element.extend_from_slice(b"]\"");
            }
        }
        element.extend_from_slice(b";proto=");
        element.extend_from_slice(proto(tls).as_bytes());
        // Digits, letters, dots, colons, brackets and quotes: always valid values.
        let value = |bytes: Vec<u8>| {
            HeaderValue::from_maybe_shared(Bytes::from(bytes)).unwrap_or(HeaderValue::from_static("unknown"))
        };
        Forwarded { address: value(address), element: value(element), with_host: std::sync::Mutex::new(None) }
    }

    /// The `Forwarded` element for a request to `host`, if it can be written inside a
    /// quoted string (RFC 7239 §4: visible ASCII and tabs, no `"` or `\`); without
    /// the host otherwise.
    fn element(&self, host: Option<&HeaderValue>) -> HeaderValue {
        let quotable = |h: &[u8]| h.iter().all(|&b| (b == b'\t' || (32..127).contains(&b)) && b != b'"' && b != b'\\');
        let Some(host) = host.filter(|h| quotable(h.as_bytes())) else {
            return self.element.clone();
        };
        let mut last = self.with_host.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((h, v)) = last.as_ref()
            && h == host
        {
            return v.clone();
        }
        let mut element = Vec::with_capacity(self.element.len() + host.len() + 8);
        element.extend_from_slice(self.element.as_bytes());
        element.extend_from_slice(b";host=\"");
        element.extend_from_slice(host.as_bytes());
        element.push(b'"');
        let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(element)) else {
            return self.element.clone();
        };
        *last = Some((host.clone(), value.clone()));
        value
    }
}

/// `X-Forwarded-Proto`'s value.
fn proto(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Adds what a proxy says about the hop it made: `Via` (RFC 9110 §7.6.3), the
/// de-facto `X-Forwarded-For`/`-Proto`/`-Host`, and RFC 7239's `Forwarded`, each
/// after what earlier proxies wrote.
pub(super) fn add_forwarded(headers: &mut HeaderMap, parts: &request::Parts, ctx: &Context<'_>) {
    // RFC 9110 §7.6.3: a proxy appends itself to `Via` — and a loop shows.
    append_element(headers, header::VIA, via_hop(parts.version));
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    // The connection's values; made here when the context has no connection.
    let made;
    let forwarded = match &ctx.forwarded {
        Some(f) => &**f,
        None => {
            made = Forwarded::new(ctx.client_addr.ip(), ctx.tls);
            &made
        }
    };
    append_element(headers, XFF, &forwarded.address);
    headers.insert(XFP, HeaderValue::from_static(proto(ctx.tls)));
    // The authority the gateway routed on (see `host_of`): the target's own in absolute
    // form and HTTP/2, else `Host` — never a second, client-chosen value.
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    // RFC 7239: the same facts in one element, after those of earlier proxies.
    append_element(headers, header::FORWARDED, &forwarded.element(host.as_ref()));
    if let Some(h) = host {
        headers.insert(XFH, h);
    }
}

#[cfg(test)]
mod tests {
    use super::backend_rest;
    use tollgate_model::BaseUrl;

    #[test]
    fn addresses_are_written_as_forwarded_headers_spell_them() {
        for (ip, text) in [
            ("0.0.0.0", "0.0.0.0"),
            ("127.0.0.1", "127.0.0.1"),
            ("10.200.9.255", "10.200.9.255"),
            ("::1", "::1"),
            ("2001:db8::8:800:200c:417a", "2001:db8::8:800:200c:417a"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ] {
            let mut out = Vec::new();
            super::push_ip(&mut out, ip.parse().expect("an address"));
            assert_eq!(String::from_utf8(out).expect("ASCII"), text);
        }
    }

    #[test]
    fn the_backends_address_is_recognised_however_it_is_spelled() {
        let base = BaseUrl::parse("http://127.0.0.1:19001/v1", &["http", "https", "ws", "wss"]).expect("base");
        for (url, rest) in [
            ("http://127.0.0.1:19001/v1/next", "/next"),
            ("HTTP://127.0.0.1:19001/v1/next", "/next"),
            ("//127.0.0.1:19001/v1/next?a=1", "/next?a=1"),
            ("http://user:pw@127.0.0.1:19001/v1", ""),
            ("http://127.0.0.1.:19001/v1#top", "#top"),
            ("http://127.0.0.1:019001/v1/x", "/x"),
            ("ws://127.0.0.1:19001/v1/x", "/x"),
        ] {
            assert_eq!(backend_rest(url, &base), Some(rest), "{url}");
        }
        for url in [
            "/v1/next",
            "http://127.0.0.1:19002/v1/x",
            "http://127.0.0.1:19001/v2/x",
            "http://127.0.0.1:19001/v1x",
            "ftp://127.0.0.1:19001/v1",
        ] {
            assert_eq!(backend_rest(url, &base), None, "{url}");
        }
        let default_port = BaseUrl::parse("https://Backend.internal", &["https"]).expect("base");
        assert_eq!(backend_rest("https://backend.INTERNAL/a", &default_port), Some("/a"));
        assert_eq!(backend_rest("https://backend.internal:443/a", &default_port), Some("/a"));
        assert_eq!(backend_rest("http://backend.internal/a", &default_port), None, "port 80 is another origin");
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_protocol_writes_them() {
        use std::time::Duration;
        let t = |s: &str| super::grpc_timeout(&http::HeaderValue::from_str(s).expect("value"));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "5", "123456789S", "5s", "-1S", "1.5S", "5 S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
