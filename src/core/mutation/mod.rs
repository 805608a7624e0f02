//! What a tenant pod needs: node affinity to the warm pool and the pool's tolerations, as an
//! RFC 6902 patch. Pure: a pod (JSON) and the rules in, a patch and the reasons out.
//!
//! The pod is read as JSON rather than as a typed `Pod`, so fields this version of the API
//! types does not know survive untouched and a shape we do not understand is left alone.

pub mod scheduling;
use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{
    NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm, Toleration,
};
use serde_json::{Map, Value, json};

use crate::config::{AffinityMode, Config};

mod skip;
mod view;

pub use crate::core::mutation::skip::{INJECTED_ANNOTATION, SKIP_ANNOTATION, SkipReason};
pub(crate) use crate::core::mutation::view::Str;
use crate::core::mutation::view::{Facts, Placement};
pub use crate::core::mutation::view::{PodView, read_set};

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
    tolerations: Vec<Piece>,
    /// The same, typed, for [`scheduling::covered`].
    typed_tolerations: Vec<Toleration>,
    /// Every value a patch may add but the annotation, built (and written as JSON) once here
    /// rather than per pod: the pool expression `<key> In [<value>]`, in a list, the required
    /// term holding it and the preference, each also as the `nodeAffinity` and `affinity` that
    /// hold only it.
    expression: Piece,
    expressions: Piece,
    required_term: Piece,
    required_node_affinity: Piece,
    required_affinity: Piece,
    preference: Piece,
    preferences: Piece,
    preferred_node_affinity: Piece,
    preferred_affinity: Piece,
    /// The pool's label as the node [`scheduling::witness`] must carry.
    pool: BTreeMap<String, String>,
}

/// A value of the rules, and the same as compact JSON (what serde_json writes for it).
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    value: Value,
    json: Box<str>,
}

impl Piece {
    fn new(value: Value) -> Piece {
        let json = value.to_string().into_boxed_str();
        Piece { value, json }
    }
}

impl Rules {
    pub fn from_config(config: &Config) -> Rules {
        let typed_tolerations: Vec<Toleration> =
            config.pool.tolerations.iter().map(|t| t.to_k8s()).collect();
        let (key, value) = (&config.pool.node_label.key, &config.pool.node_label.value);
        let expression = json!({"key": key, "operator": "In", "values": [value]});
        let required_term = json!({"nodeSelectorTerms": [{"matchExpressions": [expression]}]});
        let preference = json!({
            "weight": PREFERRED_WEIGHT,
            "preference": {"matchExpressions": [expression]},
        });
        Rules {
            label_key: key.clone(),
            label_value: value.clone(),
            mode: config.pool.affinity,
            tolerations: typed_tolerations
                .iter()
                .map(|t| Piece::new(serde_json::to_value(t).unwrap_or(Value::Null)))
                .collect(),
            typed_tolerations,
            expressions: Piece::new(json!([expression])),
            expression: Piece::new(expression),
            required_node_affinity: Piece::new(json!({REQUIRED: required_term})),
            required_affinity: Piece::new(json!({"nodeAffinity": {REQUIRED: required_term}})),
            required_term: Piece::new(required_term),
            preferences: Piece::new(json!([preference])),
            preferred_node_affinity: Piece::new(json!({PREFERRED: [preference]})),
            preferred_affinity: Piece::new(json!({"nodeAffinity": {PREFERRED: [preference]}})),
            preference: Piece::new(preference),
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
    pub const ALL: [Injected; 2] = [Injected::NodeAffinity, Injected::Tolerations];

    pub fn as_str(self) -> &'static str {
        match self {
            Injected::NodeAffinity => "node-affinity",
            Injected::Tolerations => "tolerations",
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
/// pod's JSON.
pub fn mutate_view(pod: PodView<'_>, rules: &Rules) -> Mutation {
    decide(&Facts::from_view(pod), rules)
}

/// [`mutate_view`] with the patch written as JSON into `patch` (nothing written when there is
/// nothing to add), byte for byte what serde_json writes for [`Mutation::patch`], without
/// building the patch's values: the webhook's path. What was injected, or why the pod is left
/// alone.
pub fn mutate_view_json(
    pod: PodView<'_>,
    rules: &Rules,
    patch: &mut Vec<u8>,
) -> Result<Vec<Injected>, SkipReason> {
    let (adds, injected) = planned(&Facts::from_view(pod), rules)?;
    if let Some((first, rest)) = adds.split_first() {
        // The usual patch is ≈ 0.5 KiB: written without regrowing.
        patch.reserve(1024);
        patch.push(b'[');
        first.write_json(patch);
        for add in rest {
            patch.push(b',');
            add.write_json(patch);
        }
        patch.push(b']');
    }
    Ok(injected)
}

fn decide(pod: &Facts, rules: &Rules) -> Mutation {
    match planned(pod, rules) {
        Ok((adds, injected)) => Mutation::Patch {
            patch: Patch(adds.iter().map(Add::operation).collect()),
            injected,
        },
        Err(reason) => Mutation::Skip(reason),
    }
}

/// The patch's operations, the annotation's last, and what they inject (sorted, distinct):
/// empty exactly when the patch is.
fn planned<'r>(pod: &Facts, rules: &'r Rules) -> Result<(Vec<Add<'r>>, Vec<Injected>), SkipReason> {
    let planned = plan(pod, rules)?;
    let mut injected: Vec<Injected> = planned.iter().map(|(what, _)| *what).collect();
    injected.sort();
    injected.dedup();
    let mut adds: Vec<Add<'r>> = planned.into_iter().map(|(_, add)| add).collect();
    if !injected.is_empty()
        && let Some(add) = annotation_add(pod, &injected)
    {
        adds.push(add);
    }
    Ok((adds, injected))
}

/// One `add` of the patch, as planned: where, and a value borrowed from the rules.
#[derive(Debug)]
struct Add<'r> {
    path: Path,
    value: Added<'r>,
}

/// An add of the pool's affinity or tolerations, and which of the two it injects.
type Planned<'r> = (Injected, Add<'r>);

/// A JSON pointer from the few the patch uses: `head`, an array index, `tail`.
#[derive(Debug, Clone, Copy)]
struct Path {
    head: &'static [&'static str],
    index: Option<usize>,
    tail: &'static [&'static str],
}

impl Path {
    const fn to(tokens: &'static [&'static str]) -> Path {
        Path {
            head: tokens,
            index: None,
            tail: &[],
        }
    }

    fn pointer(&self) -> PointerBuf {
        let index = self.index.map(|i| i.to_string());
        PointerBuf::from_tokens(
            self.head
                .iter()
                .copied()
                .chain(index.as_deref())
                .chain(self.tail.iter().copied()),
        )
    }

    /// The pointer as a JSON string, as jsonptr escapes it and serde_json quotes it (no token
    /// holds a character JSON must escape).
    fn write_json(&self, out: &mut Vec<u8>) {
        fn token(out: &mut Vec<u8>, t: &str) {
            out.push(b'/');
            for b in t.bytes() {
                match b {
                    b'~' => out.extend_from_slice(b"~0"),
                    b'/' => out.extend_from_slice(b"~1"),
                    b => out.push(b),
                }
            }
        }
        out.push(b'"');
        for t in self.head {
            token(out, t);
        }
        if let Some(i) = self.index {
            token(out, itoa::Buffer::new().format(i));
        }
        for t in self.tail {
            token(out, t);
        }
        out.push(b'"');
    }
}

/// What an `add` puts in.
#[derive(Debug)]
enum Added<'r> {
    Piece(&'r Piece),
    /// Some of the pool's tolerations, as a list.
    Tolerations(Vec<&'r Piece>),
    /// The `warmpool.io/injected` annotation's value, inside objects of these keys (outermost
    /// first).
    Annotation {
        within: &'static [&'static str],
        value: String,
    },
}

impl Add<'_> {
    fn operation(&self) -> PatchOperation {
        let value = match &self.value {
            Added::Piece(piece) => piece.value.clone(),
            Added::Tolerations(list) => {
                Value::Array(list.iter().map(|p| p.value.clone()).collect())
            }
            Added::Annotation { within, value } => within
                .iter()
                .rev()
                .fold(Value::String(value.clone()), |inner, key| {
                    object(key, inner)
                }),
        };
        PatchOperation::Add(AddOperation {
            path: self.path.pointer(),
            value,
        })
    }

    /// `{"op":"add","path":…,"value":…}`, as serde_json writes [`Add::operation`].
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"op":"add","path":"#);
        self.path.write_json(out);
        out.extend_from_slice(br#","value":"#);
        match &self.value {
            Added::Piece(piece) => out.extend_from_slice(piece.json.as_bytes()),
            Added::Tolerations(list) => {
                out.push(b'[');
                for (i, piece) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(piece.json.as_bytes());
                }
                out.push(b']');
            }
            Added::Annotation { within, value } => {
                for key in *within {
                    out.push(b'{');
                    write_string(out, key);
                    out.push(b':');
                }
                write_string(out, value);
                out.extend(within.iter().map(|_| b'}'));
            }
        }
        out.push(b'}');
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn write_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// `{key: value}`.
fn object(key: &str, value: Value) -> Value {
    Value::Object(Map::from_iter([(key.to_owned(), value)]))
}

fn add(what: Injected, path: Path, value: Added<'_>) -> Planned<'_> {
    (what, Add { path, value })
}

const SPEC_AFFINITY: &[&str] = &["spec", "affinity"];
const NODE_AFFINITY: &[&str] = &["spec", "affinity", "nodeAffinity"];
const REQUIRED_PATH: &[&str] = &["spec", "affinity", "nodeAffinity", REQUIRED];
const TERMS: &[&str] = &[
    "spec",
    "affinity",
    "nodeAffinity",
    REQUIRED,
    "nodeSelectorTerms",
];
const PREFERRED_PATH: &[&str] = &["spec", "affinity", "nodeAffinity", PREFERRED];
const PREFERRED_END: &[&str] = &["spec", "affinity", "nodeAffinity", PREFERRED, "-"];
const TOLERATIONS: &[&str] = &["spec", "tolerations"];
const TOLERATIONS_END: &[&str] = &["spec", "tolerations", "-"];

fn plan<'r>(pod: &Facts, rules: &'r Rules) -> Result<Vec<Planned<'r>>, SkipReason> {
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
    let mut adds = Vec::new();
    match rules.mode {
        AffinityMode::Required => required_affinity_adds(placement, rules, &mut adds),
        AffinityMode::Preferred => preferred_affinity_adds(placement, rules, &mut adds),
    }
    toleration_adds(placement, rules, &mut adds);
    Ok(adds)
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

/// The pod's `nodeAffinity`, or, when it (or `affinity`) is missing, an add of the affinity
/// or the `nodeAffinity` that holds only the pool's (`whole`, `node_affinity`); `None` then
/// means "done".
fn node_affinity_or_add<'a, 'r>(
    placement: &'a Placement,
    whole: &'r Piece,
    node_affinity: &'r Piece,
    adds: &mut Vec<Planned<'r>>,
) -> Option<&'a NodeAffinity> {
    if !placement.affinity {
        adds.push(add(
            Injected::NodeAffinity,
            Path::to(SPEC_AFFINITY),
            Added::Piece(whole),
        ));
        return None;
    }
    let na = placement.node_affinity.as_ref();
    if na.is_none() {
        let value = Added::Piece(node_affinity);
        adds.push(add(Injected::NodeAffinity, Path::to(NODE_AFFINITY), value));
    }
    na
}

fn required_affinity_adds<'r>(
    placement: &Placement,
    rules: &'r Rules,
    adds: &mut Vec<Planned<'r>>,
) {
    let (whole, node_affinity) = (&rules.required_affinity, &rules.required_node_affinity);
    let Some(na) = node_affinity_or_add(placement, whole, node_affinity, adds) else {
        return;
    };
    let Some(required) = &na.required_during_scheduling_ignored_during_execution else {
        let value = Added::Piece(&rules.required_term);
        adds.push(add(Injected::NodeAffinity, Path::to(REQUIRED_PATH), value));
        return;
    };
    // No terms at all matches no node: such a pod has been skipped as excluding the pool.
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        // An empty term matches no node; with the pool expression it would match pool nodes.
        if is_empty_term(term) {
            continue;
        }
        let at = |tail| Path {
            head: TERMS,
            index: Some(i),
            tail,
        };
        match &term.match_expressions {
            Some(exprs) if exprs.iter().any(|e| is_pool_expression(e, rules)) => {}
            Some(_) => {
                let path = at(&["matchExpressions", "-"]);
                adds.push(add(
                    Injected::NodeAffinity,
                    path,
                    Added::Piece(&rules.expression),
                ));
            }
            None => {
                let path = at(&["matchExpressions"]);
                adds.push(add(
                    Injected::NodeAffinity,
                    path,
                    Added::Piece(&rules.expressions),
                ));
            }
        }
    }
}

fn preferred_affinity_adds<'r>(
    placement: &Placement,
    rules: &'r Rules,
    adds: &mut Vec<Planned<'r>>,
) {
    let (whole, node_affinity) = (&rules.preferred_affinity, &rules.preferred_node_affinity);
    let Some(na) = node_affinity_or_add(placement, whole, node_affinity, adds) else {
        return;
    };
    match &na.preferred_during_scheduling_ignored_during_execution {
        None => {
            let value = Added::Piece(&rules.preferences);
            adds.push(add(Injected::NodeAffinity, Path::to(PREFERRED_PATH), value));
        }
        Some(prefs) => {
            let present = prefs.iter().any(|p| is_pool_preference(p, rules));
            if !present {
                let value = Added::Piece(&rules.preference);
                adds.push(add(Injected::NodeAffinity, Path::to(PREFERRED_END), value));
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
fn toleration_adds<'r>(placement: &Placement, rules: &'r Rules, adds: &mut Vec<Planned<'r>>) {
    let present = placement.tolerations.as_deref();
    // The pod's own, borrowed; copied only when a later rule must also see an added one.
    let mut have = std::borrow::Cow::Borrowed(present.unwrap_or_default());
    let mut missing: Vec<&Piece> = Vec::new();
    let wanted = rules.tolerations.iter().zip(&rules.typed_tolerations);
    let count = rules.typed_tolerations.len();
    for (i, (piece, typed)) in wanted.enumerate() {
        if !scheduling::covered(&have, typed) {
            if i + 1 < count {
                have.to_mut().push(typed.clone());
            }
            missing.push(piece);
        }
    }
    if missing.is_empty() {
        return;
    }
    match present {
        None => {
            let value = Added::Tolerations(missing);
            adds.push(add(Injected::Tolerations, Path::to(TOLERATIONS), value));
        }
        Some(_) => {
            for piece in missing {
                let value = Added::Piece(piece);
                adds.push(add(Injected::Tolerations, Path::to(TOLERATIONS_END), value));
            }
        }
    }
}

/// Records what was injected, merged with what an earlier pass recorded.
fn annotation_add<'r>(pod: &Facts, injected: &[Injected]) -> Option<Add<'r>> {
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
    const METADATA: &[&str] = &["metadata"];
    const ANNOTATIONS: &[&str] = &["metadata", "annotations"];
    const ANNOTATION: &[&str] = &["metadata", "annotations", INJECTED_ANNOTATION];
    let (path, within): (_, &'static [&'static str]) = match (pod.metadata, &pod.annotations) {
        (false, _) => (METADATA, &["annotations", INJECTED_ANNOTATION]),
        (true, None) => (ANNOTATIONS, &[INJECTED_ANNOTATION]),
        (true, Some(_)) => (ANNOTATION, &[]),
    };
    Some(Add {
        path: Path::to(path),
        value: Added::Annotation { within, value },
    })
}
