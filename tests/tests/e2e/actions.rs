//! Message actions and native formatting end to end (issue 16, actions.md §3.3–§3.6, §5):
//! host-stub's `message react|edit|unsend` and `message send` against imsg-sim, through the
//! running gateway and one-shot, asserting the exact requests the simulator received.

use crate::common;
use crate::common::WAIT;

use std::process::Output;

use common::sim::{Running, SimEnv};
use serde_json::{json, Value};

const OWNER: &str = "imessage:+15550001111";
const OWNER_CHAT_GUID: &str = "iMessage;-;+15550001111";

fn run(env: &SimEnv, args: &[&str]) -> Output {
    // The lenient `imsg status --json` reads the scenario through the environment.
    env.gw
        .command()
        .env("IMSG_SIM_SCENARIO", env.path("scenario.json"))
        .args(args)
        .output()
        .unwrap()
}

fn action(env: &SimEnv, verb: &str, message_id: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "message",
        verb,
        "--channel",
        "imessage",
        "--target",
        OWNER,
        "--message-id",
        message_id,
    ];
    args.extend_from_slice(extra);
    run(env, &args)
}

fn json_out(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(out));
    serde_json::from_str(&common::stdout(out)).expect("--json prints one JSON value")
}

fn refused(out: &Output, reason: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "want {reason:?}; stdout {} stderr {}",
        common::stdout(out),
        common::stderr(out)
    );
    assert!(
        common::stderr(out).contains(reason),
        "want {reason:?} in {}",
        common::stderr(out)
    );
}

/// A gateway on a strict 0.15 simulator with the bridge ready, and the owner's DM routed.
fn gateway_with_a_routed_dm(scenario: Value, config: Value) -> (SimEnv, Running, String) {
    let mut s = json!({"profile": "strict", "version": "0.15.0", "bridge": "ready"});
    common::sim::merge(&mut s, &scenario);
    let env = SimEnv::new(s, config);
    let gateway = env.start(false);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "dinner at 7?"}));
    let routed = gateway.wait_messages(1, WAIT);
    let id = routed[0]["messageId"].as_str().unwrap().to_string();
    (env, gateway, id)
}

#[test]
fn tapbacks_go_by_name_to_the_chat_of_the_message_cases_182_to_185() {
    // Ten tapbacks to one chat: a burst above the default 5 would be paced at 3 s each.
    let (env, gateway, d0) = gateway_with_a_routed_dm(
        json!({}),
        json!({"channels": {"imessage": {"rateLimit": {"chatBurst": 20}}}}),
    );
    // 182: a classic kind always goes by name, whichever alias the host used.
    for how in [
        ["--reaction", "like"],
        ["--emoji", "👍"],
        ["--reaction", "+1"],
    ] {
        let result = json_out(&action(&env, "react", &d0, &[how[0], how[1], "--json"]));
        assert_eq!(
            result,
            json!({"ok": true, "accountId": "default", "messageId": d0, "reaction": "like", "removed": false})
        );
    }
    let sent = env.requests("tapback");
    assert_eq!(sent.len(), 3);
    for p in &sent {
        assert_eq!(
            *p,
            json!({"chat_guid": OWNER_CHAT_GUID, "message_guid": d0, "reaction": "like"})
        );
    }
    // 183: 0.15 reports tapback.emoji 2, so a custom emoji goes as itself.
    let result = json_out(&action(&env, "react", &d0, &["--emoji", "🎉", "--json"]));
    assert_eq!(result["emoji"], "🎉");
    assert_eq!(
        env.requests("tapback")[3],
        json!({"chat_guid": OWNER_CHAT_GUID, "message_guid": d0, "emoji": "🎉"})
    );
    // 184: removing with no kind named removes each kind, in order.
    let result = json_out(&action(&env, "react", &d0, &["--remove", "--json"]));
    assert_eq!(result["removed"], true);
    assert_eq!(
        result["reactions"],
        json!(["love", "like", "dislike", "laugh", "emphasize", "question"])
    );
    let removals: Vec<Value> = env.requests("tapback")[4..].to_vec();
    assert_eq!(removals.len(), 6);
    for (p, kind) in
        removals
            .iter()
            .zip(["love", "like", "dislike", "laugh", "emphasize", "question"])
    {
        assert_eq!(p["reaction"], kind);
        assert_eq!(p["remove"], true);
    }
    // 185: refusals write nothing.
    let before = env.requests("tapback").len();
    let out = env.gw.run(&[
        "message",
        "react",
        "--channel",
        "imessage",
        "--target",
        "chat_id:42",
        "--message-id",
        &d0,
        "--reaction",
        "love",
    ]);
    refused(
        &out,
        "belongs to a different chat; use the chat it arrived in",
    );
    refused(
        &action(&env, "react", &d0, &["--reaction", "wow"]),
        "iMessage react supports love, like, dislike, laugh, emphasize, and question tapbacks.",
    );
    let out = action(&env, "react", &d0, &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad usage: {}",
        common::stderr(&out)
    );
    assert_eq!(env.requests("tapback").len(), before);
    // The tapback rows the bridge wrote come back on the watch as our own: never routed. A
    // row written after them is routed, so they were handled before it.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "after the tapbacks"}));
    let before = gateway.wait_text("after the tapbacks");
    assert_eq!(before.len(), 1, "{:?}", gateway.messages());
    assert_eq!(gateway.messages().len(), 2, "{:?}", gateway.messages());
    assert!(gateway.stop().success());
}

#[test]
fn custom_emoji_needs_the_capability_and_a_stalled_bridge_is_an_unknown_outcome_183_186() {
    // 0.14 has no tapback.emoji: refused before anything is written.
    let (env, gateway, d0) = gateway_with_a_routed_dm(json!({"version": "0.14.0"}), json!({}));
    refused(
        &action(&env, "react", &d0, &["--emoji", "🎉"]),
        "custom emoji tapbacks need an imsg build that reports capabilities.features[\"tapback.emoji\"] >= 2",
    );
    assert!(env.requests("tapback").is_empty());
    // 186: the bridge stalls (imsg answers "Timed out waiting for response" after 10 s; the
    // simulator here after 300 ms): possibly done, never retried.
    env.inbox_applied(json!({"op": "set", "bridge": {"timeout_ms": 300}}));
    let out = action(&env, "react", &d0, &["--reaction", "love"]);
    refused(&out, "tapback may have taken effect; not retried");
    assert_eq!(env.requests("tapback").len(), 1, "exactly one request");
    assert!(gateway.stop().success());
}

/// Sends `text` to the owner one-shot and returns the first part's message id.
fn send_one_shot(env: &SimEnv, text: &str) -> String {
    let (out, receipt) = env.send_json(OWNER, text, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    receipt["messageIds"][0]
        .as_str()
        .expect("a message id")
        .to_string()
}

/// Moves the recorded send time of every own message back by `ms` (the state file a
/// one-shot process reads).
fn age_own_messages(env: &SimEnv, ms: i64) {
    let path = env.path("state/imessage/default/sent.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let aged: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["at"] = json!(v["at"].as_i64().unwrap() - ms);
            v.to_string()
        })
        .collect();
    std::fs::write(&path, aged.join("\n") + "\n").unwrap();
}

#[test]
fn edit_and_unsend_own_messages_one_shot_cases_187_to_189() {
    let env = SimEnv::new(
        json!({"profile": "strict", "version": "0.15.0", "bridge": "ready"}),
        json!({}),
    );
    let s1 = send_one_shot(&env, "See you at 7");
    // 187: a separate process knows S1 is ours and which chat it is in (sent.jsonl).
    let result = json_out(&action(
        &env,
        "edit",
        &s1,
        &["--text", "See you at **8**", "--json"],
    ));
    assert_eq!(
        result,
        json!({"ok": true, "accountId": "default", "messageId": s1, "edits": 1})
    );
    assert_eq!(
        env.requests("message.edit"),
        vec![json!({"chat_guid": OWNER_CHAT_GUID, "message_guid": s1, "text": "See you at 8"})]
    );
    let edits: Vec<Value> = env
        .record()
        .into_iter()
        .filter(|r| r["effect"] == "edit")
        .collect();
    assert_eq!(edits.len(), 1);
    // The edit count persists: the next edit is the second.
    let result = json_out(&action(
        &env,
        "edit",
        &s1,
        &["--text", "See you at 9", "--json"],
    ));
    assert_eq!(result["edits"], 2);
    // 189: unsend within two minutes.
    let out = action(&env, "unsend", &s1, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out).trim(), format!("unsent {s1}"));
    assert_eq!(
        env.requests("message.unsend"),
        vec![json!({"chat_guid": OWNER_CHAT_GUID, "message_guid": s1})]
    );
    // 188/189: past the windows, refused before anything is written.
    let s2 = send_one_shot(&env, "second");
    age_own_messages(&env, 3 * 60_000);
    refused(
        &action(&env, "unsend", &s2, &[]),
        "iMessage unsend is only possible within 2 minutes of sending",
    );
    age_own_messages(&env, 13 * 60_000);
    refused(
        &action(&env, "edit", &s2, &["--text", "x"]),
        "iMessage edit is only possible within 15 minutes of sending, at most 5 times",
    );
    refused(
        &action(&env, "edit", "0A1B2C3D-NOT-OURS", &["--text", "x"]),
        "iMessage edit only works on messages this account sent",
    );
    assert_eq!(env.requests("message.edit").len(), 2);
    assert_eq!(env.requests("message.unsend").len(), 1);
}

#[test]
fn disabled_gates_and_a_missing_bridge_write_nothing_cases_185_190() {
    // Lenient 0.9 with the bridge absent: the reason is the bridge, and no bridge method is
    // written (a lenient imsg would relaunch Messages.app).
    let env = SimEnv::new(json!({}), json!({}));
    let s1 = send_one_shot(&env, "hello");
    for (verb, extra) in [
        ("react", vec!["--reaction", "love"]),
        ("edit", vec!["--text", "x"]),
        ("unsend", vec![]),
    ] {
        refused(
            &action(&env, verb, &s1, &extra),
            &format!("iMessage {verb} is not available: the imsg private API bridge is not running (run imsg launch)"),
        );
    }
    for m in ["tapback", "message.edit", "message.unsend"] {
        assert!(env.requests(m).is_empty(), "{m} written");
    }
    env.merge_config(
        json!({"channels": {"imessage": {"actions": {"reactions": false, "edit": false}}}}),
    );
    refused(
        &action(&env, "react", &s1, &["--reaction", "love"]),
        "iMessage react is disabled in config.",
    );
    refused(
        &action(&env, "edit", &s1, &["--text", "x"]),
        "iMessage edit is disabled in config.",
    );
}

#[test]
fn markdown_goes_out_as_native_formatting_where_imsg_renders_it_cases_203_206() {
    let env = SimEnv::new(json!({"profile": "strict", "bridge": "ready"}), json!({}));
    send_one_shot(&env, "**bold** text");
    let sends: Vec<Value> = env
        .record()
        .into_iter()
        .filter(|r| r["effect"] == "send")
        .collect();
    assert_eq!(sends[0]["params"]["text"], "bold text");
    assert_eq!(
        sends[0]["params"]["text_formatting"],
        json!([{"start": 0, "length": 4, "styles": ["bold"]}])
    );
    assert_eq!(sends[0]["formatting"], "applied");
    // A part without ranges carries no key.
    send_one_shot(&env, "plain");
    assert!(env.sends()[1].get("text_formatting").is_none());
    // Lenient 0.9 cannot take ranges: clean text, no key; nor does it thread (case 191).
    let env = SimEnv::new(json!({"bridge": "ready"}), json!({}));
    let (out, _) = env.send_json(OWNER, "**bold** text", &["--reply-to", "PARENT"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let sent = env.sends();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["text"], "bold text");
    assert!(sent[0].get("text_formatting").is_none(), "{sent:?}");
    assert!(sent[0].get("reply_to").is_none(), "{sent:?}");
    // textFormatting "off": verbatim.
    env.merge_config(json!({"channels": {"imessage": {"textFormatting": "off"}}}));
    send_one_shot(&env, "**bold** text");
    assert_eq!(env.sends()[1]["text"], "**bold** text");
}
