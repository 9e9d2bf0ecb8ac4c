//! One account at run time: its folders, its source signature, the state shared between its
//! watcher task and host calls (echo registry, sender process, status), and its sends.

use crate::support::sync::{LockExt, RwLockExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use plugin_abi::guard::HostHandle;
use plugin_abi::types::{AccountStatus, CursorStatus, HostFeatures, QuarantineStatus};
use serde_json::Value;

use crate::config::{rules, AccountConfig, Config};
use crate::echo::EchoRegistry;
use crate::imsg::remote;
use crate::imsg::rpc::SpawnConfig;
use crate::inbound::Stats;
use crate::outbound::send::SenderProcess;
use crate::support::timeutil;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `~/x` → `$HOME/x`.
pub fn expand_tilde(path: &str) -> String {
    match (path.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => h.join(rest).display().to_string(),
        _ if path == "~" => home()
            .map(|h| h.display().to_string())
            .unwrap_or_else(|| path.into()),
        _ => path.to_string(),
    }
}

/// How an account reaches imsg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub cli: String,
    pub db: Option<String>,
    pub remote_host: Option<String>,
    /// `config`, `detected` or `none`.
    pub remote_source: &'static str,
    /// The wrapper was read but its host could not be told (§8.4): local mode, with a warning.
    pub detection_unclear: bool,
}

impl Source {
    pub fn resolve(account: &AccountConfig) -> Source {
        let cli = expand_tilde(&account.cli_path);
        let mut detection_unclear = false;
        let (remote_host, remote_source) = match &account.remote_host {
            Some(h) => (Some(h.clone()), "config"),
            // Only a path-like cliPath can be a wrapper; a bare name is never read.
            None if rules::is_path_like(&account.cli_path) => match remote::detect(&cli) {
                remote::Detection::Host(h) => (Some(h), "detected"),
                remote::Detection::Unclear => {
                    detection_unclear = true;
                    (None, "none")
                }
                remote::Detection::None => (None, "none"),
            },
            None => (None, "none"),
        };
        let remote = remote_host.is_some();
        Source {
            cli,
            // On a remote Mac the path is the Mac's: no local expansion.
            db: account.db_path.as_deref().map(|d| {
                if remote {
                    d.to_string()
                } else {
                    expand_tilde(d)
                }
            }),
            remote_host,
            remote_source,
            detection_unclear,
        }
    }

    /// The signature that ties a cursor to a database (§6.2, §11).
    pub fn signature(&self) -> String {
        format!(
            "{}|{}|{}",
            self.cli,
            self.db.as_deref().unwrap_or(""),
            self.remote_host.as_deref().unwrap_or("")
        )
    }

    /// `<stateDir>/imessage/locks/<first 16 hex of sha256(signature)>.lock` (§11).
    pub fn lock_path(&self, state_imessage_dir: &Path) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.signature().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        state_imessage_dir.join("locks").join(format!("{hex}.lock"))
    }

    pub fn spawn_config(&self) -> SpawnConfig {
        SpawnConfig::rpc(&self.cli, self.db.as_deref())
    }
}

/// Where an account's watch is (channel-behaviour.md §10.3); a string only in status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccountState {
    Starting,
    Watching,
    Recovering,
    /// A permission failure (Full Disk Access): re-probed on a long timer, never in a loop.
    Blocked,
    /// Another account or process watches the same Messages database.
    DuplicateSource,
    #[default]
    Stopped,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Starting => "starting",
            AccountState::Watching => "watching",
            AccountState::Recovering => "recovering",
            AccountState::Blocked => "blocked",
            AccountState::DuplicateSource => "duplicate_source",
            AccountState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct StatusState {
    pub state: AccountState,
    pub last_error: Option<String>,
    pub last_inbound_ms: Option<i64>,
    pub last_outbound_ms: Option<i64>,
    pub cursor: Option<(i64, Option<i64>)>,
    pub stats: Stats,
    /// Panics caught in processing, and messages quarantined for panicking twice.
    pub panics: u64,
    pub quarantined: u64,
    /// `watch.overflow` endings, and when the recent ones happened (for the warning).
    pub watch_overflows: u64,
    /// Reaction events the host took.
    pub reactions_delivered: u64,
    pub recent_overflows: std::collections::VecDeque<i64>,
}

/// The config an account runs with: the whole validated config and this account's effective
/// settings, replaced together by a reload.
#[derive(Clone)]
pub struct Configured {
    pub whole: Arc<Config>,
    pub account: AccountConfig,
}

/// The part of an account that host calls and the watcher share.
pub struct Account {
    pub id: String,
    pub dir: PathBuf,
    pub media_dir: PathBuf,
    /// When staging last cleaned `media_dir` (besides the clean at start).
    pub media_cleaner: crate::watcher::staging::Cleaner,
    config: RwLock<Configured>,
    pub source: Source,
    pub echo: Arc<Mutex<EchoRegistry>>,
    pub sender: tokio::sync::Mutex<SenderProcess>,
    pub status: Mutex<StatusState>,
    pub host: Arc<HostHandle>,
    /// What the host understands beyond the base contract (`StartContext.host`).
    pub features: Arc<HostFeatures>,
    /// Control-command names: the host's, else the defaults (§9.1).
    pub commands: Arc<crate::inbound::policy::CommandNames>,
    /// Bumped by every config reload that applies without a restart; the watcher picks the
    /// new settings up before its next message.
    pub generation: std::sync::atomic::AtomicU64,
    /// The last capability snapshot learned (actions.md §1.2); `None` until asked for.
    pub capabilities: Mutex<Option<crate::imsg::capabilities::Snapshot>>,
    /// One learner at a time: callers that find the snapshot stale wait for the one run
    /// (a lenient `imsg status --json` may take seconds, and runs at most once per 10 s).
    learning: tokio::sync::Mutex<()>,
    /// The actions child (actions.md §1.1): read receipts now, typing and tapbacks later.
    pub actions: tokio::sync::Mutex<SenderProcess>,
    /// When the actions child was last asked something (idle close).
    pub actions_used_ms: std::sync::atomic::AtomicI64,
    pub read_receipts: Mutex<crate::actions::ReadReceipts>,
    /// Routed inbound messages and their chats, for message actions (actions.md §3.0).
    pub index: Mutex<crate::actions::index::MessageIndex>,
    /// Idempotent-send counters, and parts whose outcome is unknown until their echo.
    pub sends: crate::outbound::path::SendStats,
    pub unsettled: Mutex<Vec<crate::outbound::path::Unsettled>>,
    pub recent_own: Mutex<std::collections::VecDeque<crate::outbound::path::OwnRow>>,
    /// Outbound rate limiting (actions.md §6), and when its counters were last saved.
    pub limiter: Mutex<crate::outbound::ratelimit::Limiter>,
    limits_saved_ms: std::sync::atomic::AtomicI64,
    /// Refresh the strict snapshot with `status {}` on the watcher's child now (a bridge
    /// error was seen; actions.md §1.2, case 164).
    pub status_due: std::sync::atomic::AtomicBool,
    pub typing: Mutex<crate::actions::typing::Typing>,
    /// The dedupe key of the message whose processing last panicked. It outlives the watcher
    /// restart that follows, so a second panic on the same message quarantines it.
    pub suspect: Mutex<Option<String>>,
    /// The message being processed, on disk, so a row that kills the process (a stack
    /// overflow, an abort) is found at the next start.
    pub inflight: Mutex<crate::state::inflight::InFlight>,
    /// The row a process that died left in flight, with how many starts found it so.
    pub crashed: Mutex<Option<crate::state::inflight::Record>>,
}

impl Account {
    pub fn new(
        state_dir: &Path,
        config: Arc<Config>,
        account: AccountConfig,
        host: Arc<HostHandle>,
        features: Arc<HostFeatures>,
    ) -> Account {
        let dir = state_dir.join("imessage").join(&account.key);
        let media_dir = state_dir.join("imessage").join("media").join(&account.key);
        let source = Source::resolve(&account);
        match &source.remote_host {
            Some(h) if source.remote_source == "detected" => {
                tracing::info!("remoteHost {h} detected from {}", account.cli_path)
            }
            None if source.detection_unclear => tracing::warn!(
                "cannot tell the remote host from {}; set channels.imessage.remoteHost",
                account.cli_path
            ),
            _ => {}
        }
        let media_roots = crate::outbound::media::effective_roots(
            account.media_local_roots.as_deref(),
            features.media_local_roots.as_deref(),
        );
        if media_roots.is_none() {
            tracing::info!(
                account = %account.id,
                "outbound media paths are not restricted: set channels.imessage.mediaLocalRoots to limit them"
            );
        }
        let echo = EchoRegistry::open(&dir, timeutil::now_ms());
        // The send ledger keeps 7 days; what is older goes now.
        if let Err(e) = crate::state::ledger::compact(&dir, timeutil::now_ms()) {
            tracing::warn!("send ledger: {e}");
        }
        let limiter = crate::outbound::ratelimit::Limiter::new(
            account.rate_limit,
            crate::outbound::ratelimit::persist::load(&dir),
        );
        let source_spawn = source.spawn_config();
        let (inflight, crashed) = match crate::state::inflight::InFlight::open(&dir) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(
                    "{e}; a message that crashes the process may be replayed at every start"
                );
                (crate::state::inflight::InFlight::disabled(), None)
            }
        };
        if let Some(r) = &crashed {
            tracing::error!(
                account = %account.id,
                rowid = r.rowid,
                "the process ended while row {} was being processed ({} time(s)); {}",
                r.rowid,
                r.crashes,
                if r.crashes >= crate::state::inflight::QUARANTINE_AFTER {
                    "it will be quarantined when it comes again"
                } else {
                    "it will be tried once more"
                }
            );
        }
        Account {
            inflight: Mutex::new(inflight),
            crashed: Mutex::new(crashed),
            id: account.id.clone(),
            dir,
            media_dir,
            media_cleaner: crate::watcher::staging::Cleaner::default(),
            sender: tokio::sync::Mutex::new(SenderProcess::new(source.spawn_config())),
            source,
            config: RwLock::new(Configured {
                whole: config,
                account,
            }),
            echo: Arc::new(Mutex::new(echo)),
            status: Mutex::new(StatusState {
                state: AccountState::Stopped,
                ..Default::default()
            }),
            host,
            commands: Arc::new(crate::inbound::policy::CommandNames::new(
                features.command_names.as_deref(),
            )),
            features,
            generation: std::sync::atomic::AtomicU64::new(0),
            suspect: Mutex::new(None),
            capabilities: Mutex::new(None),
            learning: tokio::sync::Mutex::new(()),
            actions: tokio::sync::Mutex::new(SenderProcess::new(source_spawn)),
            actions_used_ms: std::sync::atomic::AtomicI64::new(0),
            read_receipts: Mutex::new(Default::default()),
            index: Mutex::new(Default::default()),
            limiter: Mutex::new(limiter),
            sends: Default::default(),
            unsettled: Mutex::new(Vec::new()),
            recent_own: Mutex::new(Default::default()),
            limits_saved_ms: std::sync::atomic::AtomicI64::new(0),
            status_due: std::sync::atomic::AtomicBool::new(false),
            typing: Mutex::new(Default::default()),
        }
    }

    /// Applies reloaded settings that need no restart (policy, routing, prefixes, chunking).
    pub fn update(&self, config: Arc<Config>, settings: AccountConfig) {
        self.limiter.locked().set_limits(settings.rate_limit);
        *self.config.write_locked() = Configured {
            whole: config,
            account: settings,
        };
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The whole config and the account's settings, read together.
    pub fn configured(&self) -> Configured {
        self.config.read_locked().clone()
    }

    pub fn settings(&self) -> AccountConfig {
        self.config.read_locked().account.clone()
    }

    /// The capability snapshot: the cached one while it is fresh (actions.md §1.2), else
    /// learned again from imsg now. `refresh` always learns.
    pub async fn capabilities(
        &self,
        refresh: bool,
    ) -> Result<crate::imsg::capabilities::Snapshot, String> {
        self.capabilities_within(refresh, false).await
    }

    /// The snapshot to gate a bridge call on: on a lenient server at most 10 s old (§1.2).
    pub async fn bridge_capabilities(&self) -> Result<crate::imsg::capabilities::Snapshot, String> {
        self.capabilities_within(false, true).await
    }

    async fn capabilities_within(
        &self,
        refresh: bool,
        for_bridge_call: bool,
    ) -> Result<crate::imsg::capabilities::Snapshot, String> {
        let fresh = || {
            let now = timeutil::now_ms();
            self.capabilities
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
        let timeout = Duration::from_millis(self.settings().probe_timeout_ms);
        let learned = crate::imsg::capabilities::learn(&self.source, timeout).await?;
        *self.capabilities.locked() = Some(learned.clone());
        Ok(learned)
    }

    /// The last snapshot says this is a strict server (≥ 0.14): its children are initialized
    /// first. Unknown until learned (hosts that use no capability never learn it).
    pub fn is_strict(&self) -> bool {
        self.capabilities
            .locked()
            .as_ref()
            .is_some_and(|c| c.profile == crate::imsg::capabilities::Profile::Strict)
    }

    /// A snapshot learned on one of the account's own children (initialize, status).
    pub fn note_capabilities(&self, snapshot: crate::imsg::capabilities::Snapshot) {
        *self.capabilities.locked() = Some(snapshot);
    }

    /// Counts a caught panic and shows it as the last error.
    pub fn note_panic(&self, what: String) {
        let mut s = self.status.locked();
        s.panics += 1;
        s.last_error = Some(what);
    }

    pub fn set_state(&self, state: AccountState, error: Option<String>) {
        let mut s = self.status.locked();
        s.state = state;
        if error.is_some() {
            s.last_error = error;
        }
    }

    /// Someone wrote in these conversations (any row not from us, not a duplicate, not
    /// stale): the rate limiter's unanswered counts reset (§6.2). Only an `admitted` sender's
    /// row adds conversations to the counters (see `Limiter::note_inbound`).
    pub fn note_inbound(&self, m: &crate::imsg::message::ImsgMessage, admitted: bool) {
        use std::fmt::Write;
        let now = timeutil::now_ms();
        if let Some(chat_id) = m.chat_id {
            if self.limiter.locked().noted_recently(chat_id, now, admitted) {
                return;
            }
        }
        // One buffer for the (up to four) scope keys: this runs for every inbound row.
        let mut keys = String::with_capacity(96);
        let mut ends = [0usize; 4];
        let mut n = 0;
        let mut push = |keys: &mut String, piece: std::fmt::Arguments| {
            let _ = keys.write_fmt(piece);
            ends[n] = keys.len();
            n += 1;
        };
        if let Some(id) = m.chat_id {
            push(&mut keys, format_args!("chat:{id}"));
        }
        if let Some(g) = m.chat_guid.as_deref().filter(|g| !g.is_empty()) {
            push(&mut keys, format_args!("guid:{g}"));
        }
        if let Some(i) = m.chat_identifier.as_deref().filter(|i| !i.is_empty()) {
            push(&mut keys, format_args!("ident:{i}"));
        }
        if m.is_group != Some(true) {
            if let Some(h) = m.sender.as_deref().filter(|h| !h.is_empty()) {
                push(
                    &mut keys,
                    format_args!("handle:{}", crate::support::handle::normalize_sender(h)),
                );
            }
        }
        let scopes = (0..n).map(|i| &keys[if i == 0 { 0 } else { ends[i - 1] }..ends[i]]);
        self.limiter.locked().note_inbound(scopes, admitted, now);
        self.save_limits(false);
    }

    /// Persists the rate-limit counters: at most once a second, or now (`force`, at stop).
    pub fn save_limits(&self, force: bool) {
        let now = timeutil::now_ms();
        let last = self
            .limits_saved_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if !force && now - last < 1000 {
            return;
        }
        let mut snapshot = {
            let mut limiter = self.limiter.locked();
            if !limiter.dirty {
                return;
            }
            limiter.dirty = false;
            limiter.counters.clone()
        };
        self.limits_saved_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.clone();
        let id = self.id.clone();
        let mut save = move || {
            if let Err(e) = crate::outbound::ratelimit::persist::save(&dir, &mut snapshot, now) {
                tracing::warn!(account = %id, "saving the rate-limit counters: {e}");
            }
        };
        // The file is written (and synced) off the message path: this runs for inbound rows.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !force => {
                runtime.spawn_blocking(save);
            }
            _ => save(),
        }
    }

    /// The `outbound` status object.
    fn outbound_status(&self) -> Value {
        let now = timeutil::now_ms();
        let l = self.limiter.locked();
        let within = |times: &std::collections::VecDeque<i64>, window: i64| {
            times.iter().filter(|t| now - **t < window).count()
        };
        let mut out = self.send_counters();
        out["rateLimitedParts"] = Value::from(l.limited_parts);
        out["rateLimit"] = serde_json::json!({
            "enabled": l.limits.enabled,
            "conversations": l.counters.conversations.len(),
            "newChatsLastHour": within(&l.counters.new_chats, 3_600_000),
            "reachOutLastDay": within(&l.counters.reach_out, 86_400_000),
        });
        out
    }

    pub fn status(&self, pending_pairing: u64, allow_store_size: u64) -> AccountStatus {
        let account = self.settings();
        let s = self.status.locked().clone();
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("dmPolicy".into(), Value::from(account.dm_policy.as_str()));
        settings.insert(
            "groupPolicy".into(),
            Value::from(account.group_policy.as_str()),
        );
        settings.insert("cliPath".into(), Value::from(account.cli_path.clone()));
        settings.insert(
            "dbPath".into(),
            account
                .db_path
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        settings.insert("service".into(), Value::from(account.service.clone()));
        settings.insert(
            "includeAttachments".into(),
            Value::from(account.include_attachments),
        );
        settings.insert(
            "textChunkLimit".into(),
            Value::from(account.text_chunk_limit),
        );
        // The roots outbound media must lie under (config and host), or that there are none.
        let roots = crate::outbound::media::effective_roots(
            account.media_local_roots.as_deref(),
            self.features.media_local_roots.as_deref(),
        );
        settings.insert(
            "mediaLocalRoots".into(),
            roots.map_or(Value::from("unrestricted"), Value::from),
        );
        AccountStatus {
            account_id: account.id.clone(),
            name: account.name.clone(),
            enabled: account.enabled,
            configured: true,
            state: s.state.as_str().into(),
            last_error: s.last_error.clone(),
            last_probe: None,
            last_inbound_at: s.last_inbound_ms.map(timeutil::format_ms),
            last_outbound_at: s.last_outbound_ms.map(timeutil::format_ms),
            cursor: s.cursor.map(|(rowid, newest)| CursorStatus {
                rowid,
                newest_created_at: newest.map(timeutil::format_ms),
            }),
            pending_pairing,
            allow_store_size,
            remote_host: self.source.remote_host.clone(),
            remote_host_source: self.source.remote_source.to_string(),
            routed: s.stats.routed,
            drops: s.stats.drops.clone(),
            settings,
            probe: None,
            panics: s.panics,
            watch_overflows: s.watch_overflows,
            reactions_delivered: s.reactions_delivered,
            outbound: Some(self.outbound_status()),
            capabilities: self
                .capabilities
                .locked()
                .as_ref()
                .map(|c| c.to_json(&account.id)),
            quarantine: (s.quarantined > 0).then(|| QuarantineStatus {
                count: s.quarantined,
                file: crate::state::quarantine::path(&self.dir)
                    .display()
                    .to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(channel: serde_json::Value) -> AccountConfig {
        crate::config::parse(&json!({"channels": {"imessage": channel}}))
            .unwrap()
            .accounts[0]
            .clone()
    }

    #[test]
    fn remote_db_path_is_not_expanded_case_142() {
        let remote = Source::resolve(&account(
            json!({"remoteHost": "bot@mac", "dbPath": "~/Library/Messages/chat.db"}),
        ));
        assert_eq!(
            remote.spawn_config().args,
            vec!["rpc", "--db", "~/Library/Messages/chat.db"]
        );
        assert_eq!(remote.remote_source, "config");
        let local = Source::resolve(&account(json!({"dbPath": "~/Library/Messages/chat.db"})));
        assert!(
            !local.db.as_deref().unwrap().starts_with('~'),
            "expanded locally"
        );
    }

    #[test]
    fn wrappers_are_read_only_when_path_like_case_139_140() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("imsg-ssh");
        std::fs::write(
            &wrapper,
            "#!/bin/sh\nexec ssh -T bot@mac-mini.tailnet-1234.ts.net imsg \"$@\"\n",
        )
        .unwrap();
        let s = Source::resolve(&account(json!({"cliPath": wrapper.display().to_string()})));
        assert_eq!(
            s.remote_host.as_deref(),
            Some("bot@mac-mini.tailnet-1234.ts.net")
        );
        assert_eq!(s.remote_source, "detected");
        let bare = Source::resolve(&account(json!({"cliPath": "imsg"})));
        assert_eq!((bare.remote_host, bare.remote_source), (None, "none"));
    }

    #[test]
    fn lock_paths_follow_the_signature() {
        let a = Source::resolve(&account(json!({"dbPath": "/a.db"})));
        let b = Source::resolve(&account(json!({"dbPath": "/b.db"})));
        let dir = Path::new("/s/imessage");
        assert_ne!(a.lock_path(dir), b.lock_path(dir));
        let name = a
            .lock_path(dir)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(name.len(), 16 + ".lock".len());
    }
}
