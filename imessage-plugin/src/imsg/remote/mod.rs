//! The remote Mac (channel-behaviour.md §8.3–§8.4): telling the host from an SSH wrapper
//! given as `cliPath`, and moving files with `scp`, run directly (never through a shell)
//! with a fixed argument vector.

pub mod upload;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::rules;

const NO_ARG_OPTIONS: &[&str] = &[
    "-T", "-t", "-q", "-n", "-x", "-a", "-A", "-C", "-4", "-6", "-k", "-K", "-N",
];

/// What scanning a wrapper found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    Host(String),
    None,
    /// An ambiguous line, several hosts, or an invalid one: local mode, with the warning.
    Unclear,
}

fn unquote(token: &str) -> &str {
    token.trim_matches(|c| c == '"' || c == '\'')
}

/// Scans wrapper text (§8.4 rules 1–3).
pub fn detect_in(text: &str) -> Detection {
    let mut found: Vec<String> = Vec::new();
    let mut unclear = false;
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(ssh_at) = tokens.iter().position(|t| {
            let t = unquote(t);
            t == "ssh" || t.ends_with("/ssh")
        }) else {
            continue;
        };
        // `ssh_at` is an index of `tokens`, so `ssh_at + 1 <= len`: an empty tail at worst.
        let mut rest = tokens[ssh_at + 1..].iter().map(|t| unquote(t));
        let mut host = None;
        for token in rest.by_ref() {
            if NO_ARG_OPTIONS.contains(&token) {
                continue;
            }
            if token.starts_with('-') {
                unclear = true;
            } else {
                host = Some(token.to_string());
            }
            break;
        }
        if unclear {
            break;
        }
        let Some(host) = host else { continue };
        let command = rest.next().unwrap_or("");
        if command != "imsg" && !command.ends_with("/imsg") {
            continue;
        }
        if !rules::is_valid_remote_host(&host) {
            unclear = true;
            break;
        }
        if !found.contains(&host) {
            found.push(host);
        }
    }
    match (unclear, found.len()) {
        (true, _) => Detection::Unclear,
        (false, 0) => Detection::None,
        (false, 1) => Detection::Host(found.remove(0)),
        _ => Detection::Unclear,
    }
}

/// Reads the wrapper at `cli` (already `~`-expanded): at most 64 KiB of UTF-8.
pub fn detect(cli: &str) -> Detection {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(cli) else {
        return Detection::None;
    };
    let mut bytes = Vec::new();
    if file.take(64 * 1024).read_to_end(&mut bytes).is_err() {
        return Detection::None;
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => detect_in(text),
        Err(_) => Detection::None,
    }
}

/// `$IMESSAGE_SCP` when set (an explicit override, e.g. for tests), else `/usr/bin/scp` when
/// it exists, else `scp` from `PATH`.
pub fn scp_program() -> PathBuf {
    if let Some(p) = std::env::var_os("IMESSAGE_SCP").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let system = Path::new("/usr/bin/scp");
    if system.exists() {
        system.to_path_buf()
    } else {
        PathBuf::from("scp")
    }
}

/// The exact argument vector (after the program) for copying `from` to `to`.
pub fn scp_args(from: &str, to: &str) -> Vec<String> {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "--",
        from,
        to,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The argument vector for fetching `remote_path` (`from` is `<host>:<remote_path>`). A
/// path holding characters that a remote shell splits or expands (space and
/// `~{}()#!%^=`, [`rules::needs_sftp`]) is fetched in SFTP mode (`-s`): the legacy scp
/// protocol hands the path to the Mac user's shell, SFTP never does. Forbidding those
/// characters instead would skip every voice message (`Audio Message.caf`) and most
/// screenshots. Other paths keep the plain vector, which every scp understands; an scp too
/// old for `-s` (OpenSSH < 8.7) fails on those paths only, and the attachment is skipped.
pub fn fetch_args(remote_path: &str, from: &str, to: &str) -> Vec<String> {
    let mut args = scp_args(from, to);
    if rules::needs_sftp(remote_path) {
        args.insert(0, "-s".into());
    }
    args
}

/// Why a copy to or from the Mac failed.
#[derive(Debug, thiserror::Error)]
pub enum ScpError {
    #[error("starting scp: {0}")]
    Start(std::io::Error),
    #[error("scp: {0}")]
    Wait(std::io::Error),
    #[error("scp did not finish within {0} s")]
    TimedOut(u64),
    /// The exit status (or `signal`) and the first line scp wrote on stderr.
    #[error("scp failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// Runs scp with `args` ([`scp_args`], [`fetch_args`], [`upload::upload_args`]) and a time
/// limit (the process is killed on expiry).
pub async fn scp(args: Vec<String>, limit: Duration) -> Result<(), ScpError> {
    run(scp_program(), args, limit).await
}

/// Runs `program` (scp or ssh) with a time limit; stderr's first line explains a failure.
pub(crate) async fn run(
    program: PathBuf,
    args: Vec<String>,
    limit: Duration,
) -> Result<(), ScpError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(ScpError::Start)?;
    let stderr = child.stderr.take();
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.map_err(ScpError::Wait)?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(ScpError::TimedOut(limit.as_secs()));
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    if let Some(mut e) = stderr {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut text).await;
    }
    Err(ScpError::Failed {
        status: status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into()),
        stderr: text.lines().next().unwrap_or("").trim().to_string(),
    })
}

/// Every character outside `[A-Za-z0-9._-]` replaced by `_` (names that travel to a shell on
/// the Mac, or into the media folder).
pub fn safe_file_chars(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_cases_139_140() {
        assert_eq!(
            detect_in("#!/bin/sh\nexec ssh -T bot@mac-mini.tailnet-1234.ts.net imsg \"$@\"\n"),
            Detection::Host("bot@mac-mini.tailnet-1234.ts.net".into())
        );
        assert_eq!(
            detect_in("exec /usr/bin/ssh -T bot@mac-mini.tailnet-1234.ts.net /opt/homebrew/bin/imsg \"$@\""),
            Detection::Host("bot@mac-mini.tailnet-1234.ts.net".into())
        );
        assert_eq!(
            detect_in("exec ssh -T gateway-host imsg \"$@\""),
            Detection::Host("gateway-host".into())
        );
        assert_eq!(
            detect_in("# exec ssh -T bot@mac imsg \"$@\"\nexec imsg \"$@\""),
            Detection::None
        );
        assert_eq!(
            detect_in("exec ssh -p 2222 bot@mac imsg \"$@\""),
            Detection::Unclear
        );
        assert_eq!(detect_in("ssh a imsg\nssh b imsg"), Detection::Unclear);
        assert_eq!(detect_in("ssh -T a@@b imsg"), Detection::Unclear);
        assert_eq!(
            detect_in("ssh -T host ls"),
            Detection::None,
            "not running imsg"
        );
    }

    #[test]
    fn scp_argv_case_137() {
        assert_eq!(
            scp_args(
                "bot@mac:/Users/bot/Library/Messages/Attachments/a/IMG.jpg",
                "/state/imessage/media/default/X-0-IMG.jpg"
            ),
            vec![
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "--",
                "bot@mac:/Users/bot/Library/Messages/Attachments/a/IMG.jpg",
                "/state/imessage/media/default/X-0-IMG.jpg"
            ]
        );
    }

    #[test]
    fn paths_a_remote_shell_would_split_or_expand_are_fetched_over_sftp() {
        let dir = "/Users/bot/Library/Messages/Attachments/a";
        let fetch = |name: &str| {
            let path = format!("{dir}/{name}");
            fetch_args(&path, &format!("bot@mac:{path}"), "/state/x")
        };
        for c in [' ', '~', '{', '}', '(', ')', '#', '!', '%', '^', '='] {
            let args = fetch(&format!("IMG{c}1.jpg"));
            assert_eq!(args[0], "-s", "{c:?}: {args:?}");
            assert_eq!(
                &args[1..],
                scp_args(&format!("bot@mac:{dir}/IMG{c}1.jpg"), "/state/x")
            );
        }
        // Everything else keeps the vector every scp understands (case 137).
        let plain = fetch("IMG_1.v2-final.jpg");
        assert_eq!(
            plain,
            scp_args(&format!("bot@mac:{dir}/IMG_1.v2-final.jpg"), "/state/x")
        );
    }
}
