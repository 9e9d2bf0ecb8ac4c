//! One plugin instance as host-stub drives it: the host callbacks it gets, and start with the
//! config's errors mapped to exit status 2.

use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use plugin_abi::host::{self, LoadedPlugin, PluginClient};
use std::borrow::Cow;

use plugin_abi::types::{
    features, HostFeatures, LogRecord, PluginError, StartContext, StartReport,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::delivered::Delivered;
use crate::failure::Failure;

/// A routed message the echo agent should answer.
pub struct Reply {
    pub channel: String,
    pub account_id: String,
    pub to: String,
    pub text: String,
}

/// What the gateway does with delivered events; `None` for one-shot commands, which refuse
/// deliveries (they start no watcher, so none should come).
pub struct Sink {
    pub delivered: Mutex<Delivered>,
    pub stdout: Mutex<std::io::Stdout>,
    /// The echo agent's queue; `None` without `--reply echo` and after shutdown began.
    pub replies: Mutex<Option<Sender<Reply>>>,
}

pub struct StubHost {
    channel: String,
    sink: Option<Arc<Sink>>,
    /// The config file `config.write` requests apply to.
    config_path: std::path::PathBuf,
    /// A second, never-started instance of the same plugin that validates a config before
    /// it is written. A separate instance, so validating from inside this callback never
    /// calls back into the instance that made the request (DESIGN.md: callbacks never
    /// re-enter the plugin).
    validator: Option<PluginClient>,
}

/// The callbacks of the validator instance: it is never started, so it delivers nothing.
struct ValidatorHost;

impl host::Host for ValidatorHost {
    fn request(&self, method: &str, _payload: &str) -> Result<String, PluginError> {
        Err(PluginError::new(
            "unknown_method",
            format!("the validator instance does not support {method}"),
        ))
    }

    fn deliver(&self, _event: &str) -> Result<(), String> {
        Err("the validator instance takes no messages".into())
    }

    fn log(&self, _record: &str) {}
}

/// What host-stub reads of a delivered event; the rest is printed as the plugin wrote it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    account_id: Cow<'a, str>,
    #[serde(default, borrow)]
    message_id: Cow<'a, str>,
    #[serde(default, borrow)]
    to: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Cow<'a, str>,
    /// The events of a `batch`.
    #[serde(default, borrow)]
    events: Vec<&'a RawValue>,
}

impl StubHost {
    /// Takes one delivery: a `message` event, or a `batch` of them (group commit). Every new
    /// message is printed, then the ids are recorded and made durable with one sync per
    /// account, then the plugin is acknowledged. A delivery that cannot be taken is refused
    /// whole: nothing in it is acknowledged, and the plugin delivers it again.
    fn take(&self, event: &str) -> Result<(), String> {
        let Some(sink) = &self.sink else {
            return Err("this command does not accept messages".into());
        };
        let head: Head =
            serde_json::from_str(event).map_err(|e| format!("event is not a JSON event: {e}"))?;
        let single;
        let events: &[&RawValue] = match head.kind.as_ref() {
            "batch" => &head.events,
            "message" => {
                single = [serde_json::from_str::<&RawValue>(event).map_err(|e| e.to_string())?];
                &single
            }
            _ => {
                tracing::debug!(channel = %self.channel, "ignoring a {} event", head.kind);
                return Ok(());
            }
        };
        let mut delivered = sink.delivered.lock().map_err(|_| "state lock poisoned")?;
        let mut lines = String::with_capacity(event.len() + events.len() * 32);
        let mut taken: Vec<Head> = Vec::with_capacity(events.len());
        let prefix = format!("{{\"channel\":{},", Value::from(self.channel.as_str()));
        for raw in events {
            let message: Head = serde_json::from_str(raw.get())
                .map_err(|e| format!("message event has an unexpected shape: {e}"))?;
            if message.kind != "message" {
                continue;
            }
            let body = raw
                .get()
                .strip_prefix('{')
                .ok_or("a message event is not a JSON object")?;
            let log = delivered
                .account(&self.channel, &message.account_id)
                .map_err(|e| format!("reading the delivered-id store: {e}"))?;
            let repeated = log.contains(&message.message_id)
                || taken.iter().any(|t| {
                    t.message_id == message.message_id && t.account_id == message.account_id
                });
            if repeated {
                tracing::debug!(message_id = %message.message_id, "repeated messageId acknowledged without printing");
                continue;
            }
            lines.push_str(&prefix);
            if body.trim_start().starts_with('}') {
                lines.pop();
            }
            lines.push_str(body);
            lines.push('\n');
            taken.push(message);
        }
        if taken.is_empty() {
            return Ok(());
        }
        // The lines are printed, then their ids recorded and made durable, then the plugin is
        // acknowledged. No order of "print" and "record" survives a kill between the two (the
        // pipe and the file cannot change together), so this one picks the failure a reader
        // can recover from: a kill in that window prints the lines of this one delivery again
        // after the restart, with the same messageIds; none is ever lost.
        {
            use std::io::Write;
            let mut out = sink.stdout.lock().map_err(|_| "stdout lock poisoned")?;
            out.write_all(lines.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| format!("writing stdout: {e}"))?;
        }
        // The lines are out: a failure to record them is logged, not returned, since the
        // plugin would retry the delivery and print them again now.
        let mut accounts: Vec<&str> = taken.iter().map(|t| t.account_id.as_ref()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        for account in accounts {
            let ids = taken
                .iter()
                .filter(|t| t.account_id == account)
                .map(|t| t.message_id.as_ref());
            let recorded = delivered
                .account(&self.channel, account)
                .and_then(|log| log.record_all(ids));
            if let Err(e) = recorded {
                tracing::error!(account, "recording delivered ids failed: {e}; after a crash these messages may be printed again");
            }
        }
        drop(delivered);
        if let Ok(replies) = sink.replies.lock() {
            if let Some(tx) = replies.as_ref() {
                for message in &taken {
                    let _ = tx.send(Reply {
                        channel: self.channel.clone(),
                        account_id: message.account_id.to_string(),
                        to: message.to.to_string(),
                        text: format!("echo: {}", message.text),
                    });
                }
            }
        }
        Ok(())
    }
}

impl host::Host for StubHost {
    fn request(&self, method: &str, payload: &str) -> Result<String, PluginError> {
        match method {
            "config.write" => {
                let request: Value = serde_json::from_str(payload)
                    .map_err(|e| PluginError::new("bad_payload", format!("config.write: {e}")))?;
                let validate = |config: &Value| match &self.validator {
                    Some(v) => v.call("config.validate", config).map(|_| ()),
                    None => Err(PluginError::new(
                        "failed",
                        "no validator for this channel; the config was not changed",
                    )),
                };
                crate::config_write::apply(&self.config_path, &request, validate)
                    .map(|v| v.to_string())
            }
            other => Err(PluginError::new(
                "unknown_method",
                format!("host-stub does not support {other}"),
            )),
        }
    }

    fn deliver(&self, event: &str) -> Result<(), String> {
        let outcome = self.take(event);
        if let Err(e) = &outcome {
            tracing::error!(channel = %self.channel, "refused a delivery: {e}");
        }
        outcome
    }

    fn log(&self, record: &str) {
        let Ok(record) = serde_json::from_str::<LogRecord>(record) else {
            return;
        };
        let fields = if record.fields.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = record
                .fields
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            format!(" {}", parts.join(" "))
        };
        let channel = &self.channel;
        let target = &record.target;
        let message = &record.message;
        match record.level.as_str() {
            "error" => tracing::error!(target: "plugin", "{channel}: {message}{fields} ({target})"),
            "warn" => tracing::warn!(target: "plugin", "{channel}: {message}{fields} ({target})"),
            "info" => tracing::info!(target: "plugin", "{channel}: {message}{fields} ({target})"),
            "debug" => tracing::debug!(target: "plugin", "{channel}: {message}{fields} ({target})"),
            _ => tracing::trace!(target: "plugin", "{channel}: {message}{fields} ({target})"),
        }
    }
}

pub struct Channel {
    pub id: String,
    pub client: PluginClient,
}

impl Channel {
    pub fn create(
        plugin: &LoadedPlugin,
        sink: Option<Arc<Sink>>,
        config_path: &Path,
    ) -> Result<Channel, Failure> {
        let id = plugin.description.id.clone();
        let validator = plugin
            .instantiate(host::callbacks(ValidatorHost))
            .map_err(|e| tracing::warn!(channel = %id, "no validator instance: {e}; config writes are refused"))
            .ok();
        let callbacks = host::callbacks(StubHost {
            channel: id.clone(),
            sink,
            config_path: config_path.to_path_buf(),
            validator,
        });
        let client = plugin.instantiate(callbacks).map_err(|e| {
            Failure::runtime(format!(
                "{}: creating the plugin failed: {e}",
                plugin.path.display()
            ))
        })?;
        Ok(Channel { id, client })
    }

    /// Starts the channel; config errors become exit status 2, each line prefixed with the
    /// config file.
    pub fn start(
        &self,
        config: &Value,
        config_path: &Path,
        state_dir: &Path,
        watch: bool,
        log_level: &str,
    ) -> Result<StartReport, Failure> {
        let ctx = StartContext {
            config: config.clone(),
            state_dir: state_dir.display().to_string(),
            watch,
            log_level: Some(log_level.to_string()),
            host: host_features(config),
        };
        self.client
            .start(&ctx)
            .map_err(|e| start_failure(&self.id, config_path, e))
    }

    pub fn stop(&self) {
        if let Err(e) = self.client.stop() {
            tracing::error!(channel = %self.id, "stopping failed: {e}");
        }
    }
}

/// What host-stub understands beyond the base contract: batched delivery (one stdout write
/// and one fsync per batch), and the operator's control-command names (`commands.names`,
/// else the plugin's defaults).
fn host_features(config: &Value) -> HostFeatures {
    let command_names = config
        .pointer("/commands/names")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        });
    HostFeatures {
        features: vec![features::BATCH_DELIVERY.to_string()],
        max_batch: Some(features::DEFAULT_MAX_BATCH),
        command_names,
    }
}

fn start_failure(channel: &str, config_path: &Path, e: PluginError) -> Failure {
    if e.code == "config_invalid" {
        let lines: Vec<String> = e
            .errors
            .iter()
            .map(|line| format!("{}: {line}", config_path.display()))
            .collect();
        Failure::usage(lines.join("\n"))
    } else {
        Failure::runtime(format!("channel {channel} failed to start: {e}"))
    }
}
