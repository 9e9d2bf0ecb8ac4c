//! Helpers shared by the end-to-end tests: where the built artifacts are, and a scratch
//! gateway folder (config, plugins, state) per test.

#![allow(dead_code)]

pub mod chp;
pub mod serve;
pub mod sim;
pub mod transcript;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The one bound on waiting for something that should happen. Generous, because a wait
/// ends as soon as its condition holds: only a failing test waits this long. A test that
/// needs one of the plugin's own timers (60 s status poll, 8 s typing keepalive) shrinks it
/// with [`Gateway::set_timings`] and names its bound where it waits.
pub const WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>/`, found from this test binary (`target/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn must_exist(path: PathBuf, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing; {hint}", path.display());
    path
}

/// The built `host-stub` binary (cargo test --workspace builds it for host-stub's own tests).
pub fn host_stub() -> PathBuf {
    must_exist(
        target_dir().join("host-stub"),
        "run the tests with `cargo test --workspace` so host-stub is built",
    )
}

/// The simulator binary of this package.
pub fn imsg_sim() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imsg-sim"))
}

/// A plugin library built as a dev-dependency of this package (lands in `deps/`).
pub fn plugin_library(lib_name: &str) -> PathBuf {
    let file = format!("lib{lib_name}{}", plugin_abi::host::LIBRARY_SUFFIX);
    let deps = target_dir().join("deps").join(&file);
    if deps.exists() {
        return deps;
    }
    must_exist(
        target_dir().join(&file),
        "it is built as a dev-dependency of imessage-tests",
    )
}

/// A scratch gateway: `<dir>/gateway.json5`, `<dir>/plugins/`, `<dir>/state/`.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    /// The plugin's shrunk timers ([`TIMINGS`]) for every host-stub this gateway runs.
    timings: std::sync::Mutex<Option<String>>,
}

/// The test-only variable that shrinks the plugin's fixed timers (status poll, database
/// retry, typing keepalive, …; `imessage-plugin/src/support/timings.rs` lists the keys).
pub const TIMINGS: &str = "IMESSAGE_TEST_TIMINGS";

impl Gateway {
    pub fn new(plugins: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        for lib in plugins {
            let src = plugin_library(lib);
            std::fs::copy(
                &src,
                dir.path().join("plugins").join(src.file_name().unwrap()),
            )
            .expect("copy plugin");
        }
        Gateway {
            dir,
            timings: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("gateway.json5")
    }

    pub fn write_config(&self, json5: &str) {
        std::fs::write(self.config_path(), json5).unwrap();
    }

    /// Runs the plugin with these timers from now on (`statusPollMs=300,dbRetryMs=200`), in
    /// the gateway and in every one-shot command, so no test waits a real minute.
    pub fn set_timings(&self, spec: &str) {
        *self.timings.lock().unwrap() = Some(spec.to_string());
    }

    /// `host-stub` with this gateway's config, plugins and state folders.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(host_stub());
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("--plugins")
            .arg(self.path().join("plugins"))
            .arg("--state-dir")
            .arg(self.path().join("state"))
            .env_remove("RUST_LOG")
            .env_remove("HOST_STUB_CONFIG");
        match self.timings.lock().unwrap().as_deref() {
            Some(spec) => cmd.env(TIMINGS, spec),
            None => cmd.env_remove(TIMINGS),
        };
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run host-stub")
    }

    /// `message send` of one text on the imessage channel (through the running gateway
    /// when there is one).
    pub fn send(&self, target: &str, text: &str) -> Output {
        self.run(&send_args(target, text))
    }
}

/// The arguments of `message send` of one text on the imessage channel.
pub fn send_args<'a>(target: &'a str, text: &'a str) -> Vec<&'a str> {
    vec![
        "message",
        "send",
        "--channel",
        "imessage",
        "--target",
        target,
        "--text",
        text,
    ]
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The sequence number a test message's text ends with (`dm 12`, `@bot group 13`).
pub fn seq_of(m: &serde_json::Value) -> u64 {
    m["text"]
        .as_str()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence number in {m}"))
}
