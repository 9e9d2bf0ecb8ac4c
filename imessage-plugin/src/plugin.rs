//! The plugin instance: turns host calls into work on the plugin's own runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::guard::{Host, Plugin};
use plugin_abi::types::{
    AccountStart, PluginDescription, PluginError, SendReceipt, SendRequest, StartContext,
    StartReport, StatusReport, StatusRequest,
};
use serde_json::Value;
use tracing::Dispatch;

use crate::config::{self, Config};
use crate::logging;

/// The channel id, also the config key under `channels`.
pub const CHANNEL_ID: &str = "imessage";

/// The `call` methods this plugin understands.
pub const METHODS: &[&str] = &["config.validate"];

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
            format!("{} config error(s): {}", errors.len(), errors[0]),
        );
        e.errors = errors;
        e
    })
}

struct Running {
    runtime: tokio::runtime::Runtime,
    config: Arc<Config>,
}

pub struct ImessagePlugin {
    host: Arc<Host>,
    dispatch: Mutex<Dispatch>,
    running: Mutex<Option<Running>>,
}

impl ImessagePlugin {
    pub fn new(host: Host) -> Self {
        let host = Arc::new(host);
        let dispatch = logging::dispatch(host.clone(), logging::parse_level(None));
        ImessagePlugin {
            host,
            dispatch: Mutex::new(dispatch),
            running: Mutex::new(None),
        }
    }

    /// Runs `f` with this instance's log dispatcher as the thread default.
    fn logged<T>(&self, f: impl FnOnce() -> T) -> T {
        let dispatch = self.dispatch.lock().map(|d| d.clone()).ok();
        match dispatch {
            Some(d) => tracing::dispatcher::with_default(&d, f),
            None => f(),
        }
    }

    fn build_runtime(dispatch: Dispatch) -> Result<tokio::runtime::Runtime, PluginError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("imessage-plugin")
            .enable_all()
            .on_thread_start(move || {
                // The guard would reset the default when dropped; the thread lives exactly as
                // long as the runtime, so keeping it for the thread's life is what we want.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .map_err(|e| PluginError::new("internal", format!("starting the runtime: {e}")))
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
        if let Ok(mut d) = self.dispatch.lock() {
            *d = dispatch.clone();
        }
        self.logged(|| {
            let mut running = self.running.lock().map_err(|_| poisoned())?;
            if running.is_some() {
                return Err(PluginError::new(
                    "invalid_request",
                    "the plugin is already started",
                ));
            }
            let config = load_config(&ctx.config)?;
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let runtime = Self::build_runtime(dispatch)?;
            let report = StartReport {
                accounts: config
                    .accounts
                    .iter()
                    .map(|a| AccountStart {
                        account_id: a.id.clone(),
                        enabled: a.enabled,
                        watching: false,
                    })
                    .collect(),
                warnings: config.warnings.clone(),
            };
            tracing::info!(accounts = config.accounts.len(), "imessage channel started");
            *running = Some(Running {
                runtime,
                config: Arc::new(config),
            });
            Ok(report)
        })
    }

    fn stop(&self) -> Result<(), PluginError> {
        self.logged(|| {
            let running = self.running.lock().map_err(|_| poisoned())?.take();
            if let Some(running) = running {
                running.runtime.shutdown_timeout(Duration::from_secs(5));
                tracing::info!("imessage channel stopped");
            }
            Ok(())
        })
    }

    fn send(&self, _request: SendRequest) -> Result<SendReceipt, PluginError> {
        Err(PluginError::new(
            "unsupported",
            "sending is not supported by this plugin build yet",
        ))
    }

    fn status(&self, _request: StatusRequest) -> Result<StatusReport, PluginError> {
        let running = self.running.lock().map_err(|_| poisoned())?;
        let Some(running) = running.as_ref() else {
            return Err(not_started());
        };
        Ok(StatusReport {
            accounts: running
                .config
                .accounts
                .iter()
                .map(|a| plugin_abi::types::AccountStatus {
                    account_id: a.id.clone(),
                    name: a.name.clone(),
                    enabled: a.enabled,
                    configured: true,
                    state: "stopped".into(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    fn call(&self, method: &str, payload: Value) -> Result<Value, PluginError> {
        self.logged(|| match method {
            "config.validate" => {
                let config = load_config(&payload)?;
                Ok(serde_json::json!({ "ok": true, "warnings": config.warnings }))
            }
            other => Err(PluginError::new(
                "unknown_method",
                format!("not supported by this plugin: {other}"),
            )),
        })
    }
}

fn poisoned() -> PluginError {
    PluginError::new("internal", "plugin state lock poisoned by an earlier panic")
}

fn not_started() -> PluginError {
    PluginError::new("not_started", "the plugin is not started")
}
