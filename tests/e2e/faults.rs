//! Faults on the local control plane (`tests/cluster/cluster.sh up`), with the real binaries:
//!
//! - the webhook's certificate replaced, again and again, while reviews flow both from the test
//!   and from the real API server creating pods: no review fails, every pod is mutated;
//! - the API server restarted while the reconciler runs, with drift made while it is away: the
//!   reconciler rides it out, takes its Lease back and repairs everything.
//!
//! Proved elsewhere and not repeated: the webhook killed → pods still created with
//! `failurePolicy: Ignore` (tests/e2e/webhook.rs `with_the_webhook_down_pods_are_still_created`);
//! two reconcilers, the leader SIGKILLed → the standby takes the Lease and repairs
//! (tests/e2e/reconcile.rs `a_standby_takes_over_and_repairs_when_the_leader_dies`).
//!
//! Without a control plane the tests print SKIP (and fail when CI=true).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use support::cluster::{
    ChildGuard, client, client_from, eventually, free_port, kubeconfig, unique,
};
use support::reconciler::Run;
use support::tls::{client_config, client_config_trusting};
use support::webhook::{Webhook, run_labels, unregister};

use super::BIN;
use warmpool::config::Config;
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pod-create.json"
);
const PREWARMER: &str = "warmpool-prewarmer";
const IMAGE_CACHE: &str = "warmpool-image-cache";
const LEASE: &str = "warmpool-reconciler";

/// One fault at a time: they load two shared cores and measure what breaks.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// A certificate replaced under load

/// One review of the fixture with `uid`, on a fresh connection (a new handshake, so the
/// certificate served now): Ok(()) when it is answered 200 with its uid and a patch.
async fn review(port: u16, config: Arc<rustls::ClientConfig>, uid: &str) -> Result<(), String> {
    let mut body: Value = serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
    body["request"]["uid"] = json!(uid);
    support::webhook::review(port, config, uid, serde_json::to_vec(&body).unwrap()).await
}

/// The value of one series in the Prometheus text of the webhook's metrics port, 0 if absent.
async fn metric(port: u16, series: &str) -> f64 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await else {
        return 0.0;
    };
    let _ = tcp
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_string(&mut text)).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn is_mutated(pod: &Pod) -> bool {
    pod.annotations()
        .get("warmpool.io/injected")
        .is_some_and(|v| v == "node-affinity,tolerations")
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .is_some()
}

async fn create_pod(client: &Client, ns: &str, name: &str) -> Result<Pod, String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| e.to_string())
}

/// Replaces `tls.crt` and `tls.key` in `dir` by those of `from`: in place, the certificate
/// first and the key 300 ms later (a torn pair is on disk in between), or by renaming new
/// files over the old ones.
async fn swap_certificate(dir: &Path, from: &Path, in_place: bool) {
    for (i, file) in ["tls.crt", "tls.key"].into_iter().enumerate() {
        let bytes = std::fs::read(from.join(file)).expect("new pair");
        if in_place {
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            std::fs::write(dir.join(file), bytes).expect("overwrite");
        } else {
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, bytes).expect("write");
            std::fs::rename(&tmp, dir.join(file)).expect("rename");
        }
    }
}

#[tokio::test]
async fn a_certificate_replaced_under_load_fails_no_review() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let run = unique("faults-cert");
    let prefix = format!("{run}-demo-");
    let mut webhook = Webhook::start(BIN.as_ref(), None).await;
    let dir = webhook.dir.path().to_path_buf();
    // A second pair, from another CA; the API server and the test trust both CAs, as during
    // a CA rotation.
    let other = tempfile::tempdir().unwrap();
    support::loopback::certs(BIN, other.path());
    let original = tempfile::tempdir().unwrap();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::copy(dir.join(file), original.path().join(file)).unwrap();
    }
    let cas = vec![dir.join("ca.crt"), other.path().join("ca.crt")];
    let bundle: Vec<u8> = cas
        .iter()
        .flat_map(|ca| std::fs::read(ca).unwrap())
        .collect();
    webhook.ca_bundle = base64::engine::general_purpose::STANDARD.encode(bundle);
    webhook.register_prefix(&client, &run, &prefix).await;
    let ns = format!("{prefix}1");
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": run_labels(&run)}}))
            .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    let mut n = 0;
    eventually(
        "the webhook configuration mutates pods",
        Duration::from_secs(60),
        || {
            n += 1;
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let pod = create_pod(&client, &ns, &format!("warmup-{n}"))
                    .await
                    .ok()?;
                is_mutated(&pod).then_some(())
            }
        },
    )
    .await;

    // The load: 3 loops of reviews on fresh connections, 1 loop of pods through the API server.
    let stop = Arc::new(AtomicBool::new(false));
    let config = client_config_trusting(&cas, &[b"http/1.1"]);
    let port = webhook.port;
    let reviewers: Vec<_> = (0..3)
        .map(|r| {
            let (stop, config) = (Arc::clone(&stop), Arc::clone(&config));
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                // Bounded: 10,000 reviews or the stop flag.
                for i in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match review(port, Arc::clone(&config), &format!("rot-{r}-{i}")).await {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (ok, failed)
            })
        })
        .collect();
    let pods = {
        let (stop, client, ns) = (Arc::clone(&stop), client.clone(), ns.clone());
        tokio::spawn(async move {
            let (mut mutated, mut not) = (0u64, Vec::new());
            for i in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match create_pod(&client, &ns, &format!("load-{i}")).await {
                    Ok(pod) if is_mutated(&pod) => mutated += 1,
                    Ok(pod) => not.push(format!("{} admitted unmutated", pod.name_any())),
                    Err(e) => not.push(format!("load-{i}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (mutated, not)
        })
    };

    // Ten replacements, alternating the pairs and the way they are written; each waits until
    // the new certificate is served (the reload counter moves) before the next.
    let reloads = "warmpool_webhook_certificate_reloads_total{result=\"success\"}";
    let started = Instant::now();
    for swap in 0..10 {
        let from = if swap % 2 == 0 {
            other.path()
        } else {
            original.path()
        };
        let before = metric(webhook.metrics_port, reloads).await;
        swap_certificate(&dir, from, swap % 4 < 2).await;
        eventually(
            &format!("replacement {swap} served"),
            Duration::from_secs(15),
            || async { (metric(webhook.metrics_port, reloads).await > before).then_some(()) },
        )
        .await;
        // Proof from outside: a client that trusts only the new CA gets through.
        let only_new = client_config(&from.join("ca.crt"), &[b"http/1.1"]);
        review(port, only_new, &format!("only-new-{swap}"))
            .await
            .unwrap_or_else(|e| panic!("replacement {swap} not served: {e}"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for r in reviewers {
        let (o, f) = r.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    let (mutated, not_mutated) = pods.await.unwrap();
    let succeeded = metric(webhook.metrics_port, reloads).await;
    let rejected = metric(
        webhook.metrics_port,
        "warmpool_webhook_certificate_reloads_total{result=\"failure\"}",
    )
    .await;
    eprintln!(
        "certificate replaced 10 times in {took:?} under load: {ok} direct reviews answered, \
         {} failed; {mutated} pods created through the API server and mutated, {} not; \
         reloads: {succeeded} served, {rejected} torn pairs seen and kept out",
        failed.len(),
        not_mutated.len()
    );
    assert!(failed.is_empty(), "failed reviews: {failed:?}");
    assert!(not_mutated.is_empty(), "pods: {not_mutated:?}");
    assert!(
        ok >= 100 && mutated >= 20,
        "too little load: {ok} {mutated}"
    );
    assert!(succeeded >= 10.0, "{succeeded}");
    assert!(webhook.logs().contains("serving the new TLS certificate"));

    unregister(&client, &run).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::background())
        .await;
}

// ---------------------------------------------------------------------------------------------
// The API server restarted while the reconciler runs

/// A kube-apiserver of its own for one test: the same binary and flags as the control plane's
/// (read from its /proc/<pid>/cmdline), on the same etcd, on another port. Restarting the
/// shared one would also cut off the controller manager, the scheduler and every other test
/// on the control plane; restarting this one cuts off only the reconciler pointed at it.
struct ApiServer {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    process: Option<ChildGuard>,
    kubeconfig: PathBuf,
    port: u16,
}

impl ApiServer {
    fn new(dir: &Path) -> ApiServer {
        let admin = kubeconfig().expect("kubeconfig");
        let cluster_dir = admin.parent().expect("cluster dir");
        let pid = std::fs::read_to_string(cluster_dir.join("pids/kube-apiserver.pid"))
            .expect("the control plane's kube-apiserver pid");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
            .expect("the control plane's kube-apiserver command line");
        let mut argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = PathBuf::from(argv.remove(0));
        assert!(
            program.ends_with("kube-apiserver"),
            "pid file points at {program:?}"
        );
        let port = free_port();
        let mut old_port = None;
        for arg in &mut argv {
            if let Some(p) = arg.strip_prefix("--secure-port=") {
                old_port = Some(p.to_owned());
                *arg = format!("--secure-port={port}");
            }
        }
        let old_port = old_port.expect("--secure-port in the command line");
        let kubeconfig = dir.join("kubeconfig");
        let text = std::fs::read_to_string(&admin).expect("admin kubeconfig");
        let text = text.replace(
            &format!("https://127.0.0.1:{old_port}"),
            &format!("https://127.0.0.1:{port}"),
        );
        std::fs::write(&kubeconfig, text).expect("kubeconfig");
        ApiServer {
            program,
            args: argv,
            log: dir.join("kube-apiserver.log"),
            process: None,
            kubeconfig,
            port,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("kube-apiserver starts");
        self.process = Some(ChildGuard(child));
    }

    /// SIGKILL: connections and watches are cut, nothing is said goodbye.
    fn kill(&mut self) {
        self.process = None;
    }

    async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    async fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        let client = self.client().await;
        eventually(
            &format!(
                "kube-apiserver on port {} ready (log {})",
                self.port,
                self.log.display()
            ),
            Duration::from_secs(120),
            || {
                let client = client.clone();
                async move {
                    let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
                    let text = client.request_text(request).await.ok()?;
                    (text.trim() == "ok").then_some(())
                }
            },
        )
        .await;
        started.elapsed()
    }
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity
}

async fn tenant_label(client: &Client, ns: &str) -> Option<String> {
    let ns = Api::<Namespace>::all(client.clone()).get(ns).await.ok()?;
    ns.labels().get("warmpool.io/tenant").cloned()
}

#[tokio::test]
async fn the_reconciler_rides_out_an_api_server_restart_and_repairs_the_drift() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    let mut apiserver = ApiServer::new(run.dir.path());
    apiserver.start();
    let first_start = apiserver.wait_ready().await;

    let kubeconfig = apiserver.kubeconfig.to_str().unwrap().to_owned();
    let mut rec = run.spawn(
        "survivor",
        &["--lease-duration", "4s"],
        &[("KUBECONFIG", &kubeconfig)],
    );
    rec.wait_ready(Duration::from_secs(60)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &run.namespace);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &run.namespace);
    eventually(
        "prewarmer and cache created",
        Duration::from_secs(60),
        || async {
            let d = deployments.get_opt(PREWARMER).await.ok()??;
            let ds = daemonsets.get_opt(IMAGE_CACHE).await.ok()??;
            Some((d, ds))
        },
    )
    .await;
    let early = run.tenant("early");
    run.create_namespace(&early, &[]).await;
    eventually(
        "the first tenant enrolled",
        Duration::from_secs(60),
        || async {
            (tenant_label(&client, &early).await.as_deref() == Some("enabled")).then_some(())
        },
    )
    .await;
    assert_eq!(
        lease_holder(&client, &run.namespace).await.as_deref(),
        Some("survivor")
    );

    // The reconciler's API server dies. While it is away (longer than the 4 s Lease), the
    // objects are deleted and a tenant appears, through the control plane's own API server.
    apiserver.kill();
    let down = Instant::now();
    deployments
        .delete(PREWARMER, &DeleteParams::default())
        .await
        .expect("delete the prewarmer");
    daemonsets
        .delete(IMAGE_CACHE, &DeleteParams::default())
        .await
        .expect("delete the image cache");
    let late = run.tenant("late");
    run.create_namespace(&late, &[]).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let alive = rec
        .child
        .as_mut()
        .map(|c| c.0.try_wait().expect("wait").is_none());
    assert_eq!(alive, Some(true), "the reconciler exited:\n{}", rec.logs());
    assert!(
        deployments
            .get_opt(PREWARMER)
            .await
            .expect("read")
            .is_none(),
        "repaired with its API server down?"
    );

    apiserver.start();
    let restart = apiserver.wait_ready().await;
    let back = Instant::now();
    eventually(
        "the prewarmer, the image cache and the new tenant repaired",
        Duration::from_secs(90),
        || async {
            let d = deployments.get_opt(PREWARMER).await.ok()??;
            let ds = daemonsets.get_opt(IMAGE_CACHE).await.ok()??;
            let enrolled = tenant_label(&client, &late).await.as_deref() == Some("enabled");
            enrolled.then_some((d, ds))
        },
    )
    .await;
    let repaired = back.elapsed();
    eventually(
        "the reconciler holds the Lease again",
        Duration::from_secs(30),
        || async {
            (lease_holder(&client, &run.namespace).await.as_deref() == Some("survivor"))
                .then_some(())
        },
    )
    .await;
    let alive = rec
        .child
        .as_mut()
        .map(|c| c.0.try_wait().expect("wait").is_none());
    assert_eq!(alive, Some(true), "the reconciler exited:\n{}", rec.logs());
    eprintln!(
        "API server restart: first start {first_start:?}; down {:?} (restart took {restart:?}); \
         drift repaired {repaired:?} after it was ready again, by the same reconciler process",
        back.duration_since(down)
    );
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&late, &DeleteParams::background())
        .await;
    rec.terminate();
    apiserver.kill();
    run.cleanup().await;
}
