//! `message.react`, `message.edit`, `message.unsend` (actions.md §3.3–§3.5, §3.8): a host
//! acting on one message. Everything Apple or imsg would refuse is refused here first, before
//! anything is written (a lenient imsg that gets a bridge call while the bridge is down
//! relaunches Messages.app), and an action only ever goes to the chat its message lives in.
//!
//! The checks are pure ([`read_reaction`], [`check_own`]); [`react`], [`edit`] and
//! [`unsend`] run them and make the request on the account's actions child.

use std::sync::Arc;
use std::time::Duration;

use plugin_abi::types::PluginError;
use serde_json::{json, Map, Value};

use super::Actions;
use crate::actions::index::{self as message_index, Located};
use crate::config::AccountConfig;
use crate::echo::EchoRegistry;
use crate::echo::OwnMessage;
use crate::imsg::rpc::CallError;
use crate::outbound::ratelimit::Limiter;
use crate::outbound::{self, Target};
use crate::support::sync::LockExt;
use crate::support::timeutil;

const TIMEOUT: Duration = Duration::from_secs(30);
const EDIT_WINDOW_MS: i64 = 15 * 60 * 1000;
const MAX_EDITS: u32 = 5;
const UNSEND_WINDOW_MS: i64 = 2 * 60 * 1000;

/// The six classic tapbacks, in the order a removal of all of them goes out.
pub const KINDS: [&str; 6] = ["love", "like", "dislike", "laugh", "emphasize", "question"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    React,
    Edit,
    Unsend,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::React => "react",
            Action::Edit => "edit",
            Action::Unsend => "unsend",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Action::React => "tapback",
            Action::Edit => "message.edit",
            Action::Unsend => "message.unsend",
        }
    }

    /// The capability key of actions.md §1.3.
    fn feature(self) -> &'static str {
        match self {
            Action::React => "tapback",
            Action::Edit => "edit",
            Action::Unsend => "unsend",
        }
    }

    fn enabled(self, gates: &crate::config::ActionGates) -> bool {
        match self {
            Action::React => gates.reactions,
            Action::Edit => gates.edit,
            Action::Unsend => gates.unsend,
        }
    }
}

fn disabled(action: Action) -> PluginError {
    PluginError::new(
        "disabled",
        format!("iMessage {} is disabled in config.", action.name()),
    )
}

fn unsupported(message: impl Into<String>) -> PluginError {
    PluginError::new("unsupported", message)
}

/// The fields every action takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub to: String,
    pub target: Target,
    pub message_id: String,
    pub part_index: Option<u64>,
}

fn string_field<'a>(payload: &'a Value, key: &str) -> Result<Option<&'a str>, PluginError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(PluginError::invalid_request(format!(
            "{key} must be a string"
        ))),
    }
}

fn required(payload: &Value, key: &str) -> Result<String, PluginError> {
    string_field(payload, key)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| PluginError::invalid_request(format!("{key} is required")))
}

fn bool_field(payload: &Value, key: &str) -> Result<Option<bool>, PluginError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(PluginError::invalid_request(format!(
            "{key} must be true or false"
        ))),
    }
}

pub fn read_common(payload: &Value) -> Result<Common, PluginError> {
    let to = required(payload, "to")?;
    let message_id = required(payload, "messageId")?;
    let part_index = match payload.get("partIndex") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            PluginError::invalid_request("partIndex must be a non-negative integer")
        })?),
    };
    let target = outbound::target::parse(&to)
        .map_err(|e| PluginError::invalid_target(format!("{}: {e}", to.trim())))?;
    // Hosts may pass the `p:<n>/<guid>` form imsg uses for a part; the bridge takes the GUID.
    let message_id = match message_id.split_once('/') {
        Some((p, guid)) if p.starts_with("p:") && !guid.is_empty() => guid.to_string(),
        _ => message_id,
    };
    Ok(Common {
        to,
        target,
        message_id,
        part_index,
    })
}

/// What a `message.react` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// One classic kind, or every kind when removing with none named.
    Kinds(Vec<&'static str>),
    /// An arbitrary emoji (needs `tapback.emoji` ≥ 2).
    Custom(String),
}

/// The host vocabulary (OpenClaw's `mapTapbackReaction`): case-insensitive, U+FE0F ignored.
pub fn kind_of(word: &str) -> Option<&'static str> {
    let w: String = word
        .trim()
        .chars()
        .filter(|c| *c != '\u{fe0f}')
        .collect::<String>()
        .to_lowercase();
    Some(match w.as_str() {
        "love" | "heart" | "\u{2764}" => "love",
        "like" | "+1" | "thumbsup" | "\u{1f44d}" => "like",
        "dislike" | "-1" | "thumbsdown" | "\u{1f44e}" => "dislike",
        "laugh" | "haha" | "\u{1f602}" | "\u{1f923}" => "laugh",
        "emphasize" | "!!" | "\u{203c}" => "emphasize",
        "question" | "?" | "\u{ff1f}" | "\u{2753}" => "question",
        _ => return None,
    })
}

/// Reads `reaction` / `emoji` / `remove` (§3.3).
pub fn read_reaction(payload: &Value) -> Result<(Reaction, bool), PluginError> {
    let remove = bool_field(payload, "remove")?.unwrap_or(false);
    let reaction = string_field(payload, "reaction")?.filter(|s| !s.trim().is_empty());
    let emoji = string_field(payload, "emoji")?.filter(|s| !s.trim().is_empty());
    let what = match (reaction, emoji) {
        (Some(_), Some(_)) => {
            return Err(PluginError::invalid_request(
                "use only one of reaction and emoji",
            ))
        }
        (Some(word), None) => Reaction::Kinds(vec![kind_of(word).ok_or_else(|| {
            PluginError::invalid_request(
                "iMessage react supports love, like, dislike, laugh, emphasize, and question tapbacks.",
            )
        })?]),
        (None, Some(e)) => match kind_of(e) {
            Some(kind) => Reaction::Kinds(vec![kind]),
            None => Reaction::Custom(e.trim().to_string()),
        },
        (None, None) if remove => Reaction::Kinds(KINDS.to_vec()),
        (None, None) => return Err(PluginError::invalid_request("reaction or emoji is required")),
    };
    Ok((what, remove))
}

/// Edit and unsend work on this account's own iMessages, within Apple's limits (§3.4,
/// §3.5), checked in the spec's order.
pub fn check_own(
    action: Action,
    own: Option<&OwnMessage>,
    at: &Located,
    target: &Target,
    now_ms: i64,
) -> Result<(), PluginError> {
    let Some(own) = own else {
        return Err(PluginError::new(
            "not_own_message",
            format!(
                "iMessage {} only works on messages this account sent",
                action.name()
            ),
        ));
    };
    let sms_target = matches!(
        target,
        Target::Handle {
            service: Some("sms"),
            ..
        }
    );
    if at.is_sms() || (at.chat_guid.is_none() && sms_target) {
        return Err(unsupported(
            "edit and unsend work only on iMessage conversations",
        ));
    }
    let age = now_ms - own.sent_at_ms;
    match action {
        Action::Edit if age > EDIT_WINDOW_MS || own.edits >= MAX_EDITS => Err(PluginError::new(
            "too_late",
            "iMessage edit is only possible within 15 minutes of sending, at most 5 times",
        )),
        Action::Unsend if age > UNSEND_WINDOW_MS => Err(PluginError::new(
            "too_late",
            "iMessage unsend is only possible within 2 minutes of sending",
        )),
        _ => Ok(()),
    }
}

/// An imsg failure as the host sees it (§3.8): possibly done is `outcome_unknown` and never
/// retried (repeating a tapback can remove it); a definite refusal is `failed`.
pub fn call_error(method: &str, e: &CallError) -> PluginError {
    use crate::outbound::send::{outcome_of, Outcome};
    match (outcome_of(e).0, e) {
        (Outcome::Unknown, _) => PluginError::new(
            "outcome_unknown",
            format!("{method} may have taken effect; not retried"),
        ),
        (_, CallError::Rpc(r)) => {
            let data = match &r.data {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o
                    .get("detail")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            PluginError::new("failed", format!("imsg {} {}: {data}", r.code, r.message))
        }
        (_, other) => PluginError::new("failed", format!("imsg could not be asked: {other}")),
    }
}

/// What a message action runs with: the actions child and index, the account's settings, its
/// echo registry (its own messages) and its rate limiter (one token per bridge request).
pub struct Context<'a> {
    pub actions: &'a Arc<Actions>,
    pub settings: &'a AccountConfig,
    pub echo: &'a std::sync::Mutex<EchoRegistry>,
    pub limiter: &'a std::sync::Mutex<Limiter>,
}

/// Where the message lives: the account's own record, else the inbound index.
fn locate(
    account: &Context<'_>,
    message_id: &str,
    now_ms: i64,
) -> (Option<OwnMessage>, Option<Located>) {
    let own = account.echo.locked().own(message_id, now_ms);
    let at = match &own {
        Some(o) => Some(Located::of_own(o)),
        None => account.actions.index.locked().get(message_id),
    };
    (own, at)
}

/// The selector and message params, refusing another chat (§3.0 rule 1).
fn base_params(common: &Common, at: Option<&Located>) -> Result<Map<String, Value>, PluginError> {
    if at.is_some_and(|l| l.differs_from(&common.target)) {
        return Err(PluginError::invalid_request(format!(
            "message {} belongs to a different chat; use the chat it arrived in",
            common.message_id
        )));
    }
    let mut params = message_index::selector(at, &common.target);
    params.insert(
        "message_guid".into(),
        Value::from(common.message_id.clone()),
    );
    if let Some(i) = common.part_index {
        params.insert("part_index".into(), Value::from(i));
    }
    Ok(params)
}

/// The capability check, from a snapshot fresh enough for a bridge call.
async fn require(account: &Context<'_>, action: Action, feature: &str) -> Result<(), PluginError> {
    let timeout = std::time::Duration::from_millis(account.settings.probe_timeout_ms);
    let reason = match account.actions.bridge_capabilities(timeout).await {
        Ok(snapshot) => match snapshot.features().remove(feature) {
            Some(Ok(())) => return Ok(()),
            Some(Err(reason)) => reason,
            None => format!("unknown capability {feature}"),
        },
        Err(e) => e,
    };
    Err(unsupported(if feature == "tapbackEmoji" {
        "custom emoji tapbacks need an imsg build that reports capabilities.features[\"tapback.emoji\"] >= 2".to_string()
    } else {
        format!("iMessage {} is not available: {reason}", action.name())
    }))
}

/// One bridge request, after its rate-limit slot (each tapback, edit or unsend takes one
/// token from both buckets, actions.md §6.2).
async fn request(
    account: &Context<'_>,
    action: Action,
    target: &Target,
    params: Map<String, Value>,
) -> Result<Value, PluginError> {
    let throttle = crate::outbound::ratelimit::slot::Throttle::new(
        account.limiter,
        target.echo_scope().to_string(),
    );
    throttle.slot().await.map_err(|r| {
        account.limiter.locked().limited_parts += 1;
        PluginError::new(
            "rate_limited",
            format!(
                "{}; retry after {} ms",
                r.error,
                r.retry_after_ms.unwrap_or(0)
            ),
        )
    })?;
    account
        .actions
        .child
        .request(action.method(), Value::Object(params), TIMEOUT)
        .await
        .map_err(|e| call_error(action.method(), &e))
}

pub async fn react(account: &Context<'_>, payload: &Value) -> Result<Value, PluginError> {
    let action = Action::React;
    if !action.enabled(&account.settings.actions) {
        return Err(disabled(action));
    }
    let common = read_common(payload)?;
    let (reaction, remove) = read_reaction(payload)?;
    let (_, at) = locate(account, &common.message_id, timeutil::now_ms());
    let params = base_params(&common, at.as_ref())?;
    require(account, action, action.feature()).await?;
    let mut result =
        json!({"ok": true, "accountId": account.settings.id, "messageId": common.message_id});
    match reaction {
        Reaction::Custom(emoji) => {
            require(account, action, "tapbackEmoji").await?;
            let mut p = params;
            p.insert("emoji".into(), Value::from(emoji.clone()));
            if remove {
                p.insert("remove".into(), Value::from(true));
            }
            request(account, action, &common.target, p).await?;
            result["emoji"] = json!(emoji);
        }
        Reaction::Kinds(kinds) => {
            for kind in &kinds {
                let mut p = params.clone();
                // Always by name: on 0.15 an `emoji` of 👍 would be a custom tapback.
                p.insert("reaction".into(), Value::from(*kind));
                if remove {
                    p.insert("remove".into(), Value::from(true));
                }
                request(account, action, &common.target, p).await?;
            }
            if kinds.len() == 1 {
                result["reaction"] = json!(kinds[0]);
            } else {
                result["reactions"] = json!(kinds);
            }
        }
    }
    result["removed"] = json!(remove);
    Ok(result)
}

/// What edit and unsend share: the gate, the request's fields, and the checks on this
/// account's own message, in the spec's order (§3.4) — all before anything is written.
struct OwnAction {
    common: Common,
    own: Option<OwnMessage>,
    at: Option<Located>,
}

async fn own_action(
    account: &Context<'_>,
    action: Action,
    payload: &Value,
    extra: impl FnOnce(&Value) -> Result<(), PluginError>,
) -> Result<OwnAction, PluginError> {
    if !action.enabled(&account.settings.actions) {
        return Err(disabled(action));
    }
    let common = read_common(payload)?;
    extra(payload)?;
    let now = timeutil::now_ms();
    let (own, at) = locate(account, &common.message_id, now);
    let located = at.clone().unwrap_or_default();
    check_own(action, own.as_ref(), &located, &common.target, now)?;
    require(account, action, action.feature()).await?;
    Ok(OwnAction { common, own, at })
}

pub async fn edit(account: &Context<'_>, payload: &Value) -> Result<Value, PluginError> {
    let action = Action::Edit;
    let mut raw = String::new();
    let OwnAction { common, own, at } = own_action(account, action, payload, |p| {
        raw = required(p, "text")?;
        Ok(())
    })
    .await?;
    // `message.edit` takes no formatting: the Markdown is reduced to its plain text.
    let text = outbound::format::convert(&outbound::sanitize::sanitize(&raw))
        .text
        .trim()
        .to_string();
    if text.is_empty() {
        return Err(PluginError::invalid_request("nothing to send"));
    }
    let mut params = base_params(&common, at.as_ref())?;
    params.insert("text".into(), Value::from(text.clone()));
    request(account, action, &common.target, params).await?;
    account.echo.locked().note_edit(&common.message_id, &text);
    let edits = own.map(|o| o.edits).unwrap_or(0) + 1;
    Ok(
        json!({"ok": true, "accountId": account.settings.id, "messageId": common.message_id, "edits": edits}),
    )
}

pub async fn unsend(account: &Context<'_>, payload: &Value) -> Result<Value, PluginError> {
    let action = Action::Unsend;
    let OwnAction { common, at, .. } = own_action(account, action, payload, |_| Ok(())).await?;
    let params = base_params(&common, at.as_ref())?;
    request(account, action, &common.target, params).await?;
    Ok(json!({"ok": true, "accountId": account.settings.id, "messageId": common.message_id}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::Scope;

    #[test]
    fn the_host_vocabulary_maps_to_six_kinds_case_182() {
        for (word, kind) in [
            ("like", "like"),
            ("+1", "like"),
            ("ThumbsUp", "like"),
            ("👍", "like"),
            ("❤️", "love"),
            ("❤", "love"),
            ("‼️", "emphasize"),
            ("？", "question"),
            ("🤣", "laugh"),
        ] {
            assert_eq!(kind_of(word), Some(kind), "{word}");
        }
        assert_eq!(kind_of("wow"), None);
        let read = |v: Value| read_reaction(&v);
        assert_eq!(
            read(json!({"emoji": "👍"})).unwrap(),
            (Reaction::Kinds(vec!["like"]), false)
        );
        assert_eq!(
            read(json!({"emoji": "🎉"})).unwrap(),
            (Reaction::Custom("🎉".into()), false)
        );
        assert_eq!(
            read(json!({"remove": true})).unwrap(),
            (Reaction::Kinds(KINDS.to_vec()), true)
        );
        assert_eq!(
            read(json!({"reaction": "wow"})).unwrap_err().message,
            "iMessage react supports love, like, dislike, laugh, emphasize, and question tapbacks."
        );
        assert_eq!(read(json!({})).unwrap_err().code, "invalid_request");
        assert_eq!(
            read(json!({"remove": "yes", "reaction": "like"}))
                .unwrap_err()
                .message,
            "remove must be true or false"
        );
    }

    fn own(age_ms: i64, edits: u32) -> OwnMessage {
        OwnMessage {
            scope: Some(Scope::Handle("+15550001111".into())),
            chat_guid: Some("iMessage;-;+15550001111".into()),
            sent_at_ms: 1_000_000_000 - age_ms,
            edits,
        }
    }

    fn check(action: Action, own: Option<&OwnMessage>) -> Result<(), String> {
        let at = own.map(Located::of_own).unwrap_or_default();
        let target = outbound::target::parse("imessage:+15550001111").unwrap();
        check_own(action, own, &at, &target, 1_000_000_000)
            .map_err(|e| format!("{} {}", e.code, e.message))
    }

    #[test]
    fn edit_windows_case_187_188() {
        assert_eq!(check(Action::Edit, Some(&own(3 * 60_000, 0))), Ok(()));
        let late =
            "too_late iMessage edit is only possible within 15 minutes of sending, at most 5 times";
        assert_eq!(
            check(Action::Edit, Some(&own(16 * 60_000, 0))).unwrap_err(),
            late
        );
        assert_eq!(
            check(Action::Edit, Some(&own(60_000, 5))).unwrap_err(),
            late
        );
        assert_eq!(
            check(Action::Edit, None).unwrap_err(),
            "not_own_message iMessage edit only works on messages this account sent"
        );
    }

    #[test]
    fn unsend_window_and_sms_case_189_190() {
        assert_eq!(check(Action::Unsend, Some(&own(90_000, 0))), Ok(()));
        assert_eq!(
            check(Action::Unsend, Some(&own(180_000, 0))).unwrap_err(),
            "too_late iMessage unsend is only possible within 2 minutes of sending"
        );
        let mut sms = own(10_000, 0);
        sms.chat_guid = Some("SMS;-;+15550001111".into());
        assert_eq!(
            check(Action::Edit, Some(&sms)).unwrap_err(),
            "unsupported edit and unsend work only on iMessage conversations"
        );
    }

    #[test]
    fn imsg_failures_map_to_the_spec_codes_case_186() {
        use crate::imsg::rpc::RpcError;
        let rpc = |code, data: &str| {
            CallError::Rpc(RpcError {
                code,
                message: "Internal error".into(),
                data: Some(json!(data)),
            })
        };
        let e = call_error(
            "tapback",
            &rpc(-32603, "Timed out waiting for response to 'send-reaction'"),
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (
                "outcome_unknown",
                "tapback may have taken effect; not retried"
            )
        );
        let e = call_error(
            "tapback",
            &CallError::Timeout {
                method: "tapback".into(),
                after: TIMEOUT,
            },
        );
        assert_eq!(e.code, "outcome_unknown");
        let e = call_error(
            "message.edit",
            &rpc(-32603, "Dylib error: Message not found: S1"),
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (
                "failed",
                "imsg -32603 Internal error: Dylib error: Message not found: S1"
            )
        );
    }

    #[test]
    fn common_fields_are_checked_by_name() {
        assert_eq!(
            read_common(&json!({"messageId": "D0"}))
                .unwrap_err()
                .message,
            "to is required"
        );
        assert_eq!(
            read_common(&json!({"to": "chat_id:42"}))
                .unwrap_err()
                .message,
            "messageId is required"
        );
        assert_eq!(
            read_common(&json!({"to": "chat_id:42", "messageId": "D0", "partIndex": -1}))
                .unwrap_err()
                .message,
            "partIndex must be a non-negative integer"
        );
        assert_eq!(
            read_common(&json!({"to": "chat_id:x", "messageId": "D0"}))
                .unwrap_err()
                .code,
            "invalid_target"
        );
        let c = read_common(&json!({"to": "chat_id:42", "messageId": "p:1/S1"})).unwrap();
        assert_eq!(c.message_id, "S1");
    }
}
