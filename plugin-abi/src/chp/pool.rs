//! The threads host requests run on. A `send` may take as long as the send, so requests never
//! run on the poster's thread; the pool grows on demand up to [`MAX_WORKERS`] and its threads
//! wait for work between requests.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests running at once; more wait in the pool's queue.
pub(crate) const MAX_WORKERS: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    workers: usize,
    shutdown: bool,
    handles: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    exited: Condvar,
}

#[derive(Default)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pool {
    /// Queues `job`; `Err` when no thread could be started to run it.
    pub(crate) fn spawn(&self, job: Job) -> Result<(), std::io::Error> {
        let mut state = self.shared.lock();
        state.jobs.push_back(job);
        if state.jobs.len() <= state.idle || state.workers >= MAX_WORKERS {
            self.shared.work.notify_one();
            return Ok(());
        }
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("chp-worker".into())
            .spawn(move || work(&shared));
        match started {
            Ok(handle) => {
                state.workers += 1;
                state.handles.push(handle);
                Ok(())
            }
            Err(e) => {
                if state.workers == 0 {
                    state.jobs.pop_back();
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    /// Lets the workers finish what is queued, then waits up to `bound` for them to exit.
    /// Threads still busy after that are left to finish on their own (they own what they
    /// use).
    pub(crate) fn shutdown(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let mut state = self.shared.lock();
        state.shutdown = true;
        self.shared.work.notify_all();
        while state.workers > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            state = self
                .shared
                .exited
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let handles = std::mem::take(&mut state.handles);
        drop(state);
        for handle in handles {
            let _ = handle.join();
        }
    }
}

fn work(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            // Jobs catch their own panics; this only keeps the worker alive if one slips.
            let _ = catch_unwind(AssertUnwindSafe(job));
            state = shared.lock();
            continue;
        }
        if state.shutdown {
            state.workers -= 1;
            shared.exited.notify_all();
            return;
        }
        state.idle += 1;
        state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
        state.idle -= 1;
    }
}
