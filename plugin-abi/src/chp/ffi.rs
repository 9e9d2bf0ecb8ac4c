//! The bodies of the ten `chp_*` C functions (spec §2), so a plugin's exports are one line
//! each: NULL and non-UTF-8 arguments, string ownership, the thread's last error, and a
//! panic boundary around everything.
//!
//! ```ignore
//! #[no_mangle]
//! pub unsafe extern "C" fn chp_post(h: *mut Instance, message_json: *const c_char) -> i32 {
//!     plugin_abi::chp::ffi::post(h, message_json)
//! }
//! ```

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe, UnwindSafe};
use std::time::Duration;

use serde_json::Value;

use super::instance::{Instance, Options};
use super::router::describe_result;
use super::rpc::{self, RpcError};
use crate::guard::panic_text;
use crate::types::{PluginDescription, PluginError};
use crate::{HostBox, PluginBox};

/// `CHP_ABI_VERSION_MAJOR`: a host refuses a library whose major differs.
pub const ABI_VERSION_MAJOR: u32 = 1;
/// `CHP_ABI_VERSION_MINOR`: grows when functions are added.
pub const ABI_VERSION_MINOR: u32 = 0;

/// `chp_post` return codes.
pub const POST_OK: i32 = 0;
pub const POST_CLOSED: i32 = -1;
pub const POST_BAD_ARGUMENT: i32 = -2;
pub const POST_TOO_MANY: i32 = -3;
pub const POST_PANIC: i32 = -4;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn set_last_error(error: &PluginError) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(error.to_wire()));
}

/// An owned C string for the caller (freed with `chp_string_free`); NULL if `text` holds a
/// NUL byte (JSON text never does: serde escapes it).
fn to_c(text: String) -> *mut c_char {
    CString::new(text).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// A borrowed C string as `&str`; `None` for NULL or non-UTF-8.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that outlives the call.
unsafe fn from_c<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the caller's contract above.
    unsafe { CStr::from_ptr(s) }.to_str().ok()
}

/// Runs `f`, returning `on_panic` if it panics (nothing unwinds into C).
fn guard<T>(on_panic: T, f: impl FnOnce() -> T + UnwindSafe) -> T {
    catch_unwind(f).unwrap_or(on_panic)
}

/// `chp_abi_version`: `(major << 16) | minor`.
pub fn abi_version() -> u32 {
    (ABI_VERSION_MAJOR << 16) | ABI_VERSION_MINOR
}

/// `chp_describe`: the `describe` result without an instance. `config_schema` is the
/// channel's config schema, when it has one.
pub fn describe(
    description: impl FnOnce() -> PluginDescription,
    config_schema: impl FnOnce() -> Option<Value>,
) -> *mut c_char {
    let run = AssertUnwindSafe(|| {
        let text = serde_json::to_string(&description()).unwrap_or_default();
        match describe_result(&text, |_| config_schema()) {
            Ok(value) => to_c(value.to_string()),
            Err(e) => {
                set_last_error(&PluginError::internal(e.message));
                std::ptr::null_mut()
            }
        }
    });
    catch_unwind(run).unwrap_or_else(|p| {
        set_last_error(&PluginError::new(
            "panic",
            format!("plugin panicked in describe: {}", panic_text(p.as_ref())),
        ));
        std::ptr::null_mut()
    })
}

/// `chp_new`: NULL on failure, with the reason in this thread's `chp_last_error`.
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string alive for the call.
pub unsafe fn new(
    options_json: *const c_char,
    make: impl FnOnce(HostBox) -> Result<PluginBox, PluginError>,
) -> *mut Instance {
    let run = AssertUnwindSafe(|| {
        let options = if options_json.is_null() {
            None
        } else {
            // SAFETY: the caller's contract above.
            match unsafe { from_c(options_json) } {
                Some(text) => Some(text),
                None => return Err(PluginError::invalid_request("options: not UTF-8")),
            }
        };
        let options = Options::parse(options)?;
        Instance::new(options, make)
    });
    let outcome = catch_unwind(run).unwrap_or_else(|p| {
        Err(PluginError::new(
            "panic",
            format!("plugin panicked in chp_new: {}", panic_text(p.as_ref())),
        ))
    });
    match outcome {
        Ok(instance) => {
            LAST_ERROR.with(|e| *e.borrow_mut() = None);
            Box::into_raw(Box::new(instance))
        }
        Err(e) => {
            set_last_error(&e);
            std::ptr::null_mut()
        }
    }
}

/// `chp_last_error`: a copy of this thread's last failure (a `PluginError` as JSON), or NULL.
pub fn last_error() -> *mut c_char {
    guard(std::ptr::null_mut(), || {
        LAST_ERROR
            .with(|e| e.borrow().clone())
            .map_or(std::ptr::null_mut(), to_c)
    })
}

/// `chp_post`: 0 accepted, -1 closed, -2 NULL or not UTF-8, -3 too many queued, -4 panic.
///
/// # Safety
/// `h` is NULL or a live `chp_new` result; `message_json` NULL or a NUL-terminated string.
pub unsafe fn post(h: *mut Instance, message_json: *const c_char) -> i32 {
    // SAFETY: the caller's contract above; only shared access is taken.
    let (Some(instance), Some(message)) = (unsafe { h.as_ref() }, unsafe { from_c(message_json) })
    else {
        return POST_BAD_ARGUMENT;
    };
    guard(
        POST_PANIC,
        AssertUnwindSafe(|| match instance.post(message) {
            Ok(()) => POST_OK,
            Err(e) => e.code(),
        }),
    )
}

/// `chp_next_message`: the next message or NULL (`timeout_ms` 0: no wait; negative: until
/// one comes or the instance closed).
///
/// # Safety
/// `h` is NULL or a live `chp_new` result.
pub unsafe fn next_message(h: *mut Instance, timeout_ms: i32) -> *mut c_char {
    // SAFETY: the caller's contract above.
    let Some(instance) = (unsafe { h.as_ref() }) else {
        return std::ptr::null_mut();
    };
    let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
    guard(
        std::ptr::null_mut(),
        AssertUnwindSafe(|| {
            instance
                .next_message(timeout)
                .map_or(std::ptr::null_mut(), to_c)
        }),
    )
}

/// `chp_wakeup_fd`: the read end of the wakeup pipe, or -1.
///
/// # Safety
/// `h` is NULL or a live `chp_new` result.
pub unsafe fn wakeup_fd(h: *mut Instance) -> i32 {
    // SAFETY: the caller's contract above.
    unsafe { h.as_ref() }.map_or(-1, Instance::wakeup_fd)
}

/// `chp_call`: the JSON-RPC response object. A NULL or non-UTF-8 method is a `-32600`
/// response, unreadable params `-32700`; NULL only for a NULL `h`.
///
/// # Safety
/// `h` is NULL or a live `chp_new` result; the strings NULL or NUL-terminated.
pub unsafe fn call(
    h: *mut Instance,
    method: *const c_char,
    params_json: *const c_char,
) -> *mut c_char {
    // SAFETY: the caller's contract above.
    let Some(instance) = (unsafe { h.as_ref() }) else {
        return std::ptr::null_mut();
    };
    let id = Value::Null;
    // SAFETY: as above.
    let (method, params) = unsafe {
        (
            from_c(method),
            params_json
                .is_null()
                .then_some("{}")
                .or_else(|| from_c(params_json)),
        )
    };
    let Some(method) = method else {
        let error = RpcError::new(
            rpc::INVALID_REQUEST,
            "invalid request: method is NULL or not UTF-8",
        );
        return to_c(rpc::response_text(&id, Err(error)));
    };
    let params: Value = match params.map(serde_json::from_str) {
        Some(Ok(params)) => params,
        Some(Err(e)) => {
            let error = RpcError::new(rpc::PARSE_ERROR, format!("parse error: params: {e}"));
            return to_c(rpc::response_text(&id, Err(error)));
        }
        None => {
            let error = RpcError::new(rpc::PARSE_ERROR, "parse error: params: not UTF-8");
            return to_c(rpc::response_text(&id, Err(error)));
        }
    };
    guard(
        std::ptr::null_mut(),
        AssertUnwindSafe(|| to_c(instance.call(method, &params))),
    )
}

/// `chp_free`: stops (bounded), joins, frees. NULL is ignored.
///
/// # Safety
/// `h` is NULL or a live `chp_new` result that no other thread uses, and is not used after.
pub unsafe fn free(h: *mut Instance) {
    if h.is_null() {
        return;
    }
    // SAFETY: the caller's contract above: `h` came from Box::into_raw in `new`.
    let instance = unsafe { Box::from_raw(h) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}

/// `chp_string_free`: frees a string this library returned. NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string returned by a `chp_*` function of this library, freed once.
pub unsafe fn string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the caller's contract above: `s` came from CString::into_raw in `to_c`.
        drop(unsafe { CString::from_raw(s) });
    }
}
