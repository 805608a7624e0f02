//! AdmissionReview in, AdmissionReview out. Pure: bytes and the rules in, the response bytes and
//! what was decided (for logs and metrics) out.
//!
//! Only the fields the decision needs are read; the rest of the review (oldObject, userInfo,
//! managedFields…) is skipped by the parser rather than built into objects. kube-core's
//! `AdmissionReview<DynamicObject>` would build all of it for every pod created. Of the pod
//! itself only what [`mutation::mutate`] reads is kept (see [`POD_VIEW`]): containers, volumes,
//! managedFields and the like are checked for JSON syntax and dropped, so a large pod costs
//! little more than a small one.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::mutation::{self, Injected, Mutation, Rules, SkipReason};
use crate::tenant::TenantSelector;

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Gvk<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(default, deserialize_with = "pod_view")]
    object: Option<Value>,
}

/// Which members of a JSON object are kept: all of a value, or of an object only the named
/// members (each with its own rule). A value that is not an object is kept whole, so that the
/// mutation sees the same shape, and skips for the same reason, as with the full pod.
enum Keep {
    All,
    Only(&'static [(&'static str, Keep)]),
    /// Of an array, each element by this rule.
    Each(&'static Keep),
}

/// The parts of a pod that [`mutation::mutate`] and [`review`] read: the three annotations it
/// looks at (skip, mirror, injected; the annotations object itself stays, maybe empty, since the
/// patch's path depends on whether it exists), `generateName` (for logs), and in the spec
/// `nodeName`, `nodeSelector`, `affinity.nodeAffinity` and `tolerations`; of each owner reference
/// its `kind`, `controller` and `name` (a DaemonSet's pods are pinned to their node). Keep it in step with
/// `mutation.rs`; the unit tests below compare the two decisions on every fixture and shape.
static POD_VIEW: Keep = Keep::Only(&[
    (
        "metadata",
        Keep::Only(&[
            (
                "annotations",
                Keep::Only(&[
                    (mutation::SKIP_ANNOTATION, Keep::All),
                    (mutation::MIRROR_ANNOTATION, Keep::All),
                    (mutation::INJECTED_ANNOTATION, Keep::All),
                ]),
            ),
            ("generateName", Keep::All),
            (
                "ownerReferences",
                Keep::Each(&Keep::Only(&[
                    ("kind", Keep::All),
                    ("controller", Keep::All),
                    ("name", Keep::All),
                ])),
            ),
        ]),
    ),
    (
        "spec",
        Keep::Only(&[
            ("nodeName", Keep::All),
            ("nodeSelector", Keep::All),
            ("affinity", Keep::Only(&[("nodeAffinity", Keep::All)])),
            ("tolerations", Keep::All),
        ]),
    ),
]);

/// `request.object` as the part of it that the decision reads; JSON `null` is no object.
fn pod_view<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    match (&POD_VIEW).deserialize(deserializer)? {
        Value::Null => Ok(None),
        pod => Ok(Some(pod)),
    }
}

impl<'de> DeserializeSeed<'de> for &'static Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self {
            Keep::All => Value::deserialize(deserializer),
            Keep::Only(_) | Keep::Each(_) => deserializer.deserialize_any(self),
        }
    }
}

/// Builds the kept members of an object; any other value is built whole, as `Value` does.
impl<'de> Visitor<'de> for &'static Keep {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Keep::Only(members) = self else {
            return Value::deserialize(de::value::MapAccessDeserializer::new(map));
        };
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match members.iter().find(|(name, _)| *name == &*key.0) {
                Some((_, keep)) => {
                    let value = map.next_value_seed(keep)?;
                    kept.insert(key.0.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Keep::Each(each) = self else {
            return Value::deserialize(de::value::SeqAccessDeserializer::new(seq));
        };
        let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(value) = seq.next_element_seed(*each)? {
            kept.push(value);
        }
        Ok(Value::Array(kept))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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
    let input: ReviewIn =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let kind = input.kind.as_deref().unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(kind.to_owned()));
    }
    let api_version = input.api_version.as_deref().unwrap_or_default();
    let Some(api_version) = API_VERSIONS.iter().find(|v| **v == api_version) else {
        return Err(ReviewError::WrongVersion(api_version.to_owned()));
    };
    let request = input.request.ok_or(ReviewError::NoRequest)?;
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let name = request
        .name
        .as_deref()
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|o| o.pointer("/metadata/generateName"))
                .and_then(Value::as_str)
        })
        .unwrap_or_default();

    let decision = decide(&request, namespace, rules, excluded);
    let (patch, warnings, decision) = match decision {
        Err(ignored) => (None, Vec::new(), Decision::Ignored(ignored)),
        Ok(Mutation::Skip(reason)) => (
            None,
            vec![format!("warmpool: {reason}")],
            Decision::Skipped(reason),
        ),
        Ok(Mutation::Patch { patch, injected }) if patch.0.is_empty() => {
            let _ = injected;
            (None, Vec::new(), Decision::Unchanged)
        }
        Ok(Mutation::Patch { patch, injected }) => {
            // Sized for the usual patch (≈ 0.5 KiB) so that it is written without regrowing.
            let mut json = Vec::with_capacity(1024);
            serde_json::to_writer(&mut json, &patch)
                .map_err(|e| ReviewError::Malformed(e.to_string()))?;
            (Some(json), Vec::new(), Decision::Patched(injected))
        }
    };
    let body = answer(api_version, &request.uid, patch.as_deref(), &warnings)?;
    Ok(Reviewed {
        body,
        decision,
        uid: request.uid.into_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
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

/// The mutation for a request we act on, or why we do not act on it.
fn decide(
    request: &RequestIn,
    namespace: &str,
    rules: &Rules,
    excluded: &TenantSelector,
) -> Result<Mutation, &'static str> {
    let gvk = &request.kind;
    if !gvk.group.is_empty() || gvk.version != "v1" || gvk.kind != "Pod" {
        return Err("not a Pod");
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err("a subresource");
    }
    if request.operation != "CREATE" {
        return Err("not a CREATE");
    }
    if excluded.is_excluded(namespace).is_some() {
        return Err("namespace is never a tenant");
    }
    let Some(pod) = request.object.as_ref() else {
        return Err("no object in the request");
    };
    Ok(mutation::mutate(pod, rules))
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

    /// The pod as `review` reads it, and the whole pod.
    fn view_and_full(review: &[u8]) -> (Option<Value>, Option<Value>) {
        let input: ReviewIn = serde_json::from_slice(review).unwrap();
        let full: Value = serde_json::from_slice(review).unwrap();
        let full = full["request"]
            .get("object")
            .cloned()
            .filter(|o| !o.is_null());
        (input.request.unwrap().object, full)
    }

    fn assert_same_decision(review: &[u8]) {
        let (view, full) = view_and_full(review);
        assert_eq!(view.is_some(), full.is_some());
        let (Some(view), Some(full)) = (view, full) else {
            return;
        };
        for mode in [AffinityMode::Required, AffinityMode::Preferred] {
            let rules = rules(mode);
            assert_eq!(
                mutation::mutate(&view, &rules),
                mutation::mutate(&full, &rules),
                "{full}"
            );
        }
        assert_eq!(
            view.pointer("/metadata/generateName"),
            full.pointer("/metadata/generateName")
        );
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
            "pod-update.json",
            "configmap-create.json",
        ] {
            assert_same_decision(&fixture(name));
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
            assert_same_decision(&wrapped(pod));
        }
    }

    #[test]
    fn escaped_and_repeated_keys_read_as_the_whole_pod_reads_them() {
        let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "object": {"sp\u0065c": {"nodeName": "a"},
            "spec": {"nodeName": "b", "nodeName": "c"}, "metadata": {"x": 1}, "metadata": {}}}}"#;
        assert_same_decision(body);
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
