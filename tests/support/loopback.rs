//! The real binary on 127.0.0.1, no cluster needed: certificates from `warmpool certs`, and
//! `warmpool webhook` on ports the kernel picks. The test crates that need nothing else of
//! tests/support (webhook_server, hostile_clients, config_errors) include this file by its path.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// `warmpool certs` for localhost and 127.0.0.1 into `dir` (ca.crt, tls.crt, tls.key); returns
/// what it prints, the CA bundle.
pub fn certs(binary: impl AsRef<Path>, dir: &Path) -> String {
    let out = Command::new(binary.as_ref())
        .args(["certs", "--dns", "localhost", "--ip", "127.0.0.1", "--out"])
        .arg(dir)
        .output()
        .expect("warmpool certs runs");
    assert!(
        out.status.success(),
        "warmpool certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `warmpool webhook` serving `cert` and `key`, its TLS and metrics ports picked by the kernel
/// on 127.0.0.1 (its JSON "webhook listening" log line names them), logging JSON at `info` to a
/// piped stderr, with no configuration or namespace from the environment. Add arguments, then
/// spawn it.
pub fn webhook_command(binary: impl AsRef<Path>, cert: &Path, key: &Path) -> Command {
    let mut command = Command::new(binary.as_ref());
    command
        .arg("webhook")
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env_remove("WARMPOOL_CONFIG")
        .env_remove("POD_NAMESPACE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}
