//! The mutation engine over generated pods and nodes, judged by the oracle of
//! `tests/support/oracle.rs` (Kubernetes' node selection as `warmpool::core::mutation::scheduling` models it):
//! required mode narrows the nodes a pod may use to exactly the pool's, preferred mode keeps
//! them and adds one preference, the pool's taint is tolerated without duplicates or shorter
//! times, skips are justified, nothing else changes, and a second pass is empty.
//!
//! The generators make the shapes that matter: empty terms, terms with only matchFields, pods
//! pinned to a node or owned by a DaemonSet, `Exists`-all tolerations, `tolerationSeconds`,
//! nodeSelectors that conflict with the pool, `Gt`/`Lt` and invalid requirements.

use support::oracle;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use warmpool::config::{AffinityMode, Config};
use warmpool::core::mutation::scheduling::Node;
use warmpool::core::mutation::{Mutation, PodView, Rules, mutate, mutate_view, mutate_view_json};

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("workload-type".to_owned()),
        Just("kubernetes.io/arch".to_owned()),
        Just("disk".to_owned()),
        "[a-z]{1,6}(/[a-z~]{1,4})?",
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("cargocats".to_owned()),
        Just("batch".to_owned()),
        Just("5".to_owned()),
        Just("-3".to_owned()),
        "[a-z0-9]{1,5}"
    ]
}

fn expression() -> impl Strategy<Value = Value> {
    (
        label_key(),
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist"),
            Just("Gt"),
            Just("Lt"),
            Just("Sometimes"),
        ],
        prop::collection::vec(label_value(), 0..3),
    )
        .prop_map(|(key, op, values)| match op {
            // Mostly valid counts, sometimes not (a term that does not parse matches nothing).
            "Exists" | "DoesNotExist" if values.len() < 2 => json!({"key": key, "operator": op}),
            "Gt" | "Lt" if values.len() == 2 => {
                json!({"key": key, "operator": op, "values": ["4"]})
            }
            _ => json!({"key": key, "operator": op, "values": values}),
        })
}

fn node_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("n1".to_owned()),
        Just("n2".to_owned()),
        Just("general-1".to_owned())
    ]
}

fn field() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("In"), Just("NotIn")],
        node_name(),
        any::<bool>(),
    )
        .prop_map(|(op, name, other_key)| {
            let key = if other_key {
                "spec.unschedulable"
            } else {
                "metadata.name"
            };
            json!({"key": key, "operator": op, "values": [name]})
        })
}

fn term() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(expression(), 0..3)),
        prop::option::of(prop::collection::vec(field(), 0..2)),
    )
        .prop_map(|(exprs, fields)| {
            let mut t = Map::new();
            if let Some(e) = exprs {
                t.insert("matchExpressions".into(), Value::Array(e));
            }
            if let Some(f) = fields {
                t.insert("matchFields".into(), Value::Array(f));
            }
            Value::Object(t)
        })
}

fn toleration() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(
            json!({"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"})
        ),
        Just(json!({"key": "workload-type", "value": "cargocats", "effect": "NoSchedule"})),
        Just(json!({"operator": "Exists"})),
        (label_key(), label_value()).prop_map(
            |(k, v)| json!({"key": k, "value": v, "effect": "NoExecute", "tolerationSeconds": 30})
        ),
        Just(json!({"key": "workload-type", "operator": "Exists"})),
        Just(
            json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10})
        ),
        Just(json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute"})),
        Just(json!({"operator": "Exists", "effect": "NoSchedule"})),
        Just(
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        ),
    ]
}

fn affinity() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(term(), 0..4)),
        prop::option::of(prop::collection::vec(
            (1..100i64, expression()).prop_map(|(w, e)| json!({"weight": w, "preference": {"matchExpressions": [e]}})),
            0..3,
        )),
        any::<bool>(),
    )
        .prop_map(|(required, preferred, anti)| {
            let mut na = Map::new();
            if let Some(terms) = required {
                na.insert(
                    "requiredDuringSchedulingIgnoredDuringExecution".into(),
                    json!({"nodeSelectorTerms": terms}),
                );
            }
            if let Some(p) = preferred {
                na.insert("preferredDuringSchedulingIgnoredDuringExecution".into(), Value::Array(p));
            }
            let mut a = Map::new();
            a.insert("nodeAffinity".into(), Value::Object(na));
            if anti {
                a.insert(
                    "podAntiAffinity".into(),
                    json!({"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone", "labelSelector": {}}]}),
                );
            }
            Value::Object(a)
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::btree_map("[a-z./~-]{1,12}", "[a-z]{0,4}", 0..4)),
        prop::option::of(affinity()),
        prop::option::of(prop::collection::vec(toleration(), 0..4)),
        prop::option::of(prop::collection::btree_map(label_key(), label_value(), 0..2)),
        any::<bool>(),
        prop::sample::select(vec![None, Some("DaemonSet"), Some("ReplicaSet")]),
    )
        .prop_map(|(annotations, affinity, tolerations, node_selector, has_metadata, owner)| {
            let mut spec = Map::new();
            spec.insert("containers".into(), json!([{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]));
            if let Some(a) = affinity {
                spec.insert("affinity".into(), a);
            }
            if let Some(t) = tolerations {
                spec.insert("tolerations".into(), Value::Array(t));
            }
            if let Some(s) = node_selector {
                spec.insert("nodeSelector".into(), json!(s));
            }
            let mut p = Map::new();
            p.insert("kind".into(), json!("Pod"));
            if has_metadata {
                let mut m = Map::new();
                m.insert("generateName".into(), json!("web-"));
                if let Some(a) = annotations {
                    m.insert("annotations".into(), json!(a));
                }
                if let Some(kind) = owner {
                    m.insert("ownerReferences".into(), json!([{"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u", "controller": true}]));
                }
                p.insert("metadata".into(), Value::Object(m));
            }
            p.insert("spec".into(), Value::Object(spec));
            Value::Object(p)
        })
}

fn node() -> impl Strategy<Value = Node> {
    (
        node_name(),
        prop::collection::btree_map(label_key(), label_value(), 0..3),
        any::<bool>(),
        prop::collection::vec(
            prop::sample::select(vec![
                ("workload-type", Some("cargocats"), "NoSchedule"),
                ("workload-type", Some("batch"), "NoSchedule"),
                ("workload-type", Some("cargocats"), "NoExecute"),
                ("dedicated", None, "NoExecute"),
                ("node.kubernetes.io/not-ready", None, "NoExecute"),
                ("spot", None, "PreferNoSchedule"),
            ]),
            0..3,
        ),
    )
        .prop_map(|(name, mut labels, pool, taints)| {
            if pool {
                labels.insert("workload-type".into(), "cargocats".into());
            }
            Node {
                name,
                labels,
                taints: taints
                    .into_iter()
                    .map(|(k, v, e)| Taint {
                        key: k.into(),
                        value: v.map(str::to_owned),
                        effect: e.into(),
                        time_added: None,
                    })
                    .collect(),
            }
        })
}

/// The configurations the properties run under: the default pool toleration, an `Exists` one
/// for every effect, and a `NoExecute` one with a time.
fn rules(mode: AffinityMode, variant: u8) -> Rules {
    let tolerations = match variant {
        0 => "[{key: workload-type, operator: Equal, value: cargocats, effect: NoSchedule}]",
        1 => "[{key: workload-type, operator: Exists}]",
        _ => {
            "[{key: workload-type, operator: Equal, value: cargocats, effect: NoSchedule}, {key: workload-type, operator: Exists, effect: NoExecute, tolerationSeconds: 60}]"
        }
    };
    let mode = match mode {
        AffinityMode::Required => "required",
        AffinityMode::Preferred => "preferred",
    };
    let config = Config::from_yaml(&format!(
        "pool: {{affinity: {mode}, tolerations: {tolerations}}}"
    ))
    .expect("a valid test configuration");
    Rules::from_config(&config)
}

fn check(
    pod: Value,
    nodes: Vec<Node>,
    mode: AffinityMode,
    variant: u8,
) -> Result<(), TestCaseError> {
    let rules = rules(mode, variant);
    let mut all = oracle::nodes_for(&pod, &rules);
    all.extend(nodes);
    oracle::check(&pod, &rules, &all).map_err(|e| TestCaseError::fail(format!("{e}\npod: {pod}")))
}

fn cases() -> u32 {
    std::env::var("WARMPOOL_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn required_mode_narrows_to_exactly_the_pool(pod in pod(), nodes in prop::collection::vec(node(), 1..6), variant in 0u8..3) {
        check(pod, nodes, AffinityMode::Required, variant)?;
    }

    #[test]
    fn preferred_mode_keeps_the_nodes_and_adds_one_preference(pod in pod(), nodes in prop::collection::vec(node(), 1..6), variant in 0u8..3) {
        check(pod, nodes, AffinityMode::Preferred, variant)?;
    }
}

/// The webhook's typed view of a pod decides as the pod's JSON does: the same patch and the
/// same injections or skip reason, and the patch it writes is the bytes serde_json writes for
/// that patch. Every generated pod is well typed, so the view must read it.
fn same_as_json(pod: &Value, mode: AffinityMode, variant: u8) -> Result<(), TestCaseError> {
    let rules = rules(mode, variant);
    let bytes = serde_json::to_vec(pod).unwrap();
    let read = || -> Result<PodView, TestCaseError> {
        serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("no typed view: {e}\npod: {pod}")))
    };
    let expected = mutate(pod, &rules);
    prop_assert_eq!(
        mutate_view(read()?, &rules),
        expected.clone(),
        "pod: {}",
        pod
    );
    let mut written = Vec::new();
    let decided = mutate_view_json(read()?, &rules, &mut written);
    match expected {
        Mutation::Skip(reason) => prop_assert_eq!(decided, Err(reason)),
        Mutation::Patch { patch, injected } => {
            prop_assert_eq!(decided, Ok(injected));
            let serde = if patch.0.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&patch).unwrap()
            };
            prop_assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(serde).unwrap(),
                "pod: {}",
                pod
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_typed_view_decides_as_the_json(pod in pod(), variant in 0u8..3) {
        same_as_json(&pod, AffinityMode::Required, variant)?;
        same_as_json(&pod, AffinityMode::Preferred, variant)?;
    }
}

/// The oracle itself must be able to fail: a mutation that widens (the old treatment of an
/// empty term) is caught.
#[test]
fn the_oracle_rejects_a_widening_patch() {
    let rules = rules(AffinityMode::Required, 0);
    let pod = json!({"spec": {"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}}});
    let nodes = oracle::nodes_for(&pod, &rules);
    let widened = json!({"spec": {"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "workload-type", "operator": "In", "values": ["cargocats"]}]}]}}}}});
    let allowed = |p: &Value| {
        let spec: k8s_openapi::api::core::v1::PodSpec =
            serde_json::from_value(p["spec"].clone()).unwrap();
        nodes
            .iter()
            .filter(|n| {
                warmpool::core::mutation::scheduling::affinity_allows(
                    &warmpool::core::mutation::scheduling::Placement::of(&spec),
                    n,
                )
            })
            .count()
    };
    assert_eq!(allowed(&pod), 0);
    assert!(
        allowed(&widened) > 0,
        "the oracle's nodes include a pool node"
    );
    assert!(oracle::check(&pod, &rules, &nodes).is_ok());
    let _ = BTreeMap::<String, String>::new();
}
