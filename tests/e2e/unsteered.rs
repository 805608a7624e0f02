//! Tenant pods that escaped the webhook, on the real local control plane: pods created while
//! no webhook is registered (as when it is unreachable and the chart fails open) are found by
//! the real reconciler, counted in `warmpool_tenant_pods_unsteered`, each given a Warning Event
//! `Unsteered`. With `tenants.repair: evict` nothing is evicted while the webhook is still away
//! (a replacement would escape too); once it steers a newer pod, the escaped pod a Deployment
//! owns is evicted and comes back through it, steered; the bare pod stays, reported.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use support::cluster::{client, eventually};
use support::objects::live_pods;
use support::reconciler::Run;
use support::webhook::{RUN_LABEL, Webhook, unregister};

use super::BIN;
use warmpool::config::{Config, Repair};
const INJECTED: &str = "warmpool.io/injected";
const WAIT: Duration = Duration::from_secs(60);

fn container() -> serde_json::Value {
    json!([{"name": "app", "image": "registry.k8s.io/pause:3.10"}])
}

async fn create_deployment(client: &Client, ns: &str, name: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": container()}},
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
}

/// The notes of the `Unsteered` Events about `pod`.
async fn unsteered_events(client: &Client, ns: &str, pod: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Unsteered"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn pods_admitted_without_the_webhook_are_reported_and_evicted_back_through_it() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else {
        return;
    };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    run.configure(|c| c.tenants.repair = Repair::Evict);
    let ns = run.tenant("escaped");
    run.create_namespace(&ns, &[(RUN_LABEL, &run.id)]).await;
    // warmpool is installed (its reconciler leads); its webhook is not reachable (registered).
    let mut reconciler = run.spawn("unsteered", &[], &[]);
    reconciler.wait_ready(WAIT).await;

    // Admitted as they are.
    create_deployment(&client, &ns, "web").await;
    let bare: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bare", "labels": {"app": "bare"}},
        "spec": {"containers": container()},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &bare)
        .await
        .expect("create bare pod");
    let first = eventually("the Deployment's pod", WAIT, || async {
        live_pods(&client, &ns, "app=web").await.into_iter().next()
    })
    .await;
    assert!(
        !first.annotations().contains_key(INJECTED),
        "no webhook ran"
    );
    let note = eventually("the Unsteered event of the bare pod", WAIT, || async {
        unsteered_events(&client, &ns, "bare")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert!(note.contains("not evicted"), "{note}");
    let note = eventually(
        "the Unsteered event of the Deployment's pod",
        WAIT,
        || async {
            unsteered_events(&client, &ns, &first.name_any())
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(note.contains("it is evicted"), "{note}");
    eventually("warmpool_tenant_pods_unsteered 2", WAIT, || async {
        (reconciler.metric("warmpool_tenant_pods_unsteered").await? == 2.0).then_some(())
    })
    .await;
    // The webhook still away: the reconciler has no evidence it would be steered now.
    assert_eq!(
        reconciler
            .metric("warmpool_tenant_pods_evicted_total")
            .await,
        Some(0.0),
        "evicted while the webhook was away"
    );
    assert!(
        live_pods(&client, &ns, "app=web")
            .await
            .iter()
            .any(|p| p.name_any() == first.name_any())
    );

    // The webhook is back, and steers the next pod a tenant creates.
    let mut webhook = Webhook::start(BIN.as_ref(), Some(&run.settings())).await;
    let pattern = format!("{}*", run.tenant_prefix);
    webhook
        .register(&client, &run.id, &[&pattern], &run.namespace)
        .await;
    create_deployment(&client, &ns, "api").await;
    let steered = eventually("a steered pod of the new Deployment", WAIT, || async {
        live_pods(&client, &ns, "app=api")
            .await
            .into_iter()
            .find(|p| p.annotations().contains_key(INJECTED))
    })
    .await;

    // Evicted and re-created by its ReplicaSet, through the webhook this time.
    let replacement = eventually(
        "a steered replacement of the Deployment's pod",
        WAIT,
        || async {
            live_pods(&client, &ns, "app=web")
                .await
                .into_iter()
                .find(|p| {
                    p.name_any() != first.name_any() && p.annotations().contains_key(INJECTED)
                })
        },
    )
    .await;
    // Creation times are whole seconds: the two are often in the same one here.
    let created = |p: &Pod| p.creation_timestamp().map(|t| t.0.to_string());
    eprintln!(
        "{} (created {:?}) evicted once {} was steered (created {:?}), replaced by {} ({INJECTED}: {})",
        first.name_any(),
        created(&first),
        steered.name_any(),
        created(&steered),
        replacement.name_any(),
        replacement.annotations()[INJECTED]
    );
    assert!(
        live_pods(&client, &ns, "app=bare").await.len() == 1,
        "the bare pod is reported, never evicted"
    );
    eventually("warmpool_tenant_pods_unsteered 1", WAIT, || async {
        (reconciler.metric("warmpool_tenant_pods_unsteered").await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        reconciler
            .metric("warmpool_tenant_pods_evicted_total")
            .await,
        Some(1.0)
    );

    reconciler.terminate();
    webhook.stop();
    unregister(&client, &run.id).await;
    run.cleanup().await;
}
