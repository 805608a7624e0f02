//! AdmissionReview handling on the fixtures the API server sends.

use base64::Engine as _;
use serde_json::{Value, json};
use warmpool::config::Config;
use warmpool::core::mutation::Rules;
use warmpool::core::tenant::TenantSelector;
use warmpool::webhook::review::{Decision, ReviewError, review};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn answer(body: &[u8]) -> Result<(Value, Decision), ReviewError> {
    let config = Config::default();
    let selector =
        TenantSelector::new(&config.tenants.namespace_patterns, Some("warmpool")).unwrap();
    review(body, &Rules::from_config(&config), &selector)
        .map(|r| (serde_json::from_slice(&r.body).unwrap(), r.decision))
}

fn decoded_patch(response: &Value) -> Value {
    let b64 = response["response"]["patch"].as_str().expect("a patch");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_tenant_pod_create_is_allowed_with_a_json_patch() {
    let body = fixture("pod-create.json");
    let (out, decision) = answer(&body).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(
        out["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    assert!(matches!(decision, Decision::Patched(ref i) if i.len() == 2));

    let patch: json_patch::Patch = serde_json::from_value(decoded_patch(&out)).unwrap();
    let input: Value = serde_json::from_slice(&body).unwrap();
    let mut pod = input["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(
        pod["spec"]["affinity"],
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "workload-type", "operator": "In", "values": ["cargocats"]}]}
        ]}}})
    );
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(tolerations.len(), 3, "the two default tolerations are kept");
    assert_eq!(tolerations[2]["key"], "workload-type");
    assert_eq!(
        pod["metadata"]["annotations"]["warmpool.io/injected"],
        "node-affinity,tolerations"
    );
    // Fields we do not touch are byte-for-byte what they were.
    assert_eq!(
        pod["spec"]["volumes"],
        input["request"]["object"]["spec"]["volumes"]
    );
    assert_eq!(
        pod["metadata"]["managedFields"],
        input["request"]["object"]["metadata"]["managedFields"]
    );
}

#[test]
fn update_non_pod_and_system_namespaces_pass_unchanged() {
    for (name, uid) in [
        ("pod-update.json", "aaaaaaaa-0000-4000-8000-000000000002"),
        (
            "configmap-create.json",
            "cccccccc-0000-4000-8000-000000000003",
        ),
        (
            "pod-create-kube-system.json",
            "dddddddd-0000-4000-8000-000000000004",
        ),
    ] {
        let (out, decision) = answer(&fixture(name)).unwrap();
        assert_eq!(out["response"]["uid"], uid, "{name}");
        assert_eq!(out["response"]["allowed"], true, "{name}");
        assert!(out["response"].get("patch").is_none(), "{name}");
        assert!(out["response"].get("patchType").is_none(), "{name}");
        assert!(
            matches!(decision, Decision::Ignored(_)),
            "{name}: {decision:?}"
        );
    }
}

#[test]
fn a_skipped_pod_is_allowed_with_a_warning() {
    let (out, decision) = answer(&fixture("pod-create-skip.json")).unwrap();
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    let warning = out["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("warmpool.io/skip"), "{warning}");
    assert!(matches!(decision, Decision::Skipped(_)));
}

#[test]
fn a_large_pod_is_patched_too() {
    let (out, _) = answer(&fixture("pod-create-large.json")).unwrap();
    assert_eq!(decoded_patch(&out).as_array().unwrap().len(), 3);
}

#[test]
fn v1beta1_reviews_are_answered_in_their_own_version() {
    let mut v: Value = serde_json::from_slice(&fixture("pod-create.json")).unwrap();
    v["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (out, _) = answer(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
}

#[test]
fn bad_bodies_are_errors_that_say_what_is_wrong() {
    assert!(matches!(answer(b""), Err(ReviewError::Malformed(_))));
    assert!(matches!(
        answer(b"{not json"),
        Err(ReviewError::Malformed(_))
    ));
    assert!(matches!(answer(b"[1,2]"), Err(ReviewError::Malformed(_))));
    assert_eq!(
        answer(br#"{"apiVersion":"v1","kind":"Pod"}"#).unwrap_err(),
        ReviewError::WrongKind("Pod".into())
    );
    assert_eq!(
        answer(br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#).unwrap_err(),
        ReviewError::WrongVersion("admission.k8s.io/v2".into())
    );
    assert_eq!(
        answer(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).unwrap_err(),
        ReviewError::NoRequest
    );
    // A request without uid or operation is malformed, and the message names the field.
    let e = answer(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"kind":"Pod"}}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("uid"), "{e}");
}

#[test]
fn a_request_without_object_is_allowed_unchanged() {
    let (out, decision) = answer(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"demo-1","operation":"CREATE"}}"#,
    )
    .unwrap();
    assert_eq!(out["response"]["uid"], "u1");
    assert_eq!(out["response"]["allowed"], true);
    assert!(matches!(decision, Decision::Ignored(_)));
}

/// A `dryRun: true` review (`kubectl create --dry-run=server`) is answered like any other: the
/// webhook has no side effects (`sideEffects: None`), so the API server may call it for dry
/// runs, and the user sees the pod as it would be admitted. Same patch, same decision, its own
/// uid.
#[test]
fn a_dry_run_review_gets_the_same_patch() {
    let dry = fixture("pod-create-dry-run.json");
    let input: Value = serde_json::from_slice(&dry).unwrap();
    assert_eq!(input["request"]["dryRun"], true, "the fixture is a dry run");
    let (wet_out, wet_decision) = answer(&fixture("pod-create.json")).unwrap();
    let (dry_out, dry_decision) = answer(&dry).unwrap();

    assert_eq!(
        dry_out["response"]["uid"],
        "eeeeeeee-0000-4000-8000-000000000005"
    );
    assert_eq!(dry_out["response"]["allowed"], true);
    assert_eq!(dry_out["response"]["patchType"], "JSONPatch");
    assert_eq!(decoded_patch(&dry_out), decoded_patch(&wet_out));
    assert_eq!(format!("{dry_decision:?}"), format!("{wet_decision:?}"));
    assert!(matches!(dry_decision, Decision::Patched(ref i) if i.len() == 2));
}
