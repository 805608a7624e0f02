//! Fuzzing of the whole review path — AdmissionReview bytes in, response bytes out — seeded with
//! the AdmissionReviews of `tests/fixtures/`, on stable Rust with proptest.
//!
//! Two kinds of input, both grown from every fixture:
//! - *structured*: the fixture as JSON with a few random edits (a node replaced by random JSON
//!   or by a near-miss of what warmpool reads, deleted, renamed, retyped), half of them aimed at
//!   the paths the parser and the mutation engine read;
//! - *bytes*: the fixture's bytes with random byte edits (flips, inserts, deletes, truncation,
//!   JSON tokens spliced in), so that the parser meets broken UTF-8, escapes and nesting.
//!
//! For every input, under four rule sets (required and preferred affinity, a prefixed label key
//! that needs `~1` escaping, and `Exists`/`NoExecute` tolerations):
//! - nothing panics;
//! - an accepted review is answered `allowed: true` with the request's `uid` and apiVersion;
//! - a patch is present exactly when the decision is `Patched`, is a base64 JSON patch, applies
//!   to the request's object with `json_patch`, and changes nothing but node affinity,
//!   tolerations and annotations;
//! - the patched pod sent again is answered with no patch (reinvocation-safe).
//!
//! The test command runs `SHORT_RUN_CASES` inputs of each kind (about 20 s in a debug build).
//! A long run: `WARMPOOL_FUZZ_CASES=1000000 cargo test --release --test webhook fuzz_review --
//! --nocapture` (add `PROPTEST_RNG_SEED=<n>` to replay a seed); see docs/reliability.md.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use warmpool::config::Config;
use warmpool::core::mutation::Rules;
use warmpool::core::tenant::TenantSelector;
use warmpool::webhook::review::{Decision, review};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// Inputs of each kind in the test command's run.
const SHORT_RUN_CASES: u32 = 1000;

fn cases() -> u32 {
    match std::env::var("WARMPOOL_FUZZ_CASES") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("WARMPOOL_FUZZ_CASES={n} is not a number")),
        Err(_) => SHORT_RUN_CASES,
    }
}

/// The fixtures, by name, in a stable order.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = std::fs::read_dir(FIXTURES)
        .expect("tests/fixtures")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("fixture"))
        })
        .collect();
    all.sort();
    assert!(all.len() >= 5, "fixtures missing: {all:?}");
    all
}

// ---------------------------------------------------------------------------------------------
// The rules under test

struct RuleSet {
    name: &'static str,
    rules: Rules,
    excluded: TenantSelector,
}

fn rule_sets() -> Vec<RuleSet> {
    let configs = [
        ("defaults", ""),
        ("preferred", "pool: {affinity: preferred}"),
        (
            "prefixed-key",
            "pool:\n  nodeLabel: {key: example.com/pool, value: warm}\n  tolerations:\n    \
             - {key: example.com/pool, operator: Equal, value: warm, effect: NoSchedule}\n    \
             - {key: other, operator: Exists}",
        ),
        (
            "exists-noexecute",
            "pool:\n  affinity: preferred\n  tolerations:\n    \
             - {operator: Exists, effect: NoExecute, tolerationSeconds: 30}\n    \
             - {key: workload-type, operator: Exists, effect: PreferNoSchedule}",
        ),
    ];
    configs
        .into_iter()
        .map(|(name, yaml)| {
            let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
            RuleSet {
                name,
                rules: Rules::from_config(&config),
                excluded: TenantSelector::new(&config.tenants.namespace_patterns, Some("warmpool"))
                    .expect("selector"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The properties

/// What the run saw, for the figures in docs/reliability.md.
#[derive(Debug, Default)]
struct Tally {
    inputs: u64,
    rejected: BTreeMap<&'static str, u64>,
    decided: BTreeMap<&'static str, u64>,
    patches_applied: u64,
    /// Accepted inputs with an invalid escape in a part the review skips.
    unparsable_accepted: u64,
}

/// Every property for one input under one rule set.
fn check(input: &[u8], set: &RuleSet, tally: &Mutex<Tally>) -> Result<(), TestCaseError> {
    let outcome = review(input, &set.rules, &set.excluded);
    let reviewed = match outcome {
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            *tally
                .lock()
                .unwrap()
                .rejected
                .entry(e.metric_label())
                .or_default() += 1;
            return Ok(());
        }
        Ok(reviewed) => reviewed,
    };
    *tally
        .lock()
        .unwrap()
        .decided
        .entry(reviewed.decision.metric_label())
        .or_default() += 1;

    // The answer: allowed, with the uid and apiVersion asked. (An input that `review` accepts
    // but `Value` does not holds a bad escape in a part the review skips: the patch checks below
    // need the object, so such inputs stop here.)
    let out: Value = serde_json::from_slice(&reviewed.body)
        .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
    prop_assert_eq!(&out["kind"], "AdmissionReview");
    prop_assert_eq!(&out["response"]["allowed"], true);
    prop_assert_eq!(out["response"]["uid"].as_str(), Some(reviewed.uid.as_str()));
    let Ok(request) = serde_json::from_slice::<Value>(input) else {
        tally.lock().unwrap().unparsable_accepted += 1;
        return Ok(());
    };
    prop_assert_eq!(&out["apiVersion"], &request["apiVersion"]);
    prop_assert_eq!(&out["response"]["uid"], &request["request"]["uid"]);

    let Some(patch) = out["response"].get("patch") else {
        prop_assert!(
            !matches!(reviewed.decision, Decision::Patched(_)),
            "patched without a patch: {out}"
        );
        prop_assert!(out["response"].get("patchType").is_none(), "{out}");
        return Ok(());
    };
    prop_assert!(
        matches!(&reviewed.decision, Decision::Patched(i) if !i.is_empty()),
        "a patch for {:?}",
        reviewed.decision
    );
    prop_assert_eq!(&out["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().unwrap_or_default())
        .map_err(|e| TestCaseError::fail(format!("patch is not base64: {e}")))?;
    let patch: json_patch::Patch = serde_json::from_slice(&patch)
        .map_err(|e| TestCaseError::fail(format!("patch is not a JSON patch: {e}")))?;
    prop_assert!(!patch.0.is_empty());

    // It applies to the object, and touches only what warmpool owns.
    let original = request["request"]["object"].clone();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| {
        TestCaseError::fail(format!(
            "patch does not apply: {e}\npatch: {}\nobject: {original}",
            serde_json::to_string(&patch).unwrap()
        ))
    })?;
    prop_assert!(
        untouched_part(&patched) == untouched_part(&original),
        "the patch changed more than affinity, tolerations and annotations\npatch: {}\nobject: {}",
        short(&serde_json::to_string(&patch).unwrap()),
        short(&original.to_string()),
    );
    tally.lock().unwrap().patches_applied += 1;

    // Reinvocation: the mutated pod gets no second patch.
    let mut again = request.clone();
    again["request"]["object"] = patched.clone();
    let again = serde_json::to_vec(&again).expect("serialize");
    let second = review(&again, &set.rules, &set.excluded)
        .map_err(|e| TestCaseError::fail(format!("second pass rejected: {e}")))?;
    let second_out: Value = serde_json::from_slice(&second.body).expect("JSON");
    prop_assert!(
        second_out["response"].get("patch").is_none(),
        "second pass patched again ({:?}): {}\npatched pod: {}",
        second.decision,
        second_out,
        short(&patched.to_string()),
    );
    Ok(())
}

/// At most 3000 characters of `text`, for failure messages.
fn short(text: &str) -> String {
    match text.char_indices().nth(3000) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The object without node affinity, tolerations and annotations, and without the parents the
/// patch may create or replace when they are null or left empty (`metadata`, `affinity`).
fn untouched_part(object: &Value) -> Value {
    let empty = |v: Option<&Value>| match v {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    let mut o = object.clone();
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("tolerations");
        if let Some(affinity) = spec.get_mut("affinity").and_then(Value::as_object_mut) {
            affinity.remove("nodeAffinity");
        }
        if empty(spec.get("affinity")) {
            spec.remove("affinity");
        }
    }
    if let Some(o) = o.as_object_mut() {
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("annotations");
        }
        if empty(o.get("metadata")) {
            o.remove("metadata");
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Structured mutations of the fixtures' JSON

/// Words of the AdmissionReview and Pod vocabulary, so that random JSON often says something
/// the parser or the mutation engine acts on.
const WORDS: &[&str] = &[
    "",
    "Pod",
    "v1",
    "CREATE",
    "UPDATE",
    "AdmissionReview",
    "admission.k8s.io/v1",
    "admission.k8s.io/v1beta1",
    "demo-1",
    "kube-system",
    "warmpool",
    "status",
    "workload-type",
    "cargocats",
    "example.com/pool",
    "warm",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "Gt",
    "Equal",
    "NoSchedule",
    "NoExecute",
    "true",
    "false",
    "node-1",
    "warmpool.io/skip",
    "warmpool.io/injected",
    "kubernetes.io/config.mirror",
    "key",
    "operator",
    "values",
    "value",
    "effect",
    "weight",
    "preference",
    "matchExpressions",
    "matchFields",
    "nodeSelectorTerms",
    "nodeAffinity",
    "requiredDuringSchedulingIgnoredDuringExecution",
    "preferredDuringSchedulingIgnoredDuringExecution",
    "tolerations",
    "nodeSelector",
    "nodeName",
    "annotations",
    "a~b/c",
    "~1",
    "/",
    "\u{0}",
    "é\u{2028}😀",
];

/// Paths that the parser and the mutation engine read (RFC 6901, `~1` for `/`).
const TARGETS: &[&str] = &[
    "",
    "/apiVersion",
    "/kind",
    "/request",
    "/request/uid",
    "/request/kind",
    "/request/kind/group",
    "/request/kind/version",
    "/request/kind/kind",
    "/request/subResource",
    "/request/namespace",
    "/request/name",
    "/request/operation",
    "/request/object",
    "/request/object/metadata",
    "/request/object/metadata/generateName",
    "/request/object/metadata/annotations",
    "/request/object/metadata/annotations/warmpool.io~1skip",
    "/request/object/metadata/annotations/warmpool.io~1injected",
    "/request/object/metadata/annotations/kubernetes.io~1config.mirror",
    "/request/object/spec",
    "/request/object/spec/nodeName",
    "/request/object/spec/nodeSelector",
    "/request/object/spec/nodeSelector/workload-type",
    "/request/object/spec/nodeSelector/example.com~1pool",
    "/request/object/spec/tolerations",
    "/request/object/spec/tolerations/0",
    "/request/object/spec/tolerations/0/key",
    "/request/object/spec/tolerations/0/operator",
    "/request/object/spec/tolerations/0/effect",
    "/request/object/spec/affinity",
    "/request/object/spec/affinity/nodeAffinity",
    "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
    "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0",
    "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions",
    "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0",
    "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/values",
    "/request/object/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
    "/request/object/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0",
    "/request/object/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/weight",
    "/request/object/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/preference",
    "/request/object/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/preference/matchExpressions",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
        1 => "[a-z0-9./~-]{1,20}",
    ]
}

/// Random JSON, with the vocabulary above, to a depth of 3.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::num::f64::NORMAL.prop_map(|f| json!(f)),
        Just(json!(100)),
        Just(json!(-1)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Where an edit lands: an aimed path (created if missing), or the n-th node of the document.
#[derive(Debug, Clone)]
enum Place {
    Target(&'static str),
    Node(usize),
}

#[derive(Debug, Clone)]
enum Edit {
    /// Put this value there.
    Set(Place, Value),
    /// Remove the node.
    Delete(Place),
    /// Give an object member another name.
    Rename(Place, String),
    /// Wrap the node in an array, or unwrap a one-element array / object.
    Retype(Place),
    /// Copy another node of the document there.
    Copy(Place, Place),
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        prop::sample::select(TARGETS).prop_map(Place::Target),
        any::<usize>().prop_map(Place::Node),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (place(), json_value()).prop_map(|(p, v)| Edit::Set(p, v)),
        2 => place().prop_map(Edit::Delete),
        1 => (place(), word()).prop_map(|(p, w)| Edit::Rename(p, w)),
        1 => place().prop_map(Edit::Retype),
        1 => (place(), place()).prop_map(|(a, b)| Edit::Copy(a, b)),
    ]
}

/// Every node's path, in document order.
fn nodes(value: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    at.push(k.clone());
                    walk(child, at, out);
                    at.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    at.push(i.to_string());
                    walk(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn resolve(doc: &Value, place: &Place) -> Vec<String> {
    match place {
        Place::Target(p) => tokens(p),
        Place::Node(n) => {
            let all = nodes(doc);
            all[n % all.len()].clone()
        }
    }
}

/// The node at `path`, made to exist: missing or scalar parents become objects; an array index
/// past the end appends.
fn slot<'a>(doc: &'a mut Value, path: &[String]) -> &'a mut Value {
    let mut here = doc;
    for token in path {
        here = match here {
            Value::Array(a) => {
                let i = token
                    .parse::<usize>()
                    .unwrap_or(a.len())
                    .min(a.len().saturating_sub(1));
                if a.is_empty() {
                    a.push(Value::Null);
                }
                &mut a[i]
            }
            other => {
                if !other.is_object() {
                    *other = Value::Object(Map::new());
                }
                other
                    .as_object_mut()
                    .unwrap()
                    .entry(token.clone())
                    .or_insert(Value::Null)
            }
        };
    }
    here
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => a.get(t.parse::<usize>().ok()?),
        _ => None,
    })
}

fn apply_edit(doc: &mut Value, edit: &Edit) {
    match edit {
        Edit::Set(place, value) => {
            let path = resolve(doc, place);
            *slot(doc, &path) = value.clone();
        }
        Edit::Delete(place) => {
            let path = resolve(doc, place);
            let Some((last, parent)) = path.split_last() else {
                *doc = Value::Null;
                return;
            };
            let parent = slot(doc, parent);
            match parent {
                Value::Object(m) => {
                    m.shift_remove(last);
                }
                Value::Array(a) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
        Edit::Rename(place, name) => {
            let path = resolve(doc, place);
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            if let Value::Object(m) = slot(doc, parent)
                && let Some(v) = m.shift_remove(last)
            {
                m.insert(name.clone(), v);
            }
        }
        Edit::Retype(place) => {
            let path = resolve(doc, place);
            let node = slot(doc, &path);
            *node = match node.take() {
                Value::Array(mut a) if a.len() == 1 => a.pop().unwrap(),
                Value::Object(m) if m.len() == 1 => m.into_iter().next().unwrap().1,
                Value::String(s) => json!([s]),
                Value::Number(n) => Value::String(n.to_string()),
                other => json!([other]),
            };
        }
        Edit::Copy(from, to) => {
            let from = resolve(doc, from);
            let to = resolve(doc, to);
            // A node copied into itself would grow without end: skip those.
            if to.starts_with(&from) {
                return;
            }
            if let Some(v) = get(doc, &from).cloned() {
                *slot(doc, &to) = v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte mutations of the fixtures

/// JSON fragments that break or stress a parser.
const SPLICES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "\\u0000",
    "\\ud800",
    "\\udc00\\ud800",
    "\u{feff}",
    "\u{0}",
    "\"kind\":\"Pod\",",
    "\"operation\":\"CREATE\",",
    "\"uid\":\"x\",",
    "\"spec\":{},",
    "\"tolerations\":[],",
    "\"affinity\":null,",
    ",\"annotations\":{\"warmpool.io/skip\":\"true\"}",
];

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, &'static str),
    Repeat(usize, usize, u8),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(i, bit)| ByteEdit::Flip(i, 1 << bit)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        2 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => any::<usize>().prop_map(ByteEdit::Truncate),
        3 => (any::<usize>(), prop::sample::select(SPLICES)).prop_map(|(i, s)| ByteEdit::Splice(i, s)),
        1 => (any::<usize>(), 1usize..200, prop::sample::select(b"[{\"\\ ".as_slice()))
            .prop_map(|(i, n, b)| ByteEdit::Repeat(i, n, b)),
    ]
}

fn apply_byte_edit(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match edit {
        ByteEdit::Flip(i, mask) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= mask;
        }
        ByteEdit::Set(i, b) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] = *b;
        }
        ByteEdit::Insert(i, b) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
        ByteEdit::Delete(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        ByteEdit::Truncate(i) => {
            let i = at(*i, bytes.len());
            bytes.truncate(i);
        }
        ByteEdit::Splice(i, s) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, s.bytes());
        }
        ByteEdit::Repeat(i, n, b) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, std::iter::repeat_n(*b, *n));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The runs

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        // Shrinking a failure of a large fixture can take long; keep it bounded.
        max_shrink_iters: 2048,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn report(what: &str, tally: &Mutex<Tally>, started: std::time::Instant) {
    let tally = tally.lock().unwrap();
    eprintln!(
        "fuzz {what}: {} inputs × {} rule sets in {:.1?}; rejected {:?}; decided {:?}; {} patches applied and re-reviewed; {} accepted with a bad escape in a skipped part",
        tally.inputs,
        rule_sets().len(),
        started.elapsed(),
        tally.rejected,
        tally.decided,
        tally.patches_applied,
        tally.unparsable_accepted,
    );
}

#[test]
fn every_fixture_passes_the_properties_as_is() {
    let tally = Mutex::new(Tally::default());
    for (name, bytes) in fixtures() {
        for set in rule_sets() {
            check(&bytes, &set, &tally).unwrap_or_else(|e| panic!("{name} / {}: {e}", set.name));
        }
    }
    let tally = tally.into_inner().unwrap();
    assert!(tally.patches_applied >= 4, "{tally:?}");
}

#[test]
fn structured_mutations_of_the_fixtures() {
    let fixtures: Vec<Value> = fixtures()
        .into_iter()
        .map(|(_, b)| serde_json::from_slice(&b).expect("fixture JSON"))
        .collect();
    let sets = rule_sets();
    let tally = Mutex::new(Tally::default());
    let started = std::time::Instant::now();
    let input = (
        0..fixtures.len(),
        prop::collection::vec(edit(), 1..6),
        any::<bool>(),
    );
    let result = runner().run(&input, |(which, edits, pretty)| {
        let mut doc = fixtures[which].clone();
        for e in &edits {
            apply_edit(&mut doc, e);
        }
        let bytes = if pretty {
            serde_json::to_vec_pretty(&doc)
        } else {
            serde_json::to_vec(&doc)
        }
        .expect("serialize");
        tally.lock().unwrap().inputs += 1;
        for set in &sets {
            check(&bytes, set, &tally)
                .map_err(|e| TestCaseError::fail(format!("rules {}: {e}", set.name)))?;
        }
        Ok(())
    });
    report("structured", &tally, started);
    if let Err(e) = result {
        panic!("{e}");
    }
    // The edits must leave enough inputs acceptable to prove the patch properties.
    let tally = tally.into_inner().unwrap();
    assert!(
        tally.patches_applied * 10 >= tally.inputs,
        "too few patched inputs: {tally:?}"
    );
}

#[test]
fn byte_mutations_of_the_fixtures() {
    let fixtures: Vec<Vec<u8>> = fixtures().into_iter().map(|(_, b)| b).collect();
    let sets = rule_sets();
    let tally = Mutex::new(Tally::default());
    let started = std::time::Instant::now();
    let input = (0..fixtures.len(), prop::collection::vec(byte_edit(), 1..5));
    let result = runner().run(&input, |(which, edits)| {
        let mut bytes = fixtures[which].clone();
        for e in &edits {
            apply_byte_edit(&mut bytes, e);
        }
        tally.lock().unwrap().inputs += 1;
        for set in &sets {
            check(&bytes, set, &tally)
                .map_err(|e| TestCaseError::fail(format!("rules {}: {e}", set.name)))?;
        }
        Ok(())
    });
    report("bytes", &tally, started);
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Inputs no random edit is likely to build: deep nesting, huge strings and numbers, every
/// scalar where the review has an object.
#[test]
fn pathological_inputs_are_answered_or_rejected_without_panic() {
    let sets = rule_sets();
    let tally = Mutex::new(Tally::default());
    let pod = fixtures()
        .into_iter()
        .find(|(name, _)| name == "pod-create.json")
        .expect("pod-create.json");
    let pod: Value = serde_json::from_slice(&pod.1).expect("fixture JSON");
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        vec![b'['; 100_000],
        vec![b'{'; 100_000],
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"{\"kind\":\"AdmissionReview\",\"kind\":\"AdmissionReview\"}".to_vec(),
    ];
    // The object nested deeper than the parser's limit, at each place the engine reads.
    let deep = |depth: usize| -> Value {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    for (at, value) in [
        ("/request/object/spec/affinity", deep(100)),
        ("/request/object/spec/tolerations", deep(100)),
        (
            "/request/object/metadata/annotations",
            json!("x".repeat(1 << 20)),
        ),
        ("/request/uid", json!("u".repeat(1 << 20))),
        (
            "/request/object/spec/tolerations",
            json!(vec![json!({"key": "k"}); 20_000]),
        ),
        (
            "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
            json!(vec![json!({"matchExpressions": []}); 5_000]),
        ),
    ] {
        let mut doc = pod.clone();
        *slot(&mut doc, &tokens(at)) = value;
        inputs.push(serde_json::to_vec(&doc).unwrap());
    }
    for scalar in [json!(null), json!(1), json!("s"), json!([]), json!(true)] {
        for at in TARGETS {
            let mut doc = pod.clone();
            *slot(&mut doc, &tokens(at)) = scalar.clone();
            inputs.push(serde_json::to_vec(&doc).unwrap());
        }
    }
    for input in &inputs {
        for set in &sets {
            if let Err(e) = check(input, set, &tally) {
                panic!(
                    "{}: {e}\ninput: {}",
                    set.name,
                    String::from_utf8_lossy(&input[..input.len().min(400)])
                );
            }
        }
    }
    eprintln!("pathological: {:?}", tally.into_inner().unwrap());
}
