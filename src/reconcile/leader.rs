//! The leader loop: every replica runs the election ([`super::base::lease`]); the one that holds the
//! Lease runs a [`super::session`] until the Lease is lost or a stream ends, and gives the Lease
//! up on shutdown.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use super::base::backoff::Backoff;
use super::base::context::{Context, PodIdentity, Settings};
use super::base::error::Error;
use super::base::lease::{Elector, LeaderGate, LeaseSettings};
use super::base::metrics::Metrics;
use super::base::owner;
use super::base::owner::Found;
use super::session;
use crate::core::enrolment;
use crate::core::names::LEASE;
use crate::telemetry::Readiness;

/// Runs until `shutdown` resolves: elects, reconciles while leading, then gives the Lease up.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let selector = settings
        .config
        .tenants
        .selector(Some(&settings.namespace))
        .map_err(|e| Error::Settings(format!("tenants.namespacePatterns: {e}")))?;
    let owner = find_owner(&client, settings.pod.as_ref()).await?;
    let lease = LeaseSettings::new(LEASE, &settings.identity, settings.lease_duration)?
        .owned_by(owner.clone());
    check_namespace(&client, &settings.namespace).await;
    let windows = settings.config.prewarmer.windows();

    let write_timeout = lease.write_timeout();
    let gate = LeaderGate::default();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let elector = Elector::new(
        Api::namespaced(client.clone(), &settings.namespace),
        lease,
        gate.clone(),
    );
    let elector = tokio::spawn(elector.run(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));

    let reporter = Reporter {
        controller: "warmpool".into(),
        instance: Some(settings.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    let ctx = Arc::new(Context {
        client,
        selector,
        enrolment_manager: enrolment::field_manager(&settings.namespace),
        owner,
        metrics,
        recorder,
        reporter,
        gate: gate.clone(),
        write_timeout,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(120)),
        readiness: readiness.clone(),
        synced: Mutex::new(BTreeSet::new()),
        windows,
        spare_kept: Mutex::new(None),
        settings,
    });
    ctx.metrics.publish_spare(
        &super::jobs::spare::now(&ctx),
        &ctx.settings.config.prewarmer.window_names(),
    );

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = gate.acquired() => {}
            () = &mut shutdown => break,
            () = tokio::time::sleep(Duration::from_millis(250)), if !readiness.is_ready() => {
                // A standby is ready once it has seen the Lease held by someone else.
                if gate.sees_other_leader() && !gate.is_leader() {
                    tracing::info!(identity = %ctx.settings.identity, "standing by: another replica holds the lease");
                    readiness.set(true);
                }
                continue;
            }
        }
        tracing::info!(identity = %ctx.settings.identity, "leading: reconciling");
        ctx.metrics.leader.set(1);
        let ended = tokio::select! {
            result = session::lead(ctx.clone()) => Some(result),
            () = gate.lost() => None,
            () = &mut shutdown => {
                ctx.metrics.leader.set(0);
                break;
            }
        };
        ctx.metrics.leader.set(0);
        let restart = ended.is_some();
        match ended {
            None => tracing::warn!("lease lost: stopped writing"),
            Some(Err(e)) => tracing::error!(error = %e, "reconciling stopped; restarting"),
            Some(Ok(())) => tracing::error!("reconciling ended unexpectedly; restarting"),
        }
        if restart {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    tracing::info!("shutting down");
    readiness.set(false);
    let _ = stop_tx.send(true);
    if let Err(e) = elector.await {
        tracing::warn!(error = %e, "the lease task ended abnormally");
    }
    Ok(())
}

/// warmpool's own Deployment as an owner reference, when running in a pod; the lookup is retried
/// for a while (the API server may still be starting) and then fails the start.
async fn find_owner(
    client: &Client,
    pod: Option<&PodIdentity>,
) -> Result<Option<OwnerReference>, Error> {
    let Some(pod) = pod else {
        tracing::info!("not running in a pod: no owner references");
        return Ok(None);
    };
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match owner::own_deployment(client, &pod.namespace, &pod.name).await {
            Ok(Found::Deployment(owner)) => {
                tracing::info!(owner = %owner.name, "objects will be owned by warmpool's Deployment");
                return Ok(Some(owner));
            }
            Ok(Found::NoDeployment(why)) => {
                tracing::warn!(reason = %why, "no owner references");
                return Ok(None);
            }
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, attempt, "looking up warmpool's own Deployment failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn check_namespace(client: &Client, namespace: &str) {
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    match api.get_metadata_opt(namespace).await {
        Ok(Some(_)) => {}
        Ok(None) => tracing::warn!(
            namespace,
            "warmpool's namespace does not exist: the prewarmer and the image cache are created once it does"
        ),
        Err(e) => tracing::warn!(namespace, error = %e, "cannot read warmpool's namespace"),
    }
}
