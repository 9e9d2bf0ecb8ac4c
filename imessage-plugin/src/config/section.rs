//! The fields of `channels.imessage` and of each `accounts.<id>` (channel-behaviour.md §1.2),
//! read into a [`Partial`] whose `None` means "not set at this level".

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::allow::{self, AllowEntry, GroupKey};
use super::fields::{self, Field, Kind, Table};
use super::rate_limit::Limits;
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    pub rate_limit: Option<Limits>,
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

/// What one level reads: its fields, and `streaming.chunkMode` until it is reconciled with
/// `chunkMode`.
#[derive(Default)]
pub struct Level {
    pub p: Partial,
    streaming_chunk_mode: Option<String>,
}

/// Reads the fields of one level. `channel_level` permits `accounts` and `defaultAccount`
/// (which the caller reads).
pub fn read_section(
    map: &Map<String, Value>,
    path: &str,
    channel_level: bool,
    diag: &mut Diag,
) -> Partial {
    let mut level = Level::default();
    SECTION.read_into(map, path, diag, &mut level, |key, at, diag| {
        let reserved = CHANNEL_ONLY.contains(&key);
        if reserved && !channel_level {
            diag.error(at, "only allowed in channels.imessage");
        }
        reserved
    });
    let Level {
        mut p,
        streaming_chunk_mode,
    } = level;
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

/// The keys only `channels.imessage` has (read by `config::parse`), with their schema.
pub const CHANNEL_ONLY: &[&str] = &["accounts", "defaultAccount"];

/// Text without line breaks (U+2028/U+2029 included): the schema form of [`line_free`].
const NO_LINE_BREAKS: &str = "^[^\\r\\n\\u2028\\u2029]*$";

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

fn read_name(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    read::string(value, at, diag).and_then(|s| {
        let n = s.chars().count();
        if (1..=64).contains(&n) && line_free(s) {
            Some(s.to_string())
        } else {
            diag.error(at, "must be 1 to 64 characters without line breaks");
            None
        }
    })
}

fn read_cli_path(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    read::string(value, at, diag).and_then(|s| {
        if rules::is_safe_executable(s) {
            Some(s.to_string())
        } else {
            diag.error(at, "not a safe executable path: line breaks, quotes and the characters ; & | $ < > and backtick are not allowed, and a bare command name may only use letters, digits and . _ + - and must not start with -");
            None
        }
    })
}

fn read_db_path(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    read::string(value, at, diag).and_then(|s| {
        if !s.is_empty() && !s.contains(['\0', '\r', '\n']) {
            Some(s.to_string())
        } else {
            diag.error(at, "must be a non-empty path without line breaks");
            None
        }
    })
}

fn read_remote_host(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    read::string(value, at, diag).and_then(|s| {
        if rules::is_valid_remote_host(s) {
            Some(s.trim().to_string())
        } else {
            diag.error(at, "expected \"host\" or \"user@host\" (IPv6 in brackets); spaces, a leading \"-\", \"/\" and ssh options are not allowed");
            None
        }
    })
}

fn read_region(value: &Value, at: &str, diag: &mut Diag) -> Option<String> {
    match value.as_str() {
        Some(s) if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(s.to_ascii_uppercase())
        }
        _ => {
            diag.error(at, "must be a two-letter country code such as \"US\"");
            None
        }
    }
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
    let errors_before = diag.errors.len();
    let mut groups = Groups::new();
    for (key, entry) in map {
        let path = read::bracket(at, key);
        let Some(parsed) = allow::parse_group_key(key) else {
            diag.error(&path, "group key must be a chat id (digits), \"chat_guid:…\", \"chat_identifier:…\" or \"*\"");
            continue;
        };
        let entry = GROUP_ENTRY
            .read_object(entry, &path, diag)
            .unwrap_or_default();
        groups.insert(parsed, entry);
    }
    (diag.errors.len() == errors_before).then_some(groups)
}

fn nested_schema<T>(table: &'static fields::Table<T>) -> Value {
    super::schema::object(table)
}

/// An array of strings; `pattern` (when set) is each item's rule.
fn strings(pattern: Option<&str>) -> Value {
    let mut item = json!({"type": "string"});
    if let Some(p) = pattern {
        item["pattern"] = json!(p);
    }
    json!({"type": "array", "items": item})
}

/// `cliPath`: path-like (has `/` or `\`, or starts with `.` or `~`) without the forbidden
/// characters, or a bare command name (the rule of `rules::is_safe_executable`).
const CLI_PATH_PATTERN: &str = "^(?:[^\\u0000\\r\\n'\";&|`$<>]*[/\\\\][^\\u0000\\r\\n'\";&|`$<>]*|[.~][^\\u0000\\r\\n'\";&|`$<>]*|[A-Za-z0-9_+][A-Za-z0-9._+-]*)$";
/// Unicode `White_Space`, what `str::trim` removes.
macro_rules! white_space {
    () => {
        "[\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    };
}
/// `remoteHost` (`rules::is_valid_remote_host`): `host` or `user@host`, IPv6 in brackets,
/// with the white space `str::trim` removes around it (spelled out: `\s` differs between
/// regex dialects).
const REMOTE_HOST_PATTERN: &str = concat!(
    "^",
    white_space!(),
    "*",
    "(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?(?:\\[[A-Za-z0-9:.%]+\\]|[A-Za-z0-9._][A-Za-z0-9._-]*)",
    white_space!(),
    "*$"
);

/// One root segment (`rules::is_valid_root`): `*`, or a name without `*` that is not `..`.
macro_rules! root_segment {
    () => {
        "(?:\\*|[^/*\\u0000.][^/*\\u0000]*|\\.|\\.[^/*\\u0000.][^/*\\u0000]*|\\.\\.[^/*\\u0000]+)"
    };
}
const ROOT_PATTERN: &str = concat!("^/+(?:", root_segment!(), "/+)*", root_segment!(), "/*$");

/// The keys of `channels.imessage` and of each `accounts.<id>` (channel-behaviour.md §1.2).
pub static SECTION: Table<Level> = Table {
    fields: &[
        Field {
            name: "enabled",
            doc: "Whether the account runs; false at the channel level disables every account.",
            kind: Kind::Bool { default: Some(true), set: |l, v| l.p.enabled = Some(v) },
        },
        Field {
            name: "name",
            doc: "Display name of the account (default: the account id).",
            kind: Kind::Custom {
                schema: || json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": NO_LINE_BREAKS}),
                read: |v, at, d, l| l.p.name = read_name(v, at, d),
            },
        },
        Field {
            name: "cliPath",
            doc: "The imsg binary: a command on PATH, a path (~ expands), or an SSH wrapper script.",
            kind: Kind::Custom {
                schema: || json!({"type": "string", "default": "imsg", "pattern": CLI_PATH_PATTERN}),
                read: |v, at, d, l| l.p.cli_path = read_cli_path(v, at, d),
            },
        },
        Field {
            name: "dbPath",
            doc: "The Messages database imsg reads (default: imsg's own, ~/Library/Messages/chat.db).",
            kind: Kind::Custom {
                schema: || json!({"type": "string", "pattern": "^[^\\u0000\\r\\n]+$"}),
                read: |v, at, d, l| l.p.db_path = read_db_path(v, at, d),
            },
        },
        Field {
            name: "remoteHost",
            doc: "\"host\" or \"user@host\" of the Mac when cliPath is an SSH wrapper (default: detected from the wrapper).",
            kind: Kind::Custom {
                schema: || json!({"type": "string", "pattern": REMOTE_HOST_PATTERN}),
                read: |v, at, d, l| l.p.remote_host = read_remote_host(v, at, d),
            },
        },
        Field {
            name: "service",
            doc: "Which service sends go through.",
            kind: Kind::Enum { names: SERVICES, default: Some("auto"), set: |l, v| l.p.service = Some(v) },
        },
        Field {
            name: "region",
            doc: "Two-letter country code for phone numbers written without a country code.",
            kind: Kind::Custom {
                schema: || json!({"type": "string", "default": "US", "pattern": "^[A-Za-z]{2}$"}),
                read: |v, at, d, l| l.p.region = read_region(v, at, d),
            },
        },
        Field {
            name: "dmPolicy",
            doc: "Who may DM the agent: pairing codes for strangers, an allowlist, anyone (\"*\" in allowFrom), or nobody.",
            kind: Kind::Enum { names: DM_POLICIES, default: Some("pairing"), set: |l, v| l.p.dm_policy = Some(v) },
        },
        Field {
            name: "allowFrom",
            doc: "Allowed senders: phone numbers with + and country code, emails, chat_id:N, chat_guid:G, chat_identifier:I, or \"*\".",
            kind: Kind::Custom {
                schema: || json!({"type": "array", "items": {"type": ["string", "number"]}, "default": []}),
                read: |v, at, d, l| l.p.allow_from = allow::read_list(v, at, "allowFrom", d),
            },
        },
        Field {
            name: "groupPolicy",
            doc: "Which group messages are answered: senders from groupAllowFrom (else allowFrom), any, or none.",
            kind: Kind::Enum { names: GROUP_POLICIES, default: Some("allowlist"), set: |l, v| l.p.group_policy = Some(v) },
        },
        Field {
            name: "groupAllowFrom",
            doc: "Allowed group senders or chats, as allowFrom entries (default: allowFrom).",
            kind: Kind::Custom {
                schema: || json!({"type": "array", "items": {"type": ["string", "number"]}}),
                read: |v, at, d, l| l.p.group_allow_from = allow::read_list(v, at, "groupAllowFrom", d),
            },
        },
        Field {
            name: "groups",
            doc: "Group chats answered, keyed by chat id (digits), \"chat_guid:…\", \"chat_identifier:…\" or \"*\".",
            kind: Kind::Custom {
                schema: || json!({"type": "object", "additionalProperties": nested_schema(&GROUP_ENTRY)}),
                read: |v, at, d, l| l.p.groups = read_groups(v, at, d),
            },
        },
        Field {
            name: "includeAttachments",
            doc: "Copy inbound attachments into the state folder and hand them to the host.",
            kind: Kind::Bool { default: Some(false), set: |l, v| l.p.include_attachments = Some(v) },
        },
        Field {
            name: "attachmentRoots",
            doc: "Folders inbound attachments are copied from: absolute, \"*\" only as a whole segment, no \"..\".",
            kind: Kind::Custom {
                schema: || {
                    let mut s = strings(Some(ROOT_PATTERN));
                    s["default"] = json!([super::DEFAULT_ATTACHMENT_ROOT]);
                    s
                },
                read: |v, at, d, l| l.p.attachment_roots = read_roots(v, at, d),
            },
        },
        Field {
            name: "remoteAttachmentRoots",
            doc: "attachmentRoots on the remote Mac (default: attachmentRoots).",
            kind: Kind::Custom {
                schema: || strings(Some(ROOT_PATTERN)),
                read: |v, at, d, l| l.p.remote_attachment_roots = read_roots(v, at, d),
            },
        },
        Field {
            name: "mediaLocalRoots",
            doc: "Absolute folders outbound media must lie under (default: not restricted by the config).",
            kind: Kind::Custom {
                schema: || strings(Some("^/[^\\u0000]*$")),
                read: |v, at, d, l| l.p.media_local_roots = read_local_roots(v, at, d),
            },
        },
        Field {
            name: "mediaMaxMb",
            doc: "Largest attachment sent or received, in MB.",
            kind: Kind::Int { min: 1, max: 100, default: Some(16), set: |l, v| l.p.media_max_mb = Some(v) },
        },
        Field {
            name: "textChunkLimit",
            doc: "Longest reply part, in UTF-16 units; longer replies are split.",
            kind: Kind::Int { min: 50, max: 20000, default: Some(4000), set: |l, v| l.p.text_chunk_limit = Some(v) },
        },
        Field {
            name: "chunkMode",
            doc: "Split replies at the limit (\"length\") or pack whole paragraphs up to it (\"newline\").",
            kind: Kind::Enum { names: CHUNK_MODES, default: Some("length"), set: |l, v| l.p.chunk_mode = Some(v) },
        },
        Field {
            name: "streaming",
            doc: "OpenClaw's streaming settings: chunkMode is read as chunkMode, the other keys have no effect.",
            kind: Kind::Custom {
                schema: || nested_schema(&STREAMING),
                read: |v, at, d, l| l.streaming_chunk_mode = STREAMING.read_object(v, at, d).flatten(),
            },
        },
        Field {
            name: "responsePrefix",
            doc: "Text put before every reply, at most 64 characters (default: messages.responsePrefix).",
            kind: Kind::Custom {
                schema: || json!({"type": "string", "maxLength": 64, "pattern": NO_LINE_BREAKS}),
                read: |v, at, d, l| l.p.response_prefix = read_prefix(v, at, d),
            },
        },
        Field {
            name: "configWrites",
            doc: "Whether /config set from an owner may change this channel's config.",
            kind: Kind::Bool { default: Some(true), set: |l, v| l.p.config_writes = Some(v) },
        },
        Field {
            name: "allowSmsCommands",
            doc: "Whether messages relayed by SMS or RCS may run commands and count as the owner.",
            kind: Kind::Bool { default: Some(false), set: |l, v| l.p.allow_sms_commands = Some(v) },
        },
        Field {
            name: "sendReadReceipts",
            doc: "Mark a chat read once the host acknowledged its message (needs the imsg bridge).",
            kind: Kind::Bool { default: Some(true), set: |l, v| l.p.send_read_receipts = Some(v) },
        },
        Field {
            name: "reactionNotifications",
            doc: "Which tapbacks reach the host: none, those on this account's messages, or all.",
            kind: Kind::Enum {
                names: super::ReactionNotifications::NAMES,
                default: Some("own"),
                set: |l, v| l.p.reaction_notifications = Some(v),
            },
        },
        Field {
            name: "textFormatting",
            doc: "Markdown in replies: iMessage formatting where imsg can, markers removed, or sent as written.",
            kind: Kind::Enum {
                names: super::TextFormatting::NAMES,
                default: Some("native"),
                set: |l, v| l.p.text_formatting = Some(v),
            },
        },
        Field {
            name: "actions",
            doc: "Which message actions a host may take (they need the imsg bridge).",
            kind: Kind::Custom {
                schema: || nested_schema(&ACTIONS),
                read: |v, at, d, l| l.p.actions = ACTIONS.read_object(v, at, d),
            },
        },
        Field {
            name: "rateLimit",
            doc: "Outbound limits; DMs to handles in allowFrom skip the three caps when exemptAllowFrom.",
            kind: Kind::Custom {
                schema: || nested_schema(&RATE_LIMIT),
                read: |v, at, d, l| l.p.rate_limit = RATE_LIMIT.read_object(v, at, d),
            },
        },
        Field {
            name: "trackedSends",
            doc: "Send text parts with send.tracked where imsg offers it, so a lost reply can be settled.",
            kind: Kind::Enum { names: TRACKED_SENDS, default: Some("auto"), set: |l, v| l.p.tracked_sends = Some(v) },
        },
        Field {
            name: "probeTimeoutMs",
            doc: "How long the readiness probe may take, in milliseconds.",
            kind: Kind::Int { min: 1000, max: 120_000, default: Some(10_000), set: |l, v| l.p.probe_timeout_ms = Some(v) },
        },
        Field {
            name: "sendTimeoutMs",
            doc: "How long one send may take, in milliseconds.",
            kind: Kind::Int { min: 10_000, max: 600_000, default: Some(150_000), set: |l, v| l.p.send_timeout_ms = Some(v) },
        },
        Field {
            name: "catchup",
            doc: "Catch-up after downtime: messages older than maxAgeMinutes are dropped as stale.",
            kind: Kind::Custom {
                schema: || nested_schema(&CATCHUP),
                read: |v, at, d, l| l.p.catchup = CATCHUP.read_object(v, at, d),
            },
        },
    ],
    compat: COMPAT_KEYS,
    open: false,
};

const CHUNK_MODES: &[&str] = &["length", "newline"];
const TRACKED_SENDS: &[&str] = &["auto", "off"];

/// `streaming`: only `chunkMode` has an effect here; OpenClaw's other streaming keys are
/// accepted with a warning.
static STREAMING: Table<Option<String>> = Table {
    fields: &[Field {
        name: "chunkMode",
        doc: "The same setting as chunkMode (OpenClaw 2026.9's place for it); both set must agree.",
        kind: Kind::Enum {
            names: CHUNK_MODES,
            default: None,
            set: |m, v| *m = Some(v),
        },
    }],
    compat: &[],
    open: true,
};

/// A `groups` entry.
static GROUP_ENTRY: Table<GroupEntry> = Table {
    fields: &[Field {
        name: "requireMention",
        doc: "Answer only messages that match a mention pattern.",
        kind: Kind::Bool {
            default: Some(true),
            set: |g, v| g.require_mention = Some(v),
        },
    }],
    compat: GROUP_COMPAT_KEYS,
    open: false,
};

/// `actions` (actions.md §3.7): each gate defaults to on.
static ACTIONS: Table<ActionsPartial> = Table {
    fields: &[
        Field {
            name: "reactions",
            doc: "Tapbacks (message.react).",
            kind: Kind::Bool {
                default: Some(true),
                set: |a, v| a.reactions = Some(v),
            },
        },
        Field {
            name: "edit",
            doc: "Edits of own messages, within 15 minutes and 5 times (message.edit).",
            kind: Kind::Bool {
                default: Some(true),
                set: |a, v| a.edit = Some(v),
            },
        },
        Field {
            name: "unsend",
            doc: "Unsending own messages, within 2 minutes (message.unsend).",
            kind: Kind::Bool {
                default: Some(true),
                set: |a, v| a.unsend = Some(v),
            },
        },
    ],
    compat: ACTIONS_COMPAT_KEYS,
    open: false,
};

/// `catchup` (channel-behaviour.md §6).
static CATCHUP: Table<CatchupPartial> = Table {
    fields: &[
        Field {
            name: "enabled",
            doc: "Deliver messages that arrived while the gateway was down.",
            kind: Kind::Bool {
                default: Some(true),
                set: |c, v| c.enabled = Some(v),
            },
        },
        Field {
            name: "maxAgeMinutes",
            doc: "Older messages are dropped as stale.",
            kind: Kind::Int {
                min: 1,
                max: 1440,
                default: Some(120),
                set: |c, v| c.max_age_minutes = Some(v),
            },
        },
        Field {
            name: "lateToleranceMinutes",
            doc: "How late a live message may be before it counts as catch-up.",
            kind: Kind::Int {
                min: 1,
                max: 240,
                default: Some(15),
                set: |c, v| c.late_tolerance_minutes = Some(v),
            },
        },
    ],
    compat: CATCHUP_COMPAT_KEYS,
    open: false,
};

/// `rateLimit` (actions.md §6.4): unset keys keep their defaults. The values fit their
/// fields: each range is checked before `set` runs.
static RATE_LIMIT: Table<Limits> = Table {
    fields: &[
        Field {
            name: "enabled",
            doc: "Whether outbound sends are limited.",
            kind: Kind::Bool { default: Some(Limits::DEFAULT.enabled), set: |l, v| l.enabled = v },
        },
        Field {
            name: "accountPerMinute",
            doc: "Sends per minute for the account.",
            kind: Kind::Int { min: 1, max: 600, default: Some(Limits::DEFAULT.account_per_minute as i64), set: |l, v| l.account_per_minute = v as u32 },
        },
        Field {
            name: "accountBurst",
            doc: "Sends the account may make at once before the per-minute rate applies.",
            kind: Kind::Int { min: 1, max: 100, default: Some(Limits::DEFAULT.account_burst as i64), set: |l, v| l.account_burst = v as u32 },
        },
        Field {
            name: "chatPerMinute",
            doc: "Sends per minute to one chat.",
            kind: Kind::Int { min: 1, max: 600, default: Some(Limits::DEFAULT.chat_per_minute as i64), set: |l, v| l.chat_per_minute = v as u32 },
        },
        Field {
            name: "chatBurst",
            doc: "Sends to one chat at once before the per-minute rate applies.",
            kind: Kind::Int { min: 1, max: 100, default: Some(Limits::DEFAULT.chat_burst as i64), set: |l, v| l.chat_burst = v as u32 },
        },
        Field {
            name: "maxUnanswered",
            doc: "Sends to a conversation since its last inbound message (0: no cap).",
            kind: Kind::Int { min: 0, max: 1000, default: Some(Limits::DEFAULT.max_unanswered as i64), set: |l, v| l.max_unanswered = v as u32 },
        },
        Field {
            name: "newChatsPerHour",
            doc: "New conversations (no inbound row in 30 days) per hour (0: no cap).",
            kind: Kind::Int { min: 0, max: 1000, default: Some(Limits::DEFAULT.new_chats_per_hour as i64), set: |l, v| l.new_chats_per_hour = v as u32 },
        },
        Field {
            name: "newChatsPerDay",
            doc: "New conversations (no inbound row in 30 days) per day (0: no cap).",
            kind: Kind::Int { min: 0, max: 10000, default: Some(Limits::DEFAULT.new_chats_per_day as i64), set: |l, v| l.new_chats_per_day = v as u32 },
        },
        Field {
            name: "reachOutPerDay",
            doc: "Sends per day to conversations with no inbound row in the last 24 h (0: no cap).",
            kind: Kind::Int { min: 0, max: 10000, default: Some(Limits::DEFAULT.reach_out_per_day as i64), set: |l, v| l.reach_out_per_day = v as u32 },
        },
        Field {
            name: "maxWaitMs",
            doc: "How long the limiter may delay one request before its remaining parts are not sent, in ms.",
            kind: Kind::Int { min: 0, max: 600_000, default: Some(Limits::DEFAULT.max_wait_ms as i64), set: |l, v| l.max_wait_ms = v as u64 },
        },
        Field {
            name: "exemptAllowFrom",
            doc: "DMs to handles listed in allowFrom skip maxUnanswered, newChats* and reachOutPerDay.",
            kind: Kind::Bool { default: Some(Limits::DEFAULT.exempt_allow_from), set: |l, v| l.exempt_allow_from = v },
        },
    ],
    compat: &[],
    open: false,
};
