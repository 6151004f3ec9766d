//! Bar charts drawn on the server as SVG: labelled axes with their unit, times in UTC,
//! one bar per time bucket (stacked when there are several series), the value of each
//! bar on hover (an SVG `title`, which browsers show as a tooltip and screen readers
//! read), a legend, and the numbers again in a table for those who cannot see the
//! chart. An empty chart says why it is empty instead of drawing nothing.

use super::html::{Markup, html};

/// One series of a chart: its name in the legend and hover text, its CSS class (the
/// colour), and a value per bucket.
pub struct Series<'a> {
    pub label: &'a str,
    pub class: &'a str,
    pub values: Vec<i64>,
}

/// A chart of values per time bucket.
pub struct Chart<'a> {
    /// Its caption, e.g. "Requests per minute — production".
    pub title: &'a str,
    /// What the y axis counts, e.g. "requests per minute".
    pub unit: &'a str,
    /// Unix seconds at the start of each bucket.
    pub buckets: Vec<i64>,
    /// Seconds per bucket (60, 3600, 86400).
    pub step: i64,
    pub series: Vec<Series<'a>>,
    /// Why there is nothing to draw, shown when every value is zero.
    pub empty: &'a str,
}

// The drawing's own units; it is scaled to its column (about 450 to 900 px wide), so
// its text is sized for that scale.
const W: f64 = 520.0;
const H: f64 = 200.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 40.0;

/// The time of a bucket for labels: `HH:MM` for minutes and hours, the date for days.
fn label(at: i64, step: i64) -> String {
    let (days, rest) = (at.div_euclid(86_400), at.rem_euclid(86_400));
    let (y, m, d) = tollgate_model::period::civil_from_days(days);
    if step >= 86_400 { format!("{y:04}-{m:02}-{d:02}") } else { format!("{:02}:{:02}", rest / 3600, rest % 3600 / 60) }
}

/// A round number at or above `max` for the top of the y axis, and its tick step.
fn scale(max: i64) -> (i64, i64) {
    let max = max.max(1);
    let raw = (max as f64 / 4.0).max(1.0);
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let step = step.ceil() as i64;
    (step * ((max + step - 1) / step), step)
}

/// Thousands separated by a thin space, for axis labels and hover text.
pub fn number(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The non-zero parts of bucket `i`'s bar: each series with what lies below it.
fn stacked<'c, 'a>(series: &'c [Series<'a>], i: usize) -> Vec<(&'c Series<'a>, i64, i64)> {
    let mut below = 0;
    let mut out = Vec::new();
    for s in series {
        let v = s.values.get(i).copied().unwrap_or(0);
        if v > 0 {
            out.push((s, below, v));
        }
        below += v;
    }
    out
}

pub fn bars(chart: &Chart<'_>) -> Markup {
    let n = chart.buckets.len();
    let totals: Vec<i64> =
        (0..n).map(|i| chart.series.iter().map(|s| s.values.get(i).copied().unwrap_or(0)).sum()).collect();
    let empty = totals.iter().all(|t| *t == 0);
    let (top, tick) = scale(totals.iter().copied().max().unwrap_or(0));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w / n.max(1) as f64;
    let y_of = |v: i64| TOP + plot_h - (v as f64 / top as f64) * plot_h;
    let label_every = (n / 5).max(1);
    let id = chart.title.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
    let last = chart.buckets.last().map_or(0, |b| b + chart.step);
    html! {
        figure.chart {
            figcaption {
                strong { (chart.title) }
                " · " (chart.unit) " · times in UTC"
                @if !empty {
                    span.legend {
                        @for s in &chart.series { span { svg.swatch width="12" height="12" aria-hidden="true" { rect class=(s.class) width="12" height="12" {} } " " (s.label) } }
                    }
                }
            }
            svg viewBox={ "0 0 " (W) " " (H) } width="100%" role="img" aria-labelledby={ (id) "-t" } {
                title id={ (id) "-t" } {
                    (chart.title) ", " (chart.unit) ", from " (label(chart.buckets.first().copied().unwrap_or(0), chart.step))
                    " to " (label(last, chart.step)) " UTC"
                    @if empty { ": " (chart.empty) }
                }
                // Grid lines and the y axis' labels.
                @for i in 0..=(top / tick) {
                    @let v = i * tick;
                    line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y_of(v)) y2=(y_of(v)) {}
                    text.axis x=(LEFT - 6.0) y=(y_of(v) + 4.0) text-anchor="end" { (number(v)) }
                }
                text.axis transform={ "translate(12," (TOP + plot_h / 2.0) ") rotate(-90)" } text-anchor="middle" { (chart.unit) }
                @if empty {
                    text.empty-note x=(LEFT + plot_w / 2.0) y=(TOP + plot_h / 2.0) text-anchor="middle" { (chart.empty) }
                } @else {
                    @for (i, at) in chart.buckets.iter().enumerate() {
                        g.bucket {
                            title {
                                (label(*at, chart.step)) "–" (label(at + chart.step, chart.step)) " UTC: "
                                @for (j, s) in chart.series.iter().enumerate() {
                                    @if j > 0 { ", " }
                                    (s.label) " " (number(s.values.get(i).copied().unwrap_or(0)))
                                }
                            }
                            // A full-height strip, so hovering anywhere in the column shows the values.
                            rect.hover x=(LEFT + i as f64 * bar_w) y=(TOP) width=(bar_w) height=(plot_h) {}
                            @for (s, below, v) in stacked(&chart.series, i) {
                                rect class=(s.class) x=(LEFT + i as f64 * bar_w + 0.5) y=(y_of(below + v))
                                    width=((bar_w - 1.0).max(0.5)) height=(y_of(below) - y_of(below + v)) {}
                            }
                        }
                    }
                }
                line.axis-line x1=(LEFT) x2=(W - RIGHT) y1=(TOP + plot_h) y2=(TOP + plot_h) {}
                @for (i, at) in chart.buckets.iter().enumerate() {
                    @if i % label_every == 0 {
                        text.axis x=(LEFT + i as f64 * bar_w) y=(TOP + plot_h + 16.0) text-anchor="start" { (label(*at, chart.step)) }
                    }
                }
                text.axis x=(LEFT + plot_w / 2.0) y=(H - 4.0) text-anchor="middle" { "time (UTC)" }
            }
            @if !empty {
                details {
                    summary { "The numbers" }
                    table {
                        caption { (chart.title) " (" (chart.unit) ")" }
                        thead { tr { th scope="col" { "From (UTC)" } @for s in &chart.series { th scope="col" { (s.label) } } } }
                        tbody {
                            @for (i, at) in chart.buckets.iter().enumerate() {
                                @if totals[i] > 0 {
                                    tr { td { (label(*at, chart.step)) } @for s in &chart.series { td { (s.values.get(i).copied().unwrap_or(0)) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: Vec<i64>) -> String {
        let buckets = (0..values.len() as i64).map(|i| 1_800_000_000 + i * 60).collect();
        bars(&Chart {
            title: "Requests per minute",
            unit: "requests per minute",
            buckets,
            step: 60,
            series: vec![Series { label: "2xx", class: "s-2xx", values }],
            empty: "No requests in the last hour.",
        })
        .into_string()
    }

    #[test]
    fn axes_are_labelled_and_bars_say_their_value_on_hover() {
        let svg = chart(vec![0, 3, 12, 1]);
        assert!(svg.contains("requests per minute") && svg.contains("time (UTC)"), "{svg}");
        assert!(svg.contains("<title>08:01–08:02 UTC: 2xx 3</title>"), "{svg}");
        assert!(
            svg.contains(">12<") || svg.contains(">15<") || svg.contains(">16<"),
            "a round top on the y axis: {svg}"
        );
        assert!(!svg.contains("No requests in the last hour."), "{svg}");
    }

    #[test]
    fn an_empty_chart_says_why() {
        let svg = chart(vec![0; 60]);
        assert!(svg.contains("No requests in the last hour."), "{svg}");
        assert!(!svg.contains("<details>"), "no table of nothing: {svg}");
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(scale(0), (1, 1));
        assert_eq!(scale(7), (8, 2));
        assert_eq!(scale(93), (100, 25));
        assert_eq!(scale(1234), (1500, 500));
        assert_eq!(number(1234567), "1\u{2009}234\u{2009}567");
    }
}
