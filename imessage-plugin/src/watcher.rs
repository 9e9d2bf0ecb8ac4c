//! The watcher: one per receiving account. It keeps one `imsg rpc` child subscribed from the
//! persisted cursor, runs every message through the inbound pipeline one at a time, hands
//! accepted ones to the host, and finishes each message in the catch-up state only after the
//! host acknowledged it (or it was deliberately dropped). The child is restarted with backoff
//! whenever it dies, forever; a permission failure blocks the account instead of looping.

use crate::sync::{LockExt, RwLockExt};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_abi::types::{features, HostFeatures, InboundEvent};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::account::Account;
use crate::backoff;
use crate::cursor::{Batch, Catchup};
use crate::delivery::{AfterAck, Outbox, Pending};
use crate::inbound::{Inbound, Input, Verdict};
use crate::message::{self, ImsgMessage};
use crate::outbound;
use crate::pairing::{self, Challenge, PairingStore};
use crate::rpc::{wire, CallError, Event, RpcClient};
use crate::timeutil;

/// How long a permission-blocked account waits before probing again: 5 min, or
/// `IMESSAGE_BLOCKED_RETRY_SECS` (for operators who grant access and do not want to wait).
fn blocked_retry() -> Duration {
    let secs = std::env::var("IMESSAGE_BLOCKED_RETRY_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(300);
    Duration::from_secs(secs)
}
/// How often finished messages are persisted (seen keys, then the cursor).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Delivery retries after a refusal: 1 s, 4 s, 16 s (§6.3).
const DELIVERY_RETRIES: [u64; 3] = [1, 4, 16];

enum Exit {
    Stop,
    Gone(String),
}

/// Sleeps unless `stop` fires first; true when stopped.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn is_permission(e: &CallError) -> bool {
    match e {
        CallError::PermissionDenied(_) => true,
        CallError::Rpc(r) => r.code == -32002 || wire::is_permission_text(&r.text()),
        _ => false,
    }
}

/// The readiness probe before watching (§10.1): retried every 1 s for up to 30 s; a fatal
/// result blocks the account and it is re-probed every 5 min; a non-fatal one that lasts
/// 30 s is retried with backoff 5 s, doubling, up to 5 min. False when stopped.
async fn readiness(account: &Account, stop: &mut watch::Receiver<bool>) -> bool {
    let mut backoff = Duration::from_secs(5);
    loop {
        let started = Instant::now();
        loop {
            let settings = account.settings();
            let config = account.whole_config();
            let result = crate::probe::probe(&settings, &account.source, &config).await;
            if result.ok {
                return true;
            }
            let error = result.error.clone().unwrap_or_default();
            if result.fatal {
                tracing::error!(account = %account.id, code = ?result.code, "{error}");
                account.set_state("blocked", Some(error));
                if sleep_or_stop(blocked_retry(), stop).await {
                    return false;
                }
                break;
            }
            account.set_state("starting", Some(error.clone()));
            if started.elapsed() >= Duration::from_secs(30) {
                tracing::warn!(account = %account.id, "imsg is not ready after 30 s: {error}");
                if sleep_or_stop(backoff, stop).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
                break;
            }
            if sleep_or_stop(Duration::from_secs(1), stop).await {
                return false;
            }
        }
    }
}

/// The newest visible row id (the newest message of the 5 most recently active chats), or
/// `None` when it cannot be told.
async fn newest_row(
    client: &RpcClient,
    events: &mut mpsc::Receiver<Event>,
    backlog: &mut VecDeque<Event>,
) -> Option<i64> {
    let timeout = Duration::from_secs(10);
    let chats = request_draining(
        client,
        "chats.list",
        json!({"limit": 5}),
        timeout,
        events,
        backlog,
    )
    .await
    .ok()?;
    let ids: Vec<i64> = chats
        .get("chats")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("id")?.as_i64())
        .collect();
    let mut newest = None;
    for chat_id in ids {
        let history = request_draining(
            client,
            "messages.history",
            json!({"chat_id": chat_id, "limit": 1}),
            timeout,
            events,
            backlog,
        )
        .await
        .ok()?;
        if let Some(id) = history.pointer("/messages/0/id").and_then(Value::as_i64) {
            newest = Some(newest.map_or(id, |n: i64| n.max(id)));
        }
    }
    newest
}

/// Whether another event can be had without waiting (it is moved to `backlog`).
fn more_ready(backlog: &mut VecDeque<Event>, events: &mut mpsc::Receiver<Event>) -> bool {
    if !backlog.is_empty() {
        return true;
    }
    match events.try_recv() {
        Ok(event) => {
            backlog.push_back(event);
            true
        }
        Err(_) => false,
    }
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

/// The next notification: held ones first, then the live stream.
async fn next_event(
    backlog: &mut VecDeque<Event>,
    events: &mut mpsc::Receiver<Event>,
) -> Option<Event> {
    match backlog.pop_front() {
        Some(e) => Some(e),
        None => events.recv().await,
    }
}

/// A request on the watcher's own child. Notifications that arrive meanwhile (a lenient
/// server replays before answering `watch.subscribe`) are held in `backlog`: the event queue
/// is bounded, so leaving them would stall the reader and with it the reply.
async fn request_draining(
    client: &RpcClient,
    method: &str,
    params: Value,
    timeout: Duration,
    events: &mut mpsc::Receiver<Event>,
    backlog: &mut VecDeque<Event>,
) -> Result<Value, CallError> {
    let call = client.request(method, params, timeout);
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => return result,
            event = events.recv() => match event {
                Some(e) => backlog.push_back(e),
                None => return call.await,
            },
        }
    }
}

/// With the `fault-injection` feature (tests only), a message with exactly this text makes
/// processing panic, to exercise the restart and quarantine path end to end.
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC_TEXT: &str = "__imessage_fault_injection_panic__";

pub const FDA_ERROR: &str = "imsg cannot open the Messages database: grant Full Disk Access to the process that runs imsg (and its parent app), then restart";

struct Watch {
    /// Processed messages the host has not acknowledged yet (group commit).
    outbox: Outbox,
    /// When the host last accepted a message; published to status with each flush, so the
    /// message path takes neither the status lock nor a second clock read.
    last_inbound_ms: Option<i64>,
    /// The account's config generation the pipeline was built with.
    generation: u64,
    account: Arc<Account>,
    inbound: Inbound,
    catchup: Catchup,
    pairing: PairingStore,
    /// Writes catch-up batches in order, off the message path.
    persister: Option<(std::sync::mpsc::Sender<Batch>, std::thread::JoinHandle<()>)>,
}

/// A thread that writes batches in the order they were taken.
fn start_persister(
    account_id: String,
) -> (std::sync::mpsc::Sender<Batch>, std::thread::JoinHandle<()>) {
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
                    Err(p) => tracing::error!(
                        account = %account_id,
                        "persisting the cursor panicked: {}",
                        plugin_abi::guard::panic_text(p.as_ref())
                    ),
                }
            }
        })
        .expect("spawning the cursor writer");
    (tx, handle)
}

impl Watch {
    fn sync_status(&self) {
        let mut s = self.account.status.locked();
        s.stats = self.inbound.stats.clone();
        // A watcher restarted by a reload has routed nothing yet: keep the account's time.
        if self.last_inbound_ms.is_some() {
            s.last_inbound_ms = self.last_inbound_ms;
        }
        s.cursor = self.catchup.rowid().map(|r| (r, self.catchup.newest_ms()));
    }

    /// Hands what finished since the last flush to the cursor writer.
    fn flush(&mut self) {
        if let Some(batch) = self.catchup.take_batch(timeutil::now_ms()) {
            match &self.persister {
                Some((tx, _)) => {
                    if let Err(unsent) = tx.send(batch) {
                        let _ = unsent.0.write();
                    }
                }
                None => {
                    if let Err(e) = batch.write() {
                        tracing::error!(account = %self.account.id, "persisting the cursor failed: {e}");
                    }
                }
            }
        }
        self.sync_status();
    }

    /// Flushes and waits until everything is on disk (shutdown).
    fn flush_and_wait(&mut self) {
        self.flush();
        if let Some((tx, handle)) = self.persister.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// `watch.subscribe` from the cursor (or right after `resume`, after an overflow).
    async fn subscribe(
        &mut self,
        client: &RpcClient,
        resume: Option<i64>,
        events: &mut mpsc::Receiver<Event>,
        backlog: &mut VecDeque<Event>,
    ) -> Result<i64, CallError> {
        let settings = self.account.settings();
        let mut params = json!({"attachments": settings.include_attachments});
        let since = resume.or_else(|| {
            settings
                .catchup
                .enabled
                .then(|| self.catchup.since_rowid())
                .flatten()
        });
        let mut since = since.filter(|s| *s > 0);
        if let (Some(cursor), None) = (since, resume) {
            // A replaced database (restore, new Mac) restarts row ids lower: a cursor past its
            // newest row would hide every new message (imsg-protocol.md §A12).
            if let Some(newest) = newest_row(client, events, backlog).await {
                // The margin absorbs rows history leaves out (tapbacks); a replaced database
                // is typically far lower than that.
                if cursor > newest + 100 {
                    tracing::warn!(
                        account = %self.account.id,
                        "cursor {cursor} is past the newest message {newest}; chat.db may have been replaced; starting at the live tail"
                    );
                    since = None;
                }
            }
        }
        if let Some(since) = since {
            params["since_rowid"] = json!(since);
        }
        let timeout = Duration::from_secs(if settings.include_attachments { 30 } else { 10 });
        let result =
            request_draining(client, "watch.subscribe", params, timeout, events, backlog).await?;
        Ok(result
            .get("subscription")
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }

    /// A `message` notification the reader could not parse in its fast pass.
    async fn process(
        &mut self,
        params: Option<&serde_json::value::RawValue>,
        dead_subscriptions: &HashSet<i64>,
    ) -> Result<(), String> {
        match message::parse_notification(params) {
            Ok((sub, m)) => self.supervised(sub, m, dead_subscriptions).await,
            Err(bad) => {
                self.inbound.count_drop("malformed");
                tracing::debug!(
                    "drop reason=malformed account={} keys={}",
                    self.account.id,
                    bad.keys.join(",")
                );
                Ok(())
            }
        }
    }

    /// [`Self::handle`] with its panics caught (issue 10). The first panic on a message asks
    /// for a restart from the cursor (`Err`), which replays it; a second panic on the same
    /// message quarantines it and moves on, so one bad row never silences the account.
    async fn supervised(
        &mut self,
        subscription: Option<i64>,
        m: ImsgMessage,
        dead_subscriptions: &HashSet<i64>,
    ) -> Result<(), String> {
        let outcome =
            crate::supervise::catch(self.handle(subscription, &m, dead_subscriptions)).await;
        match outcome {
            Ok(()) => Ok(()),
            Err(panic) => self.after_panic(&m, &panic),
        }
    }

    fn after_panic(&mut self, m: &ImsgMessage, panic: &str) -> Result<(), String> {
        let key = m.dedupe_key();
        let guid = m.guid.as_deref().unwrap_or("");
        let rowid = m.cursor_id();
        let again = {
            let mut suspect = self.account.suspect.locked();
            let again = suspect.as_deref() == Some(key.as_str());
            *suspect = if again { None } else { Some(key.clone()) };
            again
        };
        // The log line names the message, never its text or handles; the panic's own text may
        // quote either, so it goes to the dead-letter entry and the debug log only.
        tracing::debug!(account = %self.account.id, guid, "panic while processing: {panic}");
        if !again {
            let what = format!(
                "processing message {guid} (row {rowid}) panicked; restarting from the cursor"
            );
            tracing::error!(account = %self.account.id, guid, rowid, "{what}");
            self.account.note_panic(what.clone());
            return Err(what);
        }
        let entry = json!({
            "at": timeutil::format_ms(timeutil::now_ms()),
            "accountId": self.account.id,
            "guid": guid,
            "rowid": rowid,
            "chatId": m.chat_id,
            "panic": panic,
            "message": m,
        });
        let what = match crate::quarantine::record(&self.account.dir, &entry) {
            Ok(file) => format!(
                "message {guid} (row {rowid}) panicked twice and was quarantined in {}",
                file.display()
            ),
            // Still move on: holding the cursor here would silence every later message.
            Err(e) => format!(
                "message {guid} (row {rowid}) panicked twice; writing it to the quarantine file failed ({e}); skipped"
            ),
        };
        tracing::error!(account = %self.account.id, guid, rowid, "{what}");
        self.account.note_panic(what);
        self.account.status.locked().quarantined += 1;
        self.inbound.count_drop("quarantined");
        let seen = self.catchup.is_seen(&key) || self.outbox.holds(&key);
        self.outbox.push(Pending {
            key,
            rowid,
            created_ms: m.created_ms(),
            seen,
            routed: false,
        });
        Ok(())
    }

    /// One message, start to finish.
    async fn handle(
        &mut self,
        subscription: Option<i64>,
        m: &ImsgMessage,
        dead_subscriptions: &HashSet<i64>,
    ) {
        // A lenient server may write one more row after `watch.unsubscribe`.
        if subscription.is_some_and(|s| dead_subscriptions.contains(&s)) {
            return;
        }
        let generation = self
            .account
            .generation
            .load(std::sync::atomic::Ordering::SeqCst);
        if generation != self.generation {
            let (config, settings) = self.account.config.read_locked().clone();
            self.inbound.reconfigure(config, settings);
            self.generation = generation;
            tracing::info!(account = %self.account.id, "reloaded settings apply from this message on");
        }
        #[cfg(feature = "fault-injection")]
        if m.text.as_deref() == Some(FAULT_PANIC_TEXT) {
            panic!("fault injection: processing this message panics");
        }
        let now = timeutil::now_ms();
        let key = m.dedupe_key();
        // A repeat of a message still waiting for its acknowledgement is a duplicate too.
        let seen = self.catchup.is_seen(&key) || self.outbox.holds(&key);
        let created_ms = m.created_ms();
        let verdict = self.inbound.evaluate(&Input {
            message: m,
            key: &key,
            seen,
            created_ms,
            newest_ms: self.catchup.newest_ms(),
            allow_store: self.pairing.allow_list_cached(now),
            now_ms: now,
        });
        let routed = match verdict {
            Verdict::Drop(_) => false,
            Verdict::Pairing { sender_id, chat_id } => {
                self.pairing_flow(&sender_id, chat_id).await;
                false
            }
            Verdict::Refuse { to, text, .. } => {
                self.send_plain(&to, text).await;
                false
            }
            Verdict::Route(accepted) => {
                let mut routed = accepted.message;
                if !accepted.attachments.is_empty() {
                    routed.media =
                        crate::staging::stage(&self.account, m, &accepted.attachments).await;
                    if accepted.placeholder && routed.media.is_empty() {
                        routed.text = "<media:unavailable>".into();
                    }
                }
                let to = routed.to.clone();
                let event = InboundEvent::Message(routed);
                let message_id = match &event {
                    InboundEvent::Message(r) => r.message_id.as_str(),
                    _ => "",
                };
                match self.outbox.push_event(&event, message_id) {
                    Ok(()) => {
                        if let Some(config_write) = accepted.config_write {
                            self.outbox.after_ack(AfterAck { to, config_write });
                        }
                        true
                    }
                    Err(e) => {
                        tracing::error!(account = %self.account.id, "encoding routed message {message_id}: {e}");
                        false
                    }
                }
            }
        };
        self.outbox.push(Pending {
            key,
            rowid: m.cursor_id(),
            created_ms,
            seen,
            routed,
        });
    }

    fn finish(&mut self, p: Pending, now: i64) {
        // A duplicate never moves the cursor backwards.
        if p.seen && self.catchup.rowid().is_some_and(|c| p.rowid <= c) {
            return;
        }
        if let Some(warning) = self.catchup.finish(p.key, p.rowid, p.created_ms, now) {
            tracing::warn!(account = %self.account.id, "{warning}");
        }
    }

    /// Hands what the outbox holds to the host (one `deliver` call, retried after a refusal)
    /// and finishes every held message in order once it is acknowledged or given up. False
    /// only when stopped while retrying: then nothing is finished, and all of it is replayed
    /// after the restart.
    async fn commit(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        if self.outbox.is_empty() {
            return true;
        }
        let mut acknowledged = true;
        if self.outbox.events() > 0 {
            let mut attempt = 0;
            loop {
                match self.account.host.deliver_json(self.outbox.payload()) {
                    Ok(()) => break,
                    Err(e) if attempt < DELIVERY_RETRIES.len() => {
                        let what = self.outbox.describe();
                        tracing::warn!(account = %self.account.id, "host refused {what}: {e}; retrying");
                        let delay = Duration::from_secs(DELIVERY_RETRIES[attempt]);
                        if sleep_or_stop(delay, stop).await {
                            return false;
                        }
                        attempt += 1;
                    }
                    Err(e) => {
                        let what = self.outbox.describe();
                        tracing::error!(account = %self.account.id, "delivery failed for {what} after 4 attempts: {e}");
                        acknowledged = false;
                        break;
                    }
                }
            }
        }
        let now = timeutil::now_ms();
        let (held, effects) = self.outbox.take();
        for p in held {
            if p.routed {
                if acknowledged {
                    self.inbound.stats.routed += 1;
                    self.last_inbound_ms = Some(now);
                } else {
                    self.inbound.count_drop("delivery_failed");
                }
            }
            self.finish(p, now);
        }
        if acknowledged {
            for effect in effects {
                self.config_write(effect).await;
            }
        }
        true
    }

    /// An authorized `/config set|unset` whose message the host acknowledged (§9.2): the host
    /// validates the whole resulting config and writes it only when the gateway can start
    /// with it; a refusal is answered with its reason.
    async fn config_write(&mut self, effect: AfterAck) {
        let mut request = effect.config_write;
        request["accountId"] = json!(self.account.id);
        match self.account.host.request("config.write", &request) {
            Ok(_) => {
                tracing::info!(account = %self.account.id, path = %request["path"], "config write applied by the host")
            }
            Err(e) => {
                tracing::warn!(account = %self.account.id, "the host did not apply the config write: {e}");
                let reason = if e.errors.is_empty() {
                    e.message.clone()
                } else {
                    e.errors.join("; ")
                };
                self.send_plain(&effect.to, &format!("Config not changed: {reason}"))
                    .await;
            }
        }
    }

    async fn pairing_flow(&mut self, sender_id: &str, chat_id: Option<i64>) {
        let now = timeutil::now_ms();
        match self.pairing.challenge(sender_id, chat_id, now) {
            Ok(Challenge::Reply { code, chat_id }) => {
                let to = match chat_id.filter(|c| *c > 0) {
                    Some(c) => format!("chat_id:{c}"),
                    None => sender_id.to_string(),
                };
                let delivered = self
                    .send_plain(&to, &pairing::pairing_text(sender_id, &code))
                    .await;
                tracing::info!(
                    account = %self.account.id,
                    "pairing requested by an unknown sender; list pending codes with `host-stub pairing list imessage`"
                );
                if let Err(e) = self
                    .pairing
                    .set_notified(sender_id, delivered, timeutil::now_ms())
                {
                    tracing::error!(account = %self.account.id, "updating pairing.json: {e}");
                }
            }
            Ok(Challenge::Pending) => {}
            Ok(Challenge::QueueFull) => {
                tracing::info!("pairing queue full for account {}", self.account.id)
            }
            Err(e) => tracing::error!(account = %self.account.id, "pairing store: {e}"),
        }
    }

    /// Sends a plugin-generated text; true when it reached imsg (`sent` or `unknown`).
    async fn send_plain(&self, to: &str, text: &str) -> bool {
        let settings = self.account.settings();
        match outbound::plan_plain(to, text, &settings) {
            Ok(plan) => {
                let receipt = self.account.send(&plan).await;
                receipt
                    .parts
                    .iter()
                    .all(|p| p.outcome == "sent" || p.outcome == "unknown")
            }
            Err(e) => {
                tracing::warn!(account = %self.account.id, "cannot reply to {to}: {e:?}");
                false
            }
        }
    }
}

pub async fn run(account: Arc<Account>, stop: watch::Receiver<bool>) {
    let spawn = account.source.spawn_config();
    run_with(account, stop, true, move || RpcClient::spawn(&spawn)).await
}

/// `run`, with the way to start imsg injected (benchmarks and tests hand it in-memory
/// streams standing in for the child, and skip the readiness probe, which runs the CLI).
///
/// A panic anywhere in the watch (issue 10) is caught here: it is logged, counted in the
/// account's status, and the watch starts again from the persisted cursor after the usual
/// restart backoff, until `stop`. A panic while processing one message is handled closer to
/// it (see `Watch::supervised`) so that message can be quarantined.
pub async fn run_with(
    account: Arc<Account>,
    mut stop: watch::Receiver<bool>,
    probe_first: bool,
    connect: impl Fn() -> Result<crate::rpc::Started, CallError> + Send + Sync + 'static,
) {
    let connect = Arc::new(connect);
    let mut panics = 0;
    loop {
        let attempt = connect.clone();
        let watched = watch_account(account.clone(), stop.clone(), probe_first, move || {
            attempt()
        });
        match crate::supervise::catch(watched).await {
            Ok(()) => return,
            Err(panic) => {
                let what = "the watcher panicked; restarting it from the cursor".to_string();
                tracing::error!(account = %account.id, "{what}: {panic}");
                account.note_panic(what);
                account.set_state("recovering", None);
                if sleep_or_stop(backoff::restart_delay(panics), &mut stop).await {
                    account.set_state("stopped", None);
                    return;
                }
                panics += 1;
            }
        }
    }
}

/// One life of the watch: from opening the cursor to `stop`.
async fn watch_account(
    account: Arc<Account>,
    mut stop: watch::Receiver<bool>,
    probe_first: bool,
    connect: impl Fn() -> Result<crate::rpc::Started, CallError>,
) {
    let start_ms = timeutil::now_ms();
    crate::staging::clean_old(&account.media_dir);
    let (config, settings) = account.config.read_locked().clone();
    let (catchup, report) = Catchup::open(&account.dir, &account.source.signature(), start_ms);
    for w in report.warnings {
        tracing::warn!(account = %account.id, "{w}");
    }
    for e in report.errors {
        tracing::error!(account = %account.id, "{e}");
    }
    let remote = account.source.remote_host.is_some();
    let mut w = Watch {
        inbound: Inbound::new(
            config,
            settings,
            account.echo.clone(),
            remote,
            start_ms,
            account.commands.clone(),
        ),
        pairing: PairingStore::new(&account.dir),
        catchup,
        outbox: Outbox::new(batch_bound(&account.features)),
        last_inbound_ms: None,
        generation: account.generation.load(std::sync::atomic::Ordering::SeqCst),
        persister: Some(start_persister(account.id.clone())),
        account: account.clone(),
    };
    w.sync_status();
    // One watcher per database across processes too: another gateway on the same state dir
    // holding the lock means this account waits (§11).
    let lock_path = account
        .source
        .lock_path(account.dir.parent().unwrap_or(&account.dir));
    let _lock = loop {
        match crate::store::lock_file(&lock_path, false) {
            Ok(Some(lock)) => break Some(lock),
            Ok(None) => {
                tracing::warn!(account = %account.id, "another process watches the same Messages database; waiting");
                account.set_state(
                    "duplicate_source",
                    Some("another process watches the same Messages database".into()),
                );
                if sleep_or_stop(Duration::from_secs(60), &mut stop).await {
                    w.flush_and_wait();
                    account.set_state("stopped", None);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(account = %account.id, "watcher lock {}: {e}; continuing without it", lock_path.display());
                break None;
            }
        }
    };
    if probe_first && !readiness(&account, &mut stop).await {
        w.flush_and_wait();
        account.set_state("stopped", None);
        return;
    }
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        account.set_state(
            if failures == 0 {
                "starting"
            } else {
                "recovering"
            },
            None,
        );
        let started = match connect() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(account = %account.id, "starting imsg failed: {e}");
                account.set_state("recovering", Some(e.to_string()));
                if sleep_or_stop(backoff::restart_delay(failures), &mut stop).await {
                    break;
                }
                failures += 1;
                continue;
            }
        };
        let client = started.client;
        let mut events = started.events;
        let done = started.done;
        let mut backlog: VecDeque<Event> = VecDeque::new();
        match w.subscribe(&client, None, &mut events, &mut backlog).await {
            Ok(_) => {}
            Err(e) if is_permission(&e) => {
                tracing::error!(account = %account.id, "{FDA_ERROR} ({e})");
                account.set_state("blocked", Some(FDA_ERROR.to_string()));
                client.shutdown(done, Duration::from_secs(2)).await;
                if sleep_or_stop(blocked_retry(), &mut stop).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(account = %account.id, "watch.subscribe failed: {e}");
                account.set_state("recovering", Some(format!("watch.subscribe failed: {e}")));
                client.shutdown(done, Duration::from_secs(2)).await;
                if sleep_or_stop(backoff::restart_delay(failures), &mut stop).await {
                    break;
                }
                failures += 1;
                continue;
            }
        }
        account.set_state("watching", None);
        tracing::info!(account = %account.id, pid = ?client.pid(), "watching for messages");
        let healthy_since = Instant::now();
        let mut dead_subscriptions: HashSet<i64> = HashSet::new();
        let mut watch_failures: u32 = 0;
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        let mut last_flush = Instant::now();
        let exit = loop {
            // Group commit: what is held goes to the host once nothing more is ready right
            // now (so at low rates every message goes alone, at once) or the batch is full.
            if !w.outbox.is_empty()
                && (w.outbox.is_full() || !more_ready(&mut backlog, &mut events))
                && !w.commit(&mut stop).await
            {
                break Exit::Stop;
            }
            let event = tokio::select! {
                biased;
                _ = stop.changed() => break Exit::Stop,
                event = next_event(&mut backlog, &mut events) => event,
                _ = tick.tick() => {
                    w.flush();
                    last_flush = Instant::now();
                    continue;
                }
            };
            let (method, params) = match event {
                None => break Exit::Gone("event stream closed".into()),
                Some(Event::Message {
                    subscription,
                    message,
                }) => {
                    // The "message" arm below, with the message already parsed.
                    watch_failures = 0;
                    if let Err(reason) = w
                        .supervised(subscription, *message, &dead_subscriptions)
                        .await
                    {
                        break Exit::Gone(reason);
                    }
                    if last_flush.elapsed() >= FLUSH_EVERY {
                        w.flush();
                        last_flush = Instant::now();
                    }
                    continue;
                }
                Some(Event::Notification { method, params }) => (method, params),
            };
            match method.as_str() {
                "message" => {
                    watch_failures = 0;
                    if let Err(reason) = w.process(params.as_deref(), &dead_subscriptions).await {
                        break Exit::Gone(reason);
                    }
                    // During a burst the stream always wins the select above, so the tick
                    // alone would never persist progress (nor bound the unflushed keys).
                    if last_flush.elapsed() >= FLUSH_EVERY {
                        w.flush();
                        last_flush = Instant::now();
                    }
                }
                "error" | "watch.overflow" => {
                    // Resubscribing replays from the cursor: settle what is held first.
                    if !w.commit(&mut stop).await {
                        break Exit::Stop;
                    }
                    let p: Value = params
                        .as_deref()
                        .and_then(|p| serde_json::from_str(p.get()).ok())
                        .unwrap_or(Value::Null);
                    let sub = p.get("subscription").and_then(Value::as_i64).unwrap_or(0);
                    dead_subscriptions.insert(sub);
                    w.flush();
                    let mut resume = None;
                    if method == "error" {
                        let text = p
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown error");
                        tracing::warn!(account = %account.id, "watch failing: {text}");
                        account.set_state("recovering", Some(format!("watch failing: {text}")));
                        let _ = request_draining(
                            &client,
                            "watch.unsubscribe",
                            json!({"subscription": sub}),
                            Duration::from_secs(10),
                            &mut events,
                            &mut backlog,
                        )
                        .await;
                        if sleep_or_stop(backoff::resubscribe_delay(watch_failures), &mut stop)
                            .await
                        {
                            break Exit::Stop;
                        }
                        watch_failures += 1;
                    } else {
                        resume = p.get("resume_after_rowid").and_then(Value::as_i64);
                        tracing::warn!(account = %account.id, "watch overflowed; resubscribing after row {resume:?}");
                    }
                    match w
                        .subscribe(&client, resume, &mut events, &mut backlog)
                        .await
                    {
                        Ok(_) => account.set_state("watching", None),
                        Err(e) => break Exit::Gone(format!("resubscribing failed: {e}")),
                    }
                }
                other => tracing::debug!(method = other, "ignoring notification"),
            }
        };
        // Messages processed before the exit are delivered now (on stop, one attempt); what is
        // still unacknowledged is let go unfinished, so the next subscription replays it.
        if !w.commit(&mut stop).await {
            w.outbox.take();
        }
        w.flush();
        client.shutdown(done, Duration::from_secs(2)).await;
        match exit {
            Exit::Stop => break,
            Exit::Gone(reason) => {
                if healthy_since.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                tracing::warn!(account = %account.id, "imsg rpc stopped ({reason}); restarting");
                account.set_state("recovering", Some(reason));
                if sleep_or_stop(backoff::restart_delay(failures), &mut stop).await {
                    break;
                }
                failures += 1;
            }
        }
    }
    w.flush_and_wait();
    account.set_state("stopped", None);
}
