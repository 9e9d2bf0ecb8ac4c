//! The plugin across the real dynamic-library boundary: loaded from `libimessage.so` with the
//! layout and version check, not linked as an rlib.

use crate::common;
use crate::common::WAIT;

use std::sync::{Arc, Mutex};

use plugin_abi::host::{self, Host};
use plugin_abi::types::{StartContext, StatusRequest};
use serde_json::json;

#[derive(Clone, Default)]
struct Recorder {
    logs: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Host for Recorder {
    fn deliver(&self, event: &str) -> Result<(), String> {
        let value = serde_json::from_str(event).map_err(|e| e.to_string())?;
        self.events.lock().unwrap().push(value);
        Ok(())
    }
    fn log(&self, record: &str) {
        self.logs.lock().unwrap().push(record.to_string());
    }
}

#[test]
fn describe_start_status_stop_through_the_abi() {
    let plugin = host::load(&common::plugin_library("imessage")).expect("libimessage loads");
    assert_eq!(plugin.description.id, "imessage");
    assert_eq!(plugin.description.abi_version, plugin_abi::ABI_VERSION);

    let recorder = Recorder::default();
    let client = plugin
        .instantiate(host::callbacks(recorder.clone()))
        .expect("instance");
    assert_eq!(client.describe().unwrap().id, "imessage");

    let state = tempfile::tempdir().unwrap();
    let ctx = StartContext {
        config: json!({"channels": {"imessage": {"historyLimit": 5, "cliPath": "/nonexistent/imsg"}}}),
        state_dir: state.path().display().to_string(),
        watch: false,
        log_level: Some("debug".into()),
        host: Default::default(),
    };
    let report = client.start(&ctx).expect("start");
    assert_eq!(report.accounts.len(), 1);
    assert_eq!(report.accounts[0].account_id, "default");

    // The plugin's tracing events reach the host through the log callback.
    let logs = recorder.logs.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|l| l.contains("historyLimit is accepted for compatibility")),
        "{logs:?}"
    );

    let status = client.status(&StatusRequest::default()).expect("status");
    assert_eq!(status.accounts[0].account_id, "default");

    let again = client.start(&ctx).unwrap_err();
    assert_eq!(again.code, "invalid_request", "a second start is refused");

    client.stop().expect("stop");
    client.stop().expect("stop is idempotent");
    assert_eq!(
        client.status(&StatusRequest::default()).unwrap_err().code,
        "not_started"
    );

    // Unknown extension methods are a typed error, not a crash.
    assert_eq!(
        client.call("no.such.method", &json!({})).unwrap_err().code,
        "unknown_method"
    );
}

#[test]
fn bad_config_is_rejected_with_every_field_path() {
    let plugin = host::load(&common::plugin_library("imessage")).unwrap();
    let client = plugin
        .instantiate(host::callbacks(Recorder::default()))
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let err = client
        .start(&StartContext {
            config: json!({"channels": {"imessage": {"dmPolicy": "sometimes", "textChunkLimit": 1}}}),
            state_dir: state.path().display().to_string(),
            watch: false,
            log_level: None,
            host: Default::default(),
        })
        .unwrap_err();
    assert_eq!(err.code, "config_invalid");
    assert!(err.errors.contains(
        &"channels.imessage.dmPolicy: must be one of \"pairing\", \"allowlist\", \"open\", \"disabled\"".to_string()
    ), "{:?}", err.errors);
    assert!(err
        .errors
        .iter()
        .any(|e| e.starts_with("channels.imessage.textChunkLimit: ")));
    // Nothing was started, so a corrected start works on the same instance.
    client
        .start(&StartContext {
            config: json!({}),
            state_dir: state.path().display().to_string(),
            watch: false,
            log_level: None,
            host: Default::default(),
        })
        .expect("start after a rejected config");
    client.stop().unwrap();
}

#[test]
fn two_plugin_libraries_load_side_by_side() {
    let a = host::load(&common::plugin_library("imessage")).unwrap();
    let b = host::load(&common::plugin_library("fixture")).unwrap();
    assert_eq!(a.description.id, "imessage");
    assert_eq!(
        b.description.id, "fixture",
        "each file gets its own root module"
    );
}

/// Runs in a child process (see `panic_in_a_plugin_method_is_an_error_value`): if the guard
/// failed, the panic would abort this process, not fail an assertion.
#[test]
#[ignore = "run as a child process by panic_in_a_plugin_method_is_an_error_value"]
fn fixture_child() {
    if std::env::var_os("FIXTURE_CHILD").is_none() {
        return;
    }
    let plugin = host::load(&common::plugin_library("fixture")).unwrap();
    let client = plugin
        .instantiate(host::callbacks(Recorder::default()))
        .unwrap();
    let err = client.call("panic", &json!({})).unwrap_err();
    assert_eq!(err.code, "panic");
    assert!(err.message.contains("fixture panics on request"), "{err:?}");
    // The same instance keeps working after the panic.
    assert_eq!(
        client.call("echo", &json!({"x": 1})).unwrap(),
        json!({"x": 1})
    );
    let send = client
        .send(&plugin_abi::types::SendRequest {
            to: "x".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(send.code, "panic");
    println!("CARRIED ON");
}

/// Runs the ignored test `name` of this module alone in a child process of this test binary,
/// with `vars` set: for what must not happen in (or leak into) the process every other test
/// shares.
fn run_child(name: &str, vars: &[(&str, &str)]) -> std::process::Output {
    // The test's path inside the one e2e binary.
    let module = module_path!()
        .split_once("::")
        .map_or("abi", |(_, path)| path);
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::{name}"),
            "--include-ignored",
            "--nocapture",
        ])
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn panic_in_a_plugin_method_is_an_error_value() {
    let out = run_child("fixture_child", &[("FIXTURE_CHILD", "1")]);
    let text = common::stdout(&out);
    assert!(
        out.status.success() && text.contains("CARRIED ON"),
        "child failed: status {:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        common::stderr(&out)
    );
}

#[test]
fn a_hung_send_does_not_block_other_calls() {
    // In a child process: the plugin runs in-process, and only this test's instance may see
    // the send timeout capped below the least `sendTimeoutMs` (10 s).
    let out = run_child(
        "hung_send_child",
        &[(common::TIMINGS, "sendTimeoutMs=1000")],
    );
    let text = common::stdout(&out);
    assert!(
        out.status.success() && text.contains("HUNG SEND SETTLED"),
        "child failed: status {:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        common::stderr(&out)
    );
}

/// Runs in a child process (see `a_hung_send_does_not_block_other_calls`).
#[test]
#[ignore = "run as a child process by a_hung_send_does_not_block_other_calls"]
fn hung_send_child() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.json");
    std::fs::write(
        &scenario,
        json!({"clock": {"start": "now", "mode": "running"}, "faults": {"delay_ms": {"send": 600000}},
            "control": {"record": dir.path().join("record.jsonl")}})
        .to_string(),
    )
    .unwrap();
    let plugin = host::load(&common::plugin_library("imessage")).unwrap();
    let client = std::sync::Arc::new(
        plugin
            .instantiate(host::callbacks(Recorder::default()))
            .unwrap(),
    );
    client
        .start(&StartContext {
            config: json!({"channels": {"imessage": {
                "cliPath": common::imsg_sim().display().to_string(),
                "dbPath": scenario.display().to_string(),
                "sendTimeoutMs": 10000,
            }}}),
            state_dir: dir.path().join("state").display().to_string(),
            watch: false,
            log_level: None,
            host: Default::default(),
        })
        .unwrap();
    let sender = {
        let client = client.clone();
        std::thread::spawn(move || {
            client.send(&plugin_abi::types::SendRequest {
                to: "chat_id:1".into(),
                text: Some("this send hangs".into()),
                ..Default::default()
            })
        })
    };
    // The send is in flight once the simulator has its request (and holds it).
    common::sim::wait_until("the send request at the simulator", WAIT, || {
        std::fs::read_to_string(dir.path().join("record.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["dir"] == "in")
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r["line"].as_str()?).ok())
            .any(|request| request["method"] == "send")
    });
    let began = std::time::Instant::now();
    let status = client.status(&StatusRequest::default()).unwrap();
    assert_eq!(status.accounts.len(), 1);
    assert!(
        began.elapsed() < std::time::Duration::from_secs(2),
        "status waited {:?} for the hung send",
        began.elapsed()
    );
    let receipt = sender.join().unwrap().unwrap();
    assert_eq!(receipt.parts[0].outcome, "unknown");
    client.stop().unwrap();
    println!("HUNG SEND SETTLED");
}

#[test]
fn status_of_a_watching_account_reports_the_last_inbound_message_and_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.json");
    std::fs::write(
        &scenario,
        json!({
            "clock": {"start": "now", "mode": "running"},
            "chats": [{"id": 7, "identifier": "+15550001111", "guid": "iMessage;-;+15550001111", "service": "iMessage", "participants": ["+15550001111"]}],
            "messages": [],
            "control": {"inbox": dir.path().join("inbox.jsonl")},
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("inbox.jsonl"), "").unwrap();
    let plugin = host::load(&common::plugin_library("imessage")).unwrap();
    let inbox = Recorder::default();
    let client = plugin.instantiate(host::callbacks(inbox.clone())).unwrap();
    client
        .start(&StartContext {
            config: json!({"channels": {"imessage": {
                "cliPath": common::imsg_sim().display().to_string(),
                "dbPath": scenario.display().to_string(),
                "allowFrom": ["+15550001111"],
            }}}),
            state_dir: dir.path().join("state").display().to_string(),
            watch: true,
            log_level: Some("debug".into()),
            host: Default::default(),
        })
        .unwrap();
    let began = std::time::Instant::now();
    // A first start subscribes at the live tail: insert once the watch is up.
    while client.status(&StatusRequest::default()).unwrap().accounts[0].state != "watching" {
        assert!(began.elapsed() < WAIT, "never watching");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let op = json!({"op": "insert", "row": {"id": 77, "chat_id": 7, "handle": "+15550001111", "text": "ping"}});
    std::fs::write(dir.path().join("inbox.jsonl"), format!("{op}\n")).unwrap();
    while inbox.events.lock().unwrap().is_empty() {
        assert!(
            began.elapsed() < WAIT,
            "nothing delivered; plugin log:\n{}",
            inbox.logs.lock().unwrap().join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(inbox.events.lock().unwrap()[0]["text"], "ping");
    // Status is published with the watcher's periodic flush (every 100 ms).
    let account = loop {
        let status = client.status(&StatusRequest::default()).unwrap();
        let account = status.accounts.into_iter().next().unwrap();
        if account.cursor.is_some() && account.last_inbound_at.is_some() {
            break account;
        }
        assert!(
            began.elapsed() < WAIT,
            "status never showed the message: {account:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(account.state, "watching");
    assert_eq!(account.cursor.unwrap().rowid, 77);
    let at = account.last_inbound_at.unwrap();
    assert!(at.ends_with('Z') && at.len() == 24, "ISO timestamp: {at}");
    client.stop().unwrap();
}
