//! Group commit across the ABI (issue 12): the messages the watcher has processed but the
//! host has not yet acknowledged, and how they are handed over.
//!
//! `deliver` returning `Ok` means the host made the events durable, so a host that syncs to
//! disk pays one sync per delivery. When more than one message is ready, a host that lists
//! `deliver.batch` gets them in one `batch` event, bounded by its `maxBatch`; one ready message
//! goes as a plain `message` event, so nothing waits for a batch to fill.
//!
//! Acknowledgement keeps its meaning per message: every message processed since the last
//! delivery, routed or dropped, is held here in stream order and finished in the catch-up
//! state only once the host acknowledged the events before it (or the delivery was given up),
//! because the cursor is "the last finished row" and must never pass an unacknowledged one.

use std::sync::Arc;

use rustc_hash::FxHashSet;
use serde::Serialize;

/// A processed message waiting for the acknowledgement of the delivery it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub key: String,
    pub rowid: i64,
    pub created_ms: Option<i64>,
    /// It was a duplicate of a finished message when processed.
    pub seen: bool,
    /// It was routed (counts as `routed`, or as `delivery_failed` when given up).
    pub routed: bool,
    /// Where a routed message came from (its reply target): marked read once acknowledged.
    pub conversation: Option<String>,
    /// Show typing there once acknowledged (a DM, and the agent's typing mode is `instant`).
    pub early_typing: bool,
}

/// Something to do once the host acknowledged the delivery (a config write, §9.2).
#[derive(Debug, Clone, PartialEq)]
pub struct AfterAck {
    pub to: String,
    pub config_write: serde_json::Value,
}

/// Processed messages held at most before a delivery, whatever the batch bound.
const MAX_PENDING: usize = 1024;

const BATCH_HEAD: &[u8] = br#"{"type":"batch","events":["#;

pub struct Outbox {
    max_events: usize,
    /// `BATCH_HEAD`, then the serialised events separated by commas.
    json: Vec<u8>,
    events: usize,
    pending: Vec<Pending>,
    /// Dedupe keys of `pending`, so a repeat inside one delivery is seen as a duplicate. Fx
    /// hashing, as the catch-up state's: keys are GUIDs imsg assigns, not chosen by a party
    /// that could aim collisions, and at most `MAX_PENDING` are held.
    keys: FxHashSet<String>,
    after_ack: Vec<AfterAck>,
    /// `]}` was appended (by `payload`) and must go before another event.
    closed: bool,
    /// The first event's message id, for log lines.
    first_id: String,
    /// A payload buffer back from an answered delivery, reused by the next [`Self::seal`].
    spare: Vec<u8>,
}

/// What one delivery hands over, taken out of the outbox: the payload and the messages it
/// finishes once answered. Shared with the thread that calls the host, read only.
pub struct Sealed {
    json: Arc<Vec<u8>>,
    /// Where the payload starts in `json` (past the batch head for a lone event).
    start: usize,
    pub events: usize,
    first_id: String,
    pub held: Vec<Pending>,
    pub effects: Vec<AfterAck>,
    keys: FxHashSet<String>,
}

impl Sealed {
    /// A handle on the payload for the delivery thread; see [`Self::text`].
    pub fn payload(&self) -> (Arc<Vec<u8>>, usize) {
        (self.json.clone(), self.start)
    }

    pub fn holds(&self, key: &str) -> bool {
        !self.keys.is_empty() && self.keys.contains(key)
    }

    pub fn describe(&self) -> String {
        describe(&self.first_id, self.events)
    }

    /// The payload buffer for reuse, once no delivery thread holds it any more.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        Arc::try_unwrap(self.json).ok()
    }
}

/// The payload text of `json` from `start` (only serde_json output and ASCII punctuation are
/// in the buffer).
pub fn text(json: &[u8], start: usize) -> &str {
    std::str::from_utf8(json.get(start..).unwrap_or_default()).unwrap_or_default()
}

fn describe(first_id: &str, events: usize) -> String {
    match events {
        1 => first_id.to_string(),
        n => format!("{first_id} and {} more", n.saturating_sub(1)),
    }
}

impl Outbox {
    /// `max_events` 1 is the base contract: one `message` event per delivery.
    pub fn new(max_events: usize) -> Self {
        Outbox {
            max_events: max_events.max(1),
            json: BATCH_HEAD.to_vec(),
            events: 0,
            pending: Vec::new(),
            keys: FxHashSet::default(),
            after_ack: Vec::new(),
            closed: false,
            first_id: String::new(),
            spare: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// No more events fit, or enough dropped messages wait: deliver before processing the
    /// next message (the bound on what a burst of drops holds in memory).
    pub fn is_full(&self) -> bool {
        self.events >= self.max_events || self.pending.len() >= MAX_PENDING
    }

    pub fn holds(&self, key: &str) -> bool {
        !self.keys.is_empty() && self.keys.contains(key)
    }

    /// Adds a routed event; `Err` when it cannot be encoded (the message is then held as a
    /// drop, so the cursor still moves past it).
    pub fn push_event<E: Serialize>(&mut self, event: &E, message_id: &str) -> Result<(), String> {
        if self.closed {
            self.json.truncate(self.json.len() - 2);
            self.closed = false;
        }
        let mark = self.json.len();
        if self.events > 0 {
            self.json.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut self.json, event) {
            self.json.truncate(mark);
            return Err(e.to_string());
        }
        if self.events == 0 {
            self.first_id.clear();
            self.first_id.push_str(message_id);
        }
        self.events += 1;
        Ok(())
    }

    /// Holds a processed message until the delivery before it is acknowledged.
    pub fn push(&mut self, pending: Pending) {
        self.keys.insert(pending.key.clone());
        self.pending.push(pending);
    }

    pub fn after_ack(&mut self, effect: AfterAck) {
        self.after_ack.push(effect);
    }

    /// The JSON to hand to the host: one `message` event, or a `batch` of them.
    pub fn payload(&mut self) -> &str {
        let bytes: &[u8] = if self.events == 1 {
            &self.json[BATCH_HEAD.len()..]
        } else {
            if !self.closed {
                self.json.extend_from_slice(b"]}");
                self.closed = true;
            }
            &self.json
        };
        // Only serde_json output and ASCII punctuation are in the buffer.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// Everything held, with its payload, for one delivery; the outbox is empty after and
    /// fills the next delivery while this one is in flight.
    pub fn seal(&mut self) -> Sealed {
        let start = if self.events == 1 {
            BATCH_HEAD.len()
        } else {
            self.payload();
            0
        };
        let mut json = std::mem::take(&mut self.spare);
        json.clear();
        json.extend_from_slice(BATCH_HEAD);
        std::mem::swap(&mut json, &mut self.json);
        self.closed = false;
        Sealed {
            json: Arc::new(json),
            start,
            events: std::mem::take(&mut self.events),
            first_id: self.first_id.clone(),
            held: std::mem::take(&mut self.pending),
            effects: std::mem::take(&mut self.after_ack),
            keys: std::mem::take(&mut self.keys),
        }
    }

    /// A sealed delivery's payload buffer, to be filled again.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare.capacity() < buffer.capacity() {
            self.spare = buffer;
        }
    }

    /// Everything held, in stream order, and the effects to run; the outbox is empty after.
    pub fn take(&mut self) -> (Vec<Pending>, Vec<AfterAck>) {
        self.json.truncate(BATCH_HEAD.len());
        self.closed = false;
        self.events = 0;
        self.keys.clear();
        (
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.after_ack),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pending(key: &str, rowid: i64, routed: bool) -> Pending {
        Pending {
            key: key.into(),
            rowid,
            created_ms: None,
            seen: false,
            routed,
            conversation: None,
            early_typing: false,
        }
    }

    #[test]
    fn one_event_goes_plain_several_as_a_batch() {
        let mut out = Outbox::new(3);
        out.push_event(&json!({"type": "message", "messageId": "A"}), "A")
            .unwrap();
        out.push(pending("A", 1, true));
        assert_eq!(out.payload(), r#"{"messageId":"A","type":"message"}"#);
        out.push(pending("B", 2, false));
        out.push_event(&json!({"type": "message", "messageId": "C"}), "C")
            .unwrap();
        out.push(pending("C", 3, true));
        let batch: Value = serde_json::from_str(out.payload()).unwrap();
        assert_eq!(batch["type"], "batch");
        assert_eq!(batch["events"][1]["messageId"], "C");
        assert!(!out.is_full());
        assert!(out.holds("B"), "drops are held too, in order");
        assert_eq!(out.seal().describe(), "A and 1 more");
        out.push(pending("A", 1, true));
        out.push(pending("B", 2, false));
        out.push(pending("C", 3, true));
        let (held, _) = out.take();
        let keys: Vec<&str> = held.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["A", "B", "C"]);
        assert!(out.is_empty() && !out.holds("A"));
        // Reused after `take`, with the closing bracket gone.
        out.push_event(&json!({"messageId": "D"}), "D").unwrap();
        out.push_event(&json!({"messageId": "E"}), "E").unwrap();
        let batch: Value = serde_json::from_str(out.payload()).unwrap();
        assert_eq!(batch["events"].as_array().unwrap().len(), 2);
        // Asking twice does not close it twice, and an event ending in `]}` is no closer.
        out.payload();
        out.push_event(&json!({"media": []}), "F").unwrap();
        let batch: Value = serde_json::from_str(out.payload()).unwrap();
        assert_eq!(batch["events"].as_array().unwrap().len(), 3);
        assert_eq!(serde_json::from_str::<Value>(out.payload()).unwrap(), batch);
    }

    #[test]
    fn a_sealed_delivery_leaves_the_outbox_empty_and_keeps_its_keys() {
        let mut out = Outbox::new(3);
        out.push_event(&json!({"messageId": "A"}), "A").unwrap();
        out.push(pending("A", 1, true));
        let one = out.seal();
        let (json, start) = one.payload();
        assert_eq!(text(&json, start), r#"{"messageId":"A"}"#);
        drop(json);
        assert!(out.is_empty() && !out.holds("A") && one.holds("A"));
        assert_eq!((one.events, one.describe()), (1, "A".to_string()));
        out.recycle(one.into_buffer().expect("no thread holds it"));

        out.push(pending("B", 2, false));
        out.push_event(&json!({"messageId": "C"}), "C").unwrap();
        out.push(pending("C", 3, true));
        out.push_event(&json!({"messageId": "D"}), "D").unwrap();
        out.push(pending("D", 4, true));
        let batch = out.seal();
        let (json, start) = batch.payload();
        let v: Value = serde_json::from_str(text(&json, start)).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        let keys: Vec<&str> = batch.held.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["B", "C", "D"]);
        // The reused buffer starts clean.
        out.push_event(&json!({"messageId": "E"}), "E").unwrap();
        let next = out.seal();
        let (json, start) = next.payload();
        assert_eq!(text(&json, start), r#"{"messageId":"E"}"#);
    }

    #[test]
    fn the_base_contract_is_one_event_per_delivery() {
        let mut out = Outbox::new(0);
        out.push_event(&json!({"messageId": "A"}), "A").unwrap();
        assert!(out.is_full());
    }
}
