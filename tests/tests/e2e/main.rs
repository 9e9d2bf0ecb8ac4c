//! Every end-to-end test in one binary (as ripgrep's `tests/` does): the built `host-stub`,
//! `libimessage` and `imsg-sim` driven as a user would, with one set of helpers in `common`.
//! Run one area with `cargo test -p imessage-tests --test e2e typing::`.

mod common;

mod abi;
mod abi_delivery;
mod accounts;
mod actions;
mod capabilities;
mod conformance_client;
mod conformance_sim;
mod control;
mod examples;
mod files;
mod fuzz;
mod gateway;
mod host_cli;
mod idempotent;
mod logs;
mod media;
mod paging;
mod ratelimit;
mod reactions;
mod read_receipts;
mod resilience;
mod send;
mod typing;
