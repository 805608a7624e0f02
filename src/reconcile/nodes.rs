//! The warm nodes, as far as `prewarmer.slot: auto` cares: each one's allocatable CPU and memory,
//! so that a placeholder never asks for more than one node has. A Node is read into [`SlimNode`]
//! (only its name and `status.allocatable` are deserialised) and indexed by name. Pure apart from
//! the watch-event plumbing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::Deserialize;

use super::slot::Requests;

/// A Node with only the fields the reconciler reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimNode {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: SlimNodeStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimNodeStatus {
    #[serde(default)]
    pub allocatable: Option<BTreeMap<String, Quantity>>,
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
    nodes: HashMap<String, Requests>,
    relisting: Option<HashMap<String, Requests>>,
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
        let of = |node: &SlimNode| Requests::from_list(node.status.allocatable.as_ref());
        match event {
            watcher::Event::Apply(node) => match node.metadata.name.clone() {
                Some(name) => {
                    let now = of(&node);
                    self.nodes.insert(name, now) != Some(now)
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
        self.nodes.values().copied()
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
}
