//! The host's `call` methods, typed (plugin_abi::contract): the payload is decoded once into
//! its request type, each method is one function, and the reply is the contract's reply
//! type, so the wire is what the contract's round-trip tests hold.

use std::sync::Arc;
use std::time::Duration;

use plugin_abi::contract::ErrorCode;
use plugin_abi::contract::{
    self, CallRequest, ChatRead, ChatReadReply, ChatTyping, ChatTypingReply, ConfigReload,
    ConfigReloadReply, ConfigSchemaReply, ConfigValidate, ConfigValidateReply, PairingApprove,
    PairingApproveReply, PairingList, PairingListReply, PairingRequest, PairingRevoke,
    PairingRevokeReply, TargetNormalize, TargetSelector,
};
use plugin_abi::types::PluginError;
use serde::Serialize;
use serde_json::Value;

use super::{io_error, load_config, not_started, watchers_by_source, ImessagePlugin, Running};
use crate::account::Account;
use crate::actions::message_actions;
use crate::inbound::pairing::PairingStore;
use crate::outbound::{self, Target};
use crate::support::sync::LockExt;
use crate::support::timeutil;

/// A message action's run, borrowing its context.
type Action<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, PluginError>> + 'c>>;

/// An approval notice to send once the state lock is released.
type Notice = (Arc<Account>, outbound::Plan, tokio::runtime::Handle);

/// What a method that acts on one account runs with, taken under the state lock and used
/// outside it: a bridge call or a send may take seconds, and status, pairing and stop must
/// not wait for it.
struct On {
    account: Arc<Account>,
    runtime: tokio::runtime::Handle,
}

fn encoded<T: Serialize>(
    method: contract::CallMethod,
    reply: Result<T, PluginError>,
) -> Result<Value, PluginError> {
    contract::encode(method, &reply?)
}

/// Whether `account` is the one a request's optional `accountId` names (absent: all).
fn named(only: Option<&str>, account: &Account) -> bool {
    only.is_none_or(|o| o.trim().to_lowercase() == account.id)
}

/// A send target as `target.normalize` answers it: the selector `send` would use.
fn selector(target: Target) -> TargetSelector {
    let mut s = TargetSelector::default();
    match target {
        Target::ChatId(id) => s.chat_id = Some(id),
        Target::ChatGuid(g) => s.chat_guid = Some(g),
        Target::ChatIdentifier(i) => s.chat_identifier = Some(i),
        Target::Handle { to, .. } => s.to = Some(to),
    }
    s
}

/// A `to` that must parse as a send target, or `invalid_target` quoting it.
fn check_target(to: &str) -> Result<(), PluginError> {
    outbound::target::parse(to)
        .map(|_| ())
        .map_err(|e| PluginError::invalid_target(format!("{}: {e}", to.trim())))
}

impl ImessagePlugin {
    /// `call`: decode, then one function per method.
    pub(super) fn dispatch(&self, method: &str, payload: Value) -> Result<Value, PluginError> {
        let request = CallRequest::decode(method, payload)?;
        let method = request.method();
        match request {
            CallRequest::ConfigValidate(r) => encoded(method, self.config_validate(r)),
            CallRequest::ConfigReload(r) => encoded(method, self.config_reload(r)),
            // Needs no start: the schema is the config parser's own table.
            CallRequest::ConfigSchema(_) => encoded(
                method,
                Ok(ConfigSchemaReply(crate::config::schema::schema())),
            ),
            CallRequest::PairingList(r) => encoded(method, self.pairing_list(r)),
            CallRequest::PairingApprove(r) => encoded(method, self.pairing_approve(r)),
            CallRequest::PairingRevoke(r) => encoded(method, self.pairing_revoke(r)),
            CallRequest::TargetNormalize(r) => encoded(method, target_normalize(r)),
            CallRequest::CapabilitiesGet(r) => {
                let on = self.on(r.account_id.as_deref())?;
                // Learning runs imsg (seconds at worst): outside the state lock.
                let reply = self.logged(|| {
                    on.runtime
                        .block_on(on.account.capabilities(r.refresh))
                        .map(|c| c.to_reply(&on.account.id))
                        .map_err(|e| PluginError::new(ErrorCode::ImsgUnavailable, e))
                });
                encoded(method, reply)
            }
            CallRequest::ChatTyping(r) => encoded(method, self.chat_typing(r)),
            CallRequest::ChatRead(r) => encoded(method, self.chat_read(r)),
            CallRequest::MessageReact(r) => {
                let on = self.on(r.message.account_id.as_deref())?;
                encoded(
                    method,
                    self.in_action(&on, |c| Box::pin(message_actions::react(c, r))),
                )
            }
            CallRequest::MessageEdit(r) => {
                let on = self.on(r.message.account_id.as_deref())?;
                encoded(
                    method,
                    self.in_action(&on, |c| Box::pin(message_actions::edit(c, r))),
                )
            }
            CallRequest::MessageUnsend(r) => {
                let on = self.on(r.message.account_id.as_deref())?;
                encoded(
                    method,
                    self.in_action(&on, |c| Box::pin(message_actions::unsend(c, r))),
                )
            }
            CallRequest::SendReconcile(r) => {
                let on = self.on(r.account_id.as_deref())?;
                if r.idempotency_key.is_empty() {
                    return Err(PluginError::invalid_request("idempotencyKey is required"));
                }
                let receipt = self.logged(|| {
                    on.runtime
                        .block_on(on.account.outbound.reconcile_key(&r.idempotency_key))
                });
                encoded(method, receipt)
            }
            other => Err(PluginError::new(
                ErrorCode::UnknownMethod,
                format!("not supported by this plugin: {}", other.method()),
            )),
        }
    }

    /// The account a request names and the runtime, taken under the state lock.
    fn on(&self, account_id: Option<&str>) -> Result<On, PluginError> {
        self.with_running(|r| {
            Ok(On {
                account: r.account(account_id)?.clone(),
                runtime: r.runtime.handle().clone(),
            })
        })
    }

    /// Runs a message action on the account's actions child, logged, outside the state lock.
    fn in_action<T>(
        &self,
        on: &On,
        action: impl for<'c> FnOnce(&'c message_actions::Context<'c>) -> Action<'c, T>,
    ) -> Result<T, PluginError> {
        self.logged(|| {
            let settings = on.account.settings();
            let context = on.account.action_context(&settings);
            on.runtime.block_on(action(&context))
        })
    }

    fn config_validate(&self, r: ConfigValidate) -> Result<ConfigValidateReply, PluginError> {
        self.logged(|| {
            let config = load_config(&r.0)?;
            Ok(ConfigValidateReply {
                ok: true,
                warnings: config.warnings.clone(),
            })
        })
    }

    /// `config.reload` (§11): settings that need no restart apply to the next message with
    /// the same imsg processes; accounts whose source or process settings changed are
    /// restarted; added accounts start and removed ones stop.
    fn config_reload(&self, r: ConfigReload) -> Result<ConfigReloadReply, PluginError> {
        self.logged(|| {
            let mut guard = self.running.locked();
            let running = guard.as_mut().ok_or_else(not_started)?;
            let config = Arc::new(load_config(&r.0)?);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let (watching, duplicates) = watchers_by_source(&config);
            let was_watching: Vec<String> = running.watchers.keys().cloned().collect();
            running.config = config.clone();
            let mut reply = ConfigReloadReply::default();
            for account in std::mem::take(&mut running.accounts) {
                let unchanged = config.account(&account.id).filter(|s| {
                    s.process_settings() == account.settings().process_settings()
                        && watching.contains(&s.id) == was_watching.contains(&s.id)
                });
                if let Some(settings) = unchanged {
                    account.update(config.clone(), settings.clone());
                    reply.updated.push(account.id.clone());
                    running.accounts.push(account);
                    continue;
                }
                running.halt(&account);
                match config.account(&account.id) {
                    Some(_) => reply.restarted.push(account.id.clone()),
                    None => reply.stopped.push(account.id.clone()),
                }
            }
            for settings in &config.accounts {
                if !running.accounts.iter().any(|a| a.id == settings.id) {
                    let warnings = &mut reply.warnings;
                    running.launch(settings, &watching, &duplicates, &self.host, warnings);
                    if !reply.restarted.contains(&settings.id) {
                        reply.started.push(settings.id.clone());
                    }
                }
            }
            let ConfigReloadReply {
                updated,
                restarted,
                started,
                stopped,
                ..
            } = &reply;
            tracing::info!(?updated, ?restarted, ?started, ?stopped, "config reloaded");
            Ok(reply)
        })
    }

    fn pairing_list(&self, r: PairingList) -> Result<PairingListReply, PluginError> {
        self.with_running(|running| {
            let only = r.account_id.as_deref();
            let now = timeutil::now_ms();
            let mut out = Vec::new();
            for account in running.accounts.iter().filter(|a| named(only, a)) {
                let requests = running
                    .pairing_store(account)?
                    .list(now)
                    .map_err(io_error)?;
                out.extend(requests.into_iter().map(|q| PairingRequest {
                    expires_at: q.expires_at(),
                    code: q.code,
                    sender_id: q.id,
                    account_id: account.id.clone(),
                    created_at: q.created_at,
                    last_seen_at: q.last_seen_at,
                }));
            }
            if only.is_some() {
                running.account(only)?;
            }
            Ok(PairingListReply(out))
        })
    }

    fn pairing_approve(&self, r: PairingApprove) -> Result<PairingApproveReply, PluginError> {
        let (approved, notice) = self.with_running(|running| approve(running, &r))?;
        if let Some((account, plan, runtime)) = notice {
            self.logged(|| {
                let receipt = runtime.block_on(account.send(&plan));
                if !receipt.wire.ok {
                    // The parts' errors may quote the target: debug only.
                    tracing::warn!(account = %account.id, "the approval notice was not sent (details at debug level)");
                    tracing::debug!(account = %account.id, "the approval notice was not sent: {:?}", receipt.wire.parts);
                }
            });
        }
        Ok(approved)
    }

    fn pairing_revoke(&self, r: PairingRevoke) -> Result<PairingRevokeReply, PluginError> {
        self.with_running(|running| {
            let account = running.account(r.account_id.as_deref())?;
            let id = crate::support::handle::normalize_sender(&r.sender_id);
            let removed = running
                .pairing_store(account)?
                .revoke(&id)
                .map_err(io_error)?;
            Ok(PairingRevokeReply {
                account_id: account.id.clone(),
                sender_id: id,
                removed,
            })
        })
    }

    fn chat_typing(&self, r: ChatTyping) -> Result<ChatTypingReply, PluginError> {
        use crate::actions::typing;
        let on = self.on(r.account_id.as_deref())?;
        check_target(&r.to)?;
        let account = &on.account;
        let reply = |sent: bool, typing: bool, reason: Option<String>| ChatTypingReply {
            ok: true,
            account_id: account.id.clone(),
            typing,
            sent,
            reason,
        };
        // `never` turns typing off, chat.typing included; the default agent's mode.
        let config = account.configured().whole;
        let mode = config.globals.typing_mode(&config.globals.default_agent);
        if mode == crate::config::TypingMode::Never {
            return Ok(reply(false, r.on, Some("typingMode is never".into())));
        }
        self.logged(|| {
            if !r.on {
                typing::stop(&account.actions, &r.to);
                return Ok(reply(true, false, None));
            }
            let settings = account.settings();
            match on
                .runtime
                .block_on(typing::unavailable(&account.actions, &settings))
            {
                Some(reason) => Ok(reply(false, true, Some(reason))),
                None => {
                    // The typing task runs on the plugin's runtime.
                    let _guard = on.runtime.enter();
                    typing::start(&account.actions, &settings, &r.to, typing::Origin::Host);
                    Ok(reply(true, true, None))
                }
            }
        })
    }

    /// An explicit call is honoured even with sendReadReceipts false (that key governs the
    /// automatic receipts only).
    fn chat_read(&self, r: ChatRead) -> Result<ChatReadReply, PluginError> {
        let on = self.on(r.account_id.as_deref())?;
        check_target(&r.to)?;
        let account = &on.account;
        let probe_timeout = Duration::from_millis(account.settings().probe_timeout_ms);
        self.logged(|| {
            let reason = on
                .runtime
                .block_on(crate::actions::mark_read(
                    &account.actions,
                    &r.to,
                    probe_timeout,
                ))
                .map_err(|e| {
                    PluginError::new(ErrorCode::Failed, format!("mark read failed: {e}"))
                })?;
            Ok(ChatReadReply {
                ok: true,
                account_id: account.id.clone(),
                sent: reason.is_none(),
                reason,
            })
        })
    }
}

/// Needs no start: a target's selector, or `invalid_target`.
fn target_normalize(r: TargetNormalize) -> Result<TargetSelector, PluginError> {
    outbound::target::parse(&r.to)
        .map(selector)
        .map_err(|e| PluginError::invalid_target(e.to_string()))
}

/// Approves under the state lock; the optional notice is sent by the caller after it.
fn approve(
    running: &Running,
    r: &PairingApprove,
) -> Result<(PairingApproveReply, Option<Notice>), PluginError> {
    let code = r.code.trim().to_uppercase();
    if code.is_empty() {
        return Err(PluginError::invalid_request("a pairing code is required"));
    }
    let not_pending =
        || PluginError::invalid_request(format!("no pending pairing request with code {code}"));
    let now = timeutil::now_ms();
    let mut matches = Vec::new();
    for account in running
        .accounts
        .iter()
        .filter(|a| named(r.account_id.as_deref(), a))
    {
        let store: PairingStore = running.pairing_store(account)?;
        if store.find(&code, now).map_err(io_error)?.is_some() {
            matches.push(account.clone());
        }
    }
    let account = match matches.as_slice() {
        [] => return Err(not_pending()),
        [one] => one.clone(),
        _ => {
            return Err(PluginError::invalid_request(format!(
                "code {code} is pending in several accounts; name the account"
            )))
        }
    };
    let request = running
        .pairing_store(&account)?
        .approve(&code, now)
        .map_err(io_error)?
        .ok_or_else(not_pending)?;
    tracing::info!(account = %account.id, "pairing approved");
    let mut notice = None;
    if r.notify {
        // The request keeps the chat id only: without one, the §4.3 handle fallback.
        let peer = crate::config::Peer::Direct(request.id.clone());
        let to = crate::inbound::routing::reply_target(&peer, request.chat_id, None);
        let text = crate::inbound::pairing::APPROVED_TEXT;
        if let Ok(plan) = outbound::plan_plain(&to, text, &account.settings()) {
            notice = Some((account.clone(), plan, running.runtime.handle().clone()));
        }
    }
    let reply = PairingApproveReply {
        account_id: account.id.clone(),
        sender_id: request.id,
    };
    Ok((reply, notice))
}
