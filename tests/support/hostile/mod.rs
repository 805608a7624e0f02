//! Hostile clients against the real `warmpool webhook` over real TLS on 127.0.0.1: the server
//! under test (its memory, descriptors and metrics), a well-behaved client, raw connections, and
//! the watcher that probes the server while a hostile client runs. The tests are in
//! tests/webhook/hostile.

use std::time::Duration;

pub mod client;
pub mod raw;
pub mod server;
pub mod watcher;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The review the probes send (a Pod CREATE).
pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/pod-create.json");

/// A well-formed review on a fresh connection is answered within this, whatever else happens.
pub const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// The server's resident memory stays under this (KiB).
pub const RSS_LIMIT_KIB: u64 = 100 * 1024;
