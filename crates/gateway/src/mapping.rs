//! Mapping rules → usage, with 3scale's semantics: rules run in order, every matching
//! rule adds its delta, a rule with `last: true` stops the scan, and usage of a method
//! also counts on its parent `hits`.

use http::Method;
use tollgate_model::pattern::{Pattern, QueryArgs};

/// Index of a metric in a product's [`MetricTable`]. `hits` is always 0.
pub type MetricId = u16;
/// The id of `hits`, the metric every product has.
pub const HITS: MetricId = 0;

/// A product's metrics and methods, flattened; methods have `hits` as parent.
#[derive(Debug, Clone, Default)]
pub struct MetricTable {
    names: Vec<Box<str>>,
    parents: Vec<Option<MetricId>>,
}

impl MetricTable {
    /// A table holding only `hits` (as [`HITS`]); `default()` is empty.
    pub fn new() -> Self {
        MetricTable { names: vec!["hits".into()], parents: vec![None] }
    }

    /// Adds a metric (`parent: None`) or a method (`parent: Some(HITS)`), once.
    pub fn add(&mut self, name: &str, parent: Option<MetricId>) -> MetricId {
        if let Some(id) = self.id(name) {
            return id;
        }
        self.names.push(name.into());
        self.parents.push(parent);
        (self.names.len() - 1) as MetricId
    }

    /// The id of the metric or method `name`, if the table has it.
    pub fn id(&self, name: &str) -> Option<MetricId> {
        self.names.iter().position(|n| &**n == name).map(|i| i as MetricId)
    }

    /// The name of metric `id`.
    ///
    /// # Panics
    ///
    /// If `id` is not in the table.
    pub fn name(&self, id: MetricId) -> &str {
        &self.names[usize::from(id)]
    }

    /// The parent of metric `id`: `Some(HITS)` for a method, `None` for a metric.
    ///
    /// # Panics
    ///
    /// If `id` is not in the table.
    pub fn parent(&self, id: MetricId) -> Option<MetricId> {
        self.parents[usize::from(id)]
    }
}

/// A compiled mapping rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None` for `ANY`.
    pub method: Option<Method>,
    /// The compiled pattern, under its backend usage path for a backend's rule.
    pub pattern: Pattern,
    /// The metric or method it adds to.
    pub metric: MetricId,
    /// How much it adds (at least 1).
    pub delta: u64,
    /// Stop the scan after this rule when it matches.
    pub last: bool,
}

/// What one request uses: a delta per metric, ancestors included once resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage(pub Vec<(MetricId, u64)>);

impl Usage {
    /// Adds `delta` to `metric` (saturating).
    pub fn add(&mut self, metric: MetricId, delta: u64) {
        match self.0.iter_mut().find(|(m, _)| *m == metric) {
            Some((_, d)) => *d = d.saturating_add(delta),
            None => self.0.push((metric, delta)),
        }
    }

    /// Whether no metric is used.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every method's delta to its ancestors (methods count on `hits`).
    pub fn with_ancestors(mut self, metrics: &MetricTable) -> Usage {
        // Each direct usage's own delta goes up its ancestry, even where an ancestor is
        // itself a direct usage (its entry grows meanwhile): the deltas are copied first,
        // on the stack when few (this runs for every request and metered frame).
        let mut few = [(0 as MetricId, 0u64); 8];
        let many;
        let direct: &[(MetricId, u64)] = if self.0.len() <= few.len() {
            few[..self.0.len()].copy_from_slice(&self.0);
            &few[..self.0.len()]
        } else {
            many = self.0.clone();
            &many
        };
        for &(metric, delta) in direct {
            let mut cur = metrics.parent(metric);
            while let Some(p) = cur {
                self.add(p, delta);
                cur = metrics.parent(p);
            }
        }
        self
    }

    /// The delta of `metric`; 0 when unused.
    pub fn delta(&self, metric: MetricId) -> u64 {
        self.0.iter().find(|(m, _)| *m == metric).map_or(0, |(_, d)| *d)
    }
}

/// A product's compiled mapping rules (product rules first, then each backend usage's
/// rules under its path).
#[derive(Debug, Clone, Default)]
pub struct Mapper {
    rules: Vec<Rule>,
    needs_query: bool,
}

impl Mapper {
    /// A mapper running `rules` in order.
    pub fn new(rules: Vec<Rule>) -> Self {
        let needs_query = rules.iter().any(|r| r.pattern.has_query());
        Mapper { rules, needs_query }
    }

    /// Whether any rule looks at query parameters (so the caller parses the query once).
    pub fn needs_query(&self) -> bool {
        self.needs_query
    }

    /// Adds the delta of every matching rule to `usage`; returns whether any matched.
    pub fn map(&self, method: &Method, path: &str, query: &QueryArgs<'_>, usage: &mut Usage) -> bool {
        let mut matched = false;
        for rule in &self.rules {
            if rule.method.as_ref().is_some_and(|m| m != method) {
                continue;
            }
            // Most rules fail on their leading text: one comparison here, not the
            // matcher's walk (a tenth of the full request's instructions went to trying
            // 20 rules).
            if !path.as_bytes().starts_with(rule.pattern.literal_prefix().as_bytes()) {
                continue;
            }
            if rule.pattern.matches(path, query) {
                matched = true;
                usage.add(rule.metric, rule.delta);
                if rule.last {
                    break;
                }
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, pattern: &str, metric: MetricId, delta: u64, last: bool) -> Rule {
        Rule {
            method: (method != "ANY").then(|| method.parse().expect("method")),
            pattern: Pattern::parse(pattern).expect("pattern"),
            metric,
            delta,
            last,
        }
    }

    fn setup() -> (MetricTable, Mapper) {
        let mut t = MetricTable::new();
        let connect = t.add("connect", Some(HITS));
        let messages = t.add("messages", None);
        let mapper = Mapper::new(vec![
            rule("GET", "/", connect, 1, false),
            rule("ANY", "/rooms/{room}/messages?format=json", HITS, 2, true),
            rule("POST", "/rooms/{room}/messages", messages, 5, false),
            rule("GET", "/rooms", HITS, 1, false),
        ]);
        (t, mapper)
    }

    fn run(m: &Mapper, method: &str, path: &str, query: Option<&str>) -> Option<Usage> {
        let mut u = Usage::default();
        let q = QueryArgs::parse(query);
        m.map(&method.parse().expect("method"), path, &q, &mut u).then_some(u)
    }

    #[test]
    fn every_matching_rule_adds_and_last_stops() {
        let (t, m) = setup();
        // GET / and GET /rooms both match /rooms/1/messages?format=json; the ANY rule is last.
        let u = run(&m, "GET", "/rooms/1/messages", Some("format=json")).expect("match");
        assert_eq!(u, Usage(vec![(1, 1), (HITS, 2)]));
        // With ancestors: connect (a method) also counts on hits.
        assert_eq!(u.with_ancestors(&t).delta(HITS), 3);
    }

    #[test]
    fn each_usage_climbs_its_ancestry_with_its_own_delta() {
        let mut t = MetricTable::default();
        let root = t.add("hits", None);
        let mid = t.add("mid", Some(root));
        let leaf = t.add("leaf", Some(mid));
        // leaf 1 → mid and hits; mid's own 1 → hits (not mid's grown 2).
        let u = Usage(vec![(leaf, 1), (mid, 1)]).with_ancestors(&t);
        assert_eq!((u.delta(leaf), u.delta(mid), u.delta(root)), (1, 2, 2));
        // More usages than fit on the stack take the same path.
        let many: Vec<_> = (0..10).map(|i| t.add(&format!("m{i}"), Some(root))).collect();
        let u = Usage(many.iter().map(|m| (*m, 1)).collect()).with_ancestors(&t);
        assert_eq!(u.delta(root), 10);
    }

    #[test]
    fn method_filter_and_no_match() {
        let (_, m) = setup();
        let u = run(&m, "POST", "/rooms/1/messages", None).expect("match");
        assert_eq!(u, Usage(vec![(2, 5)]));
        assert!(run(&m, "DELETE", "/nothing", None).is_none());
        assert!(run(&m, "PUT", "/rooms", None).is_none());
    }

    #[test]
    fn without_last_the_scan_continues() {
        let (_, m) = setup();
        let u = run(&m, "GET", "/rooms/9", None).expect("match");
        assert_eq!(u, Usage(vec![(1, 1), (HITS, 1)]));
    }
}
