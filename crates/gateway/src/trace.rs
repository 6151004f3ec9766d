//! Distributed tracing: W3C Trace Context in and out, spans exported with OTLP/HTTP
//! (JSON encoding) to the collector the standard variables name.
//!
//! Configured by the OpenTelemetry environment variables, so it fits any collector:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (a full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (`/v1/traces` appended), `OTEL_SERVICE_NAME` (default `tollgate`),
//! `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio`,
//! `parentbased_always_on` — the default —, `parentbased_traceidratio`) with
//! `OTEL_TRACES_SAMPLER_ARG`, and `OTEL_SDK_DISABLED=true`. Without an endpoint nothing
//! is traced and the request path does no tracing work.
//!
//! Each request traced gives a server span `request` with children `rewrite`,
//! `access`, `limits`, `upstream` (a client span; the backend gets a `traceparent`
//! naming it as parent) and `response`. Spans are handed to a bounded queue and sent in
//! batches by one background task; when the collector is slow or away, spans are
//! dropped (and counted), never requests delayed.

use crate::upstream::Upstream;
use crate::upstream::body::UpstreamBody;
use http::{HeaderValue, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The trace a request belongs to, and its server span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCtx {
    /// The trace's id.
    pub trace_id: [u8; 16],
    /// The request's server span.
    pub span_id: [u8; 8],
    /// The caller's span, when the request came with a `traceparent`.
    pub parent: Option<[u8; 8]>,
}

/// A span attribute's value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A finished span, ready to export.
#[derive(Debug, Clone)]
pub struct Span {
    /// The trace's id.
    pub trace_id: [u8; 16],
    /// The span's id.
    pub span_id: [u8; 8],
    /// The parent span, if any.
    pub parent: Option<[u8; 8]>,
    /// The span's name, e.g. `request` or `upstream`.
    pub name: &'static str,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: u8,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Attributes, by OpenTelemetry semantic-convention name.
    pub attrs: Vec<(&'static str, Attr)>,
    /// Whether the span failed (a 5xx answer, for `request`).
    pub error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sampler {
    Always(bool),
    Ratio(f64),
    ParentBased(f64),
}

/// Samples requests and queues their spans for a background exporter (OTLP/HTTP JSON).
pub struct Tracer {
    sampler: Sampler,
    queue: mpsc::Sender<Span>,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("sampler", &self.sampler).finish_non_exhaustive()
    }
}

/// Unix time in nanoseconds (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// `00-TRACEID-SPANID-FLAGS`: (trace id, parent span id, sampled). All-zero ids and
/// version `ff` are invalid, as the specification says.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace: [u8; 16] = unhex(trace)?;
    let span: [u8; 8] = unhex(span)?;
    let flags: [u8; 1] = unhex(flags)?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((trace, span, flags[0] & 1 == 1))
}

/// A `traceparent` header value (version 00, sampled) naming `span` of `trace`.
pub fn traceparent(trace: &[u8; 16], span: &[u8; 8]) -> HeaderValue {
    HeaderValue::from_str(&format!("00-{}-{}-01", hex::encode(trace), hex::encode(span)))
        .unwrap_or(HeaderValue::from_static(""))
}

impl Tracer {
    /// A tracer from the OTEL_* variables (`None`: tracing is off), with its exporter
    /// task. Call inside a Tokio runtime.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Arc<Tracer>>, String> {
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) if !e.is_empty() => e,
            (_, Some(e)) if !e.is_empty() => format!("{}/v1/traces", e.trim_end_matches('/')),
            _ => return Ok(None),
        };
        // The exporter speaks OTLP/HTTP with the JSON encoding (every collector accepts it
        // on port 4318); another protocol asked for is an error, not a silent switch.
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = get(var).filter(|p| !p.is_empty() && p != "http/json") {
                return Err(format!(
                    "{var} `{p}`: Tollgate exports OTLP over http/json only; set http/json or unset it"
                ));
            }
        }
        let arg = get("OTEL_TRACES_SAMPLER_ARG").and_then(|a| a.parse::<f64>().ok()).unwrap_or(1.0).clamp(0.0, 1.0);
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref().unwrap_or("parentbased_always_on") {
            "always_on" => Sampler::Always(true),
            "always_off" => Sampler::Always(false),
            "traceidratio" => Sampler::Ratio(arg),
            "parentbased_always_on" => Sampler::ParentBased(1.0),
            "parentbased_traceidratio" => Sampler::ParentBased(arg),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER `{other}`: use always_on, always_off, traceidratio, parentbased_always_on or parentbased_traceidratio"
                ));
            }
        };
        let service = get("OTEL_SERVICE_NAME").filter(|s| !s.is_empty()).unwrap_or_else(|| "tollgate".into());
        let base = tollgate_model::BaseUrl::parse(&endpoint, &["http", "https"])
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}`: {e}"))?;
        let upstream = Upstream::new(&endpoint, base, &tollgate_model::BackendTls::default(), Duration::from_secs(5))
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}`: {e}"))?;
        let (queue, spans) = mpsc::channel(8192);
        let tracer = Arc::new(Tracer { sampler, queue, dropped: AtomicU64::new(0) });
        tokio::spawn(export(spans, upstream, service));
        Ok(Some(tracer))
    }

    /// A random non-zero id (W3C Trace Context forbids all-zero ids).
    fn next_u64(&self) -> u64 {
        rand::random::<u64>().max(1)
    }

    /// A new random span id, never all zeros.
    pub fn span_id(&self) -> [u8; 8] {
        self.next_u64().to_be_bytes()
    }

    /// The trace context of a request (from its `traceparent`, or a new trace), or
    /// `None` when it is not sampled.
    pub fn start(&self, traceparent: Option<&HeaderValue>) -> Option<TraceCtx> {
        let incoming = traceparent.and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        let sampled = |trace_id: &[u8; 16], ratio: f64| {
            // The low 8 bytes of the trace id as a uniform draw (the W3C random part).
            let x = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8])) as f64 / u64::MAX as f64;
            x < ratio
        };
        let (trace_id, parent) = match incoming {
            Some((t, p, _)) => (t, Some(p)),
            None => {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&self.next_u64().to_be_bytes());
                t[8..].copy_from_slice(&self.next_u64().to_be_bytes());
                (t, None)
            }
        };
        let keep = match (self.sampler, incoming) {
            (Sampler::Always(on), _) => on,
            (Sampler::Ratio(r), _) => sampled(&trace_id, r),
            (Sampler::ParentBased(_), Some((_, _, flag))) => flag,
            (Sampler::ParentBased(r), None) => sampled(&trace_id, r),
        };
        keep.then(|| TraceCtx { trace_id, span_id: self.span_id(), parent })
    }

    /// Queues `span` for export; drops it (and counts it in `dropped`) when the queue is
    /// full.
    pub fn record(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn otlp_json(spans: &[Span], service: &str) -> serde_json::Value {
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let attrs: Vec<serde_json::Value> = s
                .attrs
                .iter()
                .map(|(k, v)| match v {
                    Attr::Str(x) => serde_json::json!({ "key": k, "value": { "stringValue": x } }),
                    Attr::Int(x) => serde_json::json!({ "key": k, "value": { "intValue": x.to_string() } }),
                })
                .collect();
            let mut span = serde_json::json!({
                "traceId": hex::encode(s.trace_id),
                "spanId": hex::encode(s.span_id),
                "name": s.name,
                "kind": s.kind,
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": attrs,
                "status": { "code": if s.error { 2 } else { 0 } },
            });
            if let Some(p) = &s.parent {
                span["parentSpanId"] = hex::encode(p).into();
            }
            span
        })
        .collect();
    serde_json::json!({ "resourceSpans": [ {
        "resource": { "attributes": [ { "key": "service.name", "value": { "stringValue": service } } ] },
        "scopeSpans": [ { "scope": { "name": "tollgate", "version": env!("CARGO_PKG_VERSION") }, "spans": spans } ]
    } ] })
}

/// Sends spans in batches (up to 512, or whatever a second gathered).
async fn export(mut spans: mpsc::Receiver<Span>, upstream: Upstream, service: String) {
    let mut batch = Vec::with_capacity(512);
    loop {
        let first = match spans.recv().await {
            Some(s) => s,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while batch.len() < 512 {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let body = otlp_json(&batch, &service).to_string();
        batch.clear();
        // The endpoint's path is the upstream's base path.
        let Ok(uri) = upstream.uri("", None) else { continue };
        let req =
            http::Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(UpstreamBody::bytes(body));
        let Ok(req) = req else { continue };
        match tokio::time::timeout(Duration::from_secs(10), upstream.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => tracing::debug!(status = %resp.status(), "the trace collector refused spans"),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot send spans to the trace collector"),
            Err(_) => tracing::debug!("the trace collector did not answer in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[tokio::test]
    async fn the_otel_variables_configure_or_refuse() {
        assert!(Tracer::from_env(env(&[])).expect("no endpoint").is_none(), "off without an endpoint");
        let on = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert!(Tracer::from_env(env(on)).expect("valid").is_some());
        let disabled = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_SDK_DISABLED", "true")];
        assert!(Tracer::from_env(env(disabled)).expect("valid").is_none());
        let grpc = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(Tracer::from_env(env(grpc)).expect_err("grpc").contains("http/json only"));
        let sampler = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"), ("OTEL_TRACES_SAMPLER", "sometimes")];
        assert!(Tracer::from_env(env(sampler)).expect_err("sampler").contains("OTEL_TRACES_SAMPLER"));
        let off = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_TRACES_SAMPLER", "always_off")];
        let t = Tracer::from_env(env(off)).expect("valid").expect("on");
        assert!(t.start(None).is_none(), "always_off samples nothing");
        let parent = http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let t = Tracer::from_env(env(on)).expect("valid").expect("on");
        assert!(t.start(Some(&parent)).is_none(), "parent-based: the caller did not sample");
        assert!(t.start(None).is_some(), "parent-based: a new trace is sampled");
    }

    #[test]
    fn traceparent_round_trips_and_rejects_invalid_ones() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, s, sampled) = parse_traceparent(v).expect("valid");
        assert!(sampled);
        assert_eq!(traceparent(&t, &s).to_str().ok(), Some(v));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        let (_, _, sampled) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!sampled);
    }
}
