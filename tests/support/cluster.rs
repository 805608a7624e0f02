//! The local control plane of `tests/cluster/cluster.sh`, a kube client for it, and the small
//! tools every end-to-end test needs (unique names, polling with a deadline, child processes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use crate::repo_root;

/// The admin kubeconfig of the local control plane, started (and built) on first use.
/// `None` means "skip": only outside CI. In CI a missing prerequisite is a failure.
pub fn kubeconfig() -> Option<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("WARMPOOL_TEST_KUBECONFIG") {
            return Ok(PathBuf::from(p));
        }
        let out = Command::new(repo_root().join("tests/cluster/cluster.sh"))
            .arg("up")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run tests/cluster/cluster.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tests/cluster/cluster.sh up failed ({})",
                out.status
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| "tests/cluster/cluster.sh up printed no kubeconfig".to_owned())
    });
    match result {
        Ok(p) => Some(p.clone()),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the local control plane is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIP: no local control plane ({e}); run tests/cluster/cluster.sh up");
            None
        }
    }
}

/// A client for the local control plane, or `None` to skip (outside CI only).
pub async fn client() -> Option<Client> {
    Some(client_from(&kubeconfig()?).await)
}

/// A client for the kubeconfig at `path` (the admin one, or a ServiceAccount's).
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("usable kubeconfig");
    Client::try_from(config).expect("kube client")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{t}-{n}", std::process::id() % 10_000)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(what, timeout, check, || async { String::new() }).await
}

/// [`eventually`], and on a timeout the panic message carries what `explain` finds (the state
/// that kept `check` from passing): a CI log is all there is to read after a run elsewhere.
pub async fn eventually_explained<T, F, Fut, E, EFut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    explain: E,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
    E: FnOnce() -> EFut,
    EFut: std::future::Future<Output = String>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            let why = explain().await;
            panic!("timed out after {timeout:?} waiting for: {what}\n{why}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `warmpool` binary with `args`, logs to `log`.
pub fn spawn_warmpool(
    binary: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> ChildGuard {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    let mut cmd = Command::new(binary);
    cmd.args(args).stdout(file).stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard(cmd.spawn().expect("warmpool starts"))
}
