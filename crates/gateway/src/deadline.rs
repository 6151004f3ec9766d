//! Deadlines for every state a client connection can be in, so that no client — slow,
//! silent or hostile — holds a place, a backend connection or memory for free.
//!
//! | state | deadline |
//! |---|---|
//! | accepted, nothing received; between requests; HTTP/2 with no stream | `--header-read-timeout` of no request in flight ([`Activity::idle_for`]) |
//! | sending a request body | a minimum data rate after a grace ([`MinDataRate`], [`BodyPace`]): 408 `request_timeout` |
//! | reading a response | the same minimum rate, counted on what the client takes ([`Activity::too_slow`]): the connection is closed |
//! | at the connection cap | the connection idle the longest, else the slowest sender, makes room for a new one ([`Registry::evict`]) |
//!
//! The minimum rate follows Kestrel's `MinRequestBodyDataRate`/`MinResponseDataRate`
//! (240 bytes/s after a 5 s grace): a client must move, over the time the gateway waits
//! for it, at least `bytes_per_second` after the first `grace`. Only time spent waiting
//! for the client counts — not time the backend takes to read or to answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Turns TCP keep-alive on for `tcp` (idle `time` before the first probe, then probes
/// every `min(time, 15 s)`, 4 unanswered → the connection fails), so a peer that
/// vanished without a FIN or a reset (a crashed host, a dropped NAT mapping) is found
/// and its connection released. `None`: left as the system has it (usually off).
pub fn set_tcp_keepalive(tcp: &tokio::net::TcpStream, time: Option<Duration>) {
    if let Some(time) = time {
        let params = socket2::TcpKeepalive::new()
            .with_time(time)
            .with_interval(time.min(Duration::from_secs(15)))
            .with_retries(4);
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&params) {
            tracing::debug!(error = %e, "cannot turn TCP keep-alive on");
        }
    }
}

/// The least a client must send (request bodies) and take (responses), in bytes per
/// second, once `grace` has passed. `--min-data-rate` and `--min-data-rate-grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinDataRate {
    /// Bytes per second; at least 1.
    pub bytes_per_second: u64,
    /// Waiting time allowed before the rate applies.
    pub grace: Duration,
}

impl Default for MinDataRate {
    /// Kestrel's defaults: 240 bytes/s after 5 s.
    fn default() -> Self {
        MinDataRate { bytes_per_second: 240, grace: Duration::from_secs(5) }
    }
}

impl MinDataRate {
    /// How long a client may have been waited for, in all, once it moved `bytes`.
    pub fn allowance(&self, bytes: u64) -> Duration {
        self.grace + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second.max(1) as f64)
    }
}

/// What one client connection is doing, shared by its task, its requests' bodies and
/// the listener's [`Registry`].
#[derive(Debug)]
pub struct Activity {
    /// Requests in flight (until their response body ends).
    in_flight: AtomicUsize,
    /// Milliseconds since `started` at the last change of `in_flight`.
    last: AtomicU64,
    /// On tokio's clock, so that tests can move it (`start_paused`).
    started: tokio::time::Instant,
    /// Responses whose last frame the connection is still writing to the client (handed
    /// over, not asked for again).
    owed: AtomicUsize,
    /// Milliseconds since `started` when `owed` last became non-zero.
    owed_since: AtomicU64,
    /// Bytes the client has taken (written to its connection), all told.
    taken: AtomicU64,
    /// `taken` when `owed` last became non-zero.
    taken_before: AtomicU64,
    /// The current window of the minimum response rate: when it began (milliseconds
    /// since `started`) and `taken_since_owed` then.
    window: AtomicU64,
    window_taken: AtomicU64,
    owing: Notify,
    /// A request body of this connection is behind the minimum rate (not yet past its
    /// grace): the first to go when the listener is full.
    lagging: AtomicBool,
    /// Chosen to make room: closing.
    evicting: AtomicBool,
    evict: Notify,
}

impl Activity {
    /// A connection that has done nothing yet.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            started: tokio::time::Instant::now(),
            owed: AtomicUsize::new(0),
            owed_since: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            taken_before: AtomicU64::new(0),
            window: AtomicU64::new(0),
            window_taken: AtomicU64::new(0),
            owing: Notify::new(),
            lagging: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> tokio::time::Instant {
        self.started + Duration::from_millis(ms)
    }

    /// Something happened now: a connection's idle time counts from here (also once
    /// its TLS handshake is done, so that the handshake's time is not taken from the
    /// idle timeout).
    pub(crate) fn touch(&self) {
        self.last.store(self.now_ms(), Relaxed);
    }

    /// A request began; it is in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Relaxed);
        self.touch();
        Busy { activity: self.clone(), owing: false }
    }

    /// Resolves once nothing is in flight and nothing began or ended for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.last.load(Relaxed);
            tokio::time::sleep_until(self.at(last) + idle).await;
            if self.in_flight.load(Relaxed) == 0 && self.last.load(Relaxed) == last {
                return;
            }
            if self.in_flight.load(Relaxed) > 0 {
                // Busy: look again a period from now.
                self.touch();
            }
        }
    }

    /// Resolves once the client takes response bytes more slowly than `rate` while the
    /// connection waits for it (a response frame handed over and not yet asked for
    /// again: the client's socket, or an HTTP/2 stream's flow-control window, is full;
    /// or a response head whose body was never asked for). The rate is measured over
    /// windows of the grace's length (at least a second): a window in which the client
    /// took less than `rate` × window ends it. What counts is what the client took —
    /// bytes its connection's socket accepted — so a large frame taken at a good pace
    /// buys no extra time, and a client that took the system's send buffer full (a few
    /// MB) and then nothing is cut off one window later, not after MB ÷ rate seconds.
    pub async fn too_slow(&self, rate: MinDataRate) {
        let window = rate.grace.max(Duration::from_secs(1));
        let least = (rate.bytes_per_second as f64 * window.as_secs_f64()) as u64;
        loop {
            while self.owed.load(Relaxed) == 0 {
                self.owing.notified().await;
            }
            let since = self.owed_since.load(Relaxed);
            let mut mark = self.taken_since_owed();
            let mut at = self.at(since);
            loop {
                self.window.store((at - self.started).as_millis() as u64, Relaxed);
                self.window_taken.store(mark, Relaxed);
                at += window;
                tokio::time::sleep_until(at).await;
                if self.owed.load(Relaxed) == 0 || self.owed_since.load(Relaxed) != since {
                    break;
                }
                let taken = self.taken_since_owed();
                if taken < mark {
                    // A new wait began within the same millisecond: start over.
                    break;
                }
                if taken - mark < least {
                    return;
                }
                mark = taken;
            }
        }
    }

    /// Bytes the client took since the connection began to wait for it.
    fn taken_since_owed(&self) -> u64 {
        self.taken.load(Relaxed).saturating_sub(self.taken_before.load(Relaxed))
    }

    fn owe(&self) {
        if self.owed.fetch_add(1, Relaxed) == 0 {
            let now = self.now_ms();
            self.taken_before.store(self.taken.load(Relaxed), Relaxed);
            self.window.store(now, Relaxed);
            self.window_taken.store(0, Relaxed);
            self.owed_since.store(now, Relaxed);
            self.owing.notify_one();
        }
    }

    /// The client took `bytes` more (they were written to its connection).
    pub fn took(&self, bytes: usize) {
        self.taken.fetch_add(bytes as u64, Relaxed);
    }

    /// Marks (or clears) a request body of this connection as behind the minimum rate.
    pub fn set_lagging(&self, lagging: bool) {
        if self.lagging.load(Relaxed) != lagging {
            self.lagging.store(lagging, Relaxed);
        }
    }

    /// Whether the client takes its responses below `rate` in the current window of
    /// [`Activity::too_slow`] (not yet at its end): the window is a second old or more
    /// and the client took less than the rate over it. (A moment between two frames is
    /// no sign of a slow client.)
    fn reading_behind(&self, rate: MinDataRate) -> bool {
        if self.owed.load(Relaxed) == 0 {
            return false;
        }
        let start = self.window.load(Relaxed).max(self.owed_since.load(Relaxed));
        let elapsed = Duration::from_millis(self.now_ms().saturating_sub(start));
        let taken = self.taken_since_owed().saturating_sub(self.window_taken.load(Relaxed));
        elapsed >= Duration::from_secs(1) && (taken as f64) < rate.bytes_per_second as f64 * elapsed.as_secs_f64()
    }

    /// Resolves when the listener chose this connection to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// A request in flight, until its response body ends (or is dropped); tracks the
/// response frames the client has yet to take.
pub struct Busy {
    activity: Arc<Activity>,
    owing: bool,
}

impl Busy {
    /// Before the response body is asked for its next frame: the last one was taken.
    pub fn asked(&mut self) {
        if std::mem::take(&mut self.owing) {
            self.activity.owed.fetch_sub(1, Relaxed);
        }
    }

    /// The response head was handed to the connection and its body is yet to be asked
    /// for: until it is, the client has the head to take (an HTTP/2 stream whose window
    /// is closed never lets its body be asked for).
    pub fn head_handed(&mut self) {
        if !self.owing {
            self.owing = true;
            self.activity.owe();
        }
    }

    /// A frame of `bytes` was handed to the connection to write.
    pub fn handed(&mut self, bytes: u64) {
        if bytes > 0 && !self.owing {
            self.owing = true;
            self.activity.owe();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.asked();
        self.activity.in_flight.fetch_sub(1, Relaxed);
        self.activity.touch();
    }
}

pin_project_lite::pin_project! {
    /// A client connection's transport, counting the bytes written to it (what the
    /// client took) into the connection's [`Activity`]. Under TLS it wraps the TCP
    /// stream, so records count as sent.
    pub struct Taking<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
    }
}

impl<I> Taking<I> {
    /// Wraps a connection's transport `io`, counting what is written to it into `activity`.
    pub fn new(io: I, activity: Arc<Activity>) -> Taking<I> {
        Taking { io, activity }
    }
}

impl<I: tokio::io::AsyncRead> tokio::io::AsyncRead for Taking<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Taking<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.activity.took(*n);
        }
        r
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.activity.took(*n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The minimum rate applied to one request body as the gateway reads it: only time
/// spent waiting for the client counts.
#[derive(Debug)]
pub struct BodyPace {
    rate: MinDataRate,
    received: u64,
    /// Time waited for the client before the current wait.
    waited: Duration,
    /// Since when the gateway waits for the client, if it does.
    waiting: Option<Instant>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    activity: Option<Arc<Activity>>,
}

impl BodyPace {
    /// The pace of one request body under `rate`; `activity` is its connection's, marked
    /// lagging while the body is behind.
    pub fn new(rate: MinDataRate, activity: Option<Arc<Activity>>) -> BodyPace {
        BodyPace { rate, received: 0, waited: Duration::ZERO, waiting: None, sleep: None, activity }
    }

    /// After a poll of the body: `Ready(())` when the client is now too slow (the body
    /// must fail), `Pending` otherwise. `pending`: whether the poll found nothing yet;
    /// `bytes`: the data it returned, in bytes (0 for none or a trailers frame).
    pub fn check(&mut self, pending: bool, bytes: u64, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::future::Future as _;
        if !pending {
            self.received += bytes;
            if let Some(w) = self.waiting.take() {
                self.waited += w.elapsed();
            }
            self.lag(false);
            return std::task::Poll::Pending;
        }
        let now = Instant::now();
        let since = *self.waiting.get_or_insert(now);
        let allowance = self.rate.allowance(self.received);
        let waited = self.waited + (now - since);
        if waited >= allowance {
            return std::task::Poll::Ready(());
        }
        // Behind the rate, still within the grace: the first to go when the listener
        // is full.
        // (After a second of waiting at least: a moment between two reads is no sign.)
        self.lag(waited >= Duration::from_secs(1) && waited > allowance - self.rate.grace);
        let due = tokio::time::Instant::from_std(now + (allowance - waited));
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(due),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
        }
        match self.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(std::task::Poll::Ready(())) => std::task::Poll::Ready(()),
            _ => std::task::Poll::Pending,
        }
    }

    fn lag(&self, lagging: bool) {
        if let Some(a) = &self.activity {
            a.set_lagging(lagging);
        }
    }
}

impl Drop for BodyPace {
    fn drop(&mut self) {
        self.lag(false);
    }
}

/// The connections of one listener, so that a full listener can make room: a new
/// client is not refused while a connection does nothing or sends too slowly.
#[derive(Default)]
pub struct Registry {
    live: std::sync::Mutex<slab::Slab<Arc<Activity>>>,
}

/// A connection's place in its [`Registry`], until it drops.
pub struct Registered {
    registry: Arc<Registry>,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut live = self.registry.live.lock().unwrap_or_else(|e| e.into_inner());
        live.try_remove(self.key);
    }
}

impl Registry {
    /// Adds a connection to the registry until the returned [`Registered`] drops.
    pub fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let key = self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(activity);
        Registered { registry: self.clone(), key }
    }

    /// Asks one connection to close to make room: the one with no request in flight
    /// that has been so the longest (silent, or between requests), else one whose
    /// request body comes, or whose responses are taken, below `rate` (the minimum
    /// data rate, when there is one). `false` when every connection is busy and keeping
    /// pace (the new client is then refused).
    pub fn evict(&self, rate: Option<MinDataRate>) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let candidates = || live.iter().map(|(_, a)| a).filter(|a| !a.evicting.load(Relaxed));
        let idle = candidates()
            .filter(|a| a.in_flight.load(Relaxed) == 0)
            .min_by_key(|a| a.started + Duration::from_millis(a.last.load(Relaxed)));
        let behind = || candidates().find(|a| a.lagging.load(Relaxed) || rate.is_some_and(|r| a.reading_behind(r)));
        match idle.or_else(behind) {
            Some(a) => {
                a.evicting.store(true, Relaxed);
                a.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener touches a connection's activity once its TLS handshake is done
    /// (`server.rs`), so that `--header-read-timeout` counts from there, not from the
    /// accept (found by an adversarial pass). Tokio's clock is paused and moved.
    #[tokio::test(start_paused = true)]
    async fn the_idle_time_counts_from_the_last_touch() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(2)).await;
        activity.touch();
        let idle = activity.idle_for(Duration::from_secs(3));
        tokio::pin!(idle);
        // 3 s after the start, 1 s after the touch: not idle yet.
        assert!(tokio::time::timeout(Duration::from_secs(1), idle.as_mut()).await.is_err());
        // 3 s after the touch: idle.
        assert!(tokio::time::timeout(Duration::from_millis(2_001), idle.as_mut()).await.is_ok());
    }
}
