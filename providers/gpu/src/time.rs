//! RFC 3339 timestamps of inventory reports (chrono, as the engine uses).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Seconds since the Unix epoch → `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
#[cfg(test)]
pub(crate) fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` → seconds since the Unix epoch; `None` for
/// anything else (an offset other than `Z`, a date before 1970, garbage).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    if !s.ends_with(['Z', 'z']) {
        return None;
    }
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp()).ok()
}

/// Seconds since the Unix epoch now.
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn rfc3339_parses_back_to_the_seconds_it_was_rendered_from() {
        for secs in [0, 1_709_251_199, 1_795_734_000, 951_782_400] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(secs)), Some(secs));
        }
        assert_eq!(
            super::parse_rfc3339("2026-11-27T02:59:13.123Z"),
            Some(1_795_748_353)
        );
        assert_eq!(super::parse_rfc3339("2026-11-27T02:59:13+01:00"), None);
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn epoch_seconds_render_as_utc_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(super::rfc3339(1_795_734_000), "2026-11-26T23:00:00Z");
    }
}
