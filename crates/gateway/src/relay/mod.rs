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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// RFC 6455 close codes the gateway sends.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Recorded (analytics, metrics) for a connection that ended without a Close frame;
/// never sent (RFC 6455 §7.4.1).
pub const CLOSE_ABNORMAL: u16 = 1006;
/// Recorded for a Close frame that carried no code; never sent (RFC 6455 §7.4.1).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// 1002: a peer broke the WebSocket protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// 1008: a message broke a policy, such as a usage limit.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// 1009: a message over `max_message_bytes`.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// What to do with a message, decided when its first frame arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the message to the other side.
    Forward,
    /// Swallow this message (its frames never reach the other side).
    Drop,
    /// Close the connection on both sides with this code and reason.
    Close(u16, &'static str),
}

/// Data frames as the gate sees them: one frame, or — for a gate that
/// [decides runs](Decide::decides_runs) — the run of data frames whose headers one
/// read of the socket holds, decided together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Whether the client sent them (else the backend).
    pub from_client: bool,
    /// How many frames: 1, or more for a run.
    pub frames: u32,
    /// Messages they start (a text or binary frame starts one, a continuation none).
    pub messages: u32,
    /// Payload bytes as on the wire, all frames together.
    pub payload_len: u64,
}

impl FrameInfo {
    /// Whether the (first) frame starts a message; for one frame, whether it is the
    /// first of its message.
    pub fn starts_message(&self) -> bool {
        self.messages > 0
    }
}

/// Asked for every data frame before it passes; `None` when nothing is governed.
/// `Drop` is honoured on a message's first frame (the whole message is dropped).
pub type Gate = Arc<dyn Decide>;

/// What a [`Gate`] does with a frame, or with a run of frames.
///
/// A run (`frames > 1`) is a read's data frames asked for at once, so that metering
/// makes one counter update per read: `Forward` passes all of them; `Drop` means "not
/// all of them" — nothing may have been counted, and the relay asks for each frame in
/// turn, so that exactly those that fit pass; `Close` closes at once (none passes).
pub trait Decide: Send + Sync {
    /// The verdict when it needs no waiting (counters in this process): no future is
    /// made for it. `None` sends the frame to [`Decide::decide`].
    fn decide_now(&self, _frame: FrameInfo) -> Option<Verdict> {
        None
    }

    /// The verdict, when it has to be waited for (counters in Redis).
    fn decide(&self, frame: FrameInfo) -> Pin<Box<dyn Future<Output = Verdict> + Send + '_>>;

    /// Whether it may be asked about runs of frames (see the trait); `false`: one frame
    /// at a time.
    fn decides_runs(&self) -> bool {
        false
    }
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

/// What a relay enforces on one WebSocket connection.
#[derive(Clone, Default)]
pub struct RelayOptions {
    /// permessage-deflate was negotiated: RSV1 may mark compressed messages.
    pub deflate: bool,
    /// Largest message, in payload bytes as on the wire (compressed when deflated).
    pub max_message_bytes: Option<u64>,
    /// Asked about every data frame; `None`: nothing is governed.
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
    /// Data messages forwarded, by direction.
    pub messages: [AtomicU64; 2],
    /// Bytes forwarded, frames as on the wire (headers included), by direction.
    pub bytes: [AtomicU64; 2],
}

impl Tally {
    /// `[messages up, messages down, bytes up, bytes down]`, up being client → backend.
    pub fn get(&self) -> [u64; 4] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [l(&self.messages[0]), l(&self.messages[1]), l(&self.bytes[0]), l(&self.bytes[1])]
    }
}

/// Who sent the first close frame of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Initiator {
    /// The client.
    Client,
    /// The backend.
    Backend,
    /// The gateway itself (a limit, a timeout, shutdown).
    Gateway,
}

impl Initiator {
    /// `client`, `backend` or `gateway`, as in metric labels.
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
    /// Data messages forwarded from the client to the backend.
    pub messages_up: u64,
    /// Data messages forwarded from the backend to the client.
    pub messages_down: u64,
    /// Bytes forwarded from the client to the backend, frames as on the wire.
    pub bytes_up: u64,
    /// Bytes forwarded from the backend to the client, frames as on the wire.
    pub bytes_down: u64,
    /// The close code the gateway itself sent, if it closed the connection.
    pub closed_by_gateway: Option<u16>,
    /// The first close frame (1005 when it carried no code); `None` when the
    /// connection ended without one (an abnormal closure, 1006 in RFC 6455 terms).
    pub close: Option<(Initiator, u16)>,
    /// How long the relay ran.
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
    /// Notified when a Close is held, or when a peer's Close frame went through (the
    /// closing handshake has begun): the relay bounds each wait. One `Notify` for both,
    /// the flags saying which: each wait on one is 64 bytes of every open WebSocket's
    /// future.
    watch: Notify,
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
            watch: Notify::new(),
        }
    }
}

impl Control {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records that bytes arrived from one side; the time, in ms since the start.
    fn touch(&self, from_client: bool) -> u64 {
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if from_client { &self.heard.0 } else { &self.heard.1 }.store(now, Ordering::Relaxed);
        now
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
        self.watch.notify_one();
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
        self.watch.notify_one();
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
/// gateway's memory per idle connection. That is why this is a plain function that
/// splits the connections before the future is made: the future holds the halves, the
/// options (boxed, as the caller passes them: one pointer in every future that carries
/// them) and the control block once each, never an argument beside its moved copy.
/// Timers that are not configured take no room (each is boxed only when its option is
/// set), waits that are rare (a close, a ping) are boxed where they happen, and `stop`
/// is polled where it lies (`Unpin`: callers box a large one).
pub fn relay<C, B, S>(
    client: C,
    backend: B,
    opts: impl Into<Box<RelayOptions>>,
    mut stop: S,
) -> impl Future<Output = Totals>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Future<Output = Close> + Unpin,
{
    let opts: Box<RelayOptions> = opts.into();
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut backend_rd, mut backend_wr) = tokio::io::split(backend);
    let ctl = Control::default();
    let mut up = Pump::new(true, &opts);
    let mut down = Pump::new(false, &opts);
    async move {
        let mut linger = true;
        {
            let mut pumps = std::pin::pin!(async {
                tokio::join!(
                    up.pump(&mut client_rd, &mut backend_wr, &ctl, &opts),
                    down.pump(&mut backend_rd, &mut client_wr, &ctl, &opts)
                )
            });
            if let Some((code, reason)) = govern(&ctl, &opts, &mut stop, pumps.as_mut()).await {
                ctl.close_both(code, reason);
                // Each side gets its Close once the frame in flight to it is through; a
                // side that takes nothing (a dead peer with a full window) is not waited
                // for beyond the grace: dropping its connection ends it. The grace's
                // timer boxed: it is not part of an open connection's future.
                let grace = Box::pin(tokio::time::sleep(CLOSE_GRACE));
                tokio::select! {
                    _ = &mut pumps => {}
                    () = grace => {
                        tracing::debug!(reason, "a side did not take its Close in time: connection dropped");
                        linger = false;
                    }
                }
            }
        }
        up.flush(&opts);
        down.flush(&opts);
        let totals = Totals {
            messages_up: up.messages,
            messages_down: down.messages,
            bytes_up: up.bytes,
            bytes_down: down.bytes,
            closed_by_gateway: up.closed_with.or(down.closed_with),
            close: *ctl.first_close.lock().unwrap_or_else(|e| e.into_inner()),
            duration: ctl.started.elapsed(),
        };
        if linger {
            // A task of its own: the WebSocket is over (its totals are final, its places
            // under the plan's caps free as soon as this returns); only the sockets'
            // teardown goes on, and it must not grow every open connection's future.
            let (client_done, backend_done) = (ctl.close_seen_from(true), ctl.close_seen_from(false));
            tokio::spawn(async move {
                lingering_close(&mut client_rd, client_done, &mut backend_rd, backend_done).await;
            });
        }
        totals
    }
}

/// The end of a WebSocket's connections, as RFC 9112 §9.6 has a server close HTTP
/// ones ("lingering close"): each side has had its Close frame and the gateway's FIN
/// (its writes are shut down). A side that did not send its own Close (`…_done`: it
/// did) may still be sending: what it sends is read and thrown away until it ends its
/// connection or is quiet for [`LINGER_QUIET`], for at most [`CLOSE_GRACE`]. Closing a
/// socket with unread bytes in it makes the kernel send a reset, and a reset makes the
/// peer's kernel throw away what it had received but not yet read — the Close frame
/// and the last replies of a client that sent a burst and was stopped (a usage limit,
/// a protocol error).
async fn lingering_close<C: AsyncRead + Unpin, B: AsyncRead + Unpin>(
    client: &mut C,
    client_done: bool,
    backend: &mut B,
    backend_done: bool,
) {
    async fn discard<R: AsyncRead + Unpin>(side: &mut R, done: bool) {
        if done {
            return;
        }
        while let Ok(Ok(Some(_))) = tokio::time::timeout(LINGER_QUIET, pump::Spare::read(side, pump::Spare::LEN)).await
        {
        }
    }
    let both = async { tokio::join!(discard(client, client_done), discard(backend, backend_done)) };
    let _ = tokio::time::timeout(CLOSE_GRACE, both).await;
}

/// How long a side that is being closed may stay silent before the gateway stops
/// reading it (see [`lingering_close`]): what it had in flight has arrived by then.
pub const LINGER_QUIET: Duration = Duration::from_millis(500);

/// Watches an open WebSocket while its pumps run: the closing handshake's and a held
/// Close's grace, `stop`, the idle timeout, the maximum duration, pings and their
/// pongs. `None` when the pumps ended by themselves; otherwise the close the gateway
/// decided on.
async fn govern<S, P>(ctl: &Control, opts: &RelayOptions, stop: &mut S, mut pumps: Pin<&mut P>) -> Option<Close>
where
    S: Future<Output = Close> + Unpin,
    P: Future,
{
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
    loop {
        tokio::select! {
            _ = pumps.as_mut() => break None,
            () = ctl.watch.notified(), if closing.is_none() || held_grace.is_none() => {
                if closing.is_none() && (ctl.close_seen_from(true) || ctl.close_seen_from(false)) {
                    closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
                if held_grace.is_none() && (ctl.is_held(true) || ctl.is_held(false)) {
                    held_grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
            }
            () = when_set(&mut closing) => {
                tracing::debug!("the closing handshake did not finish in time: connections dropped");
                break None;
            }
            () = when_set(&mut held_grace) => {
                // Gone once it fired: an elapsed timer is ready at every poll, and this
                // loop would spin on it until the pumps end.
                held_grace = None;
                ctl.release_held();
            }
            (code, reason) = &mut *stop => break Some((code, reason)),
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

mod pump;
use pump::Pump;

/// Unpredictable bits from the thread's ChaCha generator (seeded by the operating
/// system, `rand`'s `ThreadRng`): masks, handshake nonces, request ids.
pub(crate) fn random_u64() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests;
