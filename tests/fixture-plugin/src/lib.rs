//! A deliberately misbehaving channel plugin (`libfixture`), used by the end-to-end tests to
//! show that a panic inside a plugin method becomes an error value the host reports, instead
//! of taking the host process down.
//!
//! Behaviour: `start` succeeds; `send` panics; `call("panic")` panics, any other `call` echoes
//! its payload; `status` reports one account.

use plugin_abi::guard::{HostHandle, Plugin};
use plugin_abi::types::{
    AccountStatus, PluginDescription, PluginError, SendReceipt, SendRequest, StartContext,
    StartReport, StatusReport, StatusRequest,
};
use serde_json::Value;

pub struct Fixture {
    _host: HostHandle,
}

pub fn description() -> PluginDescription {
    PluginDescription {
        id: "fixture".into(),
        name: "Panicking fixture".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        abi_version: plugin_abi::ABI_VERSION.into(),
        methods: vec!["panic".into(), "echo".into()],
    }
}

pub fn make(host: HostHandle) -> Fixture {
    Fixture { _host: host }
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
            _ => Ok(payload),
        }
    }
}

plugin_abi::export_plugin!(crate::description, crate::make);
