//! The target grammar (channel-behaviour.md §7.2).

use serde_json::{Map, Value};

use crate::config::allow::strip_any_prefix;
use crate::echo::Scope;
use crate::support::handle;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    ChatId(i64),
    ChatGuid(String),
    ChatIdentifier(String),
    /// A normalised handle; `service` from its prefix, if any.
    Handle {
        to: String,
        service: Option<&'static str>,
    },
}

impl Target {
    /// The selector member(s) of the `send` params.
    pub fn write_params(&self, params: &mut Map<String, Value>) {
        match self {
            Target::ChatId(id) => params.insert("chat_id".into(), Value::from(*id)),
            Target::ChatGuid(g) => params.insert("chat_guid".into(), Value::from(g.clone())),
            Target::ChatIdentifier(i) => {
                params.insert("chat_identifier".into(), Value::from(i.clone()))
            }
            Target::Handle { to, .. } => params.insert("to".into(), Value::from(to.clone())),
        };
    }

    /// The service for the `send` params: the handle's prefix, else the account's.
    pub fn service<'a>(&self, account_service: &'a str) -> &'a str {
        match self {
            Target::Handle {
                service: Some(s), ..
            } => s,
            _ => account_service,
        }
    }

    /// The echo scope of parts sent here (§5.2).
    pub fn echo_scope(&self) -> Scope {
        match self {
            Target::ChatId(id) => Scope::Chat(*id),
            Target::ChatGuid(g) => Scope::Guid(g.clone()),
            Target::ChatIdentifier(i) => Scope::Ident(i.clone()),
            Target::Handle { to, .. } => Scope::Handle(to.clone()),
        }
    }
}

/// Why a target does not parse (channel-behaviour.md §7.2); the texts are the spec's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target is empty")]
    Empty,
    #[error("target is empty after \"{0}\"")]
    EmptyAfterPrefix(String),
    #[error("chat_id must be a positive integer; use chat_identifier: for other identifiers")]
    BadChatId,
    #[error("chat_guid is empty")]
    EmptyChatGuid,
    #[error("chat_identifier is empty")]
    EmptyChatIdentifier,
    #[error("not a phone number, email address or chat target")]
    NotATarget,
}

pub fn parse(raw: &str) -> Result<Target, TargetError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(TargetError::Empty);
    }
    let (rest, service) = handle::strip_service_prefixes(trimmed);
    if rest.is_empty() {
        let prefix = trimmed.trim_end_matches(|c: char| c.is_whitespace());
        return Err(TargetError::EmptyAfterPrefix(prefix.to_string()));
    }
    if let Some(v) = strip_any_prefix(rest, &["chat_id:", "chatid:", "chat:"]) {
        return match v.parse::<i64>() {
            Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Target::ChatId(n)),
            _ => Err(TargetError::BadChatId),
        };
    }
    if let Some(v) = strip_any_prefix(rest, &["chat_guid:", "chatguid:", "guid:"]) {
        return if v.is_empty() {
            Err(TargetError::EmptyChatGuid)
        } else {
            Ok(Target::ChatGuid(v.to_string()))
        };
    }
    if let Some(v) = strip_any_prefix(rest, &["chat_identifier:", "chatidentifier:", "chatident:"])
    {
        return if v.is_empty() {
            Err(TargetError::EmptyChatIdentifier)
        } else {
            Ok(Target::ChatIdentifier(v.to_string()))
        };
    }
    match handle::normalize(rest) {
        Some(to) => Ok(Target::Handle { to, service }),
        None => Err(TargetError::NotATarget),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let ok: &[(&str, Target)] = &[
            ("chat_id:42", Target::ChatId(42)),
            ("CHAT_ID: 42", Target::ChatId(42)),
            ("chatid:42", Target::ChatId(42)),
            ("chat:42", Target::ChatId(42)),
            ("imessage:chat_id:42", Target::ChatId(42)),
            (
                "chat_guid:iMessage;+;chat4242",
                Target::ChatGuid("iMessage;+;chat4242".into()),
            ),
            (
                "guid:iMessage;+;chat4242",
                Target::ChatGuid("iMessage;+;chat4242".into()),
            ),
            (
                "chat_identifier:chat4242",
                Target::ChatIdentifier("chat4242".into()),
            ),
            (
                "chatident:chat4242",
                Target::ChatIdentifier("chat4242".into()),
            ),
            (
                "imessage:+1 (555) 000-1111",
                Target::Handle {
                    to: "+15550001111".into(),
                    service: Some("imessage"),
                },
            ),
            (
                "sms:+15550001111",
                Target::Handle {
                    to: "+15550001111".into(),
                    service: Some("sms"),
                },
            ),
            (
                "auto:Bob@Example.com",
                Target::Handle {
                    to: "bob@example.com".into(),
                    service: Some("auto"),
                },
            ),
            (
                "+44 20 7946 0958",
                Target::Handle {
                    to: "+442079460958".into(),
                    service: None,
                },
            ),
            (
                "15550001111",
                Target::Handle {
                    to: "+15550001111".into(),
                    service: None,
                },
            ),
            (
                "Bob@Example.COM",
                Target::Handle {
                    to: "bob@example.com".into(),
                    service: None,
                },
            ),
            (
                "72345",
                Target::Handle {
                    to: "72345".into(),
                    service: None,
                },
            ),
        ];
        for (raw, want) in ok {
            assert_eq!(parse(raw).as_ref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn errors_case_111() {
        let chat_id =
            "chat_id must be a positive integer; use chat_identifier: for other identifiers";
        let cases = [
            ("chat_id:4a", chat_id),
            ("chat_id:0", chat_id),
            ("chat_id:-3", chat_id),
            ("", "target is empty"),
            ("   ", "target is empty"),
            ("sms:", "target is empty after \"sms:\""),
            ("chat_guid:", "chat_guid is empty"),
            ("chat_identifier:", "chat_identifier is empty"),
            (
                "Bob Smith",
                "not a phone number, email address or chat target",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse(raw).map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{raw:?}"
            );
        }
    }
}
