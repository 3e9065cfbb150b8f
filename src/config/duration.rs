//! Durations written as `"500ms"`, `"10s"`, `"1m30s"`, `"2h"` in config
//! files and admin requests.
//!
//! Parsed by `humantime` (checked arithmetic: `"18446744073709551615s"` is
//! an overflow error, not a wrap), then bounded by [`MAX`], so that no timer
//! or deadline built from a configured duration can overflow an `Instant`
//! (an owner's `catalog_refresh` of 2^64 s used to panic the one refresh
//! timer for every customer).

use std::time::Duration;

/// The longest duration any setting takes: 366 days.
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration such as `500ms`, `10s`, `2m`, `1m30s` or `1h`
/// (humantime's units, `d` for days too), greater than zero and at most
/// [`MAX`].
///
/// # Errors
/// A message saying which forms are accepted, or which bound was broken.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.len() > 64 {
        return Err(format!(
            "expected a duration such as \"500ms\", \"10s\", \"1m30s\" or \"1h\" ({} characters is not one)",
            t.len()
        ));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        format!("expected a duration such as \"500ms\", \"10s\", \"1m30s\" or \"1h\" ({e})")
    })?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("must be a whole number of milliseconds".into());
    }
    if d > MAX {
        return Err(format!("must be at most {} (366 days)", format(MAX)));
    }
    Ok(d)
}

/// Formats a duration the way [`parse`] reads it.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses an optional duration field, naming it in the error.
pub(crate) fn opt_duration(
    field: &str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, super::ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse(s).map_err(|r| super::ConfigError::new(field, s, r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_garbage() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse("10").unwrap_err().contains("unit"));
        assert!(parse("ten s").is_err());
        assert!(parse("0s").unwrap_err().contains("greater than zero"));
        assert_eq!(format(Duration::from_secs(125)), "125s");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn huge_values_are_refused_not_wrapped() {
        for huge in [
            "18446744073709551615s",
            "18446744073709551616ms",
            "99999999999999999999999h",
            "367d",
            "1000000h",
            "5y",
        ] {
            let e = parse(huge).unwrap_err();
            assert!(
                e.contains("at most") || e.contains("overflow") || e.contains("too large"),
                "{huge}: {e}"
            );
        }
        assert_eq!(parse("366d"), Ok(MAX));
        assert!(parse(&"9".repeat(100)).is_err());
    }

    proptest::proptest! {
        /// No text makes the parser panic, and whatever it accepts is a
        /// duration a deadline can be built from.
        #[test]
        fn any_text_is_refused_or_bounded(text in "\\PC{0,40}") {
            if let Ok(d) = parse(&text) {
                proptest::prop_assert!(!d.is_zero() && d <= MAX);
                let _ = std::time::Instant::now() + d;
            }
        }

        /// Digits and units in any combination, the shape an attacker tries.
        #[test]
        fn numbers_and_units_are_refused_or_bounded(n in proptest::num::u64::ANY, unit in "(ns|us|ms|s|m|h|d|w|M|y)") {
            if let Ok(d) = parse(&format!("{n}{unit}")) {
                proptest::prop_assert!(!d.is_zero() && d <= MAX);
            }
        }

        /// What the gateway writes back (admin API, registry file) reads
        /// back the same.
        #[test]
        fn formatted_durations_read_back(ms in 1u64..=MAX.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
