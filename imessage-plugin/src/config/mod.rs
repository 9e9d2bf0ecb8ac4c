//! Parsing and validating the gateway config into the effective per-account settings
//! (channel-behaviour.md §1 and §11).
//!
//! Every error is collected as one `<path>: <reason>` line; with any error, no account starts.
//! Warnings are returned for the caller to log once per load. Regexes are compiled here, once
//! per load, never per message.

pub mod allow;
pub mod fields;
pub mod globals;
pub mod live;
pub mod rate_limit;
pub mod read;
pub mod rules;
pub mod schema;
pub mod section;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

pub use allow::{AllowEntry, GroupKey};
pub use globals::{Agent, Binding, Globals, Peer};
pub use live::{Configured, Live};
pub use section::{GroupEntry, Groups};

use read::Diag;
use section::Partial;

/// `channels.imessage` missing entirely.
pub const MISSING_SECTION_WARNING: &str = "channels.imessage is not configured; running account \"default\" with defaults (dmPolicy \"pairing\", groupPolicy \"allowlist\")";

pub const DEFAULT_ATTACHMENT_ROOT: &str = "/Users/*/Library/Messages/Attachments";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmPolicy {
    Pairing,
    Allowlist,
    Open,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPolicy {
    Allowlist,
    Open,
    Disabled,
}

/// The config names of each policy, in one place: parsing, validation messages and status
/// all read them from here.
macro_rules! named {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            pub fn parse(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

named!(DmPolicy {
    Pairing = "pairing",
    Allowlist = "allowlist",
    Open = "open",
    Disabled = "disabled",
});
named!(GroupPolicy {
    Allowlist = "allowlist",
    Open = "open",
    Disabled = "disabled",
});

/// When typing shows (actions.md §3.1, OpenClaw's `TypingModeSchema`): `instant` starts it as
/// soon as a DM is accepted; `thinking` and `message` leave it to the host; `never` turns it
/// off, `chat.typing` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TypingMode {
    Never,
    #[default]
    Instant,
    Thinking,
    Message,
}

/// Which tapbacks reach the host (actions.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReactionNotifications {
    Off,
    /// Only tapbacks on messages this account sent (OpenClaw's default).
    #[default]
    Own,
    All,
}

named!(ReactionNotifications {
    Off = "off",
    Own = "own",
    All = "all",
});

named!(TypingMode {
    Never = "never",
    Instant = "instant",
    Thinking = "thinking",
    Message = "message",
});

/// What happens to Markdown in outgoing text (actions.md §5.4): `native` sends it as
/// iMessage formatting where imsg can, `plain` strips the markers, `off` sends it verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextFormatting {
    #[default]
    Native,
    Plain,
    Off,
}

named!(TextFormatting {
    Native = "native",
    Plain = "plain",
    Off = "off",
});

/// Which message actions a host may take (actions.md §3.7); each defaults to on, as in
/// OpenClaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionGates {
    pub reactions: bool,
    pub edit: bool,
    pub unsend: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkMode {
    Length,
    Newline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchupSettings {
    pub enabled: bool,
    pub max_age_minutes: i64,
    pub late_tolerance_minutes: i64,
}

/// The effective settings of one account, defaults applied.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: String,
    /// File-system-safe form of the id, for state folders.
    pub key: String,
    pub name: String,
    pub enabled: bool,
    pub cli_path: String,
    pub db_path: Option<String>,
    pub remote_host: Option<String>,
    pub service: String,
    pub region: String,
    pub dm_policy: DmPolicy,
    pub allow_from: Vec<AllowEntry>,
    pub group_policy: GroupPolicy,
    pub group_allow_from: Option<Vec<AllowEntry>>,
    pub groups: Option<Groups>,
    pub include_attachments: bool,
    pub attachment_roots: Vec<String>,
    pub remote_attachment_roots: Vec<String>,
    /// Folders outbound media must lie under (`mediaLocalRoots`); `None`: not restricted by
    /// the config (the host may still pass its own, `HostFeatures::media_local_roots`).
    pub media_local_roots: Option<Vec<String>>,
    pub media_max_mb: u64,
    pub text_chunk_limit: usize,
    pub chunk_mode: ChunkMode,
    pub response_prefix: Option<String>,
    pub config_writes: bool,
    /// Rows relayed by SMS or RCS may authorize commands and be the owner (§2 step 14).
    pub allow_sms_commands: bool,
    /// Mark a chat read once the host has acknowledged a routed message (actions.md §3.2).
    pub send_read_receipts: bool,
    pub reaction_notifications: ReactionNotifications,
    pub text_formatting: TextFormatting,
    pub actions: ActionGates,
    pub rate_limit: rate_limit::Limits,
    /// Send text parts with `send.tracked` where imsg offers it (`trackedSends: "auto"`,
    /// actions.md §7.3); `false` for `"off"`.
    pub tracked_sends: bool,
    pub probe_timeout_ms: u64,
    pub send_timeout_ms: u64,
    pub catchup: CatchupSettings,
}

/// The settings whose change needs the account's processes restarted (§11 "Reload"); the
/// others (policy, routing, prefixes, chunking, …) apply to the next message.
#[derive(Debug, PartialEq)]
pub struct ProcessSettings<'a> {
    cli_path: &'a str,
    db_path: Option<&'a str>,
    remote_host: Option<&'a str>,
    include_attachments: bool,
    attachment_roots: &'a [String],
    remote_attachment_roots: &'a [String],
    media_max_mb: u64,
    probe_timeout_ms: u64,
    send_timeout_ms: u64,
    enabled: bool,
}

impl AccountConfig {
    pub fn process_settings(&self) -> ProcessSettings<'_> {
        ProcessSettings {
            cli_path: &self.cli_path,
            db_path: self.db_path.as_deref(),
            remote_host: self.remote_host.as_deref(),
            include_attachments: self.include_attachments,
            attachment_roots: &self.attachment_roots,
            remote_attachment_roots: &self.remote_attachment_roots,
            media_max_mb: self.media_max_mb,
            probe_timeout_ms: self.probe_timeout_ms,
            send_timeout_ms: self.send_timeout_ms,
            enabled: self.enabled,
        }
    }

    /// The group sender list: `groupAllowFrom` when set (even empty), else `allowFrom`.
    pub fn group_senders(&self) -> &[AllowEntry] {
        self.group_allow_from.as_deref().unwrap_or(&self.allow_from)
    }

    pub fn media_max_bytes(&self) -> u64 {
        self.media_max_mb * 1_048_576
    }
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sorted by id.
    pub accounts: Vec<AccountConfig>,
    pub default_account: String,
    pub globals: Arc<Globals>,
    /// The channel-level `configWrites` (§9.2 target check), default true.
    pub channel_config_writes: bool,
    pub warnings: Vec<String>,
}

impl Config {
    pub fn account(&self, id: &str) -> Option<&AccountConfig> {
        let id = id.trim().to_lowercase();
        self.accounts.iter().find(|a| a.id == id)
    }

    /// The account named, or the default account when `id` is `None`.
    pub fn resolve_account(&self, id: Option<&str>) -> Option<&AccountConfig> {
        self.account(id.unwrap_or(&self.default_account))
    }
}

/// Account ids: `[a-z0-9][a-z0-9_-]{0,63}` after trim and lower-casing.
fn valid_account_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub fn account_key(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses and validates the whole gateway config.
pub fn parse(root: &Value) -> Result<Config, Vec<String>> {
    let mut diag = Diag::default();
    let base = "channels.imessage";
    let section = read::lookup(root, &["channels", "imessage"]);
    let empty = serde_json::Map::new();
    let map = match section {
        None => {
            diag.warn(MISSING_SECTION_WARNING);
            &empty
        }
        Some(v) => read::object(v, base, &mut diag).unwrap_or(&empty),
    };
    let channel = section::read_section(map, base, true, &mut diag);
    let globals = globals::read_globals(root, &mut diag);

    // Accounts: (normalised id, key as written, its partial).
    let mut accounts: Vec<(String, String, Partial)> = Vec::new();
    let accounts_path = read::field(base, "accounts");
    if let Some(v) = read::present(map.get("accounts")) {
        if let Some(entries) = read::object(v, &accounts_path, &mut diag) {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for (raw_key, value) in entries {
                let id = raw_key.trim().to_lowercase();
                let at = read::field(&accounts_path, raw_key);
                if !valid_account_id(&id) {
                    diag.error(&at, "account id must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit");
                    continue;
                }
                if let Some(first) = seen.get(&id) {
                    diag.error(
                        &accounts_path,
                        format!("\"{first}\" and \"{raw_key}\" name the same account"),
                    );
                    continue;
                }
                seen.insert(id.clone(), raw_key.clone());
                let empty_account = serde_json::Map::new();
                let fields = if value.is_null() {
                    &empty_account
                } else {
                    read::object(value, &at, &mut diag).unwrap_or(&empty_account)
                };
                let partial = section::read_section(fields, &at, false, &mut diag);
                accounts.push((id, raw_key.clone(), partial));
            }
        }
    }
    let explicit_accounts = !accounts.is_empty();
    if !explicit_accounts {
        accounts.push(("default".into(), "default".into(), Partial::default()));
    }
    accounts.sort_by(|a, b| a.0.cmp(&b.0));

    let default_account = match read::present(map.get("defaultAccount")) {
        Some(v) => {
            let at = read::field(base, "defaultAccount");
            match read::string(v, &at, &mut diag) {
                Some(name) => {
                    let id = name.trim().to_lowercase();
                    if explicit_accounts && accounts.iter().any(|a| a.0 == id) {
                        id
                    } else {
                        diag.error(&at, format!("no account named \"{name}\""));
                        String::new()
                    }
                }
                None => String::new(),
            }
        }
        None if accounts.iter().any(|a| a.0 == "default") => "default".into(),
        // Never empty: a config without accounts gets `default` above.
        None => accounts[0].0.clone(),
    };

    let mut effective = Vec::new();
    for (id, raw_key, partial) in &accounts {
        let merged = channel.overlay(partial);
        let enabled = channel.enabled != Some(false) && partial.enabled != Some(false);
        let allow_path = if explicit_accounts {
            format!("{}.allowFrom", read::field(&accounts_path, raw_key))
        } else {
            format!("{base}.allowFrom")
        };
        let account = finish(id, merged, enabled);
        check_cross_rules(&account, &allow_path, &mut diag);
        warn_account(&account, &mut diag);
        effective.push(account);
    }

    if !diag.errors.is_empty() {
        return Err(diag.errors);
    }
    Ok(Config {
        accounts: effective,
        default_account,
        globals: Arc::new(globals),
        channel_config_writes: channel.config_writes.unwrap_or(true),
        warnings: diag.warnings,
    })
}

fn finish(id: &str, p: Partial, enabled: bool) -> AccountConfig {
    let attachment_roots = p
        .attachment_roots
        .unwrap_or_else(|| vec![DEFAULT_ATTACHMENT_ROOT.to_string()]);
    let catchup = p.catchup.unwrap_or_default();
    AccountConfig {
        id: id.to_string(),
        key: account_key(id),
        name: p.name.unwrap_or_else(|| id.to_string()),
        enabled,
        cli_path: p.cli_path.unwrap_or_else(|| "imsg".into()),
        db_path: p.db_path,
        remote_host: p.remote_host,
        service: p.service.unwrap_or_else(|| "auto".into()),
        region: p.region.unwrap_or_else(|| "US".into()),
        dm_policy: p
            .dm_policy
            .as_deref()
            .and_then(DmPolicy::parse)
            .unwrap_or(DmPolicy::Pairing),
        allow_from: p.allow_from.unwrap_or_default(),
        group_policy: p
            .group_policy
            .as_deref()
            .and_then(GroupPolicy::parse)
            .unwrap_or(GroupPolicy::Allowlist),
        group_allow_from: p.group_allow_from,
        groups: p.groups,
        include_attachments: p.include_attachments.unwrap_or(false),
        remote_attachment_roots: p
            .remote_attachment_roots
            .unwrap_or_else(|| attachment_roots.clone()),
        attachment_roots,
        media_local_roots: p.media_local_roots,
        media_max_mb: p.media_max_mb.unwrap_or(16) as u64,
        text_chunk_limit: p.text_chunk_limit.unwrap_or(4000) as usize,
        chunk_mode: match p.chunk_mode.as_deref() {
            Some("newline") => ChunkMode::Newline,
            _ => ChunkMode::Length,
        },
        response_prefix: p.response_prefix,
        config_writes: p.config_writes.unwrap_or(true),
        allow_sms_commands: p.allow_sms_commands.unwrap_or(false),
        send_read_receipts: p.send_read_receipts.unwrap_or(true),
        reaction_notifications: p
            .reaction_notifications
            .as_deref()
            .and_then(ReactionNotifications::parse)
            .unwrap_or_default(),
        text_formatting: p
            .text_formatting
            .as_deref()
            .and_then(TextFormatting::parse)
            .unwrap_or_default(),
        actions: {
            let a = p.actions.unwrap_or_default();
            ActionGates {
                reactions: a.reactions.unwrap_or(true),
                edit: a.edit.unwrap_or(true),
                unsend: a.unsend.unwrap_or(true),
            }
        },
        rate_limit: p.rate_limit.unwrap_or_default(),
        tracked_sends: p.tracked_sends.as_deref() != Some("off"),
        probe_timeout_ms: p.probe_timeout_ms.unwrap_or(10_000) as u64,
        send_timeout_ms: p.send_timeout_ms.unwrap_or(150_000) as u64,
        catchup: CatchupSettings {
            enabled: catchup.enabled.unwrap_or(true),
            max_age_minutes: catchup.max_age_minutes.unwrap_or(120),
            late_tolerance_minutes: catchup.late_tolerance_minutes.unwrap_or(15),
        },
    }
}

fn check_cross_rules(account: &AccountConfig, allow_path: &str, diag: &mut Diag) {
    match account.dm_policy {
        DmPolicy::Open if !account.allow_from.contains(&AllowEntry::Any) => {
            diag.error(allow_path, "dmPolicy \"open\" requires \"*\" in allowFrom")
        }
        DmPolicy::Allowlist if account.allow_from.is_empty() => diag.error(
            allow_path,
            "dmPolicy \"allowlist\" requires at least one allowFrom entry",
        ),
        _ => {}
    }
}

fn warn_account(account: &AccountConfig, diag: &mut Diag) {
    match account.group_policy {
        GroupPolicy::Allowlist if account.group_senders().is_empty() => diag.warn(format!(
            "account {}: groupPolicy \"allowlist\" with an empty group sender list: every group message will be dropped",
            account.id
        )),
        GroupPolicy::Open => diag.warn(format!(
            "account {}: groupPolicy \"open\": any member of any group chat can trigger the agent",
            account.id
        )),
        // The group sender list falls back to allowFrom, so its "*" (there for open DMs)
        // silently admits every group member too.
        GroupPolicy::Allowlist
            if account.group_allow_from.is_none()
                && account.allow_from.contains(&AllowEntry::Any) =>
        {
            diag.warn(format!(
                "account {}: allowFrom holds \"*\" and groupAllowFrom is not set: any member of any group chat can trigger the agent; set groupAllowFrom to choose group senders",
                account.id
            ))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
