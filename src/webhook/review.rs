//! AdmissionReview in, AdmissionReview out. Pure: bytes and the rules in, the response bytes and
//! what was decided (for logs and metrics) out.
//!
//! Only the fields the decision needs are read; the rest of the review (oldObject, userInfo,
//! managedFields…) is skipped by the parser rather than built into objects. kube-core's
//! `AdmissionReview<DynamicObject>` would build all of it for every pod created. The pod is read
//! as a typed view ([`PodView`]: the fields the decision reads, strings borrowed from the body,
//! no maps), so a large pod costs little more than a small one. A pod the view cannot hold (a
//! field of an unexpected type, which the API server never sends) is read again as JSON, of it
//! only what [`mutation::mutate`] reads (`POD_VIEW`), and decided by it: the same decision as
//! before the typed view, by construction.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::core::mutation;
use crate::core::mutation::{Injected, Mutation, PodView, Rules, SkipReason, Str};
use crate::core::tenant::TenantSelector;

const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Why a request body is not an AdmissionReview we can answer. The server answers these with a
/// 4xx and a JSON body; the API server then applies the webhook's failurePolicy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("request body is not a JSON AdmissionReview: {0}")]
    Malformed(String),
    #[error("expected kind AdmissionReview, got `{0}`")]
    WrongKind(String),
    #[error("unsupported apiVersion `{0}`; expected admission.k8s.io/v1")]
    WrongVersion(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
}

impl ReviewError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReviewError::Malformed(_) => "malformed",
            ReviewError::WrongKind(_) => "wrong_kind",
            ReviewError::WrongVersion(_) => "wrong_version",
            ReviewError::NoRequest => "no_request",
        }
    }
}

/// The review as read: `P` is the pod, as a typed view first ([`PodView`]) and, when that does
/// not deserialize, as JSON ([`ValueView`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "P: Deserialize<'de>"))]
struct ReviewIn<'a, P> {
    #[serde(borrow, default)]
    api_version: Option<Str<'a>>,
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a, P>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "P: Deserialize<'de>"))]
struct RequestIn<'a, P> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Gvk<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Str<'a>>,
    #[serde(borrow, default)]
    namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    /// JSON `null` is no object.
    #[serde(default)]
    object: Option<P>,
}

/// What the decision needs of the pod, however it was read.
trait Pod {
    fn generate_name(&self) -> Option<&str>;
    /// The decision: what was injected, its patch written as JSON into `patch` (nothing when
    /// there is nothing to add), or why the pod is left alone.
    fn mutate_into(self, rules: &Rules, patch: &mut Vec<u8>) -> Result<Vec<Injected>, SkipReason>;
}

impl Pod for PodView<'_> {
    fn generate_name(&self) -> Option<&str> {
        PodView::generate_name(self)
    }
    fn mutate_into(self, rules: &Rules, patch: &mut Vec<u8>) -> Result<Vec<Injected>, SkipReason> {
        mutation::mutate_view_json(self, rules, patch)
    }
}

/// The pod as JSON, of it only what the decision reads ([`mutation::read_set`]): where its typed view
/// does not deserialize.
struct ValueView(Value);

impl<'de> Deserialize<'de> for ValueView {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        mutation::read_set(deserializer).map(ValueView)
    }
}

impl Pod for ValueView {
    fn generate_name(&self) -> Option<&str> {
        self.0
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
    }
    fn mutate_into(self, rules: &Rules, patch: &mut Vec<u8>) -> Result<Vec<Injected>, SkipReason> {
        match mutation::mutate(&self.0, rules) {
            Mutation::Skip(reason) => Err(reason),
            Mutation::Patch {
                patch: ops,
                injected,
            } => {
                if !ops.0.is_empty() {
                    // Writing JSON values into a Vec cannot fail.
                    let _ = serde_json::to_writer(patch, &ops);
                }
                Ok(injected)
            }
        }
    }
}

#[derive(Deserialize)]
struct Gvk<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// What happened to one review: the labels of logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The pod was patched with these injections.
    Patched(Vec<Injected>),
    /// The pod already had everything.
    Unchanged,
    /// A pod rule left the pod alone.
    Skipped(SkipReason),
    /// The request is not one warmpool acts on (not a Pod, not CREATE, excluded namespace).
    Ignored(&'static str),
}

impl Decision {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Decision::Patched(_) => "patched",
            Decision::Unchanged => "unchanged",
            Decision::Skipped(_) => "skipped",
            Decision::Ignored(_) => "ignored",
        }
    }
}

/// The answer to one review.
#[derive(Debug)]
pub struct Reviewed {
    /// The serialized response AdmissionReview (always `allowed: true`).
    pub body: Vec<u8>,
    pub decision: Decision,
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// Answers one AdmissionReview. Every well-formed review is allowed; warmpool never denies.
pub fn review(
    body: &[u8],
    rules: &Rules,
    excluded: &TenantSelector,
) -> Result<Reviewed, ReviewError> {
    match serde_json::from_slice::<ReviewIn<PodView>>(body) {
        Ok(input) => respond(input, rules, excluded),
        // A pod the typed view cannot hold (a field of an unexpected type), or no JSON at all:
        // read as JSON, which decides such a pod (or names the error) as it always has.
        Err(_) => review_as_json(body, rules, excluded),
    }
}

/// [`review`] with the pod read as JSON: its path for a pod whose typed view does not
/// deserialize, public for the tests that compare the two.
#[doc(hidden)]
pub fn review_as_json(
    body: &[u8],
    rules: &Rules,
    excluded: &TenantSelector,
) -> Result<Reviewed, ReviewError> {
    let input: ReviewIn<ValueView> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    respond(input, rules, excluded)
}

fn respond<P: Pod>(
    input: ReviewIn<P>,
    rules: &Rules,
    excluded: &TenantSelector,
) -> Result<Reviewed, ReviewError> {
    let kind = input.kind.as_ref().map_or("", |k| &k.0);
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(kind.to_owned()));
    }
    let api_version = input.api_version.as_ref().map_or("", |v| &v.0);
    let Some(api_version) = API_VERSIONS.iter().find(|v| **v == api_version) else {
        return Err(ReviewError::WrongVersion(api_version.to_owned()));
    };
    let mut request = input.request.ok_or(ReviewError::NoRequest)?;
    let namespace = request.namespace.take().map_or(Cow::Borrowed(""), |n| n.0);
    let name = match (&request.name, &request.object) {
        (Some(name), _) => name.0.to_string(),
        (None, Some(object)) => object.generate_name().unwrap_or_default().to_owned(),
        (None, None) => String::new(),
    };

    let mut json = Vec::new();
    let decision = decide(&mut request, &namespace, rules, excluded, &mut json);
    let (patch, warnings, decision) = match decision {
        Err(ignored) => (None, Vec::new(), Decision::Ignored(ignored)),
        Ok(Err(reason)) => (
            None,
            vec![format!("warmpool: {reason}")],
            Decision::Skipped(reason),
        ),
        Ok(Ok(_)) if json.is_empty() => (None, Vec::new(), Decision::Unchanged),
        Ok(Ok(injected)) => (Some(json), Vec::new(), Decision::Patched(injected)),
    };
    let body = answer(api_version, &request.uid, patch.as_deref(), &warnings)?;
    Ok(Reviewed {
        body,
        decision,
        uid: request.uid.into_owned(),
        namespace: namespace.into_owned(),
        name,
    })
}

/// The response AdmissionReview, byte for byte what serde_json writes for
/// `{apiVersion, kind, response: {uid, allowed, patchType?, patch?, warnings?}}`, in one
/// allocation: the patch is base64-encoded straight into it (base64 needs no JSON escaping).
fn answer(
    api_version: &str,
    uid: &str,
    patch: Option<&[u8]>,
    warnings: &[String],
) -> Result<Vec<u8>, ReviewError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let encoded = patch.map_or(0, |p| base64::encoded_len(p.len(), true).unwrap_or(0));
    let size = 160 + uid.len() + encoded + warnings.iter().map(|w| w.len() + 8).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(br#"{"apiVersion":"#);
    write_json(&mut body, api_version)?;
    body.extend_from_slice(br#","kind":"AdmissionReview","response":{"uid":"#);
    write_json(&mut body, uid)?;
    body.extend_from_slice(br#","allowed":true"#);
    if let Some(patch) = patch {
        body.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        let start = body.len();
        body.resize(start + encoded, 0);
        let written = engine
            .encode_slice(patch, &mut body[start..])
            .map_err(|e| ReviewError::Malformed(e.to_string()))?;
        body.truncate(start + written);
        body.push(b'"');
    }
    if !warnings.is_empty() {
        body.extend_from_slice(br#","warnings":"#);
        write_json(&mut body, warnings)?;
    }
    body.extend_from_slice(b"}}");
    Ok(body)
}

fn write_json<T: Serialize + ?Sized>(body: &mut Vec<u8>, value: &T) -> Result<(), ReviewError> {
    serde_json::to_writer(body, value).map_err(|e| ReviewError::Malformed(e.to_string()))
}

/// The mutation for a request we act on (its patch written into `patch`), or why we do not act
/// on it.
fn decide<P: Pod>(
    request: &mut RequestIn<P>,
    namespace: &str,
    rules: &Rules,
    excluded: &TenantSelector,
    patch: &mut Vec<u8>,
) -> Result<Result<Vec<Injected>, SkipReason>, &'static str> {
    let gvk = &request.kind;
    if !gvk.group.is_empty() || gvk.version != "v1" || gvk.kind != "Pod" {
        return Err("not a Pod");
    }
    if request
        .sub_resource
        .as_ref()
        .is_some_and(|s| !s.0.is_empty())
    {
        return Err("a subresource");
    }
    if request.operation != "CREATE" {
        return Err("not a CREATE");
    }
    if excluded.is_excluded(namespace).is_some() {
        return Err("namespace is never a tenant");
    }
    let Some(pod) = request.object.take() else {
        return Err("no object in the request");
    };
    Ok(pod.mutate_into(rules, patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AffinityMode, Config};
    use serde_json::json;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn rules(mode: AffinityMode) -> Rules {
        let mut config = Config::default();
        config.pool.affinity = mode;
        Rules::from_config(&config)
    }

    /// The pod as the JSON path reads it, and the whole pod.
    fn view_and_full(review: &[u8]) -> (Option<Value>, Option<Value>) {
        let input: ReviewIn<ValueView> = serde_json::from_slice(review).unwrap();
        let full: Value = serde_json::from_slice(review).unwrap();
        let full = full["request"]
            .get("object")
            .cloned()
            .filter(|o| !o.is_null());
        (input.request.unwrap().object.map(|v| v.0), full)
    }

    /// The JSON view, the whole pod and (where it deserializes) the typed view decide alike,
    /// and the review answers alike on both paths. Returns whether the typed view was used.
    fn assert_same_decision(review: &[u8]) -> bool {
        let (view, full) = view_and_full(review);
        assert_eq!(view.is_some(), full.is_some());
        let typed = serde_json::from_slice::<ReviewIn<PodView>>(review).ok();
        let config = Config::default();
        let selector = TenantSelector::new(&config.tenants.namespace_patterns, None).unwrap();
        for mode in [AffinityMode::Required, AffinityMode::Preferred] {
            let rules = rules(mode);
            let fast = super::review(review, &rules, &selector);
            let slow = review_as_json(review, &rules, &selector);
            match (fast, slow) {
                (Ok(fast), Ok(slow)) => {
                    assert_eq!(fast.body, slow.body);
                    assert_eq!(fast.decision, slow.decision);
                    assert_eq!(
                        (fast.uid, fast.namespace, fast.name),
                        (slow.uid, slow.namespace, slow.name)
                    );
                }
                (fast, slow) => assert_eq!(fast.unwrap_err(), slow.unwrap_err()),
            }
            let (Some(view), Some(full)) = (&view, &full) else {
                continue;
            };
            let expected = mutation::mutate(full, &rules);
            assert_eq!(mutation::mutate(view, &rules), expected, "{full}");
            let typed = serde_json::from_slice::<ReviewIn<PodView>>(review).ok();
            if let Some(pod) = typed.and_then(|t| t.request).and_then(|r| r.object) {
                assert_eq!(mutation::mutate_view(pod, &rules), expected, "{full}");
            }
        }
        if let (Some(view), Some(full)) = (&view, &full) {
            assert_eq!(
                view.pointer("/metadata/generateName"),
                full.pointer("/metadata/generateName")
            );
        }
        typed.is_some()
    }

    fn wrapped(pod: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": "CREATE", "namespace": "demo-1", "object": pod},
        }))
        .unwrap()
    }

    #[test]
    fn the_pod_view_decides_as_the_whole_pod_on_every_fixture() {
        for name in [
            "pod-create.json",
            "pod-create-large.json",
            "pod-create-skip.json",
            "pod-create-kube-system.json",
            "pod-create-dry-run.json",
            "pod-update.json",
            "configmap-create.json",
        ] {
            // Every fixture is what an API server sends: the typed view reads it.
            assert!(assert_same_decision(&fixture(name)), "{name}");
        }
    }

    #[test]
    fn the_pod_view_keeps_every_shape_the_mutation_looks_at() {
        let term =
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]});
        for pod in [
            json!(null),
            json!("a string"),
            json!([1, 2]),
            json!(7),
            json!(1.5),
            json!(true),
            json!({}),
            json!({"metadata": null, "spec": null}),
            json!({"metadata": "x", "spec": {}}),
            json!({"metadata": {"annotations": null}, "spec": []}),
            json!({"metadata": {"annotations": ["x"]}, "spec": {}}),
            json!({"metadata": {"annotations": {"warmpool.io/skip": "true"}}, "spec": {}}),
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}, "spec": {}}),
            json!({"metadata": {"annotations": {"warmpool.io/injected": "tolerations"}}, "spec": {}}),
            json!({"metadata": {"annotations": {"a": "b", "warmpool.io/injected": 3}}, "spec": {}}),
            json!({"metadata": {"annotations": {"a": "b"}}, "spec": {}}),
            json!({"metadata": {"annotations": {}}, "spec": {}}),
            json!({"metadata": {"annotations": {"warmpool.io/skip": "false", "kubernetes.io/config.mirror": null}}, "spec": {}}),
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u", "controller": true, "blockOwnerDeletion": true}]}, "spec": {}}),
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": true}, {"kind": "DaemonSet", "name": "ds", "controller": false}]}, "spec": {}}),
            json!({"metadata": {"ownerReferences": [1, "x", null, [], {"kind": "DaemonSet", "controller": true}]}, "spec": {}}),
            json!({"metadata": {"ownerReferences": {"kind": "DaemonSet", "controller": true}}, "spec": {}}),
            json!({"metadata": {"ownerReferences": null}, "spec": {}}),
            json!({"spec": {"nodeName": "n1", "containers": [{"name": "c"}]}}),
            json!({"spec": {"nodeName": ""}}),
            json!({"spec": {"nodeSelector": {"workload-type": "other"}}}),
            json!({"spec": {"nodeSelector": "x"}}),
            json!({"spec": {"affinity": null}}),
            json!({"spec": {"affinity": 3}}),
            json!({"spec": {"affinity": {"podAntiAffinity": {"x": 1}}}}),
            json!({"spec": {"affinity": {"nodeAffinity": null}}}),
            json!({"spec": {"affinity": {"nodeAffinity": [1]}}}),
            json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term, {}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": term}],
            }}}}),
            json!({"spec": {"tolerations": null}}),
            json!({"spec": {"tolerations": {"a": 1}}}),
            json!({"spec": {"tolerations": [{"key": "workload-type", "value": "cargocats", "effect": "NoSchedule"}]}}),
        ] {
            let _ = assert_same_decision(&wrapped(pod));
        }
    }

    #[test]
    fn escaped_and_repeated_keys_read_as_the_whole_pod_reads_them() {
        let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "object": {"sp\u0065c": {"nodeName": "a"},
            "spec": {"nodeName": "b", "nodeName": "c"}, "metadata": {"x": 1}, "metadata": {}}}}"#;
        // Repeated known keys: the typed view refuses them, the JSON reading keeps the last.
        assert!(!assert_same_decision(body));
    }

    /// The reference for [`answer`]: the response as serde derives it.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ReviewOut<'a> {
        api_version: &'a str,
        kind: &'static str,
        response: ResponseOut<'a>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ResponseOut<'a> {
        uid: &'a str,
        allowed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch_type: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    }

    #[test]
    fn the_answer_is_what_serde_writes() {
        let patch = br#"[{"op":"add","path":"/spec/tolerations/-","value":{"key":"k"}}]"#;
        let engine = &base64::engine::general_purpose::STANDARD;
        for api_version in API_VERSIONS {
            for uid in [
                "705ab4f5-6393-11e8-b7cc-42010a800002",
                "",
                "q\"u\\o\nté\u{1}",
            ] {
                for patch in [None, Some(&patch[..]), Some(&b""[..])] {
                    for warnings in [
                        vec![],
                        vec!["warmpool: a \"reason\"".to_owned(), "b".into()],
                    ] {
                        let expected = serde_json::to_vec(&ReviewOut {
                            api_version,
                            kind: "AdmissionReview",
                            response: ResponseOut {
                                uid,
                                allowed: true,
                                patch_type: patch.map(|_| "JSONPatch"),
                                patch: patch.map(|p| engine.encode(p)),
                                warnings: warnings.clone(),
                            },
                        })
                        .unwrap();
                        let written = answer(api_version, uid, patch, &warnings).unwrap();
                        assert_eq!(
                            String::from_utf8(written).unwrap(),
                            String::from_utf8(expected).unwrap()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_json_outside_the_view_is_still_malformed() {
        let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "object": {"spec": {"containers": [1,]}}}}"#;
        let config = Config::default();
        let selector = TenantSelector::new(&config.tenants.namespace_patterns, None).unwrap();
        let error = review(body, &Rules::from_config(&config), &selector).unwrap_err();
        assert!(matches!(error, ReviewError::Malformed(_)), "{error:?}");
    }
}
