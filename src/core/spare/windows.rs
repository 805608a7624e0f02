//! How many spare slots the prewarmer keeps at an instant: the base value, raised by scheduled
//! windows (a workshop at 09:00 on weekdays, warmed up 15 minutes ahead). Pure: the windows
//! and an instant in, the slots in force, the window that set them and the next instant at
//! which that can change out.
//!
//! A window opens at each occurrence of its cron expression, read in its own time zone (IANA
//! names, from the tz database bundled into the binary: the image has no zoneinfo), is warm
//! from `leadTime` before that, and closes `duration` after it, counted in elapsed time (a 4 h
//! window over a DST change lasts 4 h). Nonexistent and repeated local times follow croner's
//! handling of DST gaps and folds. The slots in force are the largest of the base value and the
//! values of the windows warm at that instant.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::{Deserialize, Serialize};

/// A window as the configuration spells it (`prewarmer.schedule[i]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowSpec {
    pub name: String,
    /// An IANA time zone name, e.g. `Europe/Berlin`; `UTC` when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When the window opens: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week).
    pub cron: String,
    /// How long it stays open, e.g. `4h` or `90m`.
    pub duration: String,
    pub spare_slots: u32,
    /// How long before each opening the slots are already raised, e.g. `15m`.
    #[serde(default)]
    pub lead_time: Option<String>,
}

/// What is wrong with a window; `field` is the key under `prewarmer.schedule[i]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WindowError {
    pub field: &'static str,
    pub message: String,
}

impl WindowError {
    fn at(field: &'static str, message: impl Into<String>) -> WindowError {
        WindowError {
            field,
            message: message.into(),
        }
    }
}

/// One compiled window.
#[derive(Debug, Clone)]
pub struct Window {
    name: String,
    zone: TimeZone,
    cron: croner::Cron,
    duration: SignedDuration,
    lead: SignedDuration,
    spare_slots: u32,
}

/// The longest a window may stay open or be warmed ahead: a week covers every weekly rhythm
/// and bounds the searches below.
const LONGEST: SignedDuration = SignedDuration::from_hours(24 * 7);

impl Window {
    pub fn compile(spec: &WindowSpec) -> Result<Window, WindowError> {
        if spec.name.trim().is_empty() {
            return Err(WindowError::at("name", "must not be empty"));
        }
        let zone_name = spec.timezone.as_deref().unwrap_or("UTC");
        let zone = jiff::tz::db().get(zone_name).map_err(|_| {
            WindowError::at(
                "timezone",
                format!(
                    "unknown time zone `{zone_name}`; use an IANA name such as Europe/Berlin or UTC"
                ),
            )
        })?;
        if spec.cron.split_whitespace().count() != 5 {
            return Err(WindowError::at(
                "cron",
                format!(
                    "`{}` is not a 5-field cron expression (minute hour day-of-month month day-of-week)",
                    spec.cron
                ),
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(&spec.cron)
            .map_err(|e| WindowError::at("cron", format!("`{}`: {e}", spec.cron)))?;
        let duration =
            parse_duration(&spec.duration).map_err(|m| WindowError::at("duration", m))?;
        if duration.is_zero() {
            return Err(WindowError::at("duration", "must be longer than 0"));
        }
        let lead = match &spec.lead_time {
            None => SignedDuration::ZERO,
            Some(t) => parse_duration(t).map_err(|m| WindowError::at("leadTime", m))?,
        };
        Ok(Window {
            name: spec.name.clone(),
            zone,
            cron,
            duration,
            lead,
            spare_slots: spec.spare_slots,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn at(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.zone.clone())
    }

    /// The latest opening at or before `t`, if any within the search bound.
    fn opening_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let found = self.cron.find_previous_occurrence(&self.at(t), true).ok()?;
        let found = found.timestamp();
        (t.duration_since(found) <= LONGEST * 2).then_some(found)
    }

    fn opening_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&self.at(t), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The opening whose warm span `[open - lead, open + duration)` holds `now`. Openings come
    /// in order and last equally long, so only the latest one warm by `now` can hold it.
    fn warm_opening(&self, now: Timestamp) -> Option<Timestamp> {
        let open = self.opening_at_or_before(now.checked_add(self.lead).ok()?)?;
        (now < open.checked_add(self.duration).ok()?).then_some(open)
    }

    /// When this window next turns warm or cold after `now`: the end of the run of overlapping
    /// warm spans that holds `now`, or the start of the next one.
    fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        match self.warm_opening(now) {
            Some(open) => {
                let mut end = open.checked_add(self.duration).ok()?;
                let mut last = open;
                // Back-to-back openings keep it warm; a week of them is searched at most.
                for _ in 0..(7 * 24 * 60) {
                    let Some(next) = self.opening_after(last) else {
                        break;
                    };
                    let warm_from = next.checked_sub(self.lead).ok()?;
                    if warm_from > end {
                        break;
                    }
                    end = end.max(next.checked_add(self.duration).ok()?);
                    last = next;
                }
                Some(end)
            }
            None => {
                let next = self.opening_after(now.checked_add(self.lead).ok()?)?;
                next.checked_sub(self.lead).ok()
            }
        }
    }
}

/// A window's `duration` or `leadTime` ([`crate::config::duration`]); at most a week.
fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    crate::config::duration::parse_at_most(text, LONGEST, "a week")
}

/// The spare slots in force at an instant, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    pub slots: u32,
    /// The warm window that set `slots`, when one did (the first by configuration order
    /// among those with the largest value).
    pub window: Option<String>,
    /// The next instant at which a window turns warm or cold; `None` when none ever will.
    pub next_change: Option<Timestamp>,
}

/// The decision: `base` outside every window, the largest warm window's value inside.
pub fn in_force(base: u32, windows: &[Window], now: Timestamp) -> InForce {
    let mut slots = base;
    let mut window = None;
    for w in windows {
        if w.warm_opening(now).is_some() && w.spare_slots > slots {
            slots = w.spare_slots;
            window = Some(w.name.clone());
        }
    }
    let next_change = windows.iter().filter_map(|w| w.next_change(now)).min();
    InForce {
        slots,
        window,
        next_change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(name: &str, tz: &str, cron: &str, duration: &str, slots: u32, lead: &str) -> Window {
        Window::compile(&WindowSpec {
            name: name.into(),
            timezone: Some(tz.into()),
            cron: cron.into(),
            duration: duration.into(),
            spare_slots: slots,
            lead_time: Some(lead.into()).filter(|l: &String| !l.is_empty()),
        })
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn workshop() -> Window {
        window("workshop", "Europe/Berlin", "0 9 * * 1-5", "4h", 30, "15m")
    }

    #[test]
    fn outside_every_window_the_base_value_holds() {
        // Monday 2026-11-30, 06:00 in Berlin (UTC+1).
        let f = in_force(1, &[workshop()], ts("2026-11-30T05:00:00Z"));
        assert_eq!(f.slots, 1);
        assert_eq!(f.window, None);
        // Warm from 08:45 Berlin = 07:45 UTC.
        assert_eq!(f.next_change, Some(ts("2026-11-30T07:45:00Z")));
    }

    #[test]
    fn lead_time_warms_up_before_the_window_opens_and_it_closes_after_its_duration() {
        let w = [workshop()];
        assert_eq!(in_force(1, &w, ts("2026-11-30T07:44:59Z")).slots, 1);
        let f = in_force(1, &w, ts("2026-11-30T07:45:00Z"));
        assert_eq!((f.slots, f.window.as_deref()), (30, Some("workshop")));
        assert_eq!(f.next_change, Some(ts("2026-11-30T12:00:00Z")));
        assert_eq!(in_force(1, &w, ts("2026-11-30T11:59:59Z")).slots, 30);
        let f = in_force(1, &w, ts("2026-11-30T12:00:00Z"));
        assert_eq!(f.slots, 1);
        // Next: Tuesday 08:45 Berlin.
        assert_eq!(f.next_change, Some(ts("2026-12-01T07:45:00Z")));
    }

    #[test]
    fn weekends_are_skipped() {
        // Friday 2026-12-04 after the window: next is Monday 2026-12-07.
        let f = in_force(1, &[workshop()], ts("2026-12-04T13:00:00Z"));
        assert_eq!(f.next_change, Some(ts("2026-12-07T07:45:00Z")));
        assert_eq!(
            in_force(1, &[workshop()], ts("2026-12-05T08:30:00Z")).slots,
            1
        );
    }

    #[test]
    fn the_local_time_follows_dst() {
        // Berlin is UTC+2 in summer: 09:00 local is 07:00 UTC on Monday 2026-06-01.
        let f = in_force(1, &[workshop()], ts("2026-06-01T06:50:00Z"));
        assert_eq!(f.slots, 30);
        // The spring-forward Monday after 2026-03-29: 09:00 is 07:00 UTC; the Friday before,
        // 08:00 UTC.
        assert_eq!(
            in_force(1, &[workshop()], ts("2026-03-27T07:50:00Z")).slots,
            30
        );
        assert_eq!(
            in_force(1, &[workshop()], ts("2026-03-27T07:40:00Z")).slots,
            1
        );
        assert_eq!(
            in_force(1, &[workshop()], ts("2026-03-30T06:50:00Z")).slots,
            30
        );
    }

    #[test]
    fn a_window_in_the_hour_dst_skips_still_opens() {
        // 02:30 does not exist in Berlin on 2026-03-29; the window opens at the gap's end.
        let w = [window("night", "Europe/Berlin", "30 2 * * *", "1h", 5, "")];
        let f = in_force(0, &w, ts("2026-03-29T01:10:00Z"));
        assert_eq!(f.slots, 5, "{f:?}");
    }

    #[test]
    fn a_window_across_midnight_holds_into_the_next_day() {
        let w = [window("late", "UTC", "0 22 * * *", "4h", 3, "")];
        assert_eq!(in_force(0, &w, ts("2026-12-01T23:30:00Z")).slots, 3);
        let f = in_force(0, &w, ts("2026-12-02T01:59:00Z"));
        assert_eq!(f.slots, 3);
        assert_eq!(f.next_change, Some(ts("2026-12-02T02:00:00Z")));
        assert_eq!(in_force(0, &w, ts("2026-12-02T02:00:00Z")).slots, 0);
    }

    #[test]
    fn overlapping_windows_take_the_largest_and_back_to_back_openings_stay_warm() {
        let w = [
            window("morning", "UTC", "0 9 * * *", "4h", 10, ""),
            window("peak", "UTC", "0 10 * * *", "1h", 20, ""),
        ];
        let f = in_force(1, &w, ts("2026-12-01T10:30:00Z"));
        assert_eq!((f.slots, f.window.as_deref()), (20, Some("peak")));
        assert_eq!(f.next_change, Some(ts("2026-12-01T11:00:00Z")));
        assert_eq!(in_force(1, &w, ts("2026-12-01T11:30:00Z")).slots, 10);
        // Hourly openings of 2 h overlap: warm without a break, the change is when they stop.
        let hourly = [window("office", "UTC", "0 9-17 * * *", "2h", 4, "")];
        let f = in_force(0, &hourly, ts("2026-12-01T12:15:00Z"));
        assert_eq!(f.slots, 4);
        assert_eq!(f.next_change, Some(ts("2026-12-01T19:00:00Z")));
    }

    #[test]
    fn a_window_smaller_than_the_base_changes_nothing() {
        let w = [window("small", "UTC", "0 9 * * *", "4h", 1, "")];
        let f = in_force(5, &w, ts("2026-12-01T10:00:00Z"));
        assert_eq!((f.slots, f.window), (5, None));
    }

    #[test]
    fn bad_windows_are_refused_with_the_field_named() {
        let spec = |tz: &str, cron: &str, duration: &str, lead: Option<&str>| WindowSpec {
            name: "w".into(),
            timezone: Some(tz.into()),
            cron: cron.into(),
            duration: duration.into(),
            spare_slots: 1,
            lead_time: lead.map(str::to_owned),
        };
        let field = |s: WindowSpec| Window::compile(&s).unwrap_err().field;
        assert_eq!(
            field(spec("Mars/Olympus", "0 9 * * *", "1h", None)),
            "timezone"
        );
        assert_eq!(field(spec("UTC", "0 9 * *", "1h", None)), "cron");
        assert_eq!(field(spec("UTC", "0 0 9 * * *", "1h", None)), "cron");
        assert_eq!(field(spec("UTC", "61 9 * * *", "1h", None)), "cron");
        assert_eq!(field(spec("UTC", "0 9 * * *", "soon", None)), "duration");
        assert_eq!(field(spec("UTC", "0 9 * * *", "0s", None)), "duration");
        assert_eq!(field(spec("UTC", "0 9 * * *", "8d", None)), "duration");
        assert_eq!(
            field(spec("UTC", "0 9 * * *", "1h", Some("-5m"))),
            "leadTime"
        );
        let e = Window::compile(&spec("Mars/Olympus", "0 9 * * *", "1h", None)).unwrap_err();
        assert!(e.message.contains("IANA"), "{e}");
    }

    #[test]
    fn no_window_means_no_change_ever() {
        let f = in_force(2, &[], ts("2026-12-01T10:00:00Z"));
        assert_eq!(
            f,
            InForce {
                slots: 2,
                window: None,
                next_change: None
            }
        );
    }
}
