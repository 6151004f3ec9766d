//! One rescue: the only place where a [`Refusal`] becomes what the client, the log and
//! the metrics see — the response (status; the product's or policy's configured body,
//! else the JSON error shape `{"error":{"code","message"}}`; headers such as
//! `RateLimit-*`, `Retry-After`, `WWW-Authenticate`, `Connection: close`), one log line
//! (debug for the client's faults; a rate-limited warning naming the backend for
//! failures) and the environment's counters (`limits_exceeded`, `upstream_errors`).
//! Like linkerd2-proxy's rescue and axum's `IntoResponse`: code that refuses returns a
//! `Refusal`, and never builds a response itself.

use crate::metrics::EnvMetrics;
use crate::refusal::{ErrorTemplate, Refusal, Side};
use crate::upstream::body::GatewayBody;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tollgate_counters::LimitStatus;

/// The response for `refusal`, logged and counted in `metrics` (the environment's).
pub fn respond(refusal: Refusal, metrics: &EnvMetrics) -> Response<GatewayBody> {
    match refusal.side() {
        Side::Downstream => {
            tracing::debug!(code = refusal.code(), detail = refusal.detail().unwrap_or(""), "request refused")
        }
        side => failure_logs::record(refusal.code(), side, refusal.detail().unwrap_or("")),
    }
    if refusal.side() == Side::Upstream {
        metrics.upstream_error();
    }
    let mut resp = match &refusal {
        Refusal::AuthenticationMissing(a)
        | Refusal::AuthenticationFailed(a)
        | Refusal::NoMappingRule(a)
        | Refusal::Denied { answer: a, .. } => answer(a),
        Refusal::LimitsExceeded { answer: a, status, now } => {
            metrics.limits_exceeded();
            let mut resp = answer(a);
            rate_limit_headers(resp.headers_mut(), status, *now);
            resp
        }
        Refusal::EdgeLimited { answer: a, retry_after_secs } => {
            metrics.limits_exceeded();
            let mut resp = answer(a);
            if let Some(secs) = retry_after_secs {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from((*secs).max(1)));
            }
            resp
        }
        other => answer(&ErrorTemplate::json(other.status(), other.code(), &other.to_string())),
    };
    match &refusal {
        Refusal::BadUpgrade(_) => {
            resp.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        Refusal::TokenRefused { status: StatusCode::UNAUTHORIZED, .. } => {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    // A request the gateway could not frame or read one way (two Hosts, a body on an
    // upgrade…) ends its connection: what follows on it cannot be trusted either.
    if matches!(
        refusal,
        Refusal::BadRequest(_) | Refusal::BadUpgrade(_) | Refusal::RequestTimeout | Refusal::BadRequestBody(_)
    ) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A configured answer as a response.
fn answer(a: &ErrorTemplate) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::local(a.body.clone()));
    *resp.status_mut() = a.status;
    resp.headers_mut().insert(header::CONTENT_TYPE, a.content_type.clone());
    resp
}

/// `RateLimit-Limit/-Remaining/-Reset` and `Retry-After` (omitted for `eternity`), as
/// 3scale's APIcast sends them (draft-ietf-httpapi-ratelimit-headers).
fn rate_limit_headers(headers: &mut HeaderMap, status: &LimitStatus, now: i64) {
    headers.insert("ratelimit-limit", HeaderValue::from(status.max));
    headers.insert("ratelimit-remaining", HeaderValue::from(status.remaining()));
    if let Some(reset) = status.reset_at {
        let secs = (reset - now).max(0);
        headers.insert("ratelimit-reset", HeaderValue::from(secs));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// The warnings of failed requests (the backend's fault, or the gateway's), kept from
/// flooding the log. One line a second per code and detail (which names the backend and
/// the cause): a backend that is down fails every request, yet five backends with five
/// faults still get five lines. At most 128 details per code are told apart; past that,
/// a code's other details share one line a second. The lines left out are counted: the
/// next line of the same kind says how many (`suppressed`), and when no further failure
/// comes, a background thread writes the count within about a second, so a burst is
/// never under-reported in the log.
mod failure_logs {
    use super::Side;
    use crate::logs::LogLimit;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Details told apart per code.
    const MAX_DETAILS: usize = 128;

    #[derive(Default)]
    struct Failures {
        by_detail: HashMap<String, (LogLimit, Side)>,
        /// Details past [`MAX_DETAILS`].
        others: LogLimit,
    }

    /// By code (failures are few kinds; a short list beats a map).
    static FAILURES: Mutex<Vec<(&'static str, Failures)>> = Mutex::new(Vec::new());

    /// Logs one failed request, or counts it as left out.
    pub(super) fn record(code: &'static str, side: Side, detail: &str) {
        let admitted = {
            let mut all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
            let i = match all.iter().position(|(c, _)| *c == code) {
                Some(i) => i,
                None => {
                    all.push((code, Failures::default()));
                    all.len() - 1
                }
            };
            let failures = &mut all[i].1;
            // The lookup borrows the detail; a new one is copied once.
            if let Some((limit, _)) = failures.by_detail.get(detail) {
                limit.admit_now()
            } else if failures.by_detail.len() < MAX_DETAILS {
                failures.by_detail.entry(detail.to_string()).or_insert_with(|| (LogLimit::new(), side)).0.admit_now()
            } else {
                failures.others.admit_now()
            }
        };
        match admitted {
            Some(suppressed) => tracing::warn!(code, ?side, detail, suppressed, "request failed"),
            None => start_flusher(),
        }
    }

    /// Starts, once, the thread that writes the counts of lines left out when no later
    /// line of their kind came to carry them.
    fn start_flusher() {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let spawned = std::thread::Builder::new().name("tollgate-log-counts".into()).spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    flush();
                }
            });
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "could not start the thread that reports left-out log lines");
            }
        });
    }

    /// Writes a line for every kind with lines left out in an earlier second.
    fn flush() {
        let all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
        for (code, failures) in all.iter() {
            for (detail, (limit, side)) in &failures.by_detail {
                if let Some(suppressed) = limit.take_overdue_now() {
                    tracing::warn!(code, ?side, detail, suppressed, "request failed (repeats, counted)");
                }
            }
            if let Some(suppressed) = failures.others.take_overdue_now() {
                tracing::warn!(code, detail = "(other details)", suppressed, "request failed (repeats, counted)");
            }
        }
    }
}
