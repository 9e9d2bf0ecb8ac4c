//! A deliberately misbehaving channel plugin (`libfixture`), used by the end-to-end tests to
//! show that a panic inside a plugin method becomes an error value the host reports, instead
//! of taking the host process down.
//!
//! Behaviour: `start` succeeds; `send` panics; `call("panic")` panics, any other `call` echoes
//! its payload; `status` reports one account.
//!
//! It also exports the C ABI (spec/host-protocol.md §2) exactly as a real channel plugin does,
//! one line per function over `plugin_abi::chp::ffi` (see [`chp`]), so the tests can drive the
//! generic machinery through `dlopen`, and the header `plugin-abi/include/channel_plugin.h` is
//! generated from that file. For those tests `call` also has `deliver` (hands its payload to
//! the host as an event), `request` (a `host.request`), `log` (that many log records), `hold`
//! (waits for `release`) and `release`.

pub mod chp;

use std::sync::{Arc, Condvar, Mutex};

use plugin_abi::guard::{HostHandle, Plugin};
use plugin_abi::types::{
    AccountStatus, LogRecord, PluginDescription, PluginError, SendReceipt, SendRequest,
    StartContext, StartReport, StatusReport, StatusRequest,
};
use serde_json::Value;

pub struct Fixture {
    host: HostHandle,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

pub fn description() -> PluginDescription {
    PluginDescription {
        id: "fixture".into(),
        name: "Panicking fixture".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        abi_version: plugin_abi::ABI_VERSION.into(),
        methods: vec![
            "panic".into(),
            "echo".into(),
            "deliver".into(),
            "request".into(),
            "log".into(),
            "hold".into(),
            "release".into(),
        ],
    }
}

pub fn make(host: HostHandle) -> Fixture {
    Fixture {
        host,
        gate: Arc::default(),
    }
}

impl Plugin for Fixture {
    fn describe(&self) -> PluginDescription {
        description()
    }

    fn start(&self, _ctx: StartContext) -> Result<StartReport, PluginError> {
        Ok(StartReport::default())
    }

    fn stop(&self) -> Result<(), PluginError> {
        Ok(())
    }

    fn send(&self, request: SendRequest) -> Result<SendReceipt, PluginError> {
        panic!("fixture send always panics (target {})", request.to);
    }

    fn status(&self, _request: StatusRequest) -> Result<StatusReport, PluginError> {
        Ok(StatusReport {
            accounts: vec![AccountStatus {
                account_id: "default".into(),
                state: "stopped".into(),
                ..Default::default()
            }],
        })
    }

    fn call(&self, method: &str, payload: Value) -> Result<Value, PluginError> {
        match method {
            "panic" => panic!("fixture panics on request"),
            "deliver" => self
                .host
                .deliver_json(&payload.to_string())
                .map(|()| serde_json::json!({"delivered": true})),
            "request" => self.host.request(
                payload["method"].as_str().unwrap_or_default(),
                &payload["payload"],
            ),
            "log" => {
                for n in 0..payload.as_u64().unwrap_or(0) {
                    self.host.log(&LogRecord {
                        level: "info".into(),
                        target: "fixture".into(),
                        message: format!("log {n}"),
                        fields: Default::default(),
                    });
                }
                Ok(serde_json::json!({}))
            }
            "hold" => {
                let (open, opened) = &*self.gate;
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                while !*open {
                    open = opened.wait(open).unwrap_or_else(|p| p.into_inner());
                }
                Ok(serde_json::json!("held"))
            }
            "release" => {
                *self.gate.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.gate.1.notify_all();
                Ok(serde_json::json!("released"))
            }
            _ => Ok(payload),
        }
    }
}

plugin_abi::export_plugin!(crate::description, crate::make);
