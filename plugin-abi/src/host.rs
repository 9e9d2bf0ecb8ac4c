//! The host's side: find plugin libraries, load each one with the layout and version check,
//! and call a plugin through typed methods.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::contract::{Call, ErrorCode};
use crate::types::{
    PluginDescription, PluginError, SendReceipt, SendRequest, StartContext, StartReport,
    StatusReport, StatusRequest,
};
use crate::{HostBox, HostCallbacks, HostCallbacks_TO, PluginBox, PluginModRef, ABI_VERSION};

/// The file-name pattern of plugin libraries on this platform: `lib*.so`, `lib*.dylib`.
pub const LIBRARY_SUFFIX: &str = if cfg!(target_os = "macos") {
    ".dylib"
} else if cfg!(windows) {
    ".dll"
} else {
    ".so"
};

/// Every plugin library in `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let prefixed = cfg!(windows) || name.starts_with("lib");
        if prefixed && name.ends_with(LIBRARY_SUFFIX) && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Why a library could not be used as a plugin.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub path: PathBuf,
    /// One line, fit for a user: what is wrong, with both versions on a mismatch.
    pub reason: String,
    /// The loader's full text (can be very long for layout mismatches): log at debug level.
    pub detail: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for LoadError {}

fn summarize(error: &LibraryError) -> String {
    match error {
        LibraryError::OpenError { err, .. } => format!("cannot be opened: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not a channel plugin (no abi_stable root module)".to_string()
        }
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "built for plugin ABI {actual_version}, but this host speaks plugin ABI \
             {expected_version}"
        ),
        LibraryError::AbiInstability(_) => format!(
            "its plugin interface layout differs from this host's (plugin ABI {ABI_VERSION}); \
             rebuild it against the same plugin-abi version"
        ),
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            "built with an incompatible abi_stable or Rust ABI".to_string()
        }
        LibraryError::ParseVersionError(e) => format!("unreadable version string: {e}"),
        LibraryError::RootModule { err, .. } => format!("the plugin failed to initialise: {err}"),
        LibraryError::Many(errors) => errors.iter().map(summarize).collect::<Vec<_>>().join("; "),
    }
}

/// A loaded, checked plugin library.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub module: PluginModRef,
    pub description: PluginDescription,
}

/// Loads one library and checks it. Never panics, whatever the file is. Libraries are never
/// unloaded (abi_stable leaks them on purpose), so load each file once per process.
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let fail = |error: &LibraryError| LoadError {
        path: path.to_path_buf(),
        reason: summarize(error),
        detail: error.to_string(),
    };
    // `load_from_file` caches one module per root-module type, which would hand every further
    // file the first one's module; going through the header loads each file on its own.
    let header = lib_header_from_path(path).map_err(|e| fail(&e))?;
    let module = header
        .init_root_module::<PluginModRef>()
        .map_err(|e| fail(&e))?;
    // The exported functions catch their own panics: an unwind out of `extern "C"` aborts.
    let text = (module.describe())();
    let description: PluginDescription =
        serde_json::from_str(text.as_str()).map_err(|e| LoadError {
            path: path.to_path_buf(),
            reason: format!("its description is not valid: {e}"),
            detail: text.to_string(),
        })?;
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        module,
        description,
    })
}

impl LoadedPlugin {
    /// Creates one plugin instance bound to `callbacks`.
    pub fn instantiate(&self, callbacks: HostBox) -> Result<PluginClient, PluginError> {
        match (self.module.new())(callbacks) {
            ROk(plugin) => Ok(PluginClient(plugin)),
            RErr(e) => Err(PluginError::from_wire(e.as_str())),
        }
    }
}

/// The host's typed handle on one plugin instance.
pub struct PluginClient(pub PluginBox);

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn decode<T: DeserializeOwned>(result: RResult<RString, RString>) -> Result<T, PluginError> {
    match result {
        ROk(text) => serde_json::from_str(text.as_str()).map_err(|e| {
            PluginError::new(
                ErrorCode::BadPayload,
                format!("the plugin answered with unexpected JSON: {e}"),
            )
        }),
        RErr(e) => Err(PluginError::from_wire(e.as_str())),
    }
}

impl PluginClient {
    pub fn describe(&self) -> Result<PluginDescription, PluginError> {
        decode(ROk(self.0.describe()))
    }

    pub fn start(&self, ctx: &StartContext) -> Result<StartReport, PluginError> {
        decode(self.0.start(encode(ctx).as_str().into()))
    }

    pub fn stop(&self) -> Result<(), PluginError> {
        match self.0.stop() {
            ROk(()) => Ok(()),
            RErr(e) => Err(PluginError::from_wire(e.as_str())),
        }
    }

    pub fn send(&self, request: &SendRequest) -> Result<SendReceipt, PluginError> {
        decode(self.0.send(encode(request).as_str().into()))
    }

    pub fn status(&self, request: &StatusRequest) -> Result<StatusReport, PluginError> {
        decode(self.0.status(encode(request).as_str().into()))
    }

    /// Any `call` method, untyped: for methods outside [`crate::contract`] (another plugin's).
    pub fn call(&self, method: &str, payload: &Value) -> Result<Value, PluginError> {
        decode(self.0.call(method.into(), encode(payload).as_str().into()))
    }

    /// A [`crate::contract`] method: `client.invoke(&PairingList::default())` answers a
    /// [`crate::contract::PairingListReply`].
    pub fn invoke<C: Call>(&self, request: &C) -> Result<C::Reply, PluginError> {
        let method = C::METHOD.as_str();
        decode(self.0.call(method.into(), encode(request).as_str().into()))
    }
}

/// The host-side callbacks in plain Rust. Implementations must enqueue and return quickly and
/// must never call back into the plugin; panics are caught by [`callbacks`].
pub trait Host: Send + Sync + 'static {
    /// Takes one event (JSON text). `Ok` = durably accepted.
    fn deliver(&self, event: &str) -> Result<(), String>;
    /// One log record (JSON text).
    fn log(&self, record: &str);
    /// A plugin → host request. Hosts that do not know `method` answer an `unknown_method`
    /// error.
    fn request(&self, method: &str, _payload: &str) -> Result<String, PluginError> {
        Err(PluginError::new(
            ErrorCode::UnknownMethod,
            format!("this host does not support {method}"),
        ))
    }
}

struct HostAdapter<H>(H);

impl<H: Host> HostCallbacks for HostAdapter<H> {
    fn deliver(&self, event: RStr<'_>) -> RResult<(), RString> {
        match catch_unwind(AssertUnwindSafe(|| self.0.deliver(event.as_str()))) {
            Ok(Ok(())) => ROk(()),
            Ok(Err(e)) => RErr(PluginError::new(ErrorCode::Refused, e).to_wire().into()),
            Err(_) => RErr(
                PluginError::new(ErrorCode::Panic, "host deliver panicked")
                    .to_wire()
                    .into(),
            ),
        }
    }

    fn log(&self, record: RStr<'_>) {
        let _ = catch_unwind(AssertUnwindSafe(|| self.0.log(record.as_str())));
    }

    fn request(&self, method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, RString> {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.0.request(method.as_str(), payload.as_str())
        }));
        match outcome {
            Ok(Ok(reply)) => ROk(reply.into()),
            Ok(Err(e)) => RErr(e.to_wire().into()),
            Err(_) => RErr(
                PluginError::new(ErrorCode::Panic, "host request panicked")
                    .to_wire()
                    .into(),
            ),
        }
    }
}

/// Wraps a [`Host`] as the FFI callbacks object handed to [`LoadedPlugin::instantiate`].
pub fn callbacks<H: Host>(host: H) -> HostBox {
    HostCallbacks_TO::from_value(HostAdapter(host), TD_Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::sabi_types::VersionNumber;

    #[test]
    fn an_abi_version_mismatch_is_one_line_naming_both_versions() {
        let error = LibraryError::IncompatibleVersionNumber {
            library_name: "channel_plugin",
            expected_version: VersionNumber {
                major: 0,
                minor: 1,
                patch: 0,
            },
            actual_version: VersionNumber {
                major: 1,
                minor: 0,
                patch: 0,
            },
        };
        let reason = summarize(&error);
        assert_eq!(
            reason,
            "built for plugin ABI 1.0.0, but this host speaks plugin ABI 0.1.0"
        );
        assert!(!reason.contains('\n'));
    }

    #[test]
    fn missing_files_are_a_load_error_not_a_panic() {
        let err = load(Path::new("/nonexistent/libnothing.so")).err().unwrap();
        assert!(err.reason.starts_with("cannot be opened"), "{}", err.reason);
        assert!(err.to_string().starts_with("/nonexistent/libnothing.so: "));
    }

    #[test]
    fn discover_lists_only_plugin_library_names() {
        let dir = tempfile_dir();
        for name in [
            "libimessage.so",
            "libother.dylib",
            "notlib.so",
            "libx.so.1",
            "README",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let found: Vec<String> = discover(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        if cfg!(target_os = "macos") {
            assert_eq!(found, vec!["libother.dylib"]);
        } else {
            assert_eq!(found, vec!["libimessage.so"]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plugin-abi-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
