//! The real API server evaluates the chart's CEL matchConditions: exactly the globbed namespaces.

use std::time::Duration;

use serde_json::json;

use crate::webhook_entry;
use support::chart::{Cluster, cluster, eventually, find, helm, render, text, unique};

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
                r#"tenants.namespaceMatchExpressions=[{{"key":"warmpool.test/cel","operator":"In","values":["{id}"]}}]"#
            ),
        ],
    );
    let mut mwc = find(&docs, "MutatingWebhookConfiguration", None).clone();
    let by_name = webhook_entry(&mwc, "tenant-name.warmpool.io").clone();
    mwc["webhooks"] = json!([by_name]);
    mwc["metadata"] = json!({"name": release});
    let yaml = serde_saphyr::to_string(&mwc).unwrap();
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
