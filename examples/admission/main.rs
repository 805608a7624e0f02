//! What the webhook costs a user per pod, measured through the real API server:
//! `cargo run --release --example admission [-- --rates 10,25,50 --seconds 20]` (as root).
//!
//! Tenant pods are created at steady rates (open loop: one creation started every 1/rate s,
//! whatever the previous ones are doing), first with no webhook registered, then with warmpool
//! installed by its chart on a real node (two replicas, the API server calling them through the
//! Service). Each creation is timed from the request to the API server's answer. The pods name a
//! scheduler that does not exist, so they never reach a node: the API server, etcd and the
//! webhook are all that is measured. Printed per phase and rate: pods created, the rate
//! achieved, latency p50 / p99 / max, pods mutated, errors; then the webhook replicas' memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use support::objects::unscheduled_pod_of;
use support::real_nodes::{NodeSpec, REAL_TIMEOUT, RealCluster};
use support::release::{ChartRelease, command_line, local_image_values};

const TENANT: &str = "adm-t-1";
const RELEASE_NAMESPACE: &str = "adm-system";
const NODE: &str = "adm-system";

/// Admission overhead of the in-cluster webhook, through the real API server.
#[derive(Debug, Parser)]
struct Args {
    /// Pod creations per second, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
    rates: Vec<u32>,
    /// How long each rate is held.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// One phase at one rate.
struct Phase {
    mode: &'static str,
    rate: u32,
    created: usize,
    errors: usize,
    mutated: usize,
    /// Wall time from the first creation started to the last answered.
    took: Duration,
    latencies: Vec<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = support::cluster::client()
        .await
        .context("the local control plane did not start (tests/cluster/cluster.sh up)")?;
    let cluster = tokio::task::spawn_blocking(RealCluster::get)
        .await?
        .context("real nodes cannot run here (reason above)")?;
    eprintln!("==> warmpool's image (a static release build; first run: minutes)");
    tokio::task::spawn_blocking(|| cluster.tool_image().to_owned()).await?;
    clean(&client).await;
    let node = tokio::task::spawn_blocking(move || {
        cluster.node(&NodeSpec {
            name: NODE.into(),
            reserve: Some("cpu=1,memory=12Gi".into()),
            ..NodeSpec::default()
        })
    })
    .await?
    .context("the node cannot run here (reason above)")?;
    create_namespace(&client, TENANT).await?;
    create_namespace(&client, RELEASE_NAMESPACE).await?;

    // The cache discovers tenant pods' images: one the local registry serves.
    let image = cluster.registry.pause.clone();
    let mut phases = Vec::new();
    for &rate in &args.rates {
        eprintln!("==> no webhook: {rate} pods/s for {} s", args.seconds);
        phases.push(run(&client, "no webhook", rate, args.seconds, &image).await?);
    }

    let mut values = local_image_values(cluster);
    values.extend([
        "--set-json".to_owned(),
        r#"tenants.namespacePatterns=["adm-t-*"]"#.to_owned(),
    ]);
    let install = ChartRelease::install_args("adm", RELEASE_NAMESPACE, &values);
    eprintln!("==> {}", command_line(&install));
    let mut release = tokio::task::spawn_blocking(move || {
        ChartRelease::install("adm", RELEASE_NAMESPACE, &install)
    })
    .await?;
    let pods = release
        .wait_ready(&client, 2, REAL_TIMEOUT, || async { String::new() })
        .await;
    release.wait_in_rotation(&client, &pods, REAL_TIMEOUT).await;
    for &rate in &args.rates {
        eprintln!(
            "==> webhook in the cluster: {rate} pods/s for {} s",
            args.seconds
        );
        phases.push(run(&client, "webhook", rate, args.seconds, &image).await?);
    }
    let memory = webhook_memory();

    println!();
    println!(
        "{:<12} {:>6} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "phase",
        "rate/s",
        "created",
        "achieved/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "mutated",
        "errors"
    );
    for p in &phases {
        let mut l = p.latencies.clone();
        l.sort();
        let ms = |q: f64| {
            l.get(((l.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{:<12} {:>6} {:>8} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>7}",
            p.mode,
            p.rate,
            p.created,
            p.created as f64 / p.took.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(1.0),
            p.mutated,
            p.errors
        );
    }
    for (pid, rss, hwm) in memory {
        println!("webhook process {pid}: RSS {rss:.1} MiB, peak (VmHWM) {hwm:.1} MiB");
    }

    eprintln!("==> cleaning up");
    tokio::task::spawn_blocking(move || release.uninstall()).await?;
    clean(&client).await;
    drop(node);
    Ok(())
}

/// Creates pods in the tenant namespace at `rate` per second for `seconds`; then deletes them.
async fn run(
    client: &Client,
    mode: &'static str,
    rate: u32,
    seconds: u64,
    image: &str,
) -> anyhow::Result<Phase> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), TENANT);
    let results = Arc::new(Mutex::new(Vec::new()));
    let total = rate as u64 * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let (pods, results, image) = (pods.clone(), results.clone(), image.to_owned());
        let name = format!("{}-{rate}-{i}", mode.replace(' ', "-"));
        tasks.push(tokio::spawn(async move {
            let pod = unscheduled_pod_of(&name, &image);
            let sent = Instant::now();
            let result = pods.create(&PostParams::default(), &pod).await;
            let took = sent.elapsed();
            results.lock().await.push((
                took,
                result.map(|p| p.annotations().contains_key("warmpool.io/injected")),
            ));
        }));
    }
    for t in tasks {
        t.await?;
    }
    let took = started.elapsed();
    let results = std::mem::take(&mut *results.lock().await);
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("delete the pods")?;
    let ok: Vec<_> = results
        .iter()
        .filter_map(|(d, r)| r.as_ref().ok().map(|m| (*d, *m)))
        .collect();
    Ok(Phase {
        mode,
        rate,
        created: ok.len(),
        errors: results.len() - ok.len(),
        mutated: ok.iter().filter(|(_, m)| *m).count(),
        took,
        latencies: ok.iter().map(|(d, _)| *d).collect(),
    })
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("create namespace {name}"))?;
    Ok(())
}

/// The namespaces of an earlier run, gone.
async fn clean(client: &Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in [TENANT, RELEASE_NAMESPACE] {
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
    support::cluster::eventually("the namespaces deleted", REAL_TIMEOUT, || async {
        for ns in [TENANT, RELEASE_NAMESPACE] {
            if api.get_opt(ns).await.ok()?.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// `(pid, VmRSS MiB, VmHWM MiB)` of every `warmpool webhook` process on this host (the
/// release's containers run here, on the real node).
fn webhook_memory() -> Vec<(u32, f64, f64)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mut parts = cmdline.split(|b| *b == 0);
        if parts.next() != Some(b"/warmpool") || parts.next() != Some(b"webhook") {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |k| k / 1024.0)
        };
        found.push((pid, kib("VmRSS:"), kib("VmHWM:")));
    }
    found
}
