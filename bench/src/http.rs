//! HTTP load by wrk (Debian's package): requests per second and latency percentiles.

use anyhow::{Context, Result, bail};
use std::time::Duration;

use crate::peers::which;

/// One wrk run's numbers.
#[derive(Debug, Clone, Copy)]
pub struct Http {
    pub rate: f64,
    /// Microseconds.
    pub p50: f64,
    pub p99: f64,
}

/// What to load: URL, `Host` header, and whether every request opens a new connection.
pub struct Load<'a> {
    pub url: &'a str,
    pub host: &'a str,
    pub connections: usize,
    pub duration: Duration,
    pub close: bool,
}

/// Runs wrk with one thread (the machine's other core is the proxy's) and fails on any
/// non-2xx answer or socket error: a fast error is not a fast proxy.
pub async fn wrk(load: &Load<'_>) -> Result<Http> {
    let mut cmd = tokio::process::Command::new(which("wrk")?);
    cmd.args(["-t1", "--latency"])
        .arg(format!("-c{}", load.connections))
        // wrk takes whole seconds.
        .arg(format!("-d{}s", load.duration.as_secs_f64().ceil().max(1.0)))
        .arg("-H")
        .arg(format!("Host: {}", load.host));
    if load.close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(load.url).kill_on_drop(true);
    let out = tokio::time::timeout(load.duration + Duration::from_secs(60), cmd.output())
        .await
        .context("wrk overran its time by 60 s")??;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    parse(&text).with_context(|| format!("wrk's output:\n{text}"))
}

fn parse(text: &str) -> Result<Http> {
    for bad in ["Non-2xx or 3xx responses:", "Socket errors:"] {
        if let Some(line) = text.lines().find(|l| l.trim_start().starts_with(bad)) {
            // Closing connections make wrk count the server's close as a read error
            // only when the server closes early; any error is reported, not hidden.
            bail!("errors during the run: {}", line.trim());
        }
    }
    let field = |prefix: &str| -> Result<&str> {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no `{prefix}` line"))
    };
    let rate: f64 = field("Requests/sec:")?.parse()?;
    let p50 = micros(field("50%")?)?;
    let p99 = micros(field("99%")?)?;
    Ok(Http { rate, p50, p99 })
}

/// wrk's durations: `812.00us`, `1.20ms`, `2.01s`, `1.00m`.
fn micros(value: &str) -> Result<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic()).context("a duration needs a unit")?;
    let (n, unit) = value.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => bail!("unknown unit in `{value}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.08ms  200.00us   4.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.40ms
     99%    2.01s
  45000 requests in 1.00s, 5.00MB read
Requests/sec:  45012.34
Transfer/sec:      5.00MB
";
        let h = parse(text).expect("parses");
        assert_eq!(h.rate, 45012.34);
        assert_eq!(h.p50, 812.0);
        assert!((h.p99 - 2.01e6).abs() < 1.0, "{}", h.p99);
        let bad = format!("{text}  Non-2xx or 3xx responses: 12\n");
        match parse(&bad) {
            Err(e) => assert!(e.to_string().contains("Non-2xx or 3xx responses: 12"), "{e}"),
            Ok(h) => panic!("errors were hidden: {h:?}"),
        }
    }
}
