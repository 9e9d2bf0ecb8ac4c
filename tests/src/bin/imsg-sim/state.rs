//! The simulator's state: configuration from the scenario, the database, the clock and the
//! live subscriptions with their emission cursors (imsg-protocol.md §B2, §B5).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::db::{self, Db, Render, Row};
use crate::journal::Journal;
use crate::scenario::{get_obj, get_str};

pub type Version = (u32, u32, u32);

pub fn parse_version(text: &str) -> Option<Version> {
    let t = text.trim().trim_start_matches('v');
    let mut parts = t
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
    ))
}

#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: &str, data: Option<Value>) -> Self {
        RpcError {
            code,
            message: message.to_string(),
            data,
        }
    }
    pub fn params(text: impl Into<String>) -> Self {
        Self::new(-32602, "Invalid params", Some(Value::String(text.into())))
    }
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(-32603, "Internal error", Some(Value::String(text.into())))
    }
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

pub struct Clock {
    start_ms: i64,
    running: bool,
    origin: Instant,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        if self.running {
            self.start_ms + self.origin.elapsed().as_millis() as i64
        } else {
            self.start_ms
        }
    }
}

pub struct Sub {
    pub id: i64,
    pub chat_id: Option<i64>,
    /// `None` until the first poll fixes the tail.
    pub cursor: Option<i64>,
    pub participants: Vec<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub attachments: bool,
    pub include_reactions: bool,
    pub debounce: Duration,
    pub next_poll: Option<Instant>,
    pub last_poll: Instant,
    /// `Some(k)`: the next poll writes at most k rows, then `watch.overflow`.
    pub overflow_after: Option<usize>,
    /// Strict: a poll with more rows pending than this overflows (§4.3).
    pub buffer_limit: usize,
    /// A `db_error` ended it; it stays registered until unsubscribed.
    pub dead: bool,
}

pub struct Sim {
    pub strict: bool,
    pub version: Version,
    pub version_text: String,
    pub linux: bool,
    pub db_path: String,
    pub db_available: bool,
    pub bridge: Value,
    /// The sending Mac's macOS major version (formatting renders from 15).
    pub macos_major: i64,
    /// `bridge_features`: `tracked`, `emoji_tapback` (default true from 0.15.0).
    pub bridge_features: Value,
    pub send_cfg: Value,
    /// The default `buffer_limit` of strict subscriptions (scenario `watch.buffer_limit`).
    pub watch_buffer_limit: i64,
    pub fallback_poll: Duration,
    pub batch_limit: usize,
    pub methods: Option<Vec<String>>,
    pub files: Vec<String>,
    /// The `faults` object as written (inbox `set` ops merge into it) and its typed form.
    pub faults_raw: serde_json::Map<String, Value>,
    pub faults: crate::faults::Faults,
    pub db: Db,
    pub clock: Clock,
    pub subs: BTreeMap<i64, Sub>,
    pub next_sub: i64,
    /// The shared journal, when several processes share one database.
    pub journal: Option<Journal>,
    /// Lines this process created during the current mutation.
    pub journal_out: Vec<Value>,
}

/// Every method the simulator implements, in the order `supported_methods` lists them.
pub const ALL_METHODS: &[&str] = &[
    "initialize",
    "status",
    "chats.list",
    "messages.history",
    "messages.after",
    "watch.subscribe",
    "watch.unsubscribe",
    "message.send_status",
    "send",
    "send.tracked",
    "typing",
    "read",
    "tapback",
    "message.edit",
    "message.unsend",
];

pub const PERMISSION_LINES: &[&str] = &[
    "unable to open database file (code: 14)",
    "",
    "\u{26a0}\u{fe0f}  Permission Error: Cannot access Messages database",
    "",
];

impl Sim {
    pub fn from_scenario(s: &Value) -> Result<Sim, String> {
        let profile = std::env::var("IMSG_SIM_PROFILE")
            .ok()
            .or_else(|| get_str(s, "profile").map(str::to_string))
            .unwrap_or_else(|| "lenient".into());
        let strict = match profile.as_str() {
            "strict" => true,
            "lenient" => false,
            other => return Err(format!("unknown profile \"{other}\" (lenient or strict)")),
        };
        let version_text = get_str(s, "version")
            .map(str::to_string)
            .unwrap_or_else(|| if strict { "0.14.0" } else { "0.9.0" }.to_string());
        let version = parse_version(&version_text)
            .ok_or_else(|| format!("version \"{version_text}\" is not MAJOR.MINOR.PATCH"))?;
        let clock_cfg = s.get("clock").cloned().unwrap_or(Value::Null);
        let start = get_str(&clock_cfg, "start").unwrap_or("2026-05-16T09:50:00.000Z");
        let now_real = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let start_ms = if start == "now" {
            now_real
        } else {
            db::parse_iso(start)
                .ok_or_else(|| format!("clock.start \"{start}\" is not ISO-8601"))?
        };
        let running = get_str(&clock_cfg, "mode") == Some("running");
        let watch = s.get("watch").cloned().unwrap_or(Value::Null);
        let self_handle = get_str(s, "self_handle")
            .unwrap_or("+15559990000")
            .to_string();
        let mut db = Db {
            chats: BTreeMap::new(),
            rows: BTreeMap::new(),
            send_states: BTreeMap::new(),
            reserved: Default::default(),
            self_handle,
            home: get_str(s, "home").unwrap_or("/Users/me").to_string(),
            contacts: s
                .get("contacts")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            (
                                get_str(c, "name").unwrap_or("").to_string(),
                                c.get("handles")
                                    .and_then(Value::as_array)
                                    .map(|h| {
                                        h.iter()
                                            .filter_map(|x| x.as_str().map(str::to_string))
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        for chat in s
            .get("chats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let chat = db::chat_from_json(chat).ok_or("every chat needs an integer id")?;
            db.chats.insert(chat.id, chat);
        }
        let clock = Clock {
            start_ms,
            running,
            origin: Instant::now(),
        };
        for row in s
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let row = db.row_from_json(row, clock.now_ms());
            db.rows.insert(row.id, row);
        }
        let ms = |k: &str, d: u64| watch.get(k).and_then(Value::as_u64).unwrap_or(d);
        Ok(Sim {
            strict,
            version,
            version_text,
            linux: get_str(s, "platform") == Some("linux"),
            db_path: get_str(s, "db_path")
                .unwrap_or("/Users/me/Library/Messages/chat.db")
                .to_string(),
            db_available: true,
            bridge: s.get("bridge").cloned().unwrap_or(json!("absent")),
            bridge_features: s.get("bridge_features").cloned().unwrap_or(json!({})),
            macos_major: s.get("macos_major").and_then(Value::as_i64).unwrap_or(26),
            send_cfg: s.get("send").cloned().unwrap_or(json!({"mode": "ok"})),
            fallback_poll: Duration::from_millis(ms("fallback_poll_ms", 5000)),
            watch_buffer_limit: ms("buffer_limit", 256).clamp(1, 4096) as i64,
            batch_limit: ms("batch_limit", 100).max(1) as usize,
            methods: s.get("methods").and_then(Value::as_array).map(|m| {
                m.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            }),
            files: s
                .get("files")
                .and_then(Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            faults_raw: get_obj(s, "faults").cloned().unwrap_or_default(),
            faults: crate::faults::Faults::from_map(
                &get_obj(s, "faults").cloned().unwrap_or_default(),
            )?,
            db,
            clock,
            subs: BTreeMap::new(),
            next_sub: 1,
            journal: None,
            journal_out: Vec::new(),
        })
    }

    /// Scenario `send.mode` (`ok` unless set).
    pub fn send_mode(&self) -> String {
        self.send_cfg
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_string()
    }

    pub fn at_least(&self, v: Version) -> bool {
        self.version >= v
    }

    pub fn permission_text(&self) -> String {
        let mut lines: Vec<String> = PERMISSION_LINES.iter().map(|l| l.to_string()).collect();
        lines.push(format!(
            "The Messages database at {} requires Full Disk Access permission.",
            self.db_path
        ));
        lines.push(String::new());
        lines.push("To fix this (imsg-sim simulates the real steps):".into());
        lines.push("  1. Open System Settings > Privacy & Security > Full Disk Access".into());
        lines.push("  2. Add the terminal or app that runs imsg, then restart it".into());
        lines.push("Troubleshooting: see the imsg README, section Permissions.".into());
        lines.join("\n")
    }

    /// The fault style for `startup: "fda_denied"`, defaulted by profile and version.
    pub fn fda_style(&self) -> Option<String> {
        if self.faults.startup.as_deref() != Some("fda_denied") {
            return None;
        }
        if let Some(style) = &self.faults.fda_style {
            return Some(style.clone());
        }
        Some(
            if self.strict {
                "db_unavailable"
            } else if self.version < (0, 8, 2) {
                "banner"
            } else {
                "internal_error"
            }
            .to_string(),
        )
    }

    /// The dispatch table for this profile, version and `methods` restriction.
    pub fn has_method(&self, method: &str) -> bool {
        let base: &[&str] = &[
            "chats.list",
            "messages.history",
            "watch.subscribe",
            "watch.unsubscribe",
            "send",
        ];
        let known = base.contains(&method)
            || (matches!(method, "typing" | "read") && self.at_least((0, 7, 3)))
            || (crate::bridge_actions::METHODS.contains(&method) && self.at_least((0, 9, 0)))
            || (method == "message.send_status" && (self.strict || self.at_least((0, 10, 0))))
            || (method == "send.tracked" && self.strict && self.at_least((0, 15, 0)))
            || (self.strict && matches!(method, "initialize" | "status" | "messages.after"));
        known
            && self
                .methods
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|m| m == method))
    }

    pub fn render_opts(&self, attachments: bool, reactions: bool) -> Render {
        Render {
            attachments,
            reactions,
            reaction_event: reactions && self.at_least((0, 5, 0)),
            cursor: false,
            reply_context: self.at_least((0, 9, 0)),
            unknown_members: self.faults.unknown_members == Some(true),
        }
    }

    /// Takes the journal lock and replays what other processes wrote, so ids allocated next
    /// are unique across processes. Pair with `end_mutation`.
    pub fn begin_mutation(&mut self) {
        if let Some(j) = self.journal.as_mut() {
            j.lock();
        }
        self.sync_journal();
    }

    /// Appends what this mutation created and releases the lock.
    pub fn end_mutation(&mut self) {
        let lines = std::mem::take(&mut self.journal_out);
        if let Some(j) = self.journal.as_mut() {
            j.append(&lines);
            j.unlock();
        }
    }

    /// Whether a once-only op was already applied by some process (journal mode).
    pub fn marker_seen(&self, key: &str) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.markers.contains(key))
    }

    pub fn add_marker(&mut self, key: &str) {
        if self.journal.is_some() {
            self.journal_out.push(json!({"marker": key}));
        }
    }

    /// Replays rows, chats and joins other processes appended.
    pub fn sync_journal(&mut self) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let lines = j.read_new();
        for line in lines {
            if let Some(row) = line.get("row") {
                let row = self.db.row_from_json(row, self.clock.now_ms());
                if !self.db.rows.contains_key(&row.id) {
                    self.schedule_and_store(row);
                }
            } else if let Some(chat) = line.get("chat").and_then(db::chat_from_json) {
                self.db.chats.entry(chat.id).or_insert(chat);
            } else if let Some(st) = line.get("send_state") {
                let id = st.get("id").and_then(Value::as_i64).unwrap_or(0);
                let state = st["state"].as_str().unwrap_or("delivered").to_string();
                let at = st.get("at").and_then(Value::as_i64).unwrap_or(0);
                self.db.send_states.insert(id, (state, at));
            } else if let Some(g) = line.get("reserve").and_then(Value::as_str) {
                self.db.reserved.insert(g.to_lowercase());
            } else if let Some(edit) = line.get("edit") {
                let id = edit.get("id").and_then(Value::as_i64).unwrap_or(0);
                if let Some(row) = self.db.rows.get_mut(&id) {
                    row.text = edit["text"].as_str().unwrap_or("").to_string();
                }
            } else if let Some(join) = line.get("join") {
                let id = join.get("message_id").and_then(Value::as_i64).unwrap_or(0);
                if let Some(row) = self.db.rows.get_mut(&id) {
                    row.chat_id = join.get("chat_id").and_then(Value::as_i64);
                }
            }
        }
    }

    /// Rewrites a row's text (an edit or unsend), through the journal.
    pub fn rewrite_row(&mut self, id: i64, text: &str) {
        if let Some(row) = self.db.rows.get_mut(&id) {
            row.text = text.to_string();
        }
        if self.journal.is_some() {
            self.journal_out
                .push(json!({"edit": {"id": id, "text": text}}));
        }
    }

    /// Records a chat this process created (journal mode).
    pub fn journal_chat(&mut self, chat_id: i64) {
        if self.journal.is_some() {
            if let Some(c) = self.db.chats.get(&chat_id) {
                self.journal_out.push(json!({"chat": db::chat_to_json(c)}));
            }
        }
    }

    pub fn journal_join(&mut self, message_id: i64, chat_id: Option<i64>) {
        if self.journal.is_some() {
            self.journal_out
                .push(json!({"join": {"message_id": message_id, "chat_id": chat_id}}));
        }
    }

    /// Inserts a row and schedules the debounced poll of every live subscription.
    pub fn insert_row(&mut self, row: Row) {
        if self.journal.is_some() {
            self.journal_out.push(json!({"row": db::row_to_json(&row)}));
        }
        self.schedule_and_store(row);
    }

    fn schedule_and_store(&mut self, row: Row) {
        self.db.rows.insert(row.id, row);
        let now = Instant::now();
        for sub in self.subs.values_mut() {
            if sub.dead {
                continue;
            }
            if sub.next_poll.is_none() {
                sub.next_poll = Some(now + sub.debounce);
            }
        }
    }

    /// One poll of one subscription: the notifications (and possibly an overflow) to write,
    /// and whether rows remain beyond the batch limit.
    pub fn poll(&mut self, sub_id: i64) -> (Vec<Value>, bool) {
        let strict = self.strict;
        let batch = self.batch_limit;
        let max_id = self.db.max_row_id();
        let Some(sub) = self.subs.get_mut(&sub_id) else {
            return (Vec::new(), false);
        };
        sub.next_poll = None;
        sub.last_poll = Instant::now();
        if sub.dead {
            return (Vec::new(), false);
        }
        let start = *sub.cursor.get_or_insert(max_id);
        let chat_filter = sub.chat_id;
        let mut taken: Vec<i64> = self
            .db
            .rows
            .range(start.saturating_add(1)..)
            .filter(|(_, r)| match chat_filter {
                Some(c) => r.chat_id == Some(c),
                None => true,
            })
            .map(|(id, _)| *id)
            .collect();
        let pending = taken.len();
        let more = pending > batch;
        taken.truncate(batch);
        let sub = self.subs.get(&sub_id).expect("checked above");
        let mut opts = self.render_opts(sub.attachments, sub.include_reactions);
        opts.cursor = strict;
        // More pending than the subscriber's buffer takes ends it (strict, §4.3).
        let limit = sub
            .overflow_after
            .or_else(|| (strict && pending > sub.buffer_limit).then_some(sub.buffer_limit));
        let mut lines = Vec::new();
        let mut last_written = start;
        let mut new_cursor = start;
        for id in &taken {
            new_cursor = *id;
            let row = &self.db.rows[id];
            if (row.reaction.is_some() && !sub.include_reactions) || row.preview_of.is_some() {
                continue;
            }
            if row.chat_id.is_none() && strict {
                continue;
            }
            if !sub.participants.is_empty()
                && !sub
                    .participants
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&row.sender()))
            {
                continue;
            }
            if sub.start_ms.is_some_and(|s| row.date_ms < s)
                || sub.end_ms.is_some_and(|e| row.date_ms >= e)
            {
                continue;
            }
            if limit.is_some_and(|k| lines.len() >= k) {
                break;
            }
            let message = self.db.render_message(row, opts);
            lines.push(json!({"jsonrpc": "2.0", "method": "message",
                "params": {"subscription": sub_id, "message": message}}));
            last_written = *id;
        }
        if limit.is_some() {
            lines.push(overflow_line(sub_id, last_written));
            self.subs.remove(&sub_id);
            return (lines, false);
        }
        if let Some(sub) = self.subs.get_mut(&sub_id) {
            sub.cursor = Some(new_cursor);
            if more {
                sub.next_poll = Some(Instant::now());
            }
        }
        (lines, more)
    }
}

pub fn overflow_line(sub_id: i64, resume: i64) -> Value {
    json!({"jsonrpc": "2.0", "method": "watch.overflow", "params": {
        "subscription": sub_id, "resume_after_rowid": resume,
        "reason": "buffer_limit_exceeded", "terminal": true}})
}
