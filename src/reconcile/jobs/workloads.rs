//! The workloads controller's reconcile: the PriorityClass, the prewarmer Deployment and the
//! image-cache DaemonSets built from the latest observation ([`crate::core::pool::desired`]) and written by
//! [`crate::reconcile::base::apply`] (the prewarmer with the spare slots in force now, [`super::spare`]), each
//! on its own backoff — unless the object is still as last written
//! ([`crate::reconcile::watches::drift::unchanged`]): then nothing is sent. Every `resync` each object is applied
//! anyway.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, DeleteParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use super::arrivals::Book;
use super::spare;
use crate::core::names::IMAGE_CACHE_DISCOVERED;
use crate::core::pool::PoolObject;
use crate::core::pool::desired;
use crate::core::spare::decide;
use crate::core::spare::scale_down::Held;
use crate::reconcile::base::apply::apply;
use crate::reconcile::base::context::{Context, lock};
use crate::reconcile::base::error::Error;
use crate::reconcile::watches::drift::{LastApplied, Sightings, Written, unchanged};
use crate::reconcile::watches::pods::Observed;

/// What the workloads controller works with, for one leadership term.
pub struct Workloads {
    pub ctx: Arc<Context>,
    /// The latest observation; `None` until the caches have synced.
    pub observed: watch::Receiver<Option<Arc<Observed>>>,
    /// The written objects as their watches last showed them.
    pub sightings: Arc<Sightings>,
    /// What this term last applied of each object, and when.
    pub applied: Mutex<BTreeMap<PoolObject, (LastApplied, Instant)>>,
    /// The tenants' arrivals ([`super::arrivals`]).
    pub arrivals: Arc<Book>,
    /// The prewarmer's replicas as last written, and since when (gentle scale-down).
    pub held: Mutex<Option<Held>>,
    /// The next instant the spare slots change by the clock alone (the [`super::spare::changes`]
    /// timer waits for it).
    pub next_change: watch::Sender<Option<jiff::Timestamp>>,
}

/// What one run did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepResult {
    Applied,
    /// Still as last written: nothing sent.
    Unchanged,
}

/// Applies the objects (each on its own backoff) from the latest observation.
pub async fn reconcile(
    _own_namespace: Arc<PartialObjectMeta<Namespace>>,
    state: Arc<Workloads>,
) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let Some(observed) = state.observed.borrow().clone() else {
        // The caches have not synced yet: the first observation triggers a run.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let mut next = ctx.settings.resync;
    let mut first_error = None;
    for target in PoolObject::ALL {
        let key = target.label();
        if let Some(wait) = ctx.backoff.remaining(key, Instant::now()) {
            next = next.min(wait);
            continue;
        }
        let started = Instant::now();
        let result = keep(&state, target, &observed).await;
        match &result {
            Ok(KeepResult::Unchanged) => ctx.metrics.observe_unchanged(key),
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
    state: Arc<Workloads>,
) -> Action {
    let now = Instant::now();
    let wait = PoolObject::ALL
        .iter()
        .filter_map(|t| state.ctx.backoff.remaining(t.label(), now))
        .min();
    Action::requeue(wait.unwrap_or(Duration::from_secs(1)))
}

/// Ready once every object has been applied at least once (the caches had synced before).
fn mark_synced(ctx: &Context, target: PoolObject) {
    let mut synced = lock(&ctx.synced);
    if synced.insert(target) && synced.len() == PoolObject::ALL.len() {
        tracing::info!("first sync done: the warm pool is in place");
        ctx.readiness.set(true);
    }
}

/// Builds one object from the observation and keeps it in place.
async fn keep(
    state: &Workloads,
    target: PoolObject,
    observed: &Observed,
) -> Result<KeepResult, Error> {
    let ctx = &state.ctx;
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.as_str();
    let config = &ctx.settings.config;
    let owner = ctx.owner.as_ref();
    match target {
        PoolObject::PriorityClass => {
            keep_one(state, target, Api::all(client), desired::priority_class()).await
        }
        PoolObject::Deployment => {
            // The clock is read here only: the builder gets the slots decided for now.
            let kept = *lock(&state.held);
            let decision = state.arrivals.with(|arrivals| {
                decide::decide(
                    &config.prewarmer,
                    &ctx.windows,
                    arrivals,
                    kept,
                    crate::reconcile::base::clock::now(),
                )
            });
            state.next_change.send_replace(decision.spare.next_change);
            let deployment = desired::prewarmer(config, ns, &observed.slot, &decision.spare, owner);
            let written = keep_one(state, target, Api::namespaced(client, ns), deployment).await?;
            *lock(&state.held) = Some(decision.held);
            spare::kept(ctx, &decision).await;
            Ok(written)
        }
        PoolObject::DaemonSet | PoolObject::DiscoveredDaemonSet => {
            let (cache, discovered) =
                desired::cache_sets(config, &observed.images, &observed.left_out);
            let api = Api::namespaced(client, ns);
            match (target, discovered) {
                (PoolObject::DaemonSet, _) => {
                    let daemon_set = desired::image_cache(config, ns, &cache, owner);
                    keep_one(state, target, api, daemon_set).await
                }
                (_, Some(discovered)) => {
                    let daemon_set = desired::image_cache(config, ns, &discovered, owner);
                    keep_one(state, target, api, daemon_set).await
                }
                (_, None) => remove(state, target, api, IMAGE_CACHE_DISCOVERED).await,
            }
        }
    }
}

/// Deletes an object the configuration no longer asks for (the discovered images' DaemonSet once
/// `imageCache.imagePullSecrets` is emptied), unless its watch has seen it absent.
async fn remove(
    state: &Workloads,
    target: PoolObject,
    api: Api<DaemonSet>,
    name: &str,
) -> Result<KeepResult, Error> {
    let seen = state.sightings.get(target);
    if seen.events > 0 && seen.meta.is_none() {
        return Ok(KeepResult::Unchanged);
    }
    let ctx = &state.ctx;
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
            Ok(KeepResult::Applied)
        }
        Err(e) if e.api_code() == Some(404) => Ok(KeepResult::Unchanged),
        Err(e) => Err(e),
    }
}

async fn keep_one<K>(
    state: &Workloads,
    target: PoolObject,
    api: Api<K>,
    desired: K,
) -> Result<KeepResult, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let ctx = &state.ctx;
    let by_generation = target.tracks_generation();
    let body = serde_json::to_value(&desired).map_err(|source| Error::Encode {
        what: format!("the desired {}", K::kind(&())),
        source,
    })?;
    let seen = state.sightings.get(target);
    let skip = lock(&state.applied).get(&target).is_some_and(|(last, at)| {
        // Every resync, written anyway (a tenth early: the requeue timer may fire on the dot).
        at.elapsed() < ctx.settings.resync * 9 / 10
            && unchanged(last, &body, desired.meta(), &seen, by_generation)
    });
    if skip {
        return Ok(KeepResult::Unchanged);
    }
    let written = apply(ctx, api, &desired).await?;
    let last = LastApplied {
        desired: body,
        written: Written::of(written.meta(), desired.meta(), by_generation),
        events_before: seen.events,
    };
    lock(&state.applied).insert(target, (last, Instant::now()));
    Ok(KeepResult::Applied)
}
