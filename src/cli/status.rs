//! `warmpool status`: one screen of what warmpool is doing in a cluster (read-only).

use std::path::PathBuf;

use anyhow::anyhow;

use crate::config::Config;
use crate::status::{build, collect, render};

/// Show on one screen what warmpool is doing in a cluster (read-only; KUBECONFIG or in-cluster).
///
/// TENANTS      every tenant namespace: pods Ready, how it started (warm: every pod on a warm
///              node with its images present; cold; not-ready; measuring: not recorded yet;
///              unmeasured: never will be, time to Ready off or past its timeout),
///              its time to Ready, and escaped pods (admitted while the webhook did not see
///              them, so not steered to the warm nodes). Many tenants: counts, then the ten
///              that need attention, the slowest and the newest (--tenants: all).
/// WARM NODES   nodes with the pool label: free slots beside every pod on them, placeholders
///              (each a slot a tenant takes at once), the image cache's images present.
/// PREWARMER    spare slots wanted and ready, the schedule window in force.
/// WEBHOOK      replicas ready, the serving certificate's expiry, the webhook configuration
///              and its failurePolicy.
/// RECENT FAILURES  Warning Events of the last hour in warmpool's and the tenants'
///              namespaces, each with what to do next.
///
/// It reads with a fixed number of calls whatever the number of tenants (12 at most, most of
/// them at once). A part it may not read says which permission would show it; the chart's
/// ClusterRole and Role `<release>-status` (statusRole.create) grant exactly these. The
/// configuration is --config, else the chart's ConfigMap in --namespace, else the defaults;
/// the first line says which. Exits 1 with one line when the API server cannot be reached.
///
/// Examples:
///   warmpool status
///   warmpool status --namespace warmpool-system --tenants
///   warmpool status -o json | jq '.tenants.escaped'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// warmpool's own namespace (the chart's release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "warmpool-system")]
    pub namespace: String,
    /// The configuration file (YAML), instead of the chart's ConfigMap in --namespace.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// List every tenant on the text screen, not only the ten that matter most.
    #[arg(long)]
    pub tenants: bool,
    /// text: the screen; json: everything, every tenant included.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let given = match &args.config {
        None => None,
        Some(path) => {
            let config = Config::load(Some(path))
                .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
            Some((config, format!("--config {}", path.display())))
        }
    };
    // Formatted here (not chained): kube's message already carries its causes.
    let cannot = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG): {e}"
        )
    };
    let kube_config = kube::Config::infer().await.map_err(|e| cannot(&e))?;
    let url = kube_config.cluster_url.to_string();
    let client = kube::Client::try_from(kube_config).map_err(|e| cannot(&e))?;
    let listed = collect::collect(&client, &args.namespace, given)
        .await
        .map_err(|e| anyhow!("{e} (at {url})"))?;
    let status = build::build(&listed);
    let text = match args.output {
        Output::Text => render::text(&status, args.tenants),
        Output::Json => render::json(&status),
    };
    print!("{text}");
    eprintln!(
        "read with {} API calls in {} ms",
        listed.calls,
        listed.elapsed.as_millis()
    );
    Ok(())
}
