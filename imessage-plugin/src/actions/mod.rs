//! The account's actions child and what runs on it (actions.md §1.1, §3.2): a third
//! `imsg rpc` per account, separate from the watcher's and the sender's, so a bridge call that
//! stalls for seconds delays neither the watch stream nor a reply. Started on first use and
//! closed after a minute without a request.
//!
//! Read receipts: after the host acknowledges a routed message, the chat is marked read, at
//! most once per conversation per 2 s, fire and forget, only when the capability snapshot says
//! the bridge can do it (a lenient imsg that gets a bridge call while the bridge is down
//! relaunches Messages.app, so the snapshot must be fresh and ready first).

pub(crate) mod index;
pub(crate) mod message_actions;
pub(crate) mod typing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::account::Account;
use crate::outbound::target;
use crate::support::sync::LockExt;
use crate::support::timeutil;

/// The actions child closes after this long without a request.
const IDLE: Duration = Duration::from_secs(60);
/// At most one read receipt per conversation in this window.
const READ_EVERY_MS: i64 = 2_000;
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-account state of the read receipts.
#[derive(Default)]
pub struct ReadReceipts {
    /// Conversation (`to`) → when it was last marked read.
    last: HashMap<String, i64>,
    /// When a failure was last logged at warn (once a minute).
    last_warning_ms: i64,
}

impl ReadReceipts {
    /// Whether `to` may be marked read now; records it when so.
    fn admit(&mut self, to: &str, now_ms: i64) -> bool {
        if self
            .last
            .get(to)
            .is_some_and(|t| now_ms - t < READ_EVERY_MS)
        {
            return false;
        }
        // Old entries are of no use once their window is over.
        if self.last.len() > 1024 {
            self.last.retain(|_, t| now_ms - *t < READ_EVERY_MS);
        }
        self.last.insert(to.to_string(), now_ms);
        true
    }
}

/// The params of `read` for a target: `to` (a handle, never `service`) or one chat selector.
fn read_params(to: &str) -> Result<Value, String> {
    let target = target::parse(to).map_err(|e| e.to_string())?;
    let mut params = Map::new();
    target.write_params(&mut params);
    Ok(Value::Object(params))
}

/// Why the account cannot mark chats read now, or `None` when it can.
async fn read_unavailable(account: &Account) -> Option<String> {
    match account.bridge_capabilities().await {
        Ok(snapshot) => snapshot.features().remove("readReceipts")?.err(),
        Err(e) => Some(e),
    }
}

/// Marks `to` read on the actions child: `Ok(None)` when sent, `Ok(Some(reason))` when the
/// capability is missing.
pub async fn mark_read(account: &Arc<Account>, to: &str) -> Result<Option<String>, String> {
    let params = read_params(to)?;
    if let Some(reason) = read_unavailable(account).await {
        return Ok(Some(reason));
    }
    request(account, "read", params, READ_TIMEOUT)
        .await
        .map(|_| None)
        .map_err(|e| e.to_string())
}

/// After the host acknowledged routed messages: marks their conversations read, in the
/// background (the watcher never waits for it).
pub fn after_ack(account: &Arc<Account>, conversations: Vec<String>) {
    if conversations.is_empty() || !account.settings().send_read_receipts {
        return;
    }
    let now = timeutil::now_ms();
    let admitted: Vec<String> = {
        let mut receipts = account.read_receipts.locked();
        conversations
            .into_iter()
            .filter(|to| receipts.admit(to, now))
            .collect()
    };
    for to in admitted {
        let account = account.clone();
        tokio::spawn(async move {
            match mark_read(&account, &to).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    tracing::debug!(account = %account.id, "no read receipt: {reason}")
                }
                Err(e) => {
                    let now = timeutil::now_ms();
                    let mut receipts = account.read_receipts.locked();
                    if now - receipts.last_warning_ms >= 60_000 {
                        receipts.last_warning_ms = now;
                        // imsg's error may name the chat, which embeds a handle.
                        tracing::warn!(account = %account.id, "mark read failed (details at debug level)");
                        tracing::debug!(account = %account.id, "mark read failed: {e}");
                    }
                }
            }
        });
    }
}

/// Errors after which the capability snapshot is learned again (actions.md §1.2): database
/// or bridge unavailable, a poisoned mutation lane, or a bridge that stopped answering.
fn bridge_trouble(e: &crate::imsg::rpc::CallError) -> bool {
    match e {
        crate::imsg::rpc::CallError::Rpc(r) => {
            (-32004..=-32002).contains(&r.code)
                || r.text().contains("Timed out waiting for response")
        }
        crate::imsg::rpc::CallError::Timeout { .. } => true,
        _ => false,
    }
}

/// One request on the account's actions child, starting it when needed; the child is closed
/// after [`IDLE`] without requests.
pub(crate) async fn request(
    account: &Arc<Account>,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, crate::imsg::rpc::CallError> {
    let client = {
        let mut actions = account.actions.lock().await;
        actions.initialize_first = account.is_strict();
        actions.client().await?
    };
    account
        .actions_used_ms
        .store(timeutil::now_ms(), std::sync::atomic::Ordering::Relaxed);
    let result = client.request(method, params, timeout).await;
    if let Err(e) = &result {
        if bridge_trouble(e) {
            // The snapshot may be wrong now (a bridge that stalls or went away; actions.md
            // §1.2 step 2): a strict server is asked for `status` on the watcher's child at
            // once; otherwise it is learned again before the next bridge call.
            if account.is_strict() {
                account
                    .status_due
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            } else {
                *account.capabilities.locked() = None;
            }
        }
    }
    let idle = account.clone();
    tokio::spawn(async move {
        tokio::time::sleep(IDLE).await;
        let used = idle
            .actions_used_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if timeutil::now_ms() - used >= IDLE.as_millis() as i64 {
            idle.actions.lock().await.replace().await;
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_receipt_per_conversation_per_two_seconds() {
        let mut r = ReadReceipts::default();
        assert!(r.admit("chat_id:7", 0));
        assert!(!r.admit("chat_id:7", 1_999));
        assert!(r.admit("chat_id:42", 1_999), "per conversation");
        assert!(r.admit("chat_id:7", 2_000));
    }

    #[test]
    fn bridge_trouble_drops_the_snapshot() {
        use crate::imsg::rpc::{CallError, RpcError};
        let rpc = |code, data: &str| {
            CallError::Rpc(RpcError {
                code,
                message: "x".into(),
                data: Some(json!(data)),
            })
        };
        assert!(bridge_trouble(&rpc(-32003, "")));
        assert!(bridge_trouble(&rpc(
            -32603,
            "Timed out waiting for response"
        )));
        assert!(!bridge_trouble(&rpc(-32602, "unknown read param: x")));
    }

    #[test]
    fn read_takes_the_target_without_a_service() {
        assert_eq!(read_params("chat_id:42").unwrap(), json!({"chat_id": 42}));
        assert_eq!(
            read_params("sms:+1 555 000 1111").unwrap(),
            json!({"to": "+15550001111"})
        );
        assert!(read_params("").is_err());
    }
}
