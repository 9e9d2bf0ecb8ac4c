//! The CLI talks to the running gateway (issue 13): `channels status` shows the live state,
//! `message send` and `pairing` act through the gateway's plugin instance, a socket left by a
//! killed gateway is handled, a socket that is not the user's or not private is refused, and
//! many CLI calls at once all answer. Real processes throughout.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

#[test]
fn status_shows_the_running_gateways_live_state() {
    let env = SimEnv::new(json!({}), json!({}));
    // No gateway: said plainly, in both outputs.
    assert_eq!(env.status()["gateway"]["running"], false);
    let text = common::stdout(&env.gw.run(&["channels", "status"]));
    assert!(text.contains("no gateway is running"), "{text}");

    let gateway = env.start(false);
    let mode = std::fs::metadata(env.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(env.socket().parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "routed"}));
    env.insert(json!({"chat_id": 42, "handle": "+15550001111", "text": "not for the bot"}));
    gateway.wait_messages(1, WAIT);
    // Counters are published with the watcher's 100 ms flush.
    let mut account = Value::Null;
    wait_until("the counters in the live status", WAIT, || {
        let s = env.status();
        account = s["channels"][0].clone();
        s["gateway"]["running"] == true
            && account["routed"] == 1
            && account["drops"]["no_mention"] == 1
    });
    assert_eq!(account["state"], "watching");
    assert!(account["cursor"]["rowid"].as_i64().is_some(), "{account}");
    assert!(account["lastInboundAt"].is_string(), "{account}");
    let text = common::stdout(&env.gw.run(&["channels", "status"]));
    assert!(text.contains("gateway running (pid"), "{text}");
    assert!(text.contains("state=watching"), "{text}");
    assert!(gateway.stop().success());
    assert!(!env.socket().exists(), "a clean stop removes the socket");
}

#[test]
fn sends_and_pairing_go_through_the_running_gateway() {
    let env = SimEnv::new(json!({}), json!({}));
    let gateway = env.start(false);
    for text in ["first", "second"] {
        let out = env.gw.run(&[
            "message",
            "send",
            "--channel",
            "imessage",
            "--target",
            "chat_id:7",
            "--text",
            text,
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
        let receipt: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
        assert_eq!(receipt["ok"], true);
    }
    // Both parts went through one imsg process: the gateway's sender, not one per CLI call.
    let pids: std::collections::BTreeSet<i64> = env
        .record()
        .iter()
        .filter(|r| r["dir"] == "in" && r["line"].as_str().is_some_and(|l| l.contains("\"send\"")))
        .filter_map(|r| r["pid"].as_i64())
        .collect();
    assert_eq!(pids.len(), 1, "one sender process: {pids:?}");
    assert_eq!(env.sends().len(), 2);
    // Their rows come back on the watch and are not routed.
    wait_until("both rows back on the watch and dropped", WAIT, || {
        env.drops("from_me") >= 2
    });
    assert!(gateway.messages().is_empty());
    wait_until("the live status to show the send", WAIT, || {
        env.status()["channels"][0]["lastOutboundAt"].is_string()
    });

    // Pairing through the gateway: a stranger asks, the CLI lists, approves and revokes.
    env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "hello?"}));
    wait_until("the pairing reply", WAIT, || env.sends().len() >= 3);
    let listed = env.gw.run(&["pairing", "list", "imessage", "--json"]);
    let pending: Value = serde_json::from_str(&common::stdout(&listed)).unwrap();
    let code = pending[0]["code"].as_str().unwrap().to_string();
    let approved = env.gw.run(&["pairing", "approve", "imessage", &code]);
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        common::stderr(&approved)
    );
    env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "approved now"}));
    let routed = gateway.wait_messages(1, WAIT);
    assert_eq!(routed[0]["text"], "approved now");
    let revoked = env
        .gw
        .run(&["pairing", "revoke", "imessage", "+15550002222"]);
    assert_eq!(
        revoked.status.code(),
        Some(0),
        "{}",
        common::stderr(&revoked)
    );
    assert!(common::stdout(&revoked).contains("revoked +15550002222"));
    let again = env
        .gw
        .run(&["pairing", "revoke", "imessage", "+15550002222"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(gateway.stop().success());
}

#[test]
fn a_killed_gateways_socket_blocks_neither_the_cli_nor_the_next_gateway() {
    let env = SimEnv::new(json!({}), json!({}));
    let first = env.start(false);
    first.kill();
    assert!(env.socket().exists(), "SIGKILL leaves the socket behind");
    assert_eq!(env.status()["gateway"]["running"], false, "stale: one-shot");
    let second = env.spawn(false, &[]);
    wait_until("the stale socket removed", WAIT, || {
        env.stderr().contains("removing a stale control socket")
    });
    env.wait_watching();
    let status = env.status();
    assert_eq!(status["gateway"]["running"], true);
    assert_eq!(status["gateway"]["pid"], second.child.id());
    assert!(second.stop().success());
}

#[test]
fn a_socket_that_is_not_private_or_not_ours_is_refused() {
    let env = SimEnv::new(json!({}), json!({}));
    let path = env.socket();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.gw.run(&["channels", "status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("has mode 0666; a control socket must be 0600"),
        "{}",
        common::stderr(&out)
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: plain libc calls on a path we own.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let c = std::ffi::CString::new(path.display().to_string()).unwrap();
        // SAFETY: a valid C string; as root we may give the file away.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 4321, 4321) }, 0);
        let out = env.gw.send("chat_id:7", "x");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            common::stderr(&out).contains("belongs to uid 4321, not to you"),
            "{}",
            common::stderr(&out)
        );
        assert!(env.sends().is_empty(), "nothing was sent");
    }
}

#[test]
fn many_cli_calls_at_once_all_answer() {
    let env = std::sync::Arc::new(SimEnv::new(json!({}), json!({})));
    let gateway = env.start(false);
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let env = env.clone();
            std::thread::spawn(move || env.status())
        })
        .collect();
    for call in calls {
        let s = call.join().unwrap();
        assert_eq!(s["gateway"]["running"], true);
        assert_eq!(s["channels"][0]["state"], "watching");
    }
    assert!(gateway.stop().success());
}
