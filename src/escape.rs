//! Tenant pods that escaped the webhook. Pure.
//!
//! The chart fails open (`failurePolicy: Ignore`): a pod created while the webhook was
//! unreachable is admitted unchanged and lands wherever the scheduler puts it, on a cold node
//! most likely, silently. Such a pod carries no `warmpool.io/injected` annotation and yet is
//! one the webhook would have changed. Judging it with the webhook's own [`mutate`] keeps the
//! two in agreement: a pod the webhook skips on purpose (the skip annotation, a mirror pod, one
//! pinned to a node or owned by a DaemonSet, one whose own affinity excludes the pool) or finds
//! already steered is not escaped.

use serde_json::Value;

use crate::mutation::{INJECTED_ANNOTATION, Mutation, Rules, mutate};

/// The pod (as the API server returns it) is in a tenant namespace and was never steered:
/// no `warmpool.io/injected` annotation, and the webhook would change it. The pod is judged
/// as at admission: the `spec.nodeName` the scheduler bound it with came later.
pub fn unsteered(pod: &Value, rules: &Rules) -> bool {
    let injected = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(INJECTED_ANNOTATION))
        .is_some();
    if injected {
        return false;
    }
    let bound = pod
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .is_some_and(|n| !n.is_null());
    let verdict = if bound {
        let mut at_admission = pod.clone();
        if let Some(spec) = at_admission.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("nodeName");
        }
        mutate(&at_admission, rules)
    } else {
        mutate(pod, rules)
    };
    matches!(verdict, Mutation::Patch { injected, .. } if !injected.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn rules() -> Rules {
        Rules::from_config(&Config::default())
    }

    fn pod(annotations: Value, spec: Value) -> Value {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "app", "image": "nginx"}]);
        json!({"metadata": {"name": "p", "namespace": "demo-1", "annotations": annotations}, "spec": spec})
    }

    #[test]
    fn a_pod_the_webhook_never_saw_is_unsteered_bound_or_not() {
        assert!(unsteered(&pod(json!({}), json!({})), &rules()));
        assert!(unsteered(
            &pod(json!(null), json!({"nodeName": "cold-node-1"})),
            &rules()
        ));
    }

    #[test]
    fn steered_and_skipped_pods_are_not() {
        let steered = pod(
            json!({INJECTED_ANNOTATION: "[\"nodeAffinity\",\"toleration\"]"}),
            json!({"nodeName": "warm-1"}),
        );
        assert!(!unsteered(&steered, &rules()));
        let opted_out = pod(json!({"warmpool.io/skip": "true"}), json!({}));
        assert!(!unsteered(&opted_out, &rules()));
        let mut daemon = pod(json!({}), json!({"nodeName": "n"}));
        daemon["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]);
        assert!(!unsteered(&daemon, &rules()));
        let excludes = pod(
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "workload-type", "operator": "NotIn", "values": ["cargocats"]}]}]}}}}),
        );
        assert!(!unsteered(&excludes, &rules()));
        // Already carrying what the webhook adds (a pod spec written that way): nothing to do.
        let by_hand = pod(
            json!({}),
            json!({
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "workload-type", "operator": "In", "values": ["cargocats"]}]}]}}},
                "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}],
            }),
        );
        assert!(!unsteered(&by_hand, &rules()));
    }

    #[test]
    fn any_shape_is_judged_without_a_panic() {
        for odd in [
            json!(null),
            json!([]),
            json!({"spec": 1}),
            json!({"metadata": "x"}),
        ] {
            assert!(!unsteered(&odd, &rules()), "{odd}");
        }
    }
}
