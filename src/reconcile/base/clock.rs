//! The reconciler's wall clock, with a test-only override.
//!
//! `WARMPOOL_TEST_NOW=<RFC 3339>` (for tests only, never in production) means "the clock starts
//! at this instant and advances in real time": the end-to-end tests set it just before a
//! schedule window so that it opens within seconds. Instants read from the cluster (a
//! namespace's `creationTimestamp`) are shifted by the same offset ([`from_cluster`]), so that
//! arrivals and the clock agree. [`override_in_use`] says whether it is set, for the warning the
//! reconciler logs at start.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};

/// The environment variable of the override.
pub const TEST_NOW: &str = "WARMPOOL_TEST_NOW";

/// The override's offset from the real clock (zero without it), fixed at the first read.
fn offset() -> SignedDuration {
    static OFFSET: OnceLock<SignedDuration> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        parse(std::env::var(TEST_NOW).ok().as_deref(), Timestamp::now())
            .ok()
            .flatten()
            .unwrap_or(SignedDuration::ZERO)
    })
}

/// The offset `value` sets at the real instant `real_now`: `None` without a value, an error
/// message for one that is not RFC 3339.
pub fn parse(value: Option<&str>, real_now: Timestamp) -> Result<Option<SignedDuration>, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let start: Timestamp = value.parse().map_err(|_| {
        format!("{TEST_NOW}=`{value}` is not an RFC 3339 time (e.g. 2026-11-30T07:44:55Z)")
    })?;
    Ok(Some(start.duration_since(real_now)))
}

/// The instant the override sets, when it is set and valid (`Err` when set and invalid).
pub fn override_in_use() -> Result<Option<Timestamp>, String> {
    parse(std::env::var(TEST_NOW).ok().as_deref(), Timestamp::now())?;
    Ok((!offset().is_zero()).then(now))
}

/// Now, by the reconciler's clock.
pub fn now() -> Timestamp {
    shift(Timestamp::now(), offset())
}

/// An instant of the cluster's clock (a `creationTimestamp`) on the reconciler's clock.
pub fn from_cluster(t: Timestamp) -> Timestamp {
    shift(t, offset())
}

fn shift(t: Timestamp, by: SignedDuration) -> Timestamp {
    t.checked_add(by).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_is_an_offset_from_the_real_clock() {
        let real: Timestamp = "2026-12-02T06:00:00Z".parse().unwrap();
        assert_eq!(parse(None, real), Ok(None));
        assert_eq!(parse(Some(" "), real), Ok(None));
        assert_eq!(
            parse(Some("2026-11-30T07:44:55Z"), real),
            Ok(Some(SignedDuration::from_secs(-(46 * 3600 + 15 * 60 + 5))))
        );
        let e = parse(Some("monday"), real).unwrap_err();
        assert!(e.starts_with("WARMPOOL_TEST_NOW=`monday`"), "{e}");
        assert_eq!(
            shift(real, SignedDuration::from_secs(5)),
            "2026-12-02T06:00:05Z".parse().unwrap()
        );
    }
}
