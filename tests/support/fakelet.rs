//! Fake nodes and the part of a kubelet the tests need, as kwok does it: Node objects with
//! capacity, labels and taints, kept Ready; pods bound to them marked Running; pods deleted on
//! them (preemption victims included) finished at once. Test harness only, never product code.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

/// The label every fake node carries, so tests can find and remove them.
pub const FAKE_NODE_LABEL: &str = "warmpool.test/fake-node";

/// The end of the names of fake nodes that have no kubelet at all, not even this one: a test
/// writes the status of their pods itself ([`super::reconciler::Run::create_running_pod`]).
pub const NO_KUBELET_SUFFIX: &str = "-no-kubelet";

/// One fake node to create.
pub struct FakeNode<'a> {
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// `(key, value, effect)`.
    pub taints: &'a [(&'a str, &'a str, &'a str)],
    pub cpu: &'a str,
    pub memory: &'a str,
}

/// Creates (or recreates) a Node and makes it Ready with the given capacity.
pub async fn create_node(client: &Client, node: &FakeNode<'_>) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels: BTreeMap<String, String> = node
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.insert(FAKE_NODE_LABEL.into(), "true".into());
    labels.insert("kubernetes.io/hostname".into(), node.name.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    let taints: Vec<_> = node
        .taints
        .iter()
        .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
        .collect();
    let object: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {"taints": taints},
    }))?;
    match nodes.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            nodes
                .patch(
                    node.name,
                    &PatchParams::apply("warmpool-test").force(),
                    &Patch::Apply(&object),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let resources = json!({"cpu": node.cpu, "memory": node.memory, "pods": "110"});
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubeletReady",
                        "message": "fake node of the warmpool tests",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "v1.34.0-fake", "architecture": "amd64", "operatingSystem": "linux",
                     "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "fake",
                     "containerRuntimeVersion": "fake://1", "kubeProxyVersion": ""},
    }});
    nodes
        .patch_status(node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Deletes every fake node whose name starts with `prefix`.
pub async fn delete_nodes(client: &Client, prefix: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels(&format!("{FAKE_NODE_LABEL}=true")))
        .await?;
    for n in list
        .items
        .iter()
        .filter(|n| n.name_any().starts_with(prefix))
    {
        let _ = nodes.delete(&n.name_any(), &DeleteParams::default()).await;
    }
    Ok(())
}

/// Plays the kubelet for every pod bound to a fake node, until the returned handle is dropped
/// or aborted. Idempotent: several fakelets on one cluster do no harm.
pub fn spawn_fakelet(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let pods: Api<Pod> = Api::all(client.clone());
            let config = watcher::Config::default().fields("spec.nodeName!=");
            let mut events = watcher(pods.clone(), config).boxed();
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    Ok(_) => continue,
                    Err(_) => break,
                };
                play_kubelet(&client, &pod).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn play_kubelet(client: &Client, pod: &Pod) {
    let (Some(ns), name) = (pod.namespace(), pod.name_any()) else {
        return;
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if node.is_some_and(|n| n.ends_with(NO_KUBELET_SUFFIX)) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        let _ = api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await;
        return;
    }
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running");
    if running {
        return;
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                        "started": true, "state": {"running": {"startedAt": now}}}))
        .collect();
    let status = json!({"status": {
        "phase": "Running", "startTime": now, "podIP": "10.244.0.10", "hostIP": "10.0.0.1",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    }});
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}
