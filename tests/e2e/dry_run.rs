//! A server-side dry run (`kubectl create --dry-run=server`) of a tenant pod, on the local
//! control plane: the API server calls the webhook for it (the chart declares `sideEffects:
//! None`, the webhook has none), the pod comes back mutated as a real create would, and nothing
//! is stored.
//!
//! Without a control plane the test prints SKIP (and fails when CI=true).

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::cluster::{client, unique};
use support::objects::{create_namespace, unscheduled_pod, wait_until_mutating};
use support::webhook::{Webhook, unregister};

use super::BIN;

/// The pod as the webhook mutates it: annotation, the pool's required affinity, its toleration.
fn is_mutated(pod: &Pod) -> bool {
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    let affinity = spec.pointer(
        "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions",
    ) == Some(&json!([{"key": "workload-type", "operator": "In", "values": ["cargocats"]}]));
    let toleration = spec["tolerations"].as_array().is_some_and(|ts| {
        ts.contains(&json!({"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}))
    });
    let annotated = pod
        .annotations()
        .get("warmpool.io/injected")
        .map(String::as_str)
        == Some("node-affinity,tolerations");
    affinity && toleration && annotated
}

#[tokio::test]
async fn a_server_side_dry_run_of_a_tenant_pod_comes_back_mutated_and_stores_nothing() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = unique("dry");
    let webhook = Webhook::start(BIN.as_ref(), None).await;
    webhook
        .register(
            &client,
            &run,
            &[&format!("{run}-demo-*")],
            &format!("{run}-system"),
        )
        .await;
    let ns = format!("{run}-demo-1");
    create_namespace(&client, &run, &ns).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_until_mutating(&api, is_mutated).await;

    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = api
        .create(&dry_run, &unscheduled_pod("dry"))
        .await
        .expect("dry-run create");
    assert!(
        is_mutated(&answered),
        "the dry run came back unmutated: {answered:?}"
    );
    assert!(
        api.get_opt("dry").await.expect("get").is_none(),
        "a dry run stored the pod"
    );
    // The webhook patched it (its review span names the pod).
    let logs = webhook.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"dry\"") && l.contains("pod patched")),
        "{logs}"
    );

    unregister(&client, &run).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}
