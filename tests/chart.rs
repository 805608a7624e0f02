//! The Helm chart (charts/warmpool): lint, render and assert, schema, the real API server
//! (server-side dry run of every variant, CEL matchConditions evaluated by it), and a real
//! install → upgrade → uninstall on the local control plane.
//!
//! Helm comes from tests/tools/helm.sh (its official Go module, cached), the control plane from
//! tests/cluster/cluster.sh; without them these tests SKIP loudly, except in CI where they fail.

#[path = "chart/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use harness::{
    Cluster, all_of, cluster, eventually, find, helm, kinds, render, text, try_render, unique,
};
use serde_json::{Value, json};

/// base64("-----BEGIN CERTIFICATE-----\n"): a caBundle for certs.mode=provided.
const SOME_CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";

/// Every mode and flavour the chart has, as `helm --set` arguments.
const VARIANTS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    (
        "certs.mode=cert-manager",
        &["--set", "certs.mode=cert-manager"],
    ),
    (
        "certs.mode=provided",
        &[
            "--set",
            "certs.mode=provided",
            "--set",
            "certs.provided.secretName=my-webhook-tls",
            "--set",
            "certs.provided.caBundle=LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
        ],
    ),
    (
        "nodePool.flavor=autoMode",
        &["--set", "nodePool.enabled=true"],
    ),
    (
        "nodePool.flavor=karpenter",
        &[
            "--set",
            "nodePool.enabled=true",
            "--set",
            "nodePool.flavor=karpenter",
        ],
    ),
    (
        "nodePool.flavor=karpenter with the chart's EC2NodeClass",
        &[
            "--set",
            "nodePool.enabled=true",
            "--set",
            "nodePool.flavor=karpenter",
            "--set",
            "nodePool.ec2NodeClass.create=true",
            "--set",
            "nodePool.ec2NodeClass.role=KarpenterNodeRole-demo",
            "--set",
            "nodePool.ec2NodeClass.clusterName=demo",
        ],
    ),
    (
        "every other switch flipped",
        &[
            "--set",
            "pool.affinity=preferred",
            "--set",
            "pool.taint.enabled=false",
            "--set",
            "prewarmer.slot.auto=true",
            "--set",
            "webhook.matchByName=false",
            "--set",
            "webhook.failurePolicy=Fail",
            "--set",
            "replicaCount=1",
            "--set",
            "podDisruptionBudget.enabled=false",
            "--set",
            "topologySpread.enabled=false",
            "--set",
            "priorityClass.create=false",
            "--set",
            "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    ),
];

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| s(x).to_owned())
        .collect()
}

/// The requirement of `key` in a namespaceSelector.
fn expression<'a>(selector: &'a Value, key: &str) -> &'a Value {
    selector["matchExpressions"]
        .as_array()
        .expect("matchExpressions")
        .iter()
        .find(|e| e["key"] == key)
        .unwrap_or_else(|| panic!("no matchExpression on {key} in {selector}"))
}

fn webhook_entry<'a>(mwc: &'a Value, name: &str) -> &'a Value {
    mwc["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no webhook entry {name} in {mwc}"))
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn config_of(docs: &[Value]) -> Value {
    let cm = find(docs, "ConfigMap", None);
    serde_norway::from_str(s(&cm["data"]["config.yaml"])).expect("config.yaml is YAML")
}

// ---------------------------------------------------------------------------------------------
// helm lint and helm template
// ---------------------------------------------------------------------------------------------

#[test]
fn helm_lint_passes_in_every_mode_and_flavour() {
    let Some(helm) = helm() else { return };
    let chart = harness::chart_dir();
    for (name, args) in VARIANTS {
        let mut all = vec!["lint", "--strict", chart.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = harness::run(&helm, &all, &[], None);
        assert!(
            out.status.success(),
            "helm lint ({name}) failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("0 chart(s) failed"), "{name}");
    }
}

#[test]
fn default_render_has_the_safe_webhook_configuration() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, "wp", "warmpool-system", &[]);
    let mwc = find(&docs, "MutatingWebhookConfiguration", Some("wp-warmpool"));
    let entries = mwc["webhooks"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "one entry by label, one by name");

    let secret = find(&docs, "Secret", Some("wp-warmpool-tls"));
    let excluded = [
        "warmpool-system",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ];
    for entry in entries {
        let name = s(&entry["name"]);
        assert_eq!(entry["admissionReviewVersions"], json!(["v1"]), "{name}");
        assert_eq!(entry["sideEffects"], "None", "{name}");
        assert_eq!(entry["failurePolicy"], "Ignore", "{name}");
        assert_eq!(entry["timeoutSeconds"], 5, "{name}");
        assert_eq!(entry["reinvocationPolicy"], "IfNeeded", "{name}");
        assert_eq!(
            entry["rules"],
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                    "resources": ["pods"], "scope": "Namespaced"}]),
            "{name}: pods, CREATE only"
        );
        assert!(entry.get("objectSelector").is_none(), "{name}");
        assert_eq!(
            entry["clientConfig"]["service"],
            json!({"name": "wp-warmpool", "namespace": "warmpool-system", "path": "/mutate", "port": 443}),
            "{name}"
        );
        assert_eq!(
            entry["clientConfig"]["caBundle"], secret["data"]["ca.crt"],
            "{name}: caBundle is the CA of the serving Secret"
        );
        // Its own namespace and the system ones are never sent to the webhook, so warmpool can
        // never block its own rollout or the control plane's.
        let names = expression(&entry["namespaceSelector"], "kubernetes.io/metadata.name");
        assert_eq!(names["operator"], "NotIn", "{name}");
        assert_eq!(strings(&names["values"]), excluded, "{name}");
    }

    let by_label = webhook_entry(mwc, "tenant-label.warmpool.io");
    let tenant = expression(&by_label["namespaceSelector"], "warmpool.io/tenant");
    assert_eq!(tenant["operator"], "In");
    assert_eq!(strings(&tenant["values"]), ["enabled"]);
    assert!(by_label.get("matchConditions").is_none());

    let by_name = webhook_entry(mwc, "tenant-name.warmpool.io");
    let tenant = expression(&by_name["namespaceSelector"], "warmpool.io/tenant");
    assert_eq!(tenant["operator"], "NotIn");
    let values = strings(&tenant["values"]);
    assert!(
        values.contains(&"disabled".to_owned()),
        "opted-out namespaces: {values:?}"
    );
    assert!(
        values.contains(&"enabled".to_owned()),
        "labelled namespaces are entry 1's, so a pod is sent once: {values:?}"
    );
    assert_eq!(
        by_name["matchConditions"],
        json!([{"name": "tenant-namespace-name", "expression": "request.namespace.startsWith('demo-')"}])
    );

    // The overridable ones.
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &[
            "--set",
            "webhook.failurePolicy=Fail",
            "--set",
            "webhook.timeoutSeconds=2",
            "--set",
            "webhook.excludeNamespaces={ops}",
        ],
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    for entry in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(entry["failurePolicy"], "Fail");
        assert_eq!(entry["timeoutSeconds"], 2);
        let names = expression(&entry["namespaceSelector"], "kubernetes.io/metadata.name");
        assert!(strings(&names["values"]).contains(&"ops".to_owned()));
    }

    // Clusters older than 1.30: the CEL entry can be turned off.
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "webhook.matchByName=false"],
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    assert_eq!(mwc["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(mwc["webhooks"][0]["name"], "tenant-label.warmpool.io");
}

#[test]
fn cel_expression_is_generated_from_the_globs() {
    let Some(helm) = helm() else { return };
    let cel = |patterns: &str| -> String {
        let docs = render(
            &helm,
            "wp",
            "warmpool-system",
            &[
                "--set-json",
                &format!("tenants.namespacePatterns={patterns}"),
            ],
        );
        let mwc = find(&docs, "MutatingWebhookConfiguration", None);
        s(&webhook_entry(mwc, "tenant-name.warmpool.io")["matchConditions"][0]["expression"])
            .to_owned()
    };
    assert_eq!(
        cel(r#"["demo-*","team-?"]"#),
        "request.namespace.startsWith('demo-') || request.namespace.matches('^team-.$')"
    );
    for (glob, expected) in [
        ("payments", "request.namespace == 'payments'"),
        ("*-prod", "request.namespace.endsWith('-prod')"),
        ("*", "true"),
        ("[ab]-*", "request.namespace.matches('^[ab]-.*$')"),
        ("[!a-c]x?", "request.namespace.matches('^[^a-c]x.$')"),
        (
            "{blue,green}-*",
            "request.namespace.matches('^(?:blue|green)-.*$')",
        ),
        ("**-x", "request.namespace.matches('^.*-x$')"),
    ] {
        assert_eq!(cel(&format!(r#"["{glob}"]"#)), expected, "glob {glob}");
    }
    // No pattern: no by-name entry (a label opts namespaces in).
    let docs = render(
        &helm,
        "wp",
        "ns",
        &["--set-json", "tenants.namespacePatterns=[]"],
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    assert_eq!(mwc["webhooks"].as_array().unwrap().len(), 1);
    // An incomplete glob stops the install with its name.
    let err = try_render(
        &helm,
        "wp",
        "ns",
        &["--set-json", r#"tenants.namespacePatterns=["demo-[a"]"#],
    )
    .expect_err("an unclosed [ is rejected");
    assert!(
        err.contains("demo-[a") && err.contains("not a complete glob"),
        "{err}"
    );
}

#[test]
fn rendered_config_is_accepted_by_the_binary_and_agrees_with_the_nodepool() {
    let Some(helm) = helm() else { return };
    let binary = Path::new(env!("CARGO_BIN_EXE_warmpool"));
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web, image: nginx}]\n",
    )
    .unwrap();

    for (name, args) in VARIANTS {
        let docs = render(&helm, "wp", "warmpool-system", args);
        let config = config_of(&docs);
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, serde_norway::to_string(&config).unwrap()).unwrap();
        // The strict loader of src/config.rs (unknown keys rejected) takes what the chart renders.
        let out = harness::run(
            binary,
            &[
                "mutate",
                "--config",
                file.to_str().unwrap(),
                "--namespace",
                "demo-1",
                "-f",
                pod.to_str().unwrap(),
                "-o",
                "json",
            ],
            &[],
            None,
        );
        assert!(
            out.status.success(),
            "{name}: warmpool rejects the rendered config:\n{}\n{}",
            text(&out.stderr),
            serde_norway::to_string(&config).unwrap()
        );
        // toolImage is the chart's own image (the image cache copies its static binary).
        let deployment = find(&docs, "Deployment", None);
        assert_eq!(
            config["imageCache"]["toolImage"],
            container(deployment, "webhook")["image"],
            "{name}"
        );
    }

    // One source of truth: the label and taint of the NodePool are the affinity and the
    // toleration that the webhook injects.
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &[
            "--set",
            "nodePool.enabled=true",
            "--set",
            "pool.nodeLabel.key=example.com/pool",
            "--set",
            "pool.nodeLabel.value=gold",
            "--set",
            "pool.taint.effect=NoExecute",
        ],
    );
    let config = config_of(&docs);
    assert_eq!(
        config["pool"]["nodeLabel"],
        json!({"key": "example.com/pool", "value": "gold"})
    );
    assert_eq!(
        config["pool"]["tolerations"],
        json!([{"key": "example.com/pool", "operator": "Equal", "value": "gold", "effect": "NoExecute"}])
    );
    let np = find(&docs, "NodePool", None);
    assert_eq!(
        np["spec"]["template"]["metadata"]["labels"],
        json!({"example.com/pool": "gold"})
    );
    assert_eq!(
        np["spec"]["template"]["spec"]["taints"],
        json!([{"key": "example.com/pool", "value": "gold", "effect": "NoExecute"}])
    );
    let out = harness::run(
        binary,
        &[
            "mutate",
            "--namespace",
            "demo-1",
            "-f",
            pod.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Defaults: the CargoCATs setup of DESIGN.md.
    let config = config_of(&render(&helm, "wp", "warmpool-system", &[]));
    assert_eq!(config["tenants"]["namespacePatterns"], json!(["demo-*"]));
    assert_eq!(
        config["pool"]["nodeLabel"],
        json!({"key": "workload-type", "value": "cargocats"})
    );
    assert_eq!(config["pool"]["affinity"], "required");
    assert_eq!(
        config["pool"]["tolerations"],
        json!([{"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}])
    );
    assert_eq!(
        config["prewarmer"]["slot"],
        json!({"cpu": "640m", "memory": "2150Mi"})
    );
    assert_eq!(config["prewarmer"]["spareSlots"], 1);
    assert_eq!(config["prewarmer"]["doNotDisrupt"], true);
    assert_eq!(config["imageCache"]["discover"], true);
    assert_eq!(config["imageCache"]["images"].as_array().unwrap().len(), 3);
    let config = config_of(&render(
        &helm,
        "wp",
        "ns",
        &["--set", "prewarmer.slot.auto=true"],
    ));
    assert_eq!(config["prewarmer"]["slot"], "auto");
}

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
        assert_eq!(spec["limits"], json!({"cpu": "64", "memory": "256Gi"}));
        assert!(
            all_of(&docs, "EC2NodeClass").is_empty(),
            "{flavor}: no EC2NodeClass unless asked"
        );
    }

    let docs = render(
        &helm,
        "wp",
        "ns",
        &[
            "--set",
            "nodePool.enabled=true",
            "--set",
            "nodePool.flavor=karpenter",
            "--set",
            "nodePool.ec2NodeClass.create=true",
            "--set",
            "nodePool.ec2NodeClass.role=KarpenterNodeRole-demo",
            "--set",
            "nodePool.ec2NodeClass.clusterName=demo",
        ],
    );
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
fn pods_are_locked_down_probed_and_spread() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, "wp", "warmpool-system", &[]);
    let deployment = find(&docs, "Deployment", Some("wp-warmpool"));
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers.iter().map(|c| s(&c["name"])).collect();
    assert_eq!(
        names,
        ["webhook", "reconciler"],
        "two containers, one image"
    );
    assert_eq!(containers[0]["image"], containers[1]["image"]);
    assert_eq!(containers[0]["image"], "ghcr.io/warmpool/warmpool:0.1.0");
    for c in containers {
        let name = s(&c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["privileged"], false, "{name}");
        assert_eq!(
            sc["capabilities"],
            json!({"drop": ["ALL"]}),
            "{name}: no capabilities"
        );
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{name}");
        assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        assert!(c["livenessProbe"].is_object(), "{name}");
    }

    let webhook = container(deployment, "webhook");
    assert_eq!(
        webhook["args"],
        json!([
            "webhook",
            "--config=/etc/warmpool/config/config.yaml",
            "--tls-cert=/etc/warmpool/tls/tls.crt",
            "--tls-key=/etc/warmpool/tls/tls.key",
            "--listen=0.0.0.0:8443",
            "--metrics-listen=0.0.0.0:9090",
            "--log-format=json"
        ])
    );
    let ports: BTreeMap<&str, &Value> = webhook["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (s(&p["name"]), &p["containerPort"]))
        .collect();
    assert_eq!(ports["https"], 8443);
    assert_eq!(ports["metrics"], 9090);
    assert_eq!(
        webhook["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "https", "scheme": "HTTPS"})
    );
    assert_eq!(
        webhook["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );

    let reconciler = container(deployment, "reconciler");
    assert_eq!(
        reconciler["args"],
        json!([
            "reconcile",
            "--config=/etc/warmpool/config/config.yaml",
            "--namespace=warmpool-system",
            "--metrics-listen=0.0.0.0:9091",
            "--log-format=json"
        ])
    );
    assert_eq!(reconciler["ports"][0]["containerPort"], 9091);
    assert_eq!(
        reconciler["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "rec-metrics"})
    );
    assert!(
        reconciler.get("readinessProbe").is_none(),
        "a standby reconciler must not take its pod's webhook out of the Service"
    );
    let env: BTreeMap<&str, &str> = reconciler["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]), s(&e["valueFrom"]["fieldRef"]["fieldPath"])))
        .collect();
    assert_eq!(
        env,
        BTreeMap::from([
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]),
        "the downward API the owner reference needs (src/commands/reconcile.rs)"
    );
    assert!(
        webhook["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "POD_NAMESPACE"),
        "the webhook knows its own namespace"
    );

    // Spread over nodes and zones; a PodDisruptionBudget; a checksum that rolls on config change.
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    let keys: BTreeSet<&str> = spread.iter().map(|t| s(&t["topologyKey"])).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
    );
    let pdb = find(&docs, "PodDisruptionBudget", None);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    let checksum = |docs: &[Value]| -> String {
        s(&find(docs, "Deployment", None)["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"])
        .to_owned()
    };
    let changed = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "prewarmer.spareSlots=3"],
    );
    assert_ne!(
        checksum(&docs),
        checksum(&changed),
        "a config change rolls the pods"
    );
    let same = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "webhook.port=8443"],
    );
    assert_eq!(checksum(&docs), checksum(&same));

    let service = find(&docs, "Service", None);
    let https = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .expect("https port");
    assert_eq!(https["port"], 443);
    assert_eq!(https["targetPort"], "https");
    assert_eq!(service["spec"]["selector"], spec["selector"]["matchLabels"]);

    // The chart's PriorityClass for the placeholders is, field for field, the one the reconciler
    // server-side applies: the two never fight over a field.
    let pc = find(&docs, "PriorityClass", Some("warmpool-placeholder"));
    assert_eq!(pc["value"], -10);
    assert_eq!(pc["preemptionPolicy"], "Never");
    assert_eq!(pc["globalDefault"], false);
    let desired = serde_json::to_value(warmpool::reconcile::desired::priority_class()).unwrap();
    for field in ["value", "preemptionPolicy", "globalDefault", "description"] {
        assert_eq!(pc[field], desired[field], "PriorityClass {field}");
    }
    for (key, value) in desired["metadata"]["labels"].as_object().unwrap() {
        assert_eq!(
            &pc["metadata"]["labels"][key], value,
            "PriorityClass label {key}"
        );
    }

    // Helm 3 labels on everything (but that PriorityClass, labelled as the reconciler does).
    for doc in docs.iter().filter(|d| d["kind"] != "PriorityClass") {
        let labels = &doc["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[key].is_string(), "{key} on {}", doc["kind"]);
        }
    }
}

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
    let cluster_role = find(&docs, "ClusterRole", None);
    // What src/reconcile uses: namespaces (metadata watch, get of its own, label by SSA), pods
    // (watch; its own pod listed by name), Events (kube-runtime Recorder: create, patch), and the
    // objects it server-side applies, by name (SSA = patch, + create when absent, + get/delete to
    // re-create on an immutable change, + list/watch by metadata.name for drift).
    let own = &["get", "list", "watch", "create", "patch", "delete"][..];
    assert_eq!(
        rules(cluster_role),
        expected(&[
            ("", "namespaces", "", &["get", "list", "watch", "patch"]),
            ("", "pods", "", &["list", "watch"]),
            ("events.k8s.io", "events", "", &["create", "patch"]),
            (
                "scheduling.k8s.io",
                "priorityclasses",
                "warmpool-placeholder",
                own
            ),
        ])
    );
    let role = find(&docs, "Role", None);
    assert_eq!(role["metadata"]["namespace"], "warmpool-system");
    assert_eq!(
        rules(role),
        expected(&[
            ("apps", "deployments", "warmpool-prewarmer", own),
            ("apps", "daemonsets", "warmpool-image-cache", own),
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
    // The names are the reconciler's own constants.
    use warmpool::reconcile::{IMAGE_CACHE, LEASE, PREWARMER, PRIORITY_CLASS};
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
fn schema_rejects_bad_values_with_a_clear_message() {
    let Some(helm) = helm() else { return };
    for (set, path, says) in [
        (
            "nodePool.flavor=foo",
            "/nodePool/flavor",
            "'autoMode', 'karpenter'",
        ),
        (
            "certs.mode=bar",
            "/certs/mode",
            "'helm', 'cert-manager', 'provided'",
        ),
        (
            "webhook.failurePolicy=Sometimes",
            "/webhook/failurePolicy",
            "'Ignore', 'Fail'",
        ),
        (
            "webhook.timeoutSeconds=60",
            "/webhook/timeoutSeconds",
            "maximum",
        ),
        (
            "pool.affinity=always",
            "/pool/affinity",
            "'required', 'preferred'",
        ),
        (
            "pool.taint.effect=NoWay",
            "/pool/taint/effect",
            "NoSchedule",
        ),
        (
            "nodePool.expireAfter=3d",
            "/nodePool/expireAfter",
            "does not match pattern",
        ),
        (
            "tenants.namespacePatterns={Demo_1}",
            "/tenants/namespacePatterns/0",
            "pattern",
        ),
        (
            "prewarmer.spareSlots=-1",
            "/prewarmer/spareSlots",
            "minimum",
        ),
        (
            "certs.mode=provided",
            "/certs/provided/secretName",
            "minLength",
        ),
        (
            "nodePool.ec2NodeClass.create=true",
            "/nodePool/ec2NodeClass/role",
            "minLength",
        ),
        (
            "webhook.failurepolicy=Fail",
            "/webhook",
            "'failurepolicy' not allowed",
        ),
    ] {
        let err = try_render(&helm, "wp", "ns", &["--set", set])
            .err()
            .unwrap_or_else(|| panic!("{set} was accepted"));
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set}: {err}"
        );
        assert!(
            err.contains(&format!("at '{path}'")),
            "{set}: the path is named: {err}"
        );
        assert!(err.contains(says), "{set}: says {says:?}: {err}");
    }
}

#[test]
fn certificate_modes_render_their_objects() {
    let Some(helm) = helm() else { return };
    // helm: a kubernetes.io/tls Secret whose CA is the caBundle.
    let docs = render(&helm, "wp", "warmpool-system", &[]);
    let secret = find(&docs, "Secret", Some("wp-warmpool-tls"));
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(s(&secret["data"][key]).len() > 100, "{key}");
    }
    let volume = |docs: &[Value]| -> Value {
        find(docs, "Deployment", None)["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tls")
            .expect("tls volume")["secret"]["secretName"]
            .clone()
    };
    assert_eq!(volume(&docs), "wp-warmpool-tls");
    assert!(all_of(&docs, "Certificate").is_empty());

    // cert-manager: self-signed Issuer → CA Certificate → CA Issuer → serving Certificate, and
    // the CA injected from the serving Certificate.
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "certs.mode=cert-manager"],
    );
    assert!(
        all_of(&docs, "Secret").is_empty(),
        "cert-manager writes the Secret"
    );
    let selfsigned = find(&docs, "Issuer", Some("wp-warmpool-selfsigned"));
    assert_eq!(selfsigned["spec"], json!({"selfSigned": {}}));
    let ca = find(&docs, "Certificate", Some("wp-warmpool-ca"));
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "wp-warmpool-selfsigned");
    let ca_issuer = find(&docs, "Issuer", Some("wp-warmpool-ca"));
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let serving = find(&docs, "Certificate", Some("wp-warmpool-serving"));
    assert_eq!(serving["spec"]["issuerRef"]["name"], "wp-warmpool-ca");
    assert_eq!(serving["spec"]["secretName"], volume(&docs));
    assert_eq!(
        strings(&serving["spec"]["dnsNames"]),
        [
            "wp-warmpool",
            "wp-warmpool.warmpool-system",
            "wp-warmpool.warmpool-system.svc",
            "wp-warmpool.warmpool-system.svc.cluster.local"
        ]
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "warmpool-system/wp-warmpool-serving"
    );
    for entry in mwc["webhooks"].as_array().unwrap() {
        assert!(
            entry["clientConfig"].get("caBundle").is_none(),
            "injected, not rendered"
        );
    }

    // provided: the user's Secret and CA.
    let docs = render(&helm, "wp", "warmpool-system", VARIANTS[2].1);
    assert!(all_of(&docs, "Secret").is_empty());
    assert_eq!(volume(&docs), "my-webhook-tls");
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    for entry in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(entry["clientConfig"]["caBundle"], SOME_CA);
    }
}

// ---------------------------------------------------------------------------------------------
// The real API server
// ---------------------------------------------------------------------------------------------

/// `kubectl apply --dry-run=server`, retried briefly while a just-installed CRD reaches
/// discovery.
fn dry_run_apply(cluster: &Cluster, yaml: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(yaml));
        if out.status.success() {
            return Ok(text(&out.stdout));
        }
        last = text(&out.stderr);
        if !last.contains("ensure CRDs are installed") && !last.contains("no matches for kind") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

#[test]
fn every_rendered_manifest_passes_server_side_dry_run() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    cluster.install_crds();
    let ns = cluster.namespace(&unique("wpdry"));
    for (name, args) in VARIANTS {
        // Exactly what Helm prints, as `helm install` would send it.
        let yaml = harness::render_text(&helm, "dry", &ns.name, args);
        let docs = harness::parse_documents(&yaml);
        let out = dry_run_apply(&cluster, &yaml)
            .unwrap_or_else(|e| panic!("{name}: the API server rejects the chart:\n{e}"));
        // Every object was taken (and validated: CEL compiled, CRD schemas checked).
        let applied = out
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(applied, docs.len(), "{name}: {out}\n{:?}", kinds(&docs));
    }
    // Globs of every shape compile as CEL on the real API server.
    let docs = render(
        &helm,
        "dry",
        &ns.name,
        &[
            "--set-json",
            r#"tenants.namespacePatterns=["demo-*","team-?","[ab]-*","[!a-c]x?","{blue,green}-*","*-prod","pay","a\\*b","**x"]"#,
        ],
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    dry_run_apply(&cluster, &serde_norway::to_string(mwc).unwrap())
        .unwrap_or_else(|e| panic!("the API server rejects the generated CEL:\n{e}"));
}

/// Waits until the ServiceAccount admission plugin will take pods in `ns`.
fn wait_for_default_sa(cluster: &Cluster, ns: &str) {
    eventually(
        &format!("ServiceAccount default in {ns}"),
        Duration::from_secs(30),
        || {
            cluster
                .get_json(&["serviceaccount", "default", "-n", ns])
                .map(|_| ())
        },
    );
}

#[test]
fn cel_match_conditions_select_exactly_the_globbed_namespaces_on_the_api_server() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    // The by-name entry as the chart renders it, but failing closed and pointing nowhere: a pod
    // create in a namespace it selects is refused ("failed calling webhook"), any other passes.
    // So the real API server tells us which namespaces the CEL expression selects. Unique
    // patterns and an extra selector keep it away from every other test's namespaces.
    let id = unique("wpcel");
    let release = format!("{id}r");
    let docs = render(
        &helm,
        &release,
        "wpcel-nowhere",
        &[
            "--set-json",
            &format!(r#"tenants.namespacePatterns=["{id}-a-*","{id}-b-?","{id}-[cd]x"]"#),
            "--set",
            "webhook.failurePolicy=Fail",
            "--set",
            "webhook.timeoutSeconds=2",
            "--set-json",
            &format!(
                r#"webhook.extraNamespaceMatchExpressions=[{{"key":"warmpool.test/cel","operator":"In","values":["{id}"]}}]"#
            ),
        ],
    );
    let mut mwc = find(&docs, "MutatingWebhookConfiguration", None).clone();
    let by_name = webhook_entry(&mwc, "tenant-name.warmpool.io").clone();
    mwc["webhooks"] = json!([by_name]);
    mwc["metadata"] = json!({"name": release});
    let yaml = serde_norway::to_string(&mwc).unwrap();
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&yaml));
    struct Cleanup<'a>(&'a Cluster, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.kubectl(
                &[
                    "delete",
                    "mutatingwebhookconfiguration",
                    &self.1,
                    "--ignore-not-found",
                ],
                None,
            );
        }
    }
    let _cleanup = Cleanup(&cluster, release.clone());

    let cases = [
        (format!("{id}-a-1"), true),
        (format!("{id}-a-long-name"), true),
        (format!("{id}-b-7"), true),
        (format!("{id}-b-77"), false),
        (format!("{id}-cx"), true),
        (format!("{id}-ex"), false),
        (format!("x{id}-a-1"), false),
        (format!("{id}-a-opted-out"), false),
    ];
    let mut guards = Vec::new();
    for (ns, _) in &cases {
        let guard = cluster.namespace(ns);
        let mut labels = vec![format!("warmpool.test/cel={id}")];
        if ns.ends_with("opted-out") {
            labels.push("warmpool.io/tenant=disabled".into());
        }
        let mut args = vec!["label", "namespace", ns.as_str()];
        args.extend(labels.iter().map(String::as_str));
        cluster.kubectl_ok(&args, None);
        guards.push(guard);
    }
    for (ns, selected) in &cases {
        wait_for_default_sa(&cluster, ns);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns},
                         "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
        .to_string();
        // The admission webhook only matches once the API server's webhook cache has the new
        // configuration: poll until the answer is the expected one (a few hundred ms).
        eventually(
            &format!("namespace {ns} selected={selected}"),
            Duration::from_secs(20),
            || {
                let out = cluster.kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&pod));
                let refused =
                    !out.status.success() && text(&out.stderr).contains("tenant-name.warmpool.io");
                if !out.status.success() && !refused {
                    panic!("unexpected refusal in {ns}: {}", text(&out.stderr));
                }
                (refused == *selected).then_some(())
            },
        );
    }
}

/// The two tests that really install the chart take turns: both may own the one cluster-wide
/// PriorityClass.
static INSTALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn install_upgrade_keeps_the_ca_and_uninstall_removes_everything() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    let id = unique("wpi");
    let ns = cluster.namespace(&id);
    let release = id.clone();
    let chart = harness::chart_dir();
    let chart = chart.to_str().unwrap();

    // The chart owns the cluster-wide PriorityClass warmpool-placeholder. If it exists already
    // (another release, or a reconciler run outside the cluster by another test), Helm would
    // refuse to adopt it: leave it alone then (the dry-run and render tests check it).
    let _one_install = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
    let pc_elsewhere = cluster
        .get_json(&["priorityclass", "warmpool-placeholder"])
        .is_some();
    if pc_elsewhere {
        eprintln!("note: PriorityClass warmpool-placeholder exists already: installing without it");
    }
    // Unique patterns and an extra namespace selector: the installed webhook (whose pods never
    // run here: no kubelet) must not slow down other tests' pod creations.
    let base: Vec<String> = vec![
        "--set-json".into(),
        format!(r#"tenants.namespacePatterns=["{id}-t-*"]"#),
        "--set-json".into(),
        format!(
            r#"webhook.extraNamespaceMatchExpressions=[{{"key":"warmpool.test/install","operator":"In","values":["{id}"]}}]"#
        ),
        "--set".into(),
        format!("priorityClass.create={}", !pc_elsewhere),
        // Its pods are never scheduled: a pod bound to a (fake) node with no kubelet would stay
        // Terminating after uninstall.
        "--set-json".into(),
        r#"nodeSelector={"warmpool.test/nowhere":"true"}"#.into(),
    ];
    let helm_ok = |args: &[&str]| -> String {
        let out = cluster.helm(&helm, args);
        assert!(
            out.status.success(),
            "helm {} failed:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let with = |head: &[&str], extra: &[String]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(base.iter().cloned())
            .chain(extra.iter().cloned())
            .collect()
    };

    let args = with(&["install", &release, chart, "--namespace", &ns.name], &[]);
    let out = helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("kubectl get ns -L warmpool.io/tenant"),
        "NOTES say how to check: {out}"
    );

    // Every object of the release is there.
    let manifest = helm_ok(&["get", "manifest", &release, "--namespace", &ns.name]);
    let objects = harness::parse_documents(&manifest);
    assert!(objects.len() >= 11, "{:?}", kinds(&objects));
    let get_args = |o: &Value| -> Vec<String> {
        let mut a = vec![
            s(&o["kind"]).to_lowercase(),
            s(&o["metadata"]["name"]).to_owned(),
        ];
        if let Some(n) = o["metadata"]["namespace"].as_str() {
            a.extend(["-n".into(), n.to_owned()]);
        }
        a
    };
    for o in &objects {
        let a = get_args(o);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        assert!(cluster.get_json(&a).is_some(), "{a:?} was not created");
    }
    let fullname = format!("{release}-warmpool");
    let ca_bundles = || -> Vec<String> {
        let mwc = cluster
            .get_json(&["mutatingwebhookconfiguration", &fullname])
            .expect("webhook configuration");
        mwc["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| s(&w["clientConfig"]["caBundle"]).to_owned())
            .collect()
    };
    let secret = |key: &str| -> String {
        let secret = cluster
            .get_json(&["secret", &format!("{fullname}-tls"), "-n", &ns.name])
            .expect("tls secret");
        s(&secret["data"][key]).to_owned()
    };
    let before = ca_bundles();
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|b| *b == secret("ca.crt")));
    let serving_before = secret("tls.crt");

    // What the reconciler creates carries an owner reference to warmpool's Deployment: stand in
    // for it with one object, and see the real garbage collector remove it after uninstall.
    let deployment = cluster
        .get_json(&["deployment", &fullname, "-n", &ns.name])
        .expect("deployment");
    let owned = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "warmpool-owned-probe", "namespace": ns.name,
            "labels": {"app.kubernetes.io/managed-by": "warmpool"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": fullname,
                "uid": deployment["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
        "data": {}
    })
    .to_string();
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&owned));

    // Upgrade with changed values: the config changes, the CA does not.
    let checksum =
        |d: &Value| d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].clone();
    let changed = [
        "--set".to_owned(),
        "prewarmer.spareSlots=3".to_owned(),
        "--set".to_owned(),
        "webhook.timeoutSeconds=3".to_owned(),
    ];
    let args = with(
        &["upgrade", &release, chart, "--namespace", &ns.name],
        &changed,
    );
    helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cm = cluster
        .get_json(&["configmap", &fullname, "-n", &ns.name])
        .expect("configmap");
    assert!(
        s(&cm["data"]["config.yaml"]).contains("spareSlots: 3"),
        "{cm}"
    );
    let mwc = cluster
        .get_json(&["mutatingwebhookconfiguration", &fullname])
        .unwrap();
    assert_eq!(mwc["webhooks"][0]["timeoutSeconds"], 3);
    assert_eq!(
        ca_bundles(),
        before,
        "helm upgrade keeps the CA (caBundle unchanged)"
    );
    assert_eq!(
        secret("tls.crt"),
        serving_before,
        "and the serving certificate"
    );
    let upgraded = cluster
        .get_json(&["deployment", &fullname, "-n", &ns.name])
        .unwrap();
    assert_ne!(
        checksum(&upgraded),
        checksum(&deployment),
        "the config change rolls the pods"
    );
    assert_eq!(upgraded["metadata"]["uid"], deployment["metadata"]["uid"]);

    // Uninstall: every object of the release goes, and the garbage collector takes what the
    // Deployment owned (its ReplicaSets, the reconciler's objects).
    helm_ok(&["uninstall", &release, "--namespace", &ns.name]);
    eventually(
        "helm uninstall removes everything",
        Duration::from_secs(90),
        || {
            let left: Vec<String> = objects
                .iter()
                .filter(|o| {
                    let a = get_args(o);
                    let a: Vec<&str> = a.iter().map(String::as_str).collect();
                    cluster.get_json(&a).is_some()
                })
                .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
                .chain(
                    cluster
                        .get_json(&["configmap", "warmpool-owned-probe", "-n", &ns.name])
                        .map(|_| "the reconciler's (owned) object".to_owned()),
                )
                .chain(
                    cluster
                        .kubectl_ok(
                            &[
                                "get",
                                "replicasets,pods",
                                "-n",
                                &ns.name,
                                "-l",
                                &format!("app.kubernetes.io/instance={release}"),
                                "-o",
                                "name",
                            ],
                            None,
                        )
                        .lines()
                        .map(str::to_owned),
                )
                .collect();
            if !left.is_empty() {
                eprintln!("waiting for: {left:?}");
            }
            left.is_empty().then_some(())
        },
    );
    assert!(
        cluster
            .get_json(&["mutatingwebhookconfiguration", &fullname])
            .is_none()
    );
    assert!(cluster.get_json(&["clusterrole", &fullname]).is_none());
    if !pc_elsewhere {
        assert!(
            cluster
                .get_json(&["priorityclass", "warmpool-placeholder"])
                .is_none()
        );
    }
}

/// GET `path` on a plain-HTTP address; the status code, if anything answered.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_reconciler_runs_on_the_charts_rbac_alone_and_uninstall_collects_its_objects() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    // Install the chart; its pods never run here (no kubelet), so the real `warmpool reconcile`
    // runs beside the test instead, as one of those pods: with the ServiceAccount's token and
    // nothing else, so any permission the code needs and the chart lacks shows up as a failure.
    let id = unique("wpr");
    let ns = cluster.namespace(&id);
    let release = id.clone();
    let fullname = format!("{release}-warmpool");
    let chart = harness::chart_dir();
    let _one_install = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
    let pc_elsewhere = cluster
        .get_json(&["priorityclass", "warmpool-placeholder"])
        .is_some();
    let patterns = format!(r#"tenants.namespacePatterns=["{id}-t-*"]"#);
    let selector = format!(
        r#"webhook.extraNamespaceMatchExpressions=[{{"key":"warmpool.test/rbac","operator":"In","values":["{id}"]}}]"#
    );
    // A pool label no node has: the placeholders and the cache stay Pending, never bound to a
    // (fake) node without kubelet.
    let pool = format!("pool.nodeLabel.value={id}");
    let pc = format!("priorityClass.create={}", !pc_elsewhere);
    let install = [
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--set-json",
        &patterns,
        "--set-json",
        &selector,
        "--set",
        &pool,
        "--set",
        &pc,
        "--set",
        "replicaCount=1",
        "--set",
        "imageCache.discover=false",
        "--set-json",
        r#"nodeSelector={"warmpool.test/nowhere":"true"}"#,
    ];
    let out = cluster.helm(&helm, &install);
    assert!(out.status.success(), "helm install: {}", text(&out.stderr));

    let pod = eventually(
        "a pod of the chart's Deployment",
        Duration::from_secs(60),
        || {
            let pods = cluster.get_json(&[
                "pods",
                "-n",
                &ns.name,
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
            ])?;
            pods["items"][0]["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
        },
    );

    // The ServiceAccount's own credentials, in a kubeconfig of their own.
    let token = cluster
        .kubectl_ok(
            &[
                "create",
                "token",
                &fullname,
                "-n",
                &ns.name,
                "--duration=600s",
            ],
            None,
        )
        .trim()
        .to_owned();
    let admin: Value = serde_norway::from_str(
        &std::fs::read_to_string(&cluster.kubeconfig).expect("admin kubeconfig"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_norway::to_string(&json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
            "current-context": "c",
        }))
        .unwrap(),
    )
    .unwrap();
    // The configuration the chart installed.
    let cm = cluster
        .get_json(&["configmap", &fullname, "-n", &ns.name])
        .expect("configmap");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, s(&cm["data"]["config.yaml"])).unwrap();

    let tenant = cluster.namespace(&format!("{id}-t-1"));
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let log = dir.path().join("reconciler.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let reconciler = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_warmpool"))
            .args(["reconcile", "--config"])
            .arg(&config)
            .args(["--namespace", &ns.name, "--metrics-listen", &metrics])
            .args(["--log-format", "text", "--resync", "20s"])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", &pod)
            .env("POD_NAMESPACE", &ns.name)
            .env_remove("WARMPOOL_NAMESPACE")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("warmpool reconcile starts"),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut reconciler = reconciler;
    let owner_uid = cluster
        .get_json(&["deployment", &fullname, "-n", &ns.name])
        .expect("the chart's Deployment")["metadata"]["uid"]
        .clone();
    let owned_by_chart = |kind: &str, name: &str| -> Option<()> {
        let o = cluster.get_json(&[kind, name, "-n", &ns.name])?;
        (o["metadata"]["ownerReferences"][0]["uid"] == owner_uid
            && o["metadata"]["ownerReferences"][0]["kind"] == "Deployment")
            .then_some(())
    };
    eventually(
        "the reconciler's objects, owned by the chart's Deployment; the tenant labelled; the Lease held",
        Duration::from_secs(90),
        || {
            if let Ok(Some(status)) = reconciler.0.try_wait() {
                panic!("warmpool reconcile exited ({status}):\n{}", log_text());
            }
            owned_by_chart("deployment", "warmpool-prewarmer")?;
            owned_by_chart("daemonset", "warmpool-image-cache")?;
            let lease = cluster.get_json(&["lease", "warmpool-reconciler", "-n", &ns.name])?;
            lease["spec"]["holderIdentity"].as_str()?;
            let t = cluster.get_json(&["namespace", &tenant.name])?;
            (t["metadata"]["labels"]["warmpool.io/tenant"] == "enabled").then_some(())
        },
    );
    let pc = cluster
        .get_json(&["priorityclass", "warmpool-placeholder"])
        .expect("the PriorityClass");
    assert_eq!(pc["value"], -10);
    eventually(
        "an Event in the tenant namespace",
        Duration::from_secs(30),
        || {
            let events = cluster.get_json(&["events.events.k8s.io", "-n", &tenant.name])?;
            (!events["items"].as_array()?.is_empty()).then_some(())
        },
    );
    eventually("the reconciler ready", Duration::from_secs(30), || {
        (http_status(&metrics, "/readyz")? == 200).then_some(())
    });
    // Drift is repaired with the same permissions.
    cluster.kubectl_ok(
        &[
            "delete",
            "deployment",
            "warmpool-prewarmer",
            "-n",
            &ns.name,
            "--wait=false",
        ],
        None,
    );
    eventually("the prewarmer re-created", Duration::from_secs(60), || {
        let d = cluster.get_json(&["deployment", "warmpool-prewarmer", "-n", &ns.name])?;
        d["metadata"]["deletionTimestamp"].is_null().then_some(())?;
        owned_by_chart("deployment", "warmpool-prewarmer")
    });
    let text_now = log_text();
    // Not "403": durations and resource versions in the log may contain it.
    for word in ["forbidden", "Forbidden"] {
        assert!(
            !text_now.contains(word),
            "the reconciler was refused something with the chart's RBAC:\n{text_now}"
        );
    }
    drop(reconciler);

    // Uninstall: the garbage collector removes what the reconciler made.
    let out = cluster.helm(&helm, &["uninstall", &release, "--namespace", &ns.name]);
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        text(&out.stderr)
    );
    eventually(
        "the prewarmer and the image cache collected",
        Duration::from_secs(90),
        || {
            (cluster
                .get_json(&["deployment", "warmpool-prewarmer", "-n", &ns.name])
                .is_none()
                && cluster
                    .get_json(&["daemonset", "warmpool-image-cache", "-n", &ns.name])
                    .is_none())
            .then_some(())
        },
    );
}
