//! Soak (`--only soak`; not part of a run without `--only`, and a few seconds long
//! under `--smoke`): one `tollgate serve` under mixed HTTP and WebSocket load at half of
//! its measured capacity for `--soak-minutes` (30 by default), a SIGHUP reload every
//! minute, and a sample every ten seconds of what would show a leak or a slow decay:
//! resident memory, open file descriptors and p99 latency.
//!
//! **Capacity** is measured first, on the same process, for each of three kinds of
//! load alone: HTTP requests/s with full governance (wrk, `full.localhost`: key, 20
//! mapping rules, limits), WebSocket messages/s (ping-pong of 64 bytes, metering
//! every message, `metered.localhost`) and WebSocket sessions/s (connect, upgrade with
//! key authentication, one echo, close). **Half the capacity** is then each kind at a
//! sixth of its own capacity, run together, so that the shares add up to one half.
//!
//! The load is open-loop: every request and message has a scheduled time, and its
//! latency counts from that time, so a stall shows in p99 instead of slowing the load
//! down (no coordinated omission). The long-lived WebSockets stay open for the whole
//! soak; one that closes or fails is a dropped WebSocket. Any failed request, message
//! or session is an error, counted and its first messages kept.
//!
//! The result is the samples, the slopes of memory, descriptors and p99 over the soak
//! after its first tenth (least squares, per hour), and a plot (SVG, by `plotters`).

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::peers::{Backends, tollgate_config};
use crate::scale::{Serving, resident_kib};
use crate::ws::{self, Target};
use crate::{http as wrk, report};

/// How long, how often, and how many connections carry the load.
#[derive(Debug, Clone)]
pub struct Plan {
    pub duration: Duration,
    /// Between two samples.
    pub sample_every: Duration,
    /// Between two SIGHUP reloads.
    pub reload_every: Duration,
    /// Length of each capacity measure.
    pub capacity_turn: Duration,
    /// Kept-alive HTTP connections carrying the requests.
    pub http_connections: usize,
    /// Long-lived WebSockets carrying the messages.
    pub ws_sessions: usize,
    /// Concurrent loops opening and closing sessions.
    pub churn_loops: usize,
}

/// Requests, messages and sessions per second: a capacity, or the load's rates.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub http: f64,
    pub messages: f64,
    pub sessions: f64,
}

/// What the soak saw in one sample interval (latencies in µs; counts in the interval
/// unless said otherwise).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_s: f64,
    pub resident_kib: u64,
    pub open_files: usize,
    pub http_requests: u64,
    pub http_p99_us: f64,
    pub messages: u64,
    pub message_p99_us: f64,
    pub sessions: u64,
    pub session_p99_us: f64,
    /// Since the start.
    pub errors: u64,
    pub reloads: u64,
}

/// A soak's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    pub capacity: Rates,
    pub load: Rates,
    pub samples: Vec<Sample>,
    pub errors: u64,
    /// The first errors' messages (at most 20).
    pub first_errors: Vec<String>,
    pub dropped_websockets: u64,
    pub reload_ms: Vec<f64>,
    pub totals: (u64, u64, u64),
}

/// Counters shared by the load's tasks; the histograms are emptied at each sample.
struct Stats {
    http: Mutex<Histogram<u64>>,
    messages: Mutex<Histogram<u64>>,
    sessions: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    dropped: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    totals: [AtomicU64; 3],
}

impl Stats {
    fn new() -> Self {
        Stats {
            http: Mutex::new(histogram()),
            messages: Mutex::new(histogram()),
            sessions: Mutex::new(histogram()),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
            totals: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 20 {
            first.push(format!("{what}: {e}"));
        }
    }

    fn record(&self, kind: usize, scheduled: Instant) {
        let us = scheduled.elapsed().as_micros() as u64;
        let h = [&self.http, &self.messages, &self.sessions][kind];
        h.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(us);
        self.totals[kind].fetch_add(1, Ordering::Relaxed);
    }

    /// The interval's (count, p99) of one kind, emptying its histogram.
    fn take(&self, kind: usize) -> (u64, f64) {
        let h = [&self.http, &self.messages, &self.sessions][kind];
        let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
        let out = (h.len(), if h.is_empty() { 0.0 } else { h.value_at_quantile(0.99) as f64 });
        h.reset();
        out
    }
}

const HTTP: usize = 0;
const MESSAGES: usize = 1;
const SESSIONS: usize = 2;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs the soak against a `tollgate serve` of the bench's products (`peers`), started
/// here with the configuration in `dir`.
pub async fn run(dir: &Path, backends: Backends, plan: &Plan) -> Result<Outcome> {
    let file = dir.join("soak.yaml");
    std::fs::write(&file, tollgate_config(backends))?;
    let (mut serving, _) = Serving::start(&file).await?;
    let pid = serving.pid()?;
    let http_url = format!("http://{}/v1/items/42?user_key=bench-key", serving.staging);
    let metered =
        Target { addr: serving.staging, host: "metered.localhost".into(), path: "/?user_key=bench-key".into() };

    eprintln!("soak: measuring capacity ({:?} per kind)", plan.capacity_turn);
    let load = wrk::Load {
        url: &http_url,
        host: "full.localhost",
        connections: plan.http_connections.max(8) * 3,
        duration: plan.capacity_turn,
        close: false,
    };
    let http_capacity = wrk::wrk(&load).await.context("capacity: HTTP")?.rate;
    let messages = ws::ping_pong(&metered, plan.ws_sessions, 64, plan.capacity_turn, u64::MAX)
        .await
        .context("capacity: WebSocket messages")?;
    let sessions = ws::handshakes(&metered, plan.churn_loops * 2, plan.capacity_turn, 1_000_000)
        .await
        .context("capacity: WebSocket sessions")?;
    let capacity = Rates { http: http_capacity, messages: messages.rate(), sessions: sessions.rate() };
    let load =
        Rates { http: capacity.http / 6.0, messages: capacity.messages / 6.0, sessions: capacity.sessions / 6.0 };
    eprintln!("soak: capacity {capacity:?}; load {load:?} for {:?}", plan.duration);

    let stats = Arc::new(Stats::new());
    let started = Instant::now();
    let until = started + plan.duration;
    let mut tasks = Vec::new();
    for i in 0..plan.http_connections {
        let (stats, addr, url) = (stats.clone(), serving.staging, http_url.clone());
        let first =
            started + per(load.http / plan.http_connections as f64).mul_f64(i as f64 / plan.http_connections as f64);
        let every = per(load.http / plan.http_connections as f64);
        tasks.push(tokio::spawn(http_loop(addr, url, first, every, until, stats)));
    }
    // Long-lived sessions are opened before the clock starts for them.
    let every = per(load.messages / plan.ws_sessions as f64);
    for i in 0..plan.ws_sessions {
        let (stats, t) = (stats.clone(), metered.clone());
        let first = started + every.mul_f64(i as f64 / plan.ws_sessions as f64);
        tasks.push(tokio::spawn(message_loop(t, first, every, until, stats)));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let every = per(load.sessions / plan.churn_loops as f64);
    for i in 0..plan.churn_loops {
        let (stats, t, next) = (stats.clone(), metered.clone(), next.clone());
        let first = started + every.mul_f64(i as f64 / plan.churn_loops as f64);
        tasks.push(tokio::spawn(churn_loop(t, first, every, until, next, stats)));
    }

    let mut samples = Vec::new();
    let mut reload_ms = Vec::new();
    let mut sampling = tokio::time::interval_at((started + plan.sample_every).into(), plan.sample_every);
    let mut reloading = tokio::time::interval_at((started + plan.reload_every).into(), plan.reload_every);
    loop {
        tokio::select! {
            at = sampling.tick() => {
                let (http_requests, http_p99_us) = stats.take(HTTP);
                let (messages, message_p99_us) = stats.take(MESSAGES);
                let (sessions, session_p99_us) = stats.take(SESSIONS);
                let sample = Sample {
                    at_s: (at.into_std() - started).as_secs_f64(),
                    resident_kib: resident_kib(pid)?,
                    open_files: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
                    http_requests,
                    http_p99_us,
                    messages,
                    message_p99_us,
                    sessions,
                    session_p99_us,
                    errors: stats.errors.load(Ordering::Relaxed),
                    reloads: reload_ms.len() as u64,
                };
                eprintln!(
                    "soak: {:>6.0} s  {:>6} KiB  {:>5} files  http {:>6}/p99 {:>7.2} ms  messages {:>6}/p99 {:>7.2} ms  sessions {:>5}/p99 {:>7.2} ms  errors {}",
                    sample.at_s, sample.resident_kib, sample.open_files, sample.http_requests, sample.http_p99_us / 1e3,
                    sample.messages, sample.message_p99_us / 1e3, sample.sessions, sample.session_p99_us / 1e3, sample.errors
                );
                samples.push(sample);
                if at.into_std() + plan.sample_every > until {
                    break;
                }
            }
            _ = reloading.tick() => {
                // Rewritten (the same products) so the reload reads and compiles a file.
                std::fs::write(&file, tollgate_config(backends))?;
                reload_ms.push(serving.reload().await?.as_secs_f64() * 1e3);
            }
        }
    }
    let overrun = plan.duration + Duration::from_secs(60);
    for task in tasks {
        tokio::time::timeout(overrun, task)
            .await
            .map_err(|_| anyhow!("a load task overran the soak by 60 s"))?
            .map_err(|e| anyhow!("a load task failed: {e}"))?;
    }
    let first_errors = stats.first_errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let totals = (
        stats.totals[HTTP].load(Ordering::Relaxed),
        stats.totals[MESSAGES].load(Ordering::Relaxed),
        stats.totals[SESSIONS].load(Ordering::Relaxed),
    );
    Ok(Outcome {
        plan: plan.clone(),
        capacity,
        load,
        samples,
        errors: stats.errors.load(Ordering::Relaxed),
        first_errors,
        dropped_websockets: stats.dropped.load(Ordering::Relaxed),
        reload_ms,
        totals,
    })
}

/// The interval between two events at `rate` per second (at most an hour).
fn per(rate: f64) -> Duration {
    Duration::from_secs_f64(if rate > 0.0 { (1.0 / rate).min(3600.0) } else { 3600.0 })
}

/// One kept-alive HTTP/1.1 connection sending `GET url` at `first`, `first + every`, …
/// until `until`; reconnects after a failure (which is counted).
async fn http_loop(addr: SocketAddr, url: String, first: Instant, every: Duration, until: Instant, stats: Arc<Stats>) {
    let uri: ::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return stats.error("http", e),
    };
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut sender: Option<hyper::client::conn::http1::SendRequest<String>> = None;
    let mut scheduled = first;
    while scheduled < until {
        tokio::time::sleep_until(scheduled.into()).await;
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                sender = Some(s);
            }
            let s = sender.as_mut().context("no connection")?;
            s.ready().await?;
            let req = ::http::Request::get(path.as_str()).header("host", "full.localhost").body(String::new())?;
            let response = s.send_request(req).await?;
            let status = response.status();
            response.into_body().collect().await?;
            if status != ::http::StatusCode::OK {
                bail!("status {status}");
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        match result {
            Ok(Ok(())) => stats.record(HTTP, scheduled),
            Ok(Err(e)) => {
                sender = None;
                stats.error("http", e);
            }
            Err(_) => {
                sender = None;
                stats.error("http", "no response within 10 s");
            }
        }
        scheduled += every;
    }
}

/// One long-lived WebSocket sending a 64-byte message at `first`, `first + every`, …
/// and waiting for its echo; closes it at `until`. A session that fails is a dropped
/// WebSocket (and an error), replaced by a new one.
async fn message_loop(t: Target, first: Instant, every: Duration, until: Instant, stats: Arc<Stats>) {
    let payload = Bytes::from(vec![7u8; 64]);
    let mut scheduled = first;
    let mut socket = None;
    while scheduled < until {
        tokio::time::sleep_until(scheduled.into()).await;
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            if socket.is_none() {
                socket = Some(ws::connect(&t, None).await.context("connect")?);
            }
            let ws = socket.as_mut().context("no session")?;
            ws.send(Message::Binary(payload.clone())).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b.len() == 64 => return Ok(()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => bail!("unexpected: {other:?}"),
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => stats.record(MESSAGES, scheduled),
            Ok(Err(e)) => {
                if socket.take().is_some() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                stats.error("websocket message", e);
            }
            Err(_) => {
                if socket.take().is_some() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                stats.error("websocket message", "no echo within 10 s");
            }
        }
        scheduled += every;
    }
    if let Some(mut ws) = socket {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            ws.close(None).await?;
            while let Some(m) = ws.next().await {
                m?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => stats.error("websocket close", e),
            Err(_) => stats.error("websocket close", "no close within 10 s"),
        }
    }
}

/// Opens a session at `first`, `first + every`, … (connect from a fresh source
/// address, upgrade with the key, one 32-byte echo, close) until `until`.
async fn churn_loop(
    t: Target,
    first: Instant,
    every: Duration,
    until: Instant,
    next: Arc<AtomicUsize>,
    stats: Arc<Stats>,
) {
    let mut scheduled = first;
    while scheduled < until {
        tokio::time::sleep_until(scheduled.into()).await;
        let i = next.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(Duration::from_secs(10), ws::session(&t, i)).await;
        match result {
            Ok(Ok(())) => stats.record(SESSIONS, scheduled),
            Ok(Err(e)) => stats.error("websocket session", e),
            Err(_) => stats.error("websocket session", "not done within 10 s"),
        }
        scheduled += every;
    }
}

/// Least-squares slope of `y` against `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The samples after the soak's first tenth (the warm-up), at least two.
fn steady(samples: &[Sample]) -> &[Sample] {
    let skip = (samples.len() / 10).min(samples.len().saturating_sub(2));
    &samples[skip..]
}

/// Slopes per hour over the steady samples: resident MB, open files, HTTP p99 ms,
/// message p99 ms.
pub fn slopes(samples: &[Sample]) -> [f64; 4] {
    let s = steady(samples);
    let hours = |f: &dyn Fn(&Sample) -> f64| slope(&s.iter().map(|x| (x.at_s / 3600.0, f(x))).collect::<Vec<_>>());
    [
        hours(&|x| x.resident_kib as f64 / 1024.0),
        hours(&|x| x.open_files as f64),
        hours(&|x| x.http_p99_us / 1e3),
        hours(&|x| x.message_p99_us / 1e3),
    ]
}

/// The outcome as Markdown.
pub fn markdown(o: &Outcome) -> String {
    let s = &o.samples;
    let mean = |f: &dyn Fn(&Sample) -> f64, part: &[Sample]| part.iter().map(f).sum::<f64>() / part.len().max(1) as f64;
    let steady = steady(s);
    let quarter = (steady.len() / 4).max(1);
    let (head, tail) = (&steady[..quarter.min(steady.len())], &steady[steady.len().saturating_sub(quarter)..]);
    let [rss, files, http_p99, message_p99] = slopes(s);
    let mut out = format!(
        "### Soak: {} of mixed load at half capacity, a reload every {:.0} s\n\n\
         Capacity of this process alone, per kind: {} HTTP requests/s (full governance), {} WebSocket messages/s \
         (64 B, metered), {} WebSocket sessions/s. Load, each kind at a sixth of it, together: {} requests/s over {} \
         connections, {} messages/s over {} long-lived WebSockets, {} sessions/s.\n\n\
         - Done: {} requests, {} messages, {} sessions; **{} errors**, **{} dropped WebSockets**; {} reloads \
         (median {:.0} ms, longest {:.0} ms).\n",
        length(o.plan.duration),
        o.plan.reload_every.as_secs_f64(),
        report::thousands(o.capacity.http),
        report::thousands(o.capacity.messages),
        report::thousands(o.capacity.sessions),
        report::thousands(o.load.http),
        o.plan.http_connections,
        report::thousands(o.load.messages),
        o.plan.ws_sessions,
        report::thousands(o.load.sessions),
        o.totals.0,
        o.totals.1,
        o.totals.2,
        o.errors,
        o.dropped_websockets,
        o.reload_ms.len(),
        report::median(&o.reload_ms),
        o.reload_ms.iter().copied().fold(0.0, f64::max),
    );
    for e in &o.first_errors {
        let _ = writeln!(out, "  - {e}");
    }
    let _ = writeln!(
        out,
        "\n| after the first tenth | first quarter (mean) | last quarter (mean) | slope (least squares) |\n|---|---|---|---|"
    );
    type Row<'a> = (&'a str, &'a dyn Fn(&Sample) -> f64, f64, &'a str);
    let rows: [Row<'_>; 5] = [
        ("resident memory (MB)", &|x| x.resident_kib as f64 / 1024.0, rss, "MB per hour"),
        ("open files", &|x| x.open_files as f64, files, "per hour"),
        ("HTTP p99 (ms)", &|x| x.http_p99_us / 1e3, http_p99, "ms per hour"),
        ("message p99 (ms)", &|x| x.message_p99_us / 1e3, message_p99, "ms per hour"),
        ("session p99 (ms)", &|x| x.session_p99_us / 1e3, f64::NAN, ""),
    ];
    for (name, f, slope, unit) in rows {
        let slope = if slope.is_nan() { "–".to_string() } else { format!("{slope:+.2} {unit}") };
        let _ = writeln!(out, "| {name} | {:.2} | {:.2} | {slope} |", mean(f, head), mean(f, tail));
    }
    out
}

/// `30 minutes`, or `3 s` for a smoke run.
fn length(d: Duration) -> String {
    if d >= Duration::from_secs(60) {
        format!("{:.0} minutes", d.as_secs_f64() / 60.0)
    } else {
        format!("{:.0} s", d.as_secs_f64())
    }
}

/// The outcome as JSON, every sample included.
pub fn json(o: &Outcome) -> serde_json::Value {
    let [rss, files, http_p99, message_p99] = slopes(&o.samples);
    serde_json::json!({
        "minutes": o.plan.duration.as_secs_f64() / 60.0,
        "reload_every_s": o.plan.reload_every.as_secs_f64(),
        "capacity": { "http_per_s": o.capacity.http, "messages_per_s": o.capacity.messages, "sessions_per_s": o.capacity.sessions },
        "load": { "http_per_s": o.load.http, "messages_per_s": o.load.messages, "sessions_per_s": o.load.sessions },
        "totals": { "requests": o.totals.0, "messages": o.totals.1, "sessions": o.totals.2 },
        "errors": o.errors,
        "first_errors": o.first_errors,
        "dropped_websockets": o.dropped_websockets,
        "reload_ms": o.reload_ms,
        "slopes_per_hour": { "resident_mb": rss, "open_files": files, "http_p99_ms": http_p99, "message_p99_ms": message_p99 },
        "samples": o.samples.iter().map(|x| serde_json::json!({
            "at_s": x.at_s, "resident_kib": x.resident_kib, "open_files": x.open_files,
            "http_requests": x.http_requests, "http_p99_us": x.http_p99_us,
            "messages": x.messages, "message_p99_us": x.message_p99_us,
            "sessions": x.sessions, "session_p99_us": x.session_p99_us,
            "errors": x.errors, "reloads": x.reloads,
        })).collect::<Vec<_>>(),
    })
}

/// Plots the samples to `path` (SVG): resident memory, open files and p99 latencies
/// against minutes.
pub fn plot(o: &Outcome, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let s = &o.samples;
    if s.len() < 2 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 3));
    let end = s[s.len() - 1].at_s / 60.0;
    type Line<'a> = (&'a str, RGBColor, &'a dyn Fn(&Sample) -> f64);
    let draw = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                title: &str,
                unit: &str,
                lines: &[Line<'_>]|
     -> Result<()> {
        let top = s.iter().flat_map(|x| lines.iter().map(move |l| (l.2)(x))).fold(0.0, f64::max).max(1e-3) * 1.3;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(|e| anyhow!("{e}"))?;
        chart.configure_mesh().x_desc("minutes").y_desc(unit).draw().map_err(|e| anyhow!("{e}"))?;
        for (name, color, f) in lines {
            let color = *color;
            chart
                .draw_series(LineSeries::new(s.iter().map(|x| (x.at_s / 60.0, f(x))), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    };
    draw(&panels[0], "Resident memory", "MB", &[("tollgate", BLUE, &|x| x.resident_kib as f64 / 1024.0)])?;
    draw(&panels[1], "Open files", "descriptors", &[("tollgate", BLUE, &|x| x.open_files as f64)])?;
    draw(
        &panels[2],
        "p99 latency per sample",
        "ms",
        &[
            ("HTTP request", BLUE, &|x| x.http_p99_us / 1e3),
            ("WebSocket message", RED, &|x| x.message_p99_us / 1e3),
            ("WebSocket session", GREEN, &|x| x.session_p99_us / 1e3),
        ],
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, kib: u64) -> Sample {
        Sample {
            at_s,
            resident_kib: kib,
            open_files: 40,
            http_requests: 100,
            http_p99_us: 900.0,
            messages: 100,
            message_p99_us: 800.0,
            sessions: 10,
            session_p99_us: 2000.0,
            errors: 0,
            reloads: 0,
        }
    }

    #[test]
    fn slopes_are_per_hour_and_skip_the_warm_up() {
        // 1 MB more every 6 minutes after a warm-up jump: 10 MB per hour.
        let mut samples: Vec<Sample> = (0..30).map(|i| sample(i as f64 * 360.0, 100 * 1024 + i * 1024)).collect();
        samples[0].resident_kib = 1024;
        samples[1].resident_kib = 1024;
        let [rss, files, http, _] = slopes(&samples);
        assert!((rss - 10.0).abs() < 1e-9, "{rss}");
        assert!(files.abs() < 1e-9 && http.abs() < 1e-9, "{files} {http}");
    }

    #[test]
    fn a_report_and_a_plot_show_every_series() {
        let o = Outcome {
            plan: Plan {
                duration: Duration::from_secs(120),
                sample_every: Duration::from_secs(10),
                reload_every: Duration::from_secs(60),
                capacity_turn: Duration::from_secs(5),
                http_connections: 8,
                ws_sessions: 50,
                churn_loops: 4,
            },
            capacity: Rates { http: 12_000.0, messages: 30_000.0, sessions: 1_800.0 },
            load: Rates { http: 2_000.0, messages: 5_000.0, sessions: 300.0 },
            samples: (0..12).map(|i| sample(i as f64 * 10.0, 50_000)).collect(),
            errors: 1,
            first_errors: vec!["http: status 503".into()],
            dropped_websockets: 0,
            reload_ms: vec![9.0, 11.0],
            totals: (240_000, 600_000, 36_000),
        };
        let md = markdown(&o);
        for part in
            ["**1 errors**", "**0 dropped WebSockets**", "http: status 503", "+0.00 MB per hour", "median 10 ms"]
        {
            assert!(md.contains(part), "{part} missing from\n{md}");
        }
        let dir = std::env::temp_dir().join(format!("tollgate-soak-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("soak.svg");
        plot(&o, &path).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("svg");
        let _ = std::fs::remove_dir_all(&dir);
        for label in ["Resident memory", "Open files", "HTTP request", "WebSocket message", "WebSocket session"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert_eq!(json(&o)["samples"].as_array().map(Vec::len), Some(12));
    }
}
