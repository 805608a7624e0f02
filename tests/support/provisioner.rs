//! A stand-in for Karpenter in the fake-node tests: one warm fake node of one slot per
//! placeholder pod of the prewarmer (Karpenter provisions nodes for Pending pods; here at once,
//! since the time it takes is not what these tests measure).
//! Test harness only, never product code.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use super::scenario::Warmpool;

/// Running until dropped (or [`Provisioner::stop`]); `nodes` are the nodes it added.
pub struct Provisioner {
    task: tokio::task::JoinHandle<()>,
    nodes: Arc<Mutex<Vec<String>>>,
}

impl Provisioner {
    /// Watches the prewarmer's pods of `warmpool`; adds `<run>-warm-N` nodes of `cpu`/`memory`.
    pub fn start(client: &Client, warmpool: &Warmpool, cpu: &str, memory: &str) -> Provisioner {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &warmpool.namespace);
        let nodes = Arc::new(Mutex::new(Vec::new()));
        let (added, run, pool) = (nodes.clone(), warmpool.run.clone(), warmpool.pool.clone());
        let (client, cpu, memory) = (client.clone(), cpu.to_owned(), memory.to_owned());
        let task = tokio::spawn(async move {
            let (store, writer) = reflector::store();
            let events = watcher(
                pods,
                watcher::Config::default().labels("app.kubernetes.io/name=warmpool-prewarmer"),
            )
            .default_backoff()
            .reflect(writer)
            .applied_objects();
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                // A failed watch is retried (default_backoff); its error is no reason to stop.
                if event.is_err() {
                    continue;
                }
                // One slot per node: as many nodes as there are placeholders (Karpenter ends
                // there too, and a node added for one Pending pod may be taken by another).
                let placeholders = store
                    .state()
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count();
                while added.lock().unwrap().len() < placeholders {
                    let name = {
                        let mut nodes = added.lock().unwrap();
                        let name = format!("{run}-warm-{}", nodes.len() + 1);
                        nodes.push(name.clone());
                        name
                    };
                    let node = super::fakelet::FakeNode {
                        name: &name,
                        labels: &[("workload-type", &pool)],
                        taints: &[("workload-type", &pool, "NoSchedule")],
                        cpu: &cpu,
                        memory: &memory,
                    };
                    if let Err(e) = super::fakelet::create_node(&client, &node).await {
                        eprintln!("provisioner: cannot create {name}: {e}");
                    }
                }
            }
        });
        Provisioner { task, nodes }
    }

    /// The nodes added so far.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.lock().unwrap().clone()
    }

    /// Adds no more nodes.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pending, and the scheduler found no node for it (and is not preempting for it).
pub fn unschedulable(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    !bound
        && status.nominated_node_name.is_none()
        && status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}
