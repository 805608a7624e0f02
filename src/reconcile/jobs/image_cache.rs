//! The watch of the image cache's pods, exporting what it holds on each warm node (the pure
//! [`report`]): the gauges `warmpool_image_cache_images{state}`,
//! `warmpool_image_cache_nodes{state}`, `warmpool_image_cache_failed_nodes{image}` and
//! `warmpool_image_cache_tag_images{image}`, and a Warning Event on the DaemonSet for every image
//! that cannot be pulled on a node and every tag that names different images on different nodes
//! ([`crate::core::image_cache::moved_tags`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::core::image_cache::moved_tags::{self, Resolved};
use crate::core::image_cache::report::{
    self, ImageState, NodeCache, daemonset_reference, failures, pull_failed_event,
};
use crate::core::pool::desired::{CACHE_CONTAINER_PREFIX, cache_pod_selector};
use crate::reconcile::base::context::Context;
use crate::reconcile::base::metrics::Metrics;

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
                seen = scan(&ctx, &store, &namespace, seen).await;
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

async fn scan(ctx: &Context, store: &Store<Pod>, namespace: &str, before: Seen) -> Seen {
    let pods = store.state();
    let nodes = report::report(&pods);
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
    use crate::core::image_cache::report::tests::{containers, pod, running, waiting};
    use serde_json::json;

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
        publish(&metrics, &report::report(&[failing, complete]), &images);
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
}
