//! Outbound rate limiting (actions.md §6): token buckets per account and per conversation
//! (a part waits for its slot), and hard caps checked once per request before anything is
//! sent (too many unanswered messages to one conversation, too many new conversations, too
//! much reaching out to silent ones). Apple publishes no limits and throttles or disables
//! accounts that send too fast to too many new chats; no peer channel limits at all.
//!
//! Pure: every method takes the time (`now_ms`), so tests drive the model with their own
//! clock. [`persist`] keeps the counters in the state folder.

pub mod persist;
pub mod slot;

use std::collections::{HashMap, VecDeque};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// A conversation with an inbound row within this is not new.
const KNOWN_FOR_MS: i64 = 30 * DAY_MS;
/// The most conversation scopes kept (about 2,000 conversations of up to four scopes each,
/// far more than a personal account talks with in 30 days). Past it, the least recently
/// active are forgotten first: forgetting one only makes it "new" again and clears its
/// unanswered count, while the bound keeps `ratelimit.json` small whatever arrives.
pub const MAX_SCOPES: usize = 8192;

pub use crate::config::rate_limit::Limits;

/// A continuous token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn full(burst: u32, now_ms: i64) -> Bucket {
        Bucket {
            tokens: burst as f64,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, per_minute: u32, burst: u32, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        self.tokens =
            (self.tokens + elapsed * per_minute as f64 / MINUTE_MS as f64).min(burst as f64);
        self.at_ms = now_ms;
    }

    /// Milliseconds until one token is there (0 when it is).
    fn wait_ms(&self, per_minute: u32) -> u64 {
        if self.tokens >= 1.0 {
            return 0;
        }
        ((1.0 - self.tokens) * MINUTE_MS as f64 / per_minute as f64).ceil() as u64
    }
}

/// What is kept of one conversation (persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    pub last_inbound_ms: Option<i64>,
    pub last_outbound_ms: Option<i64>,
    pub unanswered: u32,
}

/// The counters that outlive a process (§6.2 `ratelimit.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub conversations: HashMap<String, Conversation>,
    /// When a new conversation was first written to.
    pub new_chats: VecDeque<i64>,
    /// Requests to conversations silent for more than a day.
    pub reach_out: VecDeque<i64>,
}

impl Counters {
    pub fn prune(&mut self, now_ms: i64) {
        self.conversations.retain(|_, c| {
            let last = c.last_inbound_ms.max(c.last_outbound_ms).unwrap_or(0);
            now_ms - last <= KNOWN_FOR_MS
        });
        self.cap();
        while self.new_chats.front().is_some_and(|t| now_ms - t > DAY_MS) {
            self.new_chats.pop_front();
        }
        while self.reach_out.front().is_some_and(|t| now_ms - t > DAY_MS) {
            self.reach_out.pop_front();
        }
    }

    /// Keeps at most [`MAX_SCOPES`] conversations, forgetting the least recently active.
    /// It trims an eighth below the bound, so the sort runs once per many new scopes rather
    /// than on every one.
    pub fn cap(&mut self) {
        if self.conversations.len() <= MAX_SCOPES {
            return;
        }
        let keep = MAX_SCOPES - MAX_SCOPES / 8;
        let recent = |c: &Conversation| c.last_inbound_ms.max(c.last_outbound_ms);
        let mut by_recency: Vec<(Option<i64>, &String)> = self
            .conversations
            .iter()
            .map(|(key, c)| (recent(c), key))
            .collect();
        by_recency.sort_unstable_by(|a, b| b.cmp(a));
        let forget: Vec<String> = by_recency
            .into_iter()
            .skip(keep)
            .map(|(_, key)| key.clone())
            .collect();
        for key in forget {
            self.conversations.remove(&key);
        }
    }

    /// Another process's counters folded in: per conversation the most recent activity
    /// wins; the windows are united.
    pub fn merge(&mut self, other: Counters) {
        for (key, theirs) in other.conversations {
            let recent = |c: &Conversation| c.last_inbound_ms.max(c.last_outbound_ms);
            match self.conversations.get(&key) {
                Some(ours) if recent(ours) >= recent(&theirs) => {}
                _ => {
                    self.conversations.insert(key, theirs);
                }
            }
        }
        let union = |a: &mut VecDeque<i64>, b: VecDeque<i64>| {
            let mut all: Vec<i64> = a.drain(..).chain(b).collect();
            all.sort_unstable();
            all.dedup();
            *a = all.into();
        };
        union(&mut self.new_chats, other.new_chats);
        union(&mut self.reach_out, other.reach_out);
    }
}

/// Why a request or part was held back, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `rate limited: <reason>`.
    pub error: String,
    pub retry_after_ms: Option<u64>,
}

fn refusal(reason: impl std::fmt::Display, retry_after_ms: Option<u64>) -> Refusal {
    Refusal {
        error: format!("rate limited: {reason}"),
        retry_after_ms,
    }
}

/// One account's limiter.
#[derive(Debug, Clone)]
pub struct Limiter {
    pub limits: Limits,
    account: Option<Bucket>,
    chats: HashMap<String, Bucket>,
    pub counters: Counters,
    /// Parts held back since start (status).
    pub limited_parts: u64,
    /// Counters changed since the last save.
    pub dirty: bool,
    /// When a hold was last logged, per conversation (one warning an hour).
    warned: HashMap<String, i64>,
    /// The chat whose inbound row was last noted, and when: more rows from it within a second
    /// change nothing worth the lookups (a send in between clears it).
    last_noted: Option<(i64, i64)>,
}

impl Limiter {
    pub fn new(limits: Limits, counters: Counters) -> Limiter {
        Limiter {
            limits,
            account: None,
            chats: HashMap::new(),
            counters,
            limited_parts: 0,
            dirty: false,
            warned: HashMap::new(),
            last_noted: None,
        }
    }

    /// New limits on reload: the buckets keep their level, clamped to the new burst.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        if let Some(b) = &mut self.account {
            b.tokens = b.tokens.min(limits.account_burst as f64);
        }
        for b in self.chats.values_mut() {
            b.tokens = b.tokens.min(limits.chat_burst as f64);
        }
    }

    /// Whether a row from `chat_id` now would change nothing: the chat was noted less than a
    /// second ago and nothing was sent since. Otherwise, when `remember`, it is remembered as
    /// noted now (only an admitted row may be: one that added nothing must not hide the next).
    pub fn noted_recently(&mut self, chat_id: i64, now_ms: i64, remember: bool) -> bool {
        if self
            .last_noted
            .is_some_and(|(c, t)| c == chat_id && now_ms - t < 1000)
        {
            return true;
        }
        if remember {
            self.last_noted = Some((chat_id, now_ms));
        }
        false
    }

    /// An inbound row in these conversations: someone answered. Only a row from an admitted
    /// sender adds a conversation; any other row updates the ones already kept (those the bot
    /// wrote to or an admitted sender wrote in), so strangers cannot grow the counters.
    pub fn note_inbound<'a>(
        &mut self,
        scopes: impl IntoIterator<Item = &'a str>,
        admitted: bool,
        now_ms: i64,
    ) {
        for scope in scopes {
            // Most rows come from known conversations: no allocation for those.
            match self.counters.conversations.get_mut(scope) {
                Some(c) => {
                    c.last_inbound_ms = Some(now_ms);
                    c.unanswered = 0;
                    self.dirty = true;
                }
                None if admitted => {
                    let c = Conversation {
                        last_inbound_ms: Some(now_ms),
                        ..Conversation::default()
                    };
                    self.counters.conversations.insert(scope.to_string(), c);
                    self.dirty = true;
                }
                None => {}
            }
        }
        self.counters.cap();
    }

    fn is_new(&self, scope: &str, now_ms: i64) -> bool {
        self.counters
            .conversations
            .get(scope)
            .and_then(|c| c.last_inbound_ms)
            .is_none_or(|t| now_ms - t > KNOWN_FOR_MS)
    }

    /// Written to within the new-conversation windows already: counted once, when first.
    fn counted_as_new(&self, scope: &str, now_ms: i64) -> bool {
        self.counters
            .conversations
            .get(scope)
            .and_then(|c| c.last_outbound_ms)
            .is_some_and(|t| now_ms - t <= DAY_MS)
    }

    /// The hard caps (§6.2), once per request before any part: `exempt` for the owner's
    /// DMs and plugin-generated replies.
    pub fn check_caps(&mut self, scope: &str, exempt: bool, now_ms: i64) -> Result<(), Refusal> {
        let l = self.limits;
        if !l.enabled || exempt {
            return Ok(());
        }
        self.counters.prune(now_ms);
        let conv = self
            .counters
            .conversations
            .get(scope)
            .cloned()
            .unwrap_or_default();
        if l.max_unanswered > 0 && conv.unanswered >= l.max_unanswered {
            return Err(refusal(
                format!(
                    "{} messages sent to this conversation without a reply (rateLimit.maxUnanswered)",
                    conv.unanswered
                ),
                None,
            ));
        }
        if self.is_new(scope, now_ms) && !self.counted_as_new(scope, now_ms) {
            let within = |window: i64| -> Vec<i64> {
                self.counters
                    .new_chats
                    .iter()
                    .copied()
                    .filter(|t| now_ms - t < window)
                    .collect()
            };
            for (cap, window, key) in [
                (l.new_chats_per_hour, HOUR_MS, "newChatsPerHour"),
                (l.new_chats_per_day, DAY_MS, "newChatsPerDay"),
            ] {
                let times = within(window);
                if cap > 0 && times.len() >= cap as usize {
                    let oldest = times.iter().min().copied().unwrap_or(now_ms);
                    return Err(refusal(
                        format!("new-conversation limit reached (rateLimit.{key})"),
                        Some((oldest + window - now_ms).max(1) as u64),
                    ));
                }
            }
        }
        let silent = conv.last_inbound_ms.is_none_or(|t| now_ms - t > DAY_MS);
        if silent && l.reach_out_per_day > 0 {
            let times: Vec<i64> = self
                .counters
                .reach_out
                .iter()
                .copied()
                .filter(|t| now_ms - t < DAY_MS)
                .collect();
            if times.len() >= l.reach_out_per_day as usize {
                let oldest = times.iter().min().copied().unwrap_or(now_ms);
                return Err(refusal(
                    "reach-out limit reached (rateLimit.reachOutPerDay)",
                    Some((oldest + DAY_MS - now_ms).max(1) as u64),
                ));
            }
        }
        Ok(())
    }

    /// Takes one token from the account's and the conversation's bucket together, or says
    /// how long until both hold one.
    pub fn take(&mut self, scope: &str, now_ms: i64) -> Result<(), u64> {
        let l = self.limits;
        if !l.enabled {
            return Ok(());
        }
        let account = self
            .account
            .get_or_insert_with(|| Bucket::full(l.account_burst, now_ms));
        account.refill(l.account_per_minute, l.account_burst, now_ms);
        let chat = self
            .chats
            .entry(scope.to_string())
            .or_insert_with(|| Bucket::full(l.chat_burst, now_ms));
        chat.refill(l.chat_per_minute, l.chat_burst, now_ms);
        let wait = account
            .wait_ms(l.account_per_minute)
            .max(chat.wait_ms(l.chat_per_minute));
        if wait > 0 {
            return Err(wait);
        }
        account.tokens -= 1.0;
        chat.tokens -= 1.0;
        if self.chats.len() > 4096 {
            // Full buckets carry no information.
            let (burst, now) = (l.chat_burst as f64, now_ms);
            self.chats.retain(|_, b| {
                b.tokens + (now - b.at_ms) as f64 * l.chat_per_minute as f64 / 60_000.0 < burst
            });
        }
        Ok(())
    }

    /// After a request that sent at least one part (`sent` or `unknown`): counts it once.
    /// Exempt requests count too (Apple sees every send); exemption only skips the check.
    pub fn record_request(&mut self, scope: &str, now_ms: i64) {
        if !self.limits.enabled {
            return;
        }
        self.last_noted = None;
        let new = self.is_new(scope, now_ms) && !self.counted_as_new(scope, now_ms);
        let conv = self
            .counters
            .conversations
            .entry(scope.to_string())
            .or_default();
        let silent = conv.last_inbound_ms.is_none_or(|t| now_ms - t > DAY_MS);
        conv.last_outbound_ms = Some(now_ms);
        conv.unanswered += 1;
        if new {
            self.counters.new_chats.push_back(now_ms);
        }
        if silent {
            self.counters.reach_out.push_back(now_ms);
        }
        self.counters.cap();
        self.dirty = true;
    }

    /// Whether a hold on `scope` should be logged now (once per conversation per hour).
    pub fn should_warn(&mut self, scope: &str, now_ms: i64) -> bool {
        if self.warned.get(scope).is_some_and(|t| now_ms - t < HOUR_MS) {
            return false;
        }
        self.warned.retain(|_, t| now_ms - *t < HOUR_MS);
        self.warned.insert(scope.to_string(), now_ms);
        true
    }

    /// The wait refusal of §6.3.
    pub fn waited(&mut self, waited_ms: u64, retry_after_ms: u64) -> Refusal {
        refusal(
            format!("waited {waited_ms} ms for a send slot"),
            Some(retry_after_ms.max(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Limiter {
        Limiter::new(Limits::default(), Counters::default())
    }

    /// Sends `parts` parts to `scope` as fast as the buckets allow, from `t0`; returns when
    /// each went.
    fn schedule(l: &mut Limiter, scope: &str, parts: usize, t0: i64) -> Vec<i64> {
        let mut now = t0;
        let mut at = Vec::new();
        for _ in 0..parts {
            loop {
                match l.take(scope, now) {
                    Ok(()) => break,
                    Err(wait) => now += wait as i64,
                }
            }
            at.push(now - t0);
        }
        at
    }

    #[test]
    fn seven_chunks_five_at_once_then_one_every_three_seconds_case_207() {
        let mut l = limiter();
        assert_eq!(
            schedule(&mut l, "chat:42", 7, 1_000_000),
            vec![0, 0, 0, 0, 0, 3000, 6000]
        );
    }

    #[test]
    fn the_sixth_unanswered_request_is_refused_until_an_inbound_row_case_208() {
        let mut l = limiter();
        let t = 1_000_000;
        for _ in 0..5 {
            l.check_caps("chat:42", false, t).unwrap();
            l.record_request("chat:42", t);
        }
        let refused = l.check_caps("chat:42", false, t).unwrap_err();
        assert_eq!(
            refused.error,
            "rate limited: 5 messages sent to this conversation without a reply (rateLimit.maxUnanswered)"
        );
        assert_eq!(
            refused.retry_after_ms, None,
            "only an inbound row clears it"
        );
        l.note_inbound(["chat:42", "handle:+15550003333"], true, t + 1);
        assert!(l.check_caps("chat:42", false, t + 2).is_ok());
        // The owner's DMs are exempt (case 211).
        for _ in 0..10 {
            l.record_request("handle:+15550001111", t);
        }
        assert!(l.check_caps("handle:+15550001111", true, t).is_ok());
    }

    #[test]
    fn sixteen_new_conversations_in_an_hour_case_209() {
        let mut l = limiter();
        let t = 10 * DAY_MS;
        for i in 0..15 {
            let scope = format!("handle:+1555000{i:04}");
            l.check_caps(&scope, false, t + i * 1000).unwrap();
            l.record_request(&scope, t + i * 1000);
        }
        let refused = l
            .check_caps("handle:+15559999999", false, t + 20_000)
            .unwrap_err();
        assert_eq!(
            refused.error,
            "rate limited: new-conversation limit reached (rateLimit.newChatsPerHour)"
        );
        assert_eq!(refused.retry_after_ms, Some((HOUR_MS - 20_000) as u64));
        // A conversation that answered recently is not new: replies still go out.
        l.note_inbound(["handle:+15550001111"], true, t);
        assert!(l
            .check_caps("handle:+15550001111", false, t + 20_000)
            .is_ok());
        // A second message to one of the fifteen is not a new conversation either.
        assert!(l
            .check_caps("handle:+15550000003", false, t + 20_000)
            .is_ok());
        // An hour later the oldest has left the window.
        assert!(l
            .check_caps("handle:+15559999999", false, t + HOUR_MS + 1)
            .is_ok());
    }

    #[test]
    fn accounts_bucket_spaces_ten_chats_case_210() {
        let mut l = Limiter::new(
            Limits {
                account_per_minute: 60,
                account_burst: 5,
                ..Limits::default()
            },
            Counters::default(),
        );
        let t0 = 5_000_000;
        let mut now = t0;
        let mut at = Vec::new();
        for i in 0..10 {
            let scope = format!("chat:{i}");
            loop {
                match l.take(&scope, now) {
                    Ok(()) => break,
                    Err(w) => now += w as i64,
                }
            }
            at.push(now - t0);
        }
        assert_eq!(&at[..5], &[0, 0, 0, 0, 0]);
        for pair in at[5..].windows(2) {
            assert!(pair[1] - pair[0] >= 1000, "{at:?}");
        }
    }

    #[test]
    fn reach_out_and_disabled() {
        let mut l = Limiter::new(
            Limits {
                reach_out_per_day: 2,
                max_unanswered: 0,
                new_chats_per_hour: 0,
                new_chats_per_day: 0,
                ..Limits::default()
            },
            Counters::default(),
        );
        let t = 100 * DAY_MS;
        for s in ["chat:1", "chat:2"] {
            l.check_caps(s, false, t).unwrap();
            l.record_request(s, t);
        }
        assert_eq!(
            l.check_caps("chat:3", false, t + 1).unwrap_err().error,
            "rate limited: reach-out limit reached (rateLimit.reachOutPerDay)"
        );
        l.limits.enabled = false;
        assert!(l.check_caps("chat:3", false, t + 1).is_ok());
        assert!(l.take("chat:3", t).is_ok());
    }

    #[test]
    fn a_refused_strangers_row_adds_no_conversation_issue_21() {
        let mut l = limiter();
        let t = 1_000_000;
        l.note_inbound(["chat:8", "handle:+15550002222"], false, t);
        assert!(l.counters.conversations.is_empty());
        assert!(!l.dirty, "nothing to save");
        // A conversation the bot wrote to still learns that the stranger answered.
        l.record_request("chat:8", t);
        l.dirty = false;
        l.note_inbound(["chat:8", "handle:+15550002222"], false, t + 1);
        let keys: Vec<&String> = l.counters.conversations.keys().collect();
        assert_eq!(keys, ["chat:8"]);
        assert_eq!(l.counters.conversations["chat:8"].unanswered, 0);
        assert!(l.dirty);
        // An admitted sender's row is recorded in full.
        l.note_inbound(["chat:7", "handle:+15550001111"], true, t + 2);
        assert_eq!(l.counters.conversations.len(), 3);
    }

    #[test]
    fn a_refused_row_does_not_hide_the_next_admitted_row_of_its_chat() {
        let mut l = limiter();
        assert!(!l.noted_recently(42, 1000, false));
        assert!(
            !l.noted_recently(42, 1001, true),
            "the refused row was not remembered"
        );
        assert!(l.noted_recently(42, 1002, true));
    }

    #[test]
    fn the_conversations_are_capped_least_recent_first() {
        let mut l = limiter();
        let t = 10 * DAY_MS;
        for i in 0..=MAX_SCOPES as i64 {
            l.note_inbound([format!("chat:{i}").as_str()], true, t + i);
        }
        let kept = &l.counters.conversations;
        assert!(kept.len() <= MAX_SCOPES, "{}", kept.len());
        assert!(
            kept.contains_key(&format!("chat:{MAX_SCOPES}")),
            "newest kept"
        );
        assert!(!kept.contains_key("chat:0"), "oldest forgotten");
        // Whatever another process wrote, the merged counters obey the same bound.
        let mut theirs = Counters::default();
        for i in 0..2 * MAX_SCOPES as i64 {
            theirs.conversations.insert(
                format!("guid:{i}"),
                Conversation {
                    last_outbound_ms: Some(t + MAX_SCOPES as i64 + i),
                    ..Conversation::default()
                },
            );
        }
        l.counters.merge(theirs);
        l.counters.prune(t + 3 * MAX_SCOPES as i64);
        assert!(l.counters.conversations.len() <= MAX_SCOPES);
        let last = format!("guid:{}", 2 * MAX_SCOPES - 1);
        assert!(l.counters.conversations.contains_key(&last));
    }

    #[test]
    fn counters_merge_by_recency_and_prune() {
        let mut a = Counters::default();
        a.conversations.insert(
            "chat:1".into(),
            Conversation {
                last_inbound_ms: Some(10),
                last_outbound_ms: None,
                unanswered: 0,
            },
        );
        let mut b = Counters::default();
        b.conversations.insert(
            "chat:1".into(),
            Conversation {
                last_inbound_ms: Some(10),
                last_outbound_ms: Some(20),
                unanswered: 1,
            },
        );
        b.new_chats.push_back(5);
        b.reach_out.push_back(7);
        a.merge(b);
        assert_eq!(a.conversations["chat:1"].unanswered, 1);
        assert_eq!(a.new_chats.len(), 1);
        a.prune(40 * DAY_MS);
        assert!(a.conversations.is_empty() && a.new_chats.is_empty() && a.reach_out.is_empty());
    }
}
