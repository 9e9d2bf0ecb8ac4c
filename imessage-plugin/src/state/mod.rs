//! Durable per-account files under `<stateDir>/imessage/<account>/` (channel-behaviour.md
//! §11): the catch-up cursor, the send ledger, the sent ids, the quarantine, the in-flight
//! marker, and the atomic-write and lock helpers they share. Each file's format lives with its module.

pub mod cursor;
pub mod inflight;
pub mod ledger;
pub mod media;
pub mod quarantine;
pub mod sent;
pub mod store;
