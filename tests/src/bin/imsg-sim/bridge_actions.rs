//! The bridge's message actions (actions.md §3.3–§3.5, §3.9): `tapback`, `message.edit`,
//! `message.unsend`. Each needs one chat selector and a message; with the bridge ready it
//! changes the shared database (through the journal, so every process sees it), otherwise it
//! fails as the profile's bridge does.

use std::time::Duration;

use serde_json::{json, Value};

use crate::db::{self, Chat, Row};
use crate::methods::perr;
use crate::params::Params;
use crate::state::{RpcError, Sim};

type Res = Result<Value, RpcError>;

/// The methods that need a ready bridge (dropped from strict `methods` without one).
pub const METHODS: &[&str] = &["tapback", "message.edit", "message.unsend"];

const SELECTOR_KEYS: &[&str] = &["chat_id", "chat_guid", "chat_identifier"];
const MESSAGE_KEYS: &[&str] = &[
    "message_id",
    "messageId",
    "message_guid",
    "messageGuid",
    "message",
];

fn allowed(extra: &[&'static str]) -> Vec<&'static str> {
    let mut keys: Vec<&str> = SELECTOR_KEYS.to_vec();
    keys.extend_from_slice(MESSAGE_KEYS);
    keys.extend_from_slice(&["part_index", "partIndex"]);
    keys.extend_from_slice(extra);
    keys
}

/// A bridge that stalls: imsg answers after `ms` that it timed out.
fn bridge_timeout(operation: &str, ms: u64) -> RpcError {
    std::thread::sleep(Duration::from_millis(ms));
    RpcError::internal(format!("Timed out waiting for response to '{operation}'"))
}

impl Sim {
    /// The target message's GUID, or the error imsg gives without one.
    fn message_target(p: &Params) -> Result<String, RpcError> {
        MESSAGE_KEYS
            .iter()
            .find_map(|k| {
                p.string(k)
                    .ok()
                    .flatten()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .ok_or_else(|| RpcError::params("message_id or message_guid is required"))
    }

    fn chat_target(&self, p: &Params) -> Result<Chat, RpcError> {
        if !Self::has_selector(p) {
            return Err(RpcError::params(
                "chat_guid, chat_identifier, or chat_id is required",
            ));
        }
        Ok(self.resolve_chat(p)?.expect("a selector was given"))
    }

    /// The chat and message, checked in the order of the version (§10 E4: the 0.15 source
    /// checks the message before the chat).
    fn action_target(&self, p: &Params) -> Result<(Chat, String), RpcError> {
        if self.at_least((0, 15, 0)) {
            let guid = Self::message_target(p)?;
            Ok((self.chat_target(p)?, guid))
        } else {
            let chat = self.chat_target(p)?;
            Ok((chat, Self::message_target(p)?))
        }
    }

    /// The bridge's answer before it acts: `Ok` when ready; a stall, an injected error or
    /// the profile's unavailable error otherwise.
    fn bridge_ready_for(&self, operation: &str) -> Result<(), RpcError> {
        match &self.bridge {
            Value::String(s) if s == "ready" => Ok(()),
            // imsg's bridge gives up after 10 s; `{"timeout_ms": n}` stalls n ms instead, so
            // a test need not wait the real 10 s.
            Value::String(s) if s == "timeout" => Err(bridge_timeout(operation, 10_000)),
            Value::Object(o) if o.contains_key("timeout_ms") => {
                let ms = o
                    .get("timeout_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(10_000);
                Err(bridge_timeout(operation, ms))
            }
            Value::Object(o) if o.contains_key("error") => Err(RpcError::internal(format!(
                "Dylib error: {}",
                o["error"].as_str().unwrap_or("")
            ))),
            _ => Err(self.bridge_unavailable()),
        }
    }

    fn target_row(&self, guid: &str) -> Result<Row, RpcError> {
        self.db
            .row_by_guid(guid)
            .cloned()
            .ok_or_else(|| RpcError::internal(format!("Dylib error: Message not found: {guid}")))
    }

    /// Whether this build sends a non-empty `emoji` as itself (0.15, actions.md §3.3).
    pub fn emoji_tapbacks(&self) -> bool {
        self.at_least((0, 15, 0))
            && self.bridge.as_str() == Some("ready")
            && self
                .bridge_features
                .get("emoji_tapback")
                .and_then(Value::as_bool)
                .unwrap_or(true)
    }

    pub fn tapback(&mut self, p: &Params) -> Res {
        p.allow(
            "tapback",
            &allowed(&["reaction", "kind", "emoji", "remove"]),
        )
        .map_err(perr)?;
        let (chat, guid) = self.action_target(p)?;
        let mut remove = p.bool("remove").map_err(perr)?.unwrap_or(false);
        let emoji = p
            .string("emoji")
            .map_err(perr)?
            .filter(|e| !e.trim().is_empty());
        if let (true, Some(emoji)) = (self.emoji_tapbacks(), emoji) {
            self.bridge_ready_for("send-reaction")?;
            let target = self.target_row(&guid)?;
            let text = format!("Reacted {emoji} to \u{201c}{}\u{201d}", target.text);
            let reaction = db::Reaction {
                kind: "custom".into(),
                target_guid: guid,
                remove,
                emoji: Some(emoji.clone()),
            };
            self.write_tapback_row(&chat, text, reaction);
            return Ok(json!({"ok": true, "emoji": emoji}));
        }
        let raw = ["reaction", "kind", "emoji"]
            .iter()
            .find_map(|k| p.string(k).ok().flatten().filter(|s| !s.trim().is_empty()));
        let Some(raw) = raw else {
            return Err(RpcError::params("reaction, kind, or emoji is required"));
        };
        let mut value = raw.trim().to_lowercase();
        if let Some(rest) = value.strip_prefix("remove-") {
            remove = true;
            value = rest.to_string();
        }
        let kind = match value.as_str() {
            "love" | "heart" | "\u{2764}\u{fe0f}" | "\u{2764}" => "love",
            "like" | "thumbsup" | "thumbs-up" | "+1" | "\u{1f44d}" => "like",
            "dislike" | "thumbsdown" | "thumbs-down" | "-1" | "\u{1f44e}" => "dislike",
            "laugh" | "haha" | "lol" | "\u{1f602}" | "\u{1f923}" => "laugh",
            "emphasize" | "emphasis" | "!!" | "\u{203c}" | "\u{203c}\u{fe0f}" => "emphasize",
            "question" | "?" | "\u{2753}" => "question",
            _ => {
                return Err(RpcError::params(format!(
                    "unsupported tapback reaction {raw}; use love, like, dislike, laugh, emphasize, or question"
                )))
            }
        };
        self.bridge_ready_for("send-reaction")?;
        let target = self.target_row(&guid)?;
        let text = if remove {
            format!("Removed a {kind} from \u{201c}{}\u{201d}", target.text)
        } else {
            format!(
                "{} \u{201c}{}\u{201d}",
                db::reaction_verb(kind),
                target.text
            )
        };
        let reaction = db::Reaction {
            kind: kind.into(),
            target_guid: guid,
            remove,
            emoji: None,
        };
        self.write_tapback_row(&chat, text, reaction);
        let reported = if remove {
            format!("remove-{kind}")
        } else {
            kind.to_string()
        };
        Ok(json!({"ok": true, "reaction": reported}))
    }

    fn write_tapback_row(&mut self, chat: &Chat, text: String, reaction: db::Reaction) {
        let id = self.db.max_row_id() + 1;
        let row = Row {
            id,
            guid: db::guid_for(id),
            chat_id: Some(chat.id),
            handle: if chat.is_group() {
                String::new()
            } else {
                chat.participants.first().cloned().unwrap_or_default()
            },
            from_me: true,
            text,
            date_ms: self.clock.now_ms(),
            destination_caller_id: Some(self.db.self_handle.clone()),
            thread_originator_guid: None,
            reply_to_guid: None,
            reaction: Some(reaction),
            attachments: Vec::new(),
            preview_of: None,
        };
        self.insert_row(row);
    }

    /// `message.edit`: rewrites the row's text (no new row, no notification).
    pub fn message_edit(&mut self, p: &Params) -> Res {
        p.allow(
            "message.edit",
            &allowed(&[
                "text",
                "new_text",
                "newText",
                "edited_message",
                "backwards_compatibility_message",
            ]),
        )
        .map_err(perr)?;
        let (_chat, guid) = self.action_target(p)?;
        let text = ["text", "new_text", "newText", "edited_message"]
            .iter()
            .find_map(|k| p.string(k).ok().flatten().filter(|s| !s.is_empty()))
            .ok_or_else(|| RpcError::params("text is required"))?;
        self.bridge_ready_for("edit-message")?;
        let row = self.target_row(&guid)?;
        self.rewrite_row(row.id, &text);
        Ok(json!({"ok": true}))
    }

    /// `message.unsend`: the row's text becomes empty.
    pub fn message_unsend(&mut self, p: &Params) -> Res {
        p.allow("message.unsend", &allowed(&[])).map_err(perr)?;
        let (_chat, guid) = self.action_target(p)?;
        self.bridge_ready_for("unsend-message")?;
        let row = self.target_row(&guid)?;
        self.rewrite_row(row.id, "");
        Ok(json!({"ok": true}))
    }
}
