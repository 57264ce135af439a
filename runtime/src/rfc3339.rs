//! RFC 3339 timestamps in UTC, as log lines carry them.

use std::time::SystemTime;

/// `t` with milliseconds: `2026-12-02T21:40:00.123Z`.
pub fn millis(t: SystemTime) -> String {
    let (date, d) = civil(t);
    format!("{date}.{:03}Z", d.subsec_millis())
}

/// `t` with nanoseconds: `2026-12-02T21:40:00.123456789Z` (Go's `RFC3339Nano` with all digits).
pub fn nanos(t: SystemTime) -> String {
    let (date, d) = civil(t);
    format!("{date}.{:09}Z", d.subsec_nanos())
}

/// `YYYY-MM-DDTHH:MM:SS` of `t` (times before 1970 read as 1970), and `t` since 1970.
fn civil(t: SystemTime) -> (String, std::time::Duration) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_in_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_247_600_123);
        assert_eq!(millis(t), "2026-12-02T21:40:00.123Z");
        assert_eq!(nanos(t), "2026-12-02T21:40:00.123000000Z");
        assert_eq!(millis(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
