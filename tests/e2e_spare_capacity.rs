//! Warm capacity that follows demand, on the real control plane with fake nodes (issue 14,
//! item 5). The reconciler's clock is set just before a scheduled window (`WARMPOOL_TEST_NOW`,
//! test-only), so that it opens within seconds:
//!
//! - the window's `leadTime` ahead of its opening, the prewarmer is scaled to the window's
//!   slots, and a stand-in for Karpenter ([`support::provisioner`]) adds one warm node per
//!   placeholder it cannot place;
//! - 10 CargoCATs tenants created in a burst inside the window all land on warm nodes that were
//!   there before the burst, by preempting placeholders: no node is needed;
//! - when the window closes, the prewarmer steps down `scaleDown.step` at a time, never in one
//!   jump;
//! - the same burst with no window (one spare slot, one warm node) leaves tenants Pending for
//!   want of room.
//!
//! Figures (time to all scheduled, how many scheduled, the steps) are printed with `eprintln`
//! to be quoted; nothing is asserted on time.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use support::cluster::{client, eventually, eventually_explained, unique};
use support::fakelet::{delete_nodes, spawn_fakelet};
use support::provisioner::{Provisioner, unschedulable};
use support::scenario::{CARGOCATS, Setup, Warmpool, create_tenant};

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
const TENANTS: usize = 10;
/// One tenant slot (640m, 2150Mi) and the image cache's pod, not two slots.
const NODE: (&str, &str) = ("1", "2560Mi");
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

/// Removes a run's fake nodes, namespaces and webhook configuration when dropped, also when the
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
        for kind in ["nodes", "namespaces", "mutatingwebhookconfigurations"] {
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

#[tokio::test]
async fn a_window_warms_ahead_takes_a_burst_on_warm_nodes_and_scales_back_gently() {
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let fakelet = spawn_fakelet(client.clone());
    let run = unique("window");
    let _leftovers = Leftovers(run.clone());
    let open: Timestamp = OPEN.parse().unwrap();
    let start = open
        .checked_sub(SignedDuration::from_secs(LEAD_SECS + BEFORE_SECS))
        .unwrap();
    let prewarmer = format!(
        "  schedule:\n    - {{name: burst, timezone: UTC, cron: '0 9 * * *', duration: \
         {DURATION_SECS}s, spareSlots: {TENANTS}, leadTime: {LEAD_SECS}s}}\n  \
         scaleDown: {{step: 3, every: 10s, quietFor: 15s}}\n"
    );
    let start_text = start.to_string();
    let spawned = Instant::now();
    let warmpool = Warmpool::start_with(
        &client,
        BIN.as_ref(),
        Setup::isolated(&run, 1),
        &prewarmer,
        &[("WARMPOOL_TEST_NOW", &start_text)],
    )
    .await;
    let clock = TestClock {
        start,
        since: spawned,
    };
    let provisioner = Provisioner::start(&client, &warmpool, NODE.0, NODE.1);

    // Before the lead time: the base value, one placeholder, one node.
    warmpool
        .wait_placeholders_bound(1, Duration::from_secs(60))
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
                "placeholders {:?}\nnodes added {:?}\n{}",
                warmpool.placeholders().await,
                provisioner.nodes(),
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
    provisioner.stop();
    let warm_nodes: BTreeSet<String> = provisioner.nodes().into_iter().collect();
    eprintln!(
        "window: scaled to {TENANTS} slots at {raised_at} (test clock), {:.0} s before it opens \
         at {open}; {} placeholders on {} warm nodes by {warm_ahead}",
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
         on warm nodes in {:.1} s, {preempted} placeholders preempted, no node added",
        pods.len(),
        burst_at,
        took.as_secs_f64()
    );

    // The window closes: down by 3 every 10 s, 10 -> 7 -> 4 -> 1.
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

    delete_nodes(&client, &run).await.ok();
    warmpool.cleanup(&tenants).await;
    fakelet.abort();
}

#[tokio::test]
async fn without_the_window_the_same_burst_waits_for_room() {
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let fakelet = spawn_fakelet(client.clone());
    let run = unique("nowindow");
    let _leftovers = Leftovers(run.clone());
    let warmpool = Warmpool::start(&client, BIN.as_ref(), Setup::isolated(&run, 1)).await;
    let provisioner = Provisioner::start(&client, &warmpool, NODE.0, NODE.1);
    warmpool
        .wait_placeholders_bound(1, Duration::from_secs(60))
        .await;
    provisioner.stop();
    let warm_nodes = provisioner.nodes();

    let (tenants, started) = burst(&client, &warmpool).await;
    // Settled: each pod bound, or found no room (not merely waiting for a preemption).
    let pods = eventually(
        "every tenant pod scheduled or unschedulable",
        Duration::from_secs(180),
        || async {
            let pods = tenant_pods(&client, &tenants).await;
            (pods.len() == TENANTS * CARGOCATS.len()
                && pods
                    .iter()
                    .all(|(_, p)| node_of(p).is_some() || unschedulable(p)))
            .then_some(pods)
        },
    )
    .await;
    let took = started.elapsed();
    let scheduled = pods.iter().filter(|(_, p)| node_of(p).is_some()).count();
    let complete = tenants
        .iter()
        .filter(|t| {
            pods.iter()
                .filter(|(pt, p)| pt == *t && node_of(p).is_some())
                .count()
                == CARGOCATS.len()
        })
        .count();
    eprintln!(
        "no window: {TENANTS} tenants ({} pods) created in a burst with 1 spare slot on {} warm \
         node: after {:.1} s {scheduled} pods scheduled, {complete} of {TENANTS} tenants complete, \
         {} pods Pending (Unschedulable: no room until a node is provisioned)",
        pods.len(),
        warm_nodes.len(),
        took.as_secs_f64(),
        pods.len() - scheduled
    );
    assert!(
        complete < TENANTS && scheduled < pods.len(),
        "with one spare slot every tenant found room: {scheduled} pods scheduled"
    );

    delete_nodes(&client, &run).await.ok();
    warmpool.cleanup(&tenants).await;
    fakelet.abort();
}
