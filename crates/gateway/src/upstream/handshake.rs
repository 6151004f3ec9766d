//! The WebSocket upgrade towards a backend (RFC 6455 §4.1, RFC 9110 §7.8), written and
//! read here rather than through a hyper client connection.
//!
//! An upgrade goes on a connection of its own and is one exchange: a head out, a head
//! back. Through hyper that was a client connection driven by a task of its own, its
//! request channel and dispatcher, and the socket handed over inside hyper's `Upgraded`
//! (a boxed, type-erased stream the relay then read through): 11,300 instructions of a
//! WebSocket session's 134,118, counted with callgrind, before the relay read a byte.
//! Here the request head is written in one write, the answer's head is read with
//! `httparse` (the parser hyper uses, with the same defaults: no obsolete line folding,
//! no whitespace before a colon) under the operator's response-head limits, and on `101`
//! the socket itself, with whatever the backend sent after the head, is the relay's.
//!
//! A refusal (any other final status) goes to the client as the backend sent it, body
//! included, whatever its framing: its bytes are replayed into a hyper client
//! connection ([`refusal`]), so its body is read by the parser every other response
//! goes through. Informational answers (`100`, `103`) before the final one are skipped,
//! as hyper skips them, up to [`MAX_INFORMATIONAL`]; a `101` must be the WebSocket
//! handshake's ([`check_switching`]).

use crate::upstream::ResponseHeadLimits;
use crate::upstream::http1;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, StatusCode, Version};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Why the backend's answer to an upgrade could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The answer is not an HTTP/1.1 response head (or is over the limits): the
    /// client gets 502 `upstream_invalid_response`.
    #[error("the backend's answer to the upgrade is not a valid response head: {0}")]
    Invalid(&'static str),
    /// The connection closed, or failed, before a whole head came: 502
    /// `upstream_failed`.
    #[error("the backend's connection failed before its answer to the upgrade: {0}")]
    Failed(#[from] io::Error),
}

/// The backend's final answer to an upgrade.
#[derive(Debug)]
pub struct Answer {
    /// Its status line and fields.
    pub head: http::response::Parts,
    /// The head's bytes as they came (for [`refusal`]).
    pub raw_head: Bytes,
    /// What came after the head in the same reads: the first WebSocket frames after a
    /// `101`, the start of the body after a refusal.
    pub rest: Bytes,
}

/// The upgrade request's head in HTTP/1.1's wire form (RFC 9112 §3): the request line
/// in origin form, then each field as `name: value` ([`http1::encode_request`]).
pub fn encode_request(head: &http::request::Parts, out: &mut Vec<u8>) {
    http1::encode_request(&head.method, &head.uri, &head.headers, out);
}

/// Reads one response head at the start of `buf`: `Ok(None)` while it is incomplete,
/// else the head and its length in bytes ([`http1::parse_head`]'s reading).
///
/// # Errors
/// [`HandshakeError::Invalid`] for bytes that are not a response head, and for a head
/// over `limits` (bytes, or field lines).
pub fn parse_response_head(
    buf: &[u8],
    limits: ResponseHeadLimits,
) -> Result<Option<(http::response::Parts, usize)>, HandshakeError> {
    let mut bytes = BytesMut::from(buf);
    Ok(read_head(&mut bytes, limits)?.map(|(parts, raw)| (parts, raw.len())))
}

/// [`http1::parse_head`], its errors as the handshake's.
fn read_head(
    buf: &mut BytesMut,
    limits: ResponseHeadLimits,
) -> Result<Option<(http::response::Parts, Bytes)>, HandshakeError> {
    http1::parse_head(buf, limits, &mut http::HeaderMap::new()).map_err(|e| match e {
        http1::ExchangeError::Invalid(why) => HandshakeError::Invalid(why),
        http1::ExchangeError::Io(e) => HandshakeError::Failed(e),
    })
}

/// RFC 6455 §4.1: what makes a `101` the WebSocket handshake's — HTTP/1.1 (HTTP/1.0 has
/// no `101`), `Upgrade: websocket`, `Connection: Upgrade`, and a `Sec-WebSocket-Accept`
/// that is the base64 SHA-1 of the `Sec-WebSocket-Key` sent with the GUID of §1.3. A
/// client must fail a connection whose handshake lacks any of them; the gateway is the
/// backend's client.
///
/// # Errors
/// [`HandshakeError::Invalid`] naming what is missing or wrong.
pub fn check_switching(request: &http::request::Parts, answer: &http::response::Parts) -> Result<(), HandshakeError> {
    use base64::Engine as _;
    let has_token = |name: http::header::HeaderName, token: &str| {
        answer
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if answer.version != Version::HTTP_11 {
        return Err(HandshakeError::Invalid("a 101 that is not HTTP/1.1"));
    }
    if !has_token(http::header::UPGRADE, "websocket") {
        return Err(HandshakeError::Invalid("a 101 without `Upgrade: websocket`"));
    }
    if !has_token(http::header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Invalid("a 101 without `Connection: Upgrade`"));
    }
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let key = request.headers.get(http::header::SEC_WEBSOCKET_KEY).map_or(&b""[..], HeaderValue::as_bytes);
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key);
    sha1.update(GUID);
    let expected = base64::engine::general_purpose::STANDARD.encode(sha1.finish());
    match answer.headers.get(http::header::SEC_WEBSOCKET_ACCEPT) {
        Some(accept) if accept.as_bytes() == expected.as_bytes() => Ok(()),
        _ => Err(HandshakeError::Invalid("a 101 whose `Sec-WebSocket-Accept` is not the one of the key sent")),
    }
}

/// Informational answers (`100`, `103`) read before the final one, at most.
pub const MAX_INFORMATIONAL: usize = 32;

/// Sends the upgrade request `head` on `stream` and reads the backend's final answer.
///
/// # Errors
/// [`HandshakeError`]: an invalid head, or a connection that failed first.
pub async fn upgrade<S>(
    stream: &mut S,
    head: &http::request::Parts,
    limits: ResponseHeadLimits,
) -> Result<Answer, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    encode_request(head, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut informational = 0;
    loop {
        if !buf.is_empty()
            && let Some((answer, raw_head)) = read_head(&mut buf, limits)?
        {
            if answer.status.is_informational() && answer.status != StatusCode::SWITCHING_PROTOCOLS {
                // A backend that sends nothing else would otherwise keep the gateway
                // parsing until the read timeout.
                informational += 1;
                if informational > MAX_INFORMATIONAL {
                    return Err(HandshakeError::Invalid("more informational answers (1xx) than the gateway reads"));
                }
                continue;
            }
            // Copied out: a WebSocket's relay keeps its first bytes until read, and
            // sharing the read buffer would keep all of it (kilobytes) per connection.
            let rest = if buf.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&buf) };
            return Ok(Answer { head: answer, raw_head, rest });
        }
        buf.reserve(4096);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeError::Failed(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a whole response head",
            )));
        }
    }
}

/// A stream whose first reads return bytes already read from it.
#[derive(Debug)]
pub struct Primed<S> {
    first: Bytes,
    inner: S,
}

impl<S> Primed<S> {
    /// `inner`, reading `first` before anything more of it.
    pub fn new(first: Bytes, inner: S) -> Self {
        Primed { first, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Primed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            if self.first.is_empty() {
                // Its memory goes now, not with the stream.
                self.first = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Primed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The backend's refusal of an upgrade as a response whose body streams from the
/// connection: the answer's bytes are replayed into a hyper client connection (which
/// reads the body by its framing, with every check other responses pass) and what
/// hyper writes is dropped, the request having gone out already. The connection is
/// driven by a task of its own until the body ends; refusals are the rare case.
///
/// # Errors
/// hyper's, for a head or body framing it refuses.
pub async fn refusal<S>(answer: Answer, stream: S) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut replay = BytesMut::with_capacity(answer.raw_head.len() + answer.rest.len());
    replay.extend_from_slice(&answer.raw_head);
    replay.extend_from_slice(&answer.rest);
    let io = Deaf { inner: Primed::new(replay.freeze(), stream), asked: false, reader: None };
    let (mut sender, connection) = crate::upstream::http1_client()
        .handshake::<_, http_body_util::Empty<Bytes>>(hyper_util::rt::TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backend connection of a refused WebSocket upgrade ended");
        }
    });
    // The method decides the framing (RFC 9112 §6.3): the upgrade was a GET.
    sender.send_request(http::Request::get("/").body(http_body_util::Empty::new()).unwrap_or_default()).await
}

/// A stream that takes every write and sends none of it, and has nothing to read until
/// the first write (see [`refusal`]: hyper's client refuses a response that comes
/// before its request went out).
struct Deaf<S> {
    inner: S,
    asked: bool,
    reader: Option<std::task::Waker>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Deaf<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.asked {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: Unpin> AsyncWrite for Deaf<S> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.asked = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ResponseHeadLimits = ResponseHeadLimits { bytes: 8192, count: 100 };

    #[test]
    fn a_head_is_read_whole_or_not_at_all() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        let head_len = raw.len() - 4;
        for cut in 0..head_len {
            assert!(parse_response_head(&raw[..cut], LIMITS).expect("a prefix").is_none(), "cut at {cut}");
        }
        let (head, len) = parse_response_head(raw, LIMITS).expect("valid").expect("complete");
        assert_eq!((head.status, head.version, len), (StatusCode::SWITCHING_PROTOCOLS, Version::HTTP_11, head_len));
        assert_eq!(head.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_101_must_be_the_websocket_handshakes() {
        // RFC 6455 §1.3's example key and accept value.
        let mut req = http::Request::get("/chat").body(()).expect("request");
        req.headers_mut().insert("sec-websocket-key", HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        let (request, ()) = req.into_parts();
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let answer = |raw: &str| parse_response_head(raw.as_bytes(), LIMITS).expect("valid").expect("whole").0;
        assert!(check_switching(&request, &answer(good)).is_ok());
        for bad in [
            good.replace("HTTP/1.1", "HTTP/1.0"),
            good.replace("Upgrade: WebSocket", "Upgrade: h2c"),
            good.replace("Connection: keep-alive, Upgrade", "Connection: keep-alive"),
            good.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAA"),
            good.replace("Sec-WebSocket-Accept", "X-Accept"),
        ] {
            assert!(matches!(check_switching(&request, &answer(&bad)), Err(HandshakeError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn what_hyper_refuses_is_refused() {
        for raw in [
            &b"HTTP/1.1 101 OK\r\nUpgrade : websocket\r\n\r\n"[..],
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n folded\r\n\r\n",
            b"HTTP/1.1 1010 OK\r\n\r\n",
            b"HTTP/2 101 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 101 OK\r\nUp\x01grade: websocket\r\n\r\n",
        ] {
            assert!(
                matches!(parse_response_head(raw, LIMITS), Err(HandshakeError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_head_over_the_limits_is_refused() {
        let mut long = b"HTTP/1.1 101 OK\r\nx-pad: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9000));
        assert!(matches!(parse_response_head(&long, LIMITS), Err(HandshakeError::Invalid(_))), "partial and too long");
        long.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_response_head(&long, LIMITS), Err(HandshakeError::Invalid(_))), "whole and too long");
        let many: Vec<u8> =
            [&b"HTTP/1.1 101 OK\r\n"[..], &b"a: b\r\n".repeat(101), b"\r\n"].into_iter().flatten().copied().collect();
        assert!(matches!(parse_response_head(&many, LIMITS), Err(HandshakeError::Invalid(_))), "too many fields");
    }

    #[test]
    fn the_request_goes_out_in_origin_form() {
        let mut req = http::Request::get("/chat/room?user_key=k").body(()).expect("request");
        req.headers_mut().insert("host", HeaderValue::from_static("backend:8080"));
        req.headers_mut().insert("upgrade", HeaderValue::from_static("websocket"));
        let (head, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_request(&head, &mut out);
        assert_eq!(out, b"GET /chat/room?user_key=k HTTP/1.1\r\nhost: backend:8080\r\nupgrade: websocket\r\n\r\n");
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_what_follows_the_head_is_kept() {
        let (mut gateway, mut backend) = tokio::io::duplex(4096);
        let (head, ()) = http::Request::get("/").body(()).expect("request").into_parts();
        let answer = tokio::spawn(async move {
            let mut request = vec![0u8; 18];
            backend.read_exact(&mut request).await.expect("the request");
            assert_eq!(request, b"GET / HTTP/1.1\r\n\r\n");
            backend.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching\r\n").await.expect("write");
            backend.write_all(b"Upgrade: websocket\r\n\r\n\x81\x00").await.expect("write");
            backend
        });
        let got = upgrade(&mut gateway, &head, LIMITS).await.expect("an answer");
        assert_eq!(got.head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(&got.rest[..], b"\x81\x00");
        let _backend = answer.await.expect("backend");
    }

    #[tokio::test]
    async fn a_flood_of_informational_answers_is_refused() {
        let (mut gateway, mut backend) = tokio::io::duplex(64 * 1024);
        let (head, ()) = http::Request::get("/").body(()).expect("request").into_parts();
        let flooding = tokio::spawn(async move {
            let mut request = vec![0u8; 18];
            backend.read_exact(&mut request).await.expect("the request");
            let flood = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(MAX_INFORMATIONAL + 1);
            let _ = backend.write_all(&flood).await;
            backend
        });
        let got = upgrade(&mut gateway, &head, LIMITS).await;
        assert!(matches!(got, Err(HandshakeError::Invalid(_))), "{got:?}");
        drop(flooding.await);
    }

    #[tokio::test]
    async fn a_refusal_reaches_the_client_with_its_body_whatever_its_framing() {
        for (framing, body) in [
            ("Content-Length: 5\r\n", &b"nope!"[..]),
            ("Transfer-Encoding: chunked\r\n", b"2\r\nno\r\n3\r\npe!\r\n0\r\n\r\n"),
            ("Connection: close\r\n", b"nope!"),
        ] {
            let (mut gateway, mut backend) = tokio::io::duplex(4096);
            let (head, ()) = http::Request::get("/").body(()).expect("request").into_parts();
            let framing = framing.to_string();
            let body = body.to_vec();
            let serving = tokio::spawn(async move {
                let mut request = vec![0u8; 18];
                backend.read_exact(&mut request).await.expect("the request");
                let mut answer = format!("HTTP/1.1 403 Forbidden\r\n{framing}\r\n").into_bytes();
                answer.extend_from_slice(&body);
                backend.write_all(&answer).await.expect("write");
                // Closed at the end: a close-delimited body ends here.
            });
            let answer = upgrade(&mut gateway, &head, LIMITS).await.expect("an answer");
            assert_eq!(answer.head.status, StatusCode::FORBIDDEN);
            let resp = refusal(answer, gateway).await.expect("the refusal");
            serving.await.expect("backend");
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("the body").to_bytes();
            assert_eq!(&body[..], b"nope!");
        }
    }
}
