//! One leadership term: the watches, wired to the queues that write.
//!
//! - a metadata watch of namespaces (on `Api<PartialObjectMeta<_>>` kube 5 asks the API server
//!   for metadata only, as the deprecated `metadata_watcher` did), each namespace reduced to a
//!   [`CachedNamespace`], feeding a reflector store and the [`super::jobs::enrolment`] (bounded
//!   concurrency);
//! - only when `imageCache.discover`, `prewarmer.slot: auto` or `tenants.timeToReady` needs
//!   them, a pod watch read into
//!   [`SlimPod`] and reduced to [`super::watches::pods::PodSummary`]s at once (terminated pods and
//!   system namespaces filtered out by the API server);
//! - only for `prewarmer.slot: auto`, a watch of the warm nodes (by the pool label) read into
//!   [`SlimNode`]: their allocatable caps the slot;
//! - a small task that turns these into [`Observed`] (debounced) and publishes it;
//! - the image-cache pods of warmpool's own namespace, for [`super::jobs::image_cache`], and its
//!   placeholder pods, for [`super::jobs::placeholders`];
//! - the [`super::jobs::workloads`] controller, keyed on warmpool's own namespace, re-triggered by a
//!   changed [`Observed`], by the [`super::watches::drift`] watches of the three objects (metadata only),
//!   by the [`super::jobs::spare`] timer at each change of the spare slots in force, and by the
//!   periodic resync.
//!
//! The session is dropped (in-flight writes cancelled) the moment the lease is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};

use super::base::context::{Context, lock};
use super::base::error::Error;
use super::base::metrics::Metrics;
use super::jobs::arrivals::Book;
use super::jobs::enrolment::{self, Enroller};
use super::jobs::tenant_ready::Tracker;
use super::jobs::unsteered::Acted;
use super::jobs::workloads::{self, Workloads};
use super::watches::drift;
use super::watches::drift::Sightings;
use super::watches::namespaces::CachedNamespace;
use super::watches::nodes::{NodeIndex, SlimNode};
use super::watches::pods::{Observed, PodIndex, SlimPod, reduce};
use crate::config::{Config, Slot};
use crate::core::names::{IMAGE_CACHE, IMAGE_CACHE_DISCOVERED, PREWARMER, PRIORITY_CLASS};
use crate::core::pool::PoolObject;
use crate::core::spare::scale_down::Held;
use crate::core::tenant::SYSTEM_NAMESPACES;

/// Whether arrivals are tracked at all: for `spareSlots.auto` (and then recorded) or for the
/// quiet time of `scaleDown`. How long they are kept: the lookback, at least the quiet time.
fn arrivals_needed(config: &Config) -> Option<(jiff::SignedDuration, bool)> {
    let auto = config.prewarmer.spare_slots.auto();
    let quiet = config.prewarmer.scale_down().map(|s| s.quiet_for);
    match (auto, quiet) {
        (None, None) => None,
        (auto, quiet) => {
            let keep = auto
                .map(|a| a.lookback)
                .into_iter()
                .chain(quiet)
                .max()
                .unwrap_or_default();
            Some((keep, auto.is_some()))
        }
    }
}

/// With `scaleDown`: the prewarmer's replicas as found, as if kept since now (a new term waits
/// a whole interval before its first step down).
async fn held_at_start(ctx: &Context) -> Option<Held> {
    ctx.settings.config.prewarmer.scale_down.as_ref()?;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    match api.get_opt(PREWARMER).await {
        Ok(found) => {
            let replicas = found?.spec?.replicas?;
            Some(Held {
                slots: u32::try_from(replicas).unwrap_or(0),
                since: crate::reconcile::base::clock::now(),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the prewarmer's replicas: its target is applied at once");
            None
        }
    }
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

/// Which of the optional watches a configuration needs: pods for discovery, `slot: auto` and
/// the tenants' time to Ready; the warm nodes for `slot: auto` and the time to Ready.
pub fn needs(config: &Config) -> (bool, bool) {
    let auto = matches!(config.prewarmer.slot, Slot::Auto);
    let ready = config.tenants.time_to_ready.enabled;
    let budget = config.image_cache.discover && config.image_cache.max_bytes_per_node.is_some();
    (
        config.image_cache.discover || auto || ready,
        auto || ready || budget,
    )
}

/// The warm nodes: those that carry the pool label.
pub fn node_label_selector(config: &Config) -> String {
    let label = &config.pool.node_label;
    format!("{}={}", label.key, label.value)
}

/// The watch caches of one term, shared by the watches that fill them and the tasks that read
/// them; `dirty` is notified at every change that may change the observation.
struct Caches {
    dirty: Arc<Notify>,
    namespaces_synced: Arc<AtomicBool>,
    pods: Arc<Mutex<PodIndex>>,
    /// Notified when the pods are to be listed again (a namespace became a tenant).
    relist_pods: Arc<Notify>,
    nodes: Arc<Mutex<NodeIndex>>,
}

impl Caches {
    fn new(config: &Config, watch_pods: bool, watch_nodes: bool) -> Caches {
        let mut pods = PodIndex::judging(crate::core::mutation::Rules::from_config(config));
        if !watch_pods {
            // Nothing to wait for: no pod is ever looked at.
            pods.apply(watcher::Event::InitDone);
        }
        Caches {
            dirty: Arc::new(Notify::new()),
            namespaces_synced: Arc::new(AtomicBool::new(false)),
            pods: Arc::new(Mutex::new(pods)),
            relist_pods: Arc::new(Notify::new()),
            nodes: Arc::new(Mutex::new(if watch_nodes {
                NodeIndex::default()
            } else {
                NodeIndex::synced_empty()
            })),
        }
    }
}

/// One leadership term: caches, enrolment, observation, workloads. Returns only if a stream ends.
pub async fn lead(ctx: Arc<Context>) -> Result<(), Error> {
    let config = &ctx.settings.config;
    let (watch_pods, watch_nodes) = needs(config);
    let caches = Caches::new(config, watch_pods, watch_nodes);
    let (observed_tx, observed_rx) = watch::channel(None);
    let sightings = Arc::new(Sightings::default());
    let needed = arrivals_needed(config);
    let book = Arc::new(match needed {
        Some((keep, persist)) => super::jobs::arrivals::load(&ctx, keep, persist).await,
        None => Book::new(Default::default(), jiff::SignedDuration::ZERO, false),
    });
    let (next_change, next_change_rx) = watch::channel(None);
    let time_to_ready: Arc<Tracker> = Arc::default();
    let unsteered_acted: Arc<Acted> = Arc::default();
    let enroller = Arc::new(Enroller {
        ctx: ctx.clone(),
        time_to_ready: time_to_ready.clone(),
    });
    let workloads_state = Arc::new(Workloads {
        ctx: ctx.clone(),
        observed: observed_rx.clone(),
        sightings: sightings.clone(),
        applied: Mutex::new(BTreeMap::new()),
        arrivals: book.clone(),
        held: Mutex::new(held_at_start(&ctx).await),
        next_change,
    });
    tracing::info!(
        pods = watch_pods,
        warm_nodes = watch_nodes,
        "watching namespaces and the written objects (metadata only)"
    );

    let (ns_store, ns_writer) = reflector::store::<CachedNamespace>();
    let enrol = namespaces_and_enrolment(&ctx, &caches, enroller, ns_store.clone(), ns_writer);
    let pod_watch = pods(
        &ctx,
        &caches,
        watch_pods,
        time_to_ready.clone(),
        unsteered_acted.clone(),
    );
    let node_watch = warm_nodes(&ctx, &caches, watch_nodes);
    let observation = observation(
        ctx.clone(),
        &caches,
        ns_store.clone(),
        needed.map(|_| book.clone()),
        observed_tx,
    );
    let workloads = workloads_controller(
        &ctx,
        workloads_state,
        observed_rx,
        sightings,
        next_change_rx,
    );

    let image_cache = super::jobs::image_cache::watch(ctx.clone());
    let placeholders = super::jobs::placeholders::run(ctx.clone());
    let record = super::jobs::arrivals::flush(ctx.clone(), book);
    let unsteered = super::jobs::unsteered::run(
        ctx.clone(),
        unsteered_acted,
        caches.pods.clone(),
        ns_store.clone(),
    );
    let time_to_ready = super::jobs::tenant_ready::run(
        ctx.clone(),
        time_to_ready,
        caches.pods.clone(),
        caches.nodes.clone(),
    );

    tokio::join!(
        enrol,
        pod_watch,
        node_watch,
        observation,
        workloads,
        image_cache,
        placeholders,
        record,
        time_to_ready,
        unsteered
    );
    Ok(())
}

/// Namespaces, metadata only, each reduced at once to what the reconciler reads of it, into
/// `ns_writer`'s store; each one changed is queued for the enrolment (and every `resync`, all).
/// Tells the pod index which namespaces are tenants.
fn namespaces_and_enrolment(
    ctx: &Arc<Context>,
    caches: &Caches,
    enroller: Arc<Enroller>,
    ns_store: Store<CachedNamespace>,
    ns_writer: Writer<CachedNamespace>,
) -> impl Future<Output = ()> + use<> {
    let field_manager = ctx.enrolment_manager.clone();
    let selector = ctx.selector.clone();
    let ns_events = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(move |event| CachedNamespace::event(event, &selector, &field_manager))
    .reflect(ns_writer)
    .inspect({
        let dirty = caches.dirty.clone();
        let synced = caches.namespaces_synced.clone();
        let pods = caches.pods.clone();
        let relist_pods = caches.relist_pods.clone();
        let ctx = ctx.clone();
        move |event| {
            // The pod index keeps tenants' pods only: tell it which namespaces are.
            match event {
                Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                    let tenant = ctx.selector.is_tenant_by_facts(ns.name(), ns.label_facts());
                    if lock(&pods).set_tenant(ns.name(), tenant) {
                        tracing::info!(
                            namespace = ns.name(),
                            "a namespace became a tenant: listing its pods again"
                        );
                        relist_pods.notify_one();
                    }
                }
                Ok(watcher::Event::Delete(ns)) => lock(&pods).forget_namespace(ns.name()),
                _ => {}
            }
            match event {
                Ok(watcher::Event::InitDone) => {
                    synced.store(true, Ordering::Release);
                    dirty.notify_one();
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => dirty.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
            }
        }
    })
    .touched_objects()
    .map_ok(|ns| ObjectRef::from_obj(&ns));
    let enrolment_queue = stream::select(
        ns_events,
        enrolment::resync_namespaces(ctx, &ns_store, ctx.settings.resync),
    );
    controller::applier(
        |ns, enroller| Box::pin(enrolment::reconcile_namespace(ns, enroller)),
        enrolment::error_policy,
        enroller,
        ns_store,
        enrolment_queue,
        controller::Config::default()
            .concurrency(ctx.settings.concurrency.max(1))
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
    })
}

/// Pods (with `watch`): images and requests only, terminated pods and never-tenant namespaces
/// filtered out by the API server, into the pod index; listed again (a new watcher) when a
/// namespace whose pods were dropped becomes a tenant. Each change wakes the time-to-Ready and
/// unsteered jobs.
fn pods(
    ctx: &Context,
    caches: &Caches,
    watch: bool,
    time_to_ready: Arc<Tracker>,
    unsteered_acted: Arc<Acted>,
) -> BoxFuture<'static, ()> {
    if !watch {
        return futures::future::pending().boxed();
    }
    {
        let client = ctx.client.clone();
        let selector = pod_field_selector(&ctx.settings.namespace);
        let relist_pods = caches.relist_pods.clone();
        let handle = {
            let pods = caches.pods.clone();
            let dirty = caches.dirty.clone();
            let time_to_ready = time_to_ready.clone();
            let unsteered_acted = unsteered_acted.clone();
            move |event: Result<watcher::Event<SlimPod>, watcher::Error>| match event {
                Ok(event) => {
                    let touched = match &event {
                        watcher::Event::Apply(p) | watcher::Event::Delete(p) => {
                            p.metadata.namespace.clone()
                        }
                        _ => None,
                    };
                    let relisted = matches!(event, watcher::Event::InitDone);
                    if lock(&pods).apply(event) {
                        dirty.notify_one();
                    }
                    if touched.is_some() || relisted {
                        unsteered_acted.touched();
                    }
                    match touched {
                        Some(ns) => time_to_ready.touched(&ns),
                        None if relisted => time_to_ready.touched_all(),
                        None => {}
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        };
        async move {
            loop {
                let mut events = watcher(
                    Api::<SlimPod>::all(client.clone()),
                    watcher::Config::default().fields(&selector),
                )
                .default_backoff()
                .boxed();
                loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(event) => handle(event),
                            None => return,
                        },
                        () = relist_pods.notified() => break,
                    }
                }
            }
        }
        .boxed()
    }
}

/// The warm nodes (with `watch`), by the pool label: their allocatable only, into the node index.
fn warm_nodes(ctx: &Context, caches: &Caches, watch: bool) -> BoxFuture<'static, ()> {
    if !watch {
        return futures::future::pending().boxed();
    }
    {
        watcher(
            Api::<SlimNode>::all(ctx.client.clone()),
            watcher::Config::default().labels(&node_label_selector(&ctx.settings.config)),
        )
        .default_backoff()
        .for_each({
            let nodes = caches.nodes.clone();
            let dirty = caches.dirty.clone();
            move |event| {
                match event {
                    Ok(event) => {
                        if lock(&nodes).apply(event) {
                            dirty.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "warm node watch failed; retrying"),
                }
                futures::future::ready(())
            }
        })
        .boxed()
    }
}

/// The caches reduced to an [`Observed`] (debounced, once every cache has synced), published to
/// `observed` only when it changes; with `arrivals`, the tenants seen are noted first.
fn observation(
    ctx: Arc<Context>,
    caches: &Caches,
    ns_store: Store<CachedNamespace>,
    arrivals: Option<Arc<Book>>,
    observed_tx: watch::Sender<Option<Arc<Observed>>>,
) -> impl Future<Output = ()> + use<> {
    {
        let (dirty, namespaces_synced) = (caches.dirty.clone(), caches.namespaces_synced.clone());
        let (pods, nodes) = (caches.pods.clone(), caches.nodes.clone());
        async move {
            let mut previous: Option<Arc<Observed>> = None;
            loop {
                dirty.notified().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
                if !namespaces_synced.load(Ordering::Acquire)
                    || !lock(&pods).is_synced()
                    || !lock(&nodes).is_synced()
                {
                    continue;
                }
                let namespaces = ns_store.state();
                let observed = {
                    let (pods, nodes) = (lock(&pods), lock(&nodes));
                    reduce(
                        &ctx.settings.config,
                        &ctx.selector,
                        namespaces.iter().map(|ns| (ns.name(), ns.label_facts())),
                        &pods,
                        &nodes,
                        previous.as_deref(),
                    )
                };
                publish_gauges(&ctx.metrics, &observed);
                if let Some(book) = &arrivals {
                    let tenants = namespaces.iter().filter_map(|ns| {
                        let name = ns.name();
                        let created = ns.meta().creation_timestamp.as_ref()?.0;
                        observed
                            .tenants
                            .contains(name)
                            .then(|| (crate::reconcile::base::clock::from_cluster(created), name))
                    });
                    // Noted before the observation is published: a new tenant changes it,
                    // and the workloads run that follows sees its arrival.
                    book.note(tenants, crate::reconcile::base::clock::now());
                }
                if previous.as_deref() == Some(&observed) {
                    continue;
                }
                tracing::info!(
                    tenants = observed.tenants.len(),
                    images = ?observed.images,
                    slot_cpu = %observed.slot.cpu.0,
                    slot_memory = %observed.slot.memory.0,
                    slot_source = ?observed.slot_source,
                    slot_capped = observed.slot_capped,
                    "observed state changed"
                );
                let observed = Arc::new(observed);
                previous = Some(observed.clone());
                observed_tx.send_replace(Some(observed));
            }
        }
    }
}

/// The workloads controller, keyed on warmpool's own namespace (its metadata): re-triggered by
/// any change of the objects it writes (their [`drift`] watches), by a changed observation, by
/// the spare slots' timer and by the periodic resync.
fn workloads_controller(
    ctx: &Context,
    state: Arc<Workloads>,
    observed_rx: watch::Receiver<Option<Arc<Observed>>>,
    sightings: Arc<Sightings>,
    next_change_rx: watch::Receiver<Option<jiff::Timestamp>>,
) -> impl Future<Output = ()> + use<> {
    let client = ctx.client.clone();
    let named = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let ns = ctx.settings.namespace.as_str();
    let observed_changes = stream::unfold(observed_rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    Controller::new(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        named(ns),
    )
    .reconcile_all_on(drift::triggers(
        Api::<PartialObjectMeta<Deployment>>::namespaced(client.clone(), ns),
        PREWARMER,
        PoolObject::Deployment,
        sightings.clone(),
    ))
    .reconcile_all_on(drift::triggers(
        Api::<PartialObjectMeta<DaemonSet>>::namespaced(client.clone(), ns),
        IMAGE_CACHE,
        PoolObject::DaemonSet,
        sightings.clone(),
    ))
    .reconcile_all_on(drift::triggers(
        Api::<PartialObjectMeta<DaemonSet>>::namespaced(client.clone(), ns),
        IMAGE_CACHE_DISCOVERED,
        PoolObject::DiscoveredDaemonSet,
        sightings.clone(),
    ))
    .reconcile_all_on(drift::triggers(
        Api::<PartialObjectMeta<PriorityClass>>::all(client.clone()),
        PRIORITY_CLASS,
        PoolObject::PriorityClass,
        sightings,
    ))
    .reconcile_all_on(observed_changes)
    // The spare slots: once at each instant they change by the clock (a window, an arrival
    // ageing out, the next gentle step).
    .reconcile_all_on(super::jobs::spare::changes(next_change_rx))
    .with_config(
        controller::Config::default()
            .concurrency(1)
            .debounce(Duration::from_millis(300)),
    )
    .run(workloads::reconcile, workloads::error_policy, state)
    .for_each(|result| async move {
        match result {
            Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(e) => tracing::warn!(error = %e, "workloads queue"),
        }
    })
}

fn publish_gauges(metrics: &Metrics, observed: &Observed) {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.tenants.set(gauge(observed.tenants.len()));
    metrics.cached_images.set(gauge(observed.images.len()));
    for reason in crate::core::pool::images::LeftOut::ALL {
        let n = observed.left_out.get(&reason).copied().unwrap_or(0);
        metrics.cache_left_out(reason).set(i64::from(n));
    }
    let requests = crate::core::pool::slot::slot_requests(&observed.slot);
    metrics
        .slot_cpu_millicores
        .set(i64::try_from(requests.cpu_millis).unwrap_or(i64::MAX));
    metrics
        .slot_memory_bytes
        .set(i64::try_from(requests.memory_bytes).unwrap_or(i64::MAX));
    metrics.publish_reserved();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_and_nodes_are_watched_only_when_the_configuration_needs_them() {
        let needs_of = |yaml: &str| needs(&Config::from_yaml(yaml).unwrap());
        assert_eq!(
            needs_of(""),
            (true, true),
            "discovery and the time to Ready are on by default"
        );
        let no_ready = "tenants: {timeToReady: {enabled: false}}\n";
        assert_eq!(
            needs_of(&format!("{no_ready}imageCache: {{discover: false}}")),
            (false, false)
        );
        assert_eq!(needs_of(no_ready), (true, false));
        assert_eq!(
            needs_of(&format!(
                "{no_ready}imageCache: {{discover: false}}\nprewarmer: {{slot: auto}}"
            )),
            (true, true)
        );
        assert_eq!(
            needs_of("imageCache: {discover: false}"),
            (true, true),
            "the time to Ready needs both"
        );
        assert_eq!(
            node_label_selector(&Config::default()),
            "workload-type=cargocats"
        );
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
