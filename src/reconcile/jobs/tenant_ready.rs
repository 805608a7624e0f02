//! Measures each new tenant's time to Ready: [`crate::core::tenant_ready`] decides, this shell feeds
//! it and records the outcome (`warmpool_tenant_ready_seconds{start}`, an Event in the
//! namespace, the annotations `warmpool.io/start` and `warmpool.io/ready-seconds`).
//!
//! No request per tenant but the two writes of the record: the pods come from the session's pod
//! watch ([`crate::reconcile::watches::pods::PodIndex`]), the warm nodes from its node watch, the kubelet's
//! `Pulled` Events from one cluster-wide watch of that reason. Only a tenant picked up late (a
//! restart, a new leader, after its window) has its `Pulled` Events listed once, as the watch
//! may have passed them before it was tracked. The annotation marks a tenant measured, so no
//! term measures it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, ObjectReference};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use crate::core::tenant_ready;
use crate::core::tenant_ready::{Outcome, Progress};
use crate::reconcile::base::context::{Context, lock};
use crate::reconcile::watches::namespaces::CachedNamespace;
use crate::reconcile::watches::nodes::NodeIndex;
use crate::reconcile::watches::pods::PodIndex;

/// The field manager of the annotations (not the enrolment label's: its server-side applies
/// would take them away again).
const FIELD_MANAGER: &str = "warmpool-tenant-ready";
/// The kubelet's Events about images, one per container start.
const PULLED: &str = "reason=Pulled";

struct Tracked {
    progress: Progress,
    uid: Option<String>,
    first_seen: Timestamp,
    /// When its outcome may change with no pod changing ([`Progress::next_check`]).
    due: Timestamp,
}

/// The tenants being measured in this leadership term.
#[derive(Default)]
pub struct Tracker {
    tenants: Mutex<BTreeMap<String, Tracked>>,
    /// The tracked tenants whose pods changed since the last pass: only these, and those past
    /// their `due`, are looked at again, so a pod event costs the same with 10 or 10,000
    /// tenants being measured.
    touched: Mutex<BTreeSet<String>>,
    /// Every tracked tenant is to be looked at (the pod watch re-listed).
    everything: AtomicBool,
    /// Measured (or given up) in this term, never tracked again, with the instant past which
    /// [`Tracker::consider`] turns them down anyway (then forgotten, so this stays small).
    done: Mutex<BTreeMap<String, Timestamp>>,
    wake: Notify,
}

impl Tracker {
    /// Starts measuring `ns`, a tenant, unless it is measured already or too old.
    pub fn consider(&self, ctx: &Context, ns: &CachedNamespace) {
        let config = &ctx.settings.config.tenants.time_to_ready;
        let Some(created) = ns.creation_timestamp().map(|t| t.0) else {
            return;
        };
        let now = Timestamp::now();
        let too_old = created
            .checked_add(config.timeout())
            .is_ok_and(|deadline| now >= deadline);
        if !config.enabled || too_old || ns.terminating() || ns.measured() {
            return;
        }
        let name = ns.name_any();
        if lock(&self.done).contains_key(&name) {
            return;
        }
        let mut tenants = lock(&self.tenants);
        if tenants.contains_key(&name) {
            return;
        }
        tenants.insert(
            name,
            Tracked {
                progress: Progress::new(created, now, config.window(), config.timeout()),
                uid: ns.uid(),
                first_seen: now,
                due: now,
            },
        );
        self.wake.notify_one();
    }

    /// Stops measuring `namespace` (being deleted).
    pub fn forget(&self, namespace: &str) {
        lock(&self.tenants).remove(namespace);
    }

    /// A pod of `namespace` changed.
    pub fn touched(&self, namespace: &str) {
        if lock(&self.tenants).contains_key(namespace) {
            lock(&self.touched).insert(namespace.to_owned());
            self.wake.notify_one();
        }
    }

    /// Every pod may have changed (the pod watch re-listed).
    pub fn touched_all(&self) {
        self.everything.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn pulled(&self, event: &CoreEvent) {
        let object = &event.involved_object;
        let (Some(ns), Some(pod), Some(message)) = (
            object.namespace.as_deref(),
            object.name.as_deref(),
            event.message.as_deref(),
        ) else {
            return;
        };
        let tracked = match lock(&self.tenants).get_mut(ns) {
            Some(t) => {
                t.progress.pulled(pod, message);
                true
            }
            None => false,
        };
        // A verdict may be waiting for this Event.
        if tracked {
            self.touched(ns);
        }
    }
}

/// The measurements of one leadership term: the `Pulled` watch, and at every pod change or
/// due instant the tenants whose outcome is settled recorded.
pub async fn run(
    ctx: Arc<Context>,
    tracker: Arc<Tracker>,
    pods: Arc<Mutex<PodIndex>>,
    nodes: Arc<Mutex<NodeIndex>>,
) {
    if !ctx.settings.config.tenants.time_to_ready.enabled {
        return futures::future::pending().await;
    }
    let pulls = watcher(
        Api::<CoreEvent>::all(ctx.client.clone()),
        watcher::Config::default().fields(PULLED),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|event| {
        match event {
            Ok(event) => tracker.pulled(&event),
            Err(e) => {
                tracing::warn!(error = %e, "watch of the kubelet's Pulled events failed; retrying")
            }
        }
        futures::future::ready(())
    });
    let settle = async {
        loop {
            let (settled, next) = settle(&tracker, &pods, &nodes);
            for (name, tracked, outcome) in settled {
                record(&ctx, &name, tracked, outcome, &pods, &nodes).await;
            }
            let wait = next.map_or(std::time::Duration::MAX, |at| {
                std::time::Duration::try_from(at.duration_since(Timestamp::now()))
                    .unwrap_or_default()
            });
            tokio::select! {
                () = tracker.wake.notified() => {}
                () = tokio::time::sleep(wait.min(std::time::Duration::from_secs(3600))) => {}
            }
        }
    };
    tokio::join!(pulls, settle);
}

/// Takes every tracked tenant's pods in; returns the settled ones (taken out of the tracker)
/// and the earliest instant another may settle.
#[allow(clippy::type_complexity)]
fn settle(
    tracker: &Tracker,
    pods: &Mutex<PodIndex>,
    nodes: &Mutex<NodeIndex>,
) -> (Vec<(String, Tracked, Outcome)>, Option<Timestamp>) {
    let now = Timestamp::now();
    let pods = lock(pods);
    if !pods.is_synced() {
        return (Vec::new(), None);
    }
    let warm = lock(nodes).names();
    lock(&tracker.done).retain(|_, too_old| *too_old > now);
    let mut tenants = lock(&tracker.tenants);
    let mut settled = Vec::new();
    let everything = tracker.everything.swap(false, Ordering::AcqRel);
    let touched = std::mem::take(&mut *lock(&tracker.touched));
    let names = to_look_at(
        everything,
        touched,
        tenants.iter().map(|(n, t)| (n.as_str(), t.due)),
        now,
    );
    for name in names {
        let Some(tracked) = tenants.get_mut(&name) else {
            continue;
        };
        let starts = pods.starts_in(&name);
        tracked.progress.update(starts.iter().copied(), now);
        match tracked.progress.outcome(starts.iter().copied(), &warm, now) {
            Some(outcome) => {
                if let Some(tracked) = tenants.remove(&name) {
                    lock(&tracker.done).insert(name.clone(), tracked.progress.deadline());
                    settled.push((name, tracked, outcome));
                }
            }
            None => tracked.due = tracked.progress.next_check(now),
        }
    }
    let next = tenants.values().map(|t| t.due).min();
    (settled, next)
}

/// Which tracked tenants a pass looks at: all of them after a re-list, else those whose pods
/// changed and those whose outcome may have changed by the clock alone (`due` passed). Pure.
fn to_look_at<'a>(
    everything: bool,
    touched: BTreeSet<String>,
    tracked: impl Iterator<Item = (&'a str, Timestamp)>,
    now: Timestamp,
) -> Vec<String> {
    let mut names = touched;
    for (name, due) in tracked {
        if everything || due <= now {
            names.insert(name.to_owned());
        }
    }
    names.into_iter().collect()
}

/// Records one settled tenant: the metric, the Event, the annotations.
async fn record(
    ctx: &Context,
    name: &str,
    mut tracked: Tracked,
    mut outcome: Outcome,
    pods: &Mutex<PodIndex>,
    nodes: &Mutex<NodeIndex>,
) {
    if let Outcome::Ready(_) = &outcome
        && tracked.progress.late(tracked.first_seen)
    {
        // Picked up after the fact: the Pulled watch may have passed its Events.
        list_pulls(ctx, name, &mut tracked).await;
        let now = Timestamp::now();
        let warm = lock(nodes).names();
        let pods = lock(pods);
        if let Some(again) =
            tracked
                .progress
                .outcome(pods.starts_in(name).iter().copied(), &warm, now)
        {
            outcome = again;
        }
    }
    let (event, measured) = match &outcome {
        Outcome::Ready(m) => {
            tracing::info!(namespace = %name, seconds = m.seconds, start = m.start(), pods = m.pods, on_warm = m.on_warm, pulled = m.pulled.len(), "tenant Ready");
            ctx.metrics.tenant_ready(m.start()).observe(m.seconds);
            (tenant_ready::ready_event(m), Some(m))
        }
        Outcome::NotReady { ready, total } => {
            tracing::warn!(namespace = %name, ready, total, "tenant not Ready within tenants.timeToReady.timeout");
            ctx.metrics.tenant_not_ready.inc();
            let timeout = ctx.settings.config.tenants.time_to_ready.timeout();
            (tenant_ready::not_ready_event(*ready, *total, timeout), None)
        }
        Outcome::Nothing => return,
    };
    let reference = ObjectReference {
        api_version: Some(Namespace::api_version(&()).into_owned()),
        kind: Some(Namespace::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(name.to_owned()),
        uid: tracked.uid,
        ..ObjectReference::default()
    };
    let action = || format!("record the {} event in {name}", event.reason);
    if let Err(e) = ctx
        .write(action, ctx.recorder_once().publish(&event, &reference))
        .await
    {
        tracing::warn!(namespace = %name, error = %e, "cannot record the event");
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = tenant_ready::annotations(measured);
    let action = || format!("annotate {name} with its time to Ready");
    if let Err(e) = ctx
        .write(
            action,
            namespaces.patch_metadata(name, &params, &Patch::Merge(&patch)),
        )
        .await
    {
        tracing::warn!(namespace = %name, error = %e, "cannot annotate the tenant");
    }
}

/// Adds the namespace's `Pulled` Events, listed (one read), to what `tracked` knows.
async fn list_pulls(ctx: &Context, name: &str, tracked: &mut Tracked) {
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), name);
    match events.list(&ListParams::default().fields(PULLED)).await {
        Ok(list) => {
            for e in &list.items {
                if let (Some(pod), Some(message)) =
                    (e.involved_object.name.as_deref(), e.message.as_deref())
                {
                    tracked.progress.pulled(pod, message);
                }
            }
        }
        Err(e) => {
            tracing::warn!(namespace = %name, error = %e, "cannot list the kubelet's Pulled events; the start is judged without them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_pass_looks_at_the_touched_the_due_and_after_a_relist_at_all() {
        let tracked = [("demo-1", at(10)), ("demo-2", at(30)), ("demo-3", at(60))];
        let touched = BTreeSet::from(["demo-3".to_owned(), "gone".to_owned()]);
        assert_eq!(
            to_look_at(false, touched.clone(), tracked.iter().copied(), at(20)),
            vec!["demo-1", "demo-3", "gone"],
            "demo-1 is due, demo-3 touched; demo-2 neither (a name no longer tracked is skipped later)"
        );
        assert_eq!(
            to_look_at(false, BTreeSet::new(), tracked.iter().copied(), at(5)),
            Vec::<String>::new(),
            "nothing changed and nothing is due: the pass costs nothing per tenant"
        );
        assert_eq!(
            to_look_at(true, BTreeSet::new(), tracked.iter().copied(), at(5)),
            vec!["demo-1", "demo-2", "demo-3"]
        );
    }
}
