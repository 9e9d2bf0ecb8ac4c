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

/// What a sender may do beyond being routed (§2 step 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Authority {
    /// May run the host's control commands.
    pub command_authorized: bool,
    /// An owner: may change the config (`/config set|unset`).
    pub owner: bool,
}

/// Step 14's two flags. `owners` is `commands.ownerAllowFrom` when set. Only explicit handle
/// entries count (never `"*"`, never a conversation); the pairing store and the group sender
/// list authorize commands but never make an owner, since `/config` changes who may do
/// everything else. A row relayed by SMS or RCS carries a sender id that many SMS gateways
/// let anyone forge: it gets neither flag unless `allowSmsCommands` is on.
pub fn authority(
    account: &AccountConfig,
    owners: Option<&[String]>,
    is_group: bool,
    sender_id: &str,
    chat_guid: Option<&str>,
    allow_store: &[String],
) -> Authority {
    if !account.allow_sms_commands && chat_guid.is_some_and(is_forgeable_service) {
        return Authority::default();
    }
    let in_allow_from = lists_handle(&account.allow_from, sender_id);
    let command_authorized = in_allow_from
        || (is_group && lists_handle(account.group_senders(), sender_id))
        || (account.dm_policy == DmPolicy::Pairing && allow_store.iter().any(|a| a == sender_id));
    let owner = match owners {
        Some(list) => list.iter().any(|h| h == sender_id),
        None => in_allow_from,
    };
    Authority {
        command_authorized,
        owner,
    }
}

/// `SMS;…` and `RCS;…` chat GUIDs: services whose sender ids can be forged.
fn is_forgeable_service(chat_guid: &str) -> bool {
    let head = chat_guid.as_bytes().get(..4).unwrap_or_default();
    head.eq_ignore_ascii_case(b"SMS;") || head.eq_ignore_ascii_case(b"RCS;")
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

/// OpenClaw 2026.9.6's built-in command names and aliases (§9.1): the default when the host
/// names none in `StartContext`.
pub const DEFAULT_COMMANDS: &[&str] = &[
    "/help",
    "/commands",
    "/tools",
    "/skill",
    "/dashboard",
    "/learn",
    "/loop",
    "/status",
    "/goal",
    "/diagnostics",
    "/login",
    "/openclaw",
    "/tasks",
    "/allowlist",
    "/approve",
    "/context",
    "/btw",
    "/side",
    "/export-session",
    "/export",
    "/export-trajectory",
    "/trajectory",
    "/tts",
    "/whoami",
    "/id",
    "/session",
    "/subagents",
    "/acp",
    "/agents",
    "/steer",
    "/tell",
    "/config",
    "/mcp",
    "/plugins",
    "/plugin",
    "/debug",
    "/usage",
    "/stop",
    "/restart",
    "/update",
    "/activation",
    "/send",
    "/reset",
    "/new",
    "/name",
    "/compact",
    "/think",
    "/verbose",
    "/v",
    "/trace",
    "/fast",
    "/reasoning",
    "/reason",
    "/elevated",
    "/elev",
    "/exec",
    "/model",
    "/models",
    "/queue",
    "/bash",
];

/// The control-command names in force: the host's (from `StartContext`) or the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandNames(Vec<String>);

impl CommandNames {
    /// The host's list, or the defaults when it gives none. Names are matched
    /// case-insensitively; a name without its leading `/` gets one.
    pub fn new(host: Option<&[String]>) -> Self {
        match host {
            Some(names) => CommandNames(
                names
                    .iter()
                    .map(|n| n.trim())
                    .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
                    .map(|n| match n.starts_with('/') {
                        true => n.to_lowercase(),
                        false => format!("/{}", n.to_lowercase()),
                    })
                    .collect(),
            ),
            None => Self::default(),
        }
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|c| token.eq_ignore_ascii_case(c))
    }
}

impl Default for CommandNames {
    fn default() -> Self {
        CommandNames(DEFAULT_COMMANDS.iter().map(|c| c.to_string()).collect())
    }
}
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
pub fn is_control_command(
    text: &str,
    is_group: bool,
    patterns: &[Regex],
    commands: &CommandNames,
) -> bool {
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
    if commands.contains(first) {
        return true;
    }
    // A bare stop word in a group stops the agent only when it was addressed: the owner
    // telling a friend "stop" must not.
    STOP_WORDS.iter().any(|w| rest.eq_ignore_ascii_case(w))
        && (!is_group || is_mentioned(text, patterns))
}

/// A `/config set|unset` command (§9.2), detected but not parsed: nothing of a command's
/// arguments is parsed before the sender is known to be an owner (§2 step 14), because a
/// value from a stranger once overflowed the parser's stack and took the gateway down.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigCommand {
    /// `raw` is the value's text as written; [`ConfigCommand::request`] parses it.
    Set {
        path: String,
        raw: String,
    },
    Unset {
        path: String,
    },
    /// `/config set|unset` without a usable path: answered with [`CONFIG_USAGE_REPLY`].
    Malformed,
}

/// The largest `/config set` value taken, in bytes (§9.2).
pub const CONFIG_VALUE_MAX_BYTES: usize = 8 * 1024;
/// The deepest nesting of `[` and `{` taken in a `/config set` value (§9.2), and the most
/// segments taken in a path.
pub const CONFIG_VALUE_MAX_DEPTH: usize = 32;
/// The longest `/config` path taken, in bytes.
pub const CONFIG_PATH_MAX_BYTES: usize = 1024;

/// A `/config set` value over [`CONFIG_VALUE_MAX_BYTES`] or [`CONFIG_VALUE_MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized;

impl ConfigCommand {
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigCommand::Set { path, .. } | ConfigCommand::Unset { path } => Some(path),
            ConfigCommand::Malformed => None,
        }
    }

    /// The value is within the §9.2 bounds; checked before anything parses it. The path
    /// counts too: each of its segments is one more level of the written config, which the
    /// host parses again at its next start.
    pub fn bounded(&self) -> Result<(), Oversized> {
        let path_ok = |path: &str| {
            path.len() <= CONFIG_PATH_MAX_BYTES && path.split('.').count() <= CONFIG_VALUE_MAX_DEPTH
        };
        match self {
            ConfigCommand::Set { path, raw } if path_ok(path) => check_bounds(raw),
            ConfigCommand::Unset { path } if path_ok(path) => Ok(()),
            ConfigCommand::Malformed => Ok(()),
            _ => Err(Oversized),
        }
    }

    /// The host's `config.write` payload; `None` for a malformed or oversized command. The
    /// value is JSON5 when it parses as JSON5, else the raw text.
    pub fn request(&self) -> Option<serde_json::Value> {
        self.bounded().ok()?;
        match self {
            ConfigCommand::Set { path, raw } => {
                let value = json5::from_str::<serde_json::Value>(raw)
                    .unwrap_or_else(|_| serde_json::Value::from(raw.as_str()));
                Some(serde_json::json!({"op": "set", "path": path, "value": value}))
            }
            ConfigCommand::Unset { path } => Some(serde_json::json!({"op": "unset", "path": path})),
            ConfigCommand::Malformed => None,
        }
    }
}

/// Size and nesting of a value, by bytes alone. Every bracket counts, quoted or not: a scan
/// that tracked JSON5's strings could disagree with the parser about where one ends, and a
/// bound that the parser can step around is no bound. No real config value needs 32 levels.
fn check_bounds(raw: &str) -> Result<(), Oversized> {
    if raw.len() > CONFIG_VALUE_MAX_BYTES {
        return Err(Oversized);
    }
    let mut depth = 0usize;
    for b in raw.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > CONFIG_VALUE_MAX_DEPTH {
                    return Err(Oversized);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `/config set <path>=<value>` (OpenClaw's form), `/config set <path> <value>` or
/// `/config unset <path>`, after at most one leading mention in groups; `None` when the text
/// is no config write. A path that is empty or still contains `=` is
/// [`ConfigCommand::Malformed`]: taking `textChunkLimit=3000` as a path once wrote a key that
/// kept the gateway from starting. The value is kept as text (see [`ConfigCommand`]).
pub fn config_command(text: &str, is_group: bool, patterns: &[Regex]) -> Option<ConfigCommand> {
    if !text.contains('/') || !contains_ignore_case(text, "/config") {
        return None;
    }
    let visible = strip_invisible(text);
    let mut rest = visible.trim();
    if is_group {
        rest = without_leading_mention(rest, patterns).trim();
    }
    let (first, rest) = split_token(rest);
    if !first.eq_ignore_ascii_case("/config") {
        return None;
    }
    let (verb, rest) = split_token(rest);
    let set = verb.eq_ignore_ascii_case("set");
    if !set && !verb.eq_ignore_ascii_case("unset") {
        return None;
    }
    let (token, after) = split_token(rest);
    let (path, raw) = match token.split_once('=') {
        Some((path, value)) if set => {
            // `path=value with spaces`: the value runs to the end of the text.
            let value_start = rest.len() - rest.trim_start().len() + path.len() + 1;
            (path, rest.get(value_start..).unwrap_or(value).trim())
        }
        _ => (token, after.trim()),
    };
    if path.is_empty() || path.contains('=') {
        return Some(ConfigCommand::Malformed);
    }
    let path = path.to_string();
    if !set {
        return Some(ConfigCommand::Unset { path });
    }
    Some(ConfigCommand::Set {
        path,
        raw: raw.to_string(),
    })
}

/// The first whitespace-separated token of `text` and what follows it (untrimmed).
fn split_token(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    }
}

pub const CONFIG_USAGE_REPLY: &str = "Usage: /config set path=value";
pub const CONFIG_OVERSIZED_REPLY: &str =
    "Usage: /config set path=value (value too large or too deeply nested)";
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
        let defaults = CommandNames::default();
        let is_control_command =
            |text: &str, group: bool, p: &[Regex]| is_control_command(text, group, p, &defaults);
        for yes in [
            "/status",
            "/STATUS now",
            "/whoami",
            "@bot /reset",
            "@bot, /help",
            "@bot stop \n",
        ] {
            assert!(is_control_command(yes, true, &p), "{yes}");
        }
        // §9.1: a bare stop word is a command in a DM; in a group only when addressed.
        for word in ["STOP", " cancel ", "st\u{200b}op", "\u{feff}Cancel"] {
            assert!(is_control_command(word, false, &p), "{word:?} in a DM");
            assert!(!is_control_command(word, true, &p), "{word:?} in a group");
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
    fn the_hosts_command_names_replace_the_defaults() {
        let host = CommandNames::new(Some(&["/Deploy".to_string(), "ping".into(), " ".into()]));
        assert!(is_control_command("/deploy now", false, &[], &host));
        assert!(is_control_command("/PING", false, &[], &host));
        assert!(
            !is_control_command("/status", false, &[], &host),
            "not the host's"
        );
        assert!(
            is_control_command("stop", false, &[], &host),
            "stop words stay"
        );
        assert!(CommandNames::new(None).contains("/whoami"));
    }

    #[test]
    fn config_commands_both_forms_case_143() {
        let p = pats(&["@bot\\b"]);
        // A set command compares by the request it makes: the value is parsed only there.
        let set = |path: &str, value: serde_json::Value| {
            Some(serde_json::json!({"op": "set", "path": path, "value": value}))
        };
        let unset = |path: &str| Some(serde_json::json!({"op": "unset", "path": path}));
        let cases = [
            (
                "/config set textChunkLimit=3000",
                false,
                set("textChunkLimit", 3000.into()),
            ),
            (
                "/config set channels.imessage.textChunkLimit 2000",
                false,
                set("channels.imessage.textChunkLimit", 2000.into()),
            ),
            (
                "@bot /config set messages.responsePrefix=[bot] says",
                true,
                set("messages.responsePrefix", "[bot] says".into()),
            ),
            (
                "@bot /config set messages.responsePrefix [bot] says",
                true,
                set("messages.responsePrefix", "[bot] says".into()),
            ),
            (
                "/config set a.b={x: 1, y: [true]}",
                false,
                set("a.b", serde_json::json!({"x": 1, "y": [true]})),
            ),
            ("/config set a='quoted'", false, set("a", "quoted".into())),
            ("/CONFIG SET a=b=c", false, set("a", "b=c".into())),
            ("/config unset x.y", false, unset("x.y")),
        ];
        for (text, group, want) in cases {
            let command = config_command(text, group, &p).expect(text);
            assert_eq!(command.request(), want, "{text}");
        }
        for text in [
            "/config set =3",
            "/config set",
            "/config unset",
            "/config unset a=b",
        ] {
            assert_eq!(
                config_command(text, false, &p),
                Some(ConfigCommand::Malformed),
                "{text}"
            );
        }
        for text in ["/config show", "/status", "/config"] {
            assert_eq!(config_command(text, false, &p), None, "{text}");
        }
    }

    /// Case 147: the value that overflowed the parser's stack is detected without being
    /// parsed, and refused by its size and depth before anything parses it.
    #[test]
    fn config_values_are_bounded_before_they_are_parsed() {
        let nested = |n: usize| format!("/config set a={}{}", "[".repeat(n), "]".repeat(n));
        for text in [nested(5_000), nested(500_000)] {
            let command = config_command(&text, false, &[]).expect("a config command");
            assert!(matches!(&command, ConfigCommand::Set { path, .. } if path == "a"));
            assert_eq!(command.bounded(), Err(Oversized));
            assert_eq!(command.request(), None, "never parsed");
        }
        // The bounds are inclusive, and every bracket counts, quoted or not.
        let at_limit = config_command(&nested(CONFIG_VALUE_MAX_DEPTH), false, &[]).unwrap();
        assert!(at_limit.request().is_some());
        let over = config_command(&nested(CONFIG_VALUE_MAX_DEPTH + 1), false, &[]).unwrap();
        assert_eq!(over.bounded(), Err(Oversized));
        let quoted = format!(
            "/config set a=\"{}\"",
            "{".repeat(CONFIG_VALUE_MAX_DEPTH + 1)
        );
        assert_eq!(
            config_command(&quoted, false, &[]).unwrap().bounded(),
            Err(Oversized)
        );
        // Closing brackets never let depth go below zero and then grow past the bound.
        let sawtooth = format!("/config set a={}{}", "]".repeat(100), "[".repeat(32));
        assert!(config_command(&sawtooth, false, &[])
            .unwrap()
            .bounded()
            .is_ok());
        let long = format!("/config set a={}", "x".repeat(CONFIG_VALUE_MAX_BYTES));
        assert!(config_command(&long, false, &[]).unwrap().bounded().is_ok());
        let longer = format!("/config set a={}", "x".repeat(CONFIG_VALUE_MAX_BYTES + 1));
        assert_eq!(
            config_command(&longer, false, &[]).unwrap().bounded(),
            Err(Oversized)
        );
        assert!(config_command("/config unset a", false, &[])
            .unwrap()
            .bounded()
            .is_ok());
        // A deep path nests the written config as much as a deep value.
        let deep_path = "a.".repeat(CONFIG_VALUE_MAX_DEPTH) + "a";
        for text in [
            format!("/config set {deep_path}=1"),
            format!("/config unset {deep_path}"),
        ] {
            let command = config_command(&text, false, &[]).unwrap();
            assert_eq!(command.bounded(), Err(Oversized), "{text}");
            assert_eq!(command.request(), None);
        }
        let ok_path = "a.".repeat(CONFIG_VALUE_MAX_DEPTH - 1) + "a";
        assert!(
            config_command(&format!("/config set {ok_path}=1"), false, &[])
                .unwrap()
                .bounded()
                .is_ok()
        );
    }

    #[test]
    fn invisible_characters_do_not_hide_mentions() {
        let p = pats(&["@bot\\b"]);
        assert!(is_mentioned("@\u{200b}bot hi", &p));
        assert!(is_mentioned("@BOT hi", &p));
        assert!(!is_mentioned("hello team", &p));
    }
}
