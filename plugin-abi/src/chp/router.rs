//! Host → plugin requests onto the [`ChannelPlugin`] methods: params checked against the
//! serde types first (so a wrong field is `-32602` naming it), the plugin's errors as
//! `-32000`/`-32001`, and a panic anywhere caught.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RResult, RString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::rpc::{self, RpcError, METHOD_NOT_FOUND};
use crate::guard::panic_text;
use crate::types::{PluginDescription, PluginError, SendRequest, StartContext, StatusRequest};
use crate::PluginBox;

/// The protocol version `describe` reports (spec §1).
pub const PROTOCOL_VERSION: &str = "1.0";

/// The method name whose result is `describe().configSchema`, when the plugin lists it.
pub const CONFIG_SCHEMA_METHOD: &str = "config.schema";

#[derive(Deserialize)]
struct CallParams {
    method: String,
    #[serde(default)]
    payload: Value,
}

/// Runs one request (never `stop`: the instance owns that) and returns the result as JSON
/// text.
pub(crate) fn dispatch(
    plugin: &PluginBox,
    method: &str,
    params: &Value,
) -> Result<String, RpcError> {
    match catch_unwind(AssertUnwindSafe(|| route(plugin, method, params))) {
        Ok(outcome) => outcome,
        Err(payload) => Err(RpcError::plugin(PluginError::new(
            "panic",
            format!(
                "plugin panicked in {method}: {}",
                panic_text(payload.as_ref())
            ),
        ))),
    }
}

fn route(plugin: &PluginBox, method: &str, params: &Value) -> Result<String, RpcError> {
    match method {
        "describe" => describe(plugin),
        "start" => {
            rpc::params::<StartContext>(method, params)?;
            answer(plugin.start(params.to_string().as_str().into()))
        }
        "send" => {
            rpc::params::<SendRequest>(method, params)?;
            answer(plugin.send(params.to_string().as_str().into()))
        }
        "status" => {
            let request: StatusRequest = rpc::params(method, params)?;
            let text = serde_json::to_string(&request).unwrap_or_else(|_| "{}".into());
            answer(plugin.status(text.as_str().into()))
        }
        "call" => {
            let call: CallParams = rpc::params(method, params)?;
            let payload = call.payload.to_string();
            answer(plugin.call(call.method.as_str().into(), payload.as_str().into()))
        }
        other => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {other} (the methods are describe, start, stop, send, status and call)"),
        )),
    }
}

fn answer(result: RResult<RString, RString>) -> Result<String, RpcError> {
    result
        .into_result()
        .map(String::from)
        .map_err(|e| RpcError::plugin(PluginError::from_wire(e.as_str())))
}

fn describe(plugin: &PluginBox) -> Result<String, RpcError> {
    let text = plugin.describe();
    let schema = |methods: &[String]| {
        if !methods.iter().any(|m| m == CONFIG_SCHEMA_METHOD) {
            return None;
        }
        let text = plugin
            .call(CONFIG_SCHEMA_METHOD.into(), "{}".into())
            .into_result()
            .ok()?;
        serde_json::from_str(text.as_str()).ok()
    };
    describe_result(text.as_str(), schema).map(|v| v.to_string())
}

/// The `describe` result: the plugin's [`PluginDescription`] (unknown fields kept) plus
/// `protocolVersion`, and `configSchema` when the plugin answers `config.schema`. Shared with
/// `chp_describe`.
pub fn describe_result(
    description: &str,
    schema: impl FnOnce(&[String]) -> Option<Value>,
) -> Result<Value, RpcError> {
    let invalid = |e: serde_json::Error| {
        // The guard turns a failed describe into an error value instead of a description.
        let error = serde_json::from_str::<PluginError>(description).unwrap_or_else(|_| {
            PluginError::internal(format!("the plugin's description is not valid: {e}"))
        });
        RpcError::plugin(error)
    };
    let mut value: Value = serde_json::from_str(description).map_err(invalid)?;
    let parsed = PluginDescription::deserialize(&value).map_err(invalid)?;
    value["protocolVersion"] = json!(PROTOCOL_VERSION);
    if let Some(schema) = schema(&parsed.methods) {
        value["configSchema"] = schema;
    }
    Ok(value)
}
