//! Allowlist entries (`allowFrom`, `groupAllowFrom`, channel-behaviour.md §1.3) and `groups`
//! keys.

use serde_json::Value;

use super::read::{self, Diag};
use crate::support::handle;

/// One parsed allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    Any,
    Handle(String),
    ChatId(i64),
    ChatGuid(String),
    ChatIdentifier(String),
}

impl AllowEntry {
    /// The stored form (`+15550001111`, `chat_id:42`, `*`, …).
    pub fn stored(&self) -> String {
        match self {
            AllowEntry::Any => "*".into(),
            AllowEntry::Handle(h) => h.clone(),
            AllowEntry::ChatId(id) => format!("chat_id:{id}"),
            AllowEntry::ChatGuid(g) => format!("chat_guid:{g}"),
            AllowEntry::ChatIdentifier(i) => format!("chat_identifier:{i}"),
        }
    }
}

const CHAT_ID_PREFIXES: [&str; 3] = ["chat_id:", "chatid:", "chat:"];
const CHAT_GUID_PREFIXES: [&str; 3] = ["chat_guid:", "chatguid:", "guid:"];
const CHAT_IDENT_PREFIXES: [&str; 3] = ["chat_identifier:", "chatidentifier:", "chatident:"];

/// Strips the first of `prefixes` (case-insensitive) from `value`.
pub fn strip_any_prefix<'a>(value: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes
        .iter()
        .find_map(|p| handle::strip_prefix_ignore_ascii_case(value, p).map(str::trim))
}

/// Why an entry was rejected, or the entry with an optional "missing +" warning.
pub enum Parsed {
    Entry(AllowEntry, Option<String>),
    Invalid,
}

pub fn parse_entry(raw: &str) -> Parsed {
    let trimmed = raw.trim();
    if trimmed == "*" {
        return Parsed::Entry(AllowEntry::Any, None);
    }
    let (rest, _) = handle::strip_service_prefixes(trimmed);
    if let Some(v) = strip_any_prefix(rest, &CHAT_ID_PREFIXES) {
        return match v.parse::<i64>() {
            Ok(id) if id > 0 && v.bytes().all(|b| b.is_ascii_digit()) => {
                Parsed::Entry(AllowEntry::ChatId(id), None)
            }
            _ => Parsed::Invalid,
        };
    }
    if let Some(v) = strip_any_prefix(rest, &CHAT_GUID_PREFIXES) {
        return non_empty(v, AllowEntry::ChatGuid);
    }
    if let Some(v) = strip_any_prefix(rest, &CHAT_IDENT_PREFIXES) {
        return non_empty(v, AllowEntry::ChatIdentifier);
    }
    match handle::normalize(rest) {
        Some(h) => {
            let warn = (h.starts_with('+') && !rest.starts_with('+')).then(|| h.clone());
            Parsed::Entry(AllowEntry::Handle(h), warn)
        }
        None => Parsed::Invalid,
    }
}

fn non_empty(v: &str, make: fn(String) -> AllowEntry) -> Parsed {
    if v.is_empty() {
        Parsed::Invalid
    } else {
        Parsed::Entry(make(v.to_string()), None)
    }
}

/// Reads an allowlist array; `label` is the field name used in warnings.
pub fn read_list(
    value: &Value,
    path: &str,
    label: &str,
    diag: &mut Diag,
) -> Option<Vec<AllowEntry>> {
    let items = read::array(value, path, diag)?;
    let mut entries = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let raw = match item {
            Value::String(s) => s.clone(),
            Value::Number(_) => match read::as_integer(item) {
                Some(n) => n.to_string(),
                None => item.to_string(),
            },
            other => other.to_string(),
        };
        let parsed = match item {
            Value::String(_) | Value::Number(_) => parse_entry(&raw),
            _ => Parsed::Invalid,
        };
        match parsed {
            Parsed::Entry(entry, warn) => {
                if let Some(normalised) = warn {
                    diag.warn(format!(
                        "{label} entry \"{raw}\" was read as \"{normalised}\"; write phone numbers with + and the country code"
                    ));
                }
                entries.push(entry);
            }
            Parsed::Invalid => {
                ok = false;
                diag.error(
                    &read::index(path, i),
                    format!("\"{raw}\" is not a phone number, email address, chat target or \"*\""),
                );
            }
        }
    }
    ok.then_some(entries)
}

/// A key of the `groups` map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKey {
    ChatId(i64),
    ChatGuid(String),
    ChatIdentifier(String),
    Wildcard,
}

pub fn parse_group_key(raw: &str) -> Option<GroupKey> {
    if raw == "*" {
        return Some(GroupKey::Wildcard);
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(GroupKey::ChatId);
    }
    if let Some(v) = strip_any_prefix(raw, &["chat_guid:"]) {
        return (!v.is_empty()).then(|| GroupKey::ChatGuid(v.to_string()));
    }
    if let Some(v) = strip_any_prefix(raw, &["chat_identifier:"]) {
        return (!v.is_empty()).then(|| GroupKey::ChatIdentifier(v.to_string()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(raw: &str) -> Option<AllowEntry> {
        match parse_entry(raw) {
            Parsed::Entry(e, _) => Some(e),
            Parsed::Invalid => None,
        }
    }

    #[test]
    fn entries() {
        assert_eq!(entry("*"), Some(AllowEntry::Any));
        assert_eq!(entry("chat_id:42"), Some(AllowEntry::ChatId(42)));
        assert_eq!(entry("CHATID: 42"), Some(AllowEntry::ChatId(42)));
        assert_eq!(entry("chat:7"), Some(AllowEntry::ChatId(7)));
        assert_eq!(entry("chat_id:abc"), None);
        assert_eq!(entry("chat_id:0"), None);
        assert_eq!(entry("chat_guid:"), None);
        assert_eq!(
            entry("guid:iMessage;+;chat1"),
            Some(AllowEntry::ChatGuid("iMessage;+;chat1".into()))
        );
        assert_eq!(
            entry("chatident:chat99"),
            Some(AllowEntry::ChatIdentifier("chat99".into()))
        );
        assert_eq!(
            entry("sms:+1 (555) 000-1111"),
            Some(AllowEntry::Handle("+15550001111".into()))
        );
        assert_eq!(entry("Bob Smith"), None);
    }

    #[test]
    fn group_keys() {
        assert_eq!(parse_group_key("42"), Some(GroupKey::ChatId(42)));
        assert_eq!(parse_group_key("0"), None);
        assert_eq!(parse_group_key("team"), None);
        assert_eq!(
            parse_group_key("chat_guid:iMessage;+;chat4242"),
            Some(GroupKey::ChatGuid("iMessage;+;chat4242".into()))
        );
        assert_eq!(parse_group_key("*"), Some(GroupKey::Wildcard));
        assert_eq!(parse_group_key("chat_identifier:"), None);
    }
}
