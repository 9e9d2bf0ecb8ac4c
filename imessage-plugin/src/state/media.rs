//! The account's staged-media folder (`<stateDir>/imessage/media/<account>/`,
//! channel-behaviour.md §8.1 rule 5): where inbound attachments are copied and outbound
//! uploads are prepared, and how old files age out.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

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

/// The folder and when it was last cleaned.
#[derive(Debug)]
pub struct MediaDir {
    pub dir: PathBuf,
    cleaner: Cleaner,
}

impl MediaDir {
    pub fn new(dir: PathBuf) -> MediaDir {
        MediaDir {
            dir,
            cleaner: Cleaner::default(),
        }
    }

    /// Cleans the folder in the background when the hour is up.
    pub fn clean_if_due(&self) {
        if !self.cleaner.claim(timeutil::now_ms()) {
            return;
        }
        let dir = self.dir.clone();
        // Off the message path: the folder may hold many files. Without a runtime (never in
        // the watcher) the clean waits for the next call.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || clean_old(&dir));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
