//! Every rendered manifest passes a server-side dry run on the real API server.

use std::time::Duration;

use crate::VARIANTS;
use support::chart::{Cluster, cluster, find, helm, kinds, render, text, unique};

/// `kubectl apply --dry-run=server`, retried briefly while a just-installed CRD reaches
/// discovery.
fn dry_run_apply(cluster: &Cluster, yaml: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..20 {
        // Server-side apply: one request per object, create or update decided by the API
        // server. Client-side apply reads first and patches after, and the chart's cluster-wide
        // PriorityClass can be deleted in between by the install test (helm uninstall) running
        // beside this one. Forced: other managers' fields are no conflict for a dry run.
        let out = cluster.kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=warmpool-chart-dry-run",
                "--dry-run=server",
                "-f",
                "-",
            ],
            Some(yaml),
        );
        if out.status.success() {
            return Ok(text(&out.stdout));
        }
        last = text(&out.stderr);
        if !last.contains("ensure CRDs are installed") && !last.contains("no matches for kind") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

#[test]
fn every_rendered_manifest_passes_server_side_dry_run() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    cluster.install_crds();
    let ns = cluster.namespace(&unique("wpdry"));
    for (name, args) in VARIANTS {
        // Exactly what Helm prints, as `helm install` would send it.
        let yaml = support::chart::render_text(&helm, "dry", &ns.name, args);
        let docs = support::chart::parse_documents(&yaml);
        let out = dry_run_apply(&cluster, &yaml)
            .unwrap_or_else(|e| panic!("{name}: the API server rejects the chart:\n{e}"));
        // Every object was taken (and validated: CEL compiled, CRD schemas checked).
        let applied = out
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(applied, docs.len(), "{name}: {out}\n{:?}", kinds(&docs));
    }
    // Globs of every shape compile as CEL on the real API server.
    let docs = render(
        &helm,
        "dry",
        &ns.name,
        &[
            "--set-json",
            r#"tenants.namespacePatterns=["demo-*","team-?","[ab]-*","[!a-c]x?","{blue,green}-*","*-prod","pay","a\\*b","**x"]"#,
        ],
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    dry_run_apply(&cluster, &serde_saphyr::to_string(mwc).unwrap())
        .unwrap_or_else(|e| panic!("the API server rejects the generated CEL:\n{e}"));
}
