//! The send ledger (actions.md §7.3): `<state>/imessage/<account>/outbox.jsonl`, one line
//! per state change of each part of a request that carries an idempotency key. A repeat of
//! the key — from the host, after a plugin restart, from another process — reads it and never
//! sends a part twice: `pending` is written and synced to disk *before* the request, so a
//! crash leaves a line that makes the next attempt ask imsg first.
//!
//! Shared by every process on the state folder under the file's lock; the last line of a
//! (key, part) wins; lines older than 7 days go at the next compaction.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::store;

const RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// A part's state in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Written before the request; still there after a crash.
    Pending,
    Sent,
    Unknown,
    Failed,
    NotSent,
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The idempotency key.
    pub k: String,
    /// Part index, and the number of parts of the request.
    pub p: usize,
    pub n: usize,
    /// Attempt id (`null` for untracked parts).
    pub a: Option<String>,
    /// Content hash ([`crate::outbound::attempt::content_hash`]).
    pub h: String,
    pub s: State,
    /// Message id, once known.
    pub m: Option<String>,
    /// Conversation scope (the echo scope of the target).
    pub c: String,
    /// Unix ms.
    pub t: i64,
    /// Settled by asking imsg or by its echo, not by the send's own answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub r: bool,
    /// A file part (the receipt's `kind`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub f: bool,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("outbox.jsonl")
}

/// The live lines (the last per key and part), within retention.
pub type Live = HashMap<(String, usize), Line>;

fn parse(text: &str, now_ms: i64) -> (Live, usize) {
    let mut live = Live::new();
    let mut lines = 0;
    for l in text.lines() {
        lines += 1;
        if let Ok(line) = serde_json::from_str::<Line>(l) {
            if now_ms - line.t <= RETENTION_MS {
                live.insert((line.k.clone(), line.p), line);
            }
        }
    }
    (live, lines)
}

fn read_unlocked(dir: &Path, now_ms: i64) -> std::io::Result<(Live, usize)> {
    match std::fs::read_to_string(path(dir)) {
        Ok(text) => Ok(parse(&text, now_ms)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Live::new(), 0)),
        Err(e) => Err(store::context("reading", &path(dir))(e)),
    }
}

/// Every live line of one key, by part.
pub fn entries(dir: &Path, key: &str, now_ms: i64) -> std::io::Result<Vec<Line>> {
    let _lock = store::lock(&path(dir))?;
    let (live, _) = read_unlocked(dir, now_ms)?;
    let mut lines: Vec<Line> = live.into_values().filter(|l| l.k == key).collect();
    lines.sort_by_key(|l| l.p);
    Ok(lines)
}

/// The lines of open parts (pending or unknown) of every key.
pub fn open_parts(dir: &Path, now_ms: i64) -> std::io::Result<Vec<Line>> {
    let _lock = store::lock(&path(dir))?;
    let (live, _) = read_unlocked(dir, now_ms)?;
    Ok(live
        .into_values()
        .filter(|l| matches!(l.s, State::Pending | State::Unknown))
        .collect())
}

/// Appends lines; `sync` makes them durable before returning (a `pending` before its
/// request). Compacts when the file holds more than twice the live lines.
pub fn append(dir: &Path, lines: &[Line], sync: bool, now_ms: i64) -> std::io::Result<()> {
    store::ensure_dir(dir)?;
    let file_path = path(dir);
    let _lock = store::lock(&file_path)?;
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file_path)
        .map_err(store::context("opening", &file_path))?;
    file.write_all(text.as_bytes())
        .map_err(store::context("writing", &file_path))?;
    if sync {
        file.sync_data()
            .map_err(store::context("syncing", &file_path))?;
    }
    drop(file);
    // Whether the file holds more than twice its live lines takes reading it all: asked
    // every 64th append, not on every state change of every part.
    static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if APPENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64 == 63 {
        let (live, count) = read_unlocked(dir, now_ms)?;
        if count > 2 * live.len().max(16) {
            rewrite(dir, &live)?;
        }
    }
    Ok(())
}

/// Rewrites the file with only the live lines (at start, and when it grew).
pub fn compact(dir: &Path, now_ms: i64) -> std::io::Result<()> {
    if !path(dir).exists() {
        return Ok(());
    }
    let _lock = store::lock(&path(dir))?;
    let (live, count) = read_unlocked(dir, now_ms)?;
    if count > live.len() {
        rewrite(dir, &live)?;
    }
    Ok(())
}

fn rewrite(dir: &Path, live: &Live) -> std::io::Result<()> {
    let mut lines: Vec<&Line> = live.values().collect();
    lines.sort_by(|a, b| (a.t, &a.k, a.p).cmp(&(b.t, &b.k, b.p)));
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    store::write_atomic(&path(dir), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(k: &str, p: usize, s: State, t: i64) -> Line {
        Line {
            k: k.into(),
            p,
            n: 2,
            a: Some(format!("a{p}")),
            h: "3f9a0c1d2e4b5a69".into(),
            s,
            m: None,
            c: "chat:7".into(),
            t,
            r: false,
            f: false,
        }
    }

    #[test]
    fn the_last_line_wins_and_old_lines_go() {
        let dir = tempfile::tempdir().unwrap();
        let now = 30 * 24 * 3_600_000;
        append(
            dir.path(),
            &[line("q-42", 0, State::Pending, now)],
            true,
            now,
        )
        .unwrap();
        append(dir.path(), &[line("q-42", 0, State::Sent, now)], false, now).unwrap();
        append(
            dir.path(),
            &[line("q-42", 1, State::Unknown, now)],
            false,
            now,
        )
        .unwrap();
        append(
            dir.path(),
            &[line("old", 0, State::Sent, now - RETENTION_MS - 1)],
            false,
            now,
        )
        .unwrap();
        let got = entries(dir.path(), "q-42", now).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].s, State::Sent);
        assert_eq!(got[1].s, State::Unknown);
        assert!(entries(dir.path(), "old", now).unwrap().is_empty());
        assert_eq!(open_parts(dir.path(), now).unwrap().len(), 1);
        compact(dir.path(), now).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(r#""s":"sent""#), "{text}");
    }
}
