//! What the image cache holds on each warm node, read from its pods' container statuses (a pure
//! [`report`]), and the watch that exports it: the gauges `warmpool_image_cache_images{state}`,
//! `warmpool_image_cache_nodes{state}`, `warmpool_image_cache_failed_nodes{image}` and
//! `warmpool_image_cache_tag_images{image}`, and a Warning Event on the DaemonSet for every image
//! that cannot be pulled on a node and every tag that names different images on different nodes
//! ([`super::moved_tags`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::IMAGE_CACHE;
use super::context::Context;
use super::desired::{CACHE_CONTAINER_PREFIX, cache_pod_selector};
use super::metrics::Metrics;
use super::moved_tags::{self, Resolved};

/// Where one cached image stands on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// Pulled: its container was created from it (the status carries its `imageID`).
    Present,
    /// Not there yet: pulling, or waiting for the pod to start.
    Pending,
    /// The kubelet cannot pull it (`ErrImagePull`, `ImagePullBackOff`, …); it keeps retrying
    /// with a backoff, and the node's other images are cached all the same.
    Failed { reason: String, message: String },
}

impl ImageState {
    /// The `state` label of `warmpool_image_cache_images`.
    pub fn label(&self) -> &'static str {
        match self {
            ImageState::Present => "present",
            ImageState::Pending => "pending",
            ImageState::Failed { .. } => "failed",
        }
    }
}

/// The kubelet's waiting reasons that mean "this image cannot be pulled" (kubelet
/// `images.ErrImagePull` and relatives).
const PULL_FAILURES: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "SignatureValidationFailed",
];

/// The image cache on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCache {
    pub node: String,
    /// Image reference (as the DaemonSet names it) → its state there.
    pub images: BTreeMap<String, ImageState>,
}

impl NodeCache {
    /// Every image is present.
    pub fn complete(&self) -> bool {
        self.images.values().all(|s| *s == ImageState::Present)
    }
}

/// The state of every cached image on every node that runs a cache pod (pods being deleted and
/// pods not yet scheduled left out; the pods of both cache DaemonSets on one node as one), by
/// node name.
pub fn report(pods: &[Arc<Pod>]) -> Vec<NodeCache> {
    let mut nodes: BTreeMap<String, NodeCache> = BTreeMap::new();
    for cache in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| node_cache(p))
    {
        match nodes.get_mut(&cache.node) {
            Some(known) => known.images.extend(cache.images),
            None => {
                nodes.insert(cache.node.clone(), cache);
            }
        }
    }
    nodes.into_values().collect()
}

fn node_cache(pod: &Pod) -> Option<NodeCache> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone()?;
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let images = spec
        .containers
        .iter()
        .filter(|c| c.name.starts_with(CACHE_CONTAINER_PREFIX))
        .filter_map(|c| {
            let image = c.image.clone()?;
            let status = statuses.iter().find(|s| s.name == c.name);
            let state = match status {
                Some(s) if !s.image_id.is_empty() => ImageState::Present,
                Some(s) => match s.state.as_ref().and_then(|st| st.waiting.as_ref()) {
                    Some(w) if PULL_FAILURES.contains(&w.reason.as_deref().unwrap_or_default()) => {
                        ImageState::Failed {
                            reason: w.reason.clone().unwrap_or_default(),
                            message: w.message.clone().unwrap_or_default(),
                        }
                    }
                    _ => ImageState::Pending,
                },
                None => ImageState::Pending,
            };
            Some((image, state))
        })
        .collect();
    Some(NodeCache { node, images })
}

/// `(node, image)` of every image that cannot be pulled.
pub fn failures(nodes: &[NodeCache]) -> BTreeSet<(String, String)> {
    nodes
        .iter()
        .flat_map(|n| {
            n.images
                .iter()
                .filter(|(_, s)| matches!(s, ImageState::Failed { .. }))
                .map(|(image, _)| (n.node.clone(), image.clone()))
        })
        .collect()
}

/// Sets the image-cache gauges from `nodes`; `images` are the images the DaemonSet caches now
/// (an image no longer cached gets its `failed_nodes` series back to 0).
pub fn publish(metrics: &Metrics, nodes: &[NodeCache], images: &BTreeSet<String>) {
    let mut by_state: BTreeMap<&str, i64> = ["present", "pending", "failed"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    let mut failed_nodes: BTreeMap<&str, i64> = images.iter().map(|i| (i.as_str(), 0)).collect();
    for node in nodes {
        for (image, state) in &node.images {
            *by_state.entry(state.label()).or_default() += 1;
            if matches!(state, ImageState::Failed { .. }) {
                *failed_nodes.entry(image.as_str()).or_default() += 1;
            }
        }
    }
    for (state, n) in by_state {
        metrics.cache_images(state).set(n);
    }
    let complete = nodes.iter().filter(|n| n.complete()).count();
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.cache_nodes("complete").set(gauge(complete));
    metrics
        .cache_nodes("incomplete")
        .set(gauge(nodes.len() - complete));
    metrics.retain_failed_images(images);
    for (image, n) in failed_nodes {
        metrics.cache_failed_nodes(image).set(n);
    }
}

/// The Warning Event for an image that cannot be pulled on a node.
pub fn pull_failed_event(node: &str, image: &str, reason: &str, message: &str) -> Event {
    // An Event's note is at most 1 kB; the kubelet's message can be long.
    let message: String = message.chars().take(400).collect();
    Event {
        type_: EventType::Warning,
        reason: "ImagePullFailed".into(),
        note: Some(format!(
            "{image} cannot be pulled on node {node} ({reason}: {message}); the node's other \
             images are cached all the same and the kubelet keeps retrying. Check the \
             reference, or name its pull secret in imageCache.imagePullSecrets"
        )),
        action: "Cache".into(),
        secondary: None,
    }
}

/// Follows the cache pods in warmpool's namespace for the whole leadership term: gauges on every
/// change, one Event per image and node each time it starts failing.
pub async fn watch(ctx: Arc<Context>) {
    let namespace = ctx.settings.namespace.clone();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = cache_pod_selector();
    let (store, writer) = reflector::store::<Pod>();
    let mut seen = Seen::default();
    let mut events = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .reflect(writer)
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                seen = observe(&ctx, &store, &namespace, seen).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image-cache pod watch failed; retrying"),
        }
    }
}

/// What was reported already, so that each failure and each moved tag is recorded once.
#[derive(Debug, Default)]
struct Seen {
    /// `(node, image)` failing to pull.
    failing: BTreeSet<(String, String)>,
    /// Tag → the `imageID`s it named when last reported as moved.
    moved: BTreeMap<String, BTreeSet<String>>,
}

async fn observe(ctx: &Context, store: &Store<Pod>, namespace: &str, before: Seen) -> Seen {
    let pods = store.state();
    let nodes = report(&pods);
    let images: BTreeSet<String> = pods
        .iter()
        .flat_map(|p| p.spec.iter().flat_map(|s| &s.containers))
        .filter(|c| c.name.starts_with(CACHE_CONTAINER_PREFIX))
        .filter_map(|c| c.image.clone())
        .collect();
    publish(&ctx.metrics, &nodes, &images);
    let resolved = moved_tags::resolve(&pods);
    publish_tags(&ctx.metrics, &resolved);
    let reference = || daemonset_reference(&pods, namespace);
    let moved = record_moved(ctx, &resolved, &before.moved, reference).await;
    let now = failures(&nodes);
    for (node, image) in now.difference(&before.failing) {
        let Some(ImageState::Failed { reason, message }) = nodes
            .iter()
            .find(|n| &n.node == node)
            .and_then(|n| n.images.get(image))
        else {
            continue;
        };
        tracing::warn!(%node, %image, %reason, %message, "an image of the cache cannot be pulled");
        let reference = reference();
        let event = pull_failed_event(node, image, reason, message);
        let action = || format!("record the ImagePullFailed event of {image} on {node}");
        if let Err(e) = ctx
            .write(action, ctx.recorder.publish(&event, &reference))
            .await
        {
            tracing::warn!(%node, %image, error = %e, "cannot record the event");
        }
    }
    Seen {
        failing: now,
        moved,
    }
}

/// The image-cache DaemonSet, the object its Events are about (its uid read off its pods).
fn daemonset_reference(pods: &[Arc<Pod>], namespace: &str) -> ObjectReference {
    let uid = pods
        .iter()
        .filter_map(|p| p.metadata.owner_references.as_ref())
        .flatten()
        // The pods of both cache DaemonSets are here: the uid of the one named.
        .find(|o| o.controller == Some(true) && o.kind == "DaemonSet" && o.name == IMAGE_CACHE)
        .map(|o| o.uid.clone());
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("DaemonSet".into()),
        name: Some(IMAGE_CACHE.into()),
        namespace: Some(namespace.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

/// `warmpool_image_cache_tag_images{image}`: how many images each cached tag names across the
/// warm nodes (tags no longer present on any node lose their series).
pub fn publish_tags(metrics: &Metrics, resolved: &[Resolved]) {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let tags: BTreeSet<String> = resolved.iter().map(|r| r.image.clone()).collect();
    metrics.retain_tag_images(&tags);
    for r in resolved {
        metrics.cache_tag_images(&r.image).set(gauge(r.ids.len()));
    }
}

/// One Warning Event for each tag that has moved since `before` (a tag already reported is
/// reported again only when it names an image it did not name then); returns what is moved now.
async fn record_moved(
    ctx: &Context,
    resolved: &[Resolved],
    before: &BTreeMap<String, BTreeSet<String>>,
    reference: impl Fn() -> ObjectReference,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut moved = BTreeMap::new();
    for r in resolved.iter().filter(|r| r.moved()) {
        let ids: BTreeSet<String> = r.ids.keys().cloned().collect();
        let known = before.get(&r.image).is_some_and(|b| ids.is_subset(b));
        if !known {
            let image = &r.image;
            tracing::warn!(%image, images = ids.len(), "a cached tag names different images on different nodes");
            let action = || format!("record the ImageTagMoved event of {image}");
            let event = moved_tags::moved_event(r);
            if let Err(e) = ctx
                .write(action, ctx.recorder.publish(&event, &reference()))
                .await
            {
                tracing::warn!(%image, error = %e, "cannot record the event");
            }
        }
        moved.insert(r.image.clone(), ids);
    }
    moved
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A cache pod on `node` with these containers and container statuses (also the fixture of
    /// [`crate::reconcile::moved_tags`]'s tests).
    pub(in crate::reconcile) fn pod(
        node: Option<&str>,
        containers: serde_json::Value,
        statuses: serde_json::Value,
    ) -> Arc<Pod> {
        let mut spec = json!({"containers": containers});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": spec,
                "status": {"containerStatuses": statuses},
            }))
            .unwrap(),
        )
    }

    fn containers() -> serde_json::Value {
        json!([
            {"name": "pause", "image": "pause:1"},
            {"name": "cache-a-1", "image": "r/a:1"},
            {"name": "cache-b-2", "image": "r/b:1"},
            {"name": "cache-c-3", "image": "r/c:nope"},
        ])
    }

    fn running(name: &str, image_id: &str) -> serde_json::Value {
        json!({"name": name, "image": "x", "imageID": image_id, "ready": true, "restartCount": 0,
               "state": {"running": {}}})
    }

    fn waiting(name: &str, reason: &str) -> serde_json::Value {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": reason, "message": format!("{reason} because")}}})
    }

    #[test]
    fn each_image_has_its_own_state_and_one_failure_does_not_hide_the_others() {
        let p = pod(
            Some("n1"),
            containers(),
            json!([
                running("pause", "sha256:p"),
                running("cache-a-1", "r/a@sha256:1"),
                waiting("cache-b-2", "ContainerCreating"),
                waiting("cache-c-3", "ImagePullBackOff"),
            ]),
        );
        let nodes = report(&[p]);
        assert_eq!(nodes.len(), 1);
        let images = &nodes[0].images;
        assert_eq!(images.len(), 3, "the pause container is not a cached image");
        assert_eq!(images["r/a:1"], ImageState::Present);
        assert_eq!(images["r/b:1"], ImageState::Pending);
        assert_eq!(
            images["r/c:nope"],
            ImageState::Failed {
                reason: "ImagePullBackOff".into(),
                message: "ImagePullBackOff because".into()
            }
        );
        assert!(!nodes[0].complete());
        assert_eq!(
            failures(&nodes),
            BTreeSet::from([("n1".to_owned(), "r/c:nope".to_owned())])
        );
    }

    #[test]
    fn every_pull_failure_reason_counts_and_a_crashing_container_still_has_its_image() {
        for reason in PULL_FAILURES {
            let p = pod(
                Some("n"),
                containers(),
                json!([waiting("cache-a-1", reason)]),
            );
            assert_eq!(
                report(&[p])[0].images["r/a:1"].label(),
                "failed",
                "{reason}"
            );
        }
        let mut crashing = waiting("cache-a-1", "CrashLoopBackOff");
        crashing["imageID"] = json!("r/a@sha256:1");
        let p = pod(Some("n"), containers(), json!([crashing]));
        assert_eq!(report(&[p])[0].images["r/a:1"], ImageState::Present);
    }

    #[test]
    fn unscheduled_and_deleted_pods_are_left_out_and_nodes_come_sorted() {
        let unscheduled = pod(None, containers(), json!([]));
        let mut deleted = (*pod(Some("n0"), containers(), json!([]))).clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let all_present = json!([
            running("cache-a-1", "1"),
            running("cache-b-2", "2"),
            running("cache-c-3", "3"),
        ]);
        let nodes = report(&[
            unscheduled,
            Arc::new(deleted),
            pod(Some("n2"), containers(), json!([])),
            pod(Some("n1"), containers(), all_present),
        ]);
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert!(nodes[0].complete());
        assert!(nodes[1].images.values().all(|s| *s == ImageState::Pending));
    }

    #[test]
    fn the_gauges_count_images_by_state_nodes_by_completeness_and_failures_by_image() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let failing = pod(
            Some("n1"),
            containers(),
            json!([
                running("cache-a-1", "1"),
                running("cache-b-2", "2"),
                waiting("cache-c-3", "ErrImagePull")
            ]),
        );
        let complete = pod(
            Some("n2"),
            containers(),
            json!([
                running("cache-a-1", "1"),
                running("cache-b-2", "2"),
                running("cache-c-3", "3")
            ]),
        );
        let images: BTreeSet<String> = ["r/a:1", "r/b:1", "r/c:nope", "r/gone:1"]
            .map(String::from)
            .into();
        publish(&metrics, &report(&[failing, complete]), &images);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"warmpool_image_cache_images{state="present"} 5"#,
            r#"warmpool_image_cache_images{state="pending"} 0"#,
            r#"warmpool_image_cache_images{state="failed"} 1"#,
            r#"warmpool_image_cache_nodes{state="complete"} 1"#,
            r#"warmpool_image_cache_nodes{state="incomplete"} 1"#,
            r#"warmpool_image_cache_failed_nodes{image="r/c:nope"} 1"#,
            r#"warmpool_image_cache_failed_nodes{image="r/gone:1"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        // An image no longer cached loses its series.
        publish(&metrics, &[], &BTreeSet::new());
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("r/gone:1"), "{text}");
        assert!(
            text.contains(r#"warmpool_image_cache_nodes{state="incomplete"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn the_tag_gauge_counts_the_images_each_tag_names_and_forgets_tags_on_no_node() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let n1 = pod(
            Some("n1"),
            containers(),
            json!([running("cache-a-1", "r/a@sha256:1")]),
        );
        let n2 = pod(
            Some("n2"),
            containers(),
            json!([
                running("cache-a-1", "r/a@sha256:2"),
                running("cache-b-2", "r/b@sha256:1")
            ]),
        );
        publish_tags(&metrics, &moved_tags::resolve(&[n1, n2.clone()]));
        let scrape = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let text = scrape();
        for line in [
            r#"warmpool_image_cache_tag_images{image="r/a:1"} 2"#,
            r#"warmpool_image_cache_tag_images{image="r/b:1"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        let n2_only_b = pod(
            Some("n2"),
            containers(),
            json!([running("cache-b-2", "r/b@sha256:1")]),
        );
        publish_tags(&metrics, &moved_tags::resolve(&[n2_only_b]));
        let text = scrape();
        assert!(!text.contains("r/a:1"), "{text}");
        assert!(
            text.contains(r#"warmpool_image_cache_tag_images{image="r/b:1"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_event_names_image_node_and_what_to_do_and_stays_short() {
        let e = pull_failed_event("n1", "r/c:nope", "ErrImagePull", &"x".repeat(5000));
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.reason, "ImagePullFailed");
        let note = e.note.unwrap();
        assert!(note.contains("r/c:nope") && note.contains("n1"), "{note}");
        assert!(note.contains("imageCache.imagePullSecrets"), "{note}");
        assert!(note.len() < 1024, "{}", note.len());
    }
}
