//! The real Karpenter beside the local control plane (`tests/cluster/cluster.sh karpenter up`:
//! its kwok provider, and KWOK faking the kubelets of the Nodes it launches), and the chart's
//! own NodePool for one test run: `helm template` of `charts/warmpool` with `nodePool.enabled`,
//! the run's pool label and a `nodePool.nodeClassRef` to a `KWOKNodeClass` of the run's own
//! (its `nodeRegistrationDelay` is the emulated instance boot). No NodePool is written here.
//!
//! Pods on KWOK nodes are Running within milliseconds and pull no image: what depends on pulls,
//! probes and the warm/cold verdict stays on real nodes.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::cluster::{eventually, kubeconfig, repo_root};
use super::objects::dynamic_api;

/// Karpenter's label on the Nodes and NodeClaims of a NodePool.
pub const NODE_POOL_LABEL: &str = "karpenter.sh/nodepool";
/// A KWOKNodeClass so labelled gets real nodes (tests/cluster/karpenter-local).
pub const REAL_NODES_LABEL: &str = "warmpool.io/real-nodes";
/// The one instance type of real nodes (what is left of this machine for one node).
pub const REAL_INSTANCE_TYPE: &str = "local-half";

/// Karpenter and KWOK running (started once per test process). `None` means skip (outside CI
/// only: `karpenter.sh` exits 3 when it cannot be built here).
pub fn ensure() -> Option<()> {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    kubeconfig()?;
    let result = UP.get_or_init(|| {
        let out = Command::new(repo_root().join("tests/cluster/cluster.sh"))
            .args(["karpenter", "up"])
            .stderr(Stdio::inherit())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run tests/cluster/cluster.sh karpenter up: {e}"))?;
        match out.code() {
            Some(0) => Ok(()),
            Some(3) => Err("skip".into()),
            _ => Err(format!(
                "tests/cluster/cluster.sh karpenter up failed ({out})"
            )),
        }
    });
    match result {
        Ok(()) => Some(()),
        Err(e) if e == "skip" && std::env::var("CI").as_deref() != Ok("true") => None,
        Err(e) => panic!("Karpenter is required here: {e}"),
    }
}

pub fn node_pools(client: &Client) -> Api<DynamicObject> {
    dynamic_api(client, "karpenter.sh", "v1", "NodePool", "nodepools")
}

pub fn node_claims(client: &Client) -> Api<DynamicObject> {
    dynamic_api(client, "karpenter.sh", "v1", "NodeClaim", "nodeclaims")
}

fn node_classes(client: &Client) -> Api<DynamicObject> {
    dynamic_api(
        client,
        "karpenter.kwok.sh",
        "v1alpha1",
        "KWOKNodeClass",
        "kwoknodeclasses",
    )
}

/// The chart's NodePool for one run, and its KWOKNodeClass. Removed (with Karpenter's nodes)
/// when dropped, also when a test fails half-way.
pub struct NodePool {
    pub name: String,
    client: Client,
}

impl NodePool {
    /// Renders the chart's NodePool for `pool` (the value of `workload-type`) with `sets`
    /// (`key=value` chart values, e.g. `nodePool.disruption.consolidateAfter=5s`), against a
    /// KWOKNodeClass named like it whose instances boot in `boot` (e.g. `0s`, `5s`), and applies
    /// both. `name` is unique per run (Karpenter names its NodeClaims and Nodes after it).
    pub async fn install(
        client: &Client,
        name: &str,
        pool: &str,
        boot: &str,
        sets: &[&str],
    ) -> NodePool {
        let node_pool = NodePool::class(client, name, boot, false).await;
        node_pool.apply_values(pool, sets).await;
        node_pool
    }

    /// [`NodePool::install`] for **real nodes** (`tests/cluster/karpenter-local`: a kubelet and
    /// a containerd each, started `boot` after Karpenter's decision): the KWOKNodeClass is
    /// labelled `warmpool.io/real-nodes=true` and the pool offers the one real instance type.
    pub async fn install_real(client: &Client, name: &str, pool: &str, boot: &str) -> NodePool {
        let node_pool = NodePool::class(client, name, boot, true).await;
        node_pool
            .apply_values(
                pool,
                &[&format!("nodePool.instanceTypes={{{REAL_INSTANCE_TYPE}}}")],
            )
            .await;
        node_pool
    }

    /// Only the KWOKNodeClass `name` of real nodes booting in `boot`, for the NodePool a `helm
    /// install` of the chart makes (`nodePool.name` and `nodePool.nodeClassRef` naming it: see
    /// [`NodePool::chart_values`]); the guard deletes both.
    pub async fn real_class(client: &Client, name: &str, boot: &str) -> NodePool {
        NodePool::class(client, name, boot, true).await
    }

    /// The chart values that make the release's own NodePool `name`, on the KWOKNodeClass of
    /// the same name, offering the real instance type.
    pub fn chart_values(name: &str) -> Vec<String> {
        [
            "nodePool.enabled=true".to_owned(),
            format!("nodePool.name={name}"),
            format!("nodePool.instanceTypes={{{REAL_INSTANCE_TYPE}}}"),
            "nodePool.nodeClassRef.group=karpenter.kwok.sh".into(),
            "nodePool.nodeClassRef.kind=KWOKNodeClass".into(),
            format!("nodePool.nodeClassRef.name={name}"),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_owned(), s])
        .collect()
    }

    /// A general-purpose pool of real nodes (no label, no taint: what a cluster without warm
    /// capacity provisions for any pod), as a platform would have next to the warm one.
    pub async fn install_general_real(client: &Client, name: &str, boot: &str) -> NodePool {
        let node_pool = NodePool::class(client, name, boot, true).await;
        let np = json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": name, "labels": {"warmpool.test/run": name}},
            "spec": {
                "template": {"spec": {
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": name},
                    "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                      "values": [REAL_INSTANCE_TYPE]}],
                    "expireAfter": "Never"
                }},
                "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10s"}
            }
        });
        apply(&node_pools(client), name, &np).await;
        node_pool
    }

    /// The run's KWOKNodeClass (named like the pool), launching real nodes or KWOK ones.
    async fn class(client: &Client, name: &str, boot: &str, real: bool) -> NodePool {
        let mut labels = json!({"warmpool.test/run": name});
        if real {
            labels[REAL_NODES_LABEL] = json!("true");
        }
        let class = json!({
            "apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass",
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeRegistrationDelay": boot}
        });
        apply(&node_classes(client), name, &class).await;
        NodePool {
            name: name.to_owned(),
            client: client.clone(),
        }
    }

    /// Renders and applies the chart's NodePool again with other values (a template change
    /// makes Karpenter see its nodes drifted).
    pub async fn apply_values(&self, pool: &str, sets: &[&str]) {
        let mut args: Vec<String> = [
            "nodePool.enabled=true".to_owned(),
            format!("nodePool.name={}", self.name),
            format!("pool.nodeLabel.value={pool}"),
            "nodePool.nodeClassRef.group=karpenter.kwok.sh".into(),
            "nodePool.nodeClassRef.kind=KWOKNodeClass".into(),
            format!("nodePool.nodeClassRef.name={}", self.name),
        ]
        .into_iter()
        .chain(sets.iter().map(|s| s.to_string()))
        .flat_map(|s| ["--set".to_owned(), s])
        .collect();
        args.extend(["--show-only".into(), "templates/nodepool.yaml".into()]);
        let docs = super::helm::template("wp", "warmpool-system", &args);
        let mut np = docs
            .into_iter()
            .find(|d| d["kind"] == "NodePool")
            .expect("the chart renders a NodePool");
        np["metadata"]["labels"]["warmpool.test/run"] = json!(self.name);
        apply(&node_pools(&self.client), &self.name, &np).await;
    }

    /// The NodePool as the API server has it (status included).
    pub async fn get(&self) -> Value {
        let np = node_pools(&self.client)
            .get(&self.name)
            .await
            .expect("the NodePool");
        serde_json::to_value(np).unwrap()
    }

    /// Its Nodes (Karpenter's label), those being deleted included.
    pub async fn nodes(&self) -> Vec<Node> {
        pool_nodes(&self.client, &self.name).await
    }

    /// The names of its Nodes that are not being deleted.
    pub async fn live_node_names(&self) -> std::collections::BTreeSet<String> {
        self.nodes()
            .await
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .filter_map(|n| n.metadata.name)
            .collect()
    }

    /// Its NodeClaims, as JSON.
    pub async fn claims(&self) -> Vec<Value> {
        node_claims(&self.client)
            .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", self.name)))
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|c| serde_json::to_value(c).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `n` Nodes of the pool are Ready and not being deleted; returns them.
    pub async fn wait_nodes(&self, n: usize, timeout: Duration) -> Vec<Node> {
        eventually(
            &format!("{n} Ready nodes of NodePool {}", self.name),
            timeout,
            || async {
                let ready: Vec<Node> = self
                    .nodes()
                    .await
                    .into_iter()
                    .filter(|n| n.metadata.deletion_timestamp.is_none() && node_ready(n))
                    .collect();
                (ready.len() >= n).then_some(ready)
            },
        )
        .await
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        // kubectl: a kube client cannot be awaited in a destructor. Karpenter deletes the
        // NodeClaims of a deleted NodePool (owner references) and their Nodes with them.
        let Some(kubeconfig) = kubeconfig() else {
            return;
        };
        let kubectl = super::reconciler::kubectl_path();
        for kind in [
            "nodepools.karpenter.sh",
            "kwoknodeclasses.karpenter.kwok.sh",
        ] {
            let _ = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "delete",
                    kind,
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn apply(api: &Api<DynamicObject>, name: &str, object: &Value) {
    let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    api.patch(
        name,
        &PatchParams::apply("warmpool-tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// The Nodes of NodePool `name` (Karpenter's label), those being deleted included.
pub async fn pool_nodes(client: &Client, name: &str) -> Vec<Node> {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
