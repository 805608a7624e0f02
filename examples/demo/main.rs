//! The warmpool demo on a real local control plane: `cargo run --example demo [-- --keep]
//! [--fake-nodes]`.
//!
//! Builds what is missing (warmpool; Kubernetes and the kubelet from the Go module proxy, the
//! local registry and its images, containerd from Debian on first use), starts etcd,
//! kube-apiserver, the scheduler and the controller manager on 127.0.0.1, and then:
//!
//! - on real nodes that Karpenter launches ([`real`], as root with Debian's packages at hand):
//!   the CargoCATs tenant started cold (no warmpool: Karpenter launches a node, every image
//!   pulled) and warm (warmpool's placeholder and image cache on a warm node Karpenter launched
//!   for it), both timed to every pod Ready, ending with `cold start: X s, warm start: Y s (Zx
//!   faster)`;
//! - where real nodes cannot run (it says why), or with `--fake-nodes`: the fake-node demo
//!   ([`fake`]), tenants timed to scheduled.

mod fake;
mod real;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams};
use support::cluster::{client, eventually, kubeconfig, repo_root};
use support::fakelet::delete_nodes;
use support::real_nodes::RealCluster;

const SYSTEM_NAMESPACE: &str = "warmpool-system";
/// Every namespace a demo run creates.
const NAMESPACES: [&str; 4] = ["demo-1", "demo-2", "demo-cold", SYSTEM_NAMESPACE];

fn say(line: impl AsRef<str>) {
    eprintln!("==> {}", line.as_ref());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let fake_nodes = std::env::args().any(|a| a == "--fake-nodes");
    let binary = build_warmpool()?;
    let cluster_was_up = cluster_script("status");
    say("starting the local control plane (the first run builds Kubernetes: several minutes)");
    let Some(client) = client().await else {
        anyhow::bail!(
            "the local control plane did not start: see the output of tests/cluster/cluster.sh up above"
        );
    };
    clean_previous_run(&client).await;
    let real = if fake_nodes {
        None
    } else {
        say("real nodes: containerd, the kubelet and the local registry (first run: minutes)");
        tokio::task::spawn_blocking(RealCluster::get).await?
    };
    let result = match real {
        Some(cluster) => real::run(&client, &binary, cluster, keep).await,
        None => {
            if !fake_nodes {
                say("real nodes cannot run here (the reason is above): the fake-node demo instead");
            }
            fake::run(&client, &binary, keep).await
        }
    };
    if !keep && !cluster_was_up {
        cluster_script("down");
    }
    result
}

/// `--keep`: how to look around, then wait for Ctrl-C.
async fn keep_running() {
    let kubeconfig = kubeconfig()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("The demo keeps running. In another shell:\n");
    println!("  export KUBECONFIG={kubeconfig}");
    println!(
        "  kubectl get ns -L warmpool.io/tenant   # kubectl: tests/cluster/cluster.sh kubectl-path"
    );
    println!("  kubectl get pods -A -o wide\n");
    println!(
        "Ctrl-C stops warmpool and cleans up; tests/cluster/cluster.sh down stops the control plane."
    );
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `tests/cluster/cluster.sh <verb>` quietly; true when it succeeds.
fn cluster_script(verb: &str) -> bool {
    Command::new(repo_root().join("tests/cluster/cluster.sh"))
        .arg(verb)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo run --example` builds the example, not the binary it drives: build that too.
fn build_warmpool() -> anyhow::Result<PathBuf> {
    say("building warmpool");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--bin", "warmpool"])
        .current_dir(repo_root())
        .status()?;
    anyhow::ensure!(status.success(), "cargo build --bin warmpool failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    Ok(target.join("debug/warmpool"))
}

/// A previous `--keep` run may have left its objects: remove them before starting again.
async fn clean_previous_run(client: &Client) {
    // The chart's release first: its cluster-wide objects would block the next install.
    let _ = tokio::task::spawn_blocking(|| {
        let helm = support::helm::find().ok()?;
        Command::new(helm)
            .arg("--kubeconfig")
            .arg(kubeconfig()?)
            .args([
                "uninstall",
                "warmpool",
                "--namespace",
                SYSTEM_NAMESPACE,
                "--wait",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()
    })
    .await;
    let api: Api<Namespace> = Api::all(client.clone());
    let mut found = false;
    for ns in NAMESPACES {
        if api.delete(ns, &DeleteParams::default()).await.is_ok() {
            found = true;
        }
    }
    let _ = delete_nodes(client, "demo-").await;
    // A `--keep` run's NodePools: Karpenter removes their nodes with them.
    for pool in ["demo-general", "demo-warm"] {
        let _ = support::karpenter::node_pools(client)
            .delete(pool, &DeleteParams::default())
            .await;
    }
    if found {
        say("removing the objects of a previous demo run");
        eventually(
            "previous demo namespaces deleted",
            Duration::from_secs(120),
            || async {
                let mut left = 0;
                for ns in NAMESPACES {
                    if api.get_opt(ns).await.ok().flatten().is_some() {
                        left += 1;
                    }
                }
                (left == 0).then_some(())
            },
        )
        .await;
    }
}
