//! Warm capacity that follows demand, on the real control plane with the real Karpenter (its
//! kwok provider: `tests/cluster/cluster.sh karpenter up`) reading the chart's own NodePool. The
//! reconciler's clock is set just before a scheduled window (`WARMPOOL_TEST_NOW`, test-only), so
//! that it opens within seconds:
//!
//! - the window's `leadTime` ahead of its opening, the prewarmer is scaled to the window's
//!   slots, and Karpenter launches warm nodes for the placeholders (bin-packed, as it chooses);
//! - 10 CargoCATs tenants created in a burst inside the window all land on warm nodes that were
//!   there before the burst, by preempting placeholders: no tenant pod waits for a node;
//! - when the window closes, the prewarmer steps down `scaleDown.step` at a time, never in one
//!   jump, and Karpenter removes the warm nodes that emptied (`WhenEmpty`), never one that still
//!   holds a placeholder;
//! - the same burst with no window (one spare slot) makes tenant pods wait for NodeClaims.
//!
//! Instance boot is emulated (the KWOKNodeClass's `nodeRegistrationDelay`). Figures (time to all
//! scheduled, the pods that waited for a node and how long, the steps, the nodes removed) are
//! printed with `eprintln` to be quoted; nothing is asserted on time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use support::cluster::{client, eventually, eventually_explained, unique};
use support::karpenter::{self, NodePool};
use support::objects::live_pods;
use support::scenario::{CARGOCATS, Setup, Warmpool, create_tenant};

use super::BIN;
use warmpool::config::Config;
const TENANTS: usize = 10;
/// The emulated instance boot (Karpenter and EKS Auto Mode take 40-90 s; shorter here so the
/// test stays short, long enough to be seen).
const BOOT: &str = "10s";
/// The chart's NodePool, consolidating emptied nodes sooner than its 10m default.
const NODE_POOL_VALUES: &[&str] = &["nodePool.disruption.consolidateAfter=5s"];
/// The window: opens at OPEN (09:00 UTC every day), for DURATION, warm LEAD ahead.
const OPEN: &str = "2026-11-30T09:00:00Z";
const LEAD_SECS: i64 = 40;
const DURATION_SECS: i64 = 90;
/// The reconciler's clock starts this long before the lead time begins.
const BEFORE_SECS: i64 = 5;

/// One test at a time: the figures are timings on a shared machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The reconciler's clock: `start` at the real instant `since`, advancing in real time.
struct TestClock {
    start: Timestamp,
    since: Instant,
}

impl TestClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.since.elapsed()).unwrap();
        self.start.checked_add(elapsed).unwrap()
    }
}

/// Every CargoCATs pod of the tenants: (tenant, pod, node if bound, unschedulable).
async fn tenant_pods(client: &Client, tenants: &[String]) -> Vec<(String, Pod)> {
    let mut out = Vec::new();
    for t in tenants {
        let pods = Api::<Pod>::namespaced(client.clone(), t)
            .list(&ListParams::default().labels("app.kubernetes.io/part-of=cargocats"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        out.extend(
            pods.into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| (t.clone(), p)),
        );
    }
    out
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

/// The burst: `TENANTS` tenants at once; the time from its start.
async fn burst(client: &Client, warmpool: &Warmpool) -> (Vec<String>, Instant) {
    let tenants: Vec<String> = (1..=TENANTS)
        .map(|i| format!("{}{i}", warmpool.tenant_prefix))
        .collect();
    let started = Instant::now();
    join_all(
        tenants
            .iter()
            .map(|t| create_tenant(client, &warmpool.run, t)),
    )
    .await;
    (tenants, started)
}

async fn replicas(warmpool: &Warmpool) -> Option<i32> {
    warmpool.prewarmer().await?.spec?.replicas
}

/// Removes a run's namespaces and webhook configuration when dropped, also when the
/// test fails half-way (kubectl: a kube client cannot be used from a destructor).
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Some(kubeconfig) = support::cluster::kubeconfig() else {
            return;
        };
        let kubectl = support::reconciler::kubectl_path();
        let names = |kind: &str| -> Vec<String> {
            std::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", kind, "-o", "name"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&format!("/{}", self.0)))
                .map(str::to_owned)
                .collect()
        };
        for kind in ["namespaces", "mutatingwebhookconfigurations"] {
            let found = names(kind);
            if found.is_empty() {
                continue;
            }
            let _ = std::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["delete", "--wait=false", "--ignore-not-found"])
                .args(&found)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Karpenter and the run's NodePool (the chart's, with [`NODE_POOL_VALUES`]); `None` to skip.
async fn karpenter_pool(client: &Client, run: &str) -> Option<NodePool> {
    karpenter::ensure()?;
    let pool = Setup::isolated(run, 0).pool;
    Some(NodePool::install(client, run, &pool, BOOT, NODE_POOL_VALUES).await)
}

/// Live placeholders on nodes Karpenter is taking away (being deleted, or tainted
/// `karpenter.sh/disrupted` while it drains them): with `WhenEmpty`, there must never be one.
async fn placeholders_on_disrupted_nodes(
    client: &Client,
    namespace: &str,
    pool: &str,
) -> Vec<String> {
    let disrupted: BTreeSet<String> = karpenter::pool_nodes(client, pool)
        .await
        .into_iter()
        .filter(|n| {
            n.metadata.deletion_timestamp.is_some()
                || n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == "karpenter.sh/disrupted"))
        })
        .map(|n| n.name_any())
        .collect();
    if disrupted.is_empty() {
        return Vec::new();
    }
    live_pods(
        client,
        namespace,
        "app.kubernetes.io/name=warmpool-prewarmer",
    )
    .await
    .into_iter()
    .filter_map(|p| {
        let node = node_of(&p)?;
        disrupted
            .contains(&node)
            .then(|| format!("{} on {node}", p.name_any()))
    })
    .collect()
}

/// Nodes of the pool that hold a pod other than a DaemonSet's (a placeholder, a tenant's).
async fn busy_nodes(client: &Client, node_pool: &NodePool) -> BTreeSet<String> {
    let nodes = node_pool.live_node_names().await;
    let pods: Api<Pod> = Api::all(client.clone());
    let all = pods
        .list(&ListParams::default().fields("spec.nodeName!="))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    all.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !p.owner_references().iter().any(|o| o.kind == "DaemonSet"))
        .filter_map(node_of)
        .filter(|n| nodes.contains(n))
        .collect()
}

#[tokio::test]
async fn a_window_warms_ahead_takes_a_burst_on_warm_nodes_and_scales_back_gently() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let run = unique("window");
    let _leftovers = Leftovers(run.clone());
    let Some(node_pool) = karpenter_pool(&client, &run).await else {
        return;
    };
    let open: Timestamp = OPEN.parse().unwrap();
    let start = open
        .checked_sub(SignedDuration::from_secs(LEAD_SECS + BEFORE_SECS))
        .unwrap();
    let windows = Config::from_yaml(&format!(
        "prewarmer: {{schedule: [{{name: burst, timezone: UTC, cron: '0 9 * * *', \
         duration: {DURATION_SECS}s, spareSlots: {TENANTS}, leadTime: {LEAD_SECS}s}}], \
         scaleDown: {{step: 3, every: 10s, quietFor: 15s}}}}"
    ))
    .expect("the test's schedule")
    .prewarmer;
    let start_text = start.to_string();
    let spawned = Instant::now();
    let warmpool = Warmpool::start_with(
        &client,
        BIN.as_ref(),
        Setup::isolated(&run, 1),
        |c| {
            c.prewarmer.schedule = windows.schedule;
            c.prewarmer.scale_down = windows.scale_down;
        },
        &[("WARMPOOL_TEST_NOW", &start_text)],
    )
    .await;
    let clock = TestClock {
        start,
        since: spawned,
    };

    // Before the lead time: the base value, one placeholder, on a node Karpenter launched.
    warmpool
        .wait_placeholders_bound(1, Duration::from_secs(120))
        .await;
    // The lead time begins: 10 slots, and the window named.
    let raised_at = eventually_explained(
        "the prewarmer scaled to the window's slots",
        Duration::from_secs(120),
        || async {
            let d = warmpool.prewarmer().await?;
            let window = d.annotations().get("warmpool.io/schedule-window").cloned();
            (d.spec?.replicas == Some(TENANTS as i32) && window.as_deref() == Some("burst"))
                .then(|| clock.now())
        },
        || async { warmpool.reconciler_logs() },
    )
    .await;
    assert!(
        raised_at < open,
        "scaled at {raised_at}, not ahead of the opening at {open}"
    );
    let bound = eventually_explained(
        "every placeholder bound to a warm node",
        Duration::from_secs(120),
        || async {
            let bound: Vec<(String, String)> = warmpool
                .placeholders()
                .await
                .into_iter()
                .filter_map(|(p, n)| n.map(|n| (p, n)))
                .collect();
            (bound.len() >= TENANTS).then_some(bound)
        },
        || async {
            format!(
                "placeholders {:?}\nnodes {:?}\n{}",
                warmpool.placeholders().await,
                node_pool.live_node_names().await,
                support::reconciler::kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    &warmpool.namespace,
                    "-o",
                    "wide"
                ])
            )
        },
    )
    .await;
    let warm_ahead = clock.now();
    let warm_nodes = node_pool.live_node_names().await;
    eprintln!(
        "window: scaled to {TENANTS} slots at {raised_at} (test clock), {:.0} s before it opens \
         at {open}; {} placeholders on {} warm nodes Karpenter launched by {warm_ahead}",
        open.duration_since(raised_at).as_secs_f64(),
        bound.len(),
        warm_nodes.len()
    );

    // The burst, inside the window.
    eventually("the window open", Duration::from_secs(120), || async {
        (clock.now() >= open).then_some(())
    })
    .await;
    let before: BTreeSet<String> = bound.iter().map(|(p, _)| p.clone()).collect();
    let burst_at = clock.now();
    let (tenants, started) = burst(&client, &warmpool).await;
    let pods = eventually(
        "every tenant pod scheduled",
        Duration::from_secs(180),
        || async {
            let pods = tenant_pods(&client, &tenants).await;
            (pods.len() == TENANTS * CARGOCATS.len()
                && pods.iter().all(|(_, p)| node_of(p).is_some()))
            .then_some(pods)
        },
    )
    .await;
    let took = started.elapsed();
    for (t, p) in &pods {
        let node = node_of(p).unwrap_or_default();
        assert!(
            warm_nodes.contains(&node),
            "{t}/{} on {node}, not a warm node from before the burst ({warm_nodes:?})",
            p.name_any()
        );
    }
    let now: BTreeSet<String> = warmpool
        .placeholders()
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let preempted = before.difference(&now).count();
    eprintln!(
        "window: {TENANTS} tenants ({} pods) created in a burst at {} (test clock): all scheduled \
         on warm nodes from before the burst in {:.1} s, {preempted} placeholders preempted, no \
         tenant pod waited for a node",
        pods.len(),
        burst_at,
        took.as_secs_f64()
    );

    // The window closes: down by 3 every 10 s, 10 -> 7 -> 4 -> 1. Meanwhile and after, Karpenter
    // must never take away a node that holds a placeholder.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let watchdog = {
        let (client, violations) = (client.clone(), violations.clone());
        let (namespace, pool) = (warmpool.namespace.clone(), node_pool.name.clone());
        tokio::spawn(async move {
            loop {
                let found = placeholders_on_disrupted_nodes(&client, &namespace, &pool).await;
                violations.lock().unwrap().extend(found);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let close = open
        .checked_add(SignedDuration::from_secs(DURATION_SECS))
        .unwrap();
    let seen = std::sync::Mutex::new(vec![(TENANTS as i32, clock.now())]);
    eventually_explained(
        "the prewarmer back at one slot",
        Duration::from_secs(240),
        || async {
            let r = replicas(&warmpool).await?;
            let mut seen = seen.lock().unwrap();
            if seen.last().map(|(v, _)| *v) != Some(r) {
                seen.push((r, clock.now()));
            }
            (r == 1).then_some(())
        },
        || async { warmpool.reconciler_logs() },
    )
    .await;
    let seen = seen.into_inner().unwrap();
    let steps: Vec<i32> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(steps, [10, 7, 4, 1], "gently, step by step: {seen:?}");
    assert!(
        seen[1].1 >= close,
        "the first step ({}) came before the window closed ({close})",
        seen[1].1
    );
    let gaps: Vec<String> = seen
        .windows(2)
        .skip(1)
        .map(|w| format!("{:.1} s", w[1].1.duration_since(w[0].1).as_secs_f64()))
        .collect();
    eprintln!(
        "window closed at {close}: replicas {steps:?}, first step at {} (test clock), then steps \
         {} apart",
        seen[1].1,
        gaps.join(", ")
    );

    // Karpenter removes the nodes the scale-down emptied (WhenEmpty), one per round under the
    // chart's default budget, and keeps every node that holds a placeholder or a tenant.
    let at_one = Instant::now();
    let nodes_at_one = node_pool.live_node_names().await;
    let removed_at: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());
    let kept = eventually_explained(
        "every emptied warm node removed by Karpenter",
        Duration::from_secs(300),
        || async {
            let now = node_pool.live_node_names().await;
            for gone in nodes_at_one.difference(&now) {
                removed_at
                    .lock()
                    .unwrap()
                    .entry(gone.clone())
                    .or_insert(at_one.elapsed().as_secs_f64());
            }
            let busy = busy_nodes(&client, &node_pool).await;
            (now == busy && now.len() < nodes_at_one.len()).then_some(now)
        },
        || async {
            format!(
                "nodes {:?}, busy {:?}\n{}",
                node_pool.live_node_names().await,
                busy_nodes(&client, &node_pool).await,
                support::reconciler::kubectl(&["get", "pods", "-A", "-o", "wide"])
            )
        },
    )
    .await;
    watchdog.abort();
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "Karpenter took away nodes that held placeholders: {violations:?}"
    );
    let mut removed: Vec<f64> = removed_at.into_inner().unwrap().into_values().collect();
    removed.sort_by(f64::total_cmp);
    eprintln!(
        "consolidation: {} warm nodes when the prewarmer reached 1 slot, {} removed by Karpenter \
         (seconds after that: {:?}), {} kept (each holds a placeholder or a tenant's pod); no \
         node holding a placeholder was disrupted",
        nodes_at_one.len(),
        removed.len(),
        removed
            .iter()
            .map(|s| format!("{s:.0}"))
            .collect::<Vec<_>>(),
        kept.len()
    );

    warmpool.cleanup(&tenants).await;
    drop(node_pool);
}

#[tokio::test]
async fn without_the_window_the_same_burst_waits_for_karpenter() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let run = unique("nowindow");
    let _leftovers = Leftovers(run.clone());
    let Some(node_pool) = karpenter_pool(&client, &run).await else {
        return;
    };
    let warmpool = Warmpool::start(&client, BIN.as_ref(), Setup::isolated(&run, 1)).await;
    warmpool
        .wait_placeholders_bound(1, Duration::from_secs(120))
        .await;
    let warm_nodes = node_pool.live_node_names().await;

    let (tenants, started) = burst(&client, &warmpool).await;
    // Each pod's wait: when it was first seen bound, from the burst's start.
    let mut bound_after: BTreeMap<String, (String, f64)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let pods = tenant_pods(&client, &tenants).await;
        for (t, p) in &pods {
            if let Some(node) = node_of(p) {
                bound_after
                    .entry(format!("{t}/{}", p.name_any()))
                    .or_insert((node, started.elapsed().as_secs_f64()));
            }
        }
        if bound_after.len() == TENANTS * CARGOCATS.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every tenant pod got a node: {} of {} bound\n{}",
            bound_after.len(),
            TENANTS * CARGOCATS.len(),
            support::reconciler::kubectl(&["get", "pods", "-A", "-o", "wide"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited: Vec<f64> = bound_after
        .values()
        .filter(|(node, _)| !warm_nodes.contains(node))
        .map(|(_, after)| *after)
        .collect();
    let warm = bound_after.len() - waited.len();
    let longest = waited.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "no window: {TENANTS} tenants ({} pods) created in a burst with 1 spare slot on {} warm \
         node(s): {warm} pods on warm nodes at once, {} waited for nodes Karpenter launched \
         (emulated boot {BOOT}), the longest {longest:.1} s; NodeClaims: {}",
        bound_after.len(),
        warm_nodes.len(),
        waited.len(),
        node_pool.claims().await.len()
    );
    assert!(
        !waited.is_empty(),
        "with one spare slot every tenant pod found warm room at once"
    );

    warmpool.cleanup(&tenants).await;
    drop(node_pool);
}
