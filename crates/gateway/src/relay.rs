//! The WebSocket relay: after the upgrade, bytes flow both ways as they arrive, while
//! each direction follows the frame structure (headers only; payloads are neither
//! copied aside nor unmasked). That is what lets the gateway count messages, cap their
//! size, meter them against plan limits and close a connection cleanly — at close to
//! the cost of a raw byte copy.
//!
//! Each direction is its own pump with one read buffer, and writes a chunk before it
//! reads again: a peer that stops reading stops the other side (backpressure). A close
//! the gateway decides on is delivered to each side by the pump that owns that side's
//! writer, at a frame boundary, so no frame is ever cut by an injected one.

use crate::frames::{self, FrameHeader, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// RFC 6455 close codes the gateway sends.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Recorded (analytics, metrics) for a connection that ended without a Close frame;
/// never sent (RFC 6455 §7.4.1).
pub const CLOSE_ABNORMAL: u16 = 1006;
/// Recorded for a Close frame that carried no code; never sent (RFC 6455 §7.4.1).
pub const CLOSE_NO_STATUS: u16 = 1005;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// What to do with a message, decided when its first frame arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Swallow this message (its frames never reach the other side).
    Drop,
    /// Close the connection on both sides with this code and reason.
    Close(u16, &'static str),
}

/// A data frame as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub from_client: bool,
    /// The first frame of a message (so once per message).
    pub starts_message: bool,
    /// Payload bytes as on the wire.
    pub payload_len: u64,
}

/// Asked for every data frame before it passes; `None` when nothing is governed.
/// `Drop` is honoured on a message's first frame (the whole message is dropped).
pub type Gate = Arc<dyn Decide>;

/// What a [`Gate`] does with a frame.
pub trait Decide: Send + Sync {
    /// The verdict when it needs no waiting (counters in this process): no future is
    /// made for it. `None` sends the frame to [`Decide::decide`].
    fn decide_now(&self, _frame: FrameInfo) -> Option<Verdict> {
        None
    }

    /// The verdict, when it has to be waited for (counters in Redis).
    fn decide(&self, frame: FrameInfo) -> Pin<Box<dyn Future<Output = Verdict> + Send + '_>>;
}

/// A closure making the verdict's future (tests, simple gates).
impl<F> Decide for F
where
    F: Fn(FrameInfo) -> Pin<Box<dyn Future<Output = Verdict> + Send>> + Send + Sync,
{
    fn decide(&self, frame: FrameInfo) -> Pin<Box<dyn Future<Output = Verdict> + Send + '_>> {
        self(frame)
    }
}

#[derive(Clone, Default)]
pub struct RelayOptions {
    /// permessage-deflate was negotiated: RSV1 may mark compressed messages.
    pub deflate: bool,
    /// Largest message, in payload bytes as on the wire (compressed when deflated).
    pub max_message_bytes: Option<u64>,
    pub gate: Option<Gate>,
    /// Close with 1001 when nothing arrives from either side for this long.
    pub idle_timeout: Option<Duration>,
    /// Ping both sides this often (their pongs count as activity).
    pub ping_interval: Option<Duration>,
    /// After each ping, a side that sends nothing at all (no pong, no frame) for this
    /// long is dead: the WebSocket closes with 1001 and its holds are released. At most
    /// `ping_interval`; used only with it.
    pub pong_timeout: Option<Duration>,
    /// Close with 1001 once the connection is this old.
    pub max_duration: Option<Duration>,
    /// Live counts the relay adds to as it goes (once per read, not per frame), e.g.
    /// the process-wide metrics and the connection's own analytics.
    pub tallies: Vec<Arc<Tally>>,
}

/// Messages and bytes relayed so far; index 0 is client → backend, 1 backend → client.
#[derive(Debug, Default)]
pub struct Tally {
    pub messages: [AtomicU64; 2],
    pub bytes: [AtomicU64; 2],
}

impl Tally {
    pub fn get(&self) -> [u64; 4] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [l(&self.messages[0]), l(&self.messages[1]), l(&self.bytes[0]), l(&self.bytes[1])]
    }
}

/// Who sent the first close frame of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Initiator {
    Client,
    Backend,
    Gateway,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Gateway => "gateway",
        }
    }
}

/// Counts of one relayed connection, for metrics and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub messages_up: u64,
    pub messages_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The close code the gateway itself sent, if it closed the connection.
    pub closed_by_gateway: Option<u16>,
    /// The first close frame (1005 when it carried no code); `None` when the
    /// connection ended without one (an abnormal closure, 1006 in RFC 6455 terms).
    pub close: Option<(Initiator, u16)>,
    pub duration: Duration,
}

/// A close code and its reason.
pub type Close = (u16, &'static str);

/// Closes (and pings) the gateway has decided on, waiting for the pump that writes to
/// each side, and when the connection was last active.
struct Control {
    /// (to the client, to the backend)
    pending: Mutex<(Option<Close>, Option<Close>)>,
    to_client: Notify,
    to_backend: Notify,
    /// Pings the gateway wants sent (to the client, to the backend).
    pings: (AtomicBool, AtomicBool),
    /// Milliseconds since the relay started at which bytes last arrived.
    last_activity: AtomicU64,
    /// The same, per side (from the client, from the backend).
    heard: (AtomicU64, AtomicU64),
    started: tokio::time::Instant,
    first_close: Mutex<Option<(Initiator, u16)>>,
    /// Whether a Close frame was relayed (from the client, from the backend).
    close_seen: (AtomicBool, AtomicBool),
    /// Whether the Close pending for (the client, the backend) waits until the other
    /// side's Close frame arrives: set when the other side broke the rules, so that what
    /// the other side still sends for earlier, valid frames reaches this side first.
    held: (AtomicBool, AtomicBool),
    /// Notified when a Close is held, so that the relay bounds the wait.
    holding: Notify,
    /// Notified when a peer's Close frame went through: the closing handshake has
    /// begun, and the relay bounds it.
    closing: Notify,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            pending: Mutex::default(),
            to_client: Notify::new(),
            to_backend: Notify::new(),
            pings: (AtomicBool::new(false), AtomicBool::new(false)),
            last_activity: AtomicU64::new(0),
            heard: (AtomicU64::new(0), AtomicU64::new(0)),
            started: tokio::time::Instant::now(),
            first_close: Mutex::default(),
            close_seen: (AtomicBool::new(false), AtomicBool::new(false)),
            held: (AtomicBool::new(false), AtomicBool::new(false)),
            holding: Notify::new(),
            closing: Notify::new(),
        }
    }
}

impl Control {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn touch(&self, from_client: bool) {
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if from_client { &self.heard.0 } else { &self.heard.1 }.store(now, Ordering::Relaxed);
    }

    /// Which side, if any, sent nothing since `since_ms` (the client first).
    fn silent_since(&self, since_ms: u64) -> Option<&'static str> {
        if self.heard.0.load(Ordering::Relaxed) < since_ms {
            Some("the client did not answer pings")
        } else if self.heard.1.load(Ordering::Relaxed) < since_ms {
            Some("the backend did not answer pings")
        } else {
            None
        }
    }

    fn ping_both(&self) {
        self.pings.0.store(true, Ordering::Relaxed);
        self.pings.1.store(true, Ordering::Relaxed);
        self.to_client.notify_one();
        self.to_backend.notify_one();
    }

    /// Resolves when nothing arrived from either side for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.last_activity.load(Ordering::Relaxed);
            let deadline = self.started + Duration::from_millis(last) + idle;
            tokio::time::sleep_until(deadline).await;
            if self.last_activity.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }

    /// Records that the side a pump reads from sent a Close frame.
    fn saw_close_from(&self, client: bool) {
        let flag = if client { &self.close_seen.0 } else { &self.close_seen.1 };
        flag.store(true, Ordering::Relaxed);
        self.closing.notify_one();
    }

    fn close_seen_from(&self, client: bool) -> bool {
        let flag = if client { &self.close_seen.0 } else { &self.close_seen.1 };
        flag.load(Ordering::Relaxed)
    }

    /// Ends the pump that writes to the client (`to_client`) or to the backend, without a
    /// frame: the closing handshake is complete.
    fn finish(&self, to_client: bool) {
        if to_client { self.to_client.notify_one() } else { self.to_backend.notify_one() }
    }

    fn note_close(&self, by: Initiator, code: u16) {
        self.first_close.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((by, code));
    }

    /// The side a pump reads from (`from_client`) broke the rules, or must be closed
    /// for what it sent. The other side gets its Close at once (from that pump, which
    /// writes to it); the side at fault gets its own only once the other side's Close
    /// frame arrives (or that side ends, or [`CLOSE_GRACE`] passes), so that the other
    /// side's answers to the earlier, valid frames reach it first (RFC 6455 §7.1.7
    /// fails the connection; Autobahn's strict behaviour: the echoes before the
    /// Close).
    fn fail_from(&self, from_client: bool, code: u16, reason: &'static str) {
        self.pend(code, reason);
        let at_fault = if from_client { &self.held.0 } else { &self.held.1 };
        at_fault.store(true, Ordering::Relaxed);
        self.holding.notify_one();
    }

    /// Whether the Close pending for the client (`to_client`) or the backend waits.
    fn is_held(&self, to_client: bool) -> bool {
        if to_client { &self.held.0 } else { &self.held.1 }.load(Ordering::Relaxed)
    }

    /// Ends every wait for the other side's Close: held Closes go now.
    fn release_held(&self) {
        self.held.0.store(false, Ordering::Relaxed);
        self.held.1.store(false, Ordering::Relaxed);
        self.to_client.notify_one();
        self.to_backend.notify_one();
    }

    /// The gateway closes both sides with `code` (unless a Close is pending already),
    /// at once: no Close waits for the other side's.
    fn close_both(&self, code: u16, reason: &'static str) {
        self.pend(code, reason);
        self.release_held();
    }

    /// Records the gateway's close and makes it pending for both sides (a Close already
    /// pending stays).
    fn pend(&self, code: u16, reason: &'static str) {
        self.note_close(Initiator::Gateway, code);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.0.get_or_insert((code, reason));
        p.1.get_or_insert((code, reason));
    }

    fn take_peek(&self, to_client: bool) -> Option<Close> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if to_client { p.0 } else { p.1 }
    }

    fn take(&self, to_client: bool) -> Option<Close> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if to_client { p.0.take() } else { p.1.take() }
    }
}

/// Relays between an upgraded client connection and an upgraded backend connection
/// until both directions end. When `stop` resolves, both sides get that close.
///
/// Every open WebSocket holds this future for its whole life, so its size is the
/// gateway's memory per idle connection: timers that are not configured take no room
/// (each is boxed only when its option is set) and `stop` is polled where it lies
/// (`Unpin`: callers box a large one) instead of being moved into a second slot.
pub async fn relay<C, B, S>(client: C, backend: B, opts: RelayOptions, mut stop: S) -> Totals
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
    S: Future<Output = Close> + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut backend_rd, mut backend_wr) = tokio::io::split(backend);
    let ctl = Control::default();
    let mut up = Pump::new(true, &opts);
    let mut down = Pump::new(false, &opts);
    {
        let mut pumps = std::pin::pin!(async {
            tokio::join!(
                up.run(&mut client_rd, &mut backend_wr, &ctl, &opts),
                down.run(&mut backend_rd, &mut client_wr, &ctl, &opts)
            )
        });
        let mut pinger =
            opts.ping_interval.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
        // When the pongs of the last pings are due, and when those pings went out.
        let mut pong_due: Option<(Pin<Box<tokio::time::Sleep>>, u64)> = None;
        let mut idle = opts.idle_timeout.map(|t| Box::pin(ctl.idle_for(t)));
        let mut too_old = opts.max_duration.map(|d| Box::pin(tokio::time::sleep(d)));
        // Set once a Close is held for the other side's: how long it may wait.
        let mut held_grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Set once a peer's Close went through: the closing handshake gets CLOSE_GRACE
        // to finish, then both connections are dropped — a peer that stops reading (its
        // Close answer never comes) cannot hold the WebSocket, nor its places, open.
        let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let close = loop {
            tokio::select! {
                _ = &mut pumps => break None,
                () = ctl.closing.notified(), if closing.is_none() => {
                    closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
                () = when_set(&mut closing) => {
                    tracing::debug!("the closing handshake did not finish in time: connections dropped");
                    break None;
                }
                () = ctl.holding.notified(), if held_grace.is_none() => {
                    held_grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
                () = when_set(&mut held_grace) => ctl.release_held(),
                (code, reason) = &mut stop => break Some((code, reason)),
                () = when_set(&mut idle) => break Some((CLOSE_GOING_AWAY, "idle timeout")),
                () = when_set(&mut too_old) => break Some((CLOSE_GOING_AWAY, "maximum connection duration reached")),
                () = async {
                    match pong_due.as_mut() {
                        Some((due, _)) => due.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let sent = pong_due.take().map_or(0, |(_, sent)| sent);
                    if let Some(reason) = ctl.silent_since(sent) {
                        break Some((CLOSE_GOING_AWAY, reason));
                    }
                }
                () = async {
                    if let Some(p) = pinger.as_mut() {
                        p.tick().await;
                    }
                }, if pinger.is_some() => {
                    // The last pings' deadline may fall on this tick: judge it first.
                    if let Some((due, sent)) = &pong_due
                        && due.deadline() <= tokio::time::Instant::now()
                        && let Some(reason) = ctl.silent_since(*sent)
                    {
                        break Some((CLOSE_GOING_AWAY, reason));
                    }
                    ctl.ping_both();
                    if let Some(wait) = opts.pong_timeout {
                        let due = tokio::time::Instant::now() + wait;
                        match pong_due.as_mut() {
                            Some((sleep, sent)) => {
                                sleep.as_mut().reset(due);
                                *sent = ctl.now_ms();
                            }
                            None => pong_due = Some((Box::pin(tokio::time::sleep_until(due)), ctl.now_ms())),
                        }
                    }
                }
            }
        };
        if let Some((code, reason)) = close {
            ctl.close_both(code, reason);
            // Each side gets its Close once the frame in flight to it is through; a
            // side that takes nothing (a dead peer with a full window) is not waited
            // for beyond the grace: dropping its connection ends it.
            if tokio::time::timeout(CLOSE_GRACE, &mut pumps).await.is_err() {
                tracing::debug!(reason, "a side did not take its Close in time: connection dropped");
            }
        }
    }
    up.flush(&opts);
    down.flush(&opts);
    Totals {
        messages_up: up.messages,
        messages_down: down.messages,
        bytes_up: up.bytes,
        bytes_down: down.bytes,
        closed_by_gateway: up.closed_with.or(down.closed_with),
        close: *ctl.first_close.lock().unwrap_or_else(|e| e.into_inner()),
        duration: ctl.started.elapsed(),
    }
}

/// How long the gateway waits, once it closes a WebSocket, for each side to take its
/// Close frame before it drops the connection.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Awaits an optional (boxed) future; never resolves when there is none.
async fn when_set<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

struct Pump {
    from_client: bool,
    /// A header that arrived in pieces (never forwarded until complete).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass (or drop).
    remaining: u64,
    in_message: bool,
    message_bytes: u64,
    dropping_message: bool,
    dropping_frame: bool,
    messages: u64,
    bytes: u64,
    closed_with: Option<u16>,
    max_message_bytes: Option<u64>,
    /// A Close frame being read: held back whole (at most 139 bytes) until its code and
    /// reason are checked, so that an invalid one never reaches the other side.
    close: Option<Box<HeldClose>>,
    /// (messages, bytes) already added to the tallies.
    flushed: (u64, u64),
}

enum Step {
    Continue,
    /// Stop: the connection is being closed with this code.
    Close(u16, &'static str),
    /// The side this pump reads from sent its Close while the Close for the side it
    /// writes to was held: that Close goes now, in place of the one that arrived.
    Deliver,
}

impl Pump {
    fn new(from_client: bool, opts: &RelayOptions) -> Pump {
        Pump {
            from_client,
            header: [0; 14],
            have: 0,
            remaining: 0,
            in_message: false,
            message_bytes: 0,
            dropping_message: false,
            dropping_frame: false,
            messages: 0,
            bytes: 0,
            closed_with: None,
            max_message_bytes: opts.max_message_bytes,
            close: None,
            flushed: (0, 0),
        }
    }

    /// Whether the side this pump writes to is between two frames, so a frame of the
    /// gateway's (a ping, a Close) can go in. A header held back in pieces is not on the
    /// wire yet, and neither is any byte of a frame being dropped: both leave the other
    /// side between frames. (Counting the held header as a cut frame left the other side
    /// without its Close after a protocol error or a peer gone, depending only on how the
    /// bytes were split into reads.)
    fn at_boundary(&self) -> bool {
        self.remaining == 0 || self.dropping_frame || self.close.is_some()
    }

    fn initiator(&self) -> Initiator {
        if self.from_client { Initiator::Client } else { Initiator::Backend }
    }

    /// Adds what was relayed since the last call to the tallies.
    fn flush(&mut self, opts: &RelayOptions) {
        let (m, b) = (self.messages - self.flushed.0, self.bytes - self.flushed.1);
        if m == 0 && b == 0 {
            return;
        }
        let i = usize::from(!self.from_client);
        for t in &opts.tallies {
            t.messages[i].fetch_add(m, Ordering::Relaxed);
            t.bytes[i].fetch_add(b, Ordering::Relaxed);
        }
        self.flushed = (self.messages, self.bytes);
    }

    /// Checks a complete header; returns the verdict for the frame.
    async fn on_header(&mut self, h: &FrameHeader, opts: &RelayOptions, ctl: &Control) -> Step {
        let data = matches!(h.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY);
        if !data && !matches!(h.opcode, OP_CLOSE | OP_PING | OP_PONG) {
            return Step::Close(CLOSE_PROTOCOL_ERROR, "unknown opcode");
        }
        if h.masked != self.from_client {
            return Step::Close(
                CLOSE_PROTOCOL_ERROR,
                if self.from_client { "client frames must be masked" } else { "server frames must not be masked" },
            );
        }
        if h.rsv23 || (h.rsv1 && !(opts.deflate && matches!(h.opcode, OP_TEXT | OP_BINARY))) {
            return Step::Close(CLOSE_PROTOCOL_ERROR, "reserved bits set");
        }
        if h.is_control() {
            if !h.fin || h.payload_len > 125 {
                return Step::Close(CLOSE_PROTOCOL_ERROR, "invalid control frame");
            }
            self.dropping_frame = false;
            if h.opcode == OP_CLOSE {
                if ctl.is_held(!self.from_client) {
                    return Step::Deliver;
                }
                self.close = Some(Box::new(HeldClose {
                    wire: Vec::with_capacity(h.header_len + h.payload_len as usize),
                    header_len: h.header_len,
                    mask: h.mask,
                }));
            }
            return Step::Continue;
        }
        match (h.opcode, self.in_message) {
            (OP_CONTINUATION, false) => return Step::Close(CLOSE_PROTOCOL_ERROR, "continuation without a message"),
            (OP_TEXT | OP_BINARY, true) => {
                return Step::Close(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one");
            }
            (OP_TEXT | OP_BINARY, false) => {
                self.in_message = true;
                self.message_bytes = 0;
                self.dropping_message = false;
            }
            _ => {}
        }
        if let Some(gate) = &opts.gate
            && !self.dropping_message
        {
            let starts_message = h.opcode != OP_CONTINUATION;
            let info = FrameInfo { from_client: self.from_client, starts_message, payload_len: h.payload_len };
            let verdict = match gate.decide_now(info) {
                Some(v) => v,
                None => gate.decide(info).await,
            };
            match verdict {
                Verdict::Forward => {}
                Verdict::Drop if starts_message => self.dropping_message = true,
                Verdict::Drop => {}
                Verdict::Close(code, reason) => return Step::Close(code, reason),
            }
        }
        self.message_bytes = self.message_bytes.saturating_add(h.payload_len);
        if self.max_message_bytes.is_some_and(|max| self.message_bytes > max) {
            return Step::Close(CLOSE_TOO_BIG, "message too big");
        }
        self.dropping_frame = self.dropping_message;
        if h.fin {
            self.in_message = false;
            if !self.dropping_message {
                self.messages += 1;
            }
        }
        Step::Continue
    }

    async fn run<R, W>(&mut self, src: &mut R, dst: &mut W, ctl: &Control, opts: &RelayOptions)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.pump(src, dst, ctl, opts).await;
        self.flush(opts);
    }

    async fn pump<R, W>(&mut self, src: &mut R, mut dst: &mut W, ctl: &Control, opts: &RelayOptions)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mine = if self.from_client { &ctl.to_backend } else { &ctl.to_client };
        let mut buf = ReadBuffer::new();
        // Set while the buffer is large (boxed then only, so a quiet connection carries
        // no timer): a quiet second gives the memory back.
        let mut quiet: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let n = tokio::select! {
                biased;
                () = mine.notified() => {
                    let ping = if self.from_client { &ctl.pings.1 } else { &ctl.pings.0 };
                    let pinged = ping.swap(false, Ordering::Relaxed);
                    if ctl.is_held(!self.from_client) {
                        // Its Close waits for the other side's: keep relaying.
                        continue;
                    }
                    if pinged && ctl.take_peek(!self.from_client).is_none() {
                        // A ping between frames; skipped if a frame is half through.
                        if self.at_boundary() {
                            let frame = frames::ping_frame(self.from_client.then(mask_key));
                            if dst.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    self.deliver_close(&mut dst, ctl).await;
                    return;
                }
                r = src.read(buf.space()) => match r {
                    Ok(0) | Err(_) => {
                        if ctl.close_seen_from(self.from_client) {
                            // An orderly end after its Close: end this direction; once
                            // both Closes went through, the other one ends as well
                            // (RFC 6455 §7.1.1: the handshake is over).
                            let _ = dst.shutdown().await;
                            if ctl.close_seen_from(!self.from_client) {
                                // The other pump writes to the side this one reads.
                                ctl.finish(self.from_client);
                            }
                            return;
                        }
                        // Its peer went away without a Close frame (FIN or reset): the
                        // WebSocket is over. The other side gets a Close frame — never
                        // a bare 1006 — and every hold on the connection is released.
                        ctl.note_close(self.initiator(), CLOSE_ABNORMAL);
                        let reason = if self.from_client { "the client went away" } else { "the backend went away" };
                        ctl.close_both(CLOSE_GOING_AWAY, reason);
                        self.deliver_close(&mut dst, ctl).await;
                        return;
                    }
                    Ok(n) => n,
                },
                // Reading is cancel-safe: nothing was read when this fires.
                () = when_set(&mut quiet) => {
                    buf.shrink();
                    quiet = None;
                    continue;
                }
            };
            ctl.touch(self.from_client);
            let step = self.process(buf.filled(n), &mut dst, opts, ctl).await;
            if buf.grow_if_full(n) || buf.is_large() {
                // Pushed back at most every half period, not on every read.
                let now = tokio::time::Instant::now();
                match &mut quiet {
                    None => quiet = Some(Box::pin(tokio::time::sleep_until(now + ReadBuffer::QUIET))),
                    Some(q) if q.deadline() < now + ReadBuffer::QUIET / 2 => q.as_mut().reset(now + ReadBuffer::QUIET),
                    Some(_) => {}
                }
            }
            self.flush(opts);
            match step {
                // Its Close went through after the other side's: the closing handshake is
                // over, whether or not this peer ends its connection.
                Ok(Step::Continue)
                    if self.at_boundary()
                        && ctl.close_seen_from(self.from_client)
                        && ctl.close_seen_from(!self.from_client) =>
                {
                    let _ = dst.flush().await;
                    let _ = dst.shutdown().await;
                    // The other pump writes to the side this one reads.
                    ctl.finish(self.from_client);
                    return;
                }
                Ok(Step::Continue) => {}
                Ok(Step::Close(code, reason)) => {
                    ctl.fail_from(self.from_client, code, reason);
                    self.closed_with = Some(code);
                    self.deliver_close(&mut dst, ctl).await;
                    return;
                }
                Ok(Step::Deliver) => {
                    self.deliver_close(&mut dst, ctl).await;
                    return;
                }
                Err(_) => {
                    let _ = dst.shutdown().await;
                    return;
                }
            }
        }
    }

    /// Sends the pending close for this pump's side (at a frame boundary; otherwise the
    /// frame in flight cannot be finished, and the connection is just shut).
    async fn deliver_close<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, ctl: &Control) {
        if let Some((code, reason)) = ctl.take(!self.from_client)
            && self.at_boundary()
        {
            // Frames to the backend are masked, as a client's must be.
            let frame = frames::close_frame(code, reason, self.from_client.then(mask_key));
            let _ = dst.write_all(&frame).await;
            self.closed_with = Some(code);
        }
        let _ = dst.flush().await;
        let _ = dst.shutdown().await;
    }

    /// Forwards a chunk, following frames; stops at the first frame that must not pass.
    /// Bytes are forwarded in contiguous ranges; only a header split across two reads
    /// is held back (at most 14 bytes) and written once complete.
    async fn process<W: AsyncWrite + Unpin>(
        &mut self,
        data: &mut [u8],
        dst: &mut W,
        opts: &RelayOptions,
        ctl: &Control,
    ) -> std::io::Result<Step> {
        let n = data.len();
        let mut i = 0;
        // Start of the range still to forward.
        let mut from = 0;
        while i < n {
            if self.remaining > 0 {
                let take = self.remaining.min((n - i) as u64) as usize;
                if let Some(held) = &mut self.close {
                    // Nothing before it is left to write: `from` is `i` since its header.
                    held.wire.extend_from_slice(&data[i..i + take]);
                    i += take;
                    from = i;
                    self.remaining -= take as u64;
                    if self.remaining == 0
                        && let stop @ Step::Close(..) = self.finish_close(dst, ctl).await?
                    {
                        return Ok(stop);
                    }
                    continue;
                }
                if self.dropping_frame {
                    self.write(dst, &data[from..i]).await?;
                    from = i + take;
                }
                i += take;
                self.remaining -= take as u64;
                continue;
            }
            let start = i;
            let (h, split) = if self.have == 0 {
                match frames::parse_header(&data[i..]) {
                    Ok(Some(h)) => {
                        i += h.header_len;
                        (h, false)
                    }
                    Ok(None) => {
                        // Hold the header's first bytes back until the rest arrives.
                        self.write(dst, &data[from..start]).await?;
                        let rest = n - i;
                        self.header[..rest].copy_from_slice(&data[i..]);
                        self.have = rest;
                        return Ok(Step::Continue);
                    }
                    Err(e) => {
                        self.write(dst, &data[from..start]).await?;
                        return Ok(Step::Close(CLOSE_PROTOCOL_ERROR, e));
                    }
                }
            } else {
                // A held-back header continues at the start of this chunk.
                self.header[self.have] = data[i];
                self.have += 1;
                i += 1;
                from = i;
                match frames::parse_header(&self.header[..self.have]) {
                    Ok(Some(h)) => {
                        self.have = 0;
                        (h, true)
                    }
                    Ok(None) => continue,
                    Err(e) => return Ok(Step::Close(CLOSE_PROTOCOL_ERROR, e)),
                }
            };
            match self.on_header(&h, opts, ctl).await {
                Step::Continue => {}
                stop => {
                    // Nothing of this frame passes; what came before it does.
                    if !split {
                        self.write(dst, &data[from..start]).await?;
                    }
                    return Ok(stop);
                }
            }
            self.remaining = h.payload_len;
            if let Some(held) = &mut self.close {
                if split {
                    held.wire.extend_from_slice(&self.header[..h.header_len]);
                } else {
                    held.wire.extend_from_slice(&data[start..i]);
                    self.write(dst, &data[from..start]).await?;
                }
                from = i;
                if self.remaining == 0
                    && let stop @ Step::Close(..) = self.finish_close(dst, ctl).await?
                {
                    return Ok(stop);
                }
                continue;
            }
            if self.dropping_frame {
                if !split {
                    self.write(dst, &data[from..start]).await?;
                }
                from = i;
            } else if split {
                let header = self.header;
                self.write(dst, &header[..h.header_len]).await?;
            }
        }
        self.write(dst, &data[from.min(n)..n]).await?;
        Ok(Step::Continue)
    }

    /// The Close frame held back is complete: a valid one is recorded and passes; an
    /// invalid one (RFC 6455 §7.4: a code that must not be sent, a one-byte payload, a
    /// reason that is not UTF-8) fails the connection with 1002 and never reaches the
    /// other side.
    async fn finish_close<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, ctl: &Control) -> std::io::Result<Step> {
        let Some(held) = self.close.take() else { return Ok(Step::Continue) };
        let mut payload = held.wire[held.header_len..].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= held.mask[i % 4];
        }
        match frames::check_close_payload(&payload) {
            Ok(code) => {
                ctl.saw_close_from(self.from_client);
                ctl.note_close(self.initiator(), code.unwrap_or(CLOSE_NO_STATUS));
                self.write(dst, &held.wire).await?;
                Ok(Step::Continue)
            }
            Err(e) => Ok(Step::Close(CLOSE_PROTOCOL_ERROR, e)),
        }
    }

    async fn write<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        if !bytes.is_empty() {
            dst.write_all(bytes).await?;
            self.bytes += bytes.len() as u64;
        }
        Ok(())
    }
}

/// A Close frame read so far, as on the wire (header, then the payload, masked as it
/// came).
struct HeldClose {
    wire: Vec<u8>,
    header_len: usize,
    /// The masking key (zeros when unmasked, which leaves the payload as it is).
    mask: [u8; 4],
}

/// A pump's read buffer, sized to the traffic: small while the connection is quiet (an
/// idle WebSocket is the common case, and there may be tens of thousands), doubled
/// whenever a read fills it, and small again after a quiet second.
struct ReadBuffer(Vec<u8>);

impl ReadBuffer {
    const SMALL: usize = 512;
    const LARGE: usize = 16 * 1024;
    const QUIET: Duration = Duration::from_secs(1);

    fn new() -> Self {
        ReadBuffer(vec![0; Self::SMALL])
    }

    fn space(&mut self) -> &mut [u8] {
        &mut self.0
    }

    fn filled(&mut self, n: usize) -> &mut [u8] {
        &mut self.0[..n]
    }

    fn is_large(&self) -> bool {
        self.0.len() > Self::SMALL
    }

    /// Doubles the buffer after a read that filled it; whether it grew.
    fn grow_if_full(&mut self, n: usize) -> bool {
        let len = self.0.len();
        let grow = n == len && len < Self::LARGE;
        if grow {
            self.0 = vec![0; len * 2];
        }
        grow
    }

    fn shrink(&mut self) {
        self.0 = vec![0; Self::SMALL];
    }
}

/// A masking key for frames the gateway writes to a backend: unpredictable, as RFC 6455
/// §5.3 asks (to defeat cache poisoning by scripts).
fn mask_key() -> [u8; 4] {
    rand::random()
}

/// Unpredictable bits from the thread's ChaCha generator (seeded by the operating
/// system, `rand`'s `ThreadRng`): masks, handshake nonces, request ids.
pub(crate) fn random_u64() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn masked(opcode_byte: u8, payload: &[u8]) -> Vec<u8> {
        let key = [7, 1, 2, 9];
        let mut f = vec![opcode_byte, 0x80 | payload.len() as u8];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// (client end, backend end, relay task) with the relay in between.
    fn setup(opts: RelayOptions) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Totals>) {
        let (client, gw_client) = duplex(64 * 1024);
        let (gw_backend, backend) = duplex(64 * 1024);
        let task = tokio::spawn(relay(gw_client, gw_backend, opts, std::future::pending()));
        (client, backend, task)
    }

    async fn read_n(s: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).await.expect("read");
        buf
    }

    /// Every open WebSocket holds a relay future for its whole life: its size is most
    /// of the gateway's memory per idle connection (docs/BENCHMARKS.md). It was 3.9 KB
    /// with copies of `stop` and unconfigured timers inline; this keeps it from creeping
    /// back (the bound leaves room for debug builds and compiler changes).
    #[test]
    fn the_relay_future_stays_small() {
        let (a, b) = (tokio::io::duplex(8).0, tokio::io::duplex(8).0);
        let relay = relay(a, b, RelayOptions::default(), std::future::pending());
        let size = std::mem::size_of_val(&relay);
        eprintln!("the relay future: {size} bytes");
        assert!(size <= 3072, "the relay future grew to {size} bytes");
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_even_when_headers_arrive_one_byte_at_a_time() {
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        let mut stream = masked(0x01, b"hel"); // text, not final
        stream.extend(masked(0x89, b"p")); // ping between fragments
        stream.extend(masked(0x80, b"lo")); // final continuation
        for b in &stream {
            client.write_all(&[*b]).await.expect("write");
        }
        assert_eq!(read_n(&mut backend, stream.len()).await, stream);
        let down = [0x82, 0x03, 1, 2, 3];
        backend.write_all(&down).await.expect("write");
        assert_eq!(read_n(&mut client, down.len()).await, down);
        drop((client, backend));
        let totals = task.await.expect("relay");
        assert_eq!((totals.messages_up, totals.messages_down), (1, 1));
        // Both went away without a Close: recorded as 1006, the gateway said 1001.
        assert_eq!(totals.close.map(|c| c.1), Some(CLOSE_ABNORMAL));
        assert_eq!(totals.closed_by_gateway, Some(CLOSE_GOING_AWAY));
    }

    /// Reads until the end of the stream; the bytes.
    async fn read_all(s: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    }

    #[tokio::test]
    async fn a_side_that_goes_away_without_a_close_ends_the_websocket_with_1001_to_the_other() {
        // The client's TCP ends (FIN) without a Close frame: the backend gets a Close
        // 1001 and the relay ends, though the backend keeps its connection open.
        let (client, mut backend, task) = setup(RelayOptions::default());
        drop(client);
        let frame = read_all(&mut backend).await;
        assert_eq!(&frame[..2], &[0x88, 0x80 | (2 + 20)], "a masked Close with code and reason: {frame:?}");
        let totals = task.await.expect("the relay ends");
        assert_eq!(totals.close, Some((Initiator::Client, CLOSE_ABNORMAL)));
        // The backend goes away: the client gets an unmasked Close 1001.
        let (mut client, backend, task) = setup(RelayOptions::default());
        drop(backend);
        let frame = read_all(&mut client).await;
        assert_eq!(&frame[..4], &[0x88, 2 + 21, 0x03, 0xE9], "Close 1001 (never 1006 on the wire): {frame:?}");
        assert_eq!(task.await.expect("ends").close, Some((Initiator::Backend, CLOSE_ABNORMAL)));
    }

    #[tokio::test]
    async fn the_websocket_ends_once_both_closes_went_through_whoever_keeps_its_connection() {
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        let close = masked(0x88, &1000u16.to_be_bytes());
        client.write_all(&close).await.expect("write");
        assert_eq!(read_n(&mut backend, close.len()).await, close);
        // The backend answers with its Close and keeps its connection; so does the client.
        backend.write_all(&[0x88, 0x02, 0x03, 0xE8]).await.expect("write");
        assert_eq!(read_n(&mut client, 4).await, [0x88, 0x02, 0x03, 0xE8]);
        let totals = task.await.expect("the relay ends without either side closing its TCP connection");
        assert_eq!(totals.close, Some((Initiator::Client, 1000)));
        assert_eq!(totals.closed_by_gateway, None);
        assert!(read_all(&mut client).await.is_empty() && read_all(&mut backend).await.is_empty(), "both ended");
    }

    #[test]
    fn read_buffers_grow_when_filled_and_shrink_back() {
        let mut b = ReadBuffer::new();
        assert!(!b.is_large());
        assert!(!b.grow_if_full(100), "a partial read keeps it");
        let mut len = ReadBuffer::SMALL;
        while b.grow_if_full(len) {
            len *= 2;
        }
        assert_eq!(b.space().len(), ReadBuffer::LARGE, "doubles up to the cap");
        b.shrink();
        assert_eq!(b.space().len(), ReadBuffer::SMALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_second_gives_a_grown_buffer_back_and_bytes_still_pass() {
        // A burst fills the small buffer (it grows); after a quiet period the relay
        // keeps working with a small one. Paused time makes the quiet period instant.
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        let big = masked(0x82, &[7u8; 120]);
        let burst: Vec<u8> = big.iter().copied().cycle().take(big.len() * 40).collect();
        client.write_all(&burst).await.expect("write");
        assert_eq!(read_n(&mut backend, burst.len()).await, burst);
        tokio::time::sleep(ReadBuffer::QUIET * 2).await;
        let small = masked(0x81, b"after");
        client.write_all(&small).await.expect("write");
        assert_eq!(read_n(&mut backend, small.len()).await, small);
        drop((client, backend));
        assert_eq!(task.await.expect("relay").messages_up, 41);
    }

    #[tokio::test]
    async fn the_first_close_is_recorded_with_its_code_and_tallies_follow_along() {
        let tally = Arc::new(Tally::default());
        let (mut client, mut backend, task) =
            setup(RelayOptions { tallies: vec![tally.clone()], ..Default::default() });
        let text = masked(0x81, b"hi");
        client.write_all(&text).await.expect("write");
        assert_eq!(read_n(&mut backend, text.len()).await, text);
        assert_eq!(tally.get(), [1, 0, text.len() as u64, 0], "counted before the connection ends");
        // A masked close 4000, one byte at a time: its code is unmasked on the way.
        let close = masked(0x88, &4000u16.to_be_bytes());
        for b in &close {
            client.write_all(&[*b]).await.expect("write");
        }
        assert_eq!(read_n(&mut backend, close.len()).await, close);
        backend.write_all(&[0x88, 0x02, 0x0F, 0xA0]).await.expect("echo");
        drop((client, backend));
        let totals = task.await.expect("relay");
        assert_eq!(totals.close, Some((Initiator::Client, 4000)));
        assert_eq!(totals.closed_by_gateway, None);
    }

    #[tokio::test]
    async fn an_oversized_message_closes_both_sides_with_1009() {
        let (mut client, mut backend, task) = setup(RelayOptions { max_message_bytes: Some(4), ..Default::default() });
        let ok = masked(0x81, b"four");
        client.write_all(&ok).await.expect("write");
        assert_eq!(read_n(&mut backend, ok.len()).await, ok);
        client.write_all(&masked(0x81, b"fiver")).await.expect("write");
        // The client gets an unmasked close 1009; the backend a masked one.
        assert_eq!(read_n(&mut client, 4).await[..4], [0x88, 17, 0x03, 0xF1]);
        let to_backend = read_n(&mut backend, 2).await;
        assert_eq!(to_backend, [0x88, 0x80 | 17]);
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1009));
    }

    /// Found by the `websocket_frames` fuzz target: a header with a protocol error
    /// (here a 64-bit length with its top bit set) that arrived in pieces closed the
    /// client with 1002 but left the backend without a Close; so did a client that went
    /// away in the middle of a header (no 1001), or of a message the gate dropped.
    #[tokio::test]
    async fn the_other_side_gets_its_close_however_the_bytes_were_split() {
        let bad_length = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        for b in bad_length {
            client.write_all(&[b]).await.expect("write");
            tokio::task::yield_now().await;
        }
        let close = read_n(&mut backend, 2).await;
        assert_eq!(close, [0x88, 0x80 | (2 + 45)], "a masked Close 1002 to the backend");
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(CLOSE_PROTOCOL_ERROR));

        // Gone in the middle of a header: nothing of it was forwarded, the backend gets 1001.
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        client.write_all(&[0x81]).await.expect("write");
        tokio::task::yield_now().await;
        drop(client);
        let frame = read_all(&mut backend).await;
        assert_eq!(&frame[..2], &[0x88, 0x80 | (2 + 20)], "a masked Close 1001: {frame:?}");
        task.await.expect("relay");

        // Gone in the middle of a dropped message's frame: none of it was forwarded.
        let gate: Gate = Arc::new(|_: FrameInfo| -> Pin<Box<dyn Future<Output = Verdict> + Send>> {
            Box::pin(async { Verdict::Drop })
        });
        let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(gate), ..Default::default() });
        let frame = masked(0x81, b"dropped");
        client.write_all(&frame[..frame.len() - 2]).await.expect("write");
        tokio::task::yield_now().await;
        drop(client);
        let got = read_all(&mut backend).await;
        assert_eq!(&got[..2], &[0x88, 0x80 | (2 + 20)], "only a masked Close 1001: {got:?}");
        task.await.expect("relay");
    }

    #[tokio::test]
    async fn protocol_errors_close_with_1002() {
        for bad in [
            vec![0x81, 0x01, b'x'], // unmasked client frame
            masked(0x83, b""),      // unknown opcode
            masked(0x09, b""),      // fragmented control frame
            masked(0x80, b"x"),     // continuation without a message
            masked(0xC1, b"x"),     // RSV1 without permessage-deflate
        ] {
            let (mut client, mut backend, task) = setup(RelayOptions::default());
            client.write_all(&bad).await.expect("write");
            // The backend gets the gateway's Close and answers it; then the client
            // gets its own.
            assert_eq!(read_n(&mut backend, 2).await[0], 0x88);
            backend.write_all(&[0x88, 0x02, 0x03, 0xEA]).await.expect("answer");
            let close = read_n(&mut client, 4).await;
            assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA), "{bad:?}");
            assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1002));
        }
    }

    /// RFC 6455 §7.4: a Close frame with a code no peer may send, a one-byte payload or
    /// a reason that is not UTF-8 fails the connection with 1002 — the other side never
    /// sees it (Autobahn 7.3.1, 7.5.1, 7.9.*), however its bytes were split.
    #[tokio::test]
    async fn invalid_close_frames_never_pass_and_fail_the_connection_with_1002() {
        let mut bad: Vec<Vec<u8>> = [0u16, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, 65535]
            .iter()
            .map(|c| c.to_be_bytes().to_vec())
            .collect();
        bad.push(vec![0x03]);
        bad.push(vec![0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80]);
        for payload in bad {
            for one_byte_at_a_time in [false, true] {
                let (mut client, mut backend, task) = setup(RelayOptions::default());
                let close = masked(0x88, &payload);
                if one_byte_at_a_time {
                    for b in &close {
                        client.write_all(&[*b]).await.expect("write");
                        tokio::task::yield_now().await;
                    }
                } else {
                    client.write_all(&close).await.expect("write");
                }
                // The backend gets the gateway's masked Close 1002, not the client's.
                let head = read_n(&mut backend, 2).await;
                assert_eq!(head[0], 0x88, "{payload:?}");
                let rest = read_n(&mut backend, usize::from(head[1] & 0x7f) + 4).await;
                let code = u16::from_be_bytes([rest[4] ^ rest[0], rest[5] ^ rest[1]]);
                assert_eq!(code, CLOSE_PROTOCOL_ERROR, "{payload:?}");
                backend.write_all(&[0x88, 0x02, 0x03, 0xEA]).await.expect("answer");
                let close = read_n(&mut client, 4).await;
                assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA), "{payload:?}");
                let totals = task.await.expect("relay");
                assert_eq!(totals.closed_by_gateway, Some(CLOSE_PROTOCOL_ERROR));
                assert_eq!(totals.close, Some((Initiator::Gateway, CLOSE_PROTOCOL_ERROR)), "{payload:?}");
            }
        }
        // From the backend, likewise: the client gets 1002.
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        backend.write_all(&[0x88, 0x02, 0x03, 0xEE]).await.expect("1006");
        let close = read_n(&mut client, 4).await;
        assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA));
        drop((client, backend));
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(CLOSE_PROTOCOL_ERROR));
        // A valid code with a UTF-8 reason and an empty Close pass unchanged.
        for payload in [&[0x0B, 0xB8, b'o', b'k'][..], &[]] {
            let (mut client, mut backend, task) = setup(RelayOptions::default());
            let close = masked(0x88, payload);
            client.write_all(&close).await.expect("write");
            assert_eq!(read_n(&mut backend, close.len()).await, close);
            backend.write_all(&[0x88, 0x00]).await.expect("answer");
            assert_eq!(read_n(&mut client, 2).await, [0x88, 0x00]);
            let want = if payload.is_empty() { CLOSE_NO_STATUS } else { 3000 };
            assert_eq!(task.await.expect("relay").close, Some((Initiator::Client, want)));
        }
    }

    /// Autobahn's strict behaviour (cases 3.2–3.4, 4.*, 5.15): the client's valid
    /// frames were echoed before its bad one; the echoes reach it before its Close.
    #[tokio::test]
    async fn after_a_clients_protocol_error_the_backends_answers_still_reach_it_before_its_close() {
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        client.write_all(&masked(0x81, b"hello")).await.expect("write");
        client.write_all(&masked(0xC1, b"bad")).await.expect("write");
        // The backend reads the valid frame, then the gateway's Close 1002…
        let hello = read_n(&mut backend, 11).await;
        assert_eq!(&hello[..2], &[0x81, 0x85]);
        let close = read_n(&mut backend, 2).await;
        assert_eq!(close[0], 0x88);
        let rest = read_n(&mut backend, usize::from(close[1] & 0x7f) + 4).await;
        assert_eq!(rest.len(), usize::from(close[1] & 0x7f) + 4);
        // …and sends its echo, then its Close answer.
        backend.write_all(&[0x81, 0x05]).await.expect("echo");
        backend.write_all(b"hello").await.expect("echo");
        backend.write_all(&[0x88, 0x02, 0x03, 0xE8]).await.expect("close");
        // The client gets the echo, then the gateway's Close 1002 (not the backend's).
        assert_eq!(read_n(&mut client, 7).await, [0x81, 0x05, b'h', b'e', b'l', b'l', b'o']);
        let close = read_n(&mut client, 4).await;
        assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA));
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1002));
    }

    /// A client closes and goes; the backend takes nothing more (it stopped reading, so
    /// the Close never reaches it and no answer comes): the closing handshake ends after
    /// the grace, and the relay with it.
    #[tokio::test(start_paused = true)]
    async fn a_closing_handshake_that_never_finishes_ends_after_the_grace() {
        let (mut client, _backend, task) = setup(RelayOptions::default());
        client.write_all(&masked(0x88, &[0x03, 0xE8])).await.expect("close");
        drop(client);
        let totals = tokio::time::timeout(CLOSE_GRACE * 2, task).await.expect("bounded").expect("relay");
        assert_eq!(totals.close, Some((Initiator::Client, 1000)));
    }

    /// A backend that never answers the Close holds the client's back for the grace only.
    #[tokio::test(start_paused = true)]
    async fn a_held_close_goes_after_the_grace_when_the_other_side_never_answers() {
        let (mut client, _backend, task) = setup(RelayOptions::default());
        client.write_all(&masked(0xC1, b"bad")).await.expect("write");
        let close = read_n(&mut client, 4).await;
        assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA));
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1002));
    }

    #[tokio::test]
    async fn the_gate_drops_or_closes_whole_messages() {
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        let gate: Gate = Arc::new(move |info: FrameInfo| -> Pin<Box<dyn Future<Output = Verdict> + Send>> {
            if !info.starts_message {
                return Box::pin(async { Verdict::Forward });
            }
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                match n {
                    0 => Verdict::Forward,
                    1 => Verdict::Drop,
                    _ => Verdict::Close(CLOSE_POLICY_VIOLATION, "usage limits exceeded"),
                }
            })
        });
        let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(gate), ..Default::default() });
        let first = masked(0x81, b"one");
        client.write_all(&first).await.expect("write");
        client.write_all(&masked(0x01, b"tw")).await.expect("write"); // dropped, in two fragments
        client.write_all(&masked(0x80, b"o")).await.expect("write");
        client.write_all(&masked(0x81, b"three")).await.expect("write");
        assert_eq!(read_n(&mut backend, first.len()).await, first);
        // Next on the backend side is the gateway's close, not "two".
        assert_eq!(read_n(&mut backend, 2).await, [0x88, 0x80 | 23]);
        let close = read_n(&mut client, 25).await;
        assert_eq!(&close[4..], b"usage limits exceeded");
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1008));
    }

    #[tokio::test]
    async fn idle_connections_and_old_ones_close_with_1001_and_pings_reach_both_sides() {
        let ms = std::time::Duration::from_millis;
        // Idle: nothing arrives, the gateway closes.
        let (mut client, mut backend, task) = setup(RelayOptions { idle_timeout: Some(ms(100)), ..Default::default() });
        assert_eq!(read_n(&mut client, 4).await, [0x88, 14, 0x03, 0xE9]);
        assert_eq!(read_n(&mut backend, 2).await, [0x88, 0x80 | 14]);
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1001));

        // Pings: both sides get one (masked towards the backend).
        let (mut client, mut backend, task) = setup(RelayOptions { ping_interval: Some(ms(50)), ..Default::default() });
        assert_eq!(read_n(&mut client, 2).await, [0x89, 0x00]);
        assert_eq!(read_n(&mut backend, 2).await, [0x89, 0x80]);
        drop((client, backend));
        task.await.expect("relay");

        // Age: however busy, the connection ends at its maximum duration.
        let (mut client, _backend, task) = setup(RelayOptions { max_duration: Some(ms(100)), ..Default::default() });
        let close = read_n(&mut client, 4).await;
        assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xE9));
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1001));
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_that_stops_answering_pings_is_closed_and_released() {
        let opts = RelayOptions {
            ping_interval: Some(Duration::from_secs(1)),
            pong_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let (mut client, mut backend, task) = setup(opts);
        // First round: both answer (any frame counts), the connection lives on.
        assert_eq!(read_n(&mut client, 2).await, [0x89, 0x00]);
        assert_eq!(read_n(&mut backend, 6).await[..2], [0x89, 0x80]); // masked: 4 bytes of key
        client.write_all(&masked(0x8A, b"")).await.expect("pong");
        backend.write_all(&[0x8A, 0x00]).await.expect("pong");
        // Each pong goes on to the other side (an unsolicited pong is a heartbeat).
        assert_eq!(read_n(&mut backend, 6).await[..2], [0x8A, 0x80]);
        assert_eq!(read_n(&mut client, 2).await, [0x8A, 0x00]);
        // Second round: the backend answers, the client does not — it is dead.
        assert_eq!(read_n(&mut client, 2).await, [0x89, 0x00]);
        assert_eq!(read_n(&mut backend, 6).await[..2], [0x89, 0x80]); // masked: 4 bytes of key
        backend.write_all(&[0x8A, 0x00]).await.expect("pong");
        let pong = read_n(&mut client, 2).await;
        assert_eq!(pong, [0x8A, 0x00]);
        // The backend is told the client went away (1001); the relay ends.
        let close = read_n(&mut backend, 8).await;
        assert_eq!((close[0], close[1] & 0x7F), (0x88, 2 + "the client did not answer pings".len() as u8));
        let totals = task.await.expect("relay");
        assert_eq!(totals.closed_by_gateway, Some(1001));
        assert_eq!(totals.close.map(|c| c.0), Some(Initiator::Gateway));
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_that_takes_no_close_is_dropped_after_the_grace() {
        // The client's window is full (it reads nothing): its Close cannot be written.
        let (mut client, gw_client) = duplex(64);
        let (gw_backend, mut backend) = duplex(64 * 1024);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = Box::pin(async move {
            let _ = stop_rx.await;
            (CLOSE_GOING_AWAY, "the gateway is shutting down")
        });
        let task = tokio::spawn(relay(gw_client, gw_backend, RelayOptions::default(), stop));
        backend.write_all(&[0x82, 0x7E, 0x01, 0x00]).await.expect("header");
        backend.write_all(&[0u8; 256]).await.expect("payload");
        let _ = stop_tx.send(());
        // The relay ends within the grace, whatever the client does.
        let totals = tokio::time::timeout(CLOSE_GRACE * 2, task).await.expect("bounded").expect("relay");
        assert_eq!(totals.close, Some((Initiator::Gateway, CLOSE_GOING_AWAY)));
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        assert!(got.len() < 4 + 256 + 4, "the stuck side got at most what fitted: {}", got.len());
    }
}
