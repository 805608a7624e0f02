//! Manifests: which objects hold pods, and what the webhook would make of each. Documents in,
//! pods and pod templates out; every decision is the webhook's own [`mutate`].
//!
//! A Pod is decided as it is. A workload's pod template is first turned into the Pod its
//! controller would create from it (the template's labels, annotations, finalizers and spec, the
//! namespace, and the controller's owner reference, so that the decision can see who owns the
//! pod); the patch for that pod is then moved under the template. The document so shows the
//! template every pod of the workload would be admitted with. [`yaml`] reads and writes the
//! documents as kubectl does.

pub mod yaml;

use json_patch::{
    AddOperation, CopyOperation, MoveOperation, Patch, PatchOperation, RemoveOperation,
    ReplaceOperation, TestOperation,
};
use jsonptr::{Pointer, PointerBuf};
use serde_json::{Map, Value, json};

use crate::core::mutation::{Mutation, Rules, mutate};

/// The object that owns a workload's pods, as its controller writes their owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub api_version: &'static str,
    pub kind: &'static str,
}

/// Where an object keeps the pod it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodHolder {
    /// The object is a Pod.
    Pod,
    /// A controller makes the object's pods from the template at `at` (a JSON pointer), and
    /// `owner` owns them.
    Template { at: &'static str, owner: Owner },
}

const SPEC_TEMPLATE: &str = "/spec/template";
const CRONJOB_TEMPLATE: &str = "/spec/jobTemplate/spec/template";

/// Which kinds hold a pod, and where. `api_version` is checked when given (a `Job` of another
/// API group is not a batch Job); without it the kind alone decides.
pub fn pod_holder(api_version: Option<&str>, kind: &str) -> Option<PodHolder> {
    let group = api_version.map(|v| v.rsplit_once('/').map_or("", |(group, _)| group));
    let in_group = |groups: &[&str]| group.is_none_or(|g| groups.contains(&g));
    let template = |at, api_version, kind| {
        Some(PodHolder::Template {
            at,
            owner: Owner { api_version, kind },
        })
    };
    match kind {
        "Pod" if in_group(&[""]) => Some(PodHolder::Pod),
        // A Deployment's pods belong to its ReplicaSets.
        "Deployment" if in_group(&["apps", "extensions"]) => {
            template(SPEC_TEMPLATE, "apps/v1", "ReplicaSet")
        }
        "ReplicaSet" if in_group(&["apps", "extensions"]) => {
            template(SPEC_TEMPLATE, "apps/v1", "ReplicaSet")
        }
        "StatefulSet" if in_group(&["apps"]) => template(SPEC_TEMPLATE, "apps/v1", "StatefulSet"),
        "DaemonSet" if in_group(&["apps", "extensions"]) => {
            template(SPEC_TEMPLATE, "apps/v1", "DaemonSet")
        }
        "ReplicationController" if in_group(&[""]) => {
            template(SPEC_TEMPLATE, "v1", "ReplicationController")
        }
        "Job" if in_group(&["batch"]) => template(SPEC_TEMPLATE, "batch/v1", "Job"),
        // A CronJob's pods belong to the Jobs it starts.
        "CronJob" if in_group(&["batch"]) => template(CRONJOB_TEMPLATE, "batch/v1", "Job"),
        _ => None,
    }
}

/// `/spec/template` as `spec.template`, for messages.
pub fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// A Kubernetes object of a document: the document itself, or an item of a `List`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Where the object is in its document (the root, or `/items/2`).
    pub pointer: PointerBuf,
    pub kind: String,
    pub name: Option<String>,
    pub holder: Option<PodHolder>,
}

impl Object {
    /// `Deployment/web`, `Pod/web-*` for a generated name, `Pod (unnamed)`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{}/{name}", self.kind),
            None => format!("{} (unnamed)", self.kind),
        }
    }
}

/// Why a document is not something to admit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{at} is {found}, not a Kubernetes object; each document must be a mapping with apiVersion and kind"
    )]
    NotAnObject { at: String, found: &'static str },
    #[error("{at} has no `kind`; each object needs apiVersion and kind")]
    NoKind { at: String },
    #[error("{at}: `items` of a {kind} must be a list")]
    BadItems { at: String, kind: String },
    #[error(
        "internal error: the webhook's patch for {object} does not fit its document ({reason})"
    )]
    Patch { object: String, reason: String },
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn at(pointer: &Pointer) -> String {
    if pointer.is_root() {
        "the document".to_owned()
    } else {
        // `/items/2/items/0` as `items[2].items[0]`.
        let mut out = String::new();
        for token in pointer.tokens() {
            let token = token.decoded();
            if token.chars().all(|c| c.is_ascii_digit()) {
                out.push_str(&format!("[{token}]"));
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&token);
            }
        }
        out
    }
}

/// Every object of a document, `List` items (and items of `PodList` and the like) in place of
/// their list. Items of a typed list that carry no kind take it from the list (`PodList` items
/// are Pods), as kubectl does.
pub fn objects(doc: &Value) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    collect(doc, PointerBuf::new(), None, &mut out)?;
    Ok(out)
}

fn collect(
    value: &Value,
    pointer: PointerBuf,
    inherited: Option<(Option<&str>, &str)>,
    out: &mut Vec<Object>,
) -> Result<(), ManifestError> {
    let Some(map) = value.as_object() else {
        return Err(ManifestError::NotAnObject {
            at: at(&pointer),
            found: describe(value),
        });
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .or(inherited.and_then(|(v, _)| v));
    let kind = match (map.get("kind").and_then(Value::as_str), inherited) {
        (Some(kind), _) if !kind.is_empty() => kind,
        (_, Some((_, kind))) => kind,
        _ => return Err(ManifestError::NoKind { at: at(&pointer) }),
    };
    let items = map.get("items");
    let is_list = kind == "List" || (kind.ends_with("List") && items.is_some_and(Value::is_array));
    if is_list {
        let items = match items {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(items)) => items.as_slice(),
            Some(_) => {
                return Err(ManifestError::BadItems {
                    at: at(&pointer),
                    kind: kind.to_owned(),
                });
            }
        };
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        for (i, item) in items.iter().enumerate() {
            let mut item_pointer = pointer.clone();
            item_pointer.push_back("items");
            item_pointer.push_back(i);
            collect(item, item_pointer, item_kind.map(|k| (api_version, k)), out)?;
        }
        return Ok(());
    }
    let metadata = map.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            metadata
                .and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(|n| format!("{n}*"))
        });
    out.push(Object {
        pointer,
        kind: kind.to_owned(),
        name,
        holder: pod_holder(api_version, kind),
    });
    Ok(())
}

/// The Pod a controller `owner` creates from `template` for `object` in `namespace`: the
/// template's labels, annotations, finalizers and spec, a generated name, and the controller's
/// owner reference (`controller: true`). Nothing else a controller may add (a DaemonSet's node
/// pin, for one) is there: it is not in the template the result is written back to.
pub fn pod_from_template(
    template: &Value,
    object: &Object,
    owner: Owner,
    namespace: &str,
) -> Result<Value, String> {
    let Some(template) = template.as_object() else {
        return Err(format!("its pod template is {}", describe(template)));
    };
    let template_metadata = match template.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(format!(
                "the metadata of its pod template is {}",
                describe(other)
            ));
        }
    };
    let owner_name = object
        .name
        .as_deref()
        .map(|n| n.trim_end_matches('*'))
        .unwrap_or_default();
    let mut metadata = Map::new();
    if !owner_name.is_empty() {
        metadata.insert("generateName".into(), json!(format!("{owner_name}-")));
    }
    metadata.insert("namespace".into(), json!(namespace));
    for key in ["labels", "annotations", "finalizers"] {
        if let Some(v) = template_metadata.and_then(|m| m.get(key)) {
            metadata.insert(key.into(), v.clone());
        }
    }
    metadata.insert(
        "ownerReferences".into(),
        json!([{
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner_name,
            "uid": "",
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
    );
    let mut pod = Map::new();
    pod.insert("apiVersion".into(), json!("v1"));
    pod.insert("kind".into(), json!("Pod"));
    pod.insert("metadata".into(), Value::Object(metadata));
    if let Some(spec) = template.get("spec") {
        pod.insert("spec".into(), spec.clone());
    }
    Ok(Value::Object(pod))
}

/// What admission would do for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Neither a Pod nor a workload with a pod template: left as it is.
    PassThrough,
    /// A workload whose pod template cannot be made into a pod: left as it is, for this reason.
    NoPod(String),
    /// The webhook's decision for the pod, and the patch of the document that shows it (empty
    /// when skipped or when there is nothing to add).
    Decided { mutation: Mutation, patch: Patch },
}

/// One object and what admission would do for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub object: Object,
    pub admission: Admission,
}

/// Runs the webhook's decision for every pod and pod template of `doc`, as if created in
/// `namespace`, and returns the document as it would be admitted.
pub fn admit(
    doc: &Value,
    namespace: &str,
    rules: &Rules,
) -> Result<(Value, Vec<Outcome>), ManifestError> {
    let mut admitted = doc.clone();
    let mut outcomes = Vec::new();
    for object in objects(doc)? {
        let admission = match object.holder {
            None => Admission::PassThrough,
            Some(PodHolder::Pod) => {
                let pod = doc.pointer(object.pointer.as_str()).unwrap_or(&Value::Null);
                let mutation = mutate(pod, rules);
                let patch = rebase(&mutation.patch(), &object.pointer);
                Admission::Decided { mutation, patch }
            }
            Some(PodHolder::Template { at, owner }) => {
                let base = object.pointer.concat(template_pointer(at));
                match doc.pointer(base.as_str()) {
                    None | Some(Value::Null) => {
                        Admission::NoPod(format!("it has no pod template at {}", dotted(at)))
                    }
                    Some(template) => {
                        match pod_from_template(template, &object, owner, namespace) {
                            Err(why) => Admission::NoPod(why),
                            Ok(pod) => {
                                let mutation = mutate(&pod, rules);
                                let has_metadata =
                                    template.get("metadata").is_some_and(Value::is_object);
                                let patch = template_patch(&mutation.patch(), &base, has_metadata)
                                    .map_err(|reason| ManifestError::Patch {
                                        object: object.label(),
                                        reason,
                                    })?;
                                Admission::Decided { mutation, patch }
                            }
                        }
                    }
                }
            }
        };
        if let Admission::Decided { patch, .. } = &admission {
            json_patch::patch(&mut admitted, patch).map_err(|e| ManifestError::Patch {
                object: object.label(),
                reason: e.to_string(),
            })?;
        }
        outcomes.push(Outcome { object, admission });
    }
    Ok((admitted, outcomes))
}

fn template_pointer(at: &'static str) -> &'static Pointer {
    // The constants above are valid pointers; the root is the safe fallback.
    Pointer::parse(at).unwrap_or(Pointer::root())
}

/// The same operations, on the object at `base` of a larger document.
fn rebase(patch: &Patch, base: &Pointer) -> Patch {
    Patch(patch.iter().map(|op| rebase_op(op, base)).collect())
}

fn rebase_op(op: &PatchOperation, base: &Pointer) -> PatchOperation {
    match op {
        PatchOperation::Add(o) => PatchOperation::Add(AddOperation {
            path: base.concat(&o.path),
            value: o.value.clone(),
        }),
        PatchOperation::Remove(o) => PatchOperation::Remove(RemoveOperation {
            path: base.concat(&o.path),
        }),
        PatchOperation::Replace(o) => PatchOperation::Replace(ReplaceOperation {
            path: base.concat(&o.path),
            value: o.value.clone(),
        }),
        PatchOperation::Move(o) => PatchOperation::Move(MoveOperation {
            from: base.concat(&o.from),
            path: base.concat(&o.path),
        }),
        PatchOperation::Copy(o) => PatchOperation::Copy(CopyOperation {
            from: base.concat(&o.from),
            path: base.concat(&o.path),
        }),
        PatchOperation::Test(o) => PatchOperation::Test(TestOperation {
            path: base.concat(&o.path),
            value: o.value.clone(),
        }),
    }
}

/// A pod's patch moved under the template at `base`. Only the parts of the pod that come from
/// the template (`spec`, and the labels, annotations and finalizers of `metadata`) can be
/// patched there; `metadata` is created first when the template has none.
fn template_patch(patch: &Patch, base: &Pointer, has_metadata: bool) -> Result<Patch, String> {
    let mut touches_metadata = false;
    for op in patch.iter() {
        let mut paths = vec![op.path()];
        match op {
            PatchOperation::Move(o) => paths.push(&o.from),
            PatchOperation::Copy(o) => paths.push(&o.from),
            _ => {}
        }
        for path in paths {
            let mut tokens = path.tokens().map(|t| t.decoded().into_owned());
            match (tokens.next().as_deref(), tokens.next().as_deref()) {
                (Some("spec"), _) => {}
                (Some("metadata"), Some("labels" | "annotations" | "finalizers")) => {
                    touches_metadata = true;
                }
                _ => {
                    return Err(format!(
                        "it changes {path}, which is not part of a pod template"
                    ));
                }
            }
        }
    }
    let mut ops = Vec::with_capacity(patch.len() + 1);
    if touches_metadata && !has_metadata {
        ops.push(PatchOperation::Add(AddOperation {
            path: base.concat(Pointer::parse("/metadata").unwrap_or(Pointer::root())),
            value: json!({}),
        }));
    }
    ops.extend(patch.iter().map(|op| rebase_op(op, base)));
    Ok(Patch(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::mutation::{INJECTED_ANNOTATION, SkipReason};

    fn rules() -> Rules {
        Rules::from_config(&Config::default())
    }

    fn holder_at(api_version: Option<&str>, kind: &str) -> Option<(&'static str, &'static str)> {
        match pod_holder(api_version, kind)? {
            PodHolder::Pod => Some(("", "Pod")),
            PodHolder::Template { at, owner } => Some((at, owner.kind)),
        }
    }

    #[test]
    fn which_kinds_hold_pods_and_where() {
        for (api_version, kind, want) in [
            (Some("v1"), "Pod", Some(("", "Pod"))),
            (None, "Pod", Some(("", "Pod"))),
            (
                Some("apps/v1"),
                "Deployment",
                Some(("/spec/template", "ReplicaSet")),
            ),
            (
                Some("extensions/v1beta1"),
                "Deployment",
                Some(("/spec/template", "ReplicaSet")),
            ),
            (
                Some("apps/v1"),
                "ReplicaSet",
                Some(("/spec/template", "ReplicaSet")),
            ),
            (
                Some("apps/v1"),
                "StatefulSet",
                Some(("/spec/template", "StatefulSet")),
            ),
            (
                Some("apps/v1"),
                "DaemonSet",
                Some(("/spec/template", "DaemonSet")),
            ),
            (
                Some("v1"),
                "ReplicationController",
                Some(("/spec/template", "ReplicationController")),
            ),
            (Some("batch/v1"), "Job", Some(("/spec/template", "Job"))),
            (
                Some("batch/v1"),
                "CronJob",
                Some(("/spec/jobTemplate/spec/template", "Job")),
            ),
            (
                Some("batch/v1beta1"),
                "CronJob",
                Some(("/spec/jobTemplate/spec/template", "Job")),
            ),
            (
                None,
                "CronJob",
                Some(("/spec/jobTemplate/spec/template", "Job")),
            ),
            // Same kind, another API group: not ours to read.
            (Some("batch.volcano.sh/v1alpha1"), "Job", None),
            (Some("example.com/v1"), "Pod", None),
            (Some("apps/v1"), "Pod", None),
            (Some("v1"), "Service", None),
            (Some("v1"), "PodTemplate", None),
            (Some("v1"), "List", None),
        ] {
            assert_eq!(holder_at(api_version, kind), want, "{api_version:?} {kind}");
        }
        assert_eq!(dotted(CRONJOB_TEMPLATE), "spec.jobTemplate.spec.template");
    }

    #[test]
    fn objects_of_documents_and_lists() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"generateName": "svc-"}},
            {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "apps/v1", "kind": "Deployment"}]},
        ]});
        let got: Vec<(String, String, bool)> = objects(&list)
            .unwrap()
            .into_iter()
            .map(|o| (o.pointer.to_string(), o.label(), o.holder.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/items/0".into(), "Pod/a".into(), true),
                ("/items/1".into(), "Service/svc-*".into(), false),
                (
                    "/items/2/items/0".into(),
                    "Deployment (unnamed)".into(),
                    true
                ),
            ]
        );
        // A typed list from the API server: items without kind are of the list's kind.
        let pods =
            json!({"apiVersion": "v1", "kind": "PodList", "items": [{"metadata": {"name": "p"}}]});
        let o = objects(&pods).unwrap();
        assert_eq!(
            (o[0].label(), o[0].holder),
            ("Pod/p".into(), Some(PodHolder::Pod))
        );
        assert_eq!(objects(&json!({"kind": "List"})).unwrap(), vec![]);
    }

    #[test]
    fn documents_that_are_not_objects() {
        for (doc, want) in [
            (
                json!([1]),
                "the document is a list, not a Kubernetes object",
            ),
            (json!("x"), "the document is a string"),
            (json!({"apiVersion": "v1"}), "the document has no `kind`"),
            (
                json!({"kind": "List", "items": [{"kind": "Pod"}, 3]}),
                "items[1] is a number",
            ),
            (
                json!({"kind": "List", "items": [{"metadata": {}}]}),
                "items[0] has no `kind`",
            ),
            (
                json!({"kind": "List", "items": {}}),
                "`items` of a List must be a list",
            ),
        ] {
            let err = objects(&doc).unwrap_err().to_string();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "x", "annotations": {"keep": "me"}},
            "spec": {"replicas": 2, "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}, "name": "ignored"},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            }}
        })
    }

    #[test]
    fn a_template_becomes_the_pod_its_controller_creates() {
        let doc = deployment();
        let object = &objects(&doc).unwrap()[0];
        let owner = Owner {
            api_version: "apps/v1",
            kind: "ReplicaSet",
        };
        let pod = pod_from_template(&doc["spec"]["template"], object, owner, "demo-1").unwrap();
        assert_eq!(
            pod,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "generateName": "web-", "namespace": "demo-1",
                    "labels": {"app": "web"}, "annotations": {"a": "b"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                        "uid": "", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            })
        );
        assert!(pod_from_template(&json!("x"), object, owner, "n").is_err());
        assert!(pod_from_template(&json!({"metadata": 1}), object, owner, "n").is_err());
    }

    #[test]
    fn a_daemonsets_pod_is_owned_by_the_daemonset() {
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"template": {"spec": {"containers": []}}}});
        let object = &objects(&ds).unwrap()[0];
        let Some(PodHolder::Template { owner, .. }) = object.holder else {
            panic!("{object:?}");
        };
        let pod = pod_from_template(&ds["spec"]["template"], object, owner, "demo-1").unwrap();
        assert_eq!(
            pod["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "",
                "controller": true, "blockOwnerDeletion": true}])
        );
    }

    #[test]
    fn the_patch_lands_under_the_template() {
        let doc = deployment();
        let (admitted, outcomes) = admit(&doc, "demo-1", &rules()).unwrap();
        let [outcome] = &outcomes[..] else {
            panic!("{outcomes:?}");
        };
        let Admission::Decided { mutation, patch } = &outcome.admission else {
            panic!("{outcome:?}");
        };
        assert!(matches!(mutation, Mutation::Patch { injected, .. } if !injected.is_empty()));
        assert!(
            patch
                .iter()
                .all(|op| op.path().as_str().starts_with("/spec/template/")),
            "{patch:?}"
        );
        let template = &admitted["spec"]["template"];
        assert!(template["spec"]["tolerations"].is_array(), "{admitted}");
        assert!(template["metadata"]["annotations"][INJECTED_ANNOTATION].is_string());
        // Nothing of the synthetic pod leaks into the template.
        assert_eq!(template["metadata"].get("ownerReferences"), None);
        assert_eq!(template["metadata"].get("namespace"), None);
        assert_eq!(template["metadata"]["name"], "ignored");
        // Everything outside the template is as it was.
        let mut outside = admitted.clone();
        outside["spec"]["template"] = Value::Null;
        let mut before = doc.clone();
        before["spec"]["template"] = Value::Null;
        assert_eq!(outside, before);
        // And a second pass adds nothing.
        let (again, outcomes) = admit(&admitted, "demo-1", &rules()).unwrap();
        assert_eq!(again, admitted);
        assert!(
            matches!(&outcomes[0].admission, Admission::Decided { patch, .. } if patch.is_empty())
        );
    }

    #[test]
    fn a_template_without_metadata_gets_one_when_needed() {
        let job = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        let (admitted, _) = admit(&job, "demo-1", &rules()).unwrap();
        let template = &admitted["spec"]["jobTemplate"]["spec"]["template"];
        assert!(
            template["metadata"]["annotations"][INJECTED_ANNOTATION].is_string(),
            "{admitted}"
        );
        assert_eq!(template["metadata"].as_object().map(Map::len), Some(1));
    }

    #[test]
    fn pods_and_list_items_are_patched_in_place() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}},
        ]});
        let (admitted, outcomes) = admit(&list, "demo-1", &rules()).unwrap();
        assert_eq!(outcomes[0].admission, Admission::PassThrough);
        let Admission::Decided { patch, .. } = &outcomes[1].admission else {
            panic!("{outcomes:?}");
        };
        assert!(
            patch
                .iter()
                .all(|op| op.path().as_str().starts_with("/items/1/"))
        );
        assert_eq!(admitted["items"][0], list["items"][0]);
        // The item is patched exactly as the webhook patches the pod.
        let mut pod = list["items"][1].clone();
        json_patch::patch(&mut pod, &mutate(&list["items"][1], &rules()).patch()).unwrap();
        assert_eq!(admitted["items"][1], pod);
    }

    #[test]
    fn unusable_templates_and_skips_are_reported_not_fatal() {
        for (doc, want) in [
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {}}),
                "no pod template at spec.template",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": []}}),
                "is a list",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
                "no pod template",
            ),
        ] {
            let (admitted, outcomes) = admit(&doc, "demo-1", &rules()).unwrap();
            assert_eq!(admitted, doc);
            assert!(
                matches!(&outcomes[0].admission, Admission::NoPod(why) if why.contains(want)),
                "{outcomes:?}"
            );
        }
        let bound = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"metadata": {"annotations": {"warmpool.io/skip": "true"}}, "spec": {}}}});
        let (admitted, outcomes) = admit(&bound, "demo-1", &rules()).unwrap();
        assert_eq!(admitted, bound);
        assert!(matches!(
            &outcomes[0].admission,
            Admission::Decided { mutation: Mutation::Skip(SkipReason::OptedOut), patch } if patch.is_empty()
        ));
        // A template without spec is the webhook's to judge: an unexpected shape.
        let nospec =
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"template": {}}});
        let (_, outcomes) = admit(&nospec, "demo-1", &rules()).unwrap();
        assert!(matches!(
            &outcomes[0].admission,
            Admission::Decided {
                mutation: Mutation::Skip(SkipReason::UnexpectedShape(_)),
                ..
            }
        ));
    }

    #[test]
    fn template_patches_outside_the_template_are_refused() {
        let base = Pointer::parse("/spec/template").unwrap();
        let patch: Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/ownerReferences/-", "value": {}}
        ]))
        .unwrap();
        assert!(template_patch(&patch, base, true).is_err());
        let patch: Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/spec/x", "value": 1},
            {"op": "add", "path": "/metadata/labels/a", "value": "b"}
        ]))
        .unwrap();
        let moved = template_patch(&patch, base, false).unwrap();
        assert_eq!(
            serde_json::to_value(&moved).unwrap(),
            json!([
                {"op": "add", "path": "/spec/template/metadata", "value": {}},
                {"op": "add", "path": "/spec/template/spec/x", "value": 1},
                {"op": "add", "path": "/spec/template/metadata/labels/a", "value": "b"}
            ])
        );
    }
}
