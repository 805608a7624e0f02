//! The warm headroom the placeholders hold, read from their pods (pure): how long it took to
//! get back after a tenant took it, and which placeholders have no node.
//!
//! A tenant preempts a placeholder (the scheduler marks the victim `DisruptionTarget`,
//! `PreemptionByScheduler`, then deletes it); the prewarmer's ReplicaSet makes a new one, which
//! is Pending until Karpenter has launched a node for it. The headroom is back when a
//! placeholder is Running again: that span, Karpenter's provisioning included, is what the next
//! tenant of a burst depends on (`warmpool_prewarmer_headroom_restore_seconds`). Preemptions are
//! matched to placeholders that start Running in order, oldest first; one a scale-down leaves
//! unmatched is forgotten after [`FORGET_AFTER`].

use std::collections::{BTreeSet, VecDeque};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

/// A preemption not matched by a Running placeholder within this long is dropped (the target
/// went down, or the pool cannot grow: [`Pending`] reports that).
pub const FORGET_AFTER: SignedDuration = SignedDuration::from_hours(1);
/// At most this many preemptions wait for their placeholder (a burst larger than any pool).
const MAX_WAITING: usize = 10_000;

/// What one placeholder pod shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub uid: String,
    pub name: String,
    pub node: Option<String>,
    pub running: bool,
    pub deleting: bool,
    /// The scheduler's `DisruptionTarget` message when it preempted this pod
    /// ("default-scheduler: preempting to accommodate a higher priority pod").
    pub preempted: Option<String>,
    /// The scheduler found no node for it (`PodScheduled=False`, `Unschedulable`), since then.
    pub unschedulable_since: Option<Timestamp>,
}

impl Placeholder {
    /// Reads what matters of a placeholder pod (a pod without a uid is not one of the API
    /// server's and is skipped).
    pub fn read(pod: &Pod) -> Option<Placeholder> {
        let uid = pod.metadata.uid.clone()?;
        let status = pod.status.as_ref();
        let conditions = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let preempted = conditions
            .iter()
            .find(|c| {
                c.type_ == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("PreemptionByScheduler")
            })
            .map(|c| c.message.clone().unwrap_or_default());
        let unschedulable_since = conditions
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| {
                c.last_transition_time
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
            });
        Some(Placeholder {
            uid,
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            preempted,
            unschedulable_since,
        })
    }
}

/// A preemption that the headroom is waiting to get back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub at: Timestamp,
    pub placeholder: String,
}

/// The headroom got back: `after` the preemption, by `placeholder` Running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub preemption: Preemption,
    pub placeholder: String,
    pub node: String,
    pub after: SignedDuration,
}

/// Follows the placeholder pods' events.
#[derive(Debug, Default)]
pub struct Headroom {
    /// Placeholders seen Running.
    running: BTreeSet<String>,
    /// Placeholders whose preemption was counted.
    preempted: BTreeSet<String>,
    waiting: VecDeque<Preemption>,
}

impl Headroom {
    /// A placeholder as it is now (added or changed). A placeholder Running for the first time
    /// gives back the oldest preemption's headroom.
    pub fn applied(&mut self, pod: &Placeholder, now: Timestamp) -> Option<Restored> {
        self.forget_old(now);
        if self.note_preemption(pod, now) {
            self.running.remove(&pod.uid);
            return None;
        }
        if !pod.running || pod.deleting || !self.running.insert(pod.uid.clone()) {
            return None;
        }
        let preemption = self.waiting.pop_front()?;
        Some(Restored {
            after: now.duration_since(preemption.at),
            preemption,
            placeholder: pod.name.clone(),
            node: pod.node.clone().unwrap_or_default(),
        })
    }

    /// A placeholder gone (its last state).
    pub fn deleted(&mut self, pod: &Placeholder, now: Timestamp) {
        self.note_preemption(pod, now);
        self.running.remove(&pod.uid);
        self.preempted.remove(&pod.uid);
    }

    /// After a relist: only the placeholders that still exist are remembered (a preemption
    /// already counted stays counted).
    pub fn retain(&mut self, uids: &BTreeSet<String>) {
        self.running.retain(|u| uids.contains(u));
        self.preempted.retain(|u| uids.contains(u));
    }

    /// Preemptions whose headroom is not back yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn note_preemption(&mut self, pod: &Placeholder, now: Timestamp) -> bool {
        if pod.preempted.is_none() {
            return false;
        }
        if self.preempted.insert(pod.uid.clone()) && self.waiting.len() < MAX_WAITING {
            self.waiting.push_back(Preemption {
                at: now,
                placeholder: pod.name.clone(),
            });
        }
        true
    }

    fn forget_old(&mut self, now: Timestamp) {
        while self
            .waiting
            .front()
            .is_some_and(|p| now.duration_since(p.at) > FORGET_AFTER)
        {
            self.waiting.pop_front();
        }
    }
}

/// The placeholders that have no node, and since when the oldest has waited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pending {
    pub names: Vec<String>,
    /// When the scheduler first found no node for the longest-waiting one.
    pub oldest: Option<Timestamp>,
}

/// Placeholders not bound to a node (and not on their way out).
pub fn pending<'a>(pods: impl IntoIterator<Item = &'a Placeholder>) -> Pending {
    let mut waiting: Vec<&Placeholder> = pods
        .into_iter()
        .filter(|p| p.node.is_none() && !p.deleting && p.preempted.is_none())
        .collect();
    waiting.sort_by(|a, b| a.name.cmp(&b.name));
    Pending {
        oldest: waiting.iter().filter_map(|p| p.unschedulable_since).min(),
        names: waiting.into_iter().map(|p| p.name.clone()).collect(),
    }
}

/// The Event's note when the headroom is back.
pub fn restored_note(r: &Restored) -> String {
    format!(
        "headroom back {:.1} s after placeholder {} was preempted: placeholder {} Running on \
         node {} (provisioning of the replacement node included)",
        r.after.as_secs_f64(),
        r.preemption.placeholder,
        r.placeholder,
        r.node
    )
}

/// The seconds a [`restored_note`] states (what `warmpool status` reads back from the Event).
pub fn seconds_of_note(note: &str) -> Option<f64> {
    note.strip_prefix("headroom back ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn placeholder(uid: &str, node: Option<&str>, running: bool) -> Placeholder {
        Placeholder {
            uid: uid.into(),
            name: format!("warmpool-prewarmer-{uid}"),
            node: node.map(Into::into),
            running,
            deleting: false,
            preempted: None,
            unschedulable_since: None,
        }
    }

    fn preempted(uid: &str) -> Placeholder {
        Placeholder {
            preempted: Some(
                "default-scheduler: preempting to accommodate a higher priority pod".into(),
            ),
            deleting: true,
            ..placeholder(uid, Some("warm-1"), true)
        }
    }

    #[test]
    fn a_preemption_is_restored_by_the_next_placeholder_running() {
        let mut h = Headroom::default();
        assert_eq!(
            h.applied(&placeholder("a", Some("warm-1"), true), at(0)),
            None
        );
        assert_eq!(h.applied(&preempted("a"), at(10)), None);
        h.deleted(&preempted("a"), at(10));
        assert_eq!(h.waiting(), 1);
        // The replacement: Pending, bound, then Running on the node Karpenter launched.
        assert_eq!(h.applied(&placeholder("b", None, false), at(11)), None);
        assert_eq!(
            h.applied(&placeholder("b", Some("warm-2"), false), at(25)),
            None
        );
        let r = h
            .applied(&placeholder("b", Some("warm-2"), true), at(27))
            .unwrap();
        assert_eq!(r.after, SignedDuration::from_secs(17));
        assert_eq!(r.node, "warm-2");
        assert_eq!(
            restored_note(&r),
            "headroom back 17.0 s after placeholder warmpool-prewarmer-a was preempted: \
             placeholder warmpool-prewarmer-b Running on node warm-2 (provisioning of the \
             replacement node included)"
        );
        assert_eq!(seconds_of_note(&restored_note(&r)), Some(17.0));
        assert_eq!(seconds_of_note("something else"), None);
        assert_eq!(h.waiting(), 0);
        // Seen Running again: nothing more.
        assert_eq!(
            h.applied(&placeholder("b", Some("warm-2"), true), at(30)),
            None
        );
    }

    #[test]
    fn a_preemption_seen_only_in_the_delete_counts_once_and_in_order() {
        let mut h = Headroom::default();
        for uid in ["a", "b"] {
            h.applied(&placeholder(uid, Some("warm-1"), true), at(0));
        }
        h.deleted(&preempted("a"), at(5));
        h.applied(&preempted("b"), at(6));
        h.deleted(&preempted("b"), at(6));
        assert_eq!(h.waiting(), 2);
        let first = h
            .applied(&placeholder("c", Some("w"), true), at(20))
            .unwrap();
        assert_eq!(first.preemption.placeholder, "warmpool-prewarmer-a");
        assert_eq!(first.after, SignedDuration::from_secs(15));
        let second = h
            .applied(&placeholder("d", Some("w"), true), at(21))
            .unwrap();
        assert_eq!(second.after, SignedDuration::from_secs(15));
    }

    #[test]
    fn placeholders_running_at_start_or_deleted_by_a_scale_down_restore_nothing() {
        let mut h = Headroom::default();
        assert_eq!(h.applied(&placeholder("a", Some("w"), true), at(0)), None);
        let mut gone = placeholder("a", Some("w"), true);
        gone.deleting = true;
        h.deleted(&gone, at(1));
        assert_eq!(h.waiting(), 0, "a scale-down is no preemption");
        assert_eq!(h.applied(&placeholder("b", Some("w"), true), at(2)), None);
    }

    #[test]
    fn an_unmatched_preemption_is_forgotten_after_an_hour() {
        let mut h = Headroom::default();
        h.deleted(&preempted("a"), at(0));
        let late = at(FORGET_AFTER.as_secs() + 1);
        assert_eq!(h.applied(&placeholder("b", Some("w"), true), late), None);
        assert_eq!(h.waiting(), 0);
    }

    #[test]
    fn pending_lists_unbound_placeholders_and_the_oldest_wait() {
        let mut a = placeholder("a", None, false);
        a.unschedulable_since = Some(at(5));
        let mut b = placeholder("b", None, false);
        b.unschedulable_since = Some(at(3));
        let bound = placeholder("c", Some("w"), true);
        let p = pending([&a, &b, &bound, &preempted("d")]);
        assert_eq!(p.names, ["warmpool-prewarmer-a", "warmpool-prewarmer-b"]);
        assert_eq!(p.oldest, Some(at(3)));
        assert_eq!(pending([&bound]), Pending::default());
    }

    #[test]
    fn a_pod_is_read_with_its_preemption_and_its_wait() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u", "deletionTimestamp": "2027-01-15T08:00:00Z"},
            "spec": {"containers": [], "nodeName": "warm-1"},
            "status": {"phase": "Running", "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                 "message": "default-scheduler: preempting to accommodate a higher priority pod"}
            ]}
        }))
        .unwrap();
        let p = Placeholder::read(&pod).unwrap();
        assert!(p.running && p.deleting);
        assert_eq!(
            p.preempted.as_deref(),
            Some("default-scheduler: preempting to accommodate a higher priority pod")
        );
        let pending: Pod = serde_json::from_value(json!({
            "metadata": {"name": "q", "uid": "v"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "lastTransitionTime": "2027-01-15T08:00:00Z"}
            ]}
        }))
        .unwrap();
        let q = Placeholder::read(&pending).unwrap();
        assert_eq!(q.node, None);
        assert_eq!(
            q.unschedulable_since,
            Some("2027-01-15T08:00:00Z".parse().unwrap())
        );
        let no_uid: Pod = serde_json::from_value(json!({"metadata": {"name": "r"}})).unwrap();
        assert_eq!(Placeholder::read(&no_uid), None);
    }
}
