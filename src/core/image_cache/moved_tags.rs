//! Tags that moved between pulls. Pure apart from the Event's wording.
//!
//! The cache holds each image by the reference tenants use (`…/app:v1`), not pinned to a
//! digest: containerd stores an image pulled as `name:tag@digest` under the digest only, so a
//! tenant pod asking for `name:tag` would find no image of that name and pull again — the wait
//! the cache exists to remove. An image a tenant names by digest is cached by that digest, and
//! so pinned already.
//!
//! A tag can be moved in the registry (a re-pushed `v1`). Each warm node then serves tenants
//! (`imagePullPolicy: IfNotPresent`) whichever image the tag named when that node pulled it, and
//! two warm nodes can run two different images under one name. The kubelet reports the image a
//! container was created from (`imageID`, the repository digest), so the cache pods' statuses
//! show it: one tag, more than one `imageID` across the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Event, EventType};

use crate::core::pool::desired::CACHE_CONTAINER_PREFIX;

/// The images one cached reference resolves to on the warm nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The reference as the DaemonSet names it.
    pub image: String,
    /// The image's digest (of its `imageID`) → the nodes whose cache holds it under `image`.
    pub ids: BTreeMap<String, BTreeSet<String>>,
}

impl Resolved {
    /// The tag names more than one image: it moved between two nodes' pulls.
    pub fn moved(&self) -> bool {
        self.ids.len() > 1
    }
}

/// Every cached reference by tag (a digest cannot move) that is present on at least one node of
/// `pods` (the cache pods; deleted and unscheduled ones left out), sorted by reference.
pub fn resolve(pods: &[Arc<Pod>]) -> Vec<Resolved> {
    let mut by_image: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let Some(node) = spec.node_name.as_deref() else {
            continue;
        };
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for container in spec
            .containers
            .iter()
            .filter(|c| c.name.starts_with(CACHE_CONTAINER_PREFIX))
        {
            let Some(image) = container.image.as_deref() else {
                continue;
            };
            if image.contains('@') {
                continue;
            }
            let Some(id) = statuses
                .iter()
                .find(|s| s.name == container.name)
                .map(|s| s.image_id.as_str())
                .filter(|id| !id.is_empty())
            else {
                continue;
            };
            // By digest alone: an image stored under several names (the same content pushed
            // as two tags) is reported by whichever name containerd lists first.
            by_image
                .entry(image.to_owned())
                .or_default()
                .entry(digest(id).to_owned())
                .or_default()
                .insert(node.to_owned());
        }
    }
    by_image
        .into_iter()
        .map(|(image, ids)| Resolved { image, ids })
        .collect()
}

/// The digest part of an `imageID` (`registry/repo@sha256:…` → `sha256:…`).
fn digest(id: &str) -> &str {
    id.rsplit_once('@').map_or(id, |(_, d)| d)
}

/// A digest shortened to what a person compares by eye.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// The Warning Event for a tag that names different images on different warm nodes.
pub fn moved_event(moved: &Resolved) -> Event {
    let mut held: Vec<String> = moved
        .ids
        .iter()
        .map(|(id, nodes)| {
            let mut nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
            let more = nodes.len().saturating_sub(5);
            nodes.truncate(5);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{} on {}{more}", short(id), nodes.join(", "))
        })
        .collect();
    let kinds = held.len();
    held.truncate(4);
    Event {
        type_: EventType::Warning,
        reason: "ImageTagMoved".into(),
        note: Some(format!(
            "{} names {kinds} different images on the warm nodes ({}): the tag was moved in \
             the registry between two nodes' pulls, so tenant pods run a different image \
             depending on the node they land on. Name an immutable tag or a digest in the \
             tenants' pods; the cache then holds exactly that",
            moved.image,
            held.join("; ")
        )),
        action: "Cache".into(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: Option<&str>, ids: &[(&str, &str)]) -> Arc<Pod> {
        let containers = json!([
            {"name": "pause", "image": "pause:1"},
            {"name": "cache-a-1", "image": "r/a:1"},
            {"name": "cache-b-2", "image": "r/b@sha256:bbbb"},
            {"name": "cache-c-3", "image": "r/c:1"},
        ]);
        let statuses: Vec<_> = ids
            .iter()
            .map(|(name, id)| {
                json!({"name": name, "image": "x", "imageID": id, "ready": true,
                       "restartCount": 0})
            })
            .collect();
        super::super::report::tests::pod(node, containers, json!(statuses))
    }

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_tag_pulled_as_two_images_on_two_nodes_has_moved() {
        let pods = [
            pod(
                Some("n1"),
                &[
                    ("cache-a-1", "r/a@sha256:old"),
                    ("cache-c-3", "r/c@sha256:c"),
                ],
            ),
            pod(
                Some("n2"),
                &[
                    ("cache-a-1", "r/a@sha256:new"),
                    ("cache-c-3", "r/c@sha256:c"),
                ],
            ),
            pod(Some("n3"), &[("cache-a-1", "r/a@sha256:old")]),
        ];
        let resolved = resolve(&pods);
        assert_eq!(resolved.len(), 2);
        let a = &resolved[0];
        assert_eq!(a.image, "r/a:1");
        assert!(a.moved());
        assert_eq!(a.ids["sha256:old"], nodes(&["n1", "n3"]));
        assert_eq!(a.ids["sha256:new"], nodes(&["n2"]));
        let c = &resolved[1];
        assert_eq!(c.image, "r/c:1");
        assert!(
            !c.moved(),
            "one image on every node, whatever name it is listed by"
        );
    }

    #[test]
    fn digests_pending_images_and_pods_off_nodes_are_not_compared() {
        let mut deleted = (*pod(Some("n0"), &[("cache-a-1", "r/a@sha256:gone")])).clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = [
            Arc::new(deleted),
            pod(None, &[("cache-a-1", "r/a@sha256:unscheduled")]),
            pod(
                Some("n1"),
                &[("cache-a-1", "r/a@sha256:1"), ("cache-b-2", "r/b@sha256:x")],
            ),
            pod(
                Some("n2"),
                &[("cache-a-1", ""), ("cache-b-2", "r/b@sha256:y")],
            ),
        ];
        let resolved = resolve(&pods);
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(resolved[0].image, "r/a:1");
        assert_eq!(resolved[0].ids.len(), 1);
        assert_eq!(resolved[0].ids["sha256:1"], nodes(&["n1"]));
    }

    #[test]
    fn the_event_names_the_tag_each_image_and_its_nodes_and_what_to_do() {
        let moved = Resolved {
            image: "r/a:1".into(),
            ids: BTreeMap::from([
                (
                    "sha256:1111111111111111111111111111".into(),
                    nodes(&["n1", "n3"]),
                ),
                (
                    "sha256:2222222222222222222222222222".into(),
                    (0..30).map(|i| format!("node-{i:02}")).collect(),
                ),
            ]),
        };
        let e = moved_event(&moved);
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.reason, "ImageTagMoved");
        let note = e.note.unwrap();
        assert!(note.starts_with("r/a:1 names 2 different images"), "{note}");
        assert!(note.contains("sha256:111111111111 on n1, n3"), "{note}");
        assert!(
            note.contains(
                "sha256:222222222222 on node-00, node-01, node-02, node-03, node-04 and 25 more"
            ),
            "{note}"
        );
        assert!(note.contains("immutable tag or a digest"), "{note}");
        assert!(note.len() < 1024, "{}", note.len());
    }
}
