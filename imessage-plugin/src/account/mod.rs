//! One account at run time: its folders, its source signature, the state shared between its
//! watcher task and host calls (echo registry, sender process, status), and its sends.

use crate::support::sync::{LockExt, RwLockExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use plugin_abi::guard::HostHandle;
use plugin_abi::types::{AccountStatus, CursorStatus, HostFeatures, QuarantineStatus};
use serde_json::Value;

use crate::actions::message_actions::Context as ActionContext;
use crate::actions::Actions;
use crate::config::{AccountConfig, Config};
use crate::echo::EchoRegistry;
use crate::imsg::capabilities::{Cache, Snapshot};
use crate::imsg::child::ActionsChild;
use crate::imsg::source::Source;
use crate::inbound::Stats;
use crate::outbound::path::SendPath;
use crate::outbound::send::Receipt;
use crate::outbound::Plan;
use crate::state::media::MediaDir;
use crate::support::timeutil;
use crate::support::timings::Timings;
use plugin_abi::types::PluginError;

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

/// One account: the owner of its parts. The watcher and host calls share it; the parts below
/// it (the send path, the actions, the capability cache) never name it.
pub struct Account {
    pub id: String,
    pub dir: PathBuf,
    /// Staged attachments and outbound uploads.
    pub media: MediaDir,
    config: RwLock<Configured>,
    pub source: Source,
    pub echo: Arc<Mutex<EchoRegistry>>,
    pub status: Mutex<StatusState>,
    pub host: Arc<HostHandle>,
    /// What the host understands beyond the base contract (`StartContext.host`).
    pub features: Arc<HostFeatures>,
    /// Control-command names: the host's, else the defaults (§9.1).
    pub commands: Arc<crate::inbound::policy::CommandNames>,
    /// Bumped by every config reload that applies without a restart; the watcher picks the
    /// new settings up before its next message.
    pub generation: std::sync::atomic::AtomicU64,
    /// The last capability snapshot learned (actions.md §1.2) and its one learner.
    pub caps: Arc<Cache>,
    /// The actions child and what runs on it: read receipts, typing, message actions.
    pub actions: Arc<Actions>,
    /// Sends: the sender child, rate limits, idempotency, settling unknown outcomes.
    pub outbound: Arc<SendPath>,
    /// The dedupe key of the message whose processing last panicked. It outlives the watcher
    /// restart that follows, so a second panic on the same message quarantines it.
    pub suspect: Mutex<Option<String>>,
    /// The message being processed, on disk, so a row that kills the process (a stack
    /// overflow, an abort) is found at the next start.
    pub inflight: Mutex<crate::state::inflight::InFlight>,
    /// The row a process that died left in flight, with how many starts found it so.
    pub crashed: Mutex<Option<crate::state::inflight::Record>>,
    /// The fixed timers of this start (production values unless a test shrank them).
    pub timings: Timings,
}

/// Logs where the account's imsg is and whether outbound media paths are restricted.
fn log_source(account: &AccountConfig, source: &Source, features: &HostFeatures) {
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
}

/// The in-flight marker, and the row a process that died left in it.
fn open_inflight(
    dir: &Path,
    id: &str,
) -> (
    crate::state::inflight::InFlight,
    Option<crate::state::inflight::Record>,
) {
    let (inflight, crashed) = match crate::state::inflight::InFlight::open(dir) {
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
            account = %id,
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
    (inflight, crashed)
}

impl Account {
    pub fn new(
        state_dir: &Path,
        config: Arc<Config>,
        account: AccountConfig,
        host: Arc<HostHandle>,
        features: Arc<HostFeatures>,
        timings: Timings,
    ) -> Account {
        let dir = state_dir.join("imessage").join(&account.key);
        let media_dir = state_dir.join("imessage").join("media").join(&account.key);
        let source = Source::resolve(&account);
        log_source(&account, &source, &features);
        let echo = Arc::new(Mutex::new(EchoRegistry::open(&dir, timeutil::now_ms())));
        // The send ledger keeps 7 days; what is older goes now.
        if let Err(e) = crate::state::ledger::compact(&dir, timeutil::now_ms()) {
            tracing::warn!("send ledger: {e}");
        }
        let limiter = crate::outbound::ratelimit::Limiter::new(
            account.rate_limit,
            crate::outbound::ratelimit::persist::load(&dir),
        );
        let (inflight, crashed) = open_inflight(&dir, &account.id);
        let caps = Arc::new(Cache::new(source.clone()));
        let child = Arc::new(ActionsChild::new(
            source.spawn_config(),
            caps.clone(),
            timings.actions_idle,
        ));
        let outbound = Arc::new(SendPath::new(crate::outbound::path::Parts {
            id: account.id.clone(),
            dir: dir.clone(),
            upload_dir: media_dir.clone(),
            remote_host: source.remote_host.clone(),
            spawn: source.spawn_config(),
            echo: echo.clone(),
            caps: caps.clone(),
            actions: child.clone(),
            limiter,
            timings,
        }));
        Account {
            inflight: Mutex::new(inflight),
            crashed: Mutex::new(crashed),
            id: account.id.clone(),
            dir,
            media: MediaDir::new(media_dir),
            source,
            actions: Arc::new(Actions::new(account.id.clone(), child, timings)),
            config: RwLock::new(Configured {
                whole: config,
                account,
            }),
            echo,
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
            caps,
            outbound,
            timings,
        }
    }

    /// Applies reloaded settings that need no restart (policy, routing, prefixes, chunking).
    pub fn update(&self, config: Arc<Config>, settings: AccountConfig) {
        self.outbound
            .limiter
            .locked()
            .set_limits(settings.rate_limit);
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

    fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.settings().probe_timeout_ms)
    }

    /// The capability snapshot: the cached one while it is fresh (actions.md §1.2), else
    /// learned again from imsg now. `refresh` always learns.
    pub async fn capabilities(&self, refresh: bool) -> Result<Snapshot, String> {
        self.caps.get(refresh, false, self.probe_timeout()).await
    }

    /// A snapshot learned on one of the account's own children (initialize, status).
    pub fn note_capabilities(&self, snapshot: Snapshot) {
        self.caps.note(snapshot);
    }

    /// Sends a plugin-generated text (pairing codes, refusals, approval notices).
    pub async fn send(&self, plan: &Plan) -> Receipt {
        let settings = self.settings();
        let owner_dm = self.is_owner_dm(plan, &settings);
        let receipt = self.outbound.send(plan, &settings, owner_dm).await;
        self.after_send(plan, &receipt);
        receipt
    }

    /// Sends a host's request (rate limits, idempotency: [`SendPath::send_request`]).
    pub async fn send_request(&self, plan: &Plan) -> Result<Receipt, PluginError> {
        let settings = self.settings();
        let owner_dm = self.is_owner_dm(plan, &settings);
        let receipt = self
            .outbound
            .send_request(plan, &settings, owner_dm)
            .await?;
        self.after_send(plan, &receipt);
        Ok(receipt)
    }

    fn is_owner_dm(&self, plan: &Plan, settings: &AccountConfig) -> bool {
        crate::outbound::path::is_owner_dm(&plan.target, settings, |chat_id| {
            self.actions.index.locked().dm_handle(chat_id)
        })
    }

    /// A reply to a conversation ends the typing shown there (any outcome).
    fn after_send(&self, plan: &Plan, receipt: &Receipt) {
        crate::actions::typing::stop_scope(&self.actions, &plan.target.echo_scope().to_string());
        if receipt.any_sent() {
            self.status.locked().last_outbound_ms = Some(timeutil::now_ms());
        }
    }

    /// Closes the sender and actions children, writing `typing:false` where typing shows
    /// (stop, reload, a duplicate source).
    pub async fn close_children(&self) {
        self.outbound.sender.lock().await.replace().await;
        crate::actions::typing::stop_all(&self.actions).await;
        self.actions.child.close().await;
    }

    /// What message actions (tapbacks, edits, unsends) run with.
    pub fn action_context<'a>(&'a self, settings: &'a AccountConfig) -> ActionContext<'a> {
        ActionContext {
            actions: &self.actions,
            settings,
            echo: &self.echo,
            limiter: &self.outbound.limiter,
        }
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
            outbound: Some(self.outbound.status_json()),
            capabilities: self.caps.last().map(|c| c.to_json(&account.id)),
            quarantine: (s.quarantined > 0).then(|| QuarantineStatus {
                count: s.quarantined,
                file: crate::state::quarantine::path(&self.dir)
                    .display()
                    .to_string(),
            }),
        }
    }
}
