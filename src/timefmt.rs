//! Time stamps as text (RFC 3339, UTC) without a calendar crate.

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let ms = us.rem_euclid(1_000_000) / 1000;
    let base = rfc3339(secs.max(0) as u64);
    format!("{}.{ms:03}Z", base.trim_end_matches('Z'))
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (full precision,
/// so a time read from one record bounds a search exactly).
pub fn rfc3339_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let base = rfc3339(secs.max(0) as u64);
    format!("{}.{frac:06}Z", base.trim_end_matches('Z'))
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM]` into µs since the epoch.
/// Without a zone the time is taken as UTC.
///
/// # Errors
/// A message naming the expected form.
pub fn parse_rfc3339_us(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?}: expected a time like 2026-11-22T13:45:00Z (RFC 3339, UTC or with an offset)"
        )
    };
    let t = text.trim();
    if t.len() < 19 {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let (date, rest) = t.split_at(10);
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || !matches!(rest.as_bytes().first(), Some(b'T' | b't' | b' ')) {
        return Err(bad());
    }
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let rest = &rest[1..];
    let (hms, mut zone) = rest.split_at(8.min(rest.len()));
    let h: Vec<&str> = hms.split(':').collect();
    if h.len() != 3 {
        return Err(bad());
    }
    let (hh, mm, ss) = (num(h[0])?, num(h[1])?, num(h[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let mut frac_us = 0;
    if let Some(f) = zone.strip_prefix('.') {
        let digits: String = f.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return Err(bad());
        }
        let mut padded = digits.clone();
        padded.truncate(6);
        while padded.len() < 6 {
            padded.push('0');
        }
        frac_us = num(&padded)?;
        zone = &f[digits.len()..];
    }
    let offset_s = match zone {
        "" | "Z" | "z" => 0,
        z if (z.starts_with('+') || z.starts_with('-')) && z.len() == 6 && &z[3..4] == ":" => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (num(&z[1..3])? * 3600 + num(&z[4..6])? * 60)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo as u32, da as u32);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_s;
    Ok(secs * 1_000_000 + frac_us)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_305_600 + 3661), "2026-11-22T01:01:01Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for us in [
            0,
            951_782_400_123_000,
            1_795_305_600_000_000 + 3_661_500_000,
        ] {
            assert_eq!(super::parse_rfc3339_us(&super::rfc3339_ms(us)).unwrap(), us);
            assert_eq!(
                super::parse_rfc3339_us(&super::rfc3339_us(us + 7)).unwrap(),
                us + 7
            );
        }
        assert_eq!(
            super::parse_rfc3339_us("2026-11-22T02:01:01+01:00").unwrap(),
            super::parse_rfc3339_us("2026-11-22 01:01:01").unwrap()
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T00:00:00+0100",
            "yesterday",
        ] {
            assert!(super::parse_rfc3339_us(bad).is_err(), "{bad}");
        }
    }
}
