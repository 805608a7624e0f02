//! Real nodes (a kubelet and a containerd each, on this host) for the local control plane, the
//! local registry with the CargoCATs look-alike images, and the image holding the static
//! `warmpool` binary — everything `tests/cluster/cluster.sh node …` / `registry …` provide, for
//! the real-node tests and the demo.
//!
//! - [`RealCluster::get`]: the control plane of [`super::cluster::kubeconfig`] (so the one
//!   `tests/all.sh` starts), the packages, the kubelet and the registry with its images; `None`
//!   means SKIP (outside CI only: under `CI=true` a missing prerequisite panics).
//! - [`RealCluster::node`]: starts one node ([`NodeSpec`]); the [`RealNode`] guard takes it down
//!   when dropped, a failing test included.
//! - [`RealCluster::tool_image`]: the release binary built as the Dockerfile does, in an image of
//!   its own, pushed into the registry (`imageCache.toolImage`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::cluster::{kubeconfig, repo_root};
use crate::in_ci;
use crate::process::succeed;

/// Exit code of the cluster scripts for "real nodes cannot run here" (outside CI).
const SKIP_EXIT: i32 = 3;

fn script() -> PathBuf {
    repo_root().join("tests/cluster/cluster.sh")
}

/// The CargoCATs look-alikes and the pause image in the local registry (`registry env`).
#[derive(Debug, Clone)]
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    pub dataservice: String,
    pub frontgateservice: String,
    pub mysql: String,
    /// The local pause image: containerd's sandbox image, and the placeholders' image in tests.
    pub pause: String,
    /// The port the look-alikes serve `GET /` on (busybox httpd), for httpGet readiness probes.
    pub http_port: u16,
    /// The registry that requires authentication.
    pub private: PrivateRegistry,
}

/// The private registry of `registry.sh`: every pull needs its one user's credentials.
#[derive(Debug, Clone)]
pub struct PrivateRegistry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Its one image (tenant-a's app: the pause image under another name).
    pub image: String,
    pub user: String,
    pub password: String,
}

impl PrivateRegistry {
    /// A `kubernetes.io/dockerconfigjson` Secret `name` holding its credentials.
    pub fn pull_secret(&self, name: &str) -> k8s_openapi::api::core::v1::Secret {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let config = json!({"auths": {&self.address: {
            "username": self.user, "password": self.password, "auth": auth,
        }}});
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": config.to_string()},
        }))
        .expect("pull secret")
    }
}

impl Registry {
    /// `(name, image)` of the three CargoCATs workloads.
    pub fn cargocats(&self) -> [(&'static str, &str); 3] {
        [
            ("dataservice", &self.dataservice),
            ("frontgateservice", &self.frontgateservice),
            ("mysql", &self.mysql),
        ]
    }

    /// Points `to` (a reference in this registry) at the image `from` names, as a re-push of a
    /// tag does (skopeo, which `registry up` installed). Panics when skopeo fails.
    pub fn copy(&self, from: &str, to: &str) {
        succeed(
            Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("docker://{from}"))
                .arg(format!("docker://{to}"))
                .stdin(Stdio::null()),
            &format!("skopeo copy {from} {to}"),
        );
    }

    fn parse(env: &str) -> Result<Registry, String> {
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| format!("`registry env` printed no {key}:\n{env}"))
        };
        Ok(Registry {
            address: get("WARMPOOL_REGISTRY")?,
            dataservice: get("WARMPOOL_IMAGE_DATASERVICE")?,
            frontgateservice: get("WARMPOOL_IMAGE_FRONTGATESERVICE")?,
            mysql: get("WARMPOOL_IMAGE_MYSQL")?,
            pause: get("WARMPOOL_IMAGE_PAUSE")?,
            http_port: get("WARMPOOL_IMAGE_HTTP_PORT")?
                .parse()
                .map_err(|e| format!("WARMPOOL_IMAGE_HTTP_PORT: {e}"))?,
            private: PrivateRegistry {
                address: get("WARMPOOL_PRIVATE_REGISTRY")?,
                image: get("WARMPOOL_PRIVATE_IMAGE")?,
                user: get("WARMPOOL_PRIVATE_USER")?,
                password: get("WARMPOOL_PRIVATE_PASSWORD")?,
            },
        })
    }
}

/// The local control plane, ready for real nodes.
#[derive(Debug)]
pub struct RealCluster {
    /// The `WARMPOOL_CLUSTER_DIR` of the control plane (where its kubeconfig lives).
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub registry: Registry,
    tool_image: OnceLock<String>,
}

/// Runs `cluster.sh ARGS` for `dir`, stderr passed through (progress lines). `Err(None)`: the
/// script said SKIP; `Err(Some(reason))`: it failed.
fn run_script(dir: &Path, args: &[&str]) -> Result<String, Option<String>> {
    let out = Command::new(script())
        .args(args)
        .env("WARMPOOL_CLUSTER_DIR", dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Some(format!("cannot run tests/cluster/cluster.sh: {e}")))?;
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(SKIP_EXIT) if !in_ci() => Err(None),
        _ => Err(Some(format!(
            "tests/cluster/cluster.sh {} failed ({})",
            args.join(" "),
            out.status
        ))),
    }
}

impl RealCluster {
    /// The control plane the tests use, with the registry up and its images pushed; `None` to
    /// skip (a SKIP line was printed). Panics in CI, and on any failure that is not a SKIP.
    pub fn get() -> Option<&'static RealCluster> {
        static CLUSTER: OnceLock<Option<RealCluster>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| {
                let kubeconfig = kubeconfig()?;
                let dir = kubeconfig
                    .parent()
                    .filter(|d| d.join("ports.env").is_file())
                    .unwrap_or_else(|| {
                        panic!(
                            "{} is not the kubeconfig of a tests/cluster/cluster.sh control plane",
                            kubeconfig.display()
                        )
                    })
                    .to_owned();
                let start = Instant::now();
                match run_script(&dir, &["registry", "up"]) {
                    Ok(env) => {
                        let registry = Registry::parse(&env).unwrap_or_else(|e| panic!("{e}"));
                        eprintln!(
                            "real nodes: registry {} ready in {:.1} s",
                            registry.address,
                            start.elapsed().as_secs_f64()
                        );
                        Some(RealCluster {
                            dir,
                            kubeconfig,
                            registry,
                            tool_image: OnceLock::new(),
                        })
                    }
                    Err(None) => {
                        eprintln!("SKIP: real nodes cannot run here (reason above)");
                        None
                    }
                    Err(Some(e)) => panic!("{e}"),
                }
            })
            .as_ref()
    }

    /// `cluster.sh status`: the control plane up, or which component is not running and the
    /// end of its log (for failure messages).
    pub fn status(&self) -> String {
        Command::new(script())
            .arg("status")
            .env("WARMPOOL_CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("cannot run tests/cluster/cluster.sh status: {e}\n"))
    }

    /// Starts a node and waits until it is Ready (`cluster.sh node up`). `None` = SKIP.
    pub fn node(&'static self, spec: &NodeSpec) -> Option<RealNode> {
        self.node_in(spec, &self.dir)
    }

    /// [`RealCluster::node`], with the cluster dir reached through `dir` (another path to the
    /// same folder: a checkout elsewhere, deeper).
    pub fn node_in(&'static self, spec: &NodeSpec, dir: &Path) -> Option<RealNode> {
        let mut args: Vec<String> = vec!["node".into(), "up".into(), spec.name.clone()];
        if let Some(pool) = &spec.warm_pool {
            args.extend(["--warm".into(), "--pool".into(), pool.clone()]);
        }
        for l in &spec.labels {
            args.extend(["--label".into(), l.clone()]);
        }
        for t in &spec.taints {
            args.extend(["--taint".into(), t.clone()]);
        }
        if let Some(r) = &spec.reserve {
            args.extend(["--reserve".into(), r.clone()]);
        }
        if let Some(r) = &spec.rate {
            args.extend(["--rate".into(), r.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        // The guard exists before the script runs: a half-made node is taken down too.
        let mut node = RealNode {
            name: spec.name.clone(),
            cluster: self,
            dir: dir.to_owned(),
            up: true,
        };
        match run_script(dir, &args) {
            Ok(_) => {
                eprintln!(
                    "real nodes: {} Ready in {:.1} s",
                    spec.name,
                    start.elapsed().as_secs_f64()
                );
                Some(node)
            }
            Err(None) => {
                node.up = false;
                eprintln!("SKIP: real nodes cannot run here (reason above)");
                None
            }
            Err(Some(e)) => panic!("{e}"),
        }
    }

    /// `imageCache.toolImage` for real nodes: the statically linked release binary (the
    /// Dockerfile's build, as tests/cli/static_binary.rs runs it), as `/warmpool` in an image of its
    /// own, pushed into the registry. Built once per binary (cached by its sha256).
    pub fn tool_image(&self) -> &str {
        self.tool_image.get_or_init(|| {
            let binary = static_warmpool();
            let out = run_script(
                &self.dir,
                &[
                    "registry",
                    "push-binary",
                    binary.to_str().expect("utf-8 path"),
                ],
            )
            .unwrap_or_else(|e| panic!("push the tool image: {e:?}"));
            out.lines()
                .last()
                .map(|l| l.trim().to_owned())
                .expect("push-binary printed the image name")
        })
    }
}

/// One node to start.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub name: String,
    /// `--warm --pool VALUE`: the pool label `workload-type=VALUE` and its NoSchedule taint.
    pub warm_pool: Option<String>,
    /// More labels, `k=v`.
    pub labels: Vec<String>,
    /// More taints, `k=v:Effect`.
    pub taints: Vec<String>,
    /// The kubelet's systemReserved, `cpu=1,memory=11Gi` (each node reports the whole VM).
    pub reserve: Option<String>,
    /// Registry bandwidth of the node (`25MB`, `0` = unlimited); default 25 MB/s.
    pub rate: Option<String>,
}

impl NodeSpec {
    /// A warm node of `pool` holding half of this machine (1 CPU, 12 GiB allocatable), so that
    /// two of them add up to the real VM.
    pub fn warm_half(name: &str, pool: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_owned(),
            warm_pool: Some(pool.to_owned()),
            reserve: Some("cpu=1,memory=12Gi".into()),
            ..NodeSpec::default()
        }
    }
}

/// A running real node; dropping it takes it down (`cluster.sh node down`).
#[derive(Debug)]
pub struct RealNode {
    pub name: String,
    cluster: &'static RealCluster,
    /// The cluster dir as the node was started with it.
    dir: PathBuf,
    up: bool,
}

impl RealNode {
    /// Stops the node, deletes its Node and its pods, and puts the host back.
    pub fn down(&mut self) {
        if std::mem::take(&mut self.up) {
            let _ = run_script(&self.dir, &["node", "down", &self.name]);
        }
    }

    /// Stops the kubelet and starts it again (containerd and the pods keep running); returns
    /// when the Node is Ready again.
    pub fn restart_kubelet(&self) {
        run_script(&self.dir, &["node", "restart-kubelet", &self.name])
            .unwrap_or_else(|e| panic!("restart the kubelet of {}: {e:?}", self.name));
    }

    /// The node's containerd socket (under the node's short root, whatever the checkout's
    /// path: `cluster.sh node socket`).
    pub fn socket(&self) -> PathBuf {
        let out = run_script(&self.dir, &["node", "socket", &self.name])
            .unwrap_or_else(|e| panic!("the containerd socket of {}: {e:?}", self.name));
        PathBuf::from(out.trim())
    }

    /// The images in the node's containerd (namespace k8s.io, as the kubelet sees them), by
    /// reference: `ctr -n k8s.io images ls -q`, names and `sha256:` digests alike.
    pub fn images(&self) -> Vec<String> {
        let out = succeed(
            Command::new("ctr")
                .arg("--address")
                .arg(self.socket())
                .args(["-n", "k8s.io", "images", "ls", "-q"]),
            &format!("ctr images ls on {}", self.name),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Starts following the node's containerd events (`ctr events`); returns once the
    /// subscription is live, so no later exit is missed.
    pub fn task_exits(&self) -> TaskExits {
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events runs");
        let stdout = child.stdout.take().expect("piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
        // Proof that the subscription is live: an event of our own making comes through.
        let marker = format!("warmpool-sync-{}", std::process::id());
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("--address")
                .arg(self.socket())
                .args(args)
                .output()
                .expect("ctr runs")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            ctr(&["namespaces", "create", &marker]);
            ctr(&["namespaces", "remove", &marker]);
            let seen = lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(_, l): &(Instant, String)| l.contains(&marker));
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ctr events on {} shows nothing",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        TaskExits {
            child: super::cluster::ChildGuard(child),
            lines,
        }
    }

    /// The log of the node's kubelet (for failure messages).
    pub fn kubelet_log(&self) -> PathBuf {
        self.logs().join("kubelet.log")
    }

    fn logs(&self) -> PathBuf {
        self.cluster.dir.join("logs/nodes").join(&self.name)
    }

    /// The last `n` warning and error lines (klog `W…`/`E…`, containerd `level=warning|error`)
    /// of the node's kubelet and containerd logs, for a failure message: a CI run leaves only
    /// its output to read.
    pub fn log_problems(&self, n: usize) -> String {
        let mut out = String::new();
        for (file, is_problem) in [
            (
                "kubelet.log",
                (|l: &str| l.starts_with('E') || l.starts_with('W')) as fn(&str) -> bool,
            ),
            ("containerd.log", |l: &str| {
                l.contains("level=error") || l.contains("level=warning")
            }),
        ] {
            let path = self.logs().join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| is_problem(l)).collect();
            let tail = &lines[lines.len().saturating_sub(n)..];
            out.push_str(&format!(
                "last {} problem lines of {}:\n",
                tail.len(),
                path.display()
            ));
            for l in tail {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.down();
    }
}

/// The containerd events of one node, as they arrive (see [`RealNode::task_exits`]).
pub struct TaskExits {
    child: super::cluster::ChildGuard,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl TaskExits {
    /// When the task of container `id` (the part after `containerd://`) exited, as seen here,
    /// and its exit status.
    pub fn exit_of(&self, id: &str) -> Option<(Instant, i64)> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().find_map(|(at, line)| {
            let (_, json) = line.split_once(" /tasks/exit ")?;
            let event: serde_json::Value = serde_json::from_str(json).ok()?;
            (event["container_id"] == id)
                // Protobuf's JSON leaves a zero out.
                .then(|| (*at, event["exit_status"].as_i64().unwrap_or(0)))
        })
    }
}

impl std::fmt::Debug for TaskExits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskExits(ctr pid {})", self.child.0.id())
    }
}

/// Builds (or finds up to date) the statically linked release `warmpool`; its path.
/// `WARMPOOL_TEST_STATIC_BINARY` names one built already (a release build takes minutes, and
/// the image cache only runs its `install-noop` and `noop`).
pub fn static_warmpool() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("WARMPOOL_TEST_STATIC_BINARY") {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "WARMPOOL_TEST_STATIC_BINARY={}: no such file",
                    path.display()
                );
                return path;
            }
            let start = Instant::now();
            let binary = super::static_build::build_static();
            eprintln!(
                "real nodes: static warmpool ready in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            binary
        })
        .clone()
}

/// How long real-node operations may take here (pulls through the rate-limited proxy included).
pub const REAL_TIMEOUT: Duration = Duration::from_secs(180);

/// The three CargoCATs workloads' CPU requests: 500m in all, so that a tenant fits one half-VM
/// node of 1 CPU only once a 600m+ placeholder has made room.
pub const TENANT_CPU: [&str; 3] = ["200m", "200m", "100m"];

/// Creates the CargoCATs Deployments in `ns` (which exists): the local look-alike images, an
/// httpGet readiness probe each, CPU requests [`TENANT_CPU`].
pub async fn create_cargocats(client: &Client, ns: &str, registry: &Registry) {
    create_workloads(client, ns, registry.http_port, &registry.cargocats()).await;
}

/// [`create_cargocats`] with other `(name, image)`s (serving `GET /` on `port`).
pub async fn create_workloads(client: &Client, ns: &str, port: u16, workloads: &[(&str, &str)]) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for ((name, image), cpu) in workloads.iter().copied().zip(TENANT_CPU) {
        let labels = json!({"app": name, "app.kubernetes.io/part-of": "cargocats"});
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": name,
                            "image": image,
                            "ports": [{"containerPort": port}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1},
                            "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}},
                        }],
                    },
                },
            },
        }))
        .expect("deployment");
        // The ServiceAccount admission plugin may refuse pods for a second; the Deployment
        // controller retries by itself, so only the Deployment's creation is ours to do.
        api.create(&PostParams::default(), &d)
            .await
            .unwrap_or_else(|e| panic!("create deployment {ns}/{name}: {e}"));
    }
}

/// The pod's Ready condition is True (every container ready, readiness probes passing).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
