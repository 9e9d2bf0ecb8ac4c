//! Panics inside the plugin's own tasks (issue 10).
//!
//! The FFI guard only covers host calls. Everything the plugin runs on its runtime (the
//! watcher, the rpc reader and writer, the process task, the cursor writer) would otherwise
//! die silently on a panic, and with it every later message of the account. Each task is
//! spawned through [`spawn`], which logs a panic at error level; the task's owner then sees
//! its usual failure path (a closed stream, a dropped sender) and restarts what it owns.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Runs `fut` to completion; `Err` carries the panic's message when it panicked.
///
/// `AssertUnwindSafe` is sound here because every caller throws away or rebuilds the state
/// the future touched (the watcher restarts from the persisted cursor), and shared state
/// behind locks is read through [`crate::support::sync`], which tolerates poisoning.
pub async fn catch<F: Future>(fut: F) -> Result<F::Output, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|payload| plugin_abi::guard::panic_text(payload.as_ref()))
}

/// `tokio::spawn`, with a panic logged at error level naming the task instead of vanishing.
pub fn spawn<F>(task: &'static str, fut: F) -> tokio::task::JoinHandle<Option<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(async move {
        match catch(fut).await {
            Ok(out) => Some(out),
            Err(panic) => {
                // The panic's message may quote a message or a handle: debug only.
                tracing::error!(
                    task,
                    "plugin task panicked; its message is logged at debug level"
                );
                tracing::debug!(task, "panic message: {panic}");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_not_propagated() {
        let handle = spawn("test", async { panic!("boom") });
        assert_eq!(
            handle.await.expect("the wrapper itself never panics"),
            None::<()>
        );
        let ok = spawn("test", async { 7 });
        assert_eq!(ok.await.unwrap(), Some(7));
        let caught = catch(async { panic!("with {}", "text") }).await;
        assert_eq!(caught.err().as_deref(), Some("with text"));
    }
}
