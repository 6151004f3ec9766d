//! `mapping_rules`: mapping-rule patterns (3scale's syntax: prefix match, `$` for an
//! exact end, `{name}` within one segment, `?name=value&name={x}` query arguments) as
//! `tollgate_model::pattern::Pattern` parses and matches them, and a product's
//! `Mapper` adding up usage over several rules.
//!
//! Feeds: lines — a pattern, a request path, a request query, a backend usage prefix,
//! then more patterns that become the rules of a `Mapper`.
//!
//! Asserts, beyond "no panic":
//! - a parsed pattern matches the path it describes (each `{name}` written as `x`, the
//!   query it names percent-encoded), and a pattern without `{` is a plain prefix (or,
//!   with `$`, equality) test;
//! - without `$`, a match stays a match whatever is appended to the path; with `$`, a
//!   match is also a match of the same pattern without `$`;
//! - `under(prefix)` matches `prefix + path` exactly when the pattern matches `path`;
//! - the `Mapper`: it reports a match exactly when usage was added, every matching rule
//!   up to the first matching `last` one adds its delta, and with ancestors `hits`
//!   holds the sum of every delta (methods count on `hits`).

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use tollgate_gateway::mapping::{HITS, Mapper, MetricTable, Rule, Usage};
use tollgate_model::pattern::{Pattern, QueryArgs};

/// Every byte as `%XX`: what any decoder gives back unchanged.
fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The path and query a pattern describes, placeholders filled with `x`.
fn example(source: &str) -> (String, Option<String>) {
    let (path, query) = match source.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (source, None),
    };
    let path = path.strip_suffix('$').unwrap_or(path);
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push('x');
        rest = &rest[close..];
    }
    out.push_str(rest);
    let query = query.map(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = if value.starts_with('{') && value.ends_with('}') { "x" } else { value };
                format!("{}={}", encode(name), encode(value))
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    (out, query)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let source = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let query_text = lines.next().filter(|q| !q.is_empty());
    let prefix = lines.next().unwrap_or_default();
    let query = QueryArgs::parse(query_text);

    if let Ok(pattern) = Pattern::parse(source) {
        let exact = source.split('?').next().is_some_and(|p| p.ends_with('$'));
        let matched = pattern.matches(path, &query);

        let (own_path, own_query) = example(source);
        assert!(
            pattern.matches(&own_path, &QueryArgs::parse(own_query.as_deref())),
            "{source:?} does not match its own example {own_path:?}?{own_query:?}"
        );
        if !source.contains('{') && !source.contains('?') {
            let literal = source.strip_suffix('$').unwrap_or(source);
            let want = if exact { path == literal } else { path.starts_with(literal) };
            assert_eq!(pattern.matches_path(path), want, "{source:?} vs {path:?}");
        }
        if matched && !exact {
            let longer = format!("{path}/more{prefix}");
            assert!(pattern.matches(&longer, &query), "{source:?}: {path:?} matches but {longer:?} does not");
        }
        if matched && exact {
            let loose = source.replacen('$', "", 1);
            let loose = Pattern::parse(&loose).expect("a valid pattern without its `$` is valid");
            assert!(loose.matches(path, &query), "{source:?}: matches {path:?} but not without `$`");
        }
        if prefix.starts_with('/') && path.starts_with('/') {
            let trimmed = prefix.trim_end_matches('/');
            let under = pattern.under(prefix);
            assert_eq!(
                under.matches(&format!("{trimmed}{path}"), &query),
                matched,
                "{source:?} under {prefix:?} vs {path:?}"
            );
        }
    }

    // A mapper over the remaining lines, each a rule.
    let mut metrics = MetricTable::new();
    let mut rules = Vec::new();
    for (i, line) in lines.take(16).enumerate() {
        let Ok(pattern) = Pattern::parse(line) else { continue };
        let metric = if i % 2 == 0 { HITS } else { metrics.add(&format!("m{}", i % 5), Some(HITS)) };
        let method = match i % 3 {
            0 => None,
            1 => Some(Method::GET),
            _ => Some(Method::POST),
        };
        rules.push(Rule { method, pattern, metric, delta: i as u64 + 1, last: i % 4 == 3 });
    }
    let mut expected = Usage::default();
    for r in &rules {
        if r.method.as_ref().is_none_or(|m| *m == Method::GET) && r.pattern.matches(path, &query) {
            expected.add(r.metric, r.delta);
            if r.last {
                break;
            }
        }
    }
    let mapper = Mapper::new(rules);
    let mut usage = Usage::default();
    let matched = mapper.map(&Method::GET, path, &query, &mut usage);
    assert_eq!(matched, !usage.is_empty(), "a match without usage, or usage without a match");
    assert_eq!(usage, expected, "usage differs from the rules' sum");
    let total: u64 = usage.0.iter().map(|(_, d)| d).sum();
    assert_eq!(usage.with_ancestors(&metrics).delta(HITS), total, "hits is not the sum of every delta");
});
