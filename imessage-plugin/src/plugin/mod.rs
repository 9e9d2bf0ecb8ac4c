//! The plugin instance: turns host calls into work on the plugin's own runtime.

mod logging;
pub(crate) mod panic_hook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::guard::{HostHandle, Plugin};
use plugin_abi::types::{
    AccountStart, PluginDescription, PluginError, SendReceipt, SendRequest, StartContext,
    StartReport, StatusReport, StatusRequest,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::Dispatch;

use crate::account::Account;
use crate::config::{self, Config};
use crate::imsg::source::Source;
use crate::inbound::pairing::PairingStore;
use crate::outbound::{self, Rejected};
use crate::support::sync::LockExt;
use crate::support::timeutil;
use crate::watcher;

/// The channel id, also the config key under `channels`.
pub const CHANNEL_ID: &str = "imessage";

/// The `call` methods this plugin understands.
pub const METHODS: &[&str] = &[
    "config.validate",
    "config.reload",
    "pairing.list",
    "pairing.approve",
    "pairing.revoke",
    "target.normalize",
    "capabilities.get",
    "chat.typing",
    "chat.read",
    "message.react",
    "message.edit",
    "message.unsend",
    "send.reconcile",
];

pub fn description() -> PluginDescription {
    PluginDescription {
        id: CHANNEL_ID.to_string(),
        name: "iMessage".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        abi_version: plugin_abi::ABI_VERSION.to_string(),
        methods: METHODS.iter().map(|m| m.to_string()).collect(),
    }
}

/// Parses the config, or the `config_invalid` error listing every problem.
pub fn load_config(config: &Value) -> Result<Config, PluginError> {
    config::parse(config).map_err(|errors| {
        let mut e = PluginError::new(
            "config_invalid",
            format!(
                "{} config error(s): {}",
                errors.len(),
                errors.first().map(String::as_str).unwrap_or("")
            ),
        );
        e.errors = errors;
        e
    })
}

struct Running {
    runtime: tokio::runtime::Runtime,
    config: Arc<Config>,
    state_dir: PathBuf,
    /// `false` for one-shot use: no watcher runs.
    watch: bool,
    /// What the host said it understands at start; kept across reloads.
    features: Arc<plugin_abi::types::HostFeatures>,
    accounts: Vec<Arc<Account>>,
    /// Account id → its watcher's stop signal and task.
    watchers: BTreeMap<String, (CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Running {
    /// Creates an account and starts its watcher when it should watch.
    fn launch(
        &mut self,
        settings: &crate::config::AccountConfig,
        watching: &[String],
        duplicates: &[(String, String)],
        host: &Arc<HostHandle>,
        warnings: &mut Vec<String>,
    ) -> AccountStart {
        let account = Arc::new(Account::new(
            &self.state_dir,
            self.config.clone(),
            settings.clone(),
            host.clone(),
            self.features.clone(),
        ));
        let watches = self.watch && settings.enabled && watching.contains(&settings.id);
        if watches {
            // Tracked parts a crash left uncertain: their echo may still arrive.
            account.outbound.load_unsettled();
        }
        if let Some((_, winner)) = duplicates.iter().find(|(id, _)| *id == settings.id) {
            let text = format!(
                "accounts {} and {winner} read the same Messages database; only {winner} receives messages",
                settings.id
            );
            tracing::warn!("{text}");
            warnings.push(text);
            account.set_state(crate::account::AccountState::DuplicateSource, None);
        }
        if settings.enabled && settings.dm_policy == crate::config::DmPolicy::Allowlist {
            let mut store = PairingStore::new(&account.dir);
            let n = store.allow_list().len();
            if n > 0 {
                tracing::warn!(account = %settings.id, "dmPolicy \"allowlist\": {n} senders approved by pairing are ignored");
            }
        }
        if watches {
            let cancel = CancellationToken::new();
            let task = self
                .runtime
                .spawn(watcher::run(account.clone(), cancel.clone()));
            self.watchers.insert(settings.id.clone(), (cancel, task));
        }
        self.accounts.push(account);
        AccountStart {
            account_id: settings.id.clone(),
            enabled: settings.enabled,
            watching: watches,
        }
    }

    /// Stops an account's watcher and sender process, waiting for both.
    fn halt(&mut self, account: &Arc<Account>) {
        let watcher = self.watchers.remove(&account.id);
        self.runtime.block_on(async {
            if let Some((stop, task)) = watcher {
                stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
            }
            account.close_children().await;
        });
        account.outbound.save_limits(true);
    }

    fn account(&self, id: Option<&str>) -> Result<&Arc<Account>, PluginError> {
        let unknown = || {
            let wanted = id.unwrap_or(&self.config.default_account);
            PluginError::invalid_request(format!("no account named \"{}\"", wanted.trim()))
        };
        let settings = self.config.resolve_account(id).ok_or_else(unknown)?;
        self.accounts
            .iter()
            .find(|a| a.id == settings.id)
            .ok_or_else(unknown)
    }

    fn pairing_store(&self, account: &Account) -> PairingStore {
        PairingStore::new(&account.dir)
    }
}

/// Which enabled accounts watch: one per source signature (§11), the default account first.
fn watchers_by_source(config: &Config) -> (Vec<String>, Vec<(String, String)>) {
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in config.accounts.iter().filter(|a| a.enabled) {
        by_source
            .entry(Source::resolve(a).signature())
            .or_default()
            .push(a.id.clone());
    }
    let mut watching = Vec::new();
    let mut duplicates = Vec::new();
    for ids in by_source.values() {
        let winner = if ids.contains(&config.default_account) {
            config.default_account.clone()
        } else {
            // Every entry of `by_source` was created with one id pushed.
            ids[0].clone()
        };
        for id in ids {
            if *id != winner {
                duplicates.push((id.clone(), winner.clone()));
            }
        }
        watching.push(winner);
    }
    (watching, duplicates)
}

pub struct ImessagePlugin {
    host: Arc<HostHandle>,
    dispatch: Mutex<Dispatch>,
    running: Mutex<Option<Running>>,
}

impl ImessagePlugin {
    pub fn new(host: HostHandle) -> Self {
        let host = Arc::new(host);
        let dispatch = logging::dispatch(host.clone(), logging::parse_level(None));
        ImessagePlugin {
            host,
            dispatch: Mutex::new(dispatch),
            running: Mutex::new(None),
        }
    }

    /// Runs `f` with this instance's log dispatcher as the thread default, and a panic in it
    /// reported by the plugin's panic hook (without its message).
    fn logged<T>(&self, f: impl FnOnce() -> T) -> T {
        let dispatch = self.dispatch.locked().clone();
        crate::plugin::panic_hook::in_plugin(|| tracing::dispatcher::with_default(&dispatch, f))
    }

    fn build_runtime(dispatch: Dispatch) -> Result<tokio::runtime::Runtime, PluginError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("imessage-plugin")
            // Chosen, not inherited (tokio's default is 2 MiB): the deepest recursion outside
            // input can reach is serde_json's 128 levels on an imsg line or a state file, in a
            // debug build too; a `/config` value is bounded to 32 levels before json5 parses
            // it. 8 MiB is the main thread's usual size and leaves a wide margin.
            .thread_stack_size(8 << 20)
            .enable_all()
            .on_thread_start(move || {
                // The guard would reset the default when dropped; the thread lives exactly as
                // long as the runtime, so keeping it for the thread's life is what we want.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .map_err(|e| PluginError::internal(format!("starting the runtime: {e}")))
    }

    fn with_running<T>(
        &self,
        f: impl FnOnce(&Running) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let running = self.running.locked();
        match running.as_ref() {
            Some(r) => self.logged(|| f(r)),
            None => Err(not_started()),
        }
    }

    fn pairing_list(r: &Running, payload: &Value) -> Result<Value, PluginError> {
        let only = payload.get("accountId").and_then(Value::as_str);
        let now = timeutil::now_ms();
        let mut out = Vec::new();
        for account in &r.accounts {
            if only.is_some_and(|o| o.trim().to_lowercase() != account.id) {
                continue;
            }
            let requests = r.pairing_store(account).list(now).map_err(io_error)?;
            for q in requests {
                out.push(json!({
                    "code": q.code, "senderId": q.id, "accountId": account.id,
                    "createdAt": q.created_at, "expiresAt": q.expires_at(), "lastSeenAt": q.last_seen_at,
                }));
            }
        }
        if let Some(o) = only {
            r.account(Some(o))?;
        }
        Ok(Value::Array(out))
    }

    /// Approves under the state lock; the optional notice is sent by the caller after it.
    fn pairing_approve(
        r: &Running,
        payload: &Value,
    ) -> Result<(Value, Option<Notice>), PluginError> {
        let code = payload
            .get("code")
            .and_then(Value::as_str)
            .map(|c| c.trim().to_uppercase())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| PluginError::invalid_request("a pairing code is required"))?;
        let only = payload.get("accountId").and_then(Value::as_str);
        let now = timeutil::now_ms();
        let mut matches = Vec::new();
        for account in &r.accounts {
            if only.is_some_and(|o| o.trim().to_lowercase() != account.id) {
                continue;
            }
            if r.pairing_store(account)
                .find(&code, now)
                .map_err(io_error)?
                .is_some()
            {
                matches.push(account.clone());
            }
        }
        let account = match matches.len() {
            0 => {
                return Err(PluginError::invalid_request(format!(
                    "no pending pairing request with code {code}"
                )))
            }
            1 => matches.remove(0),
            _ => {
                return Err(PluginError::invalid_request(format!(
                    "code {code} is pending in several accounts; name the account"
                )))
            }
        };
        let request = r
            .pairing_store(&account)
            .approve(&code, now)
            .map_err(io_error)?
            .ok_or_else(|| {
                PluginError::invalid_request(format!("no pending pairing request with code {code}"))
            })?;
        tracing::info!(account = %account.id, "pairing approved");
        let mut notice = None;
        if payload.get("notify").and_then(Value::as_bool) == Some(true) {
            let to = crate::inbound::pairing::reply_target(&request.id, request.chat_id);
            if let Ok(plan) = outbound::plan_plain(
                &to,
                crate::inbound::pairing::APPROVED_TEXT,
                &account.settings(),
            ) {
                notice = Some((account.clone(), plan, r.runtime.handle().clone()));
            }
        }
        Ok((
            json!({"accountId": account.id, "senderId": request.id}),
            notice,
        ))
    }

    /// `config.reload` (§11): settings that need no restart apply to the next message with
    /// the same imsg processes; accounts whose source or process settings changed are
    /// restarted; added accounts start and removed ones stop.
    fn reload(&self, payload: &Value) -> Result<Value, PluginError> {
        self.logged(|| {
            let mut guard = self.running.locked();
            let r = guard.as_mut().ok_or_else(not_started)?;
            let config = Arc::new(load_config(payload)?);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let (watching, duplicates) = watchers_by_source(&config);
            let was_watching: Vec<String> = r.watchers.keys().cloned().collect();
            r.config = config.clone();
            let (mut updated, mut restarted, mut started, mut stopped) = (vec![], vec![], vec![], vec![]);
            for account in std::mem::take(&mut r.accounts) {
                let unchanged = config.account(&account.id).filter(|s| {
                    s.process_settings() == account.settings().process_settings()
                        && watching.contains(&s.id) == was_watching.contains(&s.id)
                });
                match unchanged {
                    Some(settings) => {
                        account.update(config.clone(), settings.clone());
                        updated.push(account.id.clone());
                        r.accounts.push(account);
                    }
                    None => {
                        r.halt(&account);
                        if config.account(&account.id).is_some() {
                            restarted.push(account.id.clone());
                        } else {
                            stopped.push(account.id.clone());
                        }
                    }
                }
            }
            let mut warnings = Vec::new();
            for settings in &config.accounts {
                if !r.accounts.iter().any(|a| a.id == settings.id) {
                    r.launch(settings, &watching, &duplicates, &self.host, &mut warnings);
                    if !restarted.contains(&settings.id) {
                        started.push(settings.id.clone());
                    }
                }
            }
            tracing::info!(?updated, ?restarted, ?started, ?stopped, "config reloaded");
            Ok(json!({"updated": updated, "restarted": restarted, "started": started, "stopped": stopped, "warnings": warnings}))
        })
    }

    fn pairing_revoke(r: &Running, payload: &Value) -> Result<Value, PluginError> {
        let sender = payload
            .get("senderId")
            .and_then(Value::as_str)
            .ok_or_else(|| PluginError::invalid_request("senderId is required"))?;
        let account = r.account(payload.get("accountId").and_then(Value::as_str))?;
        let id = crate::support::handle::normalize_sender(sender);
        let removed = r.pairing_store(account).revoke(&id).map_err(io_error)?;
        Ok(json!({"accountId": account.id, "senderId": id, "removed": removed}))
    }
}

impl Plugin for ImessagePlugin {
    fn describe(&self) -> PluginDescription {
        description()
    }

    fn start(&self, ctx: StartContext) -> Result<StartReport, PluginError> {
        let dispatch = logging::dispatch(
            self.host.clone(),
            logging::parse_level(ctx.log_level.as_deref()),
        );
        *self.dispatch.locked() = dispatch.clone();
        crate::plugin::panic_hook::install();
        self.logged(|| {
            let mut running = self.running.locked();
            if running.is_some() {
                return Err(PluginError::invalid_request(
                    "the plugin is already started",
                ));
            }
            let config = Arc::new(load_config(&ctx.config)?);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let state_dir = PathBuf::from(&ctx.state_dir);
            crate::state::store::check_state_dirs(
                &state_dir,
                config.accounts.iter().map(|a| a.key.as_str()),
            )
            .map_err(|e| PluginError::new("state_dir_unsafe", e))?;
            let runtime = Self::build_runtime(dispatch)?;
            let (watching, duplicates) = watchers_by_source(&config);
            let mut r = Running {
                runtime,
                config: config.clone(),
                state_dir,
                watch: ctx.watch,
                features: Arc::new(ctx.host.clone()),
                accounts: Vec::new(),
                watchers: BTreeMap::new(),
            };
            let mut report = StartReport {
                accounts: Vec::new(),
                warnings: config.warnings.clone(),
            };
            for settings in &config.accounts {
                let started = r.launch(
                    settings,
                    &watching,
                    &duplicates,
                    &self.host,
                    &mut report.warnings,
                );
                report.accounts.push(started);
            }
            tracing::info!(
                accounts = config.accounts.len(),
                watchers = r.watchers.len(),
                "imessage channel started"
            );
            *running = Some(r);
            Ok(report)
        })
    }

    fn stop(&self) -> Result<(), PluginError> {
        self.logged(|| {
            let running = self.running.locked().take();
            let Some(mut running) = running else {
                return Ok(());
            };
            for (cancel, _) in running.watchers.values() {
                cancel.cancel();
            }
            let watchers = std::mem::take(&mut running.watchers);
            let Running {
                runtime,
                accounts,
                state_dir,
                ..
            } = running;
            runtime.block_on(async {
                let joined = async {
                    for (_, (_, task)) in watchers {
                        let _ = task.await;
                    }
                    for a in &accounts {
                        a.close_children().await;
                        a.outbound.save_limits(true);
                    }
                };
                if tokio::time::timeout(Duration::from_secs(15), joined)
                    .await
                    .is_err()
                {
                    tracing::error!("stopping took longer than 15 s; forcing shutdown");
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
            tracing::info!(state_dir = %state_dir.display(), "imessage channel stopped");
            Ok(())
        })
    }

    fn send(&self, request: SendRequest) -> Result<SendReceipt, PluginError> {
        // Only the lookups hold the state lock: a send can take up to sendTimeoutMs, and
        // status, pairing and stop must not wait for it (nor sends through other accounts).
        let (account, runtime, prefix) = self.with_running(|r| {
            let account = r.account(request.account_id.as_deref())?.clone();
            Ok((
                account,
                r.runtime.handle().clone(),
                r.config.globals.response_prefix.clone(),
            ))
        })?;
        self.logged(|| {
            let settings = account.settings();
            if !settings.enabled {
                return Err(PluginError::invalid_request(format!(
                    "account \"{}\" is disabled",
                    settings.id
                )));
            }
            let roots = outbound::media::effective_roots(
                settings.media_local_roots.as_deref(),
                account.features.media_local_roots.as_deref(),
            );
            let plan = outbound::plan(&request, &settings, prefix.as_deref(), roots.as_deref())
                .map_err(|e| match e {
                    Rejected::InvalidTarget(m) => {
                        PluginError::invalid_target(format!("{}: {m}", request.to.trim()))
                    }
                    Rejected::InvalidRequest(m) => PluginError::invalid_request(m),
                })?;
            Ok(runtime.block_on(account.send_request(&plan))?.wire)
        })
    }

    fn status(&self, request: StatusRequest) -> Result<StatusReport, PluginError> {
        let (accounts, runtime) = self.with_running(|r| {
            let wanted: Vec<Arc<Account>> = r
                .accounts
                .iter()
                .filter(|a| {
                    request
                        .account_id
                        .as_deref()
                        .is_none_or(|id| id.trim().to_lowercase() == a.id)
                })
                .cloned()
                .collect();
            Ok((wanted, r.runtime.handle().clone()))
        })?;
        // Probes run processes (seconds each): outside the state lock.
        self.logged(|| {
            let now = timeutil::now_ms();
            let mut out = Vec::new();
            for account in &accounts {
                let mut store = PairingStore::new(&account.dir);
                let pending = store.list(now).map(|l| l.len() as u64).unwrap_or(0);
                let allowed = store.allow_list().len() as u64;
                let mut status = account.status(pending, allowed);
                if request.probe {
                    let result = runtime.block_on(crate::imsg::probe::probe(
                        &account.settings(),
                        &account.source,
                    ));
                    // A probe also learns what imsg can do now (a bridge that came back shows).
                    if result.ok {
                        match runtime.block_on(account.capabilities(true)) {
                            Ok(c) => status.capabilities = Some(c.to_json(&account.id)),
                            Err(e) => tracing::warn!(account = %account.id, "capabilities: {e}"),
                        }
                    }
                    status.last_probe = Some(result.clone());
                    status.probe = Some(result);
                }
                out.push(status);
            }
            Ok(StatusReport { accounts: out })
        })
    }

    fn call(&self, method: &str, payload: Value) -> Result<Value, PluginError> {
        match method {
            "config.validate" => self.logged(|| {
                let config = load_config(&payload)?;
                Ok(json!({ "ok": true, "warnings": config.warnings }))
            }),
            "config.reload" => self.reload(&payload),
            "pairing.list" => self.with_running(|r| Self::pairing_list(r, &payload)),
            "pairing.approve" => {
                let (approved, notice) =
                    self.with_running(|r| Self::pairing_approve(r, &payload))?;
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
            "pairing.revoke" => self.with_running(|r| Self::pairing_revoke(r, &payload)),
            "chat.typing" => {
                let (account, runtime, config) = self.with_running(|r| {
                    let id = payload.get("accountId").and_then(Value::as_str);
                    Ok((
                        r.account(id)?.clone(),
                        r.runtime.handle().clone(),
                        r.config.clone(),
                    ))
                })?;
                let to = payload
                    .get("to")
                    .and_then(Value::as_str)
                    .ok_or_else(|| PluginError::invalid_request("to is required"))?;
                let on = match payload.get("on") {
                    None => return Err(PluginError::invalid_request("on is required")),
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| PluginError::invalid_request("on must be true or false"))?,
                };
                outbound::target::parse(to)
                    .map_err(|e| PluginError::invalid_target(format!("{}: {e}", to.trim())))?;
                let skipped = |reason: String| json!({"ok": true, "accountId": account.id, "typing": on, "sent": false, "reason": reason});
                // `never` turns typing off, chat.typing included; the default agent's mode.
                let mode = config.globals.typing_mode(&config.globals.default_agent);
                if mode == crate::config::TypingMode::Never {
                    return Ok(skipped("typingMode is never".into()));
                }
                let settings = account.settings();
                self.logged(|| {
                    if !on {
                        crate::actions::typing::stop(&account.actions, to);
                        return Ok(json!({"ok": true, "accountId": account.id, "typing": false, "sent": true}));
                    }
                    match runtime.block_on(crate::actions::typing::unavailable(&account.actions, &settings)) {
                        Some(reason) => Ok(skipped(reason)),
                        None => {
                            // The typing task runs on the plugin's runtime.
                            let _guard = runtime.enter();
                            crate::actions::typing::start(&account.actions, &settings, to, crate::actions::typing::Origin::Host);
                            Ok(json!({"ok": true, "accountId": account.id, "typing": true, "sent": true}))
                        }
                    }
                })
            }
            "chat.read" => {
                let (account, runtime) = self.with_running(|r| {
                    let id = payload.get("accountId").and_then(Value::as_str);
                    Ok((r.account(id)?.clone(), r.runtime.handle().clone()))
                })?;
                let to = payload
                    .get("to")
                    .and_then(Value::as_str)
                    .ok_or_else(|| PluginError::invalid_request("to is required"))?;
                outbound::target::parse(to)
                    .map_err(|e| PluginError::invalid_target(format!("{}: {e}", to.trim())))?;
                // An explicit call is honoured even with sendReadReceipts false (that key
                // governs the automatic receipts only).
                let probe_timeout = Duration::from_millis(account.settings().probe_timeout_ms);
                self.logged(|| match runtime.block_on(crate::actions::mark_read(&account.actions, to, probe_timeout)) {
                    Ok(None) => Ok(json!({"ok": true, "accountId": account.id, "sent": true})),
                    Ok(Some(reason)) => Ok(
                        json!({"ok": true, "accountId": account.id, "sent": false, "reason": reason}),
                    ),
                    Err(e) => Err(PluginError::new("failed", format!("mark read failed: {e}"))),
                })
            }
            "message.react" | "message.edit" | "message.unsend" => {
                // A bridge call may take up to 30 s: outside the state lock.
                let (account, runtime) = self.with_running(|r| {
                    let id = payload.get("accountId").and_then(Value::as_str);
                    Ok((r.account(id)?.clone(), r.runtime.handle().clone()))
                })?;
                self.logged(|| {
                    let settings = account.settings();
                    let context = account.action_context(&settings);
                    runtime.block_on(async {
                        match method {
                            "message.react" => {
                                crate::actions::message_actions::react(&context, &payload).await
                            }
                            "message.edit" => {
                                crate::actions::message_actions::edit(&context, &payload).await
                            }
                            _ => crate::actions::message_actions::unsend(&context, &payload).await,
                        }
                    })
                })
            }
            "send.reconcile" => {
                let (account, runtime) = self.with_running(|r| {
                    let id = payload.get("accountId").and_then(Value::as_str);
                    Ok((r.account(id)?.clone(), r.runtime.handle().clone()))
                })?;
                let key = payload
                    .get("idempotencyKey")
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| PluginError::invalid_request("idempotencyKey is required"))?;
                self.logged(|| {
                    let receipt = runtime.block_on(account.outbound.reconcile_key(key))?;
                    serde_json::to_value(receipt).map_err(|e| PluginError::internal(e.to_string()))
                })
            }
            "capabilities.get" => {
                // Learning runs imsg (seconds at worst): outside the state lock.
                let (account, runtime) = self.with_running(|r| {
                    let id = payload.get("accountId").and_then(Value::as_str);
                    Ok((r.account(id)?.clone(), r.runtime.handle().clone()))
                })?;
                let refresh = payload.get("refresh").and_then(Value::as_bool) == Some(true);
                self.logged(|| {
                    runtime
                        .block_on(account.capabilities(refresh))
                        .map(|c| c.to_json(&account.id))
                        .map_err(|e| PluginError::new("imsg_unavailable", e))
                })
            }
            "target.normalize" => {
                let to = payload.get("to").and_then(Value::as_str).unwrap_or("");
                let target = outbound::target::parse(to)
                    .map_err(|e| PluginError::invalid_target(e.to_string()))?;
                let mut params = serde_json::Map::new();
                target.write_params(&mut params);
                Ok(Value::Object(params))
            }
            other => Err(PluginError::new(
                "unknown_method",
                format!("not supported by this plugin: {other}"),
            )),
        }
    }
}

/// An approval notice to send once the state lock is released.
type Notice = (Arc<Account>, outbound::Plan, tokio::runtime::Handle);

fn not_started() -> PluginError {
    PluginError::new("not_started", "the plugin is not started")
}

fn io_error(e: std::io::Error) -> PluginError {
    PluginError::internal(format!("state files: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_watcher_per_source_case_155() {
        let config = config::parse(&json!({"channels": {"imessage": {"accounts": {
            "a": {"dbPath": "/x.db"}, "b": {"dbPath": "/x.db"}, "c": {"dbPath": "/y.db"},
        }}}}))
        .unwrap();
        let (watching, duplicates) = watchers_by_source(&config);
        assert_eq!(watching, vec!["a".to_string(), "c".to_string()]);
        assert_eq!(duplicates, vec![("b".to_string(), "a".to_string())]);
        // The default account wins within its source.
        let config = config::parse(
            &json!({"channels": {"imessage": {"defaultAccount": "b", "accounts": {
                "a": {}, "b": {},
            }}}}),
        )
        .unwrap();
        let (watching, _) = watchers_by_source(&config);
        assert_eq!(watching, vec!["b".to_string()]);
    }

    #[test]
    fn default_account_sends_case_158() {
        let config = config::parse(
            &json!({"channels": {"imessage": {"defaultAccount": "work", "accounts": {
                "home": {}, "work": {},
            }}}}),
        )
        .unwrap();
        assert_eq!(config.resolve_account(None).unwrap().id, "work");
        assert_eq!(config.resolve_account(Some("Home")).unwrap().id, "home");
    }
}
