//! Hostile clients against the real `warmpool webhook` binary over real TLS on 127.0.0.1.
//!
//! Each test starts a server, lets one kind of hostile client loose on it — trickled headers,
//! hundreds of silent connections, garbage handshakes, endless bodies, HTTP/2 rapid resets, a
//! burst of 10,000 reviews — and meanwhile a watcher sends a well-formed review on a fresh
//! connection (HTTP/1.1 and HTTP/2 in turn) every 100 ms and samples the server's resident
//! memory (`VmRSS`). Every test asserts that each of those reviews was answered correctly
//! within [`PROBE_BUDGET`], that memory stayed under [`RSS_LIMIT_KIB`], and what the server did
//! to the hostile client. Every loop is bounded in count and in time; only 127.0.0.1 is used.
//!
//! What `tests/webhook_server.rs` proves already is not repeated here: one stalled client per
//! deadline, bad JSON, 413 on a 4 MiB body, plain HTTP on the TLS port, certificate rotation,
//! drain on SIGTERM. The figures each test prints (`--nocapture`) are in docs/reliability.md.

#[path = "../support/loopback.rs"]
mod loopback;
#[path = "../support/tls.rs"]
mod tls;

mod bodies;
mod burst;
mod client;
mod handshakes;
mod rapid_reset;
mod raw;
mod server;
mod silent_connections;
mod slowloris;
mod watcher;

use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pod-create.json"
);

/// A well-formed review on a fresh connection is answered within this, whatever else happens.
const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// The same while 10,000 reviews are being sent: the two cores are shared by the server and
/// the client that keeps it saturated, so a fresh connection waits its turn for CPU.
const BURST_PROBE_BUDGET: Duration = Duration::from_secs(2);
/// The server's resident memory stays under this (KiB).
const RSS_LIMIT_KIB: u64 = 100 * 1024;
/// The server's deadlines (src/webhook/server.rs), with a margin for a busy machine.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
const HEADER_DEADLINE: Duration = Duration::from_secs(2);
const REQUEST_DEADLINE: Duration = Duration::from_secs(4);
const FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const MARGIN: Duration = Duration::from_millis(2500);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One hostile test at a time: they measure latency and memory, and share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
