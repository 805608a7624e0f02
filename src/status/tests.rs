//! The screen from fixed objects, without a cluster.

use serde_json::{Value, json};

use super::build::build;
use super::model::{Listed, Start};
use super::parts::slots_in;
use super::{Part, admission, render};
use crate::config::Config;
use crate::core::pool::slot::Requests;
use k8s_openapi::api::core::v1::Pod;

const NOW: &str = "2026-12-02T08:00:00Z";

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

fn ns(name: &str, labels: Value, annotations: Value, created: &str) -> Value {
    json!({"metadata": {"name": name, "labels": labels, "annotations": annotations,
                        "creationTimestamp": created}})
}

fn pod(ns: &str, name: &str, node: Option<&str>, ready: bool, extra: Value) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "nginx",
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" },
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    if let Some(node) = node {
        p["spec"]["nodeName"] = json!(node);
    }
    merge(&mut p, extra);
    p
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

const INJECTED: &str = "warmpool.io/injected";

/// What the webhook leaves on a pod it steered (with the default configuration): the annotation
/// and the pool's placement (the annotation alone proves nothing: anyone may write it).
fn steered() -> Value {
    json!({"metadata": {"annotations": {INJECTED: "node-affinity,tolerations"}},
           "spec": {
               "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                   "nodeSelectorTerms": [{"matchExpressions": [
                       {"key": "workload-type", "operator": "In", "values": ["cargocats"]}]}]}}},
               "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "cargocats",
                                "effect": "NoSchedule"}]}})
}

fn certificate_pem() -> String {
    let mut params =
        rcgen::CertificateParams::new(vec!["warmpool.warmpool-system.svc".into()]).expect("params");
    params.not_after = rcgen::date_time_ymd(2027, 1, 31);
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("certificate").pem()
}

/// A cluster with three pattern tenants (warm, cold with an escaped pod, measuring), one
/// opted in and not Ready, one opted out; two warm nodes; the chart's and the reconciler's
/// objects.
pub fn listed() -> Listed {
    let injected = steered();
    let sized = |cpu: &str, mem: &str| {
        let mut p = steered();
        p["spec"]["containers"] = json!([{"name": "app", "image": "nginx",
                        "resources": {"requests": {"cpu": cpu, "memory": mem}}}]);
        p
    };
    let namespaces = vec![
        ns(
            "demo-1",
            json!({"warmpool.io/tenant": "enabled"}),
            json!({"warmpool.io/start": "warm", "warmpool.io/ready-seconds": "2.4"}),
            "2026-12-02T07:00:00Z",
        ),
        ns(
            "demo-2",
            json!({}),
            json!({"warmpool.io/start": "cold", "warmpool.io/ready-seconds": "31"}),
            "2026-12-02T07:30:00Z",
        ),
        ns("demo-3", json!({}), json!({}), "2026-12-02T07:59:20Z"),
        ns(
            "payments",
            json!({"warmpool.io/tenant": "enabled"}),
            json!({"warmpool.io/start": "not-ready"}),
            "2026-12-01T08:00:00Z",
        ),
        ns(
            "demo-off",
            json!({"warmpool.io/tenant": "disabled"}),
            json!({}),
            "2026-12-01T08:00:00Z",
        ),
        ns("default", json!({}), json!({}), "2026-11-01T08:00:00Z"),
        ns(
            "warmpool-system",
            json!({}),
            json!({}),
            "2026-11-01T08:00:00Z",
        ),
    ];
    let cache = json!({
        "metadata": {"name": "warmpool-image-cache-x1", "namespace": "warmpool-system",
                     "labels": {"app.kubernetes.io/name": "warmpool-image-cache"}},
        "spec": {"nodeName": "warm-1", "containers": [
            {"name": "pause", "image": "pause", "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}},
            {"name": "cache-a-00000001", "image": "registry.example/a:1", "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}},
            {"name": "cache-b-00000002", "image": "registry.example/b:1", "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "cache-a-00000001", "image": "registry.example/a:1", "imageID": "sha256:aa", "ready": true, "restartCount": 0},
            {"name": "cache-b-00000002", "image": "registry.example/b:1", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}
    });
    let pods = vec![
        pod(
            "demo-1",
            "web-a",
            Some("warm-1"),
            true,
            sized("250m", "768Mi"),
        ),
        pod(
            "demo-1",
            "web-b",
            Some("warm-1"),
            true,
            sized("390m", "1382Mi"),
        ),
        pod("demo-2", "api", Some("general-1"), true, json!({})),
        pod(
            "demo-2",
            "job",
            Some("general-1"),
            false,
            json!({"metadata": {"annotations": {"warmpool.io/skip": "true"}}}),
        ),
        pod("demo-3", "x", None, false, injected.clone()),
        pod("payments", "p", Some("warm-1"), false, injected),
        pod(
            "warmpool-system",
            "warmpool-prewarmer-abc",
            Some("warm-1"),
            true,
            json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "warmpool-prewarmer"}},
            "spec": {"containers": [{"name": "pause", "image": "pause",
                     "resources": {"requests": {"cpu": "640m", "memory": "2150Mi"}}}]}}),
        ),
        cache,
        pod("kube-system", "agent", Some("warm-1"), true, json!({})),
        pod(
            "demo-1",
            "done",
            Some("warm-1"),
            false,
            json!({"status": {"phase": "Succeeded"}}),
        ),
    ];
    let node = |name: &str, cpu: &str, mem: &str| {
        json!({"metadata": {"name": name, "labels": {"workload-type": "cargocats"}},
               "status": {"allocatable": {"cpu": cpu, "memory": mem},
                          "conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let deployments = vec![
        json!({"metadata": {"name": "warmpool", "labels": {"app.kubernetes.io/name": "warmpool"}},
               "spec": {"replicas": 2, "selector": {}, "template": {"spec": {
                   "containers": [{"name": "webhook", "args": ["webhook"]}],
                   "volumes": [{"name": "config", "configMap": {"name": "warmpool"}},
                               {"name": "tls", "secret": {"secretName": "warmpool-tls"}}]}}},
               "status": {"readyReplicas": 2}}),
        json!({"metadata": {"name": "warmpool-prewarmer",
                            "annotations": {"warmpool.io/schedule-window": "none"}},
               "spec": {"replicas": 1, "selector": {}, "template": {"spec": {"containers": [
                   {"name": "pause", "resources": {"requests": {"cpu": "640m", "memory": "2150Mi"}}}]}}},
               "status": {"readyReplicas": 1}}),
    ];
    let event =
        |ns: &str, reason: &str, kind: &str, name: &str, at: &str, count: i32, msg: &str| {
            json!({"metadata": {"name": format!("{name}.{reason}"), "namespace": ns},
               "involvedObject": {"kind": kind, "name": name, "namespace": ns},
               "reason": reason, "message": msg, "type": "Warning", "count": count,
               "lastTimestamp": at})
        };
    let events = vec![
        event(
            "warmpool-system",
            "ImagePullFailed",
            "DaemonSet",
            "warmpool-image-cache",
            "2026-12-02T07:50:00Z",
            3,
            "registry.example/b:1 cannot be pulled on node warm-1",
        ),
        event(
            "payments",
            "TenantNotReady",
            "Namespace",
            "payments",
            "2026-12-02T07:55:00Z",
            1,
            "1 of 1 pods not Ready 600 s after the namespace was created",
        ),
        event(
            "default",
            "FailedScheduling",
            "Pod",
            "other",
            "2026-12-02T07:58:00Z",
            1,
            "not ours",
        ),
        event(
            "demo-1",
            "BackOff",
            "Pod",
            "web-a",
            "2026-12-02T05:00:00Z",
            9,
            "too old",
        ),
    ];
    let hook = |name: &str, ns: &str| {
        json!({"name": name, "clientConfig": {"service": {"name": "warmpool", "namespace": ns}},
               "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore"})
    };
    let mwcs = vec![
        json!({"metadata": {"name": "warmpool"},
               "webhooks": [hook("tenant-label.warmpool.io", "warmpool-system"),
                            hook("tenant-name.warmpool.io", "warmpool-system")]}),
        json!({"metadata": {"name": "someone-else"},
               "webhooks": [hook("tenant-label.warmpool.io", "other-system")]}),
    ];
    let secret = json!({"metadata": {"name": "warmpool-tls"},
                        "data": {"tls.crt": base64_of(certificate_pem().as_bytes())}});
    Listed {
        namespace: "warmpool-system".into(),
        config: Config {
            pricing: Some(crate::core::pricing::Pricing {
                cpu_core_hour: 0.04,
                memory_gib_hour: 0.005,
                currency: "USD".into(),
            }),
            ..Config::default()
        },
        config_source: "ConfigMap warmpool-system/warmpool".into(),
        now: NOW.parse().expect("now"),
        namespaces: Part::Read(namespaces.into_iter().map(from).collect()),
        pods: Part::Read(pods.into_iter().map(from).collect()),
        nodes: Part::Read(vec![
            from(node("warm-1", "4", "16Gi")),
            from(node("warm-2", "2", "4Gi")),
        ]),
        deployments: Part::Read(deployments.into_iter().map(from).collect()),
        daemon_sets: Part::Read(vec![
            from(
                json!({"metadata": {"name": "warmpool-image-cache", "annotations":
                {"warmpool.io/images-left-out": "max-images=2 byte-budget=1"}}}),
            ),
            from(json!({"metadata": {"name": "warmpool-image-cache-discovered"}})),
        ]),
        events: Part::Read(events.into_iter().map(from).collect()),
        headroom_events: Part::Read(vec![]),
        node_pools: Part::Read(None),
        webhook_configurations: Part::Read(mwcs.into_iter().map(from).collect()),
        tls_secret: Some(("warmpool-tls".into(), Part::Read(Some(from(secret))))),
        served_certificate: None,
        calls: 10,
        elapsed: std::time::Duration::from_millis(40),
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const SCREEN: &str = include_str!("screen.txt");

#[test]
fn the_screen_of_a_fixed_cluster() {
    let got = render::text(&build(&listed()), false);
    if got != SCREEN {
        // The new screen, to compare (and to copy over screen.txt when the change is meant).
        let path = std::env::temp_dir().join("warmpool-status-screen.txt");
        let _ = std::fs::write(&path, &got);
        panic!(
            "screen differs from src/status/screen.txt; got (also in {}):\n{got}",
            path.display()
        );
    }
}

#[test]
fn what_the_model_says_of_each_part() {
    let status = build(&listed());
    let tenants = status.tenants.ok().expect("tenants");
    let names: Vec<&str> = tenants.list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["demo-3", "demo-2", "demo-1", "payments"],
        "newest first; opted out, system and own left out"
    );
    assert_eq!(tenants.by_start[&Start::Warm], 1);
    assert_eq!(tenants.by_start[&Start::Measuring], 1);
    assert_eq!(
        (tenants.pods_ready, tenants.pods_total),
        (3, 6),
        "the Succeeded pod is not counted"
    );
    assert_eq!(
        tenants.escaped.len(),
        1,
        "the skipped pod and the injected ones are not"
    );
    assert_eq!(
        (
            tenants.escaped[0].pod.as_str(),
            tenants.escaped[0].node.as_deref()
        ),
        ("api", Some("general-1"))
    );
    let nodes = status.warm_nodes.ok().expect("nodes");
    // warm-1: 4000m - (250+390+100+640+15+100) = 2505m => 3 slots of 640m (memory has room for 5).
    assert_eq!(nodes[0].free_slots, Some(3));
    assert_eq!(
        (nodes[0].placeholders, nodes[0].tenant_pods),
        (Some(1), Some(3))
    );
    let images = nodes[0].images.as_ref().expect("a cache pod");
    assert_eq!((images.present, images.wanted), (1, 2));
    assert_eq!(images.failed, ["registry.example/b:1"]);
    // warm-2: 4Gi holds one 2150Mi slot.
    assert_eq!(
        (nodes[1].free_slots, nodes[1].images.as_ref()),
        (Some(1), None)
    );
    let cert = status
        .webhook
        .certificate
        .ok()
        .and_then(|c| c.clone())
        .expect("certificate");
    assert_eq!(cert.days_left, Some(59));
    let mwcs = status.webhook.configurations.ok().expect("configurations");
    assert_eq!(
        mwcs.len(),
        1,
        "only the one calling a Service in warmpool's namespace"
    );
    let failures = status.failures.ok().expect("failures");
    let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["TenantNotReady", "ImagePullFailed"],
        "newest first, last hour, ours only"
    );
    let left_out = status.images_left_out.ok().expect("DaemonSets read");
    let by_reason: Vec<(&str, u32)> = left_out
        .iter()
        .map(|l| (l.reason.as_str(), l.images))
        .collect();
    assert_eq!(by_reason, [("max-images", 2), ("byte-budget", 1)]);
    assert!(left_out[1].why.contains("imageCache.maxBytesPerNode"));
}

#[test]
fn images_left_out_show_only_when_there_are_some_or_they_cannot_be_read() {
    let mut listed = listed();
    listed.daemon_sets = Part::Read(vec![from(
        json!({"metadata": {"name": "warmpool-image-cache"}}),
    )]);
    let text = render::text(&build(&listed), false);
    assert!(!text.contains("left out"), "{text}");
    listed.daemon_sets = Part::Unreadable {
        needs: "list daemonsets in warmpool-system".into(),
    };
    let status = build(&listed);
    let text = render::text(&status, false);
    assert!(
        text.contains(
            "images the cache left out: not readable: needs list daemonsets in warmpool-system"
        ),
        "{text}"
    );
    let json: Value = serde_json::from_str(&render::json(&status)).expect("json");
    assert_eq!(
        json["imagesLeftOut"],
        json!({"notReadable": "list daemonsets in warmpool-system"})
    );
}

#[test]
fn a_tenant_with_no_figure_is_measuring_only_while_the_reconciler_may_still_write_one() {
    let start_of = |listed: &Listed| {
        let status = build(listed);
        let tenants = status.tenants.ok().expect("tenants");
        let demo3 = tenants
            .list
            .iter()
            .find(|t| t.name == "demo-3")
            .expect("demo-3");
        (demo3.start, render::text(&status, false))
    };
    let (start, screen) = start_of(&listed());
    assert_eq!(start, Start::Measuring, "40 s old, within the 10 m timeout");
    assert!(!screen.contains("unmeasured"), "{screen}");

    let mut off = listed();
    off.config.tenants.time_to_ready.enabled = false;
    let (start, screen) = start_of(&off);
    assert_eq!(
        start,
        Start::NotMeasured,
        "timeToReady off: nothing will be written"
    );
    assert!(screen.contains("measuring 0, unmeasured 1)"), "{screen}");
    assert!(screen.contains("demo-3    unmeasured"), "{screen}");

    let mut later = listed();
    later.now += jiff::SignedDuration::from_mins(30);
    let (start, _) = start_of(&later);
    assert_eq!(
        start,
        Start::NotMeasured,
        "past the timeout with no annotation: given up"
    );
}

#[test]
fn a_part_that_is_refused_says_what_would_show_it_and_the_rest_stays() {
    let mut listed = listed();
    listed.pods = Part::Unreadable {
        needs: "list pods (all namespaces)".into(),
    };
    listed.tls_secret = Some((
        "warmpool-tls".into(),
        Part::Unreadable {
            needs: "get secrets warmpool-tls in warmpool-system".into(),
        },
    ));
    let status = build(&listed);
    let text = render::text(&status, false);
    assert!(
        text.contains("TENANTS  not readable: needs list pods (all namespaces)"),
        "{text}"
    );
    assert!(
        text.contains(
            "certificate: not readable: needs get secrets warmpool-tls in warmpool-system"
        ),
        "{text}"
    );
    assert!(
        text.contains("PREWARMER  spare slots 1 wanted, 1 ready"),
        "{text}"
    );
    let nodes = status.warm_nodes.ok().expect("nodes are read");
    assert_eq!(nodes[0].free_slots, None);
    let json: Value = serde_json::from_str(&render::json(&status)).expect("json");
    assert_eq!(
        json["tenants"],
        json!({"notReadable": "list pods (all namespaces)"})
    );
    assert_eq!(json["warmNodes"][0]["freeSlots"], Value::Null);
    assert_eq!(json["tenants"]["notReadable"], "list pods (all namespaces)");
}

#[test]
fn without_the_secret_the_certificate_is_what_a_ready_webhook_pod_serves() {
    let secret_refused = || {
        Some((
            "warmpool-tls".to_owned(),
            Part::Unreadable {
                needs: "get secrets warmpool-tls in warmpool-system".into(),
            },
        ))
    };
    let mut listed = listed();
    listed.tls_secret = secret_refused();
    // 2027-01-31T00:00:00Z, as the pod's gauge says it.
    listed.served_certificate = Some(("warmpool-abc".into(), Part::Read(Some(1_801_353_600))));
    let text = render::text(&build(&listed), false);
    assert!(
        text.contains(
            "certificate (Secret warmpool-tls, as pod warmpool-abc serves it) expires \
             2027-01-31T00:00:00Z (59 days)"
        ),
        "{text}"
    );

    listed.served_certificate = Some(("warmpool-abc".into(), Part::Read(None)));
    let text = render::text(&build(&listed), false);
    assert!(
        text.contains("certificate: pod warmpool-abc reports no expiry"),
        "{text}"
    );

    listed.served_certificate = Some((
        "warmpool-abc".into(),
        Part::Unreadable {
            needs: "get pods/proxy in warmpool-system".into(),
        },
    ));
    let text = render::text(&build(&listed), false);
    assert!(
        text.contains(
            "certificate: not readable: needs get secrets warmpool-tls in warmpool-system, or \
             get pods/proxy in warmpool-system"
        ),
        "{text}"
    );
}

#[test]
fn the_serving_pod_is_a_ready_one_of_the_webhook_deployment_and_its_metrics_port() {
    let deployment: k8s_openapi::api::apps::v1::Deployment = from(json!({
        "metadata": {"name": "warmpool", "namespace": "warmpool-system"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "warmpool"}},
            "template": {"spec": {"containers": [
                {"name": "webhook", "args": ["webhook"],
                 "ports": [{"name": "https", "containerPort": 8443},
                           {"name": "metrics", "containerPort": 9090}]},
                {"name": "reconciler", "args": ["reconcile"],
                 "ports": [{"name": "rec-metrics", "containerPort": 9091}]}]}},
        },
    }));
    let labelled = json!({"metadata": {"labels": {"app.kubernetes.io/name": "warmpool"}}});
    let pods: Vec<Pod> = vec![
        from(pod(
            "warmpool-system",
            "unready",
            Some("n"),
            false,
            labelled.clone(),
        )),
        from(pod("other", "elsewhere", Some("n"), true, labelled.clone())),
        from(pod(
            "warmpool-system",
            "unlabelled",
            Some("n"),
            true,
            json!({}),
        )),
        from(pod("warmpool-system", "ready", Some("n"), true, labelled)),
    ];
    assert_eq!(
        admission::serving_pod(&deployment, &pods),
        Some(("ready".to_owned(), 9090))
    );
    assert_eq!(admission::serving_pod(&deployment, &pods[..3]), None);

    let metrics = "# HELP x\nwarmpool_webhook_certificate_expiry_timestamp_seconds 1801353600\n";
    assert_eq!(admission::served_expiry(metrics), Some(1_801_353_600));
    assert_eq!(
        admission::served_expiry("warmpool_webhook_certificate_expiry_timestamp_seconds 0\n"),
        None
    );
    assert_eq!(admission::served_expiry("other 1\n"), None);
}

#[test]
fn the_prewarmer_says_the_headroom_the_pending_placeholders_and_the_node_pools() {
    let mut listed = listed();
    let Part::Read(pods) = &mut listed.pods else {
        panic!("pods read")
    };
    let mut pending = pod(
        "warmpool-system",
        "warmpool-prewarmer-abc",
        None,
        false,
        json!({"metadata": {"uid": "u-1", "labels": {"app.kubernetes.io/name": "warmpool-prewarmer"}}}),
    );
    pending["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "lastTransitionTime": "2026-12-02T07:59:00Z"}]);
    pods.push(from(pending));
    listed.headroom_events = Part::Read(vec![
        from(
            json!({"metadata": {"name": "e1", "namespace": "warmpool-system",
                                 "creationTimestamp": "2026-12-02T07:30:00Z"},
                    "involvedObject": {}, "reason": "HeadroomRestored",
                    "message": "headroom back 21.4 s after placeholder a was preempted: …"}),
        ),
        from(
            json!({"metadata": {"name": "e2", "namespace": "warmpool-system",
                                 "creationTimestamp": "2026-12-02T06:30:00Z"},
                    "involvedObject": {}, "reason": "HeadroomRestored",
                    "message": "headroom back 40.0 s after placeholder b was preempted: …"}),
        ),
    ]);
    listed.node_pools = Part::Read(Some(vec![json!({
        "metadata": {"name": "warm"},
        "spec": {"template": {"metadata": {"labels": {"workload-type": "cargocats"}}},
                 "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized"}}
    })]));
    let status = build(&listed);
    let Part::Read(Some(p)) = &status.prewarmer else {
        panic!("a prewarmer")
    };
    let headroom = p.headroom.as_ref().expect("the headroom");
    assert_eq!(
        (headroom.last_hour, headroom.latest_seconds),
        (1, Some(21.4))
    );
    assert_eq!(headroom.latest_at, "2026-12-02T07:30:00Z");
    assert_eq!(
        p.pending.as_deref(),
        Some(&["warmpool-prewarmer-abc".to_owned()][..])
    );
    let text = render::text(&status, false);
    assert!(
        text.contains("  headroom: back 21.4 s after the latest preemption (at 2026-12-02T07:30:00Z); 1 restore(s) in the last hour"),
        "{text}"
    );
    assert!(
        text.contains("  1 placeholder(s) have no node: kubectl -n warmpool-system describe pod warmpool-prewarmer-abc"),
        "{text}"
    );
    assert!(
        text.contains("  ! NodePool warm has consolidationPolicy WhenEmptyOrUnderutilized"),
        "{text}"
    );
    // No Karpenter in the cluster: nothing said about NodePools.
    listed.node_pools = Part::Read(None);
    let Part::Read(Some(p)) = build(&listed).prewarmer else {
        panic!("a prewarmer")
    };
    assert_eq!(p.node_pool_findings, None);
}

#[test]
fn json_has_every_tenant_and_the_escaped_pods() {
    let json: Value = serde_json::from_str(&render::json(&build(&listed()))).expect("json");
    assert_eq!(json["tenants"]["list"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["tenants"]["list"][1]["start"], "cold");
    assert_eq!(json["tenants"]["list"][1]["readySeconds"], 31.0);
    assert_eq!(
        json["tenants"]["escaped"],
        json!([{"namespace": "demo-2", "pod": "api", "node": "general-1"}])
    );
    assert_eq!(
        json["prewarmer"],
        json!({"wanted": 1, "ready": 1, "window": "none", "slot": "640m CPU, 2150Mi",
               "reservedCpuMillicores": 640, "reservedMemoryBytes": 2_254_438_400_u64,
               "monthlyCost": {"amount": (0.64 * 0.04 + 2150.0 / 1024.0 * 0.005) * 730.5,
                               "currency": "USD"},
               "pending": []})
    );
    assert_eq!(
        json["webhook"]["configurations"][0]["failurePolicy"],
        json!(["Ignore"])
    );
}

#[test]
fn many_tenants_are_summed_up_and_the_ones_that_matter_listed() {
    let mut listed = listed();
    let mut namespaces = Vec::new();
    let mut pods = Vec::new();
    for i in 0..1000 {
        let name = format!("demo-{i:04}");
        let start = if i % 10 == 0 { "cold" } else { "warm" };
        let seconds = format!("{}", 1 + i % 37);
        namespaces.push(from(ns(
            &name,
            json!({}),
            json!({"warmpool.io/start": start, "warmpool.io/ready-seconds": seconds}),
            "2026-12-01T00:00:00Z",
        )));
        for p in 0..3 {
            let extra = if i == 500 && p == 0 {
                json!({})
            } else {
                steered()
            };
            pods.push(from(pod(
                &name,
                &format!("p{p}"),
                Some("warm-1"),
                true,
                extra,
            )));
        }
    }
    listed.namespaces = Part::Read(namespaces);
    listed.pods = Part::Read(pods);
    let started = std::time::Instant::now();
    let status = build(&listed);
    let text = render::text(&status, false);
    let took = started.elapsed();
    eprintln!("1,000 tenants, 3,000 pods: built and rendered in {took:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert!(text.contains("TENANTS  1000 (warm 900, cold 100, not-ready 0, measuring 0)   pods Ready 3000/3000   escaped pods 1"), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("  demo-")).collect();
    assert_eq!(rows.len(), render::TENANT_ROWS, "{text}");
    assert!(
        rows[0].starts_with("  demo-0500"),
        "the tenant with an escaped pod first: {text}"
    );
    assert!(text.contains("... 990 more"), "{text}");
    let all = render::text(&status, true);
    assert_eq!(
        all.lines().filter(|l| l.starts_with("  demo-")).count(),
        1000
    );
}

#[test]
fn slots_fit_in_both_resources() {
    let r = |cpu_millis, mib: u64| Requests {
        cpu_millis,
        memory_bytes: mib << 20,
    };
    assert_eq!(slots_in(r(2000, 8192), r(640, 2150)), 3);
    assert_eq!(slots_in(r(2000, 2000), r(640, 2150)), 0);
    assert_eq!(
        slots_in(r(2000, 2000), r(500, 0)),
        4,
        "memory not asked for"
    );
    assert_eq!(
        slots_in(r(2000, 2000), Requests::ZERO),
        0,
        "no slot size: nothing to count"
    );
}

#[test]
fn the_config_comes_from_the_chart_config_map_or_the_defaults_say_why() {
    use super::collect::from_config_map;
    let cm = |yaml: &str| {
        Part::Read(Some(from(
            json!({"metadata": {"name": "warmpool"}, "data": {"config.yaml": yaml}}),
        )))
    };
    let (config, source) = from_config_map(
        cm("pool: {nodeLabel: {key: k, value: v}}"),
        "wp",
        "warmpool",
    );
    assert_eq!(
        (config.pool.node_label.value.as_str(), source.as_str()),
        ("v", "ConfigMap wp/warmpool")
    );
    let (config, source) = from_config_map(cm("nope: 1"), "wp", "warmpool");
    assert_eq!(config, Config::default());
    assert!(
        source.starts_with("built-in defaults (ConfigMap wp/warmpool: "),
        "{source}"
    );
    let (_, source) = from_config_map(Part::Read(None), "wp", "warmpool");
    assert!(source.contains("no ConfigMap wp/warmpool"), "{source}");
    let (_, source) = from_config_map(
        Part::Unreadable {
            needs: "get configmaps warmpool in wp".into(),
        },
        "wp",
        "warmpool",
    );
    assert_eq!(
        source,
        "built-in defaults (ConfigMap not readable: needs get configmaps warmpool in wp)"
    );
}

#[test]
fn every_remedy_is_one_line() {
    for reason in [
        "ImagePullFailed",
        "ImageTagMoved",
        "TenantNotReady",
        "FailedScheduling",
        "FailedCreate",
        "Unsteered",
        "Other",
    ] {
        let r = super::parts::remedy(reason, "demo-1", "pod/x");
        assert!(!r.contains('\n') && !r.is_empty(), "{reason}: {r}");
    }
}
