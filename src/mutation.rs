//! What a tenant pod needs: node affinity to the warm pool and the pool's tolerations, as an
//! RFC 6902 patch. Pure: a pod (JSON) and the rules in, a patch and the reasons out.
//!
//! The pod is read as JSON rather than as a typed `Pod`, so fields this version of the API
//! types does not know survive untouched and a shape we do not understand is left alone.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelectorTerm, Toleration};
use serde_json::{Map, Value, json};

use crate::config::{AffinityMode, Config};
use crate::scheduling::{self, Placement};

/// Annotation listing what warmpool injected into a pod.
pub const INJECTED_ANNOTATION: &str = "warmpool.io/injected";
/// Annotation that makes warmpool leave a pod alone.
pub const SKIP_ANNOTATION: &str = "warmpool.io/skip";
/// Annotation the kubelet puts on mirror pods of static pods.
pub(crate) const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";
const PREFERRED_WEIGHT: i64 = 100;

/// What the webhook injects, compiled once from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    label_key: String,
    label_value: String,
    mode: AffinityMode,
    /// The tolerations as Kubernetes JSON, in configuration order.
    tolerations: Vec<Value>,
    /// The same, typed, for [`scheduling::covered`].
    typed_tolerations: Vec<Toleration>,
    /// What every review adds or compares, built once here rather than per pod: the pool
    /// expression `<key> In [<value>]`, the required term and the preference holding it, and
    /// the pool's label as the node [`scheduling::witness`] must carry.
    expression: Value,
    required_term: Value,
    preference: Value,
    pool: BTreeMap<String, String>,
}

impl Rules {
    pub fn from_config(config: &Config) -> Rules {
        let typed_tolerations: Vec<Toleration> =
            config.pool.tolerations.iter().map(|t| t.to_k8s()).collect();
        let (key, value) = (&config.pool.node_label.key, &config.pool.node_label.value);
        let expression = json!({"key": key, "operator": "In", "values": [value]});
        Rules {
            label_key: key.clone(),
            label_value: value.clone(),
            mode: config.pool.affinity,
            tolerations: typed_tolerations
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect(),
            typed_tolerations,
            required_term: json!({"nodeSelectorTerms": [{"matchExpressions": [expression.clone()]}]}),
            preference: json!({"weight": PREFERRED_WEIGHT, "preference": {"matchExpressions": [expression.clone()]}}),
            expression,
            pool: BTreeMap::from([(key.clone(), value.clone())]),
        }
    }

    /// The pool's node label, `(key, value)`.
    pub fn pool_label(&self) -> (&str, &str) {
        (&self.label_key, &self.label_value)
    }

    /// The tolerations this configuration injects.
    pub fn tolerations(&self) -> &[Toleration] {
        &self.typed_tolerations
    }

    pub fn mode(&self) -> AffinityMode {
        self.mode
    }
}

/// One thing warmpool may add to a pod; the names appear in the `warmpool.io/injected`
/// annotation and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Injected {
    NodeAffinity,
    Tolerations,
}

impl Injected {
    pub fn as_str(self) -> &'static str {
        match self {
            Injected::NodeAffinity => "node-affinity",
            Injected::Tolerations => "tolerations",
        }
    }
}

/// Why a pod was left as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("pod is already bound to node `{0}`")]
    AlreadyBound(String),
    #[error("pod is annotated {SKIP_ANNOTATION}=true")]
    OptedOut,
    #[error("mirror pods of static pods cannot be changed")]
    MirrorPod,
    #[error("pod is pinned to one node ({0}); steering it to the pool would leave it Pending")]
    NodePinned(String),
    #[error("the pod's own node affinity or nodeSelector excludes nodes labelled {0}")]
    ExcludesPool(String),
    #[error("unexpected shape at {0}; the pod is left unchanged")]
    UnexpectedShape(&'static str),
}

impl SkipReason {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::AlreadyBound(_) => "bound",
            SkipReason::OptedOut => "skip_annotation",
            SkipReason::MirrorPod => "mirror_pod",
            SkipReason::NodePinned(_) => "node_pinned",
            SkipReason::ExcludesPool(_) => "excludes_pool",
            SkipReason::UnexpectedShape(_) => "unexpected_shape",
        }
    }
}

/// The result of looking at one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Apply `patch`; `injected` is non-empty exactly when the patch is.
    Patch {
        patch: Patch,
        injected: Vec<Injected>,
    },
    /// Leave the pod alone, for this reason.
    Skip(SkipReason),
}

impl Mutation {
    /// The patch to send: empty when skipped or when there is nothing to add.
    pub fn patch(&self) -> Patch {
        match self {
            Mutation::Patch { patch, .. } => patch.clone(),
            Mutation::Skip(_) => Patch(Vec::new()),
        }
    }
}

/// Decides what `pod` needs. Never fails: anything unexpected becomes a `Skip`.
pub fn mutate(pod: &Value, rules: &Rules) -> Mutation {
    match plan(pod, rules) {
        Ok(ops) => {
            let mut injected: Vec<Injected> = ops.iter().map(|(what, _)| *what).collect();
            injected.sort();
            injected.dedup();
            let mut patch: Vec<PatchOperation> = ops.into_iter().map(|(_, op)| op).collect();
            if !injected.is_empty() {
                match annotation_op(pod, &injected) {
                    Ok(Some(op)) => patch.push(op),
                    Ok(None) => {}
                    Err(reason) => return Mutation::Skip(reason),
                }
            }
            Mutation::Patch {
                patch: Patch(patch),
                injected,
            }
        }
        Err(reason) => Mutation::Skip(reason),
    }
}

type PlannedOp = (Injected, PatchOperation);

fn plan(pod: &Value, rules: &Rules) -> Result<Vec<PlannedOp>, SkipReason> {
    let pod = pod
        .as_object()
        .ok_or(SkipReason::UnexpectedShape("the pod"))?;
    let annotations = optional_object(pod.get("metadata"), "/metadata")?
        .map(|m| optional_object(m.get("annotations"), "/metadata/annotations"))
        .transpose()?
        .flatten();
    if let Some(a) = annotations {
        if a.get(SKIP_ANNOTATION).and_then(Value::as_str) == Some("true") {
            return Err(SkipReason::OptedOut);
        }
        if a.contains_key(MIRROR_ANNOTATION) {
            return Err(SkipReason::MirrorPod);
        }
    }
    let spec =
        optional_object(pod.get("spec"), "/spec")?.ok_or(SkipReason::UnexpectedShape("/spec"))?;
    if let Some(node) = spec.get("nodeName").and_then(Value::as_str)
        && !node.is_empty()
    {
        return Err(SkipReason::AlreadyBound(node.to_owned()));
    }
    let placement = OwnedPlacement::read(spec)?;
    if let Some(pin) = node_pin(pod, &placement) {
        return Err(SkipReason::NodePinned(pin));
    }
    // With neither a nodeSelector nor required node affinity any node may carry the pool's
    // label, which is what `witness` would find, after copying the label into a node.
    let constrained = placement.node_selector.is_some()
        || placement.node_affinity.as_ref().is_some_and(|na| {
            na.required_during_scheduling_ignored_during_execution
                .is_some()
        });
    if constrained && scheduling::witness(&placement.view(), &rules.pool).is_none() {
        return Err(SkipReason::ExcludesPool(format!(
            "{}={}",
            rules.label_key, rules.label_value
        )));
    }
    let mut ops = Vec::new();
    match rules.mode {
        AffinityMode::Required => required_affinity_ops(spec, rules, &mut ops)?,
        AffinityMode::Preferred => preferred_affinity_ops(spec, rules, &mut ops)?,
    }
    toleration_ops(spec, &placement.tolerations, rules, &mut ops)?;
    Ok(ops)
}

/// `None` when absent or null, the object when it is one, a skip when it is anything else.
fn optional_object<'a>(
    v: Option<&'a Value>,
    at: &'static str,
) -> Result<Option<&'a Map<String, Value>>, SkipReason> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(SkipReason::UnexpectedShape(at)),
    }
}

fn optional_array<'a>(
    v: Option<&'a Value>,
    at: &'static str,
) -> Result<Option<&'a Vec<Value>>, SkipReason> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(SkipReason::UnexpectedShape(at)),
    }
}

// `json!` would copy each interpolated `Value` once more (through `to_value`); these build the
// patch's values from parts already owned.

/// `[item]`.
fn one(item: Value) -> Value {
    Value::Array(vec![item])
}

/// `{key: value}`.
fn object(key: &str, value: Value) -> Value {
    Value::Object(Map::from_iter([(key.to_owned(), value)]))
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

fn pointer<'t>(tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

fn node_affinity(spec: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, SkipReason> {
    optional_object(spec.get("affinity"), "/spec/affinity")?
        .map(|a| optional_object(a.get("nodeAffinity"), "/spec/affinity/nodeAffinity"))
        .transpose()
        .map(Option::flatten)
}

/// The scheduling-relevant parts of the spec, typed: what [`scheduling`] decides on. A shape
/// that does not deserialize would be refused by the API server too; we leave it alone.
struct OwnedPlacement {
    node_selector: Option<BTreeMap<String, String>>,
    node_affinity: Option<NodeAffinity>,
    tolerations: Vec<Toleration>,
}

impl OwnedPlacement {
    fn read(spec: &Map<String, Value>) -> Result<OwnedPlacement, SkipReason> {
        fn typed<T: serde::de::DeserializeOwned>(
            v: Option<&Value>,
            at: &'static str,
        ) -> Result<Option<T>, SkipReason> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => T::deserialize(v)
                    .map(Some)
                    .map_err(|_| SkipReason::UnexpectedShape(at)),
            }
        }
        // Shape-checked first, so a non-object says where.
        node_affinity(spec)?;
        let node_affinity = typed(
            spec.get("affinity").and_then(|a| a.get("nodeAffinity")),
            "/spec/affinity/nodeAffinity",
        )?;
        Ok(OwnedPlacement {
            node_selector: typed(spec.get("nodeSelector"), "/spec/nodeSelector")?,
            node_affinity,
            tolerations: typed(spec.get("tolerations"), "/spec/tolerations")?.unwrap_or_default(),
        })
    }

    fn view(&self) -> Placement<'_> {
        Placement {
            node_selector: self.node_selector.as_ref(),
            node_affinity: self.node_affinity.as_ref(),
            tolerations: &self.tolerations,
        }
    }
}

/// Why the pod can run on one node only, if it can: a DaemonSet's pod (its controller pins
/// each pod to its node), or required affinity whose every term names one node. The pool
/// expression would make such a pod unschedulable wherever that node is not warm.
fn node_pin(pod: &Map<String, Value>, placement: &OwnedPlacement) -> Option<String> {
    let owners = pod
        .get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array);
    if let Some(ds) = owners.into_iter().flatten().find(|o| {
        o.get("kind").and_then(Value::as_str) == Some("DaemonSet")
            && o.get("controller").and_then(Value::as_bool) == Some(true)
    }) {
        let name = ds.get("name").and_then(Value::as_str).unwrap_or_default();
        return Some(format!("owned by DaemonSet `{name}`"));
    }
    let terms = placement
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .as_slice();
    let pinned_to = |t: &NodeSelectorTerm| {
        t.match_fields.iter().flatten().find_map(|f| {
            let values = f.values.as_deref().unwrap_or_default();
            (f.key == "metadata.name" && f.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    };
    let nodes: Option<Vec<String>> = terms.iter().map(pinned_to).collect();
    let mut nodes = nodes.filter(|n| !n.is_empty())?;
    nodes.sort();
    nodes.dedup();
    Some(format!(
        "matchFields metadata.name In [{}]",
        nodes.join(", ")
    ))
}

fn is_empty_term(term: &Map<String, Value>) -> bool {
    let empty = |f: &str| {
        term.get(f)
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    };
    empty("matchExpressions") && empty("matchFields")
}

fn is_pool_expression(expr: &Value, rules: &Rules) -> bool {
    expr.get("key").and_then(Value::as_str) == Some(rules.label_key.as_str())
        && expr.get("operator").and_then(Value::as_str) == Some("In")
        && expr
            .get("values")
            .and_then(Value::as_array)
            .is_some_and(|vs| vs.len() == 1 && vs[0].as_str() == Some(rules.label_value.as_str()))
}

/// The pod's `nodeAffinity`, or, when it (or `affinity`) is missing, an op that adds it holding
/// `{field: value}`; `None` then means "done".
fn node_affinity_or_add<'a>(
    spec: &'a Map<String, Value>,
    field: &str,
    value: impl FnOnce() -> Value,
    ops: &mut Vec<PlannedOp>,
) -> Result<Option<&'a Map<String, Value>>, SkipReason> {
    let node_affinity = || object(field, value());
    let Some(affinity) = optional_object(spec.get("affinity"), "/spec/affinity")? else {
        let value = object("nodeAffinity", node_affinity());
        ops.push((
            Injected::NodeAffinity,
            add(pointer(["spec", "affinity"]), value),
        ));
        return Ok(None);
    };
    let na = optional_object(affinity.get("nodeAffinity"), "/spec/affinity/nodeAffinity")?;
    if na.is_none() {
        let path = pointer(["spec", "affinity", "nodeAffinity"]);
        ops.push((Injected::NodeAffinity, add(path, node_affinity())));
    }
    Ok(na)
}

fn required_affinity_ops(
    spec: &Map<String, Value>,
    rules: &Rules,
    ops: &mut Vec<PlannedOp>,
) -> Result<(), SkipReason> {
    let expr = &rules.expression;
    let one_term = || rules.required_term.clone();
    let Some(na) = node_affinity_or_add(spec, REQUIRED, one_term, ops)? else {
        return Ok(());
    };
    const AT: &str = "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution";
    let Some(required) = optional_object(na.get(REQUIRED), AT)? else {
        let path = pointer(["spec", "affinity", "nodeAffinity", REQUIRED]);
        ops.push((Injected::NodeAffinity, add(path, one_term())));
        return Ok(());
    };
    let base = [
        "spec",
        "affinity",
        "nodeAffinity",
        REQUIRED,
        "nodeSelectorTerms",
    ];
    // No terms at all matches no node: such a pod has been skipped as excluding the pool.
    let terms = optional_array(required.get("nodeSelectorTerms"), AT)?.map_or(&[][..], |t| t);
    for (i, term) in terms.iter().enumerate() {
        let term = term.as_object().ok_or(SkipReason::UnexpectedShape(AT))?;
        // An empty term matches no node; with the pool expression it would match pool nodes.
        if is_empty_term(term) {
            continue;
        }
        let index = i.to_string();
        let term_path = base.iter().copied().chain([index.as_str()]);
        match optional_array(term.get("matchExpressions"), AT)? {
            Some(exprs) if exprs.iter().any(|e| is_pool_expression(e, rules)) => {}
            Some(_) => {
                let path = pointer(term_path.chain(["matchExpressions", "-"]));
                ops.push((Injected::NodeAffinity, add(path, expr.clone())));
            }
            None => {
                let path = pointer(term_path.chain(["matchExpressions"]));
                ops.push((Injected::NodeAffinity, add(path, one(expr.clone()))));
            }
        }
    }
    Ok(())
}

fn preferred_affinity_ops(
    spec: &Map<String, Value>,
    rules: &Rules,
    ops: &mut Vec<PlannedOp>,
) -> Result<(), SkipReason> {
    let preference = &rules.preference;
    let Some(na) = node_affinity_or_add(spec, PREFERRED, || one(preference.clone()), ops)? else {
        return Ok(());
    };
    const AT: &str = "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution";
    let base = ["spec", "affinity", "nodeAffinity", PREFERRED];
    match optional_array(na.get(PREFERRED), AT)? {
        None => {
            let path = pointer(base);
            ops.push((Injected::NodeAffinity, add(path, one(preference.clone()))));
        }
        Some(prefs) => {
            let present = prefs.iter().any(|p| is_pool_preference(p, rules));
            if !present {
                let path = pointer(base.into_iter().chain(["-"]));
                ops.push((Injected::NodeAffinity, add(path, preference.clone())));
            }
        }
    }
    Ok(())
}

/// A preference that steers to the pool and to nothing else, and counts (weight above 0).
fn is_pool_preference(p: &Value, rules: &Rules) -> bool {
    let weight = p.get("weight").and_then(Value::as_i64).unwrap_or(0);
    let fields = p
        .pointer("/preference/matchFields")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let exprs = p
        .pointer("/preference/matchExpressions")
        .and_then(Value::as_array);
    weight > 0
        && !fields
        && exprs.is_some_and(|es| es.len() == 1 && is_pool_expression(&es[0], rules))
}

/// Adds each of the pool's tolerations that the pod's own do not already cover
/// ([`scheduling::covered`]: same key or a wildcard, a compatible operator and value, the
/// effect or all effects, no shorter `tolerationSeconds`).
fn toleration_ops(
    spec: &Map<String, Value>,
    existing: &[Toleration],
    rules: &Rules,
    ops: &mut Vec<PlannedOp>,
) -> Result<(), SkipReason> {
    let present = optional_array(spec.get("tolerations"), "/spec/tolerations")?;
    // The pod's own, borrowed; copied only when a later rule must also see an added one.
    let mut have = std::borrow::Cow::Borrowed(existing);
    let mut missing: Vec<&Value> = Vec::new();
    let wanted = rules.tolerations.iter().zip(&rules.typed_tolerations);
    let count = rules.typed_tolerations.len();
    for (i, (value, typed)) in wanted.enumerate() {
        if !scheduling::covered(&have, typed) {
            if i + 1 < count {
                have.to_mut().push(typed.clone());
            }
            missing.push(value);
        }
    }
    let existing = present;
    if missing.is_empty() {
        return Ok(());
    }
    match existing {
        None => {
            let value = Value::Array(missing.into_iter().cloned().collect());
            ops.push((
                Injected::Tolerations,
                add(pointer(["spec", "tolerations"]), value),
            ));
        }
        Some(_) => {
            for t in missing {
                let path = pointer(["spec", "tolerations", "-"]);
                ops.push((Injected::Tolerations, add(path, t.clone())));
            }
        }
    }
    Ok(())
}

/// Records what was injected, merged with what an earlier pass recorded.
fn annotation_op(pod: &Value, injected: &[Injected]) -> Result<Option<PatchOperation>, SkipReason> {
    let metadata = optional_object(pod.get("metadata"), "/metadata")?;
    let annotations = metadata
        .map(|m| optional_object(m.get("annotations"), "/metadata/annotations"))
        .transpose()?
        .flatten();
    let previous = annotations
        .and_then(|a| a.get(INJECTED_ANNOTATION))
        .and_then(Value::as_str);
    let mut items: Vec<&str> = previous
        .map(|p| p.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    items.extend(injected.iter().map(|i| i.as_str()));
    items.sort_unstable();
    items.dedup();
    let value = items.join(",");
    if previous == Some(value.as_str()) {
        return Ok(None);
    }
    let op = match (metadata, annotations) {
        (None, _) => add(
            pointer(["metadata"]),
            object(
                "annotations",
                object(INJECTED_ANNOTATION, Value::String(value)),
            ),
        ),
        (Some(_), None) => add(
            pointer(["metadata", "annotations"]),
            object(INJECTED_ANNOTATION, Value::String(value)),
        ),
        (Some(_), Some(_)) => add(
            pointer(["metadata", "annotations", INJECTED_ANNOTATION]),
            Value::String(value),
        ),
    };
    Ok(Some(op))
}
