//! Outbound files to a remote Mac (§7.7; issue 21, item 7). Each file goes into a fresh
//! folder `/tmp/imsg-out-<16 hex>/` on the Mac, mode 0700, as a 0600 copy, and the folder is
//! removed once the send has its answer (sent, failed or unknown). Why: `/tmp` on the Mac
//! is shared by every local user, and the old flat `/tmp/imsg-out-<hex>-<name>` kept the
//! host's file mode (often 0644) until macOS's temporary-file cleanup, days later.
//!
//! scp alone cannot set modes on the far side, so the file is first copied into a local
//! 0700 folder as 0600, and that folder is sent with `scp -r -p`: both scp protocols
//! recreate folder and file with those modes (legacy: `D0700`/`C0600` records; SFTP: mkdir
//! and open with the same permissions). Removing takes a command on the Mac,
//! `ssh <host> rm -rf -- /tmp/imsg-out-<hex>`: every word is ours (the host passed the
//! §8.3 host rule, the folder is a fixed prefix and hex), so the remote shell has nothing to
//! split or expand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ScpError;

const UPLOAD_LIMIT: Duration = Duration::from_secs(60);
const REMOVE_LIMIT: Duration = Duration::from_secs(20);
const REMOTE_PREFIX: &str = "/tmp/imsg-out-";

/// One file on the Mac, and the folder that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// `/tmp/imsg-out-<16 hex>`.
    pub dir: String,
    /// `<dir>/<name>`: what `send` is given as `file`.
    pub file: String,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("preparing the copy in {}: {source}", dir.display())]
    Stage {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Scp(#[from] ScpError),
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where `local` goes on the Mac: a fresh folder named by `hex`, the file by its basename
/// with characters outside `[A-Za-z0-9._-]` replaced by `_`.
pub fn remote_place(local: &str, hex: &str) -> Uploaded {
    let name = Path::new(local)
        .file_name()
        .map(|n| super::safe_file_chars(&n.to_string_lossy()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "file".into());
    let dir = format!("{REMOTE_PREFIX}{hex}");
    Uploaded {
        file: format!("{dir}/{name}"),
        dir,
    }
}

/// The scp vector that sends the local folder `staged` to `<host>:<dir>` (created there).
pub fn upload_args(staged: &str, host: &str, dir: &str) -> Vec<String> {
    let mut args = vec!["-r".to_string(), "-p".to_string()];
    args.extend(super::scp_args(staged, &format!("{host}:{dir}")));
    args
}

/// The ssh vector that removes `dir` on the Mac. `--` ends ssh's options, so nothing after
/// it is read as one.
pub fn remove_args(host: &str, dir: &str) -> Vec<String> {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=10",
        "-T",
        "--",
        host,
        "rm",
        "-rf",
        "--",
        dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `$IMESSAGE_SSH` when set (an explicit override, e.g. for tests), else `/usr/bin/ssh` when
/// it exists, else `ssh` from `PATH` (as [`super::scp_program`]).
pub fn ssh_program() -> PathBuf {
    if let Some(p) = std::env::var_os("IMESSAGE_SSH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let system = Path::new("/usr/bin/ssh");
    if system.exists() {
        system.to_path_buf()
    } else {
        PathBuf::from("ssh")
    }
}

/// Copies `local` to `<folder>/<name>` with mode 0600 in a new 0700 `folder`. The copy is
/// opened `create_new` in a folder only this user can enter, so nothing can be swapped in.
fn stage(local: &Path, folder: &Path, name: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(folder)?;
    let target = folder.join(name);
    let mut from = std::fs::File::open(local)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)?;
    std::io::copy(&mut from, &mut to)?;
    Ok(target)
}

/// Uploads `local` to a fresh folder on `host`, staging the copy under `staging` (the
/// account's media folder). The local copy is gone when this returns.
pub async fn upload(local: &str, host: &str, staging: &Path) -> Result<Uploaded, UploadError> {
    let hex = random_hex();
    let place = remote_place(local, &hex);
    let folder = staging.join(format!(".out-{hex}"));
    let name = place.file.rsplit('/').next().unwrap_or("file").to_string();
    let staged = {
        let (local, folder, name) = (PathBuf::from(local), folder.clone(), name);
        tokio::task::spawn_blocking(move || {
            crate::state::store::ensure_dir(folder.parent().unwrap_or(Path::new(".")))?;
            stage(&local, &folder, &name)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    };
    let result = match staged {
        Ok(_) => {
            let args = upload_args(&folder.display().to_string(), host, &place.dir);
            super::scp(args, UPLOAD_LIMIT)
                .await
                .map_err(UploadError::from)
        }
        Err(source) => Err(UploadError::Stage {
            dir: folder.clone(),
            source,
        }),
    };
    let _ = std::fs::remove_dir_all(&folder);
    match result {
        Ok(()) => Ok(place),
        Err(e) => {
            // A copy cut short may have left the folder on the Mac.
            if matches!(e, UploadError::Scp(_)) {
                remove(host, &place).await;
            }
            Err(e)
        }
    }
}

/// Removes the upload's folder on the Mac; a failure is logged (the folder name only: it
/// holds no file name) and otherwise ignored, macOS's cleanup being the fallback.
pub async fn remove(host: &str, uploaded: &Uploaded) {
    remove_with(ssh_program(), host, uploaded).await;
}

/// [`remove`] with `ssh`; `false` when `uploaded` is not a folder this module named (then
/// nothing runs: `rm -rf` only ever sees `/tmp/imsg-out-<16 hex>`).
async fn remove_with(ssh: PathBuf, host: &str, uploaded: &Uploaded) -> bool {
    let ours = uploaded
        .dir
        .strip_prefix(REMOTE_PREFIX)
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ours {
        return false;
    }
    let args = remove_args(host, &uploaded.dir);
    if let Err(e) = super::run(ssh, args, REMOVE_LIMIT).await {
        // ssh's stderr may quote the uploaded file's name: debug only.
        tracing::warn!(
            "removing {} on the Mac failed (details at debug level)",
            uploaded.dir
        );
        tracing::debug!("removing {} on the Mac: {e}", uploaded.dir);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_file_gets_its_own_folder_and_a_shell_safe_name() {
        let p = remote_place("/tmp/my photo (1).jpg", "0123456789abcdef");
        assert_eq!(p.dir, "/tmp/imsg-out-0123456789abcdef");
        assert_eq!(p.file, "/tmp/imsg-out-0123456789abcdef/my_photo__1_.jpg");
        let odd = remote_place("/x/~{a}#!%^=$;`.png", "0123456789abcdef");
        assert_eq!(odd.file, "/tmp/imsg-out-0123456789abcdef/__a_________.png");
        assert_eq!(remote_place("/", "00").file, "/tmp/imsg-out-00/file");
        let hex = random_hex();
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn upload_and_remove_argv() {
        assert_eq!(
            upload_args(
                "/state/media/default/.out-ab",
                "bot@mac",
                "/tmp/imsg-out-ab"
            ),
            vec![
                "-r",
                "-p",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "--",
                "/state/media/default/.out-ab",
                "bot@mac:/tmp/imsg-out-ab"
            ]
        );
        assert_eq!(
            remove_args("bot@mac", "/tmp/imsg-out-ab"),
            vec![
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=10",
                "-T",
                "--",
                "bot@mac",
                "rm",
                "-rf",
                "--",
                "/tmp/imsg-out-ab"
            ]
        );
    }

    #[test]
    fn the_staged_copy_is_0600_in_a_new_0700_folder() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.jpg");
        std::fs::write(&src, b"jpeg").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
        let folder = dir.path().join(".out-1");
        let copy = stage(&src, &folder, "a.jpg").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&copy), 0o600);
        assert_eq!(std::fs::read(&copy).unwrap(), b"jpeg");
        // A folder already there is never reused.
        assert!(stage(&src, &folder, "b.jpg").is_err());
    }

    #[test]
    fn only_folders_this_module_named_are_removed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ssh.log");
        let ssh = dir.path().join("ssh");
        let body = format!("#!/bin/sh\necho \"$@\" >> '{}'\n", log.display());
        std::fs::write(&ssh, body).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let remove = |dir: &str| {
            let u = Uploaded {
                dir: dir.to_string(),
                file: format!("{dir}/a.jpg"),
            };
            rt.block_on(remove_with(ssh.clone(), "bot@mac", &u))
        };
        for foreign in [
            "/",
            "/tmp",
            "/tmp/imsg-out-",
            "/tmp/imsg-out-0123456789abcdef/..",
            "/tmp/imsg-out-../../Users/bot",
        ] {
            assert!(!remove(foreign), "{foreign}");
        }
        assert!(!log.exists(), "ssh never ran for a foreign folder");
        assert!(remove("/tmp/imsg-out-0123456789abcdef"));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "-o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -T -- bot@mac rm -rf -- /tmp/imsg-out-0123456789abcdef\n"
        );
    }
}
