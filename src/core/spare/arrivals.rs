//! Spare slots sized from real arrivals (`prewarmer.spareSlots: {auto: {...}}`): the largest
//! number of tenants that became tenants within any `span` over the last `lookback`, bounded by
//! `min` and `max`. Pure: the record of arrivals and an instant in, the slots out.
//!
//! An arrival is a tenant namespace's creation instant (its `creationTimestamp`), so the record
//! is the same whoever builds it and whenever: a reconciler restart or a second replica sees the
//! same instants, and a pattern that starts matching a thousand old namespaces is no burst. The
//! record is kept, bounded ([`Arrivals::prune`]), in a ConfigMap so that arrivals are remembered
//! after their namespaces are deleted; its text form is [`Arrivals::encode`].

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The most arrivals the record keeps (the oldest go first): 10,000 lines of at most 75 bytes
/// (`<unix seconds> <namespace>`) stay under the 1 MiB of a ConfigMap. The decision only
/// under-counts when more than this many tenants arrived within `lookback` and the busiest
/// span was among the oldest of them.
pub const MAX_ARRIVALS: usize = 10_000;

/// The first line of the encoded record; lines after it are `<unix seconds> <namespace>`.
const HEADER: &str = "# warmpool arrivals v1: <unix seconds> <namespace>, oldest first";

/// Tenants' arrivals: (creation instant in whole seconds, namespace), each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arrivals {
    set: BTreeSet<(i64, String)>,
}

impl Arrivals {
    /// Notes that `name` became a tenant at `at`; true when it was not known yet. A namespace
    /// deleted and created again under the same name is a new arrival (another instant).
    pub fn insert(&mut self, at: Timestamp, name: &str) -> bool {
        self.set.insert((at.as_second(), name.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The latest arrival.
    pub fn last(&self) -> Option<Timestamp> {
        self.set
            .iter()
            .next_back()
            .and_then(|(s, _)| Timestamp::from_second(*s).ok())
    }

    /// Forgets arrivals older than `keep` before `now`, then the oldest beyond `cap`; how many
    /// were dropped.
    pub fn prune(&mut self, now: Timestamp, keep: SignedDuration, cap: usize) -> usize {
        let before = self.set.len();
        let oldest_kept = now.as_second().saturating_sub(keep.as_secs());
        self.set = self.set.split_off(&(oldest_kept, String::new()));
        while self.set.len() > cap {
            self.set.pop_first();
        }
        before - self.set.len()
    }

    /// The text form of the record (the ConfigMap's `arrivals` key): a header line, then one
    /// `<unix seconds> <namespace>` line per arrival, oldest first.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(HEADER.len() + 1 + self.set.len() * 24);
        out.push_str(HEADER);
        out.push('\n');
        for (at, name) in &self.set {
            out.push_str(&format!("{at} {name}\n"));
        }
        out
    }

    /// Reads [`Arrivals::encode`]'s form; lines that are not `<seconds> <name>` (a hand edit,
    /// a truncated write) are skipped and counted, never an error: a damaged record only loses
    /// those lines.
    pub fn decode(text: &str) -> (Arrivals, usize) {
        let mut arrivals = Arrivals::default();
        let mut skipped = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(' ').and_then(|(at, name)| {
                let at: i64 = at.parse().ok()?;
                Timestamp::from_second(at).ok()?;
                let name = name.trim();
                (!name.is_empty() && !name.contains(char::is_whitespace))
                    .then(|| (at, name.to_owned()))
            });
            match parsed {
                Some(entry) => {
                    arrivals.set.insert(entry);
                }
                None => skipped += 1,
            }
        }
        (arrivals, skipped)
    }

    /// The instants (seconds) of the arrivals after `since`, oldest first.
    fn seconds_after(&self, since: i64) -> impl Iterator<Item = i64> + '_ {
        self.set
            .range((since.saturating_add(1), String::new())..)
            .map(|(s, _)| *s)
    }
}

/// `prewarmer.spareSlots: {auto: ...}` as the configuration spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AutoSpec {
    /// Never fewer spare slots than this.
    pub min: u32,
    /// Never more than this.
    pub max: u32,
    /// The arrivals counted together, e.g. `15m`.
    pub span: String,
    /// How far back arrivals count, e.g. `7d`.
    pub lookback: String,
}

impl Default for AutoSpec {
    fn default() -> Self {
        AutoSpec {
            min: 1,
            max: 40,
            span: "15m".into(),
            lookback: "7d".into(),
        }
    }
}

/// The longest `lookback`: a month covers the rhythms of a workshop calendar.
const LONGEST_LOOKBACK: SignedDuration = SignedDuration::from_hours(24 * 31);

/// [`AutoSpec`], checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auto {
    pub min: u32,
    pub max: u32,
    pub span: SignedDuration,
    pub lookback: SignedDuration,
}

/// What is wrong with `prewarmer.spareSlots.auto`; `field` is the key under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AutoError {
    pub field: &'static str,
    pub message: String,
}

impl Auto {
    pub fn compile(spec: &AutoSpec) -> Result<Auto, AutoError> {
        let err = |field, message: String| AutoError { field, message };
        let span = crate::config::duration::parse_at_most(
            &spec.span,
            SignedDuration::from_hours(24),
            "a day",
        )
        .map_err(|m| err("span", m))?;
        if span.is_zero() {
            return Err(err("span", "must be longer than 0".into()));
        }
        let lookback =
            crate::config::duration::parse_at_most(&spec.lookback, LONGEST_LOOKBACK, "31 days")
                .map_err(|m| err("lookback", m))?;
        if lookback < span {
            return Err(err(
                "lookback",
                format!("`{}` is shorter than span `{}`", spec.lookback, spec.span),
            ));
        }
        if spec.min > spec.max {
            return Err(err(
                "min",
                format!("{} is more than max ({})", spec.min, spec.max),
            ));
        }
        Ok(Auto {
            min: spec.min,
            max: spec.max,
            span,
            lookback,
        })
    }
}

/// The slots arrivals call for at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sized {
    /// [`Sized::peak`] bounded by `min` and `max`.
    pub slots: u32,
    /// The most arrivals within one `span` over the last `lookback`.
    pub peak: u32,
    /// When the oldest arrival counted leaves the lookback (the peak may drop then); `None`
    /// with no arrival counted.
    pub next_change: Option<Timestamp>,
}

/// The decision: the busiest `span` of the last `lookback` (arrivals at `t` with
/// `now - lookback < t`; arrivals stamped a little ahead of `now` by clock skew count too),
/// bounded by `min` and `max`.
pub fn auto_slots(arrivals: &Arrivals, now: Timestamp, auto: &Auto) -> Sized {
    let since = now.as_second().saturating_sub(auto.lookback.as_secs());
    let times: Vec<i64> = arrivals.seconds_after(since).collect();
    let span = auto.span.as_secs();
    // Two pointers over the sorted instants: for each first arrival of a span, how many fall
    // within [first, first + span).
    let mut peak = 0usize;
    let mut end = 0usize;
    for (start, first) in times.iter().enumerate() {
        while end < times.len() && times[end] < first.saturating_add(span) {
            end += 1;
        }
        peak = peak.max(end - start);
    }
    let peak = u32::try_from(peak).unwrap_or(u32::MAX);
    let next_change = times
        .first()
        .and_then(|t| Timestamp::from_second(t.saturating_add(auto.lookback.as_secs())).ok());
    Sized {
        slots: peak.clamp(auto.min, auto.max),
        peak,
        next_change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn auto(min: u32, max: u32, span: &str, lookback: &str) -> Auto {
        Auto::compile(&AutoSpec {
            min,
            max,
            span: span.into(),
            lookback: lookback.into(),
        })
        .unwrap()
    }

    /// `n` arrivals from `start`, `every` apart, named `prefix-i`.
    fn arrive(a: &mut Arrivals, prefix: &str, start: &str, every_secs: i64, n: usize) {
        let start = ts(start);
        for i in 0..n {
            let at = start
                .checked_add(SignedDuration::from_secs(every_secs * i as i64))
                .unwrap();
            a.insert(at, &format!("{prefix}-{i}"));
        }
    }

    #[test]
    fn a_burst_sets_the_slots_to_its_size() {
        // Monday's workshop: 30 tenants within 6 minutes, then nobody.
        let mut a = Arrivals::default();
        arrive(&mut a, "demo", "2026-11-30T08:00:00Z", 12, 30);
        let s = auto_slots(&a, ts("2026-12-01T07:00:00Z"), &auto(1, 40, "15m", "7d"));
        assert_eq!((s.slots, s.peak), (30, 30));
        // The first of them leaves the lookback a week later.
        assert_eq!(s.next_change, Some(ts("2026-12-07T08:00:00Z")));
    }

    #[test]
    fn arrivals_spread_out_count_only_as_many_as_share_a_span() {
        // One tenant every 10 minutes all day: at most 2 within any 15 minutes.
        let mut a = Arrivals::default();
        arrive(&mut a, "t", "2026-11-30T00:00:00Z", 600, 144);
        let s = auto_slots(&a, ts("2026-12-01T00:00:00Z"), &auto(0, 40, "15m", "7d"));
        assert_eq!(s.peak, 2);
        // Exactly one span apart: not within the same span (half-open).
        let mut a = Arrivals::default();
        arrive(&mut a, "t", "2026-11-30T00:00:00Z", 900, 10);
        let s = auto_slots(&a, ts("2026-12-01T00:00:00Z"), &auto(0, 40, "15m", "7d"));
        assert_eq!(s.peak, 1);
    }

    #[test]
    fn the_busiest_span_wins_over_a_quieter_later_one() {
        let mut a = Arrivals::default();
        arrive(&mut a, "mon", "2026-11-30T09:00:00Z", 20, 12);
        arrive(&mut a, "tue", "2026-12-01T09:00:00Z", 60, 5);
        let s = auto_slots(&a, ts("2026-12-02T06:00:00Z"), &auto(1, 40, "15m", "7d"));
        assert_eq!(s.peak, 12);
    }

    #[test]
    fn old_arrivals_age_out_of_the_lookback() {
        let mut a = Arrivals::default();
        arrive(&mut a, "old", "2026-11-20T09:00:00Z", 10, 25);
        arrive(&mut a, "new", "2026-11-30T09:00:00Z", 10, 4);
        let p = auto(1, 40, "15m", "7d");
        let s = auto_slots(&a, ts("2026-11-30T12:00:00Z"), &p);
        assert_eq!(s.peak, 4, "the burst of 10 days ago no longer counts");
        // Within the lookback it did, until its first arrival left it.
        let s = auto_slots(&a, ts("2026-11-27T08:59:59Z"), &p);
        assert_eq!(s.peak, 25);
        assert_eq!(s.next_change, Some(ts("2026-11-27T09:00:00Z")));
        // Past the lookback of every arrival: nothing counted, no change due.
        let s = auto_slots(&a, ts("2026-12-08T00:00:00Z"), &p);
        assert_eq!((s.slots, s.peak, s.next_change), (1, 0, None));
    }

    #[test]
    fn min_and_max_bound_the_slots() {
        let mut a = Arrivals::default();
        let now = ts("2026-11-30T10:00:00Z");
        assert_eq!(auto_slots(&a, now, &auto(2, 40, "15m", "7d")).slots, 2);
        arrive(&mut a, "t", "2026-11-30T09:00:00Z", 1, 100);
        let s = auto_slots(&a, now, &auto(2, 40, "15m", "7d"));
        assert_eq!((s.slots, s.peak), (40, 100));
        assert_eq!(auto_slots(&a, now, &auto(0, 0, "15m", "7d")).slots, 0);
    }

    #[test]
    fn the_record_is_pruned_to_the_lookback_and_capped() {
        let mut a = Arrivals::default();
        arrive(&mut a, "old", "2026-11-01T00:00:00Z", 60, 10);
        arrive(&mut a, "new", "2026-11-30T00:00:00Z", 60, 10);
        let dropped = a.prune(
            ts("2026-11-30T01:00:00Z"),
            SignedDuration::from_hours(24),
            100,
        );
        assert_eq!((dropped, a.len()), (10, 10));
        let dropped = a.prune(
            ts("2026-11-30T01:00:00Z"),
            SignedDuration::from_hours(24),
            4,
        );
        assert_eq!((dropped, a.len()), (6, 4));
        // The newest are kept.
        assert_eq!(a.last(), Some(ts("2026-11-30T00:09:00Z")));
        assert!(a.encode().contains(" new-9\n") && !a.encode().contains(" new-5\n"));
    }

    #[test]
    fn the_record_round_trips_and_a_damaged_one_loses_only_its_bad_lines() {
        let mut a = Arrivals::default();
        arrive(&mut a, "demo", "2026-11-30T08:00:00Z", 5, 3);
        // The same namespace again at another instant (deleted, created again): two arrivals.
        a.insert(ts("2026-11-30T10:00:00Z"), "demo-0");
        assert!(!a.insert(ts("2026-11-30T10:00:00Z"), "demo-0"), "seen once");
        let text = a.encode();
        assert_eq!(
            text.lines().nth(1),
            Some(format!("{} demo-0", ts("2026-11-30T08:00:00Z").as_second()).as_str())
        );
        assert_eq!(Arrivals::decode(&text), (a.clone(), 0));
        let damaged = format!("{text}garbage\n12 \n-99999999999999 x\n17");
        assert_eq!(Arrivals::decode(&damaged), (a, 4));
        assert_eq!(Arrivals::decode(""), (Arrivals::default(), 0));
    }

    #[test]
    fn the_worst_case_record_fits_in_a_config_map() {
        let mut a = Arrivals::default();
        let name = "x".repeat(63);
        for i in 0..MAX_ARRIVALS {
            a.insert(
                Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
                &name,
            );
        }
        assert!(a.encode().len() < 1024 * 1024, "{}", a.encode().len());
    }

    #[test]
    fn bad_parameters_are_refused_with_the_field_named() {
        let field = |min, max, span: &str, lookback: &str| {
            Auto::compile(&AutoSpec {
                min,
                max,
                span: span.into(),
                lookback: lookback.into(),
            })
            .unwrap_err()
            .field
        };
        assert_eq!(field(5, 2, "15m", "7d"), "min");
        assert_eq!(field(1, 2, "0s", "7d"), "span");
        assert_eq!(field(1, 2, "soon", "7d"), "span");
        assert_eq!(field(1, 2, "2d", "7d"), "span");
        assert_eq!(field(1, 2, "15m", "10m"), "lookback");
        assert_eq!(field(1, 2, "15m", "40d"), "lookback");
        assert!(Auto::compile(&AutoSpec::default()).is_ok());
    }
}
