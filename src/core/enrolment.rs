//! Enrolment, both ways: which namespaces get the `warmpool.io/tenant=enabled` label, and which
//! lose it again. Pure.
//!
//! warmpool tells its own label from a person's by server-side-apply field ownership, which the
//! API server keeps in the namespace's `managedFields` (so it survives restarts and needs no
//! marker of its own): warmpool writes the label by an *apply* with the field manager
//! [`field_manager`] (`warmpool@<its namespace>`: one per installation, so that two
//! installations, or the test runs sharing a cluster, never take each other's enrolments back).
//! A person's `kubectl label` is another manager (`kubectl-label`), and so is a manifest that
//! sets the label. To un-enrol, warmpool applies the namespace *without* the label: the API
//! server then removes the label only if no other manager owns it too, so a person's label can
//! never be removed, even in a race.
//!
//! warmpool 0.1.0 enrolled with the field manager `warmpool` ([`LEGACY_FIELD_MANAGER`]); such a
//! label counts as warmpool's and is released the same way.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use crate::core::tenant::{ENABLED, LabelFacts, Membership, TENANT_LABEL, TenantSelector};

/// The field manager of the 0.1.0 enrolment label (also the manager of every workload apply).
pub const LEGACY_FIELD_MANAGER: &str = crate::core::names::FIELD_MANAGER;

/// The field manager that owns the labels this installation wrote: `warmpool@<namespace>`.
pub fn field_manager(own_namespace: &str) -> String {
    format!("{}@{own_namespace}", crate::core::names::FIELD_MANAGER)
}

/// Who owns the tenant label of one namespace, read from its `managedFields`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelOwners {
    /// This installation's field manager (an apply).
    pub ours: bool,
    /// 0.1.0's field manager `warmpool` (an apply).
    pub legacy: bool,
    /// Anyone else: a person, a manifest, another installation.
    pub others: bool,
}

/// The field of the tenant label in a `FieldsV1` set.
const TENANT_LABEL_FIELD: &str = "f:warmpool.io/tenant";

/// Whether a managedFields entry owns `metadata.labels["warmpool.io/tenant"]`.
fn owns_tenant_label(entry: &ManagedFieldsEntry) -> bool {
    entry
        .fields_v1
        .as_ref()
        .and_then(|f| {
            f.0.get("f:metadata")?
                .get("f:labels")?
                .get(TENANT_LABEL_FIELD)
        })
        .is_some()
}

/// Who owns the tenant label of a namespace, by its `managedFields`, as seen by the installation
/// whose field manager is `ours`. Entries that do not own the label are not counted.
pub fn label_owners(entries: &[ManagedFieldsEntry], ours: &str) -> LabelOwners {
    let mut who = LabelOwners::default();
    for entry in entries.iter().filter(|e| owns_tenant_label(e)) {
        let manager = entry.manager.as_deref().unwrap_or_default();
        let applied = entry.operation.as_deref() == Some("Apply");
        if applied && manager == ours {
            who.ours = true;
        } else if applied && manager == LEGACY_FIELD_MANAGER {
            who.legacy = true;
        } else {
            who.others = true;
        }
    }
    who
}

/// What the reconciler does to one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolment {
    /// Write `warmpool.io/tenant=enabled`: the name matches a pattern and the label is absent
    /// (or holds a value that neither opts in nor out).
    Enrol { pattern: String },
    /// Take back the `enabled` label that warmpool wrote: the name matches no pattern any more,
    /// and nobody but warmpool owns the label.
    Unenrol {
        /// Release this installation's ownership, 0.1.0's, or both.
        release_ours: bool,
        release_legacy: bool,
    },
    /// Nothing to write; `Membership` says why (already enabled, opted out, system, no match,
    /// or an `enabled` label that a person owns).
    Leave(Membership),
}

/// The label decision for a namespace, from its name, its tenant label and who owns the label.
///
/// A `disabled` label is never overwritten, system namespaces and warmpool's own are never
/// labelled (both come from [`TenantSelector::decide`]); a namespace labelled `enabled` already
/// needs nothing while it matches, and loses the label once it no longer does only if warmpool
/// alone owns it.
pub fn enrolment(
    selector: &TenantSelector,
    name: &str,
    facts: LabelFacts<'_>,
    owners: LabelOwners,
) -> Enrolment {
    match selector.decide_by_facts(name, facts) {
        Membership::MatchesPattern(pattern) => Enrolment::Enrol { pattern },
        Membership::OptedIn
            if selector.matching_pattern(name).is_none()
                && (owners.ours || owners.legacy)
                && !owners.others =>
        {
            Enrolment::Unenrol {
                release_ours: owners.ours,
                release_legacy: owners.legacy,
            }
        }
        // Excluded, or its labels no longer match, since warmpool enrolled it: the label goes
        // back too.
        Membership::Excluded | Membership::Unmatched
            if facts.tenant_label == Some(ENABLED)
                && (owners.ours || owners.legacy)
                && !owners.others =>
        {
            Enrolment::Unenrol {
                release_ours: owners.ours,
                release_legacy: owners.legacy,
            }
        }
        other => Enrolment::Leave(other),
    }
}

/// The server-side apply body that enrols `name`: only the one label, so that warmpool's field
/// manager owns nothing else on the namespace. `resource_version` makes the write conditional on
/// the namespace not having changed since it was read (a user who sets `disabled` in between
/// wins: the apply fails with a conflict and the next pass sees the opt-out).
pub fn enrolment_patch(name: &str, resource_version: Option<&str>) -> serde_json::Value {
    let mut body = release_patch(name, resource_version);
    body["metadata"]["labels"] = serde_json::json!({ TENANT_LABEL: ENABLED });
    body
}

/// The server-side apply body that un-enrols `name`: the namespace with no field at all, so
/// that the field manager it is sent with lets go of the label (removed unless someone else
/// owns it), guarded by `resource_version` like [`enrolment_patch`].
pub fn release_patch(name: &str, resource_version: Option<&str>) -> serde_json::Value {
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = serde_json::Value::String(rv.to_owned());
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tenant::DISABLED;

    const OURS: &str = "warmpool@warmpool-system";

    fn selector() -> TenantSelector {
        TenantSelector::new(&["demo-*".into()], Some("warmpool-system")).unwrap()
    }

    fn nobody() -> LabelOwners {
        LabelOwners::default()
    }

    fn ours() -> LabelOwners {
        LabelOwners {
            ours: true,
            ..LabelOwners::default()
        }
    }

    fn others() -> LabelOwners {
        LabelOwners {
            ours: true,
            others: true,
            ..LabelOwners::default()
        }
    }

    fn enabled() -> Option<&'static str> {
        Some(ENABLED)
    }

    /// A namespace's labels as the rule reads them, matching any label requirements.
    fn label(tenant_label: Option<&str>) -> LabelFacts<'_> {
        LabelFacts {
            tenant_label,
            unmatched: false,
        }
    }

    /// managedFields as the API server writes them (`kubectl get ns -o json --show-managed-fields`).
    fn entries(json: serde_json::Value) -> Vec<ManagedFieldsEntry> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_field_manager_names_the_installation() {
        assert_eq!(field_manager("warmpool-system"), OURS);
        assert_ne!(field_manager("other"), field_manager("warmpool-system"));
    }

    #[test]
    fn label_ownership_is_read_from_managed_fields() {
        let fields = entries(serde_json::json!([
            {"manager": "kubectl-create", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}}}},
            {"manager": "warmpool@warmpool-system", "operation": "Apply", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:warmpool.io/tenant": {}}}}},
        ]));
        assert_eq!(label_owners(&fields, OURS), ours());
        // Another installation's apply is someone else's.
        assert_eq!(
            label_owners(&fields, "warmpool@elsewhere"),
            LabelOwners {
                others: true,
                ..LabelOwners::default()
            }
        );
        let person = entries(serde_json::json!([
            {"manager": "kubectl-label", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:warmpool.io/tenant": {}}}}},
            {"manager": "warmpool", "operation": "Apply", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:warmpool.io/tenant": {}}}}},
        ]));
        assert_eq!(
            label_owners(&person, OURS),
            LabelOwners {
                ours: false,
                legacy: true,
                others: true
            }
        );
        // An update by a manager that happens to be called `warmpool` is not 0.1.0's apply.
        let update = entries(serde_json::json!([
            {"manager": "warmpool", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:warmpool.io/tenant": {}}}}},
        ]));
        assert!(label_owners(&update, OURS).others);
        assert_eq!(label_owners(&[], OURS), nobody());
    }

    #[test]
    fn the_label_field_is_the_tenant_label() {
        assert_eq!(TENANT_LABEL_FIELD, format!("f:{TENANT_LABEL}"));
    }

    #[test]
    fn only_the_owners_of_the_label_count() {
        let fields = entries(serde_json::json!([
            {"manager": "kubectl-create", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}},
            {"manager": "helm", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {"f:warmpool.io/tenant": {}}}}},
        ]));
        assert_eq!(label_owners(&fields, OURS), nobody());
    }

    #[test]
    fn matching_namespaces_without_the_label_are_labelled() {
        assert_eq!(
            enrolment(&selector(), "demo-1", label(None), nobody()),
            Enrolment::Enrol {
                pattern: "demo-*".into()
            }
        );
        // A value that neither opts in nor out is replaced by `enabled`.
        assert_eq!(
            enrolment(&selector(), "demo-1", label(Some("yes")), nobody()),
            Enrolment::Enrol {
                pattern: "demo-*".into()
            }
        );
    }

    #[test]
    fn enabled_namespaces_that_match_are_left_alone_whoever_labelled_them() {
        for owners in [nobody(), ours()] {
            assert_eq!(
                enrolment(&selector(), "demo-1", label(enabled()), owners),
                Enrolment::Leave(Membership::OptedIn)
            );
        }
    }

    #[test]
    fn what_warmpool_enrolled_is_unenrolled_once_it_no_longer_matches() {
        assert_eq!(
            enrolment(&selector(), "team-1", label(enabled()), ours()),
            Enrolment::Unenrol {
                release_ours: true,
                release_legacy: false
            }
        );
        // Enrolled by 0.1.0, or by both versions.
        let both = LabelOwners {
            ours: true,
            legacy: true,
            others: false,
        };
        assert_eq!(
            enrolment(&selector(), "team-1", label(enabled()), both),
            Enrolment::Unenrol {
                release_ours: true,
                release_legacy: true
            }
        );
        // Warmpool's own namespace is never a tenant, whatever once labelled it, and never
        // written to.
        assert_eq!(
            enrolment(&selector(), "warmpool-system", label(enabled()), ours()),
            Enrolment::Leave(Membership::OwnNamespace)
        );
    }

    #[test]
    fn an_excluded_namespace_is_never_enrolled_and_warmpool_s_label_goes_back() {
        let tenants = crate::config::Tenants {
            exclude_namespaces: vec!["demo-shared".into()],
            ..Default::default()
        };
        let selector = tenants.selector(Some("warmpool-system")).unwrap();
        assert_eq!(
            enrolment(&selector, "demo-shared", label(None), nobody()),
            Enrolment::Leave(Membership::Excluded)
        );
        assert_eq!(
            enrolment(&selector, "demo-shared", label(enabled()), ours()),
            Enrolment::Unenrol {
                release_ours: true,
                release_legacy: false
            }
        );
        assert!(!selector.is_tenant_by_facts("demo-shared", label(enabled())));
        assert!(selector.is_tenant_by_facts("demo-1", label(None)));
    }

    #[test]
    fn a_namespace_whose_labels_stop_matching_gives_warmpool_s_label_back() {
        let unmatched = |value| LabelFacts {
            tenant_label: value,
            unmatched: true,
        };
        assert_eq!(
            enrolment(&selector(), "demo-1", unmatched(None), nobody()),
            Enrolment::Leave(Membership::Unmatched)
        );
        assert_eq!(
            enrolment(&selector(), "demo-1", unmatched(enabled()), ours()),
            Enrolment::Unenrol {
                release_ours: true,
                release_legacy: false
            }
        );
        // A person's label stays: it is theirs to take back.
        assert_eq!(
            enrolment(&selector(), "demo-1", unmatched(enabled()), others()),
            Enrolment::Leave(Membership::Unmatched)
        );
    }

    #[test]
    fn a_persons_label_is_never_taken_back() {
        let person = LabelOwners {
            others: true,
            ..LabelOwners::default()
        };
        // Labelled by a person only, or by a person and warmpool alike.
        for owners in [
            person,
            LabelOwners {
                ours: true,
                legacy: true,
                others: true,
            },
            nobody(),
        ] {
            assert_eq!(
                enrolment(&selector(), "payments", label(enabled()), owners),
                Enrolment::Leave(Membership::OptedIn),
                "{owners:?}"
            );
        }
    }

    #[test]
    fn opt_out_is_never_overwritten() {
        for owners in [nobody(), ours()] {
            assert_eq!(
                enrolment(&selector(), "demo-2", label(Some(DISABLED)), owners),
                Enrolment::Leave(Membership::OptedOut)
            );
        }
    }

    #[test]
    fn system_own_and_unmatched_namespaces_are_never_labelled() {
        let all = TenantSelector::new(&["*".into()], Some("warmpool-system")).unwrap();
        for ns in ["kube-system", "kube-public", "kube-node-lease"] {
            assert_eq!(
                enrolment(&all, ns, label(None), nobody()),
                Enrolment::Leave(Membership::System)
            );
        }
        assert_eq!(
            enrolment(&all, "warmpool-system", label(None), nobody()),
            Enrolment::Leave(Membership::OwnNamespace)
        );
        assert_eq!(
            enrolment(&selector(), "default", label(None), nobody()),
            Enrolment::Leave(Membership::NoMatch)
        );
    }

    #[test]
    fn the_patches_set_only_the_label_and_guard_on_the_version_read() {
        assert_eq!(
            enrolment_patch("demo-1", Some("42")),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "demo-1",
                    "resourceVersion": "42",
                    "labels": {"warmpool.io/tenant": "enabled"},
                },
            })
        );
        assert!(
            enrolment_patch("demo-1", None)["metadata"]
                .get("resourceVersion")
                .is_none()
        );
        assert_eq!(
            release_patch("demo-1", Some("43")),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "demo-1", "resourceVersion": "43"},
            })
        );
    }
}
