//! Inbound tapbacks (actions.md §2.1–§2.3): which rows are reactions, what they say, and the
//! text and context key of the reaction event. Pure; the pipeline decides whether one is
//! delivered.

use std::sync::OnceLock;

use regex::Regex;

use crate::imsg::message::ImsgMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tapback {
    /// `added` or `removed`.
    pub action: &'static str,
    /// `love like dislike laugh emphasize question custom`.
    pub kind: String,
    pub emoji: String,
    pub target_message_id: Option<String>,
    /// The quoted text of a text-form tapback (first 80 UTF-16 units).
    pub target_text: Option<String>,
}

fn standard_emoji(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "love" => "❤️",
        "like" => "👍",
        "dislike" => "👎",
        "laugh" => "😂",
        "emphasize" => "‼️",
        "question" => "❓",
        _ => return None,
    })
}

/// `p:<digits>/` as Messages prefixes part-specific targets.
fn strip_part_prefix(guid: &str) -> &str {
    guid.strip_prefix("p:")
        .and_then(|rest| {
            let (digits, tail) = rest.split_once('/')?;
            digits.bytes().all(|b| b.is_ascii_digit()).then_some(tail)
        })
        .unwrap_or(guid)
}

fn first_utf16_units(text: &str, max: usize) -> String {
    let mut units = 0;
    text.chars()
        .take_while(|c| {
            units += c.len_utf16();
            units <= max
        })
        .collect()
}

struct Patterns {
    added: Regex,
    removed: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| Patterns {
        added: Regex::new(
            r#"(?s)^(Loved|Liked|Disliked|Laughed at|Emphasized|Questioned) [“"](.*)[”"]$"#,
        )
        .expect("static pattern"),
        removed: Regex::new(
            r#"(?s)^Removed (a heart|a like|a dislike|a laugh|a question|an emphasis) from [“"](.*)[”"]$"#,
        )
        .expect("static pattern"),
    })
}

/// The tapback a row carries: imsg's reaction members, else a summary text such as
/// `Loved “dinner at 7?”` (SMS/RCS relays, builds without the members). `None` for messages.
pub fn classify(m: &ImsgMessage) -> Option<Tapback> {
    if m.is_reaction == Some(true) {
        let kind = match m.reaction_type.as_deref() {
            Some("emphasis") => "emphasize".to_string(),
            Some(k) if !k.is_empty() => k.to_string(),
            _ => "custom".to_string(),
        };
        let emoji = m
            .reaction_emoji
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .or_else(|| standard_emoji(&kind).map(str::to_string))
            .unwrap_or_else(|| "reaction".to_string());
        return Some(Tapback {
            action: if m.is_reaction_add == Some(false) {
                "removed"
            } else {
                "added"
            },
            kind,
            emoji,
            target_message_id: m
                .reacted_to_guid
                .as_deref()
                .map(strip_part_prefix)
                .filter(|g| !g.is_empty())
                .map(str::to_string),
            target_text: None,
        });
    }
    let text = m.text.as_deref()?;
    // Cheap pre-check: every summary ends with a closing quote.
    if !(text.ends_with('”') || text.ends_with('"')) {
        return None;
    }
    let p = patterns();
    let (action, kind, quoted) = if let Some(c) = p.added.captures(text) {
        let kind = match &c[1] {
            "Loved" => "love",
            "Liked" => "like",
            "Disliked" => "dislike",
            "Laughed at" => "laugh",
            "Emphasized" => "emphasize",
            _ => "question",
        };
        ("added", kind, c.get(2)?.as_str())
    } else if let Some(c) = p.removed.captures(text) {
        let kind = match &c[1] {
            "a heart" => "love",
            "a like" => "like",
            "a dislike" => "dislike",
            "a laugh" => "laugh",
            "an emphasis" => "emphasize",
            _ => "question",
        };
        ("removed", kind, c.get(2)?.as_str())
    } else {
        return None;
    };
    Some(Tapback {
        action,
        kind: kind.to_string(),
        emoji: standard_emoji(kind).unwrap_or("reaction").to_string(),
        target_message_id: None,
        target_text: Some(first_utf16_units(quoted, 80)),
    })
}

/// `iMessage reaction <action>: <emoji> by <senderId> on <target>` (OpenClaw's system-event
/// text).
pub fn event_text(t: &Tapback, sender_id: &str) -> String {
    let target = match (&t.target_message_id, &t.target_text) {
        (Some(id), _) => format!("msg {id}"),
        (None, Some(text)) => format!("message \"{text}\""),
        (None, None) => "a message".to_string(),
    };
    format!(
        "iMessage reaction {}: {} by {sender_id} on {target}",
        t.action, t.emoji
    )
}

/// `imessage:reaction:<action>:<conv>:<tgt>:<senderId>:<emoji>`.
pub fn context_key(t: &Tapback, m: &ImsgMessage, sender_id: &str) -> String {
    let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
    let conv = m
        .chat_id
        .filter(|c| *c > 0)
        .map(|c| c.to_string())
        .or_else(|| non_empty(m.chat_guid.as_deref()))
        .or_else(|| non_empty(m.chat_identifier.as_deref()))
        .unwrap_or_else(|| sender_id.to_string());
    let target = t
        .target_message_id
        .clone()
        .or_else(|| t.target_text.clone())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "imessage:reaction:{}:{conv}:{target}:{sender_id}:{}",
        t.action, t.emoji
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: serde_json::Value) -> ImsgMessage {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reaction_members_and_text_forms() {
        let r = classify(&row(
            serde_json::json!({"is_reaction": true, "reaction_type": "emphasis",
            "is_reaction_add": false, "reacted_to_guid": "p:0/S1", "text": "x"}),
        ))
        .unwrap();
        assert_eq!(
            (r.action, r.kind.as_str(), r.emoji.as_str()),
            ("removed", "emphasize", "‼️")
        );
        assert_eq!(r.target_message_id.as_deref(), Some("S1"));
        let custom = classify(&row(serde_json::json!({"is_reaction": true,
            "reaction_type": "custom", "reaction_emoji": "🎉", "reacted_to_guid": "S2"})))
        .unwrap();
        assert_eq!(
            (custom.kind.as_str(), custom.emoji.as_str()),
            ("custom", "🎉")
        );
        let undecoded = classify(&row(serde_json::json!({"is_reaction": true}))).unwrap();
        assert_eq!(
            (undecoded.kind.as_str(), undecoded.emoji.as_str()),
            ("custom", "reaction")
        );

        let text = |t: &str| classify(&row(serde_json::json!({"text": t})));
        let loved = text("Loved “dinner at 7?”").unwrap();
        assert_eq!((loved.action, loved.kind.as_str()), ("added", "love"));
        assert_eq!(loved.target_text.as_deref(), Some("dinner at 7?"));
        let removed = text("Removed an emphasis from \"ok\"").unwrap();
        assert_eq!(
            (removed.action, removed.kind.as_str()),
            ("removed", "emphasize")
        );
        assert!(text("Loved the movie").is_none());
        assert!(text("Loved “Dune” and the soundtrack").is_none());
        assert!(text("hello").is_none());
    }

    #[test]
    fn event_text_and_context_key_follow_openclaw() {
        let m = row(serde_json::json!({"chat_id": 7}));
        let t = Tapback {
            action: "added",
            kind: "love".into(),
            emoji: "❤️".into(),
            target_message_id: Some("S1".into()),
            target_text: None,
        };
        assert_eq!(
            event_text(&t, "+15550001111"),
            "iMessage reaction added: ❤️ by +15550001111 on msg S1"
        );
        assert_eq!(
            context_key(&t, &m, "+15550001111"),
            "imessage:reaction:added:7:S1:+15550001111:❤️"
        );
        let quoted = Tapback {
            target_message_id: None,
            target_text: Some("lunch?".into()),
            ..t
        };
        assert_eq!(
            event_text(&quoted, "+1"),
            "iMessage reaction added: ❤️ by +1 on message \"lunch?\""
        );
    }
}
