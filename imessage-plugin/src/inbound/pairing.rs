//! DM pairing (channel-behaviour.md §3): codes, the pending-request store and the allow
//! store, per account, in files another process (`host-stub pairing approve`) may change
//! while the gateway runs.

pub(crate) mod host;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::state::store::{self, Read};
use crate::support::timeutil;

pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub const EXPIRY_MS: i64 = 3600 * 1000;
pub const MAX_PENDING: usize = 3;
/// `lastSeenAt` of a pending request is stored again only once it is this much behind: a
/// stranger who keeps writing would otherwise cost a rewrite and two fsyncs per message, and
/// nothing reads `lastSeenAt` closer than a minute (`pairing list` shows it to a person).
pub const LAST_SEEN_STEP_MS: i64 = 60_000;

pub fn pairing_text(sender_id: &str, code: &str) -> String {
    format!(
        "This assistant only answers approved contacts.\nYour sender id: {sender_id}\nPairing code: {code}\nAsk the owner to approve this code. It expires in 1 hour."
    )
}

pub const APPROVED_TEXT: &str = "Approved - you can message the assistant now.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id: String,
    pub code: String,
    pub created_at: String,
    pub last_seen_at: String,
    #[serde(default)]
    pub chat_id: Option<i64>,
    #[serde(default)]
    pub notified: bool,
}

impl Request {
    fn created_ms(&self) -> i64 {
        timeutil::parse_ms(&self.created_at).unwrap_or(0)
    }

    pub fn expires_at(&self) -> String {
        timeutil::format_ms(self.created_ms() + EXPIRY_MS)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct PairingFile {
    version: u32,
    requests: Vec<Request>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowFile {
    version: u32,
    allow_from: Vec<String>,
}

/// What the pairing flow decided for one message from an unknown sender.
#[derive(Debug, Clone, PartialEq)]
pub enum Challenge {
    /// Send the pairing reply with this code (a new request, or a retry after a failed one).
    Reply { code: String, chat_id: Option<i64> },
    /// Already pending and notified: nothing to send.
    Pending,
    /// Three requests pending: nothing stored, nothing sent.
    QueueFull,
}

/// One account's pairing files under `<stateDir>/imessage/<accountKey>/`.
pub struct PairingStore {
    dir: PathBuf,
    /// When the allow store's modification time was last checked (`allow_list_cached`).
    checked_ms: i64,
    /// The allow store as last read, and the file's signature when it was read.
    allow_cache: Option<(Option<FileSignature>, Vec<String>)>,
}

/// What tells one version of the allow store from another without reading it. The
/// modification time alone is not enough: an approve and a revoke within one timestamp tick
/// leave it unchanged. Every write is a rename of a new file, so the inode changes too, and a
/// rewrite in place still moves the length or the change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSignature {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
}

impl FileSignature {
    fn of(path: &Path) -> Option<FileSignature> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileSignature {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.modified().ok(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

fn random_code() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    // 256 is a multiple of 32, so `% 32` is uniform.
    Ok(bytes
        .iter()
        .map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char)
        .collect())
}

impl PairingStore {
    pub fn new(dir: &Path) -> Self {
        PairingStore {
            dir: dir.to_path_buf(),
            checked_ms: i64::MIN,
            allow_cache: None,
        }
    }

    fn pairing_path(&self) -> PathBuf {
        self.dir.join("pairing.json")
    }

    fn allow_path(&self) -> PathBuf {
        self.dir.join("allow.json")
    }

    /// The pending requests with the expired ones removed, and the file as it was read, so a
    /// caller can tell whether anything changed.
    fn read_pairing(&self, now_ms: i64) -> std::io::Result<(PairingFile, PairingFile)> {
        let stored = match store::read_json::<PairingFile>(&self.pairing_path())? {
            Read::Ok(f) => f,
            Read::Missing => PairingFile::default(),
            Read::SetAside(aside, why) => {
                tracing::error!(
                    "pairing.json could not be read ({why}); set aside as {}",
                    aside.display()
                );
                PairingFile::default()
            }
        };
        let mut file = stored.clone();
        file.requests
            .retain(|r| now_ms - r.created_ms() < EXPIRY_MS);
        Ok((file, stored))
    }

    /// Writes `file` unless the store already holds exactly that (a repeat message from a
    /// pending sender changes nothing worth an fsync).
    fn write_pairing(&self, mut file: PairingFile, stored: &PairingFile) -> std::io::Result<()> {
        file.version = 1;
        if file == *stored {
            return Ok(());
        }
        store::write_atomic(
            &self.pairing_path(),
            &serde_json::to_vec(&file).unwrap_or_default(),
        )
    }

    fn read_allow(&self) -> std::io::Result<AllowFile> {
        Ok(match store::read_json::<AllowFile>(&self.allow_path())? {
            Read::Ok(f) => f,
            Read::Missing => AllowFile::default(),
            Read::SetAside(aside, why) => {
                tracing::error!(
                    "allow.json could not be read ({why}); set aside as {}",
                    aside.display()
                );
                AllowFile::default()
            }
        })
    }

    /// The pairing flow for a DM from `sender_id` that policy did not admit.
    pub fn challenge(
        &self,
        sender_id: &str,
        chat_id: Option<i64>,
        now_ms: i64,
    ) -> std::io::Result<Challenge> {
        let _lock = store::lock(&self.pairing_path())?;
        let (mut file, stored) = self.read_pairing(now_ms)?;
        let now = timeutil::format_ms(now_ms);
        if let Some(r) = file.requests.iter_mut().find(|r| r.id == sender_id) {
            let seen_ms = timeutil::parse_ms(&r.last_seen_at).unwrap_or(i64::MIN);
            if now_ms.saturating_sub(seen_ms) >= LAST_SEEN_STEP_MS {
                r.last_seen_at = now;
            }
            let outcome = if r.notified {
                Challenge::Pending
            } else {
                Challenge::Reply {
                    code: r.code.clone(),
                    chat_id: r.chat_id,
                }
            };
            self.write_pairing(file, &stored)?;
            return Ok(outcome);
        }
        if file.requests.len() >= MAX_PENDING {
            self.write_pairing(file, &stored)?;
            return Ok(Challenge::QueueFull);
        }
        let mut code = None;
        for _ in 0..100 {
            let candidate = random_code()?;
            if !file.requests.iter().any(|r| r.code == candidate) {
                code = Some(candidate);
                break;
            }
        }
        let Some(code) = code else {
            tracing::error!("could not find a unique pairing code after 100 tries");
            return Ok(Challenge::QueueFull);
        };
        file.requests.push(Request {
            id: sender_id.to_string(),
            code: code.clone(),
            created_at: now.clone(),
            last_seen_at: now,
            chat_id,
            notified: false,
        });
        self.write_pairing(file, &stored)?;
        Ok(Challenge::Reply { code, chat_id })
    }

    /// Records whether the pairing reply reached imsg (`failed`/`not_sent` keep it false so
    /// the next message retries).
    pub fn set_notified(
        &self,
        sender_id: &str,
        notified: bool,
        now_ms: i64,
    ) -> std::io::Result<()> {
        let _lock = store::lock(&self.pairing_path())?;
        let (mut file, stored) = self.read_pairing(now_ms)?;
        if let Some(r) = file.requests.iter_mut().find(|r| r.id == sender_id) {
            r.notified = notified;
        }
        self.write_pairing(file, &stored)
    }

    /// Pending requests, oldest first.
    pub fn list(&self, now_ms: i64) -> std::io::Result<Vec<Request>> {
        let _lock = store::lock(&self.pairing_path())?;
        let mut requests = self.read_pairing(now_ms)?.0.requests;
        requests.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(requests)
    }

    /// Whether `code` is pending here (upper-cased, trimmed).
    pub fn find(&self, code: &str, now_ms: i64) -> std::io::Result<Option<Request>> {
        let code = code.trim().to_uppercase();
        Ok(self.list(now_ms)?.into_iter().find(|r| r.code == code))
    }

    /// Approves `code`: the request is removed and the sender joins the allow store.
    pub fn approve(&self, code: &str, now_ms: i64) -> std::io::Result<Option<Request>> {
        let code = code.trim().to_uppercase();
        let request = {
            let _lock = store::lock(&self.pairing_path())?;
            let (mut file, stored) = self.read_pairing(now_ms)?;
            let Some(pos) = file.requests.iter().position(|r| r.code == code) else {
                return Ok(None);
            };
            let request = file.requests.remove(pos);
            self.write_pairing(file, &stored)?;
            request
        };
        let _lock = store::lock(&self.allow_path())?;
        let mut allow = self.read_allow()?;
        if !allow.allow_from.contains(&request.id) {
            allow.allow_from.push(request.id.clone());
        }
        allow.version = 1;
        store::write_atomic(
            &self.allow_path(),
            &serde_json::to_vec(&allow).unwrap_or_default(),
        )?;
        Ok(Some(request))
    }

    pub fn revoke(&self, sender_id: &str) -> std::io::Result<bool> {
        let _lock = store::lock(&self.allow_path())?;
        let mut allow = self.read_allow()?;
        let before = allow.allow_from.len();
        allow.allow_from.retain(|s| s != sender_id);
        allow.version = 1;
        store::write_atomic(
            &self.allow_path(),
            &serde_json::to_vec(&allow).unwrap_or_default(),
        )?;
        Ok(allow.allow_from.len() != before)
    }

    /// The allow store for the hot path: its modification time is checked at most every
    /// 250 ms instead of once per message, so a busy stream costs no syscall per message while
    /// an approval still applies within a quarter second.
    pub fn allow_list_cached(&mut self, now_ms: i64) -> &[String] {
        if self.allow_cache.is_none() || now_ms - self.checked_ms >= 250 {
            self.checked_ms = now_ms;
            return self.allow_list();
        }
        &self.allow_cache.as_ref().expect("checked above").1
    }

    /// The allow store, re-read only when the file's signature changed, so an approval or a
    /// revocation from another process applies to the next message.
    pub fn allow_list(&mut self) -> &[String] {
        let signature = FileSignature::of(&self.allow_path());
        let stale = self
            .allow_cache
            .as_ref()
            .is_none_or(|(seen, _)| *seen != signature);
        if stale {
            let list = self
                .read_allow()
                .map(|f| f.allow_from.into_iter().filter(|s| s != "*").collect())
                .unwrap_or_default();
            self.allow_cache = Some((signature, list));
        }
        &self.allow_cache.as_ref().expect("filled above").1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn codes_use_the_alphabet() {
        let re = regex::Regex::new("^[A-HJ-NP-Z2-9]{8}$").unwrap();
        for _ in 0..200 {
            assert!(re.is_match(&random_code().unwrap()));
        }
    }

    #[test]
    fn flow_cases_54_to_58() {
        let dir = tempfile::tempdir().unwrap();
        let s = PairingStore::new(dir.path());
        let Challenge::Reply { code, chat_id } = s.challenge("+15550002222", Some(8), T0).unwrap()
        else {
            panic!("new sender gets a reply")
        };
        assert_eq!(chat_id, Some(8));
        s.set_notified("+15550002222", true, T0).unwrap();
        // Case 55: 10 minutes later, same code, no reply.
        assert_eq!(
            s.challenge("+15550002222", Some(8), T0 + 600_000).unwrap(),
            Challenge::Pending
        );
        let listed = s.list(T0 + 600_000).unwrap();
        assert_eq!(listed[0].code, code);
        assert_ne!(listed[0].last_seen_at, listed[0].created_at);
        // Case 56: three pending, a fourth is refused.
        assert!(matches!(
            s.challenge("+15550000002", None, T0).unwrap(),
            Challenge::Reply { .. }
        ));
        assert!(matches!(
            s.challenge("+15550000003", None, T0).unwrap(),
            Challenge::Reply { .. }
        ));
        assert_eq!(
            s.challenge("+15550000004", None, T0).unwrap(),
            Challenge::QueueFull
        );
        assert_eq!(s.list(T0).unwrap().len(), 3);
        // Case 58: approval is case-insensitive and fills the allow store.
        let mut s2 = PairingStore::new(dir.path());
        let approved = s2
            .approve(&format!(" {} ", code.to_lowercase()), T0)
            .unwrap()
            .unwrap();
        assert_eq!(approved.id, "+15550002222");
        assert_eq!(s2.allow_list(), ["+15550002222".to_string()]);
        assert!(
            s2.approve(&code, T0).unwrap().is_none(),
            "gone after approval"
        );
        // Case 62: private files with a version.
        for f in ["pairing.json", "allow.json"] {
            let p = dir.path().join(f);
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert!(std::fs::read_to_string(&p)
                .unwrap()
                .contains("\"version\":1"));
        }
    }

    #[test]
    fn expired_requests_get_a_new_code_case_57() {
        let dir = tempfile::tempdir().unwrap();
        let s = PairingStore::new(dir.path());
        let Challenge::Reply { code: first, .. } = s.challenge("+1555000222", None, T0).unwrap()
        else {
            panic!()
        };
        s.set_notified("+1555000222", true, T0).unwrap();
        let Challenge::Reply { code: second, .. } =
            s.challenge("+1555000222", None, T0 + 61 * 60_000).unwrap()
        else {
            panic!("expired request: a new one")
        };
        assert_ne!(first, second);
    }

    #[test]
    fn failed_reply_is_retried_once_per_message_case_61() {
        let dir = tempfile::tempdir().unwrap();
        let s = PairingStore::new(dir.path());
        let Challenge::Reply { code, .. } = s.challenge("+1555000222", None, T0).unwrap() else {
            panic!()
        };
        // The reply failed: notified stays false, so the next message retries with the same code.
        assert_eq!(
            s.challenge("+1555000222", None, T0 + 1000).unwrap(),
            Challenge::Reply {
                code,
                chat_id: None
            }
        );
    }

    fn identity(path: &Path) -> (u64, std::time::SystemTime) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        (m.ino(), m.modified().unwrap())
    }

    #[test]
    fn a_repeat_message_from_a_pending_sender_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = PairingStore::new(dir.path());
        let path = dir.path().join("pairing.json");
        s.challenge("+15550002222", Some(8), T0).unwrap();
        s.set_notified("+15550002222", true, T0).unwrap();
        let before = identity(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        // Every write is a rename of a new file: an unchanged inode means no write.
        for t in [T0 + 1, T0 + 30_000, T0 + LAST_SEEN_STEP_MS - 1] {
            assert_eq!(
                s.challenge("+15550002222", Some(8), t).unwrap(),
                Challenge::Pending
            );
            s.set_notified("+15550002222", true, t).unwrap();
            assert_eq!(identity(&path), before, "rewritten at {t}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // The queue being full changes nothing on disk either.
        for sender in ["+15550000002", "+15550000003"] {
            s.challenge(sender, None, T0).unwrap();
        }
        let full = identity(&path);
        assert_eq!(
            s.challenge("+15550000004", None, T0 + 5).unwrap(),
            Challenge::QueueFull
        );
        assert_eq!(identity(&path), full);
        // A minute on, `lastSeenAt` moves and is stored.
        let later = T0 + LAST_SEEN_STEP_MS;
        s.challenge("+15550002222", Some(8), later).unwrap();
        let listed = s.list(later).unwrap();
        let request = listed.iter().find(|r| r.id == "+15550002222").unwrap();
        assert_eq!(request.last_seen_at, timeutil::format_ms(later));
    }

    /// Replaces allow.json the way `host-stub pairing` does (a new file renamed over it), then
    /// gives it `mtime`, so two versions can share one modification time.
    fn replace_allow(dir: &Path, ids: &[&str], mtime: std::time::SystemTime) {
        let path = dir.join("allow.json");
        let body = serde_json::json!({"version": 1, "allowFrom": ids});
        store::write_atomic(&path, body.to_string().as_bytes()).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    #[test]
    fn two_allow_store_versions_within_one_mtime_tick_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let tick =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let mut s = PairingStore::new(dir.path());
        replace_allow(dir.path(), &["+15550000001"], tick);
        assert_eq!(s.allow_list(), ["+15550000001".to_string()]);
        // Same length, same modification time: only the inode tells them apart.
        replace_allow(dir.path(), &["+15550000002"], tick);
        assert_eq!(identity(&dir.path().join("allow.json")).1, tick);
        assert_eq!(s.allow_list(), ["+15550000002".to_string()]);
        replace_allow(dir.path(), &[], tick);
        assert!(s.allow_list().is_empty(), "the revocation applies");
    }

    #[test]
    fn corrupt_store_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("allow.json"), "{{{").unwrap();
        let mut s = PairingStore::new(dir.path());
        assert!(s.allow_list().is_empty());
        assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("allow.json.corrupt-")));
    }
}
