//! Tenant pods that escaped the webhook. Pure.
//!
//! The chart fails open (`failurePolicy: Ignore`): a pod created while the webhook was
//! unreachable is admitted unchanged and lands wherever the scheduler puts it, on a cold node
//! most likely, silently. Such a pod is one the webhook would still change. Judging it with the
//! webhook's own [`mutate`] keeps the two in agreement: a pod the webhook skips on purpose (the
//! skip annotation, a mirror pod, one pinned to a node or owned by a DaemonSet, one whose own
//! affinity excludes the pool) or finds already steered is not escaped.
//!
//! The `warmpool.io/injected` annotation is not trusted: a tenant can write it on its own pods.
//! Only the placement counts, and a pod that carries the pool's placement goes to the pool
//! whoever wrote it.

use serde_json::Value;

use crate::core::mutation::{Mutation, Rules, mutate};

/// The pod (as the API server returns it) is in a tenant namespace and was never steered: the
/// webhook would change its placement. The pod is judged as at admission: the `spec.nodeName`
/// the scheduler bound it with came later.
pub fn unsteered(pod: &Value, rules: &Rules) -> bool {
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
    use crate::core::mutation::INJECTED_ANNOTATION;
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

    fn steered_spec() -> Value {
        json!({
            "nodeName": "warm-1",
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "workload-type", "operator": "In", "values": ["cargocats"]}]}]}}},
            "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}],
        })
    }

    #[test]
    fn a_forged_annotation_hides_nothing() {
        let annotation = json!({INJECTED_ANNOTATION: "node-affinity,tolerations"});
        let forged = pod(annotation.clone(), json!({"nodeName": "cold-node-1"}));
        assert!(unsteered(&forged, &rules()));
        assert!(!unsteered(&pod(annotation, steered_spec()), &rules()));
    }

    #[test]
    fn steered_and_skipped_pods_are_not() {
        let steered = pod(
            json!({INJECTED_ANNOTATION: "[\"nodeAffinity\",\"toleration\"]"}),
            steered_spec(),
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
