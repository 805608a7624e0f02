//! The 137 real-world pods of `../shared/corpus/` (read from there, never copied into the
//! repository) through the mutation engine, judged by the same oracle as the property tests,
//! in both affinity modes and under each pool toleration the properties use.

use support::oracle;

use std::path::PathBuf;

use serde_json::Value;
use warmpool::config::Config;
use warmpool::core::mutation::{Mutation, PodView, Rules, mutate, mutate_view, mutate_view_json};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if dir.is_dir() {
        return Some(dir);
    }
    let why = format!("the pod corpus is missing at {}", dir.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}: CI runs beside a copy of shared/");
    }
    eprintln!("\n*** SKIP: {why} ***\n");
    None
}

/// Every pod of the corpus: (file name, pod as JSON).
fn corpus() -> Vec<(String, Value)> {
    let Some(dir) = corpus_dir() else {
        return Vec::new();
    };
    let mut pods = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("readable corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".expect.json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable file");
        let pod: Value = if name.ends_with(".json") {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
        } else if name.ends_with(".yaml") {
            // One pod a file, sometimes with a `---` around it.
            let mut docs: Vec<Value> = warmpool::kubectl::yaml::read_documents(text.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|d| d.value)
                .collect();
            assert_eq!(docs.len(), 1, "{name}: one pod a file");
            docs.remove(0)
        } else {
            continue;
        };
        assert_eq!(pod["kind"], "Pod", "{name} is not a Pod");
        pods.push((name, pod));
    }
    pods
}

fn rules(mode: &str, tolerations: &str) -> Rules {
    let config = Config::from_yaml(&format!(
        "pool: {{affinity: {mode}, tolerations: {tolerations}}}"
    ))
    .expect("a valid configuration");
    Rules::from_config(&config)
}

const TOLERATIONS: [&str; 3] = [
    "[{key: workload-type, operator: Equal, value: cargocats, effect: NoSchedule}]",
    "[{key: workload-type, operator: Exists}]",
    "[{key: workload-type, operator: Exists, effect: NoExecute, tolerationSeconds: 60}]",
];

#[test]
fn every_corpus_pod_passes_the_oracle_in_both_modes() {
    let pods = corpus();
    if pods.is_empty() {
        return;
    }
    assert!(pods.len() >= 137, "only {} pods in the corpus", pods.len());
    let mut failures = Vec::new();
    for mode in ["required", "preferred"] {
        for tolerations in TOLERATIONS {
            let rules = rules(mode, tolerations);
            for (name, pod) in &pods {
                let nodes = oracle::nodes_for(pod, &rules);
                if let Err(e) = oracle::check(pod, &rules, &nodes) {
                    failures.push(format!("{name} ({mode}, {tolerations}): {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the default configuration does to each corpus pod, one line each (shown with
/// `--nocapture`): the table the decision table of docs/how-it-works.md summarises.
#[test]
fn corpus_outcomes_under_the_default_configuration() {
    let rules = Rules::from_config(&Config::default());
    let mut skipped = 0;
    for (name, pod) in corpus() {
        let outcome = match mutate(&pod, &rules) {
            Mutation::Skip(reason) => {
                skipped += 1;
                format!("skip ({})", reason.metric_label())
            }
            Mutation::Patch { injected, .. } if injected.is_empty() => "nothing to add".into(),
            Mutation::Patch { injected, .. } => {
                let names: Vec<&str> = injected.iter().map(|i| i.as_str()).collect();
                names.join(",")
            }
        };
        eprintln!("{name:<60} {outcome}");
    }
    eprintln!("{skipped} skipped");
}

/// The corpus's `NAME.expect.json` files: a peer's expected result for the same pod (Kyverno's
/// policy tests, translated to warmpool's pool label). warmpool agrees with every one but the
/// pod pinned to one node, which it leaves alone on purpose (`node_pinned`).
#[test]
fn peer_expectations_hold_but_for_the_node_pinned_pod() {
    let Some(dir) = corpus_dir() else { return };
    let pods: std::collections::BTreeMap<String, Value> = corpus().into_iter().collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("readable corpus") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".expect.json") else {
            continue;
        };
        let expect: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let pod = &pods[&format!("{stem}.yaml")];
        let mode = expect["mode"].as_str().unwrap_or("required");
        let rules = rules(mode, TOLERATIONS[0]);
        let mutation = mutate(pod, &rules);
        let mut out = pod.clone();
        json_patch::patch(&mut out, &mutation.patch()).unwrap();
        if stem == "kyverno-add-node-affinity-redis" {
            assert!(
                matches!(
                    mutation,
                    Mutation::Skip(warmpool::core::mutation::SkipReason::NodePinned(_))
                ),
                "{stem}: {mutation:?}"
            );
            checked += 1;
            continue;
        }
        if let Some(want) = expect.get("nodeAffinity") {
            assert_eq!(&out["spec"]["affinity"]["nodeAffinity"], want, "{stem}");
        }
        if let Some(want) = expect.get("tolerations") {
            assert_eq!(&out["spec"]["tolerations"], want, "{stem}");
        }
        if expect["tolerations_unchanged"] == true {
            assert_eq!(
                out["spec"]["tolerations"], pod["spec"]["tolerations"],
                "{stem}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} expectations found");
}

/// The webhook reads a pod as a typed view borrowed from the request's bytes and decides as the
/// pod's JSON does (the same patch, the same injections or skip reason), in both modes and under
/// each pool toleration. A pod it cannot read (a field of a type the API server would refuse) is
/// decided from its JSON instead; in the corpus that is only such a pod, which is skipped.
#[test]
fn the_typed_view_of_every_corpus_pod_decides_as_its_json() {
    let pods = corpus();
    let mut compared = 0;
    let mut unread = std::collections::BTreeSet::new();
    for mode in ["required", "preferred"] {
        for tolerations in TOLERATIONS {
            let rules = rules(mode, tolerations);
            for (name, pod) in &pods {
                let bytes = serde_json::to_vec(pod).unwrap();
                let expected = mutate(pod, &rules);
                match serde_json::from_slice::<PodView>(&bytes) {
                    Ok(view) => {
                        assert_eq!(
                            mutate_view(view, &rules),
                            expected,
                            "{name} ({mode}, {tolerations})"
                        );
                        // The webhook's path writes the patch itself: serde_json's bytes.
                        let view: PodView = serde_json::from_slice(&bytes).unwrap();
                        let mut written = Vec::new();
                        let decided = mutate_view_json(view, &rules, &mut written);
                        let serde = match &expected {
                            Mutation::Patch { patch, .. } if !patch.0.is_empty() => {
                                serde_json::to_vec(patch).unwrap()
                            }
                            _ => Vec::new(),
                        };
                        assert_eq!(
                            String::from_utf8(written).unwrap(),
                            String::from_utf8(serde).unwrap(),
                            "{name} ({mode}, {tolerations})"
                        );
                        match &expected {
                            Mutation::Patch { injected, .. } => {
                                assert_eq!(decided.as_ref(), Ok(injected), "{name}")
                            }
                            Mutation::Skip(reason) => {
                                assert_eq!(decided.as_ref(), Err(reason), "{name}")
                            }
                        }
                        compared += 1;
                    }
                    Err(e) => {
                        assert!(
                            matches!(
                                expected,
                                Mutation::Skip(
                                    warmpool::core::mutation::SkipReason::UnexpectedShape(_)
                                )
                            ),
                            "{name}: no typed view ({e}) but {expected:?}"
                        );
                        unread.insert(name.clone());
                    }
                }
            }
        }
    }
    eprintln!("decided from JSON (no typed view): {unread:?}");
    assert!(unread.len() <= 2, "{unread:?}");
    assert!(
        pods.is_empty() || compared >= 135 * 6,
        "only {compared} compared"
    );
}

/// Every container and init container image of the corpus, in canonical form by warmpool's
/// grammar and by `oci-spec`'s port of the same library (the grammar's oracle; they differ only
/// on non-ASCII tags, which the corpus has none of).
#[test]
fn every_corpus_image_is_canonical_as_oci_spec_makes_it() {
    let pods = corpus();
    let mut images = std::collections::BTreeSet::new();
    for (_, pod) in &pods {
        for list in ["containers", "initContainers"] {
            for c in pod["spec"][list].as_array().into_iter().flatten() {
                if let Some(image) = c["image"].as_str() {
                    images.insert(image.to_owned());
                }
            }
        }
    }
    for image in &images {
        let oracle = oci_spec::distribution::Reference::try_from(image.trim()).map(|r| r.whole());
        let ours = warmpool::core::pool::images::normalize(image);
        match (&ours, &oracle) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{image}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{image}: warmpool {ours:?}, oci-spec {oracle:?}"),
        }
    }
    eprintln!("{} distinct images compared", images.len());
    assert!(
        pods.is_empty() || images.len() >= 60,
        "only {} images",
        images.len()
    );
}
