//! Sending a plan through the account's sender process (channel-behaviour.md §7.3, §7.8):
//! one request at a time, a long timeout, never a blind retry of an `unknown` outcome.

use crate::support::sync::LockExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::types::{SendPart, SendReceipt};
use serde_json::Value;

use super::Plan;
use crate::echo::EchoRegistry;
use crate::imsg::child::ChildSlot;
use crate::imsg::rpc::CallError;
use crate::support::timeutil;

/// What became of one part (channel-behaviour.md §7.8); a string only in the receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Definitely not sent: imsg refused it.
    Failed,
    /// It may have been delivered (a timeout, a lost reply): never retried blindly.
    Unknown,
    /// Never written to imsg.
    NotSent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::NotSent => "not_sent",
        }
    }
}

/// A send's result: the receipt for the host, and each part's outcome as a value.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub wire: SendReceipt,
    pub outcomes: Vec<Outcome>,
}

impl Receipt {
    pub fn any_sent(&self) -> bool {
        self.outcomes.contains(&Outcome::Sent)
    }

    /// Some part reached imsg (sent, or possibly sent): the request counts as sent.
    pub fn reached_any(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Sent | Outcome::Unknown))
    }

    /// Every part reached imsg (sent, or possibly sent).
    pub fn reached_imsg(&self) -> bool {
        self.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Sent | Outcome::Unknown))
    }
}

/// What a failed request means for its outcome: shared by sends and message actions.
pub(crate) fn outcome_of(error: &CallError) -> (Outcome, String) {
    match error {
        CallError::Rpc(e) => {
            let text = e.text();
            if e.code == -32001
                || text.contains("Timed out waiting for response")
                || text.contains("not confirmed")
            {
                (Outcome::Unknown, e.describe())
            } else {
                (Outcome::Failed, e.describe())
            }
        }
        CallError::Timeout { .. } | CallError::ChildExited { .. } => {
            (Outcome::Unknown, error.to_string())
        }
        CallError::PermissionDenied(_) | CallError::Spawn(_) => {
            (Outcome::NotSent, error.to_string())
        }
    }
}

fn send_part(
    kind: &str,
    outcome: Outcome,
    message_id: Option<String>,
    error: Option<String>,
) -> SendPart {
    SendPart {
        kind: kind.into(),
        outcome: outcome.as_str().into(),
        message_id,
        error,
        transport: None,
        retry_after_ms: None,
        attempt_id: None,
        reconciled: false,
    }
}

/// A definite non-send because the private-API bridge is not there (§7.3). Strict servers
/// (≥ 0.14) answer a `reply_to` without the bridge with −32602 "reply_to requires bridge
/// transport; AppleScript fallback cannot send threaded replies" (actions.md §10 E5): missing
/// it meant the retry without `reply_to` never happened and the reply was lost.
fn bridge_unavailable(error: &CallError) -> bool {
    match error {
        CallError::Rpc(e) => {
            let t = e.text().to_lowercase();
            e.code == -32003
                || (t.contains("bridge")
                    && (t.contains("not running")
                        || t.contains("unavailable")
                        || t.contains("not started")
                        || t.contains("requires bridge")))
        }
        _ => false,
    }
}

fn message_id(result: &Value) -> Option<String> {
    result
        .get("guid")
        .or_else(|| result.get("message_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            result
                .get("id")
                .and_then(Value::as_i64)
                .map(|id| format!("rowid:{id}"))
        })
}

/// A request the rate limiter's hard caps refused: every part `not_sent`, nothing written
/// (actions.md §6.3).
pub fn refused(
    plan: &Plan,
    account_id: &str,
    refusal: &crate::outbound::ratelimit::Refusal,
) -> Receipt {
    let parts: Vec<SendPart> = plan
        .parts
        .iter()
        .map(|p| SendPart {
            retry_after_ms: refusal.retry_after_ms,
            ..send_part(
                if p.file.is_some() { "file" } else { "text" },
                Outcome::NotSent,
                None,
                Some(refusal.error.clone()),
            )
        })
        .collect();
    Receipt {
        wire: SendReceipt {
            ok: false,
            account_id: account_id.to_string(),
            message_ids: vec![None; parts.len()],
            chunks: plan.chunks,
            parts,
            ..Default::default()
        },
        outcomes: vec![Outcome::NotSent; plan.parts.len()],
    }
}

/// What an earlier request with the same idempotency key left for a part (actions.md
/// §7.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// Nothing, or `not_sent`/`failed`: send it.
    Fresh,
    /// Sent: replay its message id, write nothing.
    Sent(Option<String>),
    /// `pending` or `unknown`: ask imsg once; never sent again.
    Uncertain,
}

/// Asks imsg whether a tracked attempt exists (`message.send_status` on another child):
/// `patient` polls at +2, +5 and +10 s after a fresh uncertainty, else once.
pub type Settle<'a> =
    &'a (dyn Fn(String, bool) -> futures_util::future::BoxFuture<'static, bool> + Send + Sync);

/// Records a part's state change (keyed requests: the send ledger; `pending` must be
/// durable before it returns). `false`: it could not be recorded.
pub type Record<'a> = &'a (dyn Fn(usize, crate::state::ledger::State, Option<&str>, Option<&str>, bool) -> bool
         + Send
         + Sync);

/// How one request is sent beyond the plan.
#[derive(Default)]
pub struct Options<'a> {
    pub throttle: Option<&'a crate::outbound::ratelimit::slot::Throttle<'a>>,
    /// Per part: the attempt id to send with `send.tracked` (text parts, when imsg offers
    /// it); `None` sends with `send`.
    pub attempts: Vec<Option<String>>,
    /// Per part; missing means [`Prior::Fresh`].
    pub prior: Vec<Prior>,
    pub record: Option<Record<'a>>,
    pub settle: Option<Settle<'a>>,
    /// Where a file bound for a remote Mac is copied first (the account's media folder);
    /// `None`: the system's temporary folder.
    pub upload_dir: Option<&'a std::path::Path>,
}

/// One part's result before it becomes a receipt entry.
struct Done {
    outcome: Outcome,
    message_id: Option<String>,
    error: Option<String>,
    transport: Option<String>,
    attempt: Option<String>,
    reconciled: bool,
    /// The answer's ids, for the echo registry.
    guid: Option<String>,
    rowid: Option<i64>,
    chat_guid: Option<String>,
}

impl Done {
    fn new(outcome: Outcome, error: Option<String>) -> Done {
        Done {
            outcome,
            message_id: None,
            error,
            transport: None,
            attempt: None,
            reconciled: false,
            guid: None,
            rowid: None,
            chat_guid: None,
        }
    }

    fn part(&self, kind: &str) -> SendPart {
        SendPart {
            kind: kind.into(),
            outcome: self.outcome.as_str().into(),
            message_id: self.message_id.clone(),
            error: self.error.clone(),
            transport: self.transport.clone(),
            retry_after_ms: None,
            attempt_id: self.attempt.clone(),
            reconciled: self.reconciled,
        }
    }
}

/// `send`, once more without `reply_to` when the bridge it needs is not there (§7.3).
async fn send_plain(
    sender: &mut ChildSlot,
    plan: &Plan,
    planned: &super::Part,
    timeout: Duration,
) -> Result<Value, CallError> {
    let mut with_reply_to = plan.reply_to.is_some();
    loop {
        let client = sender.client().await?;
        let r = client
            .request("send", plan.params(planned, with_reply_to), timeout)
            .await;
        match &r {
            Err(e) if with_reply_to && bridge_unavailable(e) => {
                tracing::info!(
                    "reply_to needs the imsg bridge, which is not running; sending without it"
                );
                with_reply_to = false;
            }
            _ => return r,
        }
    }
}

fn done_from_plain(result: Result<Value, CallError>) -> Done {
    match result {
        Ok(value) if value.get("ok").and_then(Value::as_bool) != Some(false) => {
            let str_of = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string);
            Done {
                message_id: message_id(&value),
                transport: str_of("transport"),
                guid: value
                    .get("guid")
                    .or_else(|| value.get("message_id"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                rowid: value.get("id").and_then(Value::as_i64),
                chat_guid: str_of("chat_guid"),
                ..Done::new(Outcome::Sent, None)
            }
        }
        Ok(value) => Done::new(Outcome::Failed, Some(format!("imsg answered {value}"))),
        Err(e) => {
            let (outcome, text) = outcome_of(&e);
            Done::new(outcome, Some(text))
        }
    }
}

/// `send.tracked` with the part's attempt id (§7.3's table); `None` when this target has
/// to go through `send` instead.
async fn send_tracked(
    sender: &mut ChildSlot,
    plan: &Plan,
    planned: &super::Part,
    attempt: &str,
    timeout: Duration,
    settle: Option<Settle<'_>>,
) -> Option<Done> {
    use super::attempt::{classify, Tracked};
    let mut params = plan.params(planned, true);
    params["attempt_id"] = Value::from(attempt);
    let mut retried = false;
    loop {
        let answer = match sender.client().await {
            Ok(client) => {
                client
                    .request("send.tracked", params.clone(), timeout)
                    .await
            }
            Err(e) => Err(e),
        };
        let sent = |reconciled: bool, value: Option<&Value>| Done {
            message_id: Some(attempt.to_string()),
            attempt: Some(attempt.to_string()),
            reconciled,
            guid: Some(attempt.to_string()),
            transport: value
                .and_then(|v| v.get("transport"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(Some("bridge".into())),
            chat_guid: value
                .and_then(|v| v.get("chat_guid"))
                .and_then(Value::as_str)
                .map(str::to_string),
            ..Done::new(Outcome::Sent, None)
        };
        let with_attempt = |mut d: Done| {
            d.attempt = Some(attempt.to_string());
            d
        };
        return Some(match classify(attempt, &answer) {
            Tracked::Sent => sent(false, answer.as_ref().ok()),
            // Already in chat.db under this id: proof the earlier attempt got there.
            Tracked::AlreadyThere => sent(true, None),
            Tracked::RetrySafe(_) if !retried => {
                retried = true;
                continue;
            }
            Tracked::RetrySafe(e) | Tracked::Failed(e) => {
                with_attempt(Done::new(Outcome::Failed, Some(e)))
            }
            Tracked::Untracked => return None,
            Tracked::Mismatch(e) => with_attempt(Done::new(Outcome::Unknown, Some(e))),
            Tracked::Uncertain(e) => {
                // The lane may be stuck: a fresh child for what follows, and imsg is asked
                // on another one.
                sender.replace().await;
                match settle {
                    Some(settle) if settle(attempt.to_string(), true).await => sent(true, None),
                    _ => with_attempt(Done::new(Outcome::Unknown, Some(e))),
                }
            }
        });
    }
}

/// Sends every part in order. Each text part is registered in the echo registry before it is
/// written and finished with its own ids after its response.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    sender: &tokio::sync::Mutex<ChildSlot>,
    plan: &Plan,
    echo: &Arc<Mutex<EchoRegistry>>,
    timeout: Duration,
    account_id: &str,
    remote_host: Option<&str>,
    opts: &Options<'_>,
) -> Receipt {
    use crate::state::ledger::State;
    let mut sender = sender.lock().await;
    let mut held: Option<crate::outbound::ratelimit::Refusal> = None;
    let scope = plan.target.echo_scope();
    let mut parts = Vec::with_capacity(plan.parts.len());
    let mut outcomes = Vec::with_capacity(plan.parts.len());
    let mut stop_rest = false;
    let record = |i: usize, s: State, d: Option<&Done>, attempt: Option<&str>| -> bool {
        match opts.record {
            Some(record) => {
                let m = d.and_then(|d| d.message_id.as_deref());
                record(i, s, attempt, m, d.is_some_and(|d| d.reconciled))
            }
            None => true,
        }
    };
    for (i, planned) in plan.parts.iter().enumerate() {
        let kind = if planned.file.is_some() {
            "file"
        } else {
            "text"
        };
        let attempt = opts.attempts.get(i).cloned().flatten();
        if stop_rest {
            outcomes.push(Outcome::NotSent);
            let mut d = Done::new(
                Outcome::NotSent,
                Some("an earlier part has an unknown outcome".into()),
            );
            d.attempt = attempt.clone();
            parts.push(d.part(kind));
            record(i, State::NotSent, None, attempt.as_deref());
            continue;
        }
        // What an earlier request with this key already did (§7.3): replayed, or settled
        // by asking imsg once, never sent twice.
        match opts.prior.get(i) {
            Some(Prior::Sent(id)) => {
                outcomes.push(Outcome::Sent);
                let mut d = Done::new(Outcome::Sent, None);
                d.message_id = id.clone();
                d.attempt = attempt.clone();
                parts.push(d.part(kind));
                continue;
            }
            Some(Prior::Uncertain) => {
                let settled = match (&attempt, opts.settle) {
                    (Some(a), Some(settle)) => settle(a.clone(), false).await,
                    _ => false,
                };
                let mut d = if settled {
                    let mut d = Done::new(Outcome::Sent, None);
                    d.message_id = attempt.clone();
                    d.reconciled = true;
                    d
                } else {
                    stop_rest = true;
                    Done::new(
                        Outcome::Unknown,
                        Some("an earlier attempt may have been delivered; not sent again".into()),
                    )
                };
                d.attempt = attempt.clone();
                outcomes.push(d.outcome);
                record(
                    i,
                    if settled { State::Sent } else { State::Unknown },
                    Some(&d),
                    attempt.as_deref(),
                );
                parts.push(d.part(kind));
                continue;
            }
            _ => {}
        }
        // Each part waits for its send slot; one that cannot get it in time holds back the
        // rest of the request too (actions.md §6.3).
        if held.is_none() {
            if let Some(throttle) = opts.throttle {
                if let Err(refusal) = throttle.slot().await {
                    held = Some(refusal);
                }
            }
        }
        if let Some(refusal) = &held {
            outcomes.push(Outcome::NotSent);
            let mut d = Done::new(Outcome::NotSent, Some(refusal.error.clone()));
            d.attempt = attempt.clone();
            parts.push(SendPart {
                retry_after_ms: refusal.retry_after_ms,
                ..d.part(kind)
            });
            record(i, State::NotSent, None, attempt.as_deref());
            continue;
        }
        // With a remote Mac, a file is first uploaded and its remote path is sent (§7.7); the
        // copy there is removed once the part is settled, whatever became of it.
        let mut planned = planned.clone();
        let mut uploaded = None;
        if let (Some(host), Some(local)) = (remote_host, planned.file.clone()) {
            let staging = opts
                .upload_dir
                .map_or_else(std::env::temp_dir, |d| d.to_path_buf());
            match crate::imsg::remote::upload::upload(&local, host, &staging).await {
                Ok(u) => {
                    planned.file = Some(u.file.clone());
                    uploaded = Some((host, u));
                }
                Err(e) => {
                    // scp's stderr and the path name the file: debug only.
                    tracing::warn!(
                        account = account_id,
                        "uploading a file to the Mac failed; the part was not sent (details at debug level)"
                    );
                    tracing::debug!(
                        account = account_id,
                        "uploading a file to the Mac failed: {e}"
                    );
                    outcomes.push(Outcome::Failed);
                    parts.push(send_part(
                        kind,
                        Outcome::Failed,
                        None,
                        Some(format!("upload failed: {e}")),
                    ));
                    record(i, State::Failed, None, None);
                    continue;
                }
            }
        }
        let planned = &planned;
        // Without its `pending` line on disk a repeat of the key could send this part again:
        // it is not sent.
        if !record(i, State::Pending, None, attempt.as_deref()) {
            if let Some((host, u)) = &uploaded {
                crate::imsg::remote::upload::remove(host, u).await;
            }
            outcomes.push(Outcome::NotSent);
            let mut d = Done::new(
                Outcome::NotSent,
                Some("the send ledger could not be written".into()),
            );
            d.attempt = attempt.clone();
            parts.push(d.part(kind));
            continue;
        }
        let ticket = (!planned.text.is_empty()).then(|| echo.locked().begin(&scope, &planned.text));
        let tracked = match &attempt {
            Some(a) => send_tracked(&mut sender, plan, planned, a, timeout, opts.settle).await,
            None => None,
        };
        let done = match tracked {
            Some(d) => d,
            None => {
                if attempt.is_some() {
                    tracing::debug!(
                        account = account_id,
                        "no chat for a tracked send to this target; sending untracked"
                    );
                }
                done_from_plain(send_plain(&mut sender, plan, planned, timeout).await)
            }
        };
        if let Some((host, u)) = &uploaded {
            crate::imsg::remote::upload::remove(host, u).await;
        }
        let now = timeutil::now_ms();
        if let Some(t) = ticket {
            let mut registry = echo.locked();
            match done.outcome {
                Outcome::Sent => registry.finish(t, done.guid.as_deref(), done.rowid, now),
                // It may have been delivered: keep the text entry for its echo.
                Outcome::Unknown => registry.finish(t, None, None, now),
                _ => registry.cancel(t),
            }
        } else if done.outcome == Outcome::Sent {
            echo.locked()
                .record_ids(done.guid.as_deref(), done.rowid, "", Some(&scope), now);
        }
        // Strict bridge sends name the chat: later actions on this message address it by
        // GUID (actions.md §3.0).
        if let (Some(g), Some(chat_guid)) = (&done.guid, &done.chat_guid) {
            echo.locked().note_chat_guid(g, chat_guid);
        }
        let state = match done.outcome {
            Outcome::Sent => State::Sent,
            Outcome::Unknown => State::Unknown,
            Outcome::Failed => State::Failed,
            Outcome::NotSent => State::NotSent,
        };
        record(i, state, Some(&done), done.attempt.as_deref());
        match done.outcome {
            Outcome::Unknown => {
                // imsg's error may quote the target or the text: debug only.
                tracing::warn!(
                    account = account_id,
                    "send outcome unknown (may have been delivered); the reason is in the receipt and the debug log"
                );
                tracing::debug!(
                    account = account_id,
                    "send outcome unknown: {}",
                    done.error.as_deref().unwrap_or("")
                );
                sender.replace().await;
                stop_rest = true;
            }
            Outcome::Failed | Outcome::NotSent => {
                tracing::warn!(
                    account = account_id,
                    "send {}; the reason is in the receipt and the debug log",
                    done.outcome.as_str()
                );
                tracing::debug!(
                    account = account_id,
                    "send {}: {}",
                    done.outcome.as_str(),
                    done.error.as_deref().unwrap_or("")
                )
            }
            Outcome::Sent => {}
        }
        outcomes.push(done.outcome);
        parts.push(done.part(kind));
    }
    Receipt {
        wire: SendReceipt {
            ok: outcomes.iter().all(|o| *o == Outcome::Sent),
            account_id: account_id.to_string(),
            message_ids: parts.iter().map(|p| p.message_id.clone()).collect(),
            chunks: plan.chunks,
            parts,
            ..Default::default()
        },
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imsg::rpc::{RpcClient, RpcError, SpawnConfig};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use crate::echo::{EchoRegistry, EchoRow};
    use crate::outbound::{Part, Plan, Target};

    /// How the fake imsg answers one send: the reply's members after `"id"`.
    type Answer = Box<dyn Fn(&Value) -> String + Send>;

    fn plan(texts: &[&str], reply_to: Option<&str>) -> Plan {
        Plan {
            target: Target::ChatId(42),
            service: "auto".into(),
            region: "US".into(),
            reply_to: reply_to.map(str::to_string),
            capped: true,
            idempotency_key: None,
            parts: texts
                .iter()
                .map(|t| Part {
                    text: t.to_string(),
                    file: None,
                    ranges: Vec::new(),
                })
                .collect(),
            chunks: texts.len(),
            formatting: true,
        }
    }

    /// Runs `plan` against a fake imsg that answers the n-th send with `answers[n]`
    /// (a closure of the request params); returns the receipt and the params seen.
    fn run(
        plan: Plan,
        answers: Vec<Answer>,
        echo: Arc<Mutex<EchoRegistry>>,
    ) -> (SendReceipt, Vec<Value>) {
        run_with(plan, answers, echo, &Options::default())
    }

    fn run_with(
        plan: Plan,
        answers: Vec<Answer>,
        echo: Arc<Mutex<EchoRegistry>>,
        opts: &Options<'_>,
    ) -> (SendReceipt, Vec<Value>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client_out, imsg_in) = tokio::io::duplex(1 << 16);
            let (mut imsg_out, client_in) = tokio::io::duplex(1 << 16);
            let started = RpcClient::from_io(client_in, client_out);
            let sender = tokio::sync::Mutex::new(ChildSlot::with_client(
                SpawnConfig::rpc("unused", None),
                started,
            ));
            let imsg = tokio::spawn(async move {
                let mut lines = BufReader::new(imsg_in).lines();
                let mut seen = Vec::new();
                for answer in answers {
                    let Ok(Some(line)) = lines.next_line().await else {
                        break;
                    };
                    let req: Value = serde_json::from_str(&line).unwrap();
                    let result = answer(&req["params"]);
                    seen.push(req["params"].clone());
                    let reply = format!("{{\"jsonrpc\":\"2.0\",\"id\":{},{result}}}\n", req["id"]);
                    imsg_out.write_all(reply.as_bytes()).await.unwrap();
                }
                seen
            });
            let receipt = execute(
                &sender,
                &plan,
                &echo,
                Duration::from_secs(5),
                "default",
                None,
                opts,
            )
            .await;
            (receipt.wire, imsg.await.unwrap())
        })
    }

    fn row<'a>(guid: &'a str, text: &'a str) -> EchoRow<'a> {
        EchoRow {
            guid: Some(guid),
            rowid: None,
            reply_to_guid: None,
            text,
            chat_id: Some(42),
            chat_guid: None,
            chat_identifier: None,
            dm_handle: None,
            self_chat: false,
        }
    }

    #[test]
    fn every_chunk_is_registered_with_its_own_guid_case_123() {
        let echo = Arc::new(Mutex::new(EchoRegistry::in_memory()));
        let answers: Vec<Answer> = (1..=3)
            .map(|n| {
                Box::new(move |_: &Value| format!("\"result\":{{\"ok\":true,\"guid\":\"G{n}\"}}"))
                    as Answer
            })
            .collect();
        let (receipt, seen) = run(plan(&["one", "two", "three"], None), answers, echo.clone());
        assert!(receipt.ok);
        assert_eq!(
            receipt.message_ids,
            vec![Some("G1".into()), Some("G2".into()), Some("G3".into())]
        );
        assert_eq!(seen.len(), 3);
        let mut registry = echo.lock().unwrap();
        for guid in ["G1", "G2", "G3"] {
            assert!(
                registry.is_echo(&row(guid, "anything"), 0),
                "{guid} registered"
            );
        }
        // The user typing one chunk's text again (new guid) is not an echo (case 48), and no
        // registration holds the unchunked text.
        assert!(!registry.is_echo(&row("U1", "two"), 0));
        assert!(!registry.is_echo(&row("U2", "one two three"), 0));
    }

    #[test]
    fn a_part_whose_pending_line_cannot_be_written_is_not_sent() {
        use crate::state::ledger::State;
        let echo = Arc::new(Mutex::new(EchoRegistry::in_memory()));
        let record =
            |_: usize, s: State, _: Option<&str>, _: Option<&str>, _: bool| s != State::Pending;
        let opts = Options {
            record: Some(&record),
            ..Options::default()
        };
        // Nobody answers: a request written would end `unknown` (timeout), not `not_sent`.
        let (receipt, _) = run_with(plan(&["hi"], None), Vec::new(), echo, &opts);
        assert_eq!(receipt.parts[0].outcome, "not_sent");
        assert_eq!(
            receipt.parts[0].error.as_deref(),
            Some("the send ledger could not be written")
        );
    }

    #[test]
    fn reply_to_is_dropped_once_when_the_bridge_is_missing_case_130() {
        let echo = Arc::new(Mutex::new(EchoRegistry::in_memory()));
        let answers: Vec<Answer> = vec![
            Box::new(|p: &Value| {
                assert_eq!(p["reply_to"], "abc");
                r#""error":{"code":-32603,"message":"Internal error","data":"The imsg bridge is not running"}"#
                    .to_string()
            }),
            Box::new(|p: &Value| {
                assert!(p.get("reply_to").is_none(), "retried without reply_to");
                "\"result\":{\"ok\":true,\"guid\":\"G1\"}".to_string()
            }),
        ];
        let (receipt, seen) = run(plan(&["hi"], Some("abc")), answers, echo);
        assert!(receipt.ok, "{receipt:?}");
        assert_eq!(seen.len(), 2, "exactly one retry");
    }

    #[test]
    fn outcomes_case_129_131() {
        let rpc = |code, data: &str| {
            CallError::Rpc(RpcError {
                code,
                message: "Internal error".into(),
                data: Some(Value::from(data)),
            })
        };
        assert_eq!(
            outcome_of(&rpc(-32603, "AppleScript failed: x")).0,
            Outcome::Failed
        );
        assert_eq!(outcome_of(&rpc(-32001, "")).0, Outcome::Unknown);
        assert_eq!(
            outcome_of(&rpc(-32603, "Timed out waiting for response to 'send'")).0,
            Outcome::Unknown
        );
        assert_eq!(
            outcome_of(&CallError::Timeout {
                method: "send".into(),
                after: Duration::from_secs(150)
            })
            .0,
            Outcome::Unknown
        );
        assert_eq!(
            outcome_of(&CallError::Spawn("imsg not found".into())).0,
            Outcome::NotSent
        );
        assert_eq!(
            message_id(&serde_json::json!({"ok":true,"guid":"G"})).as_deref(),
            Some("G")
        );
        assert_eq!(
            message_id(&serde_json::json!({"ok":true,"id":123})).as_deref(),
            Some("rowid:123")
        );
        assert_eq!(message_id(&serde_json::json!({"ok":true})), None);
        assert!(bridge_unavailable(&rpc(
            -32603,
            "The bridge is not running"
        )));
        assert!(!bridge_unavailable(&rpc(-32603, "AppleScript failed")));
        assert!(bridge_unavailable(&rpc(
            -32602,
            "reply_to requires bridge transport; AppleScript fallback cannot send threaded replies"
        )));
        assert!(!bridge_unavailable(&rpc(
            -32602,
            "unknown send param: replyTo"
        )));
    }
}
