//! An account's send path (actions.md §5–§7): what imsg can take of a plan, the rate limits,
//! and idempotent sends — attempt ids, the send ledger, and settling an uncertain part by
//! asking imsg (`message.send_status` on the actions child) or by its echo on the watch.
//! Nothing here ever sends a part twice: an uncertain part stays `unknown` unless imsg or
//! the watch proves it arrived.

use crate::imsg::capabilities::Feature;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::types::{PluginError, SendPart, SendReceipt};
use serde_json::{json, Value};

use crate::config::AccountConfig;
use crate::echo::{normalize_text, EchoRegistry, EchoRow, Scope};
use crate::imsg::capabilities::{Cache, Snapshot};
use crate::imsg::child::{ActionsChild, ChildSlot};
use crate::imsg::message::ImsgMessage;
use crate::outbound::ratelimit::Limiter;
use crate::outbound::send::{self, Options, Prior};
use crate::outbound::Target;
use crate::outbound::{attempt, Plan};
use crate::state::ledger::{self, Line, State};
use crate::support::sync::LockExt;
use crate::support::timeutil;
use crate::support::timings::Timings;

const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters for `AccountStatus.outbound`.
#[derive(Default)]
pub struct SendStats {
    pub tracked_parts: AtomicU64,
    pub unknown_parts: AtomicU64,
    pub reconciled_parts: AtomicU64,
}

/// One of our own rows the watch saw recently: a send that times out after its row
/// arrived is settled from here.
#[derive(Debug, Clone)]
pub struct OwnRow {
    guid: String,
    chat_id: Option<i64>,
    chat_guid: Option<String>,
    chat_identifier: Option<String>,
    handle: Option<String>,
    text: String,
    created_ms: i64,
}

impl OwnRow {
    fn of(m: &ImsgMessage) -> OwnRow {
        OwnRow {
            guid: m.guid.as_deref().unwrap_or("").to_string(),
            chat_id: m.chat_id,
            chat_guid: m.chat_guid.as_deref().map(str::to_string),
            chat_identifier: m.chat_identifier.as_deref().map(str::to_string),
            // A DM's other person: the row's sender, else the chat's identifier.
            handle: (m.is_group != Some(true))
                .then(|| m.sender.as_deref().or(m.chat_identifier.as_deref()))
                .flatten()
                .map(str::to_string),
            text: normalize_text(m.text.as_deref().unwrap_or("")),
            created_ms: m.created_ms().unwrap_or(i64::MAX),
        }
    }

    /// Whether the row was written in the conversation of an echo scope (the echo
    /// registry's own rule).
    fn in_scope(&self, scope: &str) -> bool {
        let Some(scope) = Scope::parse(scope) else {
            return false;
        };
        scope.matches(&EchoRow {
            guid: None,
            rowid: None,
            reply_to_guid: None,
            text: "",
            chat_id: self.chat_id,
            chat_guid: self.chat_guid.as_deref(),
            chat_identifier: self.chat_identifier.as_deref(),
            dm_handle: self.handle.as_deref(),
            self_chat: false,
        })
    }

    /// Whether this row is that part's message.
    fn settles(&self, u: &Unsettled) -> bool {
        match &u.attempt {
            Some(a) => a.eq_ignore_ascii_case(&self.guid),
            None => {
                self.in_scope(&u.scope)
                    && u.text == self.text
                    && self.created_ms + 1000 >= u.started_ms
            }
        }
    }
}

/// How many recent own rows are kept, and for how long.
const RECENT_OWN: usize = 64;
const RECENT_OWN_MS: i64 = 10 * 60_000;

/// A part whose outcome is unknown, waiting for its echo on the watch (§7.3).
#[derive(Debug, Clone)]
pub struct Unsettled {
    pub key: Option<String>,
    pub part: usize,
    pub attempt: Option<String>,
    /// The echo scope it was sent to (`chat:7`, `handle:+1555…`).
    pub scope: String,
    /// Its echo-normalised text (untracked parts are matched by text).
    pub text: String,
    pub started_ms: i64,
}

/// Where an account's sends go and what they need: the sender child, the rate limiter, the
/// send ledger (`dir`), the echo registry that recognises the sent rows, and the actions
/// child that answers `message.send_status`. The account owns one; it knows no account.
pub struct SendPath {
    id: String,
    /// The account's state folder (the send ledger, `ratelimit.json`).
    dir: PathBuf,
    /// Where outbound media is prepared for an upload to a remote Mac.
    upload_dir: PathBuf,
    remote_host: Option<String>,
    echo: Arc<Mutex<EchoRegistry>>,
    caps: Arc<Cache>,
    actions: Arc<ActionsChild>,
    pub sender: tokio::sync::Mutex<ChildSlot>,
    /// Outbound rate limiting (actions.md §6), and when its counters were last saved.
    pub limiter: Mutex<Limiter>,
    limits_saved_ms: AtomicI64,
    /// Idempotent-send counters, and parts whose outcome is unknown until their echo.
    sends: SendStats,
    unsettled: Mutex<Vec<Unsettled>>,
    recent_own: Mutex<VecDeque<OwnRow>>,
    /// When a fresh uncertainty is asked about (+2, +5, +10 s, §7.3) and the send timeout's
    /// test-only cap.
    timings: Timings,
}

/// What a [`SendPath`] is built from.
pub struct Parts {
    pub id: String,
    pub dir: PathBuf,
    pub upload_dir: PathBuf,
    pub remote_host: Option<String>,
    pub spawn: crate::imsg::rpc::SpawnConfig,
    pub echo: Arc<Mutex<EchoRegistry>>,
    pub caps: Arc<Cache>,
    pub actions: Arc<ActionsChild>,
    pub limiter: Limiter,
    pub timings: Timings,
}

impl SendPath {
    pub fn new(p: Parts) -> SendPath {
        SendPath {
            id: p.id,
            dir: p.dir,
            upload_dir: p.upload_dir,
            remote_host: p.remote_host,
            echo: p.echo,
            caps: p.caps,
            actions: p.actions,
            sender: tokio::sync::Mutex::new(ChildSlot::new(p.spawn)),
            limiter: Mutex::new(p.limiter),
            limits_saved_ms: AtomicI64::new(0),
            sends: SendStats::default(),
            unsettled: Mutex::new(Vec::new()),
            recent_own: Mutex::new(VecDeque::new()),
            timings: p.timings,
        }
    }

    /// Sends a plugin-generated text (pairing codes, refusals, approval notices).
    pub async fn send(
        self: &Arc<Self>,
        plan: &Plan,
        settings: &AccountConfig,
        owner_dm: bool,
    ) -> send::Receipt {
        match self.send_request(plan, settings, owner_dm).await {
            Ok(receipt) => receipt,
            Err(e) => send::refused(
                plan,
                &self.id,
                &crate::outbound::ratelimit::Refusal {
                    error: e.message,
                    retry_after_ms: None,
                },
            ),
        }
    }

    /// Sends a host's request: within the rate limits (§6: the hard caps once before any
    /// part, each part waits for its slot) and, with an idempotency key, never twice (§7).
    /// `owner_dm`: the target is a DM with a handle listed in `allowFrom` ([`is_owner_dm`]).
    pub async fn send_request(
        self: &Arc<Self>,
        plan: &Plan,
        settings: &AccountConfig,
        owner_dm: bool,
    ) -> Result<send::Receipt, PluginError> {
        let plan = &self.fit_to_imsg(plan, settings).await;
        let now = timeutil::now_ms();
        let scope = plan.target.echo_scope().to_string();
        let hashes: Vec<String> = plan
            .parts
            .iter()
            .map(|p| attempt::content_hash(plan, p))
            .collect();
        let key = plan.idempotency_key.clone();
        let mut prior = vec![Prior::Fresh; plan.parts.len()];
        let mut earlier: Vec<Line> = Vec::new();
        if let Some(k) = &key {
            earlier = ledger::entries(&self.dir, k, now)
                .map_err(|e| PluginError::internal(format!("send ledger: {e}")))?;
            let differs = earlier
                .iter()
                .any(|l| l.n != plan.parts.len() || hashes.get(l.p) != Some(&l.h));
            if differs {
                return Err(PluginError::invalid_request(format!(
                    "idempotencyKey {k} was already used for different content"
                )));
            }
            for l in &earlier {
                prior[l.p] = match l.s {
                    State::Sent => Prior::Sent(l.m.clone()),
                    State::Pending | State::Unknown => Prior::Uncertain,
                    State::Failed | State::NotSent => Prior::Fresh,
                };
            }
        }
        let attempts = self
            .attempts(plan, settings, key.as_deref(), &earlier)
            .await;
        let replayed = prior.iter().any(|p| *p != Prior::Fresh);
        let exempt = !plan.capped || (settings.rate_limit.exempt_allow_from && owner_dm);
        // Replays write nothing new, so they are not held by the caps.
        let all_replayed = prior.iter().all(|p| matches!(p, Prior::Sent(_)));
        let capped = if all_replayed {
            Ok(())
        } else {
            self.limiter.locked().check_caps(&scope, exempt, now)
        };
        let mut receipt = match capped {
            Err(refusal) => send::refused(plan, &self.id, &refusal),
            Ok(()) => {
                self.sender.lock().await.initialize_first = self.caps.is_strict();
                let throttle =
                    crate::outbound::ratelimit::slot::Throttle::new(&self.limiter, scope.clone());
                let settler = self.clone();
                let settle = move |attempt: String, patient: bool| {
                    let path = settler.clone();
                    Box::pin(async move { path.settle_attempt(&attempt, patient).await })
                        as futures_util::future::BoxFuture<'static, bool>
                };
                let dir = self.dir.clone();
                let n = plan.parts.len();
                let files: Vec<bool> = plan.parts.iter().map(|p| p.file.is_some()).collect();
                let record = |i: usize, s: State, a: Option<&str>, m: Option<&str>, r: bool| {
                    let Some(k) = &key else { return true };
                    let line = Line {
                        k: k.clone(),
                        p: i,
                        n,
                        a: a.map(str::to_string),
                        h: hashes[i].clone(),
                        s,
                        m: m.map(str::to_string),
                        c: scope.clone(),
                        t: timeutil::now_ms(),
                        r,
                        f: files[i],
                    };
                    // `pending` is on disk before the request is written.
                    match ledger::append(&dir, &[line], s == State::Pending, timeutil::now_ms()) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(account = %self.id, "send ledger: {e}");
                            false
                        }
                    }
                };
                let to = send::Sender {
                    slot: &self.sender,
                    echo: &self.echo,
                    timeout: self.timings.send_timeout(settings.send_timeout_ms),
                    account_id: &self.id,
                    remote_host: self.remote_host.as_deref(),
                };
                send::execute(
                    &to,
                    plan,
                    &Options {
                        throttle: Some(&throttle),
                        attempts: attempts.clone(),
                        prior: prior.clone(),
                        record: Some(&record),
                        settle: Some(&settle),
                        upload_dir: Some(&self.upload_dir),
                    },
                )
                .await
            }
        };
        receipt.wire.idempotency_key = key.clone();
        receipt.wire.replayed = replayed;
        self.after_send(plan, &scope, &receipt, &prior, now);
        Ok(receipt)
    }

    /// The attempt id of each part: tracked text parts where imsg offers `send.tracked`
    /// and `trackedSends` is `auto`; a repeat reuses the ids the ledger holds.
    async fn attempts(
        &self,
        plan: &Plan,
        settings: &AccountConfig,
        key: Option<&str>,
        earlier: &[Line],
    ) -> Vec<Option<String>> {
        // The snapshot last learned, however old: a bridge that went away since answers
        // `send.tracked` with a definite non-send, and the part goes through `send`. Learning
        // it runs imsg (over SSH for a remote Mac), so a send without a key, whose tracking
        // would only help within this call, does not wait for that.
        let snapshot = match self.caps.last() {
            Some(s) => Ok(s),
            None if settings.tracked_sends && key.is_some() => self.capabilities(settings).await,
            None => Err(String::new()),
        };
        let tracked = settings.tracked_sends
            && plan.parts.iter().any(|p| p.file.is_none())
            && snapshot.is_ok_and(|s| s.features().on(Feature::TrackedSend));
        plan.parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                if let Some(l) = earlier.iter().find(|l| l.p == i) {
                    return l.a.clone();
                }
                (tracked && part.file.is_none()).then(|| match key {
                    Some(k) => attempt::keyed(&self.id, k, i),
                    None => attempt::random(),
                })
            })
            .collect()
    }

    /// The snapshot from the cache, learned when stale.
    async fn capabilities(&self, settings: &AccountConfig) -> Result<Snapshot, String> {
        let timeout = Duration::from_millis(settings.probe_timeout_ms);
        self.caps.get(false, false, timeout).await
    }

    /// Counters, the rate limiter's accounting, open unknowns (typing and the status are the
    /// account's: it stops typing after the send).
    fn after_send(
        &self,
        plan: &Plan,
        scope: &str,
        receipt: &send::Receipt,
        prior: &[Prior],
        started_ms: i64,
    ) {
        let now = timeutil::now_ms();
        {
            let mut limiter = self.limiter.locked();
            // Only what was written this time counts.
            let wrote = receipt
                .outcomes
                .iter()
                .zip(prior.iter().chain(std::iter::repeat(&Prior::Fresh)))
                .any(|(o, p)| {
                    *p == Prior::Fresh && matches!(o, send::Outcome::Sent | send::Outcome::Unknown)
                });
            if wrote {
                limiter.record_request(scope, now);
            }
            let held: Vec<&str> = receipt
                .wire
                .parts
                .iter()
                .filter_map(|p| p.error.as_deref())
                .filter(|e| e.starts_with("rate limited: "))
                .collect();
            if let Some(reason) = held.first() {
                limiter.limited_parts += held.len() as u64;
                if limiter.should_warn(scope, now) {
                    tracing::warn!(
                        account = %self.id,
                        "outbound to conv {} held by rate limit: {}",
                        crate::inbound::conversation_hash(scope),
                        reason.trim_start_matches("rate limited: ")
                    );
                }
            }
        }
        self.save_limits(false);
        for (i, part) in receipt.wire.parts.iter().enumerate() {
            if part.attempt_id.is_some() && prior.get(i) == Some(&Prior::Fresh) {
                self.sends.tracked_parts.fetch_add(1, Ordering::Relaxed);
            }
            if part.reconciled {
                self.sends.reconciled_parts.fetch_add(1, Ordering::Relaxed);
            }
            if receipt.outcomes.get(i) == Some(&send::Outcome::Unknown) {
                self.sends.unknown_parts.fetch_add(1, Ordering::Relaxed);
                let text = plan.parts.get(i).map(|p| p.text.as_str()).unwrap_or("");
                if plan.parts.get(i).is_some_and(|p| p.file.is_none()) {
                    self.await_echo(Unsettled {
                        key: plan.idempotency_key.clone(),
                        part: i,
                        attempt: part.attempt_id.clone(),
                        scope: scope.to_string(),
                        text: normalize_text(text),
                        started_ms,
                    });
                }
            }
        }
    }

    /// Whether imsg has a message with this attempt id that left this Mac (`sent` or
    /// `delivered`): asked on the actions child, never the sender's. `patient` asks at +2,
    /// +5 and +10 s (a fresh uncertainty), else once.
    pub async fn settle_attempt(self: &Arc<Self>, attempt: &str, patient: bool) -> bool {
        let waits: &[Duration] = if patient {
            &self.timings.settle_polls
        } else {
            &[Duration::ZERO]
        };
        for wait in waits {
            tokio::time::sleep(*wait).await;
            let answer = self
                .actions
                .request(
                    "message.send_status",
                    json!({"guid": attempt}),
                    STATUS_TIMEOUT,
                )
                .await;
            match answer {
                Ok(result) if attempt::status_settles(&result) => return true,
                Ok(_) => {}
                Err(e) => tracing::debug!(account = %self.id, "message.send_status: {e}"),
            }
        }
        false
    }

    /// `send.reconcile` (§7.4): one pass over a key's uncertain parts, and the receipt the
    /// ledger then holds.
    pub async fn reconcile_key(self: &Arc<Self>, key: &str) -> Result<SendReceipt, PluginError> {
        let now = timeutil::now_ms();
        let read = |now| {
            ledger::entries(&self.dir, key, now)
                .map_err(|e| PluginError::internal(format!("send ledger: {e}")))
        };
        let lines = read(now)?;
        if lines.is_empty() {
            return Err(PluginError::invalid_request(format!(
                "no send recorded for idempotencyKey {key}"
            )));
        }
        for l in &lines {
            if let (State::Pending | State::Unknown, Some(a)) = (l.s, &l.a) {
                if self.settle_attempt(a, false).await {
                    self.settle_line(l, Some(a.clone()));
                }
            }
        }
        let lines = read(timeutil::now_ms())?;
        // `n` comes from a state file: bounded, so a damaged line cannot size anything.
        let n = lines.first().map_or(0, |l| l.n).min(10_000);
        let outcomes: Vec<send::Outcome> = (0..n)
            .map(|p| match lines.iter().find(|l| l.p == p).map(|l| l.s) {
                Some(State::Sent) => send::Outcome::Sent,
                Some(State::Pending | State::Unknown) => send::Outcome::Unknown,
                Some(State::Failed) => send::Outcome::Failed,
                Some(State::NotSent) | None => send::Outcome::NotSent,
            })
            .collect();
        let parts: Vec<SendPart> = outcomes
            .iter()
            .zip(0..)
            .map(|(outcome, p)| {
                let line = lines.iter().find(|l| l.p == p);
                SendPart {
                    kind: if line.is_some_and(|l| l.f) {
                        "file"
                    } else {
                        "text"
                    }
                    .into(),
                    outcome: outcome.as_str().into(),
                    message_id: line.and_then(|l| l.m.clone()),
                    error: None,
                    transport: None,
                    retry_after_ms: None,
                    attempt_id: line.and_then(|l| l.a.clone()),
                    reconciled: line.is_some_and(|l| l.r),
                }
            })
            .collect();
        Ok(SendReceipt {
            ok: outcomes.iter().all(|o| *o == send::Outcome::Sent),
            account_id: self.id.clone(),
            message_ids: parts.iter().map(|p| p.message_id.clone()).collect(),
            chunks: parts.iter().filter(|p| p.kind == "text").count(),
            parts,
            idempotency_key: Some(key.to_string()),
            replayed: true,
        })
    }

    /// Records a ledger part as sent after the fact (asked imsg, or saw its echo).
    fn settle_line(&self, l: &Line, message_id: Option<String>) {
        let now = timeutil::now_ms();
        let line = Line {
            s: State::Sent,
            m: message_id,
            r: true,
            t: now,
            ..l.clone()
        };
        match ledger::append(&self.dir, &[line], false, now) {
            Ok(()) => {
                self.sends.reconciled_parts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(account = %self.id, "send ledger: {e}"),
        }
    }

    /// The watch saw one of our own rows: an uncertain part it proves sent is settled
    /// (§7.3): its GUID is a tracked part's attempt id, or — untracked — same conversation,
    /// same text, written after the send started.
    pub fn settle_from_echo(&self, m: &ImsgMessage) {
        let row = OwnRow::of(m);
        {
            let mut recent = self.recent_own.locked();
            let now = timeutil::now_ms();
            while recent.len() >= RECENT_OWN
                || recent
                    .front()
                    .is_some_and(|r| now - r.created_ms > RECENT_OWN_MS)
            {
                recent.pop_front();
            }
            recent.push_back(row.clone());
        }
        if self.unsettled.locked().is_empty() {
            return;
        }
        let found = {
            let mut open = self.unsettled.locked();
            let hit = open.iter().position(|u| row.settles(u));
            hit.map(|i| open.remove(i))
        };
        if let Some(u) = found {
            self.settled(&u, &row.guid);
        }
    }

    /// A part became unknown: its row may already have come by on the watch (a send that
    /// timed out after imsg wrote it); otherwise it waits for it.
    fn await_echo(&self, u: Unsettled) {
        let seen = self
            .recent_own
            .locked()
            .iter()
            .find(|r| r.settles(&u))
            .map(|r| r.guid.clone());
        match seen {
            Some(guid) => self.settled(&u, &guid),
            None => self.unsettled.locked().push(u),
        }
    }

    fn settled(&self, u: &Unsettled, guid: &str) {
        tracing::info!(account = %self.id, "an unknown send outcome was settled by its echo");
        match &u.key {
            Some(k) => {
                let now = timeutil::now_ms();
                if let Ok(lines) = ledger::entries(&self.dir, k, now) {
                    if let Some(l) = lines.iter().find(|l| l.p == u.part) {
                        self.settle_line(l, Some(guid.to_string()));
                    }
                }
            }
            None => {
                self.sends.reconciled_parts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Uncertain keyed parts left by an earlier process (a crash with a `pending` line):
    /// their echo may still come.
    pub fn load_unsettled(&self) {
        let now = timeutil::now_ms();
        let Ok(open) = ledger::open_parts(&self.dir, now) else {
            return;
        };
        let mut unsettled = self.unsettled.locked();
        for l in open.into_iter().filter(|l| l.a.is_some()) {
            unsettled.push(Unsettled {
                key: Some(l.k),
                part: l.p,
                attempt: l.a,
                scope: l.c,
                // Matched by their attempt id (the GUID).
                text: String::new(),
                started_ms: l.t,
            });
        }
    }

    /// The `outbound` counters of the send path.
    pub fn send_counters(&self) -> Value {
        json!({
            "trackedParts": self.sends.tracked_parts.load(Ordering::Relaxed),
            "unknownParts": self.sends.unknown_parts.load(Ordering::Relaxed),
            "reconciledParts": self.sends.reconciled_parts.load(Ordering::Relaxed),
            "pendingReconcile": self.unsettled.locked().len(),
        })
    }

    /// What of a plan this imsg can take (actions.md §3.6, §5.4): formatting ranges only
    /// where it renders them (else the marker-free text goes alone), `reply_to` only where
    /// threading exists (lenient < 0.12 would ignore it anyway). Without a snapshot, ranges
    /// are left out and `reply_to` is kept: the send path retries without it when refused.
    async fn fit_to_imsg(&self, plan: &Plan, settings: &AccountConfig) -> Plan {
        let mut plan = plan.clone();
        let has_ranges = plan.parts.iter().any(|p| !p.ranges.is_empty());
        if !has_ranges && plan.reply_to.is_none() {
            return plan;
        }
        match self.capabilities(settings).await {
            Ok(snapshot) => {
                let features = snapshot.features();
                plan.formatting = features.on(Feature::TextFormatting);
                if !features.on(Feature::ReplyThreading) {
                    plan.reply_to = None;
                }
            }
            Err(e) => {
                tracing::debug!(account = %self.id, "sending without formatting: {e}");
                plan.formatting = false;
            }
        }
        plan
    }

    /// Someone wrote in these conversations (any row not from us, not a duplicate, not
    /// stale): the rate limiter's unanswered counts reset (§6.2). Only an `admitted` sender's
    /// row adds conversations to the counters (see `Limiter::note_inbound`).
    pub fn note_inbound(&self, m: &ImsgMessage, admitted: bool) {
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
    pub fn status_json(&self) -> Value {
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
}

/// Whether `target` is a DM with a handle listed explicitly in `allowFrom` (the owner's
/// daily briefing must not stop after five unanswered days, actions.md §6.2). `dm_handle`
/// finds the other person of a chat id the account has seen.
pub fn is_owner_dm(
    target: &Target,
    settings: &AccountConfig,
    dm_handle: impl FnOnce(i64) -> Option<String>,
) -> bool {
    let handle = match target {
        Target::Handle { to, .. } => Some(to.clone()),
        Target::ChatId(id) => dm_handle(*id),
        Target::ChatGuid(g) => g.split_once(";-;").map(|(_, h)| h.to_string()),
        Target::ChatIdentifier(i) => Some(i.clone()),
    };
    handle.is_some_and(|h| {
        settings.allow_from.iter().any(
            |e| matches!(e, crate::config::AllowEntry::Handle(x) if x.eq_ignore_ascii_case(&h)),
        )
    })
}
