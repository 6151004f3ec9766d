//! Cost curves (`--only scale`): what the size of a configuration costs. For DB-less
//! files of growing size — each product with two methods under `hits`, two mapping
//! rules and a plan with a limit, ten applications per product, a hundred per
//! account — it measures:
//!
//! - `tollgate check`: wall time and peak resident memory (`/usr/bin/time`);
//! - `tollgate serve`: time from start to listening (the file read, validated and
//!   compiled for both environments), resident memory once serving, and a reload
//!   (SIGHUP until the log says `configuration reloaded`);
//! - per-request CPU of the serving process (user + kernel, from /proc) under wrk,
//!   key only, against the last product's last application — flat if lookups do not
//!   grow with the configuration;
//! - p99 latency of a wrk turn without and with a reload in its middle: a reload must
//!   not pause traffic;
//! - the same file through the store: `tollgate serve --store` on a fresh SQLite file,
//!   `tollgate apply -f FILE` (the store made to match it), then `tollgate apply -f FILE
//!   --promote` (every product deployed to staging and promoted to production), each
//!   timed until the command returns — that is, until the gateways of that process serve
//!   the change — and the process's resident memory after them.
//!
//! The points are written as a table and plotted (SVG, by `plotters`).

use anyhow::{Context, Result, anyhow, bail};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::peers::{Process, loopback, spawn_reading, tollgate_bin, which};
use crate::{cpu, http};

/// One configuration size and what it cost.
#[derive(Debug, Clone)]
pub struct Point {
    pub products: usize,
    pub applications: usize,
    /// Bytes of YAML.
    pub file_bytes: usize,
    /// `tollgate check`: seconds and peak resident KiB.
    pub check_s: f64,
    pub check_peak_kib: u64,
    /// `tollgate serve`: seconds to listening, resident KiB once serving, seconds per
    /// reload.
    pub start_s: f64,
    pub serving_kib: u64,
    pub reload_s: f64,
    /// Per request, key only: CPU µs (user + kernel) and requests/s.
    pub cpu_us: f64,
    pub rate: f64,
    /// wrk's p99 (µs) of a turn without, and of one with, a reload in its middle.
    pub p99_us: f64,
    pub p99_reload_us: f64,
    /// Through the store: seconds of `apply`, of `apply --promote` after it, and the
    /// serving process's resident KiB after both.
    pub store_apply_s: f64,
    pub store_promote_s: f64,
    pub store_kib: u64,
}

/// The generated DB-less file: `products` products on `backend`, `applications`
/// applications spread evenly over them (`user_key` `k{n}`).
pub fn config(products: usize, applications: usize, backend: SocketAddr) -> String {
    let mut y = String::with_capacity(products * 700 + applications * 90);
    let _ = writeln!(y, "backends:\n  - {{ system_name: ok, private_base_url: \"http://{backend}\" }}\nproducts:");
    for p in 0..products {
        let _ = write!(
            y,
            "  - system_name: p{p}
    staging_public_base_url: http://p{p}.localhost
    production_public_base_url: http://p{p}.example
    backend_usages: [ {{ backend: ok, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    methods: [ {{ system_name: reads }}, {{ system_name: writes }} ]
    mapping_rules:
      - {{ http_method: GET, pattern: /, metric: reads }}
      - {{ http_method: POST, pattern: /, metric: writes }}
    application_plans:
      - system_name: basic
        limits: [ {{ metric: hits, period: minute, value: 1000000000000 }} ]
"
        );
    }
    y.push_str("accounts:\n");
    for a in 0..applications {
        if a % 100 == 0 {
            let _ = writeln!(y, "  - name: account-{}\n    applications:", a / 100);
        }
        let _ = writeln!(y, "      - {{ name: app-{a}, product: p{}, plan: basic, user_key: k{a} }}", a % products);
    }
    y
}

/// The last product's last application, as (host, user_key).
fn target(products: usize, applications: usize) -> (String, String) {
    let last = applications - 1;
    (format!("p{}.localhost", last % products), format!("k{last}"))
}

/// A `tollgate serve` of one file, its stderr lines on a channel.
pub struct Serving {
    process: Process,
    pub staging: SocketAddr,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Serving {
    pub async fn start(file: &Path) -> Result<(Serving, Duration)> {
        let started = Instant::now();
        let mut cmd = Command::new(tollgate_bin()?);
        cmd.args(["--log", "info", "serve", "--config"])
            .arg(file)
            .args(["--staging-listen", "127.0.0.1:0", "--production-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .stderr(Stdio::piped());
        let (mut process, ports) = spawn_reading(cmd, |line| {
            let rest = line.strip_prefix("tollgate: staging gateway")?;
            rest.trim().rsplit(':').next()?.parse::<u16>().ok().map(|p| vec![p])
        })
        .await
        .context("tollgate serve")?;
        let elapsed = started.elapsed();
        let (tx, log) = tokio::sync::mpsc::unbounded_channel();
        let mut err = BufReader::new(process.take_stderr().context("stderr")?).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                let _ = tx.send(line);
            }
        });
        Ok((Serving { process, staging: loopback(ports[0]), log }, elapsed))
    }

    pub fn pid(&self) -> Result<u32> {
        self.process.id().context("tollgate serve has exited")
    }

    /// Sends SIGHUP and waits for the log to say the configuration was reloaded.
    pub async fn reload(&mut self) -> Result<Duration> {
        while self.log.try_recv().is_ok() {}
        let started = Instant::now();
        let ok = Command::new("kill").args(["-HUP", &self.pid()?.to_string()]).status().await?;
        if !ok.success() {
            bail!("kill -HUP failed");
        }
        tokio::time::timeout(Duration::from_secs(300), async {
            while let Some(line) = self.log.recv().await {
                if line.contains("configuration NOT reloaded") {
                    bail!("the reload failed: {line}");
                }
                if line.contains("configuration reloaded") {
                    return Ok(started.elapsed());
                }
            }
            Err(anyhow!("tollgate serve exited during a reload"))
        })
        .await
        .map_err(|_| anyhow!("no reload within 300 s"))?
    }
}

/// Resident KiB of `pid` now (VmRSS).
pub fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// `tollgate check FILE` under `/usr/bin/time`: (seconds, peak KiB).
async fn check(file: &Path) -> Result<(f64, u64)> {
    let out =
        Command::new(which("time")?).args(["-f", "%e %M"]).arg(tollgate_bin()?).arg("check").arg(file).output().await?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("tollgate check failed: {err}");
    }
    let last = err.lines().last().context("no output from time")?;
    let mut fields = last.split_whitespace();
    let seconds = fields.next().and_then(|s| s.parse().ok()).context("time's seconds")?;
    let kib = fields.next().and_then(|s| s.parse().ok()).context("time's KiB")?;
    Ok((seconds, kib))
}

/// The file through the store (see the module): (`apply` seconds, `apply --promote`
/// seconds, resident KiB after them) of a `tollgate serve --store` on a SQLite file in
/// `dir`.
async fn through_store(dir: &Path, file: &Path) -> Result<(f64, f64, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut cmd = Command::new(tollgate_bin()?);
    cmd.args(["serve", "--store"])
        .arg(format!("sqlite://{}", dir.join("tollgate.db").display()))
        .args(["--staging-listen", "127.0.0.1:0", "--production-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .stderr(Stdio::null());
    let mut token = None;
    let (process, ports) = spawn_reading(cmd, |line| {
        if let Some(t) = line.split("keep it): ").nth(1) {
            token = Some(t.trim().to_string());
        }
        // `tollgate: admin API          http://127.0.0.1:PORT/api/v1 (store …)`
        let url = line.strip_prefix("tollgate: admin API")?.split_whitespace().next()?;
        let port = url.trim_start_matches("http://").split('/').next()?.rsplit(':').next()?;
        port.parse::<u16>().ok().map(|p| vec![p])
    })
    .await
    .context("tollgate serve --store")?;
    let token = token.context("serve printed no admin token")?;
    let admin = format!("http://127.0.0.1:{}", ports[0]);
    let mut timed = Vec::new();
    for extra in [None, Some("--promote")] {
        let started = Instant::now();
        let out = Command::new(tollgate_bin()?)
            .args(["apply", "-f"])
            .arg(file)
            .args(extra)
            .env("TOLLGATE_ADMIN_URL", &admin)
            .env("TOLLGATE_ADMIN_TOKEN", &token)
            .stdout(Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            bail!("tollgate apply {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        timed.push(started.elapsed().as_secs_f64());
    }
    let kib = resident_kib(process.id().context("tollgate serve --store has exited")?)?;
    drop(process);
    let _ = std::fs::remove_dir_all(dir);
    Ok((timed[0], timed[1], kib))
}

/// Measures every size in `sizes` (products; ten applications each), wrk turns of
/// `turn` with `connections` connections.
pub async fn measure(
    dir: &Path,
    backend: SocketAddr,
    sizes: &[usize],
    turn: Duration,
    connections: usize,
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    for &products in sizes {
        let applications = products * 10;
        let yaml = config(products, applications, backend);
        let file = dir.join(format!("scale-{products}.yaml"));
        std::fs::write(&file, &yaml)?;
        eprintln!("scale: {products} products, {applications} applications ({} bytes)", yaml.len());
        let (check_s, check_peak_kib) = check(&file).await.with_context(|| format!("{products} products"))?;
        let (mut serving, start) = Serving::start(&file).await?;
        let pid = serving.pid()?;
        let serving_kib = resident_kib(pid)?;
        let reload = serving.reload().await?;
        let (host, key) = target(products, applications);
        let url = format!("http://{}/?user_key={key}", serving.staging);
        let load = http::Load { url: &url, host: &host, connections, duration: turn, close: false };
        let before = cpu::used(pid);
        let steady = http::wrk(&load).await.with_context(|| format!("{products} products"))?;
        let after = cpu::used(pid);
        let requests = (steady.rate * turn.as_secs_f64().ceil().max(1.0)).max(1.0);
        let cpu_us = ((after.0 + after.1) - (before.0 + before.1)).as_secs_f64() * 1e6 / requests;
        // A reload in the middle of a turn: its p99 against the steady turn's.
        let during = {
            let loaded = http::wrk(&load);
            let reloading = async {
                tokio::time::sleep(turn / 3).await;
                serving.reload().await
            };
            let (run, reloaded) = tokio::join!(loaded, reloading);
            reloaded?;
            run.with_context(|| format!("{products} products, during a reload"))?
        };
        drop(serving);
        let (store_apply_s, store_promote_s, store_kib) = through_store(&dir.join(format!("store-{products}")), &file)
            .await
            .with_context(|| format!("{products} products through the store"))?;
        points.push(Point {
            products,
            applications,
            file_bytes: yaml.len(),
            check_s,
            check_peak_kib,
            start_s: start.as_secs_f64(),
            serving_kib,
            reload_s: reload.as_secs_f64(),
            cpu_us,
            rate: steady.rate,
            p99_us: steady.p99,
            p99_reload_us: during.p99,
            store_apply_s,
            store_promote_s,
            store_kib,
        });
    }
    Ok(points)
}

/// The points as a Markdown table, with the growth from each size to the next.
pub fn markdown(points: &[Point]) -> String {
    let mut out = String::from(
        "### Cost of a configuration's size (DB-less file; ten applications per product)\n\n\
         | products / applications (YAML) | check | check peak | serve: start | serving resident | reload | CPU/request, key only | requests/s | p99 | p99 with a reload | store: apply | store: deploy + promote | store: resident |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let _ = writeln!(
            out,
            "| {} / {} ({:.2} MB) | {:.2} s | {} MB | {:.2} s | {} MB | {:.2} s | {:.1} µs | {:.0} | {:.2} ms | {:.2} ms | {:.2} s | {:.2} s | {} MB |",
            p.products,
            p.applications,
            p.file_bytes as f64 / 1e6,
            p.check_s,
            p.check_peak_kib / 1024,
            p.start_s,
            p.serving_kib / 1024,
            p.reload_s,
            p.cpu_us,
            p.rate,
            p.p99_us / 1e3,
            p.p99_reload_us / 1e3,
            p.store_apply_s,
            p.store_promote_s,
            p.store_kib / 1024,
        );
    }
    if points.len() > 1 {
        out.push_str("\nGrowth from one size to the next (1.0 per 10× would be linear in time and memory; 1.0 flat for CPU per request):\n\n");
        for w in points.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let size = b.products as f64 / a.products as f64;
            let _ = writeln!(
                out,
                "- {} → {} products ({size:.0}×): check time ×{:.1}, check memory ×{:.1}, start ×{:.1}, reload ×{:.1}, serving memory ×{:.1}, CPU per request ×{:.2}, store apply ×{:.1}, store deploy + promote ×{:.1}",
                a.products,
                b.products,
                b.check_s / a.check_s.max(0.005),
                b.check_peak_kib as f64 / a.check_peak_kib.max(1) as f64,
                b.start_s / a.start_s.max(0.005),
                b.reload_s / a.reload_s.max(0.005),
                b.serving_kib as f64 / a.serving_kib.max(1) as f64,
                b.cpu_us / a.cpu_us.max(0.001),
                b.store_apply_s / a.store_apply_s.max(0.005),
                b.store_promote_s / a.store_promote_s.max(0.005),
            );
        }
    }
    out
}

/// The points as JSON.
pub fn json(points: &[Point]) -> serde_json::Value {
    serde_json::Value::Array(
        points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "products": p.products, "applications": p.applications, "file_bytes": p.file_bytes,
                    "check_s": p.check_s, "check_peak_kib": p.check_peak_kib, "start_s": p.start_s,
                    "serving_kib": p.serving_kib, "reload_s": p.reload_s, "cpu_us_per_request": p.cpu_us,
                    "requests_per_s": p.rate, "p99_us": p.p99_us, "p99_during_reload_us": p.p99_reload_us,
                    "store_apply_s": p.store_apply_s, "store_deploy_promote_s": p.store_promote_s,
                    "store_resident_kib": p.store_kib,
                })
            })
            .collect(),
    )
}

/// A plotted line: its name, colour and value at a point.
type Series = (&'static str, plotters::style::RGBColor, Box<dyn Fn(&Point) -> f64>);

/// Plots the points to `path` (SVG): time and memory against products, both axes
/// logarithmic (a straight line of slope 1 is linear growth), and CPU per request.
pub fn plot(points: &[Point], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    if points.len() < 2 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 3));
    let xs = (points[0].products as f64 * 0.8)..(points[points.len() - 1].products as f64 * 1.25);
    let draw = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                title: &str,
                unit: &str,
                log_y: bool,
                series: &[Series]|
     -> Result<()> {
        let values: Vec<f64> = points.iter().flat_map(|p| series.iter().map(move |s| (s.2)(p))).collect();
        let top = values.iter().copied().fold(f64::MIN, f64::max).max(1e-3) * 1.6;
        let bottom = values.iter().copied().filter(|v| *v > 0.0).fold(f64::MAX, f64::min).min(top / 10.0) / 1.6;
        let mut builder = ChartBuilder::on(area);
        builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(36).y_label_area_size(56);
        macro_rules! lines {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("products (10 applications each)")
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| if *y >= 10.0 { format!("{y:.0}") } else { format!("{y}") })
                    .y_desc(unit)
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
                for (name, color, value) in series {
                    let data: Vec<(f64, f64)> = points.iter().map(|p| (p.products as f64, value(p))).collect();
                    chart
                        .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
                        .map_err(|e| anyhow!("{e}"))?
                        .label(*name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                    chart
                        .draw_series(data.into_iter().map(|(x, y)| Circle::new((x, y), 3, color.filled())))
                        .map_err(|e| anyhow!("{e}"))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
            }};
        }
        if log_y {
            lines!(
                builder
                    .build_cartesian_2d(xs.clone().log_scale(), (bottom..top).log_scale())
                    .map_err(|e| anyhow!("{e}"))?
            );
        } else {
            lines!(builder.build_cartesian_2d(xs.clone().log_scale(), 0.0..top).map_err(|e| anyhow!("{e}"))?);
        }
        Ok(())
    };
    draw(
        &panels[0],
        "Time",
        "seconds",
        true,
        &[
            ("check", RED, Box::new(|p: &Point| p.check_s)),
            ("serve: start", BLUE, Box::new(|p: &Point| p.start_s)),
            ("reload", GREEN, Box::new(|p: &Point| p.reload_s)),
            ("store: apply", MAGENTA, Box::new(|p: &Point| p.store_apply_s)),
            ("store: deploy + promote", CYAN, Box::new(|p: &Point| p.store_promote_s)),
        ],
    )?;
    draw(
        &panels[1],
        "Memory",
        "MB resident",
        true,
        &[
            ("check (peak)", RED, Box::new(|p: &Point| p.check_peak_kib as f64 / 1024.0)),
            ("serving", BLUE, Box::new(|p: &Point| p.serving_kib as f64 / 1024.0)),
            ("store: serving", MAGENTA, Box::new(|p: &Point| p.store_kib as f64 / 1024.0)),
        ],
    )?;
    draw(
        &panels[2],
        "Per request (key only)",
        "µs CPU / request",
        false,
        &[("user + kernel", BLUE, Box::new(|p: &Point| p.cpu_us))],
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_file_spreads_applications_over_products_and_accounts() {
        let y = config(3, 250, loopback(8080));
        assert_eq!(y.matches("  - system_name: p").count(), 3);
        assert_eq!(y.matches("user_key: k").count(), 250);
        assert_eq!(y.matches("  - name: account-").count(), 3);
        assert!(y.contains("{ name: app-249, product: p0, plan: basic, user_key: k249 }"));
        assert_eq!(target(3, 250), ("p0.localhost".to_string(), "k249".to_string()));
    }

    #[test]
    fn a_plot_is_an_svg_with_every_series() {
        let point = |products: usize, f: f64| Point {
            products,
            applications: products * 10,
            file_bytes: products * 700,
            check_s: f * 0.01,
            check_peak_kib: (f * 3000.0) as u64,
            start_s: f * 0.02,
            serving_kib: (f * 2000.0) as u64,
            reload_s: f * 0.02,
            cpu_us: 20.0,
            rate: 40_000.0,
            p99_us: 900.0,
            p99_reload_us: 1000.0,
            store_apply_s: f * 0.03,
            store_promote_s: f * 0.01,
            store_kib: (f * 2500.0) as u64,
        };
        let dir = std::env::temp_dir().join(format!("tollgate-scale-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("scale.svg");
        plot(&[point(10, 1.0), point(100, 10.0), point(1000, 100.0)], &path).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("svg");
        let _ = std::fs::remove_dir_all(&dir);
        for label in [
            "check",
            "serve: start",
            "reload",
            "serving",
            "user + kernel",
            "store: apply",
            "store: deploy + promote",
            "<svg",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        let table = markdown(&[point(10, 1.0), point(100, 10.0)]);
        assert!(table.contains("10 → 100 products (10×): check time ×10.0"), "{table}");
        assert!(table.contains("store apply ×10.0, store deploy + promote ×10.0"), "{table}");
    }
}
