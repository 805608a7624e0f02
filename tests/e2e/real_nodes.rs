//! warmpool on REAL nodes: kubelets and containerds on this host (`tests/cluster/cluster.sh node
//! up`), pulling the CargoCATs look-alikes from the local registry through a 25 MB/s proxy per
//! node, with the real webhook and reconciler. What fake nodes cannot show: images really pulled
//! by the cache DaemonSet (seen in each node's containerd), tenant pods that start without a pull,
//! placeholders that really terminate when preempted, readiness probes that really pass, pods
//! that survive a kubelet restart.
//!
//! The control plane is the one of the other end-to-end tests (`WARMPOOL_TEST_KUBECONFIG` from
//! tests/all.sh, or `cluster.sh up`). Nodes, pool, namespaces are unique per test; the nodes are
//! taken down when a test ends, failing or not. The tests hold one lock, so at most two nodes run
//! at a time (each reports the whole 2-CPU VM; they reserve half of it each) and the timings
//! printed are not skewed by each other. Outside CI, a machine where real nodes cannot run
//! (not root, no package source) prints SKIP; in CI that fails.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use support::cluster::{eventually, eventually_explained, unique};
use support::objects::live_pods;
use support::real_nodes::{
    NodeSpec, REAL_TIMEOUT, RealNode, create_cargocats, create_workloads, is_ready,
};
use support::real_warmpool::*;
use support::reconciler::cached_images;
use support::webhook::RUN_LABEL;

use super::BIN;
use warmpool::config::Config;
/// One real-node test at a time (see the module comment).
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The image cache of the real reconciler pulls every cached image onto every warm node (proven
/// from each node: its containerd's image list, and the cache pod's init-container statuses
/// with their `imageID`), and a tenant's pods that land there start without a pull.
#[tokio::test]
async fn image_cache_pulls_every_image_onto_every_warm_node_and_tenants_start_without_a_pull() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let warmpool = RealWarmpool::start(&client, BIN.as_ref(), cluster, "600m", &[]).await;
    let pool = warmpool.run.pool.clone();
    let started = Instant::now();
    let Some(nodes) = nodes_up(
        cluster,
        vec![
            NodeSpec::warm_half(&unique("rn-cache-a"), &pool),
            NodeSpec::warm_half(&unique("rn-cache-b"), &pool),
        ],
    )
    .await
    else {
        return;
    };
    let ns = &warmpool.run.namespace;
    let mut cache_pods = Vec::new();
    for node in &nodes {
        let pod = wait_cache_complete(&client, ns, node).await;
        eprintln!(
            "{}: image cache complete {} after the nodes were started",
            node.name,
            secs(started.elapsed())
        );
        cache_pods.push(pod);
    }

    let registry = &cluster.registry;
    let wanted = [
        &registry.dataservice,
        &registry.frontgateservice,
        &registry.mysql,
    ];
    for (node, pod) in nodes.iter().zip(&cache_pods) {
        // From the node itself: the kubelet's containerd holds every cached image.
        let images = node.images();
        for image in wanted {
            assert!(
                images.iter().any(|i| i == image),
                "{image} is not in the containerd of {}: {images:?}",
                node.name
            );
        }
        // And the pod says so too: each cached image runs (`hold`) from a resolved digest.
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for image in wanted {
            let status = statuses
                .iter()
                .find(|c| &c.image == image)
                .unwrap_or_else(|| panic!("no container runs {image} on {}", node.name));
            assert!(
                status.image_id.contains("@sha256:"),
                "{image} on {}: imageID {:?}",
                node.name,
                status.image_id
            );
        }
    }

    // A tenant now: its pods land on the warm nodes, where every image is already present.
    let tenant = warmpool.tenant("cache").await;
    let created = Instant::now();
    create_tenant(&client, &tenant, cluster).await;
    let ready = wait_tenant_ready(&client, &tenant, &nodes.iter().collect::<Vec<_>>()).await;
    let ready_after = created.elapsed();
    let node_names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    for pod in &ready {
        let name = pod.name_any();
        let node = node_of(pod).unwrap_or_default();
        assert!(
            node_names.contains(&node),
            "{name} runs on {node}, not a warm node"
        );
        let events = eventually(
            &format!("the Pulled event of {tenant}/{name}"),
            Duration::from_secs(30),
            || async {
                let events = pod_events(&client, &tenant, &name).await;
                events.iter().any(|(r, _)| r == "Pulled").then_some(events)
            },
        )
        .await;
        assert!(
            events
                .iter()
                .any(|(r, m)| r == "Pulled" && m.contains("already present on machine")),
            "{name} on {node}: no 'already present on machine': {events:?}"
        );
        assert!(
            !events.iter().any(|(r, _)| r == "Pulling"),
            "{name} on {node} pulled its image: {events:?}"
        );
    }
    eprintln!(
        "tenant {tenant}: 3 pods Ready {} after its Deployments were created, no image pulled",
        secs(ready_after)
    );
    warmpool.stop().await;
    drop(nodes);
}

/// When the preemption's deletion of the placeholder was seen, from a watch; and whether the
/// watch had listed the pod before (so no deletion can have been missed).
#[derive(Debug, Default, Clone)]
struct Seen {
    listed: bool,
    deleted_at: Option<Instant>,
}

/// A new tenant's pods preempt the placeholder on a real warm node; the placeholder's container
/// exits at once (0, on SIGTERM: it is not killed at the end of a grace period), and every tenant
/// pod becomes Ready (readiness probes pass).
#[tokio::test]
async fn tenant_preempts_the_placeholder_on_a_real_warm_node_and_every_pod_becomes_ready() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    // A node of 1 CPU: placeholder 700m + cache 5m leave 295m, the tenant wants 500m.
    let warmpool = RealWarmpool::start(&client, BIN.as_ref(), cluster, "700m", &[]).await;
    let Some(nodes) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(
            &unique("rn-preempt"),
            &warmpool.run.pool,
        )],
    )
    .await
    else {
        return;
    };
    let node = &nodes[0];
    let ns = warmpool.run.namespace.clone();
    wait_cache_complete(&client, &ns, node).await;
    let placeholder = eventually_explained(
        "the placeholder Ready on the warm node",
        REAL_TIMEOUT,
        || async {
            live_pods(&client, &ns, PREWARMER_SELECTOR)
                .await
                .into_iter()
                .find(|p| node_of(p) == Some(node.name.as_str()) && is_ready(p))
        },
        || async { explain(&client, &[&ns], &[node]).await },
    )
    .await;
    let placeholder_uid = placeholder.uid().expect("uid");
    let placeholder_name = placeholder.name_any();
    let container_id = placeholder
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("the placeholder's container id")
        .to_owned();
    // How the placeholder's container ends, seen from the node's containerd.
    let exits = node.task_exits();

    // And when the API deletes the pod (grace period 0: the object goes at once).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let watch = {
        let seen = seen.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let config =
            watcher::Config::default().fields(&format!("metadata.name={placeholder_name}"));
        tokio::spawn(async move {
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                let mut seen = seen.lock().expect("lock");
                match event {
                    watcher::Event::InitDone => seen.listed = true,
                    watcher::Event::Apply(p) if p.metadata.deletion_timestamp.is_some() => {
                        seen.deleted_at.get_or_insert_with(Instant::now);
                    }
                    watcher::Event::Delete(_) => {
                        seen.deleted_at.get_or_insert_with(Instant::now);
                    }
                    _ => {}
                }
            }
        })
    };
    eventually(
        "the placeholder watched",
        Duration::from_secs(10),
        || async { seen.lock().expect("lock").listed.then_some(()) },
    )
    .await;

    let tenant = warmpool.tenant("preempt").await;
    let created = Instant::now();
    create_tenant(&client, &tenant, cluster).await;
    let ready = wait_tenant_ready(&client, &tenant, &[node]).await;
    let ready_after = created.elapsed();
    for pod in &ready {
        assert_eq!(
            node_of(pod),
            Some(node.name.as_str()),
            "{} is not on the warm node",
            pod.name_any()
        );
    }
    // The tenant could only fit by taking the placeholder's room.
    let deleted = eventually(
        "the preempted placeholder deleted",
        Duration::from_secs(30),
        || async { seen.lock().expect("lock").deleted_at },
    )
    .await;
    watch.abort();
    // The scheduler records the Preempted Event through its asynchronous broadcaster: it may
    // land after the deletion is seen.
    eventually_explained(
        "the placeholder's Preempted event",
        Duration::from_secs(30),
        || async {
            let events = pod_events(&client, &ns, &placeholder_name).await;
            events.iter().any(|(r, _)| r == "Preempted").then_some(())
        },
        || async {
            let events = pod_events(&client, &ns, &placeholder_name).await;
            format!("{placeholder_name} ({placeholder_uid}) was not preempted: {events:?}")
        },
    )
    .await;
    let (exited, status) = eventually(
        "the placeholder's container exited on the node",
        Duration::from_secs(30),
        || async { exits.exit_of(&container_id) },
    )
    .await;
    eprintln!(
        "placeholder {placeholder_name}: its container exited with {status} {} after the \
         preemption deleted it; tenant {tenant}: 3 pods Ready on {} {} after its Deployments \
         were created",
        secs(exited.saturating_duration_since(deleted)),
        node.name,
        secs(ready_after)
    );
    // It exited by itself on the kubelet's SIGTERM (0); a container that ignores SIGTERM is
    // killed (137) at the end of the kubelet's minimum grace period of 2 s.
    assert_eq!(
        status, 0,
        "the placeholder's container did not exit 0 on SIGTERM"
    );
    warmpool.stop().await;
    drop(nodes);
}

/// The cache pod and the placeholder survive a kubelet restart (same pods, same containers, no
/// restart); a node that then joins the pool gets every cached image soon after it is Ready.
#[tokio::test]
async fn prewarmer_and_cache_survive_a_kubelet_restart_and_a_joining_node_gets_the_cache() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let warmpool = RealWarmpool::start(&client, BIN.as_ref(), cluster, "600m", &[]).await;
    let pool = warmpool.run.pool.clone();
    let Some(mut nodes) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(&unique("rn-restart"), &pool)],
    )
    .await
    else {
        return;
    };
    let ns = warmpool.run.namespace.clone();
    let first = &nodes[0];
    wait_cache_complete(&client, &ns, first).await;
    let on_first = |pods: Vec<Pod>| -> Vec<Pod> {
        pods.into_iter()
            .filter(|p| node_of(p) == Some(first.name.as_str()))
            .collect()
    };
    let placeholders = eventually_explained(
        "the placeholder Ready",
        REAL_TIMEOUT,
        || async {
            let p = on_first(live_pods(&client, &ns, PREWARMER_SELECTOR).await);
            (p.len() == 1 && is_ready(&p[0])).then_some(p)
        },
        || async { explain(&client, &[&ns], &[first]).await },
    )
    .await;
    let caches = on_first(live_pods(&client, &ns, CACHE_SELECTOR).await);
    // pod uid -> (container id, restart count) of every container of both pods.
    let containers = |pods: &[Pod]| -> BTreeMap<String, Vec<(String, i32)>> {
        pods.iter()
            .map(|p| {
                let ids = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| (c.container_id.unwrap_or_default(), c.restart_count))
                    .collect();
                (p.uid().unwrap_or_default(), ids)
            })
            .collect()
    };
    let before = containers(&[placeholders.clone(), caches.clone()].concat());

    let restart = Instant::now();
    // (Blocking: nothing else of this test runs meanwhile.)
    first.restart_kubelet();
    eprintln!(
        "{}: kubelet restarted, Node Ready again in {}",
        first.name,
        secs(restart.elapsed())
    );
    // The restarted kubelet finds its pods in containerd and reports them Ready again: the same
    // pods with the same containers, none restarted and none new.
    let after = eventually_explained(
        "the placeholder and the cache pod Ready again after the kubelet restart",
        Duration::from_secs(60),
        || async {
            let p = on_first(live_pods(&client, &ns, PREWARMER_SELECTOR).await);
            let c = on_first(live_pods(&client, &ns, CACHE_SELECTOR).await);
            let all = [p, c].concat();
            (all.len() == 2 && all.iter().all(is_ready) && cache_complete(&all[1]))
                .then(|| containers(&all))
        },
        || async { explain(&client, &[&ns], &[first]).await },
    )
    .await;
    assert_eq!(
        before, after,
        "the pods or their containers changed across the restart"
    );

    // A second node joins the pool: the DaemonSet puts the cache there, which pulls everything.
    let second_spec = NodeSpec::warm_half(&unique("rn-join"), &pool);
    let joined = nodes_up(cluster, vec![second_spec])
        .await
        .expect("second node")
        .pop()
        .expect("one node");
    let ready_at = Instant::now();
    wait_cache_complete(&client, &ns, &joined).await;
    let cached_after = ready_at.elapsed();
    let images = joined.images();
    for image in [
        &cluster.registry.dataservice,
        &cluster.registry.frontgateservice,
        &cluster.registry.mysql,
    ] {
        assert!(
            images.iter().any(|i| i == image),
            "{image} missing on {}",
            joined.name
        );
    }
    eprintln!(
        "{}: joined the pool; every cached image on it {} after it was Ready (~310 MB at 25 MB/s)",
        joined.name,
        secs(cached_after)
    );
    nodes.push(joined);
    warmpool.stop().await;
    drop(nodes);
}

/// A cached image that cannot be pulled (a tag the registry does not have) stops nothing: every
/// other image is pulled onto the warm node and stays there (its container runs), and the
/// reconciler reports the failure: a Warning Event on the DaemonSet naming image and node, and
/// `warmpool_image_cache_images{state="failed"}`.
#[tokio::test]
async fn an_image_that_cannot_be_pulled_stops_nothing_and_is_reported() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let registry = &cluster.registry;
    let repository = registry
        .dataservice
        .rsplit_once(':')
        .map(|(repo, _tag)| repo)
        .expect("a tagged image");
    let missing = format!("{repository}:no-such-tag");
    let warmpool = RealWarmpool::start(&client, BIN.as_ref(), cluster, "600m", &[&missing]).await;
    let Some(nodes) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(&unique("rn-bad"), &warmpool.run.pool)],
    )
    .await
    else {
        return;
    };
    let node = &nodes[0];
    let ns = warmpool.run.namespace.clone();
    let wanted = [
        &registry.dataservice,
        &registry.frontgateservice,
        &registry.mysql,
    ];
    let started = Instant::now();
    let reason = eventually_explained(
        &format!(
            "every other image on {} and {missing} failing there",
            node.name
        ),
        REAL_TIMEOUT,
        || async {
            let pod = live_pods(&client, &ns, CACHE_SELECTOR)
                .await
                .into_iter()
                .find(|p| node_of(p) == Some(node.name.as_str()))?;
            let statuses = pod.status?.container_statuses?;
            // Every good image runs in its container, from a resolved digest.
            let running = |image: &str| {
                statuses.iter().any(|c| {
                    c.image == image
                        && c.image_id.contains("@sha256:")
                        && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
            };
            let failing = statuses.iter().find(|c| c.image == missing).and_then(|c| {
                let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
                ["ErrImagePull", "ImagePullBackOff"]
                    .contains(&reason.as_str())
                    .then_some(reason)
            })?;
            wanted.iter().all(|i| running(i)).then_some(failing)
        },
        || async { explain(&client, &[&ns], &[node]).await },
    )
    .await;
    let images = node.images();
    for image in wanted {
        assert!(
            images.iter().any(|i| i == image),
            "{image} is not in the containerd of {}: {images:?}",
            node.name
        );
    }
    assert!(
        !images.iter().any(|i| i == &missing),
        "{missing} cannot be on {}",
        node.name
    );
    eprintln!(
        "{}: 3 images cached and {missing} {reason} {} after the node was started",
        node.name,
        secs(started.elapsed())
    );

    // Reported: an Event on the DaemonSet that names the image and the node ...
    let note = eventually(
        "the ImagePullFailed event on the image cache",
        Duration::from_secs(60),
        || async {
            Api::<Event>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("ImagePullFailed"))
                .filter(|e| e.involved_object.kind.as_deref() == Some("DaemonSet"))
                .filter_map(|e| e.message)
                .find(|m| m.contains(&missing) && m.contains(&node.name))
        },
    )
    .await;
    eprintln!("event: {note}");
    // ... and the metrics: three images present, one failed, the node incomplete.
    let reconciler = &warmpool.reconciler;
    eventually(
        "warmpool_image_cache_* with 3 present, 1 failed",
        Duration::from_secs(30),
        || async {
            let present = reconciler
                .metric(r#"warmpool_image_cache_images{state="present"}"#)
                .await?;
            let failed = reconciler
                .metric(r#"warmpool_image_cache_images{state="failed"}"#)
                .await?;
            let incomplete = reconciler
                .metric(r#"warmpool_image_cache_nodes{state="incomplete"}"#)
                .await?;
            let by_image = reconciler
                .metric(&format!(
                    r#"warmpool_image_cache_failed_nodes{{image="{missing}"}}"#
                ))
                .await?;
            (present == 3.0 && failed == 1.0 && incomplete == 1.0 && by_image == 1.0).then_some(())
        },
    )
    .await;
    warmpool.stop().await;
    drop(nodes);
}

/// The image cache lends no credentials. warmpool holds a pull secret that can read the private
/// registry (`imageCache.imagePullSecrets`); a tenant pod naming the private image without
/// credentials of its own stays in `ImagePullBackOff` through two resyncs and the image never
/// reaches the warm node through warmpool: discovery takes only images a tenant's containers run,
/// and the discovered images go to a DaemonSet of their own that has no pull secrets. An image a
/// tenant runs from the public registry is still discovered and pulled there.
#[tokio::test]
async fn the_image_cache_lends_no_credentials_and_still_caches_what_tenants_run() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let registry = &cluster.registry;
    let private = &registry.private;
    let cache = |c: &mut Config| {
        c.image_cache.discover = true;
        c.image_cache.image_pull_secrets = vec!["warmpool-pull".into()];
        c.image_cache.images = vec![registry.dataservice.clone()];
    };
    let warmpool = RealWarmpool::launch(
        &client,
        BIN.as_ref(),
        cluster,
        "600m",
        cache,
        &["--resync", "5s"],
    )
    .await;
    let ns = warmpool.run.namespace.clone();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &private.pull_secret("warmpool-pull"),
        )
        .await
        .expect("warmpool's pull secret");
    let Some(nodes) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(&unique("rn-lend"), &warmpool.run.pool)],
    )
    .await
    else {
        return;
    };
    let node = &nodes[0];
    let tenant = warmpool.tenant("lend").await;
    let app = |image: &str| json!({"containers": [{"name": "app", "image": image}]});
    warmpool
        .run
        .create_pod(&tenant, "stranger", app(&private.image))
        .await;
    warmpool
        .run
        .create_pod(&tenant, "public", app(&registry.frontgateservice))
        .await;

    let caches: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    eventually_explained(
        "the public image discovered and on the node, the private one refused to the tenant",
        REAL_TIMEOUT,
        || async {
            let pods = live_pods(&client, &tenant, "").await;
            let stranger = pods.iter().find(|p| p.name_any() == "stranger")?;
            pull_refused(stranger)?;
            let discovered = caches.get(IMAGE_CACHE_DISCOVERED).await.ok()?;
            cached_images(&discovered)
                .contains(&registry.frontgateservice)
                .then_some(())?;
            let cache_pods = live_pods(&client, &ns, CACHE_SELECTOR_DISCOVERED).await;
            let on_node = cache_pods
                .iter()
                .find(|p| node_of(p) == Some(node.name.as_str()))?;
            on_node
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .any(|c| c.image == registry.frontgateservice && !c.image_id.is_empty())
                .then_some(())
        },
        || async { explain(&client, &[&ns, &tenant], &[node]).await },
    )
    .await;
    eprintln!(
        "{}: the public image a tenant runs cached, the private one refused, {}",
        node.name,
        secs(started.elapsed())
    );

    // Two more resyncs of the discovered images' DaemonSet (each one applied anyway): still
    // nothing of the private image anywhere.
    let reconciler = &warmpool.reconciler;
    let runs = r#"warmpool_reconcile_runs_total{target="daemonset-discovered"}"#;
    let before = reconciler.metric(runs).await.unwrap_or(0.0);
    eventually("two resyncs", Duration::from_secs(60), || async {
        (reconciler.metric(runs).await? >= before + 2.0).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &tenant);
    let stranger = pods.get("stranger").await.expect("the stranger's pod");
    let reason = pull_refused(&stranger);
    assert!(
        reason.is_some(),
        "the tenant without credentials got the private image: {:?}",
        stranger.status
    );
    let ours = caches.get(IMAGE_CACHE).await.expect("the image cache");
    let theirs = caches
        .get(IMAGE_CACHE_DISCOVERED)
        .await
        .expect("the discovered images' cache");
    assert_eq!(cached_images(&ours), vec![registry.dataservice.clone()]);
    let secrets = |ds: &DaemonSet| {
        ds.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(secrets(&ours), ["warmpool-pull"]);
    assert!(
        secrets(&theirs).is_empty(),
        "discovered images pulled with warmpool's secrets"
    );
    for ds in [&ours, &theirs] {
        assert!(
            !cached_images(ds).contains(&private.image),
            "{} names the private image",
            ds.name_any()
        );
    }
    let on_node = node.images();
    assert!(
        !on_node.iter().any(|i| i.starts_with(&private.address)),
        "the private image reached {}: {on_node:?}",
        node.name
    );
    eprintln!(
        "after two more resyncs: the stranger still {}, no private image on {}",
        reason.unwrap_or_default(),
        node.name
    );
    warmpool.stop().await;
    drop(nodes);
}

/// The kubelet's reason when it cannot pull the pod's image (`ErrImagePull`,
/// `ImagePullBackOff`), if that is where the pod stands and it never had the image.
fn pull_refused(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let reason = status.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
    (status.image_id.is_empty() && ["ErrImagePull", "ImagePullBackOff"].contains(&reason.as_str()))
        .then_some(reason)
}

/// A tag re-pushed between two warm nodes' pulls is reported: the first node's cache holds the
/// image the tag named then, the node that joins later the new one, and the reconciler says so
/// (a Warning `ImageTagMoved` Event on the DaemonSet naming both nodes, and
/// `warmpool_image_cache_tag_images{image} 2`). Proven from the kubelets' own `imageID`s.
#[tokio::test]
async fn a_tag_moved_between_two_nodes_pulls_is_reported() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let registry = &cluster.registry;
    let moving = format!("{}/warmpool-test/{}:1", registry.address, unique("moving"));
    registry.copy(&registry.pause, &moving);
    let warmpool = RealWarmpool::start(&client, BIN.as_ref(), cluster, "600m", &[&moving]).await;
    let ns = warmpool.run.namespace.clone();
    let pool = warmpool.run.pool.clone();
    // By container name: the kubelet's status may name the image by another of its tags.
    let image_id_on = |pod: &Pod| {
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| c.image.as_ref() == Some(&moving))
            })
            .map(|c| c.name.clone())
            .expect("a cache container for the moving tag");
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == container))
            .map(|c| c.image_id.clone())
            .expect("the moving tag's container status")
    };
    let Some(mut nodes) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(&unique("rn-tag1"), &pool)],
    )
    .await
    else {
        return;
    };
    let before = image_id_on(&wait_cache_complete(&client, &ns, &nodes[0]).await);
    eprintln!("{}: {moving} is {before}", nodes[0].name);

    registry.copy(&registry.frontgateservice, &moving);
    let Some(joined) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(&unique("rn-tag2"), &pool)],
    )
    .await
    else {
        return;
    };
    nodes.extend(joined);
    let after = image_id_on(&wait_cache_complete(&client, &ns, &nodes[1]).await);
    eprintln!("{}: {moving} is {after}", nodes[1].name);
    assert_ne!(before, after, "the second node pulled the re-pushed tag");

    let note = eventually(
        "the ImageTagMoved event on the image cache",
        Duration::from_secs(60),
        || async {
            Api::<Event>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("ImageTagMoved"))
                .filter(|e| e.involved_object.kind.as_deref() == Some("DaemonSet"))
                .filter_map(|e| e.message)
                .find(|m| m.contains(&moving))
        },
    )
    .await;
    eprintln!("event: {note}");
    for node in &nodes {
        assert!(note.contains(&node.name), "{} not named: {note}", node.name);
    }
    let reconciler = &warmpool.reconciler;
    let series = format!(r#"warmpool_image_cache_tag_images{{image="{moving}"}}"#);
    eventually(&format!("{series} 2"), Duration::from_secs(30), || async {
        (reconciler.metric(&series).await? == 2.0).then_some(())
    })
    .await;
    let steady = format!(
        r#"warmpool_image_cache_tag_images{{image="{}"}}"#,
        registry.dataservice
    );
    assert_eq!(reconciler.metric(&steady).await, Some(1.0), "{steady}");
    warmpool.stop().await;
    drop(nodes);
}

/// The annotations `warmpool.io/start` and `warmpool.io/ready-seconds` of a measured tenant, and
/// the note of its `TenantReady` Event.
async fn wait_measured(client: &Client, ns: &str, nodes: &[&RealNode]) -> (String, f64, String) {
    let (start, seconds) = eventually_explained(
        &format!("{ns} measured (annotation warmpool.io/start)"),
        REAL_TIMEOUT,
        || async {
            let found = Api::<Namespace>::all(client.clone()).get(ns).await.ok()?;
            let annotations = found.metadata.annotations?;
            let start = annotations.get("warmpool.io/start")?.clone();
            let seconds: f64 = annotations.get("warmpool.io/ready-seconds")?.parse().ok()?;
            Some((start, seconds))
        },
        || async { explain(client, &[ns], nodes).await },
    )
    .await;
    let note = eventually("the TenantReady event", Duration::from_secs(30), || async {
        Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("TenantReady"))?
            .message
    })
    .await;
    (start, seconds, note)
}

/// Each new tenant is timed from its namespace's creation to all its pods Ready, and told warm
/// or cold from what the kubelet did: a tenant whose images the cache holds on the warm node
/// starts warm; one with an image no node has (the kubelet pulls it) starts cold. Both figures
/// are in the namespace's annotations, its Event and `warmpool_tenant_ready_seconds{start}`.
#[tokio::test]
async fn each_new_tenant_is_timed_to_ready_and_told_warm_or_cold() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let registry = &cluster.registry;
    let uncached = format!(
        "{}/warmpool-test/{}:1",
        registry.address,
        unique("uncached")
    );
    registry.copy(&registry.frontgateservice, &uncached);
    let warmpool = RealWarmpool::start_with(&client, BIN.as_ref(), cluster, "600m", &[], |c| {
        c.tenants.time_to_ready.window = "3s".into();
        c.tenants.time_to_ready.timeout = "3m".into();
    })
    .await;
    let Some(nodes) = nodes_up(
        cluster,
        vec![NodeSpec::warm_half(&unique("rn-ttr"), &warmpool.run.pool)],
    )
    .await
    else {
        return;
    };
    let node = &nodes[0];
    wait_cache_complete(&client, &warmpool.run.namespace, node).await;

    let warm = warmpool.tenant("ttr-warm").await;
    create_cargocats(&client, &warm, registry).await;
    let (start, seconds, note) = wait_measured(&client, &warm, &[node]).await;
    eprintln!("{warm}: {start} start, Ready in {seconds} s: {note}");
    assert_eq!(start, "warm", "{note}");
    assert!(
        note.contains("all 3 pods Ready")
            && note.contains("warm: 3/3 on warm nodes, images present"),
        "{note}"
    );
    assert!(
        seconds > 0.0 && seconds < REAL_TIMEOUT.as_secs_f64(),
        "{seconds}"
    );
    // Its room back for the next one.
    Api::<Namespace>::all(client.clone())
        .delete(&warm, &kube::api::DeleteParams::default())
        .await
        .expect("delete the warm tenant");

    let cold = warmpool.tenant("ttr-cold").await;
    let workloads = [
        ("dataservice", registry.dataservice.as_str()),
        ("frontgateservice", uncached.as_str()),
        ("mysql", registry.mysql.as_str()),
    ];
    create_workloads(&client, &cold, registry.http_port, &workloads).await;
    let (start, cold_seconds, note) = wait_measured(&client, &cold, &[node]).await;
    eprintln!("{cold}: {start} start, Ready in {cold_seconds} s: {note}");
    if start != "cold" {
        // What the kubelet and the reconciler saw, so that a wrong verdict can be traced.
        let pulls: Vec<String> = Api::<Event>::namespaced(client.clone(), &cold)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.reason.as_deref(),
                    Some("Pulled" | "Pulling" | "Scheduled" | "Preempted" | "Killing")
                )
            })
            .map(|e| {
                format!(
                    "{:?} {} {}: {}",
                    e.last_timestamp.map(|t| t.0.to_string()),
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect();
        let logs = warmpool.reconciler.logs();
        let about: Vec<&str> = logs.lines().filter(|l| l.contains(cold.as_str())).collect();
        panic!(
            "{cold} judged {start}: {note}\npods: {}\nevents:\n{}\nreconciler about it:\n{}",
            explain(&client, &[&cold], &[node]).await,
            pulls.join("\n"),
            about.join("\n")
        );
    }
    assert!(
        note.contains(&format!("1 image(s) pulled: {uncached}")),
        "{note}"
    );

    let reconciler = &warmpool.reconciler;
    for start in ["warm", "cold"] {
        let series = format!(r#"warmpool_tenant_ready_seconds_count{{start="{start}"}}"#);
        assert_eq!(reconciler.metric(&series).await, Some(1.0), "{series}");
    }
    warmpool.stop().await;
    drop(nodes);
}

/// A checkout deep in the file system once put the kubelet's pod-resources socket past the Unix
/// socket path limit (108 bytes: `bind: invalid argument`). Every socket and runtime path of a
/// node now lives under a short root of its own, whatever the cluster dir's path: here the
/// cluster dir is reached through a path of about 200 bytes.
#[tokio::test]
async fn a_node_runs_from_a_cluster_dir_deep_in_the_file_system() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    let base = tempfile::tempdir().expect("temp dir");
    let mut deep = base.path().to_owned();
    while deep.as_os_str().len() < 190 {
        deep.push("a-folder-of-a-deep-checkout");
    }
    std::fs::create_dir_all(&deep).expect("deep folders");
    let dir = deep.join("cluster");
    std::os::unix::fs::symlink(&cluster.dir, &dir).expect("link to the cluster dir");
    let name = unique("rn-deep");
    let spec = NodeSpec {
        name: name.clone(),
        reserve: Some("cpu=1,memory=12Gi".into()),
        ..NodeSpec::default()
    };
    let node = tokio::task::spawn_blocking(move || cluster.node_in(&spec, &dir))
        .await
        .expect("node up task");
    let Some(node) = node else { return };
    let socket = node.socket();
    assert!(
        socket.as_os_str().len() < 60,
        "containerd's socket is not under a short root: {}",
        socket.display()
    );

    // A pod runs there: sandbox, network, the kubelet's own sockets.
    let ns = unique("rn-deep");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns, "labels": {RUN_LABEL: ns}}
    }))
    .unwrap();
    namespaces
        .create(&Default::default(), &namespace)
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sleeper"},
        "spec": {"nodeName": node.name, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "pause", "image": cluster.registry.pause}]}
    }))
    .unwrap();
    eventually(
        "the default ServiceAccount",
        Duration::from_secs(30),
        || async { pods.create(&Default::default(), &pod).await.ok() },
    )
    .await;
    eventually_explained(
        "the pod Running on the node started from the deep path",
        REAL_TIMEOUT,
        || async {
            let p = pods.get("sleeper").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        },
        || async { explain(&client, &[&ns], &[&node]).await },
    )
    .await;
    eprintln!(
        "deep path: node {name} from a cluster dir of {} bytes, containerd socket {} ({} bytes), a \
         pod Running",
        deep.as_os_str().len() + "/cluster".len(),
        socket.display(),
        socket.as_os_str().len()
    );
    let _ = namespaces.delete(&ns, &Default::default()).await;
    drop(node);
}

/// Real nodes that Karpenter launches (`tests/cluster/karpenter-local`: a node started the
/// KWOKNodeClass's boot delay after Karpenter's NodeClaim, registered with its provider ID): the
/// placeholder makes Karpenter launch a warm node from the chart's NodePool, the cache fills it,
/// a tenant starts there from images already present, and the evicted placeholder makes
/// Karpenter launch the replacement, which the cache fills too.
#[tokio::test]
async fn karpenter_launches_the_warm_node_and_its_replacement_on_real_kubelets() {
    let _subject = support::subject::enter(module_path!());
    let _one = exclusive().await;
    let Some((client, cluster)) = prerequisites().await else {
        return;
    };
    if support::karpenter::ensure().is_none() {
        return;
    }
    let warmpool = RealWarmpool::start(&client, BIN.as_ref(), cluster, "700m", &[]).await;
    let ns = warmpool.run.namespace.clone();
    let name = unique("rk");
    let started = Instant::now();
    let node_pool =
        support::karpenter::NodePool::install_real(&client, &name, &warmpool.run.pool, "3s").await;
    let on_pool_node = |pods: Vec<Pod>, nodes: &BTreeSet<String>| -> Vec<Pod> {
        pods.into_iter()
            .filter(|p| node_of(p).is_some_and(|n| nodes.contains(n)) && is_ready(p))
            .collect()
    };
    let cache_on = |node: String| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            eventually(
                &format!("the image cache complete on {node}"),
                REAL_TIMEOUT,
                || async {
                    live_pods(&client, &ns, CACHE_SELECTOR)
                        .await
                        .into_iter()
                        .find(|p| node_of(p) == Some(node.as_str()) && cache_complete(p))
                },
            )
            .await
        }
    };
    let first = eventually_explained(
        "the placeholder Ready on a node Karpenter launched",
        REAL_TIMEOUT,
        || async {
            let nodes = node_pool.live_node_names().await;
            let p = on_pool_node(live_pods(&client, &ns, PREWARMER_SELECTOR).await, &nodes);
            p.first()
                .map(|p| (p.name_any(), node_of(p).unwrap().to_owned()))
        },
        || async { explain(&client, &[&ns], &[]).await },
    )
    .await;
    let placeholder_ready = started.elapsed();
    cache_on(first.1.clone()).await;
    let cached = started.elapsed();

    let tenant = warmpool.tenant("1").await;
    let tenant_started = Instant::now();
    create_tenant(&client, &tenant, cluster).await;
    let pods = wait_tenant_ready(&client, &tenant, &[]).await;
    let tenant_ready = tenant_started.elapsed();
    for pod in &pods {
        assert_eq!(node_of(pod), Some(first.1.as_str()), "{}", pod.name_any());
        let events = pod_events(&client, &tenant, &pod.name_any()).await;
        assert!(
            events
                .iter()
                .any(|(r, m)| r == "Pulled" && m.contains("already present")),
            "{} pulled its image on the warm node: {events:?}",
            pod.name_any()
        );
    }

    // The evicted placeholder: Karpenter launches its node, warmpool sees the headroom back.
    let note = eventually_explained(
        "warmpool's HeadroomRestored Event",
        REAL_TIMEOUT,
        || async {
            Api::<Event>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().fields("reason=HeadroomRestored"))
                .await
                .ok()?
                .items
                .into_iter()
                .find_map(|e| e.message)
        },
        || async { explain(&client, &[&ns], &[]).await },
    )
    .await;
    let second = eventually(
        "the replacement placeholder on a second node Karpenter launched",
        REAL_TIMEOUT,
        || async {
            let nodes = node_pool.live_node_names().await;
            let p = on_pool_node(live_pods(&client, &ns, PREWARMER_SELECTOR).await, &nodes);
            p.first()
                .and_then(|p| node_of(p).map(str::to_owned))
                .filter(|n| *n != first.1)
        },
    )
    .await;
    cache_on(second.clone()).await;
    let replaced = tenant_started.elapsed();
    eprintln!(
        "karpenter, real nodes: placeholder Ready on {} {:.1} s after the NodePool was made \
         (3 s emulated boot), cache complete at {:.1} s; tenant {tenant} Ready in {:.1} s from \
         images already present; warmpool: {note}; the replacement {second} cached {:.1} s after \
         the tenant came",
        first.1,
        placeholder_ready.as_secs_f64(),
        cached.as_secs_f64(),
        tenant_ready.as_secs_f64(),
        replaced.as_secs_f64()
    );
    warmpool.stop().await;
    drop(node_pool);
}
