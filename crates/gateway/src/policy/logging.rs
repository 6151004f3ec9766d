//! The `logging` policy: one access-log line per request of the product, as JSON or
//! plain text, with chosen fields, to stdout or a file.
//!
//! ```yaml
//! - name: logging
//!   configuration:
//!     format: json                     # or text (fields separated by spaces)
//!     fields: [time, remote_addr, method, path, status, application, duration_ms]
//!     file: /var/log/tollgate/api.log  # default: stdout
//! ```
//!
//! Fields: `time` (RFC 3339, UTC), `remote_addr`, `host`, `method`, `path`, `query`,
//! `status`, `application` (id, when identified), `plan`, `user_agent`, `referer`,
//! `request_id` (X-Request-Id), `duration_ms` (until the response head), `product`,
//! `websocket`. The default is every field but `query` (which may hold credentials).
//! A file is opened for appending when the configuration loads (an unwritable path is
//! a config error) and written a line at a time.

use super::{Context, Policy, PolicyError};
use http::{header, request, response};
use schemars::JsonSchema;
use serde::Deserialize;
use std::io::Write as _;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Field {
    Time,
    RemoteAddr,
    Host,
    Method,
    Path,
    Query,
    Status,
    Application,
    Plan,
    UserAgent,
    Referer,
    RequestId,
    DurationMs,
    Product,
    Websocket,
}

const DEFAULT_FIELDS: [Field; 14] = [
    Field::Time,
    Field::RemoteAddr,
    Field::Host,
    Field::Method,
    Field::Path,
    Field::Status,
    Field::Application,
    Field::Plan,
    Field::UserAgent,
    Field::Referer,
    Field::RequestId,
    Field::DurationMs,
    Field::Product,
    Field::Websocket,
];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    #[serde(default)]
    format: Format,
    /// Which fields, in order (default: all but `query`).
    #[serde(default)]
    fields: Vec<Field>,
    /// Append to this file instead of stdout.
    #[serde(default)]
    file: Option<String>,
}

pub struct LoggingPolicy {
    format: Format,
    fields: Vec<Field>,
    /// Where lines go: a queue that a thread of its own empties into the file (or
    /// stdout), so the request path never waits for a disk; when 128,000 lines wait,
    /// new ones are dropped (and counted by the writer). `None` when only validating.
    out: Option<tracing_appender::non_blocking::NonBlocking>,
    /// Keeps the writer's thread; dropped (flushing what waits) on a thread of its own
    /// when the policy goes with its configuration.
    guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Drop for LoggingPolicy {
    fn drop(&mut self) {
        // Flushing waits for the writer: not on the thread that dropped the last
        // reference to an old configuration (possibly a request's).
        if let Some(guard) = self.guard.take() {
            let _ = std::thread::Builder::new().name("tollgate-log-flush".into()).spawn(move || drop(guard));
        }
    }
}

impl LoggingPolicy {
    /// Checks the configuration without creating the log file: `file` must name a
    /// regular file that can be written, or a file to create in an existing folder
    /// (what `tollgate check` and a save in the admin API do; the file is made when the
    /// gateway loads the policy).
    pub(super) fn offline(c: Config) -> Result<Self, PolicyError> {
        if let Some(path) = &c.file {
            check_file(path)?;
        }
        LoggingPolicy::new_with(c, false)
    }

    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        LoggingPolicy::new_with(c, true)
    }

    fn new_with(c: Config, open: bool) -> Result<Self, PolicyError> {
        let writer = |w: Box<dyn std::io::Write + Send>| {
            tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(true)
                .thread_name("tollgate-access-log")
                .finish(w)
        };
        let (out, guard) = match (c.file, open) {
            (_, false) => (None, None),
            (Some(path), true) => {
                check_file(&path)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| PolicyError::new("file", format!("cannot open `{path}` for appending: {e}")))?;
                let (out, guard) = writer(Box::new(file));
                (Some(out), Some(guard))
            }
            (None, true) => {
                let (out, guard) = writer(Box::new(std::io::stdout()));
                (Some(out), Some(guard))
            }
        };
        let fields = if c.fields.is_empty() { DEFAULT_FIELDS.to_vec() } else { c.fields };
        Ok(LoggingPolicy { format: c.format, fields, out, guard })
    }

    fn field_name(f: Field) -> &'static str {
        match f {
            Field::Time => "time",
            Field::RemoteAddr => "remote_addr",
            Field::Host => "host",
            Field::Method => "method",
            Field::Path => "path",
            Field::Query => "query",
            Field::Status => "status",
            Field::Application => "application",
            Field::Plan => "plan",
            Field::UserAgent => "user_agent",
            Field::Referer => "referer",
            Field::RequestId => "request_id",
            Field::DurationMs => "duration_ms",
            Field::Product => "product",
            Field::Websocket => "websocket",
        }
    }

    fn line(&self, resp: &response::Parts, req: &request::Parts, ctx: &Context<'_>) -> String {
        let header = |name: header::HeaderName| {
            req.headers.get(name).map(|v| serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into()))
        };
        let mut values = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            use serde_json::Value as V;
            let v = match f {
                Field::Time => Some(V::String(rfc3339(std::time::SystemTime::now()))),
                Field::RemoteAddr => Some(V::String(ctx.client_addr.ip().to_string())),
                Field::Host => header(header::HOST).or_else(|| req.uri.host().map(|h| V::String(h.into()))),
                Field::Method => Some(V::String(req.method.as_str().into())),
                Field::Path => Some(V::String(req.uri.path().into())),
                Field::Query => req.uri.query().map(|q| V::String(q.into())),
                Field::Status => Some(V::from(resp.status.as_u16())),
                Field::Application => ctx.application.as_ref().map(|a| V::String(a.id.to_string())),
                Field::Plan => ctx.application.as_ref().map(|a| V::String(a.plan.system_name.to_string())),
                Field::UserAgent => header(header::USER_AGENT),
                Field::Referer => header(header::REFERER),
                Field::RequestId => header(header::HeaderName::from_static("x-request-id")),
                Field::DurationMs => {
                    Some(V::from((ctx.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0))
                }
                Field::Product => Some(V::String(ctx.product.system_name.to_string())),
                Field::Websocket => Some(V::Bool(ctx.websocket)),
            };
            values.push((Self::field_name(*f), v));
        }
        match self.format {
            Format::Json => {
                let map: serde_json::Map<String, serde_json::Value> =
                    values.into_iter().map(|(k, v)| (k.to_string(), v.unwrap_or(serde_json::Value::Null))).collect();
                serde_json::Value::Object(map).to_string()
            }
            Format::Text => values
                .into_iter()
                .map(|(_, v)| match v {
                    None | Some(serde_json::Value::Null) => "-".to_string(),
                    // Quoted when it holds spaces (user agents), like a combined log.
                    Some(serde_json::Value::String(s)) if s.contains(' ') || s.is_empty() => format!("{s:?}"),
                    Some(serde_json::Value::String(s)) => s,
                    Some(other) => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Whether `path` can be a log file, looking only at metadata (opening a FIFO for
/// writing would wait for a reader): a writable regular file, or a new file in an
/// existing folder.
fn check_file(path: &str) -> Result<(), PolicyError> {
    let p = std::path::Path::new(path);
    let fail = |why: String| PolicyError::new("file", format!("cannot open `{path}` for appending: {why}"));
    if path.is_empty() {
        return Err(PolicyError::new("file".to_string(), "no file named: give a path, or leave `file` out for stdout"));
    }
    if path.ends_with('/') {
        return Err(fail("it names a directory; name a file in it".into()));
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err(fail("it is a directory".into())),
        Ok(m) if !m.is_file() => Err(fail("it is not a regular file (a device, FIFO or socket)".into())),
        Ok(m) if m.permissions().readonly() => Err(fail("it is read-only".into())),
        Ok(_) => Ok(()),
        Err(_) => {
            let folder = p.parent().filter(|f| !f.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            match folder.is_dir() {
                true => Ok(()),
                false => Err(fail(format!("the folder `{}` does not exist", folder.display()))),
            }
        }
    }
}

/// `2026-11-27T04:20:00.123Z`.
fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = tollgate_model::period::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, s / 60 % 60, s % 60, d.subsec_millis())
}

impl Policy for LoggingPolicy {
    fn name(&self) -> &'static str {
        "logging"
    }

    fn response(&self, resp: &mut response::Parts, req: &request::Parts, ctx: &Context<'_>) {
        let Some(out) = &self.out else { return };
        let mut line = self.line(resp, req, ctx);
        line.push('\n');
        // Queued, never written here; a log that cannot be written does not fail the
        // request.
        let _ = out.clone().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_is_utc_calendar_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_750_800_123);
        assert_eq!(super::rfc3339(t), "2026-11-27T03:40:00.123Z");
    }
}
