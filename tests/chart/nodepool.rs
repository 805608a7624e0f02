//! The Karpenter v1 NodePool (and EC2NodeClass) in both flavours.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{KARPENTER_WITH_EC2_NODE_CLASS, s, strings};
use support::chart::{all_of, find, helm, render, try_render};

#[test]
fn nodepool_is_karpenter_v1_in_both_flavours() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, "wp", "ns", &[]);
    assert!(all_of(&docs, "NodePool").is_empty(), "off by default");

    let requirements = |np: &Value| -> BTreeMap<String, Value> {
        np["spec"]["template"]["spec"]["requirements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (s(&r["key"]).to_owned(), r.clone()))
            .collect()
    };
    for (flavor, group, kind) in [
        ("autoMode", "eks.amazonaws.com", "NodeClass"),
        ("karpenter", "karpenter.k8s.aws", "EC2NodeClass"),
    ] {
        let docs = render(
            &helm,
            "wp",
            "ns",
            &[
                "--set",
                "nodePool.enabled=true",
                "--set",
                &format!("nodePool.flavor={flavor}"),
            ],
        );
        let np = find(&docs, "NodePool", Some("wp-warmpool"));
        assert_eq!(
            np["apiVersion"], "karpenter.sh/v1",
            "{flavor}: never v1beta1"
        );
        let spec = &np["spec"];
        assert_eq!(
            spec["template"]["spec"]["nodeClassRef"],
            json!({"group": group, "kind": kind, "name": "default"}),
            "{flavor}"
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"],
            json!({"workload-type": "cargocats"})
        );
        assert_eq!(
            spec["template"]["spec"]["taints"],
            json!([{"key": "workload-type", "value": "cargocats", "effect": "NoSchedule"}])
        );
        let req = requirements(np);
        assert_eq!(
            req["node.kubernetes.io/instance-type"],
            json!({"key": "node.kubernetes.io/instance-type", "operator": "In",
                   "values": ["m5.large", "m5.xlarge", "m6i.large", "m6i.xlarge"]})
        );
        assert_eq!(
            req["karpenter.sh/capacity-type"],
            json!({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]})
        );
        assert_eq!(strings(&req["kubernetes.io/arch"]["values"]), ["amd64"]);
        // Auto Mode refuses karpenter.k8s.aws/* labels and self-managed Karpenter does not
        // know eks.amazonaws.com/*: the defaults use neither.
        for key in req.keys() {
            assert!(
                !key.starts_with("karpenter.k8s.aws/") && !key.starts_with("eks.amazonaws.com/"),
                "{flavor}: {key}"
            );
        }
        assert_eq!(
            spec["template"]["spec"]["expireAfter"], "336h",
            "in template.spec (v1)"
        );
        assert!(spec["disruption"].get("expireAfter").is_none());
        assert_eq!(spec["disruption"]["consolidationPolicy"], "WhenEmpty");
        assert_eq!(spec["disruption"]["consolidateAfter"], "10m");
        // Drift (a new AMI) replaces one warm node at a time, and a draining node is
        // terminated after an hour at most (Auto Mode would wait 24 h).
        assert_eq!(
            spec["disruption"]["budgets"],
            json!([{"nodes": "10%"}, {"nodes": "1", "reasons": ["Drifted"]}])
        );
        assert_eq!(spec["template"]["spec"]["terminationGracePeriod"], "1h");
        assert_eq!(spec["limits"], json!({"cpu": "64", "memory": "256Gi"}));
        assert!(
            all_of(&docs, "EC2NodeClass").is_empty(),
            "{flavor}: no EC2NodeClass unless asked"
        );
    }

    let docs = render(&helm, "wp", "ns", KARPENTER_WITH_EC2_NODE_CLASS);
    let nc = find(&docs, "EC2NodeClass", None);
    assert_eq!(nc["apiVersion"], "karpenter.k8s.aws/v1");
    let np = find(&docs, "NodePool", None);
    assert_eq!(
        np["spec"]["template"]["spec"]["nodeClassRef"]["name"], nc["metadata"]["name"],
        "the NodePool uses the chart's EC2NodeClass"
    );
    assert_eq!(nc["spec"]["role"], "KarpenterNodeRole-demo");
    assert_eq!(
        nc["spec"]["subnetSelectorTerms"],
        json!([{"tags": {"karpenter.sh/discovery": "demo"}}])
    );
    assert_eq!(
        nc["spec"]["securityGroupSelectorTerms"],
        nc["spec"]["subnetSelectorTerms"]
    );
    assert_eq!(
        nc["spec"]["amiSelectorTerms"],
        json!([{"alias": "al2023@latest"}])
    );
}

#[test]
fn drift_budgets_can_be_scheduled_and_are_checked() {
    let Some(helm) = helm() else { return };
    let values = tempfile::NamedTempFile::new().unwrap();
    let file = values.path().to_str().unwrap();
    std::fs::write(
        file,
        r#"
nodePool:
  enabled: true
  terminationGracePeriod: 30m
  disruption:
    budgets:
      - {nodes: "1", reasons: [Drifted]}
      - {nodes: "0", reasons: [Drifted], schedule: "0 8 * * mon-fri", duration: 10h}
"#,
    )
    .unwrap();
    let docs = render(&helm, "wp", "ns", &["-f", file]);
    let np = find(&docs, "NodePool", None);
    assert_eq!(
        np["spec"]["disruption"]["budgets"][1],
        json!({"nodes": "0", "reasons": ["Drifted"], "schedule": "0 8 * * mon-fri", "duration": "10h"})
    );
    assert_eq!(
        np["spec"]["template"]["spec"]["terminationGracePeriod"],
        "30m"
    );
    // The schema refuses what Karpenter would: a schedule without a duration, an unknown
    // reason, a node count that is not one.
    for (budget, what) in [
        (r#"{nodes: "0", schedule: "@daily"}"#, "duration"),
        (r#"{nodes: "1", reasons: [Expired]}"#, "reasons"),
        (r#"{nodes: "one"}"#, "nodes"),
    ] {
        std::fs::write(
            file,
            format!("nodePool:\n  enabled: true\n  disruption:\n    budgets: [{budget}]\n"),
        )
        .unwrap();
        let err = try_render(&helm, "wp", "ns", &["-f", file])
            .err()
            .unwrap_or_else(|| panic!("{budget} accepted"));
        assert!(
            err.contains("budgets") && err.contains(what),
            "{budget}: {err}"
        );
    }
}

#[test]
fn node_class_ref_overrides_the_flavour() {
    let Some(helm) = helm() else { return };
    // A NodeClass of the user's own name, or another provider's class (the tests' KWOK one).
    for flavor in ["autoMode", "karpenter"] {
        let docs = render(
            &helm,
            "wp",
            "ns",
            &[
                "--set",
                "nodePool.enabled=true",
                "--set",
                &format!("nodePool.flavor={flavor}"),
                "--set",
                "nodePool.nodeClassRef.group=karpenter.kwok.sh",
                "--set",
                "nodePool.nodeClassRef.kind=KWOKNodeClass",
                "--set",
                "nodePool.nodeClassRef.name=warm",
            ],
        );
        let np = find(&docs, "NodePool", None);
        assert_eq!(
            np["spec"]["template"]["spec"]["nodeClassRef"],
            json!({"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "warm"}),
            "{flavor}"
        );
    }
    // All three are needed: Karpenter refuses a reference without its group or kind.
    let err = try_render(
        &helm,
        "wp",
        "ns",
        &[
            "--set",
            "nodePool.enabled=true",
            "--set",
            "nodePool.nodeClassRef.name=warm",
        ],
    )
    .expect_err("a nodeClassRef without group and kind is refused");
    assert!(
        err.contains("nodeClassRef") && err.contains("group"),
        "{err}"
    );
}
