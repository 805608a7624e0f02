//! Gentle scale-down (`prewarmer.scaleDown`): when the spare slots' target drops, placeholders
//! are removed `step` at a time, at most once per `every`, and not at all while tenants are
//! arriving (the last arrival younger than `quietFor`), so that Karpenter does not churn nodes
//! between the bursts of a workshop. Raising is always immediate. Pure: what is kept, the
//! target, the last arrival and an instant in, the replicas to keep out.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// `prewarmer.scaleDown` as the configuration spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ScaleDownSpec {
    /// Placeholders removed at a time.
    pub step: u32,
    /// At most one step this often, e.g. `5m`.
    pub every: String,
    /// No step while the last arrival is younger than this; `spareSlots.auto.span` (or 15m)
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_for: Option<String>,
}

impl Default for ScaleDownSpec {
    fn default() -> Self {
        ScaleDownSpec {
            step: 1,
            every: "5m".into(),
            quiet_for: None,
        }
    }
}

/// [`ScaleDownSpec`], checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDown {
    pub step: u32,
    pub every: SignedDuration,
    pub quiet_for: SignedDuration,
}

/// What is wrong with `prewarmer.scaleDown`; `field` is the key under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScaleDownError {
    pub field: &'static str,
    pub message: String,
}

/// The longest `every` and `quietFor`: a day.
const LONGEST: SignedDuration = SignedDuration::from_hours(24);

impl ScaleDown {
    /// `default_quiet` is `spareSlots.auto.span`, or 15 minutes without it.
    pub fn compile(
        spec: &ScaleDownSpec,
        default_quiet: SignedDuration,
    ) -> Result<ScaleDown, ScaleDownError> {
        let err = |field, message: String| ScaleDownError { field, message };
        if spec.step == 0 {
            return Err(err(
                "step",
                "must be at least 1 (0 would never scale down)".into(),
            ));
        }
        let every = crate::config::duration::parse_at_most(&spec.every, LONGEST, "a day")
            .map_err(|m| err("every", m))?;
        if every.is_zero() {
            return Err(err("every", "must be longer than 0".into()));
        }
        let quiet_for = match &spec.quiet_for {
            None => default_quiet,
            Some(t) => crate::config::duration::parse_at_most(t, LONGEST, "a day")
                .map_err(|m| err("quietFor", m))?,
        };
        Ok(ScaleDown {
            step: spec.step,
            every,
            quiet_for,
        })
    }
}

/// The replicas kept, and since when (the last change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub slots: u32,
    pub since: Timestamp,
}

/// Why [`step`] keeps what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The target (raised at once, or reached).
    Target,
    /// One step down toward the target.
    Stepped,
    /// Above the target: tenants are still arriving.
    Arriving,
    /// Above the target: the last step was less than `every` ago.
    Rate,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub held: Held,
    pub why: Why,
    /// When the next step may be taken; `None` at the target.
    pub next_change: Option<Timestamp>,
}

/// The replicas to keep at `now` for `target`, given what is `kept` (none on the first
/// evaluation) and the `last_arrival`. Without `rule`, the target at once.
pub fn step(
    kept: Option<Held>,
    target: u32,
    last_arrival: Option<Timestamp>,
    now: Timestamp,
    rule: Option<&ScaleDown>,
) -> Step {
    let at_target = |since| Step {
        held: Held {
            slots: target,
            since,
        },
        why: Why::Target,
        next_change: None,
    };
    let (Some(kept), Some(rule)) = (kept, rule) else {
        return at_target(now);
    };
    if target >= kept.slots {
        let since = if target == kept.slots {
            kept.since
        } else {
            now
        };
        return at_target(since);
    }
    let hold = |why, until| Step {
        held: kept,
        why,
        next_change: Some(until),
    };
    if let Some(until) = last_arrival.and_then(|t| t.checked_add(rule.quiet_for).ok())
        && now < until
    {
        return hold(Why::Arriving, until);
    }
    if let Ok(allowed) = kept.since.checked_add(rule.every)
        && now < allowed
    {
        return hold(Why::Rate, allowed);
    }
    let slots = kept.slots.saturating_sub(rule.step).max(target);
    let held = Held { slots, since: now };
    if slots == target {
        return Step {
            held,
            why: Why::Target,
            next_change: None,
        };
    }
    Step {
        held,
        why: Why::Stepped,
        next_change: now.checked_add(rule.every).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn rule(step: u32, every: &str, quiet: &str) -> ScaleDown {
        ScaleDown::compile(
            &ScaleDownSpec {
                step,
                every: every.into(),
                quiet_for: Some(quiet.into()),
            },
            SignedDuration::ZERO,
        )
        .unwrap()
    }

    fn held(slots: u32, since: &str) -> Option<Held> {
        Some(Held {
            slots,
            since: ts(since),
        })
    }

    #[test]
    fn raising_is_immediate_and_so_is_everything_without_a_rule() {
        let r = rule(1, "5m", "15m");
        let now = ts("2026-11-30T08:00:00Z");
        let s = step(
            held(1, "2026-11-30T07:59:00Z"),
            30,
            Some(now),
            now,
            Some(&r),
        );
        assert_eq!((s.held.slots, s.held.since, s.why), (30, now, Why::Target));
        let s = step(held(30, "2026-11-30T07:59:00Z"), 1, None, now, None);
        assert_eq!(s.held.slots, 1, "no rule: at once");
        let s = step(None, 1, None, now, Some(&r));
        assert_eq!(s.held.slots, 1, "nothing kept yet: the target");
        // At the target, the instant of the last change is kept.
        let s = step(held(5, "2026-11-30T07:00:00Z"), 5, None, now, Some(&r));
        assert_eq!(
            (s.held.since, s.next_change),
            (ts("2026-11-30T07:00:00Z"), None)
        );
    }

    #[test]
    fn dropping_goes_one_step_per_interval_down_to_the_target() {
        let r = rule(2, "5m", "15m");
        let mut kept = held(7, "2026-11-30T12:00:00Z");
        let mut t = ts("2026-11-30T12:05:00Z");
        let mut seen = Vec::new();
        loop {
            let s = step(kept, 1, None, t, Some(&r));
            seen.push((s.held.slots, s.why));
            kept = Some(s.held);
            match s.next_change {
                Some(next) => t = next,
                None => break,
            }
        }
        assert_eq!(
            seen,
            [(5, Why::Stepped), (3, Why::Stepped), (1, Why::Target),]
        );
        assert_eq!(
            t,
            ts("2026-11-30T12:15:00Z"),
            "two intervals after the first step"
        );
    }

    #[test]
    fn a_step_waits_for_the_interval_since_the_last_change() {
        let r = rule(1, "5m", "15m");
        let s = step(
            held(10, "2026-11-30T12:00:00Z"),
            1,
            None,
            ts("2026-11-30T12:02:00Z"),
            Some(&r),
        );
        assert_eq!((s.held.slots, s.why), (10, Why::Rate));
        assert_eq!(s.next_change, Some(ts("2026-11-30T12:05:00Z")));
    }

    #[test]
    fn nothing_is_removed_while_tenants_are_arriving() {
        let r = rule(1, "5m", "15m");
        let kept = held(30, "2026-11-30T09:00:00Z");
        let now = ts("2026-11-30T13:00:00Z");
        let s = step(kept, 1, Some(ts("2026-11-30T12:50:00Z")), now, Some(&r));
        assert_eq!((s.held.slots, s.why), (30, Why::Arriving));
        assert_eq!(s.next_change, Some(ts("2026-11-30T13:05:00Z")));
        // Quiet for the span: the first step at once (the last change was long ago).
        let s = step(kept, 1, Some(ts("2026-11-30T12:44:00Z")), now, Some(&r));
        assert_eq!((s.held.slots, s.why), (29, Why::Stepped));
        // A raise is not held back by arrivals.
        let s = step(kept, 31, Some(now), now, Some(&r));
        assert_eq!(s.held.slots, 31);
    }

    #[test]
    fn bad_rules_are_refused_with_the_field_named() {
        let field = |step, every: &str, quiet: Option<&str>| {
            ScaleDown::compile(
                &ScaleDownSpec {
                    step,
                    every: every.into(),
                    quiet_for: quiet.map(str::to_owned),
                },
                SignedDuration::from_mins(15),
            )
            .unwrap_err()
            .field
        };
        assert_eq!(field(0, "5m", None), "step");
        assert_eq!(field(1, "0s", None), "every");
        assert_eq!(field(1, "later", None), "every");
        assert_eq!(field(1, "5m", Some("-1m")), "quietFor");
        assert_eq!(field(1, "5m", Some("2d")), "quietFor");
        let d = ScaleDown::compile(&ScaleDownSpec::default(), SignedDuration::from_mins(15));
        assert_eq!(d.unwrap().quiet_for, SignedDuration::from_mins(15));
    }
}
