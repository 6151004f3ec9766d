//! The response body type: either streamed from the backend or produced locally.
//! An enum rather than a boxed trait object keeps the proxied path allocation-free.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        Upstream { #[pin] body: Incoming },
        Local { #[pin] body: Full<Bytes> },
        /// A body that holds places (edge concurrency limits) until it ends or drops.
        Holding { #[pin] body: Incoming, guards: Vec<tollgate_counters::EdgeGuard> },
    }
}

impl GatewayBody {
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Local { body: Full::new(bytes.into()) }
    }
    pub fn empty() -> Self {
        GatewayBody::local(Bytes::new())
    }

    /// This body, keeping `guards` until it is done.
    pub fn holding(self, guards: Vec<tollgate_counters::EdgeGuard>) -> Self {
        match self {
            GatewayBody::Upstream { body } | GatewayBody::Holding { body, .. } => GatewayBody::Holding { body, guards },
            local => local,
        }
    }
}

impl From<Incoming> for GatewayBody {
    fn from(body: Incoming) -> Self {
        GatewayBody::Upstream { body }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            GatewayBodyProj::Upstream { body } => body.poll_frame(cx),
            GatewayBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
            GatewayBodyProj::Holding { body, guards } => {
                let frame = body.poll_frame(cx);
                if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    guards.clear();
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Upstream { body } | GatewayBody::Holding { body, .. } => body.is_end_stream(),
            GatewayBody::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Upstream { body } | GatewayBody::Holding { body, .. } => body.size_hint(),
            GatewayBody::Local { body } => body.size_hint(),
        }
    }
}
