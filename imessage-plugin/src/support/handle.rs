//! Handle normalisation (channel-behaviour.md §7.1): one canonical form for phone numbers,
//! emails and short codes, used for senders, allowlists, bindings, pairing ids and targets.

/// Service prefixes that may precede a handle, any number of times, any case.
const SERVICE_PREFIXES: [&str; 3] = ["imessage:", "sms:", "auto:"];

/// `value` without an ASCII `prefix`, compared case-insensitively.
///
/// Compares bytes, never slices the `&str` first: a sender such as `josé@example.com` has a
/// multi-byte character across byte 4, and `value[..4]` would panic there. When the bytes
/// match, they are all ASCII, so the cut after them is a character boundary.
pub fn strip_prefix_ignore_ascii_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| value.get(prefix.len()..))
        .flatten()
}

/// Strips every leading service prefix; returns the rest (trimmed) and the last prefix seen.
pub fn strip_service_prefixes(raw: &str) -> (&str, Option<&'static str>) {
    let mut rest = raw.trim();
    let mut service = None;
    'outer: loop {
        for prefix in SERVICE_PREFIXES {
            if let Some(after) = strip_prefix_ignore_ascii_case(rest, prefix) {
                rest = after.trim_start();
                service = prefix.strip_suffix(':');
                continue 'outer;
            }
        }
        break;
    }
    (rest.trim(), service)
}

/// The normalised handle, or `None` when the value is not a phone number, email or short code.
pub fn normalize(raw: &str) -> Option<String> {
    // Fast path: imsg already reports most senders as `+` and 7–15 digits.
    if let Some(digits) = raw.strip_prefix('+') {
        if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(raw.to_string());
        }
    }
    let (rest, _) = strip_service_prefixes(raw);
    if rest.contains('@') {
        // ASCII only: Unicode lower-casing folds distinct characters together (the Kelvin
        // sign U+212A becomes `k`), so a stranger's address could match an allowlisted one.
        let lower = rest.to_ascii_lowercase();
        let valid = !lower.chars().any(char::is_whitespace)
            && lower
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && !host.is_empty());
        return valid.then_some(lower);
    }
    let compact: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{00A0}' | '-' | '.' | '(' | ')'))
        .collect();
    let (plus, digits) = match compact.strip_prefix('+') {
        Some(d) => (true, d),
        None => (false, compact.as_str()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.len() {
        7..=15 => Some(format!("+{digits}")),
        3..=6 if !plus => Some(digits.to_string()),
        _ => None,
    }
}

/// Inbound senders keep their trimmed form when they are not a recognisable handle.
pub fn normalize_sender(raw: &str) -> String {
    normalize(raw).unwrap_or_else(|| raw.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("+1 (555) 000-1111", Some("+15550001111")),
            ("15550001111", Some("+15550001111")),
            ("imessage:+15550001111", Some("+15550001111")),
            ("SMS:auto:+1 555 000 1111", Some("+15550001111")),
            ("Bob@Example.com", Some("bob@example.com")),
            ("auto:Bob@Example.COM", Some("bob@example.com")),
            ("72345", Some("72345")),
            ("+44 20 7946 0958", Some("+442079460958")),
            ("+1.555.000.1111", Some("+15550001111")),
            ("Bob Smith", None),
            ("", None),
            ("12", None),
            ("1234567890123456", None),
            ("bob @example.com", None),
            ("@example.com", None),
            ("+123", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), *want, "{raw:?}");
        }
    }

    #[test]
    fn emails_are_lower_cased_in_ascii_only_issue_21() {
        assert_eq!(
            normalize("Bob@Example.COM").as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(
            normalize("\u{212A}elvin@Example.com").as_deref(),
            Some("\u{212A}elvin@example.com"),
            "the Kelvin sign is not the letter k"
        );
        assert_eq!(
            normalize("\u{C9}mile@X.fr").as_deref(),
            Some("\u{C9}mile@x.fr")
        );
        assert_ne!(
            normalize("\u{212A}elvin@example.com"),
            normalize("kelvin@example.com")
        );
    }

    #[test]
    fn multi_byte_characters_across_a_prefix_length_do_not_panic() {
        // Issue 10: `é` spans bytes 3–4 of this sender, inside the 4-byte `sms:` window.
        assert_eq!(
            normalize("josé@example.com").as_deref(),
            Some("josé@example.com")
        );
        for raw in [
            "ab\u{e9}cd",
            "😀😀😀",
            "a😀",
            "sms😀",
            "imessag\u{e9}:x",
            "auto:é",
        ] {
            let _ = strip_service_prefixes(raw);
            let _ = normalize(raw);
        }
        assert_eq!(strip_prefix_ignore_ascii_case("SMS:é", "sms:"), Some("é"));
        assert_eq!(strip_prefix_ignore_ascii_case("smé", "sms:"), None);
    }

    #[test]
    fn prefixes_report_the_service() {
        assert_eq!(strip_service_prefixes("sms:+1"), ("+1", Some("sms")));
        assert_eq!(strip_service_prefixes(" x "), ("x", None));
    }
}
