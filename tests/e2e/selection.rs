//! Which pods reach the webhook, decided by the real API server with the chart's own
//! MutatingWebhookConfiguration: no gap while the reconciler labels a new tenant namespace, and
//! the CEL the chart generates from the globs decides exactly as the Rust tenant rule does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::json;
use support::cluster::{client, eventually, unique};
use support::objects::{create_namespace, create_pod};
use support::scenario::{Setup, Warmpool};
use support::webhook::{Webhook, unregister};
use warmpool::core::tenant::TenantSelector;

use super::BIN;

/// A registration is in effect once a probe pod in namespace `ns` comes back mutated.
async fn wait_until_mutating(client: &Client, ns: &str) {
    let mut n = 0;
    eventually(
        &format!("the webhook registration for {ns} in effect"),
        Duration::from_secs(30),
        || {
            n += 1;
            let (client, ns) = (client.clone(), ns.to_owned());
            async move {
                let pod = create_pod(&client, &ns, &format!("probe-{n}")).await;
                injected(&pod).map(|_| ())
            }
        },
    )
    .await;
}

fn injected(pod: &Pod) -> Option<&str> {
    pod.annotations()
        .get("warmpool.io/injected")
        .map(String::as_str)
}

async fn is_labelled_enabled(client: &Client, ns: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .map(|n| n.labels().get("warmpool.io/tenant").map(String::as_str) == Some("enabled"))
        .unwrap_or(false)
}

async fn delete_namespaces(client: &Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in names {
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
}

/// The reconciler labels a new tenant namespace `enabled` a moment after it appears; until then
/// the chart's by-name entry selects its pods, afterwards the by-label entry. Pods are created
/// without pause from the namespace's first instant until after the label is there, in many
/// namespaces: every one of them must come back mutated.
#[tokio::test]
async fn no_pod_slips_through_while_the_reconciler_labels_its_namespace() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = unique("sel-label");
    let warmpool = Warmpool::start(&client, BIN.as_ref(), Setup::isolated(&run, 0)).await;
    let expected_pool =
        json!({"key": "workload-type", "operator": "In", "values": [warmpool.pool]});

    // The registration is in effect once a pod of a tenant namespace comes back mutated.
    let warmup = format!("{}warmup", warmpool.tenant_prefix);
    create_namespace(&client, &run, &warmup).await;
    wait_until_mutating(&client, &warmup).await;

    let mut namespaces = vec![warmup];
    let (mut before_label, mut after_label) = (0, 0);
    for i in 0..15 {
        let ns = format!("{}{i}", warmpool.tenant_prefix);
        create_namespace(&client, &run, &ns).await;
        namespaces.push(ns.clone());
        let mut extra_after_label = 2;
        for p in 0.. {
            let pod = create_pod(&client, &ns, &format!("p{p}")).await;
            let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
            assert_eq!(
                injected(&pod),
                Some("node-affinity,tolerations"),
                "pod {ns}/p{p} was admitted unmutated"
            );
            assert_eq!(
                spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0"),
                Some(&expected_pool),
                "pod {ns}/p{p}"
            );
            if is_labelled_enabled(&client, &ns).await {
                after_label += 1;
                extra_after_label -= 1;
                if extra_after_label == 0 {
                    break;
                }
            } else {
                before_label += 1;
                assert!(p < 500, "the reconciler never labelled {ns}");
            }
        }
    }
    eprintln!(
        "{} namespaces: {before_label} pods created before the label was seen, {after_label} after; all mutated",
        namespaces.len() - 1
    );

    delete_namespaces(&client, &namespaces).await;
    warmpool.cleanup(&[]).await;
}

/// Globs as people write them, over a small alphabet so that generated names often match.
fn glob_strategy() -> impl Strategy<Value = String> {
    let piece = proptest::prop_oneof![
        3 => "[ab0-]".prop_map(|s: String| s),
        2 => proptest::strategy::Just("*".to_owned()),
        2 => proptest::strategy::Just("?".to_owned()),
        1 => "[ab0]{1,2}".prop_map(|s| format!("[{s}]")),
        1 => proptest::strategy::Just("[a-b]".to_owned()),
        1 => "[ab0]{1,2}".prop_map(|s| format!("[!{s}]")),
        1 => ("[ab0]{1,2}", "[ab0]{1,2}").prop_map(|(a, b)| format!("{{{a},{b}}}")),
    ];
    proptest::collection::vec(piece, 1..5).prop_map(|pieces| pieces.concat())
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[ab0-]{0,5}[ab0]"
}

fn sample<T: std::fmt::Debug>(runner: &mut TestRunner, s: &impl Strategy<Value = T>) -> T {
    s.new_tree(runner).expect("a sample").current()
}

/// For generated globs and names, the API server calls the webhook (by the chart's generated
/// CEL) exactly for the names the Rust tenant rule calls tenants. Each glob gets a registration
/// of its own, scoped to its namespaces; every name is prefixed with a literal unique to the
/// glob, which the glob carries too, so namespaces never collide.
#[tokio::test]
async fn the_charts_cel_decides_as_the_rust_tenant_rule() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let webhook = Webhook::start(BIN.as_ref(), None).await;
    let mut runner = TestRunner::deterministic();
    let base = unique("cel");
    let mut registrations = Vec::new();
    let mut cases = Vec::new();
    for g in 0..8 {
        let run = format!("{base}-{g}");
        let prefix = format!("{run}-");
        let glob = format!("{prefix}{}", sample(&mut runner, &glob_strategy()));
        webhook
            .register(&client, &run, &[&glob], &format!("{run}-system"))
            .await;
        registrations.push(run.clone());
        let rule = TenantSelector::new(std::slice::from_ref(&glob), None).expect("a valid glob");
        let mut names: Vec<String> = (0..10)
            .map(|_| format!("{prefix}{}", sample(&mut runner, &name_strategy())))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let tenant = rule.decide(&name, &Default::default()).is_tenant();
            cases.push((run.clone(), glob.clone(), name, tenant));
        }
    }
    assert!(
        cases.iter().filter(|c| c.3).count() >= 5 && cases.iter().filter(|c| !c.3).count() >= 5,
        "the generators should give both tenants and non-tenants: {cases:?}"
    );
    let mut namespaces = Vec::new();
    for (run, _, name, _) in &cases {
        create_namespace(&client, run, name).await;
        namespaces.push(name.clone());
    }
    // The API server sees webhook configurations through one watch, in the order they were
    // written: once a probe registration made after all the others is in effect, so are they.
    let probe_run = format!("{base}-probe");
    webhook
        .register(
            &client,
            &probe_run,
            &[&format!("{probe_run}-*")],
            &format!("{probe_run}-system"),
        )
        .await;
    registrations.push(probe_run.clone());
    let probe_ns = format!("{probe_run}-x");
    create_namespace(&client, &probe_run, &probe_ns).await;
    namespaces.push(probe_ns.clone());
    wait_until_mutating(&client, &probe_ns).await;
    let mut disagreements = Vec::new();
    for (_, glob, name, tenant) in &cases {
        let pod = create_pod(&client, name, "p").await;
        let called = injected(&pod).is_some();
        if called != *tenant {
            disagreements.push(format!(
                "glob `{glob}`, namespace `{name}`: Rust rule says tenant={tenant}, API server called the webhook={called}"
            ));
        }
    }
    eprintln!(
        "{} names against {} globs",
        cases.len(),
        registrations.len()
    );
    for run in &registrations {
        unregister(&client, run).await;
    }
    delete_namespaces(&client, &namespaces).await;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// An empty alternative means the empty string to a shell and nothing to globset: both the
/// configuration and the chart refuse it, with the same advice.
#[test]
fn an_empty_alternative_is_refused_by_the_config_and_by_the_chart() {
    let _subject = support::subject::enter(module_path!());
    for glob in ["demo-{a,}", "demo-{,a}", "demo-{a,{b,}}"] {
        let config = format!("tenants: {{namespacePatterns: ['{glob}']}}");
        let err = warmpool::config::Config::from_yaml(&config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty alternative"), "{glob}: {err}");
        let out = std::process::Command::new(support::helm::helm())
            .args(["template", "w"])
            .arg(support::cluster::repo_root().join("charts/warmpool"))
            .arg(format!("--set-json=tenants.namespacePatterns=[\"{glob}\"]"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("empty alternative"),
            "{glob}: {stderr}"
        );
    }
}
