//! Applying a plugin's `config.write` request to the gateway's config file. The change is
//! made to an in-memory copy, and the whole result is validated (host-stub's own rules and
//! the plugin's `config.validate`) before anything is written: a write never leaves a config
//! the gateway cannot start with (channel-behaviour.md §9.2). The original is kept as
//! `<file>.bak`, and the new file replaces the old one atomically, so the user's file is never
//! lost or half-written. The file is rewritten as JSON (valid JSON5); comments are not
//! preserved, which is why the backup is kept.

use std::path::Path;

use plugin_abi::contract::{ConfigEdit, ConfigWrite, ErrorCode};
use plugin_abi::types::PluginError;
use serde_json::{json, Value};

use crate::settings;

/// The backup and the new config are 0600 whatever the old file's mode was: the config names
/// the owner's contacts, and a backup copied with the default umask was world-readable.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    host_stub::private::write_atomic(path, bytes)
}

/// Sets or unsets `path` (dotted) in the config file, when `validate` accepts the result.
pub fn apply(
    config_path: &Path,
    channel: &str,
    request: &ConfigWrite,
    validate: impl FnOnce(&Value) -> Result<(), PluginError>,
) -> Result<Value, PluginError> {
    let failed = |message: String| PluginError::new(ErrorCode::Failed, message);
    let (op, path) = (request.edit.op(), request.edit.path());
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| failed(format!("reading {}: {e}", config_path.display())))?;
    let mut config = settings::parse_json5(&text).map_err(|(_, reason)| {
        failed(format!(
            "{} is not valid JSON5: {reason}",
            config_path.display()
        ))
    })?;
    let account = request.account_id.as_deref();
    if !writes_allowed(&config, channel, account, path) {
        tracing::warn!(
            path,
            op,
            "config write refused: configWrites is false for a scope it changes"
        );
        return Err(PluginError::new(
            ErrorCode::ConfigWritesDisabled,
            "Config changes from iMessage are turned off for this account (configWrites is false).",
        ));
    }
    edit(&mut config, &request.edit).map_err(failed)?;
    let mut problems = settings::check(&config);
    if let Err(e) = validate(&config) {
        if e.errors.is_empty() {
            problems.push(e.message);
        } else {
            problems.extend(e.errors);
        }
    }
    if !problems.is_empty() {
        // The problems may quote the value, which came from a message: debug only.
        tracing::warn!(
            path,
            op,
            problems = problems.len(),
            "config write refused; the file is unchanged (the problems are logged at debug level)"
        );
        tracing::debug!(path, op, "config write refused: {}", problems.join("; "));
        let mut e = PluginError::new(ErrorCode::ConfigInvalid, problems[0].clone());
        e.errors = problems;
        return Err(e);
    }
    let mut backup = config_path.as_os_str().to_os_string();
    backup.push(".bak");
    let backup = std::path::PathBuf::from(backup);
    write_atomic(&backup, text.as_bytes())
        .map_err(|e| failed(format!("writing the backup {}: {e}", backup.display())))?;
    let mut out = serde_json::to_string_pretty(&config).map_err(|e| failed(e.to_string()))?;
    out.push('\n');
    write_atomic(config_path, out.as_bytes())
        .map_err(|e| failed(format!("writing {}: {e}", config_path.display())))?;
    tracing::info!(path, op, backup = %backup.display(), "config file updated");
    Ok(json!({"ok": true, "path": path, "backup": backup.display().to_string()}))
}

/// The host's own check of `configWrites` (channel-behaviour.md §9.2), on the config as it is
/// now: the plugin decides first, and this keeps a plugin that got it wrong from writing.
/// The origin account's value, then the scopes the path changes: an account's own path
/// needs that account's value, another path under the channel the channel's value, and a
/// parent of the channel's section (`channels`, `channels.<channel>`,
/// `channels.<channel>.accounts`) replaces every scope below it, so the channel's value and
/// every account's must all allow it. An account's value is its own, else the channel's,
/// else true.
fn writes_allowed(config: &Value, channel: &str, origin: Option<&str>, path: &str) -> bool {
    let section = config.get("channels").and_then(|c| c.get(channel));
    let channel_value = section
        .and_then(|s| s.get("configWrites"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let accounts = section
        .and_then(|s| s.get("accounts"))
        .and_then(Value::as_object);
    let account_value = |id: &str| {
        accounts
            .and_then(|a| a.get(id))
            .and_then(|a| a.get("configWrites"))
            .and_then(Value::as_bool)
            .unwrap_or(channel_value)
    };
    if origin.is_some_and(|id| !account_value(id)) {
        return false;
    }
    let base = format!("channels.{channel}");
    let accounts_base = format!("{base}.accounts");
    if let Some(rest) = path.strip_prefix(&format!("{accounts_base}.")) {
        return account_value(rest.split('.').next().unwrap_or(""));
    }
    if path.starts_with(&format!("{base}.")) {
        return channel_value;
    }
    if path == "channels" || path == base || path == accounts_base {
        return channel_value && accounts.is_none_or(|a| a.keys().all(|id| account_value(id)));
    }
    true
}

const MAX_PATH_KEYS: usize = 32;

/// The change itself, on the in-memory config.
fn edit(config: &mut Value, change: &ConfigEdit) -> Result<(), String> {
    let path = change.path();
    let keys: Vec<&str> = path.split('.').collect();
    if path.is_empty() || keys.iter().any(|k| k.is_empty() || k.contains('=')) {
        return Err(format!("not a config path: \"{path}\""));
    }
    // Each key is one level of the file that the next start parses again.
    if keys.len() > MAX_PATH_KEYS {
        return Err(format!(
            "a config path has at most {MAX_PATH_KEYS} keys; this one has {}",
            keys.len()
        ));
    }
    // `split('.')` yields at least one key.
    let (last, parents) = keys.split_last().expect("non-empty");
    let mut at = config;
    for key in parents {
        if !at.is_object() {
            return Err(format!("{path}: {key} is not an object"));
        }
        at = at
            .as_object_mut()
            .expect("checked")
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    let Some(obj) = at.as_object_mut() else {
        return Err(format!("{path}: the parent is not an object"));
    };
    match change {
        ConfigEdit::Set { value, .. } => {
            obj.insert(last.to_string(), value.clone());
        }
        ConfigEdit::Unset { .. } => {
            obj.remove(*last);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply` with the request as the plugin sends it (JSON).
    fn apply(
        config_path: &Path,
        channel: &str,
        request: &Value,
        validate: impl FnOnce(&Value) -> Result<(), PluginError>,
    ) -> Result<Value, PluginError> {
        let request: ConfigWrite = serde_json::from_value(request.clone()).unwrap();
        super::apply(config_path, channel, &request, validate)
    }

    /// Case 147b at the host: parent paths need every scope below them.
    #[test]
    fn parent_paths_need_config_writes_on_every_scope_case_147b() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.json5");
        let original = r#"{channels: {imessage: {configWrites: false, accounts: {default: {configWrites: true}}}}}"#;
        std::fs::write(&file, original).unwrap();
        for path in [
            "channels",
            "channels.imessage",
            "channels.imessage.accounts",
        ] {
            let request = json!({"op": "set", "path": path, "value": {}, "accountId": "default"});
            let e = apply(&file, "imessage", &request, accept).unwrap_err();
            assert_eq!(e.code, "config_writes_disabled", "{path}");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), original, "{path}");
        }
        let channel_key =
            json!({"op": "set", "path": "channels.imessage.dmPolicy", "value": "open"});
        assert!(apply(&file, "imessage", &channel_key, accept).is_err());
        let deep = json!({"op": "set", "path": "a.".repeat(40) + "a", "value": 1});
        let e = apply(&file, "imessage", &deep, accept).unwrap_err();
        assert!(e.message.contains("at most 32 keys"), "{}", e.message);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
        let own = json!({"op": "set", "path": "channels.imessage.accounts.default.textChunkLimit", "value": 3000, "accountId": "default"});
        apply(&file, "imessage", &own, accept).unwrap();
        // An origin account whose own value is false writes nothing.
        let config =
            json!({"channels": {"imessage": {"accounts": {"work": {"configWrites": false}}}}});
        assert!(!writes_allowed(
            &config,
            "imessage",
            Some("work"),
            "messages.x"
        ));
        assert!(writes_allowed(
            &config,
            "imessage",
            Some("default"),
            "messages.x"
        ));
        assert!(!writes_allowed(&config, "imessage", None, "channels"));
        assert!(writes_allowed(&json!({}), "imessage", None, "channels"));
    }

    fn accept(_: &Value) -> Result<(), PluginError> {
        Ok(())
    }

    #[test]
    fn set_and_unset_keep_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.json5");
        let original = "{ // mine\n channels: { imessage: { textChunkLimit: 4000 } } }\n";
        std::fs::write(&file, original).unwrap();
        apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "channels.imessage.textChunkLimit", "value": 2000}),
            accept,
        )
        .unwrap();
        let now: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(now["channels"]["imessage"]["textChunkLimit"], 2000);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("gateway.json5.bak")).unwrap(),
            original
        );
        apply(
            &file,
            "imessage",
            &json!({"op": "unset", "path": "channels.imessage.textChunkLimit"}),
            accept,
        )
        .unwrap();
        let now: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert!(now["channels"]["imessage"].get("textChunkLimit").is_none());
        assert!(apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "a..b", "value": 1}),
            accept
        )
        .is_err());
        assert!(apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "a=1", "value": ""}),
            accept
        )
        .is_err());
    }

    #[test]
    fn the_new_config_and_its_backup_are_0600_case_147d() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.json5");
        std::fs::write(&file, "{ channels: { imessage: {} } }\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let validated = std::cell::Cell::new(false);
        let validate = |config: &Value| -> Result<(), PluginError> {
            assert_eq!(config["channels"]["imessage"]["textChunkLimit"], 3000);
            validated.set(true);
            Ok(())
        };
        apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "channels.imessage.textChunkLimit", "value": 3000}),
            validate,
        )
        .unwrap();
        assert!(validated.get());
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.path().join("gateway.json5.bak")), 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary is left: {names:?}");
    }

    #[test]
    fn a_broken_config_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.json5");
        std::fs::write(&file, "{ broken").unwrap();
        assert!(apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "x", "value": 1}),
            accept
        )
        .is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ broken");
    }

    #[test]
    fn an_invalid_result_writes_nothing_and_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.json5");
        let original = "{ channels: { imessage: {} } }\n";
        std::fs::write(&file, original).unwrap();
        let refuse = |config: &Value| -> Result<(), PluginError> {
            assert_eq!(config["channels"]["imessage"]["textChunkLimit"], 10);
            let mut e = PluginError::new("config_invalid", "1 config error(s)");
            e.errors = vec![
                "channels.imessage.textChunkLimit: must be an integer from 50 to 20000".into(),
            ];
            Err(e)
        };
        let e = apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "channels.imessage.textChunkLimit", "value": 10}),
            refuse,
        )
        .unwrap_err();
        assert_eq!(e.code, "config_invalid");
        assert_eq!(
            e.errors,
            vec!["channels.imessage.textChunkLimit: must be an integer from 50 to 20000"]
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
        assert!(!dir.path().join("gateway.json5.bak").exists());
        // host-stub's own rules apply too.
        let e = apply(
            &file,
            "imessage",
            &json!({"op": "set", "path": "stateDir", "value": 3}),
            accept,
        )
        .unwrap_err();
        assert_eq!(e.errors, vec!["stateDir: expected a string"]);
    }
}
