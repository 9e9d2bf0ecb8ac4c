//! What one line from imsg is (imsg-protocol.md §A2 R5, §A5, §A15).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON-RPC error object. `data` is a string (lenient), an object (strict) or absent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RpcError {
    pub code: i64,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub data: Option<Value>,
}

impl RpcError {
    /// Message and data as one line of text, for logs and error reports.
    pub fn describe(&self) -> String {
        match &self.data {
            Some(Value::String(d)) if !d.is_empty() => {
                format!("{} ({}): {d}", self.message, self.code)
            }
            Some(Value::Object(o)) => {
                let detail = o.get("detail").and_then(Value::as_str).unwrap_or("");
                format!("{} ({}): {detail}", self.message, self.code)
            }
            _ => format!("{} ({})", self.message, self.code),
        }
    }

    /// The message and data text, searched for markers.
    pub fn text(&self) -> String {
        match &self.data {
            Some(Value::String(d)) => format!("{}\n{d}", self.message),
            Some(other) => format!("{}\n{other}", self.message),
            None => self.message.clone(),
        }
    }
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Debug)]
pub enum Incoming {
    /// A reply to request `id`.
    Reply {
        id: i64,
        outcome: Result<Box<RawValue>, RpcError>,
    },
    /// A reply whose id is not one of ours (null, a string…): imsg could not read a line.
    StrayReply { id: String, error: Option<RpcError> },
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    /// An error object without an id.
    Unroutable(RpcError),
    /// Not a JSON object.
    Noise,
}

pub fn classify(line: &str) -> Incoming {
    if !line.trim_start().starts_with('{') {
        return Incoming::Noise;
    }
    let Ok(frame) = serde_json::from_str::<RawFrame<'_>>(line) else {
        return Incoming::Noise;
    };
    let id = frame.id.filter(|raw| raw.get() != "null");
    match (id, frame.method, frame.result, frame.error) {
        (Some(id), _, result, error) if result.is_some() || error.is_some() => {
            match id.get().parse::<i64>() {
                Ok(n) => Incoming::Reply {
                    id: n,
                    outcome: match error {
                        Some(e) => Err(e),
                        None => Ok(result.expect("checked above").to_owned()),
                    },
                },
                Err(_) => Incoming::StrayReply {
                    id: id.get().to_string(),
                    error,
                },
            }
        }
        (None, Some(method), _, _) => Incoming::Notification {
            method,
            params: frame.params.map(|p| p.to_owned()),
        },
        (None, None, _, Some(error)) => Incoming::Unroutable(error),
        (None, None, Some(_), None) => Incoming::StrayReply {
            id: "null".into(),
            error: None,
        },
        _ => Incoming::Noise,
    }
}

/// Text that means imsg cannot read the Messages database (§A9, channel-behaviour §10.1 5a).
pub fn is_permission_text(text: &str) -> bool {
    let lower = text.to_lowercase();
    [
        "permission error",
        "authorization denied",
        "full disk access",
        "operation not permitted",
    ]
    .iter()
    .any(|m| lower.contains(m))
        || ((lower.contains("eperm") || lower.contains("tccd"))
            && (lower.contains("chat.db") || lower.contains("messages")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_shape() {
        match classify(r#"{"jsonrpc":"2.0","id":7,"result":{"ok":true}}"#) {
            Incoming::Reply {
                id: 7,
                outcome: Ok(r),
            } => assert_eq!(r.get(), r#"{"ok":true}"#),
            other => panic!("{other:?}"),
        }
        match classify(
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"Invalid params","data":"x"}}"#,
        ) {
            Incoming::Reply {
                id: 7,
                outcome: Err(e),
            } => assert_eq!(e.code, -32602),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":1}}"#),
            Incoming::Notification { .. }
        ));
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"write failed"}}"#),
            Incoming::Unroutable(_)
        ));
        assert!(matches!(
            classify(
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#
            ),
            Incoming::Unroutable(_)
        ));
        assert!(matches!(classify("Permission Error"), Incoming::Noise));
        assert!(matches!(classify("[1,2]"), Incoming::Noise));
        assert!(matches!(classify("{not json"), Incoming::Noise));
    }

    #[test]
    fn member_order_and_escaped_slashes_do_not_matter() {
        match classify(r#"{"result":{"path":"a\/b"},"id":3,"jsonrpc":"2.0"}"#) {
            Incoming::Reply {
                id: 3,
                outcome: Ok(r),
            } => {
                let v: Value = serde_json::from_str(r.get()).unwrap();
                assert_eq!(v["path"], "a/b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permission_markers() {
        assert!(is_permission_text(
            "⚠️  Permission Error: Cannot access Messages database"
        ));
        assert!(is_permission_text("requires Full Disk Access permission"));
        assert!(is_permission_text("tccd denied access to chat.db"));
        assert!(!is_permission_text("disk I/O error (code: 10)"));
    }
}
