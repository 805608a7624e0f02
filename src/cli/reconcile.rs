//! `warmpool reconcile`, and the two hidden helpers its image cache runs on the nodes
//! (`warmpool install-noop DIR`, `warmpool noop`).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::core::names::NOOP_BINARY;
use crate::reconcile;
use crate::reconcile::base::metrics::Metrics;
use crate::reconcile::{PodIdentity, Settings};
use crate::telemetry::{self, LogFormat, Readiness};

/// Keep the prewarmer, the image cache and the tenant labels in place.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (YAML); built-in CargoCATs defaults without it.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// warmpool's own namespace: where the prewarmer and the image cache live.
    #[arg(long, env = "WARMPOOL_NAMESPACE")]
    pub namespace: String,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics endpoints.
    #[arg(long, default_value = "0.0.0.0:9091")]
    pub metrics_listen: std::net::SocketAddr,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WARMPOOL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Re-apply everything this often even without an event (e.g. 30s, 5m, 1h30m; at most a day).
    #[arg(long, default_value = "5m", value_parser = crate::config::duration::flag)]
    pub resync: Duration,
    /// How long a leader's Lease stays valid without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = crate::config::duration::flag, env = "WARMPOOL_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// This replica's name in the Lease (default: the pod name, else host name and process id).
    #[arg(long, env = "WARMPOOL_IDENTITY")]
    pub identity: Option<String>,
    /// The pod this runs in (downward API `metadata.name`), to find warmpool's own Deployment
    /// and write owner references to it; unset outside a cluster.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The namespace of that pod (downward API `metadata.namespace`; default: --namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// How many namespaces are enrolled at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "warmpool".into());
    format!("{host}-{}", std::process::id())
}

/// Checks everything that can be wrong before touching the cluster (one line on failure), then
/// reconciles until SIGTERM or Ctrl-C and gives the Lease up.
pub async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);
    match crate::reconcile::base::clock::override_in_use() {
        Err(e) => return Err(anyhow!("{e}")),
        Ok(Some(now)) => tracing::warn!(
            %now,
            "{} is set: the reconciler's clock starts at that instant (for tests only; never set it in a cluster)",
            crate::reconcile::base::clock::TEST_NOW
        ),
        Ok(None) => {}
    }
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
    if args.namespace.trim().is_empty() {
        return Err(anyhow!("--namespace must not be empty"));
    }
    let identity = args
        .identity
        .clone()
        .or_else(|| args.pod_name.clone())
        .unwrap_or_else(default_identity);
    let settings = Settings {
        pod: args.pod_name.clone().map(|name| PodIdentity {
            namespace: args
                .pod_namespace
                .clone()
                .unwrap_or_else(|| args.namespace.clone()),
            name,
        }),
        namespace: args.namespace.clone(),
        config,
        resync: args.resync,
        concurrency: args.concurrency,
        identity,
        lease_duration: args.lease_duration,
    };

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Readiness::default();
    let admin = telemetry::bind_admin(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on --metrics-listen {}", args.metrics_listen))?;
    let metrics_address = admin.local_addr()?;
    // Formatted here (not chained): kube's message already carries its causes.
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow!(
            "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG): {e}"
        )
    })?;

    let (stop, stopped) = watch::channel(false);
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let admin = tokio::spawn(telemetry::serve_admin(
        admin,
        telemetry::admin_router(Arc::new(registry), ready.clone()),
        stopped(),
    ));
    tracing::info!(
        namespace = %settings.namespace,
        identity = %settings.identity,
        metrics_address = %metrics_address,
        "reconciler starting"
    );
    let shutdown = async {
        telemetry::shutdown_signal().await;
        tracing::info!("shutdown requested");
    };
    let result = reconcile::run(client, settings, metrics, ready, shutdown).await;

    let _ = stop.send(true);
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), admin).await {
        tracing::warn!(error = %e, "metrics server ended with an error");
    }
    result.map_err(|e| anyhow!("{e}"))
}

/// Copy this binary into a directory.
#[derive(Debug, clap::Args)]
pub struct InstallNoopArgs {
    /// Where to put the copy (the image cache's emptyDir); it is named `warmpool`.
    pub dir: PathBuf,
}

/// `warmpool install-noop DIR`: the image cache's first init container. Copies this (static)
/// binary to `DIR/warmpool`, executable by anyone, atomically (copy, then rename), so that every
/// cached image can run `DIR/warmpool noop` whatever it contains.
pub fn install_noop(args: InstallNoopArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("cannot find this program's own file")?;
    let target = args.dir.join(NOOP_BINARY);
    copy_executable(&me, &target)?;
    eprintln!("installed {}", target.display());
    Ok(())
}

/// `warmpool hold`: the container of a cached image. Waits for SIGTERM (or SIGINT), then exits
/// 0; one thread: the image cache runs one per image on every warm node. The line on stderr
/// comes once the handlers are in place (a SIGTERM before it would kill, not end, the process).
#[cfg(unix)]
pub fn hold() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        eprintln!("holding this image until SIGTERM");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        Ok(())
    })
}

#[cfg(not(unix))]
pub fn hold() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?
        .block_on(telemetry::shutdown_signal());
    Ok(())
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    let partial = to.with_extension("partial");
    std::fs::copy(from, &partial)
        .with_context(|| format!("cannot copy {} to {}", from.display(), partial.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", partial.display()))?;
    }
    std::fs::rename(&partial, to)
        .with_context(|| format!("cannot move {} to {}", partial.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noop_is_copied_executable() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, b"#!/bin/true\n").unwrap();
        let target = dir.path().join(NOOP_BINARY);
        copy_executable(&source, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"#!/bin/true\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        assert!(!dir.path().join("warmpool.partial").exists());
        assert!(copy_executable(&dir.path().join("missing"), &target).is_err());
    }
}
