//! What the image cache holds on each warm node, read from its pods' container statuses, and the
//! Warning Event for an image that cannot be pulled there. Pure: the cache pods in, the report
//! out; `reconcile::jobs::image_cache` watches the pods and exports it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType};

use crate::core::names::IMAGE_CACHE;
use crate::core::pool::desired::CACHE_CONTAINER_PREFIX;

/// Where one cached image stands on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// Pulled: its container was created from it (the status carries its `imageID`).
    Cached,
    /// Not there yet: pulling, or waiting for the pod to start.
    Pending,
    /// The kubelet cannot pull it (`ErrImagePull`, `ImagePullBackOff`, …); it keeps retrying
    /// with a backoff, and the node's other images are cached all the same.
    Failed { reason: String, message: String },
}

impl ImageState {
    /// The `state` label of `warmpool_image_cache_images`.
    pub fn label(&self) -> &'static str {
        match self {
            ImageState::Cached => "present",
            ImageState::Pending => "pending",
            ImageState::Failed { .. } => "failed",
        }
    }
}

/// The kubelet's waiting reasons that mean "this image cannot be pulled" (kubelet
/// `images.ErrImagePull` and relatives).
const PULL_FAILURES: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "SignatureValidationFailed",
];

/// The image cache on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCache {
    pub node: String,
    /// Image reference (as the DaemonSet names it) → its state there.
    pub images: BTreeMap<String, ImageState>,
}

impl NodeCache {
    /// Every image is present.
    pub fn complete(&self) -> bool {
        self.images.values().all(|s| *s == ImageState::Cached)
    }
}

/// The state of every cached image on every node that runs a cache pod (pods being deleted and
/// pods not yet scheduled left out; the pods of both cache DaemonSets on one node as one), by
/// node name.
pub fn report(pods: &[Arc<Pod>]) -> Vec<NodeCache> {
    let mut nodes: BTreeMap<String, NodeCache> = BTreeMap::new();
    for cache in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| node_cache(p))
    {
        match nodes.get_mut(&cache.node) {
            Some(known) => known.images.extend(cache.images),
            None => {
                nodes.insert(cache.node.clone(), cache);
            }
        }
    }
    nodes.into_values().collect()
}

fn node_cache(pod: &Pod) -> Option<NodeCache> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone()?;
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let images = spec
        .containers
        .iter()
        .filter(|c| c.name.starts_with(CACHE_CONTAINER_PREFIX))
        .filter_map(|c| {
            let image = c.image.clone()?;
            let status = statuses.iter().find(|s| s.name == c.name);
            let state = match status {
                Some(s) if !s.image_id.is_empty() => ImageState::Cached,
                Some(s) => match s.state.as_ref().and_then(|st| st.waiting.as_ref()) {
                    Some(w) if PULL_FAILURES.contains(&w.reason.as_deref().unwrap_or_default()) => {
                        ImageState::Failed {
                            reason: w.reason.clone().unwrap_or_default(),
                            message: w.message.clone().unwrap_or_default(),
                        }
                    }
                    _ => ImageState::Pending,
                },
                None => ImageState::Pending,
            };
            Some((image, state))
        })
        .collect();
    Some(NodeCache { node, images })
}

/// `(node, image)` of every image that cannot be pulled.
pub fn failures(nodes: &[NodeCache]) -> BTreeSet<(String, String)> {
    nodes
        .iter()
        .flat_map(|n| {
            n.images
                .iter()
                .filter(|(_, s)| matches!(s, ImageState::Failed { .. }))
                .map(|(image, _)| (n.node.clone(), image.clone()))
        })
        .collect()
}

/// The Warning Event for an image that cannot be pulled on a node.
pub fn pull_failed_event(node: &str, image: &str, reason: &str, message: &str) -> Event {
    // An Event's note is at most 1 kB; the kubelet's message can be long.
    let message: String = message.chars().take(400).collect();
    Event {
        type_: EventType::Warning,
        reason: "ImagePullFailed".into(),
        note: Some(format!(
            "{image} cannot be pulled on node {node} ({reason}: {message}); the node's other \
             images are cached all the same and the kubelet keeps retrying. Check the \
             reference, or name its pull secret in imageCache.imagePullSecrets"
        )),
        action: "Cache".into(),
        secondary: None,
    }
}

/// The image-cache DaemonSet, the object its Events are about (its uid read off its pods).
pub fn daemonset_reference(pods: &[Arc<Pod>], namespace: &str) -> ObjectReference {
    let uid = pods
        .iter()
        .filter_map(|p| p.metadata.owner_references.as_ref())
        .flatten()
        // The pods of both cache DaemonSets are here: the uid of the one named.
        .find(|o| o.controller == Some(true) && o.kind == "DaemonSet" && o.name == IMAGE_CACHE)
        .map(|o| o.uid.clone());
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("DaemonSet".into()),
        name: Some(IMAGE_CACHE.into()),
        namespace: Some(namespace.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A cache pod on `node` with these containers and container statuses (also the fixture of
    /// [`super::super::moved_tags`]'s tests).
    pub(crate) fn pod(
        node: Option<&str>,
        containers: serde_json::Value,
        statuses: serde_json::Value,
    ) -> Arc<Pod> {
        let mut spec = json!({"containers": containers});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": spec,
                "status": {"containerStatuses": statuses},
            }))
            .unwrap(),
        )
    }

    pub(crate) fn containers() -> serde_json::Value {
        json!([
            {"name": "pause", "image": "pause:1"},
            {"name": "cache-a-1", "image": "r/a:1"},
            {"name": "cache-b-2", "image": "r/b:1"},
            {"name": "cache-c-3", "image": "r/c:nope"},
        ])
    }

    pub(crate) fn running(name: &str, image_id: &str) -> serde_json::Value {
        json!({"name": name, "image": "x", "imageID": image_id, "ready": true, "restartCount": 0,
               "state": {"running": {}}})
    }

    pub(crate) fn waiting(name: &str, reason: &str) -> serde_json::Value {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": reason, "message": format!("{reason} because")}}})
    }

    #[test]
    fn each_image_has_its_own_state_and_one_failure_does_not_hide_the_others() {
        let p = pod(
            Some("n1"),
            containers(),
            json!([
                running("pause", "sha256:p"),
                running("cache-a-1", "r/a@sha256:1"),
                waiting("cache-b-2", "ContainerCreating"),
                waiting("cache-c-3", "ImagePullBackOff"),
            ]),
        );
        let nodes = report(&[p]);
        assert_eq!(nodes.len(), 1);
        let images = &nodes[0].images;
        assert_eq!(images.len(), 3, "the pause container is not a cached image");
        assert_eq!(images["r/a:1"], ImageState::Cached);
        assert_eq!(images["r/b:1"], ImageState::Pending);
        assert_eq!(
            images["r/c:nope"],
            ImageState::Failed {
                reason: "ImagePullBackOff".into(),
                message: "ImagePullBackOff because".into()
            }
        );
        assert!(!nodes[0].complete());
        assert_eq!(
            failures(&nodes),
            BTreeSet::from([("n1".to_owned(), "r/c:nope".to_owned())])
        );
    }

    #[test]
    fn every_pull_failure_reason_counts_and_a_crashing_container_still_has_its_image() {
        for reason in PULL_FAILURES {
            let p = pod(
                Some("n"),
                containers(),
                json!([waiting("cache-a-1", reason)]),
            );
            assert_eq!(
                report(&[p])[0].images["r/a:1"].label(),
                "failed",
                "{reason}"
            );
        }
        let mut crashing = waiting("cache-a-1", "CrashLoopBackOff");
        crashing["imageID"] = json!("r/a@sha256:1");
        let p = pod(Some("n"), containers(), json!([crashing]));
        assert_eq!(report(&[p])[0].images["r/a:1"], ImageState::Cached);
    }

    #[test]
    fn unscheduled_and_deleted_pods_are_left_out_and_nodes_come_sorted() {
        let unscheduled = pod(None, containers(), json!([]));
        let mut deleted = (*pod(Some("n0"), containers(), json!([]))).clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let all_present = json!([
            running("cache-a-1", "1"),
            running("cache-b-2", "2"),
            running("cache-c-3", "3"),
        ]);
        let nodes = report(&[
            unscheduled,
            Arc::new(deleted),
            pod(Some("n2"), containers(), json!([])),
            pod(Some("n1"), containers(), all_present),
        ]);
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert!(nodes[0].complete());
        assert!(nodes[1].images.values().all(|s| *s == ImageState::Pending));
    }

    #[test]
    fn the_event_names_image_node_and_what_to_do_and_stays_short() {
        let e = pull_failed_event("n1", "r/c:nope", "ErrImagePull", &"x".repeat(5000));
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.reason, "ImagePullFailed");
        let note = e.note.unwrap();
        assert!(note.contains("r/c:nope") && note.contains("n1"), "{note}");
        assert!(note.contains("imageCache.imagePullSecrets"), "{note}");
        assert!(note.len() < 1024, "{}", note.len());
    }
}
