//! Criterion benchmarks of the functions every request or frame runs through:
//! mapping-rule matching over 100 rules, a limit check on the in-memory counters, and
//! frame header scanning. `cargo bench -p tollgate-gateway` runs them; whole-proxy
//! comparisons with peers live in `bench/`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tollgate_counters::{Check, MemoryCounters, Period};
use tollgate_gateway::frames::parse_header;
use tollgate_gateway::mapping::{HITS, Mapper, MetricTable, Rule, Usage};
use tollgate_model::pattern::{Pattern, QueryArgs};

/// 100 rules like an API's: `/v1/resource{i}/{id}` per verb, the last one `/`.
fn hundred_rules() -> (MetricTable, Mapper) {
    let mut metrics = MetricTable::new();
    let mut rules = Vec::new();
    for i in 0..99 {
        let method = metrics.add(&format!("m{i}"), Some(HITS));
        let verb = ["GET", "POST", "PUT"][i % 3];
        rules.push(Rule {
            method: Some(verb.parse().expect("verb")),
            pattern: Pattern::parse(&format!("/v1/resource{i}/{{id}}/items$")).expect("pattern"),
            metric: method,
            delta: 1,
            last: false,
        });
    }
    rules.push(Rule {
        method: None,
        pattern: Pattern::parse("/").expect("pattern"),
        metric: HITS,
        delta: 1,
        last: false,
    });
    (metrics, Mapper::new(rules))
}

fn mapping(c: &mut Criterion) {
    let (_, mapper) = hundred_rules();
    let get = http::Method::GET;
    let query = QueryArgs::parse(Some("user_key=abc&page=2"));
    let mut group = c.benchmark_group("mapping_100_rules");
    for (name, path) in
        [("first_rule", "/v1/resource0/42/items"), ("last_rule", "/v1/resource96/42/items"), ("catch_all", "/other")]
    {
        group.bench_with_input(BenchmarkId::from_parameter(name), path, |b, path| {
            b.iter(|| {
                let mut usage = Usage::default();
                black_box(mapper.map(&get, black_box(path), &query, &mut usage));
                usage
            })
        });
    }
    group.finish();
}

fn limits(c: &mut Criterion) {
    let counters = MemoryCounters::default();
    let checks = [
        Check { metric: "hits", period: Period::Minute, max: u64::MAX, delta: 1 },
        Check { metric: "hits", period: Period::Day, max: u64::MAX, delta: 1 },
        Check { metric: "messages", period: Period::Hour, max: u64::MAX, delta: 1 },
    ];
    c.bench_function("limit_check_3_windows", |b| {
        b.iter(|| black_box(counters.authorize(black_box("acme/app"), &checks, 1_795_000_000)))
    });
}

fn frames(c: &mut Criterion) {
    // 1,000 masked 32-byte text frames, as a client sends them.
    let mut stream = Vec::new();
    for _ in 0..1000 {
        stream.extend_from_slice(&[0x81, 0x80 | 32, 1, 2, 3, 4]);
        stream.extend_from_slice(&[0x55; 32]);
    }
    let mut group = c.benchmark_group("frame_headers");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("scan_1000_frames", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut n = 0;
            while at < stream.len() {
                let h = parse_header(&stream[at..]).expect("valid").expect("complete");
                at += h.header_len + h.payload_len as usize;
                n += 1;
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, mapping, limits, frames);
criterion_main!(benches);
