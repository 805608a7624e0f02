//! Least privilege, measured: the API calls `warmpool reconcile` really makes, against the RBAC
//! the chart grants.
//!
//! The chart's ServiceAccount, ClusterRole, Role and bindings (rendered by `helm template`) are
//! created on the local control plane; the real reconciler then runs with that ServiceAccount's
//! token and nothing else, through a recording proxy (`support::recording_proxy`) that forwards every request
//! to the API server and notes its verb, resource, name, namespace and status. The reconciler is
//! driven through every path that needs a permission: start-up as the chart's pod (its own
//! Pod → ReplicaSet → Deployment), leader election, tenant enrolment with an Event, tenant pods,
//! drift repair, and objects whose immutable fields differ (deleted and re-created).
//!
//! Then, both ways:
//! - every call was allowed (no 403) and is covered by a granted rule — names included where
//!   the rule names its objects, and namespaced writes only in warmpool's own namespace;
//! - every granted (resource, verb) was used, except those listed in [`GRANTED_NOT_EXERCISED`]
//!   with the reason the test cannot make the code use them.
//!
//! tests/chart/ proves the chart's rules against a written list and that the reconciler works
//! with them; this test derives the list from the code's behaviour instead.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use support::chart_rbac::*;
use support::cluster::{client, client_from, eventually, kubeconfig};
use support::reconciler::Run;
use support::recording_proxy::*;

use super::BIN;
use support::reconciler::config;
use warmpool::config::Config;

/// Granted, used by the code, and not reachable by this test — with the reason.
const GRANTED_NOT_EXERCISED: &[(&str, &str, &str, &str)] = &[(
    "events.k8s.io",
    "events",
    "patch",
    "kube-runtime's Recorder patches an Event only when the same one repeats (a series); \
         the reconciler records one Event per enrolment",
)];

/// The tests of this file one at a time: the main one replaces the cluster-wide PriorityClass
/// and needs its own reconciler to be the one that repairs it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test gives the PriorityClass another (immutable) value, so the reconciler must delete and
/// re-create it: that exercises the PriorityClass `get` and `delete` it is granted.
const PRIORITY_CLASS_CONFLICT: bool = true;

// ---------------------------------------------------------------------------------------------
// The test

/// An object of warmpool's, as a stranger left it: our name and managed-by label, another
/// selector (immutable), so that applying ours fails and the reconciler must re-create it.
fn conflicting(kind: &str, name: &str) -> Value {
    let template = json!({
        "metadata": {"labels": {"app": "stranger"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    });
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "warmpool"}},
        "spec": {
            "selector": {"matchLabels": {"app": "stranger"}},
            "template": template,
        },
    })
}

/// Every list and watch of namespaces and of the three written objects asked the API server for
/// metadata only; those of pods and nodes (spec and status are needed) did not.
fn assert_metadata_only(calls: &BTreeSet<Call>) {
    let watched: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.verb.as_str(), "list" | "watch"))
        .collect();
    for resource in ["namespaces", "deployments", "daemonsets", "priorityclasses"] {
        let of: Vec<&&Call> = watched.iter().filter(|c| c.resource == resource).collect();
        assert!(!of.is_empty(), "no list/watch of {resource}");
        for c in of {
            assert!(c.metadata_only, "a full list/watch of {resource}: {c:?}");
        }
    }
}

/// A reconciler whose configuration needs no tenant pod and no node (no discovery, a fixed slot)
/// opens no watch of either: the cluster's pods are never streamed to it, only the image cache's
/// own pods in warmpool's namespace (what each warm node holds).
#[tokio::test]
async fn only_what_the_configuration_needs_is_watched() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    // The tenants' time to Ready (on by default) needs both watches; off, nothing does.
    let config = config(|c| {
        c.image_cache.discover = false;
        c.tenants.time_to_ready.enabled = false;
    });
    let run = Run::new(&client, BIN.as_ref(), config).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    // The admin's credentials: permissions are not the question here.
    let port = start_proxy(client.clone(), Arc::clone(&calls)).await;
    let proxy_kubeconfig = run.dir.path().join("proxy.kubeconfig");
    write_kubeconfig(
        &proxy_kubeconfig,
        &format!("http://127.0.0.1:{port}"),
        None,
        None,
    );
    let tenant = run.tenant("1");
    run.create_namespace(&tenant, &[]).await;
    let proxy = proxy_kubeconfig.to_str().unwrap();
    let mut rec = run.spawn("watches", &[], &[("KUBECONFIG", proxy)]);
    rec.wait_ready(Duration::from_secs(60)).await;
    eventually("the tenant enrolled", Duration::from_secs(30), || async {
        let t = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get(&tenant)
            .await
            .ok()?;
        (t.labels().get("warmpool.io/tenant").map(String::as_str) == Some("enabled")).then_some(())
    })
    .await;
    rec.terminate();
    let calls: BTreeSet<Call> = calls.lock().unwrap().iter().cloned().collect();
    let pods_or_nodes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.group.is_empty() && matches!(c.resource.as_str(), "pods" | "nodes"))
        .filter(|c| !(c.resource == "pods" && c.namespace == run.namespace))
        .collect();
    assert!(
        pods_or_nodes.is_empty(),
        "pods or nodes read though nothing needs them: {pods_or_nodes:?}\n{}",
        rec.logs()
    );
    assert_metadata_only(&calls);
    run.cleanup().await;
}

#[tokio::test]
async fn the_reconciler_uses_exactly_the_permissions_the_chart_grants() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let Some(helm) = helm() else { return };
    // slot: auto, so that the warm nodes are watched too; spareSlots auto, so that arrivals are
    // recorded (the chart then grants the ConfigMap warmpool-arrivals); repair: evict, so that
    // escaped tenant pods are evicted (the chart then grants pods/eviction).
    let run = Run::new(
        &client,
        BIN.as_ref(),
        Config::from_yaml(
            "prewarmer: {slot: auto, spareSlots: {auto: {max: 3}}}\ntenants: {repair: evict}",
        )
        .expect("the test's configuration"),
    )
    .await;
    let ns = run.namespace.clone();
    let docs = rendered_rbac(
        &helm,
        &run.id,
        &ns,
        &[
            "--set",
            "prewarmer.spareSlots.auto.max=3",
            "--set",
            "tenants.repair=evict",
        ],
    );
    let granted = grants(&docs);
    let sa = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let _installed = Installed::create(&client, &docs).await;

    // warmpool's own Deployment, whose pod the reconciler plays (POD_NAME), as the chart's.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let own: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "warmpool"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "warmpool-under-test"}},
            "template": {
                "metadata": {"labels": {"app": "warmpool-under-test"}},
                "spec": {"containers": [{"name": "warmpool", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &own)
        .await
        .expect("own Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = eventually("the Deployment's pod", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=warmpool-under-test"))
            .await
            .ok()?;
        list.items.into_iter().next().map(|p| p.name_any())
    })
    .await;

    // Objects whose immutable fields differ from what the reconciler wants.
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(conflicting("Deployment", "warmpool-prewarmer")).unwrap(),
        )
        .await
        .expect("conflicting prewarmer");
    daemonsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(conflicting("DaemonSet", "warmpool-image-cache")).unwrap(),
        )
        .await
        .expect("conflicting image cache");
    // The PriorityClass is cluster-wide: removed, so that the reconciler creates it; with
    // PRIORITY_CLASS_CONFLICT, replaced by one with another value (immutable).
    let priority_classes: Api<PriorityClass> = Api::all(client.clone());
    let _ = priority_classes
        .delete("warmpool-placeholder", &DeleteParams::default())
        .await;
    eventually(
        "the PriorityClass gone",
        Duration::from_secs(30),
        || async {
            priority_classes
                .get_opt("warmpool-placeholder")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    if PRIORITY_CLASS_CONFLICT {
        let stranger: PriorityClass = serde_json::from_value(json!({
            "metadata": {"name": "warmpool-placeholder", "labels": {"app.kubernetes.io/managed-by": "warmpool"}},
            "value": -11,
            "preemptionPolicy": "Never",
        }))
        .unwrap();
        priority_classes
            .create(&PostParams::default(), &stranger)
            .await
            .expect("conflicting PriorityClass");
    }

    // The ServiceAccount's token, and the proxy that uses it.
    let token: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(&sa, &PostParams::default(), &token)
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("token status")
        .token;
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig().unwrap()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let sa_kubeconfig = run.dir.path().join("sa.kubeconfig");
    write_kubeconfig(
        &sa_kubeconfig,
        cluster["server"].as_str().unwrap(),
        cluster["certificate-authority-data"].as_str(),
        Some(&token),
    );
    let calls = Arc::new(Mutex::new(Vec::new()));
    let port = start_proxy(client_from(&sa_kubeconfig).await, Arc::clone(&calls)).await;
    let proxy_kubeconfig = run.dir.path().join("proxy.kubeconfig");
    write_kubeconfig(
        &proxy_kubeconfig,
        &format!("http://127.0.0.1:{port}"),
        None,
        None,
    );

    let tenant = run.tenant("1");
    run.create_namespace(&tenant, &[]).await;
    let proxy = proxy_kubeconfig.to_str().unwrap();
    let mut rec = run.spawn(
        "least-privilege",
        &["--lease-duration", "4s"],
        &[
            ("KUBECONFIG", proxy),
            ("POD_NAME", &pod),
            ("POD_NAMESPACE", &ns),
        ],
    );
    rec.wait_ready(Duration::from_secs(60)).await;
    let selector_of = |spec: Option<Value>| {
        spec.and_then(|s| {
            s["selector"]["matchLabels"]["app"]
                .as_str()
                .map(str::to_owned)
        })
    };
    eventually(
        "conflicting objects re-created, tenant enrolled",
        Duration::from_secs(90),
        || async {
            let d = deployments.get_opt("warmpool-prewarmer").await.ok()??;
            let ds = daemonsets.get_opt("warmpool-image-cache").await.ok()??;
            let pc = priority_classes
                .get_opt("warmpool-placeholder")
                .await
                .ok()??;
            let stranger = Some("stranger".to_owned());
            (selector_of(serde_json::to_value(d.spec).ok()) != stranger
                && selector_of(serde_json::to_value(ds.spec).ok()) != stranger
                && pc.value == -10)
                .then_some(())?;
            let t = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get(&tenant)
                .await
                .ok()?;
            (t.labels().get("warmpool.io/tenant").map(String::as_str) == Some("enabled"))
                .then_some(())
        },
    )
    .await;
    // A tenant pod, and drift: the prewarmer deleted, repaired.
    run.create_pod(
        &tenant,
        "app",
        json!({"containers": [{"name": "a", "image": "busybox:1.36"}]}),
    )
    .await;
    // A tenant pod that escaped the webhook (there is none here), owned by a ReplicaSet, then one
    // the webhook steered (its annotation and the pool's placement): the webhook is back, so the
    // escaped one is evicted (pods/eviction) and its ReplicaSet makes another.
    let replicasets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), &tenant);
    let escaped = json!({
        "metadata": {"name": "escaped"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "escaped"}},
            "template": {
                "metadata": {"labels": {"app": "escaped"}},
                "spec": {"automountServiceAccountToken": false,
                         "containers": [{"name": "a", "image": "busybox:1.36"}]},
            },
        },
    });
    replicasets
        .create(
            &PostParams::default(),
            &serde_json::from_value(escaped).unwrap(),
        )
        .await
        .expect("the escaped pods' ReplicaSet");
    let tenant_pods: Api<Pod> = Api::namespaced(client.clone(), &tenant);
    let first = eventually("the escaped pod", Duration::from_secs(60), || async {
        let list = tenant_pods
            .list(&ListParams::default().labels("app=escaped"))
            .await
            .ok()?;
        list.items.into_iter().next().map(|p| p.name_any())
    })
    .await;
    let steered: Pod = serde_json::from_value(json!({
        "metadata": {"name": "steered", "annotations": {"warmpool.io/injected": "node-affinity,tolerations"}},
        "spec": {
            "automountServiceAccountToken": false,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "workload-type", "operator": "In", "values": [run.pool]}]}]}}},
            "tolerations": [{"key": "workload-type", "operator": "Equal", "value": run.pool,
                             "effect": "NoSchedule"}],
            "containers": [{"name": "a", "image": "busybox:1.36"}],
        },
    }))
    .unwrap();
    tenant_pods
        .create(&PostParams::default(), &steered)
        .await
        .expect("a steered pod");
    eventually(
        "the escaped pod evicted",
        Duration::from_secs(60),
        || async {
            let list = tenant_pods
                .list(&ListParams::default().labels("app=escaped"))
                .await
                .ok()?;
            (!list
                .items
                .iter()
                .any(|p| p.name_any() == first && p.metadata.deletion_timestamp.is_none()))
            .then_some(())
        },
    )
    .await;
    deployments
        .delete("warmpool-prewarmer", &DeleteParams::default())
        .await
        .expect("delete the prewarmer");
    eventually(
        "the prewarmer repaired",
        Duration::from_secs(60),
        || async {
            let d = deployments.get_opt("warmpool-prewarmer").await.ok()??;
            d.metadata.deletion_timestamp.is_none().then_some(())
        },
    )
    .await;
    // The arrivals record written (created by server-side apply)...
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the arrivals record written",
        Duration::from_secs(60),
        || async {
            let cm = configmaps.get_opt("warmpool-arrivals").await.ok()??;
            cm.data?.get("arrivals")?.contains(&tenant).then_some(())
        },
    )
    .await;
    // Long enough for a few Lease renewals and a resync.
    tokio::time::sleep(Duration::from_secs(6)).await;
    rec.terminate();
    // ...and read by the next leadership term.
    let mut next = run.spawn(
        "least-privilege-2",
        &["--lease-duration", "4s"],
        &[
            ("KUBECONFIG", proxy),
            ("POD_NAME", &pod),
            ("POD_NAMESPACE", &ns),
        ],
    );
    next.wait_ready(Duration::from_secs(60)).await;
    eventually(
        "the next term read the arrivals record",
        Duration::from_secs(60),
        || async { next.logs().contains("arrivals record read").then_some(()) },
    )
    .await;
    next.terminate();
    let logs = rec.logs() + &next.logs();
    let calls: BTreeSet<Call> = calls.lock().unwrap().iter().cloned().collect();

    // 1. Every call allowed, and covered by a granted rule.
    let covers = |g: &Grant, c: &Call| {
        g.group == c.group
            && g.resource == c.resource
            && g.verbs.contains(&c.verb)
            && (g.names.is_empty() || g.names.contains(&c.name))
            && g.namespace.as_ref().is_none_or(|n| *n == c.namespace)
    };
    let mut report = Vec::new();
    for c in &calls {
        assert_ne!(c.status, 403, "refused: {c:?}\n{logs}");
        assert!(
            granted.iter().any(|g| covers(g, c)),
            "a call no rule grants: {c:?}"
        );
        report.push(format!(
            "{} {}/{} {}{}→ {}",
            c.verb,
            if c.group.is_empty() { "core" } else { &c.group },
            c.resource,
            if c.namespace.is_empty() {
                String::new()
            } else {
                format!(
                    "ns={} ",
                    if c.namespace == ns {
                        "own"
                    } else {
                        "tenant/other"
                    }
                )
            },
            if c.name.is_empty() {
                String::new()
            } else {
                format!("name={} ", c.name)
            },
            c.status
        ));
    }
    // Writes into namespaces other than its own: only Events, and evictions of tenants' pods.
    for c in &calls {
        let write = matches!(c.verb.as_str(), "create" | "update" | "patch" | "delete");
        if write && !c.namespace.is_empty() && c.namespace != ns {
            let what = (c.group.as_str(), c.resource.as_str());
            let eviction_of_a_tenant_pod =
                what == ("", "pods/eviction") && c.namespace.starts_with(&run.tenant_prefix);
            assert!(
                what == ("events.k8s.io", "events") || eviction_of_a_tenant_pod,
                "a write outside warmpool's namespace: {c:?}"
            );
        }
    }

    // 1b. Namespaces and the written objects are watched for their metadata only.
    assert_metadata_only(&calls);

    // 2. Every granted (group, resource, verb) used, or excused.
    let mut unused = Vec::new();
    for g in &granted {
        for verb in &g.verbs {
            let used = calls.iter().any(|c| {
                c.group == g.group && c.resource == g.resource && &c.verb == verb && c.status < 400
            });
            let excused = GRANTED_NOT_EXERCISED
                .iter()
                .any(|(gr, r, v, _)| *gr == g.group && *r == g.resource && v == verb);
            if !used && !excused {
                unused.push(format!("{}/{} {verb}", g.group, g.resource));
            }
        }
    }
    report.dedup();
    eprintln!(
        "least privilege: {} distinct calls by the reconciler, all granted:\n  {}",
        calls.len(),
        report.join("\n  ")
    );
    for (g, r, v, why) in GRANTED_NOT_EXERCISED {
        eprintln!("granted, not exercised here: {g}/{r} {v}: {why}");
    }
    assert!(
        unused.is_empty(),
        "granted by the chart but never used by the reconciler: {unused:?}"
    );
    run.cleanup().await;
}
