//! What warmpool promises, with the real Karpenter in the loop (its kwok provider and KWOK,
//! `tests/cluster/cluster.sh karpenter up`), reading the chart's own NodePool (labels, taint,
//! requirements, disruption, budgets, limits) against a KWOKNodeClass of the run:
//!
//! - placeholders make Karpenter launch warm nodes carrying the pool's label and taint, and the
//!   image-cache DaemonSet lands on them;
//! - a tenant preempts a placeholder and Karpenter provisions the replacement: warmpool measures
//!   the time until the headroom is back (histogram, Event);
//! - drift (a template change) replaces warm nodes, unless `prewarmer.doNotDisrupt` blocks it
//!   (then the drifted nodes stay longer than an unblocked replacement takes);
//! - the NodePool's limits reached: the placeholders with no node are reported (gauge, Warning
//!   Event with Karpenter's reason), not left silently Pending;
//! - `consolidationPolicy: WhenEmptyOrUnderutilized`: warmpool warns (Event, gauge).
//!
//! The instance boot is emulated (`nodeRegistrationDelay`); everything else is Karpenter's own
//! behaviour. Figures are printed with `eprintln` to be quoted; nothing is asserted on time.
//! Schedule windows, bursts and Karpenter's consolidation after a window: e2e_spare_capacity.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::{Client, ResourceExt};

use support::cluster::{client, eventually_explained, unique};
use support::karpenter::{self, NodePool};
use support::objects::live_pods;
use support::scenario::{CARGOCATS, Setup, Warmpool, create_tenant, wait_tenant_scheduled};

use super::BIN;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use warmpool::config::{Config, Slot, SlotResources};
/// A slot large enough that a tenant must preempt the placeholder on the 2-CPU node Karpenter
/// picks for it (one tenant's pods fit beside it otherwise).
/// A placeholder too big to share a warm node with another.
fn big_slot(config: &mut Config) {
    config.prewarmer.slot = Slot::Fixed(SlotResources {
        cpu: Quantity("1500m".into()),
        memory: Quantity("2150Mi".into()),
    });
}
const PLACEHOLDERS: &str = "app.kubernetes.io/name=warmpool-prewarmer";
/// How long drifted warm nodes must stay when their placeholders say do-not-disrupt: longer
/// than an unblocked replacement takes here (about 30 s from the change).
const BLOCKED_FOR: Duration = Duration::from_secs(45);

/// A Karpenter object's condition `kind` is True.
fn condition(object: &serde_json::Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Karpenter, the run's warmpool and NodePool; `None` to skip (outside CI only).
async fn start(
    prefix: &str,
    spare: u32,
    change: impl FnOnce(&mut Config),
    boot: &str,
    sets: &[&str],
) -> Option<(Client, Warmpool, NodePool)> {
    let client = client().await?;
    karpenter::ensure()?;
    let run = unique(prefix);
    let setup = Setup::isolated(&run, spare);
    // The NodePool first: the reconciler reads the warm NodePools as its term starts.
    let node_pool = NodePool::install(&client, &run, &setup.pool, boot, sets).await;
    let warmpool = Warmpool::start_with(&client, BIN.as_ref(), setup, change, &[]).await;
    Some((client, warmpool, node_pool))
}

/// Placeholder name → node, for those bound and not being deleted.
async fn placeholders_on_nodes(client: &Client, warmpool: &Warmpool) -> Vec<(String, String)> {
    live_pods(client, &warmpool.namespace, PLACEHOLDERS)
        .await
        .into_iter()
        .filter_map(|p| Some((p.name_any(), p.spec?.node_name?)))
        .collect()
}

fn names(nodes: &[Node]) -> BTreeSet<String> {
    nodes.iter().map(|n| n.name_any()).collect()
}

/// A NodeClaim's name, instance type and the seconds from its creation to its Node's
/// registration, for the figures.
fn claim_summary(claims: &[serde_json::Value]) -> String {
    claims
        .iter()
        .map(|c| {
            let created = c["metadata"]["creationTimestamp"].as_str().unwrap_or("");
            let registered = c["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|k| k["type"] == "Registered" && k["status"] == "True")
                .and_then(|k| k["lastTransitionTime"].as_str())
                .unwrap_or("");
            let took = match (
                created.parse::<jiff::Timestamp>(),
                registered.parse::<jiff::Timestamp>(),
            ) {
                (Ok(a), Ok(b)) => format!("{:.0} s", b.duration_since(a).as_secs_f64()),
                _ => "not yet".into(),
            };
            format!(
                "{} ({}, registered after {took})",
                c["metadata"]["name"].as_str().unwrap_or("?"),
                c["metadata"]["labels"]["node.kubernetes.io/instance-type"]
                    .as_str()
                    .unwrap_or("?"),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn explain(client: &Client, warmpool: &Warmpool, node_pool: &NodePool) -> String {
    format!(
        "placeholders {:?}\nnodes {:?}\nclaims {}\nreconciler:\n{}",
        placeholders_on_nodes(client, warmpool).await,
        names(&node_pool.nodes().await),
        claim_summary(&node_pool.claims().await),
        warmpool.reconciler_logs()
    )
}

#[tokio::test]
async fn placeholders_make_karpenter_launch_warm_nodes_from_the_charts_node_pool() {
    let _subject = support::subject::enter(module_path!());
    let Some((client, warmpool, node_pool)) = start("kp-launch", 2, |_| {}, "0s", &[]).await else {
        return;
    };
    let started = Instant::now();
    let bound = eventually_explained(
        "both placeholders on nodes Karpenter launched",
        Duration::from_secs(120),
        || async {
            let bound = placeholders_on_nodes(&client, &warmpool).await;
            (bound.len() == 2).then_some(bound)
        },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    let took = started.elapsed();
    let nodes = node_pool.nodes().await;
    let pool_nodes = names(&nodes);
    for (placeholder, node) in &bound {
        assert!(
            pool_nodes.contains(node),
            "{placeholder} on {node}, not a node of NodePool {} ({pool_nodes:?})",
            node_pool.name
        );
    }
    // The chart's template, synced by Karpenter at registration: the pool's label and taint.
    for node in &nodes {
        assert_eq!(
            node.labels().get("workload-type"),
            Some(&warmpool.pool),
            "{}",
            node.name_any()
        );
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == "workload-type"
                && t.value.as_deref() == Some(warmpool.pool.as_str())
                && t.effect == "NoSchedule"),
            "{}: {taints:?}",
            node.name_any()
        );
        let instance = node
            .labels()
            .get("node.kubernetes.io/instance-type")
            .cloned()
            .unwrap_or_default();
        assert!(
            ["m5.large", "m5.xlarge", "m6i.large", "m6i.xlarge"].contains(&instance.as_str()),
            "an instance type the chart does not name: {instance}"
        );
    }
    // The image cache follows the warm nodes.
    let cache = eventually_explained(
        "an image-cache pod Running on every warm node",
        Duration::from_secs(60),
        || async {
            let pods = live_pods(
                &client,
                &warmpool.namespace,
                "app.kubernetes.io/name=warmpool-image-cache",
            )
            .await;
            let running: BTreeSet<String> = pods
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            (running == pool_nodes).then_some(running)
        },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    eprintln!(
        "launch: 2 placeholders Running {:.1} s after the reconciler started, on {} node(s) \
         Karpenter launched from the chart's NodePool: {}; image cache on {} of them",
        took.as_secs_f64(),
        nodes.len(),
        claim_summary(&node_pool.claims().await),
        cache.len()
    );
    warmpool.cleanup(&[]).await;
}

#[tokio::test]
async fn a_tenant_takes_the_headroom_and_karpenter_brings_it_back() {
    let _subject = support::subject::enter(module_path!());
    let boot = "5s";
    let Some((client, warmpool, node_pool)) = start("kp-headroom", 1, big_slot, boot, &[]).await
    else {
        return;
    };
    let before = eventually_explained(
        "the placeholder on a warm node",
        Duration::from_secs(120),
        || async {
            let bound = placeholders_on_nodes(&client, &warmpool).await;
            (bound.len() == 1).then(|| bound[0].clone())
        },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    let tenant = format!("{}1", warmpool.tenant_prefix);
    let started = create_tenant(&client, &warmpool.run, &tenant).await;
    let pods = wait_tenant_scheduled(&client, &tenant, Duration::from_secs(60)).await;
    let scheduled = started.elapsed();
    for pod in &pods {
        assert_eq!(
            pod.node, before.1,
            "{} went to another node than the warm one the placeholder held",
            pod.name
        );
    }
    // The placeholder was preempted; Karpenter launches a node for its replacement.
    let note = eventually_explained(
        "warmpool's HeadroomRestored Event",
        Duration::from_secs(120),
        || async { warmpool.events("HeadroomRestored").await.into_iter().next() },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    let after = placeholders_on_nodes(&client, &warmpool).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, before.0, "a new placeholder");
    assert_ne!(
        after[0].1, before.1,
        "the replacement needed a node of its own"
    );
    assert!(
        names(&node_pool.nodes().await).contains(&after[0].1),
        "the replacement runs on a node Karpenter launched"
    );
    assert!(
        note.contains(&format!("after placeholder {} was preempted", before.0)),
        "{note}"
    );
    let count = warmpool
        .metric("warmpool_prewarmer_headroom_restore_seconds_count")
        .await;
    let sum = warmpool
        .metric("warmpool_prewarmer_headroom_restore_seconds_sum")
        .await;
    assert_eq!(count, Some(1.0), "one restore observed");
    eprintln!(
        "headroom: tenant {tenant} ({} pods) scheduled on the warm node in {:.1} s (no node to \
         wait for); warmpool: {note}; histogram sum {:.1} s (emulated boot {boot}); NodeClaims: {}",
        CARGOCATS.len(),
        scheduled.as_secs_f64(),
        sum.unwrap_or_default(),
        claim_summary(&node_pool.claims().await)
    );
    warmpool.cleanup(&[tenant]).await;
}

/// Drift: the NodePool's template changes (terminationGracePeriod) after the warm nodes are up.
async fn drift(do_not_disrupt: bool) {
    let prewarmer = |c: &mut Config| {
        big_slot(c);
        c.prewarmer.do_not_disrupt = do_not_disrupt;
    };
    let prefix = if do_not_disrupt {
        "kp-nodrift"
    } else {
        "kp-drift"
    };
    let Some((client, warmpool, node_pool)) = start(prefix, 2, prewarmer, "0s", &[]).await else {
        return;
    };
    eventually_explained(
        "both placeholders on warm nodes",
        Duration::from_secs(120),
        || async { (placeholders_on_nodes(&client, &warmpool).await.len() == 2).then_some(()) },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    let old = names(&node_pool.nodes().await);
    let changed = Instant::now();
    node_pool
        .apply_values(&warmpool.pool, &["nodePool.terminationGracePeriod=2h"])
        .await;
    // Karpenter sees the drift first (the NodeClaims' Drifted condition), whatever follows.
    eventually_explained(
        "Karpenter marks the warm NodeClaims Drifted",
        Duration::from_secs(120),
        || async {
            let claims = node_pool.claims().await;
            let drifted = claims.iter().filter(|c| condition(c, "Drifted")).count();
            (drifted > 0).then_some(())
        },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    let drifted_after = changed.elapsed();
    if do_not_disrupt {
        // Longer than an unblocked replacement takes (drift_replaces_warm_nodes_by_default:
        // about 30 s after the change), the warm nodes stay, and Karpenter says why.
        let observed = Instant::now();
        while observed.elapsed() < BLOCKED_FOR {
            let now = names(&node_pool.nodes().await);
            assert!(
                old.is_subset(&now),
                "a warm node went although its placeholders say do-not-disrupt: {old:?} -> {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let blocked = support::reconciler::kubectl(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=DisruptionBlocked",
            "-o",
            "jsonpath={range .items[*]}{.involvedObject.name}: {.message}{\"\\n\"}{end}",
        ]);
        let blocked: Vec<&str> = blocked
            .lines()
            .filter(|l| old.iter().any(|n| l.starts_with(&format!("{n}:"))))
            .collect();
        // Karpenter's DisruptionBlocked Events are printed, not asserted: it records one per
        // node per dedupe period whatever the reason, so the first may name another (the node
        // not yet initialized, say) and the do-not-disrupt one follows minutes later.
        eprintln!(
            "drift with prewarmer.doNotDisrupt: NodeClaims Drifted {:.0} s after the template \
             changed, nothing replaced {:.0} s later; Karpenter: {}",
            drifted_after.as_secs_f64(),
            BLOCKED_FOR.as_secs_f64(),
            blocked.join(" | ")
        );
    } else {
        let new = eventually_explained(
            "every drifted warm node replaced, the placeholders on the new ones",
            Duration::from_secs(180),
            || async {
                let now = names(&node_pool.nodes().await);
                let bound = placeholders_on_nodes(&client, &warmpool).await;
                (now.is_disjoint(&old)
                    && bound.len() == 2
                    && bound.iter().all(|(_, n)| now.contains(n)))
                .then_some(now)
            },
            || explain(&client, &warmpool, &node_pool),
        )
        .await;
        eprintln!(
            "drift: {} warm node(s) {old:?} marked Drifted {:.0} s and replaced by {new:?} {:.0} \
             s after the NodePool's template changed, placeholders Running on the new ones",
            old.len(),
            drifted_after.as_secs_f64(),
            changed.elapsed().as_secs_f64()
        );
    }
    warmpool.cleanup(&[]).await;
}

#[tokio::test]
async fn drift_replaces_warm_nodes_by_default() {
    let _subject = support::subject::enter(module_path!());
    drift(false).await;
}

#[tokio::test]
async fn do_not_disrupt_placeholders_block_drift() {
    let _subject = support::subject::enter(module_path!());
    drift(true).await;
}

#[tokio::test]
async fn placeholders_beyond_the_node_pools_limits_are_reported() {
    let _subject = support::subject::enter(module_path!());
    // Four slots of 1500m; the pool may hold 4 CPUs: two slots get a node, two never do.
    let Some((client, warmpool, node_pool)) =
        start("kp-limits", 4, big_slot, "0s", &["nodePool.limits.cpu=4"]).await
    else {
        return;
    };
    let note = eventually_explained(
        "warmpool's PlaceholdersPending Warning",
        Duration::from_secs(120),
        || async { warmpool.events("PlaceholdersPending").await.pop() },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    assert!(
        note.contains("placeholders have no node; Karpenter: "),
        "{note}"
    );
    assert!(note.contains("exceed limits"), "Karpenter's reason: {note}");
    let pending = eventually_explained(
        "the pending gauge",
        Duration::from_secs(30),
        || async {
            let n = warmpool
                .metric("warmpool_prewarmer_placeholders_pending")
                .await?;
            (n >= 1.0).then_some(n)
        },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    let bound = placeholders_on_nodes(&client, &warmpool).await;
    eprintln!(
        "limits: {} of 4 placeholders on nodes, warmpool_prewarmer_placeholders_pending {pending}; \
         warmpool: {note}",
        bound.len()
    );
    warmpool.cleanup(&[]).await;
}

#[tokio::test]
async fn a_node_pool_that_consolidates_underutilized_nodes_is_warned_about() {
    let _subject = support::subject::enter(module_path!());
    let Some((client, warmpool, node_pool)) = start(
        "kp-underused",
        1,
        |_| {},
        "0s",
        &["nodePool.disruption.consolidationPolicy=WhenEmptyOrUnderutilized"],
    )
    .await
    else {
        return;
    };
    let note = eventually_explained(
        "warmpool's NodePoolReplacesWarmNodes Warning",
        Duration::from_secs(90),
        || async { warmpool.events("NodePoolReplacesWarmNodes").await.pop() },
        || explain(&client, &warmpool, &node_pool),
    )
    .await;
    assert!(
        note.contains(&format!("NodePool {} ", node_pool.name)),
        "{note}"
    );
    assert_eq!(
        warmpool
            .metric("warmpool_prewarmer_node_pool_findings{finding=\"replaces_warm_nodes\"}")
            .await,
        Some(1.0)
    );
    eprintln!("underutilized: warmpool: {note}");
    warmpool.cleanup(&[]).await;
}
