//! Tenant pods that escaped the webhook ([`crate::core::unsteered::is_unsteered`] decides, on what the pod
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
//! Events. At most [`crate::core::unsteered::PER_SCAN`] pods are acted on per scan (the rest at the next one, 30 s
//! later at the latest), so a long webhook outage is repaired gently, like a rollout.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, EvictParams};
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::config::Repair;
use crate::core::unsteered::{Key, Unsteered, evict_now, to_act_on, unsteered_event};
use crate::reconcile::base::context::{Context, lock};
use crate::reconcile::watches::namespaces::CachedNamespace;
use crate::reconcile::watches::pods::PodIndex;

/// How long a refused eviction (a PodDisruptionBudget) waits before it is tried again, and
/// the longest pause before the pods over [`crate::core::unsteered::PER_SCAN`] are acted on.
const RETRY: Duration = Duration::from_secs(30);

/// The unsteered pods already acted on in this term.
#[derive(Default)]
pub struct Acted {
    /// Given their Event.
    reported: Mutex<BTreeSet<Key>>,
    /// Evicted (with `repair: evict`).
    evicted: Mutex<BTreeSet<Key>>,
    wake: Notify,
}

impl Acted {
    /// A pod changed.
    pub fn touched(&self) {
        self.wake.notify_one();
    }
}

/// For the whole leadership term: at every pod change, the unsteered pods of the tenants.
pub async fn run(
    ctx: Arc<Context>,
    acted: Arc<Acted>,
    pods: Arc<Mutex<PodIndex>>,
    namespaces: Store<CachedNamespace>,
) {
    let repair = ctx.settings.config.tenants.repair;
    let installed = installed_at(&ctx).await;
    loop {
        tokio::select! {
            () = acted.wake.notified() => {}
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
        let reported = lock(&acted.reported).clone();
        let (fresh, still) = to_act_on(&now, &reported);
        *lock(&acted.reported) = still;
        for ((ns, name), pod) in fresh {
            report(&ctx, &ns, &name, &pod, repair).await;
            lock(&acted.reported).insert((ns, name));
        }
        let due: Vec<(Key, Unsteered)> = now
            .iter()
            .filter(|(_, u)| evict_now(repair, u, last_steered))
            .cloned()
            .collect();
        let evicted = lock(&acted.evicted).clone();
        let (to_evict, still) = to_act_on(&due, &evicted);
        // Kept while the pod is there (it may take a while to go): never evicted twice.
        let kept: BTreeSet<Key> = evicted
            .into_iter()
            .filter(|k| now.iter().any(|(n, _)| n == k))
            .chain(still)
            .collect();
        *lock(&acted.evicted) = kept;
        for ((ns, name), _) in to_evict {
            if evict(&ctx, &ns, &name).await {
                lock(&acted.evicted).insert((ns, name));
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
