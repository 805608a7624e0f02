//! The kube-runtime wiring.
//!
//! All replicas run the election ([`super::lease`]); only the leader runs a *session*:
//! - a metadata-only namespace watch (annotations and managedFields dropped) feeding a reflector
//!   store and the enrolment applier (label + Event per matching namespace, bounded concurrency);
//! - a pod watch read into [`SlimPod`] and reduced to [`super::observed::PodSummary`]s at once
//!   (terminated pods and system namespaces filtered out by the API server);
//! - a small task that turns both into [`Observed`] (debounced) and triggers the workloads;
//! - the workloads controller: keyed on warmpool's own namespace, it server-side applies the
//!   PriorityClass, the prewarmer and the image cache, and is re-triggered when one of them drifts
//!   (metadata-only watches of those three names: deleted, or a new generation, labels,
//!   annotations or owners — not status updates), by a changed [`Observed`], and by the periodic
//!   resync.
//!
//! Every write first checks the [`LeaderGate`]; the session is dropped (in-flight writes
//! cancelled) the moment the lease is lost. Failures back off per object ([`Backoff`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::error::Error;
use super::lease::{Elector, LeaderGate, LeaseSettings};
use super::metrics::Metrics;
use super::observed::{Observed, PodIndex, SlimPod, observe};
use super::owner::{self, Found};
use super::tenants::{Enrolment, enrolment, enrolment_patch};
use super::{
    FIELD_MANAGER, IMAGE_CACHE, LEASE, MANAGED_BY, MANAGED_BY_LABEL, PREWARMER, PRIORITY_CLASS,
    desired,
};
use crate::config::Config;
use crate::telemetry::Readiness;
use crate::tenant::{ENABLED, SYSTEM_NAMESPACES, TENANT_LABEL, TenantSelector};

/// How the reconciler runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// warmpool's own namespace: the prewarmer, the image cache and the Lease live there.
    pub namespace: String,
    pub config: Config,
    /// How often everything is re-applied even without an event.
    pub resync: Duration,
    /// How many namespaces are enrolled at the same time.
    pub concurrency: u16,
    /// This replica's name in the Lease.
    pub identity: String,
    pub lease_duration: Duration,
    /// The pod this runs in (downward API), to find warmpool's own Deployment; `None` outside a
    /// cluster, and then no owner references are written.
    pub pod: Option<PodIdentity>,
}

#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
}

/// The objects the workloads controller keeps, each with its own backoff and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    PriorityClass,
    Deployment,
    DaemonSet,
}

impl Target {
    const ALL: [Target; 3] = [Target::PriorityClass, Target::Deployment, Target::DaemonSet];

    fn label(self) -> &'static str {
        match self {
            Target::PriorityClass => "priorityclass",
            Target::Deployment => "deployment",
            Target::DaemonSet => "daemonset",
        }
    }
}

const NAMESPACE_TARGET: &str = "namespace";
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// What lives as long as the process.
struct Shared {
    client: Client,
    settings: Settings,
    selector: TenantSelector,
    owner: Option<OwnerReference>,
    metrics: Metrics,
    recorder: Recorder,
    gate: LeaderGate,
    backoff: Backoff,
    readiness: Readiness,
    synced: Mutex<BTreeSet<Target>>,
}

/// What lives as long as one leadership term.
struct Session {
    shared: Arc<Shared>,
    observed: watch::Receiver<Option<Arc<Observed>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Pods the reconciler never needs: finished ones, and those of namespaces that are never
/// tenants. Filtered by the API server, so they are never sent.
pub fn pod_field_selector(own_namespace: &str) -> String {
    let mut parts = vec![
        "status.phase!=Succeeded".to_owned(),
        "status.phase!=Failed".to_owned(),
    ];
    for ns in SYSTEM_NAMESPACES.iter().copied().chain([own_namespace]) {
        parts.push(format!("metadata.namespace!={ns}"));
    }
    parts.join(",")
}

/// Runs until `shutdown` resolves: elects, reconciles while leading, then gives the Lease up.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let selector = TenantSelector::new(
        &settings.config.tenants.namespace_patterns,
        Some(&settings.namespace),
    )
    .map_err(|e| Error::Settings(format!("tenants.namespacePatterns: {e}")))?;
    let lease = LeaseSettings::new(LEASE, &settings.identity, settings.lease_duration)?;
    let owner = find_owner(&client, settings.pod.as_ref()).await?;
    check_namespace(&client, &settings.namespace).await;
    metrics
        .spare_slots
        .set(i64::from(settings.config.prewarmer.spare_slots));

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

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "warmpool".into(),
            instance: Some(settings.identity.clone()),
        },
    );
    let shared = Arc::new(Shared {
        client,
        selector,
        owner,
        metrics,
        recorder,
        gate: gate.clone(),
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(120)),
        readiness: readiness.clone(),
        synced: Mutex::new(BTreeSet::new()),
        settings,
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = gate.acquired() => {}
            () = &mut shutdown => break,
            () = tokio::time::sleep(Duration::from_millis(250)), if !readiness.is_ready() => {
                // A standby is ready once it has seen the Lease held by someone else.
                if gate.sees_other_leader() && !gate.is_leader() {
                    tracing::info!(identity = %shared.settings.identity, "standing by: another replica holds the lease");
                    readiness.set(true);
                }
                continue;
            }
        }
        tracing::info!(identity = %shared.settings.identity, "leading: reconciling");
        shared.metrics.leader.set(1);
        let ended = tokio::select! {
            result = lead(shared.clone()) => Some(result),
            () = gate.lost() => None,
            () = &mut shutdown => {
                shared.metrics.leader.set(0);
                break;
            }
        };
        shared.metrics.leader.set(0);
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

/// One leadership term: caches, enrolment, observation, workloads. Returns only if a stream ends.
async fn lead(shared: Arc<Shared>) -> Result<(), Error> {
    let client = shared.client.clone();
    let own_ns = shared.settings.namespace.clone();
    let resync = shared.settings.resync;
    let dirty = Arc::new(Notify::new());
    let namespaces_synced = Arc::new(AtomicBool::new(false));
    let pods = Arc::new(Mutex::new(PodIndex::default()));
    let (observed_tx, observed_rx) = watch::channel(None);
    let session = Arc::new(Session {
        shared: shared.clone(),
        observed: observed_rx.clone(),
    });

    // Namespaces: metadata only, without annotations and managedFields.
    let (ns_store, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let ns_events = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|ns| {
        ns.metadata.managed_fields = None;
        ns.metadata.annotations = None;
    })
    .reflect(ns_writer)
    .inspect({
        let dirty = dirty.clone();
        let synced = namespaces_synced.clone();
        move |event| match event {
            Ok(watcher::Event::InitDone) => {
                synced.store(true, Ordering::Release);
                dirty.notify_one();
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => dirty.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
        }
    })
    .touched_objects()
    .map_ok(|ns| ObjectRef::from_obj(&ns));
    let enrolment_queue = stream::select(ns_events, resync_namespaces(&shared, &ns_store, resync));
    let enrol = controller::applier(
        |ns, session| Box::pin(reconcile_namespace(ns, session)),
        namespace_error_policy,
        session.clone(),
        ns_store.clone(),
        enrolment_queue,
        controller::Config::default()
            .concurrency(shared.settings.concurrency.max(1))
            .debounce(Duration::from_millis(100)),
    )
    .for_each(|result| async move {
        match result {
            Ok(_) => {}
            // Failures are logged with their context where they happen.
            Err(controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(_)) => {
            }
            Err(e) => tracing::warn!(error = %e, "enrolment queue"),
        }
    });

    // Pods: images and requests only, terminated pods and never-tenant namespaces filtered out.
    let pod_watch = watcher(
        Api::<SlimPod>::all(client.clone()),
        watcher::Config::default().fields(&pod_field_selector(&own_ns)),
    )
    .default_backoff()
    .for_each({
        let pods = pods.clone();
        let dirty = dirty.clone();
        move |event| {
            match event {
                Ok(event) => {
                    if lock(&pods).apply(event) {
                        dirty.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
            futures::future::ready(())
        }
    });

    // Observation: debounced, published only when it changes.
    let observation = {
        let shared = shared.clone();
        let ns_store = ns_store.clone();
        let pods = pods.clone();
        async move {
            loop {
                dirty.notified().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
                if !namespaces_synced.load(Ordering::Acquire) || !lock(&pods).is_synced() {
                    continue;
                }
                let namespaces = ns_store.state();
                let observed = {
                    let index = lock(&pods);
                    observe(
                        &shared.settings.config,
                        &shared.selector,
                        namespaces.iter().map(|ns| {
                            (
                                ns.metadata.name.as_deref().unwrap_or_default(),
                                ns.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                            )
                        }),
                        &index,
                    )
                };
                publish_gauges(&shared.metrics, &observed);
                observed_tx.send_if_modified(|current| {
                    if current.as_deref() == Some(&observed) {
                        return false;
                    }
                    tracing::info!(
                        tenants = observed.tenants.len(),
                        images = ?observed.images,
                        slot_cpu = %observed.slot.cpu.0,
                        slot_memory = %observed.slot.memory.0,
                        slot_source = ?observed.slot_source,
                        "observed state changed"
                    );
                    *current = Some(Arc::new(observed));
                    true
                });
            }
        }
    };

    // Workloads: keyed on warmpool's own namespace, re-triggered by any change of the three.
    let named = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let ns = shared.settings.namespace.as_str();
    let observed_changes = stream::unfold(observed_rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    let workloads = Controller::new(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        named(ns),
    )
    .reconcile_all_on(drift(
        Api::<PartialObjectMeta<Deployment>>::namespaced(client.clone(), ns),
        PREWARMER,
    ))
    .reconcile_all_on(drift(
        Api::<PartialObjectMeta<DaemonSet>>::namespaced(client.clone(), ns),
        IMAGE_CACHE,
    ))
    .reconcile_all_on(drift(
        Api::<PartialObjectMeta<PriorityClass>>::all(client.clone()),
        PRIORITY_CLASS,
    ))
    .reconcile_all_on(observed_changes)
    .with_config(
        controller::Config::default()
            .concurrency(1)
            .debounce(Duration::from_millis(300)),
    )
    .run(reconcile_workloads, workloads_error_policy, session.clone())
    .for_each(|result| async move {
        match result {
            Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(e) => tracing::warn!(error = %e, "workloads queue"),
        }
    });

    tokio::join!(enrol, pod_watch, observation, workloads);
    Ok(())
}

/// What of a written object's metadata can show drift: a spec edit or a scale bumps the
/// generation; labels, annotations and owners are ours too; a new uid means re-created. Status
/// updates (a rollout's progress, a DaemonSet's pod counts) change none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    uid: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owners: Option<Vec<OwnerReference>>,
    deleting: bool,
}

impl Fingerprint {
    fn of(meta: &ObjectMeta) -> Fingerprint {
        Fingerprint {
            uid: meta.uid.clone(),
            generation: meta.generation,
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            owners: meta.owner_references.clone(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// Whether a watch event of one written object calls for a reconcile: deletion, a (re-)list,
/// or a change of its [`Fingerprint`]. Pure.
pub fn drifted<K: Resource>(last: &mut Option<Fingerprint>, event: &watcher::Event<K>) -> bool {
    match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            let now = Fingerprint::of(o.meta());
            let changed = last.as_ref() != Some(&now);
            *last = Some(now);
            changed
        }
        watcher::Event::Delete(_) => {
            *last = None;
            true
        }
        // After a re-list the object may be gone without a Delete event: look again.
        watcher::Event::InitDone => true,
        watcher::Event::Init => false,
    }
}

/// A metadata-only watch of one written object, as reconcile triggers for the workloads.
fn drift<K>(
    api: Api<PartialObjectMeta<K>>,
    name: &'static str,
) -> impl futures::Stream<Item = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let mut last = None;
    watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .filter_map(move |event| {
        let fire = match event {
            Ok(event) => {
                let fire = drifted(&mut last, &event);
                if fire {
                    tracing::debug!(object = name, "drift check triggered");
                }
                fire
            }
            Err(e) => {
                tracing::warn!(object = name, error = %e, "watch failed; retrying");
                false
            }
        };
        futures::future::ready(fire.then_some(()))
    })
}

/// Every `resync`, all namespaces are queued again (events can be missed); the backoff entries of
/// namespaces that are gone are dropped then too.
fn resync_namespaces(
    shared: &Arc<Shared>,
    store: &Store<PartialObjectMeta<Namespace>>,
    resync: Duration,
) -> impl futures::Stream<Item = Result<ObjectRef<PartialObjectMeta<Namespace>>, watcher::Error>>
+ Send
+ 'static {
    let shared = shared.clone();
    let store = store.clone();
    let ticks = tokio::time::interval_at(Instant::now() + resync, resync);
    stream::unfold(ticks, move |mut ticks| {
        let shared = shared.clone();
        let store = store.clone();
        async move {
            ticks.tick().await;
            let refs: Vec<_> = store
                .state()
                .iter()
                .map(|ns| ObjectRef::from_obj(&**ns))
                .collect();
            shared
                .backoff
                .retain(|key| match key.strip_prefix("namespace/") {
                    Some(name) => store.get(&ObjectRef::new(name)).is_some(),
                    None => true,
                });
            Some((refs, ticks))
        }
    })
    .flat_map(|refs| stream::iter(refs.into_iter().map(Ok)))
}

fn publish_gauges(metrics: &Metrics, observed: &Observed) {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.tenants.set(gauge(observed.tenants.len()));
    metrics.cached_images.set(gauge(observed.images.len()));
    let requests = super::slot::slot_requests(&observed.slot);
    metrics
        .slot_cpu_millicores
        .set(i64::try_from(requests.cpu_millis).unwrap_or(i64::MAX));
    metrics
        .slot_memory_bytes
        .set(i64::try_from(requests.memory_bytes).unwrap_or(i64::MAX));
}

fn namespace_key(name: &str) -> String {
    format!("namespace/{name}")
}

/// Labels one namespace if it should be (and records an Event); everything else is a no-op.
async fn reconcile_namespace(
    ns: Arc<PartialObjectMeta<Namespace>>,
    session: Arc<Session>,
) -> Result<Action, Error> {
    let shared = &session.shared;
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let labels = ns.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    let Enrolment::Label { pattern } = enrolment(&shared.selector, &name, labels) else {
        return Ok(Action::await_change());
    };
    let key = namespace_key(&name);
    if let Some(wait) = shared.backoff.remaining(&key, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();
    let result = label_namespace(shared, &ns, &name).await;
    shared
        .metrics
        .observe_run(NAMESPACE_TARGET, started.elapsed(), &result);
    match result {
        Ok(()) => {
            shared.backoff.succeeded(&key);
            shared.metrics.enrolled.inc();
            tracing::info!(namespace = %name, %pattern, "enrolled: labelled {TENANT_LABEL}={ENABLED}");
            publish_enrolled(shared, &ns, &name, &pattern).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let wait = shared.backoff.failed(&key, Instant::now());
            tracing::warn!(namespace = %name, error = %e, retry_in = ?wait, "enrolment failed");
            Err(e)
        }
    }
}

async fn label_namespace(
    shared: &Shared,
    ns: &PartialObjectMeta<Namespace>,
    name: &str,
) -> Result<(), Error> {
    let action = || format!("label Namespace {name} {TENANT_LABEL}={ENABLED}");
    shared.gate.ensure(action)?;
    let api: Api<Namespace> = Api::all(shared.client.clone());
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
    shared: &Shared,
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
    if let Err(e) = shared.recorder.publish(&event, &reference).await {
        tracing::warn!(namespace = %name, error = %e, "cannot record the Enrolled event");
    }
}

fn namespace_error_policy(
    ns: Arc<PartialObjectMeta<Namespace>>,
    _error: &Error,
    session: Arc<Session>,
) -> Action {
    let wait = session
        .shared
        .backoff
        .remaining(&namespace_key(&ns.name_any()), Instant::now());
    Action::requeue(wait.unwrap_or(Duration::from_secs(1)))
}

/// Applies the three objects (each on its own backoff) from the latest observation.
async fn reconcile_workloads(
    _own_namespace: Arc<PartialObjectMeta<Namespace>>,
    session: Arc<Session>,
) -> Result<Action, Error> {
    let shared = &session.shared;
    let Some(observed) = session.observed.borrow().clone() else {
        // The caches have not synced yet: the first observation triggers a run.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let mut next = shared.settings.resync;
    let mut first_error = None;
    for target in Target::ALL {
        let key = target.label();
        if let Some(wait) = shared.backoff.remaining(key, Instant::now()) {
            next = next.min(wait);
            continue;
        }
        let started = Instant::now();
        let result = apply_target(shared, target, &observed).await;
        shared.metrics.observe_run(key, started.elapsed(), &result);
        match result {
            Ok(()) => {
                shared.backoff.succeeded(key);
                mark_synced(shared, target);
            }
            Err(e) => {
                let wait = shared.backoff.failed(key, Instant::now());
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

fn workloads_error_policy(
    _own_namespace: Arc<PartialObjectMeta<Namespace>>,
    _error: &Error,
    session: Arc<Session>,
) -> Action {
    let now = Instant::now();
    let wait = Target::ALL
        .iter()
        .filter_map(|t| session.shared.backoff.remaining(t.label(), now))
        .min();
    Action::requeue(wait.unwrap_or(Duration::from_secs(1)))
}

/// Ready once every object has been applied at least once (the caches had synced before).
fn mark_synced(shared: &Shared, target: Target) {
    let mut synced = lock(&shared.synced);
    if synced.insert(target) && synced.len() == Target::ALL.len() {
        tracing::info!("first sync done: the warm pool is in place");
        shared.readiness.set(true);
    }
}

async fn apply_target(shared: &Shared, target: Target, observed: &Observed) -> Result<(), Error> {
    let client = shared.client.clone();
    let ns = shared.settings.namespace.as_str();
    let config = &shared.settings.config;
    let owner = shared.owner.as_ref();
    match target {
        Target::PriorityClass => apply(shared, Api::all(client), &desired::priority_class()).await,
        Target::Deployment => {
            let deployment = desired::prewarmer(config, ns, &observed.slot, owner);
            apply(shared, Api::namespaced(client, ns), &deployment).await
        }
        Target::DaemonSet => {
            let daemon_set = desired::image_cache(config, ns, &observed.images, owner);
            apply(shared, Api::namespaced(client, ns), &daemon_set).await
        }
    }
}

/// Server-side apply with field manager `warmpool` and `force`. When the API server refuses
/// because an immutable field differs (a PriorityClass's value, a Deployment's selector), an
/// object that carries our managed-by label is deleted and created anew.
async fn apply<K>(shared: &Shared, api: Api<K>, desired: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let what = || match desired.meta().namespace.as_deref() {
        Some(ns) => format!("apply {} {ns}/{name}", K::kind(&())),
        None => format!("apply {} {name}", K::kind(&())),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    shared.gate.ensure(what)?;
    let status = match api.patch(&name, &params, &Patch::Apply(desired)).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if is_immutable_field_change(&status) => status,
        Err(e) => return Err(Error::kube(what(), e)),
    };
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(what(), e))?;
    let ours = existing
        .as_ref()
        .is_some_and(|o| o.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY));
    if !ours {
        return Err(Error::kube(what(), kube::Error::Api(status)));
    }
    tracing::warn!(object = %what(), reason = %status.message, "an immutable field differs: re-creating");
    shared.gate.ensure(what)?;
    api.delete(&name, &DeleteParams::background())
        .await
        .map_err(|e| Error::kube(what(), e))?;
    shared.gate.ensure(what)?;
    api.patch(&name, &params, &Patch::Apply(desired))
        .await
        .map_err(|e| Error::kube(what(), e))?;
    Ok(())
}

/// The API server's refusal to change a field that cannot change once set. It words this two
/// ways: "field is immutable" (a Deployment's selector) and "may not be changed in an update"
/// (a PriorityClass's value).
fn is_immutable_field_change(status: &kube::core::Status) -> bool {
    status.code == 422
        && (status.message.contains("immutable") || status.message.contains("may not be changed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::core::Status {
        kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn immutable_field_changes_are_recognised_in_both_wordings() {
        assert!(is_immutable_field_change(&status(
            422,
            "Deployment.apps \"x\" is invalid: spec.selector: Invalid value: ...: field is immutable"
        )));
        assert!(is_immutable_field_change(&status(
            422,
            "PriorityClass.scheduling.k8s.io \"warmpool-placeholder\" is invalid: value: Forbidden: may not be changed in an update."
        )));
        assert!(!is_immutable_field_change(&status(
            422,
            "spec.replicas: Invalid value: -1"
        )));
        assert!(!is_immutable_field_change(&status(
            409,
            "field is immutable"
        )));
    }

    fn deployment(uid: &str, generation: i64, replicas_ready: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "warmpool-prewarmer", "uid": uid, "generation": generation,
                         "labels": {"app.kubernetes.io/managed-by": "warmpool"}},
            "status": {"readyReplicas": replicas_ready},
        }))
        .unwrap()
    }

    #[test]
    fn only_changes_that_can_be_drift_trigger_a_reconcile() {
        let mut last = None;
        assert!(!drifted(&mut last, &watcher::Event::<Deployment>::Init));
        assert!(drifted(
            &mut last,
            &watcher::Event::InitApply(deployment("a", 1, 0))
        ));
        assert!(drifted(&mut last, &watcher::Event::<Deployment>::InitDone));
        // A status update: nothing to repair.
        assert!(!drifted(
            &mut last,
            &watcher::Event::Apply(deployment("a", 1, 1))
        ));
        // Scaled or edited: the generation moves.
        assert!(drifted(
            &mut last,
            &watcher::Event::Apply(deployment("a", 2, 1))
        ));
        // A label removed.
        let mut unlabelled = deployment("a", 2, 1);
        unlabelled.metadata.labels = None;
        assert!(drifted(&mut last, &watcher::Event::Apply(unlabelled)));
        // Deleted, then re-created (new uid).
        assert!(drifted(
            &mut last,
            &watcher::Event::Delete(deployment("a", 2, 1))
        ));
        assert!(drifted(
            &mut last,
            &watcher::Event::Apply(deployment("b", 1, 0))
        ));
        assert!(!drifted(
            &mut last,
            &watcher::Event::Apply(deployment("b", 1, 0))
        ));
    }

    #[test]
    fn the_pod_watch_leaves_out_finished_pods_and_never_tenant_namespaces() {
        assert_eq!(
            pod_field_selector("warmpool-system"),
            "status.phase!=Succeeded,status.phase!=Failed,metadata.namespace!=kube-system,\
             metadata.namespace!=kube-public,metadata.namespace!=kube-node-lease,\
             metadata.namespace!=warmpool-system"
        );
    }
}
