//! The iMessage channel plugin (`libimessage`).
//!
//! A gateway loads this library through `plugin-abi`, hands it its config and a state
//! directory, and gets routed messages back; it sends replies through it. The plugin drives
//! the `imsg` CLI (`imsg rpc`, JSON-RPC over the child's stdio) and owns the whole iMessage
//! side: supervision of the child, parsing, access policy, routing and sending.
//!
//! One module per concern (see DESIGN.md); pure decisions stay free of I/O so they are tested
//! without processes, and `ffi` is the only module that touches abi_stable.

pub mod account;
mod actions;
pub mod attachments;
mod backoff;
mod capabilities;
pub mod config;

// No custom global allocator: mimalloc was tried (+8 % in the pipeline benchmark) and
// crashed in its thread initialisation when a second mimalloc instance lived in the same
// process (a host, or a test binary, that uses it too). A plugin must not make that bet.
mod cursor;
mod delivery;
pub mod echo;
mod ffi;
pub mod handle;
mod inbound;
mod inflight;
mod ledger;
mod logging;
pub mod message;
mod message_actions;
mod message_index;
pub mod outbound;
mod pairing;
mod panic_hook;
mod plugin;
pub mod policy;
mod probe;
mod quarantine;
mod ratelimit;
pub mod reaction;
pub mod remote;
mod routing;
pub mod rpc;
mod sending;
mod staging;
mod store;
mod supervise;
mod sync;
pub mod timeutil;
mod typing;
pub mod watcher;
