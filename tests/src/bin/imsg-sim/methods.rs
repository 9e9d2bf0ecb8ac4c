//! The method handlers (imsg-protocol.md §B4, §B6). Each checks in the documented order and
//! returns the result or the first error; rows they write go through `Sim::insert_row`, so
//! every matching subscription sees them.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::db::{self, Attachment, Chat, Row};
use crate::params::Params;
use crate::state::{RpcError, Sim, Sub};

type Res = Result<Value, RpcError>;

pub(crate) fn perr(e: String) -> RpcError {
    RpcError::params(e)
}

impl Sim {
    fn date_error(&self, text: &str) -> RpcError {
        let data = format!("Invalid ISO8601 date: {text}");
        if self.strict {
            RpcError::params(data)
        } else {
            RpcError::internal(data)
        }
    }

    fn date(&self, p: &Params, key: &str) -> Result<Option<i64>, RpcError> {
        match p.string(key).map_err(perr)? {
            None => Ok(None),
            Some(s) => db::parse_iso(&s)
                .map(Some)
                .ok_or_else(|| self.date_error(&s)),
        }
    }

    pub fn db_guard(&self) -> Result<(), RpcError> {
        if self.db_available {
            return Ok(());
        }
        Err(RpcError::new(
            -32002,
            "Database unavailable",
            Some(json!({"path": self.db_path,
                "detail": "Full Disk Access is required to read the Messages database.",
                "retryable": true})),
        ))
    }

    pub fn chats_list(&self, p: &Params) -> Res {
        p.allow("chats.list", &["limit", "unread_only"])
            .map_err(perr)?;
        let limit = p.int("limit").map_err(perr)?.unwrap_or(20).max(1) as usize;
        if self.strict && p.bool("unread_only").map_err(perr)? == Some(true) {
            return Ok(json!({"chats": []}));
        }
        let unknown = self.render_opts(false, false).unknown_members;
        let chats: Vec<Value> = self
            .db
            .chats_by_activity()
            .into_iter()
            .take(limit)
            .map(|(c, ms)| self.db.render_chat(c, ms, unknown))
            .collect();
        Ok(json!({"chats": chats}))
    }

    fn positive_chat_id(&self, p: &Params) -> Result<Option<i64>, RpcError> {
        let id = p.int("chat_id").map_err(perr)?;
        if self.strict && id.is_some_and(|n| n <= 0) {
            return Err(RpcError::params("chat_id must be a positive integer"));
        }
        Ok(id)
    }

    pub fn messages_history(&self, p: &Params) -> Res {
        p.allow(
            "messages.history",
            &[
                "chat_id",
                "limit",
                "participants",
                "start",
                "end",
                "attachments",
                "convert_attachments",
            ],
        )
        .map_err(perr)?;
        let Some(chat_id) = self.positive_chat_id(p)? else {
            return Err(RpcError::params("chat_id is required"));
        };
        let limit = p.int("limit").map_err(perr)?.unwrap_or(50).max(1) as usize;
        let participants = p.strings("participants").map_err(perr)?;
        let start = self.date(p, "start")?;
        let end = self.date(p, "end")?;
        let attachments = p.bool("attachments").map_err(perr)?.unwrap_or(false);
        p.bool("convert_attachments").map_err(perr)?;
        let opts = self.render_opts(attachments, true);
        let mut rows: Vec<&Row> = self
            .db
            .rows
            .values()
            .filter(|r| r.chat_id == Some(chat_id) && r.reaction.is_none())
            .filter(|r| {
                participants.is_empty()
                    || participants
                        .iter()
                        .any(|x| x.eq_ignore_ascii_case(&r.sender()))
            })
            .filter(|r| start.is_none_or(|s| r.date_ms >= s) && end.is_none_or(|e| r.date_ms < e))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse((r.date_ms, r.id)));
        let messages: Vec<Value> = rows
            .into_iter()
            .take(limit)
            .map(|r| self.db.render_message(r, opts))
            .collect();
        Ok(json!({"messages": messages}))
    }

    pub fn messages_after(&self, p: &Params) -> Res {
        p.allow(
            "messages.after",
            &[
                "since_rowid",
                "chat_id",
                "limit",
                "attachments",
                "convert_attachments",
                "include_reactions",
            ],
        )
        .map_err(perr)?;
        // actions.md §10 E1–E2: the texts of RPCServer+MessagesAfterHandlers.swift.
        let since = p
            .int("since_rowid")
            .ok()
            .flatten()
            .filter(|s| *s >= 0)
            .ok_or_else(|| RpcError::params("since_rowid must be a non-negative integer"))?;
        if p.int("chat_id").ok().flatten().is_some_and(|c| c <= 0) {
            return Err(RpcError::params("chat_id must be a positive integer"));
        }
        let chat = self.positive_chat_id(p)?;
        let limit = match p.int("limit") {
            Ok(None) => 100,
            Ok(Some(n)) if (1..=500).contains(&n) => n,
            _ => {
                return Err(RpcError::params(
                    "limit must be an integer between 1 and 500",
                ))
            }
        };
        let attachments = p.bool("attachments").map_err(perr)?.unwrap_or(false);
        let reactions = p.bool("include_reactions").map_err(perr)?.unwrap_or(false);
        let mut opts = self.render_opts(attachments, reactions);
        // §10 E7: `reactions` arrays are always filled; the key only adds tapback rows.
        opts.reactions = true;
        let matching: Vec<&Row> = self
            .db
            .rows
            .range(since + 1..)
            .map(|(_, r)| r)
            .filter(|r| r.chat_id.is_some() && chat.is_none_or(|c| r.chat_id == Some(c)))
            .filter(|r| reactions || r.reaction.is_none())
            .filter(|r| r.preview_of.is_none())
            .collect();
        let page: Vec<&Row> = matching.iter().take(limit as usize).copied().collect();
        // `next_rowid` is the scan position: past suppressed rows when the scan reached the
        // end (actions.md §4.1).
        let next = if matching.len() > page.len() {
            page.last().map(|r| r.id).unwrap_or(since)
        } else {
            self.db.max_row_id().max(since)
        };
        Ok(json!({
            "messages": page.iter().map(|r| self.db.render_message(r, opts)).collect::<Vec<_>>(),
            "next_rowid": next,
            "has_more": matching.len() > page.len(),
        }))
    }

    /// Registers a subscription; the caller runs its immediate poll and orders the lines.
    pub fn watch_subscribe(&mut self, p: &Params) -> Result<(Value, i64), RpcError> {
        let mut allowed = vec![
            "chat_id",
            "since_rowid",
            "participants",
            "start",
            "end",
            "attachments",
            "convert_attachments",
            "include_reactions",
            "debounce_ms",
            "debounceMs",
        ];
        if self.strict {
            allowed.extend(["buffer_limit", "bufferLimit"]);
        }
        p.allow("watch.subscribe", &allowed).map_err(perr)?;
        let chat_id = self.positive_chat_id(p)?;
        let since = p.int("since_rowid").map_err(perr)?;
        let participants = p.strings("participants").map_err(perr)?;
        let attachments = p.bool("attachments").map_err(perr)?.unwrap_or(false);
        p.bool("convert_attachments").map_err(perr)?;
        let include_reactions =
            p.bool("include_reactions").map_err(perr)?.unwrap_or(false) && self.at_least((0, 5, 0));
        let key = p.pick("debounce_ms", "debounceMs").map_err(perr)?;
        let debounce_bad = || RpcError::params("debounce_ms must be a non-negative integer");
        let debounce = match p.map.get(key) {
            None => 500,
            Some(Value::Null) if !self.strict => return Err(debounce_bad()),
            Some(_) => match p.int(key) {
                Ok(Some(n)) if n >= 0 => n as u64,
                Ok(_) if self.strict => return Err(debounce_bad()),
                Ok(_) => return Err(debounce_bad()),
                Err(e) if e.ends_with("must be an integer") => return Err(debounce_bad()),
                Err(e) => return Err(perr(e)),
            },
        };
        let debounce = if self.at_least((0, 6, 0)) {
            debounce
        } else {
            250
        };
        let mut buffer_limit = self.watch_buffer_limit;
        if self.strict {
            let key = p.pick("buffer_limit", "bufferLimit").map_err(perr)?;
            if let Some(n) = p.int(key).map_err(perr)? {
                if !(1..=4096).contains(&n) {
                    return Err(RpcError::params(
                        "buffer_limit must be an integer between 1 and 4096",
                    ));
                }
                buffer_limit = n;
            }
        }
        let start_ms = self.date(p, "start")?;
        let end_ms = self.date(p, "end")?;
        if self.strict && self.subs.len() >= 64 {
            return Err(RpcError::new(
                -32000,
                "Server busy",
                Some(json!("subscription limit exceeded")),
            ));
        }
        let id = self.next_sub;
        self.next_sub += 1;
        self.subs.insert(
            id,
            Sub {
                id,
                chat_id,
                cursor: since.filter(|s| *s != 0),
                participants,
                start_ms,
                end_ms,
                attachments,
                include_reactions,
                debounce: Duration::from_millis(debounce),
                next_poll: None,
                last_poll: Instant::now(),
                overflow_after: None,
                buffer_limit: buffer_limit as usize,
                dead: false,
            },
        );
        let result = if self.strict {
            json!({"subscription": id, "buffer_limit": buffer_limit})
        } else {
            json!({"subscription": id})
        };
        Ok((result, id))
    }

    pub fn watch_unsubscribe(&mut self, p: &Params) -> Res {
        p.allow("watch.unsubscribe", &["subscription"])
            .map_err(perr)?;
        let id = match p.int("subscription") {
            Ok(Some(n)) => n,
            Ok(None) => return Err(RpcError::params("subscription is required")),
            Err(_) if p.map.get("subscription").is_some_and(|v| !v.is_null()) => {
                return Err(RpcError::params("subscription must be an integer"))
            }
            Err(e) => return Err(perr(e)),
        };
        self.subs.remove(&id);
        Ok(json!({"ok": true}))
    }

    /// Resolves the chat selectors; `Ok(None)` when none is given.
    pub(crate) fn resolve_chat(&self, p: &Params) -> Result<Option<Chat>, RpcError> {
        let id = self.positive_chat_id(p)?;
        let guid = p
            .string("chat_guid")
            .map_err(perr)?
            .filter(|s| !s.is_empty());
        let ident = p
            .string("chat_identifier")
            .map_err(perr)?
            .filter(|s| !s.is_empty());
        let given = [id.is_some(), guid.is_some(), ident.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if self.strict && given > 1 {
            return Err(RpcError::params(
                "exactly one of chat_id, chat_identifier, or chat_guid is required",
            ));
        }
        if let Some(id) = id {
            return match self.db.chats.get(&id) {
                Some(c) if !c.guid.is_empty() || !c.identifier.is_empty() => Ok(Some(c.clone())),
                Some(_) => Err(RpcError::params("missing chat identifier or guid")),
                None => Err(RpcError::params(format!("unknown chat_id {id}"))),
            };
        }
        if let Some(g) = guid {
            return self
                .db
                .chats
                .values()
                .find(|c| c.guid == g)
                .cloned()
                .map(Some)
                .ok_or_else(|| RpcError::params(format!("unknown chat_guid {g}")));
        }
        if let Some(i) = ident {
            return self
                .db
                .chats
                .values()
                .find(|c| c.identifier == i)
                .cloned()
                .map(Some)
                .ok_or_else(|| RpcError::params(format!("unknown chat_identifier {i}")));
        }
        Ok(None)
    }

    pub(crate) fn has_selector(p: &Params) -> bool {
        ["chat_id", "chat_guid", "chat_identifier"]
            .iter()
            .any(|k| p.map.get(*k).is_some_and(|v| !v.is_null()))
    }

    fn file_exists(&self, path: &str) -> (bool, i64) {
        if self.files.iter().any(|f| f == path) {
            return (true, 0);
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => (true, m.len() as i64),
            _ => (false, 0),
        }
    }

    fn expand_home(&self, path: &str) -> String {
        match path.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", self.db.home.trim_end_matches('/')),
            None => path.to_string(),
        }
    }

    /// `send`: the result, and the ids of rows written (for the record file).
    /// `send` (imsg-protocol.md §B4): read and check the params, apply the scripted send mode,
    /// write the sent rows, answer as the profile and version would. The rows written are
    /// returned with the outcome, even on an error (an unknown outcome may have written them).
    pub fn send(&mut self, p: &Params) -> Result<(Value, Vec<i64>), (RpcError, Vec<i64>)> {
        let fail = |e: RpcError| (e, Vec::new());
        let req = self.read_send(p).map_err(fail)?;
        // Real imsg sends to a handle or an explicit chat GUID without the database; a
        // chat_id has to be looked up there (actions.md §10 E6).
        if p.map.contains_key("chat_id") {
            self.db_guard().map_err(fail)?;
        }
        let chat = self.resolve_chat(p).map_err(fail)?;
        self.check_send(&req, chat.as_ref()).map_err(fail)?;
        let file_size = self.attachment_size(&req.file).map_err(fail)?;
        let mode = self.send_mode();
        self.scripted_failure(&mode).map_err(fail)?;
        let chat_id = match &chat {
            Some(c) => c.id,
            None => {
                let handle = self
                    .db
                    .normalize_phone(req.to.as_deref().unwrap_or(""), &req.region);
                let before = self.db.chats.len();
                let id = self
                    .db
                    .chat_for_handle(&handle, req.service.as_deref() == Some("sms"));
                if self.db.chats.len() > before {
                    self.journal_chat(id);
                }
                id
            }
        };
        if mode == "ghost_row" && chat.is_some() {
            let id = self.ghost_row(chat_id);
            return Err((RpcError::internal(format!("AppleScript failed: Messages accepted the chat send but wrote an unjoined empty outgoing row ({id}); delivery to the target chat was not confirmed")), vec![id]));
        }
        let write_rows = !(matches!(
            mode.as_str(),
            "outcome_unknown" | "still_in_flight" | "lost_reply"
        ) && self.send_cfg.get("write_row").and_then(Value::as_bool)
            == Some(false));
        let (written, text_row) = if write_rows {
            self.write_sent_rows(chat_id, &req, file_size)
        } else {
            (Vec::new(), None)
        };
        if self.strict && matches!(mode.as_str(), "outcome_unknown" | "still_in_flight") {
            let disposition = if mode == "outcome_unknown" {
                "may_have_completed"
            } else {
                "still_in_flight"
            };
            return Err((
                RpcError::new(
                    -32001,
                    "Delivery outcome unknown",
                    Some(json!({
                    "retry_safe": false, "disposition": disposition, "transport": "applescript",
                    "operation": "send", "detail": "simulated unknown outcome"})),
                ),
                written,
            ));
        }
        // actions.md §10 E8: a strict imsg waits up to 8 s for a text send's row and, when it
        // cannot match one, says the outcome is unknown instead of answering a bare `ok`
        // (without a database it cannot look, and the old answer remains).
        if self.strict && mode == "unverified" && !req.text.is_empty() && self.db_available {
            return Err((
                RpcError::new(
                    -32001,
                    "Delivery outcome unknown",
                    Some(json!({
                    "retry_safe": false, "disposition": "may_have_completed",
                    "transport": "applescript", "operation": "send",
                    "detail": "no matching message row appeared within 8 s"})),
                ),
                written,
            ));
        }
        let target_guid = self.db.chats[&chat_id].guid.clone();
        let result = self.send_result(&req, &target_guid, mode != "unverified", text_row);
        Ok((result, written))
    }

    /// The params of a `send`, checked in imsg's order.
    fn read_send(&self, p: &Params) -> Result<SendParams, RpcError> {
        if p.map.contains_key("attempt_id") {
            return Err(RpcError::params(
                "attempt_id is only supported by send.tracked",
            ));
        }
        self.read_send_as(p, "send", &[])
    }

    /// The `send` params, for `send` or `send.tracked` (which allows `extra` keys too).
    pub(crate) fn read_send_as(
        &self,
        p: &Params,
        method: &str,
        extra: &[&str],
    ) -> Result<SendParams, RpcError> {
        let base = [
            "to",
            "chat_id",
            "chat_guid",
            "chat_identifier",
            "text",
            "file",
            "service",
            "region",
            "transport",
            "reply_to",
            "text_formatting",
            "textFormatting",
            "formatting",
        ];
        let allowed: Vec<&str> = base.iter().chain(extra).copied().collect();
        p.allow(method, &allowed).map_err(perr)?;
        let formatting = self.text_formatting(p)?;
        // Threaded replies need the private-API bridge: 0.12 and later fail closed instead of
        // sending an unthreaded AppleScript message (actions.md §3.6, §10 E5).
        let reply_to = p
            .string("reply_to")
            .map_err(perr)?
            .filter(|r| !r.is_empty());
        if reply_to.is_some() && self.at_least((0, 12, 0)) && self.bridge.as_str() != Some("ready")
        {
            return Err(RpcError::params(
                "reply_to requires bridge transport; AppleScript fallback cannot send threaded replies",
            ));
        }
        let service = p.string("service").map_err(perr)?;
        if service
            .as_deref()
            .is_some_and(|s| !matches!(s, "imessage" | "sms" | "auto"))
        {
            return Err(RpcError::params("invalid service"));
        }
        let transport = p
            .string("transport")
            .map_err(perr)?
            .map(|t| t.to_lowercase());
        if transport
            .as_deref()
            .is_some_and(|t| !matches!(t, "auto" | "bridge" | "applescript"))
        {
            return Err(RpcError::params("invalid transport"));
        }
        let to = p.string("to").map_err(perr)?.filter(|s| !s.is_empty());
        let selector = Self::has_selector(p);
        if to.is_some() && selector {
            return Err(RpcError::params("use to or chat_*; not both"));
        }
        if to.is_none() && !selector {
            return Err(RpcError::params("to is required for direct sends"));
        }
        let to = match to {
            Some(name) => Some(self.resolve_contact(&name)?),
            None => None,
        };
        let text = p.string("text").map_err(perr)?.unwrap_or_default();
        let file = p.string("file").map_err(perr)?.unwrap_or_default();
        if text.is_empty() && file.is_empty() {
            return Err(RpcError::params("text or file is required"));
        }
        let region = p
            .string("region")
            .ok()
            .flatten()
            .unwrap_or_else(|| "US".into());
        Ok(SendParams {
            to,
            service,
            transport,
            text,
            file,
            region,
            reply_to,
            formatting,
            guid: None,
        })
    }

    /// `text_formatting` and its aliases (actions.md §5.5): from 0.12.0, an array of
    /// objects; older builds ignore the key.
    fn text_formatting(&self, p: &Params) -> Result<Option<Value>, RpcError> {
        if !self.at_least((0, 12, 0)) {
            return Ok(None);
        }
        let Some(value) = ["text_formatting", "textFormatting", "formatting"]
            .iter()
            .find_map(|k| p.map.get(*k))
        else {
            return Ok(None);
        };
        match value {
            Value::Array(items) if items.iter().all(Value::is_object) => Ok(Some(value.clone())),
            Value::Null if !self.strict => Ok(None),
            _ => Err(RpcError::params(
                "text_formatting must be an array of objects",
            )),
        }
    }

    /// What became of a send's formatting, for the record (actions.md §5.5): rendered only
    /// on the bridge path of a Mac on macOS 15 or later.
    pub fn formatting_effect(&self, p: &Params) -> Option<&'static str> {
        let req = self.read_send(p).ok()?;
        req.formatting.as_ref()?;
        let bridge = self.bridge.as_str() == Some("ready")
            && req.transport.as_deref() != Some("applescript");
        Some(if bridge && self.macos_major >= 15 {
            "applied"
        } else {
            "dropped"
        })
    }

    /// A `to` that looks like a name is looked up in Contacts: one match becomes its first
    /// handle, several are an error listing them.
    fn resolve_contact(&self, name: &str) -> Result<String, RpcError> {
        let looks_like_name = !name.contains('@')
            && !name.starts_with('+')
            && !name
                .chars()
                .all(|c| c.is_ascii_digit() || " -().".contains(c));
        if !looks_like_name || self.db.contacts.is_empty() {
            return Ok(name.to_string());
        }
        let matches: Vec<&(String, Vec<String>)> = self
            .db
            .contacts
            .iter()
            .filter(|(n, _)| n.to_lowercase().contains(&name.to_lowercase()))
            .collect();
        if matches.len() > 1 {
            let mut text = format!("Invalid chat target: Multiple contacts match \"{name}\":");
            for (n, handles) in &matches {
                text.push_str(&format!(
                    "\n  {n}: {}",
                    handles.first().cloned().unwrap_or_default()
                ));
            }
            text.push_str("\nSpecify a phone number or email instead.");
            return Err(RpcError::params(text));
        }
        Ok(matches
            .first()
            .and_then(|(_, handles)| handles.first().cloned())
            .unwrap_or_else(|| name.to_string()))
    }

    /// Transport and platform rules that refuse a send before anything is written.
    pub(crate) fn check_send(&self, req: &SendParams, chat: Option<&Chat>) -> Result<(), RpcError> {
        if req.transport.as_deref() == Some("bridge") {
            if chat.is_none() {
                let handle = self
                    .db
                    .normalize_phone(req.to.as_deref().unwrap_or(""), &req.region);
                if !self.db.chats.values().any(|c| c.identifier == handle) {
                    return Err(RpcError::params(
                        "bridge transport requires an existing chat target",
                    ));
                }
            }
            if !req.text.is_empty() && !req.file.is_empty() {
                return Err(RpcError::params(
                    "bridge transport does not support text and file together",
                ));
            }
        }
        if self.linux {
            return Err(RpcError::internal(
                "AppleScript failed: Sending requires Messages.app automation and is only supported on macOS.",
            ));
        }
        Ok(())
    }

    /// The size of the file to attach (0 without one); a missing file is AppleScript's error.
    pub(crate) fn attachment_size(&self, file: &str) -> Result<i64, RpcError> {
        if file.is_empty() {
            return Ok(0);
        }
        let expanded = self.expand_home(file);
        let (exists, size) = self.file_exists(&expanded);
        if !exists {
            return Err(RpcError::internal(format!(
                "AppleScript failed: Attachment not found at {expanded}"
            )));
        }
        Ok(size)
    }

    /// The scenario's `send.mode` failures that happen before anything is written.
    fn scripted_failure(&self, mode: &str) -> Result<(), RpcError> {
        match mode {
            "applescript_error" => {
                let text = self
                    .send_cfg
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Err(RpcError::internal(format!("AppleScript failed: {text}")))
            }
            "failed_before_dispatch" if self.strict => Err(RpcError::new(
                -32603,
                "Delivery failed before dispatch",
                Some(json!({
                "retry_safe": true, "disposition": "not_started", "transport": "applescript",
                "operation": "send", "detail": "simulated failure before dispatch"})),
            )),
            _ => Ok(()),
        }
    }

    /// An empty outgoing row joined to no chat (Messages' "ghost row"); returns its id.
    fn ghost_row(&mut self, chat_id: i64) -> i64 {
        let id = self.db.max_row_id() + 1;
        let guid = self.db.chats[&chat_id].guid.clone();
        self.insert_row(Row {
            id,
            guid: db::guid_for(id),
            chat_id: None,
            handle: guid,
            from_me: true,
            text: String::new(),
            date_ms: self.clock.now_ms(),
            destination_caller_id: Some(self.db.self_handle.clone()),
            thread_originator_guid: None,
            reply_to_guid: None,
            reaction: None,
            attachments: Vec::new(),
            preview_of: None,
        });
        id
    }

    /// The outgoing rows of a send: one for the text, one for the file. Returns the ids
    /// written and the text row's id and GUID.
    pub(crate) fn write_sent_rows(
        &mut self,
        chat_id: i64,
        req: &SendParams,
        file_size: i64,
    ) -> (Vec<i64>, Option<(i64, String)>) {
        let target = self.db.chats[&chat_id].clone();
        let handle = if target.is_group() {
            String::new()
        } else {
            target
                .participants
                .first()
                .cloned()
                .unwrap_or_else(|| target.identifier.clone())
        };
        // A reply sent over the bridge is threaded (sim: the originator is the reply_to).
        let thread = req
            .reply_to
            .clone()
            .filter(|_| self.bridge.as_str() == Some("ready"));
        let base = |id: i64, text: String, now: i64, me: &str| Row {
            id,
            guid: db::guid_for(id),
            chat_id: Some(chat_id),
            handle: handle.clone(),
            from_me: true,
            text,
            date_ms: now,
            destination_caller_id: Some(me.to_string()),
            thread_originator_guid: thread.clone(),
            reply_to_guid: None,
            reaction: None,
            attachments: Vec::new(),
            preview_of: None,
        };
        let mut written = Vec::new();
        let mut text_row = None;
        if !req.text.is_empty() {
            let id = self.db.max_row_id() + 1;
            let mut row = base(
                id,
                req.text.clone(),
                self.clock.now_ms(),
                &self.db.self_handle,
            );
            if let Some(g) = &req.guid {
                row.guid = g.clone();
            }
            text_row = Some((id, row.guid.clone()));
            self.insert_row(row);
            self.note_send_state(id);
            written.push(id);
        }
        if !req.file.is_empty() {
            let id = self.db.max_row_id() + 1;
            let mut row = base(
                id,
                "\u{fffc}".into(),
                self.clock.now_ms(),
                &self.db.self_handle,
            );
            let basename = req.file.rsplit('/').next().unwrap_or(&req.file).to_string();
            row.attachments.push(Attachment {
                filename: format!(
                    "~/Library/Messages/Attachments/imsg/{:08X}-0000-4000-8000-{:012X}/{basename}",
                    id, id
                ),
                transfer_name: basename.clone(),
                uti: String::new(),
                mime_type: mime_for(&basename).to_string(),
                total_bytes: file_size,
                is_sticker: false,
                missing: false,
            });
            self.insert_row(row);
            self.note_send_state(id);
            written.push(id);
        }
        (written, text_row)
    }

    /// The `send` answer: `ok`, the transport from 0.8.1, and the sent row's ids when the
    /// send was verified.
    fn send_result(
        &self,
        req: &SendParams,
        target_guid: &str,
        verified: bool,
        text_row: Option<(i64, String)>,
    ) -> Value {
        let mut result = Map::new();
        result.insert("ok".into(), json!(true));
        let use_bridge = self.bridge.as_str() == Some("ready")
            && !target_guid.is_empty()
            && req.transport.as_deref() != Some("applescript");
        if self.at_least((0, 8, 1)) {
            result.insert(
                "transport".into(),
                json!(if use_bridge { "bridge" } else { "applescript" }),
            );
        }
        if let (true, true, Some((id, guid))) = (verified, self.at_least((0, 6, 0)), text_row) {
            if !use_bridge {
                result.insert("id".into(), json!(id));
            }
            result.insert("guid".into(), json!(guid.clone()));
            if self.strict {
                result.insert("message_id".into(), json!(guid));
            }
        }
        if self.strict && use_bridge {
            // Real imsg adds it when the bridge reports it (actions.md §11).
            result.insert("chat_guid".into(), json!(target_guid));
        }
        Value::Object(result)
    }

    fn target_checks(&self, p: &Params, to_required: &str) -> Result<(), RpcError> {
        let to = p.string("to").map_err(perr)?.filter(|s| !s.is_empty());
        let selector = Self::has_selector(p);
        if to.is_some() && selector {
            return Err(RpcError::params("use to or chat_*; not both"));
        }
        if to.is_none() && !selector {
            return Err(RpcError::params(to_required));
        }
        self.resolve_chat(p)?;
        Ok(())
    }

    pub fn typing(&self, p: &Params) -> Res {
        p.allow(
            "typing",
            &[
                "to",
                "chat_id",
                "chat_guid",
                "chat_identifier",
                "typing",
                "service",
            ],
        )
        .map_err(perr)?;
        self.target_checks(p, "to is required")?;
        p.bool("typing").map_err(perr)?;
        if p.map.contains_key("to") {
            if let Some(service) = p.string("service").map_err(perr)? {
                if !matches!(service.to_lowercase().as_str(), "imessage" | "sms" | "auto") {
                    return Err(RpcError::params(service));
                }
            }
        }
        if self.linux {
            return Err(RpcError::internal(
                "Typing indicator failed: Typing indicators require Messages.app/IMCore and are only supported on macOS.",
            ));
        }
        Ok(json!({"ok": true}))
    }

    pub fn read(&self, p: &Params) -> Res {
        p.allow("read", &["to", "chat_id", "chat_guid", "chat_identifier"])
            .map_err(perr)?;
        self.target_checks(p, "to is required")?;
        if self.linux {
            return Err(RpcError::internal(
                "Failed to launch Messages.app: Messages.app is only available on macOS.",
            ));
        }
        Ok(json!({"ok": true}))
    }

    /// What a bridge call gets while the bridge is not running (imsg-protocol §B4).
    pub fn bridge_unavailable(&self) -> RpcError {
        if self.strict {
            RpcError::new(
                -32003,
                "Bridge unavailable",
                Some(json!({
                "detail": "The bridge is not started. Run imsg launch explicitly before using bridge methods.",
                "retryable": true})),
            )
        } else {
            RpcError::internal(
                "System Integrity Protection (SIP) is enabled. Refusing to inject into Messages.app. Disable SIP in Recovery mode before using `imsg launch`.",
            )
        }
    }

    pub fn snapshot(&self, p: &Params, method: &str) -> Res {
        if method == "initialize" {
            p.allow("initialize", &["protocol_version"]).map_err(perr)?;
            if let Some(v) = p.int("protocol_version").map_err(perr)? {
                if v != 1 {
                    return Err(RpcError::params("protocol_version must be 1"));
                }
            }
        } else {
            p.allow("status", &[]).map_err(perr)?;
        }
        // actions.md §3.9: send.tracked exists from 0.15; without the database the reads
        // and tracked sends go (send stays, §10 E6); without the bridge its methods go.
        let supported: Vec<&str> = crate::state::ALL_METHODS
            .iter()
            .copied()
            .filter(|m| *m != "send.tracked" || self.at_least((0, 15, 0)))
            .collect();
        let db_methods = [
            "chats.list",
            "messages.history",
            "messages.after",
            "watch.subscribe",
            "message.send_status",
            "send.tracked",
        ];
        let bridge_ready = self.bridge.as_str() == Some("ready");
        let methods: Vec<&str> = supported
            .iter()
            .copied()
            .filter(|m| self.db_available || !db_methods.contains(m))
            .filter(|m| bridge_ready || !crate::bridge_actions::METHODS.contains(m))
            .filter(|m| *m != "send.tracked" || self.tracked_sends())
            .collect();
        let database = if self.db_available {
            json!({"path": self.db_path, "ready": true, "features": {"reactions": true, "reply_context": true}})
        } else {
            json!({"path": self.db_path, "ready": false, "error": "Full Disk Access is required to read the Messages database."})
        };
        let bridge = if bridge_ready {
            json!({"ready": true, "bridge_version": 2, "v2_ready": true})
        } else {
            json!({"ready": false, "error": "The bridge is not started. Run imsg launch explicitly before using bridge methods."})
        };
        let mut snap = json!({
            "version": self.version_text,
            "protocol_version": 1,
            "database": database,
            "bridge": bridge,
            "contacts": {"available": !self.db.contacts.is_empty()},
            "methods": methods,
            "supported_methods": supported,
        });
        if self.at_least((0, 15, 0)) {
            let features = if self.emoji_tapbacks() {
                json!({"tapback.emoji": 2})
            } else {
                json!({})
            };
            snap["capabilities"] = json!({"engine": {"version": self.version_text, "commit": "0000000",
                "built_at": "2026-01-01T00:00:00Z"}, "features": features});
        }
        Ok(snap)
    }
}

pub fn mime_for(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// The checked params of one `send`.
pub(crate) struct SendParams {
    /// The GUID of the row to write (`send.tracked`: the attempt id), else the default.
    pub(crate) guid: Option<String>,
    pub(crate) reply_to: Option<String>,
    /// `text_formatting` (or an alias), from 0.12.0; older builds ignore the key.
    formatting: Option<Value>,
    /// The handle (a contact name already looked up), when sent with `to`.
    pub(crate) to: Option<String>,
    service: Option<String>,
    pub(crate) transport: Option<String>,
    pub(crate) text: String,
    pub(crate) file: String,
    pub(crate) region: String,
}
