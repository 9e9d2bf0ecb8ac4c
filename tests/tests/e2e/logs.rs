//! Issue 21 item 6: nothing the gateway logs above debug level carries a handle, a message's
//! text or an attachment's file name. One run goes through as many paths as it can, then
//! every INFO/WARN/ERROR record of host-stub's log is scanned for what the run used.

use crate::common;

use common::sim::{chats, wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;
/// Must match `imessage::watcher::FAULT_PANIC_TEXT` (its panic message quotes the sender).
const PANIC_TEXT: &str = "__imessage_fault_injection_panic__";

const OWNER: &str = "+15550001111";
const STRANGER: &str = "+15550002222";
const MEMBER: &str = "+15550003333";
const UNREACHABLE: &str = "+15550004444";
const EMAIL: &str = "secret.person@example.com";
const ATTACHMENT: &str = "Passport_Scan_Zq7.jpeg";

/// Every form a handle of the run may take in a log line, the texts, the file name.
fn secrets() -> Vec<&'static str> {
    vec![
        OWNER,
        "5550001111",
        STRANGER,
        "5550002222",
        MEMBER,
        "5550003333",
        UNREACHABLE,
        "5550004444",
        EMAIL,
        "secret.person",
        "owner-text-zebra",
        "stranger-text-quokka",
        "email-text-narwhal",
        "group-text-axolotl",
        "mention-text-pangolin",
        "member-text-okapi",
        "cli-text-tapir",
        "Passport_Scan",
    ]
}

/// The log's lines at INFO, WARN or ERROR level, and every line with no level at all (what
/// something printed to stderr past the log, as the default panic hook does).
fn lines_above_debug(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            let stamp = words.next().unwrap_or("");
            let stamped = stamp.len() > 20
                && stamp.ends_with('Z')
                && stamp.chars().take(4).all(|c| c.is_ascii_digit());
            !(stamped && matches!(words.next(), Some("DEBUG" | "TRACE")))
        })
        .collect()
}

fn scenario(env_home: &str) -> Value {
    let mut list = chats();
    list.as_array_mut().unwrap().push(json!({
        "id": 9, "identifier": EMAIL, "guid": format!("iMessage;-;{EMAIL}"),
        "service": "iMessage", "participants": [EMAIL],
    }));
    json!({"chats": list, "home": env_home})
}

/// A simulated Mac home holding the attachment under Messages/Attachments.
fn home_with_attachment(env: &SimEnv) -> String {
    let home = env.path("home");
    let file = home.join(format!("Library/Messages/Attachments/ab/01/X/{ATTACHMENT}"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![7u8; 1024]).unwrap();
    home.display().to_string()
}

fn row(chat: i64, handle: &str, text: &str) -> Value {
    json!({"chat_id": chat, "handle": handle, "text": text})
}

/// Drives the paths: routed DMs with echo replies, pairing (phone and email), group drops
/// and mentions, a panic that is quarantined, an attachment, imsg noise and stderr that
/// quote a handle, and a CLI send that imsg refuses with an error quoting the target.
fn exercise(env: &SimEnv, gateway: &common::sim::Running) {
    env.insert(row(7, OWNER, "owner-text-zebra"));
    gateway.wait_messages(1, WAIT);
    wait_until("the echo reply", WAIT, || !env.sends().is_empty());
    env.insert(row(8, STRANGER, "stranger-text-quokka"));
    env.insert(row(9, EMAIL, "email-text-narwhal"));
    wait_until("both pairing replies", WAIT, || {
        let sends = env.sends();
        [8, 9]
            .iter()
            .all(|c| sends.iter().any(|s| s["chat_id"] == *c))
    });
    env.insert(row(42, OWNER, "group-text-axolotl"));
    env.insert(row(42, MEMBER, "@bot member-text-okapi"));
    env.insert(row(42, OWNER, "@bot mention-text-pangolin"));
    env.insert(row(7, OWNER, PANIC_TEXT));
    env.insert(json!({"chat_id": 7, "handle": OWNER, "text": "\u{fffc}",
        "attachments": [{"filename": format!("~/Library/Messages/Attachments/ab/01/X/{ATTACHMENT}"),
            "transfer_name": ATTACHMENT, "mime_type": "image/jpeg", "uti": "public.jpeg",
            "total_bytes": 1024, "missing": false}]}));
    wait_until("the mention and the attachment routed", WAIT, || {
        let routed = gateway.messages();
        routed
            .iter()
            .any(|m| m["text"] == "@bot mention-text-pangolin")
            && routed
                .iter()
                .any(|m| m["media"].as_array().is_some_and(|a| a.len() == 1))
    });
    wait_until("the quarantine", WAIT, || {
        env.stderr().contains("panicked twice and was quarantined")
    });
    assert!(env.stderr().contains("drop reason=no_mention"));

    env.inbox(
        json!({"op": "stdout", "line": format!("lookup of {OWNER} failed: owner-text-zebra")}),
    );
    env.inbox(json!({"op": "stderr", "line": format!("warning: {STRANGER} stranger-text-quokka")}));
    let before = gateway.messages().len();
    env.insert(row(7, OWNER, "owner-text-zebra again"));
    gateway.wait_messages(before + 1, WAIT);
    wait_until("imsg's noise and stderr logged", WAIT, || {
        let log = env.stderr();
        log.contains("imsg wrote non-JSON output") && log.contains("stranger-text-quokka")
    });

    env.inbox_applied(json!({"op": "set", "send": {"mode": "applescript_error",
        "text": format!("buddy {UNREACHABLE} is not reachable")}}));
    let out = env.gw.send(UNREACHABLE, "cli-text-tapir");
    assert_ne!(out.status.code(), Some(0), "{}", common::stderr(&out));
    wait_until("the failed send logged", WAIT, || {
        env.stderr().contains("send failed")
    });
}

#[test]
fn no_handle_text_or_file_name_is_logged_above_debug_issue_21() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"includeAttachments": true}}}),
    );
    let home = home_with_attachment(&env);
    env.merge_scenario(scenario(&home));
    env.merge_config(json!({"channels": {"imessage": {
        "attachmentRoots": [format!("{home}/Library/Messages/Attachments")]}}}));
    let gateway = env.start(true);
    exercise(&env, &gateway);
    assert!(gateway.stop().success());

    let log = env.stderr();
    // The run did reach the debug log with what it used: the scan below is not vacuous.
    for used in [OWNER, STRANGER, "owner-text-zebra", "stranger-text-quokka"] {
        assert!(log.contains(used), "{used} is not in the debug log at all");
    }
    let shown = lines_above_debug(&log);
    assert!(shown.iter().any(|r| r.contains("watching for messages")));
    let leaks: Vec<&str> = shown
        .iter()
        .filter(|r| secrets().iter().any(|s| r.contains(s)))
        .copied()
        .collect();
    assert!(
        leaks.is_empty(),
        "logged above debug:\n{}",
        leaks.join("\n")
    );
}
