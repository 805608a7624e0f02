//! How many placeholders the prewarmer keeps, from its three inputs: the target is the largest
//! of `prewarmer.spareSlots` (a number, or sized from arrivals: [`crate::core::spare::arrivals`]) and the
//! schedule's windows in force ([`crate::core::spare::windows`]); the replicas kept follow the target at
//! once upward and, with `prewarmer.scaleDown`, gently downward ([`crate::core::spare::scale_down`]). Pure:
//! the shell ([`crate::reconcile::jobs::workloads`]) passes the instant, the arrivals and what it kept.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::{Event, EventType};

use crate::config::Prewarmer;
use crate::core::spare::arrivals::{Arrivals, auto_slots};
use crate::core::spare::scale_down;
use crate::core::spare::scale_down::{Held, Why};
use crate::core::spare::windows::{InForce, Window, in_force};

/// What set the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `prewarmer.spareSlots`, a number.
    Base,
    /// `prewarmer.spareSlots.auto`: `peak` tenants arrived within one span.
    Arrivals { peak: u32 },
    /// A window of `prewarmer.schedule`.
    Window(String),
}

/// The decision at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// For the Deployment: `slots` are the replicas to keep (not the target, while scaling
    /// down gently), `window` the window in force, `next_change` the next instant any input
    /// changes by the clock alone (a window, an arrival leaving the lookback, the next step).
    pub spare: InForce,
    pub target: u32,
    pub source: Source,
    /// The most arrivals within one span (with `spareSlots.auto`).
    pub peak: Option<u32>,
    pub why: Why,
    /// What to remember as kept once the Deployment is written.
    pub held: Held,
}

/// The decision at `now` for `prewarmer` (its `windows` compiled), the `arrivals` known and
/// what was `kept` (none on a leadership term's first evaluation).
pub fn decide(
    prewarmer: &Prewarmer,
    windows: &[Window],
    arrivals: &Arrivals,
    kept: Option<Held>,
    now: Timestamp,
) -> Plan {
    let sized = prewarmer
        .spare_slots
        .auto()
        .map(|auto| auto_slots(arrivals, now, &auto));
    let base = sized.map_or(prewarmer.spare_slots.without_arrivals(), |s| s.slots);
    let target = in_force(base, windows, now);
    let source = match (&target.window, sized) {
        (Some(w), _) => Source::Window(w.clone()),
        (None, Some(s)) => Source::Arrivals { peak: s.peak },
        (None, None) => Source::Base,
    };
    let rule = prewarmer.scale_down();
    let step = scale_down::step(kept, target.slots, arrivals.last(), now, rule.as_ref());
    let next_change = [
        target.next_change,
        sized.and_then(|s| s.next_change),
        step.next_change,
    ]
    .into_iter()
    .flatten()
    .min();
    Plan {
        spare: InForce {
            slots: step.held.slots,
            window: target.window,
            next_change,
        },
        target: target.slots,
        source,
        peak: sized.map(|s| s.peak),
        why: step.why,
        held: step.held,
    }
}

/// Why the value in force is what it is, for the Event `SpareSlotsChanged`.
pub fn reason(prewarmer: &Prewarmer, d: &Plan) -> String {
    match d.why {
        Why::Stepped | Why::Rate | Why::Arriving => {
            let (step, every) = prewarmer
                .scale_down
                .as_ref()
                .map_or((0, ""), |s| (s.step, s.every.as_str()));
            format!(
                "scaling down gently toward {} (prewarmer.scaleDown: {step} every {every})",
                d.target
            )
        }
        Why::Target => match &d.source {
            Source::Window(w) => format!("window `{w}` of prewarmer.schedule in force"),
            Source::Arrivals { peak } => {
                let span = match &prewarmer.spare_slots {
                    crate::config::SpareSlots::Auto { auto } => auto.span.as_str(),
                    crate::config::SpareSlots::Fixed(_) => "",
                };
                format!(
                    "no window in force ({}): {peak} tenants arrived within {span} at most \
                     (prewarmer.spareSlots.auto)",
                    crate::core::names::NO_WINDOW
                )
            }
            Source::Base => format!(
                "no window in force ({}): prewarmer.spareSlots",
                crate::core::names::NO_WINDOW
            ),
        },
    }
}

/// The longest one timer sleeps before it reads the clock again: a wall-clock step (NTP, a
/// suspended VM) is caught within this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Woken this much after the change, so that the instant read then is past it.
const AFTER: Duration = Duration::from_millis(50);

/// What the reconciler last kept: the slots and the window that set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSlots {
    pub slots: u32,
    pub window: Option<String>,
}

impl From<&InForce> for KeptSlots {
    fn from(f: &InForce) -> KeptSlots {
        KeptSlots {
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
pub fn changed_event(previous: Option<&KeptSlots>, now: &InForce, why: &str) -> Option<Event> {
    let previous = previous?;
    if previous == &KeptSlots::from(now) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
        let base = KeptSlots {
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
        let open = KeptSlots {
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

    const CONFIG: &str = "prewarmer:\n  spareSlots: {auto: {min: 1, max: 40, span: 15m, lookback: 7d}}\n  \
         scaleDown: {step: 5, every: 5m}\n  schedule:\n    - {name: workshop, cron: '0 9 * * *', \
         duration: 1h, spareSlots: 20}\n";

    fn burst(n: usize, at: &str) -> Arrivals {
        let mut a = Arrivals::default();
        for i in 0..n {
            a.insert(ts(at), &format!("demo-{i}"));
        }
        a
    }

    #[test]
    fn the_largest_of_arrivals_and_windows_is_the_target() {
        let c = Config::from_yaml(CONFIG).unwrap();
        let w = c.prewarmer.windows();
        let a = burst(25, "2026-11-29T09:05:00Z");
        // Inside the window: 25 arrivals > 20.
        let d = decide(&c.prewarmer, &w, &a, None, ts("2026-11-30T09:10:00Z"));
        assert_eq!((d.target, d.spare.slots), (25, 25));
        assert_eq!(
            (d.spare.window.clone(), d.source.clone()),
            (None, Source::Arrivals { peak: 25 })
        );
        // Few arrivals: the window wins, and names itself.
        let a = burst(3, "2026-11-29T09:05:00Z");
        let d = decide(&c.prewarmer, &w, &a, None, ts("2026-11-30T09:10:00Z"));
        assert_eq!(
            (d.target, d.source.clone()),
            (20, Source::Window("workshop".into()))
        );
        assert_eq!(d.spare.next_change, Some(ts("2026-11-30T10:00:00Z")));
        // Outside: the arrivals.
        let d = decide(&c.prewarmer, &w, &a, None, ts("2026-11-30T11:00:00Z"));
        assert_eq!(
            (d.target, d.source.clone(), d.peak),
            (3, Source::Arrivals { peak: 3 }, Some(3))
        );
        assert!(reason(&c.prewarmer, &d).contains("3 tenants arrived within 15m"));
    }

    #[test]
    fn the_window_closing_steps_down_and_the_timer_is_the_next_step() {
        let c = Config::from_yaml(CONFIG).unwrap();
        let w = c.prewarmer.windows();
        let a = burst(2, "2026-11-30T09:05:00Z");
        let kept = Some(Held {
            slots: 20,
            since: ts("2026-11-30T09:00:00Z"),
        });
        let d = decide(&c.prewarmer, &w, &a, kept, ts("2026-11-30T10:00:01Z"));
        assert_eq!((d.target, d.spare.slots, d.why), (2, 15, Why::Stepped));
        assert_eq!(d.spare.window, None);
        assert_eq!(d.spare.next_change, Some(ts("2026-11-30T10:05:01Z")));
        assert!(reason(&c.prewarmer, &d).starts_with("scaling down gently toward 2"));
    }

    #[test]
    fn a_plain_number_without_scale_down_is_what_it_always_was() {
        let c = Config::default();
        let d = decide(
            &c.prewarmer,
            &[],
            &burst(9, "2026-11-30T09:00:00Z"),
            Some(Held {
                slots: 7,
                since: ts("2026-11-30T09:00:00Z"),
            }),
            ts("2026-11-30T09:01:00Z"),
        );
        assert_eq!(
            (d.spare.slots, d.source.clone(), d.spare.next_change),
            (1, Source::Base, None)
        );
        assert_eq!(
            reason(&c.prewarmer, &d),
            "no window in force (none): prewarmer.spareSlots"
        );
    }
}
