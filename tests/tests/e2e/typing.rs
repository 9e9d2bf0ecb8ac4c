//! Typing indicators (issue 15, actions.md §3.1): a DM the host acknowledged shows typing in
//! its chat at once (mode `instant`), kept alive every 8 s, and stopped after the reply to that
//! chat, never a late `typing:true` after the stop; groups and `typingMode: never` show none,
//! and neither does an imsg whose bridge is down.

use crate::common;

use std::time::Duration;

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

/// Every `typing` effect's params, in order.
fn typing(env: &SimEnv) -> Vec<Value> {
    env.record()
        .into_iter()
        .filter(|r| r["effect"] == "typing")
        .map(|r| r["params"].clone())
        .collect()
}

fn start(env: &SimEnv, echo: bool) -> common::sim::Running {
    let scenario = env.path("scenario.json").display().to_string();
    env.start_with_env(echo, &[("IMSG_SIM_SCENARIO", &scenario)])
}

#[test]
fn a_dm_shows_typing_until_the_reply_is_sent() {
    let env = SimEnv::new(json!({"profile": "strict", "bridge": "ready"}), json!({}));
    let gateway = start(&env, false);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello"}));
    gateway.wait_messages(1, WAIT);
    wait_until("typing on", WAIT, || !typing(&env).is_empty());
    assert_eq!(typing(&env), vec![json!({"chat_id": 7, "typing": true})]);
    // The reply (through the running gateway) ends it.
    let out = env.gw.send("chat_id:7", "hi!");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let deadline = std::time::Instant::now() + WAIT;
    while !typing(&env).last().is_some_and(|p| p["typing"] == false) {
        if std::time::Instant::now() > deadline {
            // What the plugin and the simulators did, for whoever has to find out why.
            let log: Vec<String> = env
                .stderr()
                .lines()
                .filter(|l| l.contains("typing") || l.contains("actions") || l.contains("WARN"))
                .map(str::to_string)
                .collect();
            let requests: Vec<Value> = env
                .record()
                .into_iter()
                .filter(|r| r["dir"] == "in" || r.get("effect").is_some())
                .collect();
            panic!("timed out waiting for typing off\nlog: {log:#?}\nrecord: {requests:#?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // A group message shows no typing. Its read receipt is queued on the actions child after
    // anything its routing (or the DM before it) started: once it is there, nothing else
    // still comes.
    env.insert(json!({"chat_id": 42, "handle": "+15550001111", "text": "@bot hi all"}));
    gateway.wait_messages(2, WAIT);
    wait_until("the group's read receipt", WAIT, || {
        env.record()
            .iter()
            .any(|r| r["effect"] == "read" && r["params"]["chat_id"] == 42)
    });
    let seen = typing(&env);
    assert_eq!(seen.last(), Some(&json!({"chat_id": 7, "typing": false})));
    assert_eq!(
        seen.iter().filter(|p| p["typing"] == false).count(),
        1,
        "one stop, and nothing after it: {seen:?}"
    );
    assert!(seen.iter().all(|p| p.get("chat_id") != Some(&json!(42))));
    assert!(gateway.stop().success());
}

#[test]
fn typing_is_kept_alive_every_eight_seconds_while_no_reply_comes() {
    let env = SimEnv::new(json!({"profile": "strict", "bridge": "ready"}), json!({}));
    // The 8 s keepalive, shrunk.
    env.gw.set_timings("typingKeepaliveMs=500");
    let gateway = start(&env, false);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "think about it"}));
    gateway.wait_messages(1, WAIT);
    wait_until("a keepalive", WAIT, || {
        typing(&env).iter().filter(|p| p["typing"] == true).count() >= 2
    });
    assert!(
        typing(&env).iter().all(|p| p["typing"] == true),
        "not stopped yet"
    );
    // Written again by the timer, not a second start at once.
    let at: Vec<u64> = env
        .record()
        .iter()
        .filter(|r| r["effect"] == "typing")
        .filter_map(|r| r["t_ms"].as_u64())
        .collect();
    assert!(
        at[1] - at[0] >= 500,
        "a keepalive after {} ms",
        at[1] - at[0]
    );
    // The account stops: typing is turned off.
    assert!(gateway.stop().success());
    assert_eq!(
        typing(&env).last(),
        Some(&json!({"chat_id": 7, "typing": false}))
    );
}

#[test]
fn no_typing_without_the_bridge_or_with_typing_mode_never() {
    let env = SimEnv::new(json!({"profile": "strict"}), json!({}));
    let gateway = start(&env, true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello"}));
    gateway.wait_messages(1, WAIT);
    wait_until("the reply", WAIT, || !env.sends().is_empty());
    // The positive marker: the plugin decided, and said why (at debug level).
    wait_until("typing decided against", WAIT, || {
        env.stderr().contains("no typing for conv")
    });
    assert!(typing(&env).is_empty());
    assert!(gateway.stop().success());

    let env = SimEnv::new(
        json!({"profile": "strict", "bridge": "ready"}),
        json!({"agents": {"defaults": {"typingMode": "never"}}}),
    );
    let gateway = start(&env, true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello"}));
    gateway.wait_messages(1, WAIT);
    wait_until("the reply", WAIT, || !env.sends().is_empty());
    // The read receipt is queued on the actions child after the early typing would be.
    wait_until("the read receipt", WAIT, || {
        env.record().iter().any(|r| r["effect"] == "read")
    });
    assert!(typing(&env).is_empty());
    assert!(gateway.stop().success());
}

#[test]
fn a_slow_typing_call_never_delays_the_reply() {
    let env = SimEnv::new(
        json!({"profile": "strict", "bridge": "ready", "faults": {"delay_ms": {"typing": 2000}}}),
        json!({}),
    );
    let gateway = start(&env, true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "quick one"}));
    gateway.wait_messages(1, WAIT);
    let routed = std::time::Instant::now();
    wait_until("the reply", WAIT, || !env.sends().is_empty());
    let took = routed.elapsed();
    assert!(
        took < Duration::from_millis(1_500),
        "the reply waited {took:?} behind a typing call stalled for 2 s"
    );
    assert!(gateway.stop().success());
}

#[test]
fn an_unanswered_typing_start_is_still_stopped() {
    // The start goes unanswered past its timeout (10 s, shrunk to 1 s here): the indicator
    // may be showing, so the reply still stops it (a refused start, case 179, writes no stop).
    let env = SimEnv::new(
        json!({"profile": "strict", "bridge": "ready", "faults": {"delay_ms": {"typing": 1500}}}),
        json!({}),
    );
    env.gw.set_timings("typingTimeoutMs=1000");
    let gateway = start(&env, true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "still there?"}));
    gateway.wait_messages(1, WAIT);
    wait_until("the reply", WAIT, || !env.sends().is_empty());
    wait_until("a typing:false request", WAIT, || {
        env.requests("typing")
            .iter()
            .any(|p| p["typing"] == json!(false))
    });
    assert_eq!(
        env.requests("typing"),
        vec![
            json!({"chat_id": 7, "typing": true}),
            json!({"chat_id": 7, "typing": false})
        ]
    );
    // The start did time out (else this would be the ordinary stop after an answered start).
    assert!(env.stderr().contains("typing start failed for conv"));
    assert!(gateway.stop().success());
}
