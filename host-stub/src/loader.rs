//! Loading every plugin library in the plugins folder, each on its own, so one bad file never
//! stops the others (or the stub).

use std::path::{Path, PathBuf};

use plugin_abi::host::{self, LoadError, LoadedPlugin};
use serde_json::{json, Value};

use crate::failure::Failure;

pub struct Library {
    pub path: PathBuf,
    pub outcome: Result<LoadedPlugin, LoadError>,
}

/// Loads every `lib*.so` / `lib*.dylib` in `dir`, logging failures with a one-line reason.
pub fn load_all(dir: &Path) -> Result<Vec<Library>, Failure> {
    let paths = host::discover(dir).map_err(|e| {
        Failure::runtime(format!("reading the plugins folder {}: {e}", dir.display()))
    })?;
    Ok(paths
        .into_iter()
        .map(|path| {
            let outcome = host::load(&path);
            if let Err(e) = &outcome {
                tracing::warn!("{e}");
                tracing::debug!(path = %path.display(), detail = %e.detail, "plugin load failure");
            }
            Library { path, outcome }
        })
        .collect())
}

/// The loaded plugin whose channel id is `channel`.
pub fn find<'a>(
    libraries: &'a [Library],
    channel: &str,
    dir: &Path,
) -> Result<&'a LoadedPlugin, Failure> {
    libraries
        .iter()
        .filter_map(|l| l.outcome.as_ref().ok())
        .find(|p| p.description.id == channel)
        .ok_or_else(|| {
            Failure::runtime(format!(
                "no plugin for channel \"{channel}\" in {}",
                dir.display()
            ))
        })
}

/// `plugins list --json` rows.
pub fn list_json(libraries: &[Library]) -> Value {
    Value::Array(
        libraries
            .iter()
            .map(|l| match &l.outcome {
                Ok(p) => json!({
                    "path": l.path.display().to_string(),
                    "loaded": true,
                    "id": p.description.id,
                    "version": p.description.version,
                    "abiVersion": p.description.abi_version,
                    "error": null,
                }),
                Err(e) => json!({
                    "path": l.path.display().to_string(),
                    "loaded": false,
                    "id": null,
                    "version": null,
                    "abiVersion": null,
                    "error": e.reason,
                }),
            })
            .collect(),
    )
}

/// `plugins list` as text: one line per library.
pub fn list_text(libraries: &[Library]) -> String {
    let mut out = String::new();
    for l in libraries {
        match &l.outcome {
            Ok(p) => out.push_str(&format!(
                "{}\tloaded\t{} {} (plugin ABI {})\n",
                l.path.display(),
                p.description.id,
                p.description.version,
                p.description.abi_version
            )),
            Err(e) => out.push_str(&format!("{}\tnot loaded\t{}\n", l.path.display(), e.reason)),
        }
    }
    if libraries.is_empty() {
        out.push_str("no plugin libraries found\n");
    }
    out
}
