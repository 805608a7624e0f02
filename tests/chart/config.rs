//! The rendered warmpool config: taken by the binary's strict loader, agreeing with the NodePool, its defaults.

use std::path::Path;
use std::process::Output;

use serde_json::json;

use crate::{VARIANTS, config_of, container};
use support::chart::{find, helm, render, text};

/// `warmpool mutate [--config CONFIG] --namespace demo-1 -f POD -o json`.
fn mutate(binary: &Path, config: Option<&Path>, pod: &Path) -> Output {
    let mut args = vec!["mutate"];
    if let Some(config) = config {
        args.extend(["--config", config.to_str().unwrap()]);
    }
    args.extend([
        "--namespace",
        "demo-1",
        "-f",
        pod.to_str().unwrap(),
        "-o",
        "json",
    ]);
    support::chart::run(binary, &args, &[], None)
}

#[test]
fn rendered_config_is_accepted_by_the_binary_and_agrees_with_the_nodepool() {
    let Some(helm) = helm() else { return };
    let binary = Path::new(env!("CARGO_BIN_EXE_warmpool"));
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web, image: nginx}]\n",
    )
    .unwrap();

    for (name, args) in VARIANTS {
        let docs = render(&helm, "wp", "warmpool-system", args);
        let config = config_of(&docs);
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, serde_saphyr::to_string(&config).unwrap()).unwrap();
        // The strict loader of src/config/mod.rs (unknown keys rejected) takes what the chart renders.
        let out = mutate(binary, Some(&file), &pod);
        assert!(
            out.status.success(),
            "{name}: warmpool rejects the rendered config:\n{}\n{}",
            text(&out.stderr),
            serde_saphyr::to_string(&config).unwrap()
        );
        // toolImage is the chart's own image (the image cache copies its static binary).
        let deployment = find(&docs, "Deployment", None);
        assert_eq!(
            config["imageCache"]["toolImage"],
            container(deployment, "webhook")["image"],
            "{name}"
        );
    }

    // One source of truth: the label and taint of the NodePool are the affinity and the
    // toleration that the webhook injects.
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &[
            "--set",
            "nodePool.enabled=true",
            "--set",
            "pool.nodeLabel.key=example.com/pool",
            "--set",
            "pool.nodeLabel.value=gold",
            "--set",
            "pool.taint.effect=NoExecute",
        ],
    );
    let config = config_of(&docs);
    assert_eq!(
        config["pool"]["nodeLabel"],
        json!({"key": "example.com/pool", "value": "gold"})
    );
    assert_eq!(
        config["pool"]["tolerations"],
        json!([{"key": "example.com/pool", "operator": "Equal", "value": "gold", "effect": "NoExecute"}])
    );
    let np = find(&docs, "NodePool", None);
    assert_eq!(
        np["spec"]["template"]["metadata"]["labels"],
        json!({"example.com/pool": "gold"})
    );
    assert_eq!(
        np["spec"]["template"]["spec"]["taints"],
        json!([{"key": "example.com/pool", "value": "gold", "effect": "NoExecute"}])
    );
    let out = mutate(binary, None, &pod);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Defaults: the CargoCATs setup of DESIGN.md.
    let config = config_of(&render(&helm, "wp", "warmpool-system", &[]));
    assert_eq!(config["tenants"]["namespacePatterns"], json!(["demo-*"]));
    assert_eq!(
        config["pool"]["nodeLabel"],
        json!({"key": "workload-type", "value": "cargocats"})
    );
    assert_eq!(config["pool"]["affinity"], "required");
    assert_eq!(
        config["pool"]["tolerations"],
        json!([{"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}])
    );
    assert_eq!(
        config["prewarmer"]["slot"],
        json!({"cpu": "640m", "memory": "2150Mi"})
    );
    assert_eq!(config["prewarmer"]["spareSlots"], 1);
    assert_eq!(
        config["prewarmer"]["doNotDisrupt"], false,
        "it would hold up drift and expiry"
    );
    assert_eq!(config["imageCache"]["discover"], true);
    assert_eq!(config["imageCache"]["images"].as_array().unwrap().len(), 3);
    assert_eq!(
        config["imageCache"]["architectures"],
        json!(["amd64", "arm64"])
    );
    // A single-arch image of one's own: the value reaches the configuration.
    let config = config_of(&render(
        &helm,
        "wp",
        "ns",
        &["--set", "imageCache.architectures={arm64}"],
    ));
    assert_eq!(config["imageCache"]["architectures"], json!(["arm64"]));
    let config = config_of(&render(
        &helm,
        "wp",
        "ns",
        &["--set", "prewarmer.slot.auto=true"],
    ));
    assert_eq!(config["prewarmer"]["slot"], "auto");
}

/// `prewarmer.schedule`: empty by default; the workshop of issue 14 reaches the configuration as
/// written, with spareSlots an integer, and the binary's loader (which validates each window)
/// takes it.
#[test]
fn the_schedule_reaches_the_configuration_and_the_binary_takes_it() {
    let Some(helm) = helm() else { return };
    let config = config_of(&render(&helm, "wp", "warmpool-system", &[]));
    assert_eq!(config["prewarmer"]["schedule"], json!([]));

    let config = config_with_values(
        &helm,
        "prewarmer:\n  spareSlots: 1\n  schedule:\n    - name: workshop-mornings\n      \
         timezone: Europe/Berlin\n      cron: \"0 9 * * 1-5\"\n      duration: 4h\n      \
         spareSlots: 30\n      leadTime: 15m\n    - {name: nightly, cron: '0 22 * * *', \
         duration: 2h, spareSlots: 2}\n",
    );
    assert_eq!(
        config["prewarmer"]["schedule"],
        json!([
            {"name": "workshop-mornings", "timezone": "Europe/Berlin", "cron": "0 9 * * 1-5",
             "duration": "4h", "spareSlots": 30, "leadTime": "15m"},
            {"name": "nightly", "cron": "0 22 * * *", "duration": "2h", "spareSlots": 2},
        ])
    );
    let out = assert_the_binary_renders(&config, &["--at", "2026-11-30T08:50:00+01:00"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"][1]["spec"]["replicas"], 30);
    assert_eq!(
        list["items"][1]["metadata"]["annotations"]["warmpool.io/schedule-window"],
        "workshop-mornings"
    );
}

/// `prewarmer.spareSlots` auto and `prewarmer.scaleDown`: absent by default (an integer, no
/// scaleDown key); set, they reach the configuration typed as the binary reads them, and the
/// binary takes it (`render` shows auto's min, and says so).
#[test]
fn arrival_sized_slots_and_gentle_scale_down_reach_the_configuration() {
    let Some(helm) = helm() else { return };
    let config = config_of(&render(&helm, "wp", "warmpool-system", &[]));
    assert_eq!(config["prewarmer"]["spareSlots"], 1);
    assert!(
        config["prewarmer"].get("scaleDown").is_none(),
        "off by default"
    );

    let config = config_with_values(
        &helm,
        "prewarmer:\n  spareSlots:\n    auto: {min: 2, max: 30, span: 10m, lookback: 3d}\n  \
         scaleDown: {enabled: true, step: 2, every: 1m, quietFor: 5m}\n",
    );
    assert_eq!(
        config["prewarmer"]["spareSlots"],
        json!({"auto": {"min": 2, "max": 30, "span": "10m", "lookback": "3d"}})
    );
    assert_eq!(
        config["prewarmer"]["scaleDown"],
        json!({"step": 2, "every": "1m", "quietFor": "5m"})
    );
    let out = assert_the_binary_renders(&config, &[]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list["items"][1]["spec"]["replicas"], 2,
        "auto's min offline"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("prewarmer.spareSlots is auto"), "{stderr}");
    assert!(stderr.contains("prewarmer.scaleDown is set"), "{stderr}");
}

/// `tenants.timeToReady`: on by default with the binary's defaults (1m, 10m); set, it reaches
/// the configuration as given and the binary takes it.
#[test]
fn time_to_ready_reaches_the_configuration() {
    let Some(helm) = helm() else { return };
    let config = config_of(&render(&helm, "wp", "warmpool-system", &[]));
    assert_eq!(
        config["tenants"]["timeToReady"],
        json!({"enabled": true, "window": "1m", "timeout": "10m"})
    );
    let config = config_of(&render(
        &helm,
        "wp",
        "warmpool-system",
        &[
            "--set",
            "tenants.timeToReady.enabled=false",
            "--set",
            "tenants.timeToReady.window=30s",
        ],
    ));
    assert_eq!(
        config["tenants"]["timeToReady"],
        json!({"enabled": false, "window": "30s", "timeout": "10m"})
    );
    assert_the_binary_renders(&config, &[]);
}

/// `pricing`: absent by default; given, it reaches the configuration as numbers and the binary
/// takes it.
#[test]
fn pricing_reaches_the_configuration() {
    let Some(helm) = helm() else { return };
    let config = config_of(&render(&helm, "wp", "warmpool-system", &[]));
    assert!(config.get("pricing").is_none(), "no prices by default");
    let config = config_of(&render(
        &helm,
        "wp",
        "warmpool-system",
        // Numbers, as in a values file (`--set` would make them strings).
        &[
            "--set-json",
            r#"pricing={"cpuCoreHour": 0.034, "memoryGiBHour": 0.0045}"#,
        ],
    ));
    assert_eq!(
        config["pricing"],
        json!({"cpuCoreHour": 0.034, "memoryGiBHour": 0.0045, "currency": "USD"})
    );
    assert_the_binary_renders(&config, &[]);
}

/// The rendered configuration is taken by `warmpool render --config CONFIG -o json ARGS` (the
/// strict loader); what it printed.
fn assert_the_binary_renders(config: &serde_json::Value, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, serde_saphyr::to_string(config).unwrap()).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_warmpool"));
    let mut render = vec!["render", "--config", file.to_str().unwrap(), "-o", "json"];
    render.extend(args);
    let out = support::chart::run(binary, &render, &[], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// The configuration the chart renders with the values file `values` (YAML).
fn config_with_values(helm: &Path, values: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    config_of(&render(
        helm,
        "wp",
        "warmpool-system",
        &["-f", file.to_str().unwrap()],
    ))
}

/// One tenant rule: the namespaces the webhook is never called for are the ones the reconciler
/// never takes for tenants (`tenants.excludeNamespaces` and `namespaceMatchExpressions` reach
/// both), and the image-cache and
/// slot keys of a hostile-tenant setup reach the configuration the binary takes.
#[test]
fn exclusions_and_tenant_bounds_reach_the_configuration() {
    let Some(helm) = helm() else { return };
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &[
            "--set",
            "tenants.excludeNamespaces={demo-shared}",
            "--set-json",
            r#"tenants.namespaceMatchExpressions=[{"key":"team","operator":"In","values":["payments"]}]"#,
            "--set",
            "prewarmer.slot.auto=true",
            "--set",
            "prewarmer.slotMax.cpu=2",
            "--set",
            "prewarmer.slotMax.memory=4Gi",
            "--set",
            "imageCache.discoverPerNamespace=3",
            "--set",
            "imageCache.discoverRegistries={ghcr.io/acme}",
            "--set",
            "imageCache.maxBytesPerNode=30Gi",
        ],
    );
    let config = config_of(&docs);
    assert_eq!(
        config["tenants"]["excludeNamespaces"],
        json!(["demo-shared"])
    );
    let team = json!({"key": "team", "operator": "In", "values": ["payments"]});
    assert_eq!(
        config["tenants"]["namespaceMatchExpressions"],
        json!([team])
    );
    assert_eq!(
        config["prewarmer"]["slotMax"],
        json!({"cpu": "2", "memory": "4Gi"})
    );
    assert_eq!(config["imageCache"]["discoverPerNamespace"], 3);
    assert_eq!(
        config["imageCache"]["discoverRegistries"],
        json!(["ghcr.io/acme"])
    );
    assert_eq!(config["imageCache"]["maxBytesPerNode"], "30Gi");
    let mwc = support::chart::find(&docs, "MutatingWebhookConfiguration", None);
    for entry in mwc["webhooks"].as_array().unwrap() {
        let excluded = entry["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .expect("the name exclusion");
        assert!(
            excluded["values"]
                .as_array()
                .unwrap()
                .contains(&json!("demo-shared"))
        );
        let requirements = entry["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert!(requirements.contains(&team), "{requirements:?}");
    }
    assert_the_binary_renders(&config, &[]);
}
