//! The simulated Messages database: chats, rows, and their JSON shapes (imsg-protocol.md
//! §A13, §B4, §B6).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const GUID_PREFIX: &str = "0A1B2C3D-0000-4000-8000-";

pub fn guid_for(id: i64) -> String {
    format!("{GUID_PREFIX}{id:012}")
}

/// Milliseconds since the Unix epoch → `2026-05-16T09:50:00.000Z`.
pub fn iso(ms: i64) -> String {
    const MILLIS_UTC: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(MILLIS_UTC)
        .unwrap_or_default()
}

/// ISO-8601 with a zone → milliseconds.
pub fn parse_iso(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[derive(Debug, Clone)]
pub struct Chat {
    pub id: i64,
    pub identifier: String,
    pub guid: String,
    pub name: Option<String>,
    pub service: String,
    pub participants: Vec<String>,
}

impl Chat {
    pub fn is_group(&self) -> bool {
        self.guid.contains(";+;") || self.identifier.contains(";+;")
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.identifier.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub transfer_name: String,
    pub uti: String,
    pub mime_type: String,
    pub total_bytes: i64,
    pub is_sticker: bool,
    pub missing: bool,
}

#[derive(Debug, Clone)]
pub struct Reaction {
    pub kind: String,
    pub target_guid: String,
    pub remove: bool,
    pub emoji: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub guid: String,
    pub chat_id: Option<i64>,
    pub handle: String,
    pub from_me: bool,
    pub text: String,
    pub date_ms: i64,
    pub destination_caller_id: Option<String>,
    pub thread_originator_guid: Option<String>,
    pub reply_to_guid: Option<String>,
    pub reaction: Option<Reaction>,
    pub attachments: Vec<Attachment>,
    /// A URL-preview row of that text row (sim): never returned by `messages.after` or the
    /// watch, but `next_rowid` may pass it (actions.md §4.4).
    pub preview_of: Option<i64>,
}

impl Row {
    pub fn sender(&self) -> String {
        if !self.handle.is_empty() {
            self.handle.clone()
        } else {
            self.destination_caller_id.clone().unwrap_or_default()
        }
    }
}

/// What a rendered message includes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Render {
    pub attachments: bool,
    /// Fill `reactions` (history always; watch only with `include_reactions`).
    pub reactions: bool,
    /// Render a tapback row as a reaction event.
    pub reaction_event: bool,
    pub cursor: bool,
    pub reply_context: bool,
    pub unknown_members: bool,
}

pub struct Db {
    pub chats: BTreeMap<i64, Chat>,
    pub rows: BTreeMap<i64, Row>,
    /// Row id → (send state, when it was reached) for rows written by sends (§7.5).
    pub send_states: BTreeMap<i64, (String, i64)>,
    /// Attempt ids a tracked send holds (journal op `reserve`).
    pub reserved: std::collections::BTreeSet<String>,
    pub self_handle: String,
    pub home: String,
    pub contacts: Vec<(String, Vec<String>)>,
}

pub fn emoji_for(kind: &str) -> &'static str {
    match kind {
        "love" => "\u{2764}\u{fe0f}",
        "like" => "\u{1f44d}",
        "dislike" => "\u{1f44e}",
        "laugh" => "\u{1f602}",
        "emphasize" | "emphasis" => "\u{203c}\u{fe0f}",
        "question" => "\u{2753}",
        _ => "",
    }
}

pub fn reaction_verb(kind: &str) -> &'static str {
    match kind {
        "love" => "Loved",
        "like" => "Liked",
        "dislike" => "Disliked",
        "laugh" => "Laughed at",
        "emphasize" | "emphasis" => "Emphasized",
        "question" => "Questioned",
        _ => "Reacted to",
    }
}

impl Db {
    pub fn max_row_id(&self) -> i64 {
        self.rows.keys().next_back().copied().unwrap_or(0)
    }

    pub fn row_by_guid(&self, guid: &str) -> Option<&Row> {
        self.rows.values().find(|r| r.guid == guid)
    }

    /// Builds a row from scenario JSON (`id` and `date` default to the next id and `now_ms`).
    pub fn row_from_json(&self, v: &Value, now_ms: i64) -> Row {
        let id = v
            .get("id")
            .and_then(Value::as_i64)
            .unwrap_or(self.max_row_id() + 1);
        let from_me = v.get("from_me").and_then(Value::as_bool).unwrap_or(false);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let attachments = v
            .get("attachments")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|a| Attachment {
                        filename: a
                            .get("filename")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        transfer_name: a
                            .get("transfer_name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        uti: a.get("uti").and_then(Value::as_str).unwrap_or("").into(),
                        mime_type: a
                            .get("mime_type")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        total_bytes: a.get("total_bytes").and_then(Value::as_i64).unwrap_or(0),
                        is_sticker: a
                            .get("is_sticker")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        missing: a.get("missing").and_then(Value::as_bool).unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let reaction = v
            .get("reaction")
            .and_then(Value::as_object)
            .map(|r| Reaction {
                kind: r
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("love")
                    .into(),
                target_guid: r
                    .get("target_guid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                remove: r.get("remove").and_then(Value::as_bool).unwrap_or(false),
                emoji: r.get("emoji").and_then(Value::as_str).map(str::to_string),
            });
        Row {
            id,
            guid: s("guid").unwrap_or_else(|| guid_for(id)),
            chat_id: v.get("chat_id").and_then(Value::as_i64),
            handle: s("handle").unwrap_or_default(),
            from_me,
            text: s("text").unwrap_or_default(),
            date_ms: s("date").and_then(|d| parse_iso(&d)).unwrap_or(now_ms),
            destination_caller_id: s("destination_caller_id")
                .or_else(|| from_me.then(|| self.self_handle.clone())),
            thread_originator_guid: s("thread_originator_guid"),
            reply_to_guid: s("reply_to_guid"),
            reaction,
            attachments,
            preview_of: v.get("preview_of").and_then(Value::as_i64),
        }
    }

    fn net_reactions(&self, target: &Row) -> Vec<Value> {
        // Net state per (sender, type): a later removal cancels an earlier add.
        let mut state: BTreeMap<(String, String), Option<&Row>> = BTreeMap::new();
        for row in self.rows.values() {
            let Some(r) = &row.reaction else { continue };
            if r.target_guid != target.guid {
                continue;
            }
            let key = (row.sender(), r.kind.clone());
            state.insert(key, (!r.remove).then_some(row));
        }
        let mut out: Vec<&Row> = state.into_values().flatten().collect();
        out.sort_by_key(|r| r.id);
        out.iter()
            .map(|row| {
                let r = row.reaction.as_ref().expect("reaction row");
                json!({
                    "id": row.id,
                    "type": r.kind,
                    "emoji": r.emoji.clone().unwrap_or_else(|| emoji_for(&r.kind).to_string()),
                    "sender": row.sender(),
                    "is_from_me": row.from_me,
                    "created_at": iso(row.date_ms),
                })
            })
            .collect()
    }

    pub fn render_attachment(&self, a: &Attachment) -> Value {
        let original = match a.filename.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", self.home.trim_end_matches('/')),
            None => a.filename.clone(),
        };
        json!({
            "filename": a.filename,
            "transfer_name": a.transfer_name,
            "uti": a.uti,
            "mime_type": a.mime_type,
            "total_bytes": a.total_bytes,
            "is_sticker": a.is_sticker,
            "original_path": original,
            "missing": a.missing,
        })
    }

    pub fn render_message(&self, row: &Row, opts: Render) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(row.id));
        m.insert("chat_id".into(), json!(row.chat_id.unwrap_or(0)));
        m.insert("guid".into(), json!(row.guid));
        if let Some(t) = &row.thread_originator_guid {
            m.insert("thread_originator_guid".into(), json!(t));
        }
        if let Some(t) = &row.reply_to_guid {
            m.insert("reply_to_guid".into(), json!(t));
        }
        if opts.reply_context {
            let parent = row
                .thread_originator_guid
                .as_deref()
                .or(row.reply_to_guid.as_deref())
                .and_then(|g| self.row_by_guid(g));
            if let Some(p) = parent {
                m.insert("reply_to_text".into(), json!(p.text));
                m.insert("reply_to_sender".into(), json!(p.sender()));
            }
        }
        m.insert("sender".into(), json!(row.sender()));
        m.insert("is_from_me".into(), json!(row.from_me));
        m.insert("text".into(), json!(row.text));
        m.insert("created_at".into(), json!(iso(row.date_ms)));
        let attachments: Vec<Value> = if opts.attachments {
            row.attachments
                .iter()
                .map(|a| self.render_attachment(a))
                .collect()
        } else {
            Vec::new()
        };
        m.insert("attachments".into(), Value::Array(attachments));
        let reactions = if opts.reactions {
            self.net_reactions(row)
        } else {
            Vec::new()
        };
        m.insert("reactions".into(), Value::Array(reactions));
        if let Some(d) = &row.destination_caller_id {
            m.insert("destination_caller_id".into(), json!(d));
        }
        if let (true, Some(r)) = (opts.reaction_event, &row.reaction) {
            let kind = if r.kind == "emphasize" {
                "emphasis"
            } else {
                r.kind.as_str()
            };
            m.insert("is_reaction".into(), json!(true));
            m.insert("reaction_type".into(), json!(kind));
            let emoji = r
                .emoji
                .clone()
                .unwrap_or_else(|| emoji_for(&r.kind).to_string());
            if !emoji.is_empty() {
                m.insert("reaction_emoji".into(), json!(emoji));
            }
            m.insert("is_reaction_add".into(), json!(!r.remove));
            m.insert("reacted_to_guid".into(), json!(r.target_guid));
        }
        match row.chat_id.and_then(|id| self.chats.get(&id)) {
            Some(chat) => {
                m.insert("chat_identifier".into(), json!(chat.identifier));
                m.insert("chat_guid".into(), json!(chat.guid));
                m.insert("chat_name".into(), json!(chat.display_name()));
                m.insert("participants".into(), json!(sorted(&chat.participants)));
                m.insert("is_group".into(), json!(chat.is_group()));
            }
            None => {
                m.insert("chat_identifier".into(), json!(""));
                m.insert("chat_guid".into(), json!(""));
                m.insert("chat_name".into(), json!(""));
                m.insert("participants".into(), json!([]));
                m.insert("is_group".into(), json!(false));
            }
        }
        if opts.cursor {
            m.insert("cursor".into(), json!(row.id));
        }
        if opts.unknown_members {
            m.insert("x_sim".into(), json!(1));
        }
        Value::Object(m)
    }

    pub fn render_chat(&self, chat: &Chat, last_ms: i64, unknown_members: bool) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(chat.id));
        m.insert("identifier".into(), json!(chat.identifier));
        m.insert("guid".into(), json!(chat.guid));
        m.insert("name".into(), json!(chat.display_name()));
        m.insert("service".into(), json!(chat.service));
        m.insert("last_message_at".into(), json!(iso(last_ms)));
        m.insert("participants".into(), json!(sorted(&chat.participants)));
        m.insert("is_group".into(), json!(chat.is_group()));
        if !chat.is_group() {
            if let Some((name, _)) = self
                .contacts
                .iter()
                .find(|(_, handles)| handles.iter().any(|h| h == &chat.identifier))
            {
                m.insert("contact_name".into(), json!(name));
            }
        }
        if unknown_members {
            m.insert("x_sim".into(), json!(1));
        }
        Value::Object(m)
    }

    /// Chats with at least one row, newest activity first.
    pub fn chats_by_activity(&self) -> Vec<(&Chat, i64)> {
        let mut last: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for row in self.rows.values() {
            if let Some(chat) = row.chat_id {
                let e = last.entry(chat).or_insert((i64::MIN, 0));
                if (row.date_ms, row.id) > *e {
                    *e = (row.date_ms, row.id);
                }
            }
        }
        let mut out: Vec<(&Chat, i64, i64)> = last
            .iter()
            .filter_map(|(id, (ms, row))| self.chats.get(id).map(|c| (c, *ms, *row)))
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse((c.1, c.2)));
        out.into_iter().map(|(c, ms, _)| (c, ms)).collect()
    }

    /// Normalises a phone handle the way Messages does for `send`.
    pub fn normalize_phone(&self, handle: &str, region: &str) -> String {
        if handle.contains('@') {
            return handle.to_string();
        }
        let compact: String = handle
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        let digits = compact.trim_start_matches('+');
        if compact.starts_with('+') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return compact;
        }
        match digits.len() {
            10 if region.eq_ignore_ascii_case("US") => format!("+1{digits}"),
            11 if digits.starts_with('1') => format!("+{digits}"),
            _ => compact,
        }
    }

    /// The chat a direct `to` send lands in, created when missing.
    pub fn chat_for_handle(&mut self, handle: &str, sms: bool) -> i64 {
        let mut candidates: Vec<&Chat> = self
            .chats
            .values()
            .filter(|c| c.identifier == handle)
            .collect();
        // Prefer chats whose service matches the send's.
        candidates.sort_by_key(|c| ((c.service == "SMS") != sms, c.id));
        if let Some(c) = candidates.first() {
            return c.id;
        }
        let id = self.chats.keys().next_back().copied().unwrap_or(0) + 1;
        let prefix = if sms { "SMS" } else { "iMessage" };
        self.chats.insert(
            id,
            Chat {
                id,
                identifier: handle.to_string(),
                guid: format!("{prefix};-;{handle}"),
                name: None,
                service: if sms { "SMS" } else { "iMessage" }.into(),
                participants: vec![handle.to_string()],
            },
        );
        id
    }
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

pub fn chat_to_json(c: &Chat) -> Value {
    let mut v = json!({"id": c.id, "identifier": c.identifier, "guid": c.guid, "service": c.service,
        "participants": c.participants});
    if let Some(n) = &c.name {
        v["name"] = json!(n);
    }
    v
}

/// A row in the scenario's row format (what `row_from_json` reads).
pub fn row_to_json(r: &Row) -> Value {
    let mut v = json!({"id": r.id, "guid": r.guid, "chat_id": r.chat_id, "handle": r.handle,
        "from_me": r.from_me, "text": r.text, "date": iso(r.date_ms)});
    if let Some(d) = &r.destination_caller_id {
        v["destination_caller_id"] = json!(d);
    }
    if let Some(t) = &r.thread_originator_guid {
        v["thread_originator_guid"] = json!(t);
    }
    if let Some(t) = &r.reply_to_guid {
        v["reply_to_guid"] = json!(t);
    }
    if let Some(x) = &r.reaction {
        v["reaction"] = json!({"type": x.kind, "target_guid": x.target_guid, "remove": x.remove, "emoji": x.emoji});
    }
    if let Some(p) = r.preview_of {
        v["preview_of"] = json!(p);
    }
    if !r.attachments.is_empty() {
        v["attachments"] = Value::Array(
            r.attachments
                .iter()
                .map(|a| json!({"filename": a.filename, "transfer_name": a.transfer_name, "uti": a.uti,
                    "mime_type": a.mime_type, "total_bytes": a.total_bytes, "is_sticker": a.is_sticker,
                    "missing": a.missing}))
                .collect(),
        );
    }
    v
}

pub fn chat_from_json(v: &Value) -> Option<Chat> {
    Some(Chat {
        id: v.get("id")?.as_i64()?,
        identifier: v
            .get("identifier")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        guid: v.get("guid").and_then(Value::as_str).unwrap_or("").into(),
        name: v.get("name").and_then(Value::as_str).map(str::to_string),
        service: v
            .get("service")
            .and_then(Value::as_str)
            .unwrap_or("iMessage")
            .into(),
        participants: v
            .get("participants")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}
