//! `warmpool status` against the local control plane: a warm tenant (its pods on a warm fake
//! node), a cold one (its pod, created while no webhook was registered, escaped to a node that
//! is not warm), a real reconciler (prewarmer, image cache, the tenants' time to Ready) and a
//! real webhook. The text screen is printed (`--nocapture`) so that it can be quoted.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use support::cluster::{client, eventually, eventually_explained, kubeconfig};
use support::fakelet::{FakeNode, create_node, spawn_fakelet};
use support::objects::wait_until_mutating;
use support::reconciler::{NodeGuard, Run};
use support::webhook::{RUN_LABEL, Webhook, unregister};

use super::BIN;
use support::reconciler::config;
use warmpool::config::Config;
const INJECTED: &str = "warmpool.io/injected";

fn tenant_pod(cpu: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                           "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}}}]})
}

/// `warmpool status` for `run` with `args`: (exit code, stdout, stderr).
fn status(run: &Run, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["status", "--namespace", &run.namespace, "--config"])
        .arg(&run.config)
        .args(args)
        .env("KUBECONFIG", kubeconfig().expect("kubeconfig"))
        .env_remove("POD_NAMESPACE")
        .output()
        .expect("warmpool status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn pods(client: &kube::Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn bound_ready(pods: &[Pod], n: usize) -> bool {
    pods.len() == n
        && pods.iter().all(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_warm_and_a_cold_tenant_an_escaped_pod_and_the_warm_node() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let fakelet = spawn_fakelet(client.clone());
    // Discovery takes images from example.com only: what tenants run from elsewhere is left out.
    let config = config(|c| {
        c.image_cache.discover_registries = vec!["example.com".into()];
        c.tenants.time_to_ready.window = "10s".into();
    });
    let run = Run::new(&client, BIN.as_ref(), config).await;
    let labels = [(RUN_LABEL, run.id.as_str())];

    // A warm node of this run's pool (4 CPU, 16Gi) and a general one.
    let warm = format!("{}-warm-1", run.id);
    let general = format!("{}-general-1", run.id);
    let _nodes = [NodeGuard(warm.clone()), NodeGuard(general.clone())];
    let pool = run.pool.clone();
    let taint = [("workload-type", pool.as_str(), "NoSchedule")];
    let pool_label = [("workload-type", pool.as_str())];
    for (name, labels, taints) in [
        (&warm, &pool_label[..], &taint[..]),
        (&general, &[][..], &[][..]),
    ] {
        let node = FakeNode {
            name,
            labels,
            taints,
            cpu: "4",
            memory: "16Gi",
        };
        create_node(&client, &node).await.expect("fake node");
    }
    let reconciler = run.spawn("status", &[], &[]);
    let own = run.namespace.clone();
    eventually(
        "the placeholder Ready on the warm node",
        Duration::from_secs(60),
        || {
            let (client, own, warm) = (client.clone(), own.clone(), warm.clone());
            async move {
                let p = pods(&client, &own).await;
                let placeholders: Vec<Pod> = p
                    .into_iter()
                    .filter(|p| {
                        p.metadata
                            .name
                            .as_deref()
                            .unwrap_or_default()
                            .starts_with("warmpool-prewarmer-")
                    })
                    .collect();
                (bound_ready(&placeholders, 1)
                    && placeholders[0]
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        == Some(&warm))
                .then_some(())
            }
        },
    )
    .await;

    // The webhook is started but not registered yet: the cold tenant's pod escapes it.
    let webhook = Webhook::start(BIN.as_ref(), Some(&run.settings())).await;
    let cold = run.tenant("cold");
    run.create_namespace(&cold, &labels).await;
    run.create_pod(&cold, "escaped", tenant_pod("100m")).await;
    let pattern = format!("{}*", run.tenant_prefix);
    webhook.register(&client, &run.id, &[&pattern], &own).await;
    let probe = run.tenant("probe");
    run.create_namespace(&probe, &labels).await;
    wait_until_mutating(&Api::namespaced(client.clone(), &probe), |p| {
        p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(INJECTED))
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&probe, &DeleteParams::default())
        .await
        .expect("probe deleted");

    // The warm tenant's pods go through the webhook to the warm node.
    let warm_tenant = run.tenant("warm");
    run.create_namespace(&warm_tenant, &labels).await;
    for name in ["web-0", "web-1"] {
        run.create_pod(&warm_tenant, name, tenant_pod("100m")).await;
    }
    for (ns, n) in [(&warm_tenant, 2), (&cold, 1)] {
        eventually(
            &format!("{ns}: {n} pod(s) bound and Ready"),
            Duration::from_secs(60),
            || {
                let (client, ns) = (client.clone(), ns.clone());
                async move { bound_ready(&pods(&client, &ns).await, n).then_some(()) }
            },
        )
        .await;
    }
    let escaped = &pods(&client, &cold).await[0];
    assert!(
        escaped
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(INJECTED))
    );
    assert_ne!(
        escaped.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(warm.as_str())
    );
    for p in pods(&client, &warm_tenant).await {
        assert_eq!(
            p.spec.and_then(|s| s.node_name),
            Some(warm.clone()),
            "steered to the warm node"
        );
    }
    // A tenant runs an image from a registry discovery may not take: the cache leaves it out and
    // records why on its DaemonSet. (At least one: a pod of the cold tenant, which no webhook
    // steered, would count too if it landed on a real node that some other test left behind.)
    let elsewhere = run.tenant("elsewhere");
    run.create_namespace(&elsewhere, &labels).await;
    let app = json!({"containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}]});
    run.create_running_pod(&elsewhere, "app", app).await;
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &own);
    let cache_metadata = || async {
        let ds = daemon_sets.get("warmpool-image-cache").await.ok()?;
        Some(ds.metadata)
    };
    eventually_explained(
        "the image cache's DaemonSet records images left out by registry",
        Duration::from_secs(60),
        || async {
            let annotations = cache_metadata().await?.annotations?;
            let left_out = annotations.get("warmpool.io/images-left-out")?;
            left_out.starts_with("registry=").then_some(())
        },
        || async {
            let annotations = cache_metadata().await.map(|m| m.annotations);
            let pods = pods(&client, &elsewhere).await;
            format!(
                "the DaemonSet's annotations: {annotations:?}\nthe tenant's pods: {pods:?}\n\
                 reconciler log:\n{}",
                reconciler.logs()
            )
        },
    )
    .await;

    // The reconciler records each start once the 10 s window has passed and all are Ready.
    for (ns, start) in [(&warm_tenant, "warm"), (&cold, "cold")] {
        eventually(
            &format!("{ns} annotated warmpool.io/start={start}"),
            Duration::from_secs(90),
            || {
                let (namespaces, ns) = (namespaces.clone(), ns.clone());
                async move {
                    let got = namespaces.get(&ns).await.ok()?;
                    let a = got.metadata.annotations?;
                    a.contains_key("warmpool.io/ready-seconds")
                        .then(|| a.get("warmpool.io/start").cloned())
                        .flatten()
                }
            },
        )
        .await;
        let got = namespaces.get(ns).await.expect("namespace");
        assert_eq!(
            got.metadata.annotations.unwrap()["warmpool.io/start"],
            start,
            "{ns}"
        );
    }

    // The screen.
    let (code, text, stderr) = status(&run, &[]);
    eprintln!(
        "$ warmpool status --namespace {own} --config {}\n{text}{stderr}",
        run.config.display()
    );
    assert_eq!(code, 0, "{stderr}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let w = row(&warm_tenant);
    assert_eq!(
        (w[1].as_str(), w[3].as_str(), w[4].as_str()),
        ("warm", "2/2", "0"),
        "{text}"
    );
    let c = row(&cold);
    assert_eq!(
        (c[1].as_str(), c[3].as_str(), c[4].as_str()),
        ("cold", "1/1", "1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  escaped: {cold}/escaped on ")),
        "{text}"
    );
    // 4000m - placeholder 640m - 2 x 100m - the cache pod's few 5m = ~3.1 CPU: 4 slots of 640m.
    let n = row(&warm);
    assert_eq!(
        (n[1].as_str(), n[2].as_str(), n[3].as_str(), n[4].as_str()),
        ("yes", "4", "1", "2"),
        "{text}"
    );
    assert!(
        text.contains(
            "PREWARMER  spare slots 1 wanted, 1 ready; one slot 640m CPU, 2150Mi; no schedule"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "MutatingWebhookConfiguration {}: 2 entries, failurePolicy Ignore",
            run.id
        )),
        "{text}"
    );
    let left_out = text
        .lines()
        .find_map(|l| l.strip_prefix("  images the cache left out: "))
        .unwrap_or_else(|| panic!("no line of images left out:\n{text}"));
    let (count, why) = left_out.split_once(' ').expect("a count and a reason");
    assert!(count.parse::<u32>().is_ok_and(|n| n >= 1), "{text}");
    assert_eq!(
        why, "registry (not from imageCache.discoverRegistries)",
        "{text}"
    );
    // --config given: no ConfigMap read; no webhook Deployment: no Secret read.
    assert!(stderr.contains("read with 10 API calls in "), "{stderr}");

    // The same as JSON, every tenant included.
    let (code, out, stderr) = status(&run, &["-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let json: Value = serde_json::from_str(&out).expect("JSON");
    let tenant = |name: &str| {
        json["tenants"]["list"]
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no tenant {name}: {out}"))
    };
    let t = tenant(&warm_tenant);
    assert_eq!(
        (&t["start"], &t["podsReady"], &t["podsTotal"], &t["escaped"]),
        (&json!("warm"), &json!(2), &json!(2), &json!(0))
    );
    assert!(t["readySeconds"].as_f64().is_some_and(|s| s >= 0.0), "{t}");
    assert_eq!(tenant(&cold)["start"], "cold");
    let escaped: Vec<&Value> = json["tenants"]["escaped"]
        .as_array()
        .expect("escaped")
        .iter()
        .filter(|e| e["namespace"] == cold.as_str())
        .collect();
    assert_eq!(escaped.len(), 1, "{out}");
    assert_eq!(escaped[0]["pod"], "escaped");
    let node = json["warmNodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == warm.as_str())
        .cloned()
        .expect("the warm node");
    assert_eq!(
        (
            &node["freeSlots"],
            &node["placeholders"],
            &node["tenantPods"]
        ),
        (&json!(4), &json!(1), &json!(2)),
        "{node}"
    );
    assert!(
        node["images"]["wanted"].as_u64().is_some_and(|w| w >= 3),
        "the configured images at least: {node}"
    );
    assert_eq!(json["prewarmer"]["wanted"], 1);
    assert_eq!(json["prewarmer"]["ready"], 1);

    // An unreachable API server: exit 1 with one line.
    let closed = run.dir.path().join("closed.kubeconfig");
    std::fs::write(&closed, "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
        users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n").expect("kubeconfig");
    let out = Command::new(BIN)
        .args(["status"])
        .env("KUBECONFIG", &closed)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: cannot reach the Kubernetes API server")
            && err.trim().lines().count() == 1,
        "{err}"
    );

    unregister(&client, &run.id).await;
    fakelet.abort();
    run.cleanup().await;
}

/// A kubeconfig for the local control plane's server with `token`.
fn token_kubeconfig(path: &std::path::Path, token: &str) {
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig().unwrap()).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    std::fs::write(path, serde_saphyr::to_string(&config).unwrap()).unwrap();
}

/// Bound to the chart's status roles alone, `warmpool status` reads every part but the serving
/// Secret (left out of the roles: it holds the key), and finds its configuration through the
/// webhook Deployment's ConfigMap, as in a chart install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_with_the_charts_status_role_alone() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let Ok(helm) = support::helm::find() else {
        eprintln!("SKIP: no helm (tests/tools/helm.sh)");
        return;
    };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    let ns = run.namespace.clone();
    let fullname = format!("{}-warmpool", run.id);
    let sa = "status-reader";
    let subjects = json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]);
    let out = Command::new(&helm)
        .args(["template", &run.id])
        .arg(support::cluster::repo_root().join("charts/warmpool"))
        .args([
            "--namespace",
            &ns,
            "--show-only",
            "templates/status-rbac.yaml",
        ])
        .args(["--set-json", &format!("statusRole.subjects={subjects}")])
        .output()
        .expect("helm template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .split("\n---")
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .filter(|d| d.is_object())
        .collect();
    assert_eq!(docs.len(), 4, "two roles, two bindings");
    let pp = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    accounts
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap(),
        )
        .await
        .expect("ServiceAccount");
    let mut cluster_wide = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let v = doc.clone();
        match kind.as_str() {
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone())
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .expect("ClusterRole");
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .expect("ClusterRoleBinding");
            }
            "Role" => {
                Api::<Role>::namespaced(client.clone(), &ns)
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .expect("Role");
            }
            "RoleBinding" => {
                Api::<RoleBinding>::namespaced(client.clone(), &ns)
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .expect("RoleBinding");
            }
            other => panic!("unexpected {other}"),
        }
        if kind.starts_with("Cluster") {
            cluster_wide.push(kind);
        }
    }
    // The chart's ConfigMap and (scaled to zero) webhook Deployment, as an install has them.
    let config = std::fs::read_to_string(&run.config).expect("config");
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &pp,
            &serde_json::from_value(
                json!({"metadata": {"name": fullname}, "data": {"config.yaml": config}}),
            )
            .unwrap(),
        )
        .await
        .expect("ConfigMap");
    let deployment = json!({
        "metadata": {"name": fullname, "labels": {"app.kubernetes.io/name": "warmpool"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": fullname}},
                 "template": {"metadata": {"labels": {"app": fullname}}, "spec": {
                     "containers": [{"name": "webhook", "image": "registry.k8s.io/pause:3.10", "args": ["webhook"]}],
                     "volumes": [{"name": "config", "configMap": {"name": fullname}},
                                 {"name": "tls", "secret": {"secretName": format!("{fullname}-tls")}}]}}}
    });
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&pp, &serde_json::from_value(deployment).unwrap())
        .await
        .expect("Deployment");

    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = accounts
        .create_token_request(sa, &pp, &request)
        .await
        .expect("token")
        .status
        .expect("token status")
        .token;
    let path = run.dir.path().join("status.kubeconfig");
    token_kubeconfig(&path, &token);
    // RBAC is read from an informer: wait until the binding is in effect.
    let reader = support::cluster::client_from(&path).await;
    eventually("the status role in effect", Duration::from_secs(30), || {
        let reader = reader.clone();
        async move {
            Api::<Namespace>::all(reader)
                .list(&ListParams::default().limit(1))
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let out = Command::new(BIN)
        .args(["status", "--namespace", &ns])
        .env("KUBECONFIG", &path)
        .env_remove("POD_NAMESPACE")
        .output()
        .expect("warmpool status runs");
    let (text, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!(
        "$ warmpool status --namespace {ns}   (as {sa}, the status roles alone)\n{text}{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        text.contains(&format!("(config: ConfigMap {ns}/{fullname})")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Deployment {fullname}: 0/0 replicas ready")),
        "{text}"
    );
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not readable"))
        .collect();
    assert_eq!(refused.len(), 1, "only the Secret: {text}");
    assert!(
        refused[0].contains(&format!(
            "certificate: not readable: needs get secrets {fullname}-tls in {ns}"
        )),
        "{text}"
    );
    assert!(stderr.contains("read with 12 API calls in "), "{stderr}");

    for name in [&fullname] {
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&format!("{name}-status"), &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(client.clone())
            .delete(&format!("{name}-status"), &DeleteParams::default())
            .await;
    }
    assert_eq!(cluster_wide.len(), 2);
    run.cleanup().await;
}
