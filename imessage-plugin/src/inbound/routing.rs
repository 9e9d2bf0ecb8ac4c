//! Routing (channel-behaviour.md §4): which agent, which session, where replies go. Pure.

use crate::config::{Globals, Peer};

/// §4.1: the first binding of the first tier with a match, else the default agent.
pub fn select_agent(globals: &Globals, account_id: &str, peer: &Peer) -> String {
    let tiers: [&dyn Fn(&crate::config::Binding) -> bool; 4] = [
        &|b| b.peer.as_ref() == Some(peer) && b.account_id.as_deref() == Some(account_id),
        &|b| b.peer.as_ref() == Some(peer) && b.account_id.is_none(),
        &|b| b.peer.is_none() && b.account_id.as_deref() == Some(account_id),
        &|b| b.peer.is_none() && b.account_id.is_none(),
    ];
    for tier in tiers {
        if let Some(b) = globals.bindings.iter().find(|b| tier(b)) {
            return b.agent_id.clone();
        }
    }
    globals.default_agent.clone()
}

/// §4.2, lower-cased in full, in ASCII only: the peer is a handle, and Unicode lower-casing
/// would give two handles one session (the Kelvin sign U+212A becomes `k`).
pub fn session_key(dm_scope: &str, agent_id: &str, account_id: &str, peer: &Peer) -> String {
    // Built from parts rather than `format!`: this runs for every routed message.
    let key = match peer {
        Peer::Group(chat_id) => with_id(&["agent:", agent_id, ":imessage:group:"], *chat_id),
        Peer::Direct(sender) => match dm_scope {
            "per-peer" => ["agent:", agent_id, ":direct:", sender].concat(),
            "per-channel-peer" => ["agent:", agent_id, ":imessage:direct:", sender].concat(),
            "per-account-channel-peer" => [
                "agent:",
                agent_id,
                ":imessage:",
                account_id,
                ":direct:",
                sender,
            ]
            .concat(),
            _ => ["agent:", agent_id, ":main"].concat(),
        },
    };
    // Already lower-case almost always (normalised ids); only allocate when it is not.
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        key.to_ascii_lowercase()
    } else {
        key
    }
}

/// `parts` followed by `id`, in one allocation.
fn with_id(parts: &[&str], id: i64) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 20);
    for p in parts {
        s.push_str(p);
    }
    let _ = write!(s, "{id}");
    s
}

/// §4.3: a DM is answered in its own conversation when it has a chat id, so an SMS, RCS or
/// macOS 26 `any;-;` chat keeps its service; the handle forms are the fallback.
pub fn reply_target(peer: &Peer, chat_id: Option<i64>, chat_guid: Option<&str>) -> String {
    match (peer, chat_id.filter(|c| *c > 0)) {
        (Peer::Group(chat_id), _) => with_id(&["chat_id:"], *chat_id),
        (Peer::Direct(_), Some(chat_id)) => with_id(&["chat_id:"], chat_id),
        (Peer::Direct(sender), None) if chat_guid.is_some_and(|g| g.starts_with("SMS;")) => {
            ["sms:", sender].concat()
        }
        (Peer::Direct(sender), None) => ["imessage:", sender].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn globals(v: serde_json::Value) -> std::sync::Arc<Globals> {
        crate::config::parse(&v).unwrap().globals
    }

    #[test]
    fn session_keys() {
        let dm = Peer::Direct("+15550001111".into());
        assert_eq!(
            session_key("main", "main", "default", &dm),
            "agent:main:main"
        );
        assert_eq!(
            session_key("per-peer", "main", "default", &dm),
            "agent:main:direct:+15550001111"
        );
        assert_eq!(
            session_key("per-channel-peer", "main", "default", &dm),
            "agent:main:imessage:direct:+15550001111"
        );
        assert_eq!(
            session_key("per-account-channel-peer", "main", "work", &dm),
            "agent:main:imessage:work:direct:+15550001111"
        );
        assert_eq!(
            session_key("main", "family", "x", &Peer::Group(42)),
            "agent:family:imessage:group:42"
        );
        // Lower-cased in full, in ASCII only (issue 21).
        assert_eq!(
            session_key(
                "per-peer",
                "main",
                "x",
                &Peer::Direct("Bob@Example.com".into())
            ),
            "agent:main:direct:bob@example.com"
        );
        assert_eq!(
            session_key("per-peer", "main", "x", &Peer::Direct("ÉMILE@x.fr".into())),
            "agent:main:direct:Émile@x.fr"
        );
        assert_ne!(
            session_key(
                "per-peer",
                "main",
                "x",
                &Peer::Direct("\u{212A}elvin@example.com".into())
            ),
            session_key(
                "per-peer",
                "main",
                "x",
                &Peer::Direct("kelvin@example.com".into())
            ),
            "the Kelvin sign is not the letter k"
        );
        assert_eq!(
            session_key("main", "main", "x", &Peer::Group(-7)),
            "agent:main:imessage:group:-7"
        );
    }

    #[test]
    fn targets() {
        let dm = Peer::Direct("+15550001111".into());
        // Case 121 (revised): a DM with a chat id is answered in that chat.
        assert_eq!(
            reply_target(&dm, Some(7), Some("any;-;+15550001111")),
            "chat_id:7"
        );
        assert_eq!(
            reply_target(&dm, Some(7), Some("SMS;-;+15550001111")),
            "chat_id:7"
        );
        assert_eq!(
            reply_target(&dm, None, Some("SMS;-;+15550001111")),
            "sms:+15550001111"
        );
        assert_eq!(
            reply_target(&dm, Some(0), Some("iMessage;-;+15550001111")),
            "imessage:+15550001111"
        );
        assert_eq!(reply_target(&Peer::Group(42), None, None), "chat_id:42");
    }

    #[test]
    fn binding_tiers() {
        // Case 102: the peer tier beats the account tier.
        let g = globals(json!({
            "agents": {"list": [{"id": "main"}, {"id": "ops"}, {"id": "family"}]},
            "bindings": [
                {"agentId": "ops", "match": {"channel": "imessage", "accountId": "work"}},
                {"agentId": "family", "match": {"channel": "imessage", "peer": {"kind": "direct", "id": "+1 555 000 1111"}}}
            ]
        }));
        let owner = Peer::Direct("+15550001111".into());
        let other = Peer::Direct("+15550003333".into());
        assert_eq!(select_agent(&g, "work", &owner), "family");
        assert_eq!(select_agent(&g, "work", &other), "ops");
        assert_eq!(select_agent(&g, "default", &other), "main");
    }

    #[test]
    fn default_agent() {
        let g =
            globals(json!({"agents": {"list": [{"id": "Main"}, {"id": "Ops", "default": true}]}}));
        assert_eq!(select_agent(&g, "default", &Peer::Group(1)), "ops");
        let g = globals(json!({}));
        assert_eq!(select_agent(&g, "default", &Peer::Group(1)), "main");
    }
}
