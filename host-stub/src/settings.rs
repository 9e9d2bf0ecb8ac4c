//! Where things are: the config file (JSON5: `--config`, else `$HOST_STUB_CONFIG`, else
//! `./gateway.json5`), the plugins folder (`--plugins`, else the config's `plugins.dir`
//! relative to the config file, else `./plugins`) and the state directory (`--state-dir`, else
//! the config's `stateDir`, else `$HOST_STUB_STATE_DIR`, else `~/.host-stub`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::failure::Failure;

/// Reads a JSON5 file; syntax errors name the file, line and column.
pub fn read_json5(path: &Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("reading {}: {e}", path.display())))?;
    parse_json5(&text).map_err(|(location, reason)| {
        let at = location
            .map(|(line, col)| format!(":{line}:{col}"))
            .unwrap_or_default();
        Failure::usage(format!("{}{at}: {reason}", path.display()))
    })
}

/// Parses JSON5 text; on error returns `(line, column)` when known and a one-line reason.
pub fn parse_json5(text: &str) -> Result<Value, (Option<(usize, usize)>, String)> {
    json5::from_str::<Value>(text).map_err(|e| match e {
        json5::Error::Message { msg, location } => {
            // pest renders a multi-line picture; its last `= …` line is the reason.
            let reason = msg
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or(msg.lines().next().unwrap_or("invalid JSON5"))
                .to_string();
            (location.map(|l| (l.line, l.column)), reason)
        }
    })
}

/// The resolved global options.
/// host-stub's own rules for a config file, as `<field>: <reason>` lines (the channels'
/// sections are their plugins' to validate).
pub fn check(config: &Value) -> Vec<String> {
    let Some(map) = config.as_object() else {
        return vec!["the config must be an object".into()];
    };
    let mut problems = Vec::new();
    let string_or_null = |v: Option<&Value>| v.is_none_or(|v| v.is_string() || v.is_null());
    if !string_or_null(map.get("plugins").and_then(|p| p.get("dir"))) {
        problems.push("plugins.dir: expected a string".to_string());
    }
    if !string_or_null(map.get("stateDir")) {
        problems.push("stateDir: expected a string".to_string());
    }
    if let Some(names) = map.get("commands").and_then(|c| c.get("names")) {
        let strings = names.as_array().is_some_and(|a| {
            a.iter()
                .all(|n| n.as_str().is_some_and(|s| !s.trim().is_empty()))
        });
        if !strings && !names.is_null() {
            problems.push(
                "commands.names: expected an array of command names such as \"/status\""
                    .to_string(),
            );
        }
    }
    problems
}

pub struct Settings {
    pub config_path: PathBuf,
    /// The parsed config; `{}` when the file does not exist and it was optional.
    pub config: Value,
    pub plugins_dir: PathBuf,
    pub state_dir: PathBuf,
}

pub struct GlobalArgs<'a> {
    pub config: Option<&'a Path>,
    pub plugins: Option<&'a Path>,
    pub state_dir: Option<&'a Path>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn expand_tilde(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if path == "~" => home(),
        None => PathBuf::from(path),
    }
}

/// Resolves the options. `config_required`: a missing config file is an error (gateway,
/// status, send) rather than an empty config (plugins list).
pub fn resolve(args: GlobalArgs<'_>, config_required: bool) -> Result<Settings, Failure> {
    let explicit = args.config.is_some() || std::env::var_os("HOST_STUB_CONFIG").is_some();
    let config_path = args
        .config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOST_STUB_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./gateway.json5"));
    let config = if config_path.exists() || config_required || explicit {
        read_json5(&config_path)?
    } else {
        Value::Object(Default::default())
    };
    if let Some(problem) = check(&config).first() {
        return Err(Failure::usage(format!(
            "{}: {problem}",
            config_path.display()
        )));
    }
    let base = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let configured_dir = |keys: &[&str]| -> Result<Option<PathBuf>, Failure> {
        let mut at = &config;
        for key in keys {
            match at.get(*key) {
                Some(v) => at = v,
                None => return Ok(None),
            }
        }
        match at.as_str() {
            Some(s) => Ok(Some(expand_tilde(s))),
            None if at.is_null() => Ok(None),
            None => Err(Failure::usage(format!(
                "{}: {}: expected a string",
                config_path.display(),
                keys.join(".")
            ))),
        }
    };
    let plugins_dir = match args.plugins {
        Some(p) => p.to_path_buf(),
        None => match configured_dir(&["plugins", "dir"])? {
            Some(dir) if dir.is_relative() => base.join(dir),
            Some(dir) => dir,
            None => PathBuf::from("./plugins"),
        },
    };
    let state_dir = match args.state_dir {
        Some(p) => p.to_path_buf(),
        None => match configured_dir(&["stateDir"])? {
            Some(dir) if dir.is_relative() => base.join(dir),
            Some(dir) => dir,
            None => std::env::var_os("HOST_STUB_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| home().join(".host-stub")),
        },
    };
    Ok(Settings {
        config_path,
        config,
        plugins_dir,
        state_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json5_errors_have_line_and_column() {
        let (loc, reason) = parse_json5("{\n  a: 1,\n  b: ,\n}").unwrap_err();
        assert_eq!(loc, Some((3, 6)));
        assert!(!reason.contains('\n'), "{reason}");
        assert!(parse_json5("{a: 1, /* c */ b: [1,2,],}").is_ok());
    }
}
