//! Load benchmark of the real `warmpool webhook` over TLS on loopback.
//!
//! ```text
//! cargo bench --bench webhook                       # the full run (about 5 minutes)
//! cargo bench --bench webhook -- --duration 2 --rounds 1 --concurrency 32 --targets small
//! cargo bench --bench webhook -- --server PATH      # another build of warmpool
//! ```
//!
//! It writes certificates with `warmpool certs` into a temporary directory, times start-up
//! (exec to `GET /readyz` 200) on fresh processes, then starts one server and drives it from this
//! process with keep-alive HTTP/1.1 connections (hyper + tokio-rustls, one request in flight per
//! connection) at each concurrency, on three targets in turn: `GET /healthz` (the ceiling: TLS,
//! HTTP and routing with no work), `POST /mutate` with the small fixture, and with the large
//! one. Every answer is checked (status 200; for /mutate a JSONPatch in the body). Then a few
//! seconds of cold requests: a new connection per request, with a full TLS handshake and with a
//! resumed session. It prints requests/s, p50/p99/p99.9 latency, errors, the CPU time the server
//! and this load generator spent per request, the server's RSS (idle, peak per phase, VmHWM),
//! mutate/ceiling, the large/small latency ratio and start-up, as Markdown. Traffic goes to
//! 127.0.0.1 only, and every phase is bounded in time. The client shares the machine with the
//! server: its cost is in the figures.
//!
//! The server is the `warmpool` binary that cargo builds with this bench (the release profile
//! under `cargo bench`), or `--server PATH`. Its logs (one line per review, as in production) go
//! to /dev/null, or to `--server-logs FILE`.
//!
//! Under `cargo test` (no `--bench` argument) it makes a smoke run of a few seconds against the
//! debug binary, and fails on any error.

mod connection;
mod load;
mod options;
mod procfs;
mod report;
mod server;

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::connection::connector;
use crate::load::{Phase, payloads, run_phase};
use crate::options::{Options, Target};
use crate::procfs::rss;
use crate::report::{Report, percentile, print_header};
use crate::server::Server;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{}", options::USAGE);
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    if !options.server.is_file() {
        return Err(format!(
            "no server binary at {}; build it or pass --server",
            options.server.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let status = Command::new(&options.server)
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--dns", "localhost", "--ip", "127.0.0.1", "--days", "1"])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", options.server.display()))?;
    if !status.success() {
        return Err("`warmpool certs` failed".into());
    }
    let ca = dir.path().join("ca.crt");
    let resumed = connector(&ca, options.proto, true)?;
    let full = connector(&ca, options.proto, false)?;
    let connector = resumed;
    let payloads = Arc::new(payloads());

    print_header(&options);

    // Start-up: exec to /readyz 200, on fresh processes.
    let mut startups = Vec::new();
    for _ in 0..options.startup_runs {
        let mut server = Server::start(&options, dir.path())?;
        let ready = server.wait_ready(&connector).await?;
        startups.push(ready);
        server.stop();
    }
    startups.sort();

    let mut server = Server::start(&options, dir.path())?;
    server.wait_ready(&connector).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_start = rss(server.pid()).map(|m| m.rss_kib).unwrap_or(0);

    let mut results: BTreeMap<(usize, Target), Vec<Phase>> = BTreeMap::new();
    for round in 0..options.rounds {
        for &clients in &options.concurrency {
            for &target in &options.targets {
                let phase = run_phase(
                    &options, &server, &connector, &payloads, target, clients, false,
                )
                .await;
                eprintln!(
                    "round {} c={clients:<3} {:<36} {:>8.0} req/s  p99 {:>7} µs  errors {}",
                    round + 1,
                    target.label(),
                    phase.requests as f64 / phase.elapsed.as_secs_f64(),
                    percentile(&phase.latencies, 0.99),
                    phase.errors
                );
                if let Some(e) = &phase.first_error {
                    eprintln!("  first error: {e}");
                }
                results.entry((clients, target)).or_default().push(phase);
            }
        }
    }
    // Cold requests: a new connection for each, as the API server makes after the server has
    // closed an idle one (2 s), with a full TLS handshake and with a resumed session.
    let mut cold = Vec::new();
    for (how, tls) in [
        ("full TLS handshake", &full),
        ("resumed TLS session", &connector),
    ] {
        for clients in [1, 8] {
            let phase = run_phase(
                &options,
                &server,
                tls,
                &payloads,
                Target::MutateSmall,
                clients,
                true,
            )
            .await;
            cold.push((how, clients, phase));
        }
    }

    // Idle again: the client's connections are gone; the server closes its side within 2 s.
    tokio::time::sleep(Duration::from_secs(if options.smoke { 0 } else { 3 })).await;
    let after = rss(server.pid()).unwrap_or_default();
    let exited_cleanly = server.stop_gracefully();

    let size = std::fs::metadata(&options.server)
        .map(|m| m.len())
        .unwrap_or(0);
    let report = Report {
        results: &results,
        cold: &cold,
        startups: &startups,
        idle_start_kib: idle_start,
        idle_after_kib: after.rss_kib,
        hwm_kib: after.hwm_kib,
        binary_bytes: size,
        exited_cleanly,
    };
    report.print(&options);

    let errors: u64 = results.values().flatten().map(|p| p.errors).sum::<u64>()
        + cold.iter().map(|(_, _, p)| p.errors).sum::<u64>();
    let requests: u64 = results.values().flatten().map(|p| p.requests).sum();
    if errors > 0 {
        return Err(format!("{errors} requests failed"));
    }
    if requests == 0 {
        return Err("no request was answered".into());
    }
    if !exited_cleanly {
        return Err("the server did not exit 0 on SIGTERM".into());
    }
    Ok(())
}
