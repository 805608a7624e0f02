//! The Helm chart (charts/warmpool): lint, render and assert, schema, the real API server
//! (server-side dry run of every variant, CEL matchConditions evaluated by it), and a real
//! install → upgrade → uninstall on the local control plane.
//!
//! Helm comes from tests/tools/helm.sh (its official Go module, cached), the control plane from
//! tests/cluster/cluster.sh; without them these tests SKIP loudly, except in CI where they fail.
//! The harness (rendering, the cluster, polling) is `support::chart`.

use support::chart as harness;

mod admission_policies;
mod cel_api_server;
mod certs;
mod config;
mod dry_run;
mod install;
mod lint;
mod nodepool;
mod observability;
mod pods;
mod rbac;
mod reconciler;
mod schema;
mod webhook_configuration;

use serde_json::Value;

// Shared by the modules: every variant of the chart, and accessors of rendered objects.

/// The self-managed Karpenter flavour with the chart's own EC2NodeClass, as `helm --set`
/// arguments.
const KARPENTER_WITH_EC2_NODE_CLASS: &[&str] = &[
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
];

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
        KARPENTER_WITH_EC2_NODE_CLASS,
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
    (
        "the observability kit (ServiceMonitor, PrometheusRule, Grafana dashboard)",
        &[
            "--set",
            "observability.serviceMonitor.enabled=true",
            "--set",
            "observability.prometheusRule.enabled=true",
            "--set",
            "observability.grafanaDashboard.enabled=true",
        ],
    ),
    (
        "networkPolicy.enabled",
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set-json",
            r#"networkPolicy.webhookFrom=[{"ipBlock":{"cidr":"10.0.0.0/16"}}]"#,
        ],
    ),
    (
        "tenantIsolation.enabled",
        &[
            "--set",
            "tenantIsolation.enabled=true",
            "--set",
            "tenants.repair=evict",
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
    // The configuration's ConfigMap (the Grafana dashboard's is another).
    let cms: Vec<&Value> = harness::all_of(docs, "ConfigMap")
        .into_iter()
        .filter(|cm| cm["data"].get("config.yaml").is_some())
        .collect();
    assert_eq!(cms.len(), 1, "{:?}", harness::kinds(docs));
    serde_saphyr::from_str(s(&cms[0]["data"]["config.yaml"])).expect("config.yaml is YAML")
}
