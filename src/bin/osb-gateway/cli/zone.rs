//! Time zones of the CLI: times are read and shown in local time, or in
//! the fixed offset `--tz` names.

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};

/// A zone: local, or a fixed offset.
#[derive(Clone, Copy)]
pub enum Zone {
    /// The machine's local zone (TZ or /etc/localtime).
    Local,
    /// A fixed offset.
    Fixed(FixedOffset),
}

/// Parses `--tz`: none (local), `UTC`, or `+HH:MM`.
pub fn zone(tz: Option<&str>) -> Result<Zone, String> {
    match tz {
        None => Ok(Zone::Local),
        Some("UTC" | "utc" | "Z") => {
            Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")))
        }
        Some(t) => {
            let bad = || format!("--tz {t:?}: expected UTC or an offset like +02:00");
            let sign = match t.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            let (h, m) = t[1..].split_once(':').ok_or_else(bad)?;
            let secs = sign
                * (h.parse::<i32>().map_err(|_| bad())? * 3600
                    + m.parse::<i32>().map_err(|_| bad())? * 60);
            FixedOffset::east_opt(secs).map(Zone::Fixed).ok_or_else(bad)
        }
    }
}

/// `yyyy-MM-dd HH:mm:ss` in `z` → RFC 3339 (UTC) for the API.
pub fn to_api_time(text: &str, z: Zone, flag: &str) -> Result<String, String> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M"))
        .map_err(|_| format!("{flag} {text:?}: expected \"yyyy-MM-dd HH:mm:ss\""))?;
    let utc: DateTime<Utc> = match z {
        Zone::Local => Local
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(|| format!("{flag} {text:?}: that local time does not exist (DST gap)"))?
            .with_timezone(&Utc),
        Zone::Fixed(o) => o
            .from_local_datetime(&naive)
            .single()
            .expect("fixed offsets are unambiguous")
            .with_timezone(&Utc),
    };
    Ok(utc.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// µs since the epoch → `yyyy-MM-dd HH:mm:ss.SSS` in `z`.
pub fn show_time(us: i64, z: Zone) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp_micros(us) else {
        return us.to_string();
    };
    match z {
        Zone::Local => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Zone::Fixed(o) => t
            .with_timezone(&o)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_become_utc_for_the_api() {
        let plus2 = zone(Some("+02:00")).unwrap();
        assert_eq!(
            to_api_time("2026-11-22 14:00:00", plus2, "--before").unwrap(),
            "2026-11-22T12:00:00.000000Z"
        );
        assert!(to_api_time("22.11.2026", plus2, "--before").is_err());
        assert!(zone(Some("Europe/Berlin")).is_err());
    }
}
