//! Durable state files: private directories, atomic replacement, advisory locks, and setting
//! corrupt files aside (channel-behaviour.md §3 "Storage").

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// An I/O error that says what was being done, and to which file: the user reads
/// "writing <state>/imessage/default/cursor.json: Permission denied", never a bare
/// "Permission denied". The kind is kept, so callers can still match on it.
pub fn context<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> std::io::Error + 'a {
    move |e| std::io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

/// Creates `dir` (and parents) with mode 0700.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(context("creating", dir))
}

/// Replaces `path` atomically: a new file (exclusive, 0600) in the same directory, fsynced,
/// renamed over the target, then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes).map_err(context("writing", path))
}

fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let mut tmp;
    let mut attempt = 0u32;
    let mut file = loop {
        tmp = dir.join(format!(".{name}.{}.{attempt}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                // A crashed writer left it behind.
                let _ = std::fs::remove_file(&tmp);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = file.write_all(bytes).and_then(|_| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock on `<path>.lock`, held until dropped.
pub struct FileLock {
    _file: File,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

/// Blocks until the lock on `<path>.lock` is ours.
pub fn lock(path: &Path) -> std::io::Result<FileLock> {
    // A blocking flock returns a lock or an error, never `None`.
    lock_file(&lock_path(path), true).map(|f| f.expect("blocking lock"))
}

/// Takes an exclusive lock on `path` itself; `Ok(None)` when another process holds it and
/// `wait` is false.
pub fn lock_file(path: &Path, wait: bool) -> std::io::Result<Option<FileLock>> {
    take_lock(path, wait).map_err(context("locking", path))
}

/// Opens `path` for reading and writing, created 0600 if missing, kept as it is otherwise,
/// and never through a symlink someone planted (lock files, the in-flight marker).
pub fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn take_lock(path: &Path, wait: bool) -> std::io::Result<Option<FileLock>> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let file = open_private(path)?;
    let flags = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own for the lifetime of the returned guard.
    let rc = unsafe { libc::flock(file.as_raw_fd(), flags) };
    if rc == 0 {
        return Ok(Some(FileLock { _file: file }));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// The one rule, in plugin-abi (host and plugin share it).
pub fn folder_problem(dir: &Path, mode: u32, owner: u32, me: u32) -> Option<String> {
    plugin_abi::state_dir::folder_problem(dir, mode, owner, me, "")
}

/// At start: the host's state folder is created 0700 when missing; it, and the plugin's own
/// folders under it that exist (`imessage/`, each account's folder and media folder), are
/// refused when another user owns them or others may write to them.
pub fn check_state_dirs<'a>(
    state_dir: &Path,
    account_keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !state_dir.exists() {
        ensure_dir(state_dir).map_err(|e| e.to_string())?;
    }
    let ours = state_dir.join("imessage");
    let mut dirs = vec![state_dir.to_path_buf(), ours.clone(), ours.join("media")];
    for key in account_keys {
        dirs.push(ours.join(key));
        dirs.push(ours.join("media").join(key));
    }
    // SAFETY: no arguments, cannot fail.
    let me = unsafe { libc::geteuid() };
    for dir in dirs {
        let meta = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("state folder {}: {e}", dir.display())),
        };
        if !meta.is_dir() {
            return Err(format!("state folder {} is not a folder", dir.display()));
        }
        if let Some(problem) = folder_problem(&dir, meta.mode(), meta.uid(), me) {
            return Err(problem);
        }
    }
    Ok(())
}

/// What reading a JSON state file found.
pub enum Read<T> {
    Missing,
    Ok(T),
    /// Unparseable: it was renamed to `<file>.corrupt-<unix-ms>`; the caller logs and starts
    /// empty.
    SetAside(PathBuf, String),
}

/// Reads and parses `path`; a file that fails to parse is set aside, never fatal.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Read<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => String::from("\u{fffd}"),
        Err(e) => return Err(context("reading", path)(e)),
    };
    match serde_json::from_str(&text) {
        Ok(v) => Ok(Read::Ok(v)),
        Err(e) => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let mut name = path
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            name.push(format!(".corrupt-{ms}"));
            let aside = path.with_file_name(name);
            std::fs::rename(path, &aside).map_err(context("setting aside", path))?;
            Ok(Read::SetAside(aside, e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_operation_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let target = blocker.join("cursor.json");
        let e = write_atomic(&target, b"{}").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("writing ") || text.starts_with("creating "),
            "{text}"
        );
        assert!(text.contains("not-a-dir"), "{text}");
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_writes_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.json");
        write_atomic(&path, b"{\"version\":1}").unwrap();
        write_atomic(&path, b"{\"version\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"version\":2}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn corrupt_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        std::fs::write(&path, "{not json").unwrap();
        match read_json::<serde_json::Value>(&path).unwrap() {
            Read::SetAside(aside, _) => {
                assert!(aside.to_string_lossy().contains("cursor.json.corrupt-"));
                assert!(aside.exists());
                assert!(!path.exists());
            }
            _ => panic!("expected set aside"),
        }
        assert!(matches!(
            read_json::<serde_json::Value>(&path).unwrap(),
            Read::Missing
        ));
    }

    #[test]
    fn locks_and_temporaries_do_not_follow_planted_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "theirs").unwrap();
        let lock = dir.path().join("allow.json.lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let e = lock_file(&lock, false)
            .err()
            .expect("a symlinked lock is refused");
        assert!(e.to_string().contains("allow.json.lock"), "{e}");
        // A temporary name taken by a symlink is skipped (removed), never written through.
        let path = dir.path().join("allow.json");
        let tmp = dir
            .path()
            .join(format!(".allow.json.{}.0.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "theirs");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
    }

    #[test]
    fn unsafe_state_folders_are_refused_naming_the_folder_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        check_state_dirs(&state, ["default"]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700, "created private");
        let account = state.join("imessage/default");
        std::fs::create_dir_all(&account).unwrap();
        std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            check_state_dirs(&state, ["default"]).unwrap_err(),
            format!(
                "state folder {0} is writable by group or others (mode 0777); run chmod 700 {0}",
                account.display()
            )
        );
        // Another account's folder is not this start's business.
        check_state_dirs(&state, ["work"]).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check_state_dirs(&state, ["work"])
            .unwrap_err()
            .contains("(mode 0775)"));
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_state_dirs(&state, ["work"]).unwrap();
        let foreign = folder_problem(&state, 0o40700, 0, 501).unwrap();
        assert!(
            foreign.contains("belongs to uid 0, not to you (uid 501)"),
            "{foreign}"
        );
    }

    #[test]
    fn non_blocking_lock_sees_another_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = lock_file(&path, false).unwrap();
        assert!(held.is_some());
        // flock locks belong to the open file description, so a second open conflicts.
        assert!(lock_file(&path, false).unwrap().is_none());
        drop(held);
        assert!(lock_file(&path, false).unwrap().is_some());
    }
}
