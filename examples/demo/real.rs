//! The demo on real nodes (a kubelet and a containerd each, on this host) that **Karpenter**
//! launches (`tests/cluster/cluster.sh karpenter up`: its real-node provider starts a node the
//! stated boot delay after Karpenter's decision, the one emulated part): the CargoCATs tenant
//! started twice and timed from namespace creation to every pod Ready (readiness probes
//! passing):
//!
//! - *cold*: no warm capacity and no cache, as on a cluster without warmpool: the pods are
//!   Pending until Karpenter has launched a node for them from a general-purpose NodePool, then
//!   pull every image through the rate-limited registry path;
//! - *warm*: warmpool installed with `helm install` of its chart (printed, to copy): its own pods
//!   (webhook + reconciler, the image of the static release binary in the local registry) on a
//!   system node, the chart's NodePool for Karpenter. The placeholder made Karpenter launch a
//!   warm node and the cache pulled the images there before the tenant came: the tenant preempts
//!   the placeholder and starts from images already present; Karpenter launches the replacement
//!   warm node for the evicted placeholder and the cache fills it before the next tenant. It
//!   ends with `warmpool status`.
//!
//! Everything is built and started before a clock starts.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{SYSTEM_NAMESPACE, say};
use support::cluster::{eventually, repo_root};
use support::karpenter::NodePool;
use support::objects::live_pods;
use support::real_nodes::{NodeSpec, RealCluster, create_cargocats, is_ready};
use support::release::{ChartRelease, command_line, local_image_values};

/// The emulated instance boot: from Karpenter's NodeClaim to the node starting. EC2 instances
/// under Karpenter and EKS Auto Mode take 40–90 s (published figures) from a pending pod to a
/// Ready node; the demo scales that down as it scales the images (~300 MB instead of a few GB).
const BOOT: &str = "15s";
const PUBLISHED_PROVISIONING: &str = "40-90 s";
/// The NodePools: a general-purpose one (what the cold tenant gets) and the chart's warm one.
const GENERAL_POOL: &str = "demo-general";
const WARM_POOL: &str = "demo-warm";

/// The release, as the chart's README installs it, and the node its pods run on.
const RELEASE: &str = "warmpool";
const SYSTEM_NODE: &str = "demo-system";

const COLD_TENANT: &str = "demo-cold";
const WARM_TENANT: &str = "demo-1";
const SELECTOR: &str = "app.kubernetes.io/part-of=cargocats";
const TIMEOUT: Duration = Duration::from_secs(300);

/// One start of the tenant, measured.
struct Start {
    took: Duration,
    pods: Vec<Pod>,
    /// Per pod: how its image came to the node (`pulled in 4.5 s` or `already present`).
    images: Vec<String>,
}

pub async fn run(
    client: &Client,
    binary: &Path,
    cluster: &'static RealCluster,
    keep: bool,
) -> anyhow::Result<()> {
    say(
        "warmpool's image: a static release build, pushed into the local registry (first run: \
         minutes)",
    );
    let image = tokio::task::spawn_blocking(|| cluster.tool_image().to_owned()).await?;
    say(format!("  {image}"));
    let registry = &cluster.registry;
    say(format!(
        "registry {}: dataservice, frontgateservice, mysql look-alikes (~310 MB in all), \
         25 MB/s per node",
        registry.address
    ));

    say("the kubelet (built once from the Go module proxy)");
    script(&["build", "kubelet"]).await?;
    say(format!(
        "Karpenter (built once): real nodes from its NodeClaims, each started {BOOT} after \
         Karpenter's decision (the emulated instance boot)"
    ));
    script(&["karpenter", "up", "--boot-delay", BOOT]).await?;

    // Cold.
    let general = NodePool::install_general_real(client, GENERAL_POOL, BOOT).await;
    say(format!(
        "COLD: tenant {COLD_TENANT}, no warm capacity, no image cache (a cluster without \
         warmpool); NodePool {GENERAL_POOL} (no taint) for whatever is Pending"
    ));
    let started = create_namespace(client, COLD_TENANT).await?;
    let cold_nodes = follow_nodes(client, GENERAL_POOL, started, 1);
    create_cargocats(client, COLD_TENANT, registry).await;
    say(format!(
        "  its pods are Pending: no node has room. Karpenter launches one (boot emulated: {BOOT}; \
         EC2 under Karpenter / EKS Auto Mode: {PUBLISHED_PROVISIONING})"
    ));
    let cold = measure(client, COLD_TENANT, started).await;
    say(format!(
        "  all pods Ready {:.1} s after the namespace was created",
        cold.took.as_secs_f64()
    ));
    let cold_nodes = cold_nodes.await?;
    delete_namespace(client, COLD_TENANT).await;
    drop(general);

    // Warm.
    say(format!(
        "WARM: warmpool installed with its Helm chart: its pods on the cluster's system node, \
         its NodePool {WARM_POOL} for Karpenter; the placeholder makes Karpenter launch a warm \
         node, the cache pulls the images there"
    ));
    let system = tokio::task::spawn_blocking(move || {
        cluster.node(&NodeSpec {
            name: SYSTEM_NODE.into(),
            reserve: Some("cpu=1,memory=12Gi".into()),
            ..NodeSpec::default()
        })
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("the system node cannot run here (reason above)"))?;
    say(format!(
        "  system node {SYSTEM_NODE} Ready (no taint: where warmpool's own pods go, as on an EKS \
         cluster's system nodes)"
    ));
    let warm_pool = NodePool::real_class(client, WARM_POOL, BOOT).await;
    let mut values = local_image_values(cluster);
    values.extend(NodePool::chart_values(WARM_POOL));
    values.extend(
        [
            // With the tenant's 500m, more than the 1-CPU node holds: the tenant preempts it.
            "prewarmer.slot.cpu=700m",
            "tenants.timeToReady.window=10s",
        ]
        .into_iter()
        .flat_map(|v| ["--set".to_owned(), v.to_owned()]),
    );
    values.push("--create-namespace".into());
    let args = ChartRelease::install_args(RELEASE, SYSTEM_NAMESPACE, &values);
    say(format!("  {}", command_line(&args)));
    let prepared = Instant::now();
    // Two: the warm node for the placeholder, then the replacement after the tenant took it.
    let warm_nodes = follow_nodes(client, WARM_POOL, prepared, 2);
    let install_args = args.clone();
    let mut release = tokio::task::spawn_blocking(move || {
        ChartRelease::install(RELEASE, SYSTEM_NAMESPACE, &install_args)
    })
    .await?;
    let pods = release
        .wait_ready(client, 2, TIMEOUT, || async { String::new() })
        .await;
    release.wait_in_rotation(client, &pods, TIMEOUT).await;
    say(format!(
        "  release {RELEASE}: {} pods (webhook + reconciler) Ready {:.1} s after helm install",
        pods.len(),
        prepared.elapsed().as_secs_f64()
    ));
    let placeholder = eventually(
        "the image cache complete and a placeholder Ready on a warm node",
        TIMEOUT,
        || async {
            let cache = ready_pods(
                client,
                SYSTEM_NAMESPACE,
                "app.kubernetes.io/name=warmpool-image-cache",
            )
            .await;
            let placeholders = ready_pods(
                client,
                SYSTEM_NAMESPACE,
                "app.kubernetes.io/name=warmpool-prewarmer",
            )
            .await;
            (!cache.is_empty()).then_some(())?;
            placeholders.into_iter().next()
        },
    )
    .await;
    let first_warm = node_of(&placeholder);
    say(format!(
        "  before any tenant: 3 images cached and placeholder {} holding 700m on {first_warm} \
         ({:.1} s after warmpool started)",
        placeholder.name_any(),
        prepared.elapsed().as_secs_f64()
    ));
    say(format!("  tenant {WARM_TENANT} created"));
    let started = create_namespace(client, WARM_TENANT).await?;
    create_cargocats(client, WARM_TENANT, registry).await;
    let warm = measure(client, WARM_TENANT, started).await;
    say("  warmpool's reconciler times it too (tenants.timeToReady, window 10 s here)");
    let own = own_measurement(client, WARM_TENANT).await;
    let preempted = Api::<Pod>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get_opt(&placeholder.name_any())
        .await
        .ok()
        .flatten()
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
    say("  the headroom the tenant took: Karpenter launches a node for the evicted placeholder");
    let restored = eventually(
        "the placeholder Ready again and the cache complete on its node",
        TIMEOUT,
        || async {
            let note = reasons(client, SYSTEM_NAMESPACE, "HeadroomRestored")
                .await
                .pop()?;
            let placeholders = ready_pods(
                client,
                SYSTEM_NAMESPACE,
                "app.kubernetes.io/name=warmpool-prewarmer",
            )
            .await;
            let node = node_of(placeholders.first()?);
            let cache = ready_pods(
                client,
                SYSTEM_NAMESPACE,
                "app.kubernetes.io/name=warmpool-image-cache",
            )
            .await;
            cache
                .iter()
                .any(|c| node_of(c) == node)
                .then(|| (note, node, started.elapsed()))
        },
    )
    .await;
    let warm_nodes = warm_nodes.await?;

    println!();
    report("cold", COLD_TENANT, &cold);
    nodes_report(&cold_nodes);
    report("warm", WARM_TENANT, &warm);
    println!(
        "  (placeholder {} {}; no node to wait for, no image to pull)",
        placeholder.name_any(),
        if preempted {
            "preempted to make room"
        } else {
            "still running (the tenant fit beside it)"
        }
    );
    println!("  warmpool's own figure (Event TenantReady on namespace {WARM_TENANT}): {own}");
    println!(
        "  warmpool: {}; the cache complete there {:.1} s after the tenant came",
        restored.0,
        restored.2.as_secs_f64()
    );
    nodes_report(&warm_nodes);
    let pulls: Vec<f64> = cold.images.iter().filter_map(|i| pull_seconds(i)).collect();
    println!(
        "what made the difference: the node ({BOOT} emulated boot after Karpenter's decision) \
         and the image pulls ({:.1} s the slowest, {:.1} s in all) came before the tenant did; \
         a placeholder made room at once",
        pulls.iter().copied().fold(0.0, f64::max),
        pulls.iter().sum::<f64>()
    );
    let (c, w) = (cold.took.as_secs_f64(), warm.took.as_secs_f64());
    println!(
        "\ncold start: {c:.1} s, warm start: {w:.1} s ({:.1}x faster)\n",
        c / w
    );

    println!("{}", status(binary).await?);

    if keep {
        crate::keep_running().await;
    }
    say("cleaning up");
    delete_namespace(client, WARM_TENANT).await;
    let uninstalled = tokio::task::spawn_blocking(move || release.uninstall()).await?;
    say(format!("  {}", uninstalled.trim()));
    drop(warm_pool);
    drop(system);
    Ok(())
}

/// `warmpool status` of the release, as a platform engineer would run it.
async fn status(binary: &Path) -> anyhow::Result<String> {
    let kubeconfig = support::cluster::kubeconfig()
        .ok_or_else(|| anyhow::anyhow!("no kubeconfig for warmpool status"))?;
    let binary = binary.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .args(["status", "--namespace", SYSTEM_NAMESPACE])
            .env("KUBECONFIG", kubeconfig)
            .output()
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "warmpool status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!(
        "$ warmpool status --namespace {SYSTEM_NAMESPACE}\n{}",
        String::from_utf8_lossy(&out.stdout)
    ))
}

/// The notes of the Events of `reason` in `ns`, oldest first.
async fn reasons(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    let mut events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events.sort_by_key(|e| e.last_timestamp.clone());
    events.into_iter().filter_map(|e| e.message).collect()
}

/// A node Karpenter launched for a NodePool, as the demo saw it come.
struct LaunchedNode {
    claim: String,
    node: String,
    instance_type: String,
    /// From the clock's start: the NodeClaim seen (Karpenter's decision), the Node Ready.
    decided: Duration,
    ready: Option<Duration>,
}

/// Follows the NodeClaims of `pool` from `since` until `expect` of them have a Ready node (or 6
/// minutes passed): what Karpenter decided and when.
fn follow_nodes(
    client: &Client,
    pool: &str,
    since: Instant,
    expect: usize,
) -> tokio::task::JoinHandle<Vec<LaunchedNode>> {
    let (client, pool) = (client.clone(), pool.to_owned());
    tokio::spawn(async move {
        let mut seen: Vec<LaunchedNode> = Vec::new();
        while since.elapsed() < Duration::from_secs(360) {
            let claims = support::karpenter::node_claims(&client)
                .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}")))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for c in claims {
                let name = c.name_any();
                if !seen.iter().any(|n| n.claim == name) {
                    seen.push(LaunchedNode {
                        claim: name.clone(),
                        node: String::new(),
                        instance_type: String::new(),
                        decided: since.elapsed(),
                        ready: None,
                    });
                }
                // The node's name and the instance type come once Karpenter has launched it.
                let v = serde_json::to_value(&c).unwrap_or_default();
                if let Some(n) = seen.iter_mut().find(|n| n.claim == name) {
                    if let Some(node) = v["status"]["nodeName"].as_str() {
                        n.node = node.to_owned();
                    }
                    if let Some(t) =
                        v["metadata"]["labels"]["node.kubernetes.io/instance-type"].as_str()
                    {
                        n.instance_type = t.to_owned();
                    }
                }
            }
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
            for n in seen
                .iter_mut()
                .filter(|n| n.ready.is_none() && !n.node.is_empty())
            {
                let ready = nodes
                    .get_opt(&n.node)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|node| support::karpenter::node_ready(&node));
                if ready {
                    n.ready = Some(since.elapsed());
                }
            }
            if seen.iter().filter(|n| n.ready.is_some()).count() >= expect {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        seen
    })
}

fn nodes_report(nodes: &[LaunchedNode]) {
    for n in nodes {
        let ready = n.ready.map_or_else(
            || "not Ready".to_owned(),
            |r| format!("Ready at {:.1} s", r.as_secs_f64()),
        );
        println!(
            "  node {}: NodeClaim {} ({}) decided by Karpenter at {:.1} s, {BOOT} emulated boot, \
             the real kubelet {ready}",
            n.node,
            n.claim,
            n.instance_type,
            n.decided.as_secs_f64()
        );
    }
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// `tests/cluster/cluster.sh ARGS`, progress on stderr, off the async runtime.
async fn script(args: &[&str]) -> anyhow::Result<()> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(repo_root().join("tests/cluster/cluster.sh"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await??;
    anyhow::ensure!(
        status.success(),
        "tests/cluster/cluster.sh failed ({status})"
    );
    Ok(())
}

fn report(kind: &str, ns: &str, start: &Start) {
    println!(
        "{kind} start of tenant {ns}: all pods Ready {:.1} s after the namespace was created",
        start.took.as_secs_f64()
    );
    for (pod, image) in start.pods.iter().zip(&start.images) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("?");
        let injected = pod
            .annotations()
            .get("warmpool.io/injected")
            .map_or("nothing", String::as_str);
        println!(
            "  {:<36} on {:<20} image {:<22} injected: {injected}",
            pod.name_any(),
            node,
            image
        );
    }
}

/// Creates `ns` (scoped to the demo's webhook registration); when it was created.
async fn create_namespace(client: &Client, ns: &str) -> anyhow::Result<Instant> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    let started = Instant::now();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(started)
}

async fn delete_namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::default()).await;
    eventually(&format!("namespace {ns} deleted"), TIMEOUT, || async {
        api.get_opt(ns).await.ok()?.is_none().then_some(())
    })
    .await;
}

async fn ready_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let mut pods = live_pods(client, ns, selector).await;
    pods.retain(is_ready);
    pods
}

/// Waits until the tenant's three pods are Ready; how long since `started`, and how each image
/// came to its node (the kubelet's Pulled events).
async fn measure(client: &Client, ns: &str, started: Instant) -> Start {
    let pods = eventually(&format!("the pods of {ns} Ready"), TIMEOUT, || async {
        let pods = ready_pods(client, ns, SELECTOR).await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    let took = started.elapsed();
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let images = pods
        .iter()
        .map(|pod| {
            let message = events
                .iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(&pod.name_any()))
                .filter(|e| e.reason.as_deref() == Some("Pulled"))
                .find_map(|e| e.message.clone())
                .unwrap_or_default();
            pulled(&message)
        })
        .collect();
    Start { took, pods, images }
}

/// The note of the reconciler's `TenantReady` (or `TenantNotReady`) Event on `ns`: the product's
/// own measurement of the start the demo timed from outside.
async fn own_measurement(client: &Client, ns: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("warmpool's TenantReady Event on {ns}"),
        TIMEOUT,
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| matches!(e.reason.as_deref(), Some("TenantReady" | "TenantNotReady")))
                .find_map(|e| e.message)
        },
    )
    .await
}

/// `pulled in 4.5 s` or `already present`, from a kubelet Pulled event's message.
fn pulled(message: &str) -> String {
    if message.contains("already present") {
        return "already present".into();
    }
    // `Successfully pulled image "X" in 4.549s (4.549s including waiting). Image size: …`
    let took = message
        .split_once("\" in ")
        .and_then(|(_, rest)| rest.split_whitespace().next());
    let seconds = took.and_then(|d| match d.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().ok().map(|ms| ms / 1000.0),
        None => d.strip_suffix('s')?.parse::<f64>().ok(),
    });
    seconds.map_or_else(|| "pulled".into(), |s| format!("pulled in {s:.1} s"))
}

/// The seconds of a `pulled in 4.5 s` line of [`pulled`].
fn pull_seconds(line: &str) -> Option<f64> {
    line.strip_prefix("pulled in ")?
        .strip_suffix(" s")?
        .parse()
        .ok()
}
