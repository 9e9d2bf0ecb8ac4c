//! The pipeline's steps (channel-behaviour.md §2), in the spec's order. Each step either
//! lets the row go on, with what it learned, or ends it with a verdict (`Err`), so
//! [`Inbound::evaluate`] reads as the list of steps.

use plugin_abi::types::{ChatType, ReactionEvent, ReplyTo, RoutedMessage};
use regex::Regex;

use super::{
    attachments, non_empty, policy, reaction, routing, Accepted, Access, Conversation, DropCode,
    Inbound, Input, Placement, Verdict,
};
use crate::config::{Peer, ReactionNotifications};
use crate::echo;
use crate::imsg::message::ImsgMessage;
use crate::support::handle;
use crate::support::sync::LockExt;
use attachments::Candidate;
use reaction::Tapback;

/// A step's result: go on with `T`, or stop with the verdict.
type Step<T> = Result<T, Verdict>;

/// Who wrote a row and how it looks before it is placed.
struct Row<'a> {
    m: &'a ImsgMessage,
    sender_raw: &'a str,
    sender_id: String,
    looks_group: bool,
}

impl<'a> Row<'a> {
    fn of(m: &'a ImsgMessage) -> Row<'a> {
        let sender_raw = m.sender.as_deref().unwrap_or("").trim();
        Row {
            m,
            sender_raw,
            sender_id: handle::normalize_sender(sender_raw),
            looks_group: m.is_group == Some(true)
                || m.chat_guid.as_deref().is_some_and(|g| g.contains(";+;")),
        }
    }

    /// The conversation key of drops before the group is classified.
    fn provisional(&self) -> Conversation<'_> {
        if self.looks_group {
            Conversation::Group(self.m.chat_id.unwrap_or(0))
        } else {
            Conversation::Direct(&self.sender_id)
        }
    }

    /// Step 5: not a group by flag, and sender, chat identifier and our own handle all
    /// present and equal.
    fn is_self_chat(&self) -> bool {
        let m = self.m;
        if m.is_group == Some(true) || self.sender_raw.is_empty() {
            return false;
        }
        match (
            non_empty(&m.chat_identifier),
            non_empty(&m.destination_caller_id),
        ) {
            // `sender_id` is the normalised sender; the identifier is normalised only when our
            // own handle already matched (the rare case).
            (Some(ident), Some(dest)) => {
                handle::normalize_sender(dest) == self.sender_id
                    && handle::normalize_sender(ident) == self.sender_id
            }
            _ => false,
        }
    }

    fn chat_name(&self, is_group: bool) -> Option<String> {
        let name = self.m.chat_name.as_deref().filter(|n| !n.is_empty());
        name.filter(|_| is_group).map(str::to_string)
    }
}

/// Step 13's result: who answers and where.
struct Route {
    agent_id: String,
    session_key: String,
    to: String,
}

/// Step 11's result.
struct Body {
    text: String,
    attachments: Vec<Candidate>,
    placeholder: bool,
}

impl Inbound {
    pub fn evaluate(&mut self, input: &Input<'_>) -> Verdict {
        match self.message_steps(input) {
            Ok(verdict) | Err(verdict) => verdict,
        }
    }

    fn message_steps(&mut self, input: &Input<'_>) -> Step<Verdict> {
        let m = input.message;
        let (now, guid) = (input.now_ms, input.key);
        let row = Row::of(m);
        self.fresh(input, row.provisional())?; // 2, 3
        if self.reactions {
            // 4. A host that takes reactions gets tapbacks as events.
            if let Some(tapback) = reaction::classify(m) {
                return Ok(self.evaluate_reaction(input, &row, tapback));
            }
        }
        if m.is_reaction == Some(true) {
            return Err(self.drop_with(DropCode::Reaction, row.provisional(), guid));
        }
        let self_chat = row.is_self_chat(); // 5
        let text = m.text.as_deref().unwrap_or("");
        self.own_row(&row, text, self_chat, now, guid)?; // 6
        let place = self.placed(&row, guid)?; // 7, 8
        self.guards(input, &row, &place, text, self_chat)?; // 9, 10
        let body = self.body(m, text, place.conversation, guid)?; // 11
        self.admit(input, &row, &place)?; // 12
        let route = self.route(m, &place, &row.sender_id); // 13
                                                           // An Arc clone, so the patterns can be borrowed while `self` is mutated below.
        let config = self.config.clone();
        let patterns: &[Regex] = Self::mention_patterns(&config, &route.agent_id).unwrap_or(&[]);
        let authority = policy::authority(
            &self.account,
            config.globals.owner_allow_from.as_deref(),
            place.is_group,
            &row.sender_id,
            m.chat_guid.as_deref(),
            input.allow_store,
        );
        // 14. Control commands. Nothing of a command's arguments is parsed here.
        let is_command =
            policy::is_control_command(&body.text, place.is_group, patterns, &self.commands);
        let commanded = is_command && authority.command_authorized;
        if place.is_group && is_command && !authority.command_authorized {
            return Err(self.drop_with(DropCode::UnauthorizedCommand, place.conversation, guid));
        }
        // 15. `/config set|unset`.
        let config_command = policy::config_command(&body.text, place.is_group, patterns);
        if let Some(command) = &config_command {
            let owner = authority.owner;
            if let Some(refused) =
                self.config_gate(command, owner, place.conversation, guid, &route.to)
            {
                return Err(refused);
            }
        }
        let was_mentioned = self.mentions(&place, &body.text, patterns, commanded, guid)?; // 16
        self.loop_limit(place.conversation, now, guid)?; // 17
        let message = RoutedMessage {
            session_key: route.session_key,
            agent_id: route.agent_id,
            account_id: self.account.id.clone(),
            chat_type: chat_type(place.is_group),
            to: route.to,
            sender_id: row.sender_id.clone(),
            text: body.text,
            message_id: guid.to_string(),
            was_mentioned,
            command_authorized: authority.command_authorized,
            sender_is_owner: authority.owner,
            reply_to: reply_to(m),
            media: Vec::new(),
            created_at: m.created_at.as_deref().map(str::to_string),
            chat_name: row.chat_name(place.is_group),
            chat_id: place.chat_id,
        };
        Ok(Verdict::Route(Box::new(Accepted {
            message,
            attachments: body.attachments,
            placeholder: body.placeholder,
            config_write: config_command
                .as_ref()
                .and_then(policy::ConfigCommand::request),
        })))
    }

    /// A tapback row (actions.md §2.2): the message steps that apply to it (own, sender,
    /// group, access, route), then the reaction rules; never commands, mentions, the loop
    /// limiter or attachments.
    fn evaluate_reaction(&mut self, input: &Input<'_>, row: &Row<'_>, t: Tapback) -> Verdict {
        match self.reaction_steps(input, row, t) {
            Ok(verdict) | Err(verdict) => verdict,
        }
    }

    fn reaction_steps(&mut self, input: &Input<'_>, row: &Row<'_>, t: Tapback) -> Step<Verdict> {
        let (m, guid) = (input.message, input.key);
        // Every own tapback (this account's, or the user's other devices) stays out, in a
        // self-chat too.
        if m.is_from_me == Some(true) {
            return Err(self.drop_with(DropCode::FromMe, row.provisional(), guid));
        }
        let place = self.placed(row, guid)?;
        match self.access(
            place.is_group,
            &place.origin,
            place.chat_id,
            input.allow_store,
        ) {
            Access::Admitted => {}
            Access::Drop(code) => return Err(self.drop_with(code, place.conversation, guid)),
            // A stranger's tapback never creates a pairing request nor gets an answer.
            Access::Pairing => {
                let code = DropCode::PairingPending;
                return Err(self.drop_with(code, place.conversation, guid));
            }
        }
        let notifications = self.account.reaction_notifications;
        if notifications == ReactionNotifications::Off {
            return Err(self.drop_with(DropCode::ReactionDisabled, place.conversation, guid));
        }
        let target_is_own = t
            .target_message_id
            .as_deref()
            .is_some_and(|id| self.echo.locked().is_sent_id(id, input.now_ms));
        if notifications == ReactionNotifications::Own && !target_is_own {
            return Err(self.drop_with(DropCode::ReactionNotOwn, place.conversation, guid));
        }
        let route = self.route(m, &place, &row.sender_id);
        let sender_id = row.sender_id.clone();
        Ok(Verdict::React(Box::new(ReactionEvent {
            session_key: route.session_key,
            agent_id: route.agent_id,
            account_id: self.account.id.clone(),
            chat_type: chat_type(place.is_group),
            to: route.to,
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
            chat_id: place.chat_id,
            chat_name: row.chat_name(place.is_group),
            sender_id,
        })))
    }

    /// Steps 2 (duplicate) and 3 (stale).
    fn fresh(&mut self, input: &Input<'_>, provisional: Conversation) -> Step<()> {
        if input.seen {
            return Err(self.drop_with(DropCode::Duplicate, provisional, input.key));
        }
        let (Some(created), now) = (input.created_ms, input.now_ms) else {
            return Ok(());
        };
        let max_age = self.account.catchup.max_age_minutes * 60_000;
        let tolerance = self.account.catchup.late_tolerance_minutes * 60_000;
        let newest = input.newest_ms.unwrap_or(self.start_ms);
        if created < now - max_age || created < newest - tolerance {
            self.note_stale(created, now);
            return Err(self.drop_with(DropCode::Stale, provisional, input.key));
        }
        Ok(())
    }

    /// Step 6: our own rows stay out, except in a self-chat, where the account itself is
    /// their sender and only its mirror and echoes are dropped.
    fn own_row(
        &mut self,
        row: &Row<'_>,
        text: &str,
        self_chat: bool,
        now: i64,
        guid: &str,
    ) -> Step<()> {
        let m = row.m;
        if m.is_from_me != Some(true) {
            return Ok(());
        }
        let provisional = row.provisional();
        if !self_chat {
            return Err(self.drop_with(DropCode::FromMe, provisional, guid));
        }
        if self.mirror_hit(m, &provisional.key(&self.account.id), now) {
            let code = DropCode::SelfChatMirror;
            return Err(self.loop_drop(code, provisional, guid, now, true));
        }
        if self.echo_hit(m, text, &row.sender_id, row.looks_group, true, now) {
            return Err(self.loop_drop(DropCode::Echo, provisional, guid, now, true));
        }
        Ok(())
    }

    /// Steps 7 (a sender) and 8 (group classification; a group needs a chat id), shared by
    /// messages and tapbacks.
    fn placed<'r>(&mut self, row: &'r Row<'_>, guid: &str) -> Step<Placement<'r>> {
        if row.sender_raw.is_empty() {
            return Err(self.drop_with(DropCode::MissingSender, row.provisional(), guid));
        }
        match self.place(row.m, &row.sender_id, row.looks_group) {
            Some(place) => Ok(place),
            None => Err(self.drop_with(DropCode::MissingChatId, row.provisional(), guid)),
        }
    }

    /// Steps 9 (echo and self-chat mirror of rows not from us) and 10 (reflection). These run
    /// before access, so a hit feeds the loop limiter only when step 12 would admit the
    /// sender.
    fn guards(
        &mut self,
        input: &Input<'_>,
        row: &Row<'_>,
        place: &Placement<'_>,
        text: &str,
        self_chat: bool,
    ) -> Step<()> {
        let (m, now, guid) = (row.m, input.now_ms, input.key);
        let conversation = place.conversation;
        let admitted = |me: &Self| {
            let access = me.admission(place.is_group, &place.origin, input.allow_store);
            matches!(access, Access::Admitted)
        };
        if m.is_from_me != Some(true) {
            if self_chat && self.mirror_hit(m, &conversation.key(&self.account.id), now) {
                let counts = admitted(self);
                let code = DropCode::SelfChatMirror;
                return Err(self.loop_drop(code, conversation, guid, now, counts));
            }
            if self.echo_hit(m, text, &row.sender_id, place.is_group, self_chat, now) {
                let counts = admitted(self);
                return Err(self.loop_drop(DropCode::Echo, conversation, guid, now, counts));
            }
        }
        if echo::is_reflection(text) {
            let counts = m.is_from_me == Some(true) || admitted(self);
            return Err(self.loop_drop(DropCode::Reflection, conversation, guid, now, counts));
        }
        Ok(())
    }

    /// Step 11: the text without object placeholders, else an attachment placeholder.
    fn body(
        &mut self,
        m: &ImsgMessage,
        text: &str,
        conversation: Conversation,
        guid: &str,
    ) -> Step<Body> {
        let mut body = Body {
            text: if text.contains('\u{fffc}') {
                text.replace('\u{fffc}', "").trim().to_string()
            } else {
                text.trim().to_string()
            },
            attachments: Vec::new(),
            placeholder: false,
        };
        let entries = m.attachments.as_deref().filter(|e| !e.is_empty());
        if let Some(entries) = entries.filter(|_| self.account.include_attachments) {
            let roots = if self.remote {
                &self.account.remote_attachment_roots
            } else {
                &self.account.attachment_roots
            };
            body.attachments = attachments::prefilter(entries, roots, self.remote);
            if body.text.is_empty() {
                body.text = attachments::placeholder(body.attachments.first(), entries).to_string();
                body.placeholder = true;
            }
        }
        if body.text.is_empty() {
            return Err(self.drop_with(DropCode::Empty, conversation, guid));
        }
        Ok(body)
    }

    /// Step 12: access; an unknown DM under `pairing` runs the pairing flow.
    fn admit(&mut self, input: &Input<'_>, row: &Row<'_>, place: &Placement<'_>) -> Step<()> {
        let (conversation, guid) = (place.conversation, input.key);
        match self.access(
            place.is_group,
            &place.origin,
            place.chat_id,
            input.allow_store,
        ) {
            Access::Admitted => Ok(()),
            Access::Drop(code) => Err(self.drop_with(code, conversation, guid)),
            Access::Pairing => {
                self.drop_with(DropCode::PairingPending, conversation, guid);
                Err(Verdict::Pairing {
                    sender_id: row.sender_id.clone(),
                    chat_id: place.chat_id,
                    chat_guid: row.m.chat_guid.as_deref().map(str::to_string),
                })
            }
        }
    }

    /// Step 13: the agent, the session and the reply target.
    fn route(&self, m: &ImsgMessage, place: &Placement<'_>, sender_id: &str) -> Route {
        let peer = if place.is_group {
            Peer::Group(place.chat_id.unwrap_or(0))
        } else {
            Peer::Direct(sender_id.to_string())
        };
        let globals = &self.config.globals;
        let agent_id = routing::select_agent(globals, &self.account.id, &peer);
        Route {
            session_key: routing::session_key(self.dm_scope, &agent_id, &self.account.id, &peer),
            to: routing::reply_target(&peer, m.chat_id, m.chat_guid.as_deref()),
            agent_id,
        }
    }

    /// Step 16: in groups, a mention (or an authorized command) where mentions are required;
    /// the result is `wasMentioned`.
    fn mentions(
        &mut self,
        place: &Placement<'_>,
        body: &str,
        patterns: &[Regex],
        authorized_command: bool,
        guid: &str,
    ) -> Step<bool> {
        if !place.is_group {
            return Ok(true);
        }
        let mentioned = policy::is_mentioned(body, patterns);
        if patterns.is_empty() {
            if !self.warned_no_patterns {
                self.warned_no_patterns = true;
                tracing::warn!(
                    "no mention patterns configured; group messages cannot be filtered by mention"
                );
            }
        } else if policy::require_mention(&self.account, &place.origin)
            && !mentioned
            && !authorized_command
        {
            return Err(self.drop_with(DropCode::NoMention, place.conversation, guid));
        }
        Ok(mentioned || authorized_command)
    }

    /// Step 17: a conversation muted by the loop limiter (suppressed messages add no hits).
    fn loop_limit(&mut self, conversation: Conversation, now: i64, guid: &str) -> Step<()> {
        // Most accounts never had a loop drop: then no key is formatted for the check.
        if self.loops.quiet(now) {
            return Ok(());
        }
        let key = conversation.key(&self.account.id);
        let Some((n, first)) = self.loops.muted(&key, now) else {
            return Ok(());
        };
        if first {
            tracing::warn!(
                "conversation {} muted: echo loop suspected ({n} loop drops in 60 s)",
                super::conversation_hash(&key)
            );
        }
        Err(self.drop_with(DropCode::LoopLimited, conversation, guid))
    }
}

fn chat_type(is_group: bool) -> ChatType {
    if is_group {
        ChatType::Group
    } else {
        ChatType::Direct
    }
}

/// `replyTo` (§2): present when the row quotes a message or its text.
fn reply_to(m: &ImsgMessage) -> Option<ReplyTo> {
    let id = non_empty(&m.reply_to_guid);
    let text = non_empty(&m.reply_to_text);
    if id.is_none() && text.is_none() {
        return None;
    }
    Some(ReplyTo {
        id: id.map(str::to_string),
        text: text.map(str::to_string),
        sender: non_empty(&m.reply_to_sender).map(handle::normalize_sender),
    })
}
