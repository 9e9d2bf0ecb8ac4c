//! What the watcher does with each message: the pipeline's verdict carried out (pairing
//! replies, refusals, staging, the routed event held for delivery), panics caught per message
//! (restart, then quarantine), and delivery to the host with its acknowledgement finishing the
//! held messages in order.

use std::collections::HashSet;

use plugin_abi::types::InboundEvent;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::sleep_or_cancel;
use super::watch::Watch;
use crate::config::Configured;
use crate::config::TypingMode;
use crate::imsg::message::{ImsgMessage, Malformed};
use crate::inbound::pairing::{self, Challenge};
use crate::inbound::{Accepted, DropCode, Input, Verdict};
use crate::outbound;
use crate::support::sync::LockExt;
use crate::support::timeutil;
use crate::watcher::delivery::{Delivery, Handoff};
use crate::watcher::unacked::{AfterAck, Pending, Sealed};

impl Watch {
    /// One `message` notification: the typed message, or why it could not be used.
    pub(super) async fn message(
        &mut self,
        subscription: Option<i64>,
        message: Result<Box<ImsgMessage>, Malformed>,
        dead_subscriptions: &HashSet<i64>,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        match message {
            Ok(m) => {
                self.supervised(subscription, *m, dead_subscriptions, cancel)
                    .await
            }
            Err(bad) => {
                self.inbound.count_drop(DropCode::Malformed);
                tracing::debug!(
                    "drop reason=malformed account={} keys={}",
                    self.parts.id,
                    bad.keys.join(",")
                );
                Ok(())
            }
        }
    }

    /// [`Self::handle`] with its panics caught (issue 10). The first panic on a message asks
    /// for a restart from the cursor (`Err`), which replays it; a second panic on the same
    /// message quarantines it and moves on, so one bad row never silences the account. A row
    /// that ended the whole process instead (no panic to catch) is known by the in-flight
    /// marker, and quarantined once two starts found it there (issue 21).
    pub(super) async fn supervised(
        &mut self,
        subscription: Option<i64>,
        m: ImsgMessage,
        dead_subscriptions: &HashSet<i64>,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        if self.catchup.rowid().is_none() {
            let before = m.cursor_id().saturating_sub(1);
            self.baseline = Some(self.baseline.map_or(before, |b| b.min(before)));
        }
        let key = m.dedupe_key();
        {
            let marker = crate::state::inflight::marker_key(&key);
            // The process died with this row and a delivery in flight at once: this time it
            // runs alone, so a death now is its own (see `state::inflight`).
            if self.parts.crash.must_run_alone(&marker) && !self.drain(cancel).await {
                return Ok(());
            }
            let crashes = match self.parts.crash.crashed.locked().as_ref() {
                Some(r) if r.key == marker => r.crashes,
                _ => 0,
            };
            if crashes >= crate::state::inflight::QUARANTINE_AFTER {
                *self.parts.crash.crashed.locked() = None;
                let reason = format!("the process ended {crashes} times while processing it");
                self.quarantine(&m, &reason, "ended the process twice");
                return Ok(());
            }
            let mut inflight = self.parts.crash.inflight.locked();
            inflight.begin(&marker, m.cursor_id(), crashes);
        }
        let handled = self.handle(subscription, &m, key, dead_subscriptions);
        let outcome = crate::support::task::catch(handled).await;
        // A row that left something held is cleared by the commit that delivers it (the pump
        // commits before it waits); the next row's record replaces this one before that.
        if outcome.is_err() || self.outbox.is_empty() {
            self.parts.crash.inflight.locked().clear();
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(panic) => self.after_panic(&m, &panic),
        }
    }

    fn after_panic(&mut self, m: &ImsgMessage, panic: &str) -> Result<(), String> {
        let key = m.dedupe_key();
        let guid = m.guid.as_deref().unwrap_or("");
        let rowid = m.cursor_id();
        let again = {
            let mut suspect = self.parts.crash.suspect.locked();
            let again = suspect.as_deref() == Some(key.as_str());
            *suspect = if again { None } else { Some(key.clone()) };
            again
        };
        // The log line names the message, never its text or handles; the panic's own text may
        // quote either, so it goes to the dead-letter entry and the debug log only.
        tracing::debug!(account = %self.parts.id, guid, "panic while processing: {panic}");
        if !again {
            let what = format!(
                "processing message {guid} (row {rowid}) panicked; restarting from the cursor"
            );
            tracing::error!(account = %self.parts.id, guid, rowid, "{what}");
            self.parts.status.note_panic(what.clone());
            return Err(what);
        }
        self.quarantine(m, panic, "panicked twice");
        Ok(())
    }

    /// Sets `m` aside in the dead-letter file and finishes it, so the cursor moves past it.
    /// `reason` goes to the file (it may quote the message); `summary` to the log and status.
    fn quarantine(&mut self, m: &ImsgMessage, reason: &str, summary: &str) {
        let key = m.dedupe_key();
        let guid = m.guid.as_deref().unwrap_or("");
        let rowid = m.cursor_id();
        let entry = json!({
            "at": timeutil::format_ms(timeutil::now_ms()),
            "accountId": self.parts.id,
            "guid": guid,
            "rowid": rowid,
            "chatId": m.chat_id,
            "panic": reason,
            "message": m,
        });
        let what = match crate::state::quarantine::record(&self.parts.dir, &entry) {
            Ok(file) => format!(
                "message {guid} (row {rowid}) {summary} and was quarantined in {}",
                file.display()
            ),
            // Still move on: holding the cursor here would silence every later message.
            Err(e) => format!(
                "message {guid} (row {rowid}) {summary}; writing it to the quarantine file failed ({e}); skipped"
            ),
        };
        tracing::error!(account = %self.parts.id, guid, rowid, "{what}");
        self.parts.status.note_panic(what);
        self.parts.status.locked().quarantined += 1;
        self.inbound.count_drop(DropCode::Quarantined);
        let seen = self.catchup.is_seen(&key) || self.held(&key);
        self.outbox.push(Pending {
            key,
            rowid,
            created_ms: m.created_ms(),
            seen,
            routed: false,
            conversation: None,
            early_typing: false,
        });
    }

    /// A reload that needs no restart applies from the next message on; true when one did.
    pub(super) fn apply_reload(&mut self) -> bool {
        let generation = self.parts.live.generation();
        if generation == self.generation {
            return false;
        }
        let Configured {
            whole: config,
            account: settings,
        } = self.parts.live.configured();
        self.inbound.reconfigure(config, settings);
        self.generation = generation;
        tracing::info!(account = %self.parts.id, "reloaded settings apply from this message on");
        true
    }

    /// One message, start to finish.
    async fn handle(
        &mut self,
        subscription: Option<i64>,
        m: &ImsgMessage,
        key: String,
        dead_subscriptions: &HashSet<i64>,
    ) {
        // A lenient server may write one more row after `watch.unsubscribe`.
        if subscription.is_some_and(|s| dead_subscriptions.contains(&s)) {
            return;
        }
        self.apply_reload();
        #[cfg(feature = "fault-injection")]
        if m.text.as_deref() == Some(super::FAULT_PANIC_TEXT) {
            // Quotes the sender, as a real panic's message may: the logs must not show it.
            panic!(
                "fault injection: processing this message panics (from {})",
                m.sender.as_deref().unwrap_or("")
            );
        }
        #[cfg(feature = "fault-injection")]
        if m.text.as_deref() == Some(super::FAULT_HANG_TEXT) {
            // Stands for a row that ends the process (a stack overflow, an abort): the test
            // kills the gateway while it waits here.
            tracing::warn!(account = %self.parts.id, "fault injection: holding row {}", m.cursor_id());
            std::future::pending::<()>().await;
        }
        let now = timeutil::now_ms();
        // A repeat of a message still waiting for its acknowledgement is a duplicate too.
        let seen = self.catchup.is_seen(&key) || self.held(&key);
        let created_ms = m.created_ms();
        let verdict = self.verdict(m, &key, seen, created_ms, now);
        self.note_outbound(m, &verdict);
        let mut conversation = None;
        let mut early_typing = false;
        let routed = match verdict {
            Verdict::Drop(_) => false,
            Verdict::Pairing {
                sender_id,
                chat_id,
                chat_guid,
            } => {
                self.pairing_flow(&sender_id, chat_id, chat_guid.as_deref())
                    .await;
                false
            }
            Verdict::Refuse { to, text, .. } => {
                self.send_plain(&to, text).await;
                false
            }
            Verdict::React(event) => {
                let pending = Pending {
                    key,
                    rowid: m.cursor_id(),
                    created_ms,
                    seen,
                    routed: false,
                    conversation: None,
                    early_typing: false,
                };
                self.reaction = Some((event, pending));
                return;
            }
            Verdict::Route(accepted) => match self.hand_over(m, *accepted).await {
                Some((to, typing)) => {
                    (conversation, early_typing) = (Some(to), typing);
                    true
                }
                None => false,
            },
        };
        self.outbox.push(Pending {
            key,
            rowid: m.cursor_id(),
            created_ms,
            seen,
            routed,
            conversation,
            early_typing,
        });
    }

    /// The pipeline's verdict. The host's allow store (`pairing.host`) is cached for seconds,
    /// so a DM bound for the pairing flow is judged once more when the host's list changed
    /// since: an approval applies to the sender's next DM instead of earning a new code.
    fn verdict(
        &mut self,
        m: &ImsgMessage,
        key: &str,
        seen: bool,
        created_ms: Option<i64>,
        now: i64,
    ) -> Verdict {
        let newest_ms = self.catchup.newest_ms();
        let mut rechecked = false;
        loop {
            let verdict = self.inbound.evaluate(&Input {
                message: m,
                key,
                seen,
                created_ms,
                newest_ms,
                allow_store: self.pairing.allow_list_cached(now),
                now_ms: now,
            });
            let pairing = matches!(verdict, Verdict::Pairing { .. });
            if rechecked || !pairing || !self.pairing.recheck(now) {
                return verdict;
            }
            // The first judgement counted a pairing drop that the second replaces.
            if let Some(n) = self
                .inbound
                .stats
                .drops
                .get_mut(DropCode::PairingPending.as_str())
            {
                *n = n.saturating_sub(1);
            }
            rechecked = true;
        }
    }

    fn finish(&mut self, p: Pending, now: i64) {
        // A duplicate never moves the cursor backwards.
        if p.seen && self.catchup.rowid().is_some_and(|c| p.rowid <= c) {
            return;
        }
        if let Some(warning) = self.catchup.finish(p.key, p.rowid, p.created_ms, now) {
            tracing::warn!(account = %self.parts.id, "{warning}");
        }
    }

    /// Hands what the outbox holds to the host (one `deliver` call, retried after a refusal)
    /// once the delivery before it was answered and what that held was finished; returns
    /// while the host works, so the rows of the next delivery are processed meanwhile. False
    /// only when stopped while retrying (see [`Self::settle`]).
    pub(super) async fn commit(&mut self, cancel: &CancellationToken, handoff: Handoff) -> bool {
        if self.outbox.is_empty() {
            return true;
        }
        if !self.settle(cancel).await {
            return false;
        }
        let sealed = self.outbox.seal();
        if sealed.events == 0 {
            // Only drops: nothing for the host, finished at once (in order: nothing in flight).
            self.finish_held(sealed, true).await;
        } else {
            self.delivery = Some(Delivery::start(&self.parts, sealed, handoff));
        }
        true
    }

    /// [`Self::commit`], then waits for it: after `true` nothing is held or in flight.
    pub(super) async fn drain(&mut self, cancel: &CancellationToken) -> bool {
        self.commit(cancel, Handoff::Inline).await && self.settle(cancel).await
    }

    /// Waits for the delivery in flight, retried after 1 s, 4 s and 16 s (§6.3), and
    /// finishes every message it held, in order, once it is acknowledged or given up. False
    /// only when stopped while retrying: then nothing of it nor of the outbox is finished
    /// (one more attempt is made by the next [`Self::drain`], as a stop's last delivery).
    pub(super) async fn settle(&mut self, cancel: &CancellationToken) -> bool {
        // The last row's in-flight record (left for the next row to replace): the host's
        // delivery, the wait for it and its after-ack effects are no row's doing.
        self.parts.crash.inflight.locked().clear();
        let Some(mut delivery) = self.delivery.take() else {
            return true;
        };
        let mut retries = self.parts.timings.delivery_retries.into_iter();
        let acknowledged = loop {
            match (delivery.answer(&self.parts).await, retries.next()) {
                (Ok(()), _) => break true,
                (Err(e), Some(delay)) => {
                    let what = delivery.sealed.describe();
                    tracing::warn!(account = %self.parts.id, "host refused {what}: {e}; retrying");
                    if sleep_or_cancel(delay, cancel).await {
                        self.delivery = Some(delivery);
                        return false;
                    }
                }
                (Err(e), None) => {
                    let what = delivery.sealed.describe();
                    tracing::error!(account = %self.parts.id, "delivery failed for {what} after 4 attempts: {e}");
                    break false;
                }
            }
        };
        self.finish_held(delivery.sealed, acknowledged).await;
        true
    }

    /// Finishes what one delivery held, in stream order, and runs what waited for its
    /// acknowledgement: counters, early typing, read receipts, config writes.
    async fn finish_held(&mut self, sealed: Sealed, acknowledged: bool) {
        let now = timeutil::now_ms();
        let mut read: Vec<String> = Vec::new();
        let mut typing_in: Option<String> = None;
        let mut sealed = sealed;
        let held = std::mem::take(&mut sealed.held);
        let effects = std::mem::take(&mut sealed.effects);
        if let Some(buffer) = sealed.into_buffer() {
            self.outbox.recycle(buffer);
        }
        for mut p in held {
            if p.routed {
                if acknowledged {
                    self.inbound.stats.routed += 1;
                    self.last_inbound_ms = Some(now);
                    if let Some(to) = p.conversation.take() {
                        // A burst from one conversation starts (or refreshes) typing there
                        // once, with the same `now`; it is marked read once too.
                        if p.early_typing && typing_in.as_deref() != Some(to.as_str()) {
                            crate::actions::typing::start(
                                &self.parts.actions,
                                self.inbound.settings(),
                                &to,
                                crate::actions::typing::Origin::Early,
                            );
                            typing_in = Some(to.clone());
                        }
                        if read.last() != Some(&to) {
                            read.push(to);
                        }
                    }
                } else {
                    self.inbound.count_drop(DropCode::DeliveryFailed);
                }
            }
            self.finish(p, now);
        }
        // Read receipts run on the actions child, in the background (actions.md §3.2).
        crate::actions::after_ack(&self.parts.actions, self.inbound.settings(), read);
        if acknowledged {
            for effect in effects {
                self.config_write(effect).await;
            }
        }
    }

    /// Held for a delivery not yet answered: in the outbox or in flight. A repeat of such a
    /// message is a duplicate too.
    fn held(&self, key: &str) -> bool {
        self.outbox.holds(key) || self.delivery.as_ref().is_some_and(|d| d.holds(key))
    }

    /// The reaction the last message produced (after what was held before it is delivered):
    /// handed to the host once; a refusal is logged and counted, never retried, so a host
    /// that cannot take the type does not stall the stream (actions.md §2.2 R3).
    pub(super) fn deliver_reaction(&mut self) {
        let Some((event, pending)) = self.reaction.take() else {
            return;
        };
        let json = serde_json::to_string(&InboundEvent::Reaction(*event)).unwrap_or_default();
        match self.parts.host.deliver_json(&json) {
            Ok(()) => self.parts.status.locked().reactions_delivered += 1,
            Err(e) => {
                tracing::warn!(account = %self.parts.id, "reaction event refused by host: {e}");
                self.inbound.count_drop(DropCode::ReactionRefused);
            }
        }
        self.outbox.push(pending);
    }

    /// An authorized `/config set|unset` whose message the host acknowledged (§9.2): the host
    /// validates the whole resulting config and writes it only when the gateway can start
    /// with it; a refusal is answered with its reason.
    async fn config_write(&mut self, effect: AfterAck) {
        let mut request = effect.config_write;
        request["accountId"] = json!(self.parts.id);
        match self.parts.host.request("config.write", &request) {
            Ok(_) => {
                tracing::info!(account = %self.parts.id, path = %request["path"], "config write applied by the host")
            }
            Err(e) => {
                // The host's reasons may quote the value, which came from a message.
                tracing::warn!(account = %self.parts.id, code = %e.code, "the host did not apply the config write (reasons at debug level)");
                tracing::debug!(account = %self.parts.id, "the host did not apply the config write: {e}");
                let reason = if e.errors.is_empty() {
                    e.message.clone()
                } else {
                    e.errors.join("; ")
                };
                self.send_plain(&effect.to, &format!("Config not changed: {reason}"))
                    .await;
            }
        }
    }

    /// An accepted message: indexed, its attachments staged, and held for the host; the
    /// conversation it answers in and whether typing starts early, or `None` when it could
    /// not be encoded.
    async fn hand_over(&mut self, m: &ImsgMessage, accepted: Accepted) -> Option<(String, bool)> {
        self.parts.actions.index.locked().record(m);
        let mut routed = accepted.message;
        if !accepted.attachments.is_empty() {
            routed.media = crate::watcher::staging::stage(
                &self.parts.media,
                self.parts.source.remote_host.as_deref(),
                self.inbound.settings(),
                m,
                &accepted.attachments,
            )
            .await;
            if let Some(text) = crate::inbound::attachments::placeholder_after_staging(
                accepted.placeholder,
                routed.media.len(),
            ) {
                routed.text = text.into();
            }
        }
        let to = routed.to.clone();
        // Early typing: DMs only, when the routed agent's mode is `instant` (§3.1).
        let early_typing = routed.chat_type == plugin_abi::types::ChatType::Direct
            && self.inbound.typing_mode(&routed.agent_id) == TypingMode::Instant;
        let event = InboundEvent::Message(routed);
        let message_id = match &event {
            InboundEvent::Message(r) => r.message_id.as_str(),
            _ => "",
        };
        match self.outbox.push_event(&event, message_id) {
            Ok(()) => {
                if let Some(config_write) = accepted.config_write {
                    self.outbox.after_ack(AfterAck {
                        to: to.clone(),
                        config_write,
                    });
                }
                Some((to, early_typing))
            }
            Err(e) => {
                tracing::error!(account = %self.parts.id, "encoding routed message {message_id}: {e}");
                None
            }
        }
    }

    /// What a row means for the send path. Someone wrote (even a row dropped by policy, even
    /// a tapback): the rate limiter's unanswered counts for the conversation reset (actions.md
    /// §6.2). Only a row the pipeline admitted (routed, a tapback event, a refused command)
    /// may add a conversation; a stranger's row only updates one the bot already knows
    /// (issue 21). Our own row may settle a send whose outcome was unknown (§7.3).
    fn note_outbound(&self, m: &ImsgMessage, verdict: &Verdict) {
        if !matches!(verdict, Verdict::Drop(code) if code.is_own_or_replayed()) {
            let admitted = matches!(
                verdict,
                Verdict::Route(_) | Verdict::React(_) | Verdict::Refuse { .. }
            );
            self.parts.outbound.note_inbound(m, admitted);
        }
        if m.is_from_me == Some(true) {
            self.parts.outbound.settle_from_echo(m);
        }
    }

    async fn pairing_flow(
        &mut self,
        sender_id: &str,
        chat_id: Option<i64>,
        chat_guid: Option<&str>,
    ) {
        let now = timeutil::now_ms();
        match self.pairing.challenge(sender_id, chat_id, now) {
            Ok(Challenge::Reply { code, chat_id }) => {
                let peer = crate::config::Peer::Direct(sender_id.to_string());
                let to = crate::inbound::routing::reply_target(&peer, chat_id, chat_guid);
                let delivered = self
                    .send_plain(&to, &pairing::pairing_text(sender_id, &code))
                    .await;
                tracing::info!(
                    account = %self.parts.id,
                    "pairing requested by an unknown sender; {}", self.pairing.where_listed()
                );
                if let Err(e) = self
                    .pairing
                    .set_notified(sender_id, delivered, timeutil::now_ms())
                {
                    tracing::error!(account = %self.parts.id, "{e}");
                }
            }
            Ok(Challenge::Pending) => {}
            Ok(Challenge::QueueFull) => {
                tracing::info!("pairing queue full for account {}", self.parts.id)
            }
            Err(e) => tracing::error!(account = %self.parts.id, "pairing store: {e}"),
        }
    }

    /// Sends a plugin-generated text as the account does (owner DM, typing ended after it,
    /// the last outbound time); true when it reached imsg (`sent` or `unknown`).
    async fn send_plain(&self, to: &str, text: &str) -> bool {
        let settings = self.parts.live.settings();
        match outbound::plan_plain(to, text, &settings) {
            Ok(plan) => {
                let owner_dm = self.parts.actions.is_owner_dm(&plan, &settings);
                let receipt = self.parts.outbound.send(&plan, &settings, owner_dm).await;
                self.parts.actions.after_send(&plan);
                if receipt.any_sent() {
                    self.parts.status.note_outbound();
                }
                receipt.reached_imsg()
            }
            Err(e) => {
                // The target is a handle or a chat GUID that embeds one: its hash only.
                let conv = crate::inbound::conversation_hash(to);
                tracing::warn!(account = %self.parts.id, "cannot reply to conversation {conv}; the reply was not sent (details at debug level)");
                tracing::debug!(account = %self.parts.id, "cannot reply to {to}: {e:?}");
                false
            }
        }
    }
}
