//! The JSON payloads that cross the boundary, defined once for both sides.
//!
//! Field names are camelCase on the wire. Every type tolerates unknown fields (an older reader
//! ignores what a newer writer adds), and optional fields default when absent, so either side
//! may add optional fields without breaking the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::ErrorCode;

fn yes() -> bool {
    true
}

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginDescription {
    /// The channel id, also the key under `channels` in the gateway config.
    pub id: String,
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The plugin-abi version the plugin was built against.
    pub abi_version: String,
    /// The `call` methods this plugin understands.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Handed to `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartContext {
    /// The whole gateway config, already parsed from JSON5. The plugin reads its own section
    /// and the top-level keys that concern it.
    pub config: Value,
    /// The host's state directory; the plugin keeps its files in a sub-folder named after its
    /// channel id.
    pub state_dir: String,
    /// `false` for one-shot use (send, pairing, status): no watcher is started.
    #[serde(default = "yes")]
    pub watch: bool,
    /// The most verbose log level the host wants forwarded (`error` … `trace`).
    #[serde(default)]
    pub log_level: Option<String>,
    /// What the host understands beyond the base contract. A host that leaves it empty keeps
    /// the base contract: one message per `deliver` call, message events only, the plugin's
    /// default control-command names.
    #[serde(default, skip_serializing_if = "HostFeatures::is_empty")]
    pub host: HostFeatures,
}

/// The host's side of the contract beyond the base ("host features"). The plugin
/// uses only what is listed here, so an older host keeps working unchanged, and a plugin
/// ignores names it does not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFeatures {
    /// Named abilities, such as [`features::BATCH_DELIVERY`] or [`features::REACTION_EVENTS`].
    #[serde(default)]
    pub features: Vec<String>,
    /// With [`features::BATCH_DELIVERY`]: the most events the host takes in one delivery
    /// (default [`features::DEFAULT_MAX_BATCH`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// The host's control-command names, aliases included (`["/status", "/whoami", …]`).
    /// Absent: the plugin's built-in list (OpenClaw 2026.9.6's commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_names: Option<Vec<String>>,
    /// Absolute folders the host's own outbound media may come from (`["/srv/agent/out"]`).
    /// Set (or the channel's `mediaLocalRoots` set): a `send` media path must resolve, with
    /// symlinks followed, to a file under one of the two lists, and its last component must
    /// not be a symlink. Absent: media paths are not restricted by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_local_roots: Option<Vec<String>>,
}

impl HostFeatures {
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
            && self.max_batch.is_none()
            && self.command_names.is_none()
            && self.media_local_roots.is_none()
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// Names of [`HostFeatures::features`].
pub mod features {
    /// The host takes [`super::InboundEvent::Batch`]: several events in one `deliver` call,
    /// acknowledged together (group commit).
    pub const BATCH_DELIVERY: &str = "deliver.batch";
    /// The host takes `reaction` events (tapbacks).
    pub const REACTION_EVENTS: &str = "event.reaction";
    /// The host keeps the pairing requests and the allow store (OpenClaw's pairing runtime):
    /// the plugin asks it through [`HostMethod::PairingUpsert`](crate::contract::HostMethod)
    /// and `PairingAllowFrom` instead of keeping `pairing.json` and `allow.json`, and answers
    /// its own `pairing.list/approve/revoke` calls with `unsupported`.
    pub const PAIRING_HOST: &str = "pairing.host";
    /// The batch bound when the host names none.
    pub const DEFAULT_MAX_BATCH: u32 = 256;
}

/// What `start` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartReport {
    #[serde(default)]
    pub accounts: Vec<AccountStart>,
    /// Load-time warnings (also logged), for hosts that show them to a user.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountStart {
    pub account_id: String,
    pub enabled: bool,
    /// Whether this account runs a watcher (receives messages).
    #[serde(default)]
    pub watching: bool,
}

/// The error value of every fallible call, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginError {
    /// Stable machine-readable code: one of [`ErrorCode`] (read it with
    /// [`PluginError::code()`]); a string on the wire so that a code from a newer peer still
    /// reads.
    pub code: String,
    /// One human-readable line.
    pub message: String,
    /// For `config_invalid`: every error, one `<path>: <reason>` line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl PluginError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            code: code.into(),
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// The request is wrong (unknown account, missing field, bad code): `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        PluginError::new(ErrorCode::InvalidRequest, message)
    }

    /// A send target that does not parse: `invalid_target`.
    pub fn invalid_target(message: impl Into<String>) -> Self {
        PluginError::new(ErrorCode::InvalidTarget, message)
    }

    /// Something broke inside the plugin: `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        PluginError::new(ErrorCode::Internal, message)
    }

    /// Decodes an error string from the other side; text that is not a `PluginError` (an
    /// older or foreign peer) becomes code `internal` with the text as message.
    pub fn from_wire(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_else(|_| PluginError::internal(text))
    }

    pub fn to_wire(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.message.clone())
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.errors.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}", self.errors.join("\n"))
        }
    }
}

impl std::error::Error for PluginError {}

/// What the plugin hands to `HostCallbacks::deliver`. Hosts should read unknown `type`s as
/// events they may ignore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
// Events are built one at a time and serialised at once; boxing `Message` would only change
// every host's pattern for the common case.
#[allow(clippy::large_enum_variant)]
pub enum InboundEvent {
    Message(RoutedMessage),
    /// A tapback, only to a host that lists
    /// [`features::REACTION_EVENTS`]. Delivered once: a refusal is logged and not retried.
    Reaction(ReactionEvent),
    /// Several events in one delivery, only to a host that lists
    /// [`features::BATCH_DELIVERY`]: `Ok` acknowledges every event in it, an error none of
    /// them (the plugin delivers the same events again). Events of one batch come from one
    /// account, in the order the plugin would have delivered them one by one.
    Batch {
        events: Vec<InboundEvent>,
    },
}

/// Whether a message came in a one-to-one chat or a group; `direct` or `group` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    Direct,
    Group,
}

impl ChatType {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChatType::Direct => "direct",
            ChatType::Group => "group",
        }
    }
}

/// A tapback on a message, routed like a message from the same sender and chat. OpenClaw
/// enqueues `text` as an untrusted system event for the session, de-duplicated by
/// `contextKey`, and runs no agent turn for it; hosts should do the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionEvent {
    pub session_key: String,
    pub agent_id: String,
    pub account_id: String,
    pub chat_type: ChatType,
    pub to: String,
    pub sender_id: String,
    /// The reaction row's GUID (`rowid:<id>` when empty).
    pub message_id: String,
    /// `added` or `removed`.
    pub action: String,
    /// `love`, `like`, `dislike`, `laugh`, `emphasize`, `question` or `custom`.
    pub kind: String,
    pub emoji: String,
    pub target_message_id: Option<String>,
    pub target_text: Option<String>,
    /// The target is a message this account sent.
    pub target_is_own: bool,
    /// `iMessage reaction <action>: <emoji> by <senderId> on <target>`.
    pub text: String,
    pub context_key: String,
    pub created_at: Option<String>,
    pub chat_id: Option<i64>,
    pub chat_name: Option<String>,
}

/// One accepted inbound message, routed to a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutedMessage {
    pub session_key: String,
    pub agent_id: String,
    pub account_id: String,
    pub chat_type: ChatType,
    /// Where a reply goes (a target `send` understands).
    pub to: String,
    pub sender_id: String,
    pub text: String,
    /// Stable id: the message GUID (`rowid:<id>` when it has none). A host that sees the same
    /// id twice for an account must acknowledge without a second turn.
    pub message_id: String,
    pub was_mentioned: bool,
    /// The sender may run the host's control commands: a handle entry (never `"*"`, never a
    /// conversation entry) of `allowFrom`, of the pairing allow store under `dmPolicy:
    /// "pairing"`, or, in groups, of the group sender list. Never for a row relayed by SMS or
    /// RCS (forgeable sender ids) unless `allowSmsCommands` is on. A host treats a command from
    /// a sender without it as plain text.
    pub command_authorized: bool,
    /// The sender is an owner of the gateway: a handle listed in `commands.ownerAllowFrom`
    /// when that key is set, else in the account's `allowFrom`. Pairing approvals and
    /// `groupAllowFrom`-only members are never owners, and neither is an SMS/RCS row unless
    /// `allowSmsCommands` is on. Commands that change who may do everything else (such as
    /// `/config`) need it; `commandAuthorized` is not enough for them. Absent in JSON from an
    /// older plugin, which reads as `false`.
    #[serde(default)]
    pub sender_is_owner: bool,
    pub reply_to: Option<ReplyTo>,
    pub media: Vec<MediaItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyTo {
    pub id: Option<String>,
    pub text: Option<String>,
    pub sender: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaItem {
    pub path: String,
    pub mime: String,
    pub size: u64,
}

/// Host → plugin: send one reply (text and/or media) to one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    #[serde(default)]
    pub account_id: Option<String>,
    pub to: String,
    #[serde(default)]
    pub text: Option<String>,
    /// Local file paths (or `file://` URLs).
    #[serde(default)]
    pub media: Vec<String>,
    #[serde(default)]
    pub reply_to_id: Option<String>,
    /// Overrides the account's `chunkMode` (`length` or `newline`) for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_mode: Option<String>,
    /// Makes a retry safe: a repeat of a request with the same key (1–200 characters) never
    /// sends a part twice, also across a plugin restart; its receipt says `replayed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Overrides the account's `textFormatting` for this request: `native` (Markdown becomes
    /// iMessage bold/italic/underline/strikethrough where imsg can render it), `plain`
    /// (markers removed) or `off` (text sent verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_formatting: Option<String>,
}

/// The outcome of a send: one entry per part (text chunk or file), in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendReceipt {
    /// True when every part was sent.
    pub ok: bool,
    pub account_id: String,
    /// One per part; `null` where imsg returned no id.
    pub message_ids: Vec<Option<String>>,
    /// Number of text chunks.
    pub chunks: usize,
    #[serde(default)]
    pub parts: Vec<SendPart>,
    /// The request's idempotency key, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Some part came from the send ledger instead of a new send (a repeat of the key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendPart {
    /// `text` or `file`.
    pub kind: String,
    /// `sent`, `failed`, `unknown` (may have been delivered: never retry), `not_sent`.
    pub outcome: String,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How imsg sent it (`bridge` or `applescript`), when imsg said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Rate limited: when to try again (milliseconds), when a wait can help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The caller-owned GUID it was sent with (`send.tracked`), which imsg can be asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    /// Its outcome was settled by asking imsg or by its echo, not by the send's answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Host → plugin: status of every account, or one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRequest {
    #[serde(default)]
    pub probe: bool,
    #[serde(default)]
    pub account_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub accounts: Vec<AccountStatus>,
}

/// Per-account status. Never contains message text or handles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    pub account_id: String,
    pub name: String,
    pub enabled: bool,
    pub configured: bool,
    /// `starting` | `watching` | `recovering` | `blocked` | `duplicate_source` | `stopped`.
    pub state: String,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_probe: Option<ProbeResult>,
    #[serde(default)]
    pub last_inbound_at: Option<String>,
    #[serde(default)]
    pub last_outbound_at: Option<String>,
    #[serde(default)]
    pub cursor: Option<CursorStatus>,
    #[serde(default)]
    pub pending_pairing: u64,
    #[serde(default)]
    pub allow_store_size: u64,
    #[serde(default)]
    pub remote_host: Option<String>,
    #[serde(default)]
    pub remote_host_source: String,
    #[serde(default)]
    pub routed: u64,
    /// Drop reason code → count since start.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// The resolved key settings (dmPolicy, groupPolicy, cliPath, …).
    #[serde(default)]
    pub settings: BTreeMap<String, Value>,
    /// The probe run for this request, when `probe` was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeResult>,
    /// Panics caught in this account's processing since start (each one restarted the
    /// watch from the cursor).
    #[serde(default)]
    pub panics: u64,
    /// Times a strict imsg ended the subscription because the gateway fell behind
    /// (`watch.overflow`); each was caught up without loss.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub watch_overflows: u64,
    /// Reaction events the host accepted since start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reactions_delivered: u64,
    /// Outbound counters since start: `trackedParts` (sent with a caller-owned GUID),
    /// `unknownParts`, `reconciledParts` (settled by asking the channel or by the echo),
    /// `pendingReconcile` (unknown parts still waiting for their echo), `rateLimitedParts`, and
    /// the rate limiter's view `rateLimit: {enabled, conversations, newChatsLastHour,
    /// reachOutLastDay}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Value>,
    /// What this account's imsg can do (the `capabilities.get` result), once learned: by
    /// `capabilities.get` or a status with `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// Messages set aside because their processing panicked twice, and where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineStatus {
    /// Messages quarantined since start.
    pub count: u64,
    /// The dead-letter file (one JSON object per line).
    pub file: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CursorStatus {
    pub rowid: i64,
    pub newest_created_at: Option<String>,
}

/// The result of probing one account (`status` with `probe`, or the watcher's readiness check).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub ok: bool,
    pub account_id: String,
    pub code: Option<String>,
    pub fatal: bool,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    pub cli_path: String,
    pub db_path: Option<String>,
    pub remote_host: Option<String>,
    pub remote_host_source: String,
    pub checks: Vec<ProbeCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeCheck {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One log event forwarded from the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    pub target: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_message() -> RoutedMessage {
        RoutedMessage {
            session_key: "agent:main:imessage:group:42".into(),
            agent_id: "main".into(),
            account_id: "default".into(),
            chat_type: ChatType::Group,
            to: "chat_id:42".into(),
            sender_id: "+15550001111".into(),
            text: "@bot ping".into(),
            message_id: "8B1C0E52".into(),
            was_mentioned: true,
            command_authorized: false,
            sender_is_owner: false,
            reply_to: None,
            media: vec![MediaItem {
                path: "/s/a.jpg".into(),
                mime: "image/jpeg".into(),
                size: 3,
            }],
            created_at: Some("2026-05-16T09:45:00.000Z".into()),
            chat_name: Some("Lobster Squad".into()),
            chat_id: Some(42),
        }
    }

    #[test]
    fn inbound_event_round_trips_with_type_tag() {
        let event = InboundEvent::Message(sample_message());
        let text = serde_json::to_string(&event).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["sessionKey"], "agent:main:imessage:group:42");
        assert_eq!(value["replyTo"], Value::Null, "replyTo is always present");
        assert_eq!(serde_json::from_str::<InboundEvent>(&text).unwrap(), event);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut value = serde_json::to_value(InboundEvent::Message(sample_message())).unwrap();
        value["futureField"] = json!({"x": 1});
        let parsed: InboundEvent = serde_json::from_value(value).unwrap();
        assert_eq!(parsed, InboundEvent::Message(sample_message()));

        let ctx: StartContext = serde_json::from_value(json!({
            "config": {}, "stateDir": "/tmp/s", "someNewThing": true
        }))
        .unwrap();
        assert!(ctx.watch, "watch defaults to true");
        assert_eq!(ctx.log_level, None);
    }

    #[test]
    fn media_local_roots_is_optional_both_ways() {
        // An older host sends none; a host with none set writes none.
        let old: HostFeatures = serde_json::from_value(json!({"features": []})).unwrap();
        assert_eq!(old.media_local_roots, None);
        assert!(old.is_empty());
        assert_eq!(serde_json::to_value(&old).unwrap(), json!({"features": []}));
        let set: HostFeatures =
            serde_json::from_value(json!({"mediaLocalRoots": ["/srv/out"]})).unwrap();
        assert_eq!(set.media_local_roots, Some(vec!["/srv/out".to_string()]));
        assert!(!set.is_empty(), "roots alone are worth sending");
    }

    #[test]
    fn send_types_round_trip() {
        let req: SendRequest =
            serde_json::from_value(json!({"to": "chat_id:42", "text": "hi"})).unwrap();
        assert_eq!(req.media, Vec::<String>::new());
        assert_eq!(req.account_id, None);
        let receipt = SendReceipt {
            ok: true,
            account_id: "default".into(),
            message_ids: vec![Some("G".into()), None],
            chunks: 2,
            parts: vec![SendPart {
                kind: "text".into(),
                outcome: "sent".into(),
                message_id: Some("G".into()),
                error: None,
                transport: None,
                retry_after_ms: None,
                attempt_id: None,
                reconciled: false,
            }],
            ..Default::default()
        };
        let text = serde_json::to_string(&receipt).unwrap();
        assert!(text.contains("\"messageIds\":[\"G\",null]"), "{text}");
        assert_eq!(serde_json::from_str::<SendReceipt>(&text).unwrap(), receipt);
    }

    #[test]
    fn plugin_error_from_foreign_text() {
        let e = PluginError::from_wire("something broke");
        assert_eq!(e.code, "internal");
        assert_eq!(e.message, "something broke");
        let mut cfg = PluginError::new("config_invalid", "2 config errors");
        cfg.errors = vec!["a: x".into(), "b: y".into()];
        let back = PluginError::from_wire(&cfg.to_wire());
        assert_eq!(back, cfg);
        assert_eq!(back.to_string(), "a: x\nb: y");
    }

    #[test]
    fn status_report_round_trips() {
        let mut status = AccountStatus {
            account_id: "default".into(),
            state: "watching".into(),
            ..Default::default()
        };
        status.drops.insert("echo".into(), 2);
        let report = StatusReport {
            accounts: vec![status],
        };
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&text).unwrap(), report);
    }
}
