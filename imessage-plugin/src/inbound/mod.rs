//! The inbound pipeline (channel-behaviour.md §2): one `imsg` message in, one verdict out, in
//! the spec's step order. In-memory guards (echo registry, mirror cache, loop limiter) live
//! here; file I/O (pairing, staging, the cursor) is done by the caller on the verdict.

pub mod attachments;
pub(crate) mod pairing;
pub mod policy;
pub mod reaction;
pub(crate) mod routing;

use crate::support::sync::LockExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use plugin_abi::types::{ReactionEvent, ReplyTo, RoutedMessage};
use regex::Regex;

use crate::config::{AccountConfig, Config, Peer};
use crate::echo::{self, EchoRegistry, EchoRow, LoopLimiter, MirrorCache};
use crate::imsg::message::ImsgMessage;
use crate::support::handle;
use crate::support::timeutil;
use attachments::Candidate;
use policy::{DmAccess, GroupAccess, Origin};
use reaction::Tapback;

/// What to do with one message.
#[derive(Debug)]
pub enum Verdict {
    // The reason is counted and logged inside the pipeline; the acceptance tests read it here.
    Drop(#[allow(dead_code)] &'static str),
    /// An unknown DM under `pairing`: run the pairing flow, then drop `pairing_pending`.
    Pairing {
        sender_id: String,
        chat_id: Option<i64>,
    },
    /// Refused with a reply to the sender (config commands).
    Refuse {
        #[allow(dead_code)]
        code: &'static str,
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
    Drop(&'static str),
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
        self.config = config;
        self.account = account;
    }

    fn drop_with(&mut self, code: &'static str, conversation: Conversation, guid: &str) -> Verdict {
        self.count_drop(code);
        // The key is formatted and hashed only when the line is logged.
        tracing::debug!(
            "drop reason={code} account={} conv={} guid={guid}",
            self.account.id,
            conversation_hash(&conversation.key(&self.account.id))
        );
        Verdict::Drop(code)
    }

    /// Counts a drop decided outside the pipeline (e.g. `delivery_failed`, `malformed`).
    pub fn count_drop(&mut self, code: &str) {
        match self.stats.drops.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.stats.drops.insert(code.to_string(), 1);
            }
        }
    }

    /// A loop-guard drop (§5.5). `counts`: the hit feeds the loop limiter. Only rows from
    /// senders the access step admits count, or any member of a group, listed or not, could
    /// mute the bot there for everyone with a few `<thinking>` lines a minute.
    fn loop_drop(
        &mut self,
        code: &'static str,
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
            return Some(self.drop_with("unauthorized_command", conversation, guid));
        }
        let refusal = if command.bounded().is_err() {
            Some(("config_malformed", policy::CONFIG_OVERSIZED_REPLY))
        } else if !self.config.globals.commands_config {
            Some(("config_disabled", policy::CONFIG_DISABLED_REPLY))
        } else {
            match command.path() {
                None => Some(("config_malformed", policy::CONFIG_USAGE_REPLY)),
                Some(path) if !self.account.config_writes || !self.target_config_writes(path) => {
                    Some((
                        "config_writes_disabled",
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
        if let (Access::Drop("group_not_configured"), Some(id)) = (&access, chat_id) {
            self.warn_unlisted_group(id);
        }
        access
    }

    /// Step 12's decision alone: no warning, no state.
    fn admission(&self, is_group: bool, origin: &Origin<'_>, allow_store: &[String]) -> Access {
        if is_group {
            match policy::group_access(&self.account, origin) {
                GroupAccess::Admitted => Access::Admitted,
                GroupAccess::Disabled => Access::Drop("group_disabled"),
                GroupAccess::NotAllowed => Access::Drop("group_not_allowed"),
                GroupAccess::NotConfigured => Access::Drop("group_not_configured"),
            }
        } else {
            match policy::dm_access(&self.account, origin, allow_store) {
                DmAccess::Admitted => Access::Admitted,
                DmAccess::Disabled => Access::Drop("dm_disabled"),
                DmAccess::NotAllowed => Access::Drop("dm_not_allowed"),
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

    /// A tapback row (actions.md §2.2): the message steps that apply to it (own, sender,
    /// group, access), then the reaction rules; never commands, mentions, the loop limiter
    /// or attachments.
    fn evaluate_reaction(&mut self, input: &Input<'_>, t: Tapback) -> Verdict {
        let m = input.message;
        let guid = input.key;
        let sender_raw = m.sender.as_deref().unwrap_or("").trim();
        let sender_id = handle::normalize_sender(sender_raw);
        let looks_group =
            m.is_group == Some(true) || m.chat_guid.as_deref().is_some_and(|g| g.contains(";+;"));
        let provisional = if looks_group {
            Conversation::Group(m.chat_id.unwrap_or(0))
        } else {
            Conversation::Direct(&sender_id)
        };
        // Every own tapback (this account's, or the user's other devices) stays out, in a
        // self-chat too.
        if m.is_from_me == Some(true) {
            return self.drop_with("from_me", provisional, guid);
        }
        if sender_raw.is_empty() {
            return self.drop_with("missing_sender", provisional, guid);
        }
        let Some(Placement {
            origin,
            is_group,
            chat_id,
            conversation,
        }) = self.place(m, &sender_id, looks_group)
        else {
            return self.drop_with("missing_chat_id", provisional, guid);
        };
        match self.access(is_group, &origin, chat_id, input.allow_store) {
            Access::Admitted => {}
            Access::Drop(code) => return self.drop_with(code, conversation, guid),
            // A stranger's tapback never creates a pairing request nor gets an answer.
            Access::Pairing => return self.drop_with("pairing_pending", conversation, guid),
        }
        use crate::config::ReactionNotifications;
        if self.account.reaction_notifications == ReactionNotifications::Off {
            return self.drop_with("reaction_disabled", conversation, guid);
        }
        let target_is_own = t
            .target_message_id
            .as_deref()
            .is_some_and(|id| self.echo.locked().is_sent_id(id, input.now_ms));
        if self.account.reaction_notifications == ReactionNotifications::Own && !target_is_own {
            return self.drop_with("reaction_not_own", conversation, guid);
        }
        let peer = if is_group {
            Peer::Group(chat_id.unwrap_or(0))
        } else {
            Peer::Direct(sender_id.clone())
        };
        let globals = &self.config.globals;
        let agent_id = routing::select_agent(globals, &self.account.id, &peer);
        let session_key =
            routing::session_key(&globals.dm_scope, &agent_id, &self.account.id, &peer);
        let to = routing::reply_target(&peer, m.chat_id, m.chat_guid.as_deref());
        Verdict::React(Box::new(ReactionEvent {
            session_key,
            agent_id,
            account_id: self.account.id.clone(),
            chat_type: if is_group { "group" } else { "direct" }.to_string(),
            to,
            text: reaction::event_text(&t, &sender_id),
            context_key: reaction::context_key(&t, m, &sender_id),
            message_id: guid.to_string(),
            action: t.action.to_string(),
            kind: t.kind,
            emoji: t.emoji,
            target_message_id: t.target_message_id,
            target_text: t.target_text,
            target_is_own,
            created_at: m.created_at.as_deref().map(str::to_string),
            chat_id,
            chat_name: if is_group {
                m.chat_name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            } else {
                None
            },
            sender_id,
        }))
    }

    pub fn evaluate(&mut self, input: &Input<'_>) -> Verdict {
        let m = input.message;
        let now = input.now_ms;
        let guid = input.key;
        let is_group_flag = m.is_group == Some(true);
        let sender_raw = m.sender.as_deref().unwrap_or("").trim();
        let sender_id = handle::normalize_sender(sender_raw);
        // A provisional conversation key for drops before the group is classified.
        let looks_group =
            is_group_flag || m.chat_guid.as_deref().is_some_and(|g| g.contains(";+;"));
        let provisional = if looks_group {
            Conversation::Group(m.chat_id.unwrap_or(0))
        } else {
            Conversation::Direct(&sender_id)
        };

        // 2. Duplicate.
        if input.seen {
            return self.drop_with("duplicate", provisional, guid);
        }
        // 3. Stale.
        if let Some(created) = input.created_ms {
            let max_age = self.account.catchup.max_age_minutes * 60_000;
            let tolerance = self.account.catchup.late_tolerance_minutes * 60_000;
            let newest = input.newest_ms.unwrap_or(self.start_ms);
            if created < now - max_age || created < newest - tolerance {
                self.note_stale(created, now);
                return self.drop_with("stale", provisional, guid);
            }
        }
        // 4. Reactions: a host that takes them gets tapbacks as reaction events; for any
        // other host a flagged tapback row is dropped and a summary text is a message.
        if self.reactions {
            if let Some(tapback) = reaction::classify(m) {
                return self.evaluate_reaction(input, tapback);
            }
        }
        if m.is_reaction == Some(true) {
            return self.drop_with("reaction", provisional, guid);
        }
        // 5. Self-chat: not a group by flag, and sender, chat identifier and our own handle
        // all present and equal.
        let self_chat = !is_group_flag
            && match (
                non_empty(&m.chat_identifier),
                non_empty(&m.destination_caller_id),
            ) {
                // `sender_id` is the normalised sender; the identifier is normalised only when
                // our own handle already matched (the rare case).
                (Some(ident), Some(dest)) if !sender_raw.is_empty() => {
                    handle::normalize_sender(dest) == sender_id
                        && handle::normalize_sender(ident) == sender_id
                }
                _ => false,
            };
        let text = m.text.as_deref().unwrap_or("");
        // 6. Own messages.
        if m.is_from_me == Some(true) {
            if !self_chat {
                return self.drop_with("from_me", provisional, guid);
            }
            // Our own rows: the account itself is their sender.
            if self.mirror_hit(m, &provisional.key(&self.account.id), now) {
                return self.loop_drop("self_chat_mirror", provisional, guid, now, true);
            }
            if self.echo_hit(m, text, &sender_id, looks_group, true, now) {
                return self.loop_drop("echo", provisional, guid, now, true);
            }
        }
        // 7. Sender.
        if sender_raw.is_empty() {
            return self.drop_with("missing_sender", provisional, guid);
        }
        // 8. Group classification; a group needs a chat id.
        let Some(Placement {
            origin,
            is_group,
            chat_id,
            conversation,
        }) = self.place(m, &sender_id, looks_group)
        else {
            return self.drop_with("missing_chat_id", provisional, guid);
        };
        // 9. Echo and self-chat mirror for rows not from us. These run before access, so a
        // hit feeds the loop limiter only when step 12 would admit the sender.
        let admitted = |me: &Self| {
            matches!(
                me.admission(is_group, &origin, input.allow_store),
                Access::Admitted
            )
        };
        if m.is_from_me != Some(true) {
            if self_chat && self.mirror_hit(m, &conversation.key(&self.account.id), now) {
                let counts = admitted(self);
                return self.loop_drop("self_chat_mirror", conversation, guid, now, counts);
            }
            if self.echo_hit(m, text, &sender_id, is_group, self_chat, now) {
                let counts = admitted(self);
                return self.loop_drop("echo", conversation, guid, now, counts);
            }
        }
        // 10. Reflection.
        if echo::is_reflection(text) {
            let counts = m.is_from_me == Some(true) || admitted(self);
            return self.loop_drop("reflection", conversation, guid, now, counts);
        }
        // 11. Body.
        let mut body = if text.contains('\u{fffc}') {
            text.replace('\u{fffc}', "").trim().to_string()
        } else {
            text.trim().to_string()
        };
        let mut candidates = Vec::new();
        let mut placeholder = false;
        if self.account.include_attachments {
            if let Some(entries) = m.attachments.as_deref().filter(|e| !e.is_empty()) {
                let roots = if self.remote {
                    &self.account.remote_attachment_roots
                } else {
                    &self.account.attachment_roots
                };
                candidates = attachments::prefilter(entries, roots, self.remote);
                if body.is_empty() {
                    body = attachments::placeholder(candidates.first(), entries).to_string();
                    placeholder = true;
                }
            }
        }
        if body.is_empty() {
            return self.drop_with("empty", conversation, guid);
        }
        // 12. Access.
        match self.access(is_group, &origin, chat_id, input.allow_store) {
            Access::Admitted => {}
            Access::Drop(code) => return self.drop_with(code, conversation, guid),
            Access::Pairing => {
                self.drop_with("pairing_pending", conversation, guid);
                return Verdict::Pairing { sender_id, chat_id };
            }
        }
        // 13. Route.
        let peer = if is_group {
            Peer::Group(chat_id.unwrap_or(0))
        } else {
            Peer::Direct(sender_id.clone())
        };
        let globals = self.config.globals.clone();
        let agent_id = routing::select_agent(&globals, &self.account.id, &peer);
        let session_key =
            routing::session_key(&globals.dm_scope, &agent_id, &self.account.id, &peer);
        let to = routing::reply_target(&peer, m.chat_id, m.chat_guid.as_deref());
        // An Arc clone, so the patterns can be borrowed while `self` is mutated below.
        let config = self.config.clone();
        let patterns: &[Regex] = Self::mention_patterns(&config, &agent_id).unwrap_or(&[]);
        // 14. Control commands. Nothing of a command's arguments is parsed here.
        let authority = policy::authority(
            &self.account,
            globals.owner_allow_from.as_deref(),
            is_group,
            &sender_id,
            m.chat_guid.as_deref(),
            input.allow_store,
        );
        let command_authorized = authority.command_authorized;
        let is_command = policy::is_control_command(&body, is_group, patterns, &self.commands);
        if is_group && is_command && !command_authorized {
            return self.drop_with("unauthorized_command", conversation, guid);
        }
        // 15. `/config set|unset`.
        let config_command = policy::config_command(&body, is_group, patterns);
        if let Some(command) = &config_command {
            if let Some(refused) =
                self.config_gate(command, authority.owner, conversation, guid, &to)
            {
                return refused;
            }
        }
        // 16. Mentions (groups).
        let mut was_mentioned = true;
        if is_group {
            let mentioned = policy::is_mentioned(&body, patterns);
            let authorized_command = is_command && command_authorized;
            if patterns.is_empty() {
                if !self.warned_no_patterns {
                    self.warned_no_patterns = true;
                    tracing::warn!("no mention patterns configured; group messages cannot be filtered by mention");
                }
            } else if policy::require_mention(&self.account, &origin)
                && !mentioned
                && !authorized_command
            {
                return self.drop_with("no_mention", conversation, guid);
            }
            was_mentioned = mentioned || authorized_command;
        }
        // 17. Loop limiter (suppressed messages add no hits).
        // Most accounts never had a loop drop: then no key is formatted for the check.
        let muted = if self.loops.quiet(now) {
            None
        } else {
            let key = conversation.key(&self.account.id);
            self.loops.muted(&key, now).map(|hit| (hit, key))
        };
        if let Some(((n, first), key)) = muted {
            if first {
                tracing::warn!(
                    "conversation {} muted: echo loop suspected ({n} loop drops in 60 s)",
                    conversation_hash(&key)
                );
            }
            return self.drop_with("loop_limited", conversation, guid);
        }

        let reply_to =
            if non_empty(&m.reply_to_guid).is_some() || non_empty(&m.reply_to_text).is_some() {
                Some(ReplyTo {
                    id: non_empty(&m.reply_to_guid).map(str::to_string),
                    text: non_empty(&m.reply_to_text).map(str::to_string),
                    sender: non_empty(&m.reply_to_sender).map(handle::normalize_sender),
                })
            } else {
                None
            };
        Verdict::Route(Box::new(Accepted {
            message: RoutedMessage {
                session_key,
                agent_id,
                account_id: self.account.id.clone(),
                chat_type: if is_group { "group" } else { "direct" }.to_string(),
                to,
                sender_id,
                text: body,
                message_id: guid.to_string(),
                was_mentioned,
                command_authorized,
                sender_is_owner: authority.owner,
                reply_to,
                media: Vec::new(),
                created_at: m.created_at.as_deref().map(str::to_string),
                chat_name: if is_group {
                    m.chat_name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                } else {
                    None
                },
                chat_id,
            },
            attachments: candidates,
            placeholder,
            config_write: config_command
                .as_ref()
                .and_then(policy::ConfigCommand::request),
        }))
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
