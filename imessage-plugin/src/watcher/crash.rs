//! What the watcher keeps about messages that ended in a panic or ended the process, across
//! its own restarts (the account holds it for as long as it lives): a row that fails twice is
//! quarantined instead of silencing the account.

use std::path::Path;
use std::sync::Mutex;

use crate::state::inflight::{InFlight, Record, QUARANTINE_AFTER};

pub struct CrashGuards {
    /// The dedupe key of the message whose processing last panicked. It outlives the watcher
    /// restart that follows, so a second panic on the same message quarantines it.
    pub suspect: Mutex<Option<String>>,
    /// The message being processed, on disk, so a row that kills the process (a stack
    /// overflow, an abort) is found at the next start.
    pub inflight: Mutex<InFlight>,
    /// The row a process that died left in flight, with how many starts found it so.
    pub crashed: Mutex<Option<Record>>,
}

impl CrashGuards {
    /// The row named by `marker` must be processed with no delivery in flight: the process
    /// died beside a delivery while processing it, so only a death with it alone counts.
    pub fn must_run_alone(&self, marker: &str) -> bool {
        use crate::support::sync::LockExt;
        matches!(self.crashed.locked().as_ref(), Some(r) if r.overlap && r.key == marker)
    }
}

impl CrashGuards {
    /// Opens the in-flight marker in `dir` and reports the row a process that died left in it.
    pub fn open(dir: &Path, id: &str) -> CrashGuards {
        let (inflight, crashed) = match InFlight::open(dir) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(
                    "{e}; a message that crashes the process may be replayed at every start"
                );
                (InFlight::disabled(), None)
            }
        };
        if let Some(r) = crashed.as_ref().filter(|r| r.overlap) {
            tracing::warn!(
                account = %id,
                rowid = r.rowid,
                "the process ended while row {} was being processed and a delivery to the host was in flight; the row will be processed alone when it comes again",
                r.rowid
            );
        } else if let Some(r) = &crashed {
            tracing::error!(
                account = %id,
                rowid = r.rowid,
                "the process ended while row {} was being processed ({} time(s)); {}",
                r.rowid,
                r.crashes,
                if r.crashes >= QUARANTINE_AFTER {
                    "it will be quarantined when it comes again"
                } else {
                    "it will be tried once more"
                }
            );
        }
        CrashGuards {
            suspect: Mutex::new(None),
            inflight: Mutex::new(inflight),
            crashed: Mutex::new(crashed),
        }
    }
}
