//! The message index (actions.md §3.0): which chat a message lives in, so a tapback, edit or
//! unsend goes to that chat and no other. Inbound messages are held in memory (the last
//! 4000 routed); the account's own messages come from the echo registry, which persists them
//! for 12 h so a one-shot process knows them too.
//!
//! Pure: the index, the selector choice and the cross-chat guard.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::{Map, Value};

use crate::echo::{OwnMessage, Scope};
use crate::imsg::message::ImsgMessage;
use crate::outbound::Target;

const CAPACITY: usize = 4000;

/// Where a message lives, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Located {
    pub chat_id: Option<i64>,
    pub chat_guid: Option<String>,
    pub chat_identifier: Option<String>,
    /// A DM sent by handle (own messages whose chat imsg did not name).
    pub dm_handle: Option<String>,
}

impl Located {
    pub fn of_own(own: &OwnMessage) -> Located {
        let mut at = Located {
            chat_guid: own.chat_guid.clone(),
            ..Located::default()
        };
        match &own.scope {
            Some(Scope::Chat(id)) => at.chat_id = Some(*id),
            Some(Scope::Guid(g)) => at.chat_guid = at.chat_guid.or(Some(g.clone())),
            Some(Scope::Ident(i)) => at.chat_identifier = Some(i.clone()),
            Some(Scope::Handle(h)) => at.dm_handle = Some(h.clone()),
            None => {}
        }
        at
    }

    /// Whether it is an SMS conversation (edit and unsend are iMessage-only).
    pub fn is_sms(&self) -> bool {
        self.chat_guid
            .as_deref()
            .is_some_and(|g| g.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SMS;")))
    }

    /// Whether `target` names a different chat than this one. Only a definite difference
    /// counts: what is not known cannot contradict.
    pub fn differs_from(&self, target: &Target) -> bool {
        let ne = |a: &str, b: &str| !a.eq_ignore_ascii_case(b);
        match target {
            Target::ChatId(id) => self.chat_id.is_some_and(|c| c != *id),
            Target::ChatGuid(g) => self.chat_guid.as_deref().is_some_and(|c| ne(c, g)),
            Target::ChatIdentifier(i) => self.chat_identifier.as_deref().is_some_and(|c| ne(c, i)),
            Target::Handle { to, .. } => {
                if let Some(h) = &self.dm_handle {
                    return ne(h, to);
                }
                if let Some(g) = &self.chat_guid {
                    // `iMessage;-;<handle>` is a DM; `;+;` a group.
                    return match g.split_once(";-;") {
                        Some((_, handle)) => ne(handle, to),
                        None => true,
                    };
                }
                self.chat_identifier.as_deref().is_some_and(|c| ne(c, to))
            }
        }
    }
}

/// Inbound messages this account routed, most recent last. A message is held as the hash
/// of its GUID and its chat id; each chat's selectors once. This runs for every routed
/// message, so recording one allocates nothing once its chat is known.
#[derive(Default)]
pub struct MessageIndex {
    messages: HashMap<u64, i64, BuildHasherDefault<Prehashed>>,
    order: VecDeque<u64>,
    chats: HashMap<i64, Chat>,
}

/// What is known of one chat seen inbound.
struct Chat {
    at: Located,
    /// The other person's handle, for DMs.
    dm_handle: Option<String>,
}

/// A hasher for keys that are hashes already ([`guid_key`]): hashing them again with SipHash
/// cost more than the rest of recording a message.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); anything else still hashes.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The GUID's hash, ASCII case folded (imsg writes GUIDs upper-case, hosts may not): 64
/// bits, so a collision among 4000 entries is about one in 10^12. FNV-1a, one multiply per
/// byte: it runs for every routed message, and SipHash fed a byte at a time cost ten times
/// as much. GUIDs are made by Apple, not chosen by senders, so no keyed hash is needed.
fn guid_key(guid: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in guid.trim().bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl MessageIndex {
    /// Records a routed inbound message.
    pub fn record(&mut self, m: &ImsgMessage) {
        let (Some(guid), Some(chat_id)) = (
            m.guid.as_deref().filter(|g| !g.trim().is_empty()),
            m.chat_id,
        ) else {
            return;
        };
        let key = guid_key(guid);
        if self.messages.insert(key, chat_id).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.messages.remove(&old);
            }
        }
        if !self.chats.contains_key(&chat_id) {
            if self.chats.len() >= CAPACITY {
                self.chats.clear();
            }
            let dm_handle = (m.is_group == Some(false))
                .then(|| {
                    m.sender
                        .as_deref()
                        .map(crate::support::handle::normalize_sender)
                })
                .flatten();
            let at = Located {
                chat_id: Some(chat_id),
                chat_guid: m.chat_guid.as_deref().map(str::to_string),
                chat_identifier: m.chat_identifier.as_deref().map(str::to_string),
                dm_handle: None,
            };
            self.chats.insert(chat_id, Chat { at, dm_handle });
        }
    }

    /// The handle of a DM chat seen inbound.
    pub fn dm_handle(&self, chat_id: i64) -> Option<String> {
        self.chats.get(&chat_id)?.dm_handle.clone()
    }

    pub fn get(&self, guid: &str) -> Option<Located> {
        let chat_id = self.messages.get(&guid_key(guid))?;
        Some(
            self.chats
                .get(chat_id)
                .map(|c| c.at.clone())
                .unwrap_or(Located {
                    chat_id: Some(*chat_id),
                    ..Located::default()
                }),
        )
    }
}

/// The chat selector for an action (§3.0): the indexed chat's GUID, else its id; without
/// an index entry, the target's own selector (a handle as `chat_identifier`). Bridge methods
/// take exactly one selector and never `to`.
pub fn selector(at: Option<&Located>, target: &Target) -> Map<String, Value> {
    let mut params = Map::new();
    match at {
        Some(Located {
            chat_guid: Some(g), ..
        }) => {
            params.insert("chat_guid".into(), Value::from(g.clone()));
        }
        Some(Located {
            chat_id: Some(id), ..
        }) => {
            params.insert("chat_id".into(), Value::from(*id));
        }
        _ => match target {
            Target::Handle { to, .. } => {
                params.insert("chat_identifier".into(), Value::from(to.clone()));
            }
            other => other.write_params(&mut params),
        },
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn handle(h: &str) -> Target {
        Target::Handle {
            to: h.into(),
            service: None,
        }
    }

    #[test]
    fn the_indexed_chat_guid_wins_then_the_id_then_the_target() {
        let dm = Located {
            chat_id: Some(7),
            chat_guid: Some("iMessage;-;+15550001111".into()),
            ..Located::default()
        };
        let t = handle("+15550001111");
        assert_eq!(
            Value::Object(selector(Some(&dm), &t)),
            json!({"chat_guid": "iMessage;-;+15550001111"})
        );
        let id_only = Located {
            chat_id: Some(7),
            ..Located::default()
        };
        assert_eq!(
            Value::Object(selector(Some(&id_only), &Target::ChatId(7))),
            json!({"chat_id": 7})
        );
        assert_eq!(
            Value::Object(selector(None, &t)),
            json!({"chat_identifier": "+15550001111"})
        );
        assert_eq!(
            Value::Object(selector(None, &Target::ChatId(42))),
            json!({"chat_id": 42})
        );
    }

    #[test]
    fn another_chat_is_refused_only_when_it_is_certain_case_185() {
        let dm = Located {
            chat_id: Some(7),
            chat_guid: Some("iMessage;-;+15550001111".into()),
            ..Located::default()
        };
        assert!(dm.differs_from(&Target::ChatId(42)));
        assert!(!dm.differs_from(&Target::ChatId(7)));
        assert!(!dm.differs_from(&handle("+15550001111")));
        assert!(dm.differs_from(&handle("+15557654321")));
        let group = Located {
            chat_id: Some(42),
            chat_guid: Some("iMessage;+;chat42".into()),
            ..Located::default()
        };
        assert!(group.differs_from(&handle("+15550001111")));
        assert!(!group.differs_from(&Target::ChatGuid("imessage;+;CHAT42".into())));
        // Nothing known about identifiers: no contradiction.
        assert!(!group.differs_from(&Target::ChatIdentifier("chat42".into())));
    }

    #[test]
    fn sms_chats_and_own_scopes() {
        let own = OwnMessage {
            scope: Some(Scope::Handle("+15550001111".into())),
            chat_guid: None,
            sent_at_ms: 0,
            edits: 0,
        };
        let at = Located::of_own(&own);
        assert_eq!(at.dm_handle.as_deref(), Some("+15550001111"));
        assert!(!at.is_sms());
        let sms = Located {
            chat_guid: Some("SMS;-;+15550001111".into()),
            ..Located::default()
        };
        assert!(sms.is_sms());
    }

    #[test]
    fn the_index_keeps_the_most_recent_4000() {
        let mut index = MessageIndex::default();
        for i in 0..4001 {
            let m = ImsgMessage {
                guid: Some(format!("G{i}").into()),
                chat_id: Some(i),
                ..ImsgMessage::default()
            };
            index.record(&m);
        }
        assert!(index.get("G0").is_none());
        assert_eq!(index.get("g4000").and_then(|l| l.chat_id), Some(4000));
        assert_eq!(index.get(" G4000 ").and_then(|l| l.chat_id), Some(4000));
        // Every one kept is found in its own chat: no two keys collide.
        assert!((1..4001).all(|i| index.get(&format!("g{i}")).and_then(|l| l.chat_id) == Some(i)));
    }
}
