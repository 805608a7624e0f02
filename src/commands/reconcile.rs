//! `warmpool reconcile`.
use std::path::PathBuf;

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
}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("warmpool reconcile is being built (issue 3)")
}
