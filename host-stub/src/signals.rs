//! Waiting for SIGINT, SIGTERM (stop) or SIGHUP (reload the config). The three signals are
//! blocked in the main thread before any other thread exists (threads inherit the mask, so no plugin thread is interrupted), then the main
//! thread waits for one with `sigwait`. Child processes start with an empty mask (std resets
//! it before exec).

pub struct Blocked(libc::sigset_t);

/// Blocks SIGINT, SIGTERM and SIGHUP for this thread and every thread it starts later.
pub fn block() -> Blocked {
    // SAFETY: plain libc calls on a local, zero-initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        Blocked(set)
    }
}

impl Blocked {
    /// Waits until SIGINT, SIGTERM or SIGHUP arrives; returns its name.
    pub fn wait(&self) -> &'static str {
        let mut signal: libc::c_int = 0;
        // SAFETY: the set was initialised in `block`; `signal` is a valid out pointer.
        unsafe {
            libc::sigwait(&self.0, &mut signal);
        }
        match signal {
            libc::SIGINT => "SIGINT",
            libc::SIGHUP => "SIGHUP",
            _ => "SIGTERM",
        }
    }
}
