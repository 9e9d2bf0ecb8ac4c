//! Dead letters (issue 10): a message whose processing panicked again after the watcher was
//! restarted for it is set aside here, so the cursor can move past it and every later message
//! is routed, while the message itself stays on disk for the operator.
//!
//! `<account dir>/quarantine.jsonl`, one JSON object per line, mode 0600. Bounded: when an
//! append would pass [`MAX_BYTES`], the oldest entries are dropped so the newest half stays.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::state::store;

pub const FILE: &str = "quarantine.jsonl";
pub const MAX_BYTES: usize = 1 << 20;

pub fn path(account_dir: &Path) -> PathBuf {
    account_dir.join(FILE)
}

/// Appends `entry` as one line (one `write` call, then fsync); returns the file's path.
pub fn record(account_dir: &Path, entry: &Value) -> std::io::Result<PathBuf> {
    let path = path(account_dir);
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    let existing = std::fs::metadata(&path)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    if existing + line.len() > MAX_BYTES {
        let old = std::fs::read(&path).unwrap_or_default();
        let kept = newest_lines(&old, MAX_BYTES / 2);
        let mut bytes = Vec::with_capacity(kept.len() + line.len());
        bytes.extend_from_slice(kept);
        bytes.extend_from_slice(&line);
        store::write_atomic(&path, &bytes)?;
        return Ok(path);
    }
    store::ensure_dir(account_dir)?;
    let append = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        file.write_all(&line)?;
        file.sync_data()
    };
    append().map_err(store::context("appending to", &path))?;
    Ok(path)
}

/// The longest tail of whole lines of `bytes` that fits in `budget` bytes.
fn newest_lines(bytes: &[u8], budget: usize) -> &[u8] {
    if bytes.len() <= budget {
        return bytes;
    }
    let from = bytes.len() - budget;
    // Start after the first newline at or past `from`, so no line is cut.
    match memchr::memchr(b'\n', &bytes[from..]) {
        Some(i) => &bytes[from + i + 1..],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_append_privately_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let account = dir.path().join("default");
        let big = "x".repeat(100_000);
        for i in 0..25 {
            record(&account, &json!({"n": i, "pad": big})).unwrap();
        }
        let file = path(&account);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.len() <= MAX_BYTES, "bounded: {}", text.len());
        let ns: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ns.last(), Some(&24), "the newest entry is kept");
        assert!(
            ns.windows(2).all(|w| w[1] == w[0] + 1),
            "a contiguous tail: {ns:?}"
        );
        assert!(ns.len() >= 5, "about half the budget is kept: {ns:?}");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_tail_never_cuts_a_line() {
        assert_eq!(newest_lines(b"aa\nbb\ncc\n", 5), b"cc\n");
        assert_eq!(newest_lines(b"aa\nbb\n", 100), b"aa\nbb\n");
        assert_eq!(newest_lines(b"aaaaaaaa", 3), b"");
    }
}
