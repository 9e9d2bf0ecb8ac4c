//! Catch-up through `messages.after` (issue 17, actions.md §4, cases 199–202): on a strict
//! server the rows missed while the gateway was down are paged from the cursor, each page
//! acknowledged before the cursor moves to its `next_rowid`, then the live subscription
//! opens; an overflowing subscription is caught up the same way; lenient servers keep the
//! watch replay.

use crate::common;

use std::collections::HashSet;

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

fn cursor(env: &SimEnv) -> i64 {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("state/imessage/default/cursor.json")).unwrap(),
    )
    .unwrap();
    v["rowid"].as_i64().unwrap()
}

/// `n` owner DMs with ids from `first`, texts `dm <i>`.
fn backlog(first: i64, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": first + i, "chat_id": 7, "handle": "+15550001111", "text": format!("dm {i}")}))
        .collect()
}

fn assert_once_in_order(routed: &[Value], n: usize) {
    let texts: Vec<&str> = routed.iter().map(|m| m["text"].as_str().unwrap()).collect();
    let unique: HashSet<&&str> = texts.iter().collect();
    assert_eq!(unique.len(), texts.len(), "a message was routed twice");
    assert_eq!(texts.len(), n, "a message was lost");
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(*t, format!("dm {i}"), "in order");
    }
}

#[test]
fn a_strict_server_pages_the_backlog_then_subscribes_cases_199_200() {
    // 250 rows missed while down, and a suppressed URL-preview row after the last one.
    let mut rows = backlog(101, 250);
    rows.push(json!({"id": 351, "chat_id": 7, "handle": "+15550001111", "text": "https://example.com", "preview_of": 350}));
    let env = SimEnv::new(json!({"profile": "strict", "messages": rows}), json!({}));
    env.write_cursor(100);
    let gateway = env.spawn(false, &[]);
    gateway.wait_messages(250, WAIT);
    wait_until("subscribed", WAIT, || {
        !env.requests("watch.subscribe").is_empty()
    });
    let pages = env.requests("messages.after");
    assert_eq!(
        pages,
        vec![
            json!({"since_rowid": 100, "limit": 100, "attachments": false, "include_reactions": true}),
            json!({"since_rowid": 200, "limit": 100, "attachments": false, "include_reactions": true}),
            json!({"since_rowid": 300, "limit": 100, "attachments": false, "include_reactions": true}),
        ]
    );
    // The last page's next_rowid passed the preview row: the cursor and the subscription
    // start there (case 200).
    assert_eq!(
        env.requests("watch.subscribe"),
        vec![json!({"attachments": false, "since_rowid": 351, "include_reactions": true})]
    );
    wait_until("the cursor persisted", WAIT, || cursor(&env) == 351);
    // Live messages keep flowing after the catch-up; and once the live row is printed,
    // nothing of the backlog can still come again.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "live"}));
    let backlog = gateway.wait_text("live");
    assert_once_in_order(&backlog, 250);
    assert_eq!(gateway.messages().len(), 251);
    assert!(gateway.stop().success());
}

#[test]
fn an_overflowing_subscription_is_caught_up_by_paging_case_201() {
    let env = SimEnv::new(json!({"profile": "strict"}), json!({}));
    let gateway = env.start(false);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "dm 0"}));
    gateway.wait_messages(1, WAIT);
    // The subscription delivers 30 more rows, then overflows; 270 remain behind it.
    env.inbox(json!({"op": "overflow", "subscription": 1, "deliver": 30}));
    let rows: Vec<Value> = (1..=300)
        .map(|i| json!({"chat_id": 7, "handle": "+15550001111", "text": format!("dm {i}")}))
        .collect();
    env.inbox(json!({"op": "insert_many", "rows": rows}));
    gateway.wait_messages(301, WAIT);
    let pages = env.requests("messages.after");
    assert!(!pages.is_empty(), "caught up by paging");
    // Live again after the catch-up; once its row is printed nothing earlier can come again.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "dm 301"}));
    gateway.wait_text("dm 301");
    // Counted only now: the 301st line can be printed before the resubscribe is sent, and
    // the live row proves it was.
    let subs = env.requests("watch.subscribe");
    assert_eq!(subs.len(), 2, "resubscribed once: {subs:?}");
    assert_once_in_order(&gateway.messages(), 302);
    let out = env.gw.run(&["channels", "status", "--json"]);
    let status: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(status["channels"][0]["watchOverflows"], 1);
    assert!(gateway.stop().success());
}

#[test]
fn a_burst_larger_than_imsgs_buffer_loses_nothing() {
    // imsg holds at most buffer_limit rows per subscriber; a bigger backlog ends the
    // subscription (watch.overflow), as real strict imsg does.
    let env = SimEnv::new(
        json!({"profile": "strict", "watch": {"buffer_limit": 40}}),
        json!({}),
    );
    let gateway = env.start(false);
    let rows: Vec<Value> = (0..600)
        .map(|i| json!({"chat_id": 7, "handle": "+15550001111", "text": format!("dm {i}")}))
        .collect();
    env.inbox(json!({"op": "insert_many", "rows": rows}));
    gateway.wait_messages(600, WAIT);
    // A row after the burst: once it is printed nothing of the burst can come again.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "dm 600"}));
    gateway.wait_text("dm 600");
    assert_once_in_order(&gateway.messages(), 601);
    let out = env.gw.run(&["channels", "status", "--json"]);
    let status: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert!(status["channels"][0]["watchOverflows"].as_u64().unwrap() >= 1);
    assert!(
        !env.requests("messages.after").is_empty(),
        "caught up by paging"
    );
    assert!(gateway.stop().success());
}

#[test]
fn an_unreadable_database_is_waited_for_not_given_up_on() {
    // The first page finds the database unreadable (−32002): catch-up waits (30 s, shrunk
    // here) and pages then, instead of counting it as a failure.
    let env = SimEnv::new(
        json!({"profile": "strict", "messages": backlog(101, 5),
            "faults": {"database_unavailable": {"messages.after": 1}}}),
        json!({}),
    );
    env.write_cursor(100);
    env.gw.set_timings("dbRetryMs=500");
    let gateway = env.spawn(false, &[]);
    let routed = gateway.wait_messages(5, WAIT);
    assert_once_in_order(&routed, 5);
    // Both pages on the watcher's child, the second after the retry time: waited for, not
    // asked again at once.
    let pages: Vec<(i64, u64)> = env
        .record()
        .iter()
        .filter(|r| r["dir"] == "in")
        .filter(|r| {
            r["line"]
                .as_str()
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
                .is_some_and(|line| line["method"] == "messages.after")
        })
        .map(|r| (r["pid"].as_i64().unwrap(), r["t_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(pages.len(), 2, "-32002, then the page: {pages:?}");
    assert_eq!(pages[0].0, pages[1].0, "one child");
    assert!(
        pages[1].1 - pages[0].1 >= 500,
        "asked again after {} ms, before the retry time",
        pages[1].1 - pages[0].1
    );
    assert!(env
        .stderr()
        .contains("the Messages database is not readable; catch-up waits for it"));
    assert!(!env
        .stderr()
        .contains("catching up through the watch replay instead"));
    assert!(gateway.stop().success());
}

#[test]
fn lenient_servers_replay_and_failing_pages_fall_back_to_the_replay_case_202() {
    // Lenient 0.9: no messages.after, the watch replays from the cursor.
    let env = SimEnv::new(json!({"messages": backlog(101, 5)}), json!({}));
    env.write_cursor(100);
    let gateway = env.spawn(false, &[]);
    gateway.wait_messages(5, WAIT);
    assert!(env.requests("messages.after").is_empty());
    assert_eq!(env.requests("watch.subscribe")[0]["since_rowid"], 100);
    assert!(gateway.stop().success());

    // Strict, but messages.after fails three times: the watch replay catches up instead.
    let env = SimEnv::new(
        json!({"profile": "strict", "messages": backlog(101, 5),
            "faults": {"bridge_unavailable": {"messages.after": 3}}}),
        json!({}),
    );
    env.write_cursor(100);
    let gateway = env.spawn(false, &[]);
    let routed = gateway.wait_messages(5, WAIT);
    assert_once_in_order(&routed, 5);
    assert_eq!(env.requests("messages.after").len(), 3);
    assert_eq!(env.requests("watch.subscribe")[0]["since_rowid"], 100);
    let warnings = env
        .stderr()
        .matches("messages.after failed 3 times; catching up through the watch replay instead")
        .count();
    assert_eq!(warnings, 1);
    assert!(gateway.stop().success());
}
