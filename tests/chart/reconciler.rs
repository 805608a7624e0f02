//! The real reconciler runs on the chart's RBAC alone, and uninstall collects its objects.

use std::time::Duration;

use serde_json::{Value, json};

use crate::install::INSTALLS;
use crate::s;
use support::chart::{self as harness, cluster, eventually, helm, text, unique};

/// GET `path` on a plain-HTTP address; the status code, if anything answered.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_reconciler_runs_on_the_charts_rbac_alone_and_uninstall_collects_its_objects() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    // Install the chart; its pods never run here (no kubelet), so the real `warmpool reconcile`
    // runs beside the test instead, as one of those pods: with the ServiceAccount's token and
    // nothing else, so any permission the code needs and the chart lacks shows up as a failure.
    let id = unique("wpr");
    let ns = cluster.namespace(&id);
    let release = id.clone();
    let fullname = format!("{release}-warmpool");
    let chart = harness::chart_dir();
    let _one_install = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
    let pc_elsewhere = cluster
        .get_json(&["priorityclass", "warmpool-placeholder"])
        .is_some();
    let patterns = format!(r#"tenants.namespacePatterns=["{id}-t-*"]"#);
    let selector = format!(
        r#"tenants.namespaceMatchExpressions=[{{"key":"warmpool.test/rbac","operator":"In","values":["{id}"]}}]"#
    );
    // A pool label no node has: the placeholders and the cache stay Pending, never bound to a
    // (fake) node without kubelet.
    let pool = format!("pool.nodeLabel.value={id}");
    let pc = format!("priorityClass.create={}", !pc_elsewhere);
    let install = [
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--set-json",
        &patterns,
        "--set-json",
        &selector,
        "--set",
        &pool,
        "--set",
        &pc,
        "--set",
        "replicaCount=1",
        "--set",
        "imageCache.discover=false",
        "--set-json",
        r#"nodeSelector={"warmpool.test/nowhere":"true"}"#,
    ];
    let out = cluster.helm(&helm, &install);
    assert!(out.status.success(), "helm install: {}", text(&out.stderr));

    let pod = eventually(
        "a pod of the chart's Deployment",
        Duration::from_secs(60),
        || {
            let pods = cluster.get_json(&[
                "pods",
                "-n",
                &ns.name,
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
            ])?;
            pods["items"][0]["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
        },
    );

    // The ServiceAccount's own credentials, in a kubeconfig of their own.
    let token = cluster
        .kubectl_ok(
            &[
                "create",
                "token",
                &fullname,
                "-n",
                &ns.name,
                "--duration=600s",
            ],
            None,
        )
        .trim()
        .to_owned();
    let admin: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(&cluster.kubeconfig).expect("admin kubeconfig"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_saphyr::to_string(&json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
            "current-context": "c",
        }))
        .unwrap(),
    )
    .unwrap();
    // The configuration the chart installed.
    let cm = cluster
        .get_json(&["configmap", &fullname, "-n", &ns.name])
        .expect("configmap");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, s(&cm["data"]["config.yaml"])).unwrap();

    // The chart's tenants.namespaceMatchExpressions narrow the reconciler too: the tenant carries
    // the label they require; t-0, named like a tenant, does not.
    let unmatched = cluster.namespace(&format!("{id}-t-0"));
    let tenant = cluster.namespace(&format!("{id}-t-1"));
    let scope = format!("warmpool.test/rbac={id}");
    cluster.kubectl_ok(&["label", "namespace", &tenant.name, &scope], None);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let log = dir.path().join("reconciler.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let reconciler = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_warmpool"))
            .args(["reconcile", "--config"])
            .arg(&config)
            .args(["--namespace", &ns.name, "--metrics-listen", &metrics])
            .args(["--log-format", "text", "--resync", "20s"])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", &pod)
            .env("POD_NAMESPACE", &ns.name)
            .env_remove("WARMPOOL_NAMESPACE")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("warmpool reconcile starts"),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut reconciler = reconciler;
    let owner_uid = cluster
        .get_json(&["deployment", &fullname, "-n", &ns.name])
        .expect("the chart's Deployment")["metadata"]["uid"]
        .clone();
    let owned_by_chart = |kind: &str, name: &str| -> Option<()> {
        let o = cluster.get_json(&[kind, name, "-n", &ns.name])?;
        (o["metadata"]["ownerReferences"][0]["uid"] == owner_uid
            && o["metadata"]["ownerReferences"][0]["kind"] == "Deployment")
            .then_some(())
    };
    eventually(
        "the reconciler's objects, owned by the chart's Deployment; the tenant labelled; the Lease held",
        Duration::from_secs(90),
        || {
            if let Ok(Some(status)) = reconciler.0.try_wait() {
                panic!("warmpool reconcile exited ({status}):\n{}", log_text());
            }
            owned_by_chart("deployment", "warmpool-prewarmer")?;
            owned_by_chart("daemonset", "warmpool-image-cache")?;
            let lease = cluster.get_json(&["lease", "warmpool-reconciler", "-n", &ns.name])?;
            lease["spec"]["holderIdentity"].as_str()?;
            let t = cluster.get_json(&["namespace", &tenant.name])?;
            (t["metadata"]["labels"]["warmpool.io/tenant"] == "enabled").then_some(())
        },
    );
    let pc = cluster
        .get_json(&["priorityclass", "warmpool-placeholder"])
        .expect("the PriorityClass");
    assert_eq!(pc["value"], -10);
    eventually(
        "an Event in the tenant namespace",
        Duration::from_secs(30),
        || {
            let events = cluster.get_json(&["events.events.k8s.io", "-n", &tenant.name])?;
            (!events["items"].as_array()?.is_empty()).then_some(())
        },
    );
    eventually("the reconciler ready", Duration::from_secs(30), || {
        (http_status(&metrics, "/readyz")? == 200).then_some(())
    });
    // Both namespaces were in the reconciler's first list, passed in the same round.
    let t0 = cluster.get_json(&["namespace", &unmatched.name]).unwrap();
    assert!(
        t0["metadata"]["labels"].get("warmpool.io/tenant").is_none(),
        "outside tenants.namespaceMatchExpressions: not enrolled: {t0}"
    );
    // Drift is repaired with the same permissions.
    cluster.kubectl_ok(
        &[
            "delete",
            "deployment",
            "warmpool-prewarmer",
            "-n",
            &ns.name,
            "--wait=false",
        ],
        None,
    );
    eventually("the prewarmer re-created", Duration::from_secs(60), || {
        let d = cluster.get_json(&["deployment", "warmpool-prewarmer", "-n", &ns.name])?;
        d["metadata"]["deletionTimestamp"].is_null().then_some(())?;
        owned_by_chart("deployment", "warmpool-prewarmer")
    });
    let text_now = log_text();
    // Not "403": durations and resource versions in the log may contain it.
    for word in ["forbidden", "Forbidden"] {
        assert!(
            !text_now.contains(word),
            "the reconciler was refused something with the chart's RBAC:\n{text_now}"
        );
    }
    drop(reconciler);

    // Uninstall: the garbage collector removes what the reconciler made.
    let out = cluster.helm(&helm, &["uninstall", &release, "--namespace", &ns.name]);
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        text(&out.stderr)
    );
    eventually(
        "the prewarmer and the image cache collected",
        Duration::from_secs(90),
        || {
            (cluster
                .get_json(&["deployment", "warmpool-prewarmer", "-n", &ns.name])
                .is_none()
                && cluster
                    .get_json(&["daemonset", "warmpool-image-cache", "-n", &ns.name])
                    .is_none())
            .then_some(())
        },
    );
}
