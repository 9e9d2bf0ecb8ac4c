//! The probe (channel-behaviour.md §10.1): ordered checks, the first failure ends it, each
//! with a stable code, and whether retrying can help (`fatal`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use plugin_abi::types::{ProbeCheck, ProbeResult};
use serde_json::{json, Value};

use crate::config::{rules, AccountConfig};
use crate::imsg::capabilities::Snapshot;
use crate::imsg::rpc::{CallError, RpcClient, Started};
use crate::imsg::source::Source;

pub const NOT_MACOS: &str = "the local imsg CLI only runs on macOS; run the gateway on the Messages Mac or point cliPath at an SSH wrapper";
pub const RPC_UNSUPPORTED: &str = "this imsg build has no \"rpc\" command; update imsg";
pub const PERMISSION_DENIED: &str = "imsg cannot open the Messages database: grant Full Disk Access to the process that runs imsg (and its parent app), then restart";

/// A bare command name looked up on `PATH`; a path must exist and be executable.
pub fn find_executable(cli: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if rules::is_path_like(cli) {
        let p = PathBuf::from(cli);
        return executable(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(cli))
                .find(|p| executable(p))
        })
        .unwrap_or(None)
}

/// Step 4: does this build have `rpc`?
fn rpc_supported(status_ok: bool, output: &str) -> bool {
    let lower = output.to_lowercase();
    // "Unknown command 'rpc'", or very old builds that print the root help without `rpc`.
    if lower.contains("unknown command") {
        return false;
    }
    !status_ok || lower.lines().any(|l| l.contains("rpc"))
}

/// A check that failed: its name and code, whether retrying cannot help, and the text.
struct Failed {
    check: &'static str,
    code: &'static str,
    fatal: bool,
    error: String,
}

impl Failed {
    fn new(check: &'static str, code: &'static str, fatal: bool, error: String) -> Failed {
        Failed {
            check,
            code,
            fatal,
            error,
        }
    }
}

fn pass(r: &mut ProbeResult, check: &str, detail: Option<String>) {
    r.checks.push(ProbeCheck {
        name: check.into(),
        ok: true,
        code: None,
        detail,
    });
}

/// What a passing probe found on the way (imsg-protocol A10 steps 2 and 4), with its rpc
/// child: already initialized, so the watcher takes it over instead of starting another.
pub struct Ready {
    /// The first line of `imsg --version`, when it printed one.
    pub version_text: Option<String>,
    /// A strict server's `initialize` result; `None` from a lenient one (−32601).
    pub initialized: Option<Value>,
    pub child: Started,
}

impl Ready {
    /// A strict server's snapshot (its `initialize` result). A lenient server's needs
    /// `imsg status --json` for the bridge, which is learned beside the subscription.
    pub fn strict_snapshot(&self, now_ms: i64) -> Option<Snapshot> {
        let result = self.initialized.as_ref()?;
        Some(Snapshot::from_strict(
            self.version_text.clone(),
            result,
            now_ms,
        ))
    }

    /// Ends the child (a probe nobody watches with).
    pub async fn shutdown(self) {
        self.child
            .client
            .shutdown(self.child.done, Duration::from_millis(500))
            .await;
    }
}

/// The probe as `channels status --probe` reports it; its child is ended.
pub async fn probe(account: &AccountConfig, source: &Source) -> ProbeResult {
    let (result, ready) = probe_ready(account, source).await;
    if let Some(ready) = ready {
        ready.shutdown().await;
    }
    result
}

/// The probe, keeping what it learned and its child when it passed.
pub async fn probe_ready(account: &AccountConfig, source: &Source) -> (ProbeResult, Option<Ready>) {
    let started = Instant::now();
    let mut result = ProbeResult {
        ok: false,
        account_id: account.id.clone(),
        code: None,
        fatal: false,
        error: None,
        elapsed_ms: 0,
        cli_path: account.cli_path.clone(),
        db_path: account.db_path.clone(),
        remote_host: source.remote_host.clone(),
        remote_host_source: source.remote_source.to_string(),
        checks: Vec::new(),
    };
    pass(&mut result, "config", None);
    let ready = match checks(account, source, &mut result).await {
        Ok(ready) => {
            result.ok = true;
            Some(ready)
        }
        Err(f) => {
            result.checks.push(ProbeCheck {
                name: f.check.into(),
                ok: false,
                code: Some(f.code.into()),
                detail: None,
            });
            result.code = Some(f.code.into());
            result.fatal = f.fatal;
            result.error = Some(f.error);
            None
        }
    };
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    (result, ready)
}

/// The checks in order; each passed one is added to `r`, the first failure ends them.
/// `rpc --help`, `--version` and the rpc child run side by side: each is a process start
/// that would otherwise wait for the one before (start-up pays for them in front of the
/// subscription); their results are still judged in order.
async fn checks(
    account: &AccountConfig,
    source: &Source,
    r: &mut ProbeResult,
) -> Result<Ready, Failed> {
    let timeout = Duration::from_millis(account.probe_timeout_ms);
    if !cfg!(target_os = "macos") && account.cli_path == "imsg" {
        return Err(Failed::new("platform", "not_macos", true, NOT_MACOS.into()));
    }
    pass(r, "platform", None);
    let Some(cli) = find_executable(&source.cli) else {
        let text = format!(
            "imsg not found (cliPath \"{}\"); install imsg or fix channels.imessage.cliPath",
            account.cli_path
        );
        return Err(Failed::new("cli", "cli_not_found", true, text));
    };
    pass(r, "cli", Some(cli.display().to_string()));
    let (help, version_text, child) = tokio::join!(
        rpc_help(&cli, timeout),
        version_line(&cli, timeout),
        rpc_child(account, source, timeout)
    );
    if let Err(failed) = help {
        if let Ok((_, started)) = child {
            shut(started).await;
        }
        return Err(failed);
    }
    pass(r, "rpc_help", None);
    let (initialized, child) = child?;
    pass(r, "chats_list", None);
    Ok(Ready {
        version_text,
        initialized,
        child,
    })
}

/// A10 step 2: the first non-empty line of `imsg --version`; `None` when it printed none
/// (the version is then unknown and gated as 0.3.0).
async fn version_line(cli: &Path, timeout: Duration) -> Option<String> {
    super::capabilities::run(cli, &["--version"], timeout)
        .await?
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Step 4: `imsg rpc --help` answers, and the build has `rpc`.
async fn rpc_help(cli: &std::path::Path, timeout: Duration) -> Result<(), Failed> {
    let help = tokio::process::Command::new(cli)
        .args(["rpc", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let fail = |code, fatal, text| Err(Failed::new("rpc_help", code, fatal, text));
    match tokio::time::timeout(timeout, help).await {
        Err(_) => {
            let text = format!(
                "imsg did not answer `rpc --help` within {} ms",
                timeout.as_millis()
            );
            fail("timeout", false, text)
        }
        Ok(Err(e)) => {
            let text = format!("imsg rpc failed: running {}: {e}", cli.display());
            fail("rpc_error", false, text)
        }
        Ok(Ok(out)) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if rpc_supported(out.status.success(), &text) {
                Ok(())
            } else {
                fail("rpc_unsupported", true, RPC_UNSUPPORTED.into())
            }
        }
    }
}

async fn shut(started: Started) {
    started
        .client
        .shutdown(started.done, Duration::from_millis(500))
        .await;
}

/// Step 5 (A10 step 4): an rpc child answers `initialize` first (a strict server wants it
/// first; a lenient one answers −32601 at once), then `chats.list` (the database is
/// readable). The child is kept for the watcher.
async fn rpc_child(
    account: &AccountConfig,
    source: &Source,
    timeout: Duration,
) -> Result<(Option<Value>, Started), Failed> {
    let started = RpcClient::spawn(&source.spawn_config()).map_err(|e| {
        Failed::new(
            "chats_list",
            "rpc_error",
            false,
            format!("imsg rpc failed: {e}"),
        )
    })?;
    match ask(&started.client, timeout).await {
        Ok(initialized) => Ok((initialized, started)),
        Err(e) => {
            shut(started).await;
            Err(rpc_failure(account, e, timeout))
        }
    }
}

/// `initialize`, then `chats.list`: the `initialize` result (strict) or `None` (lenient).
async fn ask(client: &RpcClient, timeout: Duration) -> Result<Option<Value>, CallError> {
    let params = json!({"protocol_version": 1});
    let initialized = match client.request("initialize", params, timeout).await {
        Ok(result) => Some(result),
        Err(CallError::Rpc(e)) if e.code == -32601 => None,
        Err(e) => return Err(e),
    };
    client
        .request("chats.list", json!({"limit": 1}), timeout)
        .await?;
    Ok(initialized)
}

/// Why the rpc child failed the probe (Full Disk Access, a timeout, anything else).
fn rpc_failure(account: &AccountConfig, e: CallError, timeout: Duration) -> Failed {
    let fail = |code, fatal, text| Failed::new("chats_list", code, fatal, text);
    match e {
        e if e.is_permission() => {
            tracing::error!(account = %account.id, "{PERMISSION_DENIED} ({e})");
            fail("permission_denied", true, PERMISSION_DENIED.into())
        }
        CallError::Timeout { method, .. } => {
            let text = format!(
                "imsg did not answer {method} within {} ms",
                timeout.as_millis()
            );
            fail("timeout", false, text)
        }
        e => fail("rpc_error", false, format!("imsg rpc failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_help_outputs_case_150() {
        assert!(!rpc_supported(false, "Error: Unknown command 'rpc'"));
        assert!(!rpc_supported(
            true,
            "imsg 0.2.0\nUsage: imsg <command>\nCommands:\n  send\tSend"
        ));
        assert!(rpc_supported(
            true,
            "imsg rpc\nRun JSON-RPC over stdin/stdout"
        ));
    }
}
