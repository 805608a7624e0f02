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

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// A request that takes longer than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

#[derive(Debug, Clone)]
struct Options {
    server: PathBuf,
    server_logs: Option<PathBuf>,
    proto: Proto,
    concurrency: Vec<usize>,
    targets: Vec<Target>,
    warmup: Duration,
    duration: Duration,
    rounds: usize,
    startup_runs: usize,
    /// Worker threads of this load generator's runtime (default: one per CPU).
    client_threads: usize,
    smoke: bool,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // cargo passes `--bench` to a bench target run by `cargo bench`, never under `cargo test`.
        let smoke = !args.iter().any(|a| a == "--bench");
        let mut options = Options {
            server: PathBuf::from(env!("CARGO_BIN_EXE_warmpool")),
            server_logs: None,
            proto: Proto::H1,
            concurrency: vec![1, 8, 32, 128],
            targets: Target::ALL.to_vec(),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            rounds: 3,
            startup_runs: 10,
            client_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            smoke,
        };
        if smoke {
            options.concurrency = vec![1, 8];
            options.warmup = Duration::from_millis(100);
            options.duration = Duration::from_millis(300);
            options.rounds = 1;
            options.startup_runs = 1;
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            let seconds = |v: String| {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| *s >= 0.0 && *s <= 600.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("`{v}` is not a number of seconds (0-600)"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--server" => options.server = PathBuf::from(value("--server")?),
                "--server-logs" => options.server_logs = Some(value("--server-logs")?.into()),
                "--proto" => {
                    options.proto = match value("--proto")?.as_str() {
                        "h1" | "http1" => Proto::H1,
                        "h2" | "http2" => Proto::H2,
                        other => return Err(format!("--proto h1|h2, not `{other}`")),
                    }
                }
                "--concurrency" => {
                    options.concurrency = value("--concurrency")?
                        .split(',')
                        .map(|c| {
                            c.trim()
                                .parse::<usize>()
                                .ok()
                                .filter(|c| (1..=512).contains(c))
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or("--concurrency takes a list like 1,8,32,128 (each 1-512)")?;
                }
                "--targets" => {
                    options.targets = value("--targets")?
                        .split(',')
                        .map(|t| match t.trim() {
                            "healthz" => Some(Target::Healthz),
                            "small" => Some(Target::MutateSmall),
                            "large" => Some(Target::MutateLarge),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()
                        .filter(|t| !t.is_empty())
                        .ok_or("--targets takes a list of healthz, small, large")?;
                }
                "--warmup" => options.warmup = seconds(value("--warmup")?)?,
                "--duration" => options.duration = seconds(value("--duration")?)?,
                "--rounds" => {
                    options.rounds = value("--rounds")?
                        .parse()
                        .ok()
                        .filter(|r| (1..=20).contains(r))
                        .ok_or("--rounds takes 1-20")?;
                }
                "--client-threads" => {
                    options.client_threads = value("--client-threads")?
                        .parse()
                        .ok()
                        .filter(|r| (1..=64).contains(r))
                        .ok_or("--client-threads takes 1-64")?;
                }
                "--startup-runs" => {
                    options.startup_runs = value("--startup-runs")?
                        .parse()
                        .ok()
                        .filter(|r| (1..=100).contains(r))
                        .ok_or("--startup-runs takes 1-100")?;
                }
                // Filters and flags that cargo or a test runner may pass: nothing to filter here.
                other if other.starts_with('-') => {}
                _ => {}
            }
        }
        Ok(options)
    }
}

/// What one phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Healthz,
    MutateSmall,
    MutateLarge,
}

impl Target {
    const ALL: [Target; 3] = [Target::Healthz, Target::MutateSmall, Target::MutateLarge];

    fn label(self) -> &'static str {
        match self {
            Target::Healthz => "GET /healthz (ceiling)",
            Target::MutateSmall => "POST /mutate small",
            Target::MutateLarge => "POST /mutate large",
        }
    }
}

/// The bodies, shared by every client.
struct Payloads {
    small: Bytes,
    large: Bytes,
}

fn payloads() -> Payloads {
    let read = |name: &str| {
        let path = Path::new(FIXTURES).join(name);
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    };
    Payloads {
        small: read("pod-create.json"),
        large: read("pod-create-large.json"),
    }
}

/// The outcome of one phase (one target at one concurrency for one round).
#[derive(Debug, Default, Clone)]
struct Phase {
    requests: u64,
    errors: u64,
    /// Connections re-opened because the server had closed them (not errors).
    reconnects: u64,
    /// Latencies of the successful requests, in microseconds.
    latencies: Vec<u32>,
    elapsed: Duration,
    peak_rss_kib: u64,
    /// CPU time (user + system) of the server and of this load generator while measuring.
    server_cpu: Duration,
    client_cpu: Duration,
    first_error: Option<String>,
}

fn main() -> ExitCode {
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
                    "round {} c={clients:<3} {:<24} {:>8.0} req/s  p99 {:>7} µs  errors {}",
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

fn print_header(options: &Options) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# warmpool webhook load benchmark");
    println!();
    println!("- server: `{}`", options.server.display());
    println!(
        "- machine: {cpus} CPUs, {model}; load average at start: {}",
        load.trim()
    );
    println!(
        "- protocol: {}, keep-alive, one request in flight per connection; load generator on {} \
         thread(s); warm-up {:.1} s, measure {:.1} s per phase, {} round(s){}",
        match options.proto {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        },
        options.client_threads,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
        options.rounds,
        if options.smoke { " (smoke run)" } else { "" },
    );
    println!();
}

struct Report<'a> {
    results: &'a BTreeMap<(usize, Target), Vec<Phase>>,
    cold: &'a [(&'static str, usize, Phase)],
    startups: &'a [Duration],
    idle_start_kib: u64,
    idle_after_kib: u64,
    hwm_kib: u64,
    binary_bytes: u64,
    exited_cleanly: bool,
}

impl Report<'_> {
    fn print(&self, options: &Options) {
        println!("## Throughput and latency");
        println!();
        println!(
            "Requests/s over all rounds (min–max of the rounds in brackets); latency percentiles \
             over every request of every round; CPU time of the server and of the load generator \
             per request; the server's peak RSS during the phase in the first round."
        );
        println!();
        println!(
            "| clients | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req | client CPU µs/req | peak RSS MiB | mutate/ceiling |"
        );
        println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for &clients in &options.concurrency {
            let ceiling = self.rate(clients, Target::Healthz).0;
            for target in Target::ALL {
                let Some(phases) = self.results.get(&(clients, target)) else {
                    continue;
                };
                let (rate, min, max) = self.rate(clients, target);
                let latencies = self.latencies(clients, target);
                let errors: u64 = phases.iter().map(|p| p.errors).sum();
                let reconnects: u64 = phases.iter().map(|p| p.reconnects).sum();
                let requests: u64 = phases.iter().map(|p| p.requests).sum::<u64>().max(1);
                let per_request = |cpu: fn(&Phase) -> Duration| {
                    let total: Duration = phases.iter().map(cpu).sum();
                    format!("{:.0}", total.as_secs_f64() * 1e6 / requests as f64)
                };
                // The first round's: later rounds start with what earlier phases left behind.
                let peak = phases.first().map_or(0, |p| p.peak_rss_kib);
                let ratio = match target {
                    Target::Healthz => "—".to_owned(),
                    _ if ceiling > 0.0 => format!("{:.2}", rate / ceiling),
                    _ => "?".to_owned(),
                };
                let spread = if phases.len() > 1 {
                    format!(" ({min:.0}–{max:.0})")
                } else {
                    String::new()
                };
                let reconnects = if reconnects > 0 {
                    format!(" ({reconnects} reconnects)")
                } else {
                    String::new()
                };
                println!(
                    "| {clients} | {} | {rate:.0}{spread} | {} | {} | {} | {errors}{reconnects} | {} | {} | {} | {ratio} |",
                    target.label(),
                    ms(percentile(&latencies, 0.50)),
                    ms(percentile(&latencies, 0.99)),
                    ms(percentile(&latencies, 0.999)),
                    per_request(|p| p.server_cpu),
                    per_request(|p| p.client_cpu),
                    mib(peak),
                );
            }
        }
        println!();
        let both = options.targets.contains(&Target::MutateSmall)
            && options.targets.contains(&Target::MutateLarge);
        if both {
            println!("## Large pod vs small pod (latency ratio)");
            println!();
            println!("| clients | p50 large/small | p99 large/small |");
            println!("| ---: | ---: | ---: |");
            for &clients in &options.concurrency {
                let quantile =
                    |target, q| percentile(&self.latencies(clients, target), q).max(1) as f64;
                println!(
                    "| {clients} | {:.2} | {:.2} |",
                    quantile(Target::MutateLarge, 0.5) / quantile(Target::MutateSmall, 0.5),
                    quantile(Target::MutateLarge, 0.99) / quantile(Target::MutateSmall, 0.99),
                );
            }
            println!();
        }
        println!("## A new connection per request (POST /mutate small)");
        println!();
        println!("| connection | clients | req/s | p50 ms | p99 ms | errors | server CPU µs/req |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (how, clients, phase) in self.cold {
            let requests = phase.requests.max(1) as f64;
            println!(
                "| {how} | {clients} | {:.0} | {} | {} | {} | {:.0} |",
                phase.requests as f64 / phase.elapsed.as_secs_f64(),
                ms(percentile(&phase.latencies, 0.50)),
                ms(percentile(&phase.latencies, 0.99)),
                phase.errors,
                phase.server_cpu.as_secs_f64() * 1e6 / requests,
            );
        }
        println!();
        println!("## Server process");
        println!();
        let median = self.startups.get(self.startups.len() / 2).copied();
        let max = self.startups.last().copied();
        println!(
            "- start-up, exec to `GET /readyz` 200 over TLS: median {} ms, max {} ms ({} runs)",
            median.map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            max.map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            self.startups.len()
        );
        println!(
            "- RSS idle after start: {} MiB; idle after the load: {} MiB; peak (VmHWM): {} MiB",
            mib(self.idle_start_kib),
            mib(self.idle_after_kib),
            mib(self.hwm_kib)
        );
        println!(
            "- binary: {:.1} MiB ({} bytes)",
            self.binary_bytes as f64 / 1048576.0,
            self.binary_bytes
        );
        println!(
            "- SIGTERM: {}",
            if self.exited_cleanly {
                "drained and exited 0"
            } else {
                "did NOT exit 0"
            }
        );
    }

    /// Every latency of every round, sorted.
    fn latencies(&self, clients: usize, target: Target) -> Vec<u32> {
        let mut latencies: Vec<u32> = self
            .results
            .get(&(clients, target))
            .into_iter()
            .flatten()
            .flat_map(|p| p.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// Requests/s over all rounds, and the slowest and fastest round.
    fn rate(&self, clients: usize, target: Target) -> (f64, f64, f64) {
        let Some(phases) = self.results.get(&(clients, target)) else {
            return (0.0, 0.0, 0.0);
        };
        let rates: Vec<f64> = phases
            .iter()
            .map(|p| p.requests as f64 / p.elapsed.as_secs_f64().max(1e-9))
            .collect();
        let requests: u64 = phases.iter().map(|p| p.requests).sum();
        let seconds: f64 = phases.iter().map(|p| p.elapsed.as_secs_f64()).sum();
        (
            requests as f64 / seconds.max(1e-9),
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        )
    }
}

fn ms(micros: u32) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The `q` quantile of sorted latencies (nearest rank).
fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The server under test.
struct Server {
    child: Child,
    addr: SocketAddr,
    started: Instant,
}

impl Server {
    fn start(options: &Options, certs: &Path) -> Result<Server, String> {
        let addr = free_port()?;
        let admin = free_port()?;
        let logs = match &options.server_logs {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let started = Instant::now();
        let child = Command::new(&options.server)
            .arg("webhook")
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--metrics-listen")
            .arg(admin.to_string())
            .args(["--namespace", "warmpool"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", options.server.display()))?;
        Ok(Server {
            child,
            addr,
            started,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /readyz` over TLS until 200; returns the time since exec.
    async fn wait_ready(&mut self, connector: &TlsConnector) -> Result<Duration, String> {
        let deadline = self.started + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited at start: {status}"));
            }
            if let Ok(mut connection) = Connection::open(self.addr, connector).await
                && let Ok((200, _)) = connection.get("/readyz").await
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err("the server was not ready within 20 s".into());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and whether it exited 0 within the drain time.
    fn stop_gracefully(&mut self) -> bool {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            self.stop();
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    self.stop();
                    return false;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| format!("bind: {e}"))
}

#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

/// `USER_HZ`, the unit of the CPU times in /proc/PID/stat: 100 on every Linux architecture
/// that matters here.
const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time of a process (`self` or a PID) in clock ticks, from /proc.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// VmRSS and VmHWM of a process, from /proc.
fn rss(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// A TLS client trusting `ca`; `resume`: keep sessions to resume them on new connections (Go's
/// clients, the API server's included, do not unless configured to).
fn connector(ca: &Path, proto: Proto, resume: bool) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = match proto {
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    };
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One keep-alive connection with at most one request in flight.
struct Connection {
    sender: Sender,
    authority: String,
}

impl Connection {
    async fn open(addr: SocketAddr, connector: &TlsConnector) -> Result<Connection, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").expect("a valid name");
        let tls = tokio::time::timeout(REQUEST_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::H2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::H1(sender)
        };
        Ok(Connection {
            sender,
            authority: format!("localhost:{}", addr.port()),
        })
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Bytes), String> {
        self.send("GET", path, Bytes::new()).await
    }

    /// One request; the status and the whole body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let h2 = matches!(self.sender, Sender::H2(_));
        let uri = if h2 {
            format!("https://{}{path}", self.authority)
        } else {
            path.to_owned()
        };
        let mut request = http::Request::builder().method(method).uri(uri);
        if !h2 {
            request = request.header(http::header::HOST, &self.authority);
        }
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = match &mut self.sender {
                Sender::H1(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(request).await
                }
                Sender::H2(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(request).await
                }
            }
            .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// Runs `clients` connections against `target` for the warm-up and the measured time.
async fn run_phase(
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
async fn client(
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
        };
        let latency = sent.elapsed();
        last_used = Instant::now();
        match result {
            Ok((200, body)) if target == Target::Healthz || is_patch(&body) => {
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
fn is_patch(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = br#""patchType":"JSONPatch""#;
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}
