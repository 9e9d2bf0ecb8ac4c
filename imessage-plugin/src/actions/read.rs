//! Read receipts (actions.md §3.2), on the actions child: after the host acknowledges a
//! routed message, the chat is marked read, at most once per conversation per 2 s, fire and
//! forget, only when the capability snapshot says the bridge can do it (a lenient imsg that
//! gets a bridge call while the bridge is down relaunches Messages.app, so the snapshot must
//! be fresh and ready first).

use crate::imsg::capabilities::Feature;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Actions;
use crate::config::AccountConfig;
use crate::outbound::target;
use crate::support::sync::LockExt;
use crate::support::timeutil;

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
    /// Whether `to` may be marked read now, at most once per `window_ms` (2 s); records it
    /// when so.
    fn admit(&mut self, to: &str, now_ms: i64, window_ms: i64) -> bool {
        if self.last.get(to).is_some_and(|t| now_ms - t < window_ms) {
            return false;
        }
        // Old entries are of no use once their window is over.
        if self.last.len() > 1024 {
            self.last.retain(|_, t| now_ms - *t < window_ms);
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
async fn read_unavailable(actions: &Actions, probe_timeout: Duration) -> Option<String> {
    match actions.bridge_capabilities(probe_timeout).await {
        Ok(snapshot) => snapshot.features().take(Feature::ReadReceipts).err(),
        Err(e) => Some(e),
    }
}

/// Marks `to` read on the actions child: `Ok(None)` when sent, `Ok(Some(reason))` when the
/// capability is missing.
pub async fn mark_read(
    actions: &Arc<Actions>,
    to: &str,
    probe_timeout: Duration,
) -> Result<Option<String>, String> {
    let params = read_params(to)?;
    if let Some(reason) = read_unavailable(actions, probe_timeout).await {
        return Ok(Some(reason));
    }
    actions
        .child
        .request("read", params, READ_TIMEOUT)
        .await
        .map(|_| None)
        .map_err(|e| e.to_string())
}

/// After the host acknowledged routed messages: marks their conversations read, in the
/// background (the watcher never waits for it).
pub fn after_ack(actions: &Arc<Actions>, settings: &AccountConfig, conversations: Vec<String>) {
    if conversations.is_empty() || !settings.send_read_receipts {
        return;
    }
    let probe_timeout = Duration::from_millis(settings.probe_timeout_ms);
    let now = timeutil::now_ms();
    let window_ms = actions.timings.read_receipt_window.as_millis() as i64;
    let admitted: Vec<String> = {
        let mut receipts = actions.read_receipts.locked();
        conversations
            .into_iter()
            .filter(|to| receipts.admit(to, now, window_ms))
            .collect()
    };
    for to in admitted {
        let actions = actions.clone();
        tokio::spawn(async move {
            match mark_read(&actions, &to, probe_timeout).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    tracing::debug!(account = %actions.id, "no read receipt: {reason}")
                }
                Err(e) => {
                    let now = timeutil::now_ms();
                    let mut receipts = actions.read_receipts.locked();
                    if now - receipts.last_warning_ms >= 60_000 {
                        receipts.last_warning_ms = now;
                        // imsg's error may name the chat, which embeds a handle.
                        tracing::warn!(account = %actions.id, "mark read failed (details at debug level)");
                        tracing::debug!(account = %actions.id, "mark read failed: {e}");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_receipt_per_conversation_per_two_seconds() {
        let mut r = ReadReceipts::default();
        assert!(r.admit("chat_id:7", 0, 2_000));
        assert!(!r.admit("chat_id:7", 1_999, 2_000));
        assert!(r.admit("chat_id:42", 1_999, 2_000), "per conversation");
        assert!(r.admit("chat_id:7", 2_000, 2_000));
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
