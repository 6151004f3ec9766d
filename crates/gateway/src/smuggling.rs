//! A guard in front of hyper's HTTP/1 parser against request smuggling.
//!
//! hyper, following RFC 9112 §6.1, accepts a request carrying both `Content-Length` and
//! `Transfer-Encoding`: it drops the length, reads the body as chunked and closes the
//! connection afterwards. That is safe for hyper itself, but a gateway should refuse
//! such a request outright (400), since the backend or another hop may frame it
//! differently. hyper gives no hook to see the raw head, so this reader follows the
//! request framing of the byte stream (heads, fixed-length and chunked bodies) and, when
//! one head carries both headers, turns the line feed that ends the second of them into
//! a NUL byte: hyper's parser then rejects the head with 400 and closes the connection.
//! Nothing is buffered or copied; bodies are skipped by counting.
//!
//! After an upgrade request, a `CONNECT`, an HTTP/2 preface or any framing it does not
//! follow, the guard steps aside: those connections either switch protocols, or are
//! refused and closed by the gateway, or are rejected by hyper itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MAX_TRACKED_LINE: usize = 1024;

#[derive(Debug)]
enum State {
    Head(Head),
    /// A body of known length: bytes still to skip.
    Fixed(u64),
    Chunked(Chunk),
    Passthrough,
}

#[derive(Debug, Default)]
struct Head {
    seen_request_line: bool,
    content_length: Option<Option<u64>>,
    transfer_encoding: Option<bool>,
    upgrade: bool,
    connect: bool,
    /// The current line was longer than what is kept of it.
    overflow: bool,
}

#[derive(Debug)]
enum Chunk {
    /// Reading the hex size; `ext` once past it (extensions are ignored).
    Size {
        size: u64,
        ext: bool,
    },
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines after the last chunk; `empty` while the current line is empty.
    Trailers {
        empty: bool,
    },
}

/// A client connection's reader that poisons a request head carrying both
/// `Content-Length` and `Transfer-Encoding`, so that hyper refuses it with 400.
pub struct SmugglingGuard<I> {
    inner: I,
    state: State,
    /// The head line being read (at most `MAX_TRACKED_LINE` bytes of it), kept from
    /// line to line and request to request: no allocation per request.
    line: Vec<u8>,
}

impl<I> SmugglingGuard<I> {
    /// Guards `inner`, which starts at a request head.
    pub fn new(inner: I) -> Self {
        SmugglingGuard { inner, state: State::Head(Head::default()), line: Vec::new() }
    }

    /// Follows the framing over freshly read bytes, poisoning a smuggling head in place.
    fn inspect(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            match &mut self.state {
                State::Passthrough => return,
                State::Fixed(n) => {
                    let take = (*n).min((buf.len() - i) as u64);
                    *n -= take;
                    i += take as usize;
                    if *n == 0 {
                        self.state = State::Head(Head::default());
                    }
                }
                State::Chunked(chunk) => {
                    let b = buf[i];
                    i += 1;
                    match chunk {
                        Chunk::Size { size, ext } => match b {
                            b'\n' => {
                                *chunk = if *size == 0 { Chunk::Trailers { empty: true } } else { Chunk::Data(*size) };
                            }
                            b'\r' => {}
                            b';' | b' ' | b'\t' => *ext = true,
                            _ if *ext => {}
                            _ => match (b as char).to_digit(16) {
                                Some(d) if *size < (1 << 56) => *size = *size * 16 + u64::from(d),
                                _ => self.state = State::Passthrough,
                            },
                        },
                        Chunk::Data(n) => {
                            // This byte is data, and so are up to n-1 more.
                            let rest = (*n - 1).min((buf.len() - i) as u64);
                            *n -= rest + 1;
                            i += rest as usize;
                            if *n == 0 {
                                *chunk = Chunk::DataEnd;
                            }
                        }
                        Chunk::DataEnd => {
                            if b == b'\n' {
                                *chunk = Chunk::Size { size: 0, ext: false };
                            }
                        }
                        Chunk::Trailers { empty } => match b {
                            b'\n' if *empty => self.state = State::Head(Head::default()),
                            b'\n' => *empty = true,
                            b'\r' => {}
                            _ => *empty = false,
                        },
                    }
                }
                State::Head(head) => {
                    // A line at a time: its end found with one search, the line read in
                    // place unless it began in an earlier read (then it is carried in
                    // `self.line`). Either way at most `MAX_TRACKED_LINE` bytes of it
                    // are looked at, so the outcome does not depend on where reads
                    // split the bytes.
                    let rest = &buf[i..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        let room = MAX_TRACKED_LINE - self.line.len();
                        head.overflow |= rest.len() > room;
                        self.line.extend_from_slice(&rest[..rest.len().min(room)]);
                        return;
                    };
                    let carried = !self.line.is_empty();
                    let room = MAX_TRACKED_LINE - self.line.len();
                    let overflow = std::mem::take(&mut head.overflow) || nl > room;
                    if carried {
                        self.line.extend_from_slice(&rest[..nl.min(room)]);
                    }
                    let line = if carried { &self.line[..] } else { &rest[..nl.min(room)] };
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let next = if !head.seen_request_line {
                        if !line.is_empty() {
                            head.seen_request_line = true;
                            if line.starts_with(b"PRI * HTTP/2.0") {
                                self.state = State::Passthrough;
                                return;
                            }
                            head.connect = line.starts_with(b"CONNECT ");
                        }
                        None
                    } else if line.is_empty() {
                        Some(head.end())
                    } else if (overflow && framing_field(line)) || head.header(line) {
                        // Both framings in one head — or a framing field too long to
                        // read (no honest client pads one past 1 KiB; whitespace could
                        // hide its value from this guard but not from hyper): make
                        // hyper's parser refuse it.
                        buf[i + nl] = 0;
                        self.state = State::Passthrough;
                        return;
                    } else {
                        None
                    };
                    if let Some(next) = next {
                        self.state = next;
                    }
                    self.line.clear();
                    i += nl + 1;
                }
            }
        }
    }
}

impl Head {
    /// Records a header line; returns true when the head now has both framings.
    fn header(&mut self, line: &[u8]) -> bool {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
            self.content_length = Some(parsed);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            self.transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
        self.content_length.is_some() && self.transfer_encoding.is_some()
    }

    fn end(&self) -> State {
        if self.upgrade || self.connect {
            return State::Passthrough;
        }
        match (self.transfer_encoding, self.content_length) {
            (Some(true), _) => State::Chunked(Chunk::Size { size: 0, ext: false }),
            (Some(false), _) | (None, Some(None)) => State::Passthrough,
            (None, Some(Some(0))) | (None, None) => State::Head(Head::default()),
            (None, Some(Some(n))) => State::Fixed(n),
        }
    }
}

/// Whether a header line names `Content-Length` or `Transfer-Encoding`.
fn framing_field(line: &[u8]) -> bool {
    let name = line.iter().position(|&b| b == b':').map_or(line, |colon| &line[..colon]);
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

impl<I: AsyncRead + Unpin> AsyncRead for SmugglingGuard<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll
            && !matches!(this.state, State::Passthrough)
        {
            let filled = buf.filled_mut();
            this.inspect(&mut filled[before..]);
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SmugglingGuard<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the bytes as hyper would see them.
    fn run(input: &[u8], step: usize) -> Vec<u8> {
        let mut g = SmugglingGuard::new(());
        let mut out = input.to_vec();
        for chunk in out.chunks_mut(step) {
            g.inspect(chunk);
        }
        out
    }

    fn poisoned(input: &str) -> bool {
        (1..=input.len()).all(|step| run(input.as_bytes(), step).contains(&0))
    }

    fn clean(input: &str) -> bool {
        (1..=input.len()).all(|step| run(input.as_bytes(), step) == input.as_bytes())
    }

    #[test]
    fn both_framings_are_poisoned_in_either_order_and_any_read_size() {
        assert!(poisoned(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        assert!(poisoned("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn bodies_are_skipped_so_pipelined_heads_are_followed() {
        // A fixed body that looks like a smuggling head is data, not a head.
        let body = "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n";
        let req =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\nHost: a\r\n\r\n", body.len());
        assert!(clean(&req));
        // Chunked bodies with extensions and trailers, then a smuggling request.
        let req = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\nContent-Le\r\n0\r\nX-Trailer: 1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(poisoned(req));
        assert!(clean("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    /// Found by an attacker: whitespace padding a Content-Length past what the guard
    /// keeps of a line hid its value, and the guard stepped aside for the connection.
    #[test]
    fn a_framing_field_too_long_to_read_is_poisoned() {
        let pad = " ".repeat(MAX_TRACKED_LINE + 10);
        assert!(poisoned(&format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:{pad}5\r\n\r\nhello")));
        assert!(clean(&format!("GET / HTTP/1.1\r\nHost: a\r\nX-Long: {pad}\r\n\r\n")));
    }

    #[test]
    fn upgrades_and_http2_step_aside() {
        let ws = "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x01\x05Content-Length: 1\r\nTransfer-Encoding: x\r\n";
        assert!(clean(ws));
        assert!(clean("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n"));
    }
}
