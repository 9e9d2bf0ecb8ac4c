//! Staging accepted attachments into the account's media folder (channel-behaviour.md §8.1
//! rules 3–5). Runs only for messages policy accepted, so a dropped message never copies a
//! file or runs `scp`.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use plugin_abi::types::MediaItem;

use crate::account::Account;
use crate::attachments::{self, Candidate};
use crate::message::ImsgMessage;

fn sanitize_name(raw: &str) -> String {
    let base = raw.rsplit('/').next().unwrap_or(raw);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    let cut: String = trimmed.chars().take(100).collect();
    if cut.is_empty() {
        "attachment".into()
    } else {
        cut
    }
}

/// Copies each candidate (local mode); skipped entries are logged, never errors.
pub async fn stage(account: &Account, m: &ImsgMessage, candidates: &[Candidate]) -> Vec<MediaItem> {
    let settings = account.settings();
    let max = settings.media_max_bytes();
    let roots = settings.attachment_roots.clone();
    let dir = account.media_dir.clone();
    let guid = sanitize_name(&m.dedupe_key());
    let candidates = candidates.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for c in candidates {
            let name = format!("{guid}-{}-{}", c.index, sanitize_name(&c.path));
            let dest = dir.join(&name);
            match copy_local(&c.path, &dest, &roots, max) {
                Ok(size) => out.push(MediaItem {
                    path: dest.display().to_string(),
                    mime: c.mime.clone(),
                    size,
                }),
                Err(why) => tracing::debug!(index = c.index, "attachment skipped: {why}"),
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

fn copy_local(
    src: &str,
    dest: &std::path::Path,
    roots: &[String],
    max: u64,
) -> Result<u64, String> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| format!("lstat: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    let real = std::fs::canonicalize(src).map_err(|e| format!("realpath: {e}"))?;
    if !attachments::inside_any(&real.display().to_string(), roots) {
        return Err("real path outside allowed roots".into());
    }
    if meta.len() > max {
        return Err(format!("{} bytes is over the size cap", meta.len()));
    }
    crate::store::ensure_dir(dest.parent().unwrap_or(std::path::Path::new(".")))
        .map_err(|e| e.to_string())?;
    let mut input = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|e| format!("open: {e}"))?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| format!("create: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            let _ = std::fs::remove_file(dest);
            return Err("grew over the size cap while copying".into());
        }
        output.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    Ok(total)
}
