//! Pumping one subscription: events in, messages processed one at a time in stream order,
//! deliveries committed in groups, progress flushed, and the watch's own failures
//! (`error`, `watch.overflow`) answered by resubscribing on the same child.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::delivery::Handoff;
use super::status::AccountState;
use super::watch::Watch;
use super::{sleep_or_cancel, FLUSH_EVERY};
use crate::imsg::rpc::Event;
use crate::support::backoff;

/// Why pumping stopped.
pub(super) enum Exit {
    /// Cancelled: the account is stopping.
    Stop,
    /// The child is gone or unusable; the reason becomes the account's `lastError`.
    Gone(String),
}

/// Pumps until the child goes away or `cancel` fires. On return, everything processed was
/// delivered and acknowledged or let go unfinished (so the next subscription replays it).
pub(super) async fn pump(
    w: &mut Watch,
    conn: &mut Connection,
    mut subscription: i64,
    cancel: &CancellationToken,
) -> Exit {
    let mut dead_subscriptions: HashSet<i64> = HashSet::new();
    let mut watch_failures: u32 = 0;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut last_flush = Instant::now();
    let mut last_status = Instant::now();
    // One future for the whole loop: registering a fresh waiter per event costs two lock
    // round trips per message.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let exit = loop {
        // Group commit: what is held goes to the host once nothing more is ready right now (so
        // at low rates every message goes alone, at once, on this thread) or the batch is full
        // (then the host takes it beside the rows still waiting).
        if !w.outbox.is_empty() {
            let handoff = if conn.more_ready() {
                Handoff::Overlapped
            } else {
                Handoff::Inline
            };
            if (w.outbox.is_full() || handoff == Handoff::Inline)
                && !w.commit(cancel, handoff).await
            {
                break Exit::Stop;
            }
        }
        let event = tokio::select! {
            biased;
            _ = &mut cancelled => break Exit::Stop,
            event = conn.next_event() => event,
            // The delivery in flight was answered while no row was waiting: finish it now,
            // so the cursor, typing and read receipts do not wait for the next message.
            _ = super::delivery::answered(&mut w.delivery) => {
                if !w.settle(cancel).await {
                    break Exit::Stop;
                }
                continue;
            }
            _ = tick.tick() => {
                w.flush();
                last_flush = Instant::now();
                // A strict server's `status` refreshes the snapshot every minute (§1.2).
                if last_status.elapsed() >= w.parts.timings.status_poll
                    || w.parts.caps.status_due.swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    last_status = Instant::now();
                    w.refresh_status(conn).await;
                }
                // A reload that turns tapbacks on or off resubscribes on the same child, from
                // the cursor (actions.md §2.4, case 213).
                if w.subscription_settings_changed() {
                    let settings = w.parts.live.settings();
                    if w.wants_reactions(&settings).await != w.reactions_subscribed {
                        let again = Again::Reactions(subscription);
                        match resubscribe(w, conn, again, &mut dead_subscriptions, cancel).await {
                            Ok(id) => subscription = id,
                            Err(exit) => break exit,
                        }
                    }
                }
                continue;
            }
        };
        match event {
            None => break Exit::Gone("event stream closed".into()),
            Some(Event::Message {
                subscription,
                message,
            }) => {
                watch_failures = 0;
                if let Err(reason) = w
                    .message(subscription, message, &dead_subscriptions, cancel)
                    .await
                {
                    break Exit::Gone(reason);
                }
                if w.reaction.is_some() {
                    // In stream order: what is held before the tapback first.
                    if !w.drain(cancel).await {
                        break Exit::Stop;
                    }
                    w.deliver_reaction();
                }
                // During a burst the stream always wins the select above, so the tick alone
                // would never persist progress (nor bound the unflushed keys).
                if last_flush.elapsed() >= FLUSH_EVERY {
                    w.flush();
                    last_flush = Instant::now();
                }
            }
            Some(Event::Notification { method, params })
                if method == "error" || method == "watch.overflow" =>
            {
                let again =
                    Again::from_notification(&method, params.as_deref(), &mut watch_failures);
                match resubscribe(w, conn, again, &mut dead_subscriptions, cancel).await {
                    Ok(id) => subscription = id,
                    Err(exit) => break exit,
                }
            }
            Some(Event::Notification { method, .. }) => {
                tracing::debug!(method = %method, "ignoring notification")
            }
        }
    };
    // Messages processed before the exit are delivered now (on stop, one attempt); what is
    // still unacknowledged is let go unfinished, so the next subscription replays it.
    if !w.drain(cancel).await {
        w.outbox.take();
        w.delivery = None;
    }
    w.flush();
    exit
}

/// Why the pump subscribes again, with the subscription that ends.
enum Again {
    /// A reload turned tapbacks on or off.
    Reactions(i64),
    /// The watch reported an error (its text), after this many failures in a row.
    Failing(i64, String, u32),
    /// The watch overflowed; imsg's `resume_after_rowid`, if it said.
    Overflow(i64, Option<i64>),
}

impl Again {
    /// What an `error` or `watch.overflow` notification asks for; an error counts one more
    /// failure in a row.
    fn from_notification(
        method: &str,
        params: Option<&serde_json::value::RawValue>,
        failures: &mut u32,
    ) -> Again {
        let p: Value = params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        let sub = p.get("subscription").and_then(Value::as_i64).unwrap_or(0);
        if method == "error" {
            let text = p.pointer("/error/message").and_then(Value::as_str);
            let before = *failures;
            *failures += 1;
            Again::Failing(sub, text.unwrap_or("unknown error").to_string(), before)
        } else {
            Again::Overflow(sub, p.get("resume_after_rowid").and_then(Value::as_i64))
        }
    }
}

/// The one resubscribe path: what is held is settled first (a new subscription replays from
/// the cursor), the old subscription is dropped, and the new one starts where `again` says.
async fn resubscribe(
    w: &mut Watch,
    conn: &mut Connection,
    again: Again,
    dead_subscriptions: &mut HashSet<i64>,
    cancel: &CancellationToken,
) -> Result<i64, Exit> {
    if !w.drain(cancel).await {
        return Err(Exit::Stop);
    }
    let (Again::Reactions(old) | Again::Failing(old, ..) | Again::Overflow(old, _)) = again;
    dead_subscriptions.insert(old);
    w.flush();
    let mut resume = None;
    let reactions = matches!(again, Again::Reactions(_));
    match again {
        Again::Reactions(_) => unsubscribe(conn, old).await,
        Again::Failing(_, text, failures) => {
            tracing::warn!(account = %w.parts.id, "watch failing: {text}");
            let error = Some(format!("watch failing: {text}"));
            w.parts.status.set_state(AccountState::Recovering, error);
            unsubscribe(conn, old).await;
            if sleep_or_cancel(backoff::resubscribe_delay(failures), cancel).await {
                return Err(Exit::Stop);
            }
        }
        Again::Overflow(_, after) => {
            // At or before the first dropped row; never past what is finished (actions.md
            // §4.3). Duplicates are dropped by the seen keys.
            resume = match (after, w.catchup.rowid()) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => a.or(c),
            };
            w.note_overflow();
            tracing::warn!(account = %w.parts.id, "watch overflowed; catching up after row {resume:?}");
            match w.page(conn, resume, cancel).await {
                super::paging::Paged::From(since) => resume = Some(since),
                super::paging::Paged::Skipped => {}
                super::paging::Paged::Stop(None) => return Err(Exit::Stop),
                super::paging::Paged::Stop(Some(reason)) => return Err(Exit::Gone(reason)),
            }
        }
    }
    match w.subscribe(conn, resume).await {
        Ok(id) => {
            if !reactions {
                w.parts.status.set_state(AccountState::Watching, None);
            }
            Ok(id)
        }
        Err(e) => Err(Exit::Gone(format!("resubscribing failed: {e}"))),
    }
}

/// Best effort: a subscription the server already dropped answers with an error.
async fn unsubscribe(conn: &mut Connection, subscription: i64) {
    let params = json!({"subscription": subscription});
    let _ = conn
        .request("watch.unsubscribe", params, Duration::from_secs(10))
        .await;
}
