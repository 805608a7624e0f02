//! End to end on the local control plane: the real kube-apiserver calls the real `warmpool
//! webhook` over TLS for pods created in tenant namespaces.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use support::cluster::{client, eventually, unique};
use support::webhook::{RUN_LABEL, Webhook, unregister};

use super::BIN;

/// A namespace of test run `run` (labelled for it, so the run's registration sees it).
async fn create_namespace(client: &Client, run: &str, name: &str, mut labels: Value) {
    labels[RUN_LABEL] = json!(run);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .unwrap()
}

/// Creates a pod and returns it as the API server stored it (after admission).
async fn create_pod(client: &Client, ns: &str, name: &str) -> Pod {
    // Retries while the namespace's `default` ServiceAccount does not exist yet: the controller
    // manager creates it a moment after the namespace.
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("pod {ns}/{name} created"),
        Duration::from_secs(15),
        || {
            let api = api.clone();
            async move {
                match api.create(&PostParams::default(), &pod(name)).await {
                    Ok(p) => Some(p),
                    Err(kube::Error::Api(e)) if e.message.contains("serviceaccount") => None,
                    Err(e) => panic!("creating pod {name}: {e}"),
                }
            }
        },
    )
    .await
}

fn is_mutated(pod: &Pod) -> bool {
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    let affinity_ok = spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions")
        == Some(&json!([{"key": "workload-type", "operator": "In", "values": ["cargocats"]}]));
    let toleration_ok = spec["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| t == &json!({"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}))
    });
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("warmpool.io/injected"))
        .is_some_and(|v| v == "node-affinity,tolerations");
    affinity_ok && toleration_ok && annotated
}

/// The API server picks up a new webhook configuration within a moment; wait until a probe pod
/// in a tenant namespace comes back mutated.
async fn wait_until_active(client: &Client, ns: &str) {
    let mut n = 0;
    eventually(
        "webhook configuration active",
        Duration::from_secs(30),
        || {
            n += 1;
            let name = format!("probe-{n}");
            let client = client.clone();
            let ns = ns.to_owned();
            async move { is_mutated(&create_pod(&client, &ns, &name).await).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn tenant_pods_are_mutated_and_others_are_not() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = unique("wh");
    let prefix = format!("{run}-demo-");
    let webhook = Webhook::start(BIN.as_ref(), None).await;
    webhook.register_prefix(&client, &run, &prefix).await;

    let tenant = format!("{prefix}1");
    let other = format!("{run}-other");
    let opted_in = format!("{run}-payments");
    let opted_out = format!("{prefix}2");
    create_namespace(&client, &run, &tenant, json!({})).await;
    create_namespace(&client, &run, &other, json!({})).await;
    create_namespace(
        &client,
        &run,
        &opted_in,
        json!({"warmpool.io/tenant": "enabled"}),
    )
    .await;
    create_namespace(
        &client,
        &run,
        &opted_out,
        json!({"warmpool.io/tenant": "disabled"}),
    )
    .await;
    wait_until_active(&client, &tenant).await;

    let by_name = create_pod(&client, &tenant, "dataservice").await;
    assert!(is_mutated(&by_name), "tenant pod not mutated: {by_name:?}");
    // The API server's own defaults survive beside ours.
    let tolerations = by_name.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
    );

    let untouched = create_pod(&client, &other, "web").await;
    assert!(untouched.spec.as_ref().unwrap().affinity.is_none());
    assert!(!is_mutated(&untouched));

    let by_label = create_pod(&client, &opted_in, "api").await;
    assert!(is_mutated(&by_label), "opted-in pod not mutated");

    let out = create_pod(&client, &opted_out, "api").await;
    assert!(
        out.spec.as_ref().unwrap().affinity.is_none(),
        "opted-out pod was mutated"
    );

    // A pod that opts out by annotation is admitted unchanged.
    let api: Api<Pod> = Api::namespaced(client.clone(), &tenant);
    let mut skip = pod("skip");
    skip.metadata.annotations = Some([("warmpool.io/skip".to_owned(), "true".to_owned())].into());
    let skipped = api.create(&PostParams::default(), &skip).await.unwrap();
    assert!(skipped.spec.as_ref().unwrap().affinity.is_none());

    unregister(&client, &run).await;
    for ns in [&tenant, &other, &opted_in, &opted_out] {
        delete_namespace(&client, ns).await;
    }
}

#[tokio::test]
async fn a_namespace_created_with_its_pods_gets_mutated_pods() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = unique("wh-same");
    let prefix = format!("{run}-demo-");
    let webhook = Webhook::start(BIN.as_ref(), None).await;
    webhook.register_prefix(&client, &run, &prefix).await;
    let warmup = format!("{prefix}warmup");
    create_namespace(&client, &run, &warmup, json!({})).await;
    wait_until_active(&client, &warmup).await;

    // As `helm install --create-namespace` does: the namespace and its pods in one instant.
    let ns = format!("{prefix}fresh");
    let (created, pods) = tokio::join!(create_namespace(&client, &run, &ns, json!({})), async {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // The pod create may race ahead of the namespace: retry until it exists.
        eventually(
            "pod created in the new namespace",
            Duration::from_secs(10),
            || {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod("first")).await.ok() }
            },
        )
        .await
    });
    let () = created;
    assert!(
        is_mutated(&pods),
        "pod of a brand-new namespace not mutated"
    );

    unregister(&client, &run).await;
    delete_namespace(&client, &ns).await;
    delete_namespace(&client, &warmup).await;
}

#[tokio::test]
async fn with_the_webhook_down_pods_are_still_created() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = unique("wh-down");
    let prefix = format!("{run}-demo-");
    let mut webhook = Webhook::start(BIN.as_ref(), None).await;
    webhook.register_prefix(&client, &run, &prefix).await;
    let ns = format!("{prefix}1");
    create_namespace(&client, &run, &ns, json!({})).await;
    wait_until_active(&client, &ns).await;

    webhook.stop();
    // failurePolicy Ignore: the API server admits the pod unmutated.
    let p = create_pod(&client, &ns, "while-down").await;
    assert!(!is_mutated(&p));
    assert!(p.spec.as_ref().unwrap().affinity.is_none());

    unregister(&client, &run).await;
    delete_namespace(&client, &ns).await;
}
