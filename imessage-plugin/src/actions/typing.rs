//! Typing indicators (actions.md §3.1), on the account's actions child.
//!
//! One task per conversation while typing shows: `typing:true`, again every 8 s, then
//! `typing:false` when stopped (a reply to that conversation finished, the host turned it off,
//! the account stops) or when it ran too long without a refresh (60 s for the plugin's early
//! typing, 10 min for the host's). The stop is written after the start's reply, so a fast
//! reply can never leave a late `typing:true` behind; not at all when imsg refused the start,
//! but still when the start went unanswered (it may be showing).

use crate::imsg::capabilities::Feature;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::Actions;
use crate::config::AccountConfig;
use crate::outbound::target;
use crate::support::sync::LockExt;
use crate::support::timeutil;

// The keepalive (8 s), the early maximum (60 s) and the request timeout (10 s) are in
// `Actions::timings`.
const HOST_MAX_MS: i64 = 10 * 60_000;
/// After this many failures in a row typing is off for [`OFF_FOR_MS`].
const MAX_FAILURES: u32 = 3;
const OFF_FOR_MS: i64 = 10 * 60_000;

/// Who turned typing on: the plugin (a DM was accepted) or the host (`chat.typing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Early,
    Host,
}

struct Conversation {
    stop: CancellationToken,
    refreshed_ms: Arc<AtomicI64>,
    max_ms: Arc<AtomicI64>,
}

/// Per-account typing state.
#[derive(Default)]
pub struct Typing {
    conversations: HashMap<String, Conversation>,
    failures: u32,
    off_until_ms: i64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The params of `typing` for a target: a handle gives `to` and `service` (its prefix, else
/// the account's); a chat gives its selector; never `region`.
fn typing_params(to: &str, account_service: &str, on: bool) -> Result<Value, String> {
    let target = target::parse(to).map_err(|e| e.to_string())?;
    let mut params = Map::new();
    target.write_params(&mut params);
    if params.contains_key("to") {
        params.insert("service".into(), target.service(account_service).into());
    }
    params.insert("typing".into(), Value::Bool(on));
    Ok(Value::Object(params))
}

/// The conversation key of a target: its echo scope, so `chat_id:7` from the routed message
/// and `chat_id:7` of the reply meet.
fn key(to: &str) -> Option<String> {
    target::parse(to).ok().map(|t| t.echo_scope().to_string())
}

/// What of the account's settings a typing task runs with (taken when it starts).
#[derive(Clone)]
struct Settings {
    service: String,
    probe_timeout: Duration,
}

impl Settings {
    fn of(settings: &AccountConfig) -> Settings {
        Settings {
            service: settings.service.clone(),
            probe_timeout: Duration::from_millis(settings.probe_timeout_ms),
        }
    }
}

/// Why typing cannot show for this account now, or `None`.
pub async fn unavailable(actions: &Actions, settings: &AccountConfig) -> Option<String> {
    available_with(actions, Duration::from_millis(settings.probe_timeout_ms)).await
}

async fn available_with(actions: &Actions, probe_timeout: Duration) -> Option<String> {
    if actions.typing.locked().off_until_ms > timeutil::now_ms() {
        return Some("typing failed 3 times in a row; off for 10 minutes".into());
    }
    match actions.bridge_capabilities(probe_timeout).await {
        Ok(snapshot) => snapshot.features().take(Feature::Typing).err(),
        Err(e) => Some(e),
    }
}

/// Shows typing in `to`, or refreshes it when it already shows.
pub fn start(actions: &Arc<Actions>, settings: &AccountConfig, to: &str, origin: Origin) {
    let Some(key) = key(to) else { return };
    let now = timeutil::now_ms();
    let max = match origin {
        Origin::Early => actions.timings.typing_early_max.as_millis() as i64,
        Origin::Host => HOST_MAX_MS,
    };
    let mut typing = actions.typing.locked();
    if let Some(c) = typing.conversations.get(&key) {
        c.refreshed_ms.store(now, Ordering::Relaxed);
        c.max_ms.fetch_max(max, Ordering::Relaxed);
        return;
    }
    let conversation = Conversation {
        stop: CancellationToken::new(),
        refreshed_ms: Arc::new(AtomicI64::new(now)),
        max_ms: Arc::new(AtomicI64::new(max)),
    };
    let task = tokio::spawn(run(
        actions.clone(),
        Settings::of(settings),
        to.to_string(),
        key.clone(),
        conversation.stop.clone(),
        conversation.refreshed_ms.clone(),
        conversation.max_ms.clone(),
    ));
    typing.conversations.insert(key, conversation);
    typing.tasks.retain(|t| !t.is_finished());
    typing.tasks.push(task);
}

/// Stops typing in `to` (after its start's reply, if one is in flight).
pub fn stop(actions: &Actions, to: &str) {
    if let Some(key) = key(to) {
        stop_scope(actions, &key);
    }
}

/// Stops typing in the conversation a send went to (its target's echo scope).
pub fn stop_scope(actions: &Actions, scope: &str) {
    if let Some(c) = actions.typing.locked().conversations.remove(scope) {
        c.stop.cancel();
    }
}

/// Stops typing everywhere and waits (briefly) for the `typing:false` requests.
pub async fn stop_all(actions: &Actions) {
    let tasks = {
        let mut typing = actions.typing.locked();
        for (_, c) in typing.conversations.drain() {
            c.stop.cancel();
        }
        std::mem::take(&mut typing.tasks)
    };
    // Together, within one bound: each writes its `typing:false` (or gives up at its timeout).
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        futures_util::future::join_all(tasks),
    )
    .await;
}

/// Why a `typing` request did not succeed, and whether it may have taken effect anyway.
struct Failed {
    text: String,
    /// No answer (timeout, child gone): the indicator may be showing.
    uncertain: bool,
}

async fn send(actions: &Arc<Actions>, service: &str, to: &str, on: bool) -> Result<(), Failed> {
    let params = typing_params(to, service, on).map_err(|text| Failed {
        text,
        uncertain: false,
    })?;
    actions
        .child
        .request("typing", params, actions.timings.typing_request)
        .await
        .map(|_| ())
        .map_err(|e| Failed {
            uncertain: matches!(
                e,
                crate::imsg::rpc::CallError::Timeout { .. }
                    | crate::imsg::rpc::CallError::ChildExited { .. }
            ),
            text: e.to_string(),
        })
}

fn note(actions: &Actions, ok: bool) {
    let mut typing = actions.typing.locked();
    if ok {
        typing.failures = 0;
        return;
    }
    typing.failures += 1;
    if typing.failures >= MAX_FAILURES {
        typing.failures = 0;
        typing.off_until_ms = timeutil::now_ms() + OFF_FOR_MS;
        // The bridge may be gone: learn the snapshot again before the next try.
        actions.child.caps().forget();
        tracing::warn!(account = %actions.id, "typing failed {MAX_FAILURES} times in a row; off for 10 minutes");
    }
}

async fn run(
    actions: Arc<Actions>,
    settings: Settings,
    to: String,
    key: String,
    stop: CancellationToken,
    refreshed_ms: Arc<AtomicI64>,
    max_ms: Arc<AtomicI64>,
) {
    let conv = crate::inbound::conversation_hash(&key);
    let forget = |actions: &Actions| {
        let mut typing = actions.typing.locked();
        if typing
            .conversations
            .get(&key)
            .is_some_and(|c| c.stop == stop)
        {
            typing.conversations.remove(&key);
        }
    };
    if let Some(reason) = available_with(&actions, settings.probe_timeout).await {
        tracing::debug!(account = %actions.id, "no typing for conv {conv}: {reason}");
        return forget(&actions);
    }
    // Stopped (the reply already went out) before anything was written: write nothing, so
    // no `typing:true` arrives after the reply.
    if stop.is_cancelled() {
        return forget(&actions);
    }
    match send(&actions, &settings.service, &to, true).await {
        Ok(()) => note(&actions, true),
        Err(e) => {
            tracing::debug!(account = %actions.id, "typing start failed for conv {conv}: {}", e.text);
            note(&actions, false);
            // No stop after a refused start; after an unanswered one the indicator may be
            // showing, so the stop is still written when the time comes.
            if !e.uncertain {
                return forget(&actions);
            }
        }
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(actions.timings.typing_keepalive) => {
                let idle = timeutil::now_ms() - refreshed_ms.load(Ordering::Relaxed);
                if idle >= max_ms.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = send(&actions, &settings.service, &to, true).await {
                    tracing::debug!(account = %actions.id, "typing keepalive failed for conv {conv}: {}", e.text);
                    note(&actions, false);
                }
            }
        }
    }
    forget(&actions);
    if let Err(e) = send(&actions, &settings.service, &to, false).await {
        tracing::debug!(account = %actions.id, "typing stop failed for conv {conv}: {}", e.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typing_takes_the_target_with_a_service_only_for_handles() {
        assert_eq!(
            typing_params("chat_id:42", "auto", false).unwrap(),
            json!({"chat_id": 42, "typing": false})
        );
        assert_eq!(
            typing_params("imessage:+1 555 000 1111", "auto", true).unwrap(),
            json!({"to": "+15550001111", "service": "imessage", "typing": true})
        );
        assert_eq!(
            typing_params("+15550001111", "sms", true).unwrap(),
            json!({"to": "+15550001111", "service": "sms", "typing": true})
        );
        assert_eq!(key("chat_id:7"), key(" chat:7"));
    }
}
