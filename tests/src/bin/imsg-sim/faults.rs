//! The scenario's `faults` (imsg-protocol.md §B8), typed: every key the simulator knows, so a
//! misspelt fault in a test's scenario is an error naming it instead of a silent no-op.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// `fda_denied`: the database cannot be opened (Full Disk Access).
    pub startup: Option<String>,
    /// How `fda_denied` shows: `banner`, `internal_error`, `db_unavailable` (default by
    /// profile and version).
    pub fda_style: Option<String>,
    /// Bytes of diagnostic output on stderr at start.
    pub stderr_bytes: Option<u64>,
    pub stdout_noise: Option<StdoutNoise>,
    /// Every line written in pieces of `chunk_bytes`, `pause_ms` apart.
    pub split_writes: Option<SplitWrites>,
    /// Lines written just before the n-th reply.
    pub malformed: Vec<MalformedLine>,
    /// Replies (by number) replaced by a `write failed` error.
    pub write_failed: Vec<u64>,
    /// JSON `\/` escaping, as imsg's encoder does (default true).
    pub escape_slashes: Option<bool>,
    /// A `bridge.event` notification after every n-th line.
    pub unknown_notifications: Option<u64>,
    pub exit_after: Option<ExitAfter>,
    /// Stop writing anything after this many replies.
    pub hang_after_requests: Option<u64>,
    /// Lenient only: wait this many ms before reading stdin (a Contacts prompt); any other
    /// value never reads.
    pub contacts_prompt_ms: Option<Value>,
    /// Per method (or `*`): ms before answering.
    pub delay_ms: BTreeMap<String, u64>,
    /// Lenient: replay `since_rowid` rows before the `watch.subscribe` answer (default true).
    pub replay_before_result: Option<bool>,
    /// Messages carry members imsg may add in a later version.
    pub unknown_members: Option<bool>,
    /// Per method: the next n calls are answered as if the bridge went away under them
    /// (strict −32003, lenient the SIP text), whatever `bridge` says; counts down.
    pub bridge_unavailable: BTreeMap<String, u64>,
    /// Per method: the next n calls are answered as if the database became unreadable
    /// (−32002, strict); counts down.
    pub database_unavailable: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutNoise {
    /// Non-JSON lines written at start.
    pub startup: Vec<String>,
    /// One noise line after every n-th protocol line.
    pub every: Option<u64>,
    pub line: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitWrites {
    pub chunk_bytes: Option<u64>,
    pub pause_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MalformedLine {
    pub before_reply: u64,
    pub line: String,
}

/// Exit (or SIGKILL itself) once a count is reached.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExitAfter {
    pub replies: Option<u64>,
    pub notifications: Option<u64>,
    pub lines: Option<u64>,
    /// `KILL` to die by signal instead of exiting.
    pub signal: Option<String>,
    pub code: Option<i64>,
}

impl Faults {
    /// Reads the raw `faults` object; the error names the key or value at fault.
    pub fn from_map(map: &Map<String, Value>) -> Result<Faults, String> {
        serde_json::from_value(Value::Object(map.clone())).map_err(|e| format!("faults: {e}"))
    }

    pub fn delay_ms(&self, method: &str) -> u64 {
        self.delay_ms
            .get(method)
            .or_else(|| self.delay_ms.get("*"))
            .copied()
            .unwrap_or(0)
    }

    /// Whether this call of `method` is one the bridge fails; uses up one of its count.
    pub fn take_bridge_unavailable(&mut self, method: &str) -> bool {
        take(&mut self.bridge_unavailable, method)
    }

    /// Whether this call of `method` finds the database unreadable; uses up one of its count.
    pub fn take_database_unavailable(&mut self, method: &str) -> bool {
        take(&mut self.database_unavailable, method)
    }
}

fn take(counts: &mut BTreeMap<String, u64>, method: &str) -> bool {
    match counts.get_mut(method) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelt_fault_is_named() {
        let map = json!({"exit_afer": {"replies": 1}});
        let e = Faults::from_map(map.as_object().unwrap()).unwrap_err();
        assert!(e.contains("exit_afer"), "{e}");
        let ok = json!({"delay_ms": {"send": 5, "*": 1}, "startup": "fda_denied"});
        let f = Faults::from_map(ok.as_object().unwrap()).unwrap();
        assert_eq!((f.delay_ms("send"), f.delay_ms("chats.list")), (5, 1));
    }
}
