//! `<account dir>/sent.jsonl`: the ids of the parts this account sent, so their echoes are
//! still recognised after a restart (channel-behaviour.md §5.2) and message actions find the
//! messages they act on (actions.md §3.0). One JSON object per line, mode 0600; a later line
//! for the same id replaces an earlier one. Appended as parts are sent, and compacted (the
//! live rows only, replaced atomically) at start and when it has grown to twice what it
//! holds. The echo registry keeps the rows in memory and decides which are live; this module
//! owns the format and the file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::store;

pub const FILE: &str = "sent.jsonl";

/// One line of the file: a sent part's id (its GUID, or `rowid:<n>`) and what it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentRow {
    pub id: String,
    /// Its echo-normalised text (the latest one after an edit).
    pub text: String,
    /// Where it was sent, in `echo::Scope`'s written form; empty when unknown.
    pub scope: String,
    /// Unix ms when it was sent.
    pub at: i64,
    /// The chat's GUID when imsg reported it (the message index's selector, actions.md
    /// §3.0).
    #[serde(default, rename = "chatGuid", skip_serializing_if = "Option::is_none")]
    pub chat_guid: Option<String>,
    /// Edits made through `message.edit` (iMessage allows five).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edits: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The file, and how many lines it holds since it was last compacted.
#[derive(Debug)]
pub struct SentLog {
    path: PathBuf,
    lines: usize,
}

impl SentLog {
    /// Reads the rows of `account_dir`'s file in file order; a missing or unreadable file
    /// is none, and an unreadable line is skipped (the file is compacted right after).
    pub fn load(account_dir: &Path) -> (SentLog, Vec<SentRow>) {
        let path = account_dir.join(FILE);
        let rows = std::fs::read_to_string(&path)
            .map(|text| {
                text.lines()
                    .filter_map(|line| serde_json::from_str::<SentRow>(line).ok())
                    .collect()
            })
            .unwrap_or_default();
        (SentLog { path, lines: 0 }, rows)
    }

    /// Replaces the file with exactly `rows` (atomically). A failure leaves the old file and
    /// is retried at the next compaction: the rows are still in memory.
    pub fn compact<'a>(&mut self, rows: impl Iterator<Item = &'a SentRow>) {
        let mut text = String::new();
        let mut n = 0;
        for row in rows {
            text.push_str(&serde_json::to_string(row).unwrap_or_default());
            text.push('\n');
            n += 1;
        }
        if store::write_atomic(&self.path, text.as_bytes()).is_ok() {
            self.lines = n;
        }
    }

    /// Appends `rows` in order (0600, never through a symlink). Best effort: a row that is
    /// not written only loses its echo guard across a restart.
    pub fn append<'a>(&mut self, rows: impl Iterator<Item = &'a SentRow>) {
        let lines: Vec<String> = rows
            .map(|row| serde_json::to_string(row).unwrap_or_default())
            .collect();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .and_then(|mut f| {
                for l in &lines {
                    writeln!(f, "{l}")?;
                }
                Ok(())
            });
        if written.is_ok() {
            self.lines += lines.len();
        }
    }

    /// Whether the file holds more than twice `live` rows' worth of lines (superseded and
    /// expired ones), so compacting it is due.
    pub fn due_for_compaction(&self, live: usize) -> bool {
        self.lines > 2 * live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, at: i64) -> SentRow {
        SentRow {
            id: id.into(),
            text: "hi".into(),
            scope: "chat:1".into(),
            at,
            chat_guid: None,
            edits: 0,
        }
    }

    #[test]
    fn rows_append_compact_and_load_back_in_the_persisted_format() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rows) = SentLog::load(dir.path());
        assert!(rows.is_empty());
        let mut edited = row("G1", 5);
        log.append([row("G1", 5), row("rowid:7", 6)].iter());
        edited.edits = 1;
        edited.chat_guid = Some("iMessage;-;+1555".into());
        log.append(std::iter::once(&edited));
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                r#"{"id":"G1","text":"hi","scope":"chat:1","at":5}"#,
                r#"{"id":"rowid:7","text":"hi","scope":"chat:1","at":6}"#,
                r#"{"id":"G1","text":"hi","scope":"chat:1","at":5,"chatGuid":"iMessage;-;+1555","edits":1}"#,
            ],
            "the on-disk format"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(log.due_for_compaction(1) && !log.due_for_compaction(2));
        log.compact([edited.clone()].iter());
        assert!(!log.due_for_compaction(1));
        let (_, back) = SentLog::load(dir.path());
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].id.as_str(), back[0].edits), ("G1", 1));
    }

    #[test]
    fn appending_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(FILE)).unwrap();
        let (mut log, _) = SentLog::load(dir.path());
        log.append(std::iter::once(&row("G1", 1)));
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
    }
}
