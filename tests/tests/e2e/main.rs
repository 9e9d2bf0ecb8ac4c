//! Every end-to-end test in one binary (as ripgrep's `tests/` does): the built `host-stub`,
//! `libimessage` and `imsg-sim` driven as a user would, with one set of helpers in `common`.
//! Run one area with `cargo test -p imessage-tests --test e2e typing::`.
//!
//! Most of these tests wait on child processes, not on the CPU, so this binary runs four at
//! a time by default (about half the wall time of two on a 2-core machine, measured; every
//! helper is per-test: own temp folder, own simulator files, own gateway). An explicit
//! `RUST_TEST_THREADS` or `--test-threads` still wins.

mod common;

mod abi;
mod abi_delivery;
mod accounts;
mod actions;
mod capabilities;
mod chp_c_abi;
mod chp_libimessage;
mod conformance_client;
mod conformance_hosts;
mod conformance_sim;
mod control;
mod examples;
mod files;
mod fuzz;
mod gateway;
mod host_cli;
mod host_node;
mod hosts_c_python;
mod idempotent;
mod logs;
mod media;
mod paging;
mod ratelimit;
mod reactions;
mod read_receipts;
mod resilience;
mod send;
mod serve_bridge;
mod typing;

/// Sets the default before the test harness reads it: a constructor in `.init_array` runs
/// before `main`. Linux only (elsewhere the harness default, one per core, applies).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static DEFAULT_TEST_THREADS: extern "C" fn() = default_test_threads;

#[cfg(target_os = "linux")]
extern "C" fn default_test_threads() {
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        std::env::set_var("RUST_TEST_THREADS", "4");
    }
}
