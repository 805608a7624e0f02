//! Every metric the chart's observability kit reads (its alerts and its Grafana dashboard, as
//! `helm template` renders them) is one that warmpool serves: checked against a real `/metrics`
//! scrape of `warmpool webhook` on loopback and of `warmpool reconcile` leading on the local
//! control plane, or is one of the few external metrics the kit names (Prometheus' `up`,
//! kube-state-metrics'). Without a control plane the test prints SKIP (and fails when CI=true).
//!
//! A labelled family is in the exposition only once one of its series exists (prometheus-client
//! writes no `# TYPE` line for an empty family), so the test first makes both processes create
//! every series the kit reads, as real traffic would: a review patched and one malformed; a
//! schedule window; a warm (fake) node, so that the image cache has a pod and the per-image
//! gauges exist; a reconcile run that finds nothing to write; and one the API server refuses (a
//! ValidatingAdmissionPolicy that denies the prewarmer Deployment in this run's namespace).

use support::promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use promql::{EXTERNAL_METRICS, exposed_names, kit_queries, metric_names};
use support::cluster::{client, eventually, kubeconfig};
use support::fakelet::{FakeNode, create_node};
use support::reconciler::{NodeGuard, Run, kubectl, kubectl_path};
use support::webhook::{Webhook, review};

use super::BIN;
use warmpool::config::Config;

/// GET `path` over plain HTTP/1.0 (the answer is not chunked); the body of a 200.
async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// A ValidatingAdmissionPolicy (and its binding) that refuses every Deployment written in one
/// namespace; both deleted when dropped, also when the test fails.
struct DenyDeployments(String);

impl DenyDeployments {
    fn new(run: &Run) -> DenyDeployments {
        let name = format!("{}-deny-deployments", run.id);
        let yaml = format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}}
  validations:
    - {{expression: "false", message: "refused by tests/e2e/observability.rs"}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
"#,
            ns = run.namespace
        );
        let file = run.dir.path().join("deny-deployments.yaml");
        std::fs::write(&file, yaml).expect("policy file");
        let guard = DenyDeployments(name);
        kubectl(&["apply", "-f", file.to_str().expect("utf-8 path")]);
        guard
    }

    /// Whether the API server refuses a Deployment in `namespace` now (a server-side dry run).
    fn in_force(namespace: &str) -> bool {
        let out = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig().expect("kubeconfig"))
            .args([
                "create",
                "deployment",
                "probe",
                "--image=registry.k8s.io/pause:3.10",
            ])
            .args(["--dry-run=server", "-n", namespace])
            .output()
            .expect("kubectl runs");
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("refused by tests/e2e/observability.rs")
    }
}

impl Drop for DenyDeployments {
    fn drop(&mut self) {
        let Some(kubeconfig) = kubeconfig() else {
            return;
        };
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "delete",
                    kind,
                    &self.0,
                    "--ignore-not-found",
                    "--wait=false",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The warmpool metric names the kit reads, each with where.
fn kit_reads(docs: &[serde_json::Value]) -> BTreeMap<String, Vec<String>> {
    let mut read: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (whence, query) in kit_queries(docs) {
        for name in metric_names(&query) {
            read.entry(name).or_default().push(whence.clone());
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_kit_reads_is_served_by_warmpool_or_named_external() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let args: Vec<String> = [
        "observability.prometheusRule.enabled=true",
        "observability.grafanaDashboard.enabled=true",
    ]
    .iter()
    .flat_map(|s| ["--set".to_owned(), (*s).to_owned()])
    .collect();
    let docs = support::helm::template("obs", "obs-system", &args);
    let read = kit_reads(&docs);
    let external: BTreeSet<&str> = EXTERNAL_METRICS.iter().map(|(n, _)| *n).collect();
    // Every external name is read somewhere: the list names no metric the kit no longer needs.
    for name in &external {
        assert!(read.contains_key(*name), "{name} is listed but not read");
    }

    // The webhook, on loopback: one review patched, one malformed.
    let webhook = Webhook::start(Path::new(BIN), None).await;
    let tls = support::tls::client_config(&webhook.dir.path().join("ca.crt"), &[b"http/1.1"]);
    let fixture =
        std::fs::read(support::cluster::repo_root().join("tests/fixtures/pod-create.json"))
            .expect("fixture");
    review(
        webhook.port,
        tls.clone(),
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        fixture,
    )
    .await
    .expect("the fixture is patched");
    let malformed = review(webhook.port, tls, "", b"{".to_vec()).await;
    assert!(
        malformed.is_err_and(|e| e.contains("400")),
        "a malformed review gets a 400"
    );
    let webhook_addr = format!("127.0.0.1:{}", webhook.metrics_port);

    // The reconciler: a schedule, a warm node, the prewarmer refused.
    let run = Run::new(
        &client,
        Path::new(BIN),
        Config::from_yaml(
            "prewarmer: {schedule: [{name: obs-window, cron: '0 9 * * 1-5', duration: 1h, spareSlots: 2}]}",
        )
        .expect("the test's configuration"),
    )
    .await;
    let _deny = DenyDeployments::new(&run);
    eventually(
        "the policy refuses Deployments",
        Duration::from_secs(30),
        || async { DenyDeployments::in_force(&run.namespace).then_some(()) },
    )
    .await;
    let node = format!("{}-warm", run.id);
    let _node = NodeGuard(node.clone());
    create_node(
        &client,
        &FakeNode {
            name: &node,
            labels: &[("workload-type", &run.pool)],
            taints: &[("workload-type", &run.pool, "NoSchedule")],
            cpu: "4",
            memory: "16Gi",
        },
    )
    .await
    .expect("a warm node");
    let reconciler = run.spawn("obs", &["--resync", "5s"], &[]);

    // Every warmpool name the kit reads shows up in one of the two scrapes.
    let wanted: BTreeSet<&String> = read
        .keys()
        .filter(|n| !external.contains(n.as_str()))
        .collect();
    // Not /readyz: the reconciler is ready after a first sync of every object, and the
    // prewarmer is refused on purpose.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (served, reconciler_text, missing) = loop {
        let webhook_text = get(&webhook_addr, "/metrics").await;
        let reconciler_text = match reconciler.get("/metrics").await {
            Some((200, body)) => body,
            _ => String::new(),
        };
        let served: BTreeSet<String> = exposed_names(&webhook_text)
            .into_iter()
            .chain(exposed_names(&reconciler_text))
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|n| !served.contains(n.as_str()))
            .map(|n| format!("{n} (read by {})", read[n.as_str()].join(", ")))
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (served, reconciler_text, missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "metrics the kit reads that warmpool does not serve:\n  {}\nserved: {served:?}\nreconciler log: {}",
        missing.join("\n  "),
        reconciler.log.display()
    );
    // The failure the alert reads is the refused prewarmer, and not a hand-over.
    let refused = reconciler_text.lines().find(|l| {
        l.starts_with("warmpool_reconcile_failures_total{") && l.contains(r#"target="deployment""#)
    });
    assert!(
        refused.is_some_and(|l| !l.contains("not_leader")),
        "{reconciler_text}"
    );

    drop(reconciler);
    drop(webhook);
    run.cleanup().await;
}
