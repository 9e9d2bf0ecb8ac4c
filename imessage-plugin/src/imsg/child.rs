//! The account's extra `imsg rpc` children (actions.md §1.1): each lives in a [`ChildSlot`],
//! started on first use. The sender's slot belongs to the send path; the actions child (read
//! receipts, typing, tapbacks, edits, `message.send_status`) is a third child, separate from
//! the watcher's and the sender's, so a bridge call that stalls for seconds delays neither
//! the watch stream nor a reply, and it closes after a minute without a request.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::imsg::capabilities::Cache;
use crate::imsg::rpc::{CallError, RpcClient, SpawnConfig};
use crate::support::timeutil;

/// One `imsg rpc` child started on first use and replaced when it died or was closed: the
/// account's sender (a slow send never stalls the watch stream; replaced after an `unknown`)
/// and its actions child each live in one.
pub struct ChildSlot {
    spawn: SpawnConfig,
    running: Option<(RpcClient, tokio::sync::oneshot::Receiver<()>)>,
    /// Send `initialize` first on every child this starts (strict servers, imsg-protocol A10).
    pub initialize_first: bool,
}

impl ChildSlot {
    pub fn new(spawn: SpawnConfig) -> Self {
        ChildSlot {
            spawn,
            running: None,
            initialize_first: false,
        }
    }

    /// A sender over an already started client (tests stand in for the child with streams).
    pub fn with_client(spawn: SpawnConfig, started: crate::imsg::rpc::Started) -> Self {
        ChildSlot {
            spawn,
            running: Some((started.client, started.done)),
            initialize_first: false,
        }
    }

    pub async fn client(&mut self) -> Result<RpcClient, CallError> {
        if let Some((client, _)) = &self.running {
            if client.dead().is_none() {
                return Ok(client.clone());
            }
        }
        self.running = None;
        let started = RpcClient::spawn(&self.spawn)?;
        // The sender subscribes to nothing; notifications (if any) are not ours to read.
        drop(started.events);
        if self.initialize_first {
            let params = serde_json::json!({"protocol_version": 1});
            if let Err(e) = started
                .client
                .request("initialize", params, Duration::from_secs(10))
                .await
            {
                tracing::debug!("initialize: {e}");
            }
        }
        self.running = Some((started.client.clone(), started.done));
        Ok(started.client)
    }

    /// Stops the child (after an `unknown` outcome, or at shutdown).
    pub async fn replace(&mut self) {
        if let Some((client, done)) = self.running.take() {
            client.shutdown(done, Duration::from_millis(500)).await;
        }
    }
}

/// The actions child and what it needs to know of the server: strict servers get
/// `initialize` first, and bridge trouble makes the capability snapshot be learned again.
pub struct ActionsChild {
    slot: tokio::sync::Mutex<ChildSlot>,
    /// When the child was last asked something (idle close).
    used_ms: AtomicI64,
    caps: Arc<Cache>,
    /// Closed after this long without a request (`Timings::actions_idle`, a minute).
    idle: Duration,
}

impl ActionsChild {
    pub fn new(spawn: SpawnConfig, caps: Arc<Cache>, idle: Duration) -> ActionsChild {
        ActionsChild {
            slot: tokio::sync::Mutex::new(ChildSlot::new(spawn)),
            used_ms: AtomicI64::new(0),
            caps,
            idle,
        }
    }

    /// The capability snapshot the actions are gated on.
    pub fn caps(&self) -> &Arc<Cache> {
        &self.caps
    }

    /// One request, starting the child when needed; the child is closed after its idle time
    /// without requests.
    pub async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let client = {
            let mut slot = self.slot.lock().await;
            slot.initialize_first = self.caps.is_strict();
            slot.client().await?
        };
        self.used_ms.store(timeutil::now_ms(), Ordering::Relaxed);
        let result = client.request(method, params, timeout).await;
        if let Err(e) = &result {
            if bridge_trouble(e) {
                // The snapshot may be wrong now (a bridge that stalls or went away; actions.md
                // §1.2 step 2): a strict server is asked for `status` on the watcher's child at
                // once; otherwise it is learned again before the next bridge call.
                if self.caps.is_strict() {
                    self.caps.status_due.store(true, Ordering::Relaxed);
                } else {
                    self.caps.forget();
                }
            }
        }
        let idle = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(idle.idle).await;
            let used = idle.used_ms.load(Ordering::Relaxed);
            if timeutil::now_ms() - used >= idle.idle.as_millis() as i64 {
                idle.close().await;
            }
        });
        result
    }

    /// Stops the child (idle, or at shutdown); the next request starts another.
    pub async fn close(&self) {
        self.slot.lock().await.replace().await;
    }
}

/// Errors after which the capability snapshot is learned again (actions.md §1.2): database
/// or bridge unavailable, a poisoned mutation lane, or a bridge that stopped answering.
fn bridge_trouble(e: &CallError) -> bool {
    match e {
        CallError::Rpc(r) => {
            (-32004..=-32002).contains(&r.code)
                || r.text().contains("Timed out waiting for response")
        }
        CallError::Timeout { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bridge_trouble_drops_the_snapshot() {
        use crate::imsg::rpc::RpcError;
        let rpc = |code, data: &str| {
            CallError::Rpc(RpcError {
                code,
                message: "x".into(),
                data: Some(json!(data)),
            })
        };
        assert!(bridge_trouble(&rpc(-32003, "")));
        assert!(bridge_trouble(&rpc(
            -32603,
            "Timed out waiting for response"
        )));
        assert!(!bridge_trouble(&rpc(-32602, "unknown read param: x")));
    }
}
