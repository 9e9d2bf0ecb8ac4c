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
//! - [`process`]: each message, with its own panic guard and the group commit to the host;
//!   [`delivery`]: the one delivery in flight while the next one's rows are processed.
//!
//! Cancellation is a [`CancellationToken`]: `cancel()` ends the watch at its next await point;
//! what was processed is delivered once more (no retry wait) and the state flushed to disk.

mod connection;
pub(crate) mod crash;
mod delivery;
mod paging;
mod process;
mod pump;
pub(crate) mod staging;
pub mod status;
mod supervisor;
pub(crate) mod unacked;
mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_abi::guard::HostHandle;
use plugin_abi::types::HostFeatures;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::config::Live;
use crate::echo::EchoRegistry;
use crate::imsg::capabilities::Cache;
use crate::imsg::probe::probe_ready;
use crate::imsg::rpc::{CallError, RpcClient, Started};
use crate::imsg::source::Source;
use crate::inbound::policy::CommandNames;
use crate::outbound::path::SendPath;
use crate::state::media::MediaDir;
use crate::support::timings::Timings;
use connection::Connection;
use crash::CrashGuards;
use pump::{pump, Exit};
use status::{AccountState, Status};
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

/// What a watcher works with, handed over by the account that owns all of it: shared
/// handles to the account's parts, never the account itself.
pub struct Parts {
    pub(crate) id: String,
    /// The account's state folder (cursor, quarantine, pairing, the source lock beside it).
    pub(crate) dir: PathBuf,
    /// Where attachments are staged.
    pub(crate) media: Arc<MediaDir>,
    pub(crate) source: Source,
    /// The settings, replaced by a reload and picked up before the next message.
    pub(crate) live: Arc<Live>,
    pub(crate) status: Arc<Status>,
    pub(crate) host: Arc<HostHandle>,
    pub(crate) features: Arc<HostFeatures>,
    pub(crate) commands: Arc<CommandNames>,
    pub(crate) caps: Arc<Cache>,
    /// Typing, read receipts and the message index, on the actions child.
    pub(crate) actions: Arc<Actions>,
    /// Plugin-generated replies (pairing codes, refusals), and what inbound rows tell it.
    pub(crate) outbound: Arc<SendPath>,
    pub(crate) echo: Arc<Mutex<EchoRegistry>>,
    pub(crate) crash: Arc<CrashGuards>,
    pub(crate) timings: Timings,
}

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
async fn readiness(parts: &Parts, cancel: &CancellationToken) -> Option<Started> {
    let mut backoff = Duration::from_secs(5);
    loop {
        let started = Instant::now();
        loop {
            let probed = probe_ready(&parts.live.settings(), &parts.source).await;
            if let (_, Some(ready)) = probed {
                let strict = ready.strict_snapshot(crate::support::timeutil::now_ms());
                parts.caps.note_probe(ready.version_text, strict);
                return Some(ready.child);
            }
            let result = probed.0;
            let error = result.error.clone().unwrap_or_default();
            if result.fatal {
                tracing::error!(account = %parts.id, code = ?result.code, "{error}");
                parts.status.set_state(AccountState::Blocked, Some(error));
                if sleep_or_cancel(blocked_retry(), cancel).await {
                    return None;
                }
                break;
            }
            parts
                .status
                .set_state(AccountState::Starting, Some(error.clone()));
            if started.elapsed() >= Duration::from_secs(30) {
                tracing::warn!(account = %parts.id, "imsg is not ready after 30 s: {error}");
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
    parts: &Parts,
    cancel: &CancellationToken,
) -> Result<Option<crate::state::store::FileLock>, ()> {
    let lock_path = parts
        .source
        .lock_path(parts.dir.parent().unwrap_or(&parts.dir));
    loop {
        match crate::state::store::lock_file(&lock_path, false) {
            Ok(Some(lock)) => return Ok(Some(lock)),
            Ok(None) => {
                tracing::warn!(account = %parts.id, "another process watches the same Messages database; waiting");
                parts.status.set_state(
                    AccountState::DuplicateSource,
                    Some("another process watches the same Messages database".into()),
                );
                if sleep_or_cancel(Duration::from_secs(60), cancel).await {
                    return Err(());
                }
            }
            Err(e) => {
                tracing::warn!(account = %parts.id, "watcher lock {}: {e}; continuing without it", lock_path.display());
                return Ok(None);
            }
        }
    }
}

pub async fn run(parts: Arc<Parts>, cancel: CancellationToken) {
    let spawn = parts.source.spawn_config();
    run_with(parts, cancel, true, move || RpcClient::spawn(&spawn)).await
}

/// `run`, with the way to start imsg injected (benchmarks and tests hand it in-memory
/// streams standing in for the child, and skip the readiness probe, which runs the CLI).
///
/// A panic anywhere in the watch (issue 10) is caught here: it is logged, counted in the
/// account's status, and the watch starts again from the persisted cursor after the usual
/// restart backoff, until cancelled. A panic while processing one message is handled closer
/// to it (`Watch::supervised`) so that message can be quarantined.
pub async fn run_with(
    parts: Arc<Parts>,
    cancel: CancellationToken,
    probe_first: bool,
    connect: impl Fn() -> Result<Started, CallError> + Send + Sync + 'static,
) {
    let connect = Arc::new(connect);
    let mut panics = 0;
    loop {
        let attempt = connect.clone();
        let watched = watch_account(parts.clone(), &cancel, probe_first, move || attempt());
        match crate::support::task::catch(watched).await {
            Ok(()) => return,
            Err(panic) => {
                let what = "the watcher panicked; restarting it from the cursor".to_string();
                tracing::error!(account = %parts.id, "{what}");
                // The panic's message may quote a message or a handle: debug only.
                tracing::debug!(account = %parts.id, "watcher panic message: {panic}");
                parts.status.note_panic(what);
                parts.status.set_state(AccountState::Recovering, None);
                let delay = crate::support::backoff::restart_delay(panics);
                if sleep_or_cancel(parts.timings.restart_delay(delay), &cancel).await {
                    parts.status.set_state(AccountState::Stopped, None);
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
                tracing::error!(account = %w.parts.id, "{} ({e})", crate::imsg::probe::PERMISSION_DENIED);
                Ending::PermissionDenied
            } else {
                tracing::warn!(account = %w.parts.id, "watch.subscribe failed: {e}");
                Ending::SubscribeFailed(e.to_string())
            };
            conn.shutdown().await;
            Err(ending)
        }
    }
}

/// One life of the watch: from opening the cursor to cancellation.
async fn watch_account(
    parts: Arc<Parts>,
    cancel: &CancellationToken,
    probe_first: bool,
    connect: impl Fn() -> Result<Started, CallError>,
) {
    let mut w = Watch::open(&parts);
    let lock = acquire_source_lock(&parts, cancel).await;
    // The probe's child, kept so start-up does not start another before subscribing.
    let mut probed = None;
    let ready = match &lock {
        Ok(_) if probe_first => {
            probed = readiness(&parts, cancel).await;
            probed.is_some()
        }
        Ok(_) => true,
        Err(()) => false,
    };
    let mut restarts = Restarts::default();
    while ready && !cancel.is_cancelled() {
        parts.status.set_state(restarts.connecting_state(), None);
        let ending = match connect_and_subscribe(&mut w, &connect, probed.take(), cancel).await {
            Err(ending) => ending,
            Ok((mut conn, subscription)) => {
                // Beside the subscription, not in front of it (imsg-protocol A10 step 3).
                let timeout = Duration::from_millis(parts.live.settings().probe_timeout_ms);
                parts.caps.learn_bridge_beside(timeout);
                parts.status.set_state(AccountState::Watching, None);
                tracing::info!(account = %parts.id, pid = ?conn.client.pid(), "watching for messages");
                let healthy_since = Instant::now();
                let exit = pump(&mut w, &mut conn, subscription, cancel).await;
                conn.shutdown().await;
                match exit {
                    Exit::Stop => break,
                    Exit::Gone(reason) => {
                        tracing::warn!(account = %parts.id, "imsg rpc stopped ({reason}); restarting");
                        Ending::Gone {
                            reason,
                            healthy_for: healthy_since.elapsed(),
                        }
                    }
                }
            }
        };
        if let Ending::SpawnFailed(e) = &ending {
            tracing::warn!(account = %parts.id, "starting imsg failed: {e}");
        }
        let retry = restarts.after(ending);
        parts.status.set_state(retry.state, Some(retry.error));
        if sleep_or_cancel(parts.timings.restart_delay(retry.after), cancel).await {
            break;
        }
    }
    drop(lock);
    w.flush_and_wait();
    parts.status.set_state(AccountState::Stopped, None);
}
