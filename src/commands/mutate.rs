//! `warmpool mutate`: what the webhook would do to a pod, offline. It calls the very
//! `mutation::mutate` that the webhook calls, after the full tenant rule for `--namespace`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::config::Config;
use crate::mutation::{Mutation, Rules, mutate};
use crate::tenant::TenantSelector;

/// Show what the webhook would do to a pod file.
///
/// Examples:
///   warmpool mutate --namespace demo-1 -f examples/pod.yaml
///   warmpool mutate --namespace payments --label warmpool.io/tenant=enabled -f pod.yaml -o patch
///   kubectl get pod web -o json | warmpool mutate --namespace demo-1 -f - -o json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (YAML); built-in CargoCATs defaults without it.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The namespace the pod would be created in.
    #[arg(long)]
    pub namespace: String,
    /// A label of that namespace, e.g. warmpool.io/tenant=enabled (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The pod manifest (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,
    /// What to print: the mutated pod as YAML or JSON, or the JSON patch alone.
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
    let pod = read_pod(&args.file)?;
    let selector = TenantSelector::new(&config.tenants.namespace_patterns, None)
        .context("invalid tenants.namespacePatterns")?;
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();

    let decision = selector.decide(&args.namespace, &labels);
    let mutation = if decision.is_tenant() {
        mutate(&pod, &Rules::from_config(&config))
    } else {
        eprintln!(
            "namespace {} is not a tenant ({decision}): pod unchanged",
            args.namespace
        );
        Mutation::Patch {
            patch: json_patch::Patch(Vec::new()),
            injected: Vec::new(),
        }
    };
    match &mutation {
        Mutation::Skip(reason) => eprintln!("skipped: {reason}; pod unchanged"),
        Mutation::Patch { injected, .. } if decision.is_tenant() => {
            if injected.is_empty() {
                eprintln!(
                    "nothing to inject: the pod already has the pool's affinity and tolerations"
                );
            } else {
                let names: Vec<&str> = injected.iter().map(|i| i.as_str()).collect();
                eprintln!("injected: {} ({decision})", names.join(", "));
            }
        }
        Mutation::Patch { .. } => {}
    }

    let patch = mutation.patch();
    let text = match args.output {
        Output::Patch => serde_json::to_string_pretty(&patch)? + "\n",
        Output::Yaml | Output::Json => {
            let mut out = pod;
            json_patch::patch(&mut out, &patch)
                .context("internal error: the patch does not apply")?;
            if args.output == Output::Json {
                serde_json::to_string_pretty(&out)? + "\n"
            } else {
                serde_norway::to_string(&out)?
            }
        }
    };
    print!("{text}");
    Ok(())
}

fn read_pod(file: &PathBuf) -> anyhow::Result<Value> {
    let (name, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the pod from standard input")?;
        ("standard input".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read pod file {}", file.display()))?;
        (file.display().to_string(), text)
    };
    // YAML is a superset of JSON, so one parser takes both.
    let pod: Value = serde_norway::from_str(&text)
        .with_context(|| format!("{name} is not a YAML or JSON document"))?;
    match pod.get("kind").and_then(Value::as_str) {
        Some("Pod") => Ok(pod),
        Some(kind) => bail!("{name} holds a {kind}; warmpool mutate takes a Pod (kind: Pod)"),
        None => bail!("{name} has no `kind: Pod`; warmpool mutate takes a Pod manifest"),
    }
}
