//! `rateLimit.*` (actions.md §6.4): the settings the outbound rate limiter runs with. Here,
//! not in the limiter, because config is read below every pipeline.

/// `rateLimit.*` (§6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub enabled: bool,
    pub account_per_minute: u32,
    pub account_burst: u32,
    pub chat_per_minute: u32,
    pub chat_burst: u32,
    /// `0` = no cap (also for the three below).
    pub max_unanswered: u32,
    pub new_chats_per_hour: u32,
    pub new_chats_per_day: u32,
    pub reach_out_per_day: u32,
    pub max_wait_ms: u64,
    pub exempt_allow_from: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            enabled: true,
            account_per_minute: 60,
            account_burst: 5,
            chat_per_minute: 20,
            chat_burst: 5,
            max_unanswered: 5,
            new_chats_per_hour: 15,
            new_chats_per_day: 50,
            reach_out_per_day: 200,
            max_wait_ms: 30_000,
            exempt_allow_from: true,
        }
    }
}
