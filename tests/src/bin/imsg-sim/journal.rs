//! The shared database journal: several `imsg-sim` processes (a watcher, a sender, a
//! restarted watcher) see one Messages database, as real imsg processes share `chat.db`.
//!
//! Every row or chat a process creates is appended to the journal file as one JSON line while
//! holding an exclusive `flock`; every process replays lines it has not seen (each tick, and
//! under the lock before allocating row ids). Timed events and inbox ops that create rows are
//! applied once across all processes: the first process to apply one appends a marker.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;

use serde_json::Value;

pub struct Journal {
    file: File,
    offset: u64,
    partial: String,
    pub markers: HashSet<String>,
    locked: bool,
}

impl Journal {
    pub fn open(path: &str) -> std::io::Result<Journal> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Journal {
            file,
            offset: 0,
            partial: String::new(),
            markers: HashSet::new(),
            locked: false,
        })
    }

    /// Takes the exclusive lock (no-op when already held by this process).
    pub fn lock(&mut self) {
        if !self.locked {
            // SAFETY: flock on a descriptor this struct owns.
            unsafe {
                libc::flock(self.file.as_raw_fd(), libc::LOCK_EX);
            }
            self.locked = true;
        }
    }

    pub fn unlock(&mut self) {
        if self.locked {
            // SAFETY: as above.
            unsafe {
                libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
            }
            self.locked = false;
        }
    }

    /// Complete lines appended since the last read (by any process).
    pub fn read_new(&mut self) -> Vec<Value> {
        let mut text = String::new();
        if self.file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        if let Ok(n) = self.file.read_to_string(&mut text) {
            self.offset += n as u64;
        }
        self.partial.push_str(&text);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if let Some(m) = v.get("marker").and_then(Value::as_str) {
                    self.markers.insert(m.to_string());
                } else {
                    out.push(v);
                }
            }
        }
        out
    }

    /// Appends lines this process created (call with the lock held). They are marked read.
    pub fn append(&mut self, lines: &[Value]) {
        if lines.is_empty() {
            return;
        }
        let mut text = String::new();
        for l in lines {
            text.push_str(&l.to_string());
            text.push('\n');
            if let Some(m) = l.get("marker").and_then(Value::as_str) {
                self.markers.insert(m.to_string());
            }
        }
        if self.file.write_all(text.as_bytes()).is_ok() {
            let _ = self.file.flush();
            self.offset = self.file.seek(SeekFrom::End(0)).unwrap_or(self.offset);
        }
    }
}
