//! What a tenant pod needs: node affinity to the warm pool and the pool's tolerations, as an
//! RFC 6902 patch. Pure: a pod (JSON) and the rules in, a patch and the reasons out.
//!
//! The pod is read as JSON rather than as a typed `Pod`, so fields this version of the API
//! types does not know survive untouched and a shape we do not understand is left alone.

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value, json};

use crate::config::{AffinityMode, Config};

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
}

impl Rules {
    pub fn from_config(config: &Config) -> Rules {
        Rules {
            label_key: config.pool.node_label.key.clone(),
            label_value: config.pool.node_label.value.clone(),
            mode: config.pool.affinity,
            tolerations: config
                .pool
                .tolerations
                .iter()
                .map(|t| serde_json::to_value(t.to_k8s()).unwrap_or(Value::Null))
                .filter(|v| !v.is_null())
                .collect(),
        }
    }

    /// `<key> In [<value>]`, the expression that selects warm nodes.
    fn pool_expression(&self) -> Value {
        json!({"key": self.label_key, "operator": "In", "values": [self.label_value]})
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
    if excludes_pool(spec, rules)? {
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
    toleration_ops(spec, rules, &mut ops)?;
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

/// The required node selector terms, if the pod has any.
fn required_terms(spec: &Map<String, Value>) -> Result<Option<&Vec<Value>>, SkipReason> {
    const AT: &str = "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution";
    let Some(required) = node_affinity(spec)?
        .map(|na| optional_object(na.get(REQUIRED), AT))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    optional_array(required.get("nodeSelectorTerms"), AT)
}

/// Whether no node carrying the pool label could ever satisfy the pod's own constraints:
/// then steering it to the pool would make it unschedulable, and we leave it alone.
fn excludes_pool(spec: &Map<String, Value>, rules: &Rules) -> Result<bool, SkipReason> {
    let selector = optional_object(spec.get("nodeSelector"), "/spec/nodeSelector")?;
    if let Some(v) = selector.and_then(|s| s.get(&rules.label_key))
        && v.as_str() != Some(rules.label_value.as_str())
    {
        return Ok(true);
    }
    let Some(terms) = required_terms(spec)? else {
        return Ok(false);
    };
    // Terms are ORed: the pool is excluded only when every term excludes it.
    Ok(!terms.is_empty() && terms.iter().all(|t| term_excludes_pool(t, rules)))
}

fn term_excludes_pool(term: &Value, rules: &Rules) -> bool {
    let Some(exprs) = term.get("matchExpressions").and_then(Value::as_array) else {
        return false;
    };
    exprs.iter().any(|e| expression_excludes_pool(e, rules))
}

fn expression_excludes_pool(expr: &Value, rules: &Rules) -> bool {
    if expr.get("key").and_then(Value::as_str) != Some(rules.label_key.as_str()) {
        return false;
    }
    let values: Vec<&str> = expr
        .get("values")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ours = rules.label_value.as_str();
    match expr.get("operator").and_then(Value::as_str) {
        Some("In") => !values.contains(&ours),
        Some("NotIn") => values.contains(&ours),
        Some("DoesNotExist") => true,
        Some(op @ ("Gt" | "Lt")) => {
            let (Ok(label), Some(Ok(bound))) = (
                ours.parse::<i64>(),
                values.first().map(|v| v.parse::<i64>()),
            ) else {
                return true;
            };
            if op == "Gt" {
                label <= bound
            } else {
                label >= bound
            }
        }
        _ => false,
    }
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
    let node_affinity = || Value::Object(Map::from_iter([(field.to_owned(), value())]));
    let Some(affinity) = optional_object(spec.get("affinity"), "/spec/affinity")? else {
        let value = json!({"nodeAffinity": node_affinity()});
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
    let expr = rules.pool_expression();
    let one_term = || json!({"nodeSelectorTerms": [{"matchExpressions": [expr.clone()]}]});
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
    let terms = optional_array(required.get("nodeSelectorTerms"), AT)?;
    let Some(terms) = terms.filter(|t| !t.is_empty()) else {
        // No terms at all is invalid for the API server anyway; give it the one it needs.
        let value = json!([{"matchExpressions": [expr]}]);
        ops.push((Injected::NodeAffinity, add(pointer(base), value)));
        return Ok(());
    };
    for (i, term) in terms.iter().enumerate() {
        let term = term.as_object().ok_or(SkipReason::UnexpectedShape(AT))?;
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
                ops.push((Injected::NodeAffinity, add(path, json!([expr.clone()]))));
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
    let preference = json!({"weight": PREFERRED_WEIGHT, "preference": {"matchExpressions": [rules.pool_expression()]}});
    let Some(na) = node_affinity_or_add(spec, PREFERRED, || json!([preference.clone()]), ops)?
    else {
        return Ok(());
    };
    const AT: &str = "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution";
    let base = ["spec", "affinity", "nodeAffinity", PREFERRED];
    match optional_array(na.get(PREFERRED), AT)? {
        None => {
            let path = pointer(base);
            ops.push((Injected::NodeAffinity, add(path, json!([preference]))));
        }
        Some(prefs) => {
            let present = prefs.iter().any(|p| {
                p.pointer("/preference/matchExpressions")
                    .and_then(Value::as_array)
                    .is_some_and(|es| es.iter().any(|e| is_pool_expression(e, rules)))
            });
            if !present {
                let path = pointer(base.into_iter().chain(["-"]));
                ops.push((Injected::NodeAffinity, add(path, preference)));
            }
        }
    }
    Ok(())
}

/// Tolerations are an unkeyed list: compare them as a set, with the API's defaults filled in.
fn same_toleration(a: &Value, b: &Value) -> bool {
    let field = |v: &Value, name: &str| -> String {
        match v.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    };
    let operator = |v: &Value| match field(v, "operator").as_str() {
        "" => "Equal".to_owned(),
        op => op.to_owned(),
    };
    operator(a) == operator(b)
        && ["key", "value", "effect", "tolerationSeconds"]
            .iter()
            .all(|f| field(a, f) == field(b, f))
}

fn toleration_ops(
    spec: &Map<String, Value>,
    rules: &Rules,
    ops: &mut Vec<PlannedOp>,
) -> Result<(), SkipReason> {
    let existing = optional_array(spec.get("tolerations"), "/spec/tolerations")?;
    let missing: Vec<&Value> = rules
        .tolerations
        .iter()
        .filter(|t| !existing.is_some_and(|e| e.iter().any(|x| same_toleration(x, t))))
        .collect();
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
            json!({"annotations": {INJECTED_ANNOTATION: value}}),
        ),
        (Some(_), None) => add(
            pointer(["metadata", "annotations"]),
            json!({INJECTED_ANNOTATION: value}),
        ),
        (Some(_), Some(_)) => add(
            pointer(["metadata", "annotations", INJECTED_ANNOTATION]),
            Value::String(value),
        ),
    };
    Ok(Some(op))
}
