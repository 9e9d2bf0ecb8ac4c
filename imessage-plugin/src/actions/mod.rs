//! The actions child's work (actions.md §1.1, §3): read receipts, typing, tapbacks, edits
//! and unsends, and the index of routed messages they find their chat in. All of it runs on
//! the account's actions child ([`ActionsChild`]), never on the watcher's or the sender's.
//! Nothing here names the account: the account owns one [`Actions`] and hands each call the
//! settings it runs with.

pub(crate) mod index;
pub(crate) mod message_actions;
pub(crate) mod read;
pub(crate) mod typing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::AccountConfig;
use crate::imsg::capabilities::Snapshot;
use crate::imsg::child::ActionsChild;
use crate::outbound::Plan;
use crate::support::sync::LockExt;
use crate::support::timings::Timings;

pub use read::{after_ack, mark_read};

/// The account's actions: the child and the state of what runs on it.
pub struct Actions {
    /// The account id, for logs.
    pub id: String,
    pub child: Arc<ActionsChild>,
    pub read_receipts: Mutex<read::ReadReceipts>,
    pub typing: Mutex<typing::Typing>,
    /// Routed inbound messages and their chats, for message actions (actions.md §3.0).
    pub index: Mutex<index::MessageIndex>,
    /// The keepalive, typing and read-receipt timers of this start.
    pub timings: Timings,
}

impl Actions {
    pub fn new(id: String, child: Arc<ActionsChild>, timings: Timings) -> Actions {
        Actions {
            id,
            timings,
            child,
            read_receipts: Mutex::new(Default::default()),
            typing: Mutex::new(Default::default()),
            index: Mutex::new(Default::default()),
        }
    }

    /// Whether `plan` answers in the owner's own DM ([`crate::outbound::path::is_owner_dm`]),
    /// a chat id's handle found in the index of routed messages.
    pub fn is_owner_dm(&self, plan: &Plan, settings: &AccountConfig) -> bool {
        crate::outbound::path::is_owner_dm(&plan.target, settings, |chat_id| {
            self.index.locked().dm_handle(chat_id)
        })
    }

    /// Whoever sends decides this after the send, whatever its outcome: a reply to a
    /// conversation ends the typing shown there.
    pub fn after_send(&self, plan: &Plan) {
        typing::stop_scope(self, &plan.target.echo_scope().to_string());
    }

    /// The snapshot to gate a bridge call on: on a lenient server at most 10 s old (§1.2).
    async fn bridge_capabilities(&self, probe_timeout: Duration) -> Result<Snapshot, String> {
        self.child.caps().get(false, true, probe_timeout).await
    }
}
