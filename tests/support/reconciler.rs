//! The real `warmpool reconcile` process against the local control plane, in a *run* of its own
//! (its namespace, tenant-name prefix, pool label and Lease), so that tests can share a cluster.
//!
//! One thing runs cannot keep apart: a namespace labelled `warmpool.io/tenant=enabled` is a tenant
//! for every reconciler in the cluster (that is the rule), so tests assert on their own tenants'
//! images and requests, not on exact totals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use warmpool::config::{Config, NodeLabel, TaintEffect, Toleration, TolerationOperator};

use super::cluster::{ChildGuard, eventually, free_port, kubeconfig, unique};

/// The command that starts `binary`: under `WARMPOOL_TEST_RECONCILER_WRAPPER` when it is set (a
/// profiler, say `heaptrack -o /tmp/rec`; its process is then the one the tests see).
fn wrapped(binary: &Path) -> Command {
    let wrapper = std::env::var("WARMPOOL_TEST_RECONCILER_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(binary);
            cmd
        }
        None => Command::new(binary),
    }
}

/// Makes `pool` the configuration's warm pool: nodes labelled `workload-type=<pool>`, its taint
/// `workload-type=<pool>:NoSchedule` tolerated.
pub fn use_pool(config: &mut Config, pool: &str) {
    config.pool.node_label = NodeLabel {
        key: "workload-type".into(),
        value: pool.to_owned(),
    };
    config.pool.tolerations = vec![Toleration {
        key: Some("workload-type".into()),
        operator: TolerationOperator::Equal,
        value: Some(pool.to_owned()),
        effect: Some(TaintEffect::NoSchedule),
        toleration_seconds: None,
    }];
}

/// The defaults with `change` applied: a test's configuration, as a value.
pub fn config(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    change(&mut config);
    config
}

/// One isolated run of the reconciler.
pub struct Run {
    pub id: String,
    /// warmpool's own namespace: prewarmer, image cache, Lease.
    pub namespace: String,
    /// Tenant namespaces of this run: `<prefix>*`.
    pub tenant_prefix: String,
    /// The pool label value of this run.
    pub pool: String,
    /// The configuration file the run's processes read: [`Run::settings`] as YAML.
    pub config: PathBuf,
    /// The run's configuration, as a value: what [`Run::new`] was given, with this run's tenant
    /// pattern and pool ([`Run::configure`] changes it and writes the file again).
    settings: std::sync::Mutex<Config>,
    pub dir: tempfile::TempDir,
    pub client: Client,
    binary: PathBuf,
    created: std::sync::Mutex<Vec<String>>,
    /// The Node [`Run::create_running_pod`] binds pods to (created on first use).
    no_kubelet: tokio::sync::OnceCell<NodeGuard>,
}

impl Run {
    /// Creates the run's namespace and writes its configuration: `config` with this run's tenant
    /// pattern and pool (label and toleration).
    pub async fn new(client: &Client, binary: &Path, config: Config) -> Run {
        let id = unique("rec");
        let namespace = format!("{id}-system");
        let tenant_prefix = format!("{id}-demo-");
        let pool = format!("warm-{id}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let run = Run {
            id,
            namespace: namespace.clone(),
            tenant_prefix,
            pool,
            config: path,
            settings: std::sync::Mutex::new(config),
            dir,
            client: client.clone(),
            binary: binary.to_owned(),
            created: std::sync::Mutex::new(Vec::new()),
            no_kubelet: tokio::sync::OnceCell::new(),
        };
        let pool = run.pool.clone();
        run.configure(|config| use_pool(config, &pool));
        run.set_patterns(&[&format!("{}*", run.tenant_prefix)]);
        run.create_namespace(&namespace, &[]).await;
        run
    }

    /// The configuration as written now.
    pub fn settings(&self) -> Config {
        self.settings.lock().expect("lock").clone()
    }

    /// Changes the configuration and writes it again (read by reconcilers started from now on).
    pub fn configure(&self, change: impl FnOnce(&mut Config)) {
        let mut settings = self.settings.lock().expect("lock");
        change(&mut settings);
        let yaml = serde_saphyr::to_string(&*settings).expect("the configuration as YAML");
        std::fs::write(&self.config, yaml).expect("config file");
    }

    /// Rewrites the configuration with other tenant patterns (read by reconcilers started from
    /// now on).
    pub fn set_patterns(&self, patterns: &[&str]) {
        self.configure(|config| {
            config.tenants.namespace_patterns = patterns.iter().map(|p| p.to_string()).collect();
        });
    }

    /// `<prefix><suffix>`: a namespace name this run's reconciler treats as a tenant.
    pub fn tenant(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.tenant_prefix)
    }

    /// Creates a namespace with labels; it is deleted by [`Run::cleanup`].
    pub async fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        self.created.lock().expect("lock").push(name.to_owned());
    }

    /// Creates a bare pod with `spec` (it stays Pending: there are no kubelets), retrying until
    /// the namespace's default ServiceAccount exists.
    pub async fn create_pod(&self, namespace: &str, name: &str, mut spec: serde_json::Value) {
        spec["automountServiceAccountToken"] = json!(false);
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        eventually(
            &format!("pod {namespace}/{name} created"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let pod = pod.clone();
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => Some(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
                        Err(_) => None,
                    }
                }
            },
        )
        .await;
    }

    /// Creates a bare pod with `spec` ([`Run::create_pod`]), bound to a Node of this run's that
    /// has no kubelet (tainted, so that nothing else is scheduled there), and writes the status
    /// the kubelet writes once its containers run from their images (`imageID` set): discovery
    /// takes only images a tenant's containers run, `slot: auto` only scheduled pods. There is
    /// no kubelet here; the real-node tests (`e2e_real_nodes`) prove the kubelet's side.
    pub async fn create_running_pod(
        &self,
        namespace: &str,
        name: &str,
        mut spec: serde_json::Value,
    ) {
        let node = self
            .no_kubelet
            .get_or_init(|| async {
                let name = format!("{}{}", self.id, super::fakelet::NO_KUBELET_SUFFIX);
                let guard = NodeGuard(name.clone());
                super::fakelet::create_node(
                    &self.client,
                    &super::fakelet::FakeNode {
                        name: &name,
                        labels: &[],
                        taints: &[("warmpool.test/no-kubelet", "true", "NoSchedule")],
                        cpu: "64",
                        memory: "256Gi",
                    },
                )
                .await
                .expect("a node without a kubelet");
                guard
            })
            .await;
        spec["nodeName"] = json!(node.0);
        let statuses = |key: &str| -> Vec<serde_json::Value> {
            spec[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    json!({
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": format!("{}@sha256:{:064x}", c["image"].as_str().unwrap_or_default(), 1),
                        "ready": key == "containers",
                        "restartCount": 0,
                        "state": if key == "containers" {
                            json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
                        } else {
                            json!({"terminated": {"exitCode": 0, "reason": "Completed"}})
                        },
                    })
                })
                .collect()
        };
        let status = json!({"status": {
            "phase": "Running",
            "initContainerStatuses": statuses("initContainers"),
            "containerStatuses": statuses("containers"),
        }});
        self.create_pod(namespace, name, spec).await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("write the status of pod {namespace}/{name}: {e}"));
    }

    /// Starts `warmpool reconcile` for this run as `identity`, with `extra_args` (and
    /// `--resync 20s` unless they set it).
    pub fn spawn(&self, identity: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Reconciler {
        let metrics = format!("127.0.0.1:{}", free_port());
        let log = self.dir.path().join(format!("reconciler-{identity}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let kubeconfig = kubeconfig().expect("kubeconfig");
        let mut cmd = wrapped(&self.binary);
        cmd.args([
            "reconcile",
            "--namespace",
            &self.namespace,
            "--metrics-listen",
            &metrics,
        ])
        .arg("--config")
        .arg(&self.config)
        .args(["--identity", identity])
        .args(extra_args)
        .args(if extra_args.contains(&"--resync") {
            &[][..]
        } else {
            &["--resync", "20s"][..]
        })
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,warmpool=debug")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("warmpool reconcile starts");
        Reconciler {
            child: Some(ChildGuard(child)),
            log,
            metrics,
            identity: identity.to_owned(),
        }
    }

    /// Deletes every namespace this run created (best effort; they are unique anyway).
    pub async fn cleanup(&self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let names = std::mem::take(&mut *self.created.lock().expect("lock"));
        for name in names {
            let _ = api.delete(&name, &DeleteParams::background()).await;
        }
    }
}

impl Drop for Run {
    /// A test that failed before its `cleanup` leaves no namespace behind either (a labelled
    /// tenant left over would count as a tenant for every other run's reconciler).
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        let (Some(kubeconfig), false) = (kubeconfig(), names.is_empty()) else {
            return;
        };
        let kubectl = Command::new(super::cluster::repo_root().join("tests/cluster/cluster.sh"))
            .arg("kubectl-path")
            .output();
        if let Ok(out) = kubectl {
            let kubectl = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let _ = Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["delete", "namespace", "--wait=false", "--ignore-not-found"])
                .args(&names)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The control plane's `kubectl`.
pub fn kubectl_path() -> String {
    let path = Command::new(super::cluster::repo_root().join("tests/cluster/cluster.sh"))
        .arg("kubectl-path")
        .output()
        .expect("tests/cluster/cluster.sh kubectl-path");
    String::from_utf8_lossy(&path.stdout).trim().to_owned()
}

/// Runs the control plane's `kubectl` with the admin kubeconfig, as a person would; panics
/// unless it succeeds.
pub fn kubectl(args: &[&str]) -> String {
    let kubectl = kubectl_path();
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig().expect("kubeconfig"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{kubectl}: {e}"));
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Node of the test's, deleted when dropped (also when the test fails).
pub struct NodeGuard(pub String);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let Some(kubeconfig) = kubeconfig() else {
            return;
        };
        let _ = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "delete",
                "node",
                "--wait=false",
                "--ignore-not-found",
                &self.0,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running reconciler process.
pub struct Reconciler {
    pub child: Option<ChildGuard>,
    pub log: PathBuf,
    /// Address of its /healthz, /readyz and /metrics.
    pub metrics: String,
    pub identity: String,
}

impl Reconciler {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to give the Lease up.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// SIGTERM, then waits for the process to end (it gives the Lease up first).
    pub fn terminate(&mut self) {
        if let Some(guard) = self.child.as_mut() {
            let pid = guard.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = guard.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.child = None;
    }

    /// The status code and body of a GET on the admin port, if it answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics, path).await
    }

    /// Waits until /readyz answers 200; on a time-out, the panic shows the log's last lines.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self
                .get("/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs = self.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "timed out after {timeout:?} waiting for reconciler {} to be ready; {}, last lines:\n{}",
            self.identity,
            self.log.display(),
            tail.join("\n")
        );
    }

    /// One sample of a metric without labels (`warmpool_reconcile_leader`), if exposed.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        sample(&body, name)
    }
}

/// The value of `series` (a metric's name, with its labels as exposed) in a Prometheus text
/// body.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    // HTTP/1.0: the answer is not chunked.
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The images the image cache holds: those of its `cache-…` containers (not the installer's
/// or the pause container's).
pub fn cached_images(ds: &DaemonSet) -> Vec<String> {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.name.starts_with("cache-"))
        .filter_map(|c| c.image)
        .collect()
}
