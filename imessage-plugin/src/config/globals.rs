//! The top-level keys the plugin reads (channel-behaviour.md §1.5): session scope, mention
//! patterns, agents, bindings, `commands.config`, `messages.responsePrefix`.

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::read::{self, Diag};
use super::section;
use crate::support::handle;

pub const DM_SCOPES: &[&str] = &[
    "main",
    "per-peer",
    "per-channel-peer",
    "per-account-channel-peer",
];

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    /// `agents.list[].typingMode`.
    pub typing_mode: Option<super::TypingMode>,
    /// `Some` when the agent has the key, even if empty: it then wins over the global list.
    pub mention_patterns: Option<Vec<Regex>>,
}

/// A binding's peer, normalised like the inbound peer (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Direct(String),
    Group(i64),
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub agent_id: String,
    /// `None` for absent or `"*"`; otherwise the lower-cased account id.
    pub account_id: Option<String>,
    pub peer: Option<Peer>,
}

#[derive(Debug, Clone)]
pub struct Globals {
    pub dm_scope: String,
    pub mention_patterns: Option<Vec<Regex>>,
    pub agents: Vec<Agent>,
    pub default_agent: String,
    pub bindings: Vec<Binding>,
    pub commands_config: bool,
    /// `commands.ownerAllowFrom`: the iMessage handles among its entries. `None` when the key
    /// is absent (the owners are then the handles of the effective `allowFrom`, §2 step 14).
    pub owner_allow_from: Option<Vec<String>>,
    pub response_prefix: Option<String>,
    /// `agents.defaults.typingMode`, else `session.typingMode`, else `instant`.
    pub typing_mode: super::TypingMode,
}

impl Globals {
    /// The typing mode of an agent: its own, else the defaults (actions.md §3.1).
    pub fn typing_mode(&self, agent_id: &str) -> super::TypingMode {
        self.agents
            .iter()
            .find(|a| a.id == agent_id)
            .and_then(|a| a.typing_mode)
            .unwrap_or(self.typing_mode)
    }
}

/// Agent id normalisation: lower-cased, runs outside `[a-z0-9_-]` become `-`, leading `-`
/// removed, cut to 64; empty → `main`.
pub fn normalize_agent_id(raw: &str) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in raw.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    let trimmed: String = out.trim_start_matches('-').chars().take(64).collect();
    if trimmed.is_empty() {
        "main".to_string()
    } else {
        trimmed
    }
}

/// One line from a regex compiler message (they span several lines with a caret).
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
    format!("invalid regular expression: {line}")
}

fn read_patterns(value: &Value, at: &str, diag: &mut Diag) -> Option<Vec<Regex>> {
    let items = read::array(value, at, diag)?;
    let mut compiled = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = read::index(at, i);
        let Some(source) = read::string(item, &path, diag) else {
            continue;
        };
        match RegexBuilder::new(source).case_insensitive(true).build() {
            Ok(re) => compiled.push(re),
            Err(e) => diag.error(&path, regex_reason(&e)),
        }
    }
    Some(compiled)
}

pub fn read_globals(root: &Value, diag: &mut Diag) -> Globals {
    let dm_scope = read::lookup(root, &["session", "dmScope"])
        .and_then(|v| {
            read::one_of(
                v,
                "session.dmScope",
                DM_SCOPES,
                &read::one_of_reason(DM_SCOPES),
                diag,
            )
        })
        .unwrap_or_else(|| "main".to_string());
    let mention_patterns = read::lookup(root, &["messages", "groupChat", "mentionPatterns"])
        .and_then(|v| read_patterns(v, "messages.groupChat.mentionPatterns", diag));
    let commands_config = read::lookup(root, &["commands", "config"])
        .and_then(|v| read::boolean(v, "commands.config", diag))
        .unwrap_or(false);
    let owner_allow_from = read::lookup(root, &["commands", "ownerAllowFrom"])
        .and_then(|v| read_owners(v, "commands.ownerAllowFrom", diag));
    let response_prefix = read::lookup(root, &["messages", "responsePrefix"])
        .and_then(|v| section::read_prefix(v, "messages.responsePrefix", diag));

    let (agents, default_agent) = read_agents(root, diag);
    let bindings = read_bindings(root, &agents, diag);
    // agents.defaults.typingMode, else session.typingMode, else instant.
    let typing_mode = read::lookup(root, &["agents", "defaults"])
        .and_then(|d| read_typing_mode(d, "agents.defaults", diag))
        .or_else(|| {
            read::lookup(root, &["session"]).and_then(|s| read_typing_mode(s, "session", diag))
        })
        .unwrap_or_default();
    Globals {
        typing_mode,
        dm_scope,
        mention_patterns,
        agents,
        default_agent,
        bindings,
        commands_config,
        owner_allow_from,
        response_prefix,
    }
}

/// `commands.ownerAllowFrom` is the gateway's, shared by every channel: entries for other
/// channels (`telegram:123`) and conversation entries are not iMessage owners and are skipped
/// without complaint; only handle entries count, and `"*"` never makes an owner.
fn read_owners(value: &Value, at: &str, diag: &mut Diag) -> Option<Vec<String>> {
    let items = read::array(value, at, diag)?;
    let mut owners = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(raw) = read::string(item, &read::index(at, i), diag) else {
            continue;
        };
        if let super::allow::Parsed::Entry(super::AllowEntry::Handle(h), _) =
            super::allow::parse_entry(raw)
        {
            owners.push(h);
        }
    }
    Some(owners)
}

/// `<at>.typingMode`, when present.
fn read_typing_mode(parent: &Value, at: &str, diag: &mut Diag) -> Option<super::TypingMode> {
    let value = read::present(parent.get("typingMode"))?;
    let path = read::field(at, "typingMode");
    let names = super::TypingMode::NAMES;
    read::one_of(value, &path, names, &read::one_of_reason(names), diag)
        .and_then(|name| super::TypingMode::parse(&name))
}

fn read_agents(root: &Value, diag: &mut Diag) -> (Vec<Agent>, String) {
    let mut agents = Vec::new();
    let mut default = None;
    let Some(list) = read::lookup(root, &["agents", "list"]) else {
        return (agents, "main".to_string());
    };
    let Some(items) = read::array(list, "agents.list", diag) else {
        return (agents, "main".to_string());
    };
    for (i, item) in items.iter().enumerate() {
        let at = read::index("agents.list", i);
        let Some(map) = read::object(item, &at, diag) else {
            continue;
        };
        let id = read::present(map.get("id"))
            .and_then(|v| read::string(v, &read::field(&at, "id"), diag))
            .map(normalize_agent_id)
            .unwrap_or_else(|| "main".to_string());
        let is_default = read::present(map.get("default"))
            .and_then(|v| read::boolean(v, &read::field(&at, "default"), diag))
            .unwrap_or(false);
        if is_default {
            if default.is_none() {
                default = Some(id.clone());
            } else {
                diag.warn(format!(
                    "agents.list has more than one default agent; using \"{}\"",
                    default.as_deref().unwrap_or_default()
                ));
            }
        }
        let mention_patterns = read::lookup(item, &["groupChat", "mentionPatterns"])
            .and_then(|v| read_patterns(v, &format!("{at}.groupChat.mentionPatterns"), diag));
        let typing_mode = read_typing_mode(item, &at, diag);
        agents.push(Agent {
            id,
            typing_mode,
            mention_patterns,
        });
    }
    let default = default
        .or_else(|| agents.first().map(|a| a.id.clone()))
        .unwrap_or_else(|| "main".to_string());
    (agents, default)
}

fn read_bindings(root: &Value, agents: &[Agent], diag: &mut Diag) -> Vec<Binding> {
    let mut out = Vec::new();
    let Some(list) = read::present(root.get("bindings")) else {
        return out;
    };
    let Some(items) = read::array(list, "bindings", diag) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let at = read::index("bindings", i);
        let channel = read::lookup(item, &["match", "channel"]).and_then(Value::as_str);
        if !channel.is_some_and(|c| c.eq_ignore_ascii_case("imessage")) {
            continue;
        }
        let agent_path = read::field(&at, "agentId");
        let Some(raw_agent) =
            read::lookup(item, &["agentId"]).and_then(|v| read::string(v, &agent_path, diag))
        else {
            if read::lookup(item, &["agentId"]).is_none() {
                diag.error(&agent_path, "expected a string");
            }
            continue;
        };
        let agent_id = normalize_agent_id(raw_agent);
        let known = if agents.is_empty() {
            agent_id == "main"
        } else {
            agents.iter().any(|a| a.id == agent_id)
        };
        if !known {
            diag.error(
                &agent_path,
                format!("no agent \"{raw_agent}\" in agents.list"),
            );
            continue;
        }
        let account_id = read::lookup(item, &["match", "accountId"])
            .and_then(|v| read::string(v, &format!("{at}.match.accountId"), diag))
            .map(|s| s.trim().to_lowercase())
            .filter(|s| s != "*");
        let peer = match read::lookup(item, &["match", "peer"]) {
            None => None,
            Some(peer) => match read_peer(peer, &format!("{at}.match.peer"), diag) {
                Some(p) => Some(p),
                None => continue,
            },
        };
        out.push(Binding {
            agent_id,
            account_id,
            peer,
        });
    }
    out
}

fn read_peer(peer: &Value, at: &str, diag: &mut Diag) -> Option<Peer> {
    read::object(peer, at, diag)?;
    let kind_path = read::field(at, "kind");
    let id_path = read::field(at, "id");
    let kind = read::lookup(peer, &["kind"]).and_then(Value::as_str);
    let id = match read::lookup(peer, &["id"]) {
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Number(_)) => v.to_string(),
        _ => {
            diag.error(&id_path, "expected a string");
            return None;
        }
    };
    match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("direct") | Some("dm") => Some(Peer::Direct(handle::normalize_sender(&id))),
        Some("group") => {
            let digits =
                super::allow::strip_any_prefix(id.trim(), &["chat_id:"]).unwrap_or(id.trim());
            match digits.parse::<i64>() {
                Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(Peer::Group(n))
                }
                _ => {
                    diag.error(&id_path, "group peer id must be a chat id");
                    None
                }
            }
        }
        _ => {
            diag.error(&kind_path, "must be \"direct\" or \"group\"");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert_eq!(normalize_agent_id("Main"), "main");
        assert_eq!(normalize_agent_id("My Agent!!x"), "my-agent-x");
        assert_eq!(normalize_agent_id("--ops"), "ops");
        assert_eq!(normalize_agent_id("   "), "main");
        assert_eq!(normalize_agent_id(&"a".repeat(80)).len(), 64);
    }
}
