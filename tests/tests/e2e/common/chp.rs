//! A plugin library's C ABI (spec/host-protocol.md §2) through `dlopen`, as a C, Python or
//! Node host resolves it: the ten `chp_*` functions with the header's signatures.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// An opaque `chp_instance *`.
pub type Instance = c_void;

/// One library's `chp_*` functions, with the signatures of channel_plugin.h.
pub struct Chp {
    pub abi_version: extern "C" fn() -> u32,
    pub describe: extern "C" fn() -> *mut c_char,
    pub new: unsafe extern "C" fn(*const c_char) -> *mut Instance,
    pub last_error: extern "C" fn() -> *mut c_char,
    pub post: unsafe extern "C" fn(*mut Instance, *const c_char) -> i32,
    pub next_message: unsafe extern "C" fn(*mut Instance, i32) -> *mut c_char,
    pub wakeup_fd: unsafe extern "C" fn(*mut Instance) -> i32,
    pub call: unsafe extern "C" fn(*mut Instance, *const c_char, *const c_char) -> *mut c_char,
    pub free: unsafe extern "C" fn(*mut Instance),
    pub string_free: unsafe extern "C" fn(*mut c_char),
}

impl Chp {
    /// Takes ownership of a returned string: its text, the string freed with
    /// `chp_string_free`.
    pub fn take(&self, s: *mut c_char) -> Option<String> {
        if s.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated string this library returned, freed once right after.
        let text = unsafe { CStr::from_ptr(s) }
            .to_str()
            .expect("returned strings are UTF-8")
            .to_string();
        // SAFETY: returned by this library and not freed before.
        unsafe { (self.string_free)(s) };
        Some(text)
    }
}

/// # Safety
/// `F` is the function pointer type the header declares for `name`.
unsafe fn symbol<F>(lib: *mut c_void, lib_name: &str, name: &str) -> F {
    let c = CString::new(name).unwrap();
    // SAFETY: `lib` is a live dlopen handle and `c` a NUL-terminated name.
    let f = unsafe { libc::dlsym(lib, c.as_ptr()) };
    assert!(!f.is_null(), "lib{lib_name} exports {name}");
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller's contract above; sizes checked.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&f) }
}

/// The `chp_*` functions of the built plugin library `lib_name` (`imessage`, `fixture`),
/// loaded once per process and never unloaded (spec §2).
pub fn library(lib_name: &str) -> &'static Chp {
    static LOADED: OnceLock<Mutex<HashMap<String, &'static Chp>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    loaded
        .entry(lib_name.to_string())
        .or_insert_with(|| Box::leak(Box::new(load(lib_name))))
}

fn load(lib_name: &str) -> Chp {
    let path = super::plugin_library(lib_name);
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: loads a plugin library of this workspace; it is never unloaded.
    let lib = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen {}", path.display());
    // SAFETY: each symbol has the signature the header declares for it.
    unsafe {
        Chp {
            abi_version: symbol(lib, lib_name, "chp_abi_version"),
            describe: symbol(lib, lib_name, "chp_describe"),
            new: symbol(lib, lib_name, "chp_new"),
            last_error: symbol(lib, lib_name, "chp_last_error"),
            post: symbol(lib, lib_name, "chp_post"),
            next_message: symbol(lib, lib_name, "chp_next_message"),
            wakeup_fd: symbol(lib, lib_name, "chp_wakeup_fd"),
            call: symbol(lib, lib_name, "chp_call"),
            free: symbol(lib, lib_name, "chp_free"),
            string_free: symbol(lib, lib_name, "chp_string_free"),
        }
    }
}
