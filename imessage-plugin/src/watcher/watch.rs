//! The watcher's state for one account: the inbound pipeline, the catch-up state and its
//! writer thread, the pairing store, and what the host has not acknowledged yet. It lives as
//! long as the watch (across imsg restarts), so the cursor and the guards carry over.

use crate::imsg::capabilities::Feature;
use std::sync::Arc;
use std::time::Duration;

use plugin_abi::types::{features, HostFeatures};
use serde_json::{json, Value};

use super::connection::Connection;
use super::Parts;
use crate::config::Configured;
use crate::imsg::rpc::CallError;
use crate::inbound::pairing::host::Pairing;
use crate::inbound::Inbound;
use crate::state::cursor::{Batch, Catchup};
use crate::support::timeutil;
use crate::watcher::unacked::Outbox;

pub(super) struct Watch {
    /// Processed messages the host has not acknowledged yet (group commit).
    pub(super) outbox: Outbox,
    /// The delivery the host is working on, while `outbox` fills the next one.
    pub(super) delivery: Option<super::delivery::Delivery>,
    /// When the host last accepted a message; published to status with each flush, so the
    /// message path takes neither the status lock nor a second clock read.
    pub(super) last_inbound_ms: Option<i64>,
    /// The account's config generation the pipeline was built with.
    pub(super) generation: u64,
    pub(super) parts: Arc<Parts>,
    pub(super) inbound: Inbound,
    pub(super) catchup: Catchup,
    pub(super) pairing: Pairing,
    /// The current subscription asked for tapbacks (`include_reactions`).
    pub(super) reactions_subscribed: bool,
    /// The config generation the subscription's params were last checked against.
    subscription_generation: u64,
    /// Just before the first row this watch saw while it had no cursor yet (a fresh state
    /// directory). A restart before anything finished (a panic on that first row, imsg dying)
    /// resubscribes from here instead of the live tail, which would skip those rows.
    pub(super) baseline: Option<i64>,
    /// A reaction the last message produced, with its row: delivered once what is held before
    /// it was acknowledged (the pump does it, in stream order).
    pub(super) reaction: Option<(
        Box<plugin_abi::types::ReactionEvent>,
        crate::watcher::unacked::Pending,
    )>,
    /// Writes catch-up batches in order, off the message path.
    persister: Option<(std::sync::mpsc::Sender<Batch>, std::thread::JoinHandle<()>)>,
}

/// How many events one delivery may carry: the host's `maxBatch` when it takes batches,
/// else 1 (the base contract).
fn batch_bound(features: &HostFeatures) -> usize {
    if features.has(features::BATCH_DELIVERY) {
        features
            .max_batch
            .unwrap_or(features::DEFAULT_MAX_BATCH)
            .clamp(1, 10_000) as usize
    } else {
        1
    }
}

/// A thread that writes batches in the order they were taken.
fn start_persister(
    account_id: String,
) -> std::io::Result<(std::sync::mpsc::Sender<Batch>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<Batch>();
    // The plugin's log dispatcher is per thread (it installs no global one): carry it over.
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let handle = std::thread::Builder::new()
        .name("imessage-cursor".into())
        .spawn(move || {
            let _logging = tracing::dispatcher::set_default(&dispatch);
            for batch in rx {
                let written =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch.write()));
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(account = %account_id, "persisting the cursor failed: {e}")
                    }
                    // The batch is lost, not the thread: the next batch carries the cursor on.
                    Err(p) => {
                        tracing::error!(account = %account_id, "persisting the cursor panicked");
                        tracing::debug!(
                            account = %account_id,
                            "cursor writer panic message: {}",
                            plugin_abi::guard::panic_text(p.as_ref())
                        )
                    }
                }
            }
        })?;
    Ok((tx, handle))
}

impl Watch {
    /// Opens the account's catch-up state and builds the pipeline.
    pub(super) fn open(parts: &Arc<Parts>) -> Watch {
        let start_ms = timeutil::now_ms();
        crate::state::media::clean_old(&parts.media.dir);
        let Configured {
            whole: config,
            account: settings,
        } = parts.live.configured();
        let (catchup, report) = Catchup::open(&parts.dir, &parts.source.signature(), start_ms);
        for w in report.warnings {
            tracing::warn!(account = %parts.id, "{w}");
        }
        for e in report.errors {
            tracing::error!(account = %parts.id, "{e}");
        }
        let persister = start_persister(parts.id.clone())
            .map_err(|e| {
                tracing::warn!(account = %parts.id, "no cursor writer thread ({e}); writing in place")
            })
            .ok();
        let mut w = Watch {
            reactions_subscribed: false,
            subscription_generation: parts.live.generation(),
            baseline: None,
            reaction: None,
            inbound: Inbound::new(
                config,
                settings,
                parts.echo.clone(),
                parts.source.remote_host.is_some(),
                start_ms,
                parts.commands.clone(),
            ),
            pairing: Pairing::choose(&parts.features, parts.host.clone(), &parts.id, &parts.dir),
            catchup,
            outbox: Outbox::new(batch_bound(&parts.features)),
            delivery: None,
            last_inbound_ms: None,
            generation: parts.live.generation(),
            persister,
            parts: parts.clone(),
        };
        w.inbound.reactions = parts.features.has(features::REACTION_EVENTS);
        w.sync_status();
        w
    }

    pub(super) fn sync_status(&self) {
        let mut s = self.parts.status.locked();
        s.stats = self.inbound.stats.clone();
        // A watcher restarted by a reload has routed nothing yet: keep the account's time.
        if self.last_inbound_ms.is_some() {
            s.last_inbound_ms = self.last_inbound_ms;
        }
        s.cursor = self.catchup.rowid().map(|r| (r, self.catchup.newest_ms()));
    }

    /// Hands what finished since the last flush to the cursor writer.
    pub(super) fn flush(&mut self) {
        if let Some(batch) = self.catchup.take_batch(timeutil::now_ms()) {
            let unsent = match &self.persister {
                Some((tx, _)) => tx.send(batch).err().map(|e| e.0),
                None => Some(batch),
            };
            if let Some(batch) = unsent {
                if let Err(e) = batch.write() {
                    tracing::error!(account = %self.parts.id, "persisting the cursor failed: {e}");
                }
            }
        }
        self.sync_status();
    }

    /// Flushes and waits until everything is on disk (shutdown).
    pub(super) fn flush_and_wait(&mut self) {
        self.flush();
        if let Some((tx, handle)) = self.persister.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// `initialize` first on this child (imsg-protocol A10 step 4): a strict server expects
    /// it, and its answer is the account's fresh capability snapshot; a lenient one answers
    /// −32601 at once. Skipped once the server is known to be lenient.
    pub(super) async fn initialize(&mut self, conn: &mut Connection) {
        let known = self.parts.caps.version_basis();
        if known
            .as_ref()
            .is_some_and(|k| k.profile == crate::imsg::capabilities::Profile::Lenient)
        {
            return;
        }
        let params = json!({"protocol_version": 1});
        self.learn_strict(
            conn,
            "initialize",
            params,
            known.and_then(|k| k.version_text),
        )
        .await;
    }

    /// Asks a strict server for its snapshot (`initialize` or `status`, same answer shape)
    /// and makes it the account's.
    async fn learn_strict(
        &self,
        conn: &mut Connection,
        method: &str,
        params: Value,
        version_text: Option<String>,
    ) {
        match conn.request(method, params, Duration::from_secs(10)).await {
            Ok(result) => self
                .parts
                .caps
                .note(crate::imsg::capabilities::Snapshot::from_strict(
                    version_text,
                    &result,
                    timeutil::now_ms(),
                )),
            Err(crate::imsg::rpc::CallError::Rpc(e)) if e.code == -32601 => {
                tracing::debug!(account = %self.parts.id, "{method}: a lenient imsg")
            }
            Err(e) => tracing::debug!(account = %self.parts.id, "{method}: {e}"),
        }
    }

    /// Strict servers: `status {}` on the watcher's child every 60 s keeps the snapshot fresh
    /// (a bridge that comes back shows without anyone asking).
    pub(super) async fn refresh_status(&mut self, conn: &mut Connection) {
        let known = self.parts.caps.last();
        let Some(known) = known.filter(|k| k.profile == crate::imsg::capabilities::Profile::Strict)
        else {
            return;
        };
        self.learn_strict(conn, "status", json!({}), known.version_text)
            .await;
    }

    /// A reload happened since the subscription's params were last checked (the pump then
    /// resubscribes when `include_reactions` should change).
    pub(super) fn subscription_settings_changed(&mut self) -> bool {
        let now = self.parts.live.generation();
        let changed = now != self.subscription_generation;
        self.subscription_generation = now;
        changed
    }

    /// `include_reactions` on the subscription exactly when the host takes reaction events,
    /// `reactionNotifications` is not `off` and this imsg can report tapbacks (§2.4).
    pub(super) async fn wants_reactions(&self, settings: &crate::config::AccountConfig) -> bool {
        use crate::config::ReactionNotifications;
        if !self.inbound.reactions || settings.reaction_notifications == ReactionNotifications::Off
        {
            return false;
        }
        // The version and profile decide it, so no wait for the bridge status (a lenient
        // `imsg status --json` may take seconds); learned only when nothing was probed.
        let basis = match self.parts.caps.version_basis() {
            Some(snapshot) => Ok(snapshot),
            None => {
                let timeout = Duration::from_millis(settings.probe_timeout_ms);
                self.parts.caps.get(false, false, timeout).await
            }
        };
        match basis {
            Ok(snapshot) => match snapshot.features().take(Feature::ReactionsInbound) {
                Ok(()) => true,
                _ => {
                    tracing::warn!(
                        account = %self.parts.id,
                        "reactionNotifications is \"{}\" but this imsg build ({}) cannot report tapbacks; update imsg to 0.5.0 or newer",
                        settings.reaction_notifications.as_str(),
                        snapshot.version_text.as_deref().unwrap_or("unknown version")
                    );
                    false
                }
            },
            Err(e) => {
                tracing::debug!(account = %self.parts.id, "no include_reactions: {e}");
                false
            }
        }
    }

    /// `watch.subscribe` from the cursor (or right after `resume`, after an overflow).
    pub(super) async fn subscribe(
        &mut self,
        conn: &mut Connection,
        resume: Option<i64>,
    ) -> Result<i64, CallError> {
        let settings = self.parts.live.settings();
        let mut params = json!({"attachments": settings.include_attachments});
        let since = resume.or_else(|| {
            settings
                .catchup
                .enabled
                .then(|| self.catchup.since_rowid().or(self.baseline))
                .flatten()
        });
        // `since_rowid` 0 means the live tail (imsg-protocol §A12), so a baseline of 0 (the
        // database's very first row) cannot be replayed this way.
        let mut since = since.filter(|s| *s > 0);
        if let (Some(cursor), None) = (since, resume) {
            // A replaced database (restore, new Mac) restarts row ids lower: a cursor past its
            // newest row would hide every new message (imsg-protocol.md §A12).
            if let Some(newest) = conn.newest_row().await {
                // The margin absorbs rows history leaves out (tapbacks); a replaced database
                // is typically far lower than that.
                if cursor > newest + 100 {
                    tracing::warn!(
                        account = %self.parts.id,
                        "cursor {cursor} is past the newest message {newest}; chat.db may have been replaced; starting at the live tail"
                    );
                    since = None;
                }
            }
        }
        if let Some(since) = since {
            params["since_rowid"] = json!(since);
        }
        self.reactions_subscribed = self.wants_reactions(&settings).await;
        if self.reactions_subscribed {
            params["include_reactions"] = json!(true);
        }
        let timeout = Duration::from_secs(if settings.include_attachments { 30 } else { 10 });
        let result = conn.request("watch.subscribe", params, timeout).await?;
        Ok(result
            .get("subscription")
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }
}
