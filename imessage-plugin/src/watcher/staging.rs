//! Staging accepted attachments into the account's media folder (channel-behaviour.md §8.1
//! rules 3–5). Runs only for messages policy accepted, so a dropped message never copies a
//! file or runs `scp`.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use plugin_abi::types::MediaItem;

use crate::account::Account;
use crate::imsg::message::ImsgMessage;
use crate::inbound::attachments::{self, Candidate};
use crate::support::timeutil;

/// Staged files older than this are deleted; the host may delete them sooner.
pub const MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// Staging cleans the media folder at most this often, besides at account start: a gateway
/// that runs for weeks would otherwise keep every attachment it ever staged.
pub const CLEAN_EVERY_MS: i64 = 3600 * 1000;

/// When the media folder was last cleaned by staging (one per account).
#[derive(Debug, Default)]
pub struct Cleaner {
    /// Unix ms of the last clean; 0 = none yet, so the first staging call cleans.
    last_ms: AtomicI64,
}

impl Cleaner {
    /// Whether a clean is due at `now_ms`; when it is, it is claimed, so two messages staged
    /// at once do not both walk the folder.
    pub fn claim(&self, now_ms: i64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < CLEAN_EVERY_MS {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Cleans the account's media folder in the background when the hour is up.
fn clean_if_due(account: &Account) {
    if !account.media_cleaner.claim(timeutil::now_ms()) {
        return;
    }
    let dir = account.media_dir.clone();
    // Off the message path: the folder may hold many files. Without a runtime (never in the
    // watcher) the clean waits for the next call.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(move || clean_old(&dir));
    }
}

fn sanitize_name(raw: &str) -> String {
    let base = raw.rsplit('/').next().unwrap_or(raw);
    let cleaned = crate::imsg::remote::safe_file_chars(base);
    let trimmed = cleaned.trim_start_matches('.');
    let cut: String = trimmed.chars().take(100).collect();
    if cut.is_empty() {
        "attachment".into()
    } else {
        cut
    }
}

/// Copies each candidate into the media folder: from the local disk, or with `scp` from the
/// remote Mac. Skipped entries are logged, never errors.
pub async fn stage(account: &Account, m: &ImsgMessage, candidates: &[Candidate]) -> Vec<MediaItem> {
    clean_if_due(account);
    if let Some(host) = account.source.remote_host.clone() {
        return stage_remote(account, &host, m, candidates).await;
    }
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

async fn stage_remote(
    account: &Account,
    host: &str,
    m: &ImsgMessage,
    candidates: &[Candidate],
) -> Vec<MediaItem> {
    let max = account.settings().media_max_bytes();
    let guid = sanitize_name(&m.dedupe_key());
    let mut out = Vec::new();
    if let Err(e) = crate::state::store::ensure_dir(&account.media_dir) {
        tracing::warn!("creating the media folder: {e}");
        return out;
    }
    for c in candidates {
        if c.total_bytes.is_some_and(|n| n > max) {
            tracing::debug!(index = c.index, "attachment skipped: over the size cap");
            continue;
        }
        let dest = account
            .media_dir
            .join(format!("{guid}-{}-{}", c.index, sanitize_name(&c.path)));
        let dest_text = dest.display().to_string();
        let args =
            crate::imsg::remote::fetch_args(&c.path, &format!("{host}:{}", c.path), &dest_text);
        match crate::imsg::remote::scp(args, std::time::Duration::from_secs(60)).await {
            Ok(()) => match std::fs::symlink_metadata(&dest) {
                Ok(meta) if meta.file_type().is_file() && meta.len() <= max => {
                    let _ = std::fs::set_permissions(
                        &dest,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    );
                    out.push(MediaItem {
                        path: dest_text,
                        mime: c.mime.clone(),
                        size: meta.len(),
                    });
                }
                _ => {
                    let _ = std::fs::remove_file(&dest);
                    tracing::debug!(
                        index = c.index,
                        "attachment skipped: fetched file is not a regular file within the cap"
                    );
                }
            },
            // scp's stderr and the remote path carry the file's name: debug only.
            Err(e) => {
                tracing::warn!(index = c.index, guid = %guid, "attachment skipped: fetching it from the Mac failed (details at debug level)");
                tracing::debug!(index = c.index, "attachment skipped: {e}");
            }
        }
    }
    out
}

/// Deletes staged files older than [`MAX_AGE`] (at account start, and from staging at most
/// once every [`CLEAN_EVERY_MS`]).
pub fn clean_old(media_dir: &Path) {
    clean_older_than(media_dir, MAX_AGE, SystemTime::now());
}

/// Deletes the files of `media_dir` last modified more than `max_age` before `now`; returns
/// how many went.
fn clean_older_than(media_dir: &Path, max_age: Duration, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(media_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > max_age);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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
    crate::state::store::ensure_dir(dest.parent().unwrap_or(std::path::Path::new(".")))
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
        .custom_flags(libc::O_NOFOLLOW)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinks_directories_big_files_and_escapes_case_134() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Attachments");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let roots = vec![root.display().to_string()];
        let ok = root.join("a.jpg");
        std::fs::write(&ok, b"jpeg").unwrap();
        let link = root.join("link.jpg");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let big = root.join("big.mov");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(17 * 1_048_576)
            .unwrap();
        let out = dir.path().join("out");
        let dest = |n: &str| out.join(n);
        let max = 16 * 1_048_576;
        assert_eq!(
            copy_local(&ok.display().to_string(), &dest("1"), &roots, max),
            Ok(4)
        );
        assert!(copy_local(&link.display().to_string(), &dest("2"), &roots, max).is_err());
        assert!(copy_local(
            &root.join("sub").display().to_string(),
            &dest("3"),
            &roots,
            max
        )
        .is_err());
        assert!(copy_local(&big.display().to_string(), &dest("4"), &roots, max).is_err());
        // A symlinked parent directory cannot escape the roots.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        assert!(copy_local(
            &root.join("escape/secret.txt").display().to_string(),
            &dest("5"),
            &roots,
            max
        )
        .is_err());
        assert!(!dest("2").exists() && !dest("4").exists() && !dest("5").exists());
    }

    #[test]
    fn a_symlink_planted_at_the_destination_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Attachments");
        std::fs::create_dir_all(&root).unwrap();
        let src = root.join("a.jpg");
        std::fs::write(&src, b"jpeg").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"mine").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("g-0-a.jpg")).unwrap();
        let roots = vec![root.display().to_string()];
        let e = copy_local(
            &src.display().to_string(),
            &out.join("g-0-a.jpg"),
            &roots,
            100,
        );
        assert!(e.is_err(), "{e:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"mine");
    }

    #[test]
    fn files_older_than_the_age_limit_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let aged = |name: &str, age: Duration| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
            path
        };
        let old = aged("old.jpg", MAX_AGE + Duration::from_secs(1));
        let young = aged("young.jpg", MAX_AGE - Duration::from_secs(1));
        assert_eq!(clean_older_than(dir.path(), MAX_AGE, now), 1);
        assert!(!old.exists());
        assert!(young.exists());
        // A missing folder is nothing to clean.
        assert_eq!(clean_older_than(&dir.path().join("none"), MAX_AGE, now), 0);
    }

    #[test]
    fn staging_cleans_at_most_once_an_hour() {
        let cleaner = Cleaner::default();
        let t = 1_800_000_000_000;
        assert!(cleaner.claim(t), "the first staging call cleans");
        assert!(!cleaner.claim(t));
        assert!(!cleaner.claim(t + CLEAN_EVERY_MS - 1));
        assert!(cleaner.claim(t + CLEAN_EVERY_MS));
        assert!(!cleaner.claim(t + CLEAN_EVERY_MS + 1));
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(
            sanitize_name("/x/../..hidden name$.jpg"),
            "hidden_name_.jpg"
        );
        assert_eq!(sanitize_name(""), "attachment");
    }
}
