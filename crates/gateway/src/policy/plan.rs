//! The request plan: what the policy chain decided about a request, as typed values the
//! proxy carries out — where the request goes, how it may be retried, the limits on its
//! bodies and on the wait for the backend, the edge limits to check, the places it
//! holds, and what a WebSocket session opened by it must know.
//!
//! Policies never write the plan's fields: a phase hands a [`Decision`] to
//! [`Context::decide`](super::Context::decide), and [`RequestPlan::apply`] is the one
//! place that says how decisions combine (the first route wins, the tightest body limit
//! wins, …). A policy with a new kind of decision adds one variant to [`Decision`] and
//! its rule to `apply`; the proxy reads the plan's fields and nothing else of what
//! policies did.

use super::rate_limit::EdgeRequest;
use super::retry::Retry;
use super::routing::Route;
use crate::upstream::body::Held;
use std::time::Duration;

/// One thing a policy decided about a request.
pub enum Decision {
    /// Send the request there (`upstream`, `routing`). The first route decided wins: a
    /// later policy cannot redirect a request an earlier one routed.
    Route(Route),
    /// The request may be sent again (`retry`; bodyless requests with idempotent
    /// methods only). The last decided wins.
    Retry(Retry),
    /// Check these edge limits after the access phase (`rate_limit`). All are checked,
    /// in the order decided.
    EdgeLimit(EdgeRequest),
    /// Largest request and response bodies, in bytes (`payload_limits`). The tightest
    /// of all decided wins, per direction.
    PayloadLimits {
        /// Largest request body in bytes; `None`: this policy sets none.
        request: Option<u64>,
        /// Largest response body in bytes; `None`: this policy sets none.
        response: Option<u64>,
    },
    /// How long the request may take to be sent to the backend and how long the
    /// backend may be silent (`upstream_connection`). Each one decided replaces the
    /// one before (a policy's over the gateway's default).
    Timeouts {
        /// Time to send the whole request; `None` leaves it as it was.
        send: Option<Duration>,
        /// Time for the response head, and between parts of its body; `None` leaves
        /// it as it was.
        read: Option<Duration>,
    },
    /// A WebSocket opened by this request closes at this time (Unix seconds): when the
    /// token that authorized it expires (`jwt`).
    SessionExpires(i64),
}

/// Largest bodies, in bytes; `None`: no limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Largest request body the backend is sent.
    pub request: Option<u64>,
    /// Largest response body the client is sent.
    pub response: Option<u64>,
}

/// Timeouts towards the backend; `None`: no limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Time to send the whole request (head and body).
    pub send: Option<Duration>,
    /// Time for the response head once the request is sent, and between two parts of
    /// the response body.
    pub read: Option<Duration>,
}

/// What the proxy carries out for a request (see the module's documentation).
#[derive(Default)]
pub struct RequestPlan {
    /// Where the request goes; `None`: the product's backend usage with the longest
    /// matching path prefix.
    pub route: Option<Route>,
    /// How it may be retried; `None`: sent once.
    pub retry: Option<Retry>,
    /// Edge limits still to check (the proxy takes them after the access phase).
    pub edge_limits: Vec<EdgeRequest>,
    /// Places taken under edge concurrency limiters, held until the response body ends
    /// (or the WebSocket closes). The proxy fills it.
    pub held: Vec<Held>,
    /// Largest request and response bodies.
    pub payload_limits: PayloadLimits,
    /// Timeouts towards the backend.
    pub timeouts: UpstreamTimeouts,
    /// When a WebSocket opened by this request must close (Unix seconds).
    pub session_expires: Option<i64>,
}

impl RequestPlan {
    /// Folds a decision into the plan, by the rule its [`Decision`] variant states.
    pub fn apply(&mut self, decision: Decision) {
        match decision {
            Decision::Route(route) => {
                self.route.get_or_insert(route);
            }
            Decision::Retry(retry) => self.retry = Some(retry),
            Decision::EdgeLimit(edge) => self.edge_limits.push(edge),
            Decision::PayloadLimits { request, response } => {
                let tighter = |a: Option<u64>, b: Option<u64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.payload_limits.request = tighter(self.payload_limits.request, request);
                self.payload_limits.response = tighter(self.payload_limits.response, response);
            }
            Decision::Timeouts { send, read } => {
                self.timeouts.send = send.or(self.timeouts.send);
                self.timeouts.read = read.or(self.timeouts.read);
            }
            Decision::SessionExpires(at) => self.session_expires = Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_combine_by_their_rules() {
        let mut plan = RequestPlan::default();
        plan.apply(Decision::PayloadLimits { request: Some(100), response: None });
        plan.apply(Decision::PayloadLimits { request: Some(500), response: Some(7) });
        assert_eq!(plan.payload_limits, PayloadLimits { request: Some(100), response: Some(7) }, "the tightest");
        plan.apply(Decision::Timeouts { send: None, read: Some(Duration::from_secs(60)) });
        plan.apply(Decision::Timeouts { send: Some(Duration::from_secs(1)), read: Some(Duration::from_secs(5)) });
        plan.apply(Decision::Timeouts { send: None, read: None });
        let want = UpstreamTimeouts { send: Some(Duration::from_secs(1)), read: Some(Duration::from_secs(5)) };
        assert_eq!(plan.timeouts, want, "each one decided replaces the one before; none keeps it");
        plan.apply(Decision::SessionExpires(10));
        assert_eq!(plan.session_expires, Some(10));
    }
}
