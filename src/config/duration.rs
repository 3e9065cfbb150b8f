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
    let expected = |why: &str| {
        format!("expected a duration such as \"500ms\", \"1.5s\", \"1m30s\" or \"1h\" ({why})")
    };
    // NB: a '.' is read by `fraction` or refused: humantime would take
    // ".5s" for 500 seconds.
    let d = if t.contains('.') {
        fraction(t).ok_or_else(|| expected("one decimal number and one unit, as in \"1.5s\""))?
    } else {
        humantime::parse_duration(t).map_err(|e| expected(&e.to_string()))?
    };
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

/// One decimal number and one unit (`1.5s`, `0.25h`, `2.5m`), which
/// humantime does not read; whole milliseconds only, checked by the caller.
fn fraction(t: &str) -> Option<Duration> {
    let at = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = (t[..at].trim(), t[at..].trim());
    if !num.contains('.') || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let per_ms: u64 = match unit {
        "ms" => 1,
        "s" | "sec" | "secs" => 1000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hr" | "hrs" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    let (whole, frac) = num.split_once('.')?;
    if frac.contains('.') || frac.len() > 9 || (whole.is_empty() && frac.is_empty()) {
        return None;
    }
    // NB: exact decimal arithmetic, in nanoseconds: no float rounding.
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_ns: u64 = format!("{frac:0<9}").parse().ok()?;
    // frac_ns is billionths of one unit; one unit is per_ms * 10^6 ns.
    let scaled = frac_ns.checked_mul(per_ms)?;
    if scaled % 1000 != 0 {
        return None; // finer than a nanosecond
    }
    let ns = whole
        .checked_mul(per_ms * 1_000_000)?
        .checked_add(scaled / 1000)?;
    Some(Duration::from_nanos(ns))
}

/// Formats a duration the way [`parse`] reads it.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
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
    fn decimal_durations_are_read_exactly() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25h"), Ok(Duration::from_secs(900)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2.5m"), Ok(Duration::from_secs(150)));
        assert_eq!(parse("1.001s"), Ok(Duration::from_millis(1001)));
        assert!(parse("1.0005s")
            .unwrap_err()
            .contains("whole number of milliseconds"));
        assert!(parse("0.0s").unwrap_err().contains("greater than zero"));
        for bad in [
            "1.5",
            "1..5s",
            "1.5.5s",
            ".s",
            "1.5 parsecs",
            "-1.5s",
            "1.5e3s",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("400.5d").unwrap_err().contains("at most"));
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
