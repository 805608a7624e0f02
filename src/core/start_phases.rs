//! Where a tenant's start went: the phases of its slowest pod (the one that decided its time to
//! Ready). Pure: the shell reads the timeline off the pod, its node and the kubelet's `Pulled`
//! Events ([`super::tenant_ready`] keeps those already).
//!
//! A pod's start, from its creation to Ready, splits into
//! - *node wait*: created → scheduled, while its node did not exist yet (the node was created
//!   after the pod: Karpenter launched it), up to the node's Ready;
//! - *scheduling*: the rest of created → scheduled;
//! - *pulling*: the slowest pull the kubelet reports for its containers (`Successfully pulled
//!   image "X" in 11.9s …`), 0 when every image was present;
//! - *starting*: scheduled → the last container started, less the pull;
//! - *readiness*: the last container started → Ready (probes, the application's own start).
//!
//! The API server's timestamps are whole seconds and the kubelet's pull figure is its own
//! clock's, so a phase is never negative (clamped at 0) and the phases add up to the time to
//! Ready within a second or so, not exactly.

use jiff::{SignedDuration, Timestamp};

/// One pod's start as the API server and the kubelet recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTimeline {
    pub created: Timestamp,
    /// The `PodScheduled` condition's transition to True.
    pub scheduled: Option<Timestamp>,
    /// The pod's node: when it was created and when it turned Ready (its `Ready` condition).
    pub node_created: Option<Timestamp>,
    pub node_ready: Option<Timestamp>,
    /// The kubelet's `Pulled` Event messages about the pod (either kind).
    pub pulled: Vec<String>,
    /// The latest `startedAt` of its regular containers.
    pub started: Option<Timestamp>,
    /// The `Ready` condition's transition to True.
    pub ready: Option<Timestamp>,
}

/// The phases of one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub node_wait: SignedDuration,
    pub scheduling: SignedDuration,
    pub pulling: SignedDuration,
    pub starting: SignedDuration,
    pub readiness: SignedDuration,
}

impl Phases {
    /// Each phase with its label (the `phase` label of the histogram), in the order they happen.
    pub fn labelled(&self) -> [(&'static str, SignedDuration); 5] {
        [
            ("node-wait", self.node_wait),
            ("scheduling", self.scheduling),
            ("pulling", self.pulling),
            ("starting", self.starting),
            ("readiness", self.readiness),
        ]
    }

    /// `58.0 s waiting for a node, 0.4 s scheduling, 11.9 s pulling, 1.1 s starting, 3.2 s to
    /// readiness`: the phases of more than 0.05 s, for a person (an Event's message).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.node_wait, "waiting for a node"),
            (self.scheduling, "scheduling"),
            (self.pulling, "pulling"),
            (self.starting, "starting"),
            (self.readiness, "to readiness"),
        ]
        .into_iter()
        .filter(|(d, _)| d.as_secs_f64() >= 0.05)
        .map(|(d, what)| format!("{:.1} s {what}", d.as_secs_f64()))
        .collect();
        if parts.is_empty() {
            "no phase of a tenth of a second".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The phases of a pod that is Ready; `None` before that, or when a time it needs is missing.
pub fn phases(pod: &PodTimeline) -> Option<Phases> {
    let scheduled = pod.scheduled?;
    let started = pod.started?;
    let ready = pod.ready?;
    let since = |later: Timestamp, earlier: Timestamp| {
        later.duration_since(earlier).max(SignedDuration::ZERO)
    };
    let to_schedule = since(scheduled, pod.created);
    let node_wait = match pod.node_created {
        Some(node) if node > pod.created => {
            let node_there = pod.node_ready.unwrap_or(scheduled).min(scheduled);
            since(node_there, pod.created)
        }
        _ => SignedDuration::ZERO,
    };
    let pulling = pod
        .pulled
        .iter()
        .filter_map(|m| pull_duration(m))
        .max()
        .unwrap_or(SignedDuration::ZERO);
    Some(Phases {
        node_wait,
        scheduling: to_schedule - node_wait,
        pulling,
        starting: (since(started, scheduled) - pulling).max(SignedDuration::ZERO),
        readiness: since(ready, started),
    })
}

/// The phases of the pod that was Ready last (the one that decided the time to Ready).
pub fn slowest<'a>(pods: impl IntoIterator<Item = &'a PodTimeline>) -> Option<Phases> {
    pods.into_iter()
        .filter(|p| p.ready.is_some())
        .max_by_key(|p| p.ready)
        .and_then(phases)
}

/// How long the kubelet says a pull took: `Successfully pulled image "X" in 11.905s (11.905s
/// including waiting). …` (Go's duration format: `1m2.5s`, `850ms`); `None` for `already
/// present on machine` and anything else.
pub fn pull_duration(message: &str) -> Option<SignedDuration> {
    let rest = message.strip_prefix("Successfully pulled image \"")?;
    let (_, after) = rest.split_once("\" in ")?;
    let figure = after.split_whitespace().next()?;
    crate::config::duration::parse(figure)
        .ok()
        .filter(|d| !d.is_negative())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_796_000_000 + seconds).unwrap()
    }

    fn secs(d: SignedDuration) -> f64 {
        d.as_secs_f64()
    }

    /// A cold start as the demo's real nodes record it: Karpenter launches the node 2 s after
    /// the pod, Ready at 33 s; a 11.9 s pull; the app listens 3 s after it starts.
    fn cold() -> PodTimeline {
        PodTimeline {
            created: at(0),
            scheduled: Some(at(34)),
            node_created: Some(at(2)),
            node_ready: Some(at(33)),
            pulled: vec![
                "Successfully pulled image \"registry.local/web:1\" in 11.905s (11.905s including \
                 waiting). Image size: 72453452 bytes."
                    .into(),
                "Container image \"registry.k8s.io/pause:3.10\" already present on machine".into(),
            ],
            started: Some(at(47)),
            ready: Some(at(50)),
        }
    }

    /// A warm start: a node that was there, every image present.
    fn warm() -> PodTimeline {
        PodTimeline {
            created: at(100),
            scheduled: Some(at(100)),
            node_created: Some(at(-3600)),
            node_ready: Some(at(-3590)),
            pulled: vec![
                "Container image \"registry.local/web:1\" already present on machine".into(),
            ],
            started: Some(at(101)),
            ready: Some(at(102)),
        }
    }

    #[test]
    fn a_cold_start_waits_for_its_node_and_pulls() {
        let p = phases(&cold()).unwrap();
        assert_eq!(secs(p.node_wait), 33.0);
        assert_eq!(secs(p.scheduling), 1.0);
        assert_eq!(secs(p.pulling), 11.905);
        assert!((secs(p.starting) - 1.095).abs() < 1e-9, "{p:?}");
        assert_eq!(secs(p.readiness), 3.0);
        let total: f64 = p.labelled().iter().map(|(_, d)| secs(*d)).sum();
        assert!((total - 50.0).abs() < 1e-9, "the phases add up: {total}");
        assert_eq!(
            p.describe(),
            "33.0 s waiting for a node, 1.0 s scheduling, 11.9 s pulling, 1.1 s starting, \
             3.0 s to readiness"
        );
    }

    #[test]
    fn a_warm_start_neither_waits_for_a_node_nor_pulls() {
        let p = phases(&warm()).unwrap();
        assert_eq!(
            (p.node_wait, p.pulling),
            (SignedDuration::ZERO, SignedDuration::ZERO)
        );
        assert_eq!(p.describe(), "1.0 s starting, 1.0 s to readiness");
    }

    #[test]
    fn whole_second_timestamps_never_make_a_phase_negative() {
        // The kubelet's pull (1.4 s) is longer than the whole seconds between scheduled and
        // started (1 s): starting is 0, not -0.4 s.
        let mut p = warm();
        p.pulled =
            vec!["Successfully pulled image \"a:1\" in 1.4s (1.4s including waiting)".into()];
        let got = phases(&p).unwrap();
        assert_eq!(got.starting, SignedDuration::ZERO);
        // A node created after the pod but Ready after the pod was scheduled (the API server's
        // rounding): the wait ends at scheduling.
        let mut p = cold();
        p.node_ready = Some(at(40));
        let got = phases(&p).unwrap();
        assert_eq!((secs(got.node_wait), secs(got.scheduling)), (34.0, 0.0));
        for phase in got.labelled() {
            assert!(!phase.1.is_negative(), "{phase:?}");
        }
    }

    #[test]
    fn a_pod_not_yet_ready_has_no_phases_and_the_slowest_pod_decides() {
        let mut pending = cold();
        pending.ready = None;
        assert_eq!(phases(&pending), None);
        let pods = [warm(), cold(), pending];
        // cold() was Ready at 50 s, warm() at 102 s: warm() decided.
        assert_eq!(slowest(&pods), phases(&warm()));
        assert_eq!(slowest(&[]), None);
    }

    #[test]
    fn the_kubelet_s_pull_figures_are_read_in_go_s_duration_format() {
        let pulled = |figure: &str| {
            pull_duration(&format!(
                "Successfully pulled image \"nginx:1\" in {figure} ({figure} including waiting). \
                 Image size: 1 bytes."
            ))
        };
        assert_eq!(pulled("11.905s"), Some(SignedDuration::from_millis(11_905)));
        assert_eq!(pulled("850ms"), Some(SignedDuration::from_millis(850)));
        assert_eq!(pulled("1m2.5s"), Some(SignedDuration::from_millis(62_500)));
        assert_eq!(
            pull_duration("Container image \"nginx:1\" already present on machine"),
            None
        );
        assert_eq!(pull_duration("Successfully pulled image \"nginx:1\""), None);
        assert_eq!(pulled("soon"), None);
    }
}
