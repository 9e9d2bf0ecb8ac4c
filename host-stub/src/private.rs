//! The files host-stub writes beside the config and in the state folder are private: 0600
//! files in 0700 folders, created exclusively and without following symlinks, so a file or
//! link someone planted is never written through. A state folder others can write to (or that
//! is not ours) is refused at start, as ssh's StrictModes does: whoever can write there can
//! swap the pairing and allow stores, the cursor or the delivered ids.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates `dir` (and missing parents) with mode 0700; an existing folder of ours that others
/// may read or enter (made by an older host-stub) is narrowed to 0700.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(named)?;
    let meta = std::fs::metadata(dir).map_err(named)?;
    if meta.uid() == my_uid() && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(named)?;
    }
    Ok(())
}

/// A new file, 0600: fails if anything (a file, a symlink) already has the name.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens `path` for appending (and reading), creating it 0600; a symlink is refused, and an
/// existing file that others may read (an older host-stub's) is narrowed to 0600.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if file.metadata()?.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Distinguishes the temporaries of concurrent writes within one process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` atomically with a 0600 file: a fresh temporary in the same folder
/// (exclusive, no symlink followed), fsynced, renamed over the target, then the folder
/// fsynced. The folder itself is not created or changed: it may be the user's own.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = match create_new(&tmp) {
        // Left by a crashed process that had our pid: nobody else can be writing it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create_new(&tmp)?
        }
        other => other?,
    };
    if let Err(e) = file.write_all(bytes).and_then(|_| file.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(file);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn my_uid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// The one rule, in plugin-abi (host and plugin share it).
pub fn folder_problem(dir: &Path, mode: u32, owner: u32, me: u32) -> Option<String> {
    plugin_abi::state_dir::folder_problem(dir, mode, owner, me, " (--state-dir)")
}

/// At start: the state folder is created 0700 when missing, and refused when another user
/// owns it or others may write to it.
pub fn check_state_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ensure_dir(dir).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("state folder {}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Err(format!(
            "state folder {} is not a folder; point --state-dir at a folder",
            dir.display()
        )),
        Ok(meta) => match folder_problem(dir, meta.mode(), meta.uid(), my_uid()) {
            Some(problem) => Err(problem),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn atomic_writes_are_0600_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.json5");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"{a: 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{a: 1}");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["gateway.json5"]);
    }

    #[test]
    fn a_stale_temporary_does_not_block_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bak");
        let next = NEXT_TMP.load(Ordering::Relaxed);
        // A crashed process with our pid left the temporary the next write would use.
        let stale = dir
            .path()
            .join(format!(".x.bak.{}.{next}.tmp", std::process::id()));
        std::fs::write(&stale, "half").unwrap();
        write_atomic(&path, b"whole").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole");
        assert!(!stale.exists());
    }

    #[test]
    fn a_planted_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "theirs").unwrap();
        let log = dir.path().join("default.delivered");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        assert!(open_append(&log).is_err());
        assert!(create_new(&log).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "theirs");
    }

    #[test]
    fn folders_are_created_0700_and_old_ones_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        ensure_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
    }

    #[test]
    fn unsafe_state_folders_are_refused_with_the_fix() {
        let dir = Path::new("/x/y");
        assert_eq!(
            folder_problem(dir, 0o40775, 501, 501).as_deref(),
            Some(
                "state folder /x/y is writable by group or others (mode 0775); run chmod 700 /x/y"
            )
        );
        assert!(folder_problem(dir, 0o41777, 501, 501)
            .unwrap()
            .contains("mode 1777"));
        let foreign = folder_problem(dir, 0o40700, 0, 501).unwrap();
        assert!(
            foreign.contains("belongs to uid 0, not to you (uid 501)"),
            "{foreign}"
        );
        assert_eq!(folder_problem(dir, 0o40700, 501, 501), None);
        // Readable by others is the user's choice; only writing lets them swap state.
        assert_eq!(folder_problem(dir, 0o40755, 501, 501), None);
    }

    #[test]
    fn a_missing_state_folder_is_created_private_and_a_world_writable_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("new/state");
        check_state_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_state_dir(&state).unwrap_err();
        assert!(e.contains(&state.display().to_string()), "{e}");
        assert!(e.contains("mode 0777"), "{e}");
    }
}
