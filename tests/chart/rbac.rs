//! The chart's RBAC is exactly what the reconciler uses.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::strings;
use support::chart::{all_of, find, helm, render};

/// (apiGroup, resource, resourceNames joined by ",") → verbs, for a Role or ClusterRole.
type Rules = BTreeMap<(String, String, String), BTreeSet<String>>;

fn rules(role: &Value) -> Rules {
    let mut out = Rules::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("nonResourceURLs").is_none());
        let names = rule
            .get("resourceNames")
            .map(|n| strings(n).join(","))
            .unwrap_or_default();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.entry((group.clone(), resource, names.clone()))
                    .or_default()
                    .extend(strings(&rule["verbs"]));
            }
        }
    }
    out
}

fn expected(list: &[(&str, &str, &str, &[&str])]) -> Rules {
    list.iter()
        .map(|(g, r, names, verbs)| {
            (
                (g.to_string(), r.to_string(), names.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn rbac_is_exactly_what_the_reconciler_uses() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, "wp", "warmpool-system", &[]);
    let cluster_role = find(&docs, "ClusterRole", Some("wp-warmpool"));
    // What src/reconcile uses: namespaces (metadata watch, get of its own, label by SSA), pods
    // (watch; its own pod listed by name), warm nodes (watch, for slot auto and the time to
    // Ready), the kubelet's Pulled Events (watch), Karpenter's NodePools (list: the warm ones'
    // consolidation policy and limits), Events (kube-runtime Recorder: create, patch), and the
    // objects it server-side applies, by name (SSA = patch, + create when absent, + get/delete to
    // re-create on an immutable change, + list/watch by metadata.name for drift).
    let own = &["get", "list", "watch", "create", "patch", "delete"][..];
    assert_eq!(
        rules(cluster_role),
        expected(&[
            ("", "namespaces", "", &["get", "list", "watch", "patch"]),
            ("", "pods", "", &["list", "watch"]),
            ("", "nodes", "", &["list", "watch"]),
            ("", "events", "", &["list", "watch"]),
            ("events.k8s.io", "events", "", &["create", "patch"]),
            ("karpenter.sh", "nodepools", "", &["list"]),
            (
                "scheduling.k8s.io",
                "priorityclasses",
                "warmpool-placeholder",
                own
            ),
        ])
    );
    let role = find(&docs, "Role", Some("wp-warmpool"));
    assert_eq!(role["metadata"]["namespace"], "warmpool-system");
    assert_eq!(
        rules(role),
        expected(&[
            ("apps", "deployments", "warmpool-prewarmer", own),
            (
                "apps",
                "daemonsets",
                "warmpool-image-cache,warmpool-image-cache-discovered",
                own,
            ),
            ("apps", "replicasets", "", &["get"]),
            (
                "coordination.k8s.io",
                "leases",
                "warmpool-reconciler",
                &["get", "update"]
            ),
            ("coordination.k8s.io", "leases", "", &["create"]),
        ])
    );
    // With prewarmer.spareSlots auto, the arrivals record too: that one ConfigMap, by name.
    let auto = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "prewarmer.spareSlots.auto.max=20"],
    );
    let mut with_record = rules(role);
    with_record.insert(
        (
            String::new(),
            "configmaps".into(),
            warmpool::core::names::ARRIVALS.into(),
        ),
        ["get", "create", "patch"].map(String::from).into(),
    );
    assert_eq!(rules(find(&auto, "Role", Some("wp-warmpool"))), with_record);
    assert_eq!(
        rules(find(&auto, "ClusterRole", Some("wp-warmpool"))),
        rules(cluster_role),
        "nothing cluster-wide"
    );
    // With tenants.repair: evict, the eviction of escaped tenant pods, and nothing else.
    let evict = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "tenants.repair=evict"],
    );
    let mut with_eviction = rules(cluster_role);
    with_eviction.insert(
        (String::new(), "pods/eviction".into(), String::new()),
        ["create"].map(String::from).into(),
    );
    assert_eq!(
        rules(find(&evict, "ClusterRole", Some("wp-warmpool"))),
        with_eviction
    );
    // The names are the reconciler's own constants.
    use warmpool::core::names::{IMAGE_CACHE, LEASE, PREWARMER, PRIORITY_CLASS};
    assert_eq!(
        (PRIORITY_CLASS, PREWARMER, IMAGE_CACHE, LEASE),
        (
            "warmpool-placeholder",
            "warmpool-prewarmer",
            "warmpool-image-cache",
            "warmpool-reconciler"
        )
    );
    for doc in all_of(&docs, "ClusterRole")
        .into_iter()
        .chain(all_of(&docs, "Role"))
    {
        for rule in doc["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !strings(&rule[field]).contains(&"*".to_owned()),
                    "no wildcards"
                );
            }
            assert!(!strings(&rule["resources"]).contains(&"secrets".to_owned()));
        }
    }
    let sa = find(&docs, "ServiceAccount", None);
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        let b = find(&docs, binding, None);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "warmpool-system"}])
        );
    }
    assert_eq!(
        find(&docs, "Deployment", None)["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
}

#[test]
fn the_status_role_is_exactly_what_warmpool_status_reads() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, "wp", "warmpool-system", &[]);
    // src/status/collect.rs: cluster-wide lists of namespaces, pods, nodes, Events (Warnings;
    // warmpool's HeadroomRestored), MutatingWebhookConfigurations and Karpenter's NodePools; in
    // the release namespace a list of Deployments and DaemonSets, the chart's ConfigMap by name and a webhook
    // pod's metrics through the pod proxy. Never the serving Secret (it holds the key).
    let cluster_role = find(&docs, "ClusterRole", Some("wp-warmpool-status"));
    assert_eq!(
        rules(cluster_role),
        expected(&[
            ("", "namespaces", "", &["list"]),
            ("", "pods", "", &["list"]),
            ("", "nodes", "", &["list"]),
            ("", "events", "", &["list"]),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                "",
                &["list"]
            ),
            ("karpenter.sh", "nodepools", "", &["list"]),
        ])
    );
    let role = find(&docs, "Role", Some("wp-warmpool-status"));
    assert_eq!(role["metadata"]["namespace"], "warmpool-system");
    assert_eq!(
        rules(role),
        expected(&[
            ("apps", "deployments", "", &["list"]),
            ("apps", "daemonsets", "", &["list"]),
            ("", "configmaps", "wp-warmpool", &["get"]),
            ("", "pods/proxy", "", &["get"]),
        ])
    );
    // The ConfigMap it may read is the one the webhook Deployment mounts (status follows the
    // Deployment's volume `config` to it).
    let deployment = find(&docs, "Deployment", None);
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    let config = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .expect("a config volume");
    assert_eq!(config["configMap"]["name"], "wp-warmpool");
    find(&docs, "ConfigMap", Some("wp-warmpool"));
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        assert!(
            all_of(&docs, kind)
                .iter()
                .all(|b| b["metadata"]["name"] != "wp-warmpool-status"),
            "no binding without statusRole.subjects"
        );
    }
    // Bound to the subjects given, both roles.
    let subject =
        json!({"kind": "Group", "name": "platform", "apiGroup": "rbac.authorization.k8s.io"});
    let bound = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set-json", &format!("statusRole.subjects=[{subject}]")],
    );
    for (kind, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = find(&bound, kind, Some("wp-warmpool-status"));
        assert_eq!(b["subjects"], json!([subject]));
        assert_eq!(
            b["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "wp-warmpool-status"})
        );
    }
    // Off: none of them.
    let off = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "statusRole.create=false"],
    );
    for kind in ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"] {
        assert!(
            all_of(&off, kind)
                .iter()
                .all(|d| d["metadata"]["name"] != "wp-warmpool-status"),
            "{kind}"
        );
    }
}
