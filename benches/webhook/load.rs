//! The load generator: the fixture payloads, one phase of clients against one target, each answer checked.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio_rustls::TlsConnector;

use crate::connection::Connection;
use crate::options::{Options, Target};
use crate::procfs::{TICKS_PER_SECOND, cpu_ticks, rss};
use crate::server::Server;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The bodies, shared by every client.
pub struct Payloads {
    small: Bytes,
    large: Bytes,
    transport: Bytes,
}

pub fn payloads() -> Payloads {
    let read = |name: &str| {
        let path = Path::new(FIXTURES).join(name);
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    };
    let small = read("pod-create.json");
    Payloads {
        transport: Bytes::from(vec![b'x'; small.len()]),
        small,
        large: read("pod-create-large.json"),
    }
}

/// The outcome of one phase (one target at one concurrency for one round).
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub requests: u64,
    pub errors: u64,
    /// Connections re-opened because the server had closed them (not errors).
    pub reconnects: u64,
    /// Latencies of the successful requests, in microseconds.
    pub latencies: Vec<u32>,
    pub elapsed: Duration,
    pub peak_rss_kib: u64,
    /// CPU time (user + system) of the server and of this load generator while measuring.
    pub server_cpu: Duration,
    pub client_cpu: Duration,
    pub first_error: Option<String>,
}

/// Runs `clients` connections against `target` for the warm-up and the measured time.
pub async fn run_phase(
    options: &Options,
    server: &Server,
    connector: &TlsConnector,
    payloads: &Arc<Payloads>,
    target: Target,
    clients: usize,
    fresh: bool,
) -> Phase {
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let until = measure_from + options.duration;
    let pid = server.pid();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        let mut cpu_from = None;
        while Instant::now() < until {
            if cpu_from.is_none() && Instant::now() >= measure_from {
                cpu_from = Some((cpu_ticks("self"), cpu_ticks(&pid.to_string())));
            }
            peak = peak.max(rss(pid).map_or(0, |m| m.rss_kib));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (client, server) = cpu_from.unwrap_or_default();
        let cpu = (
            cpu_ticks("self").saturating_sub(client),
            cpu_ticks(&pid.to_string()).saturating_sub(server),
        );
        (peak, cpu)
    });
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let connector = connector.clone();
            let payloads = Arc::clone(payloads);
            let addr = server.addr;
            tokio::spawn(async move {
                client(
                    addr,
                    &connector,
                    &payloads,
                    target,
                    fresh,
                    measure_from,
                    until,
                )
                .await
            })
        })
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        match task.await {
            Ok(p) => {
                phase.requests += p.requests;
                phase.errors += p.errors;
                phase.reconnects += p.reconnects;
                phase.latencies.extend(p.latencies);
                phase.first_error = phase.first_error.or(p.first_error);
            }
            Err(e) => {
                phase.errors += 1;
                phase.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    phase.elapsed = options.duration.max(Duration::from_millis(1));
    let (peak, (client_ticks, server_ticks)) = sampler.await.unwrap_or_default();
    phase.peak_rss_kib = peak;
    phase.client_cpu = Duration::from_millis(client_ticks * 1000 / TICKS_PER_SECOND);
    phase.server_cpu = Duration::from_millis(server_ticks * 1000 / TICKS_PER_SECOND);
    phase.latencies.sort_unstable();
    phase
}

/// One client: a keep-alive connection, re-opened when the server closes it; or, when `fresh`,
/// a new connection for every request (its latency then includes the TCP and TLS handshakes).
pub async fn client(
    addr: SocketAddr,
    connector: &TlsConnector,
    payloads: &Payloads,
    target: Target,
    fresh: bool,
    measure_from: Instant,
    until: Instant,
) -> Phase {
    let mut phase = Phase {
        latencies: Vec::with_capacity(16 * 1024),
        ..Phase::default()
    };
    let mut connection: Option<Connection> = None;
    let mut last_used = Instant::now();
    let fail = |phase: &mut Phase, measured: bool, error: String| {
        if measured {
            phase.errors += 1;
            phase.first_error.get_or_insert(error);
        }
    };
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let measured = now >= measure_from;
        let opened = Instant::now();
        let mut conn = match connection.take() {
            Some(c) if !c.is_closed() => c,
            previous => {
                if previous.is_some() && measured {
                    phase.reconnects += 1;
                }
                match Connection::open(addr, connector).await {
                    Ok(c) => c,
                    Err(e) => {
                        fail(&mut phase, measured, format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
        };
        let idle = last_used.elapsed();
        let sent = if fresh { opened } else { Instant::now() };
        let result = match target {
            Target::Healthz => conn.get("/healthz").await,
            Target::MutateSmall => conn.send("POST", "/mutate", payloads.small.clone()).await,
            Target::MutateLarge => conn.send("POST", "/mutate", payloads.large.clone()).await,
            Target::Transport => {
                conn.send("POST", "/mutate", payloads.transport.clone())
                    .await
            }
        };
        let latency = sent.elapsed();
        last_used = Instant::now();
        match result {
            Ok((status, body)) if answered_as_expected(target, status, &body) => {
                if measured {
                    phase.requests += 1;
                    phase
                        .latencies
                        .push(latency.as_micros().min(u32::MAX as u128) as u32);
                }
                connection = (!fresh).then_some(conn);
            }
            Ok((status, body)) => {
                fail(
                    &mut phase,
                    measured,
                    format!("status {status}: {}", String::from_utf8_lossy(&body)),
                );
                connection = Some(conn);
            }
            // A connection the server closed while it was idle (its 2 s header-read deadline):
            // a client retries such a request on a new connection, as Go's does.
            Err(_) if idle >= Duration::from_millis(1500) => {
                if measured {
                    phase.reconnects += 1;
                }
            }
            Err(e) => fail(&mut phase, measured, e),
        }
    }
    phase
}

/// Whether an answer to /mutate carries the JSONPatch the fixtures need.
/// Whether an answer is the one `target` must get: 200 with a JSONPatch for a review, 200 for
/// `/healthz`, the 400 of a body that is not JSON for the transport floor.
fn answered_as_expected(target: Target, status: u16, body: &[u8]) -> bool {
    match target {
        Target::Healthz => status == 200,
        Target::Transport => status == 400,
        Target::MutateSmall | Target::MutateLarge => status == 200 && is_patch(body),
    }
}

pub fn is_patch(body: &[u8]) -> bool {
    pub const NEEDLE: &[u8] = br#""patchType":"JSONPatch""#;
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}
