//! The watcher's restart decisions, as pure logic: what follows each way a connection to imsg
//! ends. One path and one backoff for every failure (imsg-protocol.md §A8): 200 ms, then 1, 2,
//! 4 … 60 s with jitter, reset after a minute of health; a permission failure blocks the
//! account and is re-probed on a long timer instead of looping.

use std::time::Duration;

use super::status::AccountState;
use crate::support::backoff;

/// How long a permission-blocked account waits before trying again: 5 min, or
/// `IMESSAGE_BLOCKED_RETRY_SECS` (for operators who grant access and do not want to wait).
pub fn blocked_retry() -> Duration {
    let secs = std::env::var("IMESSAGE_BLOCKED_RETRY_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// How a connection to imsg ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The child could not be started.
    SpawnFailed(String),
    /// It started but `watch.subscribe` failed.
    SubscribeFailed(String),
    /// imsg cannot read the Messages database (Full Disk Access).
    PermissionDenied,
    /// It was watching, then went away (exit, closed stream, a panic in processing, …).
    Gone {
        reason: String,
        healthy_for: Duration,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub after: Duration,
    pub state: AccountState,
    /// The account's `lastError`.
    pub error: String,
}

/// Consecutive failures, for the backoff.
#[derive(Debug, Default)]
pub struct Restarts {
    failures: u32,
}

/// A minute of watching proves the setup works: the next failure starts the backoff over.
const HEALTHY: Duration = Duration::from_secs(60);

impl Restarts {
    /// The state to show while connecting: `starting` the first time, then `recovering`.
    pub fn connecting_state(&self) -> AccountState {
        if self.failures == 0 {
            AccountState::Starting
        } else {
            AccountState::Recovering
        }
    }

    pub fn after(&mut self, ending: Ending) -> Retry {
        let (error, state) = match ending {
            Ending::PermissionDenied => {
                // Not a failure to back off from: the user has to act, so wait long.
                return Retry {
                    after: blocked_retry(),
                    state: AccountState::Blocked,
                    error: crate::imsg::probe::PERMISSION_DENIED.to_string(),
                };
            }
            Ending::SpawnFailed(e) => (e, AccountState::Recovering),
            Ending::SubscribeFailed(e) => (
                format!("watch.subscribe failed: {e}"),
                AccountState::Recovering,
            ),
            Ending::Gone {
                reason,
                healthy_for,
            } => {
                if healthy_for > HEALTHY {
                    self.failures = 0;
                }
                (reason, AccountState::Recovering)
            }
        };
        let after = backoff::restart_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        Retry {
            after,
            state,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(d: Duration, secs: f64) -> bool {
        let d = d.as_secs_f64();
        d >= secs * 0.8 - 1e-9 && d <= secs * 1.2 + 1e-9
    }

    #[test]
    fn failures_back_off_and_a_healthy_minute_resets_them() {
        let mut r = Restarts::default();
        assert_eq!(r.connecting_state(), AccountState::Starting);
        let first = r.after(Ending::SpawnFailed("imsg not found at /x".into()));
        assert_eq!(first.after, Duration::from_millis(200));
        assert_eq!(first.state, AccountState::Recovering);
        assert_eq!(first.error, "imsg not found at /x");
        assert_eq!(r.connecting_state(), AccountState::Recovering);
        let second = r.after(Ending::SubscribeFailed("timeout".into()));
        assert!(within(second.after, 1.0), "{second:?}");
        assert_eq!(second.error, "watch.subscribe failed: timeout");
        let third = r.after(Ending::Gone {
            reason: "imsg exited".into(),
            healthy_for: Duration::from_secs(5),
        });
        assert!(
            within(third.after, 2.0),
            "a short-lived connection keeps backing off"
        );
        for _ in 0..10 {
            r.after(Ending::SpawnFailed("x".into()));
        }
        assert!(
            within(r.after(Ending::SpawnFailed("x".into())).after, 60.0),
            "capped"
        );
        let reset = r.after(Ending::Gone {
            reason: "imsg exited".into(),
            healthy_for: Duration::from_secs(61),
        });
        assert_eq!(
            reset.after,
            Duration::from_millis(200),
            "after a healthy minute"
        );
    }

    #[test]
    fn a_permission_failure_blocks_without_counting_as_a_failure() {
        let mut r = Restarts::default();
        let blocked = r.after(Ending::PermissionDenied);
        assert_eq!(blocked.state, AccountState::Blocked);
        assert_eq!(blocked.after, blocked_retry());
        assert_eq!(blocked.error, crate::imsg::probe::PERMISSION_DENIED);
        assert_eq!(r.connecting_state(), AccountState::Starting);
        assert_eq!(
            r.after(Ending::SpawnFailed("x".into())).after,
            Duration::from_millis(200)
        );
    }
}
