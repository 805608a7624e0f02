//! The enroller: the namespace queue's worker. For each namespace it asks [`crate::core::enrolment`]
//! (pure) what to do, writes or releases the label by server-side apply, and records an Event
//! (`Enrolled`, `Unenrolled`) in the namespace itself. Failures back off per namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::core::enrolment::{
    Enrolment, LEGACY_FIELD_MANAGER, enrolment, enrolment_patch, release_patch,
};
use crate::core::tenant::{ENABLED, TENANT_LABEL};
use crate::reconcile::base::context::Context;
use crate::reconcile::base::error::Error;
use crate::reconcile::jobs::tenant_ready::Tracker;
use crate::reconcile::watches::namespaces::CachedNamespace;

/// The `target` label of the metrics of this queue.
const NAMESPACE_TARGET: &str = "namespace";

/// What the enrolment controller works with: the shared context, and the time-to-Ready tracker
/// it hands each new tenant to.
pub struct Enroller {
    pub ctx: Arc<Context>,
    pub time_to_ready: Arc<Tracker>,
}

fn backoff_key(name: &str) -> String {
    format!("namespace/{name}")
}

/// Labels one namespace, or takes warmpool's label back, if it should (and records an Event);
/// everything else is a no-op.
pub async fn reconcile_namespace(
    ns: Arc<CachedNamespace>,
    enroller: Arc<Enroller>,
) -> Result<Action, Error> {
    let ctx = &enroller.ctx;
    let name = ns.name_any();
    if ns.terminating() {
        // Nothing to measure any more (and a terminating namespace refuses new Events).
        enroller.time_to_ready.forget(&name);
        return Ok(Action::await_change());
    }
    if ctx.selector.is_tenant_by_facts(&name, ns.label_facts()) {
        enroller.time_to_ready.consider(ctx, &ns);
    }
    let decision = enrolment(&ctx.selector, &name, ns.label_facts(), ns.label_owners());
    if let Enrolment::Leave(_) = decision {
        return Ok(Action::await_change());
    }
    let key = backoff_key(&name);
    if let Some(wait) = ctx.backoff.remaining(&key, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();
    let rv = ns.meta().resource_version.as_deref();
    let result = match &decision {
        Enrolment::Enrol { .. } => {
            let body = enrolment_patch(&name, rv);
            write(ctx, &name, &ctx.enrolment_manager, &body, "label")
                .await
                .map(|_| ())
        }
        Enrolment::Unenrol {
            release_ours,
            release_legacy,
        } => unenrol(ctx, &name, rv, *release_ours, *release_legacy).await,
        Enrolment::Leave(_) => Ok(()),
    };
    ctx.metrics
        .observe_run(NAMESPACE_TARGET, started.elapsed(), &result);
    match result {
        Ok(()) => {
            ctx.backoff.succeeded(&key);
            let event = match &decision {
                Enrolment::Enrol { pattern } => {
                    ctx.metrics.enrolled.inc();
                    tracing::info!(namespace = %name, %pattern, "enrolled: labelled {TENANT_LABEL}={ENABLED}");
                    enrolled_event(pattern)
                }
                _ => {
                    ctx.metrics.unenrolled.inc();
                    let patterns = ctx.settings.config.tenants.namespace_patterns.join("`, `");
                    tracing::info!(namespace = %name, patterns = %patterns, "un-enrolled: removed the {TENANT_LABEL}={ENABLED} label warmpool had set");
                    unenrolled_event(&patterns)
                }
            };
            publish(ctx, &ns, &name, &event).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let wait = ctx.backoff.failed(&key, Instant::now());
            tracing::warn!(namespace = %name, error = %e, retry_in = ?wait, "enrolment failed");
            Err(e)
        }
    }
}

/// Lets go of the label: this installation's ownership, then 0.1.0's, each write guarded by the
/// resourceVersion the previous one returned. The API server removes the label with the last
/// owner.
async fn unenrol(
    ctx: &Context,
    name: &str,
    resource_version: Option<&str>,
    release_ours: bool,
    release_legacy: bool,
) -> Result<(), Error> {
    let mut rv = resource_version.map(str::to_owned);
    if release_ours {
        let written = write(
            ctx,
            name,
            &ctx.enrolment_manager,
            &release_patch(name, rv.as_deref()),
            "un-label",
        )
        .await?;
        rv = written.metadata.resource_version;
    }
    if release_legacy {
        write(
            ctx,
            name,
            LEGACY_FIELD_MANAGER,
            &release_patch(name, rv.as_deref()),
            "un-label (0.1.0's label)",
        )
        .await?;
    }
    Ok(())
}

/// One server-side apply to a namespace by `manager`, while leading.
async fn write(
    ctx: &Context,
    name: &str,
    manager: &str,
    body: &serde_json::Value,
    verb: &str,
) -> Result<Namespace, Error> {
    let action = || format!("{verb} Namespace {name} {TENANT_LABEL}={ENABLED}");
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let params = PatchParams::apply(manager).force();
    ctx.write(action, api.patch(name, &params, &Patch::Apply(body)))
        .await
}

fn enrolled_event(pattern: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Enrolled".into(),
        note: Some(format!(
            "labelled {TENANT_LABEL}={ENABLED}: the name matches the tenant pattern `{pattern}`"
        )),
        action: "Enrol".into(),
        secondary: None,
    }
}

fn unenrolled_event(patterns: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Unenrolled".into(),
        note: Some(format!(
            "removed the label {TENANT_LABEL}={ENABLED} that warmpool had set: the name matches \
             no tenant pattern any more (`{patterns}`); new pods here are no longer steered to \
             the warm pool"
        )),
        action: "Unenrol".into(),
        secondary: None,
    }
}

async fn publish(ctx: &Context, ns: &CachedNamespace, name: &str, event: &Event) {
    // Recorded inside the namespace itself, so that `kubectl get events -n <tenant>` shows it
    // and it goes away with the namespace.
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Namespace".into()),
        name: Some(name.to_owned()),
        namespace: Some(name.to_owned()),
        uid: ns.meta().uid.clone(),
        ..ObjectReference::default()
    };
    let action = || format!("record the {} event in {name}", event.reason);
    if let Err(e) = ctx
        .write(action, ctx.recorder_once().publish(event, &reference))
        .await
    {
        tracing::warn!(namespace = %name, reason = %event.reason, error = %e, "cannot record the event");
    }
}

pub fn error_policy(ns: Arc<CachedNamespace>, _error: &Error, enroller: Arc<Enroller>) -> Action {
    let wait = enroller
        .ctx
        .backoff
        .remaining(&backoff_key(&ns.name_any()), Instant::now());
    Action::requeue(wait.unwrap_or(Duration::from_secs(1)))
}

/// Every `resync`, all namespaces are queued again (events can be missed); the backoff entries of
/// namespaces that are gone are dropped then too.
pub fn resync_namespaces(
    ctx: &Arc<Context>,
    store: &Store<CachedNamespace>,
    resync: Duration,
) -> impl futures::Stream<Item = Result<ObjectRef<CachedNamespace>, watcher::Error>> + Send + use<>
{
    let ctx = ctx.clone();
    let store = store.clone();
    let ticks = tokio::time::interval_at(Instant::now() + resync, resync);
    stream::unfold(ticks, move |mut ticks| {
        let ctx = ctx.clone();
        let store = store.clone();
        async move {
            ticks.tick().await;
            let refs: Vec<_> = store
                .state()
                .iter()
                .map(|ns| ObjectRef::from_obj(&**ns))
                .collect();
            ctx.backoff
                .retain(|key| match key.strip_prefix("namespace/") {
                    Some(name) => store.get(&ObjectRef::new(name)).is_some(),
                    None => true,
                });
            Some((refs, ticks))
        }
    })
    .flat_map(|refs| stream::iter(refs.into_iter().map(Ok)))
}
