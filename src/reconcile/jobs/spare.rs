//! The spare slots in the reconciler: what is in force is decided by [`crate::core::spare::decide::decide`]
//! (pure: the schedule of [`crate::core::spare::windows`], the arrivals of [`crate::core::spare::arrivals`], the gentle
//! scale-down of [`crate::core::spare::scale_down`]) with the instant passed in; this shell wakes the
//! workloads controller at each `next_change` the last decision named (one timer, [`changes`],
//! not polling), and, when the value kept changes, records an Event on the prewarmer Deployment
//! and sets the gauges.

use futures::{Stream, stream};
use jiff::Timestamp;
use tokio::sync::watch;

use crate::core::names::PREWARMER;
use crate::core::spare::decide::{KeptSlots, Plan, changed_event, reason, wait};
use crate::core::spare::windows::InForce;
use crate::reconcile::base::context::{Context, lock};

/// The target in force now with no arrival known (`spareSlots`, or `auto.min`, raised by the
/// schedule): the gauges at start, before the first decision.
pub fn now(ctx: &Context) -> InForce {
    ctx.settings
        .config
        .prewarmer
        .in_force(crate::reconcile::base::clock::now())
}

/// After the prewarmer was kept as `decision` says: the gauges, and an Event if the value kept
/// changed.
pub async fn kept(ctx: &Context, decision: &Plan) {
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
        *last = Some(KeptSlots::from(spare));
        event
    };
    let Some(event) = event else { return };
    tracing::info!(slots = spare.slots, target = decision.target, window = ?spare.window, why = ?decision.why, "spare slots kept changed");
    let reference = crate::core::pool::desired::prewarmer_reference(&ctx.settings.namespace);
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
                            let wait = wait(crate::reconcile::base::clock::now(), t);
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
                            && crate::reconcile::base::clock::now() >= t
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

    /// Within one window (and outside), re-evaluating builds the same Deployment: the no-op
    /// check sends nothing; the window opening changes the body, so it is written.
    #[test]
    fn only_a_change_of_what_is_in_force_makes_the_prewarmer_written_again() {
        use crate::config::{Config, SlotResources};
        use crate::core::pool::desired;
        use crate::reconcile::watches::drift::{LastApplied, Sighting, Written, unchanged};

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
