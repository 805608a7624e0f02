//! The command line: what to run, at which concurrency, on which targets, for how long (and the smoke run).

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub server: PathBuf,
    pub server_logs: Option<PathBuf>,
    pub proto: Proto,
    pub concurrency: Vec<usize>,
    pub targets: Vec<Target>,
    pub warmup: Duration,
    pub duration: Duration,
    pub rounds: usize,
    pub startup_runs: usize,
    /// Worker threads of this load generator's runtime (default: one per CPU).
    pub client_threads: usize,
    pub smoke: bool,
}

/// What `cargo bench --bench webhook -- --help` prints.
pub const USAGE: &str = "\
usage: cargo bench --bench webhook -- [options]

Drives `warmpool webhook` over TLS on 127.0.0.1 with keep-alive connections and reports
throughput, latency percentiles, server and client CPU per request and the server's memory.

  --server PATH          the warmpool binary to start (default: this build's)
  --concurrency LIST     connections per phase, e.g. 1,8,32,128 (the default)
  --targets LIST         of healthz, small, large (the default) and transport (a body of the
                         small review's size answered 400: the cost before the JSON is read)
  --warmup SECONDS       per phase, before measuring (default 1)
  --duration SECONDS     measured per phase (default 5)
  --rounds N             rounds over every phase (default 3)
  --startup-runs N       starts timed from exec to GET /readyz 200 (default 10)
  --client-threads N     the load generator's worker threads (default: one per CPU)
  --proto h1|h2          HTTP version (default h1)
  --server-logs PATH     keep the server's log lines there (default: discarded)

Under `cargo test` (no --bench) it makes a smoke run of every target that fails on any error.";

impl Options {
    pub fn parse() -> Result<Options, String> {
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
            // Every target, the opt-in transport floor included, so each answer's check runs.
            options.targets = Target::EVERY.to_vec();
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
                            "transport" => Some(Target::Transport),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()
                        .filter(|t| !t.is_empty())
                        .ok_or("--targets takes a list of healthz, small, large, transport")?;
                }
                "--warmup" => options.warmup = seconds(value("--warmup")?)?,
                "--duration" => options.duration = seconds(value("--duration")?)?,
                "--rounds" => options.rounds = count("--rounds", value("--rounds")?, 1..=20)?,
                "--client-threads" => {
                    options.client_threads =
                        count("--client-threads", value("--client-threads")?, 1..=64)?;
                }
                "--startup-runs" => {
                    options.startup_runs =
                        count("--startup-runs", value("--startup-runs")?, 1..=100)?;
                }
                // Filters and flags that cargo or a test runner may pass: nothing to filter here.
                other if other.starts_with('-') => {}
                _ => {}
            }
        }
        Ok(options)
    }
}

/// The value of the option `name`, a whole number within `range`.
fn count(name: &str, value: String, range: RangeInclusive<usize>) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("{name} takes {}-{}", range.start(), range.end()))
}

/// What one phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Healthz,
    /// A body of the small review's size that is not JSON from its first byte (answered 400,
    /// with its log line and metrics): what a small review costs before its JSON is read.
    /// Only when asked for (`--targets transport`).
    Transport,
    MutateSmall,
    MutateLarge,
}

impl Target {
    /// The targets run when none are given.
    pub const ALL: [Target; 3] = [Target::Healthz, Target::MutateSmall, Target::MutateLarge];
    /// Every target, in the order a report lists them.
    pub const EVERY: [Target; 4] = [
        Target::Healthz,
        Target::Transport,
        Target::MutateSmall,
        Target::MutateLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Target::Healthz => "GET /healthz (ceiling)",
            Target::Transport => "POST /mutate transport floor (400)",
            Target::MutateSmall => "POST /mutate small",
            Target::MutateLarge => "POST /mutate large",
        }
    }
}
