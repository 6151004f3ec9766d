//! WebSocket upgrades: the handshake checks (RFC 6455 §4, RFC 8441), the upgrade
//! towards the backend, and the relay task that governs the connection.

use super::*;
use crate::upstream::handshake::{self, HandshakeError};

impl Gateway {
    pub(super) async fn websocket(
        &self,
        parts: &request::Parts,
        ctx: &Context<'_>,
        client: hyper::upgrade::OnUpgrade,
        over_h2: bool,
        (listener_slot, app_slot, guards): (Arc<crate::server::Slot>, Option<ConnectionSlot>, Vec<Held>),
    ) -> Result<Response<GatewayBody>, Refusal> {
        let (upstream, rest, prefix) = destination_with_prefix(parts, ctx)?;
        let mut head = self.upstream_head(parts, ctx, upstream, rest)?;
        let upgrade_span = self.trace_upstream(ctx, &mut head);
        // Upgrade requests go on a connection of their own.
        head.headers.insert(header::HOST, upstream.host.clone());
        head.headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        head.headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if over_h2 {
            // RFC 8441 has no key exchange; the backend's HTTP/1.1 handshake needs one.
            head.headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
            head.headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }

        let key = super::exchange::balance_key(parts, ctx, upstream);
        let (mut stream, mut lease, endpoint) = upstream.connect(key.as_deref()).await?;
        let label = endpoint.label();
        // The backend answers the upgrade within the read timeout, as any request.
        let answer = handshake::upgrade(&mut stream, &head, crate::upstream::response_head_limits());
        let answered = match ctx.plan().timeouts.read {
            Some(due) => tokio::time::timeout(due, answer).await.map_err(|_| {
                Refusal::UpstreamTimeout(format!("{label}: no answer to the WebSocket upgrade within read_timeout"))
            }),
            None => Ok(answer.await),
        }
        .and_then(|r| {
            r.map_err(|e| match e {
                HandshakeError::Invalid(_) => Refusal::UpstreamInvalidResponse(format!("{label}: {e}")),
                HandshakeError::Failed(_) => Refusal::UpstreamFailed(format!("{label}: {}", error_chain(&e))),
            })
        });
        // RFC 6455 §4.1: a 101 that is not the WebSocket handshake's is a failure.
        let answered = answered.and_then(|a| match a.head.status {
            StatusCode::SWITCHING_PROTOCOLS => handshake::check_switching(&head, &a.head)
                .map(|()| a)
                .map_err(|e| Refusal::UpstreamInvalidResponse(format!("{label}: {e}"))),
            _ => Ok(a),
        });
        let ok = answered.as_ref().is_ok_and(|a| !endpoint.failed_status(a.head.status));
        endpoint.report(ok);
        let answer = answered?;
        lease.answered();
        if let Some((id, start)) = upgrade_span {
            let status = vec![("http.response.status_code", Attr::Int(i64::from(answer.head.status.as_u16())))];
            self.span_end(ctx, "upstream", start, Some(id), status);
        }
        if answer.head.status != StatusCode::SWITCHING_PROTOCOLS {
            // The backend refused the upgrade: its answer goes to the client as it is.
            let mut resp = handshake::refusal(answer, stream).await.map_err(|e| {
                let detail = format!("{label}: {}", error_chain(&e));
                match crate::upstream::is_invalid_response(&e) {
                    true => Refusal::UpstreamInvalidResponse(detail),
                    false => Refusal::UpstreamFailed(detail),
                }
            })?;
            if ctx.product.rewrite_redirects {
                rewrite_redirects(resp.headers_mut(), upstream, &ctx.product.public_base, prefix);
            }
            // As any response: hop-by-hop fields removed, the read timeout between two
            // parts of its body, the payload limit, a broken body reported.
            let plan = ctx.plan();
            return self.shape_response(resp.map(GatewayBody::from), plan.timeouts.read, plan.payload_limits.response);
        }

        // The socket is the relay's, with what the backend sent after its head.
        let resp_headers = answer.head.headers;
        let backend = handshake::Primed::new(answer.rest, stream);
        let deflate = header_has_token_prefix(&resp_headers, header::SEC_WEBSOCKET_EXTENSIONS, "permessage-deflate");
        // Governed only when the `tollgate` policy identified an application.
        let session = match (&ctx.application, &ctx.credential) {
            (Some(app), Some(credential)) => Some(Arc::new(Session {
                snapshot: self.snapshot.clone(),
                host: request_host_of(parts).unwrap_or_default().to_ascii_lowercase().into(),
                product: ctx.product.system_name.clone(),
                app_id: app.id.clone(),
                plan: app.plan.system_name.clone(),
                slot: app_slot,
                credential: credential.clone(),
                counters: self.counters.clone(),
                clock: self.clock.clone(),
                analytics: self.analytics.clone(),
                cache: Default::default(),
                token_expires: ctx.plan().session_expires,
            })),
            _ => None,
        };
        let gate: Option<relay::Gate> = session.clone().map(|s| s as relay::Gate);
        let ws = &ctx.product.websocket_config;
        let metrics = self.metrics.clone();
        let product_metrics = self.product_metrics(ctx.product).clone();
        let env = self.environment;
        let tally = Arc::new(relay::Tally::default());
        // Boxed: the connection's task and its relay each hold a pointer, not a copy.
        let options = Box::new(RelayOptions {
            tallies: vec![product_metrics.websocket_tally.clone(), tally.clone()],
            deflate,
            max_message_bytes: ws.max_message_bytes,
            gate,
            idle_timeout: ws.idle_timeout,
            ping_interval: ws.ping_interval,
            pong_timeout: ws.pong_timeout,
            max_duration: ws.max_connection_duration,
        });
        let (generations, draining) = (self.snapshot.subscribe(), self.draining.subscribe());
        let mut out = Response::new(GatewayBody::empty());
        *out.headers_mut() = forwardable_headers(&resp_headers);
        if over_h2 {
            // A 2xx to the CONNECT opens the stream as the WebSocket (RFC 8441 §5).
            out.headers_mut().remove(header::SEC_WEBSOCKET_ACCEPT);
        } else {
            *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            out.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            out.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        tokio::spawn(async move {
            let client = match client.await {
                Ok(c) => c,
                Err(e) => return tracing::debug!(error = %e, "the client's WebSocket upgrade did not complete"),
            };
            metrics.env(env).websocket_opened();
            product_metrics.websocket_opened();
            let governed = session.clone();
            // Boxed: the relay polls it in place, and it is a few hundred bytes that
            // every open connection would otherwise carry twice.
            lease.websocket();
            let endpoint = lease.endpoint().clone();
            let stop = Box::pin(async move {
                let gateway = async {
                    match &governed {
                        Some(s) => s.until_closed(generations, draining).await,
                        None => {
                            crate::session::until_drained(generations, draining).await;
                            (relay::CLOSE_GOING_AWAY, "the gateway is shutting down")
                        }
                    }
                };
                tokio::select! {
                    closed = gateway => closed,
                    () = endpoint.drained() => (relay::CLOSE_GOING_AWAY, "the backend instance is draining"),
                }
            });
            // Pinned where it is made: this task lives as long as the connection, and
            // each copy of the relay future would be memory held per open WebSocket.
            let mut relayed = std::pin::pin!(relay::relay(TokioIo::new(client), backend, options, stop));
            let totals = match &session {
                Some(s) => s.accounted(relayed.as_mut(), &tally).await,
                None => relayed.await,
            };
            tracing::debug!(?totals, "WebSocket closed");
            metrics.env(env).websocket_closed(&totals);
            product_metrics.websocket_closed();
            drop((session, listener_slot, guards, lease));
        });
        Ok(out)
    }
}

/// How a request opens a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    None,
    /// `GET` with `Upgrade: websocket` (RFC 6455).
    Http1,
    /// Extended CONNECT with `:protocol: websocket` (RFC 8441).
    Http2,
}

/// A fresh `Sec-WebSocket-Key`: 16 unpredictable bytes, base64-encoded.
pub(super) fn websocket_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&relay::random_u64().to_be_bytes());
    nonce[8..].copy_from_slice(&relay::random_u64().to_be_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Whether the request asks for a WebSocket, and how; an invalid request is an error.
pub(crate) fn websocket_upgrade<B>(req: &Request<B>) -> Result<Handshake, Refusal> {
    let headers = req.headers();
    if let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() {
        if req.method() != Method::CONNECT || !protocol.as_str().eq_ignore_ascii_case("websocket") {
            return Err(Refusal::BadUpgrade("extended CONNECT tunnels the websocket protocol only"));
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            return Err(Refusal::BadUpgrade("Sec-WebSocket-Version must be 13"));
        }
        return Ok(Handshake::Http2);
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Ok(Handshake::None);
    }
    if req.version() != Version::HTTP_11 {
        return Err(Refusal::BadUpgrade("WebSocket upgrades need HTTP/1.1"));
    }
    if req.method() != Method::GET {
        return Err(Refusal::BadUpgrade("the upgrade request must be a GET"));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Refusal::BadUpgrade("`Connection: Upgrade` is missing"));
    }
    let key_ok = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k.as_bytes()).ok())
        .is_some_and(|k| k.len() == 16);
    if !key_ok {
        return Err(Refusal::BadUpgrade("Sec-WebSocket-Key is missing or not 16 base64-encoded bytes"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(Refusal::BadUpgrade("Sec-WebSocket-Version must be 13"));
    }
    // A body before the upgrade would be read by one side as the first WebSocket
    // frames and by the other as a body: refused (RFC 6455 §4.1 sends none).
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(Refusal::BadUpgrade("an upgrade request must not carry a body"));
    }
    Ok(Handshake::Http1)
}

/// Whether a comma-separated header lists an item starting with `token` (extension
/// offers carry parameters: `permessage-deflate; client_max_window_bits`).
pub(super) fn header_has_token_prefix(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case(token)))
}

pub(super) fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
