//! The message ids host-stub has printed, per channel account, kept in the state directory so
//! that a message the plugin delivers again after a crash is acknowledged without being
//! printed twice (spec/host-stub-cli.md, channel-behaviour.md §6.3 step 5).
//!
//! Append-only file, one id per line, synced before the acknowledgement returns; compacted to
//! the newest `CAP` ids when it grows past twice that.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const CAP: usize = 10_000;

struct AccountLog {
    cap: usize,
    path: PathBuf,
    file: File,
    order: VecDeque<String>,
    set: HashSet<String>,
    lines_in_file: usize,
}

impl AccountLog {
    fn open(path: PathBuf, cap: usize) -> std::io::Result<Self> {
        let mut order = VecDeque::new();
        let mut lines_in_file = 0;
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                let id = line.trim();
                if !id.is_empty() {
                    order.push_back(id.to_string());
                    lines_in_file += 1;
                }
            }
        }
        while order.len() > cap {
            order.pop_front();
        }
        let set = order.iter().cloned().collect();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(AccountLog {
            cap,
            path,
            file,
            order,
            set,
            lines_in_file,
        })
    }

    /// Appends the id (visible to a restarted process at once); `sync` makes it durable.
    fn record(&mut self, id: &str) -> std::io::Result<()> {
        // One write: `writeln!` on a File may split the id and its newline into two, and a
        // kill between them would glue the next id onto this one.
        self.file.write_all(format!("{id}\n").as_bytes())?;
        self.lines_in_file += 1;
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.lines_in_file > 2 * self.cap {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut out = File::create(&tmp)?;
            for id in &self.order {
                writeln!(out, "{id}")?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

/// All accounts' logs under one folder.
pub struct Delivered {
    cap: usize,
    dir: PathBuf,
    logs: HashMap<String, AccountLog>,
}

impl Delivered {
    pub fn new(dir: &Path) -> Self {
        Self::with_cap(dir, CAP)
    }

    pub fn with_cap(dir: &Path, cap: usize) -> Self {
        Delivered {
            cap,
            dir: dir.to_path_buf(),
            logs: HashMap::new(),
        }
    }

    fn log(&mut self, channel: &str, account: &str) -> std::io::Result<&mut AccountLog> {
        let key = format!("{channel}/{account}");
        if !self.logs.contains_key(&key) {
            let safe = |s: &str| -> String {
                s.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            };
            let path = self
                .dir
                .join(safe(channel))
                .join(format!("{}.delivered", safe(account)));
            self.logs
                .insert(key.clone(), AccountLog::open(path, self.cap)?);
        }
        Ok(self.logs.get_mut(&key).expect("inserted above"))
    }

    /// True when `id` was already delivered for this account.
    pub fn seen(&mut self, channel: &str, account: &str, id: &str) -> std::io::Result<bool> {
        Ok(self.log(channel, account)?.set.contains(id))
    }

    /// Records `id`: written to the file, not yet fsynced (see `sync`).
    pub fn record(&mut self, channel: &str, account: &str, id: &str) -> std::io::Result<()> {
        self.log(channel, account)?.record(id)
    }

    /// Makes the account's recorded ids durable.
    pub fn sync(&mut self, channel: &str, account: &str) -> std::io::Result<()> {
        self.log(channel, account)?.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut d = Delivered::with_cap(dir.path(), 50);
            assert!(!d.seen("imessage", "default", "A").unwrap());
            d.record("imessage", "default", "A").unwrap();
            assert!(d.seen("imessage", "default", "A").unwrap());
            assert!(!d.seen("imessage", "work", "A").unwrap(), "per account");
        }
        let mut d = Delivered::with_cap(dir.path(), 50);
        assert!(d.seen("imessage", "default", "A").unwrap(), "persisted");
        for i in 0..105 {
            d.record("imessage", "default", &format!("id{i}")).unwrap();
        }
        assert!(
            !d.seen("imessage", "default", "A").unwrap(),
            "evicted past the cap"
        );
        assert!(d.seen("imessage", "default", "id104").unwrap());
        let lines = std::fs::read_to_string(dir.path().join("imessage/default.delivered"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 100, "compacted: {lines}");
    }
}
