//! The C ABI (spec/host-protocol.md §2) through `dlopen`, as a C, Python or Node host uses it:
//! the fixture library exports the ten `chp_*` functions over plugin-abi's machinery. Also
//! compiles a C99 program against the committed header and runs it.

mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

use serde_json::{json, Value};

type Instance = c_void;

/// The library's `chp_*` functions, resolved once.
struct Chp {
    abi_version: extern "C" fn() -> u32,
    describe: extern "C" fn() -> *mut c_char,
    new: unsafe extern "C" fn(*const c_char) -> *mut Instance,
    last_error: extern "C" fn() -> *mut c_char,
    post: unsafe extern "C" fn(*mut Instance, *const c_char) -> i32,
    next_message: unsafe extern "C" fn(*mut Instance, i32) -> *mut c_char,
    wakeup_fd: unsafe extern "C" fn(*mut Instance) -> i32,
    call: unsafe extern "C" fn(*mut Instance, *const c_char, *const c_char) -> *mut c_char,
    free: unsafe extern "C" fn(*mut Instance),
    string_free: unsafe extern "C" fn(*mut c_char),
}

/// # Safety
/// `F` is the function pointer type the header declares for `name`.
unsafe fn symbol<F>(lib: *mut c_void, name: &str) -> F {
    let c = CString::new(name).unwrap();
    // SAFETY: `lib` is a live dlopen handle and `c` a NUL-terminated name.
    let f = unsafe { libc::dlsym(lib, c.as_ptr()) };
    assert!(!f.is_null(), "the fixture library exports {name}");
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller's contract above; sizes checked.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&f) }
}

fn chp() -> &'static Chp {
    static CHP: std::sync::OnceLock<Chp> = std::sync::OnceLock::new();
    CHP.get_or_init(|| {
        let path = CString::new(common::plugin_library("fixture").to_str().unwrap()).unwrap();
        // SAFETY: loads the fixture library; it is never unloaded (spec §2).
        let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!lib.is_null(), "dlopen of the fixture library");
        // SAFETY: each symbol has the signature the header declares for it.
        unsafe {
            Chp {
                abi_version: symbol(lib, "chp_abi_version"),
                describe: symbol(lib, "chp_describe"),
                new: symbol(lib, "chp_new"),
                last_error: symbol(lib, "chp_last_error"),
                post: symbol(lib, "chp_post"),
                next_message: symbol(lib, "chp_next_message"),
                wakeup_fd: symbol(lib, "chp_wakeup_fd"),
                call: symbol(lib, "chp_call"),
                free: symbol(lib, "chp_free"),
                string_free: symbol(lib, "chp_string_free"),
            }
        }
    })
}

/// Takes ownership of a returned string: its text, freed with `chp_string_free`.
fn take(s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string this library returned, freed once right after.
    let text = unsafe { CStr::from_ptr(s) }.to_str().unwrap().to_string();
    unsafe { (chp().string_free)(s) };
    Some(text)
}

/// One instance, freed on drop.
struct Handle(*mut Instance);
// SAFETY: every chp_* function except chp_free may be called from any thread (spec §2).
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Handle {
    fn new(options: Option<&str>) -> Handle {
        let options = options.map(|o| CString::new(o).unwrap());
        let ptr = options.as_ref().map_or(std::ptr::null(), |o| o.as_ptr());
        // SAFETY: NULL or a live C string.
        let h = unsafe { (chp().new)(ptr) };
        assert!(!h.is_null(), "chp_new: {:?}", take((chp().last_error)()));
        Handle(h)
    }

    fn post(&self, message: &str) -> i32 {
        let c = CString::new(message).unwrap();
        // SAFETY: a live instance and C string.
        unsafe { (chp().post)(self.0, c.as_ptr()) }
    }

    fn request(&self, id: u64, method: &str, params: Value) {
        let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        assert_eq!(self.post(&text.to_string()), 0);
    }

    /// The next message within 10 s (a positive marker, never a fixed sleep).
    fn next(&self) -> Value {
        let text = self.next_within(10_000).expect("a message within 10 s");
        serde_json::from_str(&text).unwrap()
    }

    fn next_within(&self, timeout_ms: i32) -> Option<String> {
        // SAFETY: a live instance.
        take(unsafe { (chp().next_message)(self.0, timeout_ms) })
    }

    fn call(&self, method: &str, params: &str) -> Value {
        let (m, p) = (CString::new(method).unwrap(), CString::new(params).unwrap());
        // SAFETY: a live instance and C strings.
        let text = take(unsafe { (chp().call)(self.0, m.as_ptr(), p.as_ptr()) }).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the last call on this instance.
        unsafe { (chp().free)(self.0) }
    }
}

#[test]
fn version_and_describe_need_no_instance() {
    assert_eq!((chp().abi_version)(), 1 << 16);
    let described: Value = serde_json::from_str(&take((chp().describe)()).unwrap()).unwrap();
    assert_eq!(described["id"], "fixture");
    assert_eq!(described["protocolVersion"], "1.0");
}

#[test]
fn bad_options_are_null_with_a_last_error_naming_the_field() {
    let bad = CString::new(r#"{"ackTimeoutMs": "soon"}"#).unwrap();
    // SAFETY: a live C string.
    let h = unsafe { (chp().new)(bad.as_ptr()) };
    assert!(h.is_null());
    let error: Value = serde_json::from_str(&take((chp().last_error)()).unwrap()).unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("ackTimeoutMs"),
        "{error}"
    );
    // Another thread has its own last error.
    let other = std::thread::spawn(|| take((chp().last_error)()))
        .join()
        .unwrap();
    assert_eq!(other, None);
    drop(Handle::new(None));
    assert_eq!(take((chp().last_error)()), None, "a success clears it");
}

#[test]
fn null_and_non_utf8_arguments_get_clear_answers_not_crashes() {
    let h = Handle::new(Some("{}"));
    let invalid = [0xffu8, 0xfe, 0];
    // SAFETY: NULL pointers and a NUL-terminated non-UTF-8 byte string.
    unsafe {
        assert_eq!((chp().post)(std::ptr::null_mut(), c"{}".as_ptr()), -2);
        assert_eq!((chp().post)(h.0, std::ptr::null()), -2);
        assert_eq!((chp().post)(h.0, invalid.as_ptr().cast()), -2);
        assert!((chp().next_message)(std::ptr::null_mut(), 0).is_null());
        assert_eq!((chp().wakeup_fd)(std::ptr::null_mut()), -1);
        assert!((chp().call)(std::ptr::null_mut(), c"status".as_ptr(), std::ptr::null()).is_null());
        let no_method = take((chp().call)(h.0, std::ptr::null(), std::ptr::null())).unwrap();
        assert!(no_method.contains("-32600"), "{no_method}");
        let bad_params = take((chp().call)(
            h.0,
            c"status".as_ptr(),
            invalid.as_ptr().cast(),
        ))
        .unwrap();
        assert!(bad_params.contains("-32700"), "{bad_params}");
        (chp().free)(std::ptr::null_mut());
        (chp().string_free)(std::ptr::null_mut());
    }
    // NULL params are `{}`.
    // SAFETY: a live instance and C string.
    let status = take(unsafe { (chp().call)(h.0, c"status".as_ptr(), std::ptr::null()) }).unwrap();
    assert!(status.contains("\"accounts\""), "{status}");
}

#[test]
fn malformed_json_unknown_methods_and_panics_are_answered_on_the_queue() {
    let h = Handle::new(None);
    assert_eq!(
        h.post("{\"jsonrpc\": "),
        0,
        "accepted, answered on the queue"
    );
    assert_eq!(h.next()["error"]["code"], -32700);
    h.request(2, "teleport", json!({}));
    let unknown = h.next();
    assert_eq!(
        (unknown["id"].clone(), unknown["error"]["code"].clone()),
        (json!(2), json!(-32601))
    );
    h.request(3, "send", json!({"to": "chat_id:1", "text": "x"}));
    let panicked = h.next();
    assert_eq!(
        panicked["error"]["code"], -32001,
        "the fixture's send panics: {panicked}"
    );
    h.request(4, "send", json!({"to": []}));
    let wrong = h.next();
    assert_eq!(wrong["error"]["code"], -32602);
    assert!(
        wrong["error"]["message"]
            .as_str()
            .unwrap()
            .contains("to: invalid type"),
        "{wrong}"
    );
    assert_eq!(
        h.call("status", "{}")["result"]["accounts"][0]["accountId"],
        "default"
    );
}

fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one live descriptor, waiting at most 10 s.
    unsafe { libc::poll(&mut pfd, 1, 10_000) == 1 }
}

#[test]
fn a_delivery_through_the_wakeup_fd_refused_then_acknowledged() {
    let h = Handle::new(Some(r#"{"ackTimeoutMs": 60000}"#));
    // SAFETY: a live instance.
    let fd = unsafe { (chp().wakeup_fd)(h.0) };
    assert!(fd >= 0);
    let event = json!({"type": "message", "messageId": "A"});
    h.request(1, "call", json!({"method": "deliver", "payload": event}));
    assert!(readable(fd), "the deliver request wakes the host");
    let deliver: Value = serde_json::from_str(&h.next_within(0).unwrap()).unwrap();
    assert_eq!(
        (deliver["method"].clone(), deliver["params"].clone()),
        (json!("deliver"), event.clone())
    );
    let refuse =
        json!({"jsonrpc": "2.0", "id": deliver["id"], "error": {"code": 1, "message": "not now"}});
    assert_eq!(h.post(&refuse.to_string()), 0);
    assert!(h.next()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not now"));

    h.request(2, "call", json!({"method": "deliver", "payload": event}));
    let again = h.next();
    assert_eq!(again["params"]["messageId"], "A");
    assert_ne!(again["id"], deliver["id"], "a new request id");
    let ack = json!({"jsonrpc": "2.0", "id": again["id"], "result": {}});
    assert_eq!(h.post(&ack.to_string()), 0);
    assert_eq!(h.next()["result"], json!({"delivered": true}));
    assert_eq!(h.next_within(0), None);
}

#[test]
fn eight_threads_posting_status_at_once() {
    let h = Arc::new(Handle::new(None));
    let posters: Vec<_> = (0..8u64)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for n in 0..25 {
                    h.request(t * 100 + n, "status", json!({}));
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    let mut ids: Vec<u64> = (0..200)
        .map(|_| {
            let answer = h.next();
            assert_eq!(answer["result"]["accounts"][0]["state"], "stopped");
            answer["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<u64> = (0..8)
        .flat_map(|t| (0..25).map(move |n| t * 100 + n))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[test]
fn stop_ends_with_plugin_closed_and_later_posts_are_refused() {
    let h = Handle::new(None);
    h.request(1, "stop", json!({}));
    assert_eq!(h.next()["result"], json!({}));
    assert_eq!(h.next()["method"], "plugin.closed");
    assert_eq!(h.next_within(-1), None, "NULL at once after plugin.closed");
    assert_eq!(h.post(r#"{"jsonrpc":"2.0","id":2,"method":"status"}"#), -1);
}

#[test]
fn free_stops_a_running_instance_with_a_request_in_flight() {
    let h = Handle::new(None);
    h.request(1, "call", json!({"method": "hold"}));
    // Release from another request so `free` has nothing left to wait out.
    assert_eq!(
        h.call("call", r#"{"method":"release"}"#)["result"],
        "released"
    );
    drop(h);
}

/// A C99 program that includes the committed header, links the fixture library and speaks
/// the protocol: compiled with `cc -std=c99 -Wall -Werror`.
const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include "channel_plugin.h"

int main(void) {
    if ((chp_abi_version() >> 16) != CHP_ABI_VERSION_MAJOR) return 10;
    chp_instance *h = chp_new(NULL);
    if (h == NULL) return 11;
    char *status = chp_call(h, "status", "{}");
    if (status == NULL || strstr(status, "\"accounts\"") == NULL) return 12;
    chp_string_free(status);
    if (chp_post(h, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"stop\"}") != 0) return 13;
    int closed = 0;
    char *m;
    while ((m = chp_next_message(h, 10000)) != NULL) {
        if (strstr(m, "plugin.closed") != NULL) closed = 1;
        chp_string_free(m);
    }
    chp_free(h);
    if (!closed) return 14;
    printf("ok\n");
    return 0;
}
"#;

#[test]
fn the_header_compiles_in_a_c99_program_that_runs() {
    let Ok(cc) = which_cc() else {
        let line = "NO C COMPILER (cc): the C99 header test did not run";
        assert!(
            std::env::var_os("CI").is_none(),
            "{line}, and CI must have one"
        );
        eprintln!("!!!!!!!! {line} !!!!!!!!");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("host.c");
    std::fs::write(&source, C_PROGRAM).unwrap();
    // Its own copy: cargo's LD_LIBRARY_PATH (which beats the rpath) may hold a stale one.
    let library = common::plugin_library("fixture");
    let lib_dir = dir.path();
    std::fs::copy(&library, lib_dir.join(library.file_name().unwrap())).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-abi/include");
    let binary = dir.path().join("host");
    let out = std::process::Command::new(cc)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-I",
            include,
        ])
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lfixture")
        .output()
        .unwrap();
    assert!(out.status.success(), "cc failed:\n{}", common::stderr(&out));
    let run = std::process::Command::new(&binary)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_eq!(
        (run.status.code(), common::stdout(&run).as_str()),
        (Some(0), "ok\n"),
        "{}",
        common::stderr(&run)
    );
}

fn which_cc() -> Result<&'static str, ()> {
    let found = std::process::Command::new("cc").arg("--version").output();
    found.map(|_| "cc").map_err(|_| ())
}
