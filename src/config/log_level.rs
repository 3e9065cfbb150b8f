//! `log.level`: a level, or `target=level` directives. Anything else
//! would be read as a target name and silence every line.

/// The levels `log.level` takes, alone or per target.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `log.level` is a level (`info`) or comma-separated directives, each a
/// level or `target=level` (`warn,osb_gateway::exchange=info`). Anything
/// else would be read as a target name and silence every log line.
pub fn check(text: &str) -> Result<(), String> {
    let expected = || {
        format!(
            "expected one of {} or directives such as \"warn,osb_gateway::exchange=info\"",
            LOG_LEVELS.join(", ")
        )
    };
    if text.trim().is_empty() {
        return Err(expected());
    }
    for d in text.split(',') {
        let level = match d.trim().rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            Some(_) => return Err(expected()),
            None => d,
        };
        if !LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!("{:?} is not a level; {}", level.trim(), expected()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_that_would_silence_the_gateway_are_refused() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,osb_gateway::exchange=info",
            "debug, hyper=warn",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in ["lots", "", "info,", "=info", "hyper=loud", "verbose"] {
            let e = check(bad).unwrap_err();
            assert!(e.contains("expected one of trace"), "{bad}: {e}");
        }
    }
}
