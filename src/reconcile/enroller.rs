//! The enroller: the namespace queue's worker. For each namespace it asks [`super::enrolment`]
//! (pure) what to do, writes the label by server-side apply, and records an Event in the
//! namespace itself. Failures back off per namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::time::Instant;

use super::FIELD_MANAGER;
use super::context::Context;
use super::enrolment::{Enrolment, enrolment, enrolment_patch};
use super::error::Error;
use super::session::Session;
use crate::tenant::{ENABLED, TENANT_LABEL};

/// The `target` label of the metrics of this queue.
const NAMESPACE_TARGET: &str = "namespace";
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

fn backoff_key(name: &str) -> String {
    format!("namespace/{name}")
}

/// Labels one namespace if it should be (and records an Event); everything else is a no-op.
pub async fn reconcile_namespace(
    ns: Arc<PartialObjectMeta<Namespace>>,
    session: Arc<Session>,
) -> Result<Action, Error> {
    let ctx = &session.ctx;
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let labels = ns.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    let Enrolment::Label { pattern } = enrolment(&ctx.selector, &name, labels) else {
        return Ok(Action::await_change());
    };
    let key = backoff_key(&name);
    if let Some(wait) = ctx.backoff.remaining(&key, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();
    let result = label_namespace(ctx, &ns, &name).await;
    ctx.metrics
        .observe_run(NAMESPACE_TARGET, started.elapsed(), &result);
    match result {
        Ok(()) => {
            ctx.backoff.succeeded(&key);
            ctx.metrics.enrolled.inc();
            tracing::info!(namespace = %name, %pattern, "enrolled: labelled {TENANT_LABEL}={ENABLED}");
            publish_enrolled(ctx, &ns, &name, &pattern).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let wait = ctx.backoff.failed(&key, Instant::now());
            tracing::warn!(namespace = %name, error = %e, retry_in = ?wait, "enrolment failed");
            Err(e)
        }
    }
}

async fn label_namespace(
    ctx: &Context,
    ns: &PartialObjectMeta<Namespace>,
    name: &str,
) -> Result<(), Error> {
    let action = || format!("label Namespace {name} {TENANT_LABEL}={ENABLED}");
    ctx.gate.ensure(action)?;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let patch = enrolment_patch(name, ns.metadata.resource_version.as_deref());
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(action(), e))?;
    Ok(())
}

async fn publish_enrolled(
    ctx: &Context,
    ns: &PartialObjectMeta<Namespace>,
    name: &str,
    pattern: &str,
) {
    // Recorded inside the tenant namespace itself, so that `kubectl get events -n <tenant>`
    // shows it and it goes away with the namespace.
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Namespace".into()),
        name: Some(name.to_owned()),
        namespace: Some(name.to_owned()),
        uid: ns.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Enrolled".into(),
        note: Some(format!(
            "labelled {TENANT_LABEL}={ENABLED}: the name matches the tenant pattern `{pattern}`"
        )),
        action: "Enrol".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(namespace = %name, error = %e, "cannot record the Enrolled event");
    }
}

pub fn error_policy(
    ns: Arc<PartialObjectMeta<Namespace>>,
    _error: &Error,
    session: Arc<Session>,
) -> Action {
    let wait = session
        .ctx
        .backoff
        .remaining(&backoff_key(&ns.name_any()), Instant::now());
    Action::requeue(wait.unwrap_or(Duration::from_secs(1)))
}

/// Every `resync`, all namespaces are queued again (events can be missed); the backoff entries of
/// namespaces that are gone are dropped then too.
pub fn resync_namespaces(
    ctx: &Arc<Context>,
    store: &Store<PartialObjectMeta<Namespace>>,
    resync: Duration,
) -> impl futures::Stream<Item = Result<ObjectRef<PartialObjectMeta<Namespace>>, watcher::Error>>
+ Send
+ 'static {
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
