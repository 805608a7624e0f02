//! `warmpool certs`.
use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::certs;

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

/// Generates and writes the files, prints the caBundle (base64 of ca.crt) on stdout and a
/// one-line summary on stderr.
pub fn run(args: Args) -> anyhow::Result<()> {
    let generated = certs::generate(&certs::Request {
        dns: &args.dns,
        ips: &args.ip,
        days: args.days,
    })?;
    certs::write(&args.out, &generated)?;
    println!("{}", STANDARD.encode(generated.ca_pem.as_bytes()));
    let ips: Vec<String> = args.ip.iter().map(ToString::to_string).collect();
    eprintln!(
        "wrote {ca}, {cert} and {key} to {out} for {names}, valid {days} days; the line above is the caBundle",
        ca = certs::CA_FILE,
        cert = certs::CERT_FILE,
        key = certs::KEY_FILE,
        out = args.out.display(),
        names = args
            .dns
            .iter()
            .chain(&ips)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        days = args.days,
    );
    Ok(())
}
