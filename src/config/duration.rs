//! Durations written as `"500ms"`, `"10s"`, `"2m"`, `"1h"` in config files.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
///
/// # Errors
/// A message saying which forms are accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        "expected a duration such as \"500ms\", \"10s\", \"2m\" or \"1h\"".to_string()
    })?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err("expected a unit of ms, s, m or h (e.g. \"10s\")".into()),
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
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
    }
}
