//! The settings an account runs with right now, shared by the account (which replaces them on
//! a reload) and its watcher (which picks them up before its next message). Neither side
//! names the other: both hold a [`Live`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{AccountConfig, Config};
use crate::support::sync::RwLockExt;

/// The config an account runs with: the whole validated config and this account's effective
/// settings, replaced together by a reload.
#[derive(Clone)]
pub struct Configured {
    pub whole: Arc<Config>,
    pub account: AccountConfig,
}

/// The current [`Configured`] and how many reloads replaced it.
pub struct Live {
    current: RwLock<Configured>,
    /// Bumped by every reload that applies without a restart, so a reader can tell cheaply
    /// that what it built from the settings is stale.
    generation: AtomicU64,
}

impl Live {
    pub fn new(whole: Arc<Config>, account: AccountConfig) -> Live {
        Live {
            current: RwLock::new(Configured { whole, account }),
            generation: AtomicU64::new(0),
        }
    }

    /// Replaces both together, then bumps the generation (a reader that sees the new
    /// generation reads the new settings).
    pub fn replace(&self, whole: Arc<Config>, account: AccountConfig) {
        *self.current.write_locked() = Configured { whole, account };
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The whole config and the account's settings, read together.
    pub fn configured(&self) -> Configured {
        self.current.read_locked().clone()
    }

    pub fn settings(&self) -> AccountConfig {
        self.current.read_locked().account.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}
