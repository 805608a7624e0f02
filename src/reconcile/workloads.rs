//! The workloads controller's reconcile: the PriorityClass, the prewarmer Deployment and the
//! image-cache DaemonSets built from the latest observation ([`super::desired`]) and written by
//! [`super::apply`] (the prewarmer with the spare slots in force now, [`super::schedule`]), each
//! on its own backoff — unless the object is still as last written
//! ([`super::drift::unchanged`]): then nothing is sent. Every `resync` each object is applied
//! anyway.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, DeleteParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::IMAGE_CACHE_DISCOVERED;
use super::apply::apply;
use super::context::{Context, lock};
use super::desired;
use super::drift::{LastApplied, Written, unchanged};
use super::error::Error;
use super::observed::Observed;
use super::session::Session;
use super::{schedule, spare};

/// The objects the workloads controller keeps, each with its own backoff and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    PriorityClass,
    Deployment,
    DaemonSet,
    /// The DaemonSet of discovered images, with `imageCache.imagePullSecrets` only (deleted
    /// otherwise: [`desired::cache_sets`]).
    DiscoveredDaemonSet,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::PriorityClass,
        Target::Deployment,
        Target::DaemonSet,
        Target::DiscoveredDaemonSet,
    ];

    /// The `target` label of the metrics, and the backoff key.
    pub fn label(self) -> &'static str {
        match self {
            Target::PriorityClass => "priorityclass",
            Target::Deployment => "deployment",
            Target::DaemonSet => "daemonset",
            Target::DiscoveredDaemonSet => "daemonset-discovered",
        }
    }

    /// Whether a spec change shows in `metadata.generation` (not for a PriorityClass: it has no
    /// status and the API server keeps its generation on update).
    pub fn tracks_generation(self) -> bool {
        !matches!(self, Target::PriorityClass)
    }
}

/// What one run did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Applied,
    /// Still as last written: nothing sent.
    Unchanged,
}

/// Applies the objects (each on its own backoff) from the latest observation.
pub async fn reconcile(
    _own_namespace: Arc<PartialObjectMeta<Namespace>>,
    session: Arc<Session>,
) -> Result<Action, Error> {
    let ctx = &session.ctx;
    let Some(observed) = session.observed.borrow().clone() else {
        // The caches have not synced yet: the first observation triggers a run.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let mut next = ctx.settings.resync;
    let mut first_error = None;
    for target in Target::ALL {
        let key = target.label();
        if let Some(wait) = ctx.backoff.remaining(key, Instant::now()) {
            next = next.min(wait);
            continue;
        }
        let started = Instant::now();
        let result = keep(&session, target, &observed).await;
        match &result {
            Ok(Kept::Unchanged) => ctx.metrics.observe_unchanged(key),
            _ => ctx.metrics.observe_run(key, started.elapsed(), &result),
        }
        match result {
            Ok(_) => {
                ctx.backoff.succeeded(key);
                mark_synced(ctx, target);
            }
            Err(e) => {
                let wait = ctx.backoff.failed(key, Instant::now());
                tracing::warn!(target = key, error = %e, retry_in = ?wait, "reconcile failed");
                next = next.min(wait);
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Action::requeue(next)),
    }
}

pub fn error_policy(
    _own_namespace: Arc<PartialObjectMeta<Namespace>>,
    _error: &Error,
    session: Arc<Session>,
) -> Action {
    let now = Instant::now();
    let wait = Target::ALL
        .iter()
        .filter_map(|t| session.ctx.backoff.remaining(t.label(), now))
        .min();
    Action::requeue(wait.unwrap_or(Duration::from_secs(1)))
}

/// Ready once every object has been applied at least once (the caches had synced before).
fn mark_synced(ctx: &Context, target: Target) {
    let mut synced = lock(&ctx.synced);
    if synced.insert(target) && synced.len() == Target::ALL.len() {
        tracing::info!("first sync done: the warm pool is in place");
        ctx.readiness.set(true);
    }
}

/// Builds one object from the observation and keeps it in place.
async fn keep(session: &Session, target: Target, observed: &Observed) -> Result<Kept, Error> {
    let ctx = &session.ctx;
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.as_str();
    let config = &ctx.settings.config;
    let owner = ctx.owner.as_ref();
    match target {
        Target::PriorityClass => {
            keep_one(session, target, Api::all(client), desired::priority_class()).await
        }
        Target::Deployment => {
            // The clock is read here only: the builder gets the slots decided for now.
            let kept = *lock(&session.held);
            let decision = session.arrivals.with(|arrivals| {
                spare::decide(
                    &config.prewarmer,
                    &ctx.windows,
                    arrivals,
                    kept,
                    crate::clock::now(),
                )
            });
            session.next_change.send_replace(decision.spare.next_change);
            let deployment = desired::prewarmer(config, ns, &observed.slot, &decision.spare, owner);
            let written =
                keep_one(session, target, Api::namespaced(client, ns), deployment).await?;
            *lock(&session.held) = Some(decision.held);
            schedule::kept(ctx, &decision).await;
            Ok(written)
        }
        Target::DaemonSet | Target::DiscoveredDaemonSet => {
            let (cache, discovered) =
                desired::cache_sets(config, &observed.images, &observed.left_out);
            let api = Api::namespaced(client, ns);
            match (target, discovered) {
                (Target::DaemonSet, _) => {
                    let daemon_set = desired::image_cache(config, ns, &cache, owner);
                    keep_one(session, target, api, daemon_set).await
                }
                (_, Some(discovered)) => {
                    let daemon_set = desired::image_cache(config, ns, &discovered, owner);
                    keep_one(session, target, api, daemon_set).await
                }
                (_, None) => remove(session, target, api, IMAGE_CACHE_DISCOVERED).await,
            }
        }
    }
}

/// Deletes an object the configuration no longer asks for (the discovered images' DaemonSet once
/// `imageCache.imagePullSecrets` is emptied), unless its watch has seen it absent.
async fn remove(
    session: &Session,
    target: Target,
    api: Api<DaemonSet>,
    name: &str,
) -> Result<Kept, Error> {
    let seen = session.sightings.get(target);
    if seen.events > 0 && seen.meta.is_none() {
        return Ok(Kept::Unchanged);
    }
    let ctx = &session.ctx;
    let action = || format!("delete the DaemonSet {name}, no longer needed");
    match ctx
        .write(action, api.delete(name, &DeleteParams::background()))
        .await
    {
        Ok(_) => {
            tracing::info!(
                daemonset = name,
                "deleted: imageCache.imagePullSecrets is empty"
            );
            Ok(Kept::Applied)
        }
        Err(e) if e.api_code() == Some(404) => Ok(Kept::Unchanged),
        Err(e) => Err(e),
    }
}

async fn keep_one<K>(
    session: &Session,
    target: Target,
    api: Api<K>,
    desired: K,
) -> Result<Kept, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let ctx = &session.ctx;
    let by_generation = target.tracks_generation();
    let body = serde_json::to_value(&desired).map_err(|source| Error::Encode {
        what: format!("the desired {}", K::kind(&())),
        source,
    })?;
    let seen = session.sightings.get(target);
    let skip = lock(&session.applied)
        .get(&target)
        .is_some_and(|(last, at)| {
            // Every resync, written anyway (a tenth early: the requeue timer may fire on the dot).
            at.elapsed() < ctx.settings.resync * 9 / 10
                && unchanged(last, &body, desired.meta(), &seen, by_generation)
        });
    if skip {
        return Ok(Kept::Unchanged);
    }
    let written = apply(ctx, api, &desired).await?;
    let last = LastApplied {
        desired: body,
        written: Written::of(written.meta(), desired.meta(), by_generation),
        events_before: seen.events,
    };
    lock(&session.applied).insert(target, (last, Instant::now()));
    Ok(Kept::Applied)
}
