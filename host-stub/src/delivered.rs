//! The message ids host-stub has printed, per channel account, kept in the state directory so
//! that a message the plugin delivers again after a crash is acknowledged without being
//! printed twice (the host's half of the delivery contract in the `plugin_abi` crate docs:
//! "Redelivery after a crash").
//!
//! Append-only file, one id per line, synced before the acknowledgement returns; compacted to
//! the newest `CAP` ids when it grows past twice that. The ids of one delivery (a batch, when
//! the plugin sends several messages at once) are appended in one write and made durable with
//! one sync: group commit, so a burst costs one fsync per batch instead of one per message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CAP: usize = 10_000;

/// FxHash (rustc's) for message ids and account keys. Per delivered message host-stub
/// hashes an id about five times; with std's SipHash that cost more than printing the line.
/// The ids come from imsg (GUIDs) and the plugin, not from someone who could pick colliding
/// ones.
#[derive(Clone, Copy, Default)]
pub struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest; hashbrown picks buckets with them.
        self.0.rotate_left(26)
    }
}

pub struct AccountLog {
    cap: usize,
    path: PathBuf,
    file: File,
    /// One allocation per id, shared by the order and the set.
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>, FastHash>,
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
                    order.push_back(Arc::from(id));
                    lines_in_file += 1;
                }
            }
        }
        while order.len() > cap {
            order.pop_front();
        }
        let set = order.iter().cloned().collect();
        if let Some(parent) = path.parent() {
            crate::private::ensure_dir(parent)?;
        }
        let mut file = crate::private::open_append(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
        })?;
        // A kill in the middle of a write can leave a last id without its newline: end that
        // line, so the next id is not glued onto it.
        let len = file.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(AccountLog {
            cap,
            path,
            file,
            order,
            set,
            lines_in_file,
        })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Records the ids of one delivery: one write (visible to a restarted process at once),
    /// then one `sync_data` to make them durable.
    pub fn record_all<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> std::io::Result<()> {
        let mut buf = String::new();
        for id in ids {
            buf.push_str(id);
            buf.push('\n');
            self.lines_in_file += 1;
            let id: Arc<str> = Arc::from(id);
            self.order.push_back(id.clone());
            self.set.insert(id);
        }
        if buf.is_empty() {
            return Ok(());
        }
        // One write: a kill between an id and its newline would glue the next id onto it.
        self.file.write_all(buf.as_bytes())?;
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.lines_in_file > 2 * self.cap {
            self.compact()?;
        }
        self.file.sync_data()
    }

    fn compact(&mut self) -> std::io::Result<()> {
        // One buffer, one write: compaction runs every CAP messages, on the delivery path.
        let mut text = String::with_capacity(self.order.iter().map(|id| id.len() + 1).sum());
        for id in &self.order {
            text.push_str(id);
            text.push('\n');
        }
        crate::private::write_atomic(&self.path, text.as_bytes())?;
        self.file = crate::private::open_append(&self.path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

/// All accounts' logs under one folder.
pub struct Delivered {
    cap: usize,
    dir: PathBuf,
    logs: HashMap<String, AccountLog, FastHash>,
    /// The `channel/account` key being looked up, reused: one lookup per delivered message.
    key: String,
}

impl Delivered {
    pub fn new(dir: &Path) -> Self {
        Self::with_cap(dir, CAP)
    }

    pub fn with_cap(dir: &Path, cap: usize) -> Self {
        Delivered {
            cap,
            dir: dir.to_path_buf(),
            logs: HashMap::default(),
            key: String::new(),
        }
    }

    /// The log of one channel account, opened on first use.
    pub fn account(&mut self, channel: &str, account: &str) -> std::io::Result<&mut AccountLog> {
        let key = &mut self.key;
        key.clear();
        key.push_str(channel);
        key.push('/');
        key.push_str(account);
        if !self.logs.contains_key(key.as_str()) {
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
        Ok(self
            .logs
            .get_mut(self.key.as_str())
            .expect("inserted above"))
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
            let log = d.account("imessage", "default").unwrap();
            assert!(!log.contains("A"));
            log.record_all(["A"]).unwrap();
            assert!(log.contains("A"));
            assert!(
                !d.account("imessage", "work").unwrap().contains("A"),
                "per account"
            );
        }
        let mut d = Delivered::with_cap(dir.path(), 50);
        let log = d.account("imessage", "default").unwrap();
        assert!(log.contains("A"), "persisted");
        let ids: Vec<String> = (0..105).map(|i| format!("id{i}")).collect();
        for batch in ids.chunks(10) {
            log.record_all(batch.iter().map(String::as_str)).unwrap();
        }
        assert!(!log.contains("A"), "evicted past the cap");
        assert!(log.contains("id104"));
        let lines = std::fs::read_to_string(dir.path().join("imessage/default.delivered"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 110, "compacted: {lines}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn the_log_is_0600_in_0700_folders_before_and_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("host-stub");
        let file = state.join("imessage/default.delivered");
        let mut d = Delivered::with_cap(&state, 5);
        let log = d.account("imessage", "default").unwrap();
        log.record_all(["A"]).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("imessage")), 0o700);
        let ids: Vec<String> = (0..20).map(|i| format!("id{i}")).collect();
        log.record_all(ids.iter().map(String::as_str)).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 5, "compacted: {text}");
        assert_eq!(mode(&file), 0o600);
        let names: Vec<String> = std::fs::read_dir(state.join("imessage"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["default.delivered"], "no temporary is left");
        // Appends after the compaction go to the new file.
        log.record_all(["Z"]).unwrap();
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .ends_with("id19\nZ\n"));
    }

    #[test]
    fn an_older_hosts_readable_log_is_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imessage/default.delivered");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "A\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut d = Delivered::with_cap(dir.path(), 50);
        assert!(d.account("imessage", "default").unwrap().contains("A"));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_torn_last_line_is_ended_before_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imessage/default.delivered");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "A\nB").unwrap();
        let mut d = Delivered::with_cap(dir.path(), 50);
        let log = d.account("imessage", "default").unwrap();
        assert!(log.contains("B"));
        log.record_all(["C", "D"]).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "A\nB\nC\nD\n");
    }
}
