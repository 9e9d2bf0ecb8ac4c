//! Idempotent sends end to end (issue 17, actions.md §7, cases 192–198): `message send
//! --idempotency-key` against imsg-sim. No path sends a part twice — not a host retry, not a
//! lost reply, not a crash with a `pending` ledger line; an uncertain part is settled only by
//! `message.send_status` or by its echo.

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::sim::SimEnv;
use serde_json::{json, Value};

const A0: &str = "902213b2-bb8f-5b99-9e86-fbaac70123aa";
const A1: &str = "524a9759-afba-59cb-802d-2dd8b7a42cbe";

/// A lost reply turns `unknown` after 1 s instead of the least `sendTimeoutMs` (10 s), and is
/// asked about at +200, +500 and +1000 ms instead of +2, +5 and +10 s.
const FAST_UNKNOWN: &str = "sendTimeoutMs=1000,settlePollMs=200/300/500";

fn strict_015(extra: Value, config: Value) -> SimEnv {
    let mut s = json!({"profile": "strict", "version": "0.15.0", "bridge": "ready"});
    common::sim::merge(&mut s, &extra);
    SimEnv::new(s, config)
}

fn send(env: &SimEnv, target: &str, text: &str, key: &str) -> (Output, Value) {
    env.send_json(target, text, &["--idempotency-key", key])
}

fn reconcile(env: &SimEnv, key: &str) -> Value {
    let out = env.gw.run(&[
        "message",
        "reconcile",
        "--channel",
        "imessage",
        "--idempotency-key",
        key,
        "--json",
    ]);
    serde_json::from_str(&common::stdout(&out))
        .unwrap_or_else(|_| panic!("no receipt: {}", common::stderr(&out)))
}

fn requests(env: &SimEnv, method: &str) -> Vec<(i64, Value)> {
    env.requests_with_pid(method)
}

/// Two chunks at a 50-unit limit.
fn two_chunks() -> String {
    format!("{} {}", "a".repeat(45), "b".repeat(20))
}

#[test]
fn tracked_parts_carry_their_attempt_ids_and_a_repeat_sends_nothing_cases_192_195() {
    let env = strict_015(
        json!({}),
        json!({"channels": {"imessage": {"textChunkLimit": 50}}}),
    );
    let (out, receipt) = send(&env, "chat_id:7", &two_chunks(), "q-42");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let tracked = requests(&env, "send.tracked");
    assert_eq!(tracked.len(), 2);
    assert_eq!(tracked[0].1["attempt_id"], A0);
    assert_eq!(tracked[1].1["attempt_id"], A1);
    for (i, a) in [A0, A1].iter().enumerate() {
        assert_eq!(receipt["parts"][i]["outcome"], "sent");
        assert_eq!(receipt["parts"][i]["attemptId"], *a);
        assert_eq!(receipt["parts"][i]["messageId"], *a);
    }
    assert_eq!(receipt["idempotencyKey"], "q-42");
    assert!(receipt.get("replayed").is_none());
    // The host retries: nothing is written, the receipt is replayed from the ledger.
    let (out, again) = send(&env, "chat_id:7", &two_chunks(), "q-42");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(again["replayed"], true);
    assert_eq!(again["messageIds"], json!([A0, A1]));
    assert_eq!(requests(&env, "send.tracked").len(), 2, "no second send");
    // Other content under the same key is refused, nothing written.
    let (out, _) = send(&env, "chat_id:7", "something else", "q-42");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("idempotencyKey q-42 was already used for different content")
    );
    assert_eq!(env.sends().len(), 2);
}

#[test]
fn a_rate_limited_part_is_the_only_one_sent_on_the_repeat_case_195() {
    // One token per conversation and no waiting: the second chunk is held.
    let env = strict_015(
        json!({}),
        json!({"channels": {"imessage": {"textChunkLimit": 50,
            "rateLimit": {"chatBurst": 1, "chatPerMinute": 60, "maxWaitMs": 0}}}}),
    );
    let (out, receipt) = send(&env, "chat_id:7", &two_chunks(), "q-42");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(receipt["parts"][0]["outcome"], "sent");
    assert_eq!(receipt["parts"][1]["outcome"], "not_sent");
    assert!(receipt["parts"][1]["error"]
        .as_str()
        .unwrap()
        .starts_with("rate limited: waited 0 ms for a send slot"));
    let retry_after = receipt["parts"][1]["retryAfterMs"].as_u64().unwrap();
    assert!(retry_after > 0);
    // A timer, not "nothing happened": the bucket refills after the time the receipt names.
    std::thread::sleep(Duration::from_millis(retry_after + 100));
    let (out, receipt) = send(&env, "chat_id:7", &two_chunks(), "q-42");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(receipt["replayed"], true);
    let tracked = requests(&env, "send.tracked");
    assert_eq!(tracked.len(), 2, "the first part was not written again");
    assert_eq!(tracked[1].1["attempt_id"], A1);
}

#[test]
fn a_lost_reply_is_settled_by_send_status_on_another_child_case_193() {
    let env = strict_015(
        json!({"send": {"mode": "lost_reply"}}),
        json!({"channels": {"imessage": {"sendTimeoutMs": 10000}}}),
    );
    env.gw.set_timings(FAST_UNKNOWN);
    let (out, receipt) = send(&env, "chat_id:7", "on my way", "q-42");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(receipt["parts"][0]["outcome"], "sent");
    assert_eq!(receipt["parts"][0]["reconciled"], true);
    assert_eq!(receipt["parts"][0]["messageId"], A0);
    let tracked = requests(&env, "send.tracked");
    assert_eq!(tracked.len(), 1, "exactly one send.tracked");
    let status = requests(&env, "message.send_status");
    assert_eq!(status[0].1, json!({"guid": A0}));
    assert_ne!(
        status[0].0, tracked[0].0,
        "asked on a child other than the sender"
    );
}

#[test]
fn a_part_that_never_arrived_stays_unknown_and_is_never_resent_case_194() {
    let env = strict_015(
        json!({"send": {"mode": "lost_reply", "write_row": false}}),
        json!({"channels": {"imessage": {"sendTimeoutMs": 10000}}}),
    );
    env.gw.set_timings(FAST_UNKNOWN);
    let (out, receipt) = send(&env, "chat_id:7", "on my way", "q-42");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(receipt["parts"][0]["outcome"], "unknown");
    assert_eq!(
        requests(&env, "message.send_status").len(),
        3,
        "+2, +5, +10 s (shrunk)"
    );
    // The host repeats: asked once more, still unknown, nothing sent.
    let (_, again) = send(&env, "chat_id:7", "on my way", "q-42");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["parts"][0]["outcome"], "unknown");
    assert_eq!(requests(&env, "send.tracked").len(), 1);
    // The message turns up in chat.db after all (the next simulator process applies the
    // insert before it answers anything): reconciling settles it.
    env.insert(json!({"guid": A0, "chat_id": 7, "handle": "+15550001111", "from_me": true, "text": "on my way"}));
    let settled = reconcile(&env, "q-42");
    assert_eq!(settled["parts"][0]["outcome"], "sent");
    assert_eq!(settled["parts"][0]["reconciled"], true);
    assert_eq!(settled["replayed"], true);
    assert_eq!(requests(&env, "send.tracked").len(), 1);
}

#[test]
fn a_mismatch_stays_unknown_and_a_target_without_a_chat_goes_untracked_case_196() {
    let env = strict_015(json!({"send": {"mode": "tracked_mismatch"}}), json!({}));
    let (_, receipt) = send(&env, "chat_id:7", "hello", "m-1");
    assert_eq!(receipt["parts"][0]["outcome"], "unknown");
    let env = strict_015(
        json!({}),
        json!({"channels": {"imessage": {"allowFrom": ["*"], "dmPolicy": "open"}}}),
    );
    let (out, receipt) = send(&env, "imessage:+15557654321", "hi there", "n-1");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(requests(&env, "send.tracked").len(), 1);
    let plain = requests(&env, "send");
    assert_eq!(plain.len(), 1);
    assert!(plain[0].1.get("attempt_id").is_none());
    assert!(receipt["parts"][0].get("attemptId").is_none(), "{receipt}");
}

#[test]
fn an_untracked_unknown_is_settled_by_its_echo_case_197() {
    // Lenient 0.9: no send.tracked; the reply is lost, but the row reaches the watch.
    let env = SimEnv::new(
        json!({"send": {"mode": "lost_reply"}}),
        json!({"channels": {"imessage": {"sendTimeoutMs": 10000}}}),
    );
    env.gw.set_timings(FAST_UNKNOWN);
    let gateway = env.start(false);
    let (_, receipt) = send(&env, "chat_id:7", "see you soon", "u-1");
    assert_eq!(receipt["parts"][0]["outcome"], "unknown");
    let settled = reconcile(&env, "u-1");
    assert_eq!(settled["parts"][0]["outcome"], "sent", "{settled}");
    assert!(settled["parts"][0]["messageId"]
        .as_str()
        .unwrap()
        .starts_with("0A1B2C3D-"));
    // A repeat writes no send.
    let (_, again) = send(&env, "chat_id:7", "see you soon", "u-1");
    assert_eq!(again["parts"][0]["outcome"], "sent");
    assert_eq!(env.sends().len(), 1);
    assert!(requests(&env, "send.tracked").is_empty());
    assert!(gateway.stop().success());
}

#[test]
fn a_pending_line_left_by_a_crash_is_asked_about_never_resent_case_198() {
    for (delivered, want) in [(true, "sent"), (false, "unknown")] {
        let mut rows = vec![];
        if delivered {
            rows.push(json!({"id": 50, "guid": A0, "chat_id": 7, "handle": "+15550001111", "from_me": true, "text": "on my way"}));
        }
        let env = strict_015(json!({"messages": rows}), json!({}));
        // What a crash between writing `pending` and the answer leaves: send once with the
        // key to learn the hash, then turn its line back into `pending`.
        let probe = strict_015(json!({}), json!({}));
        send(&probe, "chat_id:7", "on my way", "q-42");
        let ledger =
            std::fs::read_to_string(probe.path("state/imessage/default/outbox.jsonl")).unwrap();
        let pending = ledger.lines().next().unwrap().to_string();
        assert!(pending.contains(r#""s":"pending""#), "{pending}");
        let dir = env.path("state/imessage/default");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("outbox.jsonl"), format!("{pending}\n")).unwrap();
        let (_, receipt) = send(&env, "chat_id:7", "on my way", "q-42");
        assert_eq!(receipt["parts"][0]["outcome"], want, "{receipt}");
        assert_eq!(receipt["replayed"], true);
        assert!(
            requests(&env, "send.tracked").is_empty(),
            "never a second send.tracked"
        );
        assert_eq!(requests(&env, "message.send_status").len(), 1);
    }
}
