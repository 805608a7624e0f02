//! Micro-benchmarks of the pure admission path, without HTTP or TLS:
//!
//! - `review/*`: [`review`] on the AdmissionReview bytes the API server sends (parse, decide,
//!   mutate, serialize the response): all the CPU work of one `POST /mutate`;
//! - `mutate/*`: [`mutate`] alone, on a pod already parsed into a `serde_json::Value`;
//! - `parse_full/*`: the whole AdmissionReview parsed into a `serde_json::Value`, which is what a
//!   handler that does not skip fields pays before it even starts (for comparison);
//! - `router/*`: one request through the webhook's axum router in process (routing, load
//!   shedding, deadline, body reading, review, metrics, and the log line formatted as the server
//!   does, into a sink): the server's work per request without TLS, HTTP parsing and sockets.
//!
//! `cargo bench --bench mutation` (under `cargo test` each runs once, as a smoke test).

use std::hint::black_box;

use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use warmpool::config::Config;
use warmpool::core::mutation::{Mutation, Rules, mutate};
use warmpool::core::tenant::TenantSelector;
use warmpool::telemetry::Readiness;
use warmpool::webhook::metrics::WebhookMetrics;
use warmpool::webhook::review::{Decision, review};
use warmpool::webhook::server::{AppState, router};

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

    // The log lines, formatted as `warmpool webhook` formats them (text, level info), into a
    // sink: their cost counts, not the terminal's.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let app = router(AppState::new(
        rules.clone(),
        selector,
        WebhookMetrics::register(&mut prometheus_client::registry::Registry::default()),
        Readiness::default(),
    ));
    let call = |request: http::Request<Body>| {
        runtime.block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), 200);
            response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes()
        })
    };
    let mut group = c.benchmark_group("router");
    group.bench_function("healthz", |b| {
        b.iter(|| {
            call(
                http::Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
        })
    });
    for (size, name) in FIXTURES {
        let body = axum::body::Bytes::from(fixture(name));
        group.bench_function(format!("mutate_{size}"), |b| {
            b.iter(|| {
                let request = http::Request::post("/mutate")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .body(Body::from(body.clone()))
                    .expect("request");
                call(request)
            })
        });
    }
    group.finish();
}

criterion_group!(mutation, benches);
criterion_main!(mutation);
