//! `warmpool webhook`.
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::telemetry::LogFormat;

/// Serve the mutating admission webhook over HTTPS.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (YAML); built-in CargoCATs defaults without it.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain served to the API server; re-read when it changes on disk.
    #[arg(long, env = "WARMPOOL_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of that certificate; re-read when it changes on disk.
    #[arg(long, env = "WARMPOOL_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Address of the HTTPS webhook endpoint (POST /mutate, GET /healthz, GET /readyz).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics endpoints.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// warmpool's own namespace, never mutated (set from the downward API by the chart).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("warmpool webhook is being built")
}
