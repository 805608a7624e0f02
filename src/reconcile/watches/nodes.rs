//! The warm nodes, as far as the reconciler cares: each one's allocatable CPU and memory, so
//! that a placeholder never asks for more than one node has (`prewarmer.slot: auto`), and the
//! sizes of the images it reports, for the cache's byte budget (`imageCache.maxBytesPerNode`).
//! A Node is read into [`SlimNode`] (only its name, `status.allocatable` and `status.images` are
//! deserialised) and indexed by name. Pure apart from the watch-event plumbing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::Deserialize;

use crate::core::pool::slot::Requests;

/// A Node with only the fields the reconciler reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimNode {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: SlimNodeStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimNodeStatus {
    #[serde(default)]
    pub allocatable: Option<BTreeMap<String, Quantity>>,
    /// What the kubelet reports of its images (the 50 largest by default).
    #[serde(default)]
    pub images: Vec<SlimNodeImage>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimNodeImage {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub size_bytes: Option<i64>,
}

/// One warm node, as the index keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WarmNode {
    allocatable: Requests,
    /// Canonical image reference → size in bytes (tags and digests of one image alike).
    images: Box<[(String, u64)]>,
}

impl WarmNode {
    fn of(node: &SlimNode) -> WarmNode {
        let mut images: Vec<(String, u64)> = node
            .status
            .images
            .iter()
            .flat_map(|i| {
                let size = i
                    .size_bytes
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0);
                i.names
                    .iter()
                    .filter_map(move |n| Some((crate::core::pool::images::discoverable(n)?, size)))
            })
            .collect();
        images.sort();
        images.dedup_by(|a, b| a.0 == b.0);
        WarmNode {
            allocatable: Requests::from_list(node.status.allocatable.as_ref()),
            images: images.into_boxed_slice(),
        }
    }
}

impl kube::Resource for SlimNode {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Every warm node's allocatable, by name, from a watcher (re-lists swapped in at `InitDone`).
#[derive(Debug, Default)]
pub struct NodeIndex {
    nodes: HashMap<String, WarmNode>,
    relisting: Option<HashMap<String, WarmNode>>,
    synced: bool,
}

impl NodeIndex {
    /// An index with nothing to wait for (no node watch runs).
    pub fn synced_empty() -> NodeIndex {
        NodeIndex {
            synced: true,
            ..NodeIndex::default()
        }
    }

    /// Applies one watch event; true when the index visibly changed.
    pub fn apply(&mut self, event: watcher::Event<SlimNode>) -> bool {
        let of = WarmNode::of;
        match event {
            watcher::Event::Apply(node) => match node.metadata.name.clone() {
                Some(name) => {
                    let now = of(&node);
                    self.nodes.insert(name, now.clone()) != Some(now)
                }
                None => false,
            },
            watcher::Event::Delete(node) => node
                .metadata
                .name
                .as_ref()
                .is_some_and(|name| self.nodes.remove(name).is_some()),
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(node) => {
                if let (Some(buffer), Some(name)) =
                    (self.relisting.as_mut(), node.metadata.name.clone())
                {
                    buffer.insert(name, of(&node));
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(buffer) = self.relisting.take() {
                    self.nodes = buffer;
                }
                self.synced = true;
                true
            }
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The warm nodes' names.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The warm nodes' allocatable, in no particular order.
    pub fn allocatable(&self) -> impl Iterator<Item = Requests> + '_ {
        self.nodes.values().map(|n| n.allocatable)
    }

    /// The size of each image (canonical reference) on the warm nodes: the largest any of
    /// them reports.
    pub fn image_sizes(&self) -> HashMap<&str, u64> {
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        for (image, size) in self.nodes.values().flat_map(|n| n.images.iter()) {
            let known = sizes.entry(image.as_str()).or_insert(0);
            *known = (*known).max(*size);
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, memory: &str) -> SlimNode {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"workload-type": "cargocats"}},
            "spec": {"taints": [{"key": "workload-type", "value": "cargocats", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "images": [{"names": ["x"], "sizeBytes": 1}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_node_is_read_down_to_its_allocatable() {
        let mut index = NodeIndex::default();
        assert!(!index.is_synced());
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(node("a", "3920m", "15Gi")));
        assert_eq!(index.allocatable().count(), 0, "nothing before InitDone");
        assert!(index.apply(watcher::Event::InitDone));
        let mi = 1024 * 1024;
        assert_eq!(
            index.allocatable().collect::<Vec<_>>(),
            vec![Requests {
                cpu_millis: 3920,
                memory_bytes: 15 * 1024 * mi
            }]
        );
        assert!(index.apply(watcher::Event::Apply(node("b", "1930m", "7Gi"))));
        assert!(!index.apply(watcher::Event::Apply(node("b", "1930m", "7Gi"))));
        assert!(index.apply(watcher::Event::Delete(node("a", "1", "1Gi"))));
        assert_eq!(index.allocatable().count(), 1);
        assert!(NodeIndex::synced_empty().is_synced());
    }

    #[test]
    fn image_sizes_are_read_by_canonical_name_and_the_largest_report_wins() {
        let with_images = |name: &str, images: serde_json::Value| -> SlimNode {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": "1"}, "images": images},
            }))
            .unwrap()
        };
        let mut index = NodeIndex::synced_empty();
        index.apply(watcher::Event::Apply(with_images(
            "a",
            json!([
                {"names": ["docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                           "docker.io/library/nginx:1.27"], "sizeBytes": 70_000_000},
                {"names": ["registry.local:5000/x:1"]},
                {"names": ["Not A Reference"], "sizeBytes": 5},
            ]),
        )));
        assert!(index.apply(watcher::Event::Apply(with_images(
            "b",
            json!([{"names": ["nginx:1.27"], "sizeBytes": 71_000_000}]),
        ))));
        let sizes = index.image_sizes();
        assert_eq!(sizes.get("docker.io/library/nginx:1.27"), Some(&71_000_000));
        assert_eq!(
            sizes.get("registry.local:5000/x:1"),
            Some(&0),
            "no size reported"
        );
        assert_eq!(sizes.len(), 3, "{sizes:?}");
    }
}
