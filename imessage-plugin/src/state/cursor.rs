//! Catch-up state per account: the cursor (`cursor.json`) and the seen store (`seen.jsonl`),
//! channel-behaviour.md §6.2–§6.3.
//!
//! A message is *finished* once the host acknowledged it or it was deliberately dropped; only
//! finished messages move the cursor. To keep disk off the per-message path, finished keys
//! are buffered and persisted in batches (`flush`): seen keys are appended and fsynced first,
//! then the cursor is replaced atomically. A crash between an acknowledgement and the next
//! flush replays those messages with the same `messageId`, which the host acknowledges
//! without a second turn (§6.3 step 5): nothing is lost, nothing is doubled.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::store::{self, Read};
use crate::support::timeutil;

pub const SEEN_RETENTION_MS: i64 = 48 * 3600 * 1000;
pub const SEEN_CAP: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CursorFile {
    version: u32,
    source: String,
    rowid: i64,
    #[serde(default)]
    newest_created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SeenLine {
    k: String,
    t: i64,
}

#[derive(Serialize)]
struct SeenLineRef<'a> {
    k: &'a str,
    t: i64,
}

pub struct Catchup {
    dir: PathBuf,
    source: String,
    rowid: Option<i64>,
    newest_ms: Option<i64>,
    /// Keys are shared between the map and the order queue (one allocation per key). Fx
    /// hashing: keys are GUIDs imsg assigns, not chosen by a party that could aim collisions.
    seen: rustc_hash::FxHashMap<std::sync::Arc<str>, i64>,
    order: VecDeque<(std::sync::Arc<str>, i64)>,
    /// Seen lines finished since the last batch, already serialised (JSON lines).
    unflushed: Vec<u8>,
    dirty: bool,
    seen_lines: usize,
}

/// What opening the state found worth a log line.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl Catchup {
    /// Reads the cursor and seen store of the account folder `dir`; `source` is the account's
    /// source signature (a cursor written for another source is discarded).
    pub fn open(dir: &Path, source: &str, now_ms: i64) -> (Catchup, OpenReport) {
        let mut report = OpenReport::default();
        let mut c = Catchup {
            dir: dir.to_path_buf(),
            source: source.to_string(),
            rowid: None,
            newest_ms: None,
            seen: rustc_hash::FxHashMap::default(),
            order: VecDeque::new(),
            unflushed: Vec::new(),
            dirty: false,
            seen_lines: 0,
        };
        match store::read_json::<CursorFile>(&c.cursor_path()) {
            Ok(Read::Ok(file)) if file.source == source && file.version == 1 => {
                c.rowid = Some(file.rowid);
                c.newest_ms = file.newest_created_at.as_deref().and_then(timeutil::parse_ms);
            }
            Ok(Read::Ok(_)) => report.warnings.push(
                "cursor.json belongs to another imsg source (cliPath, dbPath or remoteHost changed); starting at the live tail".into(),
            ),
            Ok(Read::Missing) => {}
            Ok(Read::SetAside(aside, why)) => report.errors.push(format!(
                "cursor.json could not be read ({why}); set aside as {}",
                aside.display()
            )),
            Err(e) => report.errors.push(format!("reading cursor.json: {e}")),
        }
        c.load_seen(now_ms, &mut report);
        if let Err(e) = c.compact_seen() {
            report.errors.push(format!("compacting seen.jsonl: {e}"));
        }
        (c, report)
    }

    fn cursor_path(&self) -> PathBuf {
        self.dir.join("cursor.json")
    }

    fn seen_path(&self) -> PathBuf {
        self.dir.join("seen.jsonl")
    }

    fn load_seen(&mut self, now_ms: i64, report: &mut OpenReport) {
        let Ok(text) = std::fs::read(self.seen_path()) else {
            return;
        };
        let text = String::from_utf8_lossy(&text);
        let mut bad = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<SeenLine>(line) {
                Ok(s) if now_ms - s.t <= SEEN_RETENTION_MS => self.remember(s.k, s.t),
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            report
                .warnings
                .push(format!("seen.jsonl: skipped {bad} unreadable line(s)"));
        }
    }

    fn remember(&mut self, key: String, t: i64) {
        let key: std::sync::Arc<str> = key.into();
        if self.seen.insert(key.clone(), t).is_none() {
            self.order.push_back((key, t));
        }
        while self.order.len() > SEEN_CAP {
            if let Some((old, _)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Every retained key as seen.jsonl lines (for compaction).
    fn retained_lines(&self) -> String {
        let mut text = String::new();
        for (k, t) in &self.order {
            text.push_str(&serde_json::to_string(&SeenLineRef { k, t: *t }).unwrap_or_default());
            text.push('\n');
        }
        text
    }

    fn compact_seen(&mut self) -> std::io::Result<()> {
        let text = self.retained_lines();
        store::write_atomic(&self.seen_path(), text.as_bytes())?;
        self.seen_lines = self.order.len();
        Ok(())
    }

    /// The `since_rowid` to subscribe with: the cursor, never 0.
    pub fn since_rowid(&self) -> Option<i64> {
        self.rowid.filter(|r| *r > 0)
    }

    pub fn rowid(&self) -> Option<i64> {
        self.rowid
    }

    /// R of the age guard: the newest `created_at` processed so far.
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    pub fn is_seen(&self, key: &str) -> bool {
        self.seen.contains_key(key)
    }

    /// Marks a message finished (in memory until `flush`). Returns the rowid-regression
    /// warning when the id went backwards.
    pub fn finish(
        &mut self,
        key: String,
        rowid: i64,
        created_ms: Option<i64>,
        now_ms: i64,
    ) -> Option<String> {
        // Serialised now, into a buffer reused across batches, instead of a second copy of
        // the key waiting for the flush.
        if serde_json::to_writer(&mut self.unflushed, &SeenLineRef { k: &key, t: now_ms }).is_ok() {
            self.unflushed.push(b'\n');
        }
        self.remember(key, now_ms);
        if let Some(created) = created_ms {
            // Values more than 5 min in the future never become R.
            if created <= now_ms + 5 * 60 * 1000 && self.newest_ms.is_none_or(|n| created > n) {
                self.newest_ms = Some(created);
            }
        }
        let warning = match self.rowid {
            Some(old) if rowid < old => Some(format!(
                "rowid went backwards ({old} -> {rowid}); chat.db may have been rebuilt"
            )),
            _ => None,
        };
        if rowid > 0 {
            self.rowid = Some(rowid);
        }
        self.dirty = true;
        warning
    }

    /// Moves the cursor forward to `rowid` without a message: `messages.after`'s
    /// `next_rowid` may pass rows imsg suppresses (URL previews, actions.md §4.1).
    pub fn advance_to(&mut self, rowid: i64) {
        if rowid > 0 && self.rowid.is_none_or(|r| rowid > r) {
            self.rowid = Some(rowid);
            self.dirty = true;
        }
    }

    /// What finished since the last batch, ready to persist (`Batch::write`), so the disk
    /// work can run off the message path. Batches must be written in the order taken.
    pub fn take_batch(&mut self, now_ms: i64) -> Option<Batch> {
        if !self.dirty {
            return None;
        }
        let seen = std::mem::take(&mut self.unflushed);
        let cursor = self.rowid.map(|rowid| {
            serde_json::to_vec(&CursorFile {
                version: 1,
                source: self.source.clone(),
                rowid,
                newest_created_at: self.newest_ms.map(timeutil::format_ms),
                updated_at: Some(timeutil::format_ms(now_ms)),
            })
            .unwrap_or_default()
        });
        self.seen_lines += seen.iter().filter(|b| **b == b'\n').count();
        // Past twice the cap the file is rewritten with the retained keys only.
        let compacted = (self.seen_lines > 2 * SEEN_CAP).then(|| {
            self.seen_lines = self.order.len();
            self.retained_lines()
        });
        self.dirty = false;
        Some(Batch {
            dir: self.dir.clone(),
            seen,
            cursor,
            compacted,
        })
    }

    /// Persists what finished since the last flush, on this thread.
    #[cfg(test)]
    pub fn flush(&mut self, now_ms: i64) -> std::io::Result<()> {
        match self.take_batch(now_ms) {
            Some(batch) => batch.write(),
            None => Ok(()),
        }
    }
}

/// One batch of catch-up progress to persist.
pub struct Batch {
    dir: PathBuf,
    seen: Vec<u8>,
    cursor: Option<Vec<u8>>,
    compacted: Option<String>,
}

impl Batch {
    /// Seen keys first (appended and fsynced), then the cursor (atomic replace): the cursor
    /// never points past a key the seen store does not have.
    pub fn write(&self) -> std::io::Result<()> {
        let seen_path = self.dir.join("seen.jsonl");
        if !self.seen.is_empty() {
            store::ensure_dir(&self.dir)?;
            let append = || -> std::io::Result<()> {
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&seen_path)?;
                file.write_all(&self.seen)?;
                file.sync_data()
            };
            append().map_err(store::context("appending to", &seen_path))?;
        }
        if let Some(cursor) = &self.cursor {
            store::write_atomic(&self.dir.join("cursor.json"), cursor)?;
        }
        if let Some(all) = &self.compacted {
            store::write_atomic(&seen_path, all.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_and_seen_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000_000_000_000;
        let (mut c, report) = Catchup::open(dir.path(), "imsg||", now);
        assert!(report.errors.is_empty());
        assert_eq!(c.since_rowid(), None, "first start: live tail");
        assert!(c.finish("D0".into(), 500, Some(now - 1000), now).is_none());
        c.flush(now).unwrap();
        let (c2, _) = Catchup::open(dir.path(), "imsg||", now);
        assert_eq!(c2.since_rowid(), Some(500));
        assert!(c2.is_seen("D0"));
        assert_eq!(c2.newest_ms(), Some(now - 1000));
        let written = std::fs::read_to_string(dir.path().join("cursor.json")).unwrap();
        assert!(written.contains("\"version\":1") && written.contains("\"source\":\"imsg||\""));
    }

    #[test]
    fn unflushed_progress_is_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = Catchup::open(dir.path(), "s", 0);
        c.finish("A".into(), 10, None, 0);
        c.flush(0).unwrap();
        c.finish("B".into(), 11, None, 0);
        // Crash here: B was acknowledged but not flushed.
        let (c2, _) = Catchup::open(dir.path(), "s", 0);
        assert_eq!(c2.since_rowid(), Some(10));
        assert!(!c2.is_seen("B"));
    }

    #[test]
    fn other_source_and_corrupt_cursor_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = Catchup::open(dir.path(), "a", 0);
        c.finish("A".into(), 10, None, 0);
        c.flush(0).unwrap();
        let (c2, report) = Catchup::open(dir.path(), "b", 0);
        assert_eq!(c2.since_rowid(), None);
        assert_eq!(report.warnings.len(), 1);
        std::fs::write(dir.path().join("cursor.json"), "garbage").unwrap();
        let (c3, report) = Catchup::open(dir.path(), "a", 0);
        assert_eq!(c3.since_rowid(), None);
        assert_eq!(report.errors.len(), 1);
    }

    #[test]
    fn rowid_regression_warns_and_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = Catchup::open(dir.path(), "s", 0);
        c.finish("A".into(), 500, None, 0);
        let w = c.finish("B".into(), 300, None, 0).unwrap();
        assert_eq!(
            w,
            "rowid went backwards (500 -> 300); chat.db may have been rebuilt"
        );
        assert_eq!(c.rowid(), Some(300));
    }

    #[test]
    fn seen_keys_expire_after_48_hours() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = Catchup::open(dir.path(), "s", 0);
        c.finish("old".into(), 1, None, 0);
        c.flush(0).unwrap();
        let (c2, _) = Catchup::open(dir.path(), "s", SEEN_RETENTION_MS + 1);
        assert!(!c2.is_seen("old"));
    }
}
