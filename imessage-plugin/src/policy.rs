//! Access policy, mention gating and control commands (channel-behaviour.md §2 steps 12–16,
//! §9). Pure: values in, decisions out.

use regex::Regex;

use crate::config::{AccountConfig, AllowEntry, DmPolicy, GroupKey, GroupPolicy};

/// Who and where a message comes from, for allowlist matching.
pub struct Origin<'a> {
    pub sender_id: &'a str,
    pub chat_id: Option<i64>,
    pub chat_guid: Option<&'a str>,
    pub chat_identifier: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The sender's handle or `"*"`.
    Handle,
    /// Only the conversation (chat id, guid or identifier).
    Conversation,
    None,
}

pub fn match_list(list: &[AllowEntry], o: &Origin<'_>) -> Match {
    let mut conversation = false;
    for entry in list {
        match entry {
            AllowEntry::Any => return Match::Handle,
            AllowEntry::Handle(h) if h == o.sender_id => return Match::Handle,
            AllowEntry::ChatId(id) if Some(*id) == o.chat_id => conversation = true,
            AllowEntry::ChatGuid(g) if Some(g.as_str()) == o.chat_guid => conversation = true,
            AllowEntry::ChatIdentifier(i) if Some(i.as_str()) == o.chat_identifier => {
                conversation = true
            }
            _ => {}
        }
    }
    if conversation {
        Match::Conversation
    } else {
        Match::None
    }
}

/// Only explicit handle entries authorize commands (never `"*"`, never conversations).
pub fn lists_handle(list: &[AllowEntry], sender_id: &str) -> bool {
    list.iter()
        .any(|e| matches!(e, AllowEntry::Handle(h) if h == sender_id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmAccess {
    Admitted,
    Disabled,
    NotAllowed,
    /// Not admitted under `pairing`: run the pairing flow.
    Pairing,
}

/// `allow_store` is the pairing allow store (only consulted under `pairing`).
pub fn dm_access(account: &AccountConfig, o: &Origin<'_>, allow_store: &[String]) -> DmAccess {
    match account.dm_policy {
        DmPolicy::Disabled => DmAccess::Disabled,
        DmPolicy::Open => DmAccess::Admitted,
        policy => {
            let listed = match_list(&account.allow_from, o) != Match::None;
            let paired =
                policy == DmPolicy::Pairing && allow_store.iter().any(|s| s == o.sender_id);
            match (listed || paired, policy) {
                (true, _) => DmAccess::Admitted,
                (false, DmPolicy::Pairing) => DmAccess::Pairing,
                _ => DmAccess::NotAllowed,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAccess {
    Admitted,
    Disabled,
    NotAllowed,
    NotConfigured,
}

/// The chat's own `groups` entry key, if any (explicit keys only, not `"*"`).
pub fn own_group_key<'a>(account: &'a AccountConfig, o: &Origin<'_>) -> Option<&'a GroupKey> {
    let groups = account.groups.as_ref()?;
    groups.keys().find(|k| match k {
        GroupKey::ChatId(id) => Some(*id) == o.chat_id,
        GroupKey::ChatGuid(g) => Some(g.as_str()) == o.chat_guid,
        GroupKey::ChatIdentifier(i) => Some(i.as_str()) == o.chat_identifier,
        GroupKey::Wildcard => false,
    })
}

pub fn group_access(account: &AccountConfig, o: &Origin<'_>) -> GroupAccess {
    match account.group_policy {
        GroupPolicy::Disabled => return GroupAccess::Disabled,
        GroupPolicy::Allowlist => {
            let list = account.group_senders();
            if list.is_empty() || match_list(list, o) == Match::None {
                return GroupAccess::NotAllowed;
            }
        }
        GroupPolicy::Open => {}
    }
    match &account.groups {
        Some(groups) if !groups.is_empty() => {
            if own_group_key(account, o).is_some() || groups.contains_key(&GroupKey::Wildcard) {
                GroupAccess::Admitted
            } else {
                GroupAccess::NotConfigured
            }
        }
        _ => GroupAccess::Admitted,
    }
}

/// `requireMention`: the chat's own entry, else `"*"`, else true.
pub fn require_mention(account: &AccountConfig, o: &Origin<'_>) -> bool {
    let Some(groups) = &account.groups else {
        return true;
    };
    own_group_key(account, o)
        .and_then(|k| groups.get(k))
        .and_then(|e| e.require_mention)
        .or_else(|| {
            groups
                .get(&GroupKey::Wildcard)
                .and_then(|e| e.require_mention)
        })
        .unwrap_or(true)
}

/// Removes characters that hide mentions: U+200B–U+200D, U+2060, U+FEFF, U+202A–U+202E,
/// U+2066–U+2069.
pub fn strip_invisible(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if text.chars().any(hidden) {
        std::borrow::Cow::Owned(text.chars().filter(|c| !hidden(*c)).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

pub fn is_mentioned(text: &str, patterns: &[Regex]) -> bool {
    let visible = strip_invisible(text);
    patterns.iter().any(|p| p.is_match(&visible))
}

const COMMANDS: &[&str] = &[
    "/status", "/new", "/reset", "/stop", "/help", "/config", "/model", "/think",
];
const STOP_WORDS: &[&str] = &["stop", "abort", "cancel"];

/// The text with one leading mention (and the spaces, commas or colons after it) removed.
fn without_leading_mention<'a>(text: &'a str, patterns: &[Regex]) -> &'a str {
    for p in patterns {
        if let Some(m) = p.find(text) {
            if m.start() == 0 && m.end() > 0 {
                return text[m.end()..].trim_start_matches([' ', ',', ':']);
            }
        }
    }
    text
}

/// Case-insensitive ASCII substring test, without allocating.
fn contains_ignore_case(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A stop word must be the whole text after at most a mention, so the text ends with it. An
/// ASCII text is its own visible text, so the suffix test is exact; any other text may hide
/// invisible characters inside the word ("st\u{200b}op"), so it takes the exact path.
fn could_end_with_stop_word(text: &str) -> bool {
    if text.is_ascii() {
        let t = text.trim_end().as_bytes();
        STOP_WORDS.iter().any(|w| {
            t.len() >= w.len() && t[t.len() - w.len()..].eq_ignore_ascii_case(w.as_bytes())
        })
    } else {
        true
    }
}

/// Control-command detection (§9.1). `patterns` are the mention patterns (groups only).
pub fn is_control_command(text: &str, is_group: bool, patterns: &[Regex]) -> bool {
    // Nearly every message is no command: skip the regex work unless it could be one.
    if !text.contains('/') && !could_end_with_stop_word(text) {
        return false;
    }
    let visible = strip_invisible(text);
    let mut rest = visible.trim();
    if is_group {
        rest = without_leading_mention(rest, patterns).trim();
    }
    let first = rest.split_whitespace().next().unwrap_or("");
    COMMANDS.iter().any(|c| first.eq_ignore_ascii_case(c))
        || STOP_WORDS.iter().any(|w| rest.eq_ignore_ascii_case(w))
}

/// `/config set|unset <path> …`: the path (possibly empty) when it is one.
pub fn config_write_path(text: &str, is_group: bool, patterns: &[Regex]) -> Option<String> {
    if !text.contains('/') || !contains_ignore_case(text, "/config") {
        return None;
    }
    let visible = strip_invisible(text);
    let mut rest = visible.trim();
    if is_group {
        rest = without_leading_mention(rest, patterns).trim();
    }
    let mut tokens = rest.split_whitespace();
    if !tokens.next()?.eq_ignore_ascii_case("/config") {
        return None;
    }
    let verb = tokens.next()?;
    if verb.eq_ignore_ascii_case("set") || verb.eq_ignore_ascii_case("unset") {
        Some(tokens.next().unwrap_or("").to_string())
    } else {
        None
    }
}

/// A `/config set <path> <value>` or `/config unset <path>` request, as the host's
/// `config.write` payload: the value is JSON when it parses as JSON, else the text.
pub fn config_write_request(
    text: &str,
    is_group: bool,
    patterns: &[Regex],
) -> Option<serde_json::Value> {
    let path = config_write_path(text, is_group, patterns)?;
    let visible = strip_invisible(text);
    let mut rest = visible.trim();
    if is_group {
        rest = without_leading_mention(rest, patterns).trim();
    }
    let mut parts = rest
        .splitn(4, char::is_whitespace)
        .filter(|p| !p.is_empty());
    parts.next();
    let op = parts.next()?.to_ascii_lowercase();
    parts.next();
    let raw = rest
        .split_once(&path)
        .map(|(_, after)| after.trim())
        .unwrap_or("");
    let mut request = serde_json::json!({"op": op, "path": path});
    if op == "set" {
        request["value"] =
            serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::from(raw));
    }
    Some(request)
}

pub const CONFIG_DISABLED_REPLY: &str =
    "Config commands are turned off on this gateway (commands.config is not true).";
pub const CONFIG_WRITES_DISABLED_REPLY: &str =
    "Config changes from iMessage are turned off for this account (configWrites is false).";

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<Regex> {
        p.iter()
            .map(|s| {
                regex::RegexBuilder::new(s)
                    .case_insensitive(true)
                    .build()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn commands() {
        let p = pats(&["@bot\\b"]);
        for yes in [
            "/status",
            "/STATUS now",
            "STOP",
            " cancel ",
            "@bot /reset",
            "@bot, /help",
            "@bot stop \n",
            "st\u{200b}op",
            "\u{feff}Cancel",
        ] {
            assert!(is_control_command(yes, true, &p), "{yes}");
        }
        for no in [
            "/statusx",
            "stop it",
            "please /status",
            "stop it now",
            "nonstop",
            "ça va, stop",
            "@bot hi",
        ] {
            assert!(!is_control_command(no, true, &p), "{no}");
        }
        assert!(
            !is_control_command("@bot /reset", false, &p),
            "mentions are only removed in groups"
        );
    }

    #[test]
    fn config_paths() {
        let p = pats(&[]);
        assert_eq!(
            config_write_path(
                "/config set channels.imessage.textChunkLimit 2000",
                false,
                &p
            )
            .as_deref(),
            Some("channels.imessage.textChunkLimit")
        );
        assert_eq!(
            config_write_path("/config unset x", false, &p).as_deref(),
            Some("x")
        );
        assert_eq!(config_write_path("/config show", false, &p), None);
        assert_eq!(config_write_path("/status", false, &p), None);
    }

    #[test]
    fn config_write_requests() {
        let p = pats(&["@bot\\b"]);
        assert_eq!(
            config_write_request(
                "/config set channels.imessage.textChunkLimit 2000",
                false,
                &p
            ),
            Some(
                serde_json::json!({"op": "set", "path": "channels.imessage.textChunkLimit", "value": 2000})
            )
        );
        assert_eq!(
            config_write_request(
                "@bot /config set messages.responsePrefix [bot] says",
                true,
                &p
            ),
            Some(
                serde_json::json!({"op": "set", "path": "messages.responsePrefix", "value": "[bot] says"})
            )
        );
        assert_eq!(
            config_write_request("/config unset x.y", false, &p),
            Some(serde_json::json!({"op": "unset", "path": "x.y"}))
        );
        assert_eq!(config_write_request("/status", false, &p), None);
    }

    #[test]
    fn invisible_characters_do_not_hide_mentions() {
        let p = pats(&["@bot\\b"]);
        assert!(is_mentioned("@\u{200b}bot hi", &p));
        assert!(is_mentioned("@BOT hi", &p));
        assert!(!is_mentioned("hello team", &p));
    }
}
