//! `prewarmer.spareSlots: {auto: ...}` on the real control plane: the prewarmer follows the
//! tenants that arrive, the arrivals are recorded in the ConfigMap `warmpool-arrivals`, and a
//! new reconciler, started after those tenants' namespaces are gone, still keeps their count
//! (the record, not the namespaces, remembers them).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams};

use support::cluster::{client, eventually, eventually_explained};
use support::reconciler::Run;

use super::BIN;
use warmpool::config::Config;
const TENANTS: usize = 4;

#[tokio::test]
async fn arrivals_size_the_spare_slots_and_outlive_their_namespaces_and_the_reconciler() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(
        &client,
        BIN.as_ref(),
        Config::from_yaml(
            "prewarmer: {spareSlots: {auto: {min: 1, max: 10, span: 15m, lookback: 7d}}}\n\
             imageCache: {discover: false}",
        )
        .expect("the test's configuration"),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &run.namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &run.namespace);
    let replicas = || async {
        deployments
            .get_opt("warmpool-prewarmer")
            .await
            .ok()??
            .spec?
            .replicas
    };

    let mut first = run.spawn("arrivals-1", &[], &[]);
    first.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(replicas().await, Some(1), "no arrival yet: min");
    let tenants: Vec<String> = (1..=TENANTS).map(|i| run.tenant(&i.to_string())).collect();
    let started = Instant::now();
    for t in &tenants {
        run.create_namespace(t, &[]).await;
    }
    eventually_explained(
        "the prewarmer at one slot per tenant arrived",
        Duration::from_secs(60),
        || async { (replicas().await == Some(TENANTS as i32)).then_some(()) },
        || async { first.logs() },
    )
    .await;
    let sized = started.elapsed();
    let record = eventually(
        "every arrival in the record",
        Duration::from_secs(90),
        || async {
            let text = configmaps
                .get_opt("warmpool-arrivals")
                .await
                .ok()??
                .data?
                .remove("arrivals")?;
            tenants
                .iter()
                .all(|t| text.lines().any(|l| l.ends_with(&format!(" {t}"))))
                .then_some(text)
        },
    )
    .await;
    let recorded = started.elapsed();
    let writes = first
        .get("/metrics")
        .await
        .map(|(_, body)| {
            body.lines()
                .find_map(|l| {
                    l.strip_prefix(r#"warmpool_reconcile_runs_total{target="arrivals"} "#)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .unwrap_or(0.0)
        })
        .unwrap_or(0.0);
    first.terminate();
    eprintln!(
        "arrivals: {TENANTS} tenants -> {TENANTS} spare slots in {:.1} s; all recorded in {:.1} s \
         with {writes} ConfigMap write(s); the record:\n{record}",
        sized.as_secs_f64(),
        recorded.as_secs_f64()
    );

    // The tenants leave: their namespaces are deleted and gone.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for t in &tenants {
        let _ = namespaces.delete(t, &DeleteParams::background()).await;
    }
    eventually(
        "the tenants' namespaces gone",
        Duration::from_secs(120),
        || async {
            for t in &tenants {
                if namespaces.get_opt(t).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    // A new reconciler: its first sync already keeps the count of the record.
    let mut next = run.spawn("arrivals-2", &[], &[]);
    next.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(
        replicas().await,
        Some(TENANTS as i32),
        "the arrivals of deleted namespaces are remembered:\n{}",
        next.logs()
    );
    assert_eq!(
        next.metric("warmpool_reconcile_arrivals_peak").await,
        Some(TENANTS as f64)
    );
    next.terminate();
    run.cleanup().await;
}
