//! What this account's imsg can do now (actions.md §1.2–§1.4, imsg-protocol.md A10–A11): a
//! capability snapshot, learned from the running binary and never assumed, and the feature
//! table with the reason for every feature that is off.
//!
//! Pure logic here ([`Snapshot`], [`Snapshot::features`]); [`learn`] runs imsg to fill it.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::imsg::rpc::{CallError, RpcClient};
use crate::imsg::source::Source;
use crate::support::sync::LockExt;
use crate::support::timeutil;

/// `MAJOR.MINOR.PATCH`, compared as a tuple.
pub type Version = (u32, u32, u32);

/// The leading `v?MAJOR.MINOR.PATCH` of a version line; a suffix is ignored.
pub fn parse_version(text: &str) -> Option<Version> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line.strip_prefix("imsg ").unwrap_or(line);
    let line = line.strip_prefix('v').unwrap_or(line);
    let mut parts = line.splitn(3, '.');
    let number = |p: Option<&str>| -> Option<u32> {
        let digits: String = p?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((
        number(parts.next())?,
        number(parts.next())?,
        number(parts.next())?,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Lenient,
    Strict,
}

/// One account's capability snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version_text: Option<String>,
    pub profile: Profile,
    pub protocol_version: Option<i64>,
    pub database_ready: bool,
    pub bridge_ready: bool,
    /// Strict: `methods` (usable now). Lenient: `rpc_methods` (0.7.3+), else `None` (the
    /// version table decides).
    pub methods: Option<Vec<String>>,
    /// Strict 0.15: `capabilities.features`.
    pub feature_levels: Map<String, Value>,
    pub checked_at_ms: i64,
}

/// Every feature key, in the order of actions.md §1.3.
pub const FEATURES: [&str; 13] = [
    "reactionsInbound",
    "typing",
    "readReceipts",
    "tapback",
    "tapbackEmoji",
    "edit",
    "unsend",
    "replyThreading",
    "textFormatting",
    "sendStatus",
    "trackedSend",
    "messagesAfter",
    "watchOverflow",
];

pub const BRIDGE_NOT_RUNNING: &str = "the imsg private API bridge is not running (run imsg launch)";

impl Snapshot {
    /// From a strict server's `initialize` or `status` result.
    pub fn from_strict(version_text: Option<String>, result: &Value, now_ms: i64) -> Snapshot {
        let strings = |v: Option<&Value>| -> Option<Vec<String>> {
            Some(
                v?.as_array()?
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect(),
            )
        };
        Snapshot {
            version_text: result
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(version_text),
            profile: Profile::Strict,
            protocol_version: result.get("protocol_version").and_then(Value::as_i64),
            database_ready: result.pointer("/database/ready").and_then(Value::as_bool)
                == Some(true),
            bridge_ready: result.pointer("/bridge/ready").and_then(Value::as_bool) == Some(true),
            methods: Some(strings(result.get("methods")).unwrap_or_default()),
            feature_levels: result
                .pointer("/capabilities/features")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            checked_at_ms: now_ms,
        }
    }

    /// From a lenient server: its `imsg status --json` object when it printed one (0.6.0+).
    pub fn from_lenient(
        version_text: Option<String>,
        status: Option<&Value>,
        now_ms: i64,
    ) -> Snapshot {
        let flag =
            |key: &str| status.and_then(|s| s.get(key)).and_then(Value::as_bool) == Some(true);
        Snapshot {
            version_text: status
                .and_then(|s| s.get("version"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(version_text),
            profile: Profile::Lenient,
            protocol_version: None,
            // A lenient server that answered is reading the database.
            database_ready: true,
            bridge_ready: flag("advanced_features") && flag("v2_ready"),
            methods: status.and_then(|s| s.get("rpc_methods")).and_then(|m| {
                Some(
                    m.as_array()?
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                )
            }),
            feature_levels: Map::new(),
            checked_at_ms: now_ms,
        }
    }

    /// The version, or 0.3.0 when it could not be read (imsg-protocol A10).
    pub fn version(&self) -> Version {
        self.version_text
            .as_deref()
            .and_then(parse_version)
            .unwrap_or((0, 3, 0))
    }

    fn listed(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x == method))
    }

    /// Each feature of §1.3: on, or the reason it is off (§1.4's texts).
    pub fn features(&self) -> BTreeMap<&'static str, Result<(), String>> {
        let version = self.version();
        let found = self
            .version_text
            .clone()
            .unwrap_or_else(|| "an unknown version".into());
        let at_least = |min: Version| -> Result<(), String> {
            if version >= min {
                Ok(())
            } else {
                Err(format!(
                    "needs imsg {}.{}.{} or newer (found {found})",
                    min.0, min.1, min.2
                ))
            }
        };
        let offered = |method: &str| -> Result<(), String> {
            // Lenient builds before rpc_methods (0.7.3) are judged by the version table alone.
            if self.profile == Profile::Lenient && self.methods.is_none() || self.listed(method) {
                Ok(())
            } else {
                Err(format!("this imsg build does not offer {method}"))
            }
        };
        let bridge = || -> Result<(), String> {
            if self.bridge_ready {
                Ok(())
            } else {
                Err(BRIDGE_NOT_RUNNING.to_string())
            }
        };
        let database = || -> Result<(), String> {
            if self.database_ready {
                Ok(())
            } else {
                Err("the Messages database is not readable".to_string())
            }
        };
        let strict = self.profile == Profile::Strict;
        // Lenient servers never have these; the version that brought them is the advice.
        let strict_only = |min: Version| -> Result<(), String> {
            Err(format!(
                "needs imsg {}.{}.{} or newer (found {found})",
                min.0, min.1, min.2
            ))
        };
        let mut out = BTreeMap::new();
        let mut set = |key: &'static str, r: Result<(), String>| {
            out.insert(key, r);
        };
        set(
            "reactionsInbound",
            if strict {
                offered("watch.subscribe")
            } else {
                at_least((0, 5, 0))
            },
        );
        // Strict lists typing/read without a bridge ("may activate Messages.app"); the plugin
        // still requires the bridge, as OpenClaw does.
        set(
            "typing",
            lenient_or(strict, at_least((0, 7, 3)))
                .and(offered("typing"))
                .and(bridge()),
        );
        set(
            "readReceipts",
            lenient_or(strict, at_least((0, 7, 3)))
                .and(offered("read"))
                .and(bridge()),
        );
        let bridge_method = |method: &str| -> Result<(), String> {
            if strict {
                offered(method)
            } else {
                at_least((0, 9, 0)).and(offered(method)).and(bridge())
            }
        };
        set("tapback", bridge_method("tapback"));
        set(
            "tapbackEmoji",
            if !strict {
                strict_only((0, 15, 0))
            } else {
                bridge_method("tapback").and(
                    if self.feature_levels.get("tapback.emoji").and_then(Value::as_i64).unwrap_or(0) >= 2 {
                        Ok(())
                    } else {
                        Err("this imsg build does not report capabilities.features[\"tapback.emoji\"] >= 2".into())
                    },
                )
            },
        );
        set("edit", bridge_method("message.edit"));
        set("unsend", bridge_method("message.unsend"));
        set(
            "replyThreading",
            if strict { Ok(()) } else { at_least((0, 12, 0)) },
        );
        set(
            "textFormatting",
            if strict { Ok(()) } else { at_least((0, 12, 0)) },
        );
        let send_status = if strict {
            offered("message.send_status").and(database())
        } else {
            at_least((0, 10, 0)).and(offered("message.send_status"))
        };
        set("sendStatus", send_status.clone());
        set(
            "trackedSend",
            if strict {
                offered("send.tracked").and(send_status)
            } else {
                strict_only((0, 15, 0))
            },
        );
        set(
            "messagesAfter",
            if strict {
                offered("messages.after")
            } else {
                strict_only((0, 14, 0))
            },
        );
        set(
            "watchOverflow",
            if strict {
                Ok(())
            } else {
                strict_only((0, 14, 0))
            },
        );
        out
    }

    /// The `capabilities.get` result (§1.4).
    pub fn to_json(&self, account_id: &str) -> Value {
        let features = self.features();
        let mut flags = Map::new();
        let mut reasons = Map::new();
        for key in FEATURES {
            let on = features.get(key).is_some_and(Result::is_ok);
            flags.insert(key.into(), Value::Bool(on));
            if let Some(Err(reason)) = features.get(key) {
                reasons.insert(key.into(), Value::from(reason.clone()));
            }
        }
        json!({
            "accountId": account_id,
            "imsgVersion": self.version_text,
            "profile": match self.profile { Profile::Lenient => "lenient", Profile::Strict => "strict" },
            "protocolVersion": self.protocol_version,
            "databaseReady": self.database_ready,
            "bridgeReady": self.bridge_ready,
            "checkedAt": timeutil::format_ms(self.checked_at_ms),
            "features": flags,
            "reasons": reasons,
        })
    }

    /// Whether this snapshot is too old to gate on (§1.2): strict 60 s; lenient 5 min when the
    /// bridge was ready, 10 s when it was not — and at most 10 s before a bridge call, since a
    /// lenient imsg that gets one while the bridge is down relaunches Messages.app.
    pub fn is_stale(&self, now_ms: i64, for_bridge_call: bool) -> bool {
        let max_age_ms = match (self.profile, self.bridge_ready) {
            (Profile::Strict, _) => 60_000,
            (Profile::Lenient, true) if !for_bridge_call => 300_000,
            (Profile::Lenient, _) => 10_000,
        };
        now_ms - self.checked_at_ms > max_age_ms
    }
}

/// The account's last snapshot and its one learner: callers that find the snapshot stale
/// wait for the one run (a lenient `imsg status --json` may take seconds, and runs at most
/// once per 10 s). `None` until learned (hosts that use no capability never learn it).
pub struct Cache {
    source: Source,
    snapshot: Mutex<Option<Snapshot>>,
    learning: tokio::sync::Mutex<()>,
    /// Refresh the strict snapshot with `status {}` on the watcher's child now (a bridge
    /// error was seen; actions.md §1.2, case 164).
    pub status_due: AtomicBool,
}

impl Cache {
    pub fn new(source: Source) -> Cache {
        Cache {
            source,
            snapshot: Mutex::new(None),
            learning: tokio::sync::Mutex::new(()),
            status_due: AtomicBool::new(false),
        }
    }

    /// The last snapshot learned, however old.
    pub fn last(&self) -> Option<Snapshot> {
        self.snapshot.locked().clone()
    }

    /// A snapshot learned on one of the account's own children (initialize, status).
    pub fn note(&self, snapshot: Snapshot) {
        *self.snapshot.locked() = Some(snapshot);
    }

    /// The snapshot may be wrong (the bridge went away): learned again before the next use.
    pub fn forget(&self) {
        *self.snapshot.locked() = None;
    }

    /// The last snapshot says this is a strict server (≥ 0.14): its children are initialized
    /// first.
    pub fn is_strict(&self) -> bool {
        self.snapshot
            .locked()
            .as_ref()
            .is_some_and(|c| c.profile == Profile::Strict)
    }

    /// The cached snapshot while it is fresh (actions.md §1.2), else learned again from imsg
    /// now; `refresh` always learns. `for_bridge_call` gates a bridge call (at most 10 s old
    /// on a lenient server).
    pub async fn get(
        &self,
        refresh: bool,
        for_bridge_call: bool,
        timeout: Duration,
    ) -> Result<Snapshot, String> {
        let fresh = || {
            let now = timeutil::now_ms();
            self.snapshot
                .locked()
                .as_ref()
                .filter(|s| !s.is_stale(now, for_bridge_call))
                .cloned()
        };
        if !refresh {
            if let Some(s) = fresh() {
                return Ok(s);
            }
        }
        let _learner = self.learning.lock().await;
        // Another caller may have learned it while this one waited.
        if !refresh {
            if let Some(s) = fresh() {
                return Ok(s);
            }
        }
        let learned = learn(&self.source, timeout).await?;
        self.note(learned.clone());
        Ok(learned)
    }
}

/// Strict servers gate on their method lists, not versions.
fn lenient_or(strict: bool, lenient: Result<(), String>) -> Result<(), String> {
    if strict {
        Ok(())
    } else {
        lenient
    }
}

/// Runs `cli <args>` with a timeout; its stdout when it exited, `None` otherwise.
async fn run(cli: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let output = tokio::process::Command::new(cli)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, output).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Learns the snapshot now (imsg-protocol A10 steps 2–4): the version, `status --json`, then
/// `initialize` on a fresh `imsg rpc` child; a result means a strict server, −32601 a lenient
/// one. `Err` when imsg could not be reached at all.
pub async fn learn(source: &Source, timeout: Duration) -> Result<Snapshot, String> {
    let version_text = run(&source.cli, &["--version"], timeout)
        .await
        .and_then(|out| {
            out.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        });
    let started = RpcClient::spawn(&source.spawn_config()).map_err(|e| e.to_string())?;
    let initialized = started
        .client
        .request("initialize", json!({"protocol_version": 1}), timeout)
        .await;
    started
        .client
        .clone()
        .shutdown(started.done, Duration::from_millis(500))
        .await;
    let now = timeutil::now_ms();
    match initialized {
        Ok(result) => Ok(Snapshot::from_strict(version_text, &result, now)),
        Err(CallError::Rpc(e)) if e.code == -32601 => {
            let lenient_status = version_text
                .as_deref()
                .and_then(parse_version)
                .is_none_or(|v| v >= (0, 6, 0));
            let status = if lenient_status {
                // The last stdout line that parses as a JSON object (OpenClaw does the same).
                run(&source.cli, &["status", "--json"], timeout)
                    .await
                    .and_then(|out| {
                        out.lines()
                            .rev()
                            .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                            .filter(Value::is_object)
                    })
            } else {
                None
            };
            Ok(Snapshot::from_lenient(version_text, status.as_ref(), now))
        }
        Err(e) => Err(format!("imsg did not say what it can do: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(bridge: bool, methods: &[&str]) -> Snapshot {
        Snapshot::from_strict(
            Some("0.14.0".into()),
            &json!({"version": "0.14.0", "protocol_version": 1,
                "database": {"ready": true}, "bridge": {"ready": bridge}, "methods": methods}),
            0,
        )
    }

    #[test]
    fn versions_parse_with_prefixes_and_suffixes() {
        assert_eq!(parse_version("0.15.10\n"), Some((0, 15, 10)));
        assert_eq!(parse_version("v0.9.0-beta"), Some((0, 9, 0)));
        assert_eq!(parse_version("imsg 0.7.3"), Some((0, 7, 3)));
        assert_eq!(parse_version("unknown"), None);
    }

    #[test]
    fn strict_needs_the_bridge_for_typing_even_when_methods_list_it() {
        let all = [
            "watch.subscribe",
            "typing",
            "read",
            "messages.after",
            "message.send_status",
        ];
        let off = strict(false, &all).features();
        assert_eq!(off["typing"], Err(BRIDGE_NOT_RUNNING.to_string()));
        assert_eq!(off["readReceipts"], Err(BRIDGE_NOT_RUNNING.to_string()));
        assert_eq!(
            off["tapback"],
            Err("this imsg build does not offer tapback".into())
        );
        assert!(off["messagesAfter"].is_ok() && off["watchOverflow"].is_ok());
        assert!(off["reactionsInbound"].is_ok() && off["replyThreading"].is_ok());
        let on = strict(true, &all).features();
        assert!(on["typing"].is_ok() && on["readReceipts"].is_ok());
        assert!(on["tapbackEmoji"].is_err(), "needs the 0.15 feature level");
    }

    #[test]
    fn lenient_follows_the_version_table_and_the_bridge() {
        let status = json!({"advanced_features": true, "v2_ready": true,
            "rpc_methods": ["watch.subscribe", "typing", "read", "tapback"], "version": "0.9.0"});
        let ready = Snapshot::from_lenient(Some("0.9.0".into()), Some(&status), 0).features();
        assert!(ready["typing"].is_ok() && ready["tapback"].is_ok());
        assert_eq!(
            ready["edit"],
            Err("this imsg build does not offer message.edit".into())
        );
        assert_eq!(
            ready["replyThreading"],
            Err("needs imsg 0.12.0 or newer (found 0.9.0)".into())
        );
        assert!(ready["messagesAfter"].is_err() && ready["trackedSend"].is_err());
        let down =
            json!({"advanced_features": false, "v2_ready": false, "rpc_methods": ["typing"]});
        let off = Snapshot::from_lenient(Some("0.9.0".into()), Some(&down), 0).features();
        assert_eq!(off["typing"], Err(BRIDGE_NOT_RUNNING.to_string()));
        let old = Snapshot::from_lenient(Some("0.4.2".into()), None, 0).features();
        assert_eq!(
            old["reactionsInbound"],
            Err("needs imsg 0.5.0 or newer (found 0.4.2)".into())
        );
    }

    #[test]
    fn the_result_has_every_feature_and_a_reason_for_each_off_one() {
        let v = strict(false, &["watch.subscribe", "typing"]).to_json("default");
        assert_eq!(v["profile"], "strict");
        assert_eq!(v["features"].as_object().unwrap().len(), FEATURES.len());
        let off: Vec<&String> = v["features"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, on)| *on == &json!(false))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(off.len(), v["reasons"].as_object().unwrap().len());
        assert_eq!(v["reasons"]["typing"], BRIDGE_NOT_RUNNING);
    }

    #[test]
    fn staleness_follows_the_profile_and_the_bridge() {
        let s = strict(true, &[]);
        assert!(!s.is_stale(60_000, true) && s.is_stale(60_001, false));
        let lenient_down = Snapshot::from_lenient(None, None, 0);
        assert!(lenient_down.is_stale(10_001, false));
        let ready = json!({"advanced_features": true, "v2_ready": true});
        let lenient_up = Snapshot::from_lenient(None, Some(&ready), 0);
        assert!(!lenient_up.is_stale(200_000, false), "ready: 5 min");
        assert!(
            lenient_up.is_stale(10_001, true),
            "before a bridge call: 10 s"
        );
    }
}
