//! warmpool as a platform engineer installs it: `helm install` of the chart, its own pods on REAL
//! nodes (`tests/cluster/cluster.sh node up`), the image the release binary is shipped in (pushed
//! into the local registry), the API server calling the webhook through the chart's Service, the
//! reconciler with the in-cluster configuration and the chart's ServiceAccount and RBAC alone.
//! No warmpool process runs on the host here.
//!
//! Two nodes per test: a system node (warmpool's own pods) and a warm node of the chart's default
//! pool (`workload-type=cargocats`, tainted), each half of this machine. The release namespace
//! enforces the `restricted` Pod Security Standard, so every pod the chart and the reconciler
//! make is checked against it. The values set are the images (warmpool's, the placeholders', the
//! cached ones: the registry is local) and the tenant pattern (unique per test).
//!
//! The API server reaches the webhook's pods at their EndpointSlice addresses
//! (`--enable-aggregator-routing`, no kube-proxy), and pods reach the API server at the
//! `kubernetes` Service's address (node.sh routes that one address): see tests/cluster/README.md.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use support::cluster::{client, eventually_explained, kubeconfig, unique};
use support::objects::{live_pods, unscheduled_pod_of};
use support::real_nodes::{
    NodeSpec, REAL_TIMEOUT, RealCluster, RealNode, create_cargocats, is_ready,
};
use support::reconciler::{kubectl, kubectl_path};
use support::release::{ChartRelease, command_line, local_image_values};

const INJECTED: &str = "warmpool.io/injected";
const PREWARMER_SELECTOR: &str = "app.kubernetes.io/name=warmpool-prewarmer";
/// The chart's default pool: nothing but the images and the tenants is set.
const POOL_KEY: &str = "workload-type";
const POOL_VALUE: &str = "cargocats";

/// One install at a time: the chart owns cluster-wide objects (the PriorityClass) and each test
/// runs two nodes of half this machine.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A release of the chart on two real nodes, uninstalled (and its namespaces deleted, its nodes
/// taken down) when dropped, a failing test included.
struct Release {
    id: String,
    chart: ChartRelease,
    client: Client,
    cluster: &'static RealCluster,
    /// Namespaces this test made (the release's, tenants, others), deleted at the end. Declared
    /// before the nodes: dropped first.
    namespaces: Namespaces,
    /// The system node, then the warm node.
    nodes: Vec<RealNode>,
}

impl Release {
    /// Two nodes, the release namespace (`restricted`), then `helm install`; returns once every
    /// pod of the release is Ready. `None` = SKIP (outside CI).
    async fn install(id: String, extra: &[String]) -> Option<Release> {
        let client = client().await?;
        let cluster = RealCluster::get()?;
        let system = cluster.node(&NodeSpec {
            name: format!("{id}-sys"),
            reserve: Some("cpu=1,memory=12Gi".into()),
            ..NodeSpec::default()
        })?;
        let warm = cluster.node(&NodeSpec::warm_half(&format!("{id}-warm"), POOL_VALUE))?;
        let namespace = format!("{id}-system");
        let mut namespaces = Namespaces(client.clone(), Vec::new());
        namespaces
            .create(
                &namespace,
                &[
                    ("pod-security.kubernetes.io/enforce", "restricted"),
                    ("pod-security.kubernetes.io/enforce-version", "latest"),
                ],
            )
            .await;
        remove_stray_priority_class(&client).await;
        let mut values = local_image_values(cluster);
        values.extend([
            "--set-json".into(),
            format!(r#"tenants.namespacePatterns=["{id}-t-*"]"#),
        ]);
        values.extend(extra.iter().cloned());
        let args = ChartRelease::install_args(&id, &namespace, &values);
        eprintln!("in-cluster: {}", command_line(&args));
        let start = Instant::now();
        let chart = ChartRelease::install(&id, &namespace, &args);
        let release = Release {
            id,
            chart,
            client,
            cluster,
            namespaces,
            nodes: vec![system, warm],
        };
        let pods = release
            .chart
            .wait_ready(&release.client, 2, REAL_TIMEOUT, || release.explain())
            .await;
        release
            .chart
            .wait_in_rotation(&release.client, &pods, REAL_TIMEOUT)
            .await;
        eprintln!(
            "in-cluster: release {} installed, every pod Ready in {:.1} s",
            release.id,
            start.elapsed().as_secs_f64()
        );
        Some(release)
    }

    fn namespace(&self) -> String {
        self.chart.namespace.clone()
    }

    /// A tenant namespace (it matches the release's pattern).
    async fn tenant(&mut self, suffix: &str) -> String {
        let name = format!("{}-t-{suffix}", self.id);
        self.namespaces.create(&name, &[]).await;
        name
    }

    async fn pods(&self) -> Vec<Pod> {
        self.chart.pods(&self.client).await
    }

    /// The release's pods with their phase, node and containers' states, and the namespace's
    /// Events (for a failure message).
    async fn explain(&self) -> String {
        let mut out = String::new();
        for p in self.pods().await {
            out += &format!(
                "pod {} on {:?}: {:?}\n",
                p.name_any(),
                p.spec.as_ref().and_then(|s| s.node_name.clone()),
                p.status.as_ref().map(|s| (&s.phase, &s.container_statuses))
            );
        }
        out + &events(&self.client, &self.namespace()).await
    }
}

/// The namespaces a test made, deleted (without waiting) when dropped.
struct Namespaces(Client, Vec<String>);

impl Namespaces {
    async fn create(&mut self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("namespace");
        Api::<Namespace>::all(self.0.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        self.1.push(name.to_owned());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if self.1.is_empty() {
            return;
        }
        let mut args = vec!["delete", "namespace", "--ignore-not-found", "--wait=false"];
        args.extend(self.1.iter().map(String::as_str));
        let _ = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig().expect("kubeconfig"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The chart owns the cluster-wide PriorityClass `warmpool-placeholder`; the other end-to-end
/// tests run the reconciler as a local process, which applies that class itself and leaves it.
/// Helm refuses to install over an object no release owns, so such a class is removed first
/// (nothing else runs warmpool while this test does: test binaries run one after another).
async fn remove_stray_priority_class(client: &Client) {
    let api: Api<PriorityClass> = Api::all(client.clone());
    let pc = api.get_opt("warmpool-placeholder").await.expect("get");
    if pc.is_some_and(|pc| !pc.annotations().contains_key("meta.helm.sh/release-name")) {
        api.delete("warmpool-placeholder", &DeleteParams::default())
            .await
            .expect("delete the stray PriorityClass");
    }
}

/// The namespace's Events, oldest first, one line each.
async fn events(client: &Client, ns: &str) -> String {
    let mut items = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    items.sort_by_key(|e| e.last_timestamp.clone());
    items
        .iter()
        .map(|e| {
            format!(
                "event {} {}/{}: {} {}\n",
                e.type_.as_deref().unwrap_or(""),
                e.involved_object.kind.as_deref().unwrap_or(""),
                e.involved_object.name.as_deref().unwrap_or(""),
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}

fn injected(pod: &Pod) -> bool {
    pod.annotations().contains_key(INJECTED)
}

fn tolerates_pool(pod: &Pod, value: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key.as_deref() == Some(POOL_KEY) && t.value.as_deref() == Some(value))
        })
}

async fn create_pod(client: &Client, ns: &str, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("create pod in {ns}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_warmpool_on_real_nodes_and_the_api_server_calls_it() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some(mut release) = Release::install(unique("wpc"), &[]).await else {
        return;
    };
    let client = release.client.clone();

    // Every pod of the release is on the system node (the warm node's taint keeps it off).
    let system = release.nodes[0].name.clone();
    for p in release.pods().await {
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(system.as_str()),
            "{}",
            p.name_any()
        );
    }

    // The API server calls the webhook through the Service: a tenant pod is mutated …
    let tenant = release.tenant("a").await;
    let created = create_pod(
        &client,
        &tenant,
        &unscheduled_pod_of("probe", &release.cluster.registry.pause),
    )
    .await;
    assert!(
        injected(&created) && tolerates_pool(&created, POOL_VALUE),
        "a tenant pod is mutated by the in-cluster webhook: {:?}\n{}",
        created.metadata.annotations,
        release.explain().await
    );
    // … and a pod elsewhere is not.
    let other = format!("{}-plain", release.id);
    release.namespaces.create(&other, &[]).await;
    let plain = create_pod(
        &client,
        &other,
        &unscheduled_pod_of("probe", &release.cluster.registry.pause),
    )
    .await;
    assert!(!injected(&plain), "{:?}", plain.metadata.annotations);

    // The reconciler (in-cluster config, the chart's RBAC) enrols the tenant …
    eventually_explained(
        "the tenant labelled warmpool.io/tenant=enabled",
        REAL_TIMEOUT,
        || async {
            let ns = Api::<Namespace>::all(client.clone())
                .get(&tenant)
                .await
                .ok()?;
            (ns.labels().get("warmpool.io/tenant").map(String::as_str) == Some("enabled"))
                .then_some(())
        },
        || async { release.explain().await },
    )
    .await;
    // … keeps a placeholder Running on the warm node and the image cache Ready there.
    let warm = release.nodes[1].name.clone();
    let ns = release.namespace();
    eventually_explained(
        "a placeholder Running on the warm node, the image cache Ready",
        REAL_TIMEOUT,
        || async {
            let prewarmer = live_pods(&client, &ns, PREWARMER_SELECTOR).await;
            let placed = prewarmer.iter().any(|p| {
                is_ready(p) && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&warm)
            });
            let cache = Api::<DaemonSet>::namespaced(client.clone(), &ns)
                .get_opt("warmpool-image-cache")
                .await
                .ok()??;
            let ready = cache.status.as_ref().map_or(0, |s| s.number_ready);
            (placed && ready == 1).then_some(())
        },
        || async { release.explain().await },
    )
    .await;

    // A tenant's workloads go Ready on the warm node, and the reconciler says so.
    let shop = release.tenant("shop").await;
    let start = Instant::now();
    create_cargocats(&client, &shop, &release.cluster.registry).await;
    let message = eventually_explained(
        "the tenant's TenantReady Event",
        REAL_TIMEOUT,
        || async {
            let evs = Api::<Event>::namespaced(client.clone(), &shop)
                .list(&ListParams::default())
                .await
                .ok()?;
            evs.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("TenantReady"))
                .and_then(|e| e.message)
        },
        || async { events(&client, &shop).await + &release.explain().await },
    )
    .await;
    eprintln!(
        "in-cluster: tenant {shop} TenantReady after {:.1} s: {message}",
        start.elapsed().as_secs_f64()
    );
    let tenant_pods = Api::<Pod>::namespaced(client.clone(), &shop)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert!(
        tenant_pods
            .iter()
            .all(|p| injected(p)
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&warm)),
        "every tenant pod mutated and on the warm node"
    );

    let out = release.chart.uninstall();
    assert!(out.contains("uninstalled"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_the_webhook_mutates_every_pod_created_meanwhile() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some(mut release) = Release::install(unique("wpr"), &[]).await else {
        return;
    };
    let client = release.client.clone();
    let pause = release.cluster.registry.pause.clone();
    let tenant = release.tenant("stream").await;
    let before: BTreeSet<String> = release.pods().await.iter().map(|p| p.name_any()).collect();

    // kubectl rollout restart: a new template annotation.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &release.namespace());
    deployments
        .restart(&release.chart.fullname())
        .await
        .expect("rollout restart");
    let started = Instant::now();

    // A steady stream of tenant pods until the rollout is over: every old pod gone, the new
    // ones Ready.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &tenant);
    let (mut created, mut mutated, mut missed) = (0, 0, Vec::new());
    let mut done_at = None;
    loop {
        let pod = pods
            .create(
                &PostParams::default(),
                &unscheduled_pod_of(&format!("p-{created}"), &pause),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {created} refused during the rollout: {e}"));
        created += 1;
        if injected(&pod) {
            mutated += 1;
        } else {
            missed.push(format!(
                "{} at {:.1} s",
                pod.name_any(),
                started.elapsed().as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let current = release.pods().await;
        let rolled = current.len() == 2
            && current
                .iter()
                .all(|p| !before.contains(&p.name_any()) && is_ready(p));
        match done_at {
            None if rolled => done_at = Some(Instant::now()),
            // A few more seconds: the endpoints of the last old pod are gone for sure.
            Some(t) if t.elapsed() > Duration::from_secs(5) => break,
            _ => {}
        }
        assert!(
            started.elapsed() < REAL_TIMEOUT,
            "the rollout did not finish:\n{}",
            release.explain().await
        );
    }
    eprintln!(
        "in-cluster: rollout restart in {:.1} s; pods created during it: {created}, mutated: {mutated}",
        started.elapsed().as_secs_f64()
    );
    assert!(created >= 20, "a stream, not a trickle: {created}");
    assert!(
        missed.is_empty(),
        "{} of {created} pods created during the rollout escaped the webhook: {missed:?}\n{}",
        missed.len(),
        release.explain().await
    );
    release.chart.uninstall();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_rolls_the_pods_and_uninstall_leaves_nothing_behind() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some(mut release) = Release::install(unique("wpu"), &[]).await else {
        return;
    };
    let client = release.client.clone();
    let before: BTreeSet<String> = release.pods().await.iter().map(|p| p.name_any()).collect();

    // A new pool label: the warm node is relabelled (and re-tainted) the way a new NodePool's
    // nodes would come up, and the chart's values follow.
    let new_pool = format!("{}-pool", release.id);
    let warm = release.nodes[1].name.clone();
    let label = format!("{POOL_KEY}={new_pool}");
    let taint = format!("{label}:NoSchedule");
    kubectl(&["label", "node", &warm, &label, "--overwrite"]);
    kubectl(&["taint", "node", &warm, &format!("{POOL_KEY}:NoSchedule-")]);
    kubectl(&["taint", "node", &warm, &taint]);
    release.chart.upgrade(&[
        "--reuse-values".into(),
        "--set".into(),
        format!("pool.nodeLabel.value={new_pool}"),
    ]);
    let rolled = eventually_explained(
        "helm upgrade rolled the pods",
        REAL_TIMEOUT,
        || async {
            let pods = release.pods().await;
            (pods.len() == 2
                && pods
                    .iter()
                    .all(|p| !before.contains(&p.name_any()) && is_ready(p)))
            .then_some(pods)
        },
        || async { release.explain().await },
    )
    .await;
    assert_eq!(rolled.len(), 2);
    release
        .chart
        .wait_in_rotation(&client, &rolled, REAL_TIMEOUT)
        .await;

    // The new value end to end: a tenant pod tolerates the new pool, and a placeholder is
    // Running on the relabelled node with it.
    let tenant = release.tenant("after").await;
    let pod = create_pod(
        &client,
        &tenant,
        &unscheduled_pod_of("probe", &release.cluster.registry.pause),
    )
    .await;
    assert!(
        tolerates_pool(&pod, &new_pool) && !tolerates_pool(&pod, POOL_VALUE),
        "{:?}",
        pod.spec.as_ref().map(|s| &s.tolerations)
    );
    let ns = release.namespace();
    eventually_explained(
        "a placeholder Running on the relabelled node",
        REAL_TIMEOUT,
        || async {
            let prewarmer = live_pods(&client, &ns, PREWARMER_SELECTOR).await;
            prewarmer
                .iter()
                .any(|p| is_ready(p) && tolerates_pool(p, &new_pool))
                .then_some(())
        },
        || async { release.explain().await },
    )
    .await;

    // helm uninstall: no pod of warmpool and none of its objects stay.
    let namespace = release.namespace();
    let fullname = release.chart.fullname();
    release.chart.uninstall();
    eventually_explained(
        "nothing of warmpool left",
        REAL_TIMEOUT,
        || async {
            let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
                .list(&ListParams::default())
                .await
                .ok()?;
            let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace)
                .list(&ListParams::default())
                .await
                .ok()?;
            let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), &namespace)
                .list(&ListParams::default())
                .await
                .ok()?;
            (pods.items.is_empty() && deployments.items.is_empty() && daemonsets.items.is_empty())
                .then_some(())
        },
        || async { events(&client, &namespace).await },
    )
    .await;
    let out = kubectl(&[
        "get",
        "all,configmaps,secrets,leases,roles,rolebindings,serviceaccounts,poddisruptionbudgets",
        "-n",
        &namespace,
        "-o",
        "name",
    ]);
    let left: Vec<String> = out
        .lines()
        .filter(|l| !matches!(*l, "configmap/kube-root-ca.crt" | "serviceaccount/default"))
        .map(str::to_owned)
        .collect();
    assert!(
        left.is_empty(),
        "left in {namespace} after helm uninstall: {left:?}"
    );
    for (kind, name) in [
        ("mutatingwebhookconfiguration", fullname.as_str()),
        ("clusterrole", fullname.as_str()),
        ("priorityclass", "warmpool-placeholder"),
    ] {
        let out = kubectl(&["get", kind, name, "--ignore-not-found", "-o", "name"]);
        assert!(
            out.is_empty(),
            "{kind} {name} left after helm uninstall: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmpool_status_runs_in_the_cluster_with_the_charts_status_role() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let sa = "status-reader";
    let id = unique("wps");
    let subjects = format!(
        r#"statusRole.subjects=[{{"kind":"ServiceAccount","name":"{sa}","namespace":"{id}-system"}}]"#
    );
    let Some(mut release) = Release::install(id, &["--set-json".into(), subjects]).await else {
        return;
    };
    let client = release.client.clone();
    let ns = release.namespace();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": sa}})).expect("sa"),
    )
    .await
    .expect("create the ServiceAccount");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "status"},
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": release.nodes[0].name},
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "status",
                "image": release.cluster.tool_image(),
                "args": ["status", "--namespace", ns],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("pod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the status pod");
    eventually_explained(
        "the status pod Succeeded",
        REAL_TIMEOUT,
        || async {
            let p = pods.get("status").await.ok()?;
            match p.status.and_then(|s| s.phase).as_deref() {
                Some("Succeeded") => Some(()),
                Some("Failed") => panic!(
                    "warmpool status failed in the cluster:\n{}",
                    pods.logs("status", &LogParams::default())
                        .await
                        .unwrap_or_default()
                ),
                _ => None,
            }
        },
        || async { release.explain().await },
    )
    .await;
    let screen = pods
        .logs("status", &LogParams::default())
        .await
        .expect("the status pod's log");
    eprintln!("in-cluster: warmpool status in the cluster:\n{screen}");
    let fullname = release.chart.fullname();
    assert!(
        screen.contains(&format!("Deployment {fullname}: 2/2 replicas ready")),
        "{screen}"
    );
    // The status role may not read the Secret (it holds the key): the expiry is what a Ready
    // webhook pod serves, read through the API server's pod proxy.
    assert!(
        screen.contains(&format!(
            "certificate (Secret {fullname}-tls, as pod {fullname}-"
        )),
        "{screen}"
    );
    assert!(
        screen.contains("(3649 days)") || screen.contains("(3650 days)"),
        "{screen}"
    );
    assert!(
        screen.contains(&format!(
            "MutatingWebhookConfiguration {fullname}: 2 entries"
        )),
        "{screen}"
    );
    assert!(
        !screen.contains("cannot"),
        "a part it could not read: {screen}"
    );
    pods.delete("status", &DeleteParams::default()).await.ok();
    release.chart.uninstall();
}
