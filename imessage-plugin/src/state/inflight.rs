//! The message being processed, on disk (issue 21). A panic is caught and handled in
//! process (restart, then quarantine), but a stack overflow, an `abort` or an OOM kill ends the
//! whole gateway, and the row that did it is replayed at the next start, and again, forever.
//! So the row's key is written here before its processing starts and cleared after; a key
//! found here at start names the row that was being processed when the process died. Found
//! twice, the row is quarantined when it comes again, like a row that panicked twice.
//!
//! `<account dir>/inflight`, mode 0600: the first line is the record, the rest is padding.
//! The file is a shared writable mapping, so a record is a memory copy, not a syscall per
//! message (it was the only one left on the message path); the mapped page is the page cache,
//! so a process crash keeps what was written exactly as a `pwrite` would. No fsync: after a
//! machine crash a lost marker only costs one more replay. Where the file cannot be mapped
//! the record is written with `pwrite`. The next row's
//! record overwrites the last one, so the caller clears the marker only before it waits or
//! hands anything to the host (see [`InFlight::clear`]), not after every row.
//!
//! The host's delivery runs beside row processing (the watcher pipelines it), so a process
//! that dies then may have died in the host's `deliver`, no row's doing. A record written
//! while a delivery was in flight says so (`overlap`); the delivery's end rewrites it without
//! (one write per delivery, not per row). A record found with `overlap` counts no crash: the
//! row is processed alone when it comes again, so a second death there is its own.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

pub const FILE: &str = "inflight";
/// A row found in flight by this many starts is quarantined when it comes again.
pub const QUARANTINE_AFTER: u32 = 2;
/// Every record is padded to this size, so a shorter one never leaves a tail of a longer one
/// on its first line.
const RECORD_BYTES: usize = 192;
/// Keys come from imsg; longer ones are stored by their hash so the record keeps its size.
const MAX_KEY_BYTES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The row's dedupe key, or `sha256:<hex>` of a long one (see [`marker_key`]).
    pub key: String,
    pub rowid: i64,
    /// How many earlier starts found this row in flight.
    pub crashes: u32,
    /// A delivery to the host was in flight too, so the death may not be this row's doing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlap: bool,
}

/// The form a dedupe key takes in the record; borrowed for the usual short key (this runs for
/// every row).
pub fn marker_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES {
        return key.into();
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}").into()
}

/// The record as written; borrows the key so a row costs no allocation.
#[derive(Serialize)]
struct RecordRef<'a> {
    key: &'a str,
    rowid: i64,
    crashes: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    overlap: bool,
}

/// The open marker file of one account.
pub struct InFlight {
    file: Option<File>,
    /// The file's first [`RECORD_BYTES`], mapped shared and writable.
    map: Option<memmap2::MmapMut>,
    /// A record is on disk and not cleared yet.
    set: bool,
    /// The record being written, reused from row to row.
    buf: Vec<u8>,
    /// A delivery to the host is in flight (between [`Self::delivery_started`] and
    /// [`Self::delivery_ended`]).
    delivering: bool,
    /// The record on disk says `overlap`.
    overlapped: bool,
}

impl InFlight {
    /// Opens the marker (never through a symlink), and returns what a process that died left
    /// in it: that row's record with one more crash counted.
    pub fn open(account_dir: &Path) -> std::io::Result<(InFlight, Option<Record>)> {
        crate::state::store::ensure_dir(account_dir)?;
        let path = account_dir.join(FILE);
        let mut file = crate::state::store::open_private(&path)
            .map_err(crate::state::store::context("opening", &path))?;
        let mut head = Vec::with_capacity(RECORD_BYTES);
        (&mut file)
            .take(RECORD_BYTES as u64)
            .read_to_end(&mut head)?;
        // A death beside a delivery counts no crash (see the module docs).
        let found = parse(&head).map(|r| Record {
            crashes: r.crashes.saturating_add(u32::from(!r.overlap)),
            ..r
        });
        let map = map_record(&file)
            .map_err(|e| {
                tracing::debug!(
                    "mapping {}: {e}; the marker is written with pwrite",
                    path.display()
                )
            })
            .ok();
        let mut marker = InFlight {
            map,
            file: Some(file),
            set: true,
            buf: Vec::with_capacity(RECORD_BYTES),
            delivering: false,
            overlapped: false,
        };
        marker.clear();
        Ok((marker, found))
    }

    /// A marker that records nothing (the file could not be opened; logged by the caller).
    pub fn disabled() -> InFlight {
        InFlight {
            file: None,
            map: None,
            set: false,
            buf: Vec::new(),
            delivering: false,
            overlapped: false,
        }
    }

    /// Before a row's processing starts; `key` as [`marker_key`] gives it. It replaces the
    /// record of the row before, if that was not cleared.
    pub fn begin(&mut self, key: &str, rowid: i64, crashes: u32) {
        self.write(key, rowid, crashes, self.delivering);
    }

    fn write(&mut self, key: &str, rowid: i64, crashes: u32, overlap: bool) {
        if self.file.is_none() {
            return;
        }
        let bytes = &mut self.buf;
        bytes.clear();
        let record = RecordRef {
            key,
            rowid,
            crashes,
            overlap,
        };
        if serde_json::to_writer(&mut *bytes, &record).is_err() || bytes.len() >= RECORD_BYTES {
            return;
        }
        bytes.resize(RECORD_BYTES - 1, b' ');
        bytes.push(b'\n');
        self.set = match (&mut self.map, &self.file) {
            (Some(map), _) => {
                store(map, bytes);
                true
            }
            (None, Some(file)) => file.write_all_at(bytes, 0).is_ok(),
            (None, None) => false,
        };
        self.overlapped = self.set && overlap;
    }

    /// A delivery to the host starts: records written from now on say `overlap`.
    pub fn delivery_started(&mut self) {
        self.delivering = true;
    }

    /// The delivery returned: a record written during it no longer overlaps one, so it is
    /// rewritten without `overlap` (a death from here on is that row's doing).
    pub fn delivery_ended(&mut self) {
        self.delivering = false;
        if !(self.set && self.overlapped) {
            return;
        }
        let Some(record) = parse(&self.buf) else {
            return;
        };
        self.write(&record.key, record.rowid, record.crashes, false);
    }

    /// Nothing is in flight: called after a row that panicked, and before the process waits
    /// for more input or calls the host (a crash there is no row's doing). In a burst the
    /// next row's [`Self::begin`] overwrites the record instead, saving a `pwrite` per row.
    pub fn clear(&mut self) {
        if !self.set {
            return;
        }
        // An empty first line: nothing in flight. The padding after it is ignored.
        if let Some(map) = &mut self.map {
            map[0] = b'\n';
            self.set = false;
        } else if let Some(file) = &self.file {
            self.set = file.write_all_at(b"\n", 0).is_err();
        }
        self.overlapped &= self.set;
    }
}

impl Drop for InFlight {
    /// An orderly end (stop, a watcher restart) is no crash, even in the middle of a row.
    fn drop(&mut self) {
        self.clear();
    }
}

/// Maps the record's bytes of `file`, growing the file to hold them.
fn map_record(file: &File) -> std::io::Result<memmap2::MmapMut> {
    if file.metadata()?.len() < RECORD_BYTES as u64 {
        file.set_len(RECORD_BYTES as u64)?;
    }
    // SAFETY: the mapping covers bytes the file has (grown above) and lives no longer than
    // this account's marker. The file is the account's own (0600, opened without following
    // a symlink, the state folder locked by this process); were it truncated behind our back
    // a write could fault, which is the accepted risk of any mapped state file.
    unsafe { memmap2::MmapOptions::new().len(RECORD_BYTES).map_mut(file) }
}

/// Writes a whole record so that a process killed at any instant leaves either the empty
/// first line or the complete record, never a mix of it and the last one: the first byte
/// goes last, and until then the line reads as cleared.
fn store(map: &mut [u8], record: &[u8]) {
    use std::sync::atomic::{compiler_fence, Ordering};
    map[0] = b'\n';
    compiler_fence(Ordering::SeqCst);
    map[1..record.len()].copy_from_slice(&record[1..]);
    compiler_fence(Ordering::SeqCst);
    map[0] = record[0];
}

fn parse(head: &[u8]) -> Option<Record> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(key: &str, crashes: u32) -> Record {
        Record {
            key: key.into(),
            rowid: 7,
            crashes,
            overlap: false,
        }
    }

    /// What a process that dies mid-row leaves: its marker, not cleared.
    fn die_during(dir: &Path, r: &Record) {
        let (mut marker, _) = InFlight::open(dir).unwrap();
        marker.begin(&r.key, r.rowid, r.crashes);
        std::mem::forget(marker);
    }

    #[test]
    fn a_row_left_in_flight_is_found_with_one_more_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut marker, found) = InFlight::open(dir.path()).unwrap();
        assert_eq!(found, None, "a new account has nothing in flight");
        marker.begin("LONG-GUID-0000000000", 7, 0);
        marker.clear();
        drop(marker);
        assert_eq!(InFlight::open(dir.path()).unwrap().1, None, "cleared");

        die_during(dir.path(), &record("G1", 0));
        let (_, found) = InFlight::open(dir.path()).unwrap();
        assert_eq!(found, Some(record("G1", 1)));
        // The next start sees nothing unless the row was begun (and died) again.
        assert_eq!(InFlight::open(dir.path()).unwrap().1, None);
        die_during(dir.path(), &record("G1", 1));
        assert_eq!(InFlight::open(dir.path()).unwrap().1, Some(record("G1", 2)));

        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_next_row_replaces_a_record_not_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let (mut marker, _) = InFlight::open(dir.path()).unwrap();
        marker.begin("A-RATHER-LONGER-KEY-THAN-THE-NEXT", 7, 1);
        marker.begin("G2", 8, 0);
        std::mem::forget(marker);
        let found = InFlight::open(dir.path()).unwrap().1;
        let expected = Record {
            key: "G2".into(),
            rowid: 8,
            crashes: 1,
            overlap: false,
        };
        assert_eq!(found, Some(expected));
    }

    #[test]
    fn a_death_beside_a_delivery_counts_no_crash_until_the_delivery_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (mut marker, _) = InFlight::open(dir.path()).unwrap();
        marker.delivery_started();
        marker.begin("G1", 7, 1);
        std::mem::forget(marker);
        let found = InFlight::open(dir.path()).unwrap().1;
        let beside = Record {
            overlap: true,
            ..record("G1", 1)
        };
        assert_eq!(found, Some(beside), "no crash counted, and it says why");

        // The delivery returned while the row was still being processed: its own doing now.
        let (mut marker, _) = InFlight::open(dir.path()).unwrap();
        marker.delivery_started();
        marker.begin("G1", 7, 1);
        marker.delivery_ended();
        std::mem::forget(marker);
        assert_eq!(InFlight::open(dir.path()).unwrap().1, Some(record("G1", 2)));

        // A delivery that ends after the record was cleared writes nothing back.
        let (mut marker, _) = InFlight::open(dir.path()).unwrap();
        marker.delivery_started();
        marker.begin("G1", 7, 0);
        marker.clear();
        marker.delivery_ended();
        std::mem::forget(marker);
        assert_eq!(InFlight::open(dir.path()).unwrap().1, None);
    }

    #[test]
    fn a_short_marker_file_is_grown_and_records_through_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        // An older marker (or one cut short) holds less than a record.
        std::fs::write(dir.path().join(FILE), b"\n").unwrap();
        let (mut marker, found) = InFlight::open(dir.path()).unwrap();
        assert_eq!(found, None);
        assert!(marker.map.is_some(), "the marker is mapped");
        marker.begin("G1", 7, 0);
        // A plain reader (the next start) sees the record while this process still runs.
        let text = std::fs::read(dir.path().join(FILE)).unwrap();
        assert_eq!(parse(&text), Some(record("G1", 0)));
        marker.clear();
        let text = std::fs::read(dir.path().join(FILE)).unwrap();
        assert_eq!(parse(&text), None);
    }

    #[test]
    fn an_orderly_end_mid_row_is_no_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut marker, _) = InFlight::open(dir.path()).unwrap();
        marker.begin("G1", 7, 0);
        drop(marker);
        assert_eq!(InFlight::open(dir.path()).unwrap().1, None);
    }

    #[test]
    fn long_keys_are_hashed_and_junk_is_ignored() {
        let long = "x".repeat(10_000);
        let key = marker_key(&long);
        assert!(key.starts_with("sha256:") && key.len() < MAX_KEY_BYTES);
        assert_eq!(marker_key("G1"), "G1");
        let dir = tempfile::tempdir().unwrap();
        die_during(dir.path(), &record(&key, 0));
        assert!(matches!(marker_key("G1"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            InFlight::open(dir.path()).unwrap().1.map(|r| r.key),
            Some(key.into_owned())
        );
        std::fs::write(dir.path().join(FILE), b"{not json\n").unwrap();
        assert_eq!(InFlight::open(dir.path()).unwrap().1, None);
    }

    #[test]
    fn a_symlinked_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(FILE)).unwrap();
        assert!(InFlight::open(dir.path()).is_err());
    }
}
