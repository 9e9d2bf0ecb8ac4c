//! What the account's status shows about its watch, written mostly by the watcher and read by
//! the account's `status`. It lives here, below the account, so the watcher sets its state
//! through a [`Status`] it was handed instead of through the account that owns both.

use std::sync::{Mutex, MutexGuard};

use crate::inbound::Stats;
use crate::support::sync::LockExt;

/// Where an account's watch is (channel-behaviour.md §10.3); a string only in status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccountState {
    Starting,
    Watching,
    Recovering,
    /// A permission failure (Full Disk Access): re-probed on a long timer, never in a loop.
    Blocked,
    /// Another account or process watches the same Messages database.
    DuplicateSource,
    #[default]
    Stopped,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Starting => "starting",
            AccountState::Watching => "watching",
            AccountState::Recovering => "recovering",
            AccountState::Blocked => "blocked",
            AccountState::DuplicateSource => "duplicate_source",
            AccountState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct StatusState {
    pub state: AccountState,
    pub last_error: Option<String>,
    pub last_inbound_ms: Option<i64>,
    pub last_outbound_ms: Option<i64>,
    pub cursor: Option<(i64, Option<i64>)>,
    pub stats: Stats,
    /// Panics caught in processing, and messages quarantined for panicking twice.
    pub panics: u64,
    pub quarantined: u64,
    /// `watch.overflow` endings, and when the recent ones happened (for the warning).
    pub watch_overflows: u64,
    /// Reaction events the host took.
    pub reactions_delivered: u64,
    pub recent_overflows: std::collections::VecDeque<i64>,
}

/// One account's [`StatusState`], shared by the account and its watcher.
#[derive(Debug, Default)]
pub struct Status(Mutex<StatusState>);

impl Status {
    pub fn locked(&self) -> MutexGuard<'_, StatusState> {
        self.0.locked()
    }

    /// Shows `state`; `error`, when given, becomes the last error (a state change alone
    /// keeps the last one).
    pub fn set_state(&self, state: AccountState, error: Option<String>) {
        let mut s = self.locked();
        s.state = state;
        if error.is_some() {
            s.last_error = error;
        }
    }

    /// A send reached a conversation just now.
    pub fn note_outbound(&self) {
        self.locked().last_outbound_ms = Some(crate::support::timeutil::now_ms());
    }

    /// Counts a caught panic and shows it as the last error.
    pub fn note_panic(&self, what: String) {
        let mut s = self.locked();
        s.panics += 1;
        s.last_error = Some(what);
    }
}
