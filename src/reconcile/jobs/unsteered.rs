//! Tenant pods that escaped the webhook ([`crate::core::unsteered::unsteered`] decides, on what the pod
//! watch keeps: [`crate::reconcile::watches::pods::PodIndex::unsteered_in`]). This shell counts them
//! (`warmpool_tenant_pods_unsteered`), records a Warning Event on each once, and with
//! `tenants.repair: evict` evicts those a controller owns through the Eviction API (so a
//! PodDisruptionBudget is respected) — the controller re-creates them, through the webhook.
//!
//! A pod is evicted only once the webhook has steered a pod created after it, or in the same
//! second (creation times have a resolution of one second: a steered pod of that second shows
//! the webhook answering then, and waiting for a later one could leave a quiet tenant's escape
//! unrepaired for good). While the webhook is still unreachable its replacement would escape
//! again, so evicting would only churn.
//!
//! Pods older than warmpool's installation (the Lease `warmpool-reconciler`'s creation) predate
//! its webhook and are not counted: installing warmpool into a busy cluster is no storm of
//! Events. At most [`PER_SCAN`] pods are acted on per scan (the rest at the next one, 30 s
//! later at the latest), so a long webhook outage is repaired gently, like a rollout.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, EvictParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::config::Repair;
use crate::reconcile::base::context::{Context, lock};
use crate::reconcile::watches::namespaces::CachedNamespace;
use crate::reconcile::watches::pods::{PodIndex, Unsteered};

/// How long a refused eviction (a PodDisruptionBudget) waits before it is tried again, and
/// the longest pause before the pods over [`PER_SCAN`] are acted on.
const RETRY: Duration = Duration::from_secs(30);

/// Unsteered pods given an Event (and evicted) per scan.
pub const PER_SCAN: usize = 20;

/// `(namespace, pod)`.
type Key = (String, String);

/// The unsteered pods already acted on in this term.
#[derive(Default)]
pub struct Acted {
    /// Given their Event.
    reported: Mutex<BTreeSet<Key>>,
    /// Evicted (with `repair: evict`).
    evicted: Mutex<BTreeSet<Key>>,
    wake: Notify,
}

/// Whether to evict an unsteered pod now: asked for, a controller to re-create it, and the
/// webhook back (it steered a pod created after this one, or in the same second). Pure.
pub fn evict_now(repair: Repair, pod: &Unsteered, last_steered: Option<Timestamp>) -> bool {
    repair == Repair::Evict
        && pod.controlled
        && matches!((pod.created, last_steered), (Some(c), Some(s)) if s >= c)
}

impl Acted {
    /// A pod changed.
    pub fn touched(&self) {
        self.wake.notify_one();
    }
}

/// What to do now: the pods unsteered now that were not acted on yet (at most [`PER_SCAN`]),
/// and what stays remembered (the ones still there). Pure.
pub fn new_escapes(
    now: &[(Key, Unsteered)],
    acted: &BTreeSet<Key>,
) -> (Vec<(Key, Unsteered)>, BTreeSet<Key>) {
    let fresh = now
        .iter()
        .filter(|(k, _)| !acted.contains(k))
        .take(PER_SCAN)
        .cloned()
        .collect();
    let still: BTreeSet<Key> = now
        .iter()
        .map(|(k, _)| k)
        .filter(|k| acted.contains(*k))
        .cloned()
        .collect();
    (fresh, still)
}

/// The Warning Event on an unsteered pod.
pub fn unsteered_event(pod: &Unsteered, repair: Repair) -> Event {
    let node = pod
        .node
        .as_deref()
        .map_or("not scheduled yet".to_owned(), |n| format!("on node {n}"));
    let next = match (repair, pod.controlled) {
        (Repair::Evict, true) => {
            "it is evicted (tenants.repair: evict) and its controller re-creates it through the webhook"
        }
        (Repair::Evict, false) => {
            "no controller owns it, so it is not evicted: re-create it yourself"
        }
        (Repair::None, true) => {
            "delete it and its controller re-creates it through the webhook, or set tenants.repair: evict"
        }
        (Repair::None, false) => "no controller owns it: re-create it",
    };
    Event {
        type_: EventType::Warning,
        reason: "Unsteered".into(),
        note: Some(format!(
            "admitted without warmpool's node affinity and toleration (no warmpool.io/injected: \
             the webhook was unreachable or not registered yet), {node}; {next}"
        )),
        action: "Steer".into(),
        secondary: None,
    }
}

/// For the whole leadership term: at every pod change, the unsteered pods of the tenants.
pub async fn run(
    ctx: Arc<Context>,
    escapes: Arc<Acted>,
    pods: Arc<Mutex<PodIndex>>,
    namespaces: Store<CachedNamespace>,
) {
    let repair = ctx.settings.config.tenants.repair;
    let installed = installed_at(&ctx).await;
    loop {
        tokio::select! {
            () = escapes.wake.notified() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
        // Let a burst of pod events settle.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (now, last_steered): (Vec<(Key, Unsteered)>, _) = {
            let index = lock(&pods);
            if !index.is_synced() {
                continue;
            }
            let all = namespaces.state();
            let tenants: Vec<&str> = all
                .iter()
                // A namespace being deleted takes its pods along (and refuses new Events).
                .filter(|ns| !ns.terminating())
                .filter(|ns| ctx.selector.is_tenant_by_facts(ns.name(), ns.label_facts()))
                .map(|ns| ns.name())
                .collect();
            // Evidence that the webhook is back comes from tenants' pods only: anyone may write
            // the annotation on a pod of a namespace the webhook never sees.
            let last_steered = index.last_steered_in(tenants.iter().copied());
            let now: Vec<(Key, Unsteered)> = tenants
                .iter()
                .copied()
                .flat_map(|ns| {
                    index
                        .unsteered_in(ns)
                        .into_iter()
                        .filter(|(_, u)| u.created.is_none_or(|c| c >= installed))
                        .map(move |(pod, u)| ((ns.to_owned(), pod.to_owned()), u.clone()))
                })
                .collect();
            (now, last_steered)
        };
        ctx.metrics
            .tenant_pods_unsteered
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        let reported = lock(&escapes.reported).clone();
        let (fresh, still) = new_escapes(&now, &reported);
        *lock(&escapes.reported) = still;
        for ((ns, name), pod) in fresh {
            report(&ctx, &ns, &name, &pod, repair).await;
            lock(&escapes.reported).insert((ns, name));
        }
        let due: Vec<(Key, Unsteered)> = now
            .iter()
            .filter(|(_, u)| evict_now(repair, u, last_steered))
            .cloned()
            .collect();
        let evicted = lock(&escapes.evicted).clone();
        let (to_evict, still) = new_escapes(&due, &evicted);
        // Kept while the pod is there (it may take a while to go): never evicted twice.
        let kept: BTreeSet<Key> = evicted
            .into_iter()
            .filter(|k| now.iter().any(|(n, _)| n == k))
            .chain(still)
            .collect();
        *lock(&escapes.evicted) = kept;
        for ((ns, name), _) in to_evict {
            if evict(&ctx, &ns, &name).await {
                lock(&escapes.evicted).insert((ns, name));
            }
        }
    }
}

/// When warmpool was installed: its Lease's creation (this term holds it, so it exists), or
/// now when it cannot be read (then only pods from now on count).
async fn installed_at(ctx: &Context) -> Timestamp {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    match api.get(crate::core::names::LEASE).await {
        Ok(lease) => lease
            .metadata
            .creation_timestamp
            .map_or_else(Timestamp::now, |t| t.0),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Lease's creation: only pods created from now on are judged");
            Timestamp::now()
        }
    }
}

/// The Warning Event of one unsteered pod.
async fn report(ctx: &Context, ns: &str, name: &str, pod: &Unsteered, repair: Repair) {
    tracing::warn!(namespace = %ns, pod = %name, node = ?pod.node, "a tenant pod escaped the webhook");
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        ..ObjectReference::default()
    };
    let event = unsteered_event(pod, repair);
    let action = || format!("record the Unsteered event of {ns}/{name}");
    if let Err(e) = ctx
        .write(action, ctx.recorder.publish(&event, &reference))
        .await
    {
        tracing::warn!(namespace = %ns, pod = %name, error = %e, "cannot record the event");
    }
}

/// Evicts one unsteered pod; false to try again later (refused: a PodDisruptionBudget).
async fn evict(ctx: &Context, ns: &str, name: &str) -> bool {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let action = || format!("evict {ns}/{name} (unsteered)");
    match ctx
        .write(action, api.evict(name, &EvictParams::default()))
        .await
    {
        Ok(_) => {
            ctx.metrics.tenant_pods_evicted.inc();
            tracing::info!(namespace = %ns, pod = %name, "evicted an unsteered pod: its controller re-creates it through the webhook");
            true
        }
        Err(e) => {
            tracing::warn!(namespace = %ns, pod = %name, error = %e, retry_in = ?RETRY, "cannot evict the unsteered pod (a PodDisruptionBudget?)");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, pod: &str) -> Key {
        (ns.to_owned(), pod.to_owned())
    }

    fn pod(controlled: bool) -> Unsteered {
        Unsteered {
            created: None,
            node: Some("cold-1".into()),
            controlled,
        }
    }

    #[test]
    fn each_escape_is_acted_on_once_and_forgotten_when_it_goes() {
        let now = [
            (key("demo-1", "a"), pod(true)),
            (key("demo-1", "b"), pod(false)),
        ];
        let (fresh, still) = new_escapes(&now, &BTreeSet::new());
        assert_eq!(fresh.len(), 2);
        assert!(still.is_empty());
        let acted = BTreeSet::from([key("demo-1", "a"), key("demo-1", "gone")]);
        let (fresh, still) = new_escapes(&now, &acted);
        assert_eq!(fresh, vec![(key("demo-1", "b"), pod(false))]);
        assert_eq!(still, BTreeSet::from([key("demo-1", "a")]));
    }

    #[test]
    fn at_most_a_scans_worth_is_acted_on_at_once() {
        let now: Vec<(Key, Unsteered)> = (0..PER_SCAN + 5)
            .map(|i| (key("demo-1", &format!("p{i:02}")), pod(true)))
            .collect();
        let (fresh, _) = new_escapes(&now, &BTreeSet::new());
        assert_eq!(fresh.len(), PER_SCAN);
        let acted: BTreeSet<Key> = fresh.into_iter().map(|(k, _)| k).collect();
        let (rest, still) = new_escapes(&now, &acted);
        assert_eq!(rest.len(), 5, "the rest at the next scan");
        assert_eq!(still.len(), PER_SCAN);
    }

    #[test]
    fn a_pod_is_evicted_only_once_the_webhook_steered_one_as_new() {
        let t = |s: &str| -> Timestamp { s.parse().unwrap() };
        let escaped = Unsteered {
            created: Some(t("2026-12-02T09:00:00Z")),
            node: None,
            controlled: true,
        };
        let back = Some(t("2026-12-02T09:00:05Z"));
        assert!(evict_now(Repair::Evict, &escaped, back));
        // What the API server records is whole seconds: a steered pod of the same second is
        // evidence too (the end-to-end test made both within a second on a fast machine, and
        // the strict comparison never evicted).
        assert!(
            evict_now(Repair::Evict, &escaped, escaped.created),
            "steered in the same second"
        );
        assert!(
            !evict_now(Repair::Evict, &escaped, None),
            "the webhook not seen back"
        );
        assert!(
            !evict_now(Repair::Evict, &escaped, Some(t("2026-12-02T08:59:00Z"))),
            "steered only before it: maybe still down"
        );
        assert!(!evict_now(Repair::None, &escaped, back));
        let bare = Unsteered {
            controlled: false,
            ..escaped
        };
        assert!(!evict_now(Repair::Evict, &bare, back));
    }

    #[test]
    fn the_event_says_where_it_runs_and_what_to_do() {
        let note = |p: &Unsteered, r: Repair| unsteered_event(p, r).note.unwrap();
        let n = note(&pod(true), Repair::None);
        assert!(
            n.contains("on node cold-1") && n.contains("set tenants.repair: evict"),
            "{n}"
        );
        let n = note(&pod(true), Repair::Evict);
        assert!(n.contains("it is evicted"), "{n}");
        let n = note(&pod(false), Repair::Evict);
        assert!(n.contains("not evicted"), "{n}");
        let unscheduled = Unsteered {
            created: None,
            node: None,
            controlled: true,
        };
        assert!(note(&unscheduled, Repair::None).contains("not scheduled yet"));
        assert_eq!(
            unsteered_event(&pod(true), Repair::None).type_,
            EventType::Warning
        );
    }
}
