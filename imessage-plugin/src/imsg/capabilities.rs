//! What this account's imsg can do now (actions.md §1.2–§1.4, imsg-protocol.md A10–A11): a
//! capability snapshot, learned from the running binary and never assumed, and the feature
//! table with the reason for every feature that is off.
//!
//! Pure logic here ([`Snapshot`], [`Snapshot::features`]); [`learn`] runs imsg to fill it.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::contract::{Capabilities, ImsgProfile};
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

/// A capability of actions.md §1.3; its key (`as_str`) is the `capabilities.get` wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    ReactionsInbound,
    Typing,
    ReadReceipts,
    Tapback,
    TapbackEmoji,
    Edit,
    Unsend,
    ReplyThreading,
    TextFormatting,
    SendStatus,
    TrackedSend,
    MessagesAfter,
    WatchOverflow,
}

impl Feature {
    /// Every feature, in the order of actions.md §1.3.
    pub const ALL: [Feature; 13] = [
        Feature::ReactionsInbound,
        Feature::Typing,
        Feature::ReadReceipts,
        Feature::Tapback,
        Feature::TapbackEmoji,
        Feature::Edit,
        Feature::Unsend,
        Feature::ReplyThreading,
        Feature::TextFormatting,
        Feature::SendStatus,
        Feature::TrackedSend,
        Feature::MessagesAfter,
        Feature::WatchOverflow,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Feature::ReactionsInbound => "reactionsInbound",
            Feature::Typing => "typing",
            Feature::ReadReceipts => "readReceipts",
            Feature::Tapback => "tapback",
            Feature::TapbackEmoji => "tapbackEmoji",
            Feature::Edit => "edit",
            Feature::Unsend => "unsend",
            Feature::ReplyThreading => "replyThreading",
            Feature::TextFormatting => "textFormatting",
            Feature::SendStatus => "sendStatus",
            Feature::TrackedSend => "trackedSend",
            Feature::MessagesAfter => "messagesAfter",
            Feature::WatchOverflow => "watchOverflow",
        }
    }
}

/// Every feature: on, or the reason it is off.
#[derive(Debug, Clone, PartialEq)]
pub struct Features(BTreeMap<Feature, Result<(), String>>);

impl Features {
    /// Whether `feature` is usable now.
    pub fn on(&self, feature: Feature) -> bool {
        self.0.get(&feature).is_some_and(Result::is_ok)
    }

    /// `feature` as on, or the reason it is off.
    pub fn take(mut self, feature: Feature) -> Result<(), String> {
        self.0
            .remove(&feature)
            .unwrap_or_else(|| Err(format!("unknown capability {}", feature.as_str())))
    }
}

impl std::ops::Index<Feature> for Features {
    type Output = Result<(), String>;

    fn index(&self, feature: Feature) -> &Self::Output {
        // `Snapshot::features` sets every feature.
        &self.0[&feature]
    }
}

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

    /// Why a feature is off on this version: `needs imsg 0.9.0 or newer (found 0.8.1)`.
    fn needs(&self, min: Version) -> String {
        let found = self.version_text.as_deref().unwrap_or("an unknown version");
        format!(
            "needs imsg {}.{}.{} or newer (found {found})",
            min.0, min.1, min.2
        )
    }

    fn at_least(&self, min: Version) -> Result<(), String> {
        if self.version() >= min {
            Ok(())
        } else {
            Err(self.needs(min))
        }
    }

    fn bridge(&self) -> Result<(), String> {
        if self.bridge_ready {
            Ok(())
        } else {
            Err(BRIDGE_NOT_RUNNING.to_string())
        }
    }

    fn database(&self) -> Result<(), String> {
        if self.database_ready {
            Ok(())
        } else {
            Err("the Messages database is not readable".to_string())
        }
    }

    /// Each feature of §1.3: on, or the reason it is off (§1.4's texts).
    pub fn features(&self) -> Features {
        let at_least = |min: Version| self.at_least(min);
        let offered = |method: &str| -> Result<(), String> {
            // Lenient builds before rpc_methods (0.7.3) are judged by the version table alone.
            if self.profile == Profile::Lenient && self.methods.is_none() || self.listed(method) {
                Ok(())
            } else {
                Err(format!("this imsg build does not offer {method}"))
            }
        };
        let bridge = || self.bridge();
        let database = || self.database();
        let strict = self.profile == Profile::Strict;
        // Lenient servers never have these; the version that brought them is the advice.
        let strict_only = |min: Version| Err(self.needs(min));
        let mut out = BTreeMap::new();
        let mut set = |key: Feature, r: Result<(), String>| {
            out.insert(key, r);
        };
        set(
            Feature::ReactionsInbound,
            if strict {
                offered("watch.subscribe")
            } else {
                at_least((0, 5, 0))
            },
        );
        // Strict lists typing/read without a bridge ("may activate Messages.app"); the plugin
        // still requires the bridge, as OpenClaw does.
        set(
            Feature::Typing,
            lenient_or(strict, at_least((0, 7, 3)))
                .and(offered("typing"))
                .and(bridge()),
        );
        set(
            Feature::ReadReceipts,
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
        set(Feature::Tapback, bridge_method("tapback"));
        set(
            Feature::TapbackEmoji,
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
        set(Feature::Edit, bridge_method("message.edit"));
        set(Feature::Unsend, bridge_method("message.unsend"));
        set(
            Feature::ReplyThreading,
            if strict { Ok(()) } else { at_least((0, 12, 0)) },
        );
        set(
            Feature::TextFormatting,
            if strict { Ok(()) } else { at_least((0, 12, 0)) },
        );
        let send_status = if strict {
            offered("message.send_status").and(database())
        } else {
            at_least((0, 10, 0)).and(offered("message.send_status"))
        };
        set(Feature::SendStatus, send_status.clone());
        set(
            Feature::TrackedSend,
            if strict {
                offered("send.tracked").and(send_status)
            } else {
                strict_only((0, 15, 0))
            },
        );
        set(
            Feature::MessagesAfter,
            if strict {
                offered("messages.after")
            } else {
                strict_only((0, 14, 0))
            },
        );
        set(
            Feature::WatchOverflow,
            if strict {
                Ok(())
            } else {
                strict_only((0, 14, 0))
            },
        );
        Features(out)
    }

    /// The `capabilities.get` result (§1.4).
    pub fn to_reply(&self, account_id: &str) -> Capabilities {
        let features = self.features();
        let mut flags = BTreeMap::new();
        let mut reasons = BTreeMap::new();
        for feature in Feature::ALL {
            let key = feature.as_str().to_string();
            match &features[feature] {
                Ok(()) => flags.insert(key, true),
                Err(reason) => {
                    reasons.insert(key.clone(), reason.clone());
                    flags.insert(key, false)
                }
            };
        }
        Capabilities {
            account_id: account_id.to_string(),
            imsg_version: self.version_text.clone(),
            profile: match self.profile {
                Profile::Lenient => ImsgProfile::Lenient,
                Profile::Strict => ImsgProfile::Strict,
            },
            protocol_version: self.protocol_version,
            database_ready: self.database_ready,
            bridge_ready: self.bridge_ready,
            checked_at: timeutil::format_ms(self.checked_at_ms),
            features: flags,
            reasons,
        }
    }

    /// [`Snapshot::to_reply`] as JSON (`AccountStatus.capabilities`).
    pub fn to_json(&self, account_id: &str) -> Value {
        // Plain strings, numbers and maps: encoding cannot fail.
        serde_json::to_value(self.to_reply(account_id)).unwrap_or(Value::Null)
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
    /// The server as the readiness probe found it: strict (its `initialize` snapshot) or
    /// lenient (its version, the bridge not known yet: `imsg status --json` is learned beside
    /// the subscription, not in front of it). Kept when the snapshot is forgotten.
    probed: Mutex<Option<Snapshot>>,
    /// Held by the one learner (shared so a background learner can hold it).
    learning: Arc<tokio::sync::Mutex<()>>,
    /// Refresh the strict snapshot with `status {}` on the watcher's child now (a bridge
    /// error was seen; actions.md §1.2, case 164).
    pub status_due: AtomicBool,
}

impl Cache {
    pub fn new(source: Source) -> Cache {
        Cache {
            source,
            snapshot: Mutex::new(None),
            probed: Mutex::new(None),
            learning: Arc::new(tokio::sync::Mutex::new(())),
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

    /// What the readiness probe found (imsg-protocol A10 steps 2 and 4): a strict server's
    /// `initialize` snapshot becomes the account's; a lenient server's version is kept for
    /// the decisions that depend on the version alone, until its bridge is learned.
    pub fn note_probe(&self, version_text: Option<String>, strict: Option<Snapshot>) {
        let probed = match strict {
            Some(snapshot) => {
                self.note(snapshot.clone());
                snapshot
            }
            None => Snapshot::from_lenient(version_text, None, timeutil::now_ms()),
        };
        *self.probed.locked() = Some(probed);
    }

    /// The lenient server the probe found, if that is what it found.
    fn probed_lenient(&self) -> Option<Snapshot> {
        self.probed
            .locked()
            .clone()
            .filter(|p| p.profile == Profile::Lenient)
    }

    /// The snapshot to judge what depends on the version and profile only by (the
    /// subscription's `include_reactions`): the last one learned, else the lenient server
    /// the probe found. `None` when nothing was probed or learned.
    pub fn version_basis(&self) -> Option<Snapshot> {
        self.last().or_else(|| self.probed.locked().clone())
    }

    /// Learns a lenient server's bridge (`imsg status --json`, which may take ~3 s on a Mac)
    /// in the background, so start-up does not wait for it; callers that need the snapshot
    /// meanwhile wait for this one run. Nothing to do when a snapshot is known already (a
    /// strict server's `initialize`) or another learner runs.
    pub fn learn_bridge_beside(self: &Arc<Self>, timeout: Duration) {
        if self.last().is_some() {
            return;
        }
        let Some(probed) = self.probed_lenient() else {
            return;
        };
        // Taken before spawning: a caller arriving first would otherwise learn it twice.
        let Ok(learner) = self.learning.clone().try_lock_owned() else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let snapshot = learn_lenient(&cache.source, probed.version_text, timeout).await;
            cache.note(snapshot);
            drop(learner);
        });
    }

    /// The snapshot may be wrong (the bridge went away): learned again before the next use.
    pub fn forget(&self) {
        *self.snapshot.locked() = None;
    }

    /// The last snapshot says this is a strict server (≥ 0.14): its children are initialized
    /// first.
    pub fn is_strict(&self) -> bool {
        self.version_basis()
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
        // A server the probe found lenient needs only its bridge status again (one process,
        // not three); an explicit refresh (`--probe`) learns everything anew.
        let probed = self.probed_lenient().filter(|_| !refresh);
        let learned = match probed {
            Some(p) => learn_lenient(&self.source, p.version_text, timeout).await,
            None => learn(&self.source, timeout).await?,
        };
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
pub(super) async fn run(
    cli: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    timeout: Duration,
) -> Option<String> {
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

/// The first non-empty line of `cli --version`, when it printed one.
async fn version_line(cli: &str, timeout: Duration) -> Option<String> {
    run(cli, &["--version"], timeout).await.and_then(|out| {
        out.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    })
}

/// Learns the snapshot now (imsg-protocol A10 steps 2–4): the version and `initialize` on a
/// fresh `imsg rpc` child side by side (a result means a strict server, −32601 a lenient
/// one), then a lenient server's `status --json`. `Err` when imsg could not be reached at all.
pub async fn learn(source: &Source, timeout: Duration) -> Result<Snapshot, String> {
    let initialize = async {
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
        Ok::<_, String>(initialized)
    };
    let (version_text, initialized) = tokio::join!(version_line(&source.cli, timeout), initialize);
    match initialized? {
        Ok(result) => Ok(Snapshot::from_strict(
            version_text,
            &result,
            timeutil::now_ms(),
        )),
        Err(CallError::Rpc(e)) if e.code == -32601 => {
            Ok(learn_lenient(source, version_text, timeout).await)
        }
        Err(e) => Err(format!("imsg did not say what it can do: {e}")),
    }
}

/// A lenient server's snapshot (actions.md §1.2 step 3): `imsg status --json` on 0.6.0+ or
/// an unknown version, taking the last stdout line that parses as a JSON object (OpenClaw
/// does the same); failures leave the bridge off.
async fn learn_lenient(
    source: &Source,
    version_text: Option<String>,
    timeout: Duration,
) -> Snapshot {
    let has_status = version_text
        .as_deref()
        .and_then(parse_version)
        .is_none_or(|v| v >= (0, 6, 0));
    let status = if has_status {
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
    Snapshot::from_lenient(version_text, status.as_ref(), timeutil::now_ms())
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
        assert_eq!(off[Feature::Typing], Err(BRIDGE_NOT_RUNNING.to_string()));
        assert_eq!(
            off[Feature::ReadReceipts],
            Err(BRIDGE_NOT_RUNNING.to_string())
        );
        assert_eq!(
            off[Feature::Tapback],
            Err("this imsg build does not offer tapback".into())
        );
        assert!(off[Feature::MessagesAfter].is_ok() && off[Feature::WatchOverflow].is_ok());
        assert!(off[Feature::ReactionsInbound].is_ok() && off[Feature::ReplyThreading].is_ok());
        let on = strict(true, &all).features();
        assert!(on[Feature::Typing].is_ok() && on[Feature::ReadReceipts].is_ok());
        assert!(
            on[Feature::TapbackEmoji].is_err(),
            "needs the 0.15 feature level"
        );
    }

    #[test]
    fn lenient_follows_the_version_table_and_the_bridge() {
        let status = json!({"advanced_features": true, "v2_ready": true,
            "rpc_methods": ["watch.subscribe", "typing", "read", "tapback"], "version": "0.9.0"});
        let ready = Snapshot::from_lenient(Some("0.9.0".into()), Some(&status), 0).features();
        assert!(ready[Feature::Typing].is_ok() && ready[Feature::Tapback].is_ok());
        assert_eq!(
            ready[Feature::Edit],
            Err("this imsg build does not offer message.edit".into())
        );
        assert_eq!(
            ready[Feature::ReplyThreading],
            Err("needs imsg 0.12.0 or newer (found 0.9.0)".into())
        );
        assert!(ready[Feature::MessagesAfter].is_err() && ready[Feature::TrackedSend].is_err());
        let down =
            json!({"advanced_features": false, "v2_ready": false, "rpc_methods": ["typing"]});
        let off = Snapshot::from_lenient(Some("0.9.0".into()), Some(&down), 0).features();
        assert_eq!(off[Feature::Typing], Err(BRIDGE_NOT_RUNNING.to_string()));
        let old = Snapshot::from_lenient(Some("0.4.2".into()), None, 0).features();
        assert_eq!(
            old[Feature::ReactionsInbound],
            Err("needs imsg 0.5.0 or newer (found 0.4.2)".into())
        );
    }

    #[test]
    fn the_result_has_every_feature_and_a_reason_for_each_off_one() {
        let v = strict(false, &["watch.subscribe", "typing"]).to_json("default");
        assert_eq!(v["profile"], "strict");
        assert_eq!(v["features"].as_object().unwrap().len(), Feature::ALL.len());
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
    fn a_probed_lenient_version_decides_the_subscription_until_the_bridge_is_learned() {
        let source = Source::resolve(
            &crate::config::parse(&json!({"channels": {"imessage": {}}}))
                .unwrap()
                .accounts[0],
        );
        let cache = Cache::new(source);
        assert!(cache.version_basis().is_none(), "nothing probed yet");
        cache.note_probe(Some("0.4.0".into()), None);
        assert!(cache.last().is_none(), "the bridge is not known yet");
        assert!(!cache.is_strict());
        let basis = cache.version_basis().expect("the probe's version");
        assert_eq!(
            basis.features().take(Feature::ReactionsInbound),
            Err("needs imsg 0.5.0 or newer (found 0.4.0)".into())
        );
        cache.note_probe(None, Some(strict(false, &["watch.subscribe"])));
        assert!(cache.is_strict() && cache.last().is_some());
        cache.forget();
        assert!(
            cache.is_strict(),
            "its children are still initialized first"
        );
        assert!(cache
            .version_basis()
            .unwrap()
            .features()
            .on(Feature::ReactionsInbound));
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
