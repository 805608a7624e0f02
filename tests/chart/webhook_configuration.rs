//! The rendered MutatingWebhookConfiguration: its safe defaults, and the CEL generated from the globs.

use serde_json::json;

use crate::{expression, s, strings, webhook_entry};
use support::chart::{find, helm, render, try_render};

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
            "tenants.excludeNamespaces={ops}",
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
