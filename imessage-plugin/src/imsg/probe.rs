//! The probe (channel-behaviour.md §10.1): ordered checks, the first failure ends it, each
//! with a stable code, and whether retrying can help (`fatal`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use plugin_abi::types::{ProbeCheck, ProbeResult};
use serde_json::json;

use crate::config::{rules, AccountConfig};
use crate::imsg::rpc::{CallError, RpcClient};
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

pub async fn probe(account: &AccountConfig, source: &Source) -> ProbeResult {
    let started = Instant::now();
    let timeout = Duration::from_millis(account.probe_timeout_ms);
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
        checks: vec![ProbeCheck {
            name: "config".into(),
            ok: true,
            ..Default::default()
        }],
    };
    let fail = |mut r: ProbeResult, check: &str, code: &str, fatal: bool, error: String| {
        r.checks.push(ProbeCheck {
            name: check.into(),
            ok: false,
            code: Some(code.into()),
            detail: None,
        });
        r.code = Some(code.into());
        r.fatal = fatal;
        r.error = Some(error);
        r.elapsed_ms = started.elapsed().as_millis() as u64;
        r
    };
    let pass = |r: &mut ProbeResult, check: &str, detail: Option<String>| {
        r.checks.push(ProbeCheck {
            name: check.into(),
            ok: true,
            code: None,
            detail,
        });
    };

    if !cfg!(target_os = "macos") && account.cli_path == "imsg" {
        return fail(result, "platform", "not_macos", true, NOT_MACOS.into());
    }
    pass(&mut result, "platform", None);

    let Some(cli) = find_executable(&source.cli) else {
        let text = format!(
            "imsg not found (cliPath \"{}\"); install imsg or fix channels.imessage.cliPath",
            account.cli_path
        );
        return fail(result, "cli", "cli_not_found", true, text);
    };
    pass(&mut result, "cli", Some(cli.display().to_string()));

    let help = tokio::process::Command::new(&cli)
        .args(["rpc", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, help).await {
        Err(_) => {
            let text = format!(
                "imsg did not answer `rpc --help` within {} ms",
                timeout.as_millis()
            );
            return fail(result, "rpc_help", "timeout", false, text);
        }
        Ok(Err(e)) => {
            return fail(
                result,
                "rpc_help",
                "rpc_error",
                false,
                format!("imsg rpc failed: running {}: {e}", cli.display()),
            )
        }
        Ok(Ok(out)) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !rpc_supported(out.status.success(), &text) {
                return fail(
                    result,
                    "rpc_help",
                    "rpc_unsupported",
                    true,
                    RPC_UNSUPPORTED.into(),
                );
            }
        }
    }
    pass(&mut result, "rpc_help", None);

    let started_child = match RpcClient::spawn(&source.spawn_config()) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                result,
                "chats_list",
                "rpc_error",
                false,
                format!("imsg rpc failed: {e}"),
            )
        }
    };
    let client = started_child.client;
    let outcome = client
        .request("chats.list", json!({"limit": 1}), timeout)
        .await;
    client
        .clone()
        .shutdown(started_child.done, Duration::from_millis(500))
        .await;
    match outcome {
        Ok(_) => {
            pass(&mut result, "chats_list", None);
            result.ok = true;
            result.elapsed_ms = started.elapsed().as_millis() as u64;
            result
        }
        Err(e) if e.is_permission() => {
            tracing::error!(account = %account.id, "{PERMISSION_DENIED} ({e})");
            fail(
                result,
                "chats_list",
                "permission_denied",
                true,
                PERMISSION_DENIED.into(),
            )
        }
        Err(CallError::Timeout { .. }) => {
            let text = format!(
                "imsg did not answer chats.list within {} ms",
                timeout.as_millis()
            );
            fail(result, "chats_list", "timeout", false, text)
        }
        Err(e) => fail(
            result,
            "chats_list",
            "rpc_error",
            false,
            format!("imsg rpc failed: {e}"),
        ),
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
