//! Helm for the end-to-end tests and the demo: `WARMPOOL_TEST_HELM` (set by tests/all.sh) or
//! the binary tests/tools/helm.sh builds once from its Go module and caches.
//!
//! The webhook tests register warmpool with the API server through the chart's own rendered
//! MutatingWebhookConfiguration, so they exercise the selection the chart ships.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::process::succeed;
use crate::repo_root;

/// The Helm binary. A missing Helm is a failure (the tests need the chart's webhook entries).
pub fn helm() -> PathBuf {
    match find() {
        Ok(p) => p,
        Err(e) => panic!("helm is required to register the chart's webhook entries: {e}"),
    }
}

/// `WARMPOOL_TEST_HELM`, or the Helm binary tests/tools/helm.sh builds (once per process), or
/// why there is none.
pub fn find() -> Result<PathBuf, String> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| match std::env::var("WARMPOOL_TEST_HELM") {
        Ok(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => script_path("tests/tools/helm.sh", None),
    })
    .clone()
}

/// Runs a script of the repository that prints a path as its last stdout line (progress on
/// stderr): tests/tools/helm.sh, and in the chart tests tests/cluster/cluster.sh.
pub fn script_path(script: &str, arg: Option<&str>) -> Result<PathBuf, String> {
    let mut cmd = Command::new(repo_root().join(script));
    if let Some(a) = arg {
        cmd.arg(a);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} failed ({})", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{script} printed no path"))
}

/// `helm template` of the chart with `args`, as a stream of JSON documents.
pub fn template(release: &str, namespace: &str, args: &[String]) -> Vec<serde_json::Value> {
    let chart = repo_root().join("charts/warmpool");
    let out = succeed(
        Command::new(helm())
            .args(["template", release])
            .arg(&chart)
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null()),
        "helm template",
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    warmpool::kubectl::yaml::read_documents(yaml.as_bytes())
        .expect("helm renders valid YAML")
        .into_iter()
        .map(|doc| doc.value)
        .collect()
}
