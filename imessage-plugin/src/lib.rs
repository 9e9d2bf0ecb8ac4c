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
pub mod attachments;
pub mod backoff;
pub mod config;

// No custom global allocator: mimalloc was tried (+8 % in the pipeline benchmark) and
// crashed in its thread initialisation when a second mimalloc instance lived in the same
// process (a host, or a test binary, that uses it too). A plugin must not make that bet.
pub mod cursor;
pub mod delivery;
pub mod echo;
mod ffi;
pub mod handle;
pub mod inbound;
pub mod logging;
pub mod message;
pub mod outbound;
pub mod pairing;
pub mod plugin;
pub mod policy;
pub mod probe;
pub mod quarantine;
pub mod remote;
pub mod routing;
pub mod rpc;
pub mod staging;
pub mod store;
mod supervise;
mod sync;
pub mod timeutil;
pub mod watcher;
