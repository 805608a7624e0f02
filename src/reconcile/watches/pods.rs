//! What the reconciler knows of the cluster, kept small: a Pod is read into [`SlimPod`] (only
//! images and requests are deserialised; env, volumes, status and the rest are skipped by serde),
//! reduced at once to a [`PodSummary`] and indexed by namespace. [`reduce`] turns that, the
//! namespaces and the warm nodes ([`super::nodes`]) into the inputs of the desired objects. Pure apart from the watch-event plumbing.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::Deserialize;

use super::nodes::NodeIndex;
use crate::config::{Config, Slot, SlotResources};
use crate::core::mutation::Rules;
use crate::core::pool::images::{
    Discovery, ImageUsage, LeftOut, Limits, MAX_IMAGES_PER_POD, Selection, discoverable,
    select_images,
};
use crate::core::pool::slot;
use crate::core::pool::slot::{ContainerRequests, Requests};
use crate::core::tenant::{LabelFacts, TenantSelector};
use crate::core::tenant_ready::PodStart;
use crate::core::unsteered::Unsteered;

/// A Pod with only the fields the reconciler reads. Unknown fields are skipped while parsing, so
/// a watch of every pod in the cluster never holds their full specs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SlimPodSpec,
    #[serde(default)]
    pub status: SlimPodStatus,
}

/// Of a pod's status, its conditions (for the Ready one) and which containers have an image.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodStatus {
    #[serde(default)]
    pub conditions: Vec<SlimCondition>,
    #[serde(default)]
    pub container_statuses: Vec<SlimContainerStatus>,
    #[serde(default)]
    pub init_container_statuses: Vec<SlimContainerStatus>,
}

/// A container's status, as far as discovery cares: its `imageID` is set once the kubelet has
/// the image (pulled, or found present) and created the container from it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "imageID")]
    pub image_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub last_transition_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    /// Placement, read only to judge whether the webhook steered the pod
    /// ([`crate::core::unsteered::is_unsteered`]), never kept in the index.
    #[serde(default)]
    pub affinity: Option<serde_json::Value>,
    #[serde(default)]
    pub node_selector: Option<serde_json::Value>,
    #[serde(default)]
    pub tolerations: Option<serde_json::Value>,
    #[serde(default)]
    pub containers: Vec<SlimContainer>,
    #[serde(default)]
    pub init_containers: Vec<SlimContainer>,
    /// Only whether there are any: a pod that names pull secrets may run private images.
    #[serde(default)]
    pub image_pull_secrets: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub overhead: Option<BTreeMap<String, Quantity>>,
    /// Pod-level resources (PodLevelResources).
    #[serde(default)]
    pub resources: Option<SlimResources>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimContainer {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub resources: Option<SlimResources>,
    #[serde(default)]
    pub restart_policy: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimResources {
    #[serde(default)]
    pub requests: Option<BTreeMap<String, Quantity>>,
}

impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// One pod, as far as the warm pool cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// The images discovery may take from it ([`discovered_images`]), in canonical form (once
    /// per pod event rather than at every observation), de-duplicated, in spec order. A boxed
    /// slice, exactly as long as it is: one is kept per pod.
    pub images: Box<[String]>,
    /// References discovery refused to read ([`crate::core::pool::images::LeftOut::Unusable`]).
    pub unusable: u16,
    /// What the scheduler reserves for it.
    pub requests: Requests,
    /// Bound to a node: only then do its requests size `slot: auto` (a pending pod may never
    /// fit anywhere; it must not make every placeholder that large).
    pub scheduled: bool,
}

impl PodSummary {
    pub fn of(pod: &SlimPod) -> PodSummary {
        let (images, unusable) = discovered_images(pod);
        PodSummary {
            images,
            unusable,
            requests: pod_requests(&pod.spec),
            scheduled: pod.spec.node_name.is_some(),
        }
    }
}

/// The images the image cache may take from `pod`, and how many references it refused.
///
/// Only images the pod's own containers already run: a container whose status has an
/// `imageID` (the kubelet had the image and created the container from it). So an image that
/// no tenant could pull (a typo, a private image without credentials) is never discovered, and
/// the cache never tries to pull it for them. Nothing is taken from a pod that names
/// `imagePullSecrets`: its images may be private, pullable only with its credentials; the
/// cache's pods pull discovered images with none (see [`crate::core::pool::desired`]). Each reference must
/// pass [`discoverable`]; at most [`MAX_IMAGES_PER_POD`] distinct images are kept.
pub fn discovered_images(pod: &SlimPod) -> (Box<[String]>, u16) {
    if !pod.spec.image_pull_secrets.is_empty() {
        return (Box::default(), 0);
    }
    let statuses = pod
        .status
        .init_container_statuses
        .iter()
        .chain(&pod.status.container_statuses);
    let has_image = |name: &str| {
        statuses
            .clone()
            .any(|s| s.name == name && !s.image_id.is_empty())
    };
    let mut images: Vec<String> = Vec::new();
    let mut unusable: u16 = 0;
    for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
        let Some(image) = c.image.as_deref().filter(|i| !i.trim().is_empty()) else {
            continue;
        };
        if !has_image(&c.name) {
            continue;
        }
        match discoverable(image) {
            Some(image) if images.contains(&image) => {}
            Some(image) if images.len() < MAX_IMAGES_PER_POD => images.push(image),
            _ => unusable = unusable.saturating_add(1),
        }
    }
    (images.into_boxed_slice(), unusable)
}

/// What the scheduler reserves for a pod of this spec ([`slot::pod_requests`]).
pub fn pod_requests(spec: &SlimPodSpec) -> Requests {
    let requests_of = |c: &SlimContainer| {
        Requests::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
    };
    let containers: Vec<Requests> = spec.containers.iter().map(requests_of).collect();
    let init: Vec<ContainerRequests> = spec
        .init_containers
        .iter()
        .map(|c| ContainerRequests {
            requests: requests_of(c),
            sidecar: c.restart_policy.as_deref() == Some("Always"),
        })
        .collect();
    let pod_level = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(|list| Requests::from_list(Some(list)));
    slot::pod_requests(
        &containers,
        &init,
        pod_level,
        Requests::from_list(spec.overhead.as_ref()),
    )
}

/// What a tenant's time to Ready needs of a pod ([`crate::core::tenant_ready`]).
pub fn pod_start(pod: &SlimPod) -> PodStart {
    let ready_since = pod
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
        });
    PodStart {
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        node: pod.spec.node_name.clone(),
        ready_since,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        containers: pod.spec.init_containers.len() + pod.spec.containers.len(),
    }
}

/// Whether the webhook never steered `pod` ([`crate::core::unsteered::is_unsteered`] on what the watch
/// keeps of it: annotations, owners and placement).
pub fn is_unsteered(pod: &SlimPod, rules: &Rules) -> bool {
    let view = serde_json::json!({
        "metadata": {
            "annotations": pod.metadata.annotations,
            "ownerReferences": pod.metadata.owner_references,
        },
        "spec": {
            "nodeName": pod.spec.node_name,
            "affinity": pod.spec.affinity,
            "nodeSelector": pod.spec.node_selector,
            "tolerations": pod.spec.tolerations,
        },
    });
    crate::core::unsteered::is_unsteered(&view, rules)
}

/// One pod in the index: what the desired objects need, what its tenant's start needs, and
/// whether it escaped the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    summary: PodSummary,
    start: PodStart,
    /// Boxed: most pods were steered, and the index keeps an entry per pod.
    unsteered: Option<Box<Unsteered>>,
}

impl Entry {
    fn of(pod: &SlimPod, rules: Option<&Rules>) -> Entry {
        let unsteered = rules.filter(|r| is_unsteered(pod, r)).map(|_| {
            Box::new(Unsteered {
                created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
                node: pod.spec.node_name.clone(),
                controlled: pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.kind != "DaemonSet"),
            })
        });
        Entry {
            summary: PodSummary::of(pod),
            start: pod_start(pod),
            unsteered,
        }
    }
}

/// Every (non-terminated) tenant pod's summary, by namespace and name. Fed by a pod watcher;
/// handles the watcher's re-list protocol (`Init`, `InitApply`…, `InitDone`) by swapping in a
/// new index atomically, as the reflector store does.
///
/// Only tenants' pods are kept: the pods of a namespace known not to be a tenant
/// ([`PodIndex::set_tenant`]) are dropped as they come, so that a cluster's other pods cost
/// nothing. A namespace not known yet is kept until it is. When a namespace whose pods were
/// dropped becomes a tenant, [`PodIndex::set_tenant`] says so: its pods must be listed again.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_namespace: HashMap<String, HashMap<String, Entry>>,
    relisting: Option<HashMap<String, HashMap<String, Entry>>>,
    synced: bool,
    /// The webhook's rules, to tell unsteered pods (`None`: not judged).
    rules: Option<Rules>,
    /// By namespace, the creation of the newest pod the webhook steered
    /// (`warmpool.io/injected`): the webhook has been reachable since.
    last_steered: HashMap<String, jiff::Timestamp>,
    /// Namespaces known not to be tenants: their pods are not kept.
    outside: std::collections::HashSet<String>,
}

impl PodIndex {
    /// An index that also tells which pods the webhook never steered.
    pub fn judging(rules: Rules) -> PodIndex {
        PodIndex {
            rules: Some(rules),
            ..PodIndex::default()
        }
    }

    /// Applies one watch event; true when a summary changed (a pod's start alone, its
    /// readiness say, does not count: the desired objects do not depend on it).
    pub fn apply(&mut self, event: watcher::Event<SlimPod>) -> bool {
        match event {
            watcher::Event::Apply(pod) if self.is_outside(&pod) => {
                self.apply(watcher::Event::Delete(pod))
            }
            watcher::Event::Apply(pod) => {
                let Some((ns, name)) = key(&pod) else {
                    return false;
                };
                self.note_steered(&pod);
                let entry = Entry::of(&pod, self.rules.as_ref());
                let summary = entry.summary.clone();
                let pods = self.by_namespace.entry(ns).or_default();
                pods.insert(name, entry).map(|e| e.summary) != Some(summary)
            }
            watcher::Event::Delete(pod) => {
                let Some((ns, name)) = key(&pod) else {
                    return false;
                };
                let Some(pods) = self.by_namespace.get_mut(&ns) else {
                    return false;
                };
                let removed = pods.remove(&name).is_some();
                if pods.is_empty() {
                    self.by_namespace.remove(&ns);
                    self.last_steered.remove(&ns);
                }
                removed
            }
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(pod) if self.is_outside(&pod) => false,
            watcher::Event::InitApply(pod) => {
                self.note_steered(&pod);
                let entry = Entry::of(&pod, self.rules.as_ref());
                if let (Some(buffer), Some((ns, name))) = (self.relisting.as_mut(), key(&pod)) {
                    buffer.entry(ns).or_default().insert(name, entry);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(buffer) = self.relisting.take() {
                    self.by_namespace = buffer;
                    let by_namespace = &self.by_namespace;
                    self.last_steered
                        .retain(|ns, _| by_namespace.contains_key(ns));
                }
                self.synced = true;
                true
            }
        }
    }

    fn is_outside(&self, pod: &SlimPod) -> bool {
        pod.metadata
            .namespace
            .as_ref()
            .is_some_and(|ns| self.outside.contains(ns))
    }

    /// Whether `namespace` is a tenant now. Not one: its pods are dropped, and from now on not
    /// kept. One again after its pods were dropped: true, the pods must be listed again (a
    /// watcher restart) to have them back.
    pub fn set_tenant(&mut self, namespace: &str, tenant: bool) -> bool {
        if tenant {
            return self.outside.remove(namespace);
        }
        if !self.outside.contains(namespace) {
            self.outside.insert(namespace.to_owned());
            self.by_namespace.remove(namespace);
            self.last_steered.remove(namespace);
            if let Some(buffer) = self.relisting.as_mut() {
                buffer.remove(namespace);
            }
        }
        false
    }

    /// A namespace deleted: nothing is known of it any more.
    pub fn forget_namespace(&mut self, namespace: &str) {
        self.outside.remove(namespace);
    }

    /// True once the first complete list has been received.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PodSummary> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|pods| pods.values().map(|e| &e.summary))
    }

    /// Notes a pod the webhook steered: its annotation, and (when judging) the pool's placement,
    /// since anyone may write the annotation.
    fn note_steered(&mut self, pod: &SlimPod) {
        let steered = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::core::mutation::INJECTED_ANNOTATION))
            && self.rules.as_ref().is_none_or(|r| !is_unsteered(pod, r));
        if let (true, Some(created), Some(ns)) = (
            steered,
            pod.metadata.creation_timestamp.as_ref(),
            pod.metadata.namespace.as_ref(),
        ) {
            match self.last_steered.get_mut(ns) {
                Some(newest) => *newest = (*newest).max(created.0),
                None => {
                    self.last_steered.insert(ns.clone(), created.0);
                }
            }
        }
    }

    /// The creation of the newest pod the webhook steered in one of `namespaces`: evidence it
    /// was reachable then.
    pub fn last_steered_in<'a>(
        &self,
        namespaces: impl IntoIterator<Item = &'a str>,
    ) -> Option<jiff::Timestamp> {
        namespaces
            .into_iter()
            .filter_map(|ns| self.last_steered.get(ns).copied())
            .max()
    }

    /// The namespace's pods that the webhook never steered, by name.
    pub fn unsteered_in(&self, namespace: &str) -> Vec<(&str, &Unsteered)> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|pods| {
                pods.iter()
                    .filter_map(|(n, e)| Some((n.as_str(), e.unsteered.as_deref()?)))
            })
            .collect()
    }

    /// The namespace's pods by name, as their tenant's start sees them.
    pub fn starts_in(&self, namespace: &str) -> Vec<(&str, &PodStart)> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|pods| pods.iter().map(|(n, e)| (n.as_str(), &e.start)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }
}

fn key(pod: &SlimPod) -> Option<(String, String)> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

/// Where the prewarmer's slot came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotSource {
    /// `prewarmer.slot: {cpu, memory}`.
    Configured,
    /// `prewarmer.slot: auto`, the largest tenant (resource by resource) observed.
    Auto,
    /// `prewarmer.slot: auto` with no tenant pod (or no requests) observed yet: the default slot.
    AutoFallback,
}

/// The inputs of the desired objects, derived from the configuration and the caches.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The namespaces that are tenants now.
    pub tenants: BTreeSet<String>,
    /// The images the cache should hold, in the order the DaemonSet lists them.
    pub images: Vec<String>,
    /// Images tenants run that the cache leaves out, by reason ([`LeftOut`]).
    pub left_out: BTreeMap<LeftOut, u32>,
    pub slot: SlotResources,
    pub slot_source: SlotSource,
    /// `slot: auto` cut down to fit on the largest warm node.
    pub slot_capped: bool,
}

/// Reduces namespaces (name, what the tenant rule reads of their labels), the pod index and the warm nodes to [`Observed`];
/// `previous` (the last observation) holds `slot: auto` steady within its hysteresis.
pub fn reduce<'a>(
    config: &Config,
    selector: &TenantSelector,
    namespaces: impl IntoIterator<Item = (&'a str, LabelFacts<'a>)>,
    pods: &PodIndex,
    nodes: &NodeIndex,
    previous: Option<&Observed>,
) -> Observed {
    let tenants: BTreeSet<String> = namespaces
        .into_iter()
        .filter(|&(name, facts)| selector.is_tenant_by_facts(name, facts))
        .map(|(name, _)| name.to_owned())
        .collect();

    let mut usage = ImageUsage::default();
    if config.image_cache.discover {
        let discovery = discovery(config);
        for ns in &tenants {
            usage.add_namespace(pods.pods_in(ns).map(|p| &*p.images), &discovery);
            usage.add_unusable(pods.pods_in(ns).map(|p| u32::from(p.unusable)).sum());
        }
    }
    let sizes = nodes.image_sizes();
    let size_of = |image: &str| sizes.get(image).copied();
    let selection = cache_images(config, &usage, &size_of);

    let (slot, slot_source, slot_capped) = match &config.prewarmer.slot {
        Slot::Fixed(fixed) => (fixed.clone(), SlotSource::Configured, false),
        Slot::Auto => {
            let per_tenant: Vec<Requests> = tenants
                .iter()
                .map(|ns| {
                    pods.pods_in(ns)
                        .filter(|p| p.scheduled)
                        .fold(Requests::ZERO, |sum, p| sum.saturating_add(p.requests))
                })
                .filter(|r| *r != Requests::ZERO)
                .collect();
            let source = if per_tenant.is_empty() {
                SlotSource::AutoFallback
            } else {
                SlotSource::Auto
            };
            let mut target = slot::auto_slot(per_tenant, &fallback_slot());
            if let Some(max) = &config.prewarmer.slot_max {
                target = target.min(slot::slot_requests(max));
            }
            let current = previous.map(|p| slot::slot_requests(&p.slot));
            let (next, capped) = slot::auto_slot_step(current, target, nodes.allocatable());
            (next.to_slot(), source, capped)
        }
    };

    Observed {
        tenants,
        images: selection.images,
        left_out: selection.left_out,
        slot,
        slot_source,
        slot_capped,
    }
}

/// The default slot (640m, 2150Mi): `slot: auto` before any tenant pod is seen.
fn fallback_slot() -> Requests {
    slot::slot_requests(&SlotResources::default())
}

/// What discovery may take, from `imageCache`.
fn discovery(config: &Config) -> Discovery {
    Discovery {
        per_namespace: usize::try_from(config.image_cache.discover_per_namespace)
            .unwrap_or(usize::MAX),
        registries: config.image_cache.discover_registries.clone(),
    }
}

/// The images the cache holds: the configured ones and (with `imageCache.discover`) the
/// discovered ones, within `imageCache.maxImages` and `imageCache.maxBytesPerNode`
/// ([`select_images`]).
pub fn cache_images(
    config: &Config,
    discovered: &ImageUsage,
    size_of: &dyn Fn(&str) -> Option<u64>,
) -> Selection {
    let none = ImageUsage::default();
    let usage = if config.image_cache.discover {
        discovered
    } else {
        &none
    };
    let limits = Limits {
        max_images: usize::try_from(config.image_cache.max_images).unwrap_or(usize::MAX),
        bytes_per_node: config
            .image_cache
            .max_bytes_per_node
            .as_ref()
            .and_then(bytes),
        size_of,
    };
    select_images(&config.image_cache.images, usage, limits)
}

/// A validated quantity in bytes (rounded down).
fn bytes(q: &Quantity) -> Option<u64> {
    let parsed: kube_quantity::ParsedQuantity = q.try_into().ok()?;
    let bytes = parsed.to_bytes_f64()?;
    // Saturating, and whole bytes.
    Some(bytes as u64)
}

/// What the reconciler would observe with no cluster: no tenant, the configured images plus
/// `discovered` (each as if one tenant ran it), and the configured slot or, for `slot: auto`,
/// the default one (`warmpool render`).
pub fn offline(config: &Config, discovered: &[String]) -> Observed {
    let mut usage = ImageUsage::default();
    let discovery = discovery(config);
    for image in discovered {
        match discoverable(image) {
            Some(image) => usage.add_namespace([std::slice::from_ref(&image)], &discovery),
            None => usage.add_unusable(1),
        }
    }
    let (slot, slot_source) = match &config.prewarmer.slot {
        Slot::Fixed(fixed) => (fixed.clone(), SlotSource::Configured),
        Slot::Auto => (fallback_slot().to_slot(), SlotSource::AutoFallback),
    };
    let selection = cache_images(config, &usage, &|_| None);
    Observed {
        tenants: BTreeSet::new(),
        images: selection.images,
        left_out: selection.left_out,
        slot,
        slot_source,
        slot_capped: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces by name and tenant label, matching any label requirements.
    fn facts<'a>(namespaces: Vec<(&'a str, Option<&'a str>)>) -> Vec<(&'a str, LabelFacts<'a>)> {
        namespaces
            .into_iter()
            .map(|(name, tenant_label)| {
                let facts = LabelFacts {
                    tenant_label,
                    unmatched: false,
                };
                (name, facts)
            })
            .collect()
    }
    use crate::core::tenant::{DISABLED, ENABLED};
    use serde_json::json;

    /// A running pod: bound to a node, every container has its image (`imageID`).
    fn pod(ns: &str, name: &str, mut spec: serde_json::Value) -> SlimPod {
        if spec.get("nodeName").is_none() {
            spec["nodeName"] = json!("node-1");
        }
        let statuses = |key: &str| -> serde_json::Value {
            spec[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "sha256:1"}))
                .collect()
        };
        let status = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": statuses("initContainers"),
            "containerStatuses": statuses("containers"),
        });
        with_status(ns, name, spec, status)
    }

    fn with_status(
        ns: &str,
        name: &str,
        spec: serde_json::Value,
        status: serde_json::Value,
    ) -> SlimPod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "managedFields": [{"manager": "kubectl"}]},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn app(image: &str, cpu: &str, memory: &str) -> serde_json::Value {
        json!({
            "name": "c",
            "image": image,
            "env": [{"name": "A", "value": "b"}],
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": "8Gi"}},
        })
    }

    #[test]
    fn a_full_pod_is_read_into_a_slim_summary() {
        let p = pod(
            "demo-1",
            "web",
            json!({
                "volumes": [{"name": "v", "emptyDir": {}}],
                "initContainers": [app("agent:1", "500m", "64Mi"), app("web:1", "10m", "1Mi")],
                "containers": [app("web:1", "100m", "128Mi"), app("sidecar:2", "50m", "64Mi")],
            }),
        );
        let summary = PodSummary::of(&p);
        assert_eq!(summary.unusable, 0);
        assert_eq!(
            &*summary.images,
            [
                "docker.io/library/agent:1",
                "docker.io/library/web:1",
                "docker.io/library/sidecar:2"
            ],
            "canonical, and `web:1` twice is one image"
        );
        assert_eq!(
            summary.requests,
            Requests {
                cpu_millis: 500,
                memory_bytes: 192 * 1024 * 1024
            }
        );
    }

    fn named(name: &str, image: &str) -> serde_json::Value {
        json!({"name": name, "image": image})
    }

    #[test]
    fn only_images_the_pod_s_own_containers_run_are_discovered() {
        let spec = json!({
            "initContainers": [named("init", "agent:1")],
            "containers": [named("web", "web:1"), named("typo", "wbe:1"), named("new", "new:1")],
        });
        // Pending, nothing pulled yet: nothing.
        let pending = with_status("demo-1", "p", spec.clone(), json!({"phase": "Pending"}));
        assert!(PodSummary::of(&pending).images.is_empty());
        // `typo` cannot be pulled (ImagePullBackOff: no imageID), `new` is still pulling.
        let status = json!({
            "phase": "Pending",
            "initContainerStatuses": [{"name": "init", "imageID": "sha256:a", "image": "agent:1"}],
            "containerStatuses": [
                {"name": "web", "imageID": "sha256:b", "image": "web:1"},
                {"name": "typo", "imageID": "", "image": "wbe:1",
                 "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                {"name": "new", "image": "new:1", "state": {"waiting": {"reason": "ContainerCreating"}}},
            ],
        });
        let partial = with_status("demo-1", "p", spec.clone(), status);
        assert_eq!(
            &*PodSummary::of(&partial).images,
            ["docker.io/library/agent:1", "docker.io/library/web:1"]
        );
        // A pod with pull secrets may run private images: nothing is taken from it.
        let mut secret_spec = spec.clone();
        secret_spec["imagePullSecrets"] = json!([{"name": "mine"}]);
        let mut private = pod("demo-1", "p", secret_spec);
        private.status = partial.status.clone();
        assert!(PodSummary::of(&private).images.is_empty());
    }

    #[test]
    fn what_one_pod_can_make_discovery_hold_is_bounded() {
        let huge = format!("ghcr.io/{}:1", "a".repeat(2 << 20));
        let mut containers = vec![
            named("long", &huge),
            named("bad", "Not/An:image:ref"),
            named("dup", "web:1"),
            named("dup-spelling", "docker.io/library/web:1"),
        ];
        containers.extend((0..40).map(|i| named(&format!("c{i}"), &format!("img{i}:1"))));
        let p = pod("demo-1", "p", json!({"containers": containers}));
        let summary = PodSummary::of(&p);
        assert_eq!(summary.images.len(), MAX_IMAGES_PER_POD);
        assert_eq!(summary.images[0], "docker.io/library/web:1");
        assert!(summary.images.iter().all(|i| i.len() < 64));
        // The huge and bad references, and the 9 images past the 32nd (web:1 once, img0..img30).
        assert_eq!(summary.unusable, 2 + 9);
    }

    #[test]
    fn only_tenants_pods_are_kept_and_a_new_tenant_asks_for_a_relist() {
        let p =
            |ns: &str, name: &str| pod(ns, name, json!({"containers": [app("x:1", "1", "1Mi")]}));
        let mut idx = index(vec![p("demo-1", "a"), p("other", "a"), p("unknown", "a")]);
        assert_eq!(idx.len(), 3, "kept until the namespaces are known");
        assert!(!idx.set_tenant("demo-1", true));
        assert!(!idx.set_tenant("other", false));
        assert_eq!(idx.len(), 2, "the non-tenant's pods dropped");
        // From now on not kept, in an update or a relist.
        assert!(!idx.apply(watcher::Event::Apply(p("other", "b"))));
        idx.apply(watcher::Event::Init);
        idx.apply(watcher::Event::InitApply(p("other", "c")));
        idx.apply(watcher::Event::InitApply(p("demo-1", "a")));
        idx.apply(watcher::Event::InitDone);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.pods_in("other").count(), 0);
        // A tenant now: its pods must be listed again.
        assert!(idx.set_tenant("other", true));
        assert!(!idx.set_tenant("other", true), "once");
        assert!(idx.apply(watcher::Event::Apply(p("other", "b"))));
        // Deleted namespaces leave nothing behind.
        idx.set_tenant("gone", false);
        idx.forget_namespace("gone");
        assert!(!idx.set_tenant("gone", true));
    }

    #[test]
    fn the_webhook_is_back_only_on_the_evidence_of_the_namespaces_asked_about() {
        let steered = |ns: &str, name: &str, created: &str| {
            let mut p = pod(ns, name, json!({"containers": [app("x:1", "1", "1Mi")]}));
            p.metadata.annotations = Some(BTreeMap::from([(
                crate::core::mutation::INJECTED_ANNOTATION.to_owned(),
                "node-affinity".to_owned(),
            )]));
            p.metadata.creation_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()),
            );
            p
        };
        let mut idx = index(vec![
            steered("demo-1", "a", "2026-12-07T10:00:00Z"),
            // Anyone can write the annotation on a pod of a namespace the webhook never sees.
            steered("elsewhere", "forged", "2026-12-07T11:00:00Z"),
        ]);
        let at = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        assert_eq!(idx.last_steered_in(["demo-1"]), at("2026-12-07T10:00:00Z"));
        assert_eq!(
            idx.last_steered_in(["demo-1", "demo-2"]),
            at("2026-12-07T10:00:00Z")
        );
        assert_eq!(idx.last_steered_in(["demo-2"]), None);
        // A namespace without pods keeps no entry.
        idx.apply(watcher::Event::Delete(steered(
            "elsewhere",
            "forged",
            "2026-12-07T11:00:00Z",
        )));
        assert_eq!(idx.last_steered_in(["elsewhere"]), None);
    }

    fn index(pods: Vec<SlimPod>) -> PodIndex {
        let mut idx = PodIndex::default();
        idx.apply(watcher::Event::Init);
        for p in pods {
            idx.apply(watcher::Event::InitApply(p));
        }
        assert!(idx.apply(watcher::Event::InitDone));
        idx
    }

    #[test]
    fn the_index_follows_the_watch_protocol() {
        let mut idx = PodIndex::default();
        assert!(!idx.is_synced());
        idx.apply(watcher::Event::Init);
        idx.apply(watcher::Event::InitApply(pod(
            "a",
            "p1",
            json!({"containers": [app("x:1", "1", "1Mi")]}),
        )));
        assert!(idx.is_empty(), "nothing is visible before InitDone");
        idx.apply(watcher::Event::InitDone);
        assert!(idx.is_synced());
        assert_eq!(idx.len(), 1);

        let p2 = pod("a", "p2", json!({"containers": [app("y:1", "1", "1Mi")]}));
        assert!(idx.apply(watcher::Event::Apply(p2.clone())));
        assert!(
            !idx.apply(watcher::Event::Apply(p2.clone())),
            "an unchanged pod changes nothing"
        );
        assert_eq!(idx.len(), 2);
        assert!(idx.apply(watcher::Event::Delete(p2.clone())));
        assert!(!idx.apply(watcher::Event::Delete(p2)));
        assert_eq!(idx.len(), 1);

        // A re-list replaces everything at InitDone: p1 is gone, p3 appears.
        idx.apply(watcher::Event::Init);
        idx.apply(watcher::Event::InitApply(pod(
            "b",
            "p3",
            json!({"containers": [app("z:1", "1", "1Mi")]}),
        )));
        assert_eq!(idx.pods_in("a").count(), 1);
        idx.apply(watcher::Event::InitDone);
        assert_eq!(idx.pods_in("a").count(), 0);
        assert_eq!(idx.pods_in("b").count(), 1);
    }

    #[test]
    fn tenants_images_and_the_auto_slot() {
        let mut config = Config::from_yaml(
            "prewarmer: {slot: auto}\nimageCache: {images: ['configured:1'], maxImages: 3}",
        )
        .unwrap();
        let selector =
            TenantSelector::new(&config.tenants.namespace_patterns, Some("warmpool")).unwrap();
        let pods = index(vec![
            pod(
                "demo-1",
                "a",
                json!({"containers": [app("web:1", "300m", "1Gi"), app("db:1", "300m", "1Gi")]}),
            ),
            pod(
                "demo-1",
                "b",
                json!({"containers": [app("web:1", "100m", "100Mi")]}),
            ),
            pod(
                "demo-2",
                "a",
                json!({"containers": [app("big:1", "100m", "4Gi")]}),
            ),
            pod(
                "demo-3",
                "a",
                json!({"containers": [app("optout:1", "64", "64Gi")]}),
            ),
            pod(
                "default",
                "a",
                json!({"containers": [app("other:1", "64", "64Gi")]}),
            ),
        ]);
        let namespaces = facts(vec![
            ("demo-1", None),
            ("demo-2", None),
            ("demo-3", Some(DISABLED)),
            ("default", None),
            ("payments", Some(ENABLED)),
            ("warmpool", Some(ENABLED)),
        ]);
        let nodes = NodeIndex::synced_empty();
        let got = reduce(&config, &selector, namespaces.clone(), &pods, &nodes, None);
        assert_eq!(
            got.tenants.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["demo-1", "demo-2", "payments"]
        );
        // configured first, then web:1 (one tenant, 2 pods), then the big:1/db:1 tie (one tenant,
        // one pod each) → big:1 by name; the
        // opted-out and non-tenant namespaces' images are not discovered; sorted, and in their
        // canonical form.
        assert_eq!(
            got.images,
            vec![
                "docker.io/library/big:1",
                "docker.io/library/configured:1",
                "docker.io/library/web:1"
            ]
        );
        // demo-1: 700m / 2148Mi; demo-2: 100m / 4096Mi → per resource 700m / 4096Mi.
        assert_eq!(got.slot_source, SlotSource::Auto);
        assert_eq!(got.slot.cpu, Quantity("700m".into()));
        assert_eq!(got.slot.memory, Quantity("4096Mi".into()));

        config.image_cache.discover = false;
        config.prewarmer.slot = Slot::Fixed(SlotResources::default());
        let fixed = reduce(&config, &selector, namespaces, &pods, &nodes, None);
        assert_eq!(fixed.images, vec!["docker.io/library/configured:1"]);
        assert_eq!(fixed.slot, SlotResources::default());
        assert_eq!(fixed.slot_source, SlotSource::Configured);
    }

    #[test]
    fn the_auto_slot_counts_scheduled_pods_only_and_stays_under_its_max() {
        let mut config = Config::from_yaml("prewarmer: {slot: auto}").unwrap();
        let selector = TenantSelector::new(&config.tenants.namespace_patterns, None).unwrap();
        let mut pending = pod(
            "demo-1",
            "huge",
            json!({"containers": [app("x:1", "64", "256Gi")]}),
        );
        pending.spec.node_name = None;
        let pods = index(vec![
            pending,
            pod(
                "demo-2",
                "a",
                json!({"containers": [app("x:1", "1500m", "3Gi")]}),
            ),
        ]);
        let namespaces = facts(vec![("demo-1", None), ("demo-2", None)]);
        let nodes = NodeIndex::synced_empty();
        let got = reduce(&config, &selector, namespaces.clone(), &pods, &nodes, None);
        // A pod that never schedules (64 CPUs) does not size the placeholders.
        assert_eq!(got.slot.cpu, Quantity("1500m".into()));
        assert_eq!(got.slot.memory, Quantity("3072Mi".into()));
        config.prewarmer.slot_max = Some(SlotResources {
            cpu: Quantity("1".into()),
            memory: Quantity("8Gi".into()),
        });
        let capped = reduce(&config, &selector, namespaces, &pods, &nodes, None);
        assert_eq!(capped.slot.cpu, Quantity("1000m".into()));
        assert_eq!(capped.slot.memory, Quantity("3072Mi".into()));
    }

    #[test]
    fn the_auto_slot_falls_back_to_the_default_without_tenant_pods() {
        let config = Config::from_yaml("prewarmer: {slot: auto}").unwrap();
        let selector = TenantSelector::new(&config.tenants.namespace_patterns, None).unwrap();
        let got = reduce(
            &config,
            &selector,
            facts(vec![("demo-1", None)]),
            &PodIndex::default(),
            &NodeIndex::synced_empty(),
            None,
        );
        assert_eq!(got.slot_source, SlotSource::AutoFallback);
        assert_eq!(got.slot, SlotResources::default());
    }

    fn warm_nodes(nodes: &[(&str, &str, &str)]) -> NodeIndex {
        let mut index = NodeIndex::default();
        index.apply(watcher::Event::Init);
        for (name, cpu, memory) in nodes {
            let node = serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": cpu, "memory": memory}},
            }))
            .unwrap();
            index.apply(watcher::Event::InitApply(node));
        }
        index.apply(watcher::Event::InitDone);
        index
    }

    #[test]
    fn the_auto_slot_fits_the_largest_warm_node_and_holds_within_its_hysteresis() {
        let config = Config::from_yaml("prewarmer: {slot: auto}").unwrap();
        let selector = TenantSelector::new(&config.tenants.namespace_patterns, None).unwrap();
        let tenant = |cpu: &str| {
            index(vec![pod(
                "demo-1",
                "a",
                json!({"containers": [app("web:1", cpu, "3Gi")]}),
            )])
        };
        let nodes = warm_nodes(&[("small", "1930m", "7Gi"), ("large", "3920m", "15Gi")]);
        let observe_with = |pods: &PodIndex, previous: Option<&Observed>| {
            reduce(
                &config,
                &selector,
                facts(vec![("demo-1", None)]),
                pods,
                &nodes,
                previous,
            )
        };
        // 6 CPUs asked, the largest warm node has 3.92: one placeholder no node could hold is
        // never asked for.
        let first = observe_with(&tenant("6"), None);
        assert_eq!(first.slot.cpu, Quantity("3920m".into()));
        assert_eq!(first.slot.memory, Quantity("3072Mi".into()));
        assert!(first.slot_capped);
        // The tenant shrinks to 3.7 CPUs (6 % below the slot): the slot stays.
        let held = observe_with(&tenant("3700m"), Some(&first));
        assert_eq!(held.slot, first.slot);
        assert!(!held.slot_capped);
        // To 3 CPUs (23 % below): it follows.
        let moved = observe_with(&tenant("3"), Some(&held));
        assert_eq!(moved.slot.cpu, Quantity("3000m".into()));
    }

    #[test]
    fn offline_there_are_the_configured_and_given_images_and_the_configured_slot() {
        let config = Config::from_yaml("imageCache: {images: ['b:1'], maxImages: 3}").unwrap();
        let got = offline(
            &config,
            &["c:1".into(), "a:1".into(), "b:1".into(), "d:1".into()],
        );
        assert!(got.tenants.is_empty());
        assert_eq!(
            got.images,
            vec![
                "docker.io/library/a:1",
                "docker.io/library/b:1",
                "docker.io/library/c:1"
            ]
        );
        assert_eq!(got.slot, SlotResources::default());
        assert_eq!(got.slot_source, SlotSource::Configured);
        let config = Config::from_yaml(
            "prewarmer: {slot: auto}\nimageCache: {images: ['b:1'], discover: false}",
        )
        .unwrap();
        let got = offline(&config, &["c:1".into()]);
        assert_eq!(
            got.images,
            vec!["docker.io/library/b:1"],
            "discovery off: nothing discovered"
        );
        assert_eq!(got.slot_source, SlotSource::AutoFallback);
        assert_eq!(got.slot, SlotResources::default());
    }
}
