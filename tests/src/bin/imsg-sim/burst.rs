//! Burst mode, for the whole-process benchmark (issue 12): right after `watch.subscribe` is
//! answered, write N `message` notifications to stdout as fast as the pipe takes them, or at a
//! fixed rate, and note when the first byte went out. `imsg-sim burst N [STARTED]` writes the
//! same lines to stdout without any protocol around them, for the benchmark's bare loop.
//!
//! Scenario: `"burst": {"messages": N, "rate": R, "started": "/path", "chat_id": 7,
//! "sender": "+15550001111", "sends": "/path"}`. With `rate`, each text carries its send time
//! (`t=<unix ns>`) so the reader can measure latency per message; with `sends`, every `send`
//! request is noted with its arrival time (the echo agent's answer, for round-trip latency).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::db::iso;

#[derive(Debug, Clone)]
pub struct Burst {
    pub messages: u64,
    pub rate: Option<u64>,
    pub started: Option<String>,
    pub chat_id: i64,
    pub sender: String,
    /// Where each received `send` is noted as `<unix ns> <text>` (echo round-trip latency).
    pub sends: Option<String>,
}

impl Burst {
    pub fn from_scenario(scenario: &Value) -> Option<Burst> {
        let b = scenario.get("burst")?;
        Some(Burst {
            messages: b.get("messages")?.as_u64()?,
            rate: b.get("rate").and_then(Value::as_u64).filter(|r| *r > 0),
            started: b.get("started").and_then(Value::as_str).map(str::to_string),
            chat_id: b.get("chat_id").and_then(Value::as_i64).unwrap_or(7),
            sender: b
                .get("sender")
                .and_then(Value::as_str)
                .unwrap_or("+15550001111")
                .to_string(),
            sends: b.get("sends").and_then(Value::as_str).map(str::to_string),
        })
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One notification line (with its newline): the size and shape of a real imsg message.
fn line(out: &mut Vec<u8>, b: &Burst, i: u64, subscription: Option<i64>, created: &str) {
    let stamp = match b.rate {
        Some(_) => format!(" t={}", unix_ns()),
        None => String::new(),
    };
    let sub = subscription
        .map(|s| format!("\"subscription\":{s},"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        concat!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"message\",\"params\":{{{}\"message\":{{",
            "\"id\":{},\"guid\":\"BURST-{:08X}-4A5B-9C3D-2E1F00000000\",\"chat_id\":{},",
            "\"chat_guid\":\"iMessage;-;{}\",\"chat_identifier\":\"{}\",\"chat_name\":\"\",",
            "\"sender\":\"{}\",\"is_from_me\":false,\"is_group\":false,",
            "\"text\":\"burst message {}{} with some ordinary words in it, as people write them\",",
            "\"created_at\":\"{}\",\"attachments\":[],\"reply_to_guid\":null,",
            "\"destination_caller_id\":\"+15559990000\",\"is_reaction\":false}}}}}}"
        ),
        sub,
        1_000_000 + i,
        i,
        b.chat_id,
        b.sender,
        b.sender,
        b.sender,
        i,
        stamp,
        created,
    );
}

/// Notes a received `send` (one `write` per line, so processes can share the file).
pub fn note_send(path: &str, text: &str) {
    let line = format!("{} {}\n", unix_ns(), text.replace('\n', " "));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Writes the burst through `write` in blocks, pacing when a rate is set.
pub fn run(b: &Burst, subscription: Option<i64>, mut write: impl FnMut(&[u8])) {
    let created = iso(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0));
    if let Some(path) = &b.started {
        let _ = std::fs::write(path, unix_ns().to_string());
    }
    let began = Instant::now();
    let block = if b.rate.is_some() { 1 } else { 64 };
    let mut buf = Vec::with_capacity(block * 700);
    let mut i = 0;
    while i < b.messages {
        if let Some(rate) = b.rate {
            let due = began + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        buf.clear();
        for _ in 0..block.min((b.messages - i) as usize) {
            line(&mut buf, b, i, subscription, &created);
            i += 1;
        }
        write(&buf);
    }
}

/// `imsg-sim burst N [STARTED]`: the lines alone, for the bare loop.
pub fn dump(args: &[String]) -> i32 {
    let Some(messages) = args.first().and_then(|n| n.parse().ok()) else {
        eprintln!("usage: imsg-sim burst N [STARTED_FILE]");
        return 2;
    };
    let b = Burst {
        messages,
        rate: None,
        started: args.get(1).cloned(),
        chat_id: 7,
        sender: "+15550001111".into(),
        sends: None,
    };
    let mut out = std::io::stdout().lock();
    run(&b, Some(1), |bytes| {
        let _ = out.write_all(bytes);
    });
    let _ = out.flush();
    0
}
