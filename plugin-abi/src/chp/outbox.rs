//! Plugin → host: the queue the host pulls from, and the plugin's own requests (`deliver`,
//! `host.request`) waiting for the host's responses.
//!
//! A plugin request blocks the plugin's callback until the host answers or `ackTimeoutMs`
//! passes (then it counts as refused, and a late answer finds no waiter and is ignored). Logs
//! are bounded separately: a host that does not drain loses the oldest ones, and the next
//! record it gets says how many (`params.dropped`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::rpc::RpcError;
use super::wakeup::Wakeup;
use crate::types::{LogRecord, PluginError};

/// The host's answer to one plugin request: its `result` (JSON text) or its `error`.
pub(crate) type Reply = Result<String, RpcError>;

#[derive(Default)]
struct Slot {
    reply: Mutex<Option<Reply>>,
    answered: Condvar,
}

struct Entry {
    is_log: bool,
    text: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    logs_queued: usize,
    dropped_logs: u64,
    next_id: u64,
    pending: HashMap<u64, Arc<Slot>>,
    /// `stop` began: plugin requests are refused at once (the host may be gone).
    refusing: bool,
    /// `plugin.closed` is queued: nothing else is.
    closed: bool,
    /// `plugin.closed` was taken: every pull returns nothing at once.
    finished: bool,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    ready: Condvar,
    wakeup: Option<Wakeup>,
    max_logs: usize,
    ack_timeout: Duration,
}

pub(crate) const CLOSED: &str = r#"{"jsonrpc":"2.0","method":"plugin.closed"}"#;

impl Outbox {
    pub(crate) fn new(max_logs: usize, ack_timeout: Duration) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            wakeup: Wakeup::new(),
            max_logs: max_logs.max(1),
            ack_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wakeup_fd(&self) -> i32 {
        self.wakeup.as_ref().map_or(-1, Wakeup::read_fd)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    fn push_locked(&self, state: &mut State, entry: Entry) {
        if state.closed {
            return;
        }
        if entry.is_log {
            state.logs_queued += 1;
        }
        state.queue.push_back(entry);
        if state.queue.len() == 1 {
            if let Some(w) = &self.wakeup {
                w.signal();
            }
        }
        self.ready.notify_one();
    }

    /// Queues one message (a response or a notification) for the host.
    pub(crate) fn push(&self, text: String) {
        let mut state = self.lock();
        self.push_locked(
            &mut state,
            Entry {
                is_log: false,
                text,
            },
        );
    }

    /// Queues a `log` notification; drops the oldest queued log when the bound is reached.
    pub(crate) fn push_log(&self, record: &str) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.logs_queued >= self.max_logs {
            if let Some(at) = state.queue.iter().position(|e| e.is_log) {
                state.queue.remove(at);
                state.logs_queued -= 1;
                state.dropped_logs += 1;
            }
        }
        let text = log_message(record, state.dropped_logs);
        state.dropped_logs = 0;
        self.push_locked(&mut state, Entry { is_log: true, text });
    }

    /// The plugin's own warning about the conversation (a response nobody asked for, …).
    pub(crate) fn warn(&self, message: String) {
        let record = LogRecord {
            level: "warn".into(),
            target: "chp".into(),
            message,
            fields: Default::default(),
        };
        if let Ok(text) = serde_json::to_string(&record) {
            self.push_log(&text);
        }
    }

    /// The next message, waiting up to `timeout` (`None`: until one comes).
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Option<String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.lock();
        loop {
            if state.finished {
                return None;
            }
            if let Some(entry) = state.queue.pop_front() {
                if entry.is_log {
                    state.logs_queued -= 1;
                }
                if state.closed && state.queue.is_empty() {
                    state.finished = true;
                }
                if let Some(w) = &self.wakeup {
                    // Re-signal while more wait, so a host that read the byte and stopped
                    // draining early still wakes up again.
                    if state.queue.is_empty() {
                        w.drain();
                    } else {
                        w.signal();
                    }
                }
                return Some(entry.text);
            }
            state = match deadline {
                None => self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Sends a plugin → host request and waits for the answer. Refused at once after `stop`
    /// began; refused after `ackTimeoutMs` without an answer.
    pub(crate) fn request(&self, method: &str, params: &RawValue) -> Reply {
        let slot = Arc::new(Slot::default());
        let id = {
            let mut state = self.lock();
            if state.refusing {
                return Err(RpcError::stopping());
            }
            state.next_id += 1;
            let id = state.next_id;
            state.pending.insert(id, slot.clone());
            let text = super::rpc::request_text(id, method, params);
            self.push_locked(
                &mut state,
                Entry {
                    is_log: false,
                    text,
                },
            );
            id
        };
        let deadline = Instant::now() + self.ack_timeout;
        let mut reply = slot.reply.lock().unwrap_or_else(|p| p.into_inner());
        while reply.is_none() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            reply = slot
                .answered
                .wait_timeout(reply, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(answer) = reply.take() {
            return answer;
        }
        drop(reply);
        self.lock().pending.remove(&id);
        // An answer that raced the removal still counts.
        let late = slot.reply.lock().unwrap_or_else(|p| p.into_inner()).take();
        late.unwrap_or_else(|| Err(RpcError::timeout(method, self.ack_timeout)))
    }

    /// Hands the host's response to the waiting request; `false` when no request has this id
    /// (never asked, already answered, or timed out).
    pub(crate) fn resolve(&self, id: &Value, reply: Reply) -> bool {
        let Some(slot) = id.as_u64().and_then(|id| self.lock().pending.remove(&id)) else {
            return false;
        };
        *slot.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(reply);
        slot.answered.notify_one();
        true
    }

    /// `stop` began: every waiting and future plugin request is refused (the plugin delivers
    /// those events again after its next start).
    pub(crate) fn refuse_requests(&self) {
        let pending: Vec<Arc<Slot>> = {
            let mut state = self.lock();
            state.refusing = true;
            state.pending.drain().map(|(_, slot)| slot).collect()
        };
        for slot in pending {
            *slot.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(RpcError::stopping()));
            slot.answered.notify_one();
        }
    }

    /// Queues `plugin.closed`, the last message.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        self.push_locked(
            &mut state,
            Entry {
                is_log: false,
                text: CLOSED.to_string(),
            },
        );
        state.closed = true;
    }
}

/// A `log` notification; `dropped` > 0 adds how many records were dropped before it.
fn log_message(record: &str, dropped: u64) -> String {
    let mut params: Value = serde_json::from_str(record).unwrap_or_else(
        |_| json!({"level": "warn", "target": "chp", "message": "unreadable log record"}),
    );
    if dropped > 0 {
        if let Some(map) = params.as_object_mut() {
            map.insert("dropped".into(), json!(dropped));
        }
    }
    json!({"jsonrpc": "2.0", "method": "log", "params": params}).to_string()
}

/// The host's JSON-RPC error as the plugin's error value: its `data` when that is a
/// `PluginError`, else one built from its code and message.
pub(crate) fn host_error(error: &RpcError) -> PluginError {
    if let Some(e) = error
        .data
        .as_ref()
        .and_then(|d| serde_json::from_value::<PluginError>(d.clone()).ok())
    {
        return e;
    }
    let code = match error.code {
        -32601 => "unknown_method",
        super::rpc::STOPPING => "stopping",
        super::rpc::TIMEOUT => "timeout",
        _ => "refused",
    };
    PluginError::new(code, error.message.clone())
}
