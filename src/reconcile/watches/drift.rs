//! Drift: metadata-only watches of the three written objects. Each keeps the latest
//! [`Sighting`] of its object (what [`unchanged`] compares with what was last written, so that an
//! object the reconciler's own write left in place is not written again) and is a stream of
//! "look again" signals for the workloads controller.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::core::pool::PoolObject;
use crate::reconcile::base::context::lock;

/// The latest state of one written object, as its watch delivered it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sighting {
    /// How many events the watch has delivered: a new number is news.
    pub events: u64,
    /// The object's metadata (managedFields dropped); `None` while it does not exist, and before
    /// the first list.
    pub meta: Option<ObjectMeta>,
}

/// The sightings of the three objects, shared by their watches and the workloads controller.
#[derive(Debug, Default)]
pub struct Sightings(Mutex<BTreeMap<PoolObject, Sighting>>);

impl Sightings {
    pub fn get(&self, target: PoolObject) -> Sighting {
        lock(&self.0).get(&target).cloned().unwrap_or_default()
    }

    /// Notes one watch event; `found` tracks whether a re-list (`Init` … `InitDone`) saw the
    /// object, since a re-list reports a deletion missed in between only by not listing it.
    fn record<K: Resource>(&self, target: PoolObject, found: &mut bool, event: &watcher::Event<K>) {
        let mut all = lock(&self.0);
        let sighting = all.entry(target).or_default();
        match event {
            watcher::Event::Init => {
                *found = false;
                return;
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                *found = true;
                let mut meta = o.meta().clone();
                meta.managed_fields = None;
                sighting.meta = Some(meta);
            }
            watcher::Event::Delete(_) => sighting.meta = None,
            watcher::Event::InitDone => {
                if !*found {
                    sighting.meta = None;
                }
            }
        }
        sighting.events += 1;
    }
}

/// What of a written object's metadata must still be as warmpool wrote it, measured against the
/// desired object: the same object (uid), no spec change since (the generation; for a
/// PriorityClass, which has no status and keeps its generation on update, the resourceVersion),
/// the labels, annotations and owner references warmpool sets (others' are not its business:
/// the Deployment controller's revision annotation does not count), not being deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    uid: Option<String>,
    version: Option<String>,
    labels: BTreeMap<String, Option<String>>,
    annotations: BTreeMap<String, Option<String>>,
    owners: Vec<bool>,
    deleting: bool,
}

impl Written {
    pub fn of(meta: &ObjectMeta, desired: &ObjectMeta, by_generation: bool) -> Written {
        let pick = |have: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
            want.iter()
                .flatten()
                .map(|(k, _)| (k.clone(), have.as_ref().and_then(|h| h.get(k).cloned())))
                .collect()
        };
        let owners = desired
            .owner_references
            .iter()
            .flatten()
            .map(|want| {
                meta.owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == want.uid && o.kind == want.kind && o.name == want.name)
            })
            .collect();
        Written {
            uid: meta.uid.clone(),
            version: if by_generation {
                meta.generation.map(|g| g.to_string())
            } else {
                meta.resource_version.clone()
            },
            labels: pick(&meta.labels, &desired.labels),
            annotations: pick(&meta.annotations, &desired.annotations),
            owners,
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// What the reconciler last wrote of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct LastApplied {
    /// The desired object as sent.
    pub desired: serde_json::Value,
    /// The object as the API server returned it.
    pub written: Written,
    /// The watch's event count just before the write.
    pub events_before: u64,
}

/// Whether `desired` can be skipped: it is what was last applied, and since then the object's
/// watch has either delivered nothing (the write's own event is still on its way) or shows the
/// object as written. Anything else — another desired object, the object gone, re-created,
/// edited, relabelled — is written. Pure.
pub fn unchanged(
    last: &LastApplied,
    desired: &serde_json::Value,
    desired_meta: &ObjectMeta,
    seen: &Sighting,
    by_generation: bool,
) -> bool {
    if last.desired != *desired {
        return false;
    }
    if seen.events == last.events_before {
        return true;
    }
    seen.meta
        .as_ref()
        .is_some_and(|meta| Written::of(meta, desired_meta, by_generation) == last.written)
}

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

/// A metadata-only watch of one written object (on `Api<PartialObjectMeta<K>>` kube asks the API
/// server for metadata only): it keeps the object's [`Sighting`] and is a stream of reconcile
/// triggers for the workloads.
pub fn triggers<K>(
    api: Api<PartialObjectMeta<K>>,
    name: &'static str,
    target: PoolObject,
    sightings: Arc<Sightings>,
) -> impl futures::Stream<Item = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let mut last = None;
    let mut found = false;
    watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .filter_map(move |event| {
        let fire = match event {
            Ok(event) => {
                sightings.record(target, &mut found, &event);
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
    use serde_json::json;

    fn meta(value: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(value).unwrap()
    }

    fn desired_meta() -> ObjectMeta {
        meta(json!({"name": "warmpool-prewarmer", "namespace": "ns",
                    "labels": {"app.kubernetes.io/managed-by": "warmpool"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "warmpool", "uid": "o-1"}]}))
    }

    /// The object as the API server has it: what warmpool wrote plus what others add.
    fn server(generation: i64, rv: &str, extra: serde_json::Value) -> ObjectMeta {
        let mut value = json!({"name": "warmpool-prewarmer", "namespace": "ns", "uid": "u-1",
                    "generation": generation, "resourceVersion": rv,
                    "labels": {"app.kubernetes.io/managed-by": "warmpool"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "warmpool", "uid": "o-1"}]});
        if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                v.insert(k.clone(), x.clone());
            }
        }
        meta(value)
    }

    fn last(desired: &serde_json::Value, written: &ObjectMeta, events_before: u64) -> LastApplied {
        LastApplied {
            desired: desired.clone(),
            written: Written::of(written, &desired_meta(), true),
            events_before,
        }
    }

    fn seen(events: u64, meta: Option<ObjectMeta>) -> Sighting {
        Sighting { events, meta }
    }

    /// A Deployment of one replica as the reconciler last wrote it (generation 2,
    /// resourceVersion 100), just before the watch's fifth event.
    fn one_replica_written() -> (serde_json::Value, ObjectMeta, LastApplied) {
        let desired = json!({"spec": {"replicas": 1}});
        let written = server(2, "100", json!({}));
        let last = last(&desired, &written, 5);
        (desired, written, last)
    }

    #[test]
    fn what_the_reconciler_wrote_itself_is_not_written_again() {
        let (desired, written, last) = one_replica_written();
        let d = desired_meta();
        let skipped = |sighting: &Sighting| unchanged(&last, &desired, &d, sighting, true);
        // The write's own event has not arrived yet.
        assert!(skipped(&seen(5, Some(server(1, "90", json!({}))))));
        // It has, then the Deployment controller's status updates and revision annotation.
        assert!(skipped(&seen(6, Some(written.clone()))));
        let revised = server(
            2,
            "104",
            json!({"annotations": {"deployment.kubernetes.io/revision": "2"}}),
        );
        assert!(skipped(&seen(9, Some(revised))));
    }

    #[test]
    fn any_change_of_what_warmpool_owns_is_written_back() {
        let (desired, written, last) = one_replica_written();
        let d = desired_meta();
        // Another desired object.
        assert!(!unchanged(
            &last,
            &json!({"spec": {"replicas": 2}}),
            &d,
            &seen(5, Some(written.clone())),
            true
        ));
        let skipped = |sighting: &Sighting| unchanged(&last, &desired, &d, sighting, true);
        // Scaled or edited (new generation), deleted, re-created, relabelled, disowned, deleting.
        let changed = [
            seen(6, Some(server(3, "101", json!({})))),
            seen(6, None),
            seen(7, Some(server(2, "105", json!({"uid": "u-2"})))),
            seen(6, Some(server(2, "101", json!({"labels": {}})))),
            seen(6, Some(server(2, "101", json!({"ownerReferences": []})))),
            seen(
                6,
                Some(server(
                    2,
                    "101",
                    json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
                )),
            ),
        ];
        for sighting in &changed {
            assert!(!skipped(sighting), "{sighting:?}");
        }
        // Somebody else's label is not drift.
        let labelled = server(
            2,
            "101",
            json!({"labels": {"app.kubernetes.io/managed-by": "warmpool", "team": "x"}}),
        );
        assert!(skipped(&seen(6, Some(labelled))));
    }

    #[test]
    fn a_priority_class_is_compared_by_resource_version() {
        // Its generation stays 1 when it is edited: only the resourceVersion shows an edit.
        let desired = json!({"value": -10});
        let d = desired_meta();
        let written = server(1, "100", json!({}));
        let last = LastApplied {
            desired: desired.clone(),
            written: Written::of(&written, &d, false),
            events_before: 0,
        };
        let skipped = |sighting: &Sighting| unchanged(&last, &desired, &d, sighting, false);
        assert!(skipped(&seen(1, Some(written))));
        assert!(!skipped(&seen(2, Some(server(1, "107", json!({}))))));
    }

    #[test]
    fn sightings_follow_the_watch_protocol() {
        let sightings = Sightings::default();
        let mut found = false;
        let t = PoolObject::Deployment;
        let d = |uid: &str| deployment(uid, 1, 0);
        assert_eq!(sightings.get(t), Sighting::default());
        sightings.record(t, &mut found, &watcher::Event::<Deployment>::Init);
        sightings.record(t, &mut found, &watcher::Event::InitApply(d("a")));
        sightings.record(t, &mut found, &watcher::Event::<Deployment>::InitDone);
        let s = sightings.get(t);
        assert_eq!(s.events, 2);
        assert_eq!(s.meta.and_then(|m| m.uid).as_deref(), Some("a"));
        sightings.record(t, &mut found, &watcher::Event::Delete(d("a")));
        assert_eq!(sightings.get(t).meta, None);
        sightings.record(t, &mut found, &watcher::Event::Apply(d("b")));
        assert!(sightings.get(t).meta.is_some());
        // A re-list that does not list it: deleted while the watch was down.
        sightings.record(t, &mut found, &watcher::Event::<Deployment>::Init);
        sightings.record(t, &mut found, &watcher::Event::<Deployment>::InitDone);
        let s = sightings.get(t);
        assert_eq!((s.events, s.meta), (5, None));
        assert_eq!(sightings.get(PoolObject::DaemonSet), Sighting::default());
    }

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
