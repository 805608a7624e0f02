//! The webhook's Prometheus metrics. Every label value is a `&'static str` from a closed set, so
//! the number of series is bounded whatever the requests contain.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::core::mutation::Injected;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct What {
    what: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadResult {
    result: &'static str,
}

/// The outcomes of a review that was read: every review but a failed one counts one of them.
const DECISIONS: [&str; 4] = ["patched", "unchanged", "skipped", "ignored"];

/// Handles to the webhook's metrics; cheap to share (each is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    reviews: Family<Outcome, Counter>,
    // The series that every answered review counts, taken from the families once: a
    // `get_or_create` hashes its labels and takes the family's lock, three times a patched
    // review. Made at start, they are also there at 0 before the first review.
    decisions: [Counter; DECISIONS.len()],
    injected: [(Injected, Counter); Injected::ALL.len()],
    duration: Histogram,
    injections: Family<What, Counter>,
    reloads: Family<ReloadResult, Counter>,
    certificate_expiry: Gauge,
}

impl WebhookMetrics {
    /// Creates the metrics and registers them in `registry`:
    /// `warmpool_webhook_reviews_total{outcome}`, `warmpool_webhook_review_duration_seconds`,
    /// `warmpool_webhook_injections_total{what}`,
    /// `warmpool_webhook_certificate_reloads_total{result}`,
    /// `warmpool_webhook_certificate_expiry_timestamp_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        let reviews = Family::<Outcome, Counter>::default();
        let injections = Family::<What, Counter>::default();
        let metrics = WebhookMetrics {
            decisions: DECISIONS.map(|outcome| reviews.get_or_create(&Outcome { outcome }).clone()),
            injected: Injected::ALL.map(|i| {
                let counter = injections.get_or_create(&What { what: i.as_str() });
                (i, counter.clone())
            }),
            reviews,
            // 50µs … ~1.6s: a review takes well under a millisecond; the top buckets show
            // slow clients and overload.
            duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            injections,
            reloads: Family::default(),
            certificate_expiry: Gauge::default(),
        };
        registry.register(
            "warmpool_webhook_reviews",
            "Admission reviews answered, by outcome (patched, unchanged, skipped, ignored; or an error: malformed, too_large, timeout, overloaded…)",
            metrics.reviews.clone(),
        );
        registry.register_with_unit(
            "warmpool_webhook_review_duration",
            "Time to answer one admission review, from the request's headers to the response",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "warmpool_webhook_injections",
            "Pods patched, by what was injected into them",
            metrics.injections.clone(),
        );
        registry.register(
            "warmpool_webhook_certificate_reloads",
            "Serving certificate changes seen on disk, by result (success, failure)",
            metrics.reloads.clone(),
        );
        registry.register_with_unit(
            "warmpool_webhook_certificate_expiry_timestamp",
            "When the served certificate expires (its notAfter, Unix time); 0 if it cannot be read. Alert on `- time() < 30*24*3600`",
            Unit::Seconds,
            metrics.certificate_expiry.clone(),
        );
        // Both results from the start, so an alert on failures has a series to watch.
        for result in ["success", "failure"] {
            drop(metrics.reloads.get_or_create(&ReloadResult { result }));
        }
        metrics
    }

    /// Counts one answered review and its duration.
    pub fn review(&self, outcome: &'static str, seconds: f64) {
        match DECISIONS.iter().position(|d| *d == outcome) {
            Some(i) => self.decisions[i].inc(),
            None => self.reviews.get_or_create(&Outcome { outcome }).inc(),
        };
        self.duration.observe(seconds);
    }

    /// Counts one injection into a patched pod.
    pub fn injected(&self, what: Injected) {
        if let Some((_, counter)) = self.injected.iter().find(|(i, _)| *i == what) {
            counter.inc();
        }
    }

    /// Counts one certificate reload attempt.
    pub fn certificate_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ReloadResult { result }).inc();
    }

    /// Records the served certificate's notAfter (Unix seconds); `None` (unreadable) sets 0.
    pub fn certificate_expiry(&self, not_after: Option<i64>) {
        self.certificate_expiry.set(not_after.unwrap_or(0));
    }
}
