//! The protocol over a small fake plugin: routing, errors, deliveries and their
//! acknowledgements, logs, the wakeup pipe, stop and concurrency.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use serde_json::{json, Value};

use super::*;
use crate::guard::{Guarded, HostHandle, Plugin};
use crate::types::*;
use crate::ChannelPlugin_TO;

struct Fake {
    host: HostHandle,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Plugin for Fake {
    fn describe(&self) -> PluginDescription {
        PluginDescription {
            id: "fake".into(),
            name: "Fake".into(),
            version: "0".into(),
            abi_version: crate::ABI_VERSION.into(),
            methods: vec!["config.schema".into(), "deliver".into()],
        }
    }
    fn start(&self, _ctx: StartContext) -> Result<StartReport, PluginError> {
        Ok(StartReport::default())
    }
    fn stop(&self) -> Result<(), PluginError> {
        Ok(())
    }
    fn send(&self, request: SendRequest) -> Result<SendReceipt, PluginError> {
        Ok(SendReceipt {
            ok: true,
            account_id: request.to,
            ..Default::default()
        })
    }
    fn status(&self, _request: StatusRequest) -> Result<StatusReport, PluginError> {
        Ok(StatusReport::default())
    }
    fn call(&self, method: &str, payload: Value) -> Result<Value, PluginError> {
        match method {
            "config.schema" => Ok(json!({"type": "object"})),
            "deliver" => self
                .host
                .deliver_json(&payload.to_string())
                .map(|()| json!({"delivered": true})),
            "request" => self.host.request(
                payload["method"].as_str().unwrap_or(""),
                &payload["payload"],
            ),
            "log" => {
                for n in 0..payload.as_u64().unwrap_or(0) {
                    self.host.log(&LogRecord {
                        level: "info".into(),
                        target: "fake".into(),
                        message: format!("log {n}"),
                        fields: Default::default(),
                    });
                }
                Ok(json!({}))
            }
            "hold" => {
                let (lock, cv) = &*self.gate;
                let mut open = lock.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                Ok(json!("held"))
            }
            "release" => {
                *self.gate.0.lock().unwrap() = true;
                self.gate.1.notify_all();
                Ok(json!("released"))
            }
            "panic" => panic!("fake panics on request"),
            "fail" => Err(PluginError::new("not_started", "fake fails")),
            _ => Ok(payload),
        }
    }
}

fn instance_with(options: Value) -> Instance {
    let options = Options::parse(Some(&options.to_string())).unwrap();
    Instance::new(options, |cb| {
        let fake = Fake {
            host: HostHandle::new(cb),
            gate: Arc::default(),
        };
        Ok(ChannelPlugin_TO::from_value(Guarded(fake), TD_Opaque))
    })
    .unwrap()
}

fn instance() -> Instance {
    instance_with(json!({}))
}

/// The next message, waiting at most 10 s (a positive marker, never a fixed sleep).
fn next(i: &Instance) -> Value {
    let text = i
        .next_message(Some(Duration::from_secs(10)))
        .expect("a message within 10 s");
    serde_json::from_str(&text).unwrap()
}

fn request(i: &Instance, id: u64, method: &str, params: Value) {
    let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    i.post(&text.to_string()).unwrap();
}

fn call(i: &Instance, method: &str, payload: Value) -> Value {
    let text = i.call("call", &json!({"method": method, "payload": payload}));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn describe_carries_the_protocol_version_and_the_config_schema() {
    let i = instance();
    let answer: Value = serde_json::from_str(&i.call("describe", &json!({}))).unwrap();
    assert_eq!(answer["result"]["id"], "fake");
    assert_eq!(answer["result"]["protocolVersion"], "1.0");
    assert_eq!(answer["result"]["configSchema"], json!({"type": "object"}));
    assert_eq!(answer["id"], "call-1", "chp_call numbers its own ids");
}

#[test]
fn a_posted_request_is_answered_on_the_queue_with_its_id() {
    let i = instance();
    request(&i, 7, "send", json!({"to": "chat_id:1", "text": "hi"}));
    let answer = next(&i);
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["accountId"], "chat_id:1");
}

#[test]
fn bad_input_gets_the_spec_error_codes() {
    let i = instance();
    i.post("{not json").unwrap();
    let parse = next(&i);
    assert_eq!(parse["error"]["code"], -32700);
    assert_eq!(parse["id"], Value::Null);
    i.post("[1, 2]").unwrap();
    assert_eq!(next(&i)["error"]["code"], -32600);
    i.post(r#"{"id": 3, "method": "status"}"#).unwrap();
    let no_version = next(&i);
    assert_eq!(
        (
            no_version["id"].clone(),
            no_version["error"]["code"].clone()
        ),
        (json!(3), json!(-32600))
    );
    request(&i, 4, "fly", json!({}));
    let unknown = next(&i);
    assert_eq!(unknown["error"]["code"], -32601);
    assert!(unknown["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fly"));
}

#[test]
fn invalid_params_name_the_field() {
    let i = instance();
    request(&i, 1, "send", json!({"to": 5}));
    let wrong = next(&i);
    assert_eq!(wrong["error"]["code"], -32602);
    let message = wrong["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("send params: to: invalid type"),
        "{message}"
    );
    assert_eq!(wrong["error"]["data"]["path"], "to");
    request(&i, 2, "send", json!({"text": "no target"}));
    let missing = next(&i);
    assert_eq!(missing["error"]["code"], -32602);
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing field `to`"));
    request(&i, 3, "start", json!({"config": {}, "stateDir": 9}));
    assert!(next(&i)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stateDir"));
}

#[test]
fn plugin_errors_and_panics_are_32000_and_32001_and_the_instance_keeps_serving() {
    let i = instance();
    let failed = call(&i, "fail", json!({}));
    assert_eq!(failed["error"]["code"], -32000);
    assert_eq!(failed["error"]["data"]["code"], "not_started");
    let panicked = call(&i, "panic", json!({}));
    assert_eq!(panicked["error"]["code"], -32001);
    assert!(panicked["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fake panics"));
    let status: Value = serde_json::from_str(&i.call("status", &json!({}))).unwrap();
    assert_eq!(status["result"], json!({"accounts": []}));
}

/// Posts `call deliver` (id 1) and returns the plugin's `deliver` request.
fn start_delivery(i: &Instance, event: Value) -> Value {
    request(i, 1, "call", json!({"method": "deliver", "payload": event}));
    let deliver = next(i);
    assert_eq!(deliver["method"], "deliver");
    assert_eq!(deliver["params"], event);
    deliver
}

#[test]
fn a_delivery_waits_for_the_hosts_response() {
    let i = instance();
    let deliver = start_delivery(&i, json!({"type": "message", "messageId": "A"}));
    assert_eq!(
        i.next_message(Some(Duration::ZERO)),
        None,
        "the plugin waits"
    );
    let ack = json!({"jsonrpc": "2.0", "id": deliver["id"], "result": {}});
    i.post(&ack.to_string()).unwrap();
    let answer = next(&i);
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (json!(1), json!({"delivered": true}))
    );
}

#[test]
fn an_error_response_refuses_the_delivery() {
    let i = instance();
    let deliver = start_delivery(&i, json!({"type": "message", "messageId": "A"}));
    let refuse = json!({"jsonrpc": "2.0", "id": deliver["id"], "error": {"code": 1, "message": "disk full"}});
    i.post(&refuse.to_string()).unwrap();
    let answer = next(&i);
    assert_eq!(answer["error"]["code"], -32000);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk full"),
        "{answer}"
    );
}

#[test]
fn no_response_within_ack_timeout_refuses_and_a_late_one_is_ignored_and_logged() {
    let i = instance_with(json!({"ackTimeoutMs": 50}));
    let deliver = start_delivery(&i, json!({"type": "message", "messageId": "A"}));
    let answer = next(&i);
    assert_eq!(answer["id"], 1);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within 50 ms"),
        "{answer}"
    );
    let late = json!({"jsonrpc": "2.0", "id": deliver["id"], "result": {}});
    i.post(&late.to_string()).unwrap();
    let warning = next(&i);
    assert_eq!(warning["method"], "log");
    assert_eq!(warning["params"]["level"], "warn");
    assert!(warning["params"]["message"]
        .as_str()
        .unwrap()
        .contains("ignored a response to id"));
}

#[test]
fn a_response_to_an_unknown_id_is_ignored_and_logged() {
    let i = instance();
    i.post(r#"{"jsonrpc":"2.0","id":999,"result":{}}"#).unwrap();
    let warning = next(&i);
    assert_eq!(
        (
            warning["method"].clone(),
            warning["params"]["target"].clone()
        ),
        (json!("log"), json!("chp"))
    );
    assert!(warning["params"]["message"]
        .as_str()
        .unwrap()
        .contains("999"));
}

#[test]
fn host_request_carries_method_and_payload_and_the_hosts_answer() {
    let i = instance();
    let payload = json!({"method": "config.write", "payload": {"path": "a"}});
    request(
        &i,
        1,
        "call",
        json!({"method": "request", "payload": payload}),
    );
    let asked = next(&i);
    assert_eq!(asked["method"], "host.request");
    assert_eq!(asked["params"], payload);
    let reply = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"written": true}});
    i.post(&reply.to_string()).unwrap();
    assert_eq!(next(&i)["result"], json!({"written": true}));

    request(
        &i,
        2,
        "call",
        json!({"method": "request", "payload": {"method": "x.y"}}),
    );
    let asked = next(&i);
    let unknown = json!({"jsonrpc": "2.0", "id": asked["id"], "error": {"code": -32601, "message": "no x.y"}});
    i.post(&unknown.to_string()).unwrap();
    assert_eq!(next(&i)["error"]["data"]["code"], "unknown_method");
}

#[test]
fn undrained_logs_drop_the_oldest_and_say_how_many() {
    let i = instance_with(json!({"maxQueued": 3}));
    let done = call(&i, "log", json!(5));
    assert_eq!(done["result"], json!({}));
    let logs: Vec<Value> = std::iter::from_fn(|| i.next_message(Some(Duration::ZERO)))
        .map(|t| serde_json::from_str(&t).unwrap())
        .collect();
    let messages: Vec<&str> = logs
        .iter()
        .map(|l| l["params"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["log 2", "log 3", "log 4"]);
    assert_eq!(logs[1]["params"]["dropped"], 1, "{logs:?}");
    assert_eq!(logs[0]["params"].get("dropped"), None);
}

#[test]
fn a_long_request_does_not_hold_up_the_others() {
    let i = instance();
    request(&i, 1, "call", json!({"method": "hold"}));
    request(&i, 2, "status", json!({}));
    assert_eq!(next(&i)["id"], 2, "status answered while hold runs");
    assert_eq!(call(&i, "release", json!({}))["result"], "released");
    assert_eq!(next(&i)["result"], "held");
}

#[test]
fn too_many_queued_requests_are_refused_with_minus_3() {
    let i = instance_with(json!({"maxQueued": 1}));
    request(&i, 1, "call", json!({"method": "hold"}));
    let refused = i.post(r#"{"jsonrpc":"2.0","id":2,"method":"status"}"#);
    assert_eq!(refused.map_err(PostError::code), Err(-3));
    // Responses are never refused for room: they free it.
    assert_eq!(i.post(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#), Ok(()));
    call(&i, "release", json!({}));
}

#[test]
fn stop_answers_then_plugin_closed_is_last_and_the_instance_is_closed() {
    let i = instance();
    request(&i, 1, "stop", json!({}));
    assert_eq!(next(&i), json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
    assert_eq!(
        next(&i),
        json!({"jsonrpc": "2.0", "method": "plugin.closed"})
    );
    assert_eq!(
        i.next_message(None),
        None,
        "nothing after plugin.closed, at once"
    );
    let again = i.post(r#"{"jsonrpc":"2.0","id":2,"method":"status"}"#);
    assert_eq!(again.map_err(PostError::code), Err(-1));
    let call: Value = serde_json::from_str(&i.call("status", &json!({}))).unwrap();
    assert_eq!(call["error"]["data"]["code"], "closed");
}

#[test]
fn stop_refuses_a_waiting_delivery_instead_of_waiting_out_the_ack_timeout() {
    let i = instance_with(json!({"ackTimeoutMs": 600000}));
    start_delivery(&i, json!({"type": "message", "messageId": "A"}));
    request(&i, 2, "stop", json!({}));
    let mut rest = vec![next(&i), next(&i), next(&i)];
    assert_eq!(rest.pop().unwrap()["method"], "plugin.closed");
    let refused = rest
        .iter()
        .find(|m| m["id"] == 1)
        .expect("the delivery's caller answered");
    assert_eq!(refused["error"]["data"]["code"], "refused", "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stopping"));
    assert!(rest
        .iter()
        .any(|m| m["id"] == 2 && m["result"] == json!({})));
}

#[test]
fn a_notification_runs_without_an_answer_and_an_unknown_one_is_logged() {
    let i = instance();
    i.post(r#"{"jsonrpc":"2.0","method":"bogus"}"#).unwrap();
    let warning = next(&i);
    assert_eq!(warning["method"], "log");
    assert!(warning["params"]["message"]
        .as_str()
        .unwrap()
        .contains("bogus"));
    i.post(r#"{"jsonrpc":"2.0","method":"stop"}"#).unwrap();
    assert_eq!(next(&i)["method"], "plugin.closed");
}

fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one live descriptor without waiting.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}

#[test]
fn the_wakeup_fd_is_readable_exactly_while_messages_are_queued() {
    let i = instance();
    let fd = i.wakeup_fd();
    assert!(fd >= 0);
    assert!(!readable(fd));
    request(&i, 1, "status", json!({}));
    request(&i, 2, "status", json!({}));
    // A positive marker: wait until both answers are queued.
    let first = i.next_message(Some(Duration::from_secs(10))).unwrap();
    assert!(first.contains("\"result\""));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !readable(fd) {
        assert!(
            std::time::Instant::now() < deadline,
            "second answer never signalled"
        );
        std::thread::yield_now();
    }
    // A host that read the byte itself and stopped draining is woken again by the next pull.
    next(&i);
    assert!(!readable(fd), "drained queue, drained pipe");
}

#[test]
fn eight_threads_posting_status_at_once_all_get_their_own_answer() {
    let i = Arc::new(instance());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let i = i.clone();
            std::thread::spawn(move || {
                for n in 0..50 {
                    request(&i, t * 1000 + n, "status", json!({}));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut ids: Vec<u64> = (0..400)
        .map(|_| {
            let answer = next(&i);
            assert_eq!(answer["result"], json!({"accounts": []}));
            answer["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<u64> = (0..8)
        .flat_map(|t| (0..50).map(move |n| t * 1000 + n))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[test]
fn options_errors_name_the_field() {
    assert_eq!(Options::parse(None).unwrap(), Options::default());
    let e = Options::parse(Some(r#"{"ackTimeoutMs": "soon"}"#)).unwrap_err();
    assert!(
        e.message.starts_with("options: ackTimeoutMs: invalid type"),
        "{}",
        e.message
    );
    let e = Options::parse(Some(r#"{"maxQueued": 0}"#)).unwrap_err();
    assert_eq!(e.message, "options: maxQueued: must be at least 1");
}

#[test]
fn a_panicking_constructor_is_an_error_value() {
    let made = Instance::new(Options::default(), |_| panic!("no plugin today"));
    let e = made.err().expect("an error");
    assert_eq!(e.code, "panic");
    assert!(e.message.contains("no plugin today"));
}
