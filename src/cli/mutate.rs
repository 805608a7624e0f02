//! `warmpool mutate`: what the webhook would do to the pods of a manifest, offline. It reads the
//! input as kubectl does (`kubectl::yaml`), finds the pods and pod templates (`manifest`), and
//! calls the very `mutation::mutate` that the webhook calls, after the full tenant rule for
//! `--namespace`. This file only reads, prints and words the messages.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::config::Config;
use crate::core::mutation::{Mutation, Rules};
use crate::kubectl;
use crate::kubectl::yaml;
use crate::kubectl::yaml::{Document, ReadError};
use crate::kubectl::{Admission, Object, Outcome, PodHolder};

/// Show what the webhook would do to the pods of a manifest.
///
/// The input is read as kubectl reads it: one or more YAML documents (YAML 1.1 scalars, merge
/// keys, empty documents skipped) or JSON. Pods are mutated; the pod template of a Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job or CronJob is shown as its
/// pods would be admitted; `List` items are handled; other objects are printed unchanged.
///
/// Examples:
///   warmpool mutate --namespace demo-1 -f examples/pod.yaml
///   helm template mychart | warmpool mutate --namespace demo-1 -f -
///   warmpool mutate --namespace payments --label warmpool.io/tenant=enabled -f app.yaml -o patch
///   kubectl get pod web -o json | warmpool mutate --namespace demo-1 -f - -o json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (YAML); built-in CargoCATs defaults without it.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The namespace the objects would be created in.
    #[arg(long)]
    pub namespace: String,
    /// A label of that namespace, e.g. warmpool.io/tenant=enabled (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The manifest: YAML (one or more documents) or JSON; `-` reads standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,
    /// yaml: the documents as admitted, `---` between them; json: the object, or a `List` of
    /// them when there are several; patch: the JSON patch of each object that holds a pod.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Patch,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// One input document and what admission made of it.
struct Admitted {
    index: usize,
    value: Value,
    /// One entry per object (the document, or each item of a List); no decisions outside a
    /// tenant namespace.
    objects: Vec<(Object, Option<Admission>)>,
    /// Whether the document is a single object (not a List).
    single: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
    let (source, bytes) = read_input(&args.file)?;
    let documents = yaml::read_documents(&bytes).map_err(|e| read_error(&source, &e))?;
    if documents.is_empty() {
        bail!(
            "{source} holds no Kubernetes object (it is empty or only comments); give a manifest"
        );
    }
    let selector = config
        .tenants
        .selector(None)
        .context("invalid tenants.namespacePatterns")?;
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let decision = selector.decide(&args.namespace, &labels);
    let rules = Rules::from_config(&config);

    let mut admitted = Vec::with_capacity(documents.len());
    for Document { index, line, value } in documents {
        let at =
            |e: kubectl::ManifestError| anyhow!("{source}: document {index}, line {line}: {e}");
        let (value, objects): (Value, Vec<_>) = if decision.is_tenant() {
            let (value, outcomes) = kubectl::admit(&value, &args.namespace, &rules).map_err(at)?;
            let objects = outcomes
                .into_iter()
                .map(|Outcome { object, admission }| (object, Some(admission)))
                .collect();
            (value, objects)
        } else {
            let objects = kubectl::objects(&value).map_err(at)?;
            (value, objects.into_iter().map(|o| (o, None)).collect())
        };
        let doc = Admitted {
            index,
            single: objects.len() == 1 && objects[0].0.pointer.is_root(),
            value,
            objects,
        };
        admitted.push(doc);
    }

    if decision.is_tenant() {
        report(&admitted, &decision.to_string());
    } else {
        eprintln!(
            "namespace {} is not a tenant ({decision}): everything printed unchanged",
            args.namespace
        );
    }
    print!("{}", render(&admitted, args.output)?);
    Ok(())
}

fn read_input(file: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        Ok(("standard input".to_owned(), bytes))
    } else {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok((file.display().to_string(), bytes))
    }
}

fn read_error(source: &str, e: &ReadError) -> anyhow::Error {
    match e {
        ReadError::Syntax { .. } => anyhow!("{source}: {e}; fix the manifest there"),
        _ => anyhow!("{source}: {e}"),
    }
}

/// One line per pod or pod template on standard error: what was injected, or why not.
fn report(admitted: &[Admitted], decision: &str) {
    let mut pods = 0;
    for doc in admitted {
        for (object, admission) in &doc.objects {
            let Some(holder) = object.holder else {
                continue;
            };
            pods += 1;
            let (what, them) = match holder {
                PodHolder::Pod => (object.label(), "the pod already has"),
                PodHolder::Template { at, .. } => (
                    format!("{} ({})", object.label(), kubectl::dotted(at)),
                    "its pods already have",
                ),
            };
            match admission {
                Some(Admission::Decided { mutation, .. }) => match mutation {
                    Mutation::Skip(reason) => eprintln!("{what}: skipped: {reason}; unchanged"),
                    Mutation::Patch { injected, .. } if injected.is_empty() => eprintln!(
                        "{what}: nothing to inject: {them} the pool's affinity and tolerations"
                    ),
                    Mutation::Patch { injected, .. } => {
                        let names: Vec<&str> = injected.iter().map(|i| i.as_str()).collect();
                        eprintln!("{what}: injected: {} ({decision})", names.join(", "));
                    }
                },
                Some(Admission::NoPod(why)) => eprintln!("{what}: {why}; unchanged"),
                Some(Admission::PassThrough) | None => {}
            }
            // When the decision is not already a skip that says so.
            if let PodHolder::Template { owner, .. } = holder
                && owner.kind == "DaemonSet"
                && !matches!(
                    admission,
                    Some(Admission::Decided {
                        mutation: Mutation::Skip(_),
                        ..
                    })
                )
            {
                eprintln!(
                    "{what}: note: the DaemonSet controller pins each of its pods to one node; \
                     shown is the pod as admitted, owned by the DaemonSet, without that pin"
                );
            }
        }
    }
    if pods == 0 {
        eprintln!("no pods or pod templates in the input: everything printed unchanged");
    }
}

fn render(admitted: &[Admitted], output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Yaml => yaml::to_yaml_stream(admitted.iter().map(|d| &d.value))?,
        Output::Json => {
            let value = match admitted {
                [one] => one.value.clone(),
                many => json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": many.iter().map(|d| d.value.clone()).collect::<Vec<_>>(),
                }),
            };
            serde_json::to_string_pretty(&value)? + "\n"
        }
        Output::Patch => render_patches(admitted)?,
    })
}

/// One document of one object: its patch alone, as the webhook would send it. Otherwise a
/// YAML stream with one patch per object that holds a pod, each under a `# ` header that names
/// it.
fn render_patches(admitted: &[Admitted]) -> anyhow::Result<String> {
    let patch_of = |admission: &Option<Admission>| match admission {
        Some(Admission::Decided { patch, .. }) => patch.clone(),
        _ => json_patch::Patch(Vec::new()),
    };
    if let [doc] = admitted
        && doc.single
    {
        return Ok(serde_json::to_string_pretty(&patch_of(&doc.objects[0].1))? + "\n");
    }
    let mut parts = Vec::new();
    for doc in admitted {
        for (object, admission) in &doc.objects {
            if object.holder.is_none() {
                continue;
            }
            let mut part = format!("# document {}: {}", doc.index, object.label());
            if !object.pointer.is_root() {
                part.push_str(&format!(" (at {})", object.pointer));
            }
            part.push('\n');
            part.push_str(&serde_json::to_string_pretty(&patch_of(admission))?);
            part.push('\n');
            parts.push(part);
        }
    }
    Ok(parts.join("---\n"))
}
