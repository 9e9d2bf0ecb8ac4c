//! The fields of `channels.imessage` and of each `accounts.<id>` (channel-behaviour.md §1.2),
//! read into a [`Partial`] whose `None` means "not set at this level".

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::allow::{self, AllowEntry, GroupKey};
use super::read::{self, Diag};
use super::rules;

/// Keys from the reference system's configs that are accepted and ignored (§1.4).
pub const COMPAT_KEYS: &[&str] = &[
    "historyLimit",
    "dmHistoryLimit",
    "dms",
    "markdown",
    "blockStreaming",
    "blockStreamingCoalesce",
    "heartbeat",
    "healthMonitor",
    "capabilities",
    "sendTransport",
    "contextVisibility",
    "defaultTo",
    "coalesceSameSenderDms",
];
const CATCHUP_COMPAT_KEYS: &[&str] = &[
    "perRunLimit",
    "firstRunLookbackMinutes",
    "maxFailureRetries",
];
/// OpenClaw's action gates that have no counterpart here (actions.md §3.7).
const ACTIONS_COMPAT_KEYS: &[&str] = &[
    "reply",
    "sendWithEffect",
    "renameGroup",
    "setGroupIcon",
    "addParticipant",
    "removeParticipant",
    "leaveGroup",
    "sendAttachment",
    "polls",
];
const GROUP_COMPAT_KEYS: &[&str] = &["tools", "toolsBySender", "systemPrompt"];

use super::{DmPolicy, GroupPolicy};

const DM_POLICIES: &[&str] = DmPolicy::NAMES;
const GROUP_POLICIES: &[&str] = GroupPolicy::NAMES;
const SERVICES: &[&str] = &["imessage", "sms", "auto"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupEntry {
    pub require_mention: Option<bool>,
}

pub type Groups = BTreeMap<GroupKey, GroupEntry>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionsPartial {
    pub reactions: Option<bool>,
    pub edit: Option<bool>,
    pub unsend: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchupPartial {
    pub enabled: Option<bool>,
    pub max_age_minutes: Option<i64>,
    pub late_tolerance_minutes: Option<i64>,
}

/// One level's explicitly set fields.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    pub enabled: Option<bool>,
    pub name: Option<String>,
    pub cli_path: Option<String>,
    pub db_path: Option<String>,
    pub remote_host: Option<String>,
    pub service: Option<String>,
    pub region: Option<String>,
    pub dm_policy: Option<String>,
    pub allow_from: Option<Vec<AllowEntry>>,
    pub group_policy: Option<String>,
    pub group_allow_from: Option<Vec<AllowEntry>>,
    pub groups: Option<Groups>,
    pub include_attachments: Option<bool>,
    pub attachment_roots: Option<Vec<String>>,
    pub remote_attachment_roots: Option<Vec<String>>,
    pub media_local_roots: Option<Vec<String>>,
    pub media_max_mb: Option<i64>,
    pub text_chunk_limit: Option<i64>,
    pub chunk_mode: Option<String>,
    pub response_prefix: Option<String>,
    pub config_writes: Option<bool>,
    pub allow_sms_commands: Option<bool>,
    pub send_read_receipts: Option<bool>,
    pub reaction_notifications: Option<String>,
    pub text_formatting: Option<String>,
    pub actions: Option<ActionsPartial>,
    pub rate_limit: Option<super::rate_limit::Limits>,
    pub tracked_sends: Option<String>,
    pub probe_timeout_ms: Option<i64>,
    pub send_timeout_ms: Option<i64>,
    pub catchup: Option<CatchupPartial>,
}

impl Partial {
    /// `self` overlaid by `over`: every field `over` sets replaces this one wholesale.
    pub fn overlay(&self, over: &Partial) -> Partial {
        macro_rules! pick {
            ($($f:ident),*) => { Partial { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* } };
        }
        pick!(
            enabled,
            name,
            cli_path,
            db_path,
            remote_host,
            service,
            region,
            dm_policy,
            allow_from,
            group_policy,
            group_allow_from,
            groups,
            include_attachments,
            attachment_roots,
            remote_attachment_roots,
            media_local_roots,
            media_max_mb,
            text_chunk_limit,
            chunk_mode,
            response_prefix,
            config_writes,
            allow_sms_commands,
            send_read_receipts,
            reaction_notifications,
            text_formatting,
            actions,
            rate_limit,
            tracked_sends,
            probe_timeout_ms,
            send_timeout_ms,
            catchup
        )
    }
}

fn line_free(s: &str) -> bool {
    !s.contains(['\r', '\n', '\u{2028}', '\u{2029}'])
}

/// Reads the fields of one level. `channel_level` permits `accounts` and `defaultAccount`
/// (which the caller reads).
pub fn read_section(
    map: &Map<String, Value>,
    path: &str,
    channel_level: bool,
    diag: &mut Diag,
) -> Partial {
    let mut p = Partial::default();
    let mut streaming_chunk_mode = None;
    for (key, value) in map {
        let at = read::field(path, key);
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "enabled" => p.enabled = read::boolean(value, &at, diag),
            "name" => {
                p.name = read::string(value, &at, diag).and_then(|s| {
                    let n = s.chars().count();
                    if (1..=64).contains(&n) && line_free(s) {
                        Some(s.to_string())
                    } else {
                        diag.error(&at, "must be 1 to 64 characters without line breaks");
                        None
                    }
                })
            }
            "cliPath" => {
                p.cli_path = read::string(value, &at, diag).and_then(|s| {
                    if rules::is_safe_executable(s) {
                        Some(s.to_string())
                    } else {
                        diag.error(&at, "not a safe executable path: line breaks, quotes and the characters ; & | $ < > and backtick are not allowed, and a bare command name may only use letters, digits and . _ + - and must not start with -");
                        None
                    }
                })
            }
            "dbPath" => {
                p.db_path = read::string(value, &at, diag).and_then(|s| {
                    if !s.is_empty() && !s.contains(['\0', '\r', '\n']) {
                        Some(s.to_string())
                    } else {
                        diag.error(&at, "must be a non-empty path without line breaks");
                        None
                    }
                })
            }
            "remoteHost" => {
                p.remote_host = read::string(value, &at, diag).and_then(|s| {
                    if rules::is_valid_remote_host(s) {
                        Some(s.trim().to_string())
                    } else {
                        diag.error(&at, "expected \"host\" or \"user@host\" (IPv6 in brackets); spaces, a leading \"-\", \"/\" and ssh options are not allowed");
                        None
                    }
                })
            }
            "service" => {
                p.service = read::one_of(value, &at, SERVICES, &read::one_of_reason(SERVICES), diag)
            }
            "region" => {
                p.region = match value.as_str() {
                    Some(s) if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
                        Some(s.to_ascii_uppercase())
                    }
                    _ => {
                        diag.error(&at, "must be a two-letter country code such as \"US\"");
                        None
                    }
                }
            }
            "dmPolicy" => {
                p.dm_policy =
                    read::one_of(value, &at, DM_POLICIES, &read::one_of_reason(DM_POLICIES), diag)
            }
            "allowFrom" => p.allow_from = allow::read_list(value, &at, "allowFrom", diag),
            "groupPolicy" => {
                p.group_policy = read::one_of(
                    value,
                    &at,
                    GROUP_POLICIES,
                    &read::one_of_reason(GROUP_POLICIES),
                    diag,
                )
            }
            "groupAllowFrom" => {
                p.group_allow_from = allow::read_list(value, &at, "groupAllowFrom", diag)
            }
            "groups" => p.groups = read_groups(value, &at, diag),
            "includeAttachments" => p.include_attachments = read::boolean(value, &at, diag),
            "attachmentRoots" => p.attachment_roots = read_roots(value, &at, diag),
            "remoteAttachmentRoots" => p.remote_attachment_roots = read_roots(value, &at, diag),
            "mediaLocalRoots" => p.media_local_roots = read_local_roots(value, &at, diag),
            "mediaMaxMb" => p.media_max_mb = read::integer_in(value, &at, 1, 100, diag),
            "textChunkLimit" => p.text_chunk_limit = read::integer_in(value, &at, 50, 20000, diag),
            "chunkMode" => p.chunk_mode = read_chunk_mode(value, &at, diag),
            "streaming" => streaming_chunk_mode = read_streaming(value, &at, diag),
            "responsePrefix" => p.response_prefix = read_prefix(value, &at, diag),
            "configWrites" => p.config_writes = read::boolean(value, &at, diag),
            "allowSmsCommands" => p.allow_sms_commands = read::boolean(value, &at, diag),
            "sendReadReceipts" => p.send_read_receipts = read::boolean(value, &at, diag),
            "reactionNotifications" => {
                let names = super::ReactionNotifications::NAMES;
                p.reaction_notifications =
                    read::one_of(value, &at, names, &read::one_of_reason(names), diag)
            }
            "textFormatting" => {
                let names = super::TextFormatting::NAMES;
                p.text_formatting =
                    read::one_of(value, &at, names, &read::one_of_reason(names), diag)
            }
            "actions" => p.actions = read_actions(value, &at, diag),
            "rateLimit" => p.rate_limit = read_rate_limit(value, &at, diag),
            "trackedSends" => {
                p.tracked_sends =
                    read::one_of(value, &at, &["auto", "off"], "must be \"auto\" or \"off\"", diag)
            }
            "probeTimeoutMs" => {
                p.probe_timeout_ms = read::integer_in(value, &at, 1000, 120_000, diag)
            }
            "sendTimeoutMs" => {
                p.send_timeout_ms = read::integer_in(value, &at, 10_000, 600_000, diag)
            }
            "catchup" => p.catchup = read_catchup(value, &at, diag),
            "accounts" | "defaultAccount" if channel_level => {}
            "accounts" | "defaultAccount" => diag.error(&at, "only allowed in channels.imessage"),
            k if COMPAT_KEYS.contains(&k) => diag.warn(format!(
                "{at} is accepted for compatibility but has no effect in this plugin"
            )),
            _ => diag.error(&at, "unknown field"),
        }
    }
    // OpenClaw 2026.9 reads `streaming.chunkMode`; one config works in both gateways.
    if let Some(alias) = streaming_chunk_mode {
        match &p.chunk_mode {
            Some(mode) if *mode != alias => diag.error(
                &read::field(&read::field(path, "streaming"), "chunkMode"),
                format!("conflicts with {}", read::field(path, "chunkMode")),
            ),
            _ => p.chunk_mode = Some(alias),
        }
    }
    p
}

/// Reads a response prefix (also used for `messages.responsePrefix`).
pub fn read_prefix(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    read::string(value, at, diag).and_then(|s| {
        if s.chars().count() <= 64 && line_free(s) {
            Some(s.to_string())
        } else {
            diag.error(at, "must be at most 64 characters without line breaks");
            None
        }
    })
}

fn read_roots(value: &Value, at: &str, diag: &mut Diag) -> Option<Vec<String>> {
    let items = read::array(value, at, diag)?;
    let mut roots = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = read::index(at, i);
        match item.as_str() {
            Some(s) if rules::is_valid_root(s) => roots.push(s.to_string()),
            _ => {
                ok = false;
                diag.error(&path, "root must be an absolute path other than \"/\", without \"..\" or NUL; \"*\" may only replace a whole path segment");
            }
        }
    }
    ok.then_some(roots)
}

/// `mediaLocalRoots`: plain absolute folders (no patterns); each is resolved when a send is
/// checked, so a root that does not exist yet is accepted here.
fn read_local_roots(value: &Value, at: &str, diag: &mut Diag) -> Option<Vec<String>> {
    let items = read::array(value, at, diag)?;
    let mut roots = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) if s.starts_with('/') && !s.contains('\0') => roots.push(s.to_string()),
            _ => diag.error(&read::index(at, i), "must be an absolute path"),
        }
    }
    (roots.len() == items.len()).then_some(roots)
}

fn read_groups(value: &Value, at: &str, diag: &mut Diag) -> Option<Groups> {
    let map = read::object(value, at, diag)?;
    let mut groups = Groups::new();
    let mut ok = true;
    for (key, entry) in map {
        let path = read::bracket(at, key);
        let Some(parsed) = allow::parse_group_key(key) else {
            ok = false;
            diag.error(&path, "group key must be a chat id (digits), \"chat_guid:…\", \"chat_identifier:…\" or \"*\"");
            continue;
        };
        let mut require_mention = None;
        if let Some(fields) = read::object(entry, &path, diag) {
            for (name, v) in fields {
                let fpath = read::field(&path, name);
                match name.as_str() {
                    "requireMention" if !v.is_null() => {
                        require_mention = read::boolean(v, &fpath, diag)
                    }
                    "requireMention" => {}
                    n if GROUP_COMPAT_KEYS.contains(&n) => diag.warn(format!(
                        "{fpath} is accepted for compatibility but has no effect in this plugin"
                    )),
                    _ => {
                        ok = false;
                        diag.error(&fpath, "unknown field");
                    }
                }
            }
        } else {
            ok = false;
        }
        groups.insert(parsed, GroupEntry { require_mention });
    }
    ok.then_some(groups)
}

fn read_chunk_mode(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    read::one_of(
        value,
        at,
        &["length", "newline"],
        "must be \"length\" or \"newline\"",
        diag,
    )
}

/// `streaming`: only `chunkMode` has an effect here; OpenClaw's other streaming keys are
/// accepted with a warning.
fn read_streaming(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    let map = read::object(value, at, diag)?;
    let mut mode = None;
    for (key, v) in map {
        let path = read::field(at, key);
        match key.as_str() {
            _ if v.is_null() => {}
            "chunkMode" => mode = read_chunk_mode(v, &path, diag),
            _ => diag.warn(format!(
                "{path} is accepted for compatibility but has no effect in this plugin"
            )),
        }
    }
    mode
}

fn read_actions(value: &Value, at: &str, diag: &mut Diag) -> Option<ActionsPartial> {
    let map = read::object(value, at, diag)?;
    let mut a = ActionsPartial::default();
    for (key, v) in map {
        let path = read::field(at, key);
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "reactions" => a.reactions = read::boolean(v, &path, diag),
            "edit" => a.edit = read::boolean(v, &path, diag),
            "unsend" => a.unsend = read::boolean(v, &path, diag),
            k if ACTIONS_COMPAT_KEYS.contains(&k) => diag.warn(format!(
                "{path} is accepted for compatibility but has no effect in this plugin"
            )),
            _ => diag.error(&path, "unknown field"),
        }
    }
    Some(a)
}

/// `rateLimit` (actions.md §6.4): unset keys keep their defaults.
fn read_rate_limit(value: &Value, at: &str, diag: &mut Diag) -> Option<super::rate_limit::Limits> {
    let map = read::object(value, at, diag)?;
    let mut l = super::rate_limit::Limits::default();
    for (key, v) in map {
        let path = read::field(at, key);
        if v.is_null() {
            continue;
        }
        let int = |lo: i64, hi: i64, diag: &mut Diag| read::integer_in(v, &path, lo, hi, diag);
        match key.as_str() {
            "enabled" => l.enabled = read::boolean(v, &path, diag).unwrap_or(l.enabled),
            "exemptAllowFrom" => {
                l.exempt_allow_from = read::boolean(v, &path, diag).unwrap_or(l.exempt_allow_from)
            }
            "accountPerMinute" => {
                l.account_per_minute = int(1, 600, diag).map_or(l.account_per_minute, |n| n as u32)
            }
            "accountBurst" => {
                l.account_burst = int(1, 100, diag).map_or(l.account_burst, |n| n as u32)
            }
            "chatPerMinute" => {
                l.chat_per_minute = int(1, 600, diag).map_or(l.chat_per_minute, |n| n as u32)
            }
            "chatBurst" => l.chat_burst = int(1, 100, diag).map_or(l.chat_burst, |n| n as u32),
            "maxUnanswered" => {
                l.max_unanswered = int(0, 1000, diag).map_or(l.max_unanswered, |n| n as u32)
            }
            "newChatsPerHour" => {
                l.new_chats_per_hour = int(0, 1000, diag).map_or(l.new_chats_per_hour, |n| n as u32)
            }
            "newChatsPerDay" => {
                l.new_chats_per_day = int(0, 10000, diag).map_or(l.new_chats_per_day, |n| n as u32)
            }
            "reachOutPerDay" => {
                l.reach_out_per_day = int(0, 10000, diag).map_or(l.reach_out_per_day, |n| n as u32)
            }
            "maxWaitMs" => {
                l.max_wait_ms = int(0, 600_000, diag).map_or(l.max_wait_ms, |n| n as u64)
            }
            _ => diag.error(&path, "unknown field"),
        }
    }
    Some(l)
}

fn read_catchup(value: &Value, at: &str, diag: &mut Diag) -> Option<CatchupPartial> {
    let map = read::object(value, at, diag)?;
    let mut c = CatchupPartial::default();
    for (key, v) in map {
        let path = read::field(at, key);
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "enabled" => c.enabled = read::boolean(v, &path, diag),
            "maxAgeMinutes" => c.max_age_minutes = read::integer_in(v, &path, 1, 1440, diag),
            "lateToleranceMinutes" => {
                c.late_tolerance_minutes = read::integer_in(v, &path, 1, 240, diag)
            }
            k if CATCHUP_COMPAT_KEYS.contains(&k) => diag.warn(format!(
                "{path} is accepted for compatibility but has no effect in this plugin"
            )),
            _ => diag.error(&path, "unknown field"),
        }
    }
    Some(c)
}
