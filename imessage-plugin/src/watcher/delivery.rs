//! The one delivery in flight (issue 22 item 7). The host's `deliver` (for host-stub: print
//! and fsync) runs on a blocking thread while the watcher processes the rows of the next
//! delivery, so the two overlap instead of taking turns. The contract is kept: one delivery
//! in flight per account, the next made only after this one was answered, and what it holds
//! finished only after that (see `process.rs`, `settle`). The host callbacks are `Send + Sync`
//! and may be called from any plugin thread (plugin-abi `HostCallbacks`); the watcher task
//! already moves between the runtime's workers.

use std::sync::Arc;

use plugin_abi::types::PluginError;
use tokio::task::JoinHandle;

use super::unacked::Sealed;
use super::Parts;
use crate::support::sync::LockExt;

/// How a delivery reaches the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handoff {
    /// On the watcher's own thread, now: nothing else is ready to overlap with it, and a hop
    /// to a blocking thread would only add latency (paced at 20,000 msg/s the hop tripled
    /// the p50, ~110 µs → ~400 µs). Retries and the stop's last delivery go this way too.
    Inline,
    /// On a blocking thread, while the watcher processes the rows already waiting.
    Overlapped,
}

pub(super) struct Delivery {
    pub(super) sealed: Sealed,
    /// The host call running now, if any.
    task: Option<JoinHandle<Result<(), PluginError>>>,
    /// Its answer, once it came and was not taken yet.
    answer: Option<Result<(), PluginError>>,
}

impl Delivery {
    /// Starts handing `sealed` to the host; one without events needs no call.
    pub(super) fn start(parts: &Arc<Parts>, sealed: Sealed, handoff: Handoff) -> Delivery {
        let mut d = Delivery {
            sealed,
            task: None,
            answer: None,
        };
        if d.sealed.events > 0 {
            d.send(parts, handoff);
        }
        d
    }

    fn send(&mut self, parts: &Arc<Parts>, handoff: Handoff) {
        // Rows begun from now until the host returns may not be blamed for a death.
        parts.crash.inflight.locked().delivery_started();
        let (json, start) = self.sealed.payload();
        if handoff == Handoff::Inline {
            let answer = parts.host.deliver_json(super::unacked::text(&json, start));
            parts.crash.inflight.locked().delivery_ended();
            self.answer = Some(answer);
            return;
        }
        let parts = parts.clone();
        self.task = Some(tokio::task::spawn_blocking(move || {
            let answer = parts.host.deliver_json(super::unacked::text(&json, start));
            parts.crash.inflight.locked().delivery_ended();
            answer
        }));
    }

    /// Resolves once the host answered; safe to drop and call again (the pump selects on it).
    pub(super) async fn wait(&mut self) {
        if let Some(task) = &mut self.task {
            let answer = task.await.unwrap_or_else(|e| {
                Err(PluginError::internal(format!(
                    "the delivery thread ended without an answer: {e}"
                )))
            });
            self.task = None;
            self.answer = Some(answer);
        }
    }

    /// The host's answer; a delivery stopped between attempts (neither running nor
    /// answered) is made again first.
    pub(super) async fn answer(&mut self, parts: &Arc<Parts>) -> Result<(), PluginError> {
        if self.sealed.events == 0 {
            return Ok(());
        }
        if self.task.is_none() && self.answer.is_none() {
            self.send(parts, Handoff::Inline);
        }
        self.wait().await;
        self.answer.take().unwrap_or(Ok(()))
    }

    pub(super) fn holds(&self, key: &str) -> bool {
        self.sealed.holds(key)
    }
}

/// Resolves when the delivery in `slot` has its answer; never when there is none.
pub(super) async fn answered(slot: &mut Option<Delivery>) {
    match slot {
        Some(d) if d.task.is_some() => d.wait().await,
        // An answer already there is the caller's to take; none to wait for otherwise.
        Some(d) if d.answer.is_some() => {}
        _ => std::future::pending().await,
    }
}
