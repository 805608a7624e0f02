//! Tenant pods that escaped the webhook ([`crate::escape::unsteered`] decides, on what the pod
//! watch keeps: [`super::observed::PodIndex::unsteered_in`]). This shell counts them
//! (`warmpool_tenant_pods_unsteered`), records a Warning Event on each once, and with
//! `tenants.repair: evict` evicts those a controller owns through the Eviction API (so a
//! PodDisruptionBudget is respected) — the controller re-creates them, through the webhook.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use kube::api::{Api, EvictParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use super::context::{Context, lock};
use super::observed::{PodIndex, Unsteered};
use crate::config::Repair;

/// How long a refused eviction (a PodDisruptionBudget) waits before it is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// `(namespace, pod)`.
type Key = (String, String);

/// The unsteered pods already acted on in this term.
#[derive(Default)]
pub struct Escapes {
    reported: Mutex<BTreeSet<Key>>,
    wake: Notify,
}

impl Escapes {
    /// A pod changed.
    pub fn touched(&self) {
        self.wake.notify_one();
    }
}

/// What to do now: the pods unsteered now that were not acted on yet, and what stays
/// remembered (the ones still there). Pure.
pub fn new_escapes(
    now: &[(Key, Unsteered)],
    acted: &BTreeSet<Key>,
) -> (Vec<(Key, Unsteered)>, BTreeSet<Key>) {
    let fresh = now
        .iter()
        .filter(|(k, _)| !acted.contains(k))
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
    escapes: Arc<Escapes>,
    pods: Arc<Mutex<PodIndex>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
) {
    let repair = ctx.settings.config.tenants.repair;
    loop {
        tokio::select! {
            () = escapes.wake.notified() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
        // Let a burst of pod events settle.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now: Vec<(Key, Unsteered)> = {
            let index = lock(&pods);
            if !index.is_synced() {
                continue;
            }
            namespaces
                .state()
                .iter()
                // A namespace being deleted takes its pods along (and refuses new Events).
                .filter(|ns| ns.metadata.deletion_timestamp.is_none())
                .filter_map(|ns| {
                    let name = ns.metadata.name.as_deref()?;
                    let labels = ns.metadata.labels.clone().unwrap_or_default();
                    ctx.selector
                        .decide(name, &labels)
                        .is_tenant()
                        .then_some(name)
                })
                .flat_map(|ns| {
                    index
                        .unsteered_in(ns)
                        .into_iter()
                        .map(move |(pod, u)| ((ns.to_owned(), pod.to_owned()), u.clone()))
                })
                .collect()
        };
        ctx.metrics
            .tenant_pods_unsteered
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        let acted = lock(&escapes.reported).clone();
        let (fresh, still) = new_escapes(&now, &acted);
        *lock(&escapes.reported) = still;
        for ((ns, name), pod) in fresh {
            if act(&ctx, &ns, &name, &pod, repair).await {
                lock(&escapes.reported).insert((ns, name));
            }
        }
    }
}

/// The Event, and the eviction if asked for; false to try again later (an eviction refused).
async fn act(ctx: &Context, ns: &str, name: &str, pod: &Unsteered, repair: Repair) -> bool {
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
    if repair != Repair::Evict || !pod.controlled {
        return true;
    }
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
