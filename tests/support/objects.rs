//! The namespaces and pods the webhook tests create on the local control plane.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::cluster::eventually;
use super::webhook::run_labels;

/// A namespace of run `run` with its `default` ServiceAccount, so pods can be created in it at
/// once instead of after the controller manager gets round to the ServiceAccount.
pub async fn create_namespace(client: &Client, run: &str, name: &str) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": run_labels(run)}}))
            .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match Api::<ServiceAccount>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &sa)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("default ServiceAccount in {name}: {e}"),
    }
}

/// A pod of one pause container.
pub fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .unwrap()
}

/// A tenant pod that no scheduler picks up (hundreds of them must not land on the fake nodes
/// other tests share the control plane with), for tests of admission alone.
pub fn unscheduled_pod(name: &str) -> Pod {
    unscheduled_pod_of(name, "registry.k8s.io/pause:3.10")
}

/// [`unscheduled_pod`] naming `image`: with real nodes, the image cache discovers tenant pods'
/// images and pulls them, so there it must be one the local registry serves.
pub fn unscheduled_pod_of(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "schedulerName": "warmpool-test-unscheduled",
            "containers": [{"name": "app", "image": image}]
        }
    }))
    .unwrap()
}

/// Creates [`pod`] `name` in `ns`; returns it as the API server stored it (after admission).
pub async fn create_pod(client: &Client, ns: &str, name: &str) -> Pod {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod(name))
        .await
        .unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"))
}

/// Waits (at most 30 s) for the webhook registration to be in effect: until an
/// [`unscheduled_pod`] created through `api` comes back as `mutated` says.
pub async fn wait_until_mutating(api: &Api<Pod>, mutated: fn(&Pod) -> bool) {
    let mut n = 0;
    eventually(
        "the webhook registration in effect",
        Duration::from_secs(30),
        || {
            n += 1;
            let api = api.clone();
            async move {
                let probe = api
                    .create(
                        &PostParams::default(),
                        &unscheduled_pod(&format!("probe-{n}")),
                    )
                    .await
                    .expect("probe pod created");
                mutated(&probe).then_some(())
            }
        },
    )
    .await;
}

/// The pods of `ns` that match `selector` and are not being deleted (none on an API error).
pub async fn live_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// A cluster-wide API of any kind the API server serves (a CRD's, say) as `DynamicObject`s.
pub fn dynamic_api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    kube::Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}
