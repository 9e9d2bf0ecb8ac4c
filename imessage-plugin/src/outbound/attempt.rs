//! Idempotent sends, the pure part (actions.md §7.3): the attempt id a part is sent with
//! (the caller-owned GUID of `send.tracked`), the content hash that ties an idempotency key
//! to one request, and what a `send.tracked` answer means.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Part, Plan};
use crate::imsg::rpc::CallError;

/// UUIDv5(URL, `urn:x-imessage-plugin:send-attempt`).
const NAMESPACE: uuid::Uuid = uuid::uuid!("b69062ba-edc7-5ec0-8f5b-a463d0e35b93");

/// The attempt id of part `part` of the request with key `key`: the same on every retry and
/// in every process, so imsg can tell a repeat from a new message.
pub fn keyed(account_id: &str, key: &str, part: usize) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, format!("{account_id}/{key}/{part}").as_bytes())
        .hyphenated()
        .to_string()
}

/// An attempt id for a request without a key (reconcilable within the call only).
pub fn random() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// First 16 hex digits of SHA-256 over `kind \0 text \0 file \0 reply_to \0 target params`:
/// a repeat of a key must carry the same content.
pub fn content_hash(plan: &Plan, part: &Part) -> String {
    let kind = if part.file.is_some() { "file" } else { "text" };
    let mut target = Map::new();
    plan.target.write_params(&mut target);
    let mut h = Sha256::new();
    for piece in [
        kind,
        part.text.as_str(),
        part.file.as_deref().unwrap_or(""),
        plan.reply_to.as_deref().unwrap_or(""),
        &Value::Object(target).to_string(),
    ] {
        h.update(piece.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a `send.tracked` answer means for its part (§7.3's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// Sent, and the GUID is the attempt id.
    Sent,
    /// Already in chat.db under this id: an earlier attempt was delivered.
    AlreadyThere,
    /// Refused before dispatch and safe to repeat: one retry with the same id.
    RetrySafe(String),
    /// This target cannot be sent over the bridge: send it with `send` instead.
    Untracked,
    /// Definitely not sent.
    Failed(String),
    /// May have been sent; ask imsg (`message.send_status`) before anything else.
    Uncertain(String),
    /// imsg answered with other ids: unresolved, never re-sent (OpenClaw's rule).
    Mismatch(String),
}

pub fn classify(attempt: &str, answer: &Result<Value, CallError>) -> Tracked {
    match answer {
        Ok(result) => {
            let same = |key: &str| {
                result
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(attempt))
            };
            if same("attempt_id") && same("guid") && same("message_id") {
                Tracked::Sent
            } else {
                Tracked::Mismatch(format!("imsg answered other ids: {result}"))
            }
        }
        Err(CallError::Rpc(e)) => {
            let detail = e
                .data
                .as_ref()
                .and_then(|d| d.get("detail"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let retry_safe = e
                .data
                .as_ref()
                .and_then(|d| d.get("retry_safe"))
                .and_then(Value::as_bool)
                == Some(true);
            match e.code {
                -32603 if detail.contains("attempt_id already identifies a message") => {
                    Tracked::AlreadyThere
                }
                -32603 if retry_safe => Tracked::RetrySafe(e.describe()),
                // A definite non-send the plain `send` may still do: no chat the bridge can
                // address, or no bridge at all.
                -32602
                    if e.text()
                        .contains("bridge transport requires an existing chat target") =>
                {
                    Tracked::Untracked
                }
                -32003 => Tracked::Untracked,
                -32001 | -32004 => Tracked::Uncertain(e.describe()),
                _ if e.text().contains("Timed out waiting for response") => {
                    Tracked::Uncertain(e.describe())
                }
                _ => Tracked::Failed(e.describe()),
            }
        }
        Err(e @ (CallError::Timeout { .. } | CallError::ChildExited { .. })) => {
            Tracked::Uncertain(e.to_string())
        }
        Err(e) => Tracked::Failed(e.to_string()),
    }
}

/// `message.send_status` says the message exists and left this Mac.
pub fn status_settles(result: &Value) -> bool {
    matches!(
        result.get("send_state").and_then(Value::as_str),
        Some("sent" | "delivered")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imsg::rpc::RpcError;
    use serde_json::json;

    #[test]
    fn attempt_ids_are_the_spec_vectors() {
        assert_eq!(
            keyed("default", "q-42", 0),
            "902213b2-bb8f-5b99-9e86-fbaac70123aa"
        );
        assert_eq!(
            keyed("default", "q-42", 1),
            "524a9759-afba-59cb-802d-2dd8b7a42cbe"
        );
        assert_eq!(
            keyed("work", "q-42", 0),
            "d2bc5da1-ae97-5713-b244-8f1d4cfd2cab"
        );
        assert_ne!(random(), random());
    }

    #[test]
    fn tracked_answers_map_to_outcomes() {
        let a = "902213b2-bb8f-5b99-9e86-fbaac70123aa";
        let ok = json!({"ok": true, "guid": a, "message_id": a, "attempt_id": a.to_uppercase()});
        assert_eq!(classify(a, &Ok(ok)), Tracked::Sent);
        let other = json!({"ok": true, "guid": "X", "message_id": "X", "attempt_id": a});
        assert!(matches!(classify(a, &Ok(other)), Tracked::Mismatch(_)));
        let rpc = |code, data: Value| {
            Err(CallError::Rpc(RpcError {
                code,
                message: "m".into(),
                data: Some(data),
            }))
        };
        assert_eq!(
            classify(
                a,
                &rpc(
                    -32603,
                    json!({"retry_safe": true, "detail": "attempt_id already identifies a message; choose a new UUID"})
                )
            ),
            Tracked::AlreadyThere
        );
        assert!(matches!(
            classify(
                a,
                &rpc(-32603, json!({"retry_safe": true, "detail": "helper busy"}))
            ),
            Tracked::RetrySafe(_)
        ));
        assert_eq!(
            classify(
                a,
                &rpc(
                    -32602,
                    json!("bridge transport requires an existing chat target")
                )
            ),
            Tracked::Untracked
        );
        assert!(matches!(
            classify(a, &rpc(-32001, json!({}))),
            Tracked::Uncertain(_)
        ));
        assert!(matches!(
            classify(a, &rpc(-32004, json!({}))),
            Tracked::Uncertain(_)
        ));
        assert!(matches!(
            classify(
                a,
                &rpc(-32602, json!("send.tracked requires bridge transport"))
            ),
            Tracked::Failed(_)
        ));
        assert!(matches!(
            classify(
                a,
                &Err(CallError::Timeout {
                    method: "send.tracked".into(),
                    after: std::time::Duration::from_secs(1)
                })
            ),
            Tracked::Uncertain(_)
        ));
        assert!(status_settles(&json!({"send_state": "delivered"})));
        assert!(!status_settles(
            &json!({"send_state": "pending", "status_fields": null})
        ));
    }
}
