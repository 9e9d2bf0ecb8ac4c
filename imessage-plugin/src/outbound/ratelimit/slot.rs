//! Waiting for a send slot (actions.md §6.3): a part waits until both buckets hold a token,
//! but a request never waits longer than `rateLimit.maxWaitMs` in total.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Limiter, Refusal};
use crate::support::sync::LockExt;
use crate::support::timeutil;

/// One request's hold on the limiter.
pub struct Throttle<'a> {
    limiter: &'a Mutex<Limiter>,
    scope: String,
    started: Instant,
    max_wait: Duration,
}

impl<'a> Throttle<'a> {
    pub fn new(limiter: &'a Mutex<Limiter>, scope: String) -> Throttle<'a> {
        let max_wait = Duration::from_millis(limiter.locked().limits.max_wait_ms);
        Throttle {
            limiter,
            scope,
            started: Instant::now(),
            max_wait,
        }
    }

    /// Waits for the next part's slot, or says why not (and when to come back).
    pub async fn slot(&self) -> Result<(), Refusal> {
        loop {
            let wait = match self.limiter.locked().take(&self.scope, timeutil::now_ms()) {
                Ok(()) => return Ok(()),
                Err(ms) => Duration::from_millis(ms),
            };
            let left = self.max_wait.saturating_sub(self.started.elapsed());
            if wait > left {
                // Use what is left of the budget, then one last try.
                tokio::time::sleep(left).await;
                let mut limiter = self.limiter.locked();
                return match limiter.take(&self.scope, timeutil::now_ms()) {
                    Ok(()) => Ok(()),
                    Err(ms) => Err(limiter.waited(self.max_wait.as_millis() as u64, ms)),
                };
            }
            tokio::time::sleep(wait).await;
        }
    }
}
