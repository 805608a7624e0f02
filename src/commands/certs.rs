//! `warmpool certs`.
use std::net::IpAddr;
use std::path::PathBuf;

/// Write ca.crt, tls.crt and tls.key (PEM) into --out and print the base64 caBundle.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// DNS name for the serving certificate, e.g. warmpool.warmpool.svc (repeatable).
    #[arg(long = "dns", required = true)]
    pub dns: Vec<String>,
    /// IP address for the serving certificate, e.g. 127.0.0.1 (repeatable).
    #[arg(long = "ip")]
    pub ip: Vec<IpAddr>,
    /// Validity of the serving certificate in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("warmpool certs is being built")
}
