//! The harness of warmpool's tests, benches and demo, and nothing else: the local control plane
//! and its real and fake nodes, Karpenter, Helm and the chart, the real `warmpool` processes
//! under test, and the clients that probe them. The tests themselves live in the test crates
//! (tests/e2e, tests/chart, tests/webhook, tests/mutation, tests/cli).

use std::path::Path;

pub mod balancer;
pub mod chart;
pub mod chart_rbac;
pub mod cluster;
pub mod fakelet;
pub mod helm;
pub mod hostile;
pub mod karpenter;
pub mod loopback;
pub mod objects;
pub mod oracle;
pub mod process;
pub mod promql;
pub mod real_nodes;
pub mod real_warmpool;
pub mod reconciler;
pub mod recording_proxy;
pub mod release;
pub mod scenario;
pub mod static_build;
pub mod subject;
pub mod tls;
pub mod webhook;

/// The repository's root (this crate lives in tests/support).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("tests/support sits two levels below the repository's root")
}

/// In CI a missing prerequisite is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}
