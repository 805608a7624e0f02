//! The reconciler's Prometheus metrics (served on `/metrics` by the admin router).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TargetLabels {
    /// `namespace`, `priorityclass`, `deployment` or `daemonset`.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    pub target: String,
    /// [`Error::metric_label`].
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ImageLabels {
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StartLabels {
    /// `warm` or `cold` ([`crate::core::tenant_ready::Measurement::start`]).
    pub start: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FindingLabels {
    /// A [`crate::core::placeholders::node_pools::Finding::label`].
    pub finding: String,
}

/// From a placeholder's preemption to a placeholder Running again: a node's boot and more.
fn headroom_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    ])
}

fn tenant_ready_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    ])
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WindowLabels {
    /// A `prewarmer.schedule[].name`.
    pub window: String,
}

fn duration_histogram() -> Histogram {
    // 5 ms … ~20 s
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Every metric of the reconciler; cheap to clone (the handles share their values).
#[derive(Clone)]
pub struct Metrics {
    pub tenants: Gauge,
    pub spare_slots: Gauge,
    /// The target before gentle scale-down.
    pub spare_slots_target: Gauge,
    /// With `spareSlots.auto`: the most tenants arrived within one span of the lookback.
    pub arrivals_peak: Gauge,
    pub cached_images: Gauge,
    pub slot_cpu_millicores: Gauge,
    pub slot_memory_bytes: Gauge,
    /// What the placeholders hold: spare slots × the slot ([`Metrics::publish_reserved`]).
    reserved_cpu_millicores: Gauge,
    reserved_memory_bytes: Gauge,
    pub leader: Gauge,
    /// `warmpool_prewarmer_*` ([`crate::reconcile::jobs::placeholders`]).
    pub headroom_restore: Histogram,
    pub placeholders_pending: Gauge,
    node_pool_findings: Family<FindingLabels, Gauge>,
    /// `warmpool_tenant_ready_seconds{start}` ([`crate::reconcile::jobs::tenant_ready`]).
    tenant_ready: Family<StartLabels, Histogram>,
    pub tenant_not_ready: Counter,
    /// `warmpool_tenant_pods_unsteered` ([`crate::reconcile::jobs::unsteered`]).
    pub tenant_pods_unsteered: Gauge,
    pub tenant_pods_evicted: Counter,
    pub enrolled: Counter,
    pub unenrolled: Counter,
    pub runs: Family<TargetLabels, Counter>,
    pub unchanged: Family<TargetLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<TargetLabels, Histogram>,
    /// 1 for the schedule window whose `spareSlots` are in force, 0 for the others.
    schedule_window: Family<WindowLabels, Gauge>,
    /// `warmpool_image_cache_*` ([`crate::reconcile::jobs::image_cache`]).
    cache_images: Family<StateLabels, Gauge>,
    cache_nodes: Family<StateLabels, Gauge>,
    cache_failed_nodes: Family<ImageLabels, Gauge>,
    cache_tag_images: Family<ImageLabels, Gauge>,
    /// `warmpool_image_cache_left_out{reason}`, set with each observation.
    cache_left_out: Family<ReasonLabels, Gauge>,
    /// The tags that have a `tag_images` series.
    cache_tags_known: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// The images that have a `failed_nodes` series.
    cache_failed_known: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            tenants: Gauge::default(),
            spare_slots: Gauge::default(),
            spare_slots_target: Gauge::default(),
            arrivals_peak: Gauge::default(),
            cached_images: Gauge::default(),
            slot_cpu_millicores: Gauge::default(),
            slot_memory_bytes: Gauge::default(),
            reserved_cpu_millicores: Gauge::default(),
            reserved_memory_bytes: Gauge::default(),
            leader: Gauge::default(),
            headroom_restore: headroom_histogram(),
            placeholders_pending: Gauge::default(),
            node_pool_findings: Family::default(),
            tenant_ready: Family::new_with_constructor(tenant_ready_histogram),
            tenant_not_ready: Counter::default(),
            tenant_pods_unsteered: Gauge::default(),
            tenant_pods_evicted: Counter::default(),
            enrolled: Counter::default(),
            unenrolled: Counter::default(),
            runs: Family::default(),
            unchanged: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            schedule_window: Family::default(),
            cache_images: Family::default(),
            cache_nodes: Family::default(),
            cache_failed_nodes: Family::default(),
            cache_tag_images: Family::default(),
            cache_left_out: Family::default(),
            cache_tags_known: Default::default(),
            cache_failed_known: Default::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under the prefix `warmpool_reconcile`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let tenant = registry.sub_registry_with_prefix("warmpool_tenant");
        tenant.register(
            "ready_seconds",
            "New tenants' time from the namespace's creation to every pod of its first \
             tenants.timeToReady.window Ready; start=warm when every pod ran on a warm node with \
             every image present, else cold",
            m.tenant_ready.clone(),
        );
        tenant.register(
            "not_ready",
            "New tenants whose pods were not all Ready within tenants.timeToReady.timeout",
            m.tenant_not_ready.clone(),
        );
        tenant.register(
            "pods_unsteered",
            "Pods in tenant namespaces that escaped the webhook (no warmpool.io/injected, and the \
             webhook would steer them): admitted while it was unreachable",
            m.tenant_pods_unsteered.clone(),
        );
        tenant.register(
            "pods_evicted",
            "Unsteered tenant pods evicted (tenants.repair: evict) so that they come back \
             through the webhook",
            m.tenant_pods_evicted.clone(),
        );
        for start in ["warm", "cold"] {
            m.tenant_ready(start);
        }
        let prewarmer = registry.sub_registry_with_prefix("warmpool_prewarmer");
        prewarmer.register(
            "headroom_restore_seconds",
            "From a placeholder's preemption by a tenant to a placeholder Running again: how long \
             the next tenant waits for warm room (Karpenter's provisioning of the replacement \
             node included)",
            m.headroom_restore.clone(),
        );
        prewarmer.register(
            "placeholders_pending",
            "Placeholder pods with no node now (the headroom they should hold is missing)",
            m.placeholders_pending.clone(),
        );
        prewarmer.register(
            "node_pool_findings",
            "Karpenter NodePools that make warm nodes, by finding: replaces_warm_nodes \
             (consolidationPolicy WhenEmptyOrUnderutilized), at_limits (no more warm nodes)",
            m.node_pool_findings.clone(),
        );
        for finding in crate::core::placeholders::node_pools::FINDINGS {
            m.node_pool_findings(finding);
        }
        let cache = registry.sub_registry_with_prefix("warmpool_image_cache");
        cache.register(
            "images",
            "Cached images summed over the warm nodes that run a cache pod, by state: present \
             (pulled), pending (pulling or not started), failed (the kubelet cannot pull it)",
            m.cache_images.clone(),
        );
        cache.register(
            "nodes",
            "Warm nodes running a cache pod, by state: complete (every image present) or incomplete",
            m.cache_nodes.clone(),
        );
        cache.register(
            "failed_nodes",
            "Nodes on which the kubelet cannot pull this cached image (0 once it can)",
            m.cache_failed_nodes.clone(),
        );
        cache.register(
            "tag_images",
            "Distinct images (imageID) this cached tag names across the warm nodes; above 1 the \
             tag was moved in the registry between two nodes' pulls",
            m.cache_tag_images.clone(),
        );
        cache.register(
            "left_out",
            "Images tenant pods run that the cache leaves out, by reason: unusable (references \
             refused: not an image reference, over 512 bytes, past a pod's 32nd image), registry \
             (not in imageCache.discoverRegistries), per-namespace (beyond every namespace's \
             imageCache.discoverPerNamespace), max-images, byte-budget (imageCache.maxBytesPerNode)",
            m.cache_left_out.clone(),
        );
        for reason in crate::core::pool::images::LeftOut::ALL {
            m.cache_left_out(reason).set(0);
        }
        let r = registry.sub_registry_with_prefix("warmpool_reconcile");
        r.register(
            "tenants",
            "Namespaces that are tenants now",
            m.tenants.clone(),
        );
        r.register(
            "spare_slots",
            "Placeholder replicas kept on warm nodes now: spare_slots_target, or above it while \
             prewarmer.scaleDown steps down toward it",
            m.spare_slots.clone(),
        );
        r.register(
            "spare_slots_target",
            "The spare slots' target: the largest of prewarmer.spareSlots (or, with auto, the \
             most tenants arrived within one span, bounded) and the schedule window in force; \
             spare_slots follows it down gently with prewarmer.scaleDown",
            m.spare_slots_target.clone(),
        );
        r.register(
            "arrivals_peak",
            "With prewarmer.spareSlots.auto: the most tenants that arrived within one span over \
             the lookback (before min and max)",
            m.arrivals_peak.clone(),
        );
        r.register(
            "schedule_window_in_force",
            "1 for the prewarmer.schedule window whose spareSlots are in force, 0 for the others",
            m.schedule_window.clone(),
        );
        r.register(
            "cached_images",
            "Images in the image-cache DaemonSet",
            m.cached_images.clone(),
        );
        r.register(
            "reserved_cpu_millicores",
            "CPU the placeholders reserve on warm nodes: spare_slots x slot_cpu_millicores, \
             what warm capacity costs while no tenant uses it",
            m.reserved_cpu_millicores.clone(),
        );
        r.register(
            "reserved_memory_bytes",
            "Memory the placeholders reserve on warm nodes: spare_slots x slot_memory_bytes",
            m.reserved_memory_bytes.clone(),
        );
        r.register(
            "slot_cpu_millicores",
            "CPU one placeholder requests",
            m.slot_cpu_millicores.clone(),
        );
        r.register(
            "slot_memory_bytes",
            "Memory one placeholder requests",
            m.slot_memory_bytes.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the Lease and writes, else 0",
            m.leader.clone(),
        );
        r.register(
            "enrolled_namespaces",
            "Namespaces labelled warmpool.io/tenant=enabled by this replica",
            m.enrolled.clone(),
        );
        r.register(
            "unenrolled_namespaces",
            "Namespaces whose warmpool.io/tenant=enabled label, set by warmpool, this replica removed \
             because they no longer match a tenant pattern",
            m.unenrolled.clone(),
        );
        r.register(
            "runs",
            "Reconcile runs that wrote, by target",
            m.runs.clone(),
        );
        r.register(
            "unchanged",
            "Reconcile runs that found the object as last written and sent nothing, by target",
            m.unchanged.clone(),
        );
        r.register(
            "failures",
            "Failed reconcile runs, by target and kind of failure",
            m.failures.clone(),
        );
        r.register(
            "duration_seconds",
            "Time one reconcile run took, by target",
            m.duration.clone(),
        );
        m
    }

    pub fn node_pool_findings(&self, finding: &str) -> Gauge {
        self.node_pool_findings
            .get_or_create(&FindingLabels {
                finding: finding.to_owned(),
            })
            .clone()
    }

    pub fn tenant_ready(&self, start: &str) -> Histogram {
        self.tenant_ready
            .get_or_create(&StartLabels {
                start: start.to_owned(),
            })
            .clone()
    }

    pub fn cache_images(&self, state: &str) -> Gauge {
        self.cache_images
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .clone()
    }

    pub fn cache_nodes(&self, state: &str) -> Gauge {
        self.cache_nodes
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .clone()
    }

    pub fn cache_failed_nodes(&self, image: &str) -> Gauge {
        self.cache_failed_nodes
            .get_or_create(&ImageLabels {
                image: image.to_owned(),
            })
            .clone()
    }

    pub fn cache_left_out(&self, reason: crate::core::pool::images::LeftOut) -> Gauge {
        self.cache_left_out
            .get_or_create(&ReasonLabels {
                reason: reason.label().to_owned(),
            })
            .clone()
    }

    pub fn cache_tag_images(&self, image: &str) -> Gauge {
        self.cache_tag_images
            .get_or_create(&ImageLabels {
                image: image.to_owned(),
            })
            .clone()
    }

    /// Drops the `failed_nodes` series of every image not in `images_now` (no longer cached).
    pub fn retain_failed_images(&self, images_now: &std::collections::BTreeSet<String>) {
        retain(
            &self.cache_failed_nodes,
            &self.cache_failed_known,
            images_now,
        );
    }

    /// Drops the `tag_images` series of every tag not in `tags_now` (on no node any more).
    pub fn retain_tag_images(&self, tags_now: &std::collections::BTreeSet<String>) {
        retain(&self.cache_tag_images, &self.cache_tags_known, tags_now);
    }

    /// The spare slots in force (`warmpool_reconcile_spare_slots`), and which of the schedule's
    /// `windows` set them (`warmpool_reconcile_schedule_window_in_force`).
    pub fn publish_spare(&self, spare: &crate::core::spare::windows::InForce, windows: &[&str]) {
        self.spare_slots.set(i64::from(spare.slots));
        self.publish_reserved();
        for name in windows {
            let open = spare.window.as_deref() == Some(*name);
            self.schedule_window
                .get_or_create(&WindowLabels {
                    window: (*name).to_owned(),
                })
                .set(i64::from(open));
        }
    }

    /// `reserved_*` from the spare slots and the slot as last published (either may change).
    pub fn publish_reserved(&self) {
        let slots = self.spare_slots.get();
        self.reserved_cpu_millicores
            .set(slots.saturating_mul(self.slot_cpu_millicores.get()));
        self.reserved_memory_bytes
            .set(slots.saturating_mul(self.slot_memory_bytes.get()));
    }

    /// Counts one run of `target` that sent nothing.
    pub fn observe_unchanged(&self, target: &str) {
        self.unchanged
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
    }

    /// Counts one run of `target` that took `took` and ended in `result`.
    pub fn observe_run<T>(&self, target: &str, took: Duration, result: &Result<T, Error>) {
        let labels = TargetLabels {
            target: target.to_owned(),
        };
        self.runs.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Err(e) = result {
            self.failures
                .get_or_create(&FailureLabels {
                    target: target.to_owned(),
                    kind: e.metric_label().to_owned(),
                })
                .inc();
        }
    }
}

/// Drops from `family` the series of every image in `known` but not in `now`; `known` becomes
/// `now`.
fn retain(
    family: &Family<ImageLabels, Gauge>,
    known: &std::sync::Mutex<std::collections::BTreeSet<String>>,
    now: &std::collections::BTreeSet<String>,
) {
    let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
    for gone in known.difference(now) {
        family.remove(&ImageLabels {
            image: gone.clone(),
        });
    }
    known.clone_from(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_failures_are_encoded_with_their_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.observe_run::<()>("deployment", Duration::from_millis(20), &Ok(()));
        m.observe_run::<()>(
            "deployment",
            Duration::from_millis(20),
            &Err(Error::NotLeader {
                action: "apply".into(),
            }),
        );
        m.tenants.set(3);
        let spare = crate::core::spare::windows::InForce {
            slots: 30,
            window: Some("workshop".into()),
            next_change: None,
        };
        m.publish_spare(&spare, &["night", "workshop"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"warmpool_reconcile_runs_total{target="deployment"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"warmpool_reconcile_failures_total{target="deployment",kind="not_leader"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("warmpool_reconcile_tenants 3"), "{text}");
        assert!(text.contains("warmpool_reconcile_spare_slots 30"), "{text}");
        for line in [
            r#"warmpool_reconcile_schedule_window_in_force{window="workshop"} 1"#,
            r#"warmpool_reconcile_schedule_window_in_force{window="night"} 0"#,
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(
            text.contains(r#"warmpool_reconcile_duration_seconds_count{target="deployment"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn the_reserved_capacity_is_spare_slots_times_the_slot_whichever_changes() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.slot_cpu_millicores.set(640);
        m.slot_memory_bytes.set(2_254_438_400);
        let spare = |slots| crate::core::spare::windows::InForce {
            slots,
            window: None,
            next_change: None,
        };
        m.publish_spare(&spare(3), &[]);
        let scrape = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let text = scrape();
        assert!(
            text.contains("warmpool_reconcile_reserved_cpu_millicores 1920"),
            "{text}"
        );
        assert!(
            text.contains("warmpool_reconcile_reserved_memory_bytes 6763315200"),
            "{text}"
        );
        m.slot_cpu_millicores.set(1000);
        m.publish_reserved();
        assert!(scrape().contains("warmpool_reconcile_reserved_cpu_millicores 3000"));
    }
}
