//! `host-stub serve` (spec/host-protocol.md §4): one channel plugin behind the host protocol
//! on stdin/stdout, for hosts without FFI or that want the plugin in its own process.
//!
//! stdin lines are posted as they come; every plugin message is one line on stdout, flushed
//! at once; logs go to stderr only. EOF on stdin is `stop`; the process exits 0 after
//! `plugin.closed`.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use plugin_abi::chp::{Instance, Options, PostError};

use crate::failure::Failure;
use crate::loader;
use crate::settings::Settings;

/// How long the bridge waits before posting again when the instance has `maxQueued`
/// requests (the host is ahead of the plugin; stdin is simply read later).
const FULL_BACKOFF: Duration = Duration::from_millis(2);

pub fn run(settings: &Settings, channel: &str, options: Option<&str>) -> Result<(), Failure> {
    let options =
        Options::parse(options).map_err(|e| Failure::usage(format!("--{}", e.message)))?;
    let libraries = loader::load_all(&settings.plugins_dir)?;
    let plugin = loader::find(&libraries, channel, &settings.plugins_dir)?;
    let instance = Instance::new(options, |callbacks| {
        plugin.instantiate(callbacks).map(|client| client.0)
    })
    .map_err(|e| {
        Failure::runtime(format!(
            "{}: creating the plugin failed: {e}",
            plugin.path.display()
        ))
    })?;
    let instance = Arc::new(instance);
    let reader = instance.clone();
    // Detached: it may sit in a read of stdin when `plugin.closed` ends the process.
    std::thread::Builder::new()
        .name("serve-stdin".into())
        .spawn(move || pump_stdin(&reader))
        .map_err(|e| Failure::runtime(format!("starting the stdin reader: {e}")))?;
    let written = pump_stdout(&instance);
    tracing::debug!(channel, "plugin.closed; exiting");
    written
}

/// stdin → `post`, until EOF (then `stop`) or the instance closed.
fn pump_stdin(instance: &Instance) {
    let stdin = std::io::stdin().lock();
    for line in stdin.lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("reading stdin: {e}; stopping");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if !post(instance, &line) {
            return;
        }
    }
    // EOF: the host is gone or done. A notification, so no response goes to a closed pipe.
    let _ = instance.post(r#"{"jsonrpc":"2.0","method":"stop"}"#);
}

/// Posts one line, waiting while the instance is full; `false` once it is closed.
fn post(instance: &Instance, line: &str) -> bool {
    loop {
        match instance.post(line) {
            Ok(()) => return true,
            Err(PostError::TooMany) => std::thread::sleep(FULL_BACKOFF),
            Err(PostError::Closed) => {
                tracing::warn!("a message came after stop and was dropped");
                return false;
            }
        }
    }
}

/// Plugin messages → stdout lines, until `plugin.closed` was written.
fn pump_stdout(instance: &Instance) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    let mut broken: Option<std::io::Error> = None;
    while let Some(message) = instance.next_message(None) {
        if broken.is_some() {
            continue; // keep draining so stop can finish
        }
        let written = stdout
            .write_all(message.as_bytes())
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if let Err(e) = written {
            tracing::error!("writing stdout: {e}; stopping");
            broken = Some(e);
            let _ = instance.post(r#"{"jsonrpc":"2.0","method":"stop"}"#);
        }
    }
    match broken {
        None => Ok(()),
        Some(e) => Err(Failure::runtime(format!("writing stdout: {e}"))),
    }
}
