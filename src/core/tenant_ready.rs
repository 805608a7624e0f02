//! A new tenant's time to Ready, and whether it started warm. Pure: the shell
//! ([`crate::reconcile::jobs::tenant_ready`]) feeds it the namespace's pods and the kubelet's `Pulled` Events.
//!
//! The figure is the time from the namespace's creation to the moment every pod created in its
//! first `window` is Ready. The API server's timestamps are whole seconds, so the start is taken
//! as the earlier of "first seen by the reconciler" and "created + 1 s" (the true creation lies
//! between `created` and both), and the end as the instant the reconciler saw the last pod turn
//! Ready when it watched it happen, else the latest Ready condition's transition time.
//!
//! A tenant started *warm* when every such pod runs on a warm node and the kubelet found every
//! image already present (no `Successfully pulled` Event); anything else is *cold*. The kubelet
//! sends its `Pulled` Event (either kind) for each container it starts, but asynchronously: a
//! pod can be seen Ready before its Event arrives. So once every pod is Ready the verdict waits
//! for one `Pulled` Event per container, at most [`PULLED_GRACE`]; without them it would take a
//! pull still on its way for no pull, and call a cold start warm.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use kube::runtime::events::{Event, EventType};

/// How long after every pod is Ready the verdict waits for the kubelet's `Pulled` Events.
pub const PULLED_GRACE: SignedDuration = SignedDuration::from_secs(10);

/// The annotation with the figure (`"11.2"`, seconds) once every counted pod is Ready.
pub const READY_SECONDS: &str = "warmpool.io/ready-seconds";
/// The annotation `warm`, `cold`, or `not-ready` (not Ready within the timeout): the tenant is
/// measured and never measured again.
pub const START: &str = "warmpool.io/start";

/// One pod, as far as its tenant's start is concerned (read off the pod watch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStart {
    pub created: Option<Timestamp>,
    pub node: Option<String>,
    /// When its Ready condition turned True, while it is True.
    pub ready_since: Option<Timestamp>,
    pub deleting: bool,
    /// Init and regular containers: the kubelet sends a `Pulled` Event for each it starts.
    pub containers: usize,
}

/// How a measurement ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ready(Measurement),
    /// Not every counted pod Ready within the timeout.
    NotReady {
        ready: usize,
        total: usize,
    },
    /// No pod was made in the window: nothing to measure.
    Nothing,
}

/// A tenant's start, measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub seconds: f64,
    pub pods: usize,
    /// Of `pods`, on a warm node.
    pub on_warm: usize,
    /// Images the kubelet pulled for them (de-duplicated).
    pub pulled: BTreeSet<String>,
}

impl Measurement {
    pub fn warm(&self) -> bool {
        self.on_warm == self.pods && self.pulled.is_empty()
    }

    /// The `start` label of the histogram and the annotation's value.
    pub fn start(&self) -> &'static str {
        if self.warm() { "warm" } else { "cold" }
    }
}

/// The measurement of one tenant in progress.
#[derive(Debug, Clone)]
pub struct Progress {
    created: Timestamp,
    /// When the measurement starts (see the module comment).
    start: Timestamp,
    window: SignedDuration,
    timeout: SignedDuration,
    /// A state with some counted pod not Ready was seen: the end is then this process's
    /// reading, not the API server's whole-second timestamp.
    live: bool,
    /// The counted pods when they were all Ready, and the instant that was seen (`None`: found
    /// so, not seen happening).
    all_ready: Option<(BTreeSet<String>, Option<Timestamp>)>,
    /// Until when the verdict waits for the `Pulled` Events of those pods.
    pulls_by: Option<Timestamp>,
    /// The kubelet's `Pulled` messages, by pod.
    pulls: BTreeMap<String, Vec<String>>,
}

impl Progress {
    /// A tenant created at `created`, first seen by the reconciler at `first_seen`.
    pub fn new(
        created: Timestamp,
        first_seen: Timestamp,
        window: SignedDuration,
        timeout: SignedDuration,
    ) -> Progress {
        let upper = created
            .checked_add(SignedDuration::from_secs(1))
            .unwrap_or(created);
        Progress {
            created,
            start: first_seen.min(upper).max(created),
            window,
            timeout,
            live: false,
            all_ready: None,
            pulls_by: None,
            pulls: BTreeMap::new(),
        }
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Whether this began after the fact (a restart, a new leader): the pull Events seen live
    /// may then be incomplete.
    pub fn late(&self, first_seen: Timestamp) -> bool {
        first_seen.duration_since(self.created) > self.window
    }

    fn window_end(&self) -> Timestamp {
        self.created
            .checked_add(self.window)
            .unwrap_or(Timestamp::MAX)
    }

    /// Creation + timeout: not all Ready by then, the tenant is not Ready.
    pub fn deadline(&self) -> Timestamp {
        self.created
            .checked_add(self.timeout)
            .unwrap_or(Timestamp::MAX)
    }

    /// The pods that count: made within the window, not being deleted.
    fn counted<'a>(
        &self,
        pods: impl IntoIterator<Item = (&'a str, &'a PodStart)>,
    ) -> Vec<(&'a str, &'a PodStart)> {
        let until = self.window_end();
        pods.into_iter()
            .filter(|(_, p)| !p.deleting && p.created.is_some_and(|t| t <= until))
            .collect()
    }

    /// Takes in the namespace's pods as they are at `now`.
    pub fn update<'a>(
        &mut self,
        pods: impl IntoIterator<Item = (&'a str, &'a PodStart)>,
        now: Timestamp,
    ) {
        let counted = self.counted(pods);
        let names: BTreeSet<String> = counted.iter().map(|(n, _)| (*n).to_owned()).collect();
        let all = !counted.is_empty() && counted.iter().all(|(_, p)| p.ready_since.is_some());
        let known = self
            .all_ready
            .as_ref()
            .is_some_and(|(n, _)| names.is_subset(n));
        if all {
            if !known {
                self.all_ready = Some((names, self.live.then_some(now)));
                self.pulls_by = now.checked_add(PULLED_GRACE).ok();
            }
        } else {
            self.live = true;
            // A pod that joined after all were Ready moves the finish; one that only flapped
            // does not (the first time counts).
            if !known {
                self.all_ready = None;
            }
        }
    }

    /// Notes a kubelet `Pulled` Event about `pod`.
    pub fn pulled(&mut self, pod: &str, message: &str) {
        self.pulls
            .entry(pod.to_owned())
            .or_default()
            .push(message.to_owned());
    }

    /// The next instant the outcome can change without a pod changing.
    pub fn next_check(&self, now: Timestamp) -> Timestamp {
        if now < self.window_end() {
            self.window_end()
        } else {
            match self.pulls_by {
                Some(by) if self.all_ready.is_some() && now < by => by,
                _ => self.deadline(),
            }
        }
    }

    /// Whether the kubelet's `Pulled` Events of every container of `pods` have arrived.
    fn pulls_known(&self, pods: &[&(&str, &PodStart)]) -> bool {
        pods.iter()
            .all(|(n, p)| self.pulls.get(*n).map_or(0, Vec::len) >= p.containers)
    }

    /// The outcome at `now` from the namespace's `pods` (`None`: not settled yet); `warm_nodes`
    /// are the pool's nodes.
    pub fn outcome<'a>(
        &self,
        pods: impl IntoIterator<Item = (&'a str, &'a PodStart)> + Clone,
        warm_nodes: &BTreeSet<String>,
        now: Timestamp,
    ) -> Option<Outcome> {
        if now < self.window_end() {
            return None;
        }
        let counted = self.counted(pods);
        if counted.is_empty() {
            return Some(Outcome::Nothing);
        }
        if let Some((names, seen_at)) = &self.all_ready {
            let finished: Vec<&(&str, &PodStart)> =
                counted.iter().filter(|(n, _)| names.contains(*n)).collect();
            if !self.pulls_known(&finished) && self.pulls_by.is_some_and(|by| now < by) {
                return None;
            }
            let end = seen_at.unwrap_or_else(|| {
                finished
                    .iter()
                    .filter_map(|(_, p)| p.ready_since)
                    .max()
                    .unwrap_or(self.start)
            });
            let on_warm = finished
                .iter()
                .filter(|(_, p)| p.node.as_ref().is_some_and(|n| warm_nodes.contains(n)))
                .count();
            let pulled = finished
                .iter()
                .flat_map(|(n, _)| self.pulls.get(*n).into_iter().flatten())
                .filter_map(|m| pulled_image(m))
                .map(str::to_owned)
                .collect();
            return Some(Outcome::Ready(Measurement {
                seconds: end.duration_since(self.start).as_secs_f64().max(0.0),
                pods: finished.len(),
                on_warm,
                pulled,
            }));
        }
        (now >= self.deadline()).then(|| Outcome::NotReady {
            ready: counted
                .iter()
                .filter(|(_, p)| p.ready_since.is_some())
                .count(),
            total: counted.len(),
        })
    }
}

/// The image a kubelet `Pulled` Event says was pulled from a registry (`Successfully pulled
/// image "X" in …`); `None` for `Container image "X" already present on machine`.
pub fn pulled_image(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("Successfully pulled image \"")?;
    rest.split_once('"').map(|(image, _)| image)
}

/// The Normal Event on the namespace once every pod is Ready.
pub fn ready_event(m: &Measurement) -> Event {
    let images = if m.pulled.is_empty() {
        "images present".to_owned()
    } else {
        let mut pulled: Vec<&str> = m.pulled.iter().map(String::as_str).take(3).collect();
        if m.pulled.len() > 3 {
            pulled.push("…");
        }
        format!("{} image(s) pulled: {}", m.pulled.len(), pulled.join(", "))
    };
    let pods = if m.pods == 1 { "pod" } else { "pods" };
    Event {
        type_: EventType::Normal,
        reason: "TenantReady".into(),
        note: Some(format!(
            "all {} {pods} Ready {:.1} s after the namespace was created; {}: {}/{} on warm \
             nodes, {images}",
            m.pods,
            m.seconds,
            m.start(),
            m.on_warm,
            m.pods
        )),
        action: "Measure".into(),
        secondary: None,
    }
}

/// The Warning Event when the pods are not all Ready within the timeout.
pub fn not_ready_event(ready: usize, total: usize, timeout: SignedDuration) -> Event {
    let what = if total == 0 {
        "no pod was created".to_owned()
    } else {
        format!("{ready} of {total} pods Ready")
    };
    Event {
        type_: EventType::Warning,
        reason: "TenantNotReady".into(),
        note: Some(format!(
            "{what} {:.0} s after the namespace was created; `kubectl get pods` and `kubectl get \
             events` in this namespace say why (Pending for room, image pulls, probes)",
            timeout.as_secs_f64()
        )),
        action: "Measure".into(),
        secondary: None,
    }
}

/// The merge patch that records the outcome on the namespace.
pub fn annotations(outcome: Option<&Measurement>) -> serde_json::Value {
    let (start, seconds) = match outcome {
        Some(m) => (m.start(), Some(format!("{:.1}", m.seconds))),
        None => ("not-ready", None),
    };
    serde_json::json!({"metadata": {"annotations": {START: start, READY_SECONDS: seconds}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(secs: f64) -> Timestamp {
        ts(T0)
            .checked_add(SignedDuration::from_secs_f64(secs))
            .unwrap()
    }

    fn pod(created: f64, node: &str, ready: Option<f64>) -> PodStart {
        PodStart {
            created: Some(at(created)),
            node: Some(node.to_owned()),
            ready_since: ready.map(at),
            deleting: false,
            containers: 0,
        }
    }

    fn view<'a>(pods: &'a [(&'static str, PodStart)]) -> Vec<(&'static str, &'a PodStart)> {
        pods.iter().map(|(n, p)| (*n, p)).collect()
    }

    const T0: &str = "2026-12-02T09:00:00Z";
    const MIN: SignedDuration = SignedDuration::from_mins(1);
    const TEN: SignedDuration = SignedDuration::from_mins(10);

    fn warm() -> BTreeSet<String> {
        ["w1".to_owned(), "w2".to_owned()].into()
    }

    #[test]
    fn the_start_is_bounded_by_the_whole_second_of_creation() {
        assert_eq!(Progress::new(at(0.0), at(0.3), MIN, TEN).start(), at(0.3));
        // Seen much later (the reconciler restarted): created + 1 s at the latest.
        let late = Progress::new(at(0.0), at(300.0), MIN, TEN);
        assert_eq!(late.start(), at(1.0));
        assert!(late.late(at(300.0)));
        // A clock behind the API server's never starts before the creation.
        assert_eq!(Progress::new(at(0.0), at(-1.0), MIN, TEN).start(), at(0.0));
    }

    #[test]
    fn seen_happening_the_end_is_the_instant_the_last_pod_turned_ready() {
        let mut p = Progress::new(at(0.0), at(0.2), MIN, TEN);
        let mut pods = vec![("a", pod(0.5, "w1", None)), ("b", pod(0.6, "w2", None))];
        p.update(view(&pods), at(1.0));
        pods[0].1.ready_since = Some(at(3.0));
        p.update(view(&pods), at(3.1));
        pods[1].1.ready_since = Some(at(4.0));
        p.update(view(&pods), at(4.3));
        assert_eq!(
            p.outcome(view(&pods), &warm(), at(30.0)),
            None,
            "the window is open"
        );
        assert_eq!(p.next_check(at(30.0)), at(60.0));
        p.pulled("a", "Container image \"r/a:1\" already present on machine");
        let Some(Outcome::Ready(m)) = p.outcome(view(&pods), &warm(), at(60.0)) else {
            panic!("not ready");
        };
        assert!((m.seconds - 4.1).abs() < 1e-9, "{}", m.seconds);
        assert_eq!((m.pods, m.on_warm, m.start()), (2, 2, "warm"));
    }

    /// The kubelet's Event of a pull can arrive after its pod is seen Ready (a cold start was
    /// once called warm so): the verdict waits for it, a while.
    #[test]
    fn the_verdict_waits_a_while_for_the_kubelets_pulled_events() {
        let window = SignedDuration::from_secs(3);
        let one = |ready| PodStart {
            containers: 1,
            ..pod(0.5, "w1", ready)
        };
        let mut p = Progress::new(at(0.0), at(0.2), window, TEN);
        let mut pods = vec![("a", one(None))];
        p.update(view(&pods), at(1.0));
        pods[0].1.ready_since = Some(at(5.0));
        p.update(view(&pods), at(5.1));
        assert_eq!(
            p.outcome(view(&pods), &warm(), at(5.1)),
            None,
            "no Pulled Event yet"
        );
        assert_eq!(p.next_check(at(5.1)), at(15.1));
        p.pulled(
            "a",
            "Successfully pulled image \"r/a:1\" in 40ms (40ms including waiting)",
        );
        let Some(Outcome::Ready(m)) = p.outcome(view(&pods), &warm(), at(5.3)) else {
            panic!("not settled once the Event came");
        };
        assert_eq!(m.start(), "cold");
        assert!((m.seconds - 4.9).abs() < 1e-9, "{}", m.seconds);

        // Events that never come: judged on what is known once the grace has passed.
        let mut q = Progress::new(at(0.0), at(0.2), window, TEN);
        q.update(view(&pods), at(5.1));
        assert_eq!(q.outcome(view(&pods), &warm(), at(6.0)), None);
        let Some(Outcome::Ready(m)) = q.outcome(view(&pods), &warm(), at(15.2)) else {
            panic!("not settled after the grace");
        };
        assert_eq!(m.start(), "warm");
        assert!((m.seconds - 4.8).abs() < 1e-9, "{}", m.seconds);
    }

    #[test]
    fn found_ready_the_end_is_the_latest_ready_transition() {
        let mut p = Progress::new(at(0.0), at(200.0), MIN, TEN);
        let pods = vec![
            ("a", pod(0.5, "w1", Some(9.0))),
            ("b", pod(0.6, "cold-1", Some(11.0))),
        ];
        p.update(view(&pods), at(200.0));
        p.pulled(
            "b",
            "Successfully pulled image \"r/b:1\" in 9s (9s including waiting)",
        );
        let Some(Outcome::Ready(m)) = p.outcome(view(&pods), &warm(), at(200.0)) else {
            panic!("not ready");
        };
        assert_eq!(m.seconds, 10.0, "from created + 1 s to 11 s");
        assert_eq!((m.on_warm, m.start()), (1, "cold"));
        assert_eq!(m.pulled, BTreeSet::from(["r/b:1".to_owned()]));
    }

    #[test]
    fn a_pod_joining_later_in_the_window_moves_the_finish_and_a_flap_does_not() {
        let mut p = Progress::new(at(0.0), at(0.0), MIN, TEN);
        let mut pods = vec![("a", pod(0.5, "w1", None))];
        p.update(view(&pods), at(0.6));
        pods[0].1.ready_since = Some(at(2.0));
        p.update(view(&pods), at(2.0));
        // b arrives at 20 s: not all Ready any more.
        pods.push(("b", pod(20.0, "w1", None)));
        p.update(view(&pods), at(20.0));
        pods[1].1.ready_since = Some(at(25.0));
        p.update(view(&pods), at(25.0));
        // a flaps: the first time all were Ready stands.
        pods[0].1.ready_since = None;
        p.update(view(&pods), at(30.0));
        pods[0].1.ready_since = Some(at(31.0));
        p.update(view(&pods), at(31.0));
        // c is made after the window: it does not count.
        pods.push(("c", pod(61.0, "w1", None)));
        p.update(view(&pods), at(61.0));
        let Some(Outcome::Ready(m)) = p.outcome(view(&pods), &warm(), at(61.0)) else {
            panic!("not ready");
        };
        assert_eq!((m.seconds, m.pods), (25.0, 2));
    }

    #[test]
    fn not_ready_by_the_deadline_or_no_pod_at_all() {
        let mut p = Progress::new(at(0.0), at(0.0), MIN, TEN);
        let mut deleted = pod(1.0, "w1", Some(2.0));
        deleted.deleting = true;
        let pods = vec![
            ("a", pod(0.5, "w1", Some(3.0))),
            ("b", pod(0.5, "w1", None)),
            ("d", deleted),
        ];
        p.update(view(&pods), at(5.0));
        assert_eq!(p.outcome(view(&pods), &warm(), at(120.0)), None);
        assert_eq!(p.next_check(at(120.0)), at(600.0));
        assert_eq!(
            p.outcome(view(&pods), &warm(), at(600.0)),
            Some(Outcome::NotReady { ready: 1, total: 2 })
        );
        let empty = Progress::new(at(0.0), at(0.0), MIN, TEN);
        assert_eq!(
            empty.outcome(Vec::new(), &warm(), at(60.0)),
            Some(Outcome::Nothing)
        );
    }

    #[test]
    fn the_kubelets_pull_messages_are_read() {
        assert_eq!(
            pulled_image(
                "Successfully pulled image \"r/a:1\" in 4.549s (4.549s including waiting). \
                 Image size: 30000000 bytes."
            ),
            Some("r/a:1")
        );
        assert_eq!(
            pulled_image("Container image \"r/a:1\" already present on machine"),
            None
        );
        assert_eq!(
            pulled_image(
                "Container image \"r/a:1\" already present on machine and can be accessed by the pod"
            ),
            None
        );
        assert_eq!(
            pulled_image("Successfully pulled image \"unterminated"),
            None
        );
    }

    #[test]
    fn events_and_annotations_say_what_was_measured() {
        let m = Measurement {
            seconds: 11.24,
            pods: 3,
            on_warm: 3,
            pulled: BTreeSet::new(),
        };
        let e = ready_event(&m);
        assert_eq!(e.reason, "TenantReady");
        assert_eq!(
            e.note.as_deref(),
            Some(
                "all 3 pods Ready 11.2 s after the namespace was created; warm: 3/3 on warm \
                 nodes, images present"
            )
        );
        assert_eq!(
            annotations(Some(&m)),
            json!({"metadata": {"annotations": {START: "warm", READY_SECONDS: "11.2"}}})
        );
        let cold = Measurement {
            on_warm: 1,
            pulled: ["r/a:1", "r/b:1", "r/c:1", "r/d:1"]
                .map(String::from)
                .into(),
            ..m
        };
        let note = ready_event(&cold).note.unwrap();
        assert!(
            note.ends_with("cold: 1/3 on warm nodes, 4 image(s) pulled: r/a:1, r/b:1, r/c:1, …"),
            "{note}"
        );
        let late = not_ready_event(2, 3, SignedDuration::from_mins(10));
        assert_eq!(late.type_, EventType::Warning);
        assert!(
            late.note
                .unwrap()
                .starts_with("2 of 3 pods Ready 600 s after")
        );
        assert_eq!(
            annotations(None),
            json!({"metadata": {"annotations": {START: "not-ready", READY_SECONDS: null}}})
        );
    }
}
