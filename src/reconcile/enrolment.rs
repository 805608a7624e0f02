//! Enrolment: which namespaces get the `warmpool.io/tenant=enabled` label. Pure.

use std::collections::BTreeMap;

use crate::tenant::{ENABLED, Membership, TENANT_LABEL, TenantSelector};

/// What the reconciler does to one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolment {
    /// Write `warmpool.io/tenant=enabled`: the name matches a pattern and the label is absent
    /// (or holds a value that neither opts in nor out).
    Label { pattern: String },
    /// Nothing to write; `Membership` says why (already enabled, opted out, system, no match…).
    Leave(Membership),
}

/// The label decision for a namespace, from its name and its current labels.
///
/// A `disabled` label is never overwritten, system namespaces and warmpool's own are never
/// labelled (both come from [`TenantSelector::decide`]); a namespace labelled `enabled` already
/// needs nothing.
pub fn enrolment(
    selector: &TenantSelector,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Enrolment {
    match selector.decide(name, labels) {
        Membership::MatchesPattern(pattern)
            if labels.get(TENANT_LABEL).map(String::as_str) != Some(ENABLED) =>
        {
            Enrolment::Label { pattern }
        }
        other => Enrolment::Leave(other),
    }
}

/// The server-side apply body that enrols `name`: only the one label, so that the field manager
/// `warmpool` owns nothing else on the namespace. `resource_version` makes the write conditional
/// on the namespace not having changed since it was read (a user who sets `disabled` in between
/// wins: the apply fails with a conflict and the next pass sees the opt-out).
pub fn enrolment_patch(name: &str, resource_version: Option<&str>) -> serde_json::Value {
    let mut metadata = serde_json::json!({
        "name": name,
        "labels": { TENANT_LABEL: ENABLED },
    });
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
    use crate::tenant::DISABLED;

    fn selector() -> TenantSelector {
        TenantSelector::new(&["demo-*".into()], Some("warmpool-system")).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching_namespaces_without_the_label_are_labelled() {
        assert_eq!(
            enrolment(&selector(), "demo-1", &labels(&[("team", "a")])),
            Enrolment::Label {
                pattern: "demo-*".into()
            }
        );
        // A value that neither opts in nor out is replaced by `enabled`.
        assert_eq!(
            enrolment(&selector(), "demo-1", &labels(&[(TENANT_LABEL, "yes")])),
            Enrolment::Label {
                pattern: "demo-*".into()
            }
        );
    }

    #[test]
    fn already_enabled_namespaces_are_left_alone() {
        assert_eq!(
            enrolment(&selector(), "demo-1", &labels(&[(TENANT_LABEL, ENABLED)])),
            Enrolment::Leave(Membership::OptedIn)
        );
        assert_eq!(
            enrolment(&selector(), "payments", &labels(&[(TENANT_LABEL, ENABLED)])),
            Enrolment::Leave(Membership::OptedIn)
        );
    }

    #[test]
    fn opt_out_is_never_overwritten() {
        assert_eq!(
            enrolment(&selector(), "demo-2", &labels(&[(TENANT_LABEL, DISABLED)])),
            Enrolment::Leave(Membership::OptedOut)
        );
    }

    #[test]
    fn system_own_and_unmatched_namespaces_are_never_labelled() {
        let all = TenantSelector::new(&["*".into()], Some("warmpool-system")).unwrap();
        for ns in ["kube-system", "kube-public", "kube-node-lease"] {
            assert_eq!(
                enrolment(&all, ns, &labels(&[])),
                Enrolment::Leave(Membership::System)
            );
        }
        assert_eq!(
            enrolment(&all, "warmpool-system", &labels(&[])),
            Enrolment::Leave(Membership::OwnNamespace)
        );
        assert_eq!(
            enrolment(&selector(), "default", &labels(&[])),
            Enrolment::Leave(Membership::NoMatch)
        );
    }

    #[test]
    fn the_patch_sets_only_the_label_and_guards_on_the_version_read() {
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
    }
}
