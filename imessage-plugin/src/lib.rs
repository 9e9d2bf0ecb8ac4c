//! The iMessage channel plugin (`libimessage`).
//!
//! A gateway loads this library through `plugin-abi`, hands it its config and a state
//! directory, and gets routed messages back; it sends replies through it. The plugin drives
//! the `imsg` CLI (`imsg rpc`, JSON-RPC over the child's stdio) and owns the whole iMessage
//! side: supervision of the child, parsing, access policy, routing and sending.
//!
//! The folders are the architecture, read top down (no module names one above it):
//!
//! - `plugin`: the host edge (describe/start/stop/send/status, `call`, log forwarding) and
//!   `plugin::ffi`, the ABI exports (abi_stable root module, `chp_*` C functions);
//! - `account`: the per-account owner that composes the parts below (the watcher gets
//!   `watcher::Parts`, handles to what it needs, never the owner);
//! - `watcher`, `outbound`, `actions`: the pipelines (receive, send, actions child);
//! - `inbound`, `echo`: pure decisions on one inbound message and the echo guards;
//! - `imsg`: the protocol edge (rpc client, messages, capabilities, remote, probe);
//! - `config`, `state`, `support`: settings, durable files and small helpers.
//!
//! Pure decisions stay free of I/O so they are tested without processes, and `plugin::ffi`
//! is the only module that touches the ABIs.

// No custom global allocator: mimalloc was tried (+8 % in the pipeline benchmark) and
// crashed in its thread initialisation when a second mimalloc instance lived in the same
// process (a host, or a test binary, that uses it too). A plugin must not make that bet.

pub mod account;
mod actions;
pub mod config;
pub mod echo;
mod imsg;
mod inbound;
pub mod outbound;
mod plugin;
mod state;
mod support;
pub mod watcher;

// The paths the property tests, benchmarks and end-to-end tests use: a curated surface
// over private folders rather than every folder public.
pub use imsg::{message, remote, rpc};
pub use inbound::{attachments, policy, reaction};
pub use support::{handle, timeutil};
