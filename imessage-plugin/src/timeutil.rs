//! ISO-8601 instants as milliseconds since the Unix epoch.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses an ISO-8601 instant with a zone; `None` for anything else.
pub fn parse_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `2026-05-16T09:50:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    const MILLIS_UTC: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(MILLIS_UTC)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_ms("2026-05-16T09:50:00.250Z").unwrap();
        assert_eq!(format_ms(ms), "2026-05-16T09:50:00.250Z");
        assert_eq!(
            parse_ms("2026-05-16T11:50:00+02:00"),
            parse_ms("2026-05-16T09:50:00Z")
        );
        assert_eq!(parse_ms("yesterday-ish"), None);
    }
}
