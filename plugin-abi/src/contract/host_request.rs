//! Plugin → host requests ([`HostCallbacks::request`](crate::HostCallbacks::request)): their
//! method names and payloads.

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
}

impl HostMethod {
    pub const ALL: &'static [HostMethod] = &[HostMethod::ConfigWrite];

    pub const fn as_str(self) -> &'static str {
        match self {
            HostMethod::ConfigWrite => "config.write",
        }
    }

    /// The method named `name`, or the `unknown_method` error a host answers with.
    pub fn parse(name: &str) -> Result<HostMethod, PluginError> {
        match name {
            "config.write" => Ok(HostMethod::ConfigWrite),
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
