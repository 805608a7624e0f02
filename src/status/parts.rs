//! The screen's warm nodes, prewarmer and recent failures (the webhook: [`super::admission`]).
//! Pure, like [`super::model`].

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};

use super::Part;
use super::model::{
    Failure, HeadroomRestores, LeftOutImages, Listed, MonthlyCost, NodeImages, Prewarmer,
    TenantNames, WarmNode,
};
use crate::config::{Slot, SlotResources};
use crate::core::image_cache::report;
use crate::core::image_cache::report::ImageState;
use crate::core::names::{IMAGE_CACHE, IMAGES_LEFT_OUT, PREWARMER, SCHEDULE_WINDOW};
use crate::core::placeholders::node_pools;
use crate::core::pool::desired::is_cache_pod;
use crate::core::pool::images::LeftOut;
use crate::core::pool::slot::{Requests, slot_requests};
use crate::reconcile::watches::pods;
use crate::reconcile::watches::pods::SlimPodSpec;

/// The label the chart's objects (and the reconciler's, with their own value) carry.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The chart's name: the webhook Deployment's `app.kubernetes.io/name`.
pub const CHART_NAME: &str = "warmpool";

pub(super) fn label<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn prewarmer_deployment(listed: &Listed) -> Option<&Deployment> {
    listed
        .deployments
        .ok()?
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(PREWARMER))
}

/// One slot: the placeholders' requests as in force, else the configured slot.
fn slot(listed: &Listed) -> (Requests, String) {
    let from_prewarmer = prewarmer_deployment(listed)
        .and_then(|d| {
            d.spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .containers
                .first()
                .cloned()
        })
        .and_then(|c| c.resources?.requests)
        .map(|r| Requests::from_list(Some(&r)))
        .filter(|r| *r != Requests::ZERO);
    let requests = from_prewarmer.unwrap_or_else(|| match &listed.config.prewarmer.slot {
        Slot::Fixed(s) => slot_requests(s),
        Slot::Auto => slot_requests(&SlotResources::default()),
    });
    let text = format!(
        "{}m CPU, {}Mi",
        requests.cpu_millis,
        requests.memory_bytes.div_ceil(1024 * 1024)
    );
    (requests, text)
}

fn pod_requests(pod: &Pod) -> Requests {
    pod.spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| serde_json::from_value::<SlimPodSpec>(v).ok())
        .map_or(Requests::ZERO, |s| pods::pod_requests(&s))
}

pub(super) fn terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// How many slots fit in `free` (a resource the slot does not ask for does not limit it).
pub fn slots_in(free: Requests, slot: Requests) -> u64 {
    let cpu = free
        .cpu_millis
        .checked_div(slot.cpu_millis)
        .unwrap_or(u64::MAX);
    let memory = free
        .memory_bytes
        .checked_div(slot.memory_bytes)
        .unwrap_or(u64::MAX);
    match cpu.min(memory) {
        u64::MAX => 0,
        n => n,
    }
}

pub(super) fn warm_nodes(listed: &Listed, tenants: Option<&TenantNames>) -> Part<Vec<WarmNode>> {
    let nodes = match listed.nodes.read() {
        Ok(nodes) => nodes,
        Err(missing) => return missing,
    };
    let (slot, _) = slot(listed);
    let pods = listed.pods.ok();
    let caches: BTreeMap<String, NodeImages> = pods
        .map(|pods| {
            let cache_pods: Vec<Arc<Pod>> = pods
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(listed.namespace.as_str()))
                .filter(|p| is_cache_pod(p.metadata.labels.as_ref()))
                .map(|p| Arc::new(p.clone()))
                .collect();
            report::report(&cache_pods)
                .into_iter()
                .map(|n| {
                    let images = NodeImages {
                        present: n
                            .images
                            .values()
                            .filter(|s| **s == ImageState::Cached)
                            .count(),
                        wanted: n.images.len(),
                        failed: n
                            .images
                            .iter()
                            .filter(|(_, s)| matches!(s, ImageState::Failed { .. }))
                            .map(|(i, _)| i.clone())
                            .collect(),
                    };
                    (n.node, images)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<WarmNode> = nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let status = node.status.as_ref();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let allocatable = Requests::from_list(status.and_then(|s| s.allocatable.as_ref()));
            let on_node: Option<Vec<&Pod>> = pods.map(|pods| {
                pods.iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name))
                    .filter(|p| !terminated(p))
                    .collect()
            });
            let free_slots = on_node.as_ref().map(|on| {
                let used = on
                    .iter()
                    .fold(Requests::ZERO, |sum, p| sum.saturating_add(pod_requests(p)));
                let free = Requests {
                    cpu_millis: allocatable.cpu_millis.saturating_sub(used.cpu_millis),
                    memory_bytes: allocatable.memory_bytes.saturating_sub(used.memory_bytes),
                };
                slots_in(free, slot)
            });
            let placeholders = on_node.as_ref().map(|on| {
                on.iter()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(listed.namespace.as_str()))
                    .filter(|p| label(&p.metadata, NAME_LABEL) == Some(PREWARMER))
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count()
            });
            let tenant_pods = match (on_node.as_ref(), tenants) {
                (Some(on), Some(t)) => Some(
                    on.iter()
                        .filter(|p| {
                            p.metadata
                                .namespace
                                .as_ref()
                                .is_some_and(|ns| t.contains_key(ns))
                        })
                        .count(),
                ),
                _ => None,
            };
            let images = caches.get(&name).cloned();
            Some(WarmNode {
                name,
                ready,
                free_slots,
                placeholders,
                tenant_pods,
                images,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Part::Read(out)
}

/// What the image cache left out, from the annotation the reconciler keeps on its DaemonSet.
pub(super) fn images_left_out(listed: &Listed) -> Part<Vec<LeftOutImages>> {
    let daemon_sets = match listed.daemon_sets.read() {
        Ok(daemon_sets) => daemon_sets,
        Err(missing) => return missing,
    };
    let recorded = daemon_sets
        .iter()
        .filter(|d| d.metadata.name.as_deref() == Some(IMAGE_CACHE))
        .find_map(|d| d.metadata.annotations.as_ref()?.get(IMAGES_LEFT_OUT))
        .map(|text| LeftOut::parse_counts(text))
        .unwrap_or_default();
    Part::Read(
        recorded
            .into_iter()
            .map(|(reason, images)| LeftOutImages {
                reason: reason.label().to_owned(),
                images,
                why: reason.remedy().to_owned(),
            })
            .collect(),
    )
}

pub(super) fn prewarmer(listed: &Listed) -> Part<Option<Prewarmer>> {
    if let Err(missing) = listed.deployments.read::<Option<Prewarmer>>() {
        return missing;
    }
    let (requests, slot) = slot(listed);
    Part::Read(prewarmer_deployment(listed).map(|d| {
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let slots = u64::try_from(wanted).unwrap_or(0);
        let cpu = slots.saturating_mul(requests.cpu_millis);
        let memory = slots.saturating_mul(requests.memory_bytes);
        Prewarmer {
            wanted,
            ready: d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            window: d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCHEDULE_WINDOW))
                .cloned(),
            slot: Some(slot),
            reserved_cpu_millicores: cpu,
            reserved_memory_bytes: memory,
            monthly_cost: listed.config.pricing.as_ref().map(|p| MonthlyCost {
                amount: p.monthly(cpu, memory),
                currency: p.currency.clone(),
            }),
            headroom: headroom(listed),
            pending: listed
                .pods
                .ok()
                .map(|pods| pending_placeholders(listed, pods)),
            node_pool_findings: node_pool_findings(listed),
        }
    }))
}

/// The reconciler's `HeadroomRestored` Events: how many in the last hour, the latest figure.
fn headroom(listed: &Listed) -> Option<HeadroomRestores> {
    let events = listed.headroom_events.ok()?;
    let since = listed.now - FAILURE_WINDOW;
    let mut seen: Vec<(Timestamp, &Event)> = events
        .iter()
        .filter_map(|e| Some((last_seen(e)?, e)))
        .collect();
    seen.sort_by_key(|(t, _)| *t);
    let (at, latest) = *seen.last()?;
    let latest_seconds = latest
        .message
        .as_deref()
        .and_then(crate::core::placeholders::headroom::seconds_of_note);
    Some(HeadroomRestores {
        last_hour: seen.iter().filter(|(t, _)| *t >= since).count(),
        latest_seconds,
        latest_at: Timestamp::from_second(at.as_second())
            .unwrap_or(at)
            .to_string(),
    })
}

/// Placeholders of this warmpool with no node (the reconciler's rule).
fn pending_placeholders(listed: &Listed, pods: &[Pod]) -> Vec<String> {
    let own: Vec<crate::core::placeholders::headroom::Placeholder> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(listed.namespace.as_str()))
        .filter(|p| label(&p.metadata, NAME_LABEL) == Some(PREWARMER))
        .filter_map(crate::core::placeholders::headroom::Placeholder::read)
        .collect();
    crate::core::placeholders::headroom::pending(&own).names
}

/// The warm NodePools' findings, as the reconciler reports them.
fn node_pool_findings(listed: &Listed) -> Option<Vec<String>> {
    let pools = listed.node_pools.ok()?.as_ref()?;
    let label = &listed.config.pool.node_label;
    let warm: Vec<_> = pools
        .iter()
        .filter_map(|np| node_pools::read(np, &label.key, &label.value))
        .collect();
    Some(
        node_pools::findings(&warm)
            .iter()
            .map(node_pools::Finding::message)
            .collect(),
    )
}

fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// What to do next about a Warning Event, one line.
pub fn remedy(reason: &str, namespace: &str, object: &str) -> String {
    match reason {
        "ImagePullFailed" => "check the image reference, or name its pull secret in \
                              imageCache.imagePullSecrets"
            .to_owned(),
        "ImageTagMoved" => "a tag names different images on different nodes: use an immutable \
                            tag or a digest in the tenants' pods"
            .to_owned(),
        "TenantNotReady" => format!(
            "kubectl -n {namespace} get pods; describe the ones not Ready (FailedScheduling: \
             no room on warm nodes, raise prewarmer.spareSlots)"
        ),
        "Unsteered" => format!(
            "admitted without the webhook: kubectl -n {namespace} delete {object}, its \
             controller re-creates it through the webhook (or set tenants.repair: evict)"
        ),
        "FailedScheduling" => format!(
            "no node fits: kubectl -n {namespace} describe {object}; warm nodes full means \
             prewarmer.spareSlots is too low"
        ),
        "FailedCreate" => format!(
            "kubectl -n {namespace} describe {object}: a quota, a policy or RBAC refused its pods"
        ),
        _ => format!("kubectl -n {namespace} describe {object}"),
    }
}

const FAILURE_WINDOW: SignedDuration = SignedDuration::from_hours(1);

pub(super) fn failures(listed: &Listed, tenants: Option<&TenantNames>) -> Part<Vec<Failure>> {
    let events = match listed.events.read() {
        Ok(events) => events,
        Err(missing) => return missing,
    };
    let since = listed.now - FAILURE_WINDOW;
    let mut merged: BTreeMap<(String, String, String), Failure> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String, String), Timestamp> = BTreeMap::new();
    for e in events {
        let Some(ns) = e.metadata.namespace.clone() else {
            continue;
        };
        let ours = ns == listed.namespace || tenants.is_some_and(|t| t.contains_key(&ns));
        if !ours || e.type_.as_deref() != Some("Warning") {
            continue;
        }
        let Some(at) = last_seen(e).filter(|t| *t >= since) else {
            continue;
        };
        // Whole seconds on the screen (events.k8s.io Events carry microseconds).
        let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
        let reason = e.reason.clone().unwrap_or_default();
        let object = format!(
            "{}/{}",
            e.involved_object
                .kind
                .as_deref()
                .unwrap_or("object")
                .to_lowercase(),
            e.involved_object.name.as_deref().unwrap_or_default()
        );
        let key = (ns.clone(), reason.clone(), object.clone());
        let count = e.count.unwrap_or(1).max(1);
        let message: String = e
            .message
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let newer = seen.get(&key).is_none_or(|t| at > *t);
        let entry = merged.entry(key.clone()).or_insert_with(|| Failure {
            remedy: remedy(&reason, &ns, &object),
            namespace: ns,
            reason,
            object,
            count: 0,
            last_seen: String::new(),
            message: String::new(),
        });
        entry.count = entry.count.saturating_add(count);
        if newer {
            entry.last_seen = at.to_string();
            entry.message = message;
            seen.insert(key, at);
        }
    }
    let mut out: Vec<Failure> = merged.into_values().collect();
    // Newest first (RFC 3339 in UTC sorts as time).
    out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.object.cmp(&b.object)));
    Part::Read(out)
}

pub(super) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
