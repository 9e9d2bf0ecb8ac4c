//! The request and reply of every [`CallMethod`](super::CallMethod), as serde types.
//!
//! camelCase on the wire, like [`crate::types`]. Requests: optional fields may be absent or
//! `null` (the same thing); unknown fields are ignored. Replies carry exactly the members the
//! plugin writes; an optional member is omitted, never `null`, unless its doc says otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Call, CallMethod};
use crate::types::SendReceipt;

fn is_false(b: &bool) -> bool {
    !*b
}

/// `config.validate`: the whole gateway config, as `start` takes it (`StartContext.config`).
/// Needs no `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigValidate(pub Value);

/// `config.validate` reply: `{"ok":true,"warnings":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValidateReply {
    pub ok: bool,
    /// Load-time warnings (keys accepted for compatibility, …).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `config.reload`: the whole new gateway config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigReload(pub Value);

/// `config.reload` reply: which accounts took the new settings in place, which were
/// restarted (their imsg source or process settings changed), started (added) or stopped
/// (removed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReloadReply {
    #[serde(default)]
    pub updated: Vec<String>,
    #[serde(default)]
    pub restarted: Vec<String>,
    #[serde(default)]
    pub started: Vec<String>,
    #[serde(default)]
    pub stopped: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `pairing.list`: pending pairing requests of one account, or of every account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// `pairing.list` reply: a JSON array, oldest request first per account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PairingListReply(pub Vec<PairingRequest>);

/// One pending pairing request. Times are ISO 8601 UTC (`2026-05-16T09:45:00.000Z`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    /// 8 characters from `ABCDEFGHJKLMNPQRSTUVWXYZ23456789`.
    pub code: String,
    /// The normalised sender handle.
    pub sender_id: String,
    pub account_id: String,
    pub created_at: String,
    /// One hour after `createdAt`.
    pub expires_at: String,
    pub last_seen_at: String,
}

/// `pairing.approve`: moves the sender of `code` to the account's allow store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingApprove {
    /// Trimmed and upper-cased by the plugin.
    pub code: String,
    /// Absent: every account is searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Send `Approved - you can message the assistant now.` to the sender.
    #[serde(default)]
    pub notify: bool,
}

/// `pairing.approve` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingApproveReply {
    pub account_id: String,
    pub sender_id: String,
}

/// `pairing.revoke`: removes a sender from the account's allow store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRevoke {
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// `pairing.revoke` reply; `removed` is false when the sender was not approved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRevokeReply {
    pub account_id: String,
    /// The normalised form of the request's `senderId`.
    pub sender_id: String,
    pub removed: bool,
}

/// `target.normalize`: parses a send target without sending. Needs no `start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetNormalize {
    /// Absent reads as empty (`invalid_target`: `target is empty`).
    #[serde(default)]
    pub to: String,
}

/// `target.normalize` reply: exactly one selector, as imsg takes it (snake_case on purpose:
/// these are imsg's own parameter names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_identifier: Option<String>,
    /// A phone number (E.164) or email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `capabilities.get`: what the account's imsg can do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesGet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Ask imsg now instead of answering from the last snapshot.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refresh: bool,
}

/// How an imsg server speaks: `lenient` (before 0.14) or `strict` (0.14 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImsgProfile {
    Lenient,
    Strict,
}

/// `capabilities.get` reply (also `AccountStatus.capabilities`, once learned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub account_id: String,
    /// `null` when `imsg --version` said nothing usable.
    pub imsg_version: Option<String>,
    pub profile: ImsgProfile,
    /// `null` on lenient servers.
    pub protocol_version: Option<i64>,
    pub database_ready: bool,
    pub bridge_ready: bool,
    /// When imsg was last asked.
    pub checked_at: String,
    /// Feature key → usable now: `reactionsInbound`, `typing`, `readReceipts`, `tapback`,
    /// `tapbackEmoji`, `edit`, `unsend`, `replyThreading`, `textFormatting`, `sendStatus`,
    /// `trackedSend`, `messagesAfter`, `watchOverflow`.
    pub features: BTreeMap<String, bool>,
    /// One reason per feature that is false (`needs imsg 0.9.0 or newer (found 0.8.1)`, …).
    pub reasons: BTreeMap<String, String>,
}

/// `chat.typing`: shows (`on: true`) or stops the typing indicator in a conversation. The
/// plugin refreshes it every 8 s and stops it after 10 minutes, or when a send to the same
/// conversation finishes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatTyping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// A send target (`imessage:+15550001111`, `chat_id:42`, …).
    pub to: String,
    pub on: bool,
}

/// `chat.typing` reply. Typing is best effort: a missing capability or `typingMode: never`
/// is `sent: false` with the `reason`, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatTypingReply {
    pub ok: bool,
    pub account_id: String,
    pub typing: bool,
    pub sent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `chat.read`: marks a conversation read (a read receipt where the chat has them on); honoured
/// even with `sendReadReceipts: false`, which governs the automatic receipts only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub to: String,
}

/// `chat.read` reply; `sent: false` with the `reason` when the capability is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatReadReply {
    pub ok: bool,
    pub account_id: String,
    pub sent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The message a chat action works on: the conversation it lives in and its id, as the
/// plugin delivered it (`RoutedMessage.messageId`) or as a send receipt gave it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The conversation; an action only ever goes to the chat its message lives in.
    pub to: String,
    /// The message GUID, or imsg's `p:<n>/<guid>` part form.
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_index: Option<u64>,
}

/// `message.react`: adds or removes a tapback. Exactly one of `reaction` and `emoji`, except
/// with `remove: true`, where neither removes every classic kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReact {
    #[serde(flatten)]
    pub message: MessageRef,
    /// `love`, `like`, `dislike`, `laugh`, `emphasize`, `question`, or an alias (`heart`,
    /// `+1`, `👍`, `haha`, `!!`, `?`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<String>,
    /// An emoji: a classic one is sent as its kind, any other as a custom tapback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default)]
    pub remove: bool,
}

/// `message.react` reply: `reaction` for one kind, `reactions` for a removal of every kind,
/// `emoji` for a custom tapback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReactReply {
    pub ok: bool,
    pub account_id: String,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    pub removed: bool,
}

/// `message.edit`: rewrites a message this account sent (Markdown reduced to plain text).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEdit {
    #[serde(flatten)]
    pub message: MessageRef,
    pub text: String,
}

/// `message.edit` reply; `edits` counts this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEditReply {
    pub ok: bool,
    pub account_id: String,
    pub message_id: String,
    pub edits: u32,
}

/// `message.unsend`: takes back a message this account sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageUnsend {
    #[serde(flatten)]
    pub message: MessageRef,
}

/// `message.unsend` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageUnsendReply {
    pub ok: bool,
    pub account_id: String,
    pub message_id: String,
}

/// `send.reconcile`: one reconciliation pass over an idempotency key; sends nothing. The
/// reply is the [`SendReceipt`] built from the send ledger, `replayed: true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendReconcile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub idempotency_key: String,
}

/// `config.schema`: the JSON Schema (draft 2020-12) of the channel's config section
/// (`channels.<id>`), generated from the plugin's config parser; also `describe().configSchema`
/// on the host protocol. Needs no `start`; the payload is ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSchema {}

/// `config.schema` reply: the schema document itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigSchemaReply(pub Value);

macro_rules! calls {
    ($($request:ty => $method:ident, $reply:ty;)+) => {
        $(impl Call for $request {
            const METHOD: CallMethod = CallMethod::$method;
            type Reply = $reply;
        })+
    };
}

calls! {
    ConfigValidate => ConfigValidate, ConfigValidateReply;
    ConfigReload => ConfigReload, ConfigReloadReply;
    PairingList => PairingList, PairingListReply;
    PairingApprove => PairingApprove, PairingApproveReply;
    PairingRevoke => PairingRevoke, PairingRevokeReply;
    TargetNormalize => TargetNormalize, TargetSelector;
    CapabilitiesGet => CapabilitiesGet, Capabilities;
    ChatTyping => ChatTyping, ChatTypingReply;
    ChatRead => ChatRead, ChatReadReply;
    MessageReact => MessageReact, MessageReactReply;
    MessageEdit => MessageEdit, MessageEditReply;
    MessageUnsend => MessageUnsend, MessageUnsendReply;
    SendReconcile => SendReconcile, SendReceipt;
    ConfigSchema => ConfigSchema, ConfigSchemaReply;
}
