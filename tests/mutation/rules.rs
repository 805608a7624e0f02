//! The mutation engine over a table of pod shapes: each case asserts the exact pod that results
//! from applying the patch, and that a second pass adds nothing.

use serde_json::{Value, json};
use warmpool::config::{AffinityMode, Config};
use warmpool::core::mutation::{Injected, Mutation, Rules, SkipReason, mutate};

fn rules(mode: AffinityMode) -> Rules {
    let mut config = Config::default();
    config.pool.affinity = mode;
    Rules::from_config(&config)
}

/// Applies what `mutate` returns and checks reinvocation: a second pass is an empty patch.
fn mutated(pod: Value, mode: AffinityMode) -> Value {
    let rules = rules(mode);
    let mut out = pod.clone();
    let mutation = mutate(&pod, &rules);
    json_patch::patch(&mut out, &mutation.patch()).expect("patch applies");
    let again = mutate(&out, &rules);
    assert!(
        again.patch().0.is_empty(),
        "second pass must be empty, got {:?}",
        again.patch()
    );
    out
}

fn pool_expr() -> Value {
    json!({"key": "workload-type", "operator": "In", "values": ["cargocats"]})
}

fn pool_toleration() -> Value {
    json!({"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"})
}

fn required(terms: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"a": "b"}}, "spec": spec})
}

fn containers() -> Value {
    json!([{"name": "app", "image": "nginx"}])
}

/// A plain pod whose required node affinity is `terms` (`nodeSelectorTerms`).
fn pod_requiring(terms: Value) -> Value {
    pod(json!({"containers": containers(), "affinity": required(terms)}))
}

/// Whether `mutate` leaves `pod` alone because its own constraints already keep it off the pool
/// (whichever of them does).
fn excludes_the_pool(pod: &Value, mode: AffinityMode) -> bool {
    matches!(
        mutate(pod, &rules(mode)),
        Mutation::Skip(SkipReason::ExcludesPool(_))
    )
}

#[test]
fn plain_pod_gets_affinity_tolerations_and_annotation() {
    let out = mutated(
        pod(json!({"containers": containers()})),
        AffinityMode::Required,
    );
    assert_eq!(
        out,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"a": "b", "warmpool.io/injected": "node-affinity,tolerations"}},
            "spec": {
                "containers": containers(),
                "affinity": required(json!([{"matchExpressions": [pool_expr()]}])),
                "tolerations": [pool_toleration()],
            }
        })
    );
}

#[test]
fn pool_expression_is_anded_into_every_existing_required_term() {
    let terms = json!([
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]},
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}],
         "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-9"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
    ]);
    let out = mutated(pod_requiring(terms), AffinityMode::Required);
    assert_eq!(
        out["spec"]["affinity"],
        required(json!([
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}, pool_expr()]},
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}, pool_expr()],
             "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-9"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}], "matchExpressions": [pool_expr()]}
        ]))
    );
}

#[test]
fn a_term_that_already_has_the_expression_is_not_duplicated() {
    let terms = json!([
        {"matchExpressions": [pool_expr()]},
        {"matchExpressions": [{"key": "x", "operator": "Exists"}]}
    ]);
    let out = mutated(pod_requiring(terms), AffinityMode::Required);
    assert_eq!(
        out["spec"]["affinity"],
        required(json!([
            {"matchExpressions": [pool_expr()]},
            {"matchExpressions": [{"key": "x", "operator": "Exists"}, pool_expr()]}
        ]))
    );
}

#[test]
fn existing_preferred_terms_and_pod_affinities_are_untouched() {
    let affinity = json!({
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
        ]},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}
    });
    let out = mutated(
        pod(json!({"containers": containers(), "affinity": affinity.clone()})),
        AffinityMode::Required,
    );
    let mut expected = affinity;
    expected["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": [{"matchExpressions": [pool_expr()]}]});
    assert_eq!(out["spec"]["affinity"], expected);
}

#[test]
fn pod_anti_affinity_only_gets_a_node_affinity_beside_it() {
    let anti = json!({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"labelSelector": {}, "topologyKey": "zone"}}
    ]});
    let out = mutated(
        pod(json!({"containers": containers(), "affinity": {"podAntiAffinity": anti.clone()}})),
        AffinityMode::Required,
    );
    let mut expected = required(json!([{"matchExpressions": [pool_expr()]}]));
    expected["podAntiAffinity"] = anti;
    assert_eq!(out["spec"]["affinity"], expected);
}

#[test]
fn existing_tolerations_are_kept_and_an_equal_one_is_not_added_again() {
    let defaults = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    ]);
    let out = mutated(
        pod(json!({"containers": containers(), "tolerations": defaults.clone()})),
        AffinityMode::Required,
    );
    let mut expected = defaults.as_array().unwrap().clone();
    expected.push(pool_toleration());
    assert_eq!(out["spec"]["tolerations"], Value::Array(expected));

    // Equal once the API's default operator is filled in.
    let equal = json!([{"key": "workload-type", "value": "cargocats", "effect": "NoSchedule"}]);
    let out = mutated(
        pod(json!({"containers": containers(), "tolerations": equal.clone()})),
        AffinityMode::Required,
    );
    assert_eq!(out["spec"]["tolerations"], equal);
    assert_eq!(
        out["metadata"]["annotations"]["warmpool.io/injected"],
        "node-affinity"
    );
}

#[test]
fn annotation_keys_with_slashes_and_tildes_survive() {
    let p = json!({
        "metadata": {"annotations": {"example.com/a~b": "1", "warmpool.io/other": "x"}},
        "spec": {"containers": containers()}
    });
    let out = mutated(p, AffinityMode::Required);
    assert_eq!(
        out["metadata"]["annotations"],
        json!({"example.com/a~b": "1", "warmpool.io/other": "x", "warmpool.io/injected": "node-affinity,tolerations"})
    );
    let patch = mutate(&out, &rules(AffinityMode::Required));
    assert_eq!(patch.patch().0.len(), 0);
}

#[test]
fn the_annotation_path_is_json_pointer_escaped() {
    let p = json!({"metadata": {"annotations": {}}, "spec": {"containers": containers()}});
    let patch = serde_json::to_value(mutate(&p, &rules(AffinityMode::Required)).patch()).unwrap();
    let paths: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/warmpool.io~1injected"),
        "{paths:?}"
    );
}

#[test]
fn no_annotations_or_no_metadata_at_all() {
    let out = mutated(
        json!({"metadata": {"generateName": "web-"}, "spec": {"containers": containers()}}),
        AffinityMode::Required,
    );
    assert_eq!(
        out["metadata"],
        json!({"generateName": "web-", "annotations": {"warmpool.io/injected": "node-affinity,tolerations"}})
    );
    let out = mutated(
        json!({"spec": {"containers": containers()}}),
        AffinityMode::Required,
    );
    assert_eq!(
        out["metadata"],
        json!({"annotations": {"warmpool.io/injected": "node-affinity,tolerations"}})
    );
}

#[test]
fn bound_pods_are_skipped() {
    let p = pod(json!({"containers": containers(), "nodeName": "ip-10-0-0-1"}));
    assert_eq!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Skip(SkipReason::AlreadyBound("ip-10-0-0-1".into()))
    );
}

#[test]
fn the_skip_annotation_is_honoured() {
    let p = json!({"metadata": {"annotations": {"warmpool.io/skip": "true"}}, "spec": {"containers": containers()}});
    assert_eq!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Skip(SkipReason::OptedOut)
    );
    // Any other value does not opt out.
    let p = json!({"metadata": {"annotations": {"warmpool.io/skip": "false"}}, "spec": {"containers": containers()}});
    assert!(matches!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Patch { .. }
    ));
}

#[test]
fn mirror_pods_are_skipped() {
    let p = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}, "spec": {"containers": containers()}});
    assert_eq!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Skip(SkipReason::MirrorPod)
    );
}

#[test]
fn a_pod_whose_affinity_excludes_the_pool_is_left_alone() {
    let not_in = required(json!([
        {"matchExpressions": [{"key": "workload-type", "operator": "NotIn", "values": ["cargocats"]}]}
    ]));
    for mode in [AffinityMode::Required, AffinityMode::Preferred] {
        let p = pod(json!({"containers": containers(), "affinity": not_in.clone()}));
        assert_eq!(
            mutate(&p, &rules(mode)),
            Mutation::Skip(SkipReason::ExcludesPool("workload-type=cargocats".into()))
        );
    }
    let other_pool = required(json!([
        {"matchExpressions": [{"key": "workload-type", "operator": "In", "values": ["batch"]}]},
        {"matchExpressions": [{"key": "workload-type", "operator": "DoesNotExist"}]}
    ]));
    let p = pod(json!({"containers": containers(), "affinity": other_pool}));
    assert!(excludes_the_pool(&p, AffinityMode::Required));
    let p = pod(json!({"containers": containers(), "nodeSelector": {"workload-type": "batch"}}));
    assert!(excludes_the_pool(&p, AffinityMode::Required));
}

#[test]
fn one_excluding_term_among_others_still_gets_mutated() {
    // Terms are ORed: the second term allows pool nodes, so the pod can still go there.
    let terms = json!([
        {"matchExpressions": [{"key": "workload-type", "operator": "NotIn", "values": ["cargocats"]}]},
        {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}
    ]);
    let p = pod_requiring(terms);
    assert!(matches!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Patch { .. }
    ));
}

#[test]
fn preferred_mode_adds_a_weighted_preference() {
    let existing = json!({"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}});
    let out = mutated(
        pod(
            json!({"containers": containers(), "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [existing.clone()]}}}),
        ),
        AffinityMode::Preferred,
    );
    assert_eq!(
        out["spec"]["affinity"],
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            existing,
            {"weight": 100, "preference": {"matchExpressions": [pool_expr()]}}
        ]}})
    );
    let out = mutated(
        pod(json!({"containers": containers()})),
        AffinityMode::Preferred,
    );
    assert_eq!(
        out["spec"]["affinity"],
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [pool_expr()]}}
        ]}})
    );
    assert_eq!(out["spec"]["tolerations"], json!([pool_toleration()]));
}

#[test]
fn a_fully_mutated_pod_reports_nothing_injected() {
    let p = json!({
        "metadata": {"annotations": {"warmpool.io/injected": "node-affinity,tolerations"}},
        "spec": {"containers": containers(),
                 "affinity": required(json!([{"matchExpressions": [pool_expr()]}])),
                 "tolerations": [pool_toleration()]}
    });
    assert_eq!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Patch {
            patch: json_patch::Patch(vec![]),
            injected: vec![]
        }
    );
}

#[test]
fn a_partially_mutated_pod_gets_the_rest_and_the_annotation_merges() {
    // Another webhook (or a user) removed our toleration after the first pass.
    let p = json!({
        "metadata": {"annotations": {"warmpool.io/injected": "node-affinity"}},
        "spec": {"containers": containers(),
                 "affinity": required(json!([{"matchExpressions": [pool_expr()]}]))}
    });
    match mutate(&p, &rules(AffinityMode::Required)) {
        Mutation::Patch { injected, .. } => assert_eq!(injected, vec![Injected::Tolerations]),
        other => panic!("{other:?}"),
    }
    let out = mutated(p, AffinityMode::Required);
    assert_eq!(
        out["metadata"]["annotations"]["warmpool.io/injected"],
        "node-affinity,tolerations"
    );
}

#[test]
fn shapes_we_do_not_understand_are_left_alone() {
    for p in [
        json!("a string"),
        json!({"spec": "nope"}),
        json!({"metadata": {"annotations": []}, "spec": {"containers": []}}),
        json!({"spec": {"affinity": 3}}),
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": {}}}}}}),
        json!({"spec": {"tolerations": {"key": "x"}}}),
        json!({"metadata": {}}),
    ] {
        assert!(
            matches!(
                mutate(&p, &rules(AffinityMode::Required)),
                Mutation::Skip(SkipReason::UnexpectedShape(_))
            ),
            "{p}"
        );
    }
}

#[test]
fn no_terms_or_only_empty_terms_match_no_node_and_are_left_alone() {
    // Kubernetes: no term, or a term with neither expressions nor fields, matches no node.
    // Giving such a pod the pool expression would widen where it may run.
    for terms in [
        json!([]),
        json!([{}]),
        json!([{"matchExpressions": []}, {"matchFields": []}]),
    ] {
        let p = pod_requiring(terms.clone());
        assert!(excludes_the_pool(&p, AffinityMode::Required), "{terms}");
    }
}

#[test]
fn an_empty_term_beside_others_stays_empty() {
    let other = json!({"key": "disk", "operator": "In", "values": ["ssd"]});
    let p = pod_requiring(json!([{}, {"matchExpressions": [other]}]));
    let out = mutated(p, AffinityMode::Required);
    assert_eq!(
        out["spec"]["affinity"],
        required(json!([{}, {"matchExpressions": [other, pool_expr()]}]))
    );
}

#[test]
fn pods_pinned_to_one_node_are_left_alone() {
    let pin = |node: &str| json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    // Every term names a node: a DaemonSet's pod as its controller makes it.
    let p = pod_requiring(json!([pin("node-a")]));
    match mutate(&p, &rules(AffinityMode::Required)) {
        Mutation::Skip(SkipReason::NodePinned(why)) => assert!(why.contains("node-a"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Owned by a DaemonSet, before its controller has pinned it.
    let mut p = pod(json!({"containers": containers()}));
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]);
    match mutate(&p, &rules(AffinityMode::Preferred)) {
        Mutation::Skip(SkipReason::NodePinned(why)) => assert!(why.contains("agent"), "{why}"),
        other => panic!("{other:?}"),
    }
    // One term pinned, another free: not pinned, and both terms get the pool expression.
    let free = json!({"matchExpressions": [{"key": "disk", "operator": "Exists"}]});
    let p = pod_requiring(json!([pin("node-a"), free]));
    assert!(matches!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Patch { .. }
    ));
    // NotIn a node is no pin.
    let not_pin = json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-a"]}]});
    let p = pod_requiring(json!([not_pin]));
    assert!(matches!(
        mutate(&p, &rules(AffinityMode::Required)),
        Mutation::Patch { .. }
    ));
}

#[test]
fn a_pod_that_already_tolerates_the_pool_taint_gets_no_second_toleration() {
    for existing in [
        json!({"operator": "Exists"}),
        json!({"key": "workload-type", "operator": "Exists"}),
        json!({"key": "workload-type", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "workload-type", "value": "cargocats"}),
    ] {
        let p = pod(json!({"containers": containers(), "tolerations": [existing.clone()]}));
        let out = mutated(p, AffinityMode::Required);
        assert_eq!(out["spec"]["tolerations"], json!([existing]), "{existing}");
        assert_eq!(
            out["metadata"]["annotations"]["warmpool.io/injected"],
            "node-affinity"
        );
    }
    // A NoExecute-only or another value's toleration does not cover the pool's NoSchedule taint.
    for existing in [
        json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
        json!({"key": "workload-type", "value": "batch"}),
    ] {
        let p = pod(json!({"containers": containers(), "tolerations": [existing.clone()]}));
        let out = mutated(p, AffinityMode::Required);
        assert_eq!(
            out["spec"]["tolerations"],
            json!([existing, pool_toleration()])
        );
    }
}

#[test]
fn a_pool_toleration_with_a_time_is_not_added_over_a_longer_one() {
    // Upstream evicts after the shortest matching tolerationSeconds: adding ours would
    // shorten how long the pod survives the taint.
    let config = Config::from_yaml(
        "pool: {tolerations: [{key: workload-type, operator: Exists, effect: NoExecute, tolerationSeconds: 60}]}",
    )
    .unwrap();
    let rules = Rules::from_config(&config);
    for (existing, added) in [
        (
            json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute"}),
            false,
        ),
        (
            json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            false,
        ),
        (
            json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
            true,
        ),
    ] {
        let p = pod(json!({"containers": containers(), "tolerations": [existing.clone()]}));
        let patch = mutate(&p, &rules).patch();
        let mut out = p.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        let n = out["spec"]["tolerations"].as_array().unwrap().len();
        assert_eq!(n == 2, added, "{existing}");
    }
}

#[test]
fn a_conflicting_node_selector_excludes_the_pool() {
    let p = pod(json!({"containers": containers(), "nodeSelector": {"workload-type": "batch"}}));
    assert!(excludes_the_pool(&p, AffinityMode::Required));
    // nodeSelector and affinity together: each allows the pool alone, not both at once.
    let p = pod(
        json!({"containers": containers(), "nodeSelector": {"disk": "ssd"},
        "affinity": required(json!([{"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]))}),
    );
    assert!(excludes_the_pool(&p, AffinityMode::Preferred));
}

#[test]
fn null_fields_count_as_absent() {
    let p = json!({"metadata": {"annotations": null}, "spec": {"containers": containers(), "affinity": null, "tolerations": null}});
    let rules = rules(AffinityMode::Required);
    let patch = mutate(&p, &rules).patch();
    let mut out = p.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    assert_eq!(out["spec"]["tolerations"], json!([pool_toleration()]));
    assert_eq!(
        out["metadata"]["annotations"],
        json!({"warmpool.io/injected": "node-affinity,tolerations"})
    );
}
