use clap::{Parser, Subcommand};
use warmpool::cli;

/// Warm nodes and pre-pulled images for new Kubernetes tenants.
///
/// warmpool steers pods of tenant namespaces (`demo-*`, or labelled warmpool.io/tenant=enabled)
/// to a pool of warm nodes, keeps spare room reserved there, and pre-pulls the tenants' images,
/// so a new tenant starts in seconds instead of waiting minutes for a node and its images.
#[derive(Debug, Parser)]
#[command(name = "warmpool", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTPS mutating admission webhook.
    Webhook(cli::webhook::Args),
    /// Keep the prewarmer, the image cache and the tenant labels in place.
    Reconcile(cli::reconcile::Args),
    /// Show what the webhook would do to pods, workloads or a whole `helm template` (no cluster
    /// needed).
    Mutate(cli::mutate::Args),
    /// Print the PriorityClass, prewarmer and image cache the reconciler would apply (no cluster
    /// needed).
    Render(cli::render::Args),
    // Its help (short and long) is the doc comment of `cli::status::Args`.
    Status(cli::status::Args),
    /// Write a CA and a serving certificate for local use.
    Certs(cli::certs::Args),
    /// (internal) Copy this binary into DIR: the image cache's first init container.
    #[command(hide = true)]
    InstallNoop(cli::reconcile::InstallNoopArgs),
    /// (internal) Wait for SIGTERM, then exit 0: what the image cache runs in the container of
    /// every cached image, so that the image stays in use.
    #[command(hide = true)]
    Hold,
    /// (internal) Exit 0 at once: what 0.1's image cache ran in every cached image (its pods
    /// still run it until the DaemonSet has rolled).
    #[command(hide = true)]
    Noop,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The offline commands need no async runtime.
        Command::Mutate(args) => cli::mutate::run(args),
        Command::Render(args) => cli::render::run(args),
        Command::Certs(args) => cli::certs::run(args),
        Command::Webhook(args) => block_on(cli::webhook::run(args), WEBHOOK_WORKER_THREADS),
        Command::Reconcile(args) => block_on(cli::reconcile::run(args), None),
        Command::Status(args) => block_on(cli::status::run(args), Some(2)),
        Command::InstallNoop(args) => cli::reconcile::install_noop(args),
        Command::Hold => cli::reconcile::hold(),
        Command::Noop => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The reason on one line: some causes (a YAML parser's excerpt of the file) span several.
fn one_line(reason: &str) -> String {
    reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The webhook's async worker threads (`TOKIO_WORKER_THREADS` overrides it). One answers some
/// 25,000 reviews a second, far beyond any API server's admission rate, with a lower tail latency
/// and less memory than one per core (docs/performance.md); the reconciler keeps one per core.
const WEBHOOK_WORKER_THREADS: Option<usize> = Some(1);

fn block_on(
    task: impl std::future::Future<Output = anyhow::Result<()>>,
    worker_threads: Option<usize>,
) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let (Some(n), None) = (worker_threads, std::env::var_os("TOKIO_WORKER_THREADS")) {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(task)
}
