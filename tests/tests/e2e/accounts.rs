//! Issue 6 end to end: attachments and the remote Mac, several accounts, probe codes in
//! `channels status --probe --json`, and `/config set` reaching the host's config file.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

fn script(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A simulated Mac home with one attachment file under Messages/Attachments.
fn home_with_attachment(env: &SimEnv) -> (String, std::path::PathBuf) {
    let home = env.path("home");
    let file = home.join("Library/Messages/Attachments/ab/01/X/IMG_1.jpeg");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![7u8; 2048]).unwrap();
    (home.display().to_string(), file)
}

fn attachment_row(filename: &str) -> Value {
    json!({"chat_id": 7, "handle": "+15550001111", "text": "\u{fffc}",
        "attachments": [{"filename": filename, "transfer_name": "IMG_1.jpeg", "mime_type": "image/jpeg",
                         "uti": "public.jpeg", "total_bytes": 2048, "missing": false}]})
}

/// A home with one attachment, and the account reading attachments from its roots (the
/// scenario's home and the roots are rewritten now that the paths exist).
fn with_attachment_roots(env: &SimEnv) {
    let (home, _file) = home_with_attachment(env);
    env.merge_scenario(json!({"home": home}));
    env.merge_config(json!({"channels": {"imessage": {"includeAttachments": true,
        "attachmentRoots": [format!("{home}/Library/Messages/Attachments")]}}}));
}

#[test]
fn attachments_inside_the_roots_are_staged_and_others_are_not() {
    let env = SimEnv::new(json!({}), json!({}));
    with_attachment_roots(&env);

    let gateway = env.start(false);
    env.insert(attachment_row(
        "~/Library/Messages/Attachments/ab/01/X/IMG_1.jpeg",
    ));
    env.insert(attachment_row("/etc/passwd"));
    let routed = gateway.wait_messages(2, WAIT);
    let staged = &routed[0];
    assert_eq!(staged["text"], "<media:image>");
    let media = staged["media"].as_array().unwrap();
    assert_eq!(media.len(), 1);
    let path = media[0]["path"].as_str().unwrap();
    assert!(path.contains("/state/imessage/media/default/"), "{path}");
    assert_eq!(media[0]["mime"], "image/jpeg");
    assert_eq!(media[0]["size"], 2048);
    assert_eq!(std::fs::read(path).unwrap(), vec![7u8; 2048]);
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let outside = &routed[1];
    assert_eq!(outside["text"], "<media:unavailable>");
    assert_eq!(outside["media"], json!([]));
    assert!(gateway.stop().success());
}

#[test]
fn staging_also_cleans_old_media_while_the_gateway_runs_issue_21() {
    let env = SimEnv::new(json!({}), json!({}));
    with_attachment_roots(&env);
    let gateway = env.start(false);
    // Staged two days and a minute ago, after the clean at start.
    let media = env.path("state/imessage/media/default");
    std::fs::create_dir_all(&media).unwrap();
    let old = media.join("old-0-IMG_0.jpeg");
    std::fs::write(&old, b"old").unwrap();
    let two_days = Duration::from_secs(48 * 3600 + 60);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - two_days)
        .unwrap();
    env.insert(attachment_row(
        "~/Library/Messages/Attachments/ab/01/X/IMG_1.jpeg",
    ));
    let routed = gateway.wait_messages(1, WAIT);
    let staged = routed[0]["media"][0]["path"].as_str().unwrap().to_string();
    wait_until("the old file cleaned", WAIT, || !old.exists());
    assert!(std::path::Path::new(&staged).exists(), "the new file stays");
    assert!(gateway.stop().success());
}

#[test]
fn remote_attachments_are_fetched_with_the_exact_scp_argv() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"remoteHost": "bot@mac", "includeAttachments": true}}}),
    );
    let (home, file) = home_with_attachment(&env);
    env.merge_scenario(json!({"home": home}));
    env.merge_config(json!({"channels": {"imessage": {"attachmentRoots": [format!("{home}/Library/Messages/Attachments")]}}}));
    // A stand-in scp: records its argv, then copies `host:path` from the local disk.
    let argv_log = env.path("scp.argv");
    let scp = env.path("scp");
    script(
        &scp,
        &format!(
            "for a in \"$@\"; do printf '%s\\n' \"$a\" >> '{}'; done\nfor last; do :; done\nsrc=$(eval echo \\${{$(($#-1))}})\ncp \"${{src#bot@mac:}}\" \"$last\"",
            argv_log.display()
        ),
    );
    let gateway = env.start_with_env(false, &[("IMESSAGE_SCP", scp.to_str().unwrap())]);
    // Case 136: a group message dropped for want of a mention fetches nothing.
    let mut group = attachment_row("~/Library/Messages/Attachments/ab/01/X/IMG_1.jpeg");
    group["chat_id"] = json!(42);
    env.insert(group);
    env.insert(attachment_row(
        "~/Library/Messages/Attachments/ab/01/X/IMG_1.jpeg",
    ));
    let routed = gateway.wait_messages(1, WAIT);
    let path = routed[0]["media"][0]["path"]
        .as_str()
        .expect("a staged media item")
        .to_string();
    let argv: Vec<String> = std::fs::read_to_string(&argv_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        argv,
        vec![
            "-o".to_string(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "--".into(),
            format!("bot@mac:{}", file.display()),
            path.clone(),
        ]
    );
    assert!(path.contains("/state/imessage/media/default/"));
    assert!(
        env.stderr().contains("drop reason=no_mention"),
        "the group message was dropped before staging"
    );
    assert_eq!(std::fs::read(&path).unwrap().len(), 2048);
    assert!(gateway.stop().success());
}

#[test]
fn two_accounts_route_and_reply_through_their_own_simulators() {
    let env = SimEnv::new(json!({}), json!({}));
    // A second simulated database for account "work".
    let dir = env.gw.path();
    let work_scenario = json!({
        "clock": {"start": "now", "mode": "running"}, "chats": common::sim::chats(), "messages": [],
        "control": {"inbox": dir.join("work-inbox.jsonl"), "record": dir.join("work-record.jsonl"),
                    "shared": dir.join("work.journal")},
    });
    std::fs::write(dir.join("work-inbox.jsonl"), "").unwrap();
    std::fs::write(dir.join("work-scenario.json"), work_scenario.to_string()).unwrap();
    env.merge_config(json!({
        "session": {"dmScope": "per-account-channel-peer"},
        "channels": {"imessage": {"accounts": {
            "default": {},
            "work": {"dbPath": dir.join("work-scenario.json").display().to_string()},
        }}},
    }));
    let gateway = env.start(true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "to home"}));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("work-inbox.jsonl"))
        .unwrap();
    use std::io::Write;
    writeln!(
        f,
        "{}",
        json!({"op": "insert", "row": {"chat_id": 7, "handle": "+15550001111", "text": "to work"}})
    )
    .unwrap();
    let routed = gateway.wait_messages(2, WAIT);
    let by_text = |t: &str| routed.iter().find(|m| m["text"] == t).unwrap().clone();
    assert_eq!(
        by_text("to home")["sessionKey"],
        "agent:main:imessage:default:direct:+15550001111"
    );
    assert_eq!(
        by_text("to work")["sessionKey"],
        "agent:main:imessage:work:direct:+15550001111"
    );
    assert_eq!(by_text("to work")["accountId"], "work");
    let work_sends = || -> Vec<Value> {
        std::fs::read_to_string(dir.join("work-record.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["effect"] == "send")
            .map(|r| r["params"].clone())
            .collect()
    };
    wait_until("both echo replies", WAIT, || {
        !env.sends().is_empty() && !work_sends().is_empty()
    });
    assert_eq!(env.sends()[0]["text"], "echo: to home");
    assert_eq!(work_sends()[0]["text"], "echo: to work");
    assert!(gateway.stop().success());
}

#[test]
fn channels_status_probe_reports_each_failure_by_code() {
    let env = SimEnv::new(json!({}), json!({}));
    let dir = env.gw.path().to_path_buf();
    let old = dir.join("imsg-old");
    script(&old, "echo \"Error: Unknown command 'rpc'\"; exit 1");
    let denied = dir.join("denied.json");
    std::fs::write(
        &denied,
        json!({"faults": {"startup": "fda_denied"}}).to_string(),
    )
    .unwrap();
    let banner = dir.join("banner.json");
    let banner_scenario = json!({"version": "0.8.1", "faults": {"startup": "fda_denied"}});
    std::fs::write(&banner, banner_scenario.to_string()).unwrap();
    let slow = dir.join("slow.json");
    std::fs::write(
        &slow,
        json!({"faults": {"delay_ms": {"chats.list": 3000}}}).to_string(),
    )
    .unwrap();
    let sim = common::imsg_sim().display().to_string();
    env.merge_config(json!({"channels": {"imessage": {"accounts": {
        "healthy": {},
        "old": {"cliPath": old.display().to_string()},
        "missing": {"cliPath": "/nonexistent/imsg"},
        "denied": {"cliPath": sim, "dbPath": denied.display().to_string()},
        "banner": {"cliPath": sim, "dbPath": banner.display().to_string()},
        "slow": {"cliPath": sim, "dbPath": slow.display().to_string(), "probeTimeoutMs": 1000},
        "bare": {"cliPath": "imsg"},
    }}}}));
    let out = env.gw.run(&["channels", "status", "--probe", "--json"]);
    assert_eq!(out.status.code(), Some(1), "not every account is healthy");
    let report: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let probe = |id: &str| {
        report["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["accountId"] == id)
            .unwrap_or_else(|| panic!("no {id} in {report}"))["probe"]
            .clone()
    };
    assert_eq!(probe("healthy")["ok"], true);
    assert_eq!(probe("healthy")["checks"].as_array().unwrap().len(), 5);
    assert_eq!(probe("healthy")["remoteHostSource"], "none");
    assert_eq!(probe("old")["code"], "rpc_unsupported");
    assert_eq!(probe("old")["fatal"], true);
    assert_eq!(probe("missing")["code"], "cli_not_found");
    assert_eq!(probe("denied")["code"], "permission_denied");
    assert_eq!(probe("denied")["fatal"], true);
    assert_eq!(
        probe("banner")["code"],
        "permission_denied",
        "the pre-0.8.2 banner style"
    );
    assert_eq!(probe("slow")["code"], "timeout");
    assert_eq!(probe("slow")["fatal"], false);
    assert_eq!(
        probe("slow")["error"],
        "imsg did not answer chats.list within 1000 ms"
    );
    if !cfg!(target_os = "macos") {
        assert_eq!(probe("bare")["code"], "not_macos");
    }
    for c in report["channels"].as_array().unwrap() {
        assert_eq!(c["channel"], "imessage");
        assert!(c["probe"]["elapsedMs"].is_u64());
    }
}

fn config_file() -> impl Fn(&SimEnv) -> Value {
    |env: &SimEnv| {
        serde_json::from_str(&std::fs::read_to_string(env.gw.config_path()).unwrap()).unwrap()
    }
}

#[test]
fn config_set_from_the_owner_updates_the_config_file() {
    let env = SimEnv::new(json!({}), json!({"commands": {"config": true}}));
    let read = config_file();
    let gateway = env.start(false);
    // Both forms of §9.2: the space form, then OpenClaw's `path=value`.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "/config set channels.imessage.textChunkLimit 2000"}));
    let routed = gateway.wait_messages(1, WAIT);
    assert_eq!(routed[0]["commandAuthorized"], true);
    wait_until("the config write", WAIT, || {
        read(&env)["channels"]["imessage"]["textChunkLimit"] == 2000
    });
    assert!(env.gw.path().join("gateway.json5.bak").exists());
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "/config set channels.imessage.textChunkLimit=3000"}));
    gateway.wait_messages(2, WAIT);
    wait_until("the second config write", WAIT, || {
        read(&env)["channels"]["imessage"]["textChunkLimit"] == 3000
    });
    assert!(gateway.stop().success());
    // The written config starts: a restart routes again.
    let gateway = env.start(false);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "after restart"}));
    let routed = gateway.wait_messages(1, WAIT);
    assert_eq!(routed[0]["text"], "after restart");
    assert!(gateway.stop().success());
}

#[test]
fn an_invalid_or_malformed_config_write_changes_nothing_and_says_why() {
    let env = SimEnv::new(json!({}), json!({"commands": {"config": true}}));
    let read = config_file();
    let before = read(&env);
    let gateway = env.start(false);
    // Valid syntax, invalid value: the host validates the whole result and writes nothing.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "/config set channels.imessage.textChunkLimit=10"}));
    wait_until("the refusal reply", WAIT, || {
        env.sends().iter().any(|s| {
            s["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Config not changed: "))
        })
    });
    let reply = env
        .sends()
        .into_iter()
        .find(|s| {
            s["text"]
                .as_str()
                .unwrap_or("")
                .starts_with("Config not changed")
        })
        .unwrap();
    assert_eq!(
        reply["text"],
        "Config not changed: channels.imessage.textChunkLimit: must be an integer from 50 to 20000"
    );
    assert_eq!(reply["chat_id"], 7, "answered in the DM's own chat");
    // An unknown field would brick the next start: refused the same way.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "/config set channels.imessage.textChunkLimt=3000"}));
    wait_until("the unknown-field refusal", WAIT, || {
        env.sends().iter().any(|s| {
            s["text"] == "Config not changed: channels.imessage.textChunkLimt: unknown field"
        })
    });
    // No path at all: usage, and nothing reaches the host.
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "/config set =3000"}));
    wait_until("the usage reply", WAIT, || {
        env.sends()
            .iter()
            .any(|s| s["text"] == "Usage: /config set path=value")
    });
    assert!(env.stderr().contains("drop reason=config_malformed"));
    assert_eq!(read(&env), before, "the config file is unchanged");
    assert!(!env.gw.path().join("gateway.json5.bak").exists());
    assert!(gateway.stop().success());
    // And the gateway still starts with it.
    let gateway = env.start(false);
    assert!(gateway.stop().success());
}

#[test]
fn sighup_reloads_policy_in_place_and_restarts_on_a_new_cli_path_case_159() {
    let env = SimEnv::new(json!({}), json!({}));
    let gateway = env.start(false);
    let hup = |g: &common::sim::Running| {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(g.child.id() as i32, libc::SIGHUP);
        }
    };
    env.merge_config(
        json!({"channels": {"imessage": {"allowFrom": ["+15550001111", "+15550002222"]}}}),
    );
    hup(&gateway);
    wait_until("the reload", WAIT, || {
        env.stderr().contains("config reloaded")
    });
    env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "now allowed"}));
    let routed = gateway.wait_messages(1, WAIT);
    assert_eq!(routed[0]["senderId"], "+15550002222");
    assert!(
        env.sends().is_empty(),
        "no pairing reply: the new allowFrom applied"
    );
    assert_eq!(env.subscriptions().len(), 1, "same imsg process");

    // A new cliPath (a wrapper around the same simulator) restarts the watcher.
    let wrapper = env.path("imsg-wrapper");
    script(
        &wrapper,
        &format!("exec '{}' \"$@\"", common::imsg_sim().display()),
    );
    env.merge_config(json!({"channels": {"imessage": {"cliPath": wrapper.display().to_string()}}}));
    hup(&gateway);
    wait_until("a new watcher", WAIT, || env.subscriptions().len() == 2);
    assert_ne!(
        env.subscriptions()[0],
        env.subscriptions()[1],
        "a new imsg process"
    );
    env.wait_watching();
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "after restart"}));
    let routed = gateway.wait_messages(2, WAIT);
    assert_eq!(routed[1]["text"], "after restart");

    // A broken file is reported and the running config stays.
    std::fs::write(env.gw.config_path(), "{ broken").unwrap();
    hup(&gateway);
    wait_until("the reload error", WAIT, || {
        env.stderr().contains("SIGHUP: config not reloaded")
    });
    assert!(gateway.stop().success());
}

#[test]
fn a_blocked_account_resumes_once_access_is_granted_case_160() {
    let env = SimEnv::new(json!({"faults": {"startup": "fda_denied"}}), json!({}));
    let gateway = env.spawn(false, &[("IMESSAGE_BLOCKED_RETRY_SECS", "1")]);
    wait_until("the permission failure", WAIT, || {
        env.stderr().contains("grant Full Disk Access")
    });
    env.wait_state("default", "blocked");
    // Granting access: the simulated Mac no longer fails at startup.
    env.merge_scenario(json!({"faults": {"startup": null}}));
    env.wait_watching();
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "access granted"}));
    let routed = gateway.wait_messages(1, WAIT);
    assert_eq!(routed[0]["text"], "access granted");
    assert!(gateway.stop().success());
}

/// Case 147 through host-stub: a stranger's (or a non-owner's) deeply nested `/config` value
/// under every DM policy leaves the gateway running, is dropped without a reply, and the next
/// DM is routed; after a restart too. The 10 KB value once overflowed a worker's stack and
/// killed the gateway at every start.
#[test]
fn nested_config_values_from_anyone_but_the_owner_never_reach_a_parser_case_147() {
    let nested = |n: usize| format!("/config set a={}{}", "[".repeat(n), "]".repeat(n));
    for policy in ["open", "pairing", "allowlist"] {
        let allow = if policy == "open" {
            json!(["*"])
        } else {
            json!(["+15550001111", "+15550002222"])
        };
        // Under allowlist and pairing the sender is admitted but no owner (ownerAllowFrom).
        let env = SimEnv::new(
            json!({}),
            json!({"commands": {"config": true, "ownerAllowFrom": ["+15550009999"]},
                   "channels": {"imessage": {"dmPolicy": policy, "allowFrom": allow}}}),
        );
        let read = config_file();
        let before = read(&env);
        let gateway = env.start(false);
        for text in [nested(5_000), nested(500_000)] {
            env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": text}));
        }
        env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "next"}));
        let routed = gateway.wait_messages(1, WAIT);
        assert_eq!(routed.len(), 1, "{policy}: {routed:?}");
        assert_eq!(routed[0]["text"], "next", "{policy}");
        assert_eq!(
            env.stderr()
                .matches("drop reason=unauthorized_command")
                .count(),
            2,
            "{policy}"
        );
        assert!(env.sends().is_empty(), "{policy}: no reply to a non-owner");
        assert!(gateway.stop().success(), "{policy}: the gateway lived");
        assert_eq!(read(&env), before, "{policy}");
        // A restart replays nothing harmful and routes the next DM.
        let gateway = env.start(false);
        env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": "after restart"}));
        let routed = gateway.wait_messages(1, WAIT);
        assert_eq!(routed[0]["text"], "after restart", "{policy}");
        assert!(gateway.stop().success());
    }
}

/// Cases 147a and 147c through host-stub: a `groupAllowFrom`-only member, a pairing-approved
/// contact and the owner's number over SMS cannot change the config; the owner can.
#[test]
fn only_the_owner_changes_the_config_cases_147a_147c() {
    let mut chats = common::sim::chats();
    chats.as_array_mut().unwrap().push(json!({
        "id": 9, "identifier": "+15550001111", "guid": "SMS;-;+15550001111",
        "service": "SMS", "participants": ["+15550001111"],
    }));
    let env = SimEnv::new(
        json!({"chats": chats}),
        json!({"commands": {"config": true},
               "channels": {"imessage": {"groupAllowFrom": ["+15550003333"],
                                         "groups": {"*": {"requireMention": true}}}}}),
    );
    // The stranger of chat 8 is approved through pairing before the gateway starts.
    let allow = env.path("state/imessage/default");
    std::fs::create_dir_all(&allow).unwrap();
    std::fs::write(
        allow.join("allow.json"),
        json!({"version": 1, "allowFrom": ["+15550002222"]}).to_string(),
    )
    .unwrap();
    let read = config_file();
    let before = read(&env);
    let gateway = env.start(false);
    let write = |who: &str| format!("/config set channels.imessage.allowFrom=[\"{who}\"]");
    env.insert(json!({"chat_id": 42, "handle": "+15550003333", "text": format!("@bot {}", write("+15550003333"))}));
    env.insert(json!({"chat_id": 8, "handle": "+15550002222", "text": write("+15550002222")}));
    env.insert(json!({"chat_id": 9, "handle": "+15550001111", "text": write("+15550009999")}));
    env.insert(json!({"chat_id": 9, "handle": "+15550001111", "text": "/status"}));
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "/config set channels.imessage.textChunkLimit=3000"}));
    wait_until("the owner's write", WAIT, || {
        read(&env)["channels"]["imessage"]["textChunkLimit"] == 3000
    });
    let routed = gateway.messages();
    let texts: Vec<&str> = routed.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    // The SMS `/status` is routed, but as plain text.
    assert_eq!(routed[0]["text"], "/status");
    assert_eq!(routed[0]["commandAuthorized"], false);
    assert_eq!(routed[0]["senderIsOwner"], false);
    assert_eq!(routed[1]["senderIsOwner"], true);
    assert_eq!(routed[1]["commandAuthorized"], true);
    assert_eq!(
        env.stderr()
            .matches("drop reason=unauthorized_command")
            .count(),
        3
    );
    let mut after = before.clone();
    after["channels"]["imessage"]["textChunkLimit"] = json!(3000);
    assert_eq!(read(&env), after, "only the owner's change was written");
    assert!(gateway.stop().success());
}
