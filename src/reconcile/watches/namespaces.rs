//! The namespaces as the reconciler keeps them: every namespace of the cluster, so the few facts
//! it reads and nothing else.
//!
//! A namespace's metadata as a `PartialObjectMeta` costs ~2 KiB in the cache even cut down to
//! the tenant label and the time-to-Ready annotation: each of the two one-entry `BTreeMap`s
//! allocates a whole B-tree leaf (~0.5 KiB), and the owners of the label are
//! `ManagedFieldsEntry`s of seven fields (heaptrack: 8.9 MiB for 3,000 namespaces while the
//! owners still kept their field sets). A
//! [`CachedNamespace`] keeps the name, uid, resourceVersion and timestamps in its
//! [`ObjectMeta`] (what kube's store, the Events and the conditional writes need), and the rest
//! decided at once: the tenant label's value, who owns it, whether the time to Ready was
//! measured.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use crate::core::enrolment::{LabelOwners, label_owners};
use crate::core::tenant::{LabelFacts, TENANT_LABEL, TenantSelector};
use crate::core::tenant_ready::START;

/// One namespace in the reconciler's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedNamespace {
    /// Name, uid, resourceVersion, creation and deletion timestamps only.
    metadata: ObjectMeta,
    tenant_label: Option<Box<str>>,
    /// The labels fail `tenants.namespaceMatchExpressions` (the one thing read of the others).
    unmatched: bool,
    owners: LabelOwners,
    measured: bool,
}

impl CachedNamespace {
    /// Reduces a namespace's metadata to what `selector` reads of it; `field_manager` is this
    /// installation's, by which the owners of the tenant label are told apart.
    pub fn new(
        ns: PartialObjectMeta<Namespace>,
        selector: &TenantSelector,
        field_manager: &str,
    ) -> Self {
        let meta = ns.metadata;
        let unmatched = selector
            .facts(meta.labels.as_ref().unwrap_or(&BTreeMap::new()))
            .unmatched;
        Self {
            unmatched,
            owners: label_owners(
                meta.managed_fields.as_deref().unwrap_or_default(),
                field_manager,
            ),
            tenant_label: meta
                .labels
                .and_then(|mut labels| labels.remove(TENANT_LABEL))
                .map(String::into_boxed_str),
            measured: meta
                .annotations
                .is_some_and(|annotations| annotations.contains_key(START)),
            metadata: ObjectMeta {
                name: meta.name,
                uid: meta.uid,
                resource_version: meta.resource_version,
                creation_timestamp: meta.creation_timestamp,
                deletion_timestamp: meta.deletion_timestamp,
                ..ObjectMeta::default()
            },
        }
    }

    /// The watch event of a namespace, reduced.
    pub fn event(
        event: watcher::Event<PartialObjectMeta<Namespace>>,
        selector: &TenantSelector,
        field_manager: &str,
    ) -> watcher::Event<Self> {
        use watcher::Event::*;
        let cached = |ns| Self::new(ns, selector, field_manager);
        match event {
            Apply(ns) => Apply(cached(ns)),
            Delete(ns) => Delete(cached(ns)),
            InitApply(ns) => InitApply(cached(ns)),
            Init => Init,
            InitDone => InitDone,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The value of `warmpool.io/tenant`, if the namespace has the label.
    pub fn tenant_label(&self) -> Option<&str> {
        self.tenant_label.as_deref()
    }

    /// What the tenant rule reads of the namespace's labels.
    pub fn label_facts(&self) -> LabelFacts<'_> {
        LabelFacts {
            tenant_label: self.tenant_label(),
            unmatched: self.unmatched,
        }
    }

    /// Who owns the tenant label, as this installation sees them.
    pub fn label_owners(&self) -> LabelOwners {
        self.owners
    }

    /// Whether the namespace carries the annotation of a measured time to Ready.
    pub fn measured(&self) -> bool {
        self.measured
    }

    pub fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// A namespace, to kube's store, its controller and its Event recorder.
impl Resource for CachedNamespace {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Namespace::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Namespace::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Namespace::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        Namespace::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Namespace::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use kube::runtime::reflector::ObjectRef;
    use serde_json::json;

    use super::*;

    /// Tenants are `demo-*` namespaces of team `a`.
    fn selector() -> TenantSelector {
        let tenants: crate::config::Tenants = serde_json::from_value(json!({
            "namespacePatterns": ["demo-*"],
            "namespaceMatchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}],
        }))
        .unwrap();
        tenants.selector(Some("warmpool")).unwrap()
    }

    const OURS: &str = "warmpool@warmpool-system";

    fn namespace(metadata: serde_json::Value) -> PartialObjectMeta<Namespace> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": metadata,
        }))
        .unwrap()
    }

    fn full() -> PartialObjectMeta<Namespace> {
        namespace(json!({
            "name": "demo-1",
            "uid": "6f1c2a4e-0000-4000-8000-000000000001",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "labels": {
                "kubernetes.io/metadata.name": "demo-1",
                "warmpool.io/tenant": "enabled",
                "team": "a",
            },
            "annotations": {START: "warm", "warmpool.io/ready-seconds": "11.2", "note": "x"},
            "managedFields": [
                {"manager": "kubectl-create", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}},
                {"manager": OURS, "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:warmpool.io/tenant": {}}}}},
            ],
        }))
    }

    #[test]
    fn keeps_the_facts_the_reconciler_reads() {
        let ns = CachedNamespace::new(full(), &selector(), OURS);
        assert_eq!(ns.name(), "demo-1");
        assert_eq!(ns.tenant_label(), Some("enabled"));
        assert!(!ns.label_facts().unmatched, "team=a matches");
        assert_eq!(
            ns.label_owners(),
            LabelOwners {
                ours: true,
                ..LabelOwners::default()
            }
        );
        assert!(ns.measured());
        assert!(!ns.terminating());
        // What the store, the conditional writes and the Events read.
        assert_eq!(
            ns.uid().as_deref(),
            Some("6f1c2a4e-0000-4000-8000-000000000001")
        );
        assert_eq!(ns.resource_version().as_deref(), Some("4711"));
        assert!(ns.creation_timestamp().is_some());
        // And nothing else.
        assert!(ns.metadata.labels.is_none() && ns.metadata.annotations.is_none());
        assert!(ns.metadata.managed_fields.is_none());
    }

    #[test]
    fn a_plain_namespace_has_no_label_no_owner_and_no_measure() {
        let ns = CachedNamespace::new(
            namespace(json!({
                "name": "team-a",
                "labels": {"kubernetes.io/metadata.name": "team-a"},
                "deletionTimestamp": "2026-12-01T10:00:00Z",
            })),
            &selector(),
            OURS,
        );
        assert_eq!(ns.tenant_label(), None);
        // No `team` label: outside the label requirements, and that is all that is kept of it.
        assert!(ns.label_facts().unmatched);
        assert_eq!(ns.label_owners(), LabelOwners::default());
        assert!(!ns.measured());
        assert!(ns.terminating());
    }

    #[test]
    fn is_a_namespace_to_kube() {
        let ns = CachedNamespace::new(full(), &selector(), OURS);
        let reference = ns.object_ref(&());
        assert_eq!(reference.kind.as_deref(), Some("Namespace"));
        assert_eq!(reference.api_version.as_deref(), Some("v1"));
        assert_eq!(reference.name.as_deref(), Some("demo-1"));
        assert_eq!(reference.uid, ns.uid());
        assert_eq!(
            ObjectRef::from_obj(&ns),
            ObjectRef::<CachedNamespace>::new("demo-1")
        );
        assert_eq!(CachedNamespace::url_path(&(), None), "/api/v1/namespaces");
    }

    #[test]
    fn events_keep_their_kind() {
        let applied = CachedNamespace::event(watcher::Event::Apply(full()), &selector(), OURS);
        assert!(matches!(applied, watcher::Event::Apply(ns) if ns.name() == "demo-1"));
        let deleted = CachedNamespace::event(watcher::Event::Delete(full()), &selector(), OURS);
        assert!(matches!(deleted, watcher::Event::Delete(_)));
        let listed = CachedNamespace::event(watcher::Event::InitApply(full()), &selector(), OURS);
        assert!(matches!(listed, watcher::Event::InitApply(_)));
        assert!(matches!(
            CachedNamespace::event(watcher::Event::Init, &selector(), OURS),
            watcher::Event::Init
        ));
        assert!(matches!(
            CachedNamespace::event(watcher::Event::InitDone, &selector(), OURS),
            watcher::Event::InitDone
        ));
    }
}
