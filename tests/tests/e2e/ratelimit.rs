//! Outbound rate limiting end to end (issue 17, actions.md §6, cases 208 and 211): the hard
//! caps hold whichever way a send arrives (through the running gateway, or one-shot with the
//! counters in the state folder), an inbound row clears them, and the owner's DMs are exempt.

use crate::common;

use std::process::Output;

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;
const UNANSWERED: &str =
    "rate limited: 5 messages sent to this conversation without a reply (rateLimit.maxUnanswered)";

fn send_json(env: &SimEnv, target: &str, text: &str) -> (Output, Value) {
    env.send_json(target, text, &[])
}

fn written(env: &SimEnv) -> usize {
    env.sends().len()
}

#[test]
fn the_sixth_unanswered_send_is_refused_until_someone_writes_case_208() {
    let env = SimEnv::new(json!({}), json!({}));
    let gateway = env.start(false);
    for i in 0..5 {
        let (out, _) = send_json(&env, "chat_id:42", &format!("update {i}"));
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    }
    assert_eq!(written(&env), 5);
    let (out, receipt) = send_json(&env, "chat_id:42", "update 5");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains(UNANSWERED),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(receipt["parts"][0]["outcome"], "not_sent");
    assert_eq!(receipt["parts"][0]["error"], UNANSWERED);
    assert_eq!(written(&env), 5, "nothing written");
    let status = env.gw.run(&["channels", "status", "--json"]);
    let status: Value = serde_json::from_str(&common::stdout(&status)).unwrap();
    assert_eq!(status["channels"][0]["outbound"]["rateLimitedParts"], 1);
    // Someone in the group writes (not even an allowed sender: dropped group_not_allowed);
    // the next request goes out once the conversation's bucket has a slot (3 s at 20 a
    // minute).
    env.insert(json!({"chat_id": 42, "handle": "+15550003333", "text": "thanks"}));
    // Its own drop, not any: the five sends' rows come back and are dropped as from_me.
    wait_until("the inbound row seen", WAIT, || {
        env.drops("group_not_allowed") == 1
    });
    let (out, receipt) = send_json(&env, "chat_id:42", "update 6");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(receipt["ok"], true);
    assert_eq!(written(&env), 6);
    assert!(gateway.stop().success());
}

#[test]
fn one_shot_processes_share_the_counters_and_the_owner_is_exempt_case_211() {
    // Roomy buckets so only the hard caps matter here.
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"rateLimit": {"chatBurst": 20, "accountBurst": 20}}}}),
    );
    for i in 0..5 {
        let (out, _) = send_json(&env, "chat_id:42", &format!("one-shot {i}"));
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    }
    let (out, _) = send_json(&env, "chat_id:42", "one-shot 5");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the count survived five processes"
    );
    assert!(common::stderr(&out).contains(UNANSWERED));
    let saved = std::fs::read_to_string(env.path("state/imessage/default/ratelimit.json")).unwrap();
    assert!(saved.contains("\"chat:42\""), "{saved}");
    // The owner (explicit in allowFrom) gets a seventh unanswered DM.
    for i in 0..7 {
        let (out, _) = send_json(&env, "imessage:+15550001111", &format!("briefing {i}"));
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    }
    // Without the exemption the owner is a conversation like any other.
    env.merge_config(json!({"channels": {"imessage": {"rateLimit": {"exemptAllowFrom": false}}}}));
    let (out, _) = send_json(&env, "imessage:+15550001111", "briefing 7");
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stderr(&out).contains("without a reply"));
}

#[test]
fn a_refused_strangers_dm_leaves_no_trace_in_the_counters_issue_21() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"dmPolicy": "allowlist"}}}),
    );
    let gateway = env.start(false);
    env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "let me in"}));
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello"}));
    // Rows are handled in order: once the owner's DM is routed, the stranger's was refused.
    gateway.wait_messages(1, WAIT);
    // Stopping saves the counters.
    assert!(gateway.stop().success());
    let saved = std::fs::read_to_string(env.path("state/imessage/default/ratelimit.json")).unwrap();
    assert!(saved.contains("\"handle:+15550001111\""), "{saved}");
    assert!(saved.contains("\"chat:7\""), "{saved}");
    assert!(!saved.contains("+15550002222"), "{saved}");
    assert!(!saved.contains("\"chat:8\""), "{saved}");
}
