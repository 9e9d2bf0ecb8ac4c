//! libimessage's own C ABI (spec/host-protocol.md §2) through `dlopen`, as a C, Python or
//! Node gateway uses it: describe (with the config schema) without an instance, then one
//! instance started on imsg-sim, a DM delivered as a `deliver` request and acknowledged,
//! `stop` ending with `plugin.closed`, and `chp_free`.

use crate::common;

use std::ffi::{c_char, CString};
use std::time::{Duration, Instant};

use common::sim::SimEnv;
use serde_json::{json, Value};

use crate::common::WAIT;

use common::chp::{Chp, Instance};

fn chp() -> &'static Chp {
    common::chp::library("imessage")
}

/// Takes ownership of a returned string: its JSON, the string freed with `chp_string_free`.
fn take(s: *mut c_char) -> Option<Value> {
    let text = chp().take(s)?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}: {text}")))
}

/// One instance; freed on drop when the test did not free it.
struct Handle(*mut Instance);

impl Handle {
    fn new(options: &str) -> Handle {
        let options = CString::new(options).unwrap();
        // SAFETY: a live C string.
        let h = unsafe { (chp().new)(options.as_ptr()) };
        assert!(!h.is_null(), "chp_new: {:?}", take((chp().last_error)()));
        Handle(h)
    }

    fn post(&self, message: &Value) {
        let c = CString::new(message.to_string()).unwrap();
        // SAFETY: a live instance and C string.
        assert_eq!(unsafe { (chp().post)(self.0, c.as_ptr()) }, 0, "{message}");
    }

    /// The next message that is not a `log` notification, within WAIT.
    fn next(&self, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            // SAFETY: a live instance.
            let message = take(unsafe { (chp().next_message)(self.0, left.as_millis() as i32) });
            match message {
                Some(m) if m["method"] == "log" => continue,
                Some(m) => return m,
                None => continue,
            }
        }
    }

    fn call(&self, method: &str, params: &Value) -> Value {
        let m = CString::new(method).unwrap();
        let p = CString::new(params.to_string()).unwrap();
        // SAFETY: a live instance and C strings.
        take(unsafe { (chp().call)(self.0, m.as_ptr(), p.as_ptr()) }).expect("a response")
    }

    /// `status` through `chp_call` until `ok` holds for the first account (readiness taken
    /// from status, not from log text).
    fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.call("status", &json!({}));
            let account = &status["result"]["accounts"][0];
            if ok(account) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the last call on this instance.
            unsafe { (chp().free)(self.0) }
        }
    }
}

#[test]
fn describe_carries_the_config_schema_without_an_instance() {
    assert_eq!((chp().abi_version)(), 1 << 16);
    let described = take((chp().describe)()).expect("chp_describe");
    assert_eq!(described["id"], "imessage");
    assert_eq!(described["protocolVersion"], "1.0");
    assert!(described["methods"]
        .as_array()
        .unwrap()
        .contains(&json!("config.schema")));
    let schema = &described["configSchema"];
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        schema["properties"]["dmPolicy"]["enum"],
        json!(["pairing", "allowlist", "open", "disabled", null])
    );
    // `call config.schema` on an instance that was never started answers the same schema.
    let h = Handle::new("{}");
    let answer = h.call("call", &json!({"method": "config.schema"}));
    assert_eq!(&answer["result"], schema, "{answer}");
}

#[test]
fn a_dm_is_delivered_acknowledged_and_stop_closes() {
    let env = SimEnv::new(json!({}), json!({}));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(env.gw.config_path()).unwrap()).unwrap();
    let mut h = Handle::new(r#"{"ackTimeoutMs": 20000}"#);
    let state_dir = env.path("state").display().to_string();
    h.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "start",
        "params": {"config": config, "stateDir": state_dir, "logLevel": "info"}}));
    let started = h.next("the start response");
    assert_eq!(started["id"], 1);
    assert_eq!(
        started["result"]["accounts"][0]["accountId"], "default",
        "{started}"
    );
    h.wait_status("the watcher", |a| a["state"] == "watching");

    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "through the C ABI"}));
    let deliver = h.next("a deliver request");
    assert_eq!(deliver["method"], "deliver", "{deliver}");
    let event = &deliver["params"];
    assert_eq!(
        (
            event["type"].as_str(),
            event["text"].as_str(),
            event["to"].as_str()
        ),
        (
            Some("message"),
            Some("through the C ABI"),
            Some("chat_id:7")
        )
    );
    h.post(&json!({"jsonrpc": "2.0", "id": deliver["id"], "result": {}}));
    // The acknowledgement is what counts the message as routed.
    h.wait_status("the acknowledged message", |a| a["routed"] == 1);

    h.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "stop", "params": {}}));
    let stopped = h.next("the stop response");
    assert_eq!(
        (stopped["id"].clone(), stopped["result"].clone()),
        (json!(2), json!({}))
    );
    let closed = h.next("plugin.closed");
    assert_eq!(closed["method"], "plugin.closed", "{closed}");
    // After plugin.closed every call returns NULL at once, even one that would wait forever.
    // SAFETY: a live instance.
    assert!(unsafe { (chp().next_message)(h.0, -1) }.is_null());
    // SAFETY: the last call on this instance.
    unsafe { (chp().free)(h.0) };
    h.0 = std::ptr::null_mut();
}
