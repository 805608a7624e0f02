//! AdmissionReview in, AdmissionReview out. Pure: bytes and the rules in, the response bytes and
//! what was decided (for logs and metrics) out.
//!
//! Only the fields the decision needs are read; the rest of the review (oldObject, userInfo,
//! managedFields…) is skipped by the parser rather than built into objects. kube-core's
//! `AdmissionReview<DynamicObject>` would build all of it for every pod created.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    #[serde(default)]
    object: Option<Value>,
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
            let json =
                serde_json::to_vec(&patch).map_err(|e| ReviewError::Malformed(e.to_string()))?;
            (
                Some(base64::engine::general_purpose::STANDARD.encode(json)),
                Vec::new(),
                Decision::Patched(injected),
            )
        }
    };
    let out = ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &request.uid,
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
        },
    };
    let body = serde_json::to_vec(&out).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    Ok(Reviewed {
        body,
        decision,
        uid: request.uid.into_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
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
