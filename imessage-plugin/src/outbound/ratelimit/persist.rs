//! `<state>/imessage/<account>/ratelimit.json` (actions.md §6.2): the limiter's counters,
//! shared by every process on the state folder. A save takes the file's lock, folds in what
//! another process wrote, prunes, and writes atomically (0600), as the pairing store does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Conversation, Counters};
use crate::state::store;
use crate::support::timeutil;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConversation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_inbound_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_outbound_at: Option<String>,
    #[serde(default)]
    unanswered: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    version: u32,
    #[serde(default)]
    conversations: HashMap<String, FileConversation>,
    #[serde(default)]
    new_chats: Vec<i64>,
    #[serde(default)]
    reach_out: Vec<i64>,
}

impl From<&Counters> for File {
    fn from(c: &Counters) -> File {
        File {
            version: 1,
            conversations: c
                .conversations
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        FileConversation {
                            last_inbound_at: v.last_inbound_ms.map(timeutil::format_ms),
                            last_outbound_at: v.last_outbound_ms.map(timeutil::format_ms),
                            unanswered: v.unanswered,
                        },
                    )
                })
                .collect(),
            new_chats: c.new_chats.iter().copied().collect(),
            reach_out: c.reach_out.iter().copied().collect(),
        }
    }
}

impl From<File> for Counters {
    fn from(f: File) -> Counters {
        Counters {
            conversations: f
                .conversations
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        Conversation {
                            last_inbound_ms: v
                                .last_inbound_at
                                .as_deref()
                                .and_then(timeutil::parse_ms),
                            last_outbound_ms: v
                                .last_outbound_at
                                .as_deref()
                                .and_then(timeutil::parse_ms),
                            unanswered: v.unanswered,
                        },
                    )
                })
                .collect(),
            new_chats: f.new_chats.into(),
            reach_out: f.reach_out.into(),
        }
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("ratelimit.json")
}

/// The counters on disk; empty when missing, set aside (and logged) when corrupt.
pub fn load(dir: &Path) -> Counters {
    match store::read_json::<File>(&path(dir)) {
        Ok(store::Read::Ok(f)) => f.into(),
        Ok(store::Read::Missing) => Counters::default(),
        Ok(store::Read::SetAside(aside, why)) => {
            tracing::warn!(
                "ratelimit.json was unreadable ({why}); set aside as {}",
                aside.display()
            );
            Counters::default()
        }
        Err(e) => {
            tracing::warn!("{e}");
            Counters::default()
        }
    }
}

/// Folds the file into `counters` and writes the result back, under the file's lock.
pub fn save(dir: &Path, counters: &mut Counters, now_ms: i64) -> std::io::Result<()> {
    store::ensure_dir(dir)?;
    let file = path(dir);
    let _lock = store::lock(&file)?;
    if let Ok(store::Read::Ok(on_disk)) = store::read_json::<File>(&file) {
        counters.merge(on_disk.into());
    }
    counters.prune(now_ms);
    let text = serde_json::to_string(&File::from(&*counters)).map_err(std::io::Error::other)?;
    store::write_atomic(&file, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_share_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let now = timeutil::now_ms();
        let mut a = Counters::default();
        a.conversations.insert(
            "chat:42".into(),
            Conversation {
                last_inbound_ms: None,
                last_outbound_ms: Some(now - 10),
                unanswered: 5,
            },
        );
        save(dir.path(), &mut a, now).unwrap();
        // Another process saw an inbound row later.
        let mut b = load(dir.path());
        assert_eq!(b.conversations["chat:42"].unanswered, 5);
        b.conversations.insert(
            "chat:42".into(),
            Conversation {
                last_inbound_ms: Some(now),
                last_outbound_ms: Some(now - 10),
                unanswered: 0,
            },
        );
        save(dir.path(), &mut b, now).unwrap();
        // The first process's next save keeps the newer state.
        save(dir.path(), &mut a, now).unwrap();
        assert_eq!(a.conversations["chat:42"].unanswered, 0);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains("\"lastInboundAt\""), "{text}");
        assert!(text.contains("\"version\":1"), "{text}");
    }
}
