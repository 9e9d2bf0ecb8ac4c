//! Fuzzing the inbound stream through the real boundary (issue 10): host-stub loads the
//! built libimessage, imsg-sim writes thousands of mutated `message` lines (byte flips,
//! truncation, fields of the wrong type, huge numbers, deep nesting, very long strings,
//! invalid UTF-8, duplicate and missing keys, garbage) from a fixed seed, with a valid
//! sentinel message between every few of them. The gateway must never die or panic, route
//! every sentinel exactly once and in order, route nothing with a wrong-typed field, and keep
//! its memory bounded.
//!
//! `FUZZ_LINES` sets how many mutated lines (default 2,000, a few seconds); `FUZZ_SEED`
//! picks another seed. A longer run: `FUZZ_LINES=100000 cargo test -p imessage-tests --test
//! e2e_fuzz -- --nocapture`.

use crate::common;

use std::time::Duration;

use common::sim::{wait_until, SimEnv};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};

/// Fuzz lines come from a second allowlisted sender, so a line that happens to look like
/// an echo or a loop never mutes the owner's conversation, which carries the sentinels.
const FUZZER: &str = "+15550004444";
const SENTINEL_EVERY: usize = 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Fuzz {
    rng: TestRng,
    now: String,
}

impl Fuzz {
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    fn message(&self, n: usize, text: &str) -> serde_json::Map<String, Value> {
        let m = json!({
            "id": 1_000_000 + n, "guid": format!("FUZZ-{n}"), "chat_id": 99,
            "chat_guid": format!("iMessage;-;{FUZZER}"), "chat_identifier": FUZZER,
            "sender": FUZZER, "is_from_me": false, "is_group": false, "text": text,
            "created_at": self.now, "attachments": [],
        });
        m.as_object().unwrap().clone()
    }

    fn line(message: Value) -> Vec<u8> {
        json!({"jsonrpc": "2.0", "method": "message", "params": {"message": message}})
            .to_string()
            .into_bytes()
    }

    /// One mutated line, and whether it must never be routed (a field of the wrong type).
    fn mutate(&mut self, n: usize) -> (Vec<u8>, bool) {
        let text = format!("fuzz-{n}");
        let mut m = self.message(n, &text);
        match self.below(10) {
            0 => {
                let mut bytes = Self::line(Value::Object(m));
                for _ in 0..1 + self.below(4) {
                    let at = self.below(bytes.len());
                    bytes[at] ^= 1 + self.below(255) as u8;
                }
                bytes.retain(|b| *b != b'\n');
                (bytes, false)
            }
            1 => {
                let mut bytes = Self::line(Value::Object(m));
                bytes.truncate(self.below(bytes.len()));
                (bytes, false)
            }
            2 | 3 => {
                // A present field of the wrong type rejects the whole message (§2 step 1).
                // Not `text`: it carries the marker the test looks for.
                let keys: Vec<String> = m.keys().filter(|k| *k != "text").cloned().collect();
                let key = keys[self.below(keys.len())].clone();
                let wrong = match &m[&key] {
                    Value::String(_) => [json!(42), json!({"a": 1}), json!(["x"]), json!(true)]
                        [self.below(4)]
                    .clone(),
                    Value::Number(_) => {
                        [json!("7"), json!(1.5), json!(1e300), json!([1])][self.below(4)].clone()
                    }
                    Value::Bool(_) => [json!("false"), json!(0), json!({})][self.below(3)].clone(),
                    _ => [json!("x"), json!(3), json!({"k": []})][self.below(3)].clone(),
                };
                m.insert(key, wrong);
                m.insert("text".into(), json!(format!("wrongtype-{n}")));
                if self.below(2) == 0 {
                    // Integers too big for i64 in place of the row id.
                    m.insert("id".into(), json!(123456789012345678901234567890.0));
                }
                (Self::line(Value::Object(m)), true)
            }
            4 => {
                let depth = 200 + self.below(5000);
                let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let base = String::from_utf8(Self::line(Value::Object(m))).unwrap();
                let line = base.replacen(
                    "\"attachments\":[]",
                    &format!("\"attachments\":{nested}"),
                    1,
                );
                (line.into_bytes(), false)
            }
            5 => {
                let len = 10_000 + self.below(200_000);
                m.insert(
                    "text".into(),
                    json!(format!("long-{n}-{}", "é".repeat(len / 2))),
                );
                (Self::line(Value::Object(m)), false)
            }
            6 => {
                let mut bytes = Self::line(Value::Object(m));
                let start = bytes.len() / 3;
                for _ in 0..1 + self.below(3) {
                    let at = start + self.below(bytes.len() - start);
                    bytes[at] = [0xff, 0xc3, 0x80, 0xed, 0x00][self.below(5)];
                }
                bytes.retain(|b| *b != b'\n');
                (bytes, false)
            }
            7 => {
                let base = String::from_utf8(Self::line(Value::Object(m))).unwrap();
                let line = base.replacen("\"guid\":", "\"guid\":\"DUP\",\"guid\":", 1);
                (line.into_bytes(), false)
            }
            8 => {
                let keys: Vec<String> = m.keys().cloned().collect();
                for _ in 0..1 + self.below(keys.len()) {
                    let k = &keys[self.below(keys.len())];
                    m.remove(k);
                }
                (Self::line(Value::Object(m)), false)
            }
            _ => {
                let len = self.below(300);
                let bytes = (0..len)
                    .map(|_| (self.rng.next_u32() as u8).max(1))
                    .filter(|b| *b != b'\n')
                    .collect();
                (bytes, false)
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn mutated_message_lines_never_take_the_gateway_down() {
    let lines = env_number("FUZZ_LINES", 2_000) as usize;
    let seed = env_number("FUZZ_SEED", 0x1_5eed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut fuzz = Fuzz {
        rng: TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        now: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    };
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"allowFrom": ["+15550001111", FUZZER]}}}),
    );
    let gateway = env.start(false);
    let mut must_not_route = 0;
    let mut sentinels = 0;
    let mut inbox = String::new();
    for n in 0..lines {
        let (bytes, wrong_type) = fuzz.mutate(n);
        must_not_route += usize::from(wrong_type);
        inbox.push_str(&json!({"op": "stdout", "hex": hex(&bytes)}).to_string());
        inbox.push('\n');
        if n % SENTINEL_EVERY == SENTINEL_EVERY - 1 {
            let row = json!({"chat_id": 7, "handle": "+15550001111", "text": format!("sentinel {sentinels}")});
            inbox.push_str(&json!({"op": "insert", "row": row}).to_string());
            inbox.push('\n');
            sentinels += 1;
        }
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(env.path("inbox.jsonl"))
        .unwrap()
        .write_all(inbox.as_bytes())
        .unwrap();
    let timeout = Duration::from_secs(60 + lines as u64 / 50);
    wait_until("every sentinel", timeout, || {
        gateway
            .messages()
            .iter()
            .any(|m| m["text"] == format!("sentinel {}", sentinels - 1))
    });
    let pid = gateway.child.id();
    let peak = peak_rss_kib(pid);
    let routed = gateway.messages();
    let got: Vec<&str> = routed
        .iter()
        .filter_map(|m| m["text"].as_str())
        .filter(|t| t.starts_with("sentinel "))
        .collect();
    let want: Vec<String> = (0..sentinels).map(|i| format!("sentinel {i}")).collect();
    assert_eq!(got, want, "every sentinel exactly once, in order");
    let wrongly: Vec<&Value> = routed
        .iter()
        .filter(|m| {
            m["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("wrongtype-"))
        })
        .collect();
    assert!(
        wrongly.is_empty(),
        "wrong-typed messages were routed: {wrongly:?}"
    );
    for m in &routed {
        assert!(m["text"].is_string() && m["messageId"].is_string(), "{m}");
    }
    let log = env.stderr();
    assert!(
        !log.contains("panicked"),
        "a panic: {}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let peak = peak.expect("VmHWM of host-stub");
    eprintln!(
        "fuzz: {lines} mutated lines ({must_not_route} with a wrong-typed field), {sentinels} sentinels, {} routed, peak RSS {} MiB",
        routed.len(),
        peak / 1024
    );
    // Lines up to ~400 KB each are read one at a time; nothing accumulates.
    assert!(peak < 300 * 1024, "host-stub peak RSS {peak} KiB");
    assert!(
        gateway.stop().success(),
        "the gateway is still alive and stops cleanly"
    );
}
