//! Read receipts (issue 15, actions.md §3.2): once the host acknowledges a routed message, its
//! chat is marked read on the account's actions child, at most once per conversation per
//! 2 s, only when the capability snapshot says the bridge can; never for drops; and a slow
//! `read` never delays the next message.

mod common;

use std::time::{Duration, Instant};

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn reads(env: &SimEnv) -> Vec<Value> {
    env.record()
        .into_iter()
        .filter(|r| r["effect"] == "read")
        .map(|r| r["params"].clone())
        .collect()
}

fn owner(text: &str) -> Value {
    json!({"chat_id": 7, "handle": "+15550001111", "text": text})
}

fn start(env: &SimEnv) -> common::sim::Running {
    // The lenient `imsg status --json` finds the scenario through the environment.
    let scenario = env.path("scenario.json").display().to_string();
    let gateway = env.start_with_env(false, &[("IMSG_SIM_SCENARIO", &scenario)]);
    wait_until("watching", WAIT, || {
        env.stderr().contains("watching for messages")
    });
    gateway
}

#[test]
fn acknowledged_messages_mark_their_chat_read_once_per_two_seconds() {
    let env = SimEnv::new(json!({"bridge": "ready"}), json!({}));
    let gateway = start(&env);
    for text in ["one", "two", "three"] {
        env.insert(owner(text));
    }
    // A stranger's DM is dropped (pairing): never marked read.
    env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "hi?"}));
    gateway.wait_messages(3, WAIT);
    wait_until("a read receipt", WAIT, || !reads(&env).is_empty());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        reads(&env),
        vec![json!({"chat_id": 7})],
        "one per conversation per 2 s"
    );
    std::thread::sleep(Duration::from_millis(2_000));
    env.insert(owner("four"));
    gateway.wait_messages(4, WAIT);
    wait_until("a second read receipt", WAIT, || reads(&env).len() == 2);
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
    std::thread::sleep(Duration::from_millis(1_000));
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
    std::thread::sleep(Duration::from_millis(1_000));
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
    std::thread::sleep(Duration::from_millis(300));
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
