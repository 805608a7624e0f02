//! The CargoCATs scenario on the local control plane, shared by the scheduling test and the
//! demo: warm and general fake nodes, warmpool's webhook and reconciler, tenants arriving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use warmpool::config::{Config, Slot, SlotResources, SpareSlots};

use super::cluster::{ChildGuard, eventually, free_port, kubeconfig, spawn_warmpool};
use super::fakelet::{FakeNode, create_node};
use super::reconciler::use_pool;
use super::webhook::{Webhook, run_labels, unregister};

/// The CargoCATs workloads of one tenant: (name, image, cpu, memory). Sum: 640m / 2150Mi.
pub const CARGOCATS: [(&str, &str, &str, &str); 3] = [
    (
        "dataservice",
        "771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/dataservice:v1.1",
        "250m",
        "768Mi",
    ),
    (
        "frontgateservice",
        "771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/frontgateservice:v1",
        "250m",
        "768Mi",
    ),
    (
        "mysql",
        "771960604435.dkr.ecr.eu-west-1.amazonaws.com/dockerhub-images/library/mysql:9",
        "140m",
        "614Mi",
    ),
];

/// warmpool running against the local control plane for one run.
pub struct Warmpool {
    pub run: String,
    /// warmpool's own namespace (prewarmer, image cache).
    pub namespace: String,
    /// Tenant namespaces of this run start with this.
    pub tenant_prefix: String,
    /// The pool label value (unique per run, so runs never share warm nodes).
    pub pool: String,
    pub webhook: Webhook,
    pub reconciler: Option<ChildGuard>,
    pub reconciler_log: PathBuf,
    /// The reconciler's metrics address (`host:port`, plain HTTP).
    pub metrics: String,
    client: Client,
}

/// Names and sizes of one run.
pub struct Setup {
    /// Scopes the webhook configuration and fake nodes of this run.
    pub run: String,
    pub namespace: String,
    pub tenant_prefix: String,
    pub pool: String,
    pub spare_slots: u32,
    /// For real nodes: the local registry's images instead of the defaults.
    pub real: Option<RealImages>,
}

/// What warmpool needs to know to run on real nodes (the local registry's images).
pub struct RealImages {
    /// `prewarmer.image` (the local pause image).
    pub pause: String,
    /// `imageCache.toolImage`.
    pub tool: String,
    /// `imageCache.images` (discovery off).
    pub images: Vec<String>,
    /// `prewarmer.slot.cpu` (memory 1Gi).
    pub slot_cpu: String,
    /// `tenants.timeToReady.window`: the reconciler times a tenant once this span after its
    /// creation is over (counting the pods made in it), so the demo need not wait the default
    /// minute for the figure.
    pub time_to_ready_window: String,
}

impl Setup {
    /// A run that shares the cluster with others: every name and the pool label are unique.
    pub fn isolated(run: &str, spare_slots: u32) -> Setup {
        Setup {
            run: run.to_owned(),
            namespace: format!("{run}-system"),
            tenant_prefix: format!("{run}-demo-"),
            pool: format!("cargocats-{run}"),
            spare_slots,
            real: None,
        }
    }
}

impl Warmpool {
    /// Starts webhook and reconciler with a configuration for this run's pool and tenants.
    pub async fn start(client: &Client, binary: &Path, setup: Setup) -> Warmpool {
        Warmpool::start_with(client, binary, setup, |_| {}, &[]).await
    }

    /// [`Warmpool::start`], with `change` applied to the configuration (after this run's tenants,
    /// pool and spare slots) and `env` for the reconciler.
    pub async fn start_with(
        client: &Client,
        binary: &Path,
        setup: Setup,
        change: impl FnOnce(&mut Config),
        env: &[(&str, &str)],
    ) -> Warmpool {
        let Setup {
            run,
            namespace,
            tenant_prefix,
            pool,
            spare_slots,
            real,
        } = setup;
        let mut config = Config::default();
        config.tenants.namespace_patterns = vec![format!("{tenant_prefix}*")];
        use_pool(&mut config, &pool);
        config.prewarmer.spare_slots = SpareSlots::Fixed(spare_slots);
        if let Some(real) = real {
            config.tenants.time_to_ready.window = real.time_to_ready_window;
            config.prewarmer.slot = Slot::Fixed(SlotResources {
                cpu: Quantity(real.slot_cpu),
                memory: Quantity("1Gi".into()),
            });
            config.prewarmer.image = real.pause;
            config.image_cache.discover = false;
            config.image_cache.tool_image = real.tool;
            config.image_cache.images = real.images;
        }
        change(&mut config);
        let ns_api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": namespace, "labels": run_labels(&run)}}),
        )
        .unwrap();
        let _ = ns_api.create(&PostParams::default(), &ns).await;

        let webhook = Webhook::start(binary, Some(&config)).await;
        let pattern = format!("{tenant_prefix}*");
        webhook
            .register(client, &run, &[&pattern], &namespace)
            .await;
        let config_path = webhook.dir.path().join("config.yaml");
        let reconciler_log = webhook.dir.path().join("reconciler.log");
        let metrics = format!("127.0.0.1:{}", free_port());
        let kubeconfig = kubeconfig().expect("kubeconfig");
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("KUBECONFIG", kubeconfig.to_str().unwrap()));
        let reconciler = spawn_warmpool(
            binary,
            &[
                "reconcile",
                "--config",
                config_path.to_str().unwrap(),
                "--namespace",
                &namespace,
                "--metrics-listen",
                &metrics,
            ],
            &env,
            &reconciler_log,
        );
        Warmpool {
            run,
            namespace,
            tenant_prefix,
            pool,
            webhook,
            reconciler: Some(reconciler),
            reconciler_log,
            metrics,
            client: client.clone(),
        }
    }

    /// A warm node of this run's pool: labelled and tainted as the NodePool makes them.
    pub async fn add_warm_node(&self, name: &str, cpu: &str, memory: &str) {
        create_node(
            &self.client,
            &FakeNode {
                name,
                labels: &[("workload-type", &self.pool)],
                taints: &[("workload-type", &self.pool, "NoSchedule")],
                cpu,
                memory,
            },
        )
        .await
        .expect("warm node");
    }

    /// A general-purpose node: no pool label, no taint.
    pub async fn add_general_node(&self, name: &str, cpu: &str, memory: &str) {
        create_node(
            &self.client,
            &FakeNode {
                name,
                labels: &[],
                taints: &[],
                cpu,
                memory,
            },
        )
        .await
        .expect("general node");
    }

    /// Pods of the prewarmer, with the node each is bound to (None = Pending).
    pub async fn placeholders(&self) -> Vec<(String, Option<String>)> {
        pods_with_nodes(
            &self.client,
            &self.namespace,
            "app.kubernetes.io/name=warmpool-prewarmer",
        )
        .await
    }

    /// Waits until `n` placeholders are bound to nodes.
    pub async fn wait_placeholders_bound(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<(String, String)> {
        eventually(
            &format!("{n} placeholder pods bound to nodes"),
            timeout,
            || async {
                let bound: Vec<(String, String)> = self
                    .placeholders()
                    .await
                    .into_iter()
                    .filter_map(|(p, n)| n.map(|n| (p, n)))
                    .collect();
                (bound.len() >= n).then_some(bound)
            },
        )
        .await
    }

    pub async fn prewarmer(&self) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
            .get_opt("warmpool-prewarmer")
            .await
            .ok()
            .flatten()
    }

    pub async fn image_cache(&self) -> Option<DaemonSet> {
        Api::<DaemonSet>::namespaced(self.client.clone(), &self.namespace)
            .get_opt("warmpool-image-cache")
            .await
            .ok()
            .flatten()
    }

    /// One sample of the reconciler's metric `series` (its name and labels as exposed, e.g.
    /// `warmpool_prewarmer_headroom_restore_seconds_count`), if it answers.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = super::reconciler::http_get(&self.metrics, "/metrics").await?;
        super::reconciler::sample(&body, series)
    }

    /// The messages of the Events of `reason` in warmpool's namespace, oldest first.
    pub async fn events(&self, reason: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let mut events = api
            .list(&ListParams::default().fields(&format!("reason={reason}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone());
        events.into_iter().filter_map(|e| e.message).collect()
    }

    pub fn reconciler_logs(&self) -> String {
        std::fs::read_to_string(&self.reconciler_log).unwrap_or_default()
    }

    /// Removes what the run created in the cluster (best effort).
    pub async fn cleanup(mut self, tenants: &[String]) {
        self.reconciler = None;
        self.webhook.stop();
        unregister(&self.client, &self.run).await;
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        for ns in tenants.iter().chain([&self.namespace]) {
            let _ = ns_api.delete(ns, &DeleteParams::default()).await;
        }
        let _ = super::fakelet::delete_nodes(&self.client, &self.run).await;
    }
}

/// Pods matching `selector` in `ns`, with their node.
pub async fn pods_with_nodes(
    client: &Client,
    ns: &str,
    selector: &str,
) -> Vec<(String, Option<String>)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            (p.name_any(), node)
        })
        .collect()
}

/// A tenant as the CargoCATs platform creates one: a namespace (labelled for test run `run`
/// only, as every namespace of a run is), then its Deployments.
pub async fn create_tenant(client: &Client, run: &str, ns: &str) -> Instant {
    let started = Instant::now();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": run_labels(run)}}))
            .unwrap();
    ns_api
        .create(&PostParams::default(), &namespace)
        .await
        .expect("tenant namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (name, image, cpu, memory) in CARGOCATS {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": name, "app.kubernetes.io/part-of": "cargocats"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, "app.kubernetes.io/part-of": "cargocats"}},
                    "spec": {"containers": [{"name": name, "image": image,
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
                }
            }
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("tenant deployment");
    }
    started
}

/// One tenant pod after scheduling.
#[derive(Debug, Clone)]
pub struct TenantPod {
    pub name: String,
    pub node: String,
    pub injected: String,
}

/// Waits until every CargoCATs pod of `ns` is bound to a node; returns them.
pub async fn wait_tenant_scheduled(client: &Client, ns: &str, timeout: Duration) -> Vec<TenantPod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("all CargoCATs pods of {ns} scheduled"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let pods = api
                    .list(&ListParams::default().labels("app.kubernetes.io/part-of=cargocats"))
                    .await
                    .ok()?
                    .items;
                let bound: Vec<TenantPod> = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| {
                        Some(TenantPod {
                            name: p.name_any(),
                            node: p.spec.as_ref()?.node_name.clone()?,
                            injected: p
                                .annotations()
                                .get("warmpool.io/injected")
                                .cloned()
                                .unwrap_or_else(|| "(nothing)".into()),
                        })
                    })
                    .collect();
                (bound.len() == CARGOCATS.len()).then_some(bound)
            }
        },
    )
    .await
}

/// Node name → its labels, for the report.
pub async fn node_labels(client: &Client) -> BTreeMap<String, BTreeMap<String, String>> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect()
        })
        .unwrap_or_default()
}
