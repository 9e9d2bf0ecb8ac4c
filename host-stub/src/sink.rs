//! host-stub's durable sink: what `host-stub gateway` does with each delivery. It prints each
//! new routed message as one JSON line, records the message ids and makes them durable (one
//! fsync per delivery, so a batch costs one), and only then lets the plugin's `deliver`
//! return `Ok`. A library module so the pipeline benchmark delivers into this very code.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use serde_json::Value;

use crate::delivered::{Delivered, FastHash};
use crate::scan::Cursor;

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

/// What host-stub reads of one delivered event; the rest is printed as the plugin wrote it.
#[derive(Default)]
struct Head<'a> {
    kind: Cow<'a, str>,
    account_id: Cow<'a, str>,
    message_id: Cow<'a, str>,
    to: Cow<'a, str>,
    text: Cow<'a, str>,
}

/// A delivery read in one pass (see [`crate::scan`]): its type, and for a `message`, a
/// `reaction` or each event of a `batch`, the event's text with what host-stub reads of it.
struct Delivery<'a> {
    kind: Cow<'a, str>,
    events: Vec<(&'a str, Head<'a>)>,
}

impl<'a> Delivery<'a> {
    fn read(text: &'a str) -> Result<Delivery<'a>, String> {
        let mut cursor = Cursor::new(text);
        let start = cursor.ws();
        let mut events = Vec::new();
        let top = Head::read(&mut cursor, Some(&mut events))?;
        cursor.end()?;
        if top.kind != "batch" {
            events = vec![(cursor.since(start).trim_end(), top)];
            let kind = events[0].1.kind.clone();
            return Ok(Delivery { kind, events });
        }
        Ok(Delivery {
            kind: top.kind,
            events,
        })
    }
}

impl<'a> Head<'a> {
    /// The object at the cursor. The fields host-stub reads must be strings when present, and
    /// appear once; `type` must be present. With `batch`, the items of an `events` array are
    /// read as events into it.
    fn read(
        cursor: &mut Cursor<'a>,
        mut batch: Option<&mut Vec<(&'a str, Head<'a>)>>,
    ) -> Result<Head<'a>, String> {
        let mut head = Head::default();
        let mut seen = [false; 6];
        cursor.object(|cursor, key| {
            let (slot, at) = match key.as_ref() {
                "type" => (&mut head.kind, 0),
                "accountId" => (&mut head.account_id, 1),
                "messageId" => (&mut head.message_id, 2),
                "to" => (&mut head.to, 3),
                "text" => (&mut head.text, 4),
                // A batch's events (its `type` comes first as plugins write it; a later one
                // is checked by the caller).
                "events" if batch.is_some() && (!seen[0] || head.kind == "batch") => {
                    if std::mem::replace(&mut seen[5], true) {
                        return Err(format!("duplicate field `{key}`"));
                    }
                    return match batch.as_deref_mut() {
                        Some(events) => read_events(cursor, events),
                        None => cursor.skip(),
                    };
                }
                _ => return cursor.skip(),
            };
            if std::mem::replace(&mut seen[at], true) {
                return Err(format!("duplicate field `{key}`"));
            }
            *slot = cursor
                .string()
                .map_err(|e| format!("field `{key}` is not a string: {e}"))?;
            Ok(())
        })?;
        if !seen[0] {
            return Err("missing field `type`".into());
        }
        Ok(head)
    }
}

/// The items of a batch's `events` array.
fn read_events<'a>(
    cursor: &mut Cursor<'a>,
    events: &mut Vec<(&'a str, Head<'a>)>,
) -> Result<(), String> {
    cursor.array(|cursor| {
        let start = cursor.ws();
        let head = Head::read(cursor, None)
            .map_err(|e| format!("message event has an unexpected shape: {e}"))?;
        events.push((cursor.since(start), head));
        Ok(())
    })
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
        let delivery =
            Delivery::read(event).map_err(|e| format!("event is not a JSON event: {e}"))?;
        if !matches!(delivery.kind.as_ref(), "batch" | "message" | "reaction") {
            tracing::debug!(channel = %channel, "ignoring a {} event", delivery.kind);
            return Ok(Vec::new());
        }
        let mut delivered = self.delivered.lock().map_err(|_| "state lock poisoned")?;
        let prefix = format!("{{\"channel\":{},", Value::from(channel));
        let (lines, taken) = new_lines(&mut delivered, channel, &prefix, delivery.events)?;
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        // The lines are printed, then their ids recorded and made durable, then the plugin is
        // acknowledged. No order of "print" and "record" survives a kill between the two (the
        // pipe and the file cannot change together), so this one picks the failure a reader
        // can recover from: a kill in that window prints the lines of this one delivery again
        // after the restart, with the same messageIds; none is ever lost.
        {
            let mut out = self.stdout.lock().map_err(|_| "stdout lock poisoned")?;
            out.write_all(lines.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| format!("writing stdout: {e}"))?;
        }
        // The lines are out: a failure to record them is logged, not returned, since the
        // plugin would retry the delivery and print them again now.
        record(&mut delivered, channel, &taken);
        drop(delivered);
        self.queue_replies(channel, &taken);
        Ok(taken.iter().map(|t| t.message_id.to_string()).collect())
    }

    fn queue_replies(&self, channel: &str, taken: &[Head]) {
        let Ok(replies) = self.replies.lock() else {
            return;
        };
        let Some(tx) = replies.as_ref() else { return };
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

/// The lines to print for `events` (each prefixed with the channel) and the heads of the
/// events they print: messages and tapbacks whose id this account has not printed before,
/// in this delivery or an earlier one. A kind host-stub does not know is skipped.
fn new_lines<'a>(
    delivered: &mut Delivered,
    channel: &str,
    prefix: &str,
    events: Vec<(&'a str, Head<'a>)>,
) -> Result<(String, Vec<Head<'a>>), String> {
    let size = events.iter().map(|(e, _)| e.len() + prefix.len() + 1).sum();
    let mut lines = String::with_capacity(size);
    let mut taken: Vec<Head> = Vec::with_capacity(events.len());
    // (account, message id) of `taken`: a batch holds hundreds in a burst.
    let mut in_batch: HashSet<(Cow<str>, Cow<str>), FastHash> =
        HashSet::with_capacity_and_hasher(events.len(), FastHash);
    for (event, message) in events {
        if message.kind != "message" && message.kind != "reaction" {
            continue;
        }
        let body = event
            .strip_prefix('{')
            .ok_or("a message event is not a JSON object")?;
        let log = delivered
            .account(channel, &message.account_id)
            .map_err(|e| format!("reading the delivered-id store: {e}"))?;
        // Borrowed from `event` unless escaped: cloning them costs no allocation.
        let ids = (message.account_id.clone(), message.message_id.clone());
        if log.contains(&message.message_id) || in_batch.contains(&ids) {
            tracing::debug!(message_id = %message.message_id, "repeated messageId acknowledged without printing");
            continue;
        }
        lines.push_str(prefix);
        if body.trim_start().starts_with('}') {
            lines.pop();
        }
        lines.push_str(body);
        lines.push('\n');
        in_batch.insert(ids);
        taken.push(message);
    }
    Ok((lines, taken))
}

/// Records the ids of `taken` and makes them durable: one write and one sync per account.
fn record(delivered: &mut Delivered, channel: &str, taken: &[Head]) {
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

    #[test]
    fn an_event_is_printed_as_written_and_a_field_of_the_wrong_type_refuses_the_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let out = Out::default();
        let sink = Sink::new(Box::new(out.clone()), dir.path(), None);
        // Whitespace, escapes and nested values as a plugin may write them: printed verbatim,
        // the escaped id decoded for the delivered-id log.
        let event = r#" { "type" : "message", "accountId":"a", "media":[{"to":"x"}], "messageId":"M\u0031", "text":"say \"hi\"" }"#;
        let batch = format!(r#"{{"type":"batch","events":[{event}, {{"type":"typing","x":1}}]}}"#);
        assert_eq!(sink.take("imessage", &batch).unwrap(), ["M1"]);
        let printed = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let body = event.trim_start().strip_prefix('{').unwrap();
        assert_eq!(printed, format!("{{\"channel\":\"imessage\",{body}\n"));
        assert!(sink
            .take("imessage", &message("a", "M1").to_string())
            .unwrap()
            .is_empty());
        for bad in [
            r#"{"type":"message","accountId":"a","messageId":7}"#,
            r#"{"type":"message","accountId":"a","messageId":"M2","messageId":"M3"}"#,
            r#"{"type":"batch","events":[{"accountId":"a","messageId":"M4"}]}"#,
            r#"{"type":"batch","events":["M5"]}"#,
            r#"{"type":"message","messageId":"M6""#,
        ] {
            assert!(sink.take("imessage", bad).is_err(), "{bad}");
        }
        assert_eq!(
            printed.len(),
            out.0.lock().unwrap().len(),
            "nothing more printed"
        );
    }
}
