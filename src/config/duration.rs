//! The one duration grammar of warmpool, for the configuration file and the command line alike:
//! jiff's friendly format (`30s`, `90m`, `1h30m`, `1h 30m`, `500ms`) or ISO 8601 (`PT4H`), with
//! days read as 24 hours (`7d`). Pure.

use std::time::Duration;

use jiff::{SignedDuration, Span, SpanRelativeTo};

/// The longest a command-line duration may be (a resync or a lease of more is a typo).
const LONGEST_FLAG: SignedDuration = SignedDuration::from_hours(24);

/// A duration as written, or why it is not one.
pub fn parse(text: &str) -> Result<SignedDuration, String> {
    let trimmed = text.trim();
    let bad = || format!("`{text}` is not a duration; write it like `30s`, `90m` or `1h 30m`");
    match trimmed.parse::<SignedDuration>() {
        Ok(d) => Ok(d),
        // Days (`7d`) are a calendar unit to jiff's SignedDuration: read as a span of 24-hour
        // days.
        Err(_) => trimmed
            .parse::<Span>()
            .ok()
            .and_then(|span| span.to_duration(SpanRelativeTo::days_are_24_hours()).ok())
            .ok_or_else(bad),
    }
}

/// [`parse`], not negative and at most `longest` (named `longest_name` in the message).
pub fn parse_at_most(
    text: &str,
    longest: SignedDuration,
    longest_name: &str,
) -> Result<SignedDuration, String> {
    let d = parse(text)?;
    if d.is_negative() {
        return Err(format!("`{text}` is negative"));
    }
    if d > longest {
        return Err(format!("`{text}` is longer than {longest_name}"));
    }
    Ok(d)
}

/// A command-line duration that may be zero (`--shutdown-grace 0`), at most a day.
pub fn flag_or_zero(text: &str) -> Result<Duration, String> {
    // A bare `0` is the one number without a unit that means the same in every unit.
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d = parse_at_most(text, LONGEST_FLAG, "a day")?;
    // Not negative (checked above): the conversion cannot fail.
    Duration::try_from(d).map_err(|e| format!("`{text}`: {e}"))
}

/// A command-line duration: more than zero, at most a day.
pub fn flag(text: &str) -> Result<Duration, String> {
    let d = flag_or_zero(text)?;
    if d.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jiff_s_friendly_format_iso_8601_and_days() {
        for (text, seconds) in [
            ("30s", 30),
            ("5m", 300),
            ("90m", 5400),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("PT4H", 14_400),
            ("7d", 604_800),
            (" 2h ", 7200),
        ] {
            assert_eq!(
                parse(text),
                Ok(SignedDuration::from_secs(seconds)),
                "{text}"
            );
        }
        assert_eq!(parse("250ms"), Ok(SignedDuration::from_millis(250)));
        for bad in ["", "soon", "m", "30", "1x"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("is not a duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn bounds_are_checked_and_named() {
        let day = SignedDuration::from_hours(24);
        for negative in ["-1s", "5 minutes ago"] {
            let error = parse_at_most(negative, day, "a day").unwrap_err();
            assert!(error.contains("is negative"), "{negative}: {error}");
        }
        assert_eq!(
            parse_at_most("25h", day, "a day").unwrap_err(),
            "`25h` is longer than a day"
        );
        assert_eq!(parse_at_most("24h", day, "a day"), Ok(day));
    }

    #[test]
    fn flags_are_positive_and_at_most_a_day() {
        assert_eq!(flag("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(flag("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(flag("250ms"), Ok(Duration::from_millis(250)));
        assert!(flag("0s").unwrap_err().contains("more than zero"));
        assert!(flag("0").unwrap_err().contains("more than zero"));
        assert!(flag("5 weeks").unwrap_err().contains("longer than a day"));
        assert!(flag("-1s").is_err());
        assert!(flag("x").unwrap_err().contains("is not a duration"));
        for zero in ["0", "0s", "0ms", "0m"] {
            assert_eq!(flag_or_zero(zero), Ok(Duration::ZERO), "{zero}");
        }
        assert_eq!(flag_or_zero("1500ms"), Ok(Duration::from_millis(1500)));
    }
}
