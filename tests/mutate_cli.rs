//! `warmpool mutate` end to end on the files in `examples/`.

use std::process::{Command, Output};

use serde_json::{Value, json};

fn warmpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warmpool"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs warmpool")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_tenant_pod_gets_affinity_and_tolerations() {
    let out = warmpool(&[
        "mutate",
        "--namespace",
        "demo-1",
        "-f",
        "examples/pod.yaml",
        "-o",
        "json",
    ]);
    let pod = stdout_json(&out);
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "workload-type", "operator": "In", "values": ["cargocats"]}]}])
    );
    assert_eq!(
        pod["spec"]["tolerations"],
        json!([{"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}])
    );
    assert!(stderr(&out).contains("injected: node-affinity, tolerations"));
}

#[test]
fn yaml_output_is_the_default_and_parses_back() {
    let out = warmpool(&[
        "mutate",
        "--namespace",
        "demo-1",
        "-f",
        "examples/pod-with-affinity.yaml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pod: Value = serde_norway::from_slice(&out.stdout).unwrap();
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(terms.as_array().unwrap().len(), 2);
    for t in terms.as_array().unwrap() {
        assert_eq!(t["matchExpressions"].as_array().unwrap().len(), 2);
    }
    assert_eq!(terms[1]["matchFields"][0]["key"], "metadata.name");
    assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/owner"],
        "team-cats"
    );
}

#[test]
fn patch_output_and_a_second_pass_is_empty() {
    let first = warmpool(&[
        "mutate",
        "--namespace",
        "demo-1",
        "-f",
        "examples/pod.yaml",
        "-o",
        "json",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mutated = dir.path().join("mutated.json");
    std::fs::write(&mutated, &first.stdout).unwrap();
    let again = warmpool(&[
        "mutate",
        "--namespace",
        "demo-1",
        "-f",
        mutated.to_str().unwrap(),
        "-o",
        "patch",
    ]);
    assert_eq!(stdout_json(&again), json!([]));
    assert!(stderr(&again).contains("nothing to inject"));
}

#[test]
fn a_namespace_that_is_not_a_tenant_leaves_the_pod_unchanged_and_says_why() {
    let out = warmpool(&[
        "mutate",
        "--namespace",
        "default",
        "-f",
        "examples/pod.yaml",
        "-o",
        "patch",
    ]);
    assert_eq!(stdout_json(&out), json!([]));
    assert!(stderr(&out).contains("not a tenant"), "{}", stderr(&out));
    let out = warmpool(&[
        "mutate",
        "--namespace",
        "demo-2",
        "--label",
        "warmpool.io/tenant=disabled",
        "-f",
        "examples/pod.yaml",
        "-o",
        "patch",
    ]);
    assert_eq!(stdout_json(&out), json!([]));
    assert!(stderr(&out).contains("warmpool.io/tenant=disabled"));
}

#[test]
fn an_opted_in_namespace_and_a_config_file() {
    let out = warmpool(&[
        "mutate",
        "--namespace",
        "payments",
        "--label",
        "warmpool.io/tenant=enabled",
        "--config",
        "examples/config.yaml",
        "-f",
        "examples/pod.yaml",
        "-o",
        "json",
    ]);
    let pod = stdout_json(&out);
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["weight"],
        100
    );
}

#[test]
fn the_skip_annotation_is_reported() {
    let out = warmpool(&[
        "mutate",
        "--namespace",
        "demo-1",
        "-f",
        "examples/pod-skip.yaml",
        "-o",
        "patch",
    ]);
    assert_eq!(stdout_json(&out), json!([]));
    assert!(stderr(&out).contains("skipped: pod is annotated warmpool.io/skip=true"));
}

#[test]
fn bad_input_fails_with_one_line_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy.yaml");
    std::fs::write(&deploy, "apiVersion: apps/v1\nkind: Deployment\n").unwrap();
    let bad_config = dir.path().join("config.yaml");
    std::fs::write(&bad_config, "pool:\n  afinity: required\n").unwrap();
    for (args, expected) in [
        (
            vec!["mutate", "--namespace", "demo-1", "-f", "missing.yaml"],
            "cannot read pod file missing.yaml",
        ),
        (
            vec![
                "mutate",
                "--namespace",
                "demo-1",
                "-f",
                deploy.to_str().unwrap(),
            ],
            "holds a Deployment",
        ),
        (
            vec![
                "mutate",
                "--namespace",
                "demo-1",
                "--config",
                bad_config.to_str().unwrap(),
                "-f",
                "examples/pod.yaml",
            ],
            "`pool.afinity`",
        ),
        (
            vec![
                "mutate",
                "--namespace",
                "demo-1",
                "--label",
                "nokey",
                "-f",
                "examples/pod.yaml",
            ],
            "is not KEY=VALUE",
        ),
        (vec!["mutate", "-f", "examples/pod.yaml"], "--namespace"),
    ] {
        let out = warmpool(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
