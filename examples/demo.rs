//! The warmpool demo on a real local control plane: `cargo run --example demo [-- --keep]`.
//!
//! Builds what is missing (warmpool, and Kubernetes from the Go module proxy on first use),
//! starts etcd, kube-apiserver, the scheduler and the controller manager on 127.0.0.1, runs
//! warmpool's webhook and reconciler against them, adds warm and general fake nodes, creates the
//! CargoCATs tenants demo-1 and demo-2, and reports what happened to each pod and how long each
//! tenant took to be scheduled. Fake nodes have no kubelet: the demo plays that part (pods are
//! marked Running, preempted pods are removed) and Karpenter's (a new warm node when a
//! placeholder is evicted).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams};
use support::cluster::{client, eventually, kubeconfig, repo_root};
use support::fakelet::{delete_nodes, spawn_fakelet};
use support::scenario::{Setup, Warmpool, create_tenant, wait_tenant_scheduled};

const TENANTS: [&str; 2] = ["demo-1", "demo-2"];
const SYSTEM_NAMESPACE: &str = "warmpool-system";
const WARM: (&str, &str) = ("1", "2560Mi");
const GENERAL: (&str, &str) = ("8", "32Gi");

fn say(line: impl AsRef<str>) {
    eprintln!("==> {}", line.as_ref());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let binary = build_warmpool()?;
    let cluster_was_up = cluster_script("status");
    say("starting the local control plane (the first run builds Kubernetes: several minutes)");
    let Some(client) = client().await else {
        anyhow::bail!(
            "the local control plane did not start: see the output of tests/cluster/cluster.sh up above"
        );
    };
    let fakelet = spawn_fakelet(client.clone());
    clean_previous_run(&client).await;

    say("starting warmpool webhook and reconciler");
    let setup = Setup {
        run: "demo".into(),
        namespace: SYSTEM_NAMESPACE.into(),
        tenant_prefix: "demo-".into(),
        pool: "cargocats".into(),
        spare_slots: 2,
    };
    let warmpool = Warmpool::start(&client, &binary, setup).await;

    say(
        "adding fake nodes: demo-warm-1 and demo-warm-2 (workload-type=cargocats, tainted), demo-general-1",
    );
    warmpool.add_warm_node("demo-warm-1", WARM.0, WARM.1).await;
    warmpool.add_warm_node("demo-warm-2", WARM.0, WARM.1).await;
    warmpool
        .add_general_node("demo-general-1", GENERAL.0, GENERAL.1)
        .await;
    let placed = warmpool
        .wait_placeholders_bound(2, Duration::from_secs(90))
        .await;
    let mut report = vec![String::from(
        "placeholders reserving room before any tenant:",
    )];
    for (pod, node) in &placed {
        report.push(format!("  {pod:<45} on {node}"));
    }

    let mut warm_nodes = 2;
    for tenant in TENANTS {
        let before: Vec<String> = warmpool
            .placeholders()
            .await
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        say(format!(
            "creating tenant {tenant}: dataservice, frontgateservice, mysql (640m CPU, 2150Mi)"
        ));
        let started: Instant = create_tenant(&client, &warmpool.run, tenant).await;
        let pods = wait_tenant_scheduled(&client, tenant, Duration::from_secs(120)).await;
        let took = started.elapsed();
        let after: Vec<(String, Option<String>)> = warmpool.placeholders().await;
        let preempted: Vec<&String> = before
            .iter()
            .filter(|p| !after.iter().any(|(a, _)| a == *p))
            .collect();

        report.push(String::new());
        report.push(format!(
            "tenant {tenant}: all pods scheduled {:.1} s after the namespace was created",
            took.as_secs_f64()
        ));
        for p in &pods {
            report.push(format!(
                "  {:<40} on {:<16} injected: {}",
                p.name, p.node, p.injected
            ));
        }
        let preempted = if preempted.is_empty() {
            "none".to_owned()
        } else {
            preempted
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        report.push(format!("  placeholders preempted: {preempted}"));

        // What Karpenter does in a real cluster: a new warm node per evicted placeholder.
        let pending = after.iter().filter(|(_, node)| node.is_none()).count();
        let mut added = Vec::new();
        for _ in 0..pending {
            warm_nodes += 1;
            let name = format!("demo-warm-{warm_nodes}");
            warmpool.add_warm_node(&name, WARM.0, WARM.1).await;
            added.push(name);
        }
        if !added.is_empty() {
            warmpool
                .wait_placeholders_bound(2, Duration::from_secs(60))
                .await;
            report.push(format!(
                "  new warm nodes for the evicted placeholders (Karpenter's part): {}",
                added.join(", ")
            ));
        }
    }

    report.push(String::new());
    if let Some(d) = warmpool.prewarmer().await {
        let status = d.status.unwrap_or_default();
        report.push(format!(
            "prewarmer: {} replicas wanted, {} running",
            d.spec.and_then(|s| s.replicas).unwrap_or(0),
            status.ready_replicas.unwrap_or(0)
        ));
    }
    if let Some(ds) = warmpool.image_cache().await {
        let images: Vec<String> = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.init_containers.as_ref())
            .map(|cs| cs.iter().skip(1).filter_map(|c| c.image.clone()).collect())
            .unwrap_or_default();
        let status = ds.status.unwrap_or_default();
        report.push(format!(
            "image cache: {} warm nodes scheduled, {} images cached:",
            status.current_number_scheduled,
            images.len()
        ));
        for i in images {
            report.push(format!("  {i}"));
        }
    }

    println!("\n{}\n", report.join("\n"));

    if keep {
        let kubeconfig = kubeconfig()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!("The demo keeps running. In another shell:\n");
        println!("  export KUBECONFIG={kubeconfig}");
        println!(
            "  kubectl get ns -L warmpool.io/tenant   # kubectl: tests/cluster/cluster.sh kubectl-path"
        );
        println!("  kubectl get pods -A -o wide\n");
        println!("Ctrl-C stops warmpool; tests/cluster/cluster.sh down stops the control plane.");
        let _ = tokio::signal::ctrl_c().await;
    }

    say("cleaning up");
    warmpool.cleanup(&TENANTS.map(String::from)).await;
    fakelet.abort();
    if !keep && !cluster_was_up {
        cluster_script("down");
    }
    Ok(())
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
    let api: Api<Namespace> = Api::all(client.clone());
    let mut found = false;
    for ns in TENANTS.iter().copied().chain([SYSTEM_NAMESPACE]) {
        if api.delete(ns, &DeleteParams::default()).await.is_ok() {
            found = true;
        }
    }
    let _ = delete_nodes(client, "demo-").await;
    if found {
        say("removing the objects of a previous demo run");
        eventually(
            "previous demo namespaces deleted",
            Duration::from_secs(120),
            || async {
                let mut left = 0;
                for ns in TENANTS.iter().copied().chain([SYSTEM_NAMESPACE]) {
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
