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

use std::collections::BTreeSet;

use jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use serde_json::Value;

use crate::config::Repair;

use crate::core::mutation::{Mutation, Rules, mutate};

/// The pod (as the API server returns it) is in a tenant namespace and was never steered: the
/// webhook would change its placement. The pod is judged as at admission: the `spec.nodeName`
/// the scheduler bound it with came later.
pub fn is_unsteered(pod: &Value, rules: &Rules) -> bool {
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

/// A pod the webhook never steered, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsteered {
    pub created: Option<jiff::Timestamp>,
    pub node: Option<String>,
    /// Owned by a controller (not a DaemonSet): evicting it lets the controller re-create it
    /// through the webhook.
    pub controlled: bool,
}

/// Unsteered pods given an Event (and evicted) per scan.
pub const PER_SCAN: usize = 20;

/// `(namespace, pod)`.
pub type Key = (String, String);

/// Whether to evict an unsteered pod now: asked for, a controller to re-create it, and the
/// webhook back (it steered a pod created after this one, or in the same second). Pure.
pub fn evict_now(repair: Repair, pod: &Unsteered, last_steered: Option<Timestamp>) -> bool {
    repair == Repair::Evict
        && pod.controlled
        && matches!((pod.created, last_steered), (Some(c), Some(s)) if s >= c)
}

/// What to do now: the pods unsteered now that were not acted on yet (at most [`PER_SCAN`]),
/// and what stays remembered (the ones still there). Pure.
pub fn to_act_on(
    now: &[(Key, Unsteered)],
    acted: &BTreeSet<Key>,
) -> (Vec<(Key, Unsteered)>, BTreeSet<Key>) {
    let fresh = now
        .iter()
        .filter(|(k, _)| !acted.contains(k))
        .take(PER_SCAN)
        .cloned()
        .collect();
    let still: BTreeSet<Key> = now
        .iter()
        .map(|(k, _)| k)
        .filter(|k| acted.contains(*k))
        .cloned()
        .collect();
    (fresh, still)
}

/// The Warning Event on an unsteered pod.
pub fn unsteered_event(pod: &Unsteered, repair: Repair) -> Event {
    let node = pod
        .node
        .as_deref()
        .map_or("not scheduled yet".to_owned(), |n| format!("on node {n}"));
    let next = match (repair, pod.controlled) {
        (Repair::Evict, true) => {
            "it is evicted (tenants.repair: evict) and its controller re-creates it through the webhook"
        }
        (Repair::Evict, false) => {
            "no controller owns it, so it is not evicted: re-create it yourself"
        }
        (Repair::None, true) => {
            "delete it and its controller re-creates it through the webhook, or set tenants.repair: evict"
        }
        (Repair::None, false) => "no controller owns it: re-create it",
    };
    Event {
        type_: EventType::Warning,
        reason: "Unsteered".into(),
        note: Some(format!(
            "admitted without warmpool's node affinity and toleration (no warmpool.io/injected: \
             the webhook was unreachable or not registered yet), {node}; {next}"
        )),
        action: "Steer".into(),
        secondary: None,
    }
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
        assert!(is_unsteered(&pod(json!({}), json!({})), &rules()));
        assert!(is_unsteered(
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
        assert!(is_unsteered(&forged, &rules()));
        assert!(!is_unsteered(&pod(annotation, steered_spec()), &rules()));
    }

    #[test]
    fn steered_and_skipped_pods_are_not() {
        let steered = pod(
            json!({INJECTED_ANNOTATION: "[\"nodeAffinity\",\"toleration\"]"}),
            steered_spec(),
        );
        assert!(!is_unsteered(&steered, &rules()));
        let opted_out = pod(json!({"warmpool.io/skip": "true"}), json!({}));
        assert!(!is_unsteered(&opted_out, &rules()));
        let mut daemon = pod(json!({}), json!({"nodeName": "n"}));
        daemon["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]);
        assert!(!is_unsteered(&daemon, &rules()));
        let excludes = pod(
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "workload-type", "operator": "NotIn", "values": ["cargocats"]}]}]}}}}),
        );
        assert!(!is_unsteered(&excludes, &rules()));
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
        assert!(!is_unsteered(&by_hand, &rules()));
    }

    #[test]
    fn any_shape_is_judged_without_a_panic() {
        for odd in [
            json!(null),
            json!([]),
            json!({"spec": 1}),
            json!({"metadata": "x"}),
        ] {
            assert!(!is_unsteered(&odd, &rules()), "{odd}");
        }
    }
}

#[cfg(test)]
mod acting {
    use super::*;

    fn key(ns: &str, pod: &str) -> Key {
        (ns.to_owned(), pod.to_owned())
    }

    fn pod(controlled: bool) -> Unsteered {
        Unsteered {
            created: None,
            node: Some("cold-1".into()),
            controlled,
        }
    }

    #[test]
    fn each_escape_is_acted_on_once_and_forgotten_when_it_goes() {
        let now = [
            (key("demo-1", "a"), pod(true)),
            (key("demo-1", "b"), pod(false)),
        ];
        let (fresh, still) = to_act_on(&now, &BTreeSet::new());
        assert_eq!(fresh.len(), 2);
        assert!(still.is_empty());
        let acted = BTreeSet::from([key("demo-1", "a"), key("demo-1", "gone")]);
        let (fresh, still) = to_act_on(&now, &acted);
        assert_eq!(fresh, vec![(key("demo-1", "b"), pod(false))]);
        assert_eq!(still, BTreeSet::from([key("demo-1", "a")]));
    }

    #[test]
    fn at_most_a_scans_worth_is_acted_on_at_once() {
        let now: Vec<(Key, Unsteered)> = (0..PER_SCAN + 5)
            .map(|i| (key("demo-1", &format!("p{i:02}")), pod(true)))
            .collect();
        let (fresh, _) = to_act_on(&now, &BTreeSet::new());
        assert_eq!(fresh.len(), PER_SCAN);
        let acted: BTreeSet<Key> = fresh.into_iter().map(|(k, _)| k).collect();
        let (rest, still) = to_act_on(&now, &acted);
        assert_eq!(rest.len(), 5, "the rest at the next scan");
        assert_eq!(still.len(), PER_SCAN);
    }

    #[test]
    fn a_pod_is_evicted_only_once_the_webhook_steered_one_as_new() {
        let t = |s: &str| -> Timestamp { s.parse().unwrap() };
        let escaped = Unsteered {
            created: Some(t("2026-12-02T09:00:00Z")),
            node: None,
            controlled: true,
        };
        let back = Some(t("2026-12-02T09:00:05Z"));
        assert!(evict_now(Repair::Evict, &escaped, back));
        // What the API server records is whole seconds: a steered pod of the same second is
        // evidence too (the end-to-end test made both within a second on a fast machine, and
        // the strict comparison never evicted).
        assert!(
            evict_now(Repair::Evict, &escaped, escaped.created),
            "steered in the same second"
        );
        assert!(
            !evict_now(Repair::Evict, &escaped, None),
            "the webhook not seen back"
        );
        assert!(
            !evict_now(Repair::Evict, &escaped, Some(t("2026-12-02T08:59:00Z"))),
            "steered only before it: maybe still down"
        );
        assert!(!evict_now(Repair::None, &escaped, back));
        let bare = Unsteered {
            controlled: false,
            ..escaped
        };
        assert!(!evict_now(Repair::Evict, &bare, back));
    }

    #[test]
    fn the_event_says_where_it_runs_and_what_to_do() {
        let note = |p: &Unsteered, r: Repair| unsteered_event(p, r).note.unwrap();
        let n = note(&pod(true), Repair::None);
        assert!(
            n.contains("on node cold-1") && n.contains("set tenants.repair: evict"),
            "{n}"
        );
        let n = note(&pod(true), Repair::Evict);
        assert!(n.contains("it is evicted"), "{n}");
        let n = note(&pod(false), Repair::Evict);
        assert!(n.contains("not evicted"), "{n}");
        let unscheduled = Unsteered {
            created: None,
            node: None,
            controlled: true,
        };
        assert!(note(&unscheduled, Repair::None).contains("not scheduled yet"));
        assert_eq!(
            unsteered_event(&pod(true), Repair::None).type_,
            EventType::Warning
        );
    }
}
