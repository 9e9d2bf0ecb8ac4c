//! Echo, self-chat mirror, reflection and loop guards (channel-behaviour.md §5).
//!
//! GUIDs first, text only as a narrow fallback: registering full reply text before sending
//! made users' own identical messages vanish in the reference system, so text entries only
//! match within the sent-to conversation, briefly, and (outside self-chats) only for sends
//! that returned no id.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::state::sent::{SentLog, SentRow};

pub const SENT_ID_TTL_MS: i64 = 12 * 3600 * 1000;
pub const SENT_ID_CAP: usize = 2000;
pub const FINISHED_TEXT_TTL_MS: i64 = 4000;
pub const MIRROR_TTL_MS: i64 = 10_000;

/// Echo-normalised text: CRLF → LF, control and replacement characters removed, whitespace
/// runs collapsed, trimmed, NFC.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.replace("\r\n", "\n").chars() {
        let removed = matches!(c,
            '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}' | '\u{feff}' | '\u{fffc}'..='\u{ffff}')
            && c != '\n'
            && c != '\t';
        if removed {
            continue;
        }
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out.nfc().collect()
}

/// Where a part was sent (§5.2): written `chat:<id>`, `guid:<g>`, `ident:<i>`,
/// `handle:<h>`; held parsed so a lookup compares without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Chat(i64),
    Guid(String),
    Ident(String),
    Handle(String),
}

impl std::fmt::Display for Scope {
    /// The written form, as persisted in `sent.jsonl`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Chat(id) => write!(f, "chat:{id}"),
            Scope::Guid(g) => write!(f, "guid:{g}"),
            Scope::Ident(i) => write!(f, "ident:{i}"),
            Scope::Handle(h) => write!(f, "handle:{h}"),
        }
    }
}

impl Scope {
    /// Reads the written form back (persisted entries).
    pub fn parse(text: &str) -> Option<Scope> {
        let (kind, value) = text.split_once(':')?;
        Some(match kind {
            "chat" => Scope::Chat(value.parse().ok()?),
            "guid" => Scope::Guid(value.to_string()),
            "ident" => Scope::Ident(value.to_string()),
            "handle" => Scope::Handle(value.to_string()),
            _ => return None,
        })
    }

    pub fn matches(&self, row: &EchoRow<'_>) -> bool {
        match self {
            Scope::Chat(id) => row.chat_id == Some(*id),
            Scope::Guid(g) => row.chat_guid == Some(g.as_str()),
            Scope::Ident(i) => row.chat_identifier == Some(i.as_str()),
            Scope::Handle(h) => row.dm_handle == Some(h.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextState {
    Pending,
    Finished { at_ms: i64, had_ids: bool },
}

#[derive(Debug, Clone)]
struct TextEntry {
    id: u64,
    scope: Option<Scope>,
    text: String,
    state: TextState,
}

/// A message this account sent, as the registry knows it (actions.md §3.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnMessage {
    pub scope: Option<Scope>,
    pub chat_guid: Option<String>,
    pub sent_at_ms: i64,
    pub edits: u32,
}

/// The per-account echo registry.
pub struct EchoRegistry {
    next: u64,
    texts: Vec<TextEntry>,
    sent: HashMap<String, SentRow>,
    /// The numeric row ids among `sent` (keys `rowid:<n>`), for lookups without formatting.
    rowids: std::collections::HashSet<i64>,
    order: VecDeque<String>,
    /// `sent.jsonl`, where the ids persist (none for a registry in memory only).
    file: Option<SentLog>,
}

/// A handle on a registered part, to finish after the send's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl EchoRegistry {
    pub fn in_memory() -> Self {
        EchoRegistry {
            next: 1,
            texts: Vec::new(),
            sent: HashMap::new(),
            rowids: std::collections::HashSet::new(),
            order: VecDeque::new(),
            file: None,
        }
    }

    /// Loads `sent.jsonl` from the account folder and rewrites it without expired lines.
    pub fn open(dir: &Path, now_ms: i64) -> Self {
        let mut r = Self::in_memory();
        let (log, rows) = SentLog::load(dir);
        for s in rows {
            if now_ms - s.at <= SENT_ID_TTL_MS {
                r.insert_sent(s);
            }
        }
        r.file = Some(log);
        r.rewrite();
        r
    }

    /// Compacts the file to the live entries, oldest first.
    fn rewrite(&mut self) {
        let Some(log) = &mut self.file else { return };
        log.compact(self.order.iter().filter_map(|id| self.sent.get(id)));
    }

    fn insert_sent(&mut self, s: SentRow) {
        if let Some(n) = s.id.strip_prefix("rowid:").and_then(|n| n.parse().ok()) {
            self.rowids.insert(n);
        }
        if self.sent.insert(s.id.clone(), s.clone()).is_none() {
            self.order.push_back(s.id);
        }
        while self.order.len() > SENT_ID_CAP {
            if let Some(old) = self.order.pop_front() {
                self.forget(&old);
            }
        }
    }

    fn forget(&mut self, id: &str) {
        self.sent.remove(id);
        if let Some(n) = id
            .strip_prefix("rowid:")
            .and_then(|n| n.parse::<i64>().ok())
        {
            self.rowids.remove(&n);
        }
    }

    /// Before a text part is written: a pending text entry for `scope`.
    pub fn begin(&mut self, scope: &Scope, text: &str) -> Ticket {
        let id = self.next;
        self.next += 1;
        self.texts.push(TextEntry {
            id,
            scope: Some(scope.clone()),
            text: normalize_text(text),
            state: TextState::Pending,
        });
        Ticket(id)
    }

    /// After the response: record the returned ids (when any) and start the text entry's
    /// 4 s expiry.
    pub fn finish(&mut self, ticket: Ticket, guid: Option<&str>, rowid: Option<i64>, now_ms: i64) {
        let mut text = String::new();
        let mut scope = None;
        if let Some(entry) = self.texts.iter_mut().find(|e| e.id == ticket.0) {
            entry.state = TextState::Finished {
                at_ms: now_ms,
                had_ids: guid.is_some() || rowid.is_some(),
            };
            text = entry.text.clone();
            scope = entry.scope.clone();
        }
        self.record_ids(guid, rowid, &text, scope.as_ref(), now_ms);
    }

    /// Records sent ids of a part that had no text entry (file-only parts).
    pub fn record_ids(
        &mut self,
        guid: Option<&str>,
        rowid: Option<i64>,
        text: &str,
        scope: Option<&Scope>,
        now_ms: i64,
    ) {
        let scope = scope.map(Scope::to_string).unwrap_or_default();
        let mut added = 0;
        for id in guid
            .map(str::to_string)
            .into_iter()
            .chain(rowid.map(|r| format!("rowid:{r}")))
        {
            self.insert_sent(SentRow {
                id,
                text: text.to_string(),
                scope: scope.clone(),
                at: now_ms,
                chat_guid: None,
                edits: 0,
            });
            added += 1;
        }
        if added > 0 {
            self.append(added);
        }
    }

    /// Persists the `added` newest entries; compacts the file once it has doubled the cap.
    fn append(&mut self, added: usize) {
        let Some(log) = &mut self.file else { return };
        let from = self.order.len().saturating_sub(added);
        log.append(self.order.range(from..).filter_map(|id| self.sent.get(id)));
        if log.due_for_compaction(SENT_ID_CAP) {
            self.rewrite();
        }
    }

    /// Drops a text entry whose send never happened.
    pub fn cancel(&mut self, ticket: Ticket) {
        self.texts.retain(|e| e.id != ticket.0);
    }

    fn expire(&mut self, now_ms: i64) {
        self.texts.retain(|e| match e.state {
            TextState::Pending => true,
            TextState::Finished { at_ms, .. } => now_ms - at_ms <= FINISHED_TEXT_TTL_MS,
        });
        while let Some(front) = self.order.front() {
            match self.sent.get(front) {
                Some(s) if now_ms - s.at > SENT_ID_TTL_MS => {
                    let id = self.order.pop_front().expect("front exists");
                    self.forget(&id);
                }
                Some(_) => break,
                None => {
                    self.order.pop_front();
                }
            }
        }
    }

    fn sent_key(&self, guid: &str) -> Option<String> {
        if self.sent.contains_key(guid) {
            return Some(guid.to_string());
        }
        self.sent
            .keys()
            .find(|k| k.eq_ignore_ascii_case(guid))
            .cloned()
    }

    /// A message this account sent within the last 12 h (any case of its GUID).
    pub fn own(&mut self, guid: &str, now_ms: i64) -> Option<OwnMessage> {
        self.expire(now_ms);
        let s = self.sent.get(&self.sent_key(guid)?)?;
        Some(OwnMessage {
            scope: Scope::parse(&s.scope),
            chat_guid: s.chat_guid.clone(),
            sent_at_ms: s.at,
            edits: s.edits,
        })
    }

    /// Re-persists one entry after a change (the last line of an id wins on load).
    fn update(&mut self, guid: &str, change: impl FnOnce(&mut SentRow)) {
        let Some(key) = self.sent_key(guid) else {
            return;
        };
        if let Some(s) = self.sent.get_mut(&key) {
            change(s);
        }
        // Moved to the back so `append` writes this entry.
        self.order.retain(|k| *k != key);
        self.order.push_back(key);
        self.append(1);
    }

    /// The chat GUID imsg reported for a sent part.
    pub fn note_chat_guid(&mut self, guid: &str, chat_guid: &str) {
        self.update(guid, |s| s.chat_guid = Some(chat_guid.to_string()));
    }

    /// After `message.edit`: one more edit, and the new text is what its echo will carry.
    pub fn note_edit(&mut self, guid: &str, text: &str) {
        let text = normalize_text(text);
        self.update(guid, |s| {
            s.edits += 1;
            s.text = text;
        });
    }

    /// Whether `id` is a GUID this account sent (a tapback's target, actions.md §2.2 R2);
    /// compared ASCII case-insensitively.
    pub fn is_sent_id(&mut self, id: &str, now_ms: i64) -> bool {
        self.expire(now_ms);
        self.sent.contains_key(id) || self.sent.keys().any(|k| k.eq_ignore_ascii_case(id))
    }

    /// Whether a row is our own echo (§5.2 lookup).
    pub fn is_echo(&mut self, row: &EchoRow<'_>, now_ms: i64) -> bool {
        self.expire(now_ms);
        if row.guid.is_some_and(|g| self.sent.contains_key(g))
            || row.rowid.is_some_and(|r| self.rowids.contains(&r))
        {
            return true;
        }
        let parent = row.reply_to_guid.and_then(|g| self.sent.get(g));
        let in_scope = |e: &TextEntry| e.scope.as_ref().is_some_and(|s| s.matches(row));
        // Most rows match nothing by text: normalise only when something could match.
        if parent.is_none() && !self.texts.iter().any(in_scope) {
            return false;
        }
        let text = normalize_text(row.text);
        if parent.is_some_and(|p| p.text == text) {
            return true;
        }
        if text.is_empty() {
            return false;
        }
        self.texts.iter().any(|e| {
            in_scope(e)
                && e.text == text
                && match e.state {
                    TextState::Pending => row.self_chat,
                    TextState::Finished { had_ids, .. } => row.self_chat || !had_ids,
                }
        })
    }
}

/// What the echo lookup needs of a row.
pub struct EchoRow<'a> {
    pub guid: Option<&'a str>,
    pub rowid: Option<i64>,
    pub reply_to_guid: Option<&'a str>,
    pub text: &'a str,
    pub chat_id: Option<i64>,
    pub chat_guid: Option<&'a str>,
    pub chat_identifier: Option<&'a str>,
    /// The sender's handle, for DMs only (`handle:` scopes).
    pub dm_handle: Option<&'a str>,
    pub self_chat: bool,
}

/// Self-chat mirror cache (§5.3): `(conversation, text, created_at)` → GUID, for 10 s.
#[derive(Default)]
pub struct MirrorCache {
    entries: HashMap<(String, String, String), (String, i64)>,
}

impl MirrorCache {
    /// Looks the triple up, then records it. True when a row with another GUID recorded it.
    pub fn check_and_record(
        &mut self,
        conversation: &str,
        text: &str,
        created_at: &str,
        guid: &str,
        now_ms: i64,
    ) -> bool {
        self.entries
            .retain(|_, (_, at)| now_ms - *at <= MIRROR_TTL_MS);
        let key = (
            conversation.to_string(),
            normalize_text(text),
            created_at.to_string(),
        );
        let hit = self.entries.get(&key).is_some_and(|(g, _)| g != guid);
        self.entries.insert(key, (guid.to_string(), now_ms));
        hit
    }
}

/// Loop limiter (§5.5): per conversation, loop drops in a sliding 60 s window.
#[derive(Default)]
pub struct LoopLimiter {
    hits: HashMap<String, VecDeque<i64>>,
    tripped: HashMap<String, bool>,
    /// The newest recorded hit: once it leaves the window, every conversation is quiet.
    last_hit_ms: i64,
}

pub const LOOP_WINDOW_MS: i64 = 60_000;
pub const LOOP_THRESHOLD: usize = 5;

impl LoopLimiter {
    /// No conversation has loop drops in its window (the usual state), so `muted` would say
    /// no for every one; the state of conversations that went quiet is dropped here.
    pub fn quiet(&mut self, now_ms: i64) -> bool {
        if !self.hits.is_empty() && now_ms - self.last_hit_ms >= LOOP_WINDOW_MS {
            self.hits.clear();
            self.tripped.clear();
        }
        self.hits.is_empty()
    }

    pub fn record(&mut self, conversation: &str, now_ms: i64) {
        self.last_hit_ms = self.last_hit_ms.max(now_ms);
        let q = self.hits.entry(conversation.to_string()).or_default();
        q.push_back(now_ms);
        while q.front().is_some_and(|t| now_ms - t > LOOP_WINDOW_MS) {
            q.pop_front();
        }
    }

    /// `Some(n)` when the conversation is muted; `first_trip` is true once per trip.
    pub fn muted(&mut self, conversation: &str, now_ms: i64) -> Option<(usize, bool)> {
        // Most conversations never had a loop drop: no entry, nothing to allocate.
        let q = self.hits.get_mut(conversation)?;
        while q.front().is_some_and(|t| now_ms - t >= LOOP_WINDOW_MS) {
            q.pop_front();
        }
        let n = q.len();
        if n >= LOOP_THRESHOLD {
            let first = !self
                .tripped
                .insert(conversation.to_string(), true)
                .unwrap_or(false);
            Some((n, first))
        } else {
            self.tripped.remove(conversation);
            if q.is_empty() {
                self.hits.remove(conversation);
            }
            None
        }
    }
}

fn reflection_patterns() -> &'static [Regex] {
    static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            r"(?i)</?(?:[a-z]+:)?(?:think|thinking|thought|antthinking|reasoning|relevant_memories|relevant-memories|final|tool_call|function_call|tool_result)(?:>|\s[^<>]{0,40}>)",
            r"(?:#\+){2,}",
            r"(?i)assistant to=\w",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("static pattern"))
        .collect()
    })
}

/// Removes fenced code blocks and inline code spans (markup inside them is quoted, not
/// leaked).
pub fn strip_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fence: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        match fence {
            Some(f) => {
                if trimmed.starts_with(f) {
                    fence = None;
                }
            }
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => out.push_str(line),
        }
    }
    static INLINE: OnceLock<Regex> = OnceLock::new();
    let inline = INLINE.get_or_init(|| Regex::new(r"`[^`\n]*`").expect("static pattern"));
    inline.replace_all(&out, "").into_owned()
}

/// Assistant-internal markup outside code (§5.4).
pub fn is_reflection(text: &str) -> bool {
    // Every inbound text comes through here: a byte scan, not a char-set `contains`, which
    // cost several times as much per byte.
    if !text.bytes().any(|b| matches!(b, b'<' | b'#' | b'=')) {
        return false;
    }
    let visible = strip_code(text);
    reflection_patterns().iter().any(|p| p.is_match(&visible))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize_text("\u{0}hello  world\r\n"), "hello world");
        assert_eq!(normalize_text(" a\u{fffc} \t b "), "a b");
        assert_eq!(normalize_text("e\u{301}"), "\u{e9}", "NFC");
    }

    #[test]
    fn reflection_table() {
        for yes in [
            "<thinking>plan</thinking> ok",
            "</final>",
            "Here is my <final answer>",
            "x +#+#+# y",
            "assistant to=functions.run",
            "<ns:reasoning>x",
        ] {
            assert!(is_reflection(yes), "{yes}");
        }
        for no in [
            "`<thinking>` is a tag",
            "I was thinking",
            "<final draft, see below",
            "```\n<thinking>\n```",
            "a # b",
        ] {
            assert!(!is_reflection(no), "{no}");
        }
    }

    /// A row in the DM with `handle` (chat 7), or in chat 42 when `handle` is empty.
    fn row<'a>(guid: &'a str, text: &'a str, handle: &'a str, self_chat: bool) -> EchoRow<'a> {
        EchoRow {
            guid: Some(guid),
            rowid: None,
            reply_to_guid: None,
            text,
            chat_id: Some(if handle.is_empty() { 42 } else { 7 }),
            chat_guid: None,
            chat_identifier: None,
            dm_handle: (!handle.is_empty()).then_some(handle),
            self_chat,
        }
    }

    #[test]
    fn guid_match_and_narrow_text_fallback() {
        let mut r = EchoRegistry::in_memory();
        let dm = "+15550001111";
        let t = r.begin(&Scope::parse("handle:+15550001111").unwrap(), "Hello");
        r.finish(t, Some("OUT2"), None, 0);
        assert!(r.is_echo(&row("OUT2", "anything", dm, false), 100));
        // Same text, another GUID, outside a self-chat: a genuine message (case 43).
        assert!(!r.is_echo(&row("U9", "Hello", dm, false), 2000));

        // A send that returned no id: text fallback for 4 s (case 44).
        let t = r.begin(&Scope::parse("handle:+15550001111").unwrap(), "On it");
        r.finish(t, None, None, 10_000);
        assert!(r.is_echo(&row("X1", "On it", dm, false), 13_000));
        assert!(!r.is_echo(&row("X2", "On it", dm, false), 15_000));
    }

    #[test]
    fn pending_text_matches_only_in_self_chat() {
        let mut r = EchoRegistry::in_memory();
        let me = "+15559990000";
        let t = r.begin(&Scope::parse("handle:+15559990000").unwrap(), "Done.");
        assert!(r.is_echo(&row("S1M", "Done.", me, true), 0));
        assert!(!r.is_echo(&row("S1M", "Done.", me, false), 0));
        r.cancel(t);
        assert!(!r.is_echo(&row("S1M", "Done.", me, true), 0));
    }

    #[test]
    fn quoted_reply_with_same_text_is_an_echo() {
        let mut r = EchoRegistry::in_memory();
        let t = r.begin(&Scope::parse("handle:+15550001111").unwrap(), "Hello");
        r.finish(t, Some("OUT2"), None, 0);
        let mut quoted = row("U1", "Hello", "+15550001111", false);
        quoted.reply_to_guid = Some("OUT2");
        assert!(r.is_echo(&quoted, 10));
        let mut reply = row("U2", "Hello to you", "+15550001111", false);
        reply.reply_to_guid = Some("OUT2");
        assert!(!r.is_echo(&reply, 10));
    }

    #[test]
    fn sent_ids_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = EchoRegistry::open(dir.path(), 0);
        let t = r.begin(&Scope::parse("chat:42").unwrap(), "hi");
        r.finish(t, Some("G1"), Some(901), 0);
        let mut again = EchoRegistry::open(dir.path(), 1000);
        let mut by_rowid = row("other", "x", "", false);
        by_rowid.rowid = Some(901);
        by_rowid.guid = None;
        assert!(again.is_echo(&by_rowid, 1000));
        let mut expired = EchoRegistry::open(dir.path(), SENT_ID_TTL_MS + 10);
        assert!(!expired.is_echo(&row("G1", "x", "", false), SENT_ID_TTL_MS + 10));
    }

    #[test]
    fn mirror_cache() {
        let mut m = MirrorCache::default();
        assert!(!m.check_and_record("c", "note", "T", "A", 0));
        assert!(m.check_and_record("c", "note", "T", "B", 5_000));
        assert!(
            !m.check_and_record("c", "note", "T2", "C", 5_000),
            "other created_at"
        );
        assert!(
            !m.check_and_record("c", "note", "T", "D", 30_000),
            "expired"
        );
    }

    #[test]
    fn loop_limiter_trips_and_recovers() {
        let mut l = LoopLimiter::default();
        for i in 0..5 {
            l.record("default:group:42", i * 1000);
        }
        assert_eq!(l.muted("default:group:42", 5000), Some((5, true)));
        assert_eq!(
            l.muted("default:group:42", 6000),
            Some((5, false)),
            "one warning per trip"
        );
        assert_eq!(l.muted("default:dm:+1", 6000), None);
        assert_eq!(l.muted("default:group:42", 4000 + LOOP_WINDOW_MS + 1), None);
    }

    #[test]
    fn loop_limiter_is_quiet_once_every_hit_left_the_window() {
        let mut l = LoopLimiter::default();
        assert!(l.quiet(0));
        l.record("default:dm:+1", 1000);
        l.record("default:group:42", 2000);
        assert!(
            !l.quiet(2000 + LOOP_WINDOW_MS - 1),
            "the group hit is still inside"
        );
        assert!(l.quiet(2000 + LOOP_WINDOW_MS));
        // What `muted` says is unchanged by the clean-up.
        assert_eq!(l.muted("default:group:42", 2000 + LOOP_WINDOW_MS), None);
        for i in 0..5 {
            l.record("default:group:42", 100_000 + i);
        }
        assert!(!l.quiet(100_010));
        assert_eq!(l.muted("default:group:42", 100_010), Some((5, true)));
    }
}
