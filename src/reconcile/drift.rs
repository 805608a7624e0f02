//! Drift triggers: metadata-only watches of the three written objects, each turned into a
//! stream of "look again" signals for the workloads controller.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

/// What of a written object's metadata can show drift: a spec edit or a scale bumps the
/// generation; labels, annotations and owners are ours too; a new uid means re-created. Status
/// updates (a rollout's progress, a DaemonSet's pod counts) change none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    uid: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owners: Option<Vec<OwnerReference>>,
    deleting: bool,
}

impl Fingerprint {
    fn of(meta: &ObjectMeta) -> Fingerprint {
        Fingerprint {
            uid: meta.uid.clone(),
            generation: meta.generation,
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            owners: meta.owner_references.clone(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// Whether a watch event of one written object calls for a reconcile: deletion, a (re-)list,
/// or a change of its [`Fingerprint`]. Pure.
pub fn drifted<K: Resource>(last: &mut Option<Fingerprint>, event: &watcher::Event<K>) -> bool {
    match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            let now = Fingerprint::of(o.meta());
            let changed = last.as_ref() != Some(&now);
            *last = Some(now);
            changed
        }
        watcher::Event::Delete(_) => {
            *last = None;
            true
        }
        // After a re-list the object may be gone without a Delete event: look again.
        watcher::Event::InitDone => true,
        watcher::Event::Init => false,
    }
}

/// A metadata-only watch of one written object, as reconcile triggers for the workloads.
pub fn triggers<K>(
    api: Api<PartialObjectMeta<K>>,
    name: &'static str,
) -> impl futures::Stream<Item = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let mut last = None;
    watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .filter_map(move |event| {
        let fire = match event {
            Ok(event) => {
                let fire = drifted(&mut last, &event);
                if fire {
                    tracing::debug!(object = name, "drift check triggered");
                }
                fire
            }
            Err(e) => {
                tracing::warn!(object = name, error = %e, "watch failed; retrying");
                false
            }
        };
        futures::future::ready(fire.then_some(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployment(uid: &str, generation: i64, replicas_ready: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "warmpool-prewarmer", "uid": uid, "generation": generation,
                         "labels": {"app.kubernetes.io/managed-by": "warmpool"}},
            "status": {"readyReplicas": replicas_ready},
        }))
        .unwrap()
    }

    #[test]
    fn only_changes_that_can_be_drift_trigger_a_reconcile() {
        let mut last = None;
        assert!(!drifted(&mut last, &watcher::Event::<Deployment>::Init));
        assert!(drifted(
            &mut last,
            &watcher::Event::InitApply(deployment("a", 1, 0))
        ));
        assert!(drifted(&mut last, &watcher::Event::<Deployment>::InitDone));
        // A status update: nothing to repair.
        assert!(!drifted(
            &mut last,
            &watcher::Event::Apply(deployment("a", 1, 1))
        ));
        // Scaled or edited: the generation moves.
        assert!(drifted(
            &mut last,
            &watcher::Event::Apply(deployment("a", 2, 1))
        ));
        // A label removed.
        let mut unlabelled = deployment("a", 2, 1);
        unlabelled.metadata.labels = None;
        assert!(drifted(&mut last, &watcher::Event::Apply(unlabelled)));
        // Deleted, then re-created (new uid).
        assert!(drifted(
            &mut last,
            &watcher::Event::Delete(deployment("a", 2, 1))
        ));
        assert!(drifted(
            &mut last,
            &watcher::Event::Apply(deployment("b", 1, 0))
        ));
        assert!(!drifted(
            &mut last,
            &watcher::Event::Apply(deployment("b", 1, 0))
        ));
    }
}
