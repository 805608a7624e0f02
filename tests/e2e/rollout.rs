//! A rollout that drops nothing, on the local control plane (`tests/cluster/cluster.sh up`).
//!
//! Pods are created without pause in a tenant namespace while the webhook's processes are
//! replaced as `kubectl rollout restart` replaces pods: a new process starts and turns ready,
//! both serve, the old one gets SIGTERM, turns unready and, some time later, exits.
//!
//! Between the API server and the processes sits a small TCP load balancer standing for the
//! Service: round robin over the ready backends, each new connection to one backend, a
//! backend that turns unready (its /readyz on the metrics port answers 503, or nothing)
//! removed from rotation [`ENDPOINT_REMOVAL_DELAY`] later — the time the endpoints controller
//! and kube-proxy take to drop a terminating pod — and a connection to a backend that refuses
//! it closed, as kube-proxy's forwarding to a closed port is. It is registered as the url of
//! the chart's MutatingWebhookConfiguration (`failurePolicy: Ignore`, so a lost review would
//! show as an unmutated pod, not as an error). Beside the API server, a direct client sends a
//! review on a fresh connection through the balancer every [`DIRECT_REVIEW_EVERY`]: the many
//! new connections of several API servers or of HTTP/1.1 clients.
//!
//! With the chart's `--shutdown-grace` every pod comes back mutated and every direct review is
//! answered; with `--shutdown-grace 0` (the negative control) the same rollout loses reviews.
//!
//! Without a control plane the tests print SKIP (and fail when CI=true).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use support::balancer::Balancer;
use support::cluster::{client, unique};
use support::objects::{create_namespace, unscheduled_pod, wait_until_mutating};
use support::webhook::{Webhook, unregister};
use warmpool::webhook::server::DRAIN_TIMEOUT;

use super::BIN;
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pod-create.json"
);

/// The scenario: how long after a backend turns unready the balancer stops sending it new
/// connections, standing for the endpoints controller, the EndpointSlice watchers and kube-proxy
/// catching up with a terminating pod (about a second to a few in real clusters).
const ENDPOINT_REMOVAL_DELAY: Duration = Duration::from_secs(1);
/// The scenario: traffic on the current replicas after each step of the rollout (before the new
/// process starts, and with both in rotation before the old one gets SIGTERM).
const BETWEEN_STEPS: Duration = Duration::from_secs(1);
/// Processes replaced, one after the other.
const ROLLOUTS: usize = 3;
/// Concurrent pod creators…
const CREATORS: usize = 3;
/// …each creating a pod at most this often (a steady stream the shared control plane can take).
const CREATE_EVERY: Duration = Duration::from_millis(100);
/// A review on a fresh connection through the balancer at most this often.
const DIRECT_REVIEW_EVERY: Duration = Duration::from_millis(25);

/// One rollout at a time: each loads the two shared cores and counts what is lost.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The chart's flags

/// The webhook container's arguments in the chart rendered with `set` (`key=value`), and its
/// pod's terminationGracePeriodSeconds.
fn chart_webhook(set: &[&str]) -> (Vec<String>, u64) {
    let mut args = vec!["--show-only=templates/deployment.yaml".to_owned()];
    args.extend(set.iter().map(|s| format!("--set={s}")));
    let docs = support::helm::template("warmpool", "warmpool-system", &args);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "webhook")
        .expect("a webhook container");
    let args = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arguments").to_owned())
        .collect();
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    (args, grace)
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

/// The chart passes `webhook.shutdownGraceSeconds` as `--shutdown-grace` and 80% of
/// `webhook.timeoutSeconds` as `--request-timeout` (under the API server's deadline), and gives
/// the pod a terminationGracePeriodSeconds that covers the grace period and the drain.
#[test]
fn the_chart_passes_the_grace_and_deadline_and_the_pod_outlives_them() {
    let _subject = support::subject::enter(module_path!());
    for (set, grace, timeout) in [
        (vec![], 5, 5),
        (
            vec![
                "webhook.shutdownGraceSeconds=40",
                "webhook.timeoutSeconds=2",
            ],
            40,
            2,
        ),
        (
            vec![
                "webhook.shutdownGraceSeconds=0",
                "webhook.timeoutSeconds=30",
            ],
            0,
            30,
        ),
        (
            vec![
                "webhook.shutdownGraceSeconds=10",
                "webhook.timeoutSeconds=30",
            ],
            10,
            30,
        ),
    ] {
        let (args, termination) = chart_webhook(&set);
        assert_eq!(
            flag(&args, "--shutdown-grace"),
            Some(format!("{grace}s").as_str()),
            "{set:?}: {args:?}"
        );
        let deadline: u64 = flag(&args, "--request-timeout")
            .and_then(|v| v.strip_suffix("ms"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{set:?}: no --request-timeout=<n>ms in {args:?}"));
        assert_eq!(deadline, timeout * 800, "{set:?}");
        assert!(deadline < timeout * 1000, "{set:?}");
        let drain = warmpool::webhook::server::drain_timeout(Duration::from_millis(deadline));
        assert!(
            termination > grace + drain.as_secs(),
            "{set:?}: terminationGracePeriodSeconds {termination} does not cover a grace of {grace} s and the {drain:?} drain"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic

fn is_mutated(pod: &Pod) -> bool {
    pod.annotations()
        .get("warmpool.io/injected")
        .map(String::as_str)
        == Some("node-affinity,tolerations")
}

/// What the pod creators saw.
#[derive(Default)]
struct Pods {
    created: u64,
    mutated: u64,
    unmutated: Vec<String>,
    errors: Vec<String>,
}

/// Creates pods one after the other, one every [`CREATE_EVERY`] at most, until `stop`.
async fn create_pods(client: Client, ns: String, creator: usize, stop: Arc<AtomicBool>) -> Pods {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let mut pods = Pods::default();
    let mut n = 0;
    let mut ticks = tokio::time::interval(CREATE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let name = format!("c{creator}-{n}");
        n += 1;
        match api
            .create(&PostParams::default(), &unscheduled_pod(&name))
            .await
        {
            Ok(created) => {
                pods.created += 1;
                if is_mutated(&created) {
                    pods.mutated += 1;
                } else {
                    pods.unmutated.push(name);
                }
            }
            Err(e) => pods.errors.push(format!("{name}: {e}")),
        }
    }
    pods
}

/// Until `stop`, one review on a fresh TLS connection through the balancer every
/// [`DIRECT_REVIEW_EVERY`]: (answered, failures).
async fn direct_reviews(
    port: u16,
    ca: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> (u64, Vec<String>) {
    let config = support::tls::client_config(&ca, &[b"http/1.1"]);
    let template: Value = serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
    let mut ticks = tokio::time::interval(DIRECT_REVIEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut answered, mut failures) = (0, Vec::new());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        n += 1;
        let uid = format!("direct-{n}");
        let mut body = template.clone();
        body["request"]["uid"] = json!(uid);
        match support::webhook::review(
            port,
            Arc::clone(&config),
            &uid,
            serde_json::to_vec(&body).unwrap(),
        )
        .await
        {
            Ok(()) => answered += 1,
            Err(e) => failures.push(format!("{uid}: {e}")),
        }
    }
    (answered, failures)
}

/// Reviews a process answered between its "shutdown requested" and "stopped accepting" lines:
/// while unready, during its grace period.
fn reviews_during_grace(logs: &str) -> usize {
    logs.lines()
        .skip_while(|l| !l.contains("shutdown requested"))
        .take_while(|l| !l.contains("stopped accepting"))
        .filter(|l| l.contains("pod patched"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The rollout

/// What one rollout gave.
struct Figures {
    pods: Pods,
    direct_answered: u64,
    direct_failures: Vec<String>,
    connections: u64,
    refused: u64,
    during_grace: usize,
    took: Duration,
}

impl Figures {
    fn print(&self, what: &str) {
        eprintln!(
            "{what}: {ROLLOUTS} processes replaced in {:.1?}; pods created {}, mutated {}, lost (unmutated) {}, create errors {}; \
             direct reviews answered {}, lost {}; balancer connections {}, refused by a backend in rotation {}; \
             reviews answered by terminating processes during their grace {}",
            self.took,
            self.pods.created,
            self.pods.mutated,
            self.pods.unmutated.len(),
            self.pods.errors.len(),
            self.direct_answered,
            self.direct_failures.len(),
            self.connections,
            self.refused,
            self.during_grace,
        );
    }
}

/// Pods created and direct reviews sent without pause while [`ROLLOUTS`] processes started
/// with `args` are replaced one after the other behind the balancer.
async fn rollout(client: &Client, run: &str, args: &[&str]) -> Figures {
    let webhook = Webhook::certificates(BIN.as_ref(), None);
    let balancer = Balancer::start(ENDPOINT_REMOVAL_DELAY).await;
    let mut current = webhook.spawn_process(BIN.as_ref(), args).await;
    balancer.add(&current).await;

    let ns = format!("{run}-demo-1");
    let url = format!("https://127.0.0.1:{}/mutate", balancer.port);
    webhook
        .register_url(
            client,
            run,
            &[&format!("{run}-demo-*")],
            &format!("{run}-system"),
            &url,
        )
        .await;
    create_namespace(client, run, &ns).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_until_mutating(&api, is_mutated).await;

    let stop = Arc::new(AtomicBool::new(false));
    let creators: Vec<_> = (0..CREATORS)
        .map(|c| {
            tokio::spawn(create_pods(
                client.clone(),
                ns.clone(),
                c,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let direct = tokio::spawn(direct_reviews(
        balancer.port,
        webhook.dir.path().join("ca.crt"),
        Arc::clone(&stop),
    ));

    let started = Instant::now();
    let mut during_grace = 0;
    for _ in 0..ROLLOUTS {
        tokio::time::sleep(BETWEEN_STEPS).await;
        let next = webhook.spawn_process(BIN.as_ref(), args).await;
        balancer.add(&next).await;
        tokio::time::sleep(BETWEEN_STEPS).await;
        current.sigterm();
        let status = current
            .wait_exit(Duration::from_secs(60) + DRAIN_TIMEOUT)
            .await;
        assert!(status.success(), "{status}: {}", current.logs());
        during_grace += reviews_during_grace(&current.logs());
        current = next;
    }
    tokio::time::sleep(BETWEEN_STEPS).await;
    stop.store(true, Ordering::Relaxed);
    let took = started.elapsed();

    let mut pods = Pods::default();
    for creator in creators {
        let p = creator.await.expect("creator");
        pods.created += p.created;
        pods.mutated += p.mutated;
        pods.unmutated.extend(p.unmutated);
        pods.errors.extend(p.errors);
    }
    let (direct_answered, direct_failures) = direct.await.expect("direct reviews");
    let (connections, refused) = balancer.counts();

    unregister(client, run).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    drop(current);
    Figures {
        pods,
        direct_answered,
        direct_failures,
        connections,
        refused,
        during_grace,
        took,
    }
}

/// With the chart's `--shutdown-grace` and `--request-timeout`: every pod created during the
/// rollouts comes back mutated, every direct review is answered, no connection meets a closed
/// port; the terminating processes answered reviews while unready (the grace period mattered).
#[tokio::test]
async fn a_rollout_with_the_grace_period_loses_no_review() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let (chart_args, _) = chart_webhook(&[]);
    let args: Vec<&str> = chart_args
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--shutdown-grace=") || a.starts_with("--request-timeout="))
        .collect();
    assert_eq!(args.len(), 2, "{chart_args:?}");

    let figures = rollout(&client, &unique("rollout"), &args).await;
    figures.print(&format!("with {}", args.join(" ")));
    assert!(figures.pods.errors.is_empty(), "{:?}", figures.pods.errors);
    assert!(figures.pods.created > 0, "no pod was created");
    assert!(
        figures.pods.unmutated.is_empty(),
        "{} of {} pods admitted unmutated (lost reviews): {:?}",
        figures.pods.unmutated.len(),
        figures.pods.created,
        figures.pods.unmutated
    );
    assert!(
        figures.direct_failures.is_empty(),
        "{} direct reviews lost: {:?}",
        figures.direct_failures.len(),
        figures.direct_failures
    );
    assert_eq!(figures.refused, 0, "connections met a closed port");
    assert!(
        figures.during_grace > 0,
        "no review reached a terminating process: the rollout did not exercise the grace period"
    );
}

/// The negative control: the same rollout with `--shutdown-grace 0` loses reviews, the
/// connections that the balancer still sends to a process that has closed its port.
#[tokio::test]
async fn the_same_rollout_without_a_grace_period_loses_reviews() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let (chart_args, _) = chart_webhook(&[]);
    let mut args: Vec<&str> = chart_args
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--request-timeout="))
        .collect();
    args.push("--shutdown-grace=0");

    let figures = rollout(&client, &unique("rollout0"), &args).await;
    figures.print(&format!("with {}", args.join(" ")));
    assert!(figures.pods.errors.is_empty(), "{:?}", figures.pods.errors);
    assert!(
        figures.refused > 0,
        "no connection met a closed port: the negative control did not happen"
    );
    assert!(
        !figures.direct_failures.is_empty(),
        "no review lost without a grace period: the test cannot tell the grace period's effect"
    );
}
