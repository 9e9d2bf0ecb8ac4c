//! The plugin's fixed timers in one place, so the end-to-end tests can shrink them.
//!
//! Production always runs with [`Timings::default`]. Only a library built with the
//! `fault-injection` feature (the one the end-to-end tests load; release builds never have
//! it) reads [`ENV`] at start, e.g.
//! `IMESSAGE_TEST_TIMINGS="statusPollMs=300,dbRetryMs=200,deliveryRetryMs=10/40/160"`, so a
//! test proves a timer's effect without waiting a real minute for it. The value is parsed
//! strictly: an unknown key or a bad number fails the start, naming it.

use std::time::Duration;

/// The test-only variable (read only with the `fault-injection` feature).
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub const ENV: &str = "IMESSAGE_TEST_TIMINGS";

/// Every fixed timer a test may have to wait for. Copied into each part that uses one when
/// the account is created (one plugin start, one value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often a strict server's `status` refreshes the capability snapshot (actions.md
    /// §1.2).
    pub status_poll: Duration,
    /// How often catch-up asks for a page again while the database is unreadable.
    pub database_retry: Duration,
    /// How often a showing typing indicator is written again (actions.md §3.1).
    pub typing_keepalive: Duration,
    /// How long the plugin's early typing shows without a refresh.
    pub typing_early_max: Duration,
    /// How long a `typing` request may go unanswered.
    pub typing_request: Duration,
    /// Delivery retries after the host refused a batch (§6.3).
    pub delivery_retries: [Duration; 3],
    /// The actions child closes after this long without a request.
    pub actions_idle: Duration,
    /// At most one read receipt per conversation in this window (actions.md §3.2).
    pub read_receipt_window: Duration,
    /// The waits before each `message.send_status` about a fresh uncertainty (+2, +5, +10 s,
    /// §7.3).
    pub settle_polls: [Duration; 3],
    /// Caps the configured `sendTimeoutMs` (whose minimum is 10 s) so a test of a send that
    /// is never answered need not wait 10 s. `None` in production.
    pub send_timeout_cap: Option<Duration>,
    /// Caps the watcher's restart backoff (200 ms, then 1, 2, 4 … 60 s) so a test that
    /// crashes imsg again and again need not sit through it. `None` in production.
    pub restart_cap: Option<Duration>,
}

impl Default for Timings {
    fn default() -> Timings {
        let s = Duration::from_secs;
        Timings {
            status_poll: s(60),
            database_retry: s(30),
            typing_keepalive: s(8),
            typing_early_max: s(60),
            typing_request: s(10),
            delivery_retries: [s(1), s(4), s(16)],
            actions_idle: s(60),
            read_receipt_window: s(2),
            settle_polls: [s(2), s(3), s(5)],
            send_timeout_cap: None,
            restart_cap: None,
        }
    }
}

impl Timings {
    /// The timings of this start: the defaults, or with the `fault-injection` feature the
    /// overrides in [`ENV`] when it is set.
    pub fn from_env() -> Result<Timings, String> {
        #[cfg(feature = "fault-injection")]
        if let Some(spec) = std::env::var_os(ENV) {
            let spec = spec
                .into_string()
                .map_err(|_| format!("{ENV} is not valid UTF-8"))?;
            return Timings::parse(&spec).map_err(|e| format!("{ENV}: {e}"));
        }
        Ok(Timings::default())
    }

    /// The defaults with the overrides of `spec` (`key=ms,key=ms`; the two lists as
    /// `a/b/c`). Pure, so it is tested without the environment.
    pub fn parse(spec: &str) -> Result<Timings, String> {
        let mut t = Timings::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("\"{item}\" is not key=milliseconds"))?;
            let (key, value) = (key.trim(), value.trim());
            let one = || millis(key, value);
            match key {
                "statusPollMs" => t.status_poll = one()?,
                "dbRetryMs" => t.database_retry = one()?,
                "typingKeepaliveMs" => t.typing_keepalive = one()?,
                "typingEarlyMaxMs" => t.typing_early_max = one()?,
                "typingTimeoutMs" => t.typing_request = one()?,
                "deliveryRetryMs" => t.delivery_retries = three(key, value)?,
                "actionsIdleMs" => t.actions_idle = one()?,
                "readReceiptWindowMs" => t.read_receipt_window = one()?,
                "settlePollMs" => t.settle_polls = three(key, value)?,
                "sendTimeoutMs" => t.send_timeout_cap = Some(one()?),
                "restartMaxMs" => t.restart_cap = Some(one()?),
                _ => {
                    return Err(format!(
                        "unknown key \"{key}\" (known: {})",
                        KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(t)
    }

    /// The send timeout to use for a configured `sendTimeoutMs`.
    pub fn send_timeout(&self, configured_ms: u64) -> Duration {
        let configured = Duration::from_millis(configured_ms);
        self.send_timeout_cap
            .map_or(configured, |cap| cap.min(configured))
    }

    /// The wait before a watcher restart the backoff chose.
    pub fn restart_delay(&self, backoff: Duration) -> Duration {
        self.restart_cap.map_or(backoff, |cap| cap.min(backoff))
    }
}

const KEYS: &[&str] = &[
    "statusPollMs",
    "dbRetryMs",
    "typingKeepaliveMs",
    "typingEarlyMaxMs",
    "typingTimeoutMs",
    "deliveryRetryMs",
    "actionsIdleMs",
    "readReceiptWindowMs",
    "settlePollMs",
    "sendTimeoutMs",
    "restartMaxMs",
];

/// A timer of at least 1 ms and at most a day: 0 would make the keepalive and retry loops spin.
fn millis(key: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(ms) if (1..=86_400_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{key}: \"{value}\" is not a whole number of milliseconds from 1 to 86400000"
        )),
    }
}

fn three(key: &str, value: &str) -> Result<[Duration; 3], String> {
    let parts: Vec<&str> = value.split('/').map(str::trim).collect();
    match parts.as_slice() {
        [a, b, c] => Ok([millis(key, a)?, millis(key, b)?, millis(key, c)?]),
        _ => Err(format!(
            "{key}: \"{value}\" is not three milliseconds as a/b/c"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_production_timers() {
        let t = Timings::default();
        assert_eq!(t.status_poll, Duration::from_secs(60));
        assert_eq!(t.database_retry, Duration::from_secs(30));
        assert_eq!(t.typing_keepalive, Duration::from_secs(8));
        assert_eq!(t.typing_early_max, Duration::from_secs(60));
        assert_eq!(t.delivery_retries.map(|d| d.as_secs()), [1, 4, 16], "§6.3");
        assert_eq!(t.actions_idle, Duration::from_secs(60));
        assert_eq!(t.settle_polls.map(|d| d.as_secs()), [2, 3, 5]);
        assert_eq!(t.send_timeout(150_000), Duration::from_secs(150));
        assert_eq!(
            t.restart_delay(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(Timings::parse("").unwrap(), t);
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let t = Timings::parse(
            " statusPollMs=300, dbRetryMs=200,deliveryRetryMs=10/40/160,sendTimeoutMs=500 ",
        )
        .unwrap();
        assert_eq!(t.status_poll, Duration::from_millis(300));
        assert_eq!(t.database_retry, Duration::from_millis(200));
        assert_eq!(t.delivery_retries, [10, 40, 160].map(Duration::from_millis));
        assert_eq!(t.send_timeout(10_000), Duration::from_millis(500));
        assert_eq!(
            t.send_timeout(100),
            Duration::from_millis(100),
            "a cap only"
        );
        assert_eq!(t.typing_keepalive, Duration::from_secs(8));
        let t = Timings::parse("restartMaxMs=100").unwrap();
        assert_eq!(
            t.restart_delay(Duration::from_secs(4)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_bad_setting_is_refused_naming_it() {
        let err = |spec: &str| Timings::parse(spec).unwrap_err();
        assert!(err("statusPoll=3").contains("unknown key \"statusPoll\""));
        assert!(err("dbRetryMs=fast").contains("dbRetryMs: \"fast\""));
        assert!(err("dbRetryMs=0").contains("dbRetryMs: \"0\""));
        assert!(err("dbRetryMs=-5").contains("dbRetryMs"));
        assert!(err("dbRetryMs").contains("\"dbRetryMs\" is not key=milliseconds"));
        assert!(err("settlePollMs=1/2").contains("settlePollMs: \"1/2\" is not three"));
        assert!(err("deliveryRetryMs=1/x/3").contains("deliveryRetryMs: \"x\""));
    }
}
