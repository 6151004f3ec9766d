//! Tables of results as ratios to nginx and to a direct connection, in Markdown, and
//! the raw numbers as JSON.

use serde_json::{Value, json};
use std::fmt::Write as _;

/// One row: a contestant's numbers, each the median over the rounds.
pub struct Row {
    pub name: String,
    pub rate: f64,
    /// Microseconds; None where the measure has no latency (memory).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Every round's rate, for the JSON.
    pub rounds: Vec<f64>,
    /// Where CPU time went, for CPU measures: user and kernel microseconds.
    pub split: Option<(f64, f64)>,
}

pub struct Table {
    pub key: &'static str,
    pub title: String,
    pub unit: &'static str,
    pub rows: Vec<Row>,
    /// Whether bigger is better (rates) or smaller (bytes per connection).
    pub higher_is_better: bool,
    /// A contestant every row is also compared with (a column `÷ NAME`).
    pub baseline: Option<&'static str>,
}

impl Table {
    fn find(&self, name: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.name == name).map(|r| r.rate)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        let (nginx, direct) = (self.find("nginx"), self.find("direct"));
        let latency = self.rows.iter().any(|r| r.p50.is_some());
        let split = self.rows.iter().any(|r| r.split.is_some());
        out.push_str(&format!("| contestant | {} | ÷ nginx |", self.unit));
        if direct.is_some() {
            out.push_str(" ÷ direct |");
        }
        let baseline = self.baseline.map(|b| (b, self.find(b)));
        if let Some((name, _)) = baseline {
            let _ = write!(out, " ÷ {name} |");
        }
        if latency {
            out.push_str(" p50 | p99 | p99 ÷ nginx's |");
        }
        if split {
            out.push_str(" user | kernel |");
        }
        out.push('\n');
        let columns = 3
            + usize::from(direct.is_some())
            + usize::from(baseline.is_some())
            + if latency { 3 } else { 0 }
            + if split { 2 } else { 0 };
        out.push_str(&format!("|{}\n", "---|".repeat(columns)));
        let nginx_p99 = self.rows.iter().find(|r| r.name == "nginx").and_then(|r| r.p99);
        for r in &self.rows {
            let _ = write!(out, "| {} | {} | {} |", r.name, amount(r.rate), ratio(r.rate, nginx));
            if direct.is_some() {
                let _ = write!(out, " {} |", ratio(r.rate, direct));
            }
            if let Some((_, base)) = baseline {
                let _ = write!(out, " {} |", ratio(r.rate, base));
            }
            if latency {
                let _ = write!(
                    out,
                    " {} | {} | {} |",
                    r.p50.map(duration).unwrap_or_default(),
                    r.p99.map(duration).unwrap_or_default(),
                    r.p99.map(|p| ratio(p, nginx_p99)).unwrap_or_default()
                );
            }
            if split {
                let (user, kernel) = r.split.unwrap_or_default();
                let _ = write!(out, " {user:.1} µs | {kernel:.1} µs |");
            }
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "rows": self.rows.iter().map(|r| json!({
                "contestant": r.name,
                "median": r.rate,
                "rounds": r.rounds,
                "p50_us": r.p50,
                "p99_us": r.p99,
                "user_us": r.split.map(|s| s.0),
                "kernel_us": r.split.map(|s| s.1),
            })).collect::<Vec<_>>(),
        })
    }
}

fn ratio(value: f64, to: Option<f64>) -> String {
    match to {
        Some(to) if to > 0.0 => format!("{:.2}", value / to),
        _ => "–".into(),
    }
}

/// A table's value: small ones (microseconds of CPU) with a decimal, big ones grouped.
fn amount(v: f64) -> String {
    if v < 100.0 { format!("{v:.1}") } else { thousands(v) }
}

pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration(us: f64) -> String {
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

/// The median of a non-empty slice (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!((amount(29.64), amount(36224.2)), ("29.6".to_string(), "36,224".to_string()));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(duration(812.0), "812 µs");
        assert_eq!(duration(2010.0), "2.01 ms");
        let t = Table {
            key: "t",
            title: "T".into(),
            unit: "requests/s",
            higher_is_better: true,
            baseline: None,
            rows: vec![
                Row {
                    name: "direct".into(),
                    rate: 200.0,
                    p50: Some(10.0),
                    p99: Some(20.0),
                    rounds: vec![200.0],
                    split: None,
                },
                Row {
                    name: "nginx".into(),
                    rate: 100.0,
                    p50: Some(20.0),
                    p99: Some(40.0),
                    rounds: vec![100.0],
                    split: None,
                },
            ],
        };
        let md = t.markdown();
        assert!(md.contains("| nginx | 100 | 1.00 | 0.50 | 20 µs | 40 µs | 1.00 |"), "{md}");
        assert!(md.contains("| direct | 200 | 2.00 | 1.00 | 10 µs | 20 µs | 0.50 |"), "{md}");
    }
}
