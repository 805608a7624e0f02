//! The spare slots in the reconciler: what is in force is decided by [`super::spare::decide`]
//! (pure: the schedule of [`crate::capacity`], the arrivals of [`crate::arrivals`], the gentle
//! scale-down of [`crate::scale_down`]) with the instant passed in; this shell wakes the
//! workloads controller at each `next_change` the last decision named (one timer, [`changes`],
//! not polling), and, when the value kept changes, records an Event on the prewarmer Deployment
//! and sets the gauges.

use std::time::Duration;

use futures::{Stream, stream};
use jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use tokio::sync::watch;

use super::PREWARMER;
use super::context::{Context, lock};
use super::spare::{Decision, reason};
use crate::capacity::InForce;

/// The longest one timer sleeps before it reads the clock again: a wall-clock step (NTP, a
/// suspended VM) is caught within this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Woken this much after the change, so that the instant read then is past it.
const AFTER: Duration = Duration::from_millis(50);

/// What the reconciler last kept: the slots and the window that set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub slots: u32,
    pub window: Option<String>,
}

impl From<&InForce> for Kept {
    fn from(f: &InForce) -> Kept {
        Kept {
            slots: f.slots,
            window: f.window.clone(),
        }
    }
}

/// How long to sleep at `now` before the change due at `next` (or before reading the clock
/// again, at most `MAX_SLEEP`).
pub fn wait(now: Timestamp, next: Timestamp) -> Duration {
    let until = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
    (until + AFTER).min(MAX_SLEEP)
}

/// The Event for a change of the slots in force (`why` says what set them); `None` when
/// nothing changed or on the first evaluation (nothing to compare with: the annotation and the
/// gauge show it).
pub fn changed_event(previous: Option<&Kept>, now: &InForce, why: &str) -> Option<Event> {
    let previous = previous?;
    if previous == &Kept::from(now) {
        return None;
    }
    Some(Event {
        type_: EventType::Normal,
        reason: "SpareSlotsChanged".into(),
        note: Some(format!(
            "spare slots {} -> {}: {why}",
            previous.slots, now.slots
        )),
        action: "Scale".into(),
        secondary: None,
    })
}

/// The target in force now with no arrival known (`spareSlots`, or `auto.min`, raised by the
/// schedule): the gauges at start, before the first decision.
pub fn now(ctx: &Context) -> InForce {
    ctx.settings.config.prewarmer.in_force(crate::clock::now())
}

/// After the prewarmer was kept as `decision` says: the gauges, and an Event if the value kept
/// changed.
pub async fn kept(ctx: &Context, decision: &Decision) {
    let prewarmer = &ctx.settings.config.prewarmer;
    let spare = &decision.spare;
    ctx.metrics.publish_spare(spare, &prewarmer.window_names());
    ctx.metrics
        .spare_slots_target
        .set(i64::from(decision.target));
    if let Some(peak) = decision.peak {
        ctx.metrics.arrivals_peak.set(i64::from(peak));
    }
    let event = {
        let mut last = lock(&ctx.spare_kept);
        let event = changed_event(last.as_ref(), spare, &reason(prewarmer, decision));
        *last = Some(Kept::from(spare));
        event
    };
    let Some(event) = event else { return };
    tracing::info!(slots = spare.slots, target = decision.target, window = ?spare.window, why = ?decision.why, "spare slots kept changed");
    let reference = super::placeholders::prewarmer_reference(&ctx.settings.namespace);
    let action = || format!("record the {} event on {PREWARMER}", event.reason);
    if let Err(e) = ctx
        .write(action, ctx.recorder.publish(&event, &reference))
        .await
    {
        tracing::warn!(reason = %event.reason, error = %e, "cannot record the event");
    }
}

/// Yields once at each instant the last decision said the slots can change by the clock alone
/// (`next`, sent by the workloads controller after each decision), to re-trigger it. An instant
/// fires once: if no new decision follows, it waits for one.
pub fn changes(
    next: watch::Receiver<Option<Timestamp>>,
) -> impl Stream<Item = ()> + Send + 'static {
    stream::unfold(
        (next, None::<Timestamp>),
        |(mut next, mut fired)| async move {
            loop {
                let due = (*next.borrow_and_update()).filter(|t| Some(*t) != fired);
                let sleep = async {
                    match due {
                        Some(t) => {
                            let wait = wait(crate::clock::now(), t);
                            tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
                        }
                        None => futures::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    changed = next.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    () = sleep => {
                        if let Some(t) = due
                            && crate::clock::now() >= t
                        {
                            fired = Some(t);
                            return Some(((), (next, fired)));
                        }
                        // Woken early (the clock stepped, or MAX_SLEEP): read it again.
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spare(slots: u32, window: Option<&str>) -> InForce {
        InForce {
            slots,
            window: window.map(str::to_owned),
            next_change: None,
        }
    }

    #[test]
    fn the_timer_sleeps_until_just_after_the_change_and_at_most_an_hour() {
        let now = ts("2026-11-30T07:00:00Z");
        assert_eq!(
            wait(now, ts("2026-11-30T07:45:00Z")),
            Duration::from_secs(45 * 60) + AFTER
        );
        assert_eq!(wait(now, ts("2026-12-01T07:45:00Z")), MAX_SLEEP);
        assert_eq!(wait(now, ts("2026-11-30T06:00:00Z")), AFTER, "already due");
    }

    #[test]
    fn an_event_is_recorded_only_when_the_slots_in_force_change() {
        let base = Kept {
            slots: 1,
            window: None,
        };
        let why = "window `workshop` of prewarmer.schedule in force";
        assert!(changed_event(None, &spare(30, Some("workshop")), why).is_none());
        assert!(changed_event(Some(&base), &spare(1, None), why).is_none());
        let e = changed_event(Some(&base), &spare(30, Some("workshop")), why).unwrap();
        assert_eq!(e.reason, "SpareSlotsChanged");
        assert_eq!(
            e.note.as_deref(),
            Some("spare slots 1 -> 30: window `workshop` of prewarmer.schedule in force")
        );
        let open = Kept {
            slots: 30,
            window: Some("workshop".into()),
        };
        let e = changed_event(
            Some(&open),
            &spare(1, None),
            "no window in force (none): prewarmer.spareSlots",
        )
        .unwrap();
        assert!(
            e.note
                .unwrap()
                .starts_with("spare slots 30 -> 1: no window"),
            "closing"
        );
        // Another window with the same value: still a change of what is in force.
        assert!(changed_event(Some(&open), &spare(30, Some("evening")), why).is_some());
    }

    /// Within one window (and outside), re-evaluating builds the same Deployment: the no-op
    /// check sends nothing; the window opening changes the body, so it is written.
    #[test]
    fn only_a_change_of_what_is_in_force_makes_the_prewarmer_written_again() {
        use crate::config::{Config, SlotResources};
        use crate::reconcile::desired;
        use crate::reconcile::drift::{LastApplied, Sighting, Written, unchanged};

        let config = Config::from_yaml(
            "prewarmer: {schedule: [{name: workshop-mornings, timezone: Europe/Berlin, \
             cron: '0 9 * * 1-5', duration: 4h, spareSlots: 30, leadTime: 15m}]}",
        )
        .unwrap();
        let slot = SlotResources::default();
        let build = |t: &str| {
            let spare = config.prewarmer.in_force(ts(t));
            desired::prewarmer(&config, "ns", &slot, &spare, None)
        };
        let written = build("2026-11-30T06:00:00Z");
        let last = LastApplied {
            desired: serde_json::to_value(&written).unwrap(),
            written: Written::of(&written.metadata, &written.metadata, true),
            events_before: 3,
        };
        let seen = Sighting {
            events: 3,
            meta: Some(written.metadata.clone()),
        };
        let skips = |t: &str| {
            let d = build(t);
            unchanged(
                &last,
                &serde_json::to_value(&d).unwrap(),
                &d.metadata,
                &seen,
                true,
            )
        };
        assert!(skips("2026-11-30T07:44:00Z"), "still before the lead time");
        assert!(!skips("2026-11-30T07:45:00Z"), "warm: 30 slots, annotation");
    }
}
