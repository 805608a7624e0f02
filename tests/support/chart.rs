//! What the chart tests need: Helm (built from its Go module by tests/tools/helm.sh), promtool
//! (likewise, by tests/tools/promtool.sh), the local control plane of tests/cluster/cluster.sh
//! with its kubectl, rendering the chart into objects, and polling with a deadline.
//!
//! A missing prerequisite (no `go` to build Helm, no control plane) is a loud SKIP outside CI and
//! a failure in CI (`CI=true`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helm::script_path;
use crate::{in_ci, repo_root};

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/warmpool")
}

/// `None` = skip (outside CI, said loudly); in CI a missing prerequisite fails the test.
fn missing<T>(what: &str, why: &str) -> Option<T> {
    if in_ci() {
        panic!("{what} is required in CI: {why}");
    }
    eprintln!("\n*** SKIP: {what} is not available ({why}) ***\n");
    None
}

/// The Helm binary: `WARMPOOL_TEST_HELM` (set by tests/all.sh) or tests/tools/helm.sh.
pub fn helm() -> Option<PathBuf> {
    match crate::helm::find() {
        Ok(p) => Some(p),
        Err(e) => missing("helm (tests/tools/helm.sh)", &e),
    }
}

/// promtool (Prometheus' rule checker): `WARMPOOL_TEST_PROMTOOL` (set by tests/all.sh) or the
/// binary tests/tools/promtool.sh builds once from its Go module and caches.
pub fn promtool() -> Option<PathBuf> {
    static PROMTOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PROMTOOL.get_or_init(|| match std::env::var("WARMPOOL_TEST_PROMTOOL") {
        Ok(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => script_path("tests/tools/promtool.sh", None),
    });
    match result {
        Ok(p) => Some(p.clone()),
        Err(e) => missing("promtool (tests/tools/promtool.sh)", e),
    }
}

/// The local control plane: its admin kubeconfig and the kubectl built with it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

pub fn cluster() -> Option<Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let result = CLUSTER.get_or_init(|| {
        let kubeconfig = match std::env::var("WARMPOOL_TEST_KUBECONFIG") {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => script_path("tests/cluster/cluster.sh", Some("up"))?,
        };
        let kubectl = script_path("tests/cluster/cluster.sh", Some("kubectl-path"))?;
        Ok(Cluster {
            kubeconfig,
            kubectl,
        })
    });
    match result {
        Ok(c) => Some(c.clone()),
        Err(e) => missing("the local control plane (tests/cluster/cluster.sh up)", e),
    }
}

/// Runs `program args…` with `stdin`, returning its output (never panics on a non-zero exit).
pub fn run(program: &Path, args: &[&str], envs: &[(&str, &Path)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        // A writer thread, so a child that writes a lot before reading cannot deadlock us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    child.wait_with_output().expect("child output")
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

impl Cluster {
    /// kubectl against the local control plane.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(
            &self.kubectl,
            args,
            &[("KUBECONFIG", &self.kubeconfig)],
            stdin,
        )
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// helm against the local control plane.
    pub fn helm(&self, helm: &Path, args: &[&str]) -> Output {
        run(helm, args, &[("KUBECONFIG", &self.kubeconfig)], None)
    }

    /// The object as JSON, or `None` when it does not exist.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json", "--ignore-not-found"]);
        let out = self.kubectl(&all, None);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            all.join(" "),
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        if stdout.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&stdout).expect("kubectl prints JSON"))
        }
    }

    /// A fresh namespace; deleted (without waiting) when the guard drops.
    pub fn namespace(&self, name: &str) -> NamespaceGuard {
        self.kubectl_ok(&["create", "namespace", name], None);
        NamespaceGuard {
            cluster: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Installs the CRDs of the chart's optional kinds (NodePool, EC2NodeClass, cert-manager
    /// Issuer and Certificate, Prometheus Operator ServiceMonitor and PrometheusRule) from the
    /// upstream Go modules, once per test process.
    pub fn install_crds(&self) {
        static DONE: OnceLock<Result<(), String>> = OnceLock::new();
        let result = DONE.get_or_init(|| {
            let out = Command::new(repo_root().join("tests/chart/crds.sh"))
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run tests/chart/crds.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!("tests/chart/crds.sh failed ({})", out.status));
            }
            let files = text(&out.stdout);
            let mut names = Vec::new();
            for file in files.lines().filter(|l| !l.trim().is_empty()) {
                // Server-side: the CRDs are too large for the last-applied annotation.
                let out = self.kubectl(
                    &["apply", "--server-side", "--force-conflicts", "-f", file],
                    None,
                );
                if !out.status.success() {
                    return Err(format!("applying {file}: {}", text(&out.stderr)));
                }
                names.extend(
                    text(&out.stdout)
                        .split_whitespace()
                        .filter(|w| w.starts_with("customresourcedefinition"))
                        .map(str::to_owned),
                );
            }
            let mut args = vec!["wait", "--for", "condition=Established", "--timeout=60s"];
            args.extend(names.iter().map(String::as_str));
            let out = self.kubectl(&args, None);
            if !out.status.success() {
                return Err(format!("CRDs not established: {}", text(&out.stderr)));
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("installing the upstream CRDs from their Go modules: {e}");
        }
    }
}

pub struct NamespaceGuard {
    cluster: Cluster,
    pub name: String,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// `helm template RELEASE charts/warmpool --namespace NS ARGS…`, as it exited.
fn template(helm: &Path, release: &str, namespace: &str, args: &[&str]) -> Output {
    let chart = chart_dir();
    let mut all = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    run(helm, &all, &[], None)
}

/// `helm template RELEASE charts/warmpool --namespace NS ARGS…`: the objects, or Helm's error.
pub fn try_render(
    helm: &Path,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> Result<Vec<Value>, String> {
    let out = template(helm, release, namespace, args);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(parse_documents(&text(&out.stdout)))
}

/// `helm template` output as Helm prints it (what `helm install` would send).
pub fn render_text(helm: &Path, release: &str, namespace: &str, args: &[&str]) -> String {
    let out = template(helm, release, namespace, args);
    assert!(
        out.status.success(),
        "helm template {} failed:\n{}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn render(helm: &Path, release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    try_render(helm, release, namespace, args)
        .unwrap_or_else(|e| panic!("helm template {} failed:\n{e}", args.join(" ")))
}

/// A multi-document YAML stream as JSON values (empty documents dropped).
pub fn parse_documents(yaml: &str) -> Vec<Value> {
    warmpool::kubectl::yaml::read_documents(yaml.as_bytes())
        .expect("helm renders valid YAML")
        .into_iter()
        .map(|doc| doc.value)
        .collect()
}

/// The one object of `kind` (and `name`, when given).
pub fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = all_of(docs, kind)
        .into_iter()
        .filter(|d| name.is_none_or(|n| d["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {name:?}, found {}: {:?}",
        found.len(),
        kinds(docs)
    );
    found[0]
}

pub fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A name no other test (or earlier run) uses: lowercase, DNS-label safe, short.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000)
        .unwrap_or(0);
    format!("{prefix}{}{t}{n}", std::process::id() % 1000)
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
