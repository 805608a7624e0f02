//! The placeholder pods watched for the headroom they hold (decided by the pure
//! [`crate::core::placeholders::headroom`] and [`crate::core::placeholders::node_pools`]):
//! - each preemption until a placeholder is Running again:
//!   `warmpool_prewarmer_headroom_restore_seconds` and a `HeadroomRestored` Event on the
//!   prewarmer;
//! - placeholders with no node: `warmpool_prewarmer_placeholders_pending`, and a Warning
//!   `PlaceholdersPending` Event once Karpenter says it cannot launch a node for one (its
//!   `FailedScheduling` Event) or one has waited [`PENDING_REPORT_AFTER`], with Karpenter's
//!   reason and any warm NodePool at its limits;
//! - the warm NodePools, read at the start of the term and every [`NODE_POOL_EVERY`]:
//!   `warmpool_prewarmer_node_pool_findings{finding}` and a Warning Event for each finding.
//!
//! Without Karpenter (no NodePool API) the NodePool parts say nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::core::names::PREWARMER;
use crate::core::placeholders::headroom::{
    Headroom, Placeholder, Restored, pending, restored_note,
};
use crate::core::placeholders::node_pools;
use crate::core::placeholders::node_pools::Finding;
use crate::core::pool::desired::{self, pod_selector};
use crate::reconcile::base::context::{Context, lock};

/// A placeholder this long without a node is reported even if Karpenter said nothing (a cloud
/// boots a node in 40–90 s; five minutes is no boot).
pub const PENDING_REPORT_AFTER: Duration = Duration::from_secs(300);
/// How often the warm NodePools are read.
pub const NODE_POOL_EVERY: Duration = Duration::from_secs(60);

async fn record(ctx: &Context, event: Event) {
    let reference = desired::prewarmer_reference(&ctx.settings.namespace);
    let action = || format!("record the {} event on {PREWARMER}", event.reason);
    if let Err(e) = ctx
        .write(action, ctx.recorder.publish(&event, &reference))
        .await
    {
        tracing::warn!(reason = %event.reason, error = %e, "cannot record the event");
    }
}

/// For the whole leadership term: the placeholder watch and the periodic checks.
pub async fn run(ctx: Arc<Context>) {
    let (store, writer) = reflector::store::<Pod>();
    let headroom = Arc::new(std::sync::Mutex::new(Headroom::default()));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let pods = watcher(
        api,
        watcher::Config::default().labels(&pod_selector(PREWARMER)),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(|event| {
        let (ctx, store, headroom) = (ctx.clone(), store.clone(), headroom.clone());
        async move {
            let restored = match event {
                Ok(event) => follow(&store, &mut lock(&headroom), event),
                Err(e) => {
                    tracing::warn!(error = %e, "placeholder watch failed; retrying");
                    None
                }
            };
            publish_pending(&ctx, &store);
            if let Some(r) = restored {
                report_restored(&ctx, &r).await;
            }
        }
    });
    // The warm NodePools as last read: the pending report quotes their limits without a read
    // of its own.
    let pools = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pending = report_pending(ctx.clone(), store.clone(), pools.clone());
    let node_pools = check_node_pools(ctx.clone(), pools);
    tokio::join!(pods, pending, node_pools);
}

fn follow(
    store: &Store<Pod>,
    headroom: &mut Headroom,
    event: watcher::Event<Pod>,
) -> Option<Restored> {
    let now = crate::reconcile::base::clock::now();
    match event {
        watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
            headroom.applied(&Placeholder::read(&pod)?, now)
        }
        watcher::Event::Delete(pod) => {
            headroom.deleted(&Placeholder::read(&pod)?, now);
            None
        }
        watcher::Event::InitDone => {
            let uids: BTreeSet<String> = store
                .state()
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            headroom.retain(&uids);
            None
        }
        watcher::Event::Init => None,
    }
}

fn placeholders(store: &Store<Pod>) -> Vec<Placeholder> {
    store
        .state()
        .iter()
        .filter_map(|p| Placeholder::read(p))
        .collect()
}

fn publish_pending(ctx: &Context, store: &Store<Pod>) {
    let n = pending(&placeholders(store)).names.len();
    ctx.metrics
        .placeholders_pending
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

async fn report_restored(ctx: &Context, r: &Restored) {
    ctx.metrics
        .headroom_restore
        .observe(r.after.as_secs_f64().max(0.0));
    let note = restored_note(r);
    tracing::info!(after_seconds = r.after.as_secs_f64(), placeholder = %r.placeholder, node = %r.node, "{note}");
    let event = Event {
        type_: EventType::Normal,
        reason: "HeadroomRestored".into(),
        note: Some(note),
        action: "Provision".into(),
        secondary: None,
    };
    record(ctx, event).await;
}

/// Every 10 s while placeholders have no node: whether to say so, with Karpenter's reason.
async fn report_pending(
    ctx: Arc<Context>,
    store: Store<Pod>,
    pools: Arc<std::sync::Mutex<Vec<node_pools::WarmPool>>>,
) {
    let mut reported: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = placeholders(&store);
        let waiting = pending(&now);
        if waiting.names.is_empty() {
            reported = None;
            continue;
        }
        let karpenter = karpenter_refusals(&ctx, &waiting.names).await;
        let waited = waiting
            .oldest
            .map(|t| {
                crate::reconcile::base::clock::now()
                    .duration_since(crate::reconcile::base::clock::from_cluster(t))
            })
            .and_then(|d| d.try_into().ok())
            .unwrap_or(Duration::ZERO);
        if karpenter.is_empty() && waited < PENDING_REPORT_AFTER {
            continue;
        }
        let limits: Vec<String> = node_pools::findings(&lock(&pools))
            .iter()
            .filter(|f| matches!(f, Finding::AtLimits { .. }))
            .map(Finding::message)
            .collect();
        let note = pending_note(waiting.names.len(), now.len(), waited, &karpenter, &limits);
        if reported.as_deref() == Some(note.as_str()) {
            continue;
        }
        tracing::warn!(pending = waiting.names.len(), "{note}");
        record(
            &ctx,
            Event {
                type_: EventType::Warning,
                reason: "PlaceholdersPending".into(),
                note: Some(note.chars().take(1000).collect()),
                action: "Provision".into(),
                secondary: None,
            },
        )
        .await;
        reported = Some(note);
    }
}

/// The Warning's note: how many have no node, why (Karpenter's words), what to do.
pub fn pending_note(
    pending: usize,
    of: usize,
    waited: Duration,
    karpenter: &BTreeSet<String>,
    limits: &[String],
) -> String {
    let mut note = format!("{pending} of {of} placeholders have no node");
    if karpenter.is_empty() {
        note.push_str(&format!(
            " after {} s, and Karpenter gave no reason: is it running, and does a NodePool make \
             nodes with the pool's label and taint?",
            waited.as_secs()
        ));
    } else {
        let reasons: Vec<&str> = karpenter.iter().map(String::as_str).collect();
        note.push_str(&format!("; Karpenter: {}", reasons.join("; ")));
    }
    for limit in limits {
        note.push_str(&format!(". {limit}"));
    }
    note
}

/// Karpenter's `FailedScheduling` messages about these placeholders (one list in warmpool's
/// namespace; the kube-scheduler's own Events of that reason are left out).
async fn karpenter_refusals(ctx: &Context, names: &[String]) -> BTreeSet<String> {
    let api: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let params = ListParams::default().fields("reason=FailedScheduling,involvedObject.kind=Pod");
    let Ok(list) = api.list(&params).await else {
        return BTreeSet::new();
    };
    let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut latest: BTreeMap<String, (Option<jiff::Timestamp>, String)> = BTreeMap::new();
    for e in list.items {
        let from_karpenter = e.source.as_ref().and_then(|s| s.component.as_deref())
            == Some("karpenter")
            || e.reporting_component.as_deref() == Some("karpenter");
        let pod = e.involved_object.name.clone().unwrap_or_default();
        if !from_karpenter || !names.contains(pod.as_str()) {
            continue;
        }
        let at = e.last_timestamp.as_ref().map(|t| t.0);
        let message = e.message.unwrap_or_default();
        let newer = latest.get(&pod).is_none_or(|(seen, _)| at >= *seen);
        if newer {
            latest.insert(pod, (at, message));
        }
    }
    latest.into_values().map(|(_, m)| m).collect()
}

fn node_pool_api(ctx: &Context) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(node_pools::GROUP, node_pools::VERSION, node_pools::KIND);
    let resource = ApiResource::from_gvk_with_plural(&gvk, node_pools::PLURAL);
    Api::all_with(ctx.client.clone(), &resource)
}

/// The NodePools that make warm nodes; `None` when there is no NodePool API (no Karpenter) or
/// it cannot be read.
async fn read_node_pools(ctx: &Context) -> Option<Vec<node_pools::WarmPool>> {
    let label = &ctx.settings.config.pool.node_label;
    match node_pool_api(ctx).list(&ListParams::default()).await {
        Ok(list) => Some(
            list.items
                .iter()
                .filter_map(|np| serde_json::to_value(np).ok())
                .filter_map(|np| node_pools::read(&np, &label.key, &label.value))
                .collect(),
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read Karpenter's NodePools");
            None
        }
    }
}

/// The warm NodePools' findings, at the start of the term and every [`NODE_POOL_EVERY`]: gauges,
/// and a Warning Event each time a finding appears (or its message changes).
async fn check_node_pools(
    ctx: Arc<Context>,
    latest: Arc<std::sync::Mutex<Vec<node_pools::WarmPool>>>,
) {
    let mut said: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(NODE_POOL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pools) = read_node_pools(&ctx).await else {
            continue;
        };
        let found = node_pools::findings(&pools);
        *lock(&latest) = pools;
        for label in node_pools::FINDINGS {
            let n = found.iter().filter(|f| f.label() == label).count();
            ctx.metrics
                .node_pool_findings(label)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let now: BTreeSet<String> = found.iter().map(Finding::message).collect();
        for finding in &found {
            let message = finding.message();
            if said.contains(&message) {
                continue;
            }
            tracing::warn!(finding = finding.label(), "{message}");
            let reason = match finding {
                Finding::ReplacesWarmNodes { .. } => "NodePoolReplacesWarmNodes",
                Finding::AtLimits { .. } => "NodePoolAtLimits",
            };
            record(
                &ctx,
                Event {
                    type_: EventType::Warning,
                    reason: reason.into(),
                    note: Some(message),
                    action: "Provision".into(),
                    secondary: None,
                },
            )
            .await;
        }
        said = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_note_gives_karpenters_reason_or_says_there_is_none() {
        let karpenter: BTreeSet<String> = [
            "Failed to schedule pod, all available instance types exceed limits for nodepool \"warm\""
                .to_owned(),
        ]
        .into();
        let limits = ["NodePool warm is at its limits (cpu 4 of 4): …".to_owned()];
        assert_eq!(
            pending_note(2, 5, Duration::from_secs(3), &karpenter, &limits),
            "2 of 5 placeholders have no node; Karpenter: Failed to schedule pod, all available \
             instance types exceed limits for nodepool \"warm\". NodePool warm is at its limits \
             (cpu 4 of 4): …"
        );
        let silent = pending_note(1, 1, Duration::from_secs(301), &BTreeSet::new(), &[]);
        assert!(
            silent.starts_with(
                "1 of 1 placeholders have no node after 301 s, and Karpenter gave no reason"
            ),
            "{silent}"
        );
    }
}
