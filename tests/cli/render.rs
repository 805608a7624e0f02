//! `warmpool render` end to end: the real binary prints the objects the reconciler's own builders
//! make, for the defaults, a configuration file and `--image`; bad input fails in one line; and
//! what it prints passes a server-side dry run on the local control plane.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use warmpool::config::Config;
use warmpool::core::pool::desired;
use warmpool::kubectl::yaml::read_documents;
use warmpool::reconcile::watches::pods;

use support::cluster::{kubeconfig, unique};
use support::reconciler::kubectl_path;

fn warmpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warmpool"))
        .arg("render")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs warmpool")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The documents of standard output, read as kubectl reads them.
fn documents(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", stderr(out));
    read_documents(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn config_file(yaml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(yaml.as_bytes()).expect("write config");
    file
}

/// The cached images of a rendered DaemonSet (its `cache-…` containers).
fn cached(ds: &Value) -> Vec<String> {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("cache-")))
        .map(|c| c["image"].as_str().expect("image").to_owned())
        .collect()
}

#[test]
fn prints_what_the_reconcilers_own_builders_make() {
    let docs = documents(&warmpool(&[]));
    let config = Config::default();
    let seen = pods::offline(&config, &[]);
    let expected = vec![
        serde_json::to_value(desired::priority_class()).unwrap(),
        serde_json::to_value(desired::prewarmer(
            &config,
            "warmpool-system",
            &seen.slot,
            &config.prewarmer.in_force(jiff::Timestamp::now()),
            None,
        ))
        .unwrap(),
        serde_json::to_value(desired::image_cache(
            &config,
            "warmpool-system",
            &desired::cache_sets(&config, &seen.images, &seen.left_out).0,
            None,
        ))
        .unwrap(),
    ];
    assert_eq!(docs, expected);
    let names: Vec<(&str, &str, Option<&str>)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("PriorityClass", "warmpool-placeholder", None),
            ("Deployment", "warmpool-prewarmer", Some("warmpool-system")),
            ("DaemonSet", "warmpool-image-cache", Some("warmpool-system")),
        ]
    );
    assert_eq!(cached(&docs[2]).len(), 3, "the CargoCATs images");
    assert_eq!(
        docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "640m", "memory": "2150Mi"})
    );
    assert!(docs[0]["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        stderr(&warmpool(&[])),
        "",
        "nothing to say about the defaults"
    );
}

#[test]
fn a_configuration_and_images_change_the_objects_as_they_would_in_the_cluster() {
    let file = config_file(
        "tenants: {namespacePatterns: ['team-*']}\n\
         pool: {nodeLabel: {key: pool, value: warm}, tolerations: []}\n\
         prewarmer: {spareSlots: 3, doNotDisrupt: true, slot: {cpu: '2', memory: 4Gi}}\n\
         imageCache: {images: [b.example/configured:1], maxImages: 3, architectures: [arm64]}\n",
    );
    let path = file.path().to_str().unwrap();
    let out = warmpool(&[
        "--config",
        path,
        "--namespace",
        "warmpool",
        "--image",
        "z.example/web:2",
        "--image",
        "a.example/agent:1",
        "--image",
        "b.example/configured:1",
        "--image",
        "y.example/one-too-many:1",
    ]);
    let docs = documents(&out);
    let deployment = &docs[1];
    assert_eq!(deployment["metadata"]["namespace"], "warmpool");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"],
        "true"
    );
    assert_eq!(
        template["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "2", "memory": "4Gi"})
    );
    assert_eq!(
        template["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"],
        json!([{"key": "pool", "operator": "In", "values": ["warm"]}])
    );
    // The image cache: the pool's nodes of the tool image's architectures (one term, ANDed).
    assert_eq!(
        docs[2]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"],
        json!([{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["warm"]},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
        ]}])
    );
    // The configured image first, then the given ones by name while there is room; sorted.
    assert_eq!(
        cached(&docs[2]),
        vec![
            "a.example/agent:1",
            "b.example/configured:1",
            "y.example/one-too-many:1"
        ]
    );
    let err = stderr(&out);
    assert!(
        err.contains("1 --image image(s) left out: imageCache.maxImages is 3"),
        "{err}"
    );

    // slot: auto, discovery off: said so on stderr.
    let file = config_file("prewarmer: {slot: auto}\nimageCache: {discover: false}\n");
    let out = warmpool(&["--config", file.path().to_str().unwrap(), "--image", "x:1"]);
    let docs = documents(&out);
    assert_eq!(cached(&docs[2]).len(), 3, "no discovered image");
    assert_eq!(
        docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "640m", "memory": "2150Mi"})
    );
    let err = stderr(&out);
    assert!(err.contains("imageCache.discover is false"), "{err}");
    assert!(err.contains("prewarmer.slot is auto"), "{err}");
}

/// The cache holds references as the kubelet and containerd name them: one image in several
/// spellings takes one slot.
#[test]
fn images_are_cached_in_their_canonical_form_once() {
    let file = config_file("imageCache: {images: [nginx, 'registry:5000/x/y:1']}\n");
    let out = warmpool(&[
        "--config",
        file.path().to_str().unwrap(),
        "--image",
        "nginx:latest",
        "--image",
        "docker.io/library/nginx:latest",
        "--image",
        "index.docker.io/library/nginx",
        "--image",
        "bitnami/redis:7",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        cached(&documents(&out)[2]),
        vec![
            "docker.io/bitnami/redis:7",
            "docker.io/library/nginx:latest",
            "registry:5000/x/y:1"
        ]
    );
    assert!(!stderr(&out).contains("left out"), "{}", stderr(&out));
}

#[test]
fn json_is_a_list_of_the_same_objects() {
    let yaml = documents(&warmpool(&["--image", "x.example/a:1"]));
    let out = warmpool(&["--image", "x.example/a:1", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"], Value::Array(yaml));
}

#[test]
fn bad_input_fails_in_one_line() {
    let file = config_file("prewarmer: {slot: {cpu: lots, memory: 1Gi}}\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--config", file.path().to_str().unwrap()],
            "`prewarmer.slot.cpu`",
        ),
        (
            vec!["--config", "/nonexistent/warmpool.yaml"],
            "cannot read",
        ),
        (vec!["--image", "has space:1"], "--image `has space:1`"),
        (
            vec!["--image", "Nginx:1"],
            "--image `Nginx:1` is not an image reference: repository name must be lowercase",
        ),
        (vec!["--namespace", "Not_A_Namespace"], "--namespace"),
        (
            vec!["--at", "tomorrow"],
            "--at `tomorrow` is not an RFC 3339 time",
        ),
        (
            vec!["--at", "2026-11-30T08:50:00"],
            "--at `2026-11-30T08:50:00` is not an RFC 3339 time",
        ),
        (vec!["-o", "patch"], "patch"),
    ];
    for (args, needle) in cases {
        let out = warmpool(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        if args[0] != "-o" {
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(err.starts_with("error: "), "{args:?}: {err}");
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn at_shows_the_slots_the_schedule_sets_at_that_instant_and_the_window_in_force() {
    let workshop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workshop.yaml");
    let path = workshop.to_str().unwrap();
    let prewarmer_at = |at: &str| {
        let out = warmpool(&["--config", path, "--at", at]);
        let docs = documents(&out);
        (docs[1].clone(), stderr(&out))
    };
    // Monday 2026-11-30, 08:50 in Berlin: in the lead time, warm.
    let (open, said) = prewarmer_at("2026-11-30T08:50:00+01:00");
    assert_eq!(open["spec"]["replicas"], 30);
    assert_eq!(
        open["metadata"]["annotations"],
        json!({"warmpool.io/schedule-window": "workshop-mornings"})
    );
    assert_eq!(
        said.trim_end(),
        "prewarmer.schedule at 2026-11-30T07:50:00Z: 30 spare slots, window \
         `workshop-mornings` in force; next change at 2026-11-30T12:00:00Z"
    );
    // The same instant in UTC: the same objects.
    assert_eq!(prewarmer_at("2026-11-30T07:50:00Z").0, open);
    // 13:00 in Berlin, and Saturday morning: closed.
    for closed_at in ["2026-11-30T13:00:00+01:00", "2026-12-05T09:30:00+01:00"] {
        let (closed, said) = prewarmer_at(closed_at);
        assert_eq!(closed["spec"]["replicas"], 1, "{closed_at}");
        assert_eq!(
            closed["metadata"]["annotations"],
            json!({"warmpool.io/schedule-window": "none"}),
            "{closed_at}"
        );
        assert!(said.contains("1 spare slots, no window in force"), "{said}");
    }
    // 08:44: before the lead time.
    assert_eq!(
        prewarmer_at("2026-11-30T08:44:00+01:00").0["spec"]["replicas"],
        1
    );
    // Without a schedule, --at changes nothing and no annotation is written.
    let plain = documents(&warmpool(&["--at", "2026-11-30T08:50:00+01:00"]));
    assert_eq!(plain, documents(&warmpool(&[])));
    assert!(plain[1]["metadata"].get("annotations").is_none());
}

/// What `render` prints, the API server accepts: a server-side dry run (admission, schema
/// validation with unknown fields refused) of the three objects on the local control plane.
#[test]
fn the_rendered_objects_pass_a_server_side_dry_run() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let kubectl = kubectl_path();
    let namespace = unique("render");
    let run = |args: &[&str], input: Option<&[u8]>| {
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.unwrap_or_default()).expect("stdin");
        drop(stdin);
        child.wait_with_output().expect("kubectl ends")
    };
    let created = run(&["create", "namespace", &namespace], None);
    assert!(created.status.success(), "{}", stderr(&created));
    let file = config_file(
        "prewarmer: {spareSlots: 2, doNotDisrupt: true}\n\
         imageCache: {imagePullSecrets: [regcred]}\n",
    );
    let mut results = Vec::new();
    for output in ["yaml", "json"] {
        let rendered = warmpool(&[
            "--config",
            file.path().to_str().unwrap(),
            "--namespace",
            &namespace,
            "--image",
            "gcr.io/distroless/static@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "-o",
            output,
        ]);
        assert!(rendered.status.success(), "{}", stderr(&rendered));
        let applied = run(
            &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&rendered.stdout),
        );
        results.push((output, applied));
    }
    let deleted = run(&["delete", "namespace", &namespace, "--wait=false"], None);
    for (output, applied) in results {
        let said = String::from_utf8_lossy(&applied.stdout).into_owned();
        assert!(
            applied.status.success(),
            "-o {output}: {}{said}",
            stderr(&applied)
        );
        for object in [
            "priorityclass.scheduling.k8s.io/warmpool-placeholder",
            "deployment.apps/warmpool-prewarmer",
            "daemonset.apps/warmpool-image-cache",
        ] {
            assert!(
                said.lines()
                    .any(|l| l.starts_with(object) && l.ends_with("(server dry run)")),
                "-o {output}: {object}: {said}"
            );
        }
    }
    assert!(deleted.status.success(), "{}", stderr(&deleted));
}
