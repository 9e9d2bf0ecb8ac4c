//! Inbound tapbacks (issue 15, actions.md §2): a tapback on the agent's own message reaches
//! the host as one `reaction` event (host-stub prints it and never answers it); tapbacks on
//! other messages stay out under `own`; a stranger's tapback gets no pairing code; `off`
//! subscribes without reactions; a summary text (`Loved “…”`) is a tapback too.

use crate::common;

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

/// The GUID imsg-sim gives row `id`.
fn guid_for(id: i64) -> String {
    format!("0A1B2C3D-0000-4000-8000-{id:012}")
}

/// The row the first `send` wrote.
fn first_sent_guid(env: &SimEnv) -> String {
    let rows = env
        .record()
        .into_iter()
        .find(|r| r["effect"] == "send" && r["rows"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|r| r["rows"][0].as_i64().unwrap())
        .unwrap();
    guid_for(rows)
}

fn reaction_row(chat: i64, handle: &str, target: &str, kind: &str, text: &str) -> Value {
    json!({"chat_id": chat, "handle": handle, "text": text,
        "reaction": {"type": kind, "target_guid": target, "remove": false}})
}

fn lines_of(gateway: &common::sim::Running, kind: &str) -> Vec<Value> {
    gateway
        .messages()
        .into_iter()
        .filter(|m| m["type"] == kind)
        .collect()
}

#[test]
fn a_tapback_on_the_agents_reply_reaches_the_host_once() {
    let env = SimEnv::new(json!({}), json!({}));
    let gateway = env.start(true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello"}));
    wait_until("the echo reply", WAIT, || !env.sends().is_empty());
    let ours = first_sent_guid(&env);
    // ❤️ on the agent's reply, then 👍 on the owner's own message (not ours).
    env.insert(reaction_row(
        7,
        "+15550001111",
        &ours,
        "love",
        "Loved “echo: hello”",
    ));
    let hello = gateway.messages()[0]["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    env.insert(reaction_row(
        7,
        "+15550001111",
        &hello,
        "like",
        "Liked “hello”",
    ));
    wait_until("the reaction line", WAIT, || {
        !lines_of(&gateway, "reaction").is_empty()
    });
    // The 👍, inserted last, is handled (and counted) after the ❤️.
    wait_until("the tapback on the owner's message dropped", WAIT, || {
        env.drops("reaction_not_own") == 1
    });
    let reactions = lines_of(&gateway, "reaction");
    assert_eq!(
        reactions.len(),
        1,
        "only the tapback on our message: {reactions:?}"
    );
    let r = &reactions[0];
    assert_eq!(r["channel"], "imessage");
    assert_eq!(r["action"], "added");
    assert_eq!(r["kind"], "love");
    assert_eq!(r["emoji"], "❤️");
    assert_eq!(r["targetMessageId"], ours.as_str());
    assert_eq!(r["targetIsOwn"], true);
    assert_eq!(r["senderId"], "+15550001111");
    assert_eq!(r["to"], "chat_id:7");
    assert_eq!(r["sessionKey"], "agent:main:main");
    assert_eq!(
        r["text"],
        format!("iMessage reaction added: ❤️ by +15550001111 on msg {ours}")
    );
    assert_eq!(
        r["contextKey"],
        format!("imessage:reaction:added:7:{ours}:+15550001111:❤️")
    );
    assert!(env.stderr().contains("drop reason=reaction_not_own"));
    // The echo agent answered the message only, not the tapback.
    assert_eq!(env.sends().len(), 1);
    assert_eq!(lines_of(&gateway, "message").len(), 1);
    assert!(gateway.stop().success());
}

#[test]
fn a_strangers_tapback_gets_no_pairing_code() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"reactionNotifications": "all"}}}),
    );
    let gateway = env.start(false);
    env.insert(reaction_row(
        8,
        "+15550002222",
        &guid_for(1),
        "love",
        "Loved “hi”",
    ));
    wait_until("the drop", WAIT, || {
        env.stderr().contains("drop reason=pairing_pending")
    });
    wait_until("the drop counted", WAIT, || {
        env.drops("pairing_pending") == 1
    });
    // A later row is routed: the tapback was handled before it.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "later"}));
    assert!(gateway.wait_text("later").is_empty());
    assert!(env.sends().is_empty(), "no pairing code for a tapback");
    let pending = env.gw.run(&["pairing", "list", "imessage", "--json"]);
    assert_eq!(
        common::stdout(&pending).trim(),
        "[]",
        "no pairing request created"
    );
    assert!(gateway.stop().success());
}

#[test]
fn a_summary_text_is_a_tapback_and_off_turns_them_all_off() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"reactionNotifications": "all"}}}),
    );
    let gateway = env.start(false);
    // No reaction members: an SMS relay's summary.
    env.insert(
        json!({"chat_id": 7, "handle": "+15550001111", "text": "Laughed at “see you at 7”"}),
    );
    wait_until("the reaction line", WAIT, || !gateway.messages().is_empty());
    let r = &gateway.messages()[0];
    assert_eq!(r["type"], "reaction");
    assert_eq!(r["kind"], "laugh");
    assert_eq!(r["targetText"], "see you at 7");
    assert_eq!(r["targetIsOwn"], false);
    assert_eq!(
        r["text"],
        "iMessage reaction added: 😂 by +15550001111 on message \"see you at 7\""
    );
    assert!(gateway.stop().success());

    let off = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"reactionNotifications": "off"}}}),
    );
    let gateway = off.start(false);
    let subscribes: Vec<Value> = off
        .record()
        .into_iter()
        .filter(|r| r["dir"] == "in")
        .filter_map(|r| serde_json::from_str::<Value>(r["line"].as_str()?).ok())
        .filter(|v| v["method"] == "watch.subscribe")
        .map(|v| v["params"].clone())
        .collect();
    assert_eq!(subscribes, vec![json!({"attachments": false})]);
    off.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "Loved “x”"}));
    wait_until("the drop", WAIT, || {
        off.stderr().contains("drop reason=reaction_disabled")
    });
    assert!(gateway.messages().is_empty());
    assert!(gateway.stop().success());
}

#[test]
fn turning_reactions_on_by_reload_resubscribes_on_the_same_child_case_213() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"reactionNotifications": "off"}}}),
    );
    let gateway = env.start(false);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "before"}));
    gateway.wait_messages(1, WAIT);
    env.merge_config(json!({"channels": {"imessage": {"reactionNotifications": "all"}}}));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(gateway.child.id() as i32, libc::SIGHUP);
    }
    let subscribes = |env: &SimEnv| -> Vec<(i64, Value)> {
        env.record()
            .into_iter()
            .filter(|r| r["dir"] == "in")
            .filter_map(|r| {
                let line: Value = serde_json::from_str(r["line"].as_str()?).ok()?;
                (line["method"] == "watch.subscribe")
                    .then(|| (r["pid"].as_i64().unwrap_or(0), line["params"].clone()))
            })
            .collect()
    };
    wait_until("the resubscription", WAIT, || subscribes(&env).len() == 2);
    let subs = subscribes(&env);
    assert_eq!(subs[0].1, json!({"attachments": false}));
    assert_eq!(subs[1].1["include_reactions"], true);
    assert!(
        subs[1].1["since_rowid"].is_i64(),
        "from the cursor: {}",
        subs[1].1
    );
    assert_eq!(subs[0].0, subs[1].0, "the same imsg process");
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "Loved “before”"}));
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "after"}));
    gateway.wait_messages(3, WAIT);
    // A later row is routed: nothing before it can still come.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "marker"}));
    let lines = gateway.wait_text("marker");
    assert_eq!(gateway.messages().len(), 4);
    let texts: Vec<(String, String)> = lines
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(texts.len(), 3, "nothing lost or doubled: {lines:?}");
    assert_eq!(texts[0], ("message".into(), "before".into()));
    assert_eq!(texts[1].0, "reaction");
    assert_eq!(texts[2], ("message".into(), "after".into()));
    assert!(gateway.stop().success());
}
