//! One account at run time: its folders, its source signature, the state shared between its
//! watcher task and host calls (echo registry, sender process, status), and its sends. The
//! watcher gets [`crate::watcher::Parts`], handles to what it needs, never the account.

use crate::support::sync::LockExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::guard::HostHandle;
use plugin_abi::types::{AccountStatus, CursorStatus, HostFeatures, QuarantineStatus};
use serde_json::Value;

use crate::actions::message_actions::Context as ActionContext;
use crate::actions::Actions;
use crate::config::{AccountConfig, Config, Configured, Live};
use crate::echo::EchoRegistry;
use crate::imsg::capabilities::{Cache, Snapshot};
use crate::imsg::child::ActionsChild;
use crate::imsg::source::Source;
use crate::outbound::path::SendPath;
use crate::outbound::send::Receipt;
use crate::outbound::Plan;
use crate::state::media::MediaDir;
use crate::support::timeutil;
use crate::support::timings::Timings;
use crate::watcher::crash::CrashGuards;
use crate::watcher::status::Status;
use plugin_abi::types::PluginError;

pub use crate::watcher::status::{AccountState, StatusState};

/// One account: the owner of its parts. Host calls share it; the parts below it (the
/// watcher, the send path, the actions, the capability cache) never name it.
pub struct Account {
    pub id: String,
    pub dir: PathBuf,
    /// Staged attachments and outbound uploads.
    pub media: Arc<MediaDir>,
    /// The settings; a reload replaces them and the watcher picks them up.
    live: Arc<Live>,
    pub source: Source,
    pub echo: Arc<Mutex<EchoRegistry>>,
    pub status: Arc<Status>,
    pub host: Arc<HostHandle>,
    /// What the host understands beyond the base contract (`StartContext.host`).
    pub features: Arc<HostFeatures>,
    /// Control-command names: the host's, else the defaults (§9.1).
    pub commands: Arc<crate::inbound::policy::CommandNames>,
    /// The last capability snapshot learned (actions.md §1.2) and its one learner.
    pub caps: Arc<Cache>,
    /// The actions child and what runs on it: read receipts, typing, message actions.
    pub actions: Arc<Actions>,
    /// Sends: the sender child, rate limits, idempotency, settling unknown outcomes.
    pub outbound: Arc<SendPath>,
    /// Panicking and process-ending rows, remembered across the watcher's restarts.
    crash: Arc<CrashGuards>,
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
        let crash = Arc::new(CrashGuards::open(&dir, &account.id));
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
            crash,
            id: account.id.clone(),
            dir,
            media: Arc::new(MediaDir::new(media_dir)),
            source,
            actions: Arc::new(Actions::new(account.id.clone(), child, timings)),
            live: Arc::new(Live::new(config, account)),
            echo,
            status: Arc::new(Status::default()),
            host,
            commands: Arc::new(crate::inbound::policy::CommandNames::new(
                features.command_names.as_deref(),
            )),
            features,
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
        self.live.replace(config, settings);
    }

    /// The whole config and the account's settings, read together.
    pub fn configured(&self) -> Configured {
        self.live.configured()
    }

    pub fn settings(&self) -> AccountConfig {
        self.live.settings()
    }

    /// What the watcher works with: handles to the parts it shares with the account.
    pub fn watcher_parts(&self) -> Arc<crate::watcher::Parts> {
        Arc::new(crate::watcher::Parts {
            id: self.id.clone(),
            dir: self.dir.clone(),
            media: self.media.clone(),
            source: self.source.clone(),
            live: self.live.clone(),
            status: self.status.clone(),
            host: self.host.clone(),
            features: self.features.clone(),
            commands: self.commands.clone(),
            caps: self.caps.clone(),
            actions: self.actions.clone(),
            outbound: self.outbound.clone(),
            echo: self.echo.clone(),
            crash: self.crash.clone(),
            timings: self.timings,
        })
    }

    fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.settings().probe_timeout_ms)
    }

    /// The capability snapshot: the cached one while it is fresh (actions.md §1.2), else
    /// learned again from imsg now. `refresh` always learns.
    pub async fn capabilities(&self, refresh: bool) -> Result<Snapshot, String> {
        self.caps.get(refresh, false, self.probe_timeout()).await
    }

    /// Sends a plugin-generated text (pairing codes, refusals, approval notices).
    pub async fn send(&self, plan: &Plan) -> Receipt {
        let settings = self.settings();
        let owner_dm = self.actions.is_owner_dm(plan, &settings);
        let receipt = self.outbound.send(plan, &settings, owner_dm).await;
        self.after_send(plan, &receipt);
        receipt
    }

    /// Sends a host's request (rate limits, idempotency: [`SendPath::send_request`]).
    pub async fn send_request(&self, plan: &Plan) -> Result<Receipt, PluginError> {
        let settings = self.settings();
        let owner_dm = self.actions.is_owner_dm(plan, &settings);
        let receipt = self
            .outbound
            .send_request(plan, &settings, owner_dm)
            .await?;
        self.after_send(plan, &receipt);
        Ok(receipt)
    }

    /// What follows every send of the account's (the watcher's replies do the same).
    fn after_send(&self, plan: &Plan, receipt: &Receipt) {
        self.actions.after_send(plan);
        if receipt.any_sent() {
            self.status.note_outbound();
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
