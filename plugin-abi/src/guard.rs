//! The plugin author's side: a safe Rust trait, and the adapter that turns it into the FFI
//! trait object with every entry point guarded.
//!
//! A panic that unwinds out of a trait-object method aborts the whole host process, so
//! [`Guarded`] runs each call under `catch_unwind` and turns a panic into a `panic` error.
//! Payload decoding also happens here, so plugin code only sees typed values.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::contract::ErrorCode;
use crate::types::{
    InboundEvent, LogRecord, PluginDescription, PluginError, SendReceipt, SendRequest,
    StartContext, StartReport, StatusReport, StatusRequest,
};
use crate::{ChannelPlugin, HostBox};

/// What a plugin implements. Mirrors [`ChannelPlugin`] with typed arguments.
pub trait Plugin: Send + Sync + 'static {
    fn describe(&self) -> PluginDescription;
    fn start(&self, ctx: StartContext) -> Result<StartReport, PluginError>;
    fn stop(&self) -> Result<(), PluginError>;
    fn send(&self, request: SendRequest) -> Result<SendReceipt, PluginError>;
    fn status(&self, request: StatusRequest) -> Result<StatusReport, PluginError>;
    fn call(&self, method: &str, payload: Value) -> Result<Value, PluginError>;
}

/// Wraps a [`Plugin`] as a [`ChannelPlugin`] whose methods never unwind.
pub struct Guarded<P>(pub P);

/// Runs `f`, turning a panic into a `panic` error that names the method.
pub fn guarded<T>(
    method: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(PluginError::new(
            ErrorCode::Panic,
            format!(
                "plugin panicked in {method}: {}",
                panic_text(payload.as_ref())
            ),
        )),
    }
}

/// The message a panic carried (`panic!("…")` payloads are `&str` or `String`).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string())
}

fn decode<T: DeserializeOwned>(method: &str, text: &str) -> Result<T, PluginError> {
    serde_json::from_str(text).map_err(|e| {
        PluginError::new(
            ErrorCode::BadPayload,
            format!("{method}: payload is not valid: {e}"),
        )
    })
}

fn encode<T: Serialize>(value: &T) -> Result<RString, PluginError> {
    serde_json::to_string(value)
        .map(RString::from)
        .map_err(|e| PluginError::new(ErrorCode::Internal, format!("encoding the result: {e}")))
}

fn to_ffi(result: Result<RString, PluginError>) -> RResult<RString, RString> {
    match result {
        Ok(text) => ROk(text),
        Err(e) => RErr(e.to_wire().into()),
    }
}

impl<P: Plugin> ChannelPlugin for Guarded<P> {
    fn describe(&self) -> RString {
        guarded("describe", || encode(&self.0.describe()))
            .unwrap_or_else(|e| RString::from(e.to_wire()))
    }

    fn start(&self, ctx: RStr<'_>) -> RResult<RString, RString> {
        to_ffi(guarded("start", || {
            let ctx = decode("start", ctx.as_str())?;
            encode(&self.0.start(ctx)?)
        }))
    }

    fn stop(&self) -> RResult<(), RString> {
        match guarded("stop", || self.0.stop()) {
            Ok(()) => ROk(()),
            Err(e) => RErr(e.to_wire().into()),
        }
    }

    fn send(&self, request: RStr<'_>) -> RResult<RString, RString> {
        to_ffi(guarded("send", || {
            let request = decode("send", request.as_str())?;
            encode(&self.0.send(request)?)
        }))
    }

    fn status(&self, request: RStr<'_>) -> RResult<RString, RString> {
        to_ffi(guarded("status", || {
            let request = decode("status", request.as_str())?;
            encode(&self.0.status(request)?)
        }))
    }

    fn call(&self, method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, RString> {
        to_ffi(guarded("call", || {
            let payload: Value = if payload.as_str().trim().is_empty() {
                Value::Null
            } else {
                decode(method.as_str(), payload.as_str())?
            };
            encode(&self.0.call(method.as_str(), payload)?)
        }))
    }
}

/// The plugin's typed handle on the host callbacks.
pub struct HostHandle(HostBox);

impl HostHandle {
    pub fn new(callbacks: HostBox) -> Self {
        HostHandle(callbacks)
    }

    /// Hands one event to the host; `Ok` means the host has taken responsibility for it.
    pub fn deliver(&self, event: &InboundEvent) -> Result<(), PluginError> {
        let text = serde_json::to_string(event).map_err(|e| {
            PluginError::new(ErrorCode::Internal, format!("encoding the event: {e}"))
        })?;
        match self.0.deliver(text.as_str().into()) {
            ROk(()) => Ok(()),
            RErr(e) => Err(PluginError::from_wire(e.as_str())),
        }
    }

    /// `deliver` for an event the caller already serialised (lets a hot path reuse its
    /// buffer).
    pub fn deliver_json(&self, event: &str) -> Result<(), PluginError> {
        match self.0.deliver(event.into()) {
            ROk(()) => Ok(()),
            RErr(e) => Err(PluginError::from_wire(e.as_str())),
        }
    }

    pub fn log(&self, record: &LogRecord) {
        if let Ok(text) = serde_json::to_string(record) {
            self.0.log(text.as_str().into());
        }
    }

    pub fn request(&self, method: &str, payload: &Value) -> Result<Value, PluginError> {
        let text = payload.to_string();
        match self.0.request(method.into(), text.as_str().into()) {
            ROk(reply) => Ok(serde_json::from_str(reply.as_str()).unwrap_or(Value::Null)),
            RErr(e) => Err(PluginError::from_wire(e.as_str())),
        }
    }
}

/// The exported `describe`: the description as JSON, never unwinding.
pub fn describe_ffi(describe: impl FnOnce() -> PluginDescription) -> RString {
    match guarded("describe", || encode(&describe())) {
        Ok(text) => text,
        Err(e) => e.to_wire().into(),
    }
}

/// The exported constructor: builds the plugin under a panic guard and wraps it.
pub fn new_ffi<P: Plugin>(
    callbacks: HostBox,
    make: impl FnOnce(HostHandle) -> P,
) -> RResult<crate::PluginBox, RString> {
    match guarded("new", || Ok(make(HostHandle::new(callbacks)))) {
        Ok(plugin) => ROk(crate::ChannelPlugin_TO::from_value(
            Guarded(plugin),
            abi_stable::sabi_trait::TD_Opaque,
        )),
        Err(e) => RErr(e.to_wire().into()),
    }
}

/// Exports the root module of a plugin library:
/// `export_plugin!(description_fn, constructor_fn_taking_HostHandle)`. The crate must depend on
/// `abi_stable` (the attribute expands to paths in it).
#[macro_export]
macro_rules! export_plugin {
    ($describe:path, $make:path) => {
        #[::abi_stable::export_root_module]
        fn __channel_plugin_root_module() -> $crate::PluginModRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;
            extern "C" fn describe() -> ::abi_stable::std_types::RString {
                $crate::guard::describe_ffi($describe)
            }
            extern "C" fn new(
                callbacks: $crate::HostBox,
            ) -> ::abi_stable::std_types::RResult<$crate::PluginBox, ::abi_stable::std_types::RString>
            {
                $crate::guard::new_ffi(callbacks, $make)
            }
            $crate::PluginMod { describe, new }.leak_into_prefix()
        }
    };
}
