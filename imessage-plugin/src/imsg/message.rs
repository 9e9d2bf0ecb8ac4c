//! The inbound message as imsg sends it in a `message` notification (imsg-protocol.md §A13),
//! parsed with the type rules of channel-behaviour.md §2 step 1: every field may be absent or
//! `null`; a present field of the wrong type rejects the whole message; unknown fields are
//! ignored.

use std::borrow::Cow;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Strings are `CompactString`s: handles, GUIDs, chat identifiers and timestamps fit in its
/// 24 inline bytes, so a typical message costs one heap allocation (its text) instead of
/// eight, in the reader that parses it and again in the watcher that frees it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ImsgMessage {
    pub id: Option<i64>,
    pub guid: Option<CompactString>,
    pub chat_id: Option<i64>,
    pub chat_guid: Option<CompactString>,
    pub chat_identifier: Option<CompactString>,
    pub chat_name: Option<CompactString>,
    pub sender: Option<CompactString>,
    pub text: Option<CompactString>,
    pub created_at: Option<CompactString>,
    pub destination_caller_id: Option<CompactString>,
    pub reply_to_guid: Option<CompactString>,
    pub reply_to_text: Option<CompactString>,
    pub reply_to_sender: Option<CompactString>,
    pub is_from_me: Option<bool>,
    pub is_group: Option<bool>,
    pub is_reaction: Option<bool>,
    /// Tapback rows (imsg 0.5+ with `include_reactions`, actions.md §2.1).
    pub reaction_type: Option<CompactString>,
    pub reaction_emoji: Option<CompactString>,
    pub is_reaction_add: Option<bool>,
    pub reacted_to_guid: Option<CompactString>,
    pub attachments: Option<Vec<Map<String, Value>>>,
    /// Strict servers: the cursor to persist instead of `id`.
    pub cursor: Option<i64>,
}

impl ImsgMessage {
    pub fn rowid(&self) -> i64 {
        self.id.unwrap_or(0)
    }

    /// The dedupe key: the GUID, or `rowid:<id>` when it is empty.
    pub fn dedupe_key(&self) -> String {
        match self.guid.as_deref().map(str::trim) {
            Some(g) if !g.is_empty() => g.to_string(),
            _ => format!("rowid:{}", self.rowid()),
        }
    }

    /// `created_at` in Unix milliseconds, when present and readable.
    pub fn created_ms(&self) -> Option<i64> {
        self.created_at
            .as_deref()
            .and_then(crate::support::timeutil::parse_ms)
    }

    /// The row id to persist as the cursor (strict `cursor` wins over `id`).
    pub fn cursor_id(&self) -> i64 {
        self.cursor.unwrap_or(self.rowid())
    }
}

#[derive(Deserialize)]
struct MessageParams<'a> {
    #[serde(default)]
    subscription: Option<i64>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
}

/// A `message` notification that could not be used, with the sorted top-level keys for the
/// log line (never values).
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub keys: Vec<String>,
    pub subscription: Option<i64>,
}

#[derive(Deserialize)]
struct MessageLine<'a> {
    #[serde(default)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    params: Option<TypedParams>,
}

/// A whole stdout line that is a well-formed `message` notification, in one pass; `None` for
/// anything else (replies, other notifications, malformed messages), which the caller
/// classifies the slow way.
pub fn parse_message_line(line: &str) -> Option<(Option<i64>, ImsgMessage)> {
    // Cheap pre-check: replies and other notifications skip the typed attempt.
    if !line.contains("\"message\"") {
        return None;
    }
    match serde_json::from_str::<MessageLine>(line).ok()? {
        MessageLine {
            id: None,
            method: Some(m),
            params:
                Some(TypedParams {
                    subscription,
                    message: Some(message),
                }),
        } if m == "message" => Some((subscription, message)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct TypedParams {
    #[serde(default)]
    subscription: Option<i64>,
    #[serde(default)]
    message: Option<ImsgMessage>,
}

/// Parses a `message` notification's params: one typed pass for the usual case; only a
/// message that fails it is parsed again, to report its keys.
pub fn parse_notification(
    params: Option<&RawValue>,
) -> Result<(Option<i64>, ImsgMessage), Malformed> {
    if let Some(raw) = params {
        if let Ok(TypedParams {
            subscription,
            message: Some(m),
        }) = serde_json::from_str(raw.get())
        {
            return Ok((subscription, m));
        }
    }
    parse_slow(params)
}

fn parse_slow(params: Option<&RawValue>) -> Result<(Option<i64>, ImsgMessage), Malformed> {
    let no_keys = || Malformed {
        keys: Vec::new(),
        subscription: None,
    };
    let params = params.ok_or_else(no_keys)?;
    let parsed: MessageParams<'_> =
        serde_json::from_str(params.get()).map_err(|_| keys_of(params.get(), None))?;
    let raw = parsed
        .message
        .filter(|m| m.get().trim_start().starts_with('{'))
        .ok_or_else(|| keys_of(params.get(), parsed.subscription))?;
    let message: ImsgMessage =
        serde_json::from_str(raw.get()).map_err(|_| keys_of(raw.get(), parsed.subscription))?;
    Ok((parsed.subscription, message))
}

fn keys_of(json: &str, subscription: Option<i64>) -> Malformed {
    let mut keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(json)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    Malformed { keys, subscription }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn parses_a_message_and_ignores_unknown_fields() {
        let p = raw(
            r#"{"subscription":1,"message":{"id":500,"guid":"D0","chat_id":7,"sender":"+15550001111","is_from_me":false,"text":"hello","x_sim":1,"reply_to_text":null,"attachments":[]}}"#,
        );
        let (sub, m) = parse_notification(Some(&p)).unwrap();
        assert_eq!(sub, Some(1));
        assert_eq!(m.rowid(), 500);
        assert_eq!(m.dedupe_key(), "D0");
        assert_eq!(m.reply_to_text, None, "null is absent");
    }

    #[test]
    fn wrong_types_reject_the_whole_message_and_report_keys_only() {
        let p = raw(r#"{"subscription":1,"message":{"id":1,"sender":{"x":1},"text":"secret"}}"#);
        let err = parse_notification(Some(&p)).unwrap_err();
        assert_eq!(err.keys, vec!["id", "sender", "text"]);
        let p = raw(r#"{"subscription":1,"other":2}"#);
        assert_eq!(
            parse_notification(Some(&p)).unwrap_err().keys,
            vec!["other", "subscription"]
        );
        let p = raw(r#"{"subscription":1,"message":"nope"}"#);
        assert!(parse_notification(Some(&p)).is_err());
        assert!(parse_notification(None).is_err());
    }

    #[test]
    fn escaped_and_long_strings_survive_the_compact_representation() {
        let line = r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":3,"message":{"id":9,"guid":"p:0/0123456789ABCDEF0123456789ABCDEF-long","sender":"bob\u0040example.com","text":"say \"hi\"\n\u00e9\ud83d\ude00","created_at":"2026-11-24T10:00:00.123Z"}}}"#;
        let (sub, m) = parse_message_line(line).expect("a message line");
        assert_eq!(sub, Some(3));
        assert_eq!(
            m.guid.as_deref(),
            Some("p:0/0123456789ABCDEF0123456789ABCDEF-long")
        );
        assert_eq!(m.sender.as_deref(), Some("bob@example.com"));
        assert_eq!(m.text.as_deref(), Some("say \"hi\"\n\u{e9}\u{1f600}"));
        assert_eq!(m.created_ms(), Some(1_795_514_400_123));
        // Replies and other notifications are not message lines.
        assert!(
            parse_message_line(r#"{"jsonrpc":"2.0","id":1,"result":{"message":{}}}"#).is_none()
        );
        assert!(parse_message_line(
            r#"{"jsonrpc":"2.0","method":"error","params":{"message":"x"}}"#
        )
        .is_none());
    }

    #[test]
    fn empty_guid_falls_back_to_rowid() {
        let m = ImsgMessage {
            id: Some(42),
            guid: Some(CompactString::default()),
            ..Default::default()
        };
        assert_eq!(m.dedupe_key(), "rowid:42");
    }
}
