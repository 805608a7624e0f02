//! Hostile clients against the real `warmpool webhook` binary over real TLS on 127.0.0.1.
//!
//! Each test starts a server, lets one kind of hostile client loose on it — trickled headers,
//! hundreds of silent connections, garbage handshakes, endless bodies, HTTP/2 rapid resets, a
//! burst of 10,000 reviews — and meanwhile a watcher sends a well-formed review on a fresh
//! connection (HTTP/1.1 and HTTP/2 in turn) every 100 ms and samples the server's resident
//! memory (`VmRSS`). Every test asserts that each of those reviews was answered correctly
//! within the harness's `PROBE_BUDGET`, that memory stayed under its `RSS_LIMIT_KIB`, and what the server did
//! to the hostile client. Every loop is bounded in count and in time; only 127.0.0.1 is used.
//!
//! What `server.rs` proves already is not repeated here: one stalled client per deadline, bad
//! JSON, 413 on a 4 MiB body, plain HTTP on the TLS port, certificate rotation, drain on
//! SIGTERM. The harness (server, clients, watcher) is `support::hostile`; the
//! figures each test prints (`--nocapture`) are in docs/reliability.md.

mod bodies;
mod burst;
mod handshakes;
mod rapid_reset;
mod silent_connections;
mod slowloris;

use std::time::Duration;

use support::hostile::server::Server;
use support::hostile::watcher::{Watcher, watch};

use super::BIN;

/// The probe budget while 10,000 reviews are being sent: the two cores are shared by the server and
/// the client that keeps it saturated, so a fresh connection waits its turn for CPU.
const BURST_PROBE_BUDGET: Duration = Duration::from_secs(2);
/// The server's deadlines (src/webhook/server.rs), with a margin for a busy machine.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
const HEADER_DEADLINE: Duration = Duration::from_secs(2);
const REQUEST_DEADLINE: Duration = Duration::from_secs(4);
const FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const MARGIN: Duration = Duration::from_millis(2500);

/// One hostile test at a time: they measure latency and memory, and share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every hostile test starts with: its turn on the machine (the guard, held until the test
/// ends: see `SERIAL`), a fresh server, and the watcher that probes it and samples its memory
/// meanwhile.
async fn watched_server() -> (tokio::sync::MutexGuard<'static, ()>, Server, Watcher) {
    let turn = SERIAL.lock().await;
    let server = Server::start(BIN);
    let watcher = watch(&server);
    (turn, server, watcher)
}
