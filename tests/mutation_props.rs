//! Properties of the mutation engine over generated pods: the patch applies, a second pass adds
//! nothing, and nothing outside node affinity, tolerations and our annotation changes.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use warmpool::config::{AffinityMode, Config};
use warmpool::mutation::{Mutation, Rules, mutate};

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
            Just("Gt")
        ],
        prop::collection::vec(label_value(), 1..3),
    )
        .prop_map(|(key, op, values)| match op {
            "Exists" | "DoesNotExist" => json!({"key": key, "operator": op}),
            _ => json!({"key": key, "operator": op, "values": values}),
        })
}

fn term() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(expression(), 0..3)),
        prop::option::of(Just(
            json!([{"key": "metadata.name", "operator": "In", "values": ["n1"]}]),
        )),
    )
        .prop_map(|(exprs, fields)| {
            let mut t = Map::new();
            if let Some(e) = exprs {
                t.insert("matchExpressions".into(), Value::Array(e));
            }
            if let Some(f) = fields {
                t.insert("matchFields".into(), f);
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
    )
        .prop_map(|(annotations, affinity, tolerations, node_selector, has_metadata)| {
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
                p.insert("metadata".into(), Value::Object(m));
            }
            p.insert("spec".into(), Value::Object(spec));
            Value::Object(p)
        })
}

/// The pod with everything warmpool may touch taken out.
fn untouched_part(pod: &Value) -> Value {
    let mut p = pod.clone();
    if let Some(a) = p
        .pointer_mut("/spec/affinity")
        .and_then(Value::as_object_mut)
    {
        a.remove("nodeAffinity");
        if a.is_empty() {
            p["spec"].as_object_mut().unwrap().remove("affinity");
        }
    }
    p["spec"].as_object_mut().unwrap().remove("tolerations");
    if let Some(a) = p
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove("warmpool.io/injected");
    }
    p
}

fn nonempty_preexisting_node_affinity(pod: &Value) -> Option<Value> {
    pod.pointer("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .cloned()
}

fn check(pod: Value, mode: AffinityMode) -> Result<(), TestCaseError> {
    let mut config = Config::default();
    config.pool.affinity = mode;
    let rules = Rules::from_config(&config);
    let mutation = mutate(&pod, &rules);
    let mut out = pod.clone();
    json_patch::patch(&mut out, &mutation.patch())
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
    prop_assert_eq!(
        mutate(&out, &rules).patch().0.len(),
        0,
        "second pass is not empty for {}",
        out
    );
    // Untouched fields stay untouched; existing tolerations keep their order at the front.
    let mut before = untouched_part(&pod);
    let mut after = untouched_part(&out);
    // An empty annotations map we created is ours too.
    for v in [&mut before, &mut after] {
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut)
            && m.get("annotations")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
        {
            m.remove("annotations");
        }
        if v.get("metadata")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            v.as_object_mut().unwrap().remove("metadata");
        }
    }
    prop_assert_eq!(before, after);
    let old_tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_tolerations = out
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    prop_assert_eq!(
        &new_tolerations[..old_tolerations.len()],
        &old_tolerations[..]
    );
    if mode == AffinityMode::Required {
        // Existing preferences are never touched in required mode.
        prop_assert_eq!(
            nonempty_preexisting_node_affinity(&pod),
            nonempty_preexisting_node_affinity(&out)
        );
    }
    if let Mutation::Patch { injected, .. } = &mutation {
        prop_assert_eq!(injected.is_empty(), mutation.patch().0.is_empty());
        if mode == AffinityMode::Required {
            let terms = out
                .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            prop_assert!(!terms.is_empty());
            for t in terms {
                let has = t["matchExpressions"].as_array().is_some_and(|es| {
                    es.iter().any(|e| e == &json!({"key": "workload-type", "operator": "In", "values": ["cargocats"]}))
                });
                prop_assert!(has, "term without the pool expression: {}", t);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn required_mode_properties(pod in pod()) {
        check(pod, AffinityMode::Required)?;
    }

    #[test]
    fn preferred_mode_properties(pod in pod()) {
        check(pod, AffinityMode::Preferred)?;
    }
}
