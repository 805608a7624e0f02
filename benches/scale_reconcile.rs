//! The reconciler at scale, on a control plane of its own (under `cargo test` it only says how
//! to run it; `cargo bench` without `WARMPOOL_TEST_KUBECONFIG` likewise, rather than start a control plane
//! that others share):
//!
//! ```text
//! export WARMPOOL_CLUSTER_DIR=$PWD/target/cluster-scale
//! WARMPOOL_TEST_KUBECONFIG=$(tests/cluster/cluster.sh up) cargo bench --bench scale_reconcile
//! tests/cluster/cluster.sh down
//! ```
//!
//! A control plane of its own, because 1,000 labelled tenants are tenants for every reconciler
//! in the cluster (their pods' images would crowd other runs' image caches).
//!
//! It creates `WARMPOOL_SCALE_TENANTS` (default 1,000) tenant namespaces with 3 pods each, their
//! status written as a kubelet writes it once they run (there is none), starts the real
//! `warmpool reconcile` (as a ServiceAccount of its own, so that the API server can count its
//! requests), and reports:
//! - the time to enrol (label) every existing tenant from start;
//! - for `WARMPOOL_SCALE_PROBES` (default 10) *growing* new tenants created one at a time: the
//!   time from the namespace's creation to its label, and from its first pod to the image cache
//!   DaemonSet (the pod runs a new image) and the prewarmer Deployment (`slot: auto`, and the pod
//!   asks for a quarter more CPU than any tenant so far) being updated; then as many *plain* new
//!   tenants, whose pods change neither;
//! - the API requests the reconciler made for each new tenant, by kind, from the API server's
//!   own `apiserver_flowcontrol_dispatched_requests_total`: FlowSchemas that match only the
//!   reconciler's ServiceAccount sort them into namespace writes, event writes, workload writes
//!   (DaemonSet, Deployment, PriorityClass), Lease traffic, other writes, and reads — and
//!   asserts the budget: at most 2 writes per plain tenant (its label and the label's Event),
//!   and on top of those at most one per workload object a growing tenant changes (2), no read;
//!   with `prewarmer.spareSlots: {auto: ...}` the arrivals record (ConfigMap) is written at most
//!   once per 30 s over the whole phase, not per tenant, and counted in a class of its own;
//! - a full resync: the reconciler restarted with every tenant enrolled, timed from its start to
//!   ready (every watch listed, its three objects applied), asserting that it writes no tenant
//!   and at most its three objects;
//! - the reconciler's RSS (VmRSS, VmHWM) after the initial sync, at the end of the probes and
//!   after the resync.
//!
//! Everything it creates is deleted at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use support::cluster::{eventually, kubeconfig};
use support::objects::dynamic_api;
use support::reconciler::{Run, cached_images};
use warmpool::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
const TENANT_LABEL: &str = "warmpool.io/tenant";
const PREWARMER: &str = "warmpool-prewarmer";
const IMAGE_CACHE: &str = "warmpool-image-cache";
const PODS_PER_TENANT: usize = 3;
/// Namespaces and pods created at the same time.
const CREATE_CONCURRENCY: usize = 32;
/// How often the probes look at the API.
const POLL: Duration = Duration::from_millis(20);

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The request classes, each a FlowSchema of its own (lower precedence matches first).
const CLASSES: [(&str, &str); 7] = [
    ("lease", "Lease (all verbs)"),
    ("ns-write", "namespace writes"),
    ("event-write", "event writes"),
    (
        "workload-write",
        "workload writes (DaemonSet, Deployment, PriorityClass)",
    ),
    (
        "arrivals-write",
        "arrivals record writes (ConfigMap warmpool-arrivals)",
    ),
    ("other-write", "other writes"),
    ("read", "reads (get, list, watch)"),
];

/// The API of FlowSchemas: the run counts the reconciler's requests by class (`CLASSES`), one
/// FlowSchema each (`flow_schema`).
fn flow_schemas(client: &Client) -> Api<DynamicObject> {
    dynamic_api(
        client,
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "FlowSchema",
        "flowschemas",
    )
}

/// The API of ClusterRoleBindings (the scale run binds its ServiceAccount with one).
fn cluster_role_bindings(client: &Client) -> Api<DynamicObject> {
    dynamic_api(
        client,
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    )
}

fn flow_schema(run_id: &str, class: &str, precedence: u32, sa: &str, ns: &str) -> Value {
    const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| {
        json!({"verbs": verbs, "apiGroups": groups, "resources": resources,
               "clusterScope": true, "namespaces": ["*"]})
    };
    let (resource_rules, non_resource) = match class {
        "lease" => (
            vec![rule(&["*"], &["coordination.k8s.io"], &["leases"])],
            false,
        ),
        "ns-write" => (vec![rule(&WRITES, &[""], &["namespaces"])], false),
        "event-write" => (
            vec![rule(&WRITES, &["", "events.k8s.io"], &["events"])],
            false,
        ),
        "workload-write" => (
            vec![
                rule(&WRITES, &["apps"], &["deployments", "daemonsets"]),
                rule(&WRITES, &["scheduling.k8s.io"], &["priorityclasses"]),
            ],
            false,
        ),
        "arrivals-write" => (vec![rule(&WRITES, &[""], &["configmaps"])], false),
        "other-write" => (vec![rule(&WRITES, &["*"], &["*"])], false),
        _ => (vec![rule(&["get", "list", "watch"], &["*"], &["*"])], true),
    };
    let mut rules = json!({
        "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": sa, "namespace": ns}}],
        "resourceRules": resource_rules,
    });
    if non_resource {
        rules["nonResourceRules"] = json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]);
    }
    json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": format!("{run_id}-{class}")},
        "spec": {
            "priorityLevelConfiguration": {"name": "exempt"},
            "matchingPrecedence": precedence,
            "rules": [rules],
        },
    })
}

/// The reconciler's requests so far, by class, from the API server's metrics.
async fn requests(client: &Client, run_id: &str) -> BTreeMap<&'static str, f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = client
        .request_text(request)
        .await
        .expect("the API server's /metrics");
    let mut counts = BTreeMap::new();
    for (class, _) in CLASSES {
        let needle = format!("flow_schema=\"{run_id}-{class}\"");
        let n: f64 = text
            .lines()
            .filter(|l| l.starts_with("apiserver_flowcontrol_dispatched_requests_total{"))
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counts.insert(class, n);
    }
    counts
}

fn delta(
    after: &BTreeMap<&'static str, f64>,
    before: &BTreeMap<&'static str, f64>,
) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A tenant pod as the webhook leaves it (the scale test runs none): with the pool's required
/// affinity and toleration, so that the reconciler counts it steered, as in a cluster whose
/// webhook is up (an unsteered pod would cost an Event of its own).
fn pod_spec(image: &str, cpu: &str, pool: &str) -> Value {
    json!({
        // Never scheduled: no node carries this label, so the pods stay Pending and no other
        // test's fake node is filled with them.
        "nodeSelector": {"warmpool-scale": "none"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "workload-type", "operator": "In", "values": [pool]}]}]}}},
        "tolerations": [{"key": "workload-type", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
        "containers": [{"name": "c", "image": image,
                        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
    })
}

/// A kubeconfig for the ServiceAccount `sa` of `ns`, bound to cluster-admin for this run.
async fn service_account_kubeconfig(run: &Run, client: &Client, sa: &str) -> std::path::PathBuf {
    let ns = &run.namespace;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sa}})).expect("sa"),
        )
        .await
        .expect("create the ServiceAccount");
    let bindings = cluster_role_bindings(client);
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-scale", run.id)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    }))
    .expect("binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind the ServiceAccount");
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 7200}}))
            .expect("token request");
    let token = accounts
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .expect("a token in the status")
        .token;
    let admin: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(kubeconfig().expect("kubeconfig")).expect("admin kubeconfig"),
    )
    .expect("kubeconfig YAML");
    let path = run.dir.path().join("scale.kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "c",
    });
    std::fs::write(&path, serde_saphyr::to_string(&config).expect("YAML")).expect("kubeconfig");
    path
}

/// The prewarmer's CPU request in millicores (the API server writes 5000m as `5`).
fn prewarmer_millicores(d: &Deployment) -> Option<u64> {
    let container = d
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?;
    let requests = container.resources.as_ref()?.requests.as_ref()?;
    let cpu = &requests.get("cpu")?.0;
    match cpu.strip_suffix('m') {
        Some(millis) => millis.parse().ok(),
        None => cpu
            .parse::<f64>()
            .ok()
            .map(|cores| (cores * 1000.0).round() as u64),
    }
}

/// Polls until `check` holds; the time it took from `since`.
async fn until<F, Fut>(what: &str, since: Instant, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if check().await {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    format!(
        "median {}, max {}",
        ms(v[v.len() / 2]),
        ms(*v.last().expect("samples"))
    )
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: not the place for 1,000
    // namespaces.
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching || std::env::var_os("WARMPOOL_TEST_KUBECONFIG").is_none() {
        eprintln!(
            "scale_reconcile: not run. It needs a control plane of its own: \
             WARMPOOL_TEST_KUBECONFIG=$(tests/cluster/cluster.sh up) cargo bench --bench scale_reconcile \
             (with WARMPOOL_CLUSTER_DIR set to a directory of its own; see docs/performance.md)"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(reconciler_at_scale());
}

async fn reconciler_at_scale() {
    let client = support::cluster::client()
        .await
        .expect("WARMPOOL_TEST_KUBECONFIG names the control plane");
    let tenants = env_count("WARMPOOL_SCALE_TENANTS", 1000);
    let probes = env_count("WARMPOOL_SCALE_PROBES", 10).max(1);
    // spareSlots auto: arrivals are recorded, and must not cost a write per tenant. `max` is
    // reached by the existing tenants (they all arrived within one span), so that a probe's
    // arrival changes no spare slot, as with 1,000 tenants and max 40.
    let max = tenants.clamp(1, 40);
    // Every tenant is timed to Ready (its pods never are: no kubelet), and none reaches its
    // timeout while the test runs (10,000 tenants take minutes to create): the time-to-Ready
    // bookkeeping of every tenant is in the memory figures, and no TenantNotReady write lands
    // in a probe's window.
    let config = Config::from_yaml(&format!(
        "prewarmer: {{slot: auto, spareSlots: {{auto: {{max: {max}}}}}}}\n\
         imageCache: {{images: [], maxImages: 100}}\n\
         tenants: {{timeToReady: {{window: 1m, timeout: 1h}}}}"
    ))
    .expect("the bench's configuration");
    let run = Run::new(&client, BIN.as_ref(), config).await;
    let id = run.id.clone();
    let measured = AssertUnwindSafe(measure(&run, &client, tenants, probes))
        .catch_unwind()
        .await;
    // Clean up, whatever happened (the reconciler has stopped with `measure`).
    let schemas = flow_schemas(&client);
    for (class, _) in CLASSES {
        let _ = schemas
            .delete(&format!("{id}-{class}"), &DeleteParams::default())
            .await;
    }
    let bindings = cluster_role_bindings(&client);
    let _ = bindings
        .delete(&format!("{id}-scale"), &DeleteParams::default())
        .await;
    let started = Instant::now();
    run.cleanup().await;
    println!(
        "\n- deleted {} namespaces in {:.1} s (the namespace controller empties them in the background)",
        tenants + 2 * probes + 1,
        started.elapsed().as_secs_f64()
    );
    if let Err(panic) = measured {
        std::panic::resume_unwind(panic);
    }
}

/// Everything but the clean-up; the reconciler process ends with it.
async fn measure(run: &Run, client: &Client, tenants: usize, probes: usize) {
    let client = client.clone();
    let id = run.id.clone();
    println!("# warmpool reconciler at scale (run {id})\n");
    println!(
        "- {tenants} tenants x {PODS_PER_TENANT} pods, {probes} growing and {probes} plain probe tenants; {} CPUs; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    // The reconciler's own identity, and FlowSchemas that count its requests.
    let sa = "warmpool-scale";
    let sa_kubeconfig = service_account_kubeconfig(run, &client, sa).await;
    let schemas = flow_schemas(&client);
    for (i, (class, _)) in CLASSES.iter().enumerate() {
        let schema: DynamicObject =
            serde_json::from_value(flow_schema(&id, class, 50 + i as u32, sa, &run.namespace))
                .expect("flow schema");
        schemas
            .create(&PostParams::default(), &schema)
            .await
            .unwrap_or_else(|e| panic!("create FlowSchema {class}: {e}"));
    }

    // The tenants, with three pods each, as fast as the API server takes them.
    let started = Instant::now();
    let images = ["app", "db", "cache"].map(|i| format!("example.com/{id}/{i}:1"));
    futures::stream::iter(0..tenants)
        .for_each_concurrent(CREATE_CONCURRENCY, |i| {
            let (run, images) = (&run, &images);
            async move {
                let ns = run.tenant(&format!("{i:05}"));
                run.create_namespace(&ns, &[]).await;
                for (p, image) in images.iter().enumerate().take(PODS_PER_TENANT) {
                    run.create_running_pod(
                        &ns,
                        &format!("p{p}"),
                        pod_spec(image, "100m", &run.pool),
                    )
                    .await;
                }
            }
        })
        .await;
    let created = started.elapsed();
    println!(
        "- created {tenants} namespaces and {} pods in {:.1} s",
        tenants * PODS_PER_TENANT,
        created.as_secs_f64()
    );

    // Start: every existing tenant enrolled.
    let sa_kubeconfig = sa_kubeconfig.to_string_lossy().into_owned();
    // No periodic re-apply inside the measurement (it would land in some probe's window).
    let rec = run.spawn(
        "scale",
        &["--resync", "30m"],
        &[("KUBECONFIG", &sa_kubeconfig), ("RUST_LOG", "info")],
    );
    let pid = rec.child.as_ref().expect("running").0.id();
    let started = Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let prefix = run.tenant("");
    let enrolled = eventually(
        "every tenant enrolled",
        Duration::from_secs(600),
        || async {
            let list = namespaces
                .list_metadata(&ListParams::default().labels(&format!("{TENANT_LABEL}=enabled")))
                .await
                .ok()?;
            let mine = list
                .items
                .iter()
                .filter(|n| n.name_any().starts_with(&prefix))
                .count();
            (mine >= tenants).then(|| started.elapsed())
        },
    )
    .await;
    let caches: Api<DaemonSet> = Api::namespaced(client.clone(), &run.namespace);
    let prewarmers: Api<Deployment> = Api::namespaced(client.clone(), &run.namespace);
    eventually(
        "the image cache has the tenants' images",
        Duration::from_secs(120),
        || async {
            let ds = caches.get(IMAGE_CACHE).await.ok()?;
            let cached = cached_images(&ds);
            images.iter().all(|i| cached.contains(i)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_sync = memory(pid);
    println!(
        "- start-up: every existing tenant labelled {:.1} s after the reconciler started; RSS then {} (peak {})",
        enrolled.as_secs_f64(),
        mib(after_sync.rss_kib),
        mib(after_sync.hwm_kib)
    );

    // Quiet baseline: what the reconciler does with nothing happening (Lease renewals, resync).
    let before = requests(&client, &id).await;
    let idle = Duration::from_secs(10);
    tokio::time::sleep(idle).await;
    let quiet = delta(&requests(&client, &id).await, &before);

    // Probes: one new tenant at a time. A *growing* probe's first pod runs a new image and asks
    // for a quarter more CPU than any tenant so far (past the auto slot's 10 % hysteresis), so
    // that the image cache and the prewarmer must both change; a *plain* probe runs the images
    // already cached with small requests, so that neither does.
    let mut to_label = Vec::new();
    let mut to_cache = Vec::new();
    let mut to_prewarmer = Vec::new();
    let mut growing: Vec<BTreeMap<&'static str, f64>> = Vec::new();
    let mut plain: Vec<BTreeMap<&'static str, f64>> = Vec::new();
    let mut windows = Vec::new();
    let mut millis = 4000u64;
    let probes_started = Instant::now();
    let before_probes = requests(&client, &id).await;
    for k in 0..2 * probes {
        let grows = k < probes;
        let before = requests(&client, &id).await;
        let window = Instant::now();
        let ns = run.tenant(&format!("probe-{k}"));
        let image = if grows {
            format!("example.com/{id}/probe-{k}:1")
        } else {
            images[0].clone()
        };
        let first_cpu = if grows {
            millis = millis * 5 / 4;
            millis
        } else {
            100
        };
        let created = Instant::now();
        run.create_namespace(&ns, &[]).await;
        let label = async {
            until("the probe's label", created, || async {
                namespaces.get_metadata(&ns).await.ok().is_some_and(|n| {
                    n.labels().get(TENANT_LABEL).map(String::as_str) == Some("enabled")
                })
            })
            .await
        };
        let workloads = async {
            run.create_running_pod(
                &ns,
                "p0",
                pod_spec(&image, &format!("{first_cpu}m"), &run.pool),
            )
            .await;
            let pod_created = Instant::now();
            for p in 1..PODS_PER_TENANT {
                run.create_running_pod(
                    &ns,
                    &format!("p{p}"),
                    pod_spec(&images[p % images.len()], "100m", &run.pool),
                )
                .await;
            }
            if !grows {
                return None;
            }
            let cache = until("the probe's image in the cache", pod_created, || async {
                caches
                    .get(IMAGE_CACHE)
                    .await
                    .ok()
                    .is_some_and(|ds| cached_images(&ds).contains(&image))
            });
            // The first pod alone, or with the two small ones (within the hysteresis of it).
            let prewarmer = until("the prewarmer resized", pod_created, || async {
                prewarmers
                    .get(PREWARMER)
                    .await
                    .ok()
                    .and_then(|d| prewarmer_millicores(&d))
                    .is_some_and(|m| m >= first_cpu)
            });
            Some(tokio::join!(cache, prewarmer))
        };
        let (label, workloads) = tokio::join!(label, workloads);
        // Let trailing writes (debounced applies, events) land in this probe's window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = delta(&requests(&client, &id).await, &before);
        windows.push(window.elapsed());
        to_label.push(label);
        match workloads {
            Some((cache, prewarmer)) => {
                println!(
                    "  probe {k} (growing): label {:.0} ms, image cache {:.0} ms, prewarmer {:.0} ms; requests {:?}",
                    label.as_secs_f64() * 1e3,
                    cache.as_secs_f64() * 1e3,
                    prewarmer.as_secs_f64() * 1e3,
                    counts
                );
                to_cache.push(cache);
                to_prewarmer.push(prewarmer);
                growing.push(counts);
            }
            None => {
                println!(
                    "  probe {k} (plain): label {:.0} ms; requests {:?}",
                    label.as_secs_f64() * 1e3,
                    counts
                );
                plain.push(counts);
            }
        }
    }
    let end = memory(pid);
    let probe_phase = probes_started.elapsed();
    let record_writes = delta(&requests(&client, &id).await, &before_probes)["arrivals-write"];

    // A full resync: the reconciler restarted (it gives the Lease up on SIGTERM) with every
    // tenant enrolled, timed to ready (every watch listed, the three objects applied).
    let mut rec = rec;
    rec.terminate();
    let before_resync = requests(&client, &id).await;
    let restarted = Instant::now();
    let rec = run.spawn(
        "scale-2",
        &["--resync", "30m"],
        &[("KUBECONFIG", &sa_kubeconfig), ("RUST_LOG", "info")],
    );
    rec.wait_ready(Duration::from_secs(300)).await;
    let resync = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resynced = delta(&requests(&client, &id).await, &before_resync);
    let after_resync = memory(rec.child.as_ref().expect("running").0.id());

    println!();
    println!("| what | figure |");
    println!("| --- | --- |");
    println!(
        "| new namespace → labelled `{TENANT_LABEL}=enabled` | {} |",
        quantiles(to_label)
    );
    println!(
        "| first pod of a new tenant → its image in the DaemonSet | {} |",
        quantiles(to_cache)
    );
    println!(
        "| first pod of a new tenant → prewarmer Deployment resized | {} |",
        quantiles(to_prewarmer)
    );
    println!(
        "| RSS after enrolling {tenants} tenants | {} (VmHWM {}) |",
        mib(after_sync.rss_kib),
        mib(after_sync.hwm_kib)
    );
    println!(
        "| RSS at the end of the probes | {} (VmHWM {}) |",
        mib(end.rss_kib),
        mib(end.hwm_kib)
    );
    println!(
        "| full resync: restarted with {tenants} tenants enrolled → ready | {:.1} s |",
        resync.as_secs_f64()
    );
    println!(
        "| RSS after the resync | {} (VmHWM {}) |",
        mib(after_resync.rss_kib),
        mib(after_resync.hwm_kib)
    );
    println!(
        "| requests of the resync (and 3 s after) | {} |",
        CLASSES
            .iter()
            .filter(|(class, _)| resynced[class] > 0.0)
            .map(|(class, _)| format!("{class} {}", resynced[class]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    let window: f64 = windows.iter().map(Duration::as_secs_f64).sum::<f64>() / windows.len() as f64;
    println!(
        "API requests of the reconciler per new tenant (mean over {probes} probes of each kind, window {window:.1} s each), \
         and with nothing happening over {} s:",
        idle.as_secs()
    );
    println!();
    println!(
        "| class | per growing tenant (both workloads change) | per plain tenant (neither does) | quiet, per {window:.1} s |"
    );
    println!("| --- | ---: | ---: | ---: |");
    let mean = |of: &[BTreeMap<&'static str, f64>], class: &str| {
        of.iter().map(|c| c[class]).sum::<f64>() / of.len() as f64
    };
    for (class, label) in CLASSES {
        let quiet = quiet[class] * window / idle.as_secs_f64();
        println!(
            "| {label} | {:.1} | {:.1} | {quiet:.1} |",
            mean(&growing, class),
            mean(&plain, class)
        );
    }

    // The budget, per tenant and whatever the number of tenants: the label and its Event, plus
    // one write per workload object the tenant changes — nothing re-listed, nothing re-applied
    // when the reconciler's own updates come back through its watches.
    // The arrivals record is not a write per tenant: at most one per 30 s (FLUSH_EVERY) over
    // the whole phase, whichever probe's window it lands in; counted on its own below.
    let writes = |c: &BTreeMap<&'static str, f64>| {
        c["ns-write"] + c["event-write"] + c["workload-write"] + c["other-write"]
    };
    let record_bound = 1.0 + (probe_phase.as_secs_f64() / 30.0).floor();
    println!(
        "\narrivals record: {record_writes} ConfigMap write(s) for {} new tenants over {:.1} s \
         (bound: 1 + one per 30 s = {record_bound})",
        2 * probes,
        probe_phase.as_secs_f64()
    );
    assert!(
        record_writes <= record_bound,
        "{record_writes} arrivals record writes in {probe_phase:?}"
    );
    for (k, c) in plain.iter().enumerate() {
        assert!(
            writes(c) <= 2.0 && c["workload-write"] == 0.0,
            "plain probe {k}: {c:?}"
        );
        assert_eq!(c["read"], 0.0, "plain probe {k}: {c:?}");
    }
    for (k, c) in growing.iter().enumerate() {
        assert!(
            c["workload-write"] <= 2.0 && c["ns-write"] <= 1.0 && c["event-write"] <= 1.0,
            "growing probe {k}: {c:?}"
        );
        assert_eq!(c["read"], 0.0, "growing probe {k}: {c:?}");
    }
    // Every tenant is enrolled already: a restart labels nothing and records no Event; it
    // applies its three objects once (unchanged) and re-writes no tenant.
    assert_eq!(
        resynced["ns-write"] + resynced["event-write"],
        0.0,
        "resync: {resynced:?}"
    );
    assert!(resynced["workload-write"] <= 3.0, "resync: {resynced:?}");
}
