//! warmpool (webhook and reconciler) on real nodes, configured for the local registry's images,
//! and what the real-node tests wait for and explain with: nodes started in parallel, a tenant's
//! pods Ready, the image cache complete on a node, a pod's Events, the state of it all on a
//! timeout.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, Event, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use warmpool::config::{Config, Slot, SlotResources, SpareSlots};

use crate::cluster::{client, eventually_explained};
use crate::objects::live_pods;
use crate::real_nodes::{
    NodeSpec, REAL_TIMEOUT, RealCluster, RealNode, create_cargocats, is_ready,
};
use crate::reconciler::{Reconciler, Run, config};
use crate::webhook::{RUN_LABEL, Webhook, unregister};

pub const CACHE_SELECTOR: &str = "app.kubernetes.io/name=warmpool-image-cache";
pub const CACHE_SELECTOR_DISCOVERED: &str =
    "app.kubernetes.io/name=warmpool-image-cache-discovered";
pub const IMAGE_CACHE: &str = "warmpool-image-cache";
pub const IMAGE_CACHE_DISCOVERED: &str = "warmpool-image-cache-discovered";
pub const PREWARMER_SELECTOR: &str = "app.kubernetes.io/name=warmpool-prewarmer";
pub const TENANT_SELECTOR: &str = "app.kubernetes.io/part-of=cargocats";

/// warmpool (webhook + reconciler) for one test, configured for the local registry's images.
pub struct RealWarmpool {
    pub run: Run,
    pub webhook: Webhook,
    pub reconciler: Reconciler,
    /// The MutatingWebhookConfiguration `run.id` exists (removed on drop if a test failed).
    registered: bool,
}

impl RealWarmpool {
    /// With the three CargoCATs images cached, and `more_images` after them.
    pub async fn start(
        client: &Client,
        binary: &Path,
        cluster: &RealCluster,
        slot_cpu: &str,
        more_images: &[&str],
    ) -> RealWarmpool {
        RealWarmpool::start_with(client, binary, cluster, slot_cpu, more_images, |_| {}).await
    }

    /// [`RealWarmpool::start`] with more changes to the configuration.
    pub async fn start_with(
        client: &Client,
        binary: &Path,
        cluster: &RealCluster,
        slot_cpu: &str,
        more_images: &[&str],
        change: impl FnOnce(&mut Config),
    ) -> RealWarmpool {
        let registry = &cluster.registry;
        let images = [
            &registry.dataservice,
            &registry.frontgateservice,
            &registry.mysql,
        ]
        .into_iter()
        .cloned()
        .chain(more_images.iter().map(|i| i.to_string()))
        .collect();
        let cache = |c: &mut Config| {
            c.image_cache.discover = false;
            c.image_cache.images = images;
            change(c);
        };
        RealWarmpool::launch(client, binary, cluster, slot_cpu, cache, &[]).await
    }

    /// warmpool with one placeholder of `slot_cpu` (the pause image of the local registry), the
    /// image cache's tool image built for the nodes, `change` applied; the reconciler started
    /// with `reconciler_args`.
    pub async fn launch(
        client: &Client,
        binary: &Path,
        cluster: &RealCluster,
        slot_cpu: &str,
        change: impl FnOnce(&mut Config),
        reconciler_args: &[&str],
    ) -> RealWarmpool {
        let config = config(|c| {
            c.prewarmer.spare_slots = SpareSlots::Fixed(1);
            c.prewarmer.slot = Slot::Fixed(SlotResources {
                cpu: Quantity(slot_cpu.into()),
                memory: Quantity("1Gi".into()),
            });
            c.prewarmer.do_not_disrupt = false;
            c.prewarmer.image = cluster.registry.pause.clone();
            c.image_cache.tool_image = cluster.tool_image().to_owned();
            change(c);
        });
        let run = Run::new(client, binary, config).await;
        let webhook = Webhook::start(binary, Some(&run.settings())).await;
        let pattern = format!("{}*", run.tenant_prefix);
        webhook
            .register(client, &run.id, &[&pattern], &run.namespace)
            .await;
        let reconciler = run.spawn("real", reconciler_args, &[]);
        reconciler.wait_ready(Duration::from_secs(60)).await;
        RealWarmpool {
            run,
            webhook,
            reconciler,
            registered: true,
        }
    }

    /// A tenant namespace of this run (the webhook's scope label on it from its creation).
    pub async fn tenant(&self, suffix: &str) -> String {
        let ns = self.run.tenant(suffix);
        self.run
            .create_namespace(&ns, &[(RUN_LABEL, &self.run.id)])
            .await;
        ns
    }

    pub async fn stop(mut self) {
        self.reconciler.terminate();
        self.webhook.stop();
        unregister(&self.run.client, &self.run.id).await;
        self.registered = false;
        self.run.cleanup().await;
    }
}

impl Drop for RealWarmpool {
    /// A failed test leaves no webhook configuration behind (the Run removes its namespaces).
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let kubectl = std::process::Command::new(
            crate::cluster::repo_root().join("tests/cluster/cluster.sh"),
        )
        .arg("kubectl-path")
        .output();
        if let (Ok(out), Some(kubeconfig)) = (kubectl, crate::cluster::kubeconfig()) {
            let _ = std::process::Command::new(String::from_utf8_lossy(&out.stdout).trim())
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args([
                    "delete",
                    "mutatingwebhookconfiguration",
                    "--ignore-not-found",
                    "--wait=false",
                ])
                .arg(&self.run.id)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Starts nodes in parallel (each `node up` is a few seconds of mostly waiting).
pub async fn nodes_up(
    cluster: &'static RealCluster,
    specs: Vec<NodeSpec>,
) -> Option<Vec<RealNode>> {
    let handles: Vec<_> = specs
        .into_iter()
        .map(|spec| tokio::task::spawn_blocking(move || cluster.node(&spec)))
        .collect();
    let mut nodes = Vec::new();
    let mut skip = false;
    for h in handles {
        match h.await.expect("node up task") {
            Some(n) => nodes.push(n),
            None => skip = true,
        }
    }
    (!skip).then_some(nodes)
}

/// Everything a test needs, or `None` to skip (outside CI).
pub async fn prerequisites() -> Option<(Client, &'static RealCluster)> {
    let client = client().await?;
    let cluster = tokio::task::spawn_blocking(RealCluster::get)
        .await
        .expect("real cluster")?;
    // The tool image (a release build the first time) before any timing starts.
    tokio::task::spawn_blocking(|| {
        cluster.tool_image();
    })
    .await
    .expect("tool image");
    Some((client, cluster))
}

pub async fn create_tenant(client: &Client, ns: &str, cluster: &RealCluster) {
    create_cargocats(client, ns, &cluster.registry).await;
}

pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Waits until the tenant's three pods are Ready (readiness probes passing); returns them.
pub async fn wait_tenant_ready(client: &Client, ns: &str, nodes: &[&RealNode]) -> Vec<Pod> {
    eventually_explained(
        &format!("the CargoCATs pods of {ns} Ready"),
        REAL_TIMEOUT,
        || async {
            let pods = live_pods(client, ns, TENANT_SELECTOR).await;
            (pods.len() == 3 && pods.iter().all(is_ready)).then_some(pods)
        },
        || async { explain(client, &[ns], nodes).await },
    )
    .await
}

/// The image-cache pod on `node` once its init container (the installer) has exited 0 and
/// every container (pause, and one per cached image) is ready: every image is on the node.
pub async fn wait_cache_complete(client: &Client, ns: &str, node: &RealNode) -> Pod {
    eventually_explained(
        &format!(
            "the image cache complete on {} (kubelet log: {})",
            node.name,
            node.kubelet_log().display()
        ),
        REAL_TIMEOUT,
        || async {
            live_pods(client, ns, CACHE_SELECTOR)
                .await
                .into_iter()
                .find(|p| node_of(p) == Some(node.name.as_str()) && cache_complete(p))
        },
        || async { explain(client, &[ns], &[node]).await },
    )
    .await
}

pub fn cache_complete(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let wanted = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map_or(0, Vec::len);
    let inits = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    inits.len() == wanted
        && inits.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        })
        && is_ready(pod)
}

/// `(reason, message)` of the Events about a pod.
pub async fn pod_events(client: &Client, ns: &str, pod: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// What a timed-out wait leaves to read: the pods of `namespaces` (phase, node, every
/// container's state), their latest Events, and the nodes' kubelet and containerd complaints.
pub async fn explain(client: &Client, namespaces: &[&str], nodes: &[&RealNode]) -> String {
    pub fn state(name: &str, s: Option<&ContainerState>) -> String {
        let s = s.cloned().unwrap_or_default();
        if let Some(w) = s.waiting {
            format!(
                "{name}=waiting({}: {})",
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            )
        } else if let Some(t) = s.terminated {
            format!(
                "{name}=exited({} {}: {})",
                t.exit_code,
                t.reason.unwrap_or_default(),
                t.message.unwrap_or_default()
            )
        } else if s.running.is_some() {
            format!("{name}=running")
        } else {
            format!("{name}=?")
        }
    }
    let mut out = String::new();
    if let Some(cluster) = RealCluster::get() {
        out.push_str("control plane: ");
        out.push_str(&cluster.status());
    }
    for ns in namespaces {
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pod in &pods {
            let status = pod.status.clone().unwrap_or_default();
            let containers: Vec<String> = status
                .init_container_statuses
                .iter()
                .chain(&status.container_statuses)
                .flatten()
                .map(|c| state(&c.name, c.state.as_ref()))
                .collect();
            out.push_str(&format!(
                "pod {ns}/{} on {} {} ready={}: {}\n",
                pod.name_any(),
                node_of(pod).unwrap_or("(unscheduled)"),
                status.phase.unwrap_or_default(),
                is_ready(pod),
                containers.join(", ")
            ));
        }
        let events = Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for e in &events[events.len().saturating_sub(25)..] {
            out.push_str(&format!(
                "event {ns}/{} x{} {} {}: {}\n",
                e.involved_object.name.as_deref().unwrap_or_default(),
                e.count.unwrap_or(1),
                e.type_.as_deref().unwrap_or_default(),
                e.reason.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default()
            ));
        }
    }
    for node in nodes {
        out.push_str(&node.log_problems(15));
    }
    out
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
