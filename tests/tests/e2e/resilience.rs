//! One odd message must never silence an account (issue 10): a sender whose handle has a
//! multi-byte character where a prefix check used to slice, and a message whose processing
//! panics (through the `fault-injection` hook), through host-stub + libimessage + imsg-sim.

use crate::common;

use common::sim::{chats, wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;
/// Must match `imessage::watcher::FAULT_PANIC_TEXT` (the library is built with the feature).
const PANIC_TEXT: &str = "__imessage_fault_injection_panic__";
/// Must match `imessage::watcher::FAULT_HANG_TEXT`: processing this row never ends, so the
/// test can kill the gateway in the middle of it, as a stack overflow or an abort would.
const HANG_TEXT: &str = "__imessage_fault_injection_hang__";

/// The dead-letter file of the default account and its entries.
fn quarantined(env: &SimEnv) -> (std::path::PathBuf, Vec<Value>) {
    let file = env.path("state/imessage/default/quarantine.jsonl");
    let text = std::fs::read_to_string(&file).expect("the dead-letter file exists");
    let entries = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (file, entries)
}

fn owner(text: &str) -> Value {
    json!({"chat_id": 7, "handle": "+15550001111", "text": text})
}

fn with_chat(id: i64, handle: &str) -> Value {
    let mut list = chats();
    list.as_array_mut().unwrap().push(json!({
        "id": id, "identifier": handle, "guid": format!("iMessage;-;{handle}"),
        "service": "iMessage", "participants": [handle],
    }));
    json!({ "chats": list })
}

#[test]
fn a_sender_with_a_multi_byte_character_routes_and_later_messages_too() {
    let env = SimEnv::new(
        with_chat(9, "josé@example.com"),
        json!({"channels": {"imessage": {"dmPolicy": "open", "allowFrom": ["*"]}}}),
    );
    let gateway = env.start(false);
    env.insert(json!({"chat_id": 9, "handle": "josé@example.com", "text": "hola"}));
    env.insert(owner("after josé"));
    let routed = gateway.wait_messages(2, WAIT);
    assert_eq!(routed[0]["senderId"], "josé@example.com");
    assert_eq!(routed[0]["text"], "hola");
    assert_eq!(routed[1]["text"], "after josé");
    assert!(!env.stderr().contains("panicked"), "{}", env.stderr());
    assert!(gateway.stop().success());
}

#[test]
fn a_message_that_panics_twice_is_quarantined_and_never_replayed() {
    let env = SimEnv::new(json!({}), json!({}));
    let gateway = env.start(false);
    env.insert(owner("before"));
    gateway.wait_messages(1, WAIT);
    env.insert(owner(PANIC_TEXT));
    env.insert(owner("after"));
    let routed = gateway.wait_messages(2, WAIT);
    assert_eq!(routed[1]["text"], "after", "later messages route");
    let log = env.stderr();
    // First panic: logged with the GUID, then a restart from the cursor replays it.
    assert!(
        log.contains("panicked; restarting from the cursor"),
        "{log}"
    );
    assert!(log.contains("panicked twice and was quarantined"), "{log}");
    let (file, entries) = quarantined(&env);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["message"]["text"], PANIC_TEXT);
    assert_eq!(entries[0]["message"]["sender"], "+15550001111");
    assert!(entries[0]["guid"].as_str().is_some_and(|g| !g.is_empty()));
    assert!(entries[0]["panic"]
        .as_str()
        .unwrap()
        .contains("fault injection"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The log names the message, never its text.
    let error_lines: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(
        error_lines.iter().all(|l| !l.contains("+15550001111")),
        "{error_lines:?}"
    );
    assert!(gateway.stop().success());

    // A restart neither replays the quarantined row nor loses the next message.
    let before = env.stderr().matches("panicked").count();
    let gateway = env.start(false);
    env.insert(owner("after restart"));
    let routed = gateway.wait_messages(1, WAIT);
    assert_eq!(routed.len(), 1, "nothing replayed: {routed:?}");
    assert_eq!(routed[0]["text"], "after restart");
    // Inserted after the start, so a replay of the quarantined row would have come first.
    assert_eq!(env.stderr().matches("panicked").count(), before);
    assert!(gateway.stop().success());
}

/// Issue 21: a row that ends the whole process (no panic to catch) must not replay forever.
/// The gateway is killed with SIGKILL twice while that row is being processed; the third
/// start quarantines it, and every row around it is delivered exactly once over all runs.
#[test]
fn a_row_that_kills_the_gateway_twice_is_quarantined_on_the_third_start() {
    let env = SimEnv::new(json!({}), json!({}));
    let holds = |n: usize| env.stderr().matches("fault injection: holding row").count() >= n;
    let texts = |routed: Vec<Value>| -> Vec<String> {
        routed
            .iter()
            .map(|m| m["text"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let mut delivered = Vec::new();
    let gateway = env.start(false);
    // A cursor first: without one, a restart begins at the live tail.
    env.insert(owner("zero"));
    gateway.wait_messages(1, WAIT);
    wait_until("a cursor", WAIT, || {
        env.path("state/imessage/default/cursor.json").exists()
    });
    for text in ["one", "two", HANG_TEXT, "three"] {
        env.insert(owner(text));
    }
    wait_until("the first hold", WAIT, || holds(1));
    delivered.extend(texts(gateway.kill()));

    // Second start: the row is replayed (found in flight once), and held again.
    let gateway = env.spawn(false, &[]);
    wait_until("the second hold", WAIT, || holds(2));
    delivered.extend(texts(gateway.kill()));
    let log = env.stderr();
    assert!(
        log.contains("(1 time(s)); it will be tried once more"),
        "{log}"
    );

    // Third start: found in flight twice, so quarantined when it comes; the rest flows.
    let gateway = env.spawn(false, &[]);
    env.insert(owner("four"));
    wait_until("four", WAIT, || {
        gateway.messages().iter().any(|m| m["text"] == "four")
    });
    // Counters are published with the watcher's 100 ms flush.
    let mut account = Value::Null;
    wait_until("the quarantine in the live status", WAIT, || {
        let out = env.gw.run(&["channels", "status", "--json"]);
        let status: Value = serde_json::from_str(&common::stdout(&out)).unwrap_or_default();
        account = status["channels"][0].clone();
        account["drops"]["quarantined"] == 1
    });
    delivered.extend(texts(gateway.kill()));
    assert!(!holds(3), "the third start never held the row again");

    delivered.sort();
    assert_eq!(
        delivered,
        ["four", "one", "three", "two", "zero"],
        "each exactly once"
    );
    let log = env.stderr();
    assert!(
        log.contains("ended the process twice and was quarantined"),
        "{log}"
    );
    let (_, entries) = quarantined(&env);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["message"]["text"], HANG_TEXT);
    assert_eq!(account["quarantine"]["count"], 1, "{account}");
}
