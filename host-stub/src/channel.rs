//! One plugin instance as host-stub drives it: the host callbacks it gets, and start with the
//! config's errors mapped to exit status 2.

use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use plugin_abi::host::{self, LoadedPlugin, PluginClient};
use plugin_abi::types::{LogRecord, PluginError, RoutedMessage, StartContext, StartReport};
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

impl StubHost {
    fn take(&self, event: &str) -> Result<(), String> {
        let Some(sink) = &self.sink else {
            return Err("this command does not accept messages".into());
        };
        let mut value: Value =
            serde_json::from_str(event).map_err(|e| format!("event is not JSON: {e}"))?;
        let Some(obj) = value.as_object_mut() else {
            return Err("event is not a JSON object".into());
        };
        if obj.get("type").and_then(Value::as_str) != Some("message") {
            tracing::debug!(channel = %self.channel, "ignoring a non-message event");
            return Ok(());
        }
        let message: RoutedMessage = serde_json::from_value(Value::Object(obj.clone()))
            .map_err(|e| format!("message event has an unexpected shape: {e}"))?;
        let mut delivered = sink.delivered.lock().map_err(|_| "state lock poisoned")?;
        let already = delivered
            .seen(&self.channel, &message.account_id, &message.message_id)
            .map_err(|e| format!("reading the delivered-id store: {e}"))?;
        if already {
            tracing::debug!(message_id = %message.message_id, "repeated messageId acknowledged without printing");
            return Ok(());
        }
        obj.insert("channel".into(), Value::from(self.channel.clone()));
        let line = serde_json::to_string(&value).map_err(|e| e.to_string())?;
        // The line is printed, then its id recorded and made durable, then the plugin is
        // acknowledged. No order of "print" and "record" survives a kill between the two (the
        // pipe and the file cannot change together), so this one picks the failure a reader
        // can recover from: a kill in that window of microseconds prints the line again after
        // the restart, with the same messageId; it is never lost.
        {
            use std::io::Write;
            let mut out = sink.stdout.lock().map_err(|_| "stdout lock poisoned")?;
            writeln!(out, "{line}")
                .and_then(|_| out.flush())
                .map_err(|e| format!("writing stdout: {e}"))?;
        }
        // The line is out: a failure to record it is logged, not returned, since the
        // plugin would retry the delivery and print it again now.
        if let Err(e) = delivered
            .record(&self.channel, &message.account_id, &message.message_id)
            .and_then(|_| delivered.sync(&self.channel, &message.account_id))
        {
            tracing::error!(message_id = %message.message_id, "recording the delivered id failed: {e}; after a crash this message may be printed again");
        }
        drop(delivered);
        if let Ok(replies) = sink.replies.lock() {
            if let Some(tx) = replies.as_ref() {
                let _ = tx.send(Reply {
                    channel: self.channel.clone(),
                    account_id: message.account_id.clone(),
                    to: message.to.clone(),
                    text: format!("echo: {}", message.text),
                });
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
            host: Default::default(),
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
