//! Plugin → host requests ([`HostCallbacks::request`](crate::HostCallbacks::request)): their
//! method names and payloads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ErrorCode;
use crate::types::PluginError;

/// The methods a plugin may ask its host. A host answers a name it does not know with
/// [`ErrorCode::UnknownMethod`]; the plugin then carries on without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HostMethod {
    /// Payload [`ConfigWrite`]. Reply: any JSON object on success (host-stub answers
    /// `{"ok":true,"path":…,"backup":…}`; the plugin only tells success from error).
    #[serde(rename = "config.write")]
    ConfigWrite,
    /// With [`features::PAIRING_HOST`](crate::types::features::PAIRING_HOST). Payload
    /// [`PairingUpsert`], reply [`PairingUpsertReply`].
    #[serde(rename = "pairing.upsert")]
    PairingUpsert,
    /// With [`features::PAIRING_HOST`](crate::types::features::PAIRING_HOST). Payload
    /// [`PairingAllowFrom`], reply [`PairingAllowFromReply`].
    #[serde(rename = "pairing.allowFrom")]
    PairingAllowFrom,
}

impl HostMethod {
    pub const ALL: &'static [HostMethod] = &[
        HostMethod::ConfigWrite,
        HostMethod::PairingUpsert,
        HostMethod::PairingAllowFrom,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            HostMethod::ConfigWrite => "config.write",
            HostMethod::PairingUpsert => "pairing.upsert",
            HostMethod::PairingAllowFrom => "pairing.allowFrom",
        }
    }

    /// The method named `name`, or the `unknown_method` error a host answers with.
    pub fn parse(name: &str) -> Result<HostMethod, PluginError> {
        match name {
            "config.write" => Ok(HostMethod::ConfigWrite),
            "pairing.upsert" => Ok(HostMethod::PairingUpsert),
            "pairing.allowFrom" => Ok(HostMethod::PairingAllowFrom),
            other => Err(PluginError::new(
                ErrorCode::UnknownMethod,
                format!("this host does not support {other}"),
            )),
        }
    }
}

impl FromStr for HostMethod {
    type Err = PluginError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        HostMethod::parse(name)
    }
}

impl fmt::Display for HostMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `config.write`: an authorised `/config set|unset` from a conversation, sent after the host
/// acknowledged the message that carried it. The host applies it to its config file only when
/// the whole resulting config validates (its own rules and the plugin's `config.validate`) and
/// `configWrites` allows every scope it changes; a refusal is a [`PluginError`]
/// (`config_writes_disabled`, `config_invalid` with `errors`, `failed`), which the plugin
/// answers in the conversation.
///
/// ```text
/// {"op":"set","path":"channels.imessage.textChunkLimit","value":3000,"accountId":"default"}
/// {"op":"unset","path":"channels.imessage.dmPolicy","accountId":"default"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigWrite {
    #[serde(flatten)]
    pub edit: ConfigEdit,
    /// The account whose conversation asked for it; its `configWrites` must allow the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// The change a [`ConfigWrite`] makes. `path` is dotted from the config's root
/// (`channels.imessage.accounts.work.dmPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ConfigEdit {
    /// Sets `path` to `value` (JSON; the plugin parsed the user's text as JSON5, else kept it
    /// as a string), creating missing parent objects.
    Set {
        path: String,
        #[serde(default)]
        value: Value,
    },
    /// Removes `path`.
    Unset { path: String },
}

impl ConfigEdit {
    pub fn path(&self) -> &str {
        match self {
            ConfigEdit::Set { path, .. } | ConfigEdit::Unset { path } => path,
        }
    }

    /// `set` or `unset`.
    pub fn op(&self) -> &'static str {
        match self {
            ConfigEdit::Set { .. } => "set",
            ConfigEdit::Unset { .. } => "unset",
        }
    }
}

/// `pairing.upsert`: a DM from a sender that `dmPolicy: "pairing"` does not admit yet. The
/// host records a pending request for the sender (or keeps the one it has) and answers its
/// code; `created` is false when a request was already pending (or the host's queue is full,
/// then `code` may be empty), and the plugin sends the pairing reply only when it is true, so a
/// pending sender's next DM gets no second reply.
///
/// ```text
/// {"senderId":"+15550002222","chatId":8,"meta":{},"accountId":"default"}
///   -> {"code":"K7M2QX9D","created":true}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingUpsert {
    /// The normalized sender (`+15550002222`, `user@example.com`): the id the allow store
    /// must hold to admit it.
    pub sender_id: String,
    /// The conversation the DM came in, for an approval notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// Extra fields the host may show next to the request.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// The answer to [`PairingUpsert`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingUpsertReply {
    /// The pending request's code (shown to the sender in the pairing reply).
    #[serde(default)]
    pub code: String,
    /// True when this call created the request: only then is the pairing reply sent.
    #[serde(default)]
    pub created: bool,
}

/// `pairing.allowFrom`: the senders approved through pairing for the account. The plugin
/// asks again at most every few seconds while messages come, and once more before it asks
/// for a pairing code, so an approval applies to the sender's next DM. A `"*"` entry is
/// ignored (pairing never admits everyone).
///
/// ```text
/// {"accountId":"default"} -> {"allowFrom":["+15550002222"]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingAllowFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// The answer to [`PairingAllowFrom`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingAllowFromReply {
    #[serde(default)]
    pub allow_from: Vec<String>,
}
