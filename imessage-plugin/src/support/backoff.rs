//! Restart delays: 200 ms first, then 1, 2, 4 … 60 s, each with ±20 % jitter
//! (imsg-protocol.md §A8). Never gives up.

use std::time::Duration;

/// The delay before restart number `failures` (0-based).
pub fn restart_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::from_millis(200);
    }
    let base = 1u64 << (failures - 1).min(6);
    jitter(Duration::from_secs(base.min(60)))
}

/// Watch resubscription after an `error` notification: 1, 2, 4 … 60 s.
pub fn resubscribe_delay(failures: u32) -> Duration {
    let base = 1u64 << failures.min(6);
    jitter(Duration::from_secs(base.min(60)))
}

/// ±20 %.
pub fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b) as f64 / u16::MAX as f64,
        Err(_) => 0.5,
    };
    d.mul_f64(0.8 + 0.4 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        assert_eq!(restart_delay(0), Duration::from_millis(200));
        for (failures, secs) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)] {
            let d = restart_delay(failures).as_secs_f64();
            assert!(
                d >= secs * 0.8 - 1e-9 && d <= secs * 1.2 + 1e-9,
                "{failures}: {d}"
            );
        }
    }
}
