//! `host-stub serve` (spec/host-protocol.md §4) end to end: the real libimessage behind the
//! JSON-RPC bridge, driving imsg-sim, spoken to over stdin/stdout as a host in any language
//! would.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::sim::SimEnv;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A running `host-stub serve`: lines in, lines out (each one JSON object), logs kept aside.
struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    logs: Vec<Value>,
}

impl Bridge {
    fn start(env: &SimEnv, options: &str) -> Bridge {
        let mut child = env
            .gw
            .command()
            .args(["serve", "--channel", "imessage", "--options", options])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start host-stub serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Bridge {
            stdin: child.stdin.take(),
            child,
            lines,
            logs: Vec::new(),
        }
    }

    fn send(&mut self, message: &Value) {
        self.send_line(&message.to_string());
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.next_where(&format!("the response to {method}"), |m| m["id"] == id)
    }

    /// The next stdout message matching `want`; `log` notifications are kept in `logs`, and
    /// any other message in between fails the test.
    fn next_where(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; logs: {:?}", self.logs));
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carries only JSON lines: {e}: {line}"));
            if want(&message) {
                return message;
            }
            assert_eq!(
                message["method"], "log",
                "unexpected while waiting for {what}: {message}"
            );
            self.logs.push(message);
        }
    }

    fn has_log(&self, text: &str) -> bool {
        self.logs.iter().any(|l| {
            l["params"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text))
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_dm_is_delivered_refused_redelivered_acknowledged_and_eof_closes() {
    let env = SimEnv::new(json!({}), json!({}));
    let mut bridge = Bridge::start(&env, r#"{"ackTimeoutMs": 20000}"#);

    let described = bridge.request(1, "describe", json!({}));
    assert_eq!(described["result"]["id"], "imessage");
    assert_eq!(described["result"]["protocolVersion"], "1.0");

    bridge.send_line("{this is not json");
    let parse = bridge.next_where("the parse error", |m| m.get("error").is_some());
    assert_eq!(
        (parse["id"].clone(), parse["error"]["code"].clone()),
        (Value::Null, json!(-32700))
    );

    start_watching(&env, &mut bridge);

    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "over the bridge"}));
    let first = bridge.next_where("a deliver request", |m| m["method"] == "deliver");
    let event = &first["params"];
    assert_eq!(
        (event["type"].as_str(), event["text"].as_str()),
        (Some("message"), Some("over the bridge"))
    );
    assert_eq!(event["to"], "chat_id:7");
    let refuse =
        json!({"jsonrpc": "2.0", "id": first["id"], "error": {"code": 1, "message": "disk busy"}});
    bridge.send(&refuse);

    let again = bridge.next_where("the delivery again", |m| m["method"] == "deliver");
    assert_eq!(
        again["params"]["messageId"], event["messageId"],
        "same messageId"
    );
    assert_ne!(again["id"], first["id"]);
    bridge.send(&json!({"jsonrpc": "2.0", "id": again["id"], "result": {}}));

    // The acknowledgement advanced the account: status says so (counted just after the ack).
    let deadline = Instant::now() + WAIT;
    for id in 3.. {
        let status = bridge.request(id, "status", json!({}));
        let account = &status["result"]["accounts"][0];
        assert_eq!(account["state"], "watching", "{status}");
        if account["routed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "routed never became 1: {status}");
    }

    // EOF is stop: plugin.closed is the last line and the process exits 0.
    drop(bridge.stdin.take());
    bridge.next_where("plugin.closed", |m| m["method"] == "plugin.closed");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = bridge.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after plugin.closed"
        );
        std::thread::yield_now();
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        bridge.lines.recv_timeout(WAIT).is_err(),
        "nothing after plugin.closed"
    );
    assert!(!bridge.has_log("panicked"), "{:?}", bridge.logs);
}

/// `start` with the env's config, then waits until the watcher subscribed.
fn start_watching(env: &SimEnv, bridge: &mut Bridge) {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(env.gw.config_path()).unwrap()).unwrap();
    let state_dir = env.path("state").display().to_string();
    let started = bridge.request(
        2,
        "start",
        json!({"config": config, "stateDir": state_dir, "logLevel": "info"}),
    );
    assert_eq!(
        started["result"]["accounts"][0]["accountId"], "default",
        "{started}"
    );
    bridge.next_where("the watcher to subscribe", |m| {
        m["params"]["message"]
            .as_str()
            .is_some_and(|t| t.contains("watching for messages"))
    });
}

#[test]
fn a_delivery_left_unanswered_comes_again_after_ack_timeout() {
    let env = SimEnv::new(json!({}), json!({}));
    let mut bridge = Bridge::start(&env, r#"{"ackTimeoutMs": 300}"#);
    start_watching(&env, &mut bridge);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "anyone there"}));
    let first = bridge.next_where("a deliver request", |m| m["method"] == "deliver");
    // Not answered: after 300 ms it counts as refused and comes again.
    let again = bridge.next_where("the delivery again", |m| m["method"] == "deliver");
    assert_eq!(again["params"]["messageId"], first["params"]["messageId"]);
    bridge.send(&json!({"jsonrpc": "2.0", "id": again["id"], "result": {}}));
    // The late answer to the first finds no waiter: ignored, and said so in a log.
    bridge.send(&json!({"jsonrpc": "2.0", "id": first["id"], "result": {}}));
    bridge.next_where("the ignored-response warning", |m| {
        m["params"]["message"]
            .as_str()
            .is_some_and(|t| t.starts_with("ignored a response to id"))
    });
    drop(bridge.stdin.take());
    bridge.next_where("plugin.closed", |m| m["method"] == "plugin.closed");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_stop_request_answers_then_closes_and_bad_options_are_usage_errors() {
    let env = SimEnv::new(json!({}), json!({}));
    let mut bridge = Bridge::start(&env, "{}");
    let unknown = bridge.request(1, "teleport", json!({}));
    assert_eq!(unknown["error"]["code"], -32601);
    let stopped = bridge.request(2, "stop", json!({}));
    assert_eq!(stopped["result"], json!({}));
    bridge.next_where("plugin.closed", |m| m["method"] == "plugin.closed");
    assert_eq!(
        bridge.child.wait().unwrap().code(),
        Some(0),
        "exits without waiting for EOF"
    );

    let out = env
        .gw
        .command()
        .args(["serve", "--options", r#"{"maxQueued": "many"}"#])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("--options: maxQueued: invalid type"),
        "{stderr}"
    );
}
