//! The host contract of [`ChannelPlugin::call`](crate::ChannelPlugin::call), typed: every
//! method with its request, reply and errors, the error codes, and what a plugin may ask its
//! host.
//!
//! `call(method, payload)` takes a method name and a JSON payload and answers JSON, or a
//! [`PluginError`] (JSON `{"code","message","errors"?}`). A plugin lists the methods it
//! understands in `describe().methods`; a name it does not list fails with
//! [`ErrorCode::UnknownMethod`]. Each request type below implements [`Call`], which names its
//! method and reply type, so a Rust host writes
//! `client.invoke(&PairingList::default())?` and gets a [`PairingListReply`].
//!
//! # Methods
//!
//! Every method takes an optional `accountId` (absent: the default account) where it acts on
//! one account, and fails with [`ErrorCode::NotStarted`] before `start` unless marked
//! "no start needed". An unknown `accountId` is [`ErrorCode::InvalidRequest`]
//! (`no account named "<id>"`); a missing or mistyped field is `invalid_request` naming it.
//!
//! | method | request | reply | errors besides the above |
//! |---|---|---|---|
//! | `config.validate` (no start needed) | [`ConfigValidate`] | [`ConfigValidateReply`] | `config_invalid` |
//! | `config.reload` | [`ConfigReload`] | [`ConfigReloadReply`] | `config_invalid` (the running config stays) |
//! | `pairing.list` | [`PairingList`] | [`PairingListReply`] | `internal` (state files), `unsupported` (the host keeps pairing: `pairing.host`) |
//! | `pairing.approve` | [`PairingApprove`] | [`PairingApproveReply`] | `invalid_request` (no such code; pending in several accounts), `internal`, `unsupported` |
//! | `pairing.revoke` | [`PairingRevoke`] | [`PairingRevokeReply`] | `internal`, `unsupported` |
//! | `target.normalize` (no start needed) | [`TargetNormalize`] | [`TargetSelector`] | `invalid_target` |
//! | `capabilities.get` | [`CapabilitiesGet`] | [`Capabilities`] | `imsg_unavailable` |
//! | `chat.typing` | [`ChatTyping`] | [`ChatTypingReply`] | `invalid_target` |
//! | `chat.read` | [`ChatRead`] | [`ChatReadReply`] | `invalid_target`, `failed` |
//! | `message.react` | [`MessageReact`] | [`MessageReactReply`] | `invalid_target`, `disabled`, `unsupported`, `rate_limited`, `failed`, `outcome_unknown`; a reaction word outside the six kinds is `invalid_request` |
//! | `message.edit` | [`MessageEdit`] | [`MessageEditReply`] | as `message.react`, plus `not_own_message`, `too_late`; text empty after formatting is `invalid_request` (`nothing to send`) |
//! | `message.unsend` | [`MessageUnsend`] | [`MessageUnsendReply`] | as `message.edit` |
//! | `send.reconcile` | [`SendReconcile`] | [`SendReceipt`](crate::types::SendReceipt) | `invalid_request` (`no send recorded for idempotencyKey <key>`), `internal` |
//! | `config.schema` (no start needed) | [`ConfigSchema`] | [`ConfigSchemaReply`] | — |
//!
//! The chat actions refuse before anything is written, in this order: the config gate
//! (`disabled`), the message belongs to this account (`not_own_message`, edit and unsend),
//! iMessage and not SMS (`unsupported`), the time window (`too_late`), the capability
//! (`unsupported`), the text, the rate limit (`rate_limited`). An action only goes to the chat
//! its message lives in (another `to` is `invalid_request`).
//!
//! ```text
//! call("pairing.approve", {"code":"k7m2qx9d","notify":true})
//!   -> {"accountId":"default","senderId":"+15550002222"}
//! call("chat.typing", {"accountId":"default","to":"imessage:+15550001111","on":true})
//!   -> {"ok":true,"accountId":"default","typing":true,"sent":true}
//! call("message.react", {"to":"imessage:+15550001111","messageId":"D0","reaction":"love"})
//!   -> {"ok":true,"accountId":"default","messageId":"D0","reaction":"love","removed":false}
//! call("message.edit", {"to":"imessage:+15550001111","messageId":"S1","text":"See you at **8**"})
//!   -> error {"code":"too_late","message":"iMessage edit is only possible within 15 minutes of sending, at most 5 times"}
//! call("target.normalize", {"to":"chat_id:42"})
//!   -> {"chat_id":42}
//! ```
//!
//! # Errors
//!
//! [`ErrorCode`] lists every code, with when it happens. The wire keeps the code a string
//! (a newer peer may send one this version does not know): read it with
//! [`PluginError::code`], build errors with `PluginError::new(ErrorCode::…, message)`. The
//! message is one line for a person; `config_invalid` also lists every problem in `errors`
//! as `<path>: <reason>`.
//!
//! Carried as JSON-RPC 2.0 (a transport for hosts in other languages), the same errors map
//! to: `-32700` the message was not JSON, `-32600` not a valid request, `-32601` unknown
//! method, `-32602` invalid params (with the decoder's message naming the field), `-32000` a
//! [`PluginError`] (as `data`), `-32001` the plugin panicked in this call and keeps serving.
//!
//! # Plugin → host
//!
//! [`HostCallbacks::request`](crate::HostCallbacks::request) carries the methods of
//! [`HostMethod`]: [`ConfigWrite`], and for a host that lists
//! [`features::PAIRING_HOST`](crate::types::features::PAIRING_HOST) (it keeps the pairing
//! requests and the allow store itself) [`PairingUpsert`] and [`PairingAllowFrom`]. A host
//! that does not implement one answers `unknown_method`.
//!
//! ```text
//! request("pairing.upsert", {"senderId":"+15550002222","chatId":8,"meta":{},"accountId":"default"})
//!   -> {"code":"K7M2QX9D","created":true}     (the plugin sends the pairing reply)
//! request("pairing.allowFrom", {"accountId":"default"})
//!   -> {"allowFrom":["+15550002222"]}
//! ```

mod error;
mod host_request;
mod methods;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

pub use error::{ErrorCode, UnknownErrorCode};
pub use host_request::{
    ConfigEdit, ConfigWrite, HostMethod, PairingAllowFrom, PairingAllowFromReply, PairingUpsert,
    PairingUpsertReply,
};
pub use methods::*;

use crate::types::{PluginDescription, PluginError};

impl PluginDescription {
    /// Whether the plugin lists `method` in `describe().methods`; a host asks before it offers
    /// an ability that needs it.
    pub fn offers(&self, method: CallMethod) -> bool {
        self.methods.iter().any(|m| m == method.as_str())
    }
}

macro_rules! call_methods {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )+) => {
        /// A [`ChannelPlugin::call`](crate::ChannelPlugin::call) method; serialised as its
        /// wire name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum CallMethod {
            $( $(#[$doc])* #[serde(rename = $wire)] $variant, )+
        }

        impl CallMethod {
            /// Every method, in the order `describe().methods` lists them.
            pub const ALL: &'static [CallMethod] = &[$(CallMethod::$variant),+];

            /// The wire name (`"pairing.list"`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(CallMethod::$variant => $wire,)+
                }
            }

            /// The method named `name`, or the `unknown_method` error the plugin answers
            /// with.
            pub fn parse(name: &str) -> Result<CallMethod, PluginError> {
                match name {
                    $($wire => Ok(CallMethod::$variant),)+
                    other => Err(PluginError::new(
                        ErrorCode::UnknownMethod,
                        format!("not supported by this plugin: {other}"),
                    )),
                }
            }
        }
    };
}

call_methods! {
    /// Checks a gateway config without applying it.
    ConfigValidate = "config.validate",
    /// Applies a new gateway config to the running plugin.
    ConfigReload = "config.reload",
    /// Pending pairing requests.
    PairingList = "pairing.list",
    /// Approves a pairing code.
    PairingApprove = "pairing.approve",
    /// Removes an approved sender.
    PairingRevoke = "pairing.revoke",
    /// Parses a send target.
    TargetNormalize = "target.normalize",
    /// What the account's imsg can do.
    CapabilitiesGet = "capabilities.get",
    /// The typing indicator.
    ChatTyping = "chat.typing",
    /// Marks a conversation read.
    ChatRead = "chat.read",
    /// A tapback on a message.
    MessageReact = "message.react",
    /// Edits an own message.
    MessageEdit = "message.edit",
    /// Unsends an own message.
    MessageUnsend = "message.unsend",
    /// Settles an idempotent send's unknown parts.
    SendReconcile = "send.reconcile",
    /// The JSON Schema of the channel's config section.
    ConfigSchema = "config.schema",
}

impl FromStr for CallMethod {
    type Err = PluginError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CallMethod::parse(name)
    }
}

impl fmt::Display for CallMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request type of one [`CallMethod`], and the reply it gets.
pub trait Call: Serialize + DeserializeOwned {
    const METHOD: CallMethod;
    type Reply: Serialize + DeserializeOwned;

    /// Reads the request from a `call` payload: [`decode`] for this method.
    fn decode(payload: Value) -> Result<Self, PluginError> {
        decode(Self::METHOD, payload)
    }
}

/// Reads a `call` payload as `T`. A `null` payload (a host that sent none) reads as `{}`. A
/// payload that does not fit is `invalid_request`, with the decoder's message naming the
/// field (`pairing.revoke: missing field …`).
pub fn decode<T: DeserializeOwned>(method: CallMethod, payload: Value) -> Result<T, PluginError> {
    let fail = |e: serde_json::Error| PluginError::invalid_request(format!("{method}: {e}"));
    if payload.is_null() {
        // A type that takes `null` itself (a whole config) keeps it; others read `{}`.
        return serde_json::from_value(Value::Null)
            .or_else(|_| serde_json::from_value(Value::Object(Default::default())))
            .map_err(fail);
    }
    serde_json::from_value(payload).map_err(fail)
}

/// A reply as the JSON `call` answers; `internal` if it cannot be encoded.
pub fn encode<T: Serialize>(method: CallMethod, reply: &T) -> Result<Value, PluginError> {
    serde_json::to_value(reply)
        .map_err(|e| PluginError::internal(format!("{method}: encoding the reply: {e}")))
}

/// A decoded `call`: what a plugin matches on, one arm per method.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallRequest {
    ConfigValidate(ConfigValidate),
    ConfigReload(ConfigReload),
    PairingList(PairingList),
    PairingApprove(PairingApprove),
    PairingRevoke(PairingRevoke),
    TargetNormalize(TargetNormalize),
    CapabilitiesGet(CapabilitiesGet),
    ChatTyping(ChatTyping),
    ChatRead(ChatRead),
    MessageReact(MessageReact),
    MessageEdit(MessageEdit),
    MessageUnsend(MessageUnsend),
    SendReconcile(SendReconcile),
    ConfigSchema(ConfigSchema),
}

impl CallRequest {
    /// Parses the method name, then its payload: `unknown_method` or `invalid_request`.
    pub fn decode(method: &str, payload: Value) -> Result<CallRequest, PluginError> {
        use CallRequest as R;
        Ok(match CallMethod::parse(method)? {
            CallMethod::ConfigValidate => R::ConfigValidate(Call::decode(payload)?),
            CallMethod::ConfigReload => R::ConfigReload(Call::decode(payload)?),
            CallMethod::PairingList => R::PairingList(Call::decode(payload)?),
            CallMethod::PairingApprove => R::PairingApprove(Call::decode(payload)?),
            CallMethod::PairingRevoke => R::PairingRevoke(Call::decode(payload)?),
            CallMethod::TargetNormalize => R::TargetNormalize(Call::decode(payload)?),
            CallMethod::CapabilitiesGet => R::CapabilitiesGet(Call::decode(payload)?),
            CallMethod::ChatTyping => R::ChatTyping(Call::decode(payload)?),
            CallMethod::ChatRead => R::ChatRead(Call::decode(payload)?),
            CallMethod::MessageReact => R::MessageReact(Call::decode(payload)?),
            CallMethod::MessageEdit => R::MessageEdit(Call::decode(payload)?),
            CallMethod::MessageUnsend => R::MessageUnsend(Call::decode(payload)?),
            CallMethod::SendReconcile => R::SendReconcile(Call::decode(payload)?),
            CallMethod::ConfigSchema => R::ConfigSchema(Call::decode(payload)?),
        })
    }

    pub fn method(&self) -> CallMethod {
        match self {
            CallRequest::ConfigValidate(_) => CallMethod::ConfigValidate,
            CallRequest::ConfigReload(_) => CallMethod::ConfigReload,
            CallRequest::PairingList(_) => CallMethod::PairingList,
            CallRequest::PairingApprove(_) => CallMethod::PairingApprove,
            CallRequest::PairingRevoke(_) => CallMethod::PairingRevoke,
            CallRequest::TargetNormalize(_) => CallMethod::TargetNormalize,
            CallRequest::CapabilitiesGet(_) => CallMethod::CapabilitiesGet,
            CallRequest::ChatTyping(_) => CallMethod::ChatTyping,
            CallRequest::ChatRead(_) => CallMethod::ChatRead,
            CallRequest::MessageReact(_) => CallMethod::MessageReact,
            CallRequest::MessageEdit(_) => CallMethod::MessageEdit,
            CallRequest::MessageUnsend(_) => CallMethod::MessageUnsend,
            CallRequest::SendReconcile(_) => CallMethod::SendReconcile,
            CallRequest::ConfigSchema(_) => CallMethod::ConfigSchema,
        }
    }
}
