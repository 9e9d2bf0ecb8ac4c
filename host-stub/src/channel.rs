//! One plugin instance as host-stub drives it: the host callbacks it gets, and start with the
//! config's errors mapped to exit status 2.

use std::path::Path;
use std::sync::Arc;

use host_stub::sink::Sink;
use plugin_abi::contract::{ConfigValidate, ConfigWrite, ErrorCode, HostMethod};
use plugin_abi::host::{self, LoadedPlugin, PluginClient};
use plugin_abi::types::{
    features, HostFeatures, LogRecord, PluginError, StartContext, StartReport,
};
use serde_json::Value;

use crate::failure::Failure;

pub struct StubHost {
    channel: String,
    sink: Option<Arc<Sink>>,
    /// The config file `config.write` requests apply to.
    config_path: std::path::PathBuf,
    /// A second, never-started instance of the same plugin that validates a config before
    /// it is written. A separate instance, so validating from inside this callback never
    /// calls back into the instance that made the request (callbacks never re-enter the
    /// plugin).
    validator: Option<PluginClient>,
}

/// The callbacks of an instance that is never started (the config validator, `config
/// schema`), so it delivers nothing.
pub struct ValidatorHost;

impl host::Host for ValidatorHost {
    fn request(&self, method: &str, _payload: &str) -> Result<String, PluginError> {
        Err(PluginError::new(
            ErrorCode::UnknownMethod,
            format!("the validator instance does not support {method}"),
        ))
    }

    fn deliver(&self, _event: &str) -> Result<(), String> {
        Err("the validator instance takes no messages".into())
    }

    fn log(&self, _record: &str) {}
}

impl host::Host for StubHost {
    fn request(&self, method: &str, payload: &str) -> Result<String, PluginError> {
        match HostMethod::parse(method)? {
            HostMethod::ConfigWrite => {
                let request: ConfigWrite = serde_json::from_str(payload).map_err(|e| {
                    PluginError::new(ErrorCode::BadPayload, format!("config.write: {e}"))
                })?;
                let validate = |config: &Value| match &self.validator {
                    Some(v) => v.invoke(&ConfigValidate(config.clone())).map(|_| ()),
                    None => Err(PluginError::new(
                        ErrorCode::Failed,
                        "no validator for this channel; the config was not changed",
                    )),
                };
                crate::config_write::apply(&self.config_path, &self.channel, &request, validate)
                    .map(|v| v.to_string())
            }
            // Methods a newer plugin-abi adds that host-stub does not implement yet.
            other => Err(PluginError::new(
                ErrorCode::UnknownMethod,
                format!("host-stub does not support {other}"),
            )),
        }
    }

    fn deliver(&self, event: &str) -> Result<(), String> {
        let outcome = match &self.sink {
            Some(sink) => sink.take(&self.channel, event).map(|_| ()),
            None => Err("this command does not accept messages".into()),
        };
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
/// and one fsync per batch), reaction events (printed like messages, never answered), and
/// the operator's control-command names (`commands.names`,
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
        features: vec![
            features::BATCH_DELIVERY.to_string(),
            features::REACTION_EVENTS.to_string(),
        ],
        max_batch: Some(features::DEFAULT_MAX_BATCH),
        command_names,
        // host-stub keeps no media of its own: the channel's mediaLocalRoots decide.
        media_local_roots: None,
    }
}

fn start_failure(channel: &str, config_path: &Path, e: PluginError) -> Failure {
    if e.is(ErrorCode::ConfigInvalid) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_abi::host::Host;

    fn host(config_path: &Path) -> StubHost {
        StubHost {
            channel: "imessage".into(),
            sink: None,
            config_path: config_path.to_path_buf(),
            validator: None,
        }
    }

    #[test]
    fn host_requests_are_decoded_before_anything_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.json5");
        std::fs::write(&file, "{}").unwrap();
        let host = host(&file);
        let e = host.request("config.delete", "{}").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownMethod));
        // A payload that is not a config write names what is wrong, and writes nothing.
        let e = host
            .request("config.write", r#"{"op":"delete","path":"x"}"#)
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadPayload));
        assert!(
            e.message.contains("unknown variant `delete`"),
            "{}",
            e.message
        );
        let e = host.request("config.write", r#"{"op":"set"}"#).unwrap_err();
        assert!(e.message.contains("missing field `path`"), "{}", e.message);
        // A well-formed write that cannot be validated changes nothing.
        let write = r#"{"op":"set","path":"channels.imessage.textChunkLimit","value":3000}"#;
        let e = host.request("config.write", write).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::ConfigInvalid));
        assert!(e.message.contains("no validator"), "{}", e.message);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{}");
    }
}
