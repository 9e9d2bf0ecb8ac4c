//! JSON-RPC 2.0 at the edge: what the host posted (decoded once into [`Incoming`]), the
//! error values of spec §1, and the text of every message the plugin sends back. Pure: no
//! queue, no threads.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::types::PluginError;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const PLUGIN_ERROR: i64 = -32000;
pub const PLUGIN_PANIC: i64 = -32001;
/// Local outcomes of a plugin → host request that never reach the wire.
pub(crate) const STOPPING: i64 = -1;
pub(crate) const TIMEOUT: i64 = -2;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// A plugin's error value: `-32001` for a caught panic, else `-32000`; `data` is the
    /// `PluginError`.
    pub fn plugin(error: PluginError) -> RpcError {
        let code = if error.code == "panic" {
            PLUGIN_PANIC
        } else {
            PLUGIN_ERROR
        };
        RpcError {
            code,
            message: error.message.clone(),
            data: serde_json::to_value(&error).ok(),
        }
    }

    pub(crate) fn stopping() -> RpcError {
        RpcError::new(
            STOPPING,
            "the instance is stopping; the host will get this again",
        )
    }

    pub(crate) fn timeout(method: &str, after: std::time::Duration) -> RpcError {
        RpcError::new(
            TIMEOUT,
            format!("no response to {method} within {} ms", after.as_millis()),
        )
    }
}

/// One message the host posted, decoded.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// `id` is `None` for a notification (no response is sent).
    Request {
        id: Option<Value>,
        method: String,
        params: Value,
    },
    Response {
        id: Value,
        reply: Result<String, RpcError>,
    },
    /// Not a JSON-RPC message: answered with this error (`-32700` or `-32600`).
    Invalid { id: Value, error: RpcError },
}

/// Decodes one posted message. Never fails: bad input becomes [`Incoming::Invalid`].
pub fn decode(text: &str) -> Incoming {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Incoming::Invalid {
                id: Value::Null,
                error: RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
            }
        }
    };
    let invalid = |id: Value, why: &str| Incoming::Invalid {
        id,
        error: RpcError::new(INVALID_REQUEST, format!("invalid request: {why}")),
    };
    let Value::Object(mut map) = value else {
        return invalid(
            Value::Null,
            "expected one JSON object (batches are not supported)",
        );
    };
    let id = map.remove("id");
    if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(id.unwrap_or(Value::Null), "jsonrpc: expected \"2.0\"");
    }
    match (map.remove("method"), id) {
        (Some(Value::String(method)), id) => Incoming::Request {
            id,
            method,
            params: map.remove("params").unwrap_or(Value::Null),
        },
        (Some(_), id) => invalid(id.unwrap_or(Value::Null), "method: expected a string"),
        (None, Some(id)) => response(id, map),
        (None, None) => invalid(Value::Null, "neither a method nor an id"),
    }
}

fn response(id: Value, mut map: serde_json::Map<String, Value>) -> Incoming {
    match (map.remove("result"), map.remove("error")) {
        (Some(result), None) => Incoming::Response {
            id,
            reply: Ok(result.to_string()),
        },
        (None, Some(error)) => match serde_json::from_value::<RpcError>(error) {
            Ok(error) => Incoming::Response {
                id,
                reply: Err(error),
            },
            Err(e) => Incoming::Invalid {
                id,
                error: RpcError::new(INVALID_REQUEST, format!("invalid request: error: {e}")),
            },
        },
        _ => Incoming::Invalid {
            id,
            error: RpcError::new(
                INVALID_REQUEST,
                "invalid request: a response has exactly one of result and error",
            ),
        },
    }
}

/// Decodes `params` as `T`; the error names the field (`to: invalid type: …`).
pub fn params<T: DeserializeOwned>(method: &str, params: &Value) -> Result<T, RpcError> {
    let empty = Value::Object(Default::default());
    let params = if params.is_null() { &empty } else { params };
    serde_path_to_error::deserialize::<_, T>(params).map_err(|e| {
        let path = e.path().to_string();
        let mut error = if path == "." {
            RpcError::new(INVALID_PARAMS, format!("{method} params: {}", e.inner()))
        } else {
            RpcError::new(
                INVALID_PARAMS,
                format!("{method} params: {path}: {}", e.inner()),
            )
        };
        error.data = Some(json!({"path": path}));
        error
    })
}

#[derive(Serialize)]
struct Message<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
}

const EMPTY: Message<'static> = Message {
    jsonrpc: "2.0",
    id: None,
    method: None,
    params: None,
    result: None,
    error: None,
};

fn write(message: &Message<'_>) -> String {
    // Only strings, numbers and already-checked JSON: serialising cannot fail.
    serde_json::to_string(message).unwrap_or_default()
}

/// The response to request `id`: `result` is JSON text, copied as it is once checked (bad
/// text becomes an error).
pub fn response_text(id: &Value, outcome: Result<String, RpcError>) -> String {
    let checked = outcome.and_then(|text| {
        RawValue::from_string(text).map_err(|e| {
            RpcError::plugin(PluginError::internal(format!(
                "the plugin answered with invalid JSON: {e}"
            )))
        })
    });
    match &checked {
        Ok(result) => write(&Message {
            id: Some(id),
            result: Some(result),
            ..EMPTY
        }),
        Err(error) => write(&Message {
            id: Some(id),
            error: Some(error),
            ..EMPTY
        }),
    }
}

/// A plugin → host request; `params` is copied as it is.
pub(crate) fn request_text(id: u64, method: &str, params: &RawValue) -> String {
    write(&Message {
        id: Some(&Value::from(id)),
        method: Some(method),
        params: Some(params),
        ..EMPTY
    })
}
