//! The watcher: one per receiving account, a supervisor around one `imsg rpc` child at a
//! time. It keeps the child subscribed from the persisted cursor, runs every message through
//! the inbound pipeline in stream order, hands accepted ones to the host, and finishes each
//! message in the catch-up state only after the host acknowledged it (or it was deliberately
//! dropped). The steps, each in its module:
//!
//! - [`run_with`]: catches a panic anywhere in the watch and starts it again from the cursor;
//! - `watch_account`: opens the state ([`watch`]), takes the source lock, probes readiness,
//!   then connects, subscribes and pumps ([`pump`]) until cancelled, restarting the child on
//!   one path with one backoff ([`supervisor`]) whenever it ends;
//! - [`process`]: each message, with its own panic guard and the group commit to the host.
//!
//! Cancellation is a [`CancellationToken`]: `cancel()` ends the watch at its next await point;
//! what was processed is delivered once more (no retry wait) and the state flushed to disk.

mod connection;
mod paging;
mod process;
mod pump;
pub(crate) mod staging;
mod supervisor;
pub(crate) mod unacked;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::account::{Account, AccountState};
use crate::imsg::probe::probe_ready;
use crate::imsg::rpc::{CallError, RpcClient, Started};
use connection::Connection;
use pump::{pump, Exit};
use supervisor::{blocked_retry, Ending, Restarts};
use watch::Watch;

/// How often finished messages are persisted (seen keys, then the cursor).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// With the `fault-injection` feature (tests only), a message with exactly this text makes
/// processing panic, to exercise the restart and quarantine path end to end.
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC_TEXT: &str = "__imessage_fault_injection_panic__";
/// With the `fault-injection` feature (tests only), a message with exactly this text is held
/// in processing forever, so a test can kill the process in the middle of that row.
#[cfg(feature = "fault-injection")]
pub const FAULT_HANG_TEXT: &str = "__imessage_fault_injection_hang__";

/// Sleeps unless cancelled first; true when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => cancel.is_cancelled(),
        _ = cancel.cancelled() => true,
    }
}

/// The readiness probe before watching (§10.1): retried every 1 s for up to 30 s; a fatal
/// result blocks the account and it is re-probed every 5 min; a non-fatal one that lasts
/// 30 s is retried with backoff 5 s, doubling, up to 5 min. What the probe learned becomes
/// the account's, and its child is returned for the watcher; `None` when cancelled.
async fn readiness(account: &Account, cancel: &CancellationToken) -> Option<Started> {
    let mut backoff = Duration::from_secs(5);
    loop {
        let started = Instant::now();
        loop {
            let probed = probe_ready(&account.settings(), &account.source).await;
            if let (_, Some(ready)) = probed {
                let strict = ready.strict_snapshot(crate::support::timeutil::now_ms());
                account.caps.note_probe(ready.version_text, strict);
                return Some(ready.child);
            }
            let result = probed.0;
            let error = result.error.clone().unwrap_or_default();
            if result.fatal {
                tracing::error!(account = %account.id, code = ?result.code, "{error}");
                account.set_state(AccountState::Blocked, Some(error));
                if sleep_or_cancel(blocked_retry(), cancel).await {
                    return None;
                }
                break;
            }
            account.set_state(AccountState::Starting, Some(error.clone()));
            if started.elapsed() >= Duration::from_secs(30) {
                tracing::warn!(account = %account.id, "imsg is not ready after 30 s: {error}");
                if sleep_or_cancel(backoff, cancel).await {
                    return None;
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
                break;
            }
            if sleep_or_cancel(Duration::from_secs(1), cancel).await {
                return None;
            }
        }
    }
}

/// One watcher per database across processes too: another gateway on the same state folder
/// holding the lock means this account waits (§11). `Err(())` when cancelled while waiting.
async fn acquire_source_lock(
    account: &Account,
    cancel: &CancellationToken,
) -> Result<Option<crate::state::store::FileLock>, ()> {
    let lock_path = account
        .source
        .lock_path(account.dir.parent().unwrap_or(&account.dir));
    loop {
        match crate::state::store::lock_file(&lock_path, false) {
            Ok(Some(lock)) => return Ok(Some(lock)),
            Ok(None) => {
                tracing::warn!(account = %account.id, "another process watches the same Messages database; waiting");
                account.set_state(
                    AccountState::DuplicateSource,
                    Some("another process watches the same Messages database".into()),
                );
                if sleep_or_cancel(Duration::from_secs(60), cancel).await {
                    return Err(());
                }
            }
            Err(e) => {
                tracing::warn!(account = %account.id, "watcher lock {}: {e}; continuing without it", lock_path.display());
                return Ok(None);
            }
        }
    }
}

pub async fn run(account: Arc<Account>, cancel: CancellationToken) {
    let spawn = account.source.spawn_config();
    run_with(account, cancel, true, move || RpcClient::spawn(&spawn)).await
}

/// `run`, with the way to start imsg injected (benchmarks and tests hand it in-memory
/// streams standing in for the child, and skip the readiness probe, which runs the CLI).
///
/// A panic anywhere in the watch (issue 10) is caught here: it is logged, counted in the
/// account's status, and the watch starts again from the persisted cursor after the usual
/// restart backoff, until cancelled. A panic while processing one message is handled closer
/// to it (`Watch::supervised`) so that message can be quarantined.
pub async fn run_with(
    account: Arc<Account>,
    cancel: CancellationToken,
    probe_first: bool,
    connect: impl Fn() -> Result<Started, CallError> + Send + Sync + 'static,
) {
    let connect = Arc::new(connect);
    let mut panics = 0;
    loop {
        let attempt = connect.clone();
        let watched = watch_account(account.clone(), &cancel, probe_first, move || attempt());
        match crate::support::task::catch(watched).await {
            Ok(()) => return,
            Err(panic) => {
                let what = "the watcher panicked; restarting it from the cursor".to_string();
                tracing::error!(account = %account.id, "{what}");
                // The panic's message may quote a message or a handle: debug only.
                tracing::debug!(account = %account.id, "watcher panic message: {panic}");
                account.note_panic(what);
                account.set_state(AccountState::Recovering, None);
                let delay = crate::support::backoff::restart_delay(panics);
                if sleep_or_cancel(account.timings.restart_delay(delay), &cancel).await {
                    account.set_state(AccountState::Stopped, None);
                    return;
                }
                panics += 1;
            }
        }
    }
}

/// Connects (to the probe's child, already initialized, when there is one), catches up (by
/// paging on strict servers) and subscribes; how it failed otherwise.
async fn connect_and_subscribe(
    w: &mut Watch,
    connect: &impl Fn() -> Result<Started, CallError>,
    probed: Option<Started>,
    cancel: &CancellationToken,
) -> Result<(Connection, i64), Ending> {
    let mut conn = match probed {
        Some(child) => Connection::new(child),
        None => {
            let child = connect().map_err(|e| Ending::SpawnFailed(e.to_string()))?;
            let mut conn = Connection::new(child);
            w.initialize(&mut conn).await;
            conn
        }
    };
    let resume = match w.page(&mut conn, None, cancel).await {
        paging::Paged::From(since) => Some(since),
        paging::Paged::Skipped => None,
        paging::Paged::Stop(reason) => {
            conn.shutdown().await;
            // Cancelled (the loop then stops at once) or a restart asked for.
            return Err(Ending::Gone {
                reason: reason.unwrap_or_else(|| "stopped during catch-up".into()),
                healthy_for: Duration::ZERO,
            });
        }
    };
    match w.subscribe(&mut conn, resume).await {
        Ok(subscription) => Ok((conn, subscription)),
        Err(e) => {
            let ending = if e.is_permission() {
                tracing::error!(account = %w.account.id, "{} ({e})", crate::imsg::probe::PERMISSION_DENIED);
                Ending::PermissionDenied
            } else {
                tracing::warn!(account = %w.account.id, "watch.subscribe failed: {e}");
                Ending::SubscribeFailed(e.to_string())
            };
            conn.shutdown().await;
            Err(ending)
        }
    }
}

/// One life of the watch: from opening the cursor to cancellation.
async fn watch_account(
    account: Arc<Account>,
    cancel: &CancellationToken,
    probe_first: bool,
    connect: impl Fn() -> Result<Started, CallError>,
) {
    let mut w = Watch::open(&account);
    let lock = acquire_source_lock(&account, cancel).await;
    // The probe's child, kept so start-up does not start another before subscribing.
    let mut probed = None;
    let ready = match &lock {
        Ok(_) if probe_first => {
            probed = readiness(&account, cancel).await;
            probed.is_some()
        }
        Ok(_) => true,
        Err(()) => false,
    };
    let mut restarts = Restarts::default();
    while ready && !cancel.is_cancelled() {
        account.set_state(restarts.connecting_state(), None);
        let ending = match connect_and_subscribe(&mut w, &connect, probed.take(), cancel).await {
            Err(ending) => ending,
            Ok((mut conn, subscription)) => {
                // Beside the subscription, not in front of it (imsg-protocol A10 step 3).
                let timeout = Duration::from_millis(account.settings().probe_timeout_ms);
                account.caps.learn_bridge_beside(timeout);
                account.set_state(AccountState::Watching, None);
                tracing::info!(account = %account.id, pid = ?conn.client.pid(), "watching for messages");
                let healthy_since = Instant::now();
                let exit = pump(&mut w, &mut conn, subscription, cancel).await;
                conn.shutdown().await;
                match exit {
                    Exit::Stop => break,
                    Exit::Gone(reason) => {
                        tracing::warn!(account = %account.id, "imsg rpc stopped ({reason}); restarting");
                        Ending::Gone {
                            reason,
                            healthy_for: healthy_since.elapsed(),
                        }
                    }
                }
            }
        };
        if let Ending::SpawnFailed(e) = &ending {
            tracing::warn!(account = %account.id, "starting imsg failed: {e}");
        }
        let retry = restarts.after(ending);
        account.set_state(retry.state, Some(retry.error));
        if sleep_or_cancel(account.timings.restart_delay(retry.after), cancel).await {
            break;
        }
    }
    drop(lock);
    w.flush_and_wait();
    account.set_state(AccountState::Stopped, None);
}
