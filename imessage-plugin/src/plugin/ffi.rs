//! The one place that implements the ABIs, both entry points of the same library:
//!
//! - the abi_stable root module (`export_plugin!`), for Rust hosts that link `plugin-abi`;
//! - the ten `chp_*` C functions (spec/host-protocol.md §2), each one line over
//!   `plugin_abi::chp::ffi`, for hosts in any language. cbindgen turns them into
//!   `plugin-abi/include/channel_plugin.h`: their doc comments are the header's, the same
//!   text as every channel plugin's copy of the template (`tests/fixture-plugin/src/chp.rs`;
//!   a test checks that both generate the committed header).
//!
//! Every entry point is guarded against panics; domain code never sees an ABI type.

// The safety contract of each function is its doc comment.
#![allow(clippy::missing_safety_doc)]

plugin_abi::export_plugin!(
    crate::plugin::description,
    crate::plugin::ImessagePlugin::new
);

use std::ffi::c_char;

use plugin_abi::chp::{ffi, Instance};
use plugin_abi::types::PluginError;

/// The major version of this C ABI: a host refuses a library whose major differs.
pub const CHP_ABI_VERSION_MAJOR: u32 = 1;
/// The minor version: grows when functions or options are added.
pub const CHP_ABI_VERSION_MINOR: u32 = 0;

const _: () = assert!(CHP_ABI_VERSION_MAJOR == ffi::ABI_VERSION_MAJOR);
const _: () = assert!(CHP_ABI_VERSION_MINOR == ffi::ABI_VERSION_MINOR);

/// The library's C ABI version: `(CHP_ABI_VERSION_MAJOR << 16) | CHP_ABI_VERSION_MINOR`.
/// Compare the major with the header's before calling anything else. Any thread.
#[no_mangle]
pub extern "C" fn chp_abi_version() -> u32 {
    ffi::abi_version()
}

/// The `describe` result (JSON: the plugin's description plus `protocolVersion` and, when the
/// channel has one, `configSchema`), without creating an instance. The caller owns the string
/// and frees it with `chp_string_free`. NULL only on an internal failure (see
/// `chp_last_error`). Any thread.
#[no_mangle]
pub extern "C" fn chp_describe() -> *mut c_char {
    ffi::describe(crate::plugin::description, || {
        Some(crate::config::schema::schema())
    })
}

/// Creates one plugin instance. `options_json` is NULL or a JSON object, all keys optional:
/// `{"ackTimeoutMs": 30000, "maxQueued": 10000}`; it is borrowed for the call only. Returns
/// NULL on failure: bad options (the error names the field) or a failing plugin; the reason
/// is in `chp_last_error` on this thread. Several instances may live in one process. The
/// instance is not started: post a `start` request. Any thread.
#[no_mangle]
pub unsafe extern "C" fn chp_new(options_json: *const c_char) -> *mut Instance {
    ffi::new(options_json, |callbacks| {
        plugin_abi::guard::new_ffi(callbacks, crate::plugin::ImessagePlugin::new)
            .into_result()
            .map_err(|e| PluginError::from_wire(e.as_str()))
    })
}

/// This thread's last `chp_new` (or `chp_describe`) failure as JSON
/// (`{"code": "…", "message": "…"}`), or NULL when there was none. The caller owns the
/// string and frees it with `chp_string_free`.
#[no_mangle]
pub extern "C" fn chp_last_error() -> *mut c_char {
    ffi::last_error()
}

/// Hands the plugin one JSON-RPC 2.0 message (a request, a response to a plugin request, or a
/// notification); `message_json` is borrowed for the call only. Never blocks on the plugin:
/// requests run on the instance's threads and their responses come from `chp_next_message`.
/// Returns 0 accepted, -1 the instance is closed (after `stop`), -2 `h` or `message_json`
/// NULL or not UTF-8, -3 too many requests queued (`maxQueued`; drain and retry), -4 a
/// panic was caught. Malformed JSON is accepted and answered with a -32700 error message on
/// the queue. Any thread, several at once.
#[no_mangle]
pub unsafe extern "C" fn chp_post(h: *mut Instance, message_json: *const c_char) -> i32 {
    ffi::post(h, message_json)
}

/// The next plugin → host message (one JSON-RPC object: a response, a `deliver` or
/// `host.request` request, a `log` or `plugin.closed` notification), or NULL when none came
/// within `timeout_ms` (0: do not wait; negative: wait until one comes). After
/// `plugin.closed` was returned, every call returns NULL at once. The caller owns the string
/// and frees it with `chp_string_free`. Any thread.
#[no_mangle]
pub unsafe extern "C" fn chp_next_message(h: *mut Instance, timeout_ms: i32) -> *mut c_char {
    ffi::next_message(h, timeout_ms)
}

/// A file descriptor that is readable while messages are queued (the read end of a
/// non-blocking pipe, owned by the instance: never close it). Wait on it, read and discard
/// its bytes, then call `chp_next_message(h, 0)` until it returns NULL. -1 where the platform
/// has none, or for a NULL `h`. Any thread.
#[no_mangle]
pub unsafe extern "C" fn chp_wakeup_fd(h: *mut Instance) -> i32 {
    ffi::wakeup_fd(h)
}

/// A blocking host → plugin request (`method` such as "status", `params_json` its params
/// or NULL for `{}`; both borrowed): returns the JSON-RPC response object, with a result or
/// an error, and never queues it. Its ids are a space of its own (`"call-N"`). Deliveries and
/// logs keep flowing through `chp_next_message` meanwhile, so do not call it from the thread
/// that answers deliveries. A NULL or non-UTF-8 `method` is a -32600 response, unreadable
/// params a -32700 one; NULL only for a NULL `h`. The caller owns the string and frees it with
/// `chp_string_free`. Any thread.
#[no_mangle]
pub unsafe extern "C" fn chp_call(
    h: *mut Instance,
    method: *const c_char,
    params_json: *const c_char,
) -> *mut c_char {
    ffi::call(h, method, params_json)
}

/// Stops the instance if it was not stopped (bounded, like `stop`; deliveries still waiting
/// are refused and come again after the next start), joins its threads and frees it. The
/// last call on `h`: no other thread may use `h` during or after it. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn chp_free(h: *mut Instance) {
    ffi::free(h)
}

/// Frees a string returned by this library (never use `free`). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn chp_string_free(s: *mut c_char) {
    ffi::string_free(s)
}
