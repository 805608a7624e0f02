//! A model of how Kubernetes picks nodes for a pod, as far as warmpool's mutation reaches:
//! the kube-scheduler's NodeAffinity filter (nodeSelector and required node affinity) and score
//! (preferred terms), its TaintToleration filter, and the taint manager's toleration time for
//! `NoExecute` taints. Pure and small; it follows Kubernetes v1.34's own code
//! (`k8s.io/component-helpers/scheduling/corev1/nodeaffinity`, `k8s.io/apimachinery/pkg/labels`,
//! `Toleration.ToleratesTaint`, the taint eviction controller's `getMinTolerationTime`).
//!
//! The mutation engine asks it whether a pod could run on any pool node at all, and which
//! existing toleration already covers the pool's; the property tests use it as their oracle.
//!
//! Semantics worth knowing, all from upstream:
//! - required terms are ORed, the requirements of a term ANDed; an empty term (no expressions
//!   and no fields) matches no node, and so does a term that fails to parse (bad operator,
//!   values of the wrong count, an invalid key or value, a non-integer `Gt`/`Lt` bound);
//! - `NotIn` and `DoesNotExist` match a node that lacks the label; `Gt`/`Lt` need the label and
//!   compare as 64-bit integers;
//! - `matchFields` know `metadata.name` only (any other key is the empty string), `In`/`NotIn`
//!   with exactly one value;
//! - the filter looks at `NoSchedule` and `NoExecute` taints; a toleration with no key and
//!   `Exists` tolerates every taint of its effect (of every effect when it has none).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, PreferredSchedulingTerm,
    Taint, Toleration,
};

/// The taint effects Kubernetes knows.
pub const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// What a node shows the scheduler: its name, labels and taints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// The parts of a pod's spec that decide where it may run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placement<'a> {
    pub node_selector: Option<&'a BTreeMap<String, String>>,
    pub node_affinity: Option<&'a NodeAffinity>,
    pub tolerations: &'a [Toleration],
}

impl<'a> Placement<'a> {
    pub fn of(spec: &'a PodSpec) -> Placement<'a> {
        Placement {
            node_selector: spec.node_selector.as_ref(),
            node_affinity: spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref()),
            tolerations: spec.tolerations.as_deref().unwrap_or_default(),
        }
    }

    fn required_terms(&self) -> Option<&'a [NodeSelectorTerm]> {
        self.node_affinity
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice())
    }

    fn preferred_terms(&self) -> &'a [PreferredSchedulingTerm] {
        self.node_affinity
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
    }
}

/// The NodeAffinity filter: nodeSelector and required node affinity both allow `node`.
pub fn affinity_allows(pod: &Placement, node: &Node) -> bool {
    let selector_ok = pod
        .node_selector
        .is_none_or(|s| s.iter().all(|(k, v)| node.labels.get(k) == Some(v)));
    selector_ok
        && pod
            .required_terms()
            .is_none_or(|terms| terms.iter().any(|t| term_matches(t, node) == Some(true)))
}

/// The TaintToleration filter: every `NoSchedule` and `NoExecute` taint of `node` is tolerated.
pub fn taints_allow(tolerations: &[Toleration], node: &Node) -> bool {
    node.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Both filters: the scheduler may bind the pod to `node` (resources aside).
pub fn fits(pod: &Placement, node: &Node) -> bool {
    affinity_allows(pod, node) && taints_allow(pod.tolerations, node)
}

/// A preferred term that does not parse: upstream fails the pod's scoring cycle on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("preferred node affinity term {0} is invalid")]
pub struct InvalidPreference(pub usize);

/// The indices of the preferred terms that count for `node` (weight > 0, not empty, matching).
pub fn matching_preferences(pod: &Placement, node: &Node) -> Result<Vec<usize>, InvalidPreference> {
    let mut matching = Vec::new();
    for (i, p) in pod.preferred_terms().iter().enumerate() {
        if p.weight == 0 || is_empty_term(&p.preference) {
            continue;
        }
        match term_matches(&p.preference, node) {
            None => return Err(InvalidPreference(i)),
            Some(true) => matching.push(i),
            Some(false) => {}
        }
    }
    Ok(matching)
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// How long a pod stays on a node after a `NoExecute` taint appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stay {
    /// Not tolerated: evicted at once (and never scheduled there).
    No,
    /// Tolerated for this many seconds (0 and below: evicted at once too, as upstream).
    Seconds(i64),
    Forever,
}

/// The taint manager's rule: the shortest `tolerationSeconds` among the tolerations that
/// tolerate `taint`, forever when none of them sets one.
pub fn stay(tolerations: &[Toleration], taint: &Taint) -> Stay {
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        return Stay::No;
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map_or(Stay::Forever, |s| Stay::Seconds(s.max(0)))
}

/// Whether `existing` already does all that `wanted` would: every taint `wanted` tolerates is
/// tolerated, for `NoExecute` taints for no shorter a time. Then adding `wanted` changes nothing
/// the scheduler or the taint manager decide, or, with a shorter `tolerationSeconds`, only
/// shortens how long the pod survives. Checked effect by effect, each effect by one toleration.
pub fn covered(existing: &[Toleration], wanted: &Toleration) -> bool {
    let wanted_effect = wanted.effect.as_deref().filter(|e| !e.is_empty());
    let effects: Vec<&str> = match wanted_effect {
        Some(e) => vec![e],
        None => EFFECTS.to_vec(),
    };
    effects.into_iter().all(|effect| {
        existing
            .iter()
            .any(|e| covers_for_effect(e, wanted, effect))
    })
}

fn covers_for_effect(existing: &Toleration, wanted: &Toleration, effect: &str) -> bool {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let (e_key, w_key) = (text(&existing.key), text(&wanted.key));
    let effect_ok = existing
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == effect);
    let key_ok = e_key.is_empty() || e_key == w_key;
    let e_op = existing.operator.as_deref().unwrap_or_default();
    let w_op = wanted.operator.as_deref().unwrap_or_default();
    let value_ok = match (e_op, w_op) {
        ("Exists", "" | "Equal" | "Exists") => true,
        ("" | "Equal", "" | "Equal") => text(&existing.value) == text(&wanted.value),
        _ => false,
    };
    // A keyless Equal toleration tolerates one value under every key: it covers only a
    // wanted one that is keyless and Equal too.
    let keyless_equal_ok = !(e_key.is_empty() && e_op != "Exists") || w_key.is_empty();
    let time_ok = effect != "NoExecute"
        || match (existing.toleration_seconds, wanted.toleration_seconds) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(w)) => e.max(0) >= w.max(0),
        };
    effect_ok && key_ok && value_ok && keyless_equal_ok && time_ok
}

/// A node that carries every label of `forced` and that the pod's nodeSelector and required
/// node affinity allow, when one can exist: the witness that the pod could run there. `None`
/// when no such node can exist (the pod's own constraints exclude those labels).
///
/// Labels are independent of each other, so a term's requirements are solved key by key; terms
/// are ORed, so one satisfiable term is enough. The witness carries no taints.
pub fn witness(pod: &Placement, forced: &BTreeMap<String, String>) -> Option<Node> {
    let mut base = forced.clone();
    if let Some(selector) = pod.node_selector {
        for (k, v) in selector {
            match base.get(k) {
                Some(existing) if existing != v => return None,
                _ => {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let Some(terms) = pod.required_terms() else {
        return Some(Node {
            name: "witness".into(),
            labels: base,
            taints: Vec::new(),
        });
    };
    terms.iter().find_map(|t| witness_for_term(t, &base))
}

fn witness_for_term(term: &NodeSelectorTerm, fixed: &BTreeMap<String, String>) -> Option<Node> {
    if is_empty_term(term) {
        return None;
    }
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let parsed = exprs
        .iter()
        .map(LabelRequirement::parse)
        .collect::<Option<Vec<_>>>()?;
    let name = witness_name(term.match_fields.as_deref().unwrap_or_default())?;
    let mut labels = fixed.clone();
    let keys: BTreeSet<&str> = parsed
        .iter()
        .map(|r| r.key)
        .chain(fixed.keys().map(String::as_str))
        .collect();
    for key in keys {
        let on_key: Vec<&LabelRequirement> = parsed.iter().filter(|r| r.key == key).collect();
        match fixed.get(key) {
            Some(v) => {
                if !on_key.iter().all(|r| r.matches(Some(v))) {
                    return None;
                }
            }
            None => {
                if let Some(v) = solve_key(&on_key)? {
                    labels.insert(key.to_owned(), v);
                }
            }
        }
    }
    let node = Node {
        name,
        labels,
        taints: Vec::new(),
    };
    (term_matches(term, &node) == Some(true)).then_some(node)
}

/// A value for one label key that satisfies every requirement on it: `Some(None)` = leave the
/// label off, `Some(Some(v))` = set it to `v`, `None` = impossible.
fn solve_key(reqs: &[&LabelRequirement]) -> Option<Option<String>> {
    if reqs.iter().all(|r| r.matches(None)) {
        return Some(None);
    }
    let mut candidates: Vec<String> = Vec::new();
    for r in reqs {
        match r.op {
            Op::In | Op::NotIn => candidates.extend(r.values.iter().map(|v| v.to_string())),
            Op::Gt | Op::Lt => {
                let bound = r.bound.unwrap_or_default();
                for d in [-1i64, 1, 2] {
                    if let Some(v) = bound.checked_add(d) {
                        candidates.push(v.to_string());
                    }
                }
            }
            Op::Exists | Op::DoesNotExist => {}
        }
    }
    // Any value outside the finite sets of NotIn, for Exists-only keys.
    candidates.extend(["w".to_owned(), "w0".to_owned()]);
    let lo = reqs
        .iter()
        .filter(|r| r.op == Op::Gt)
        .filter_map(|r| r.bound)
        .max();
    let hi = reqs
        .iter()
        .filter(|r| r.op == Op::Lt)
        .filter_map(|r| r.bound)
        .min();
    // Integers next to a bound, as many as NotIn could rule out and one more, each also with
    // a leading zero ("05" is a label value that parses as 5, and NotIn compares strings).
    let excluded = reqs
        .iter()
        .filter(|r| r.op == Op::NotIn)
        .map(|r| r.values.len() as i64)
        .sum::<i64>();
    let near_bound: Vec<i64> = match (lo, hi) {
        (Some(lo), _) => (1..=excluded + 1)
            .filter_map(|d| lo.checked_add(d))
            .collect(),
        (None, Some(hi)) => (1..=excluded + 1)
            .filter_map(|d| hi.checked_sub(d))
            .collect(),
        (None, None) => Vec::new(),
    };
    for v in near_bound {
        candidates.push(v.to_string());
        candidates.push(format!("0{v}"));
    }
    candidates
        .into_iter()
        .find(|v| reqs.iter().all(|r| r.matches(Some(v))))
        .map(Some)
}

/// A node name that the term's `matchFields` allow (a term with none allows any name).
fn witness_name(fields: &[NodeSelectorRequirement]) -> Option<String> {
    let mut must: Option<String> = None;
    let mut not: BTreeSet<String> = BTreeSet::new();
    for f in fields {
        let values = f.values.as_deref().unwrap_or_default();
        let [value] = values else { return None };
        let name_field = f.key == "metadata.name";
        match (f.operator.as_str(), name_field) {
            ("In", true) => match &must {
                Some(m) if m != value => return None,
                _ => must = Some(value.clone()),
            },
            // Another field is "" on every node.
            ("In", false) if value.is_empty() => {}
            ("In", false) => return None,
            ("NotIn", true) => {
                not.insert(value.clone());
            }
            ("NotIn", false) if value.is_empty() => return None,
            ("NotIn", false) => {}
            _ => return None,
        }
    }
    match must {
        Some(m) if not.contains(&m) || m.is_empty() => None,
        Some(m) => Some(m),
        None => (0..=not.len())
            .map(|i| format!("witness-{i}"))
            .find(|n| !not.contains(n)),
    }
}

fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty)
}

/// Whether one term matches: `None` when it fails to parse (and so matches nothing).
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> Option<bool> {
    if is_empty_term(term) {
        return Some(false);
    }
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    let labels = exprs
        .iter()
        .map(LabelRequirement::parse)
        .collect::<Option<Vec<_>>>()?;
    let fields = fields
        .iter()
        .map(FieldRequirement::parse)
        .collect::<Option<Vec<_>>>()?;
    let labels_ok = labels
        .iter()
        .all(|r| r.matches(node.labels.get(r.key).map(String::as_str)));
    // Upstream skips field selectors for a node with an empty name (`len(nodeFields) > 0`).
    let fields_ok = node.name.is_empty() || fields.iter().all(|f| f.matches(&node.name));
    Some(labels_ok && fields_ok)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One parsed `matchExpressions` entry (`labels.NewRequirement`'s checks).
#[derive(Debug)]
struct LabelRequirement<'a> {
    key: &'a str,
    op: Op,
    values: Vec<&'a str>,
    bound: Option<i64>,
}

impl<'a> LabelRequirement<'a> {
    fn parse(r: &'a NodeSelectorRequirement) -> Option<LabelRequirement<'a>> {
        let values: Vec<&str> = r
            .values
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect();
        let op = match r.operator.as_str() {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" => Op::Gt,
            "Lt" => Op::Lt,
            _ => return None,
        };
        let count_ok = match op {
            Op::In | Op::NotIn => !values.is_empty(),
            Op::Exists | Op::DoesNotExist => values.is_empty(),
            Op::Gt | Op::Lt => values.len() == 1,
        };
        let bound = match op {
            Op::Gt | Op::Lt => Some(parse_int(values.first()?)?),
            _ => None,
        };
        let valid =
            count_ok && is_qualified_name(&r.key) && values.iter().all(|v| is_label_value(v));
        valid.then_some(LabelRequirement {
            key: &r.key,
            op,
            values,
            bound,
        })
    }

    /// `Requirement.Matches` for a node whose label `self.key` is `value` (None = absent).
    fn matches(&self, value: Option<&str>) -> bool {
        match (self.op, value) {
            (Op::In, Some(v)) => self.values.contains(&v),
            (Op::In, None) => false,
            (Op::NotIn, Some(v)) => !self.values.contains(&v),
            (Op::NotIn, None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt | Op::Lt, None) => false,
            (op, Some(v)) => {
                let (Some(label), Some(bound)) = (parse_int(v), self.bound) else {
                    return false;
                };
                if op == Op::Gt {
                    label > bound
                } else {
                    label < bound
                }
            }
        }
    }
}

/// One parsed `matchFields` entry.
struct FieldRequirement<'a> {
    key: &'a str,
    equal: bool,
    value: &'a str,
}

impl<'a> FieldRequirement<'a> {
    fn parse(r: &'a NodeSelectorRequirement) -> Option<FieldRequirement<'a>> {
        let [value] = r.values.as_deref().unwrap_or_default() else {
            return None;
        };
        let equal = match r.operator.as_str() {
            "In" => true,
            "NotIn" => false,
            _ => return None,
        };
        Some(FieldRequirement {
            key: &r.key,
            equal,
            value,
        })
    }

    fn matches(&self, node_name: &str) -> bool {
        let field = if self.key == "metadata.name" {
            node_name
        } else {
            ""
        };
        (field == self.value) == self.equal
    }
}

/// `strconv.ParseInt(s, 10, 64)`: an optional sign, then ASCII digits.
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `validation.IsQualifiedName`: `[prefix/]name`, a DNS-subdomain prefix and a 63-char name.
pub fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns_subdomain);
    prefix_ok && !name.is_empty() && name.len() <= 63 && is_name_part(name)
}

/// `validation.IsValidLabelValue`: empty, or a name part of at most 63 characters.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || (value.len() <= 63 && is_name_part(value))
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner)
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.len() <= 63
                && end(&b[0])
                && end(&b[b.len() - 1])
                && b.iter().all(|c| end(c) || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> Node {
        Node {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: taints
                .iter()
                .map(|(k, v, e)| Taint {
                    key: k.to_string(),
                    value: Some(v.to_string()).filter(|v| !v.is_empty()),
                    effect: e.to_string(),
                    time_added: None,
                })
                .collect(),
        }
    }

    fn required(terms: serde_json::Value) -> PodSpec {
        spec(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
        )
    }

    fn pool() -> BTreeMap<String, String> {
        [("workload-type".to_owned(), "cargocats".to_owned())].into()
    }

    #[test]
    fn an_empty_term_matches_no_node_and_terms_are_ored() {
        let s = required(json!([{}]));
        assert!(!affinity_allows(&Placement::of(&s), &node("n", &[], &[])));
        assert!(witness(&Placement::of(&s), &pool()).is_none());
        let s = required(json!([{}, {"matchExpressions": [{"key": "a", "operator": "Exists"}]}]));
        assert!(affinity_allows(
            &Placement::of(&s),
            &node("n", &[("a", "")], &[])
        ));
        let s = required(json!([]));
        assert!(!affinity_allows(&Placement::of(&s), &node("n", &[], &[])));
    }

    #[test]
    fn not_in_and_does_not_exist_match_a_missing_label() {
        let s = required(json!([{"matchExpressions": [
            {"key": "a", "operator": "NotIn", "values": ["x"]},
            {"key": "b", "operator": "DoesNotExist"}]}]));
        let p = Placement::of(&s);
        assert!(affinity_allows(&p, &node("n", &[], &[])));
        assert!(!affinity_allows(&p, &node("n", &[("a", "x")], &[])));
        assert!(!affinity_allows(&p, &node("n", &[("b", "")], &[])));
    }

    #[test]
    fn gt_and_lt_compare_integers_and_need_the_label() {
        let s = required(json!([{"matchExpressions": [
            {"key": "gen", "operator": "Gt", "values": ["5"]},
            {"key": "gen", "operator": "Lt", "values": ["8"]}]}]));
        let p = Placement::of(&s);
        assert!(affinity_allows(&p, &node("n", &[("gen", "7")], &[])));
        assert!(affinity_allows(&p, &node("n", &[("gen", "06")], &[])));
        assert!(!affinity_allows(&p, &node("n", &[("gen", "5")], &[])));
        assert!(!affinity_allows(&p, &node("n", &[("gen", "x")], &[])));
        assert!(!affinity_allows(&p, &node("n", &[], &[])));
        assert_eq!(witness(&p, &BTreeMap::new()).unwrap().labels["gen"], "6");
        // NotIn compares strings: "06" is 6 and not "6".
        let s = required(json!([{"matchExpressions": [
            {"key": "gen", "operator": "Gt", "values": ["5"]},
            {"key": "gen", "operator": "Lt", "values": ["7"]},
            {"key": "gen", "operator": "NotIn", "values": ["6"]}]}]));
        assert_eq!(
            witness(&Placement::of(&s), &BTreeMap::new())
                .unwrap()
                .labels["gen"],
            "06"
        );
        let s = required(json!([{"matchExpressions": [
            {"key": "gen", "operator": "Gt", "values": ["5"]},
            {"key": "gen", "operator": "Lt", "values": ["6"]}]}]));
        assert!(witness(&Placement::of(&s), &BTreeMap::new()).is_none());
    }

    #[test]
    fn a_term_that_does_not_parse_matches_nothing() {
        for bad in [
            json!({"key": "a", "operator": "In", "values": []}),
            json!({"key": "a", "operator": "Exists", "values": ["x"]}),
            json!({"key": "a", "operator": "Gt", "values": ["1.5"]}),
            json!({"key": "a", "operator": "Sometimes", "values": ["x"]}),
            json!({"key": "-a", "operator": "Exists"}),
            json!({"key": "a", "operator": "In", "values": ["not valid"]}),
        ] {
            let s = required(json!([{"matchExpressions": [bad]}]));
            let p = Placement::of(&s);
            assert!(
                !affinity_allows(&p, &node("n", &[("a", "x")], &[])),
                "{bad}"
            );
            assert!(witness(&p, &BTreeMap::new()).is_none(), "{bad}");
        }
    }

    #[test]
    fn match_fields_pin_a_node_by_name() {
        let s = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
        );
        let p = Placement::of(&s);
        assert!(affinity_allows(&p, &node("n1", &[], &[])));
        assert!(!affinity_allows(&p, &node("n2", &[], &[])));
        assert_eq!(witness(&p, &pool()).unwrap().name, "n1");
        let s = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}]),
        );
        assert!(!affinity_allows(&Placement::of(&s), &node("n1", &[], &[])));
    }

    #[test]
    fn node_selector_and_affinity_both_apply() {
        let s = spec(json!({"nodeSelector": {"workload-type": "batch"}}));
        assert!(witness(&Placement::of(&s), &pool()).is_none());
        let s = spec(json!({"nodeSelector": {"disk": "ssd"}}));
        let w = witness(&Placement::of(&s), &pool()).unwrap();
        assert!(affinity_allows(&Placement::of(&s), &w));
        assert_eq!(w.labels["workload-type"], "cargocats");
    }

    #[test]
    fn preferences_skip_zero_weights_and_empty_terms_and_fail_on_invalid_ones() {
        let s = spec(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 0, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}},
            {"weight": 5, "preference": {}},
            {"weight": 5, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}}}),
        );
        let n = node("n", &[("a", "1")], &[]);
        assert_eq!(matching_preferences(&Placement::of(&s), &n), Ok(vec![2]));
        let s = spec(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "preference": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}}}),
        );
        assert_eq!(
            matching_preferences(&Placement::of(&s), &n),
            Err(InvalidPreference(0))
        );
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerations_follow_tolerates_taint() {
        let t = node("n", &[], &[("workload-type", "cargocats", "NoSchedule")]);
        assert!(taints_allow(&[tol(json!({"operator": "Exists"}))], &t));
        assert!(taints_allow(
            &[tol(json!({"key": "workload-type", "operator": "Exists"}))],
            &t
        ));
        assert!(taints_allow(
            &[tol(json!({"key": "workload-type", "value": "cargocats"}))],
            &t
        ));
        assert!(!taints_allow(
            &[tol(json!({"key": "workload-type", "value": "x"}))],
            &t
        ));
        assert!(!taints_allow(
            &[tol(
                json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute"})
            )],
            &t
        ));
        let soft = node("n", &[], &[("a", "", "PreferNoSchedule")]);
        assert!(taints_allow(&[], &soft));
    }

    #[test]
    fn coverage_is_by_key_operator_value_effect_and_time() {
        let wanted = tol(
            json!({"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}),
        );
        assert!(covered(&[tol(json!({"operator": "Exists"}))], &wanted));
        assert!(covered(
            &[tol(json!({"key": "workload-type", "operator": "Exists"}))],
            &wanted
        ));
        assert!(covered(
            &[tol(json!({"key": "workload-type", "value": "cargocats"}))],
            &wanted
        ));
        assert!(!covered(
            &[tol(json!({"key": "workload-type", "value": "other"}))],
            &wanted
        ));
        assert!(!covered(
            &[tol(
                json!({"key": "workload-type", "operator": "Exists", "effect": "NoExecute"})
            )],
            &wanted
        ));
        let all_effects = tol(json!({"key": "k", "operator": "Exists"}));
        assert!(!covered(
            &[tol(
                json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})
            )],
            &all_effects
        ));
        let split = [
            tol(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            tol(json!({"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"})),
            tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
        ];
        assert!(covered(&split, &all_effects));
        let evict = tol(
            json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}),
        );
        assert!(covered(
            &[tol(
                json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})
            )],
            &evict
        ));
        assert!(!covered(
            &[tol(
                json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30})
            )],
            &evict
        ));
    }

    #[test]
    fn stay_is_the_shortest_matching_time() {
        let taint = Taint {
            key: "k".into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: None,
        };
        let forever = tol(json!({"key": "k", "operator": "Exists"}));
        let short = tol(
            json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
        );
        assert_eq!(stay(&[], &taint), Stay::No);
        assert_eq!(stay(std::slice::from_ref(&forever), &taint), Stay::Forever);
        assert_eq!(stay(&[forever, short], &taint), Stay::Seconds(30));
    }

    #[test]
    fn label_syntax_follows_apimachinery() {
        assert!(is_qualified_name("workload-type"));
        assert!(is_qualified_name("karpenter.sh/nodepool"));
        assert!(!is_qualified_name("Karpenter.sh/nodepool"));
        assert!(!is_qualified_name("a/"));
        assert!(!is_qualified_name(""));
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_x"));
        assert!(!is_label_value("-x"));
        assert_eq!(parse_int("+5"), Some(5));
        assert_eq!(parse_int("5 "), None);
    }
}
