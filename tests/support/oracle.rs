//! The oracle of the mutation tests: what the mutation must mean to Kubernetes, decided by
//! warmpool's model of the scheduler (`warmpool::core::mutation::scheduling`), for a pod and a set of nodes.
//!
//! - required mode: the mutated pod's node affinity allows a node exactly when the original
//!   allows it and the node is a pool node;
//! - preferred mode: the nodes allowed are the same, and exactly one preference steers to the
//!   pool (and counts on pool nodes);
//! - the pool's taints are tolerated afterwards, the pod's own tolerations are kept in order,
//!   nothing is added that an existing one already covers, and no toleration time shortens;
//! - a skipped pod gets an empty patch, and its reason holds (a pod said to exclude the pool
//!   fits no pool node; a pinned pod names one node in every term or is a DaemonSet's);
//! - nothing outside node affinity, tolerations and the `warmpool.io/injected` annotation
//!   changes, and a second pass over the result is empty.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, Taint, Toleration};
use serde_json::{Map, Value, json};
use warmpool::config::AffinityMode;
use warmpool::core::mutation::scheduling;
use warmpool::core::mutation::scheduling::{EFFECTS, Node, Placement};
use warmpool::core::mutation::{Mutation, Rules, SkipReason, mutate};

/// The taints a pool toleration is there for: its key (or any), its value (or any), its effect
/// (or each of them).
pub fn pool_taints(rules: &Rules) -> Vec<Taint> {
    let mut out = Vec::new();
    for t in rules.tolerations() {
        let key = t.key.clone().unwrap_or_else(|| "any-key".into());
        let value = match t.operator.as_deref() {
            Some("Exists") => Some("any-value".to_owned()),
            _ => t.value.clone(),
        };
        let effects: Vec<&str> = match t.effect.as_deref() {
            Some(e) if !e.is_empty() => vec![e],
            _ => EFFECTS.to_vec(),
        };
        for effect in effects {
            out.push(Taint {
                key: key.clone(),
                value: value.clone(),
                effect: effect.to_owned(),
                time_added: None,
            });
        }
    }
    out
}

/// A pool node as the NodePool makes them: the pool label and the pool's taints.
pub fn pool_node(rules: &Rules, base: &Node) -> Node {
    let (k, v) = rules.pool_label();
    let mut node = base.clone();
    node.labels.insert(k.to_owned(), v.to_owned());
    node.taints = pool_taints(rules)
        .into_iter()
        .filter(|t| t.effect != "PreferNoSchedule")
        .collect();
    node
}

pub fn is_pool(rules: &Rules, node: &Node) -> bool {
    let (k, v) = rules.pool_label();
    node.labels.get(k).map(String::as_str) == Some(v)
}

/// The scheduling-relevant fields of the pod's spec, typed (the rest, containers and volumes,
/// plays no part and may hold YAML-1.1 leftovers such as octal modes).
fn typed_spec(pod: &Value) -> Option<PodSpec> {
    let spec = pod.get("spec")?.as_object()?;
    let mut only = Map::new();
    only.insert("containers".into(), json!([]));
    for field in ["nodeSelector", "affinity", "tolerations"] {
        if let Some(v) = spec.get(field) {
            only.insert(field.into(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(only)).ok()
}

/// Nodes that matter for `pod`: a general and a pool node, and the witnesses the model finds
/// for the pod's own constraints, with and without the pool label.
pub fn nodes_for(pod: &Value, rules: &Rules) -> Vec<Node> {
    let general = Node {
        name: "general-1".into(),
        ..Node::default()
    };
    let mut nodes = vec![general.clone(), pool_node(rules, &general)];
    if let Some(spec) = typed_spec(pod) {
        let placement = Placement::of(&spec);
        let (k, v) = rules.pool_label();
        let pool = BTreeMap::from([(k.to_owned(), v.to_owned())]);
        for w in [
            scheduling::witness(&placement, &BTreeMap::new()),
            scheduling::witness(&placement, &pool),
        ]
        .into_iter()
        .flatten()
        {
            nodes.push(pool_node(rules, &w));
            let mut off_pool = w.clone();
            off_pool.labels.remove(k);
            nodes.push(off_pool);
        }
    }
    nodes
}

/// The pod with everything warmpool may touch taken out.
fn untouched_part(pod: &Value) -> Value {
    let mut p = pod.clone();
    if let Some(spec) = p.get_mut("spec").and_then(Value::as_object_mut) {
        // null is absent, as the API server reads it.
        spec.retain(|_, v| !v.is_null());
        if let Some(a) = spec.get_mut("affinity").and_then(Value::as_object_mut) {
            a.remove("nodeAffinity");
            if a.is_empty() {
                spec.remove("affinity");
            }
        }
        spec.remove("tolerations");
    }
    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|_, v| !v.is_null());
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("warmpool.io/injected");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
        if m.is_empty() {
            p.as_object_mut().unwrap().remove("metadata");
        }
    }
    p
}

fn tolerations_of(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn typed_tolerations(values: &[Value]) -> Vec<Toleration> {
    values
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

fn pool_preferences(spec: &Value, rules: &Rules) -> Vec<usize> {
    let (k, v) = rules.pool_label();
    let pool = json!([{"key": k, "operator": "In", "values": [v]}]);
    spec.pointer("/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .map(|prefs| {
            prefs
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p["weight"].as_i64().unwrap_or(0) > 0
                        && p.pointer("/preference/matchExpressions") == Some(&pool)
                        && p.pointer("/preference/matchFields")
                            .and_then(Value::as_array)
                            .is_none_or(Vec::is_empty)
                })
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks every property above for `pod` against `nodes`; `Err` says which and why.
pub fn check(pod: &Value, rules: &Rules, nodes: &[Node]) -> Result<(), String> {
    let mutation = mutate(pod, rules);
    let mut out = pod.clone();
    json_patch::patch(&mut out, &mutation.patch())
        .map_err(|e| format!("patch does not apply: {e}"))?;
    let again = mutate(&out, rules).patch();
    if !again.0.is_empty() {
        return Err(format!("second pass is not empty: {again:?}"));
    }
    if untouched_part(pod) != untouched_part(&out) {
        return Err(
            "something outside node affinity, tolerations and the annotation changed".into(),
        );
    }
    let before_tolerations = tolerations_of(pod);
    let after_tolerations = tolerations_of(&out);
    if after_tolerations.get(..before_tolerations.len()) != Some(&before_tolerations[..]) {
        return Err("the pod's own tolerations were not kept in order".into());
    }
    let injected = match &mutation {
        Mutation::Skip(reason) => return check_skip(pod, rules, nodes, reason),
        Mutation::Patch { injected, .. } => injected,
    };
    if injected.is_empty() != mutation.patch().0.is_empty() {
        return Err(format!("`injected` {injected:?} disagrees with the patch"));
    }
    let (Some(before), Some(after)) = (typed_spec(pod), typed_spec(&out)) else {
        return Err("a pod whose spec the model cannot read was mutated".into());
    };
    let (b, a) = (Placement::of(&before), Placement::of(&after));
    for node in nodes {
        let was = scheduling::affinity_allows(&b, node);
        let now = scheduling::affinity_allows(&a, node);
        let want = match rules.mode() {
            AffinityMode::Required => was && is_pool(rules, node),
            AffinityMode::Preferred => was,
        };
        if now != want {
            return Err(format!(
                "node {node:?}: allowed before {was}, after {now}, expected {want}"
            ));
        }
    }
    if rules.mode() == AffinityMode::Preferred {
        let spec = out.get("spec").cloned().unwrap_or_default();
        let prefs = pool_preferences(&spec, rules);
        if prefs.len() != 1 {
            return Err(format!("{} pool preferences, expected one", prefs.len()));
        }
        for node in nodes.iter().filter(|n| is_pool(rules, n)) {
            if let Ok(matching) = scheduling::matching_preferences(&a, node)
                && !matching.contains(&prefs[0])
            {
                return Err(format!("the pool preference does not count on {node:?}"));
            }
        }
    }
    // The pool's taints are tolerated; nothing covered was added; no time got shorter.
    let before_typed = typed_tolerations(&before_tolerations);
    let after_typed = typed_tolerations(&after_tolerations);
    for taint in pool_taints(rules) {
        if !after_typed.iter().any(|t| scheduling::tolerates(t, &taint)) {
            return Err(format!("pool taint {taint:?} not tolerated after mutation"));
        }
    }
    for w in rules.tolerations() {
        let added = after_typed[before_typed.len()..].contains(w);
        if added && scheduling::covered(&before_typed, w) {
            return Err(format!(
                "{w:?} added although the pod's own tolerations cover it"
            ));
        }
    }
    for taint in universe_taints(rules) {
        let (was, now) = (
            scheduling::stay(&before_typed, &taint),
            scheduling::stay(&after_typed, &taint),
        );
        // A time may get shorter only where a pool toleration with a time of its own (which
        // the configuration asks for) tolerates the taint and nothing covered it already.
        let timed = rules
            .tolerations()
            .iter()
            .any(|t| t.toleration_seconds.is_some() && scheduling::tolerates(t, &taint));
        if now < was && !timed {
            return Err(format!(
                "taint {taint:?}: stay {was:?} shortened to {now:?}"
            ));
        }
    }
    Ok(())
}

/// Taints over the keys, values and effects that the pods and rules of the tests use.
fn universe_taints(rules: &Rules) -> Vec<Taint> {
    let (pool_key, pool_value) = rules.pool_label();
    let mut out = Vec::new();
    for key in [
        pool_key,
        "node.kubernetes.io/not-ready",
        "dedicated",
        "any-key",
    ] {
        for value in [Some(pool_value), Some("batch"), Some("any-value"), None] {
            for effect in EFFECTS {
                out.push(Taint {
                    key: key.to_owned(),
                    value: value.map(str::to_owned),
                    effect: effect.to_owned(),
                    time_added: None,
                });
            }
        }
    }
    out
}

fn check_skip(
    pod: &Value,
    rules: &Rules,
    nodes: &[Node],
    reason: &SkipReason,
) -> Result<(), String> {
    let spec = typed_spec(pod);
    match reason {
        SkipReason::ExcludesPool(_) => {
            let Some(spec) = spec else {
                return Err("ExcludesPool for a spec the model cannot read".into());
            };
            let p = Placement::of(&spec);
            if let Some(n) = nodes
                .iter()
                .find(|n| is_pool(rules, n) && scheduling::affinity_allows(&p, n))
            {
                return Err(format!(
                    "said to exclude the pool, but allows pool node {n:?}"
                ));
            }
        }
        SkipReason::NodePinned(_) => {
            let owned_by_daemonset = pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|os| {
                    os.iter()
                        .any(|o| o["kind"] == "DaemonSet" && o["controller"] == true)
                });
            let terms = pod
                .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
                .and_then(Value::as_array);
            let all_pinned = terms.is_some_and(|ts| {
                !ts.is_empty()
                    && ts.iter().all(|t| {
                        t["matchFields"].as_array().is_some_and(|fs| {
                            fs.iter().any(|f| {
                                f["key"] == "metadata.name"
                                    && f["operator"] == "In"
                                    && f["values"].as_array().is_some_and(|v| v.len() == 1)
                            })
                        })
                    })
            });
            if !owned_by_daemonset && !all_pinned {
                return Err("NodePinned for a pod that is not pinned".into());
            }
        }
        SkipReason::UnexpectedShape(at) => {
            // Fine for shapes the API server would refuse; the model must not read one it
            // would accept as an ordinary pod.
            if spec.is_some() && !shape_is_odd(pod) {
                return Err(format!("UnexpectedShape({at}) for a readable pod"));
            }
        }
        SkipReason::AlreadyBound(_) | SkipReason::OptedOut | SkipReason::MirrorPod => {}
    }
    Ok(())
}

/// Shapes the typed model reads but the engine may refuse: metadata or annotations that are
/// not objects.
fn shape_is_odd(pod: &Value) -> bool {
    let not_object = |v: Option<&Value>| v.is_some_and(|v| !v.is_object() && !v.is_null());
    not_object(pod.get("metadata")) || not_object(pod.pointer("/metadata/annotations"))
}

/// A pod as JSON from a spec (and optional metadata), for tests that build them.
pub fn pod_with(spec: Map<String, Value>, metadata: Option<Map<String, Value>>) -> Value {
    let mut p = Map::new();
    p.insert("kind".into(), json!("Pod"));
    if let Some(m) = metadata {
        p.insert("metadata".into(), Value::Object(m));
    }
    p.insert("spec".into(), Value::Object(spec));
    Value::Object(p)
}
