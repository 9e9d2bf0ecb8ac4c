//! Catch-up through `messages.after` on strict servers (actions.md §4.2): the rows missed
//! while the gateway was down are fetched in bounded pages from the persisted cursor, each
//! page processed and acknowledged before the cursor moves to the page's `next_rowid`, and
//! only then is the live subscription opened. A large backlog can then never overflow imsg's
//! per-subscriber buffer (`watch.overflow`, OpenClaw #139669 lost the oldest rows that way).
//!
//! The page loop is here; what a page says is pure ([`Page::parse`]).

use crate::imsg::capabilities::Feature;
use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::sleep_or_cancel;
use super::watch::Watch;
use crate::imsg::message::{ImsgMessage, Malformed};
use crate::imsg::rpc::CallError;

pub(super) const PAGE_SIZE: i64 = 100;
/// Consecutive failed pages before falling back to the watch replay.
const MAX_FAILURES: u32 = 3;

/// One `messages.after` answer.
#[derive(Debug)]
pub(super) struct Page {
    pub messages: Vec<Result<Box<ImsgMessage>, Malformed>>,
    pub next_rowid: Option<i64>,
    pub has_more: bool,
}

impl Page {
    pub fn parse(result: &Value) -> Page {
        let messages = result
            .get("messages")
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        serde_json::from_value::<ImsgMessage>(row.clone())
                            .map(Box::new)
                            .map_err(|_| Malformed {
                                keys: row
                                    .as_object()
                                    .map(|o| o.keys().cloned().collect())
                                    .unwrap_or_default(),
                                subscription: None,
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Page {
            messages,
            next_rowid: result.get("next_rowid").and_then(Value::as_i64),
            has_more: result.get("has_more").and_then(Value::as_bool) == Some(true),
        }
    }
}

/// How paging ended.
pub(super) enum Paged {
    /// Caught up: subscribe from this row.
    From(i64),
    /// Paging is not possible (lenient server, no cursor, catch-up off) or failed three
    /// times: subscribe as before, from the cursor.
    Skipped,
    /// Cancelled, or a message asked for a restart.
    Stop(Option<String>),
}

/// More overflows than this within [`OVERFLOW_WINDOW_MS`] earn a warning (§4.3).
const OVERFLOW_WARN: usize = 3;
const OVERFLOW_WINDOW_MS: i64 = 10 * 60 * 1000;

impl Watch {
    /// Counts a `watch.overflow` in status; warns when they come often.
    pub(super) fn note_overflow(&self) {
        let now = crate::support::timeutil::now_ms();
        let mut s = self.parts.status.locked();
        s.watch_overflows += 1;
        s.recent_overflows.push_back(now);
        while s
            .recent_overflows
            .front()
            .is_some_and(|t| now - t > OVERFLOW_WINDOW_MS)
        {
            s.recent_overflows.pop_front();
        }
        if s.recent_overflows.len() > OVERFLOW_WARN {
            let n = s.recent_overflows.len();
            tracing::warn!(account = %self.parts.id, "watch overflowed {n} times in 10 min; the gateway is not keeping up");
        }
    }

    /// Whether this watch catches up by paging: a strict server offering `messages.after`
    /// and catch-up on.
    fn can_page(&self) -> bool {
        let snapshot = self.parts.caps.last();
        self.parts.live.settings().catchup.enabled
            && snapshot.is_some_and(|s| s.features().on(Feature::MessagesAfter))
    }

    /// Pages from the cursor to the newest row (§4.2), or from `start` (after an overflow,
    /// §4.3). Every row of a page is finished before the cursor moves to `next_rowid`.
    pub(super) async fn page(
        &mut self,
        conn: &mut Connection,
        start: Option<i64>,
        cancel: &CancellationToken,
    ) -> Paged {
        // Never from nothing: without a cursor the first start begins at the live tail.
        let cursor = self.catchup.since_rowid().or(self.baseline);
        let Some(mut since) = start.or(cursor).filter(|s| *s > 0) else {
            return Paged::Skipped;
        };
        if !self.can_page() {
            return Paged::Skipped;
        }
        if start.is_none() {
            // A replaced database restarts row ids lower: the subscription's own check sends
            // such a cursor to the live tail (imsg-protocol A12), so paging must not run.
            if let Some(newest) = conn.newest_row().await {
                if since > newest + 100 {
                    return Paged::Skipped;
                }
            }
        }
        let settings = self.parts.live.settings();
        let reactions = self.wants_reactions(&settings).await;
        let timeout = Duration::from_secs(if settings.include_attachments { 30 } else { 10 });
        let no_dead = HashSet::new();
        let mut failures = 0;
        let mut pages = 0u64;
        let mut waiting_for_database = false;
        loop {
            let mut params = json!({"since_rowid": since, "limit": PAGE_SIZE,
                "attachments": settings.include_attachments});
            if reactions {
                params["include_reactions"] = json!(true);
            }
            let page = match conn.request("messages.after", params, timeout).await {
                Ok(result) => Page::parse(&result),
                // The database is unreadable for now (a strict imsg stays up and says so,
                // imsg-protocol A9): wait for it rather than give up on paging (§4.2).
                Err(CallError::Rpc(e)) if e.code == -32002 => {
                    if !waiting_for_database {
                        tracing::warn!(account = %self.parts.id, "the Messages database is not readable; catch-up waits for it ({})", e.describe());
                        waiting_for_database = true;
                    }
                    // Every 30 s: an unreadable database is waited for, not counted as a failure.
                    if sleep_or_cancel(self.parts.timings.database_retry, cancel).await {
                        return Paged::Stop(None);
                    }
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_FAILURES || matches!(e, CallError::ChildExited { .. }) {
                        tracing::warn!(account = %self.parts.id, "messages.after failed {failures} times; catching up through the watch replay instead ({e})");
                        return Paged::Skipped;
                    }
                    tracing::debug!(account = %self.parts.id, "messages.after: {e}");
                    let wait = Duration::from_secs(1 << (failures - 1));
                    if sleep_or_cancel(wait, cancel).await {
                        return Paged::Stop(None);
                    }
                    continue;
                }
            };
            failures = 0;
            waiting_for_database = false;
            pages += 1;
            for m in page.messages {
                if let Err(reason) = self.message(None, m, &no_dead, cancel).await {
                    return Paged::Stop(Some(reason));
                }
                if self.reaction.is_some() {
                    if !self.drain(cancel).await {
                        return Paged::Stop(None);
                    }
                    self.deliver_reaction();
                }
            }
            // Every row of the page finished (acknowledged or dropped) before the cursor
            // may pass them.
            if !self.drain(cancel).await {
                return Paged::Stop(None);
            }
            if let Some(next) = page.next_rowid {
                since = since.max(next);
                self.catchup.advance_to(since);
            }
            self.flush();
            if !page.has_more || cancel.is_cancelled() {
                break;
            }
        }
        tracing::info!(account = %self.parts.id, pages, "caught up through messages.after to row {since}");
        Paged::From(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_where_to_go_on_even_past_its_last_message_case_200() {
        let page = Page::parse(
            &json!({"messages": [{"id": 9010, "guid": "G", "chat_id": 1},
            {"id": "not a number"}], "next_rowid": 9012, "has_more": false}),
        );
        assert_eq!(page.messages.len(), 2);
        assert!(page.messages[0].is_ok());
        assert!(
            page.messages[1].is_err(),
            "a malformed row is counted, not fatal"
        );
        assert_eq!(page.next_rowid, Some(9012));
        assert!(!page.has_more);
        let empty = Page::parse(&json!({"messages": [], "next_rowid": 9100, "has_more": true}));
        assert!(empty.messages.is_empty() && empty.has_more);
    }
}
