//! The Deployment and its pods: locked down, probed and spread; PDB, PriorityClass, Helm labels.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::{container, s};
use support::chart::{find, helm, render};

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

    // Only the reconciler carries a service-account token: the webhook never calls the API
    // server, and a token in a container that every pod can reach is one to steal.
    assert_eq!(pod["automountServiceAccountToken"], false);
    let token_mounts = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| s(&m["mountPath"]) == "/var/run/secrets/kubernetes.io/serviceaccount")
            .map(|m| s(&m["name"]).to_owned())
            .collect()
    };
    assert!(token_mounts(container(deployment, "webhook")).is_empty());
    assert_eq!(
        token_mounts(container(deployment, "reconciler")),
        ["kube-api-access"]
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "kube-api-access")
        .expect("the reconciler's token volume");
    let sources = &volume["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

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
            "--log-format=json",
            "--shutdown-grace=5s",
            "--request-timeout=4000ms"
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
        "the downward API the owner reference needs (src/cli/reconcile.rs)"
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
    let desired = serde_json::to_value(warmpool::core::pool::desired::priority_class()).unwrap();
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
