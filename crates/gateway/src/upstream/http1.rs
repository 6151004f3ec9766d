//! The gateway's own HTTP/1.1 client exchange, for the requests that make up most of
//! an API's traffic: those without a body (`GET`, `HEAD`, `DELETE`, `OPTIONS`, a `POST`
//! with nothing in it).
//!
//! Through hyper's client connection such a request crossed a dispatcher built for
//! every case — a request channel, a body sender, a state machine shared by both
//! directions and pipelining — about 15,000 instructions of a proxied request's 58,700
//! counted with callgrind (`docs/BENCHMARKS.md`). Here the request head goes out in one
//! write from a buffer filled field by field ([`encode_request`]); the response head is
//! read with `httparse` (the parser hyper uses, with the same defaults) under the
//! operator's response-head limits, its field values sliced out of the read buffer
//! rather than copied ([`parse_head`]); the body is delimited as RFC 9112 §6.3 says
//! ([`Framing`]) and read by [`ResponseBody`] straight from the socket — a chunked body
//! through [`Chunked`], which decodes from the buffer in place.
//!
//! Requests with a body, and `Expect: 100-continue`, still go through hyper's client,
//! whose body writer deals with a backend that answers before the body is sent. Both
//! kinds share one pool of connections ([`crate::upstream::pool`]).
//!
//! What a response gets here is what it got from hyper (the `http1_fast_path` fuzz
//! target compares the two on the same bytes): the same heads refused, the same
//! framing chosen, the same chunked bodies accepted with the same bytes and trailers.
//! Where this client is stricter, it says so: a `101` to a request that asked for no
//! upgrade, and a `Transfer-Encoding` with a `Content-Length`, whose length is dropped
//! and whose connection is not used again (RFC 9112 §6.3 point 3).

use crate::upstream::{ResponseHeadLimits, UpstreamStream};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Why an exchange on the gateway's own HTTP/1.1 client failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The backend's bytes are not an HTTP/1.1 response (a malformed head or chunked
    /// framing, a head over the limits): the client gets 502 `upstream_invalid_response`.
    #[error("the backend's response is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
    /// The connection failed or closed too early: 502 `upstream_failed` before the
    /// head, a response cut short after it.
    #[error("the backend's connection failed")]
    Io(#[from] io::Error),
}

/// An HTTP/1.1 connection to a backend as the pool keeps it: the socket and its read
/// buffer.
pub struct Connection<S = UpstreamStream> {
    io: S,
    buf: BytesMut,
    /// The request head being sent, its allocation kept from one request to the next.
    head: Vec<u8>,
    /// Bytes the next read asks for: 8 KiB, doubled while reads fill it, up to 64 KiB
    /// (hyper's strategy, so streaming a large body takes few reads).
    next_read: usize,
}

impl<S> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("unread", &self.buf.len()).finish_non_exhaustive()
    }
}

/// The first read's size; the largest is [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
/// The largest read (as hyper's client configured by [`crate::upstream::http1_client`]).
const MAX_READ: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection over `io`, nothing read yet.
    pub fn new(io: S) -> Self {
        Connection { io, buf: BytesMut::new(), head: Vec::new(), next_read: FIRST_READ }
    }

    /// The socket, if nothing read from it is left unparsed (else the connection is
    /// in no state to carry another exchange).
    pub fn into_io(self) -> Option<S> {
        self.buf.is_empty().then_some(self.io)
    }

    /// Whether it can carry another request now: nothing left unread, and a read
    /// polled once without a waker finds neither a close nor stray bytes.
    pub fn reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut probe), Poll::Pending)
    }

    /// Reads once into the buffer: `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.next_read / 2 {
            self.buf.reserve(self.next_read);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n == room && self.next_read < MAX_READ {
            self.next_read *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// A request head in HTTP/1.1's wire form (RFC 9112 §3): the request line in origin
/// form, then each field as `name: value`, appended to `out`.
pub fn encode_request(method: &Method, uri: &http::Uri, headers: &HeaderMap, out: &mut Vec<u8>) {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let fields: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    out.reserve(method.as_str().len() + target.len() + 13 + fields + 2);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Field lines parsed without a heap allocation; a limit above this takes one.
const STACK_FIELDS: usize = 128;

/// Reads one response head from the front of `buf` and takes it out of `buf`:
/// `Ok(None)` while it is incomplete, else the head and its bytes as they came. Field
/// values are slices of those bytes; the fields go into `map` (cleared first), whose
/// allocation a caller may reuse.
///
/// # Errors
/// [`ExchangeError::Invalid`] for bytes that are not a response head (httparse's
/// defaults, as hyper's: no obsolete line folding, no whitespace before a colon), a
/// status code out of range, and a head over `limits`.
pub fn parse_head(
    buf: &mut BytesMut,
    limits: ResponseHeadLimits,
    map: &mut HeaderMap,
) -> Result<Option<(http::response::Parts, Bytes)>, ExchangeError> {
    // Uninitialised room for the fields (as hyper's parser has): zeroing 4 KiB per
    // response cost more than parsing a short head.
    let mut stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let fields: &mut [std::mem::MaybeUninit<httparse::Header<'_>>] = if limits.count <= STACK_FIELDS {
        &mut stack[..limits.count]
    } else {
        heap.resize(limits.count, std::mem::MaybeUninit::uninit());
        &mut heap
    };
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.bytes => {
            return Err(ExchangeError::Invalid("the head is larger than --max-response-header-bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("more field lines than --max-response-header-count"));
        }
        Err(_) => return Err(ExchangeError::Invalid("malformed status line or field")),
    };
    if len > limits.bytes {
        return Err(ExchangeError::Invalid("the head is larger than --max-response-header-bytes"));
    }
    let code = parsed.code.ok_or(ExchangeError::Invalid("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Invalid("a status code out of range"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let reason = parsed.reason.filter(|r| Some(*r) != status.canonical_reason()).map(|r| r.as_bytes().to_vec());
    let base = buf.as_ptr() as usize;
    // Where each name and value lies in the head, so that the values can be slices
    // of one shared buffer once the head is taken out.
    let mut at: smallvec::SmallVec<[(usize, usize, usize, usize); 32]> = smallvec::SmallVec::new();
    for field in parsed.headers.iter() {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        at.push((name, name + field.name.len(), value, value + field.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = std::mem::take(map);
    parts.headers.clear();
    parts.headers.reserve(at.len());
    for &(n0, n1, v0, v1) in at.iter() {
        let name = HeaderName::from_bytes(&head[n0..n1])
            .map_err(|_| ExchangeError::Invalid("a field name that is not a token"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| ExchangeError::Invalid("a field value with a control byte"))?;
        parts.headers.append(name, value);
    }
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        parts.extensions.insert(reason);
    }
    Ok(Some((parts, head)))
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug)]
pub enum Framing {
    /// No body: an answer to `HEAD`, a `204`, a `304`, or a length of zero.
    Empty,
    /// `Content-Length` bytes; what is left to read.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked(Box<Chunked>),
    /// Everything until the backend closes the connection (neither field, or a
    /// transfer coding other than chunked last).
    Close,
}

/// A response head's framing and whether its connection may carry another request.
#[derive(Debug)]
pub struct Delimited {
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may be used again once the body has ended: an HTTP/1.1
    /// response without `Connection: close`, framed by its own length or chunks, with
    /// no conflicting framing fields.
    pub keep_alive: bool,
}

/// The framing of the response `head` to a `method` request (RFC 9112 §6.3, in
/// hyper's order): no body for `HEAD`, `204` and `304`; `Transfer-Encoding` over
/// `Content-Length` (whose field is then removed, RFC 9112 §6.3 point 3); several
/// `Content-Length` values must agree, and are passed on as one (RFC 9110 §8.6).
///
/// Stricter than hyper's client, on purpose: a `Content-Length` is checked on every
/// response, also where it frames nothing (a `HEAD`'s answer: the client's server
/// would refuse to send a malformed one and drop the client's connection), and empty
/// elements of a `Transfer-Encoding` list are ignored (RFC 9110 §5.6.1), so
/// `chunked,` is chunked.
///
/// # Errors
/// [`ExchangeError::Invalid`]: a `101` (nothing asked for an upgrade), an HTTP/1.0
/// response with `Transfer-Encoding`, a `Content-Length` that is not one number.
pub fn delimit(
    method: &Method,
    head: &mut http::response::Parts,
    limits: ResponseHeadLimits,
) -> Result<Delimited, ExchangeError> {
    // Which framing fields there are, in one pass over the fields rather than a
    // lookup of each name.
    let (mut close, mut length_field, mut transfer_encoding) = (false, false, false);
    for (name, value) in head.headers.iter() {
        if name == http::header::CONNECTION {
            close |= crate::proxy::list_elements(value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name == http::header::CONTENT_LENGTH {
            length_field = true;
        } else if name == http::header::TRANSFER_ENCODING {
            transfer_encoding = true;
        }
    }
    let mut keep_alive = head.version == Version::HTTP_11 && !close;
    let length = match length_field {
        false => None,
        true => {
            let (n, values) = content_length(&head.headers)
                .ok_or(ExchangeError::Invalid("a Content-Length that is not one number"))?;
            if values > 1 {
                head.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            Some(n)
        }
    };
    let framing = match head.status.as_u16() {
        101 => return Err(ExchangeError::Invalid("a 101 to a request that asked for no upgrade")),
        204 | 304 => Framing::Empty,
        _ if *method == Method::HEAD => Framing::Empty,
        _ => {
            if transfer_encoding {
                if head.version == Version::HTTP_10 {
                    return Err(ExchangeError::Invalid("Transfer-Encoding in an HTTP/1.0 response"));
                }
                if head.headers.remove(http::header::CONTENT_LENGTH).is_some() {
                    keep_alive = false;
                }
                let chunked = last_coding(&head.headers).is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
                if chunked { Framing::Chunked(Box::new(Chunked::new(limits))) } else { Framing::Close }
            } else {
                match length {
                    Some(0) => Framing::Empty,
                    Some(n) => Framing::Length(n),
                    None => Framing::Close,
                }
            }
        }
    };
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    Ok(Delimited { framing, keep_alive })
}

/// The last transfer coding of the `Transfer-Encoding` lines, empty list elements
/// ignored (RFC 9110 §5.6.1).
fn last_coding(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get_all(http::header::TRANSFER_ENCODING).iter().flat_map(crate::proxy::list_elements).next_back()
}

/// The `Content-Length`, if every value of every line is the same decimal number
/// (RFC 9110 §8.6: a list of equal values may be taken as one), at most `u64::MAX - 2`
/// (hyper's bound); and how many values there were.
fn content_length(headers: &HeaderMap) -> Option<(u64, usize)> {
    let (mut length, mut values) = (None, 0);
    for line in headers.get_all(http::header::CONTENT_LENGTH) {
        for v in line.as_bytes().split(|&b| b == b',') {
            let v = v.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = v.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
            values += 1;
        }
    }
    length.filter(|&n| n <= u64::MAX - 2).map(|n| (n, values))
}

/// Total bytes of chunk extensions a body may carry (hyper's limit).
const EXTENSION_LIMIT: u64 = 16 * 1024;

/// A chunked body's decoder (RFC 9112 §7.1), fed from the front of a buffer.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The chunk's size as read so far, then what is left of its data.
    size: u64,
    /// Bytes of chunk extensions seen (skipped, bounded).
    extensions: u64,
    /// The trailer section as read, if there is one.
    trailers: Option<BytesMut>,
    /// Trailer field lines read.
    trailer_lines: usize,
    limits: ResponseHeadLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk's size: at least one hex digit.
    Start,
    Size,
    /// Whitespace after the size (tolerated, as hyper does).
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk's line: the CRLF that ends the body, or a trailer field.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// What [`Chunked::decode`] took from the buffer.
#[derive(Debug)]
pub enum Decoded {
    /// Data of a chunk (never empty).
    Data(Bytes),
    /// The trailer section's fields; the body has ended.
    Trailers(HeaderMap),
    /// The body has ended.
    End,
}

impl Chunked {
    /// A decoder at the start of a body; trailer fields are bounded by `limits` (bytes
    /// and lines, as the head).
    pub fn new(limits: ResponseHeadLimits) -> Self {
        Chunked { state: State::Start, size: 0, extensions: 0, trailers: None, trailer_lines: 0, limits }
    }

    /// Decodes from the front of `buf`, taking out what it used: `Ok(None)` when `buf`
    /// holds too little to go on.
    ///
    /// # Errors
    /// [`ExchangeError::Invalid`] for framing that is not RFC 9112's (as hyper refuses
    /// it): a size line without a digit or with a byte other than a hex digit,
    /// whitespace, `;` or CR; a size over 64 bits; a bare LF; extensions over 16 KiB in
    /// all; a chunk's data not followed by CRLF; a trailer section over the limits or
    /// not made of fields.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ExchangeError> {
        use ExchangeError::Invalid;
        loop {
            if self.state == State::Done {
                return Ok(Some(Decoded::End));
            }
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(self.size).unwrap_or(usize::MAX).min(buf.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Some(Decoded::Data(buf.split_to(n).freeze())));
            }
            if self.state == State::Extension {
                // Skipped up to the CR, in one search.
                let end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
                let skipped = end.unwrap_or(buf.len());
                self.extensions += skipped as u64;
                if self.extensions >= EXTENSION_LIMIT {
                    return Err(Invalid("chunk extensions over 16 KiB"));
                }
                buf.advance(skipped);
                if end.is_none() {
                    return Ok(None);
                }
            }
            let Some(&byte) = buf.first() else { return Ok(None) };
            buf.advance(1);
            self.state = match (self.state, byte) {
                (State::Start | State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = (byte as char).to_digit(16).unwrap_or(0);
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(digit)))
                        .ok_or(Invalid("a chunk size over 64 bits"))?;
                    State::Size
                }
                (State::Start, _) => return Err(Invalid("a chunk size line without a size")),
                (State::Size | State::SizeLws, b'\t' | b' ') => State::SizeLws,
                (State::Size | State::SizeLws, b';') => State::Extension,
                (State::Size | State::SizeLws | State::Extension, b'\r') => State::SizeLf,
                (State::Size, _) => return Err(Invalid("a chunk size that is not hexadecimal")),
                (State::SizeLws, _) => return Err(Invalid("a byte after a chunk size's whitespace")),
                (State::Extension, _) => return Err(Invalid("a chunk extension with a bare LF")),
                (State::SizeLf, b'\n') if self.size == 0 => State::EndCr,
                (State::SizeLf, b'\n') => State::Data,
                (State::SizeLf, _) => return Err(Invalid("a chunk size line not ended by CRLF")),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataCr, _) => return Err(Invalid("a chunk's data longer than its size")),
                (State::DataLf, b'\n') => State::Start,
                (State::DataLf, _) => return Err(Invalid("a chunk's data not ended by CRLF")),
                (State::EndCr, b'\r') => {
                    self.trailer_byte(byte)?;
                    State::EndLf
                }
                (State::EndCr | State::Trailer, b'\n') => {
                    // hyper reads on, for a CR that may never come.
                    return Err(Invalid("a bare LF in a chunked body's end or trailers"));
                }
                (State::EndCr, _) => {
                    match &mut self.trailers {
                        None => {
                            let mut t = BytesMut::with_capacity(64);
                            t.extend_from_slice(&[byte]);
                            self.trailers = Some(t);
                        }
                        Some(_) => self.trailer_byte(byte)?,
                    }
                    State::Trailer
                }
                (State::Trailer, b'\r') => {
                    self.trailer_byte(byte)?;
                    State::TrailerLf
                }
                (State::Trailer, _) => {
                    self.trailer_byte(byte)?;
                    State::Trailer
                }
                (State::TrailerLf, b'\n') => {
                    if self.trailer_lines >= self.limits.count {
                        return Err(Invalid("more trailer fields than --max-response-header-count"));
                    }
                    self.trailer_lines += 1;
                    self.trailer_byte(byte)?;
                    State::EndCr
                }
                (State::TrailerLf, _) => return Err(Invalid("a trailer field not ended by CRLF")),
                (State::EndLf, b'\n') => {
                    self.trailer_byte(byte)?;
                    self.state = State::Done;
                    return match self.trailers.take() {
                        Some(t) => Ok(Some(Decoded::Trailers(trailer_fields(&t, self.trailer_lines)?))),
                        None => Ok(Some(Decoded::End)),
                    };
                }
                (State::EndLf, _) => return Err(Invalid("a chunked body not ended by CRLF")),
                (State::Data | State::Done, _) => unreachable!("handled above"),
            };
        }
    }

    /// Adds a byte to the trailer section, if one has started, within the byte limit.
    fn trailer_byte(&mut self, byte: u8) -> Result<(), ExchangeError> {
        if let Some(t) = &mut self.trailers {
            t.extend_from_slice(&[byte]);
            if t.len() >= self.limits.bytes {
                return Err(ExchangeError::Invalid("a trailer section over --max-response-header-bytes"));
            }
        }
        Ok(())
    }
}

/// The fields of a trailer section (`lines` field lines and the final CRLF).
fn trailer_fields(section: &[u8], lines: usize) -> Result<HeaderMap, ExchangeError> {
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            let mut map = HeaderMap::with_capacity(parsed.len());
            for f in parsed {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| ExchangeError::Invalid("a trailer field name that is not a token"))?;
                let value = HeaderValue::from_bytes(f.value)
                    .map_err(|_| ExchangeError::Invalid("a trailer field value with a control byte"))?;
                map.append(name, value);
            }
            Ok(map)
        }
        _ => Err(ExchangeError::Invalid("a trailer section that is not fields")),
    }
}

/// Sends a bodiless request on `conn` — its head as [`encode_request`] writes it —
/// and reads the final response head, with its framing. Informational answers before
/// it are skipped, up to [`crate::upstream::handshake::MAX_INFORMATIONAL`]. The
/// response's fields go into `headers` (the request's, once sent: its allocation is
/// reused), taken from it once a final head has come.
///
/// # Errors
/// [`Failure::Unanswered`] when the connection failed or closed before a byte of an
/// answer came (the request may be sent again on another connection if it is
/// idempotent), else [`Failure::Exchange`].
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    method: &Method,
    uri: &http::Uri,
    headers: &mut HeaderMap,
    limits: ResponseHeadLimits,
) -> Result<(http::response::Parts, Delimited), Failure> {
    let mut head = std::mem::take(&mut conn.head);
    head.clear();
    encode_request(method, uri, headers, &mut head);
    let written = conn.io.write_all(&head).await;
    conn.head = head;
    written.map_err(Failure::Unanswered)?;
    conn.io.flush().await.map_err(Failure::Unanswered)?;
    let mut informational = 0;
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            if let Some((mut parts, _)) = parse_head(&mut conn.buf, limits, headers)? {
                if parts.status.is_informational() && parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    // The map goes back for the final answer.
                    *headers = std::mem::take(&mut parts.headers);
                    informational += 1;
                    if informational > crate::upstream::handshake::MAX_INFORMATIONAL {
                        return Err(
                            ExchangeError::Invalid("more informational answers (1xx) than the gateway reads").into()
                        );
                    }
                    continue;
                }
                let delimited = delimit(method, &mut parts, limits)?;
                return Ok((parts, delimited));
            }
        }
        let read = std::future::poll_fn(|cx| conn.poll_fill(cx)).await;
        match read {
            Ok(0) if !answered => {
                return Err(Failure::Unanswered(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the backend closed the connection without answering",
                )));
            }
            Ok(0) => {
                return Err(ExchangeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the backend closed the connection within its response head",
                ))
                .into());
            }
            Ok(_) => {}
            Err(e) if !answered => return Err(Failure::Unanswered(e)),
            Err(e) => return Err(ExchangeError::Io(e).into()),
        }
    }
}

/// How [`exchange`] failed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing of an answer came: the write failed, or the connection closed or
    /// failed before the first byte of a response.
    Unanswered(io::Error),
    /// The answer was not a valid response, or broke off.
    Exchange(ExchangeError),
}

impl From<ExchangeError> for Failure {
    fn from(e: ExchangeError) -> Self {
        Failure::Exchange(e)
    }
}

/// A response body read straight from its connection, by its [`Framing`]; the
/// connection is handed back by [`ResponseBody::finish`] when the body has ended and
/// the connection may be used again.
#[derive(Debug)]
pub struct ResponseBody<S = UpstreamStream> {
    conn: Option<Box<Connection<S>>>,
    framing: Framing,
    keep_alive: bool,
    ended: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ResponseBody<S> {
    /// The body of a response on `conn`, as `delimited` says.
    pub fn new(conn: Box<Connection<S>>, delimited: Delimited) -> Self {
        let ended = matches!(delimited.framing, Framing::Empty);
        ResponseBody { conn: Some(conn), framing: delimited.framing, keep_alive: delimited.keep_alive, ended }
    }

    /// Whether the body has ended (all of it read, or none to read).
    pub fn is_end_stream(&self) -> bool {
        self.ended || matches!(self.framing, Framing::Empty | Framing::Length(0))
    }

    /// Its size: exact for an empty or a `Content-Length` body.
    pub fn size_hint(&self) -> SizeHint {
        match &self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }

    /// The connection, once the body has ended, if it may carry another request.
    pub fn finish(&mut self) -> Option<Box<Connection<S>>> {
        if !self.is_end_stream() || !self.keep_alive {
            return None;
        }
        self.conn.take()
    }

    /// The next frame: data as it comes, the trailers of a chunked body, `None` at
    /// the end.
    ///
    /// # Errors
    /// [`ExchangeError::Io`] when the connection fails or closes before the body's
    /// end, [`ExchangeError::Invalid`] for a malformed chunked body; the connection is
    /// then closed.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let result = self.poll_inner(cx);
        if let Poll::Ready(Some(Err(_))) = &result {
            self.conn = None;
            self.ended = true;
            self.keep_alive = false;
        }
        result
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
        loop {
            match &mut self.framing {
                Framing::Empty | Framing::Length(0) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.buf.len());
                        *left -= n as u64;
                        if *left == 0 {
                            self.ended = true;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(n).freeze()))));
                    }
                }
                Framing::Chunked(chunked) => match chunked.decode(&mut conn.buf) {
                    Ok(Some(Decoded::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Decoded::Trailers(t))) => {
                        self.ended = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Some(Decoded::End)) => {
                        self.ended = true;
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                    }
                }
            }
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(self.framing, Framing::Close) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(ExchangeError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed the connection before the end of the body",
                    )))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(ExchangeError::Io(e)))),
            }
        }
    }
}

/// Whether `req` takes the gateway's own exchange: no body, and no field that
/// announces one (`Transfer-Encoding`, a `Content-Length` other than 0) or waits for
/// an interim answer (`Expect`); not `CONNECT`.
pub fn fits<B: http_body::Body>(req: &http::Request<B>) -> bool {
    let headers = req.headers();
    req.body().is_end_stream()
        && req.method() != Method::CONNECT
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && !headers.contains_key(http::header::EXPECT)
        && headers.get(http::header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: ResponseHeadLimits = ResponseHeadLimits { bytes: 8192, count: 100 };

    fn head(bytes: &[u8]) -> Result<Option<http::response::Parts>, ExchangeError> {
        let mut buf = BytesMut::from(bytes);
        Ok(parse_head(&mut buf, LIMITS, &mut HeaderMap::new())?.map(|(parts, _)| parts))
    }

    /// The whole body of `wire` decoded in pieces of `step` bytes, and its trailers.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ExchangeError> {
        let mut chunked = Chunked::new(LIMITS);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match chunked.decode(&mut buf)? {
                Some(Decoded::Data(d)) => {
                    assert!(!d.is_empty());
                    body.extend_from_slice(&d);
                }
                Some(Decoded::Trailers(t)) => return Ok((body, Some(t))),
                Some(Decoded::End) => return Ok((body, None)),
                None if fed == wire.len() => {
                    return Err(ExchangeError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "ran out")));
                }
                None => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn a_request_head_is_written_in_origin_form() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("api.internal:8080"));
        headers.append("x-b", HeaderValue::from_static("1"));
        headers.append("x-b", HeaderValue::from_static("2"));
        let uri: http::Uri = "/v1/items?id=1".parse().expect("uri");
        let mut out = Vec::new();
        encode_request(&Method::DELETE, &uri, &headers, &mut out);
        assert_eq!(out, b"DELETE /v1/items?id=1 HTTP/1.1\r\nhost: api.internal:8080\r\nx-b: 1\r\nx-b: 2\r\n\r\n");
        out.clear();
        encode_request(&Method::GET, &http::Uri::from_static("http://x"), &HeaderMap::new(), &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_response_head_is_parsed_whole_or_not_at_all() {
        let full = b"HTTP/1.1 404 Gone Fishing\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc";
        for cut in 0..full.len() - 3 {
            assert!(head(&full[..cut]).expect("partial is not an error").is_none(), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&full[..]);
        let (parts, raw) = parse_head(&mut buf, LIMITS, &mut HeaderMap::new()).expect("valid").expect("complete");
        assert_eq!(&buf[..], b"abc", "the body's start stays in the buffer");
        assert_eq!(&raw[..], &full[..full.len() - 3], "the head's bytes as they came");
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().expect("a non-canonical reason is kept");
        assert_eq!(reason.as_bytes(), b"Gone Fishing");
        let canonical = head(b"HTTP/1.0 200 OK\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(canonical.version, Version::HTTP_10);
        assert!(canonical.extensions.get::<hyper::ext::ReasonPhrase>().is_none());
    }

    #[test]
    fn heads_that_hyper_refuses_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nFolded: a\r\n b\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nSpace : x\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad\x01: x\r\n\r\n",
        ] {
            assert!(matches!(head(bad), Err(ExchangeError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        let small = ResponseHeadLimits { bytes: 8192, count: 2 };
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, small, &mut HeaderMap::new()).is_err(), "over the field count");
        let mut long = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        long.resize(9000, b'a');
        assert!(head(&long).is_err(), "an incomplete head past the byte limit");
    }

    #[test]
    fn the_map_handed_in_is_reused_and_cleared() {
        let mut map = HeaderMap::with_capacity(64);
        map.insert("x-request-only", HeaderValue::from_static("1"));
        let capacity = map.capacity();
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-answer: 1\r\n\r\n"[..]);
        let (parts, _) = parse_head(&mut buf, LIMITS, &mut map).expect("valid").expect("complete");
        assert_eq!(parts.headers.len(), 1);
        assert!(parts.headers.contains_key("x-answer") && !parts.headers.contains_key("x-request-only"));
        assert!(parts.headers.capacity() >= capacity);
    }

    fn framing_of(method: Method, wire: &[u8]) -> Result<(Delimited, HeaderMap), ExchangeError> {
        let mut parts = head(wire)?.expect("complete");
        let d = delimit(&method, &mut parts, LIMITS)?;
        Ok((d, parts.headers))
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let f = |m: Method, w: &[u8]| framing_of(m, w).map(|(d, _)| (format!("{:?}", d.framing), d.keep_alive));
        let chunked = "Chunked(Chunked { state: Start, size: 0, extensions: 0, trailers: None, trailer_lines: 0, limits: ResponseHeadLimits { bytes: 8192, count: 100 } })".to_string();
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").ok(),
            Some(("Length(7)".into(), true))
        );
        assert_eq!(f(Method::HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").ok(), Some(("Empty".into(), true)));
        assert_eq!(f(Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n").ok(), Some(("Empty".into(), true)));
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").ok(),
            Some(("Empty".into(), true))
        );
        assert_eq!(f(Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").ok(), Some(("Empty".into(), true)));
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n").ok(),
            Some(("Length(4)".into(), true))
        );
        let (_, headers) = framing_of(Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n").expect("valid");
        assert_eq!(
            headers.get_all("content-length").iter().collect::<Vec<_>>(),
            ["4"],
            "equal values passed on as one"
        );
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \r\n\r\n").ok(),
            Some((chunked.clone(), true)),
            "empty list elements are ignored"
        );
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").ok(),
            Some((chunked.clone(), true))
        );
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").ok(),
            Some(("Close".into(), false))
        );
        assert_eq!(f(Method::GET, b"HTTP/1.1 200 OK\r\n\r\n").ok(), Some(("Close".into(), false)));
        assert_eq!(
            f(Method::GET, b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n").ok(),
            Some(("Length(1)".into(), false))
        );
        assert_eq!(
            f(Method::GET, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").ok(),
            Some(("Length(1)".into(), false))
        );
        // Both framings: the chunks decide, the length goes, and so does the connection.
        let (d, headers) =
            framing_of(Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .expect("valid");
        assert!(matches!(d.framing, Framing::Chunked(_)) && !d.keep_alive);
        assert!(!headers.contains_key("content-length"));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(framing_of(Method::GET, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A length that frames nothing is checked all the same.
        assert!(
            framing_of(Method::HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n").is_err()
        );
        assert!(framing_of(Method::GET, b"HTTP/1.1 304 Not Modified\r\nContent-Length: abc\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let wire = b"5;name=value\r\nhello\r\n6 \r\n world\r\nA\r\n0123456789\r\n0\r\nx-sum: 1\r\nx-sum: 2\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, trailers) = decode(wire, step).expect("valid");
            assert_eq!(body, b"hello world0123456789", "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers.get_all("x-sum").iter().collect::<Vec<_>>(), ["1", "2"]);
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).expect("empty").0, b"");
        assert!(decode(b"0\r\n\r\n", 1).expect("empty").1.is_none());
        assert_eq!(decode(b"00000001\r\nx\r\n0\r\n\r\n", 4).expect("leading zeros").0, b"x");
    }

    #[test]
    fn chunked_framing_that_hyper_refuses_is_refused() {
        for bad in [
            &b"\r\n\r\n"[..],
            b";ext\r\n\r\n",
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\rX",
            b"1 1\r\n",
            b"1;a\nb\r\n",
            b"10000000000000000\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\n\r\r",
            b"0\r\nx: 1\rX",
            b"0\r\n\n",
            b"0\r\nx: 1\nmore\r\n\r\n",
        ] {
            assert!(matches!(decode(bad, 1), Err(ExchangeError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"1;".to_vec();
        long.resize(20_000, b'e');
        assert!(matches!(decode(&long, 4096), Err(ExchangeError::Invalid(_))), "extensions are bounded");
        let mut many = b"0\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("t{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(decode(&many, 64), Err(ExchangeError::Invalid(_))), "trailer lines are bounded");
        // Cut short: not an error of framing, but not an end either.
        assert!(matches!(decode(b"5\r\nhel", 2), Err(ExchangeError::Io(_))));
    }

    proptest! {
        // Any body, cut into any chunks, arrives whole, however the bytes are split.
        #[test]
        fn any_chunking_decodes_to_the_body(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..90, 1..20),
            step in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let (decoded, trailers) = decode(&wire, step).expect("valid");
            prop_assert_eq!(decoded, body);
            prop_assert!(trailers.is_none());
        }
    }

    #[test]
    fn only_bodiless_requests_fit() {
        let req = |method: Method, headers: &[(&str, &str)], body: &'static [u8]| {
            let mut r = http::Request::builder().method(method).uri("/");
            for (n, v) in headers {
                r = r.header(*n, *v);
            }
            r.body(http_body_util::Full::new(Bytes::from_static(body))).expect("request")
        };
        assert!(fits(&req(Method::GET, &[], b"")));
        assert!(fits(&req(Method::POST, &[("content-length", "0")], b"")));
        assert!(!fits(&req(Method::POST, &[], b"x")));
        assert!(!fits(&req(Method::GET, &[("transfer-encoding", "chunked")], b"")));
        assert!(!fits(&req(Method::GET, &[("content-length", "5")], b"")));
        assert!(!fits(&req(Method::PUT, &[("expect", "100-continue")], b"")));
        assert!(!fits(&req(Method::CONNECT, &[], b"")));
    }
}
