//! The plugin instance: turns host calls into work on the plugin's own runtime.

mod calls;
mod ffi;
mod logging;
pub(crate) mod panic_hook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::contract::{CallMethod, ErrorCode};
use plugin_abi::guard::{HostHandle, Plugin};
use plugin_abi::types::{
    AccountStart, PluginDescription, PluginError, SendReceipt, SendRequest, StartContext,
    StartReport, StatusReport, StatusRequest,
};
use serde_json::Value;
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

/// The `call` methods this plugin understands: every method of the host contract.
pub const METHODS: &[CallMethod] = CallMethod::ALL;

pub fn description() -> PluginDescription {
    PluginDescription {
        id: CHANNEL_ID.to_string(),
        name: "iMessage".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        abi_version: plugin_abi::ABI_VERSION.to_string(),
        methods: METHODS.iter().map(|m| m.as_str().to_string()).collect(),
    }
}

/// Parses the config, or the `config_invalid` error listing every problem.
pub fn load_config(config: &Value) -> Result<Config, PluginError> {
    config::parse(config).map_err(|errors| {
        let mut e = PluginError::new(
            ErrorCode::ConfigInvalid,
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
    /// The fixed timers, read once at start (a test-only override shrinks them).
    timings: crate::support::timings::Timings,
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
            self.timings,
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
            account
                .status
                .set_state(crate::account::AccountState::DuplicateSource, None);
        }
        let own_pairing = !self.features.has(plugin_abi::types::features::PAIRING_HOST);
        if own_pairing
            && settings.enabled
            && settings.dm_policy == crate::config::DmPolicy::Allowlist
        {
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
                .spawn(watcher::run(account.watcher_parts(), cancel.clone()));
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

    /// The account's own pairing files, or `unsupported` when the host keeps pairing: its
    /// requests and allow store are not here to list or change.
    fn pairing_store(&self, account: &Account) -> Result<PairingStore, PluginError> {
        if self.features.has(plugin_abi::types::features::PAIRING_HOST) {
            return Err(PluginError::new(
                ErrorCode::Unsupported,
                "pairing is kept by the host (pairing.host); use the host's own pairing commands",
            ));
        }
        Ok(PairingStore::new(&account.dir))
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
            let timings = crate::support::timings::Timings::from_env()
                .map_err(PluginError::invalid_request)?;
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let state_dir = PathBuf::from(&ctx.state_dir);
            crate::state::store::check_state_dirs(
                &state_dir,
                config.accounts.iter().map(|a| a.key.as_str()),
            )
            .map_err(|e| PluginError::new(ErrorCode::StateDirUnsafe, e))?;
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
                timings,
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
        self.dispatch(method, payload)
    }
}

fn not_started() -> PluginError {
    PluginError::new(ErrorCode::NotStarted, "the plugin is not started")
}

fn io_error(e: std::io::Error) -> PluginError {
    PluginError::internal(format!("state files: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
