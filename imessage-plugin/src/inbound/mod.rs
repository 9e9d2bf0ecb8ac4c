//! The inbound pipeline (channel-behaviour.md §2): one `imsg` message in, one verdict out, in
//! the spec's step order. In-memory guards (echo registry, mirror cache, loop limiter) live
//! here; file I/O (pairing, staging, the cursor) is done by the caller on the verdict.

pub mod attachments;
pub mod drop;
pub(crate) mod pairing;
pub mod policy;
pub mod reaction;
pub(crate) mod routing;
mod steps;

use crate::support::sync::LockExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use plugin_abi::types::{ReactionEvent, RoutedMessage};
use regex::Regex;

use crate::config::{AccountConfig, Config};
use crate::echo::{EchoRegistry, EchoRow, LoopLimiter, MirrorCache};
use crate::imsg::message::ImsgMessage;
use crate::support::timeutil;
use attachments::Candidate;
pub use drop::DropCode;
use policy::{DmAccess, GroupAccess, Origin};

/// What to do with one message.
#[derive(Debug)]
pub enum Verdict {
    // The reason is counted and logged inside the pipeline; the acceptance tests read it here.
    Drop(#[allow(dead_code)] DropCode),
    /// An unknown DM under `pairing`: run the pairing flow, then drop `pairing_pending`.
    Pairing {
        sender_id: String,
        chat_id: Option<i64>,
        chat_guid: Option<String>,
    },
    /// Refused with a reply to the sender (config commands).
    Refuse {
        #[allow(dead_code)]
        code: DropCode,
        to: String,
        text: &'static str,
    },
    Route(Box<Accepted>),
    /// A tapback to hand to the host once (actions.md §2.2 R3).
    React(Box<ReactionEvent>),
}

/// Step 12's outcome.
enum Access {
    Admitted,
    Drop(DropCode),
    /// An unknown DM sender under `dmPolicy: "pairing"`.
    Pairing,
}

#[derive(Debug)]
pub struct Accepted {
    pub message: RoutedMessage,
    /// Attachments that passed the pre-filter, to stage now that the message is accepted.
    pub attachments: Vec<Candidate>,
    /// The body is a placeholder because the text was empty.
    pub placeholder: bool,
    /// An authorized `/config set|unset` that passed every gate of §9.2: the host's
    /// `config.write` payload, sent once the message is delivered.
    pub config_write: Option<serde_json::Value>,
}

/// Per-message facts the pipeline does not own.
pub struct Input<'a> {
    pub message: &'a ImsgMessage,
    /// `message.dedupe_key()`, computed once by the caller.
    pub key: &'a str,
    /// The dedupe key is in the seen store.
    pub seen: bool,
    /// `message.created_ms()`, computed once by the caller (the cursor needs it too).
    pub created_ms: Option<i64>,
    /// R of the age guard (newest processed `created_at`), when known.
    pub newest_ms: Option<i64>,
    /// The pairing allow store.
    pub allow_store: &'a [String],
    pub now_ms: i64,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub routed: u64,
    pub drops: BTreeMap<String, u64>,
}

#[derive(Default)]
struct StaleSummary {
    count: u64,
    oldest_ms: Option<i64>,
    last_log_ms: i64,
}

pub struct Inbound {
    /// The host takes reaction events (`StartContext.host`, actions.md §2).
    pub reactions: bool,
    /// The control-command names in force (the host's, else the defaults).
    commands: Arc<policy::CommandNames>,
    config: Arc<Config>,
    /// `config.globals.dm_scope`, parsed once per config.
    dm_scope: routing::DmScope,
    account: AccountConfig,
    pub echo: Arc<Mutex<EchoRegistry>>,
    mirror: MirrorCache,
    loops: LoopLimiter,
    warned_groups: HashSet<i64>,
    warned_no_patterns: bool,
    stale: StaleSummary,
    pub stats: Stats,
    start_ms: i64,
    /// Remote mode: attachments are checked against the remote roots.
    remote: bool,
}

/// What [`Inbound::place`] found out about a row.
struct Placement<'a> {
    origin: Origin<'a>,
    is_group: bool,
    chat_id: Option<i64>,
    conversation: Conversation<'a>,
}

/// A conversation key (§5.5) before it is formatted: most messages never need it as text.
#[derive(Clone, Copy)]
enum Conversation<'a> {
    Group(i64),
    Direct(&'a str),
}

impl Conversation<'_> {
    fn key(self, account: &str) -> String {
        match self {
            Conversation::Group(chat_id) => format!("{account}:group:{chat_id}"),
            Conversation::Direct(sender) => format!("{account}:dm:{sender}"),
        }
    }
}

/// An 8-hex FNV-1a hash of a conversation key, for logs that must not show handles.
pub fn conversation_hash(key: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The config accepts only the scopes routing knows; were they ever to differ, the error says
/// which and DMs share the main session.
fn dm_scope_of(config: &Config) -> routing::DmScope {
    config.globals.dm_scope.parse().unwrap_or_else(|e| {
        tracing::error!("{e}; DMs share the main session");
        routing::DmScope::Main
    })
}

fn non_empty(s: &Option<compact_str::CompactString>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Inbound {
    pub fn new(
        config: Arc<Config>,
        account: AccountConfig,
        echo: Arc<Mutex<EchoRegistry>>,
        remote: bool,
        start_ms: i64,
        commands: Arc<policy::CommandNames>,
    ) -> Self {
        Inbound {
            reactions: false,
            commands,
            dm_scope: dm_scope_of(&config),
            config,
            account,
            echo,
            mirror: MirrorCache::default(),
            loops: LoopLimiter::default(),
            warned_groups: HashSet::new(),
            warned_no_patterns: false,
            stale: StaleSummary::default(),
            stats: Stats::default(),
            start_ms,
            remote,
        }
    }

    /// The routed agent's typing mode (actions.md §3.1).
    pub fn typing_mode(&self, agent_id: &str) -> crate::config::TypingMode {
        self.config.globals.typing_mode(agent_id)
    }

    /// Applies a reloaded config; the guards and counters carry over.
    /// The account settings the pipeline runs with now (a reload applies between messages).
    pub fn settings(&self) -> &AccountConfig {
        &self.account
    }

    pub fn reconfigure(&mut self, config: Arc<Config>, account: AccountConfig) {
        self.dm_scope = dm_scope_of(&config);
        self.config = config;
        self.account = account;
    }

    fn drop_with(&mut self, code: DropCode, conversation: Conversation, guid: &str) -> Verdict {
        self.count_drop(code);
        // The key is formatted and hashed only when the line is logged.
        tracing::debug!(
            "drop reason={} account={} conv={} guid={guid}",
            code.as_str(),
            self.account.id,
            conversation_hash(&conversation.key(&self.account.id))
        );
        Verdict::Drop(code)
    }

    /// Counts a drop decided outside the pipeline (e.g. `delivery_failed`, `malformed`).
    pub fn count_drop(&mut self, code: DropCode) {
        match self.stats.drops.get_mut(code.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.stats.drops.insert(code.as_str().to_string(), 1);
            }
        }
    }

    /// A loop-guard drop (§5.5). `counts`: the hit feeds the loop limiter. Only rows from
    /// senders the access step admits count, or any member of a group, listed or not, could
    /// mute the bot there for everyone with a few `<thinking>` lines a minute.
    fn loop_drop(
        &mut self,
        code: DropCode,
        conversation: Conversation,
        guid: &str,
        now_ms: i64,
        counts: bool,
    ) -> Verdict {
        if counts {
            self.loops
                .record(&conversation.key(&self.account.id), now_ms);
        }
        self.drop_with(code, conversation, guid)
    }

    fn note_stale(&mut self, created_ms: i64, now_ms: i64) {
        self.stale.count += 1;
        self.stale.oldest_ms = Some(
            self.stale
                .oldest_ms
                .map_or(created_ms, |o| o.min(created_ms)),
        );
        if now_ms - self.stale.last_log_ms >= 60_000 {
            tracing::info!(
                "suppressed {} stale messages (oldest {})",
                self.stale.count,
                timeutil::format_ms(self.stale.oldest_ms.unwrap_or(created_ms))
            );
            self.stale = StaleSummary {
                last_log_ms: now_ms,
                ..Default::default()
            };
        }
    }

    fn mention_patterns<'c>(config: &'c Config, agent_id: &str) -> Option<&'c [Regex]> {
        let globals = &config.globals;
        match globals
            .agents
            .iter()
            .find(|a| a.id == agent_id)
            .and_then(|a| a.mention_patterns.as_ref())
        {
            Some(p) => Some(p.as_slice()),
            None => globals.mention_patterns.as_deref(),
        }
    }

    /// §9.2 target check: every `configWrites` that governs `path` allows it. A parent of
    /// the channel's section (`channels`, `channels.imessage`, `channels.imessage.accounts`)
    /// replaces every scope below it, `configWrites` included, so the channel and every
    /// account must allow it.
    fn target_config_writes(&self, path: &str) -> bool {
        let config = &self.config;
        if let Some(rest) = path.strip_prefix("channels.imessage.accounts.") {
            let id = rest.split('.').next().unwrap_or("");
            return config
                .account(id)
                .map_or(config.channel_config_writes, |a| a.config_writes);
        }
        if path.starts_with("channels.imessage.") {
            return config.channel_config_writes;
        }
        if matches!(
            path,
            "channels" | "channels.imessage" | "channels.imessage.accounts"
        ) {
            return config.channel_config_writes && config.accounts.iter().all(|a| a.config_writes);
        }
        true
    }

    /// Step 15 (§9.2), in the spec's order; `Some` is the verdict that refuses the command.
    fn config_gate(
        &mut self,
        command: &policy::ConfigCommand,
        owner: bool,
        conversation: Conversation,
        guid: &str,
        to: &str,
    ) -> Option<Verdict> {
        // `/config` changes who may do everything else: the owner only, and no reply to
        // anyone else, in DMs too.
        if !owner {
            return Some(self.drop_with(DropCode::UnauthorizedCommand, conversation, guid));
        }
        let refusal = if command.bounded().is_err() {
            Some((DropCode::ConfigMalformed, policy::CONFIG_OVERSIZED_REPLY))
        } else if !self.config.globals.commands_config {
            Some((DropCode::ConfigDisabled, policy::CONFIG_DISABLED_REPLY))
        } else {
            match command.path() {
                None => Some((DropCode::ConfigMalformed, policy::CONFIG_USAGE_REPLY)),
                Some(path) if !self.account.config_writes || !self.target_config_writes(path) => {
                    Some((
                        DropCode::ConfigWritesDisabled,
                        policy::CONFIG_WRITES_DISABLED_REPLY,
                    ))
                }
                Some(_) => None,
            }
        }?;
        let (code, text) = refusal;
        self.drop_with(code, conversation, guid);
        Some(Verdict::Refuse {
            code,
            to: to.to_string(),
            text,
        })
    }

    /// Step 12 (channel-behaviour.md §2), for messages and reactions alike.
    fn access(
        &mut self,
        is_group: bool,
        origin: &Origin<'_>,
        chat_id: Option<i64>,
        allow_store: &[String],
    ) -> Access {
        let access = self.admission(is_group, origin, allow_store);
        if let (Access::Drop(DropCode::GroupNotConfigured), Some(id)) = (&access, chat_id) {
            self.warn_unlisted_group(id);
        }
        access
    }

    /// Step 12's decision alone: no warning, no state.
    fn admission(&self, is_group: bool, origin: &Origin<'_>, allow_store: &[String]) -> Access {
        if is_group {
            match policy::group_access(&self.account, origin) {
                GroupAccess::Admitted => Access::Admitted,
                GroupAccess::Disabled => Access::Drop(DropCode::GroupDisabled),
                GroupAccess::NotAllowed => Access::Drop(DropCode::GroupNotAllowed),
                GroupAccess::NotConfigured => Access::Drop(DropCode::GroupNotConfigured),
            }
        } else {
            match policy::dm_access(&self.account, origin, allow_store) {
                DmAccess::Admitted => Access::Admitted,
                DmAccess::Disabled => Access::Drop(DropCode::DmDisabled),
                DmAccess::NotAllowed => Access::Drop(DropCode::DmNotAllowed),
                DmAccess::Pairing => Access::Pairing,
            }
        }
    }

    /// Once per chat per process; the set is bounded, since any stranger can name a new chat
    /// (past the bound a chat may be warned about again).
    fn warn_unlisted_group(&mut self, id: i64) {
        const MAX_WARNED_GROUPS: usize = 4096;
        if self.warned_groups.len() >= MAX_WARNED_GROUPS {
            self.warned_groups.clear();
        }
        if self.warned_groups.insert(id) {
            tracing::warn!(
                "group chat {id} is not listed in channels.imessage.groups; add \"{id}\" or \"*\""
            );
        }
    }

    /// Where a row belongs (message step 8): a group by its look or by this account's group
    /// config, else a DM. `None` for a group row without a chat id.
    fn place<'a>(
        &self,
        m: &'a ImsgMessage,
        sender_id: &'a str,
        looks_group: bool,
    ) -> Option<Placement<'a>> {
        let origin = Origin {
            sender_id,
            chat_id: m.chat_id,
            chat_guid: m.chat_guid.as_deref(),
            chat_identifier: m.chat_identifier.as_deref(),
        };
        let is_group = looks_group || policy::own_group_key(&self.account, &origin).is_some();
        let chat_id = m.chat_id.filter(|c| *c > 0);
        let conversation = if is_group {
            Conversation::Group(chat_id?)
        } else {
            Conversation::Direct(sender_id)
        };
        Some(Placement {
            origin,
            is_group,
            chat_id,
            conversation,
        })
    }

    fn mirror_hit(&mut self, m: &ImsgMessage, conversation: &str, now: i64) -> bool {
        self.mirror.check_and_record(
            conversation,
            m.text.as_deref().unwrap_or(""),
            m.created_at.as_deref().unwrap_or(""),
            &m.dedupe_key(),
            now,
        )
    }

    fn echo_hit(
        &mut self,
        m: &ImsgMessage,
        text: &str,
        sender_id: &str,
        group: bool,
        self_chat: bool,
        now: i64,
    ) -> bool {
        self.echo.locked().is_echo(
            &EchoRow {
                guid: non_empty(&m.guid),
                rowid: m.id,
                reply_to_guid: non_empty(&m.reply_to_guid),
                text,
                chat_id: m.chat_id.filter(|c| *c > 0),
                chat_guid: non_empty(&m.chat_guid),
                chat_identifier: non_empty(&m.chat_identifier),
                dm_handle: (!group && !sender_id.is_empty()).then_some(sender_id),
                self_chat,
            },
            now,
        )
    }
}

#[cfg(test)]
mod tests;
