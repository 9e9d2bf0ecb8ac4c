//! The wakeup pipe behind `chp_wakeup_fd`: event-loop hosts (asyncio `add_reader`, a libuv
//! poll handle) wait on its read end instead of parking a thread in `chp_next_message`.
//!
//! Both ends are non-blocking: a full pipe already says "readable", so a failed write is
//! harmless, and draining stops at `EAGAIN`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct Wakeup {
    read: OwnedFd,
    write: OwnedFd,
}

impl Wakeup {
    /// `None` where the platform has no `pipe2` (the fd is then reported as -1).
    pub(crate) fn new() -> Option<Wakeup> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return None;
        }
        // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Some(Wakeup { read, write })
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Makes the read end readable (one byte).
    pub(crate) fn signal(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a live local; a full pipe (EAGAIN) is already readable.
        unsafe {
            libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1);
        }
    }

    /// Reads every byte, so the read end stops being readable.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a live local buffer of the given length.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || (n as usize) < buf.len() {
                return;
            }
        }
    }
}
