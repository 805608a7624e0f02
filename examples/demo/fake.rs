//! The demo on fake nodes (no kubelet: where real nodes cannot run): warm and general fake
//! nodes, the CargoCATs tenants demo-1 and demo-2, what happened to each pod and how long each
//! tenant took to be *scheduled*. The demo plays the kubelet's part (pods are marked Running,
//! preempted pods are removed) and Karpenter's (a new warm node when a placeholder is evicted).

use std::path::Path;
use std::time::{Duration, Instant};

use kube::Client;

use crate::{SYSTEM_NAMESPACE, say};
use support::fakelet::spawn_fakelet;
use support::scenario::{Setup, Warmpool, create_tenant, wait_tenant_scheduled};

pub const TENANTS: [&str; 2] = ["demo-1", "demo-2"];
const WARM: (&str, &str) = ("1", "2560Mi");
const GENERAL: (&str, &str) = ("8", "32Gi");

pub async fn run(client: &Client, binary: &Path, keep: bool) -> anyhow::Result<()> {
    say("FAKE NODES: no kubelet runs them; times are to pods scheduled, not started");
    let fakelet = spawn_fakelet(client.clone());
    say("starting warmpool webhook and reconciler");
    let setup = Setup {
        run: "demo".into(),
        namespace: SYSTEM_NAMESPACE.into(),
        tenant_prefix: "demo-".into(),
        pool: "cargocats".into(),
        spare_slots: 2,
        real: None,
    };
    let warmpool = Warmpool::start(client, binary, setup).await;

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
        let started: Instant = create_tenant(client, &warmpool.run, tenant).await;
        let pods = wait_tenant_scheduled(client, tenant, Duration::from_secs(120)).await;
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
            .map(|s| {
                s.containers
                    .iter()
                    .filter(|c| c.name.starts_with("cache-"))
                    .filter_map(|c| c.image.clone())
                    .collect()
            })
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
        crate::keep_running().await;
    }

    say("cleaning up");
    warmpool.cleanup(&TENANTS.map(String::from)).await;
    fakelet.abort();
    Ok(())
}
