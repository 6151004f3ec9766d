//! The response body type: either streamed from the backend or produced locally.
//! An enum rather than a boxed trait object keeps the proxied path allocation-free.

use crate::deadline::BodyPace;
use crate::upstream::pool::PooledBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Something held while a request is in progress and given back when it drops (a place
/// under a `rate_limit` concurrency limiter, in memory or leased in Redis).
pub type Held = Box<dyn std::any::Any + Send + Sync>;

/// Errors of bodies the gateway passes on (hyper's own, or a size limit).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body went over its `payload_limits` size.
#[derive(Debug, thiserror::Error)]
#[error("the body is larger than the payload limit")]
pub struct TooLarge;

/// A body did not move within its `upstream_connection` timeout.
#[derive(Debug, thiserror::Error)]
#[error("the body did not progress within the timeout")]
pub struct TimedOut;

/// A timer a body checks while it waits: fires after `every` of waiting for a frame
/// (or, when `every` is `None`, at a fixed deadline).
///
/// The timer itself is made at the first wait: most bodies are read whole as soon as
/// their head (a short answer arrives in the same read), and making a timer for each
/// of them cost two allocations and a clock read per request. An idle period
/// therefore runs from when the body first has to wait, then from each frame.
#[derive(Debug)]
pub struct Timer {
    kind: TimerKind,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug, Clone, Copy)]
enum TimerKind {
    /// After this long of waiting without a frame.
    Idle(std::time::Duration),
    /// At this instant.
    Deadline(tokio::time::Instant),
}

impl Timer {
    /// Fires when no frame came for `d` of waiting.
    pub fn idle(d: std::time::Duration) -> Timer {
        Timer { kind: TimerKind::Idle(d), sleep: None }
    }

    /// Fires `d` from now, whatever happens.
    pub fn deadline(d: std::time::Duration) -> Timer {
        Timer { kind: TimerKind::Deadline(tokio::time::Instant::now() + d), sleep: None }
    }

    /// After a poll of the body: whether the timer fired (only while it waits).
    fn fired<T>(timer: &mut Option<Timer>, frame: &Poll<T>, cx: &mut Context<'_>) -> bool {
        let Some(t) = timer.as_mut() else { return false };
        match (frame, t.kind) {
            (Poll::Pending, kind) => {
                let sleep = t.sleep.get_or_insert_with(|| {
                    Box::pin(match kind {
                        TimerKind::Idle(every) => tokio::time::sleep(every),
                        TimerKind::Deadline(at) => tokio::time::sleep_until(at),
                    })
                });
                sleep.as_mut().poll(cx).is_ready()
            }
            (Poll::Ready(_), TimerKind::Idle(every)) => {
                if let Some(sleep) = t.sleep.as_mut() {
                    sleep.as_mut().reset(tokio::time::Instant::now() + every);
                }
                false
            }
            (Poll::Ready(_), TimerKind::Deadline(_)) => false,
        }
    }
}

/// What stopped a request body on its way: 0 nothing, or one of the `STOPPED_*` values.
pub type Stopped = std::sync::Arc<std::sync::atomic::AtomicU8>;
/// Over its `payload_limits` size.
pub const STOPPED_TOO_LARGE: u8 = 1;
/// Not sent within the `upstream_connection` send timeout.
pub const STOPPED_SEND_TIMEOUT: u8 = 2;
/// The client sent it below the minimum data rate.
pub const STOPPED_TOO_SLOW: u8 = 3;
/// The client's body could not be read (bad chunked framing, a reset stream, a
/// connection closed before its end): the client's fault, not the backend's.
pub const STOPPED_UNREADABLE: u8 = 4;

/// A request body came below the minimum data rate.
#[derive(Debug, thiserror::Error)]
#[error("the client sent its body below the minimum data rate")]
pub struct TooSlow;

/// Counts a body's bytes against a limit: `Err` once it goes over.
fn cap(frame: &Result<Frame<Bytes>, BoxError>, left: &mut Option<u64>) -> bool {
    if let (Ok(f), Some(l)) = (frame, left.as_mut()) {
        let n = f.data_ref().map_or(0, |d| d.len() as u64);
        if n > *l {
            return true;
        }
        *l -= n;
    }
    false
}

pin_project_lite::pin_project! {
    /// A response body as the gateway sends it to a client: a backend's, or one the
    /// gateway made.
    // pin-project-lite takes no doc comment on a variant's fields.
    #[allow(missing_docs)]
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        /// A backend's body, passed through.
        Upstream { #[pin] body: PooledBody },
        /// A body the gateway made itself.
        Local { #[pin] body: Full<Bytes> },
        /// A backend's body that holds places (edge concurrency limits) until it ends
        /// or drops, and/or may carry at most `left` more bytes.
        Wrapped { #[pin] body: PooledBody, wrap: Box<Wrap> },
    }
}

/// What a wrapped backend body carries besides the body (boxed: most bodies have none).
#[derive(Debug, Default)]
pub struct Wrap {
    guards: Vec<Held>,
    left: Option<u64>,
    timer: Option<Timer>,
    report: Option<BrokenBodies>,
}

/// Where a backend's response body that fails after its head went out is reported:
/// the client can only see its response cut short (the status was sent), so the
/// operator hears of it here — `tollgate_upstream_errors_total` of the environment and
/// a warning naming the backend and the cause (at most one a second per cause).
#[derive(Debug, Clone)]
pub struct BrokenBodies {
    /// The process's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The environment whose `tollgate_upstream_errors_total` counts it.
    pub environment: crate::snapshot::Environment,
}

impl BrokenBodies {
    fn report(&self, body: &PooledBody, error: &(dyn std::error::Error + 'static)) {
        self.metrics.env(self.environment).upstream_error();
        let backend = body.backend().unwrap_or("the backend");
        let detail = format!(
            "{backend}: the response body failed after its head was sent (the client got it cut short): {}",
            crate::upstream::error_chain(error)
        );
        crate::logs::failures::record("upstream_body_failed", crate::refusal::Side::Upstream, &detail);
    }
}

impl GatewayBody {
    /// A body of `bytes`, made by the gateway.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Local { body: Full::new(bytes.into()) }
    }
    /// An empty body.
    pub fn empty() -> Self {
        GatewayBody::local(Bytes::new())
    }

    fn wrapped(self, change: impl FnOnce(&mut Wrap)) -> Self {
        match self {
            GatewayBody::Upstream { body } => {
                let mut wrap = Box::<Wrap>::default();
                change(&mut wrap);
                GatewayBody::Wrapped { body, wrap }
            }
            GatewayBody::Wrapped { body, mut wrap } => {
                change(&mut wrap);
                GatewayBody::Wrapped { body, wrap }
            }
            local => local,
        }
    }

    /// This body, keeping `guards` until it is done.
    pub fn holding(self, guards: Vec<Held>) -> Self {
        self.wrapped(|w| w.guards = guards)
    }

    /// This body, cut off with an error once it has carried more than `max` bytes.
    pub fn capped(self, max: u64) -> Self {
        self.wrapped(|w| w.left = Some(max))
    }

    /// This body, failed when the backend sends nothing for `idle`.
    pub fn idle_timeout(self, idle: std::time::Duration) -> Self {
        self.wrapped(|w| w.timer = Some(Timer::idle(idle)))
    }

    /// This body, reporting to `report` if it fails (the backend breaks it off, stalls
    /// past the read timeout, or sends more than the payload limit).
    pub fn reporting(self, report: BrokenBodies) -> Self {
        self.wrapped(|w| w.report = Some(report))
    }
}

pin_project_lite::pin_project! {
    /// A request body on its way to a backend, optionally size-limited.
    // pin-project-lite takes no doc comment on a variant's fields.
    #[allow(missing_docs)]
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        /// No body (a retried request's attempts).
        Empty,
        /// A body made by the gateway (spans for the trace collector).
        Bytes { #[pin] body: Full<Bytes> },
        /// A client's body, passed through without limits.
        Plain { #[pin] body: Incoming },
        /// A client's body read under limits, saying in `stopped` why it stopped.
        Read {
            #[pin] body: Incoming,
            left: Option<u64>,
            timer: Option<Timer>,
            pace: Option<BodyPace>,
            stopped: Stopped,
        },
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Plain { body }
    }
}

impl UpstreamBody {
    /// A body of `b`, made by the gateway.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        UpstreamBody::Bytes { body: Full::new(b.into()) }
    }

    /// `body`, failing (and saying why in `stopped`) once it carries more than `max`
    /// bytes, `timer` fires first, the client sends below `pace`'s rate, or the client's
    /// body cannot be read.
    pub fn limited(
        body: Incoming,
        max: Option<u64>,
        timer: Option<Timer>,
        pace: Option<BodyPace>,
        stopped: Stopped,
    ) -> Self {
        UpstreamBody::Read { body, left: max, timer, pace, stopped }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            UpstreamBodyProj::Empty => Poll::Ready(None),
            UpstreamBodyProj::Bytes { body } => body.poll_frame(cx).map_err(|never| match never {}),
            UpstreamBodyProj::Plain { body } => body.poll_frame(cx).map_err(Into::into),
            UpstreamBodyProj::Read { body, left, timer, pace, stopped } => {
                use std::sync::atomic::Ordering::Relaxed;
                let frame = body.poll_frame(cx).map_err(BoxError::from);
                if Timer::fired(timer, &frame, cx) {
                    stopped.store(STOPPED_SEND_TIMEOUT, Relaxed);
                    return Poll::Ready(Some(Err(Box::new(TimedOut))));
                }
                if let Some(pace) = pace {
                    let bytes = match &frame {
                        Poll::Ready(Some(Ok(f))) => f.data_ref().map_or(0, |d| d.len() as u64),
                        _ => 0,
                    };
                    if pace.check(frame.is_pending(), bytes, cx).is_ready() {
                        stopped.store(STOPPED_TOO_SLOW, Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooSlow))));
                    }
                }
                match &frame {
                    Poll::Ready(Some(Err(_))) => stopped.store(STOPPED_UNREADABLE, Relaxed),
                    Poll::Ready(Some(f)) if cap(f, left) => {
                        stopped.store(STOPPED_TOO_LARGE, Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    _ => {}
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Bytes { body } => body.is_end_stream(),
            UpstreamBody::Plain { body } | UpstreamBody::Read { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Bytes { body } => body.size_hint(),
            UpstreamBody::Plain { body } | UpstreamBody::Read { body, .. } => body.size_hint(),
        }
    }
}

impl From<PooledBody> for GatewayBody {
    fn from(body: PooledBody) -> Self {
        GatewayBody::Upstream { body }
    }
}

impl From<Incoming> for GatewayBody {
    fn from(body: Incoming) -> Self {
        GatewayBody::Upstream { body: PooledBody::unpooled(body) }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            GatewayBodyProj::Upstream { body } => body.poll_frame(cx).map_err(Into::into),
            GatewayBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
            GatewayBodyProj::Wrapped { mut body, wrap } => {
                let frame = body.as_mut().poll_frame(cx).map_err(BoxError::from);
                let failed: Option<BoxError> = if Timer::fired(&mut wrap.timer, &frame, cx) {
                    Some(Box::new(TimedOut))
                } else if let Poll::Ready(Some(f)) = &frame
                    && cap(f, &mut wrap.left)
                {
                    // Cut off: the client sees the response end abnormally.
                    Some(Box::new(TooLarge))
                } else {
                    None
                };
                let frame = match failed {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => frame,
                };
                if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    wrap.guards.clear();
                }
                if let (Poll::Ready(Some(Err(e))), Some(report)) = (&frame, &wrap.report) {
                    report.report(body.as_ref().get_ref(), e.as_ref());
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Upstream { body } | GatewayBody::Wrapped { body, .. } => body.is_end_stream(),
            GatewayBody::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Upstream { body } | GatewayBody::Wrapped { body, .. } => body.size_hint(),
            GatewayBody::Local { body } => body.size_hint(),
        }
    }
}
