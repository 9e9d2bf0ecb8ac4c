//! Read receipts (issue 15, actions.md §3.2): once the host acknowledges a routed message, its
//! chat is marked read on the account's actions child, at most once per conversation per
//! 2 s, only when the capability snapshot says the bridge can; never for drops; and a slow
//! `read` never delays the next message.

use crate::common;

use std::time::{Duration, Instant};

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

fn reads(env: &SimEnv) -> Vec<Value> {
    env.record()
        .into_iter()
        .filter(|r| r["effect"] == "read")
        .map(|r| r["params"].clone())
        .collect()
}

/// The read-receipt window of the first test (2 s in production).
const WINDOW: Duration = Duration::from_millis(1_000);

fn owner(text: &str) -> Value {
    json!({"chat_id": 7, "handle": "+15550001111", "text": text})
}

fn start(env: &SimEnv) -> common::sim::Running {
    // The lenient `imsg status --json` finds the scenario through the environment.
    let scenario = env.path("scenario.json").display().to_string();
    env.start_with_env(false, &[("IMSG_SIM_SCENARIO", &scenario)])
}

#[test]
fn acknowledged_messages_mark_their_chat_read_once_per_two_seconds() {
    let env = SimEnv::new(json!({"bridge": "ready"}), json!({}));
    // The 2 s window, shrunk.
    env.gw
        .set_timings(&format!("readReceiptWindowMs={}", WINDOW.as_millis()));
    let gateway = start(&env);
    // In one go, so the three land well inside one window. A stranger's DM is dropped
    // (pairing): never marked read.
    let stranger = json!({"chat_id": 8, "handle": "+15550002222", "text": "hi?"});
    env.inbox(json!({"op": "insert_many",
        "rows": [owner("one"), owner("two"), owner("three"), stranger]}));
    gateway.wait_messages(3, WAIT);
    wait_until("a read receipt", WAIT, || !reads(&env).is_empty());
    // A group message acknowledged after the DMs: its read, queued on the same child after
    // theirs, proves every earlier acknowledgement was handled.
    env.insert(json!({"chat_id": 42, "handle": "+15550001111", "text": "@bot marker"}));
    gateway.wait_messages(4, WAIT);
    wait_until("the group's read receipt", WAIT, || {
        reads(&env).contains(&json!({"chat_id": 42}))
    });
    assert_eq!(
        reads(&env),
        vec![json!({"chat_id": 7}), json!({"chat_id": 42})],
        "one per conversation per 2 s"
    );
    // A timer: the window of chat 7 has to pass.
    std::thread::sleep(WINDOW);
    env.insert(owner("four"));
    gateway.wait_messages(5, WAIT);
    wait_until("a second read receipt", WAIT, || reads(&env).len() == 3);
    assert_eq!(reads(&env)[2], json!({"chat_id": 7}));
    // The reads went through their own child: neither the watcher's nor a sender's.
    let read_pids: Vec<i64> = env
        .record()
        .iter()
        .filter(|r| r["effect"] == "read")
        .filter_map(|r| r["pid"].as_i64())
        .collect();
    let watcher_pid = env
        .record()
        .iter()
        .find(|r| {
            r["dir"] == "in"
                && r["line"]
                    .as_str()
                    .is_some_and(|l| l.contains("watch.subscribe"))
        })
        .and_then(|r| r["pid"].as_i64())
        .unwrap();
    assert!(read_pids.iter().all(|p| *p != watcher_pid));
    assert!(gateway.stop().success());
}

#[test]
fn without_the_bridge_or_with_receipts_off_nothing_is_marked_read() {
    // No bridge (lenient 0.9): the snapshot says so, and no `read` is ever written.
    let env = SimEnv::new(json!({}), json!({}));
    let gateway = start(&env);
    for text in ["one", "two", "three"] {
        env.insert(owner(text));
    }
    gateway.wait_messages(3, WAIT);
    // The positive marker: the plugin decided, and said why (at debug level).
    wait_until("the read receipt decided against", WAIT, || {
        env.stderr().contains("no read receipt: ")
    });
    assert!(reads(&env).is_empty());
    assert!(gateway.stop().success());
    // sendReadReceipts: false, bridge up: none either.
    let env = SimEnv::new(
        json!({"bridge": "ready"}),
        json!({"channels": {"imessage": {"sendReadReceipts": false}}}),
    );
    let gateway = start(&env);
    env.insert(owner("quiet"));
    gateway.wait_messages(1, WAIT);
    // Early typing starts where the read would have been queued, on the same child; the
    // reply stops it. Once the stop is there, a read queued with the start would be too.
    wait_until("early typing", WAIT, || {
        env.requests("typing").iter().any(|p| p["typing"] == true)
    });
    let out = env.gw.send("chat_id:7", "hi");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    wait_until("typing stopped", WAIT, || {
        env.record()
            .iter()
            .any(|r| r["effect"] == "typing" && r["params"]["typing"] == false)
    });
    assert!(reads(&env).is_empty());
    assert!(gateway.stop().success());
}

#[test]
fn a_slow_read_never_delays_the_next_message() {
    let env = SimEnv::new(
        json!({"profile": "strict", "bridge": "ready", "faults": {"delay_ms": {"read": 3000}}}),
        json!({}),
    );
    let gateway = start(&env);
    env.insert(owner("first"));
    gateway.wait_messages(1, WAIT);
    // The read for "first" now stalls for 3 s on the actions child.
    wait_until("the read at the simulator", WAIT, || {
        !env.requests("read").is_empty()
    });
    let sent = Instant::now();
    env.insert(owner("second"));
    gateway.wait_messages(2, WAIT);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "the second message waited {took:?} behind a stalled read"
    );
    wait_until("the stalled read to land", WAIT, || !reads(&env).is_empty());
    assert!(gateway.stop().success());
}
