//! ISO-8601 instants as milliseconds since the Unix epoch.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses an ISO-8601 instant with a zone; `None` for anything else.
pub fn parse_ms(text: &str) -> Option<i64> {
    if let Some(ms) = parse_imsg_shape(text) {
        return Some(ms);
    }
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The shape imsg always writes, `2026-05-16T09:50:00.000Z`, without the general parser
/// (it runs twice per inbound message). Anything else returns `None` and takes the slow path.
fn parse_imsg_shape(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
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
    fn the_fast_path_agrees_with_the_general_parser() {
        let mut ms: i64 = 0;
        for i in 0..20_000i64 {
            // Spread over 1970–2100, including leap days and month ends.
            ms = (ms + 211_111_111_111 + i * 7919) % 4_102_444_800_000;
            let text = format_ms(ms);
            let slow = OffsetDateTime::parse(&text, &Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .ok();
            assert_eq!(parse_imsg_shape(&text), slow, "{text}");
        }
        for text in [
            "2024-02-29T23:59:59.999Z",
            "2000-03-01T00:00:00.000Z",
            "1970-01-01T00:00:00.000Z",
        ] {
            assert_eq!(
                parse_imsg_shape(text),
                OffsetDateTime::parse(text, &Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .ok()
            );
        }
        assert_eq!(parse_imsg_shape("2026-13-01T00:00:00.000Z"), None);
        assert_eq!(
            parse_imsg_shape("2026-02-29T00:00:00.000Z"),
            None,
            "not a leap year"
        );
        assert_eq!(parse_imsg_shape("2026-04-31T00:00:00.000Z"), None);
        assert_eq!(
            parse_imsg_shape("2026-05-16T09:50:00Z"),
            None,
            "other shapes take the slow path"
        );
        assert!(parse_ms("2026-05-16T09:50:00Z").is_some());
    }

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
