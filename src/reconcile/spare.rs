//! How many placeholders the prewarmer keeps, from its three inputs: the target is the largest
//! of `prewarmer.spareSlots` (a number, or sized from arrivals: [`crate::arrivals`]) and the
//! schedule's windows in force ([`crate::capacity`]); the replicas kept follow the target at
//! once upward and, with `prewarmer.scaleDown`, gently downward ([`crate::scale_down`]). Pure:
//! the shell ([`super::workloads`]) passes the instant, the arrivals and what it kept.

use jiff::Timestamp;

use crate::arrivals::{Arrivals, auto_slots};
use crate::capacity::{InForce, Window, in_force};
use crate::config::Prewarmer;
use crate::scale_down::{self, Held, Why};

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
pub struct Decision {
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
) -> Decision {
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
    Decision {
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
pub fn reason(prewarmer: &Prewarmer, d: &Decision) -> String {
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
                    super::NO_WINDOW
                )
            }
            Source::Base => format!(
                "no window in force ({}): prewarmer.spareSlots",
                super::NO_WINDOW
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
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
