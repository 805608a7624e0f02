//! What a tenant pod needs: node affinity to the warm pool and the pool's tolerations, as an
//! RFC 6902 patch. Pure: a pod (JSON) and the rules in, a patch and the reasons out.
//!
//! The pod is read as JSON rather than as a typed `Pod`, so fields this version of the API
//! types does not know survive untouched and a shape we do not understand is left alone.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{
    NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm, Toleration,
};
use serde_json::{Map, Value, json};

use crate::config::{AffinityMode, Config};
use crate::scheduling;

mod view;

pub use view::PodView;
pub(crate) use view::Str;
use view::{Facts, Placement};

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
    match Facts::from_value(pod) {
        Ok(facts) => decide(&facts, rules),
        Err(reason) => Mutation::Skip(reason),
    }
}

/// Decides what the pod of a typed view needs: the same decision as [`mutate`] on the same
/// pod's JSON. The webhook's path; a pod whose view does not deserialize goes to [`mutate`].
pub fn mutate_view(pod: PodView<'_>, rules: &Rules) -> Mutation {
    decide(&Facts::from_view(pod), rules)
}

fn decide(pod: &Facts, rules: &Rules) -> Mutation {
    match plan(pod, rules) {
        Ok(ops) => {
            let mut injected: Vec<Injected> = ops.iter().map(|(what, _)| *what).collect();
            injected.sort();
            injected.dedup();
            let mut patch: Vec<PatchOperation> = ops.into_iter().map(|(_, op)| op).collect();
            if !injected.is_empty()
                && let Some(op) = annotation_op(pod, &injected)
            {
                patch.push(op);
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

fn plan(pod: &Facts, rules: &Rules) -> Result<Vec<PlannedOp>, SkipReason> {
    if let Some(a) = &pod.annotations {
        if a.opted_out {
            return Err(SkipReason::OptedOut);
        }
        if a.mirror {
            return Err(SkipReason::MirrorPod);
        }
    }
    let spec = pod.spec.as_ref().map_err(Clone::clone)?;
    if let Some(node) = spec.node_name.as_deref()
        && !node.is_empty()
    {
        return Err(SkipReason::AlreadyBound(node.to_owned()));
    }
    let placement = spec.placement.as_ref().map_err(Clone::clone)?;
    if let Some(pin) = node_pin(pod.daemon_set.as_deref(), placement) {
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
        AffinityMode::Required => required_affinity_ops(placement, rules, &mut ops),
        AffinityMode::Preferred => preferred_affinity_ops(placement, rules, &mut ops),
    }
    toleration_ops(placement, rules, &mut ops);
    Ok(ops)
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

/// Why the pod can run on one node only, if it can: a DaemonSet's pod (its controller pins
/// each pod to its node), or required affinity whose every term names one node. The pool
/// expression would make such a pod unschedulable wherever that node is not warm.
fn node_pin(daemon_set: Option<&str>, placement: &Placement) -> Option<String> {
    if let Some(name) = daemon_set {
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

fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty)
}

fn is_pool_expression(expr: &NodeSelectorRequirement, rules: &Rules) -> bool {
    expr.key == rules.label_key
        && expr.operator == "In"
        && expr
            .values
            .as_deref()
            .is_some_and(|vs| vs.len() == 1 && vs[0] == rules.label_value)
}

/// The pod's `nodeAffinity`, or, when it (or `affinity`) is missing, an op that adds it holding
/// `{field: value}`; `None` then means "done".
fn node_affinity_or_add<'a>(
    placement: &'a Placement,
    field: &str,
    value: impl FnOnce() -> Value,
    ops: &mut Vec<PlannedOp>,
) -> Option<&'a NodeAffinity> {
    let node_affinity = || object(field, value());
    if !placement.affinity {
        let value = object("nodeAffinity", node_affinity());
        ops.push((
            Injected::NodeAffinity,
            add(pointer(["spec", "affinity"]), value),
        ));
        return None;
    }
    let na = placement.node_affinity.as_ref();
    if na.is_none() {
        let path = pointer(["spec", "affinity", "nodeAffinity"]);
        ops.push((Injected::NodeAffinity, add(path, node_affinity())));
    }
    na
}

fn required_affinity_ops(placement: &Placement, rules: &Rules, ops: &mut Vec<PlannedOp>) {
    let expr = &rules.expression;
    let one_term = || rules.required_term.clone();
    let Some(na) = node_affinity_or_add(placement, REQUIRED, one_term, ops) else {
        return;
    };
    let Some(required) = &na.required_during_scheduling_ignored_during_execution else {
        let path = pointer(["spec", "affinity", "nodeAffinity", REQUIRED]);
        ops.push((Injected::NodeAffinity, add(path, one_term())));
        return;
    };
    let base = [
        "spec",
        "affinity",
        "nodeAffinity",
        REQUIRED,
        "nodeSelectorTerms",
    ];
    // No terms at all matches no node: such a pod has been skipped as excluding the pool.
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        // An empty term matches no node; with the pool expression it would match pool nodes.
        if is_empty_term(term) {
            continue;
        }
        let index = i.to_string();
        let term_path = base.iter().copied().chain([index.as_str()]);
        match &term.match_expressions {
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
}

fn preferred_affinity_ops(placement: &Placement, rules: &Rules, ops: &mut Vec<PlannedOp>) {
    let preference = &rules.preference;
    let Some(na) = node_affinity_or_add(placement, PREFERRED, || one(preference.clone()), ops)
    else {
        return;
    };
    let base = ["spec", "affinity", "nodeAffinity", PREFERRED];
    match &na.preferred_during_scheduling_ignored_during_execution {
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
}

/// A preference that steers to the pool and to nothing else, and counts (weight above 0).
fn is_pool_preference(p: &PreferredSchedulingTerm, rules: &Rules) -> bool {
    let term = &p.preference;
    let fields = term.match_fields.as_ref().is_some_and(|f| !f.is_empty());
    p.weight > 0
        && !fields
        && term
            .match_expressions
            .as_ref()
            .is_some_and(|es| es.len() == 1 && is_pool_expression(&es[0], rules))
}

/// Adds each of the pool's tolerations that the pod's own do not already cover
/// ([`scheduling::covered`]: same key or a wildcard, a compatible operator and value, the
/// effect or all effects, no shorter `tolerationSeconds`).
fn toleration_ops(placement: &Placement, rules: &Rules, ops: &mut Vec<PlannedOp>) {
    let present = placement.tolerations.as_deref();
    // The pod's own, borrowed; copied only when a later rule must also see an added one.
    let mut have = std::borrow::Cow::Borrowed(present.unwrap_or_default());
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
    if missing.is_empty() {
        return;
    }
    match present {
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
}

/// Records what was injected, merged with what an earlier pass recorded.
fn annotation_op(pod: &Facts, injected: &[Injected]) -> Option<PatchOperation> {
    let previous = pod.annotations.as_ref().and_then(|a| a.injected.as_deref());
    let mut items: Vec<&str> = previous
        .map(|p| p.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    items.extend(injected.iter().map(|i| i.as_str()));
    items.sort_unstable();
    items.dedup();
    let value = items.join(",");
    if previous == Some(value.as_str()) {
        return None;
    }
    let op = match (pod.metadata, &pod.annotations) {
        (false, _) => add(
            pointer(["metadata"]),
            object(
                "annotations",
                object(INJECTED_ANNOTATION, Value::String(value)),
            ),
        ),
        (true, None) => add(
            pointer(["metadata", "annotations"]),
            object(INJECTED_ANNOTATION, Value::String(value)),
        ),
        (true, Some(_)) => add(
            pointer(["metadata", "annotations", INJECTED_ANNOTATION]),
            Value::String(value),
        ),
    };
    Some(op)
}
