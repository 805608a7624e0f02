//! Helm for the end-to-end tests and the demo: `WARMPOOL_TEST_HELM` (set by tests/all.sh) or
//! the binary tests/tools/helm.sh builds once from its Go module and caches.
//!
//! The webhook tests register warmpool with the API server through the chart's own rendered
//! MutatingWebhookConfiguration, so they exercise the selection the chart ships.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::cluster::repo_root;

/// The Helm binary. A missing Helm is a failure (the tests need the chart's webhook entries).
pub fn helm() -> PathBuf {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = HELM.get_or_init(|| {
        if let Ok(p) = std::env::var("WARMPOOL_TEST_HELM")
            && !p.is_empty()
        {
            return Ok(PathBuf::from(p));
        }
        let out = Command::new(repo_root().join("tests/tools/helm.sh"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run tests/tools/helm.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("tests/tools/helm.sh failed ({})", out.status));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| "tests/tools/helm.sh printed no path".to_owned())
    });
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!("helm is required to register the chart's webhook entries: {e}"),
    }
}

/// `helm template` of the chart with `args`, as a stream of JSON documents.
pub fn template(release: &str, namespace: &str, args: &[String]) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let chart = repo_root().join("charts/warmpool");
    let out = Command::new(helm())
        .args(["template", release])
        .arg(&chart)
        .args(["--namespace", namespace])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    serde_norway::Deserializer::from_str(&yaml)
        .map(|doc| serde_json::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}
