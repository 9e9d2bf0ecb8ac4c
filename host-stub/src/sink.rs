//! host-stub's durable sink: what `host-stub gateway` does with each delivery. It prints each
//! new routed message as one JSON line, records the message ids and makes them durable (one
//! fsync per delivery, so a batch costs one), and only then lets the plugin's `deliver`
//! return `Ok`. A library module so the pipeline benchmark delivers into this very code.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::delivered::Delivered;

/// A routed message the echo agent should answer.
pub struct Reply {
    pub channel: String,
    pub account_id: String,
    pub to: String,
    pub text: String,
}

/// What the gateway does with delivered events (one-shot commands have none: they start no
/// watcher, and refuse deliveries).
pub struct Sink {
    pub delivered: Mutex<Delivered>,
    pub stdout: Mutex<Box<dyn Write + Send>>,
    /// The echo agent's queue; `None` without `--reply echo` and after shutdown began.
    pub replies: Mutex<Option<Sender<Reply>>>,
}

/// What host-stub reads of a delivered event; the rest is printed as the plugin wrote it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    account_id: Cow<'a, str>,
    #[serde(default, borrow)]
    message_id: Cow<'a, str>,
    #[serde(default, borrow)]
    to: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Cow<'a, str>,
    /// The events of a `batch`.
    #[serde(default, borrow)]
    events: Vec<&'a RawValue>,
}

impl Sink {
    /// A sink printing to `out`, recording delivered ids under `state` (host-stub's own
    /// folder in the state directory), and queueing echo replies on `replies`.
    pub fn new(
        out: Box<dyn Write + Send>,
        state: &std::path::Path,
        replies: Option<Sender<Reply>>,
    ) -> Sink {
        Sink {
            delivered: Mutex::new(Delivered::new(state)),
            stdout: Mutex::new(out),
            replies: Mutex::new(replies),
        }
    }

    /// Takes one delivery: a `message` event, or a `batch` of them (group commit). Every new
    /// message is printed, then the ids are recorded and made durable with one sync per
    /// account, then the plugin is acknowledged. A delivery that cannot be taken is refused
    /// whole: nothing in it is acknowledged, and the plugin delivers it again.
    pub fn take(&self, channel: &str, event: &str) -> Result<Vec<String>, String> {
        let sink = self;
        let head: Head =
            serde_json::from_str(event).map_err(|e| format!("event is not a JSON event: {e}"))?;
        let single;
        let events: &[&RawValue] = match head.kind.as_ref() {
            "batch" => &head.events,
            "message" | "reaction" => {
                single = [serde_json::from_str::<&RawValue>(event).map_err(|e| e.to_string())?];
                &single
            }
            _ => {
                tracing::debug!(channel = %channel, "ignoring a {} event", head.kind);
                return Ok(Vec::new());
            }
        };
        let mut delivered = sink.delivered.lock().map_err(|_| "state lock poisoned")?;
        let mut lines = String::with_capacity(event.len() + events.len() * 32);
        let mut taken: Vec<Head> = Vec::with_capacity(events.len());
        // (account, message id) of `taken`: a batch holds hundreds in a burst.
        let mut in_batch: HashSet<(Cow<str>, Cow<str>)> = HashSet::with_capacity(events.len());
        let prefix = format!("{{\"channel\":{},", Value::from(channel));
        for raw in events {
            let message: Head = serde_json::from_str(raw.get())
                .map_err(|e| format!("message event has an unexpected shape: {e}"))?;
            // Messages and tapbacks are printed; a kind host-stub does not know is skipped.
            if message.kind != "message" && message.kind != "reaction" {
                continue;
            }
            let body = raw
                .get()
                .strip_prefix('{')
                .ok_or("a message event is not a JSON object")?;
            let log = delivered
                .account(channel, &message.account_id)
                .map_err(|e| format!("reading the delivered-id store: {e}"))?;
            // Borrowed from `event` unless escaped: cloning them costs no allocation.
            let ids = (message.account_id.clone(), message.message_id.clone());
            let repeated = log.contains(&message.message_id) || in_batch.contains(&ids);
            if repeated {
                tracing::debug!(message_id = %message.message_id, "repeated messageId acknowledged without printing");
                continue;
            }
            lines.push_str(&prefix);
            if body.trim_start().starts_with('}') {
                lines.pop();
            }
            lines.push_str(body);
            lines.push('\n');
            in_batch.insert(ids);
            taken.push(message);
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        // The lines are printed, then their ids recorded and made durable, then the plugin is
        // acknowledged. No order of "print" and "record" survives a kill between the two (the
        // pipe and the file cannot change together), so this one picks the failure a reader
        // can recover from: a kill in that window prints the lines of this one delivery again
        // after the restart, with the same messageIds; none is ever lost.
        {
            let mut out = sink.stdout.lock().map_err(|_| "stdout lock poisoned")?;
            out.write_all(lines.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| format!("writing stdout: {e}"))?;
        }
        // The lines are out: a failure to record them is logged, not returned, since the
        // plugin would retry the delivery and print them again now.
        let mut accounts: Vec<&str> = taken.iter().map(|t| t.account_id.as_ref()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        for account in accounts {
            let ids = taken
                .iter()
                .filter(|t| t.account_id == account)
                .map(|t| t.message_id.as_ref());
            let recorded = delivered
                .account(channel, account)
                .and_then(|log| log.record_all(ids));
            if let Err(e) = recorded {
                tracing::error!(account, "recording delivered ids failed: {e}; after a crash these messages may be printed again");
            }
        }
        drop(delivered);
        if let Ok(replies) = sink.replies.lock() {
            if let Some(tx) = replies.as_ref() {
                // The echo agent answers messages, never tapbacks.
                for message in taken.iter().filter(|t| t.kind == "message") {
                    let _ = tx.send(Reply {
                        channel: channel.to_string(),
                        account_id: message.account_id.to_string(),
                        to: message.to.to_string(),
                        text: format!("echo: {}", message.text),
                    });
                }
            }
        }
        Ok(taken.iter().map(|t| t.message_id.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// stdout, shared with the test.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn message(account: &str, id: &str) -> Value {
        serde_json::json!({"type": "message", "accountId": account, "messageId": id, "text": "hi"})
    }

    #[test]
    fn a_message_id_is_printed_once_per_account_within_a_batch_and_across_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let out = Out::default();
        let sink = Sink::new(Box::new(out.clone()), dir.path(), None);
        let batch = serde_json::json!({"type": "batch", "events": [
            message("a", "M1"), message("a", "M2"), message("a", "M1"), message("b", "M1"),
        ]});
        let taken = sink.take("imessage", &batch.to_string()).unwrap();
        assert_eq!(taken, ["M1", "M2", "M1"]);
        let printed = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(printed.lines().count(), 3, "{printed}");
        assert!(printed.starts_with(r#"{"channel":"imessage","#));
        // Delivered again (after a crash): acknowledged, not printed.
        let again = sink
            .take("imessage", &message("b", "M1").to_string())
            .unwrap();
        assert!(again.is_empty());
        assert_eq!(
            out.0
                .lock()
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            3
        );
    }
}
