//! `pairing.host` (issue 24): a host that keeps the pairing requests and the allow store
//! itself (OpenClaw's pairing runtime, so `openclaw pairing list/approve imessage` see them).
//! The watcher asks it through `host.request` instead of keeping `pairing.json` and
//! `allow.json`; a host without the feature (host-stub) keeps the files of [`PairingStore`].

use std::sync::Arc;

use plugin_abi::contract::{
    HostMethod, PairingAllowFrom, PairingAllowFromReply, PairingUpsert, PairingUpsertReply,
};
use plugin_abi::guard::HostHandle;
use plugin_abi::types::{features, PluginError};
use serde_json::Value;

use super::{Challenge, PairingStore};

/// How long a known sender's DMs use the allow store as last read from the host: each read is
/// a round trip into the host (a Node process for OpenClaw), too costly per message, while a
/// revocation taking a few seconds to apply is acceptable.
pub const ALLOW_REFRESH_MS: i64 = 5_000;

/// Plugin → host requests; the host handle, or a fake in tests.
pub trait PairingHost: Send + Sync {
    fn request(&self, method: HostMethod, payload: Value) -> Result<Value, PluginError>;
}

impl PairingHost for HostHandle {
    fn request(&self, method: HostMethod, payload: Value) -> Result<Value, PluginError> {
        HostHandle::request(self, method.as_str(), &payload)
    }
}

/// One account's pairing kept by the host, with the allow store cached.
pub struct HostPairing {
    host: Arc<dyn PairingHost>,
    account_id: String,
    /// When the allow store was last asked for; `None` before the first ask.
    asked_ms: Option<i64>,
    /// The last list the host answered (normalized, `"*"` left out).
    allow: Vec<String>,
    /// In a failure streak: only its first failure is logged above debug.
    failing: bool,
}

impl HostPairing {
    pub fn new(host: Arc<dyn PairingHost>, account_id: &str) -> Self {
        HostPairing {
            host,
            account_id: account_id.to_string(),
            asked_ms: None,
            allow: Vec::new(),
            failing: false,
        }
    }

    /// The allow store for the hot path: asked again once it is [`ALLOW_REFRESH_MS`] old.
    pub fn allow_list_cached(&mut self, now_ms: i64) -> &[String] {
        let stale = self
            .asked_ms
            .is_none_or(|asked| now_ms.saturating_sub(asked) >= ALLOW_REFRESH_MS);
        if stale {
            self.refresh(now_ms);
        }
        &self.allow
    }

    /// Before a stranger is asked to pair: the allow store read again unless it was read for
    /// this very message (at `now_ms`), so a sender approved since the last read is admitted
    /// instead of getting a new code. True when the list changed.
    pub fn recheck(&mut self, now_ms: i64) -> bool {
        if self.asked_ms == Some(now_ms) {
            return false;
        }
        let before = self.allow.clone();
        self.refresh(now_ms);
        self.allow != before
    }

    /// Asks the host; a failure keeps the last good list.
    fn refresh(&mut self, now_ms: i64) {
        self.asked_ms = Some(now_ms);
        let payload = PairingAllowFrom {
            account_id: Some(self.account_id.clone()),
        };
        match self.ask::<PairingAllowFromReply>(HostMethod::PairingAllowFrom, &payload) {
            Ok(reply) => {
                if self.failing {
                    tracing::info!(account = %self.account_id, "the host answers pairing.allowFrom again");
                }
                self.failing = false;
                self.allow = allow_list(reply.allow_from);
            }
            Err(e) => {
                if !self.failing {
                    // The host's message may quote a handle: its code only above debug.
                    tracing::warn!(account = %self.account_id, code = %e.code, "the host did not answer pairing.allowFrom; keeping the last allow list (details at debug level)");
                }
                tracing::debug!(account = %self.account_id, "pairing.allowFrom failed: {e}");
                self.failing = true;
            }
        }
    }

    /// The pairing flow for a DM that policy did not admit: the host records the request;
    /// the reply is due only when it created one.
    pub fn challenge(
        &self,
        sender_id: &str,
        chat_id: Option<i64>,
    ) -> Result<Challenge, PluginError> {
        let payload = PairingUpsert {
            sender_id: sender_id.to_string(),
            chat_id,
            meta: Default::default(),
            account_id: Some(self.account_id.clone()),
        };
        let reply = self.ask::<PairingUpsertReply>(HostMethod::PairingUpsert, &payload)?;
        Ok(upsert_outcome(reply, chat_id))
    }

    fn ask<R: serde::de::DeserializeOwned>(
        &self,
        method: HostMethod,
        payload: &impl serde::Serialize,
    ) -> Result<R, PluginError> {
        let payload = serde_json::to_value(payload).map_err(|e| {
            PluginError::new(
                plugin_abi::contract::ErrorCode::Internal,
                format!("{method}: {e}"),
            )
        })?;
        let reply = self.host.request(method, payload)?;
        serde_json::from_value(reply).map_err(|e| {
            PluginError::new(
                plugin_abi::contract::ErrorCode::BadPayload,
                format!("the host's answer to {method}: {e}"),
            )
        })
    }
}

/// The host's entries as the policy compares them: normalized like a sender id, and never
/// `"*"` (pairing admits people one by one; the file store drops it too).
fn allow_list(entries: Vec<String>) -> Vec<String> {
    entries
        .iter()
        .map(|e| crate::support::handle::normalize_sender(e))
        .filter(|e| !e.is_empty() && e != "*")
        .collect()
}

/// `created` false: a request was already pending (its reply went out then) or the host's
/// queue is full; neither gets a reply. A created request without a code cannot be shown.
fn upsert_outcome(reply: PairingUpsertReply, chat_id: Option<i64>) -> Challenge {
    let code = reply.code.trim();
    match (reply.created, code.is_empty()) {
        (true, false) => Challenge::Reply {
            code: code.to_string(),
            chat_id,
        },
        (true, true) => {
            tracing::warn!("the host created a pairing request without a code; no reply sent");
            Challenge::Pending
        }
        (false, _) => Challenge::Pending,
    }
}

/// Where an account's pairing lives: the library's own files, or the host.
pub enum Pairing {
    Files(PairingStore),
    Host(HostPairing),
}

impl Pairing {
    /// The host's store when it lists `pairing.host`, else the files in `dir`. The caller
    /// hands over what the choice needs: this leaf never names the account that owns it.
    pub fn choose(
        host_features: &plugin_abi::types::HostFeatures,
        host: Arc<dyn PairingHost>,
        account_id: &str,
        dir: &std::path::Path,
    ) -> Pairing {
        if host_features.has(features::PAIRING_HOST) {
            Pairing::Host(HostPairing::new(host, account_id))
        } else {
            Pairing::Files(PairingStore::new(dir))
        }
    }

    pub fn allow_list_cached(&mut self, now_ms: i64) -> &[String] {
        match self {
            Pairing::Files(s) => s.allow_list_cached(now_ms),
            Pairing::Host(h) => h.allow_list_cached(now_ms),
        }
    }

    /// See [`HostPairing::recheck`]; the files are checked every 250 ms anyway.
    pub fn recheck(&mut self, now_ms: i64) -> bool {
        match self {
            Pairing::Files(_) => false,
            Pairing::Host(h) => h.recheck(now_ms),
        }
    }

    pub fn challenge(
        &self,
        sender_id: &str,
        chat_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Challenge, String> {
        match self {
            Pairing::Files(s) => s
                .challenge(sender_id, chat_id, now_ms)
                .map_err(|e| format!("pairing.json: {e}")),
            // The host's message may quote the sender: the code only.
            Pairing::Host(h) => h.challenge(sender_id, chat_id).map_err(|e| {
                tracing::debug!("pairing.upsert failed: {e}");
                format!(
                    "the host's pairing.upsert failed ({}; details at debug level)",
                    e.code
                )
            }),
        }
    }

    /// Whether the pairing reply reached imsg. The host keeps no such flag: it answers
    /// `created` once per request, so a failed reply is not retried there.
    pub fn set_notified(&self, sender_id: &str, notified: bool, now_ms: i64) -> Result<(), String> {
        match self {
            Pairing::Files(s) => s
                .set_notified(sender_id, notified, now_ms)
                .map_err(|e| format!("updating pairing.json: {e}")),
            Pairing::Host(_) => Ok(()),
        }
    }

    /// Where an operator finds the pending codes.
    pub fn where_listed(&self) -> &'static str {
        match self {
            Pairing::Files(_) => "list pending codes with `host-stub pairing list imessage`",
            Pairing::Host(_) => "the host keeps the request (pairing.host); list it with the host's own pairing command",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use plugin_abi::contract::ErrorCode;
    use serde_json::json;

    const T0: i64 = 1_800_000_000_000;
    const STRANGER: &str = "+15550002222";

    /// A host that answers from a script and records what it was asked.
    struct FakeHost {
        asked: Mutex<Vec<(HostMethod, Value)>>,
        allow: Mutex<Result<Vec<String>, String>>,
        upsert: Mutex<Option<Value>>,
    }

    impl FakeHost {
        fn new(allow: &[&str]) -> Arc<FakeHost> {
            let host = FakeHost {
                asked: Mutex::default(),
                allow: Mutex::new(Ok(Vec::new())),
                upsert: Mutex::default(),
            };
            host.set_allow(Ok(allow));
            Arc::new(host)
        }

        fn set_allow(&self, allow: Result<&[&str], &str>) {
            *self.allow.lock().unwrap() = allow
                .map(|a| a.iter().map(|s| s.to_string()).collect())
                .map_err(str::to_string);
        }

        fn count(&self, method: HostMethod) -> usize {
            self.asked
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, _)| *m == method)
                .count()
        }
    }

    impl PairingHost for FakeHost {
        fn request(&self, method: HostMethod, payload: Value) -> Result<Value, PluginError> {
            self.asked.lock().unwrap().push((method, payload));
            match method {
                HostMethod::PairingAllowFrom => match &*self.allow.lock().unwrap() {
                    Ok(list) => Ok(json!({ "allowFrom": list })),
                    Err(why) => Err(PluginError::new(ErrorCode::Failed, why.clone())),
                },
                HostMethod::PairingUpsert => self
                    .upsert
                    .lock()
                    .unwrap()
                    .clone()
                    .ok_or_else(|| PluginError::new(ErrorCode::Failed, "no upsert scripted")),
                other => Err(PluginError::new(ErrorCode::UnknownMethod, other.as_str())),
            }
        }
    }

    fn store(host: &Arc<FakeHost>) -> HostPairing {
        let host: Arc<dyn PairingHost> = host.clone();
        HostPairing::new(host, "default")
    }

    #[test]
    fn the_allow_store_is_asked_at_most_every_five_seconds() {
        let host = FakeHost::new(&["+1 (555) 000-3333", "*"]);
        let mut s = store(&host);
        assert_eq!(s.allow_list_cached(T0), ["+15550003333".to_string()]);
        assert_eq!(
            host.asked.lock().unwrap()[0].1,
            json!({"accountId": "default"})
        );
        host.set_allow(Ok(&[STRANGER]));
        for t in [T0 + 1, T0 + ALLOW_REFRESH_MS - 1] {
            assert_eq!(s.allow_list_cached(t), ["+15550003333".to_string()]);
        }
        assert_eq!(host.count(HostMethod::PairingAllowFrom), 1, "cached");
        assert_eq!(
            s.allow_list_cached(T0 + ALLOW_REFRESH_MS),
            [STRANGER.to_string()]
        );
        assert_eq!(host.count(HostMethod::PairingAllowFrom), 2);
    }

    #[test]
    fn a_host_failure_keeps_the_last_good_list() {
        let host = FakeHost::new(&[STRANGER]);
        let mut s = store(&host);
        assert_eq!(s.allow_list_cached(T0), [STRANGER.to_string()]);
        host.set_allow(Err("the pairing store is busy"));
        let later = T0 + ALLOW_REFRESH_MS;
        assert_eq!(s.allow_list_cached(later), [STRANGER.to_string()]);
        assert!(s.failing);
        // A failed ask still waits its interval: a down host is not asked per message.
        s.allow_list_cached(later + 1);
        assert_eq!(host.count(HostMethod::PairingAllowFrom), 2);
        host.set_allow(Ok(&[]));
        assert!(s.allow_list_cached(later + ALLOW_REFRESH_MS).is_empty());
        assert!(!s.failing, "the streak ends with a good answer");
    }

    #[test]
    fn a_stranger_rechecks_the_allow_store_unless_read_for_this_message() {
        let host = FakeHost::new(&[]);
        let mut s = store(&host);
        assert!(s.allow_list_cached(T0).is_empty());
        assert!(!s.recheck(T0), "read for this message already");
        assert_eq!(host.count(HostMethod::PairingAllowFrom), 1);
        host.set_allow(Ok(&[STRANGER]));
        assert!(s.recheck(T0 + 10), "approved since: the list changed");
        assert_eq!(s.allow_list_cached(T0 + 10), [STRANGER.to_string()]);
        assert!(!s.recheck(T0 + 20), "asked again, unchanged");
        assert_eq!(host.count(HostMethod::PairingAllowFrom), 3);
    }

    #[test]
    fn the_reply_is_due_only_when_the_host_created_the_request() {
        let host = FakeHost::new(&[]);
        let s = store(&host);
        *host.upsert.lock().unwrap() = Some(json!({"code": "K7M2QX9D", "created": true}));
        assert_eq!(
            s.challenge(STRANGER, Some(8)).unwrap(),
            Challenge::Reply {
                code: "K7M2QX9D".into(),
                chat_id: Some(8)
            }
        );
        let asked = host.asked.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            asked,
            (
                HostMethod::PairingUpsert,
                json!({"senderId": STRANGER, "chatId": 8, "meta": {}, "accountId": "default"})
            )
        );
        // A pending sender's next DM, the host's full queue, a created request without a code.
        for answer in [
            json!({"code": "K7M2QX9D", "created": false}),
            json!({"code": "", "created": false}),
            json!({"code": " ", "created": true}),
        ] {
            *host.upsert.lock().unwrap() = Some(answer.clone());
            assert_eq!(
                s.challenge(STRANGER, None).unwrap(),
                Challenge::Pending,
                "{answer}"
            );
        }
        *host.upsert.lock().unwrap() = Some(json!({"code": 7}));
        let bad = s.challenge(STRANGER, None).unwrap_err();
        assert_eq!(bad.code, "bad_payload", "{bad:?}");
        *host.upsert.lock().unwrap() = None;
        assert_eq!(s.challenge(STRANGER, None).unwrap_err().code, "failed");
    }
}
