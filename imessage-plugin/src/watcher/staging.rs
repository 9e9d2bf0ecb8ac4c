//! Staging accepted attachments into the account's media folder (channel-behaviour.md §8.1
//! rules 3–5). Runs only for messages policy accepted, so a dropped message never copies a
//! file or runs `scp`.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use plugin_abi::types::MediaItem;

use crate::config::AccountConfig;
use crate::imsg::message::ImsgMessage;
use crate::inbound::attachments::{self, Candidate};
use crate::state::media::MediaDir;

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
pub async fn stage(
    media: &MediaDir,
    remote_host: Option<&str>,
    settings: &AccountConfig,
    m: &ImsgMessage,
    candidates: &[Candidate],
) -> Vec<MediaItem> {
    media.clean_if_due();
    if let Some(host) = remote_host {
        return stage_remote(media, host, settings, m, candidates).await;
    }
    let max = settings.media_max_bytes();
    let roots = settings.attachment_roots.clone();
    let dir = media.dir.clone();
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
    media: &MediaDir,
    host: &str,
    settings: &AccountConfig,
    m: &ImsgMessage,
    candidates: &[Candidate],
) -> Vec<MediaItem> {
    let max = settings.media_max_bytes();
    let guid = sanitize_name(&m.dedupe_key());
    let mut out = Vec::new();
    if let Err(e) = crate::state::store::ensure_dir(&media.dir) {
        tracing::warn!("creating the media folder: {e}");
        return out;
    }
    for c in candidates {
        if c.total_bytes.is_some_and(|n| n > max) {
            tracing::debug!(index = c.index, "attachment skipped: over the size cap");
            continue;
        }
        let dest = media
            .dir
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
    fn names_are_sanitised() {
        assert_eq!(
            sanitize_name("/x/../..hidden name$.jpg"),
            "hidden_name_.jpg"
        );
        assert_eq!(sanitize_name(""), "attachment");
    }
}
