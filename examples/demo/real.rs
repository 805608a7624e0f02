//! The demo on real nodes (a kubelet and a containerd each, on this host): the CargoCATs tenant
//! started twice and timed from namespace creation to every pod Ready (readiness probes
//! passing):
//!
//! - *cold*: no warm capacity and no cache, as on a cluster without warmpool: the pods wait for a
//!   node to be provisioned (emulated: a stated delay, then a real node starts) and pull every
//!   image through the rate-limited registry path;
//! - *warm*: warmpool's placeholder holds room on a warm real node whose images warmpool's cache
//!   has pulled: the tenant preempts the placeholder and starts from images already present.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::support::cluster::eventually;
use crate::support::objects::live_pods;
use crate::support::real_nodes::{NodeSpec, RealCluster, RealNode, create_cargocats, is_ready};
use crate::support::scenario::{RealImages, Setup, Warmpool};
use crate::support::webhook::run_labels;
use crate::{SYSTEM_NAMESPACE, say};

/// What a node takes to be provisioned in the emulated cold start. Karpenter and EKS Auto Mode
/// take 40–90 s (published figures) from a pending pod to a Ready node; the demo scales that
/// down as it scales the images (~300 MB instead of a few GB).
const PROVISIONING: Duration = Duration::from_secs(15);
const PUBLISHED_PROVISIONING: &str = "40-90 s";

const COLD_TENANT: &str = "demo-cold";
const WARM_TENANT: &str = "demo-1";
const RUN: &str = "demo";
const POOL: &str = "cargocats";
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
    say("the image cache's tool image: a static release build of warmpool (first run: minutes)");
    let tool = tokio::task::spawn_blocking(|| cluster.tool_image().to_owned()).await?;
    let registry = &cluster.registry;
    say(format!(
        "registry {}: dataservice, frontgateservice, mysql look-alikes (~310 MB in all), \
         25 MB/s per node",
        registry.address
    ));

    // Cold.
    say(format!(
        "COLD: tenant {COLD_TENANT}, no warm capacity, no image cache (a cluster without warmpool)"
    ));
    let started = create_namespace(client, COLD_TENANT).await?;
    create_cargocats(client, COLD_TENANT, registry).await;
    say(format!(
        "  its pods are Pending: no node has room. Provisioning one: emulated, {} s here \
         (Karpenter / EKS Auto Mode: {PUBLISHED_PROVISIONING}; scaled down like the images)",
        PROVISIONING.as_secs()
    ));
    // The emulated provisioning itself: the one part of the cold start that cannot be real here.
    tokio::time::sleep(PROVISIONING).await;
    let cold_node = start_node(
        cluster,
        NodeSpec {
            name: "demo-cold-1".into(),
            reserve: Some("cpu=1,memory=12Gi".into()),
            ..NodeSpec::default()
        },
    )
    .await?;
    say("  demo-cold-1 is Ready; the pods pull their images and start");
    let cold = measure(client, COLD_TENANT, started).await;
    say(format!(
        "  all pods Ready {:.1} s after the namespace was created",
        cold.took.as_secs_f64()
    ));
    delete_namespace(client, COLD_TENANT).await;
    drop(cold_node);

    // Warm.
    say("WARM: warmpool (webhook + reconciler) and one warm real node, demo-warm-1");
    let warmpool = Warmpool::start(
        client,
        binary,
        Setup {
            run: RUN.into(),
            namespace: SYSTEM_NAMESPACE.into(),
            tenant_prefix: "demo-".into(),
            pool: POOL.into(),
            spare_slots: 1,
            real: Some(RealImages {
                pause: registry.pause.clone(),
                tool,
                images: registry
                    .cargocats()
                    .iter()
                    .map(|(_, i)| i.to_string())
                    .collect(),
                // With the tenant's 500m, more than the 1-CPU node holds: the tenant preempts it.
                slot_cpu: "700m".into(),
                time_to_ready_window: "10s".into(),
            }),
        },
    )
    .await;
    let warm_node = start_node(cluster, NodeSpec::warm_half("demo-warm-1", POOL)).await?;
    let ready = Instant::now();
    let placeholder = eventually(
        "the image cache complete and a placeholder Ready on demo-warm-1",
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
    say(format!(
        "  before any tenant: 3 images cached and placeholder {} holding 700m on demo-warm-1 \
         ({:.1} s after the node was Ready)",
        placeholder.name_any(),
        ready.elapsed().as_secs_f64()
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

    println!();
    report("cold", COLD_TENANT, &cold);
    println!(
        "  (a node provisioned: {} s emulated, then every image pulled at 25 MB/s)",
        PROVISIONING.as_secs()
    );
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
    let pulls: Vec<f64> = cold.images.iter().filter_map(|i| pull_seconds(i)).collect();
    println!(
        "what made the difference: the node ({} s emulated) and the image pulls ({:.1} s the \
         slowest, {:.1} s in all) came before the tenant did; a placeholder made room at once",
        PROVISIONING.as_secs(),
        pulls.iter().copied().fold(0.0, f64::max),
        pulls.iter().sum::<f64>()
    );
    let (c, w) = (cold.took.as_secs_f64(), warm.took.as_secs_f64());
    println!(
        "\ncold start: {c:.1} s, warm start: {w:.1} s ({:.1}x faster)\n",
        c / w
    );

    if keep {
        crate::keep_running().await;
    }
    say("cleaning up");
    warmpool.cleanup(&[WARM_TENANT.to_owned()]).await;
    drop(warm_node);
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
            "  {:<36} on {:<12} image {:<22} injected: {injected}",
            pod.name_any(),
            node,
            image
        );
    }
}

async fn start_node(cluster: &'static RealCluster, spec: NodeSpec) -> anyhow::Result<RealNode> {
    let name = spec.name.clone();
    tokio::task::spawn_blocking(move || cluster.node(&spec))
        .await?
        .ok_or_else(|| anyhow::anyhow!("real node {name} cannot start here (reason above)"))
}

/// Creates `ns` (scoped to the demo's webhook registration); when it was created.
async fn create_namespace(client: &Client, ns: &str) -> anyhow::Result<Instant> {
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": run_labels(RUN)}}))?;
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
