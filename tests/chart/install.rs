//! A real helm install → upgrade (the CA kept) → uninstall (everything removed).

use std::time::Duration;

use serde_json::{Value, json};

use crate::s;
use support::chart::{self as harness, cluster, eventually, helm, kinds, text, unique};

/// The two tests that really install the chart take turns: both may own the one cluster-wide
/// PriorityClass.
pub static INSTALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn install_upgrade_keeps_the_ca_and_uninstall_removes_everything() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    let id = unique("wpi");
    let ns = cluster.namespace(&id);
    let release = id.clone();
    let chart = harness::chart_dir();
    let chart = chart.to_str().unwrap();

    // The chart owns the cluster-wide PriorityClass warmpool-placeholder. If it exists already
    // (another release, or a reconciler run outside the cluster by another test), Helm would
    // refuse to adopt it: leave it alone then (the dry-run and render tests check it).
    let _one_install = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
    let pc_elsewhere = cluster
        .get_json(&["priorityclass", "warmpool-placeholder"])
        .is_some();
    if pc_elsewhere {
        eprintln!("note: PriorityClass warmpool-placeholder exists already: installing without it");
    }
    // Unique patterns and an extra namespace selector: the installed webhook (whose pods never
    // run here: no kubelet) must not slow down other tests' pod creations.
    let base: Vec<String> = vec![
        "--set-json".into(),
        format!(r#"tenants.namespacePatterns=["{id}-t-*"]"#),
        "--set-json".into(),
        format!(
            r#"tenants.namespaceMatchExpressions=[{{"key":"warmpool.test/install","operator":"In","values":["{id}"]}}]"#
        ),
        "--set".into(),
        format!("priorityClass.create={}", !pc_elsewhere),
        // Its pods are never scheduled: a pod bound to a (fake) node with no kubelet would stay
        // Terminating after uninstall.
        "--set-json".into(),
        r#"nodeSelector={"warmpool.test/nowhere":"true"}"#.into(),
    ];
    let helm_ok = |args: &[&str]| -> String {
        let out = cluster.helm(&helm, args);
        assert!(
            out.status.success(),
            "helm {} failed:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let with = |head: &[&str], extra: &[String]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(base.iter().cloned())
            .chain(extra.iter().cloned())
            .collect()
    };

    let args = with(&["install", &release, chart, "--namespace", &ns.name], &[]);
    let out = helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("kubectl get ns -L warmpool.io/tenant"),
        "NOTES say how to check: {out}"
    );

    // Every object of the release is there.
    let manifest = helm_ok(&["get", "manifest", &release, "--namespace", &ns.name]);
    let objects = harness::parse_documents(&manifest);
    assert!(objects.len() >= 11, "{:?}", kinds(&objects));
    let get_args = |o: &Value| -> Vec<String> {
        let mut a = vec![
            s(&o["kind"]).to_lowercase(),
            s(&o["metadata"]["name"]).to_owned(),
        ];
        if let Some(n) = o["metadata"]["namespace"].as_str() {
            a.extend(["-n".into(), n.to_owned()]);
        }
        a
    };
    for o in &objects {
        let a = get_args(o);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        assert!(cluster.get_json(&a).is_some(), "{a:?} was not created");
    }
    let fullname = format!("{release}-warmpool");
    let ca_bundles = || -> Vec<String> {
        let mwc = cluster
            .get_json(&["mutatingwebhookconfiguration", &fullname])
            .expect("webhook configuration");
        mwc["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| s(&w["clientConfig"]["caBundle"]).to_owned())
            .collect()
    };
    let secret = |key: &str| -> String {
        let secret = cluster
            .get_json(&["secret", &format!("{fullname}-tls"), "-n", &ns.name])
            .expect("tls secret");
        s(&secret["data"][key]).to_owned()
    };
    let before = ca_bundles();
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|b| *b == secret("ca.crt")));
    let serving_before = secret("tls.crt");

    // What the reconciler creates carries an owner reference to warmpool's Deployment: stand in
    // for it with one object, and see the real garbage collector remove it after uninstall.
    let deployment = cluster
        .get_json(&["deployment", &fullname, "-n", &ns.name])
        .expect("deployment");
    let owned = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "warmpool-owned-probe", "namespace": ns.name,
            "labels": {"app.kubernetes.io/managed-by": "warmpool"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": fullname,
                "uid": deployment["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
        "data": {}
    })
    .to_string();
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&owned));

    // Upgrade with changed values: the config changes, the CA does not.
    let checksum =
        |d: &Value| d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].clone();
    let changed = [
        "--set".to_owned(),
        "prewarmer.spareSlots=3".to_owned(),
        "--set".to_owned(),
        "webhook.timeoutSeconds=3".to_owned(),
    ];
    let args = with(
        &["upgrade", &release, chart, "--namespace", &ns.name],
        &changed,
    );
    helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cm = cluster
        .get_json(&["configmap", &fullname, "-n", &ns.name])
        .expect("configmap");
    assert!(
        s(&cm["data"]["config.yaml"]).contains("spareSlots: 3"),
        "{cm}"
    );
    let mwc = cluster
        .get_json(&["mutatingwebhookconfiguration", &fullname])
        .unwrap();
    assert_eq!(mwc["webhooks"][0]["timeoutSeconds"], 3);
    assert_eq!(
        ca_bundles(),
        before,
        "helm upgrade keeps the CA (caBundle unchanged)"
    );
    assert_eq!(
        secret("tls.crt"),
        serving_before,
        "and the serving certificate"
    );
    let upgraded = cluster
        .get_json(&["deployment", &fullname, "-n", &ns.name])
        .unwrap();
    assert_ne!(
        checksum(&upgraded),
        checksum(&deployment),
        "the config change rolls the pods"
    );
    assert_eq!(upgraded["metadata"]["uid"], deployment["metadata"]["uid"]);

    // Uninstall: every object of the release goes, and the garbage collector takes what the
    // Deployment owned (its ReplicaSets, the reconciler's objects).
    helm_ok(&["uninstall", &release, "--namespace", &ns.name]);
    eventually(
        "helm uninstall removes everything",
        Duration::from_secs(90),
        || {
            let left: Vec<String> = objects
                .iter()
                .filter(|o| {
                    let a = get_args(o);
                    let a: Vec<&str> = a.iter().map(String::as_str).collect();
                    cluster.get_json(&a).is_some()
                })
                .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
                .chain(
                    cluster
                        .get_json(&["configmap", "warmpool-owned-probe", "-n", &ns.name])
                        .map(|_| "the reconciler's (owned) object".to_owned()),
                )
                .chain(
                    cluster
                        .kubectl_ok(
                            &[
                                "get",
                                "replicasets,pods",
                                "-n",
                                &ns.name,
                                "-l",
                                &format!("app.kubernetes.io/instance={release}"),
                                "-o",
                                "name",
                            ],
                            None,
                        )
                        .lines()
                        .map(str::to_owned),
                )
                .collect();
            if !left.is_empty() {
                eprintln!("waiting for: {left:?}");
            }
            left.is_empty().then_some(())
        },
    );
    assert!(
        cluster
            .get_json(&["mutatingwebhookconfiguration", &fullname])
            .is_none()
    );
    assert!(cluster.get_json(&["clusterrole", &fullname]).is_none());
    if !pc_elsewhere {
        assert!(
            cluster
                .get_json(&["priorityclass", "warmpool-placeholder"])
                .is_none()
        );
    }
}
