//! Micro-benchmarks of the pure admission path, without HTTP or TLS:
//!
//! - `review/*`: [`review`] on the AdmissionReview bytes the API server sends (parse, decide,
//!   mutate, serialize the response): all the CPU work of one `POST /mutate`;
//! - `mutate/*`: [`mutate`] alone, on a pod already parsed into a `serde_json::Value`;
//! - `parse_full/*`: the whole AdmissionReview parsed into a `serde_json::Value`, which is what a
//!   handler that does not skip fields pays before it even starts (for comparison).
//!
//! `cargo bench --bench mutation` (under `cargo test` each runs once, as a smoke test).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use warmpool::config::Config;
use warmpool::mutation::{Mutation, Rules, mutate};
use warmpool::tenant::TenantSelector;
use warmpool::webhook::review::{Decision, review};

const FIXTURES: [(&str, &str); 2] = [
    ("small", "pod-create.json"),
    ("large", "pod-create-large.json"),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn benches(c: &mut Criterion) {
    let config = Config::default();
    let rules = Rules::from_config(&config);
    let selector = TenantSelector::new(&config.tenants.namespace_patterns, Some("warmpool"))
        .expect("the default patterns are valid");

    let mut group = c.benchmark_group("review");
    for (size, name) in FIXTURES {
        let body = fixture(name);
        // Benchmark what the server does, not an error path.
        let reviewed = review(&body, &rules, &selector).expect("the fixture is a review");
        assert!(matches!(reviewed.decision, Decision::Patched(_)));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(size, |b| {
            b.iter(|| review(black_box(&body), &rules, &selector))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("mutate");
    for (size, name) in FIXTURES {
        let review: Value = serde_json::from_slice(&fixture(name)).expect("JSON");
        let pod = review["request"]["object"].clone();
        assert!(matches!(mutate(&pod, &rules), Mutation::Patch { .. }));
        group.bench_function(size, |b| b.iter(|| mutate(black_box(&pod), &rules)));
    }
    group.finish();

    let mut group = c.benchmark_group("parse_full");
    for (size, name) in FIXTURES {
        let body = fixture(name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(size, |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).expect("JSON"))
        });
    }
    group.finish();
}

criterion_group!(mutation, benches);
criterion_main!(mutation);
