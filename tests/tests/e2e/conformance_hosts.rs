//! One conformance suite, every transport (spec/host-protocol.md §3): the same scenarios,
//! written once against [`Transport`], run over imsg-sim against
//! - the abi_stable host path: plugin-abi's loader behind `chp::Instance`, in process, as
//!   `host-stub serve` drives it;
//! - libimessage's C ABI through `dlopen` (`chp_new`, `chp_post`, `chp_next_message`,
//!   `chp_call`, `chp_free`);
//! - the stdio bridge: `host-stub serve` as a child, one JSON line each way.
//!
//! One started instance per transport carries every scenario that needs imsg-sim (in an
//! order where each leaves the account as the next expects); a batch host needs its own
//! `start`, so it gets a second instance. Each step prints its name and time to stderr, and a
//! failure names the transport and the step: a scenario that passes on one transport and fails
//! on another is a bug in the failing one. `every_transport_answers_alike` also compares the
//! answers that need no started plugin (describe, bad input, a bad config) across transports.

use crate::common;

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::chp::{Chp, Instance};
use common::sim::{wait_until, SimEnv};
use plugin_abi::chp::{self as host_chp, Options};
use plugin_abi::types::features;
use serde_json::{json, Value};

use crate::common::WAIT;

/// Small enough that the unanswered-delivery scenario is quick, large enough that a busy
/// 2-core machine answers every other delivery in time.
const ACK_TIMEOUT_MS: u64 = 1000;
const OWNER: &str = "+15550001111";
const STRANGER: &str = "+15550002222";
/// The batch host's bound: smaller than the DMs the batch scenario inserts.
const MAX_BATCH: usize = 2;

/// One way into the plugin: messages in as text, messages out as text.
trait Transport: Send + Sync {
    /// Hands the plugin one message; the `chp_post` code (0 accepted, -1 closed, …).
    fn post(&self, message: &str) -> i32;
    /// The next plugin → host message, or `None` when none came within `timeout`.
    fn next_message(&self, timeout: Duration) -> Option<String>;
    /// A request answered on the caller's thread (`chp_call`); `None` where the transport has
    /// no such call (stdio: the session posts and waits for the response instead).
    fn call(&self, method: &str, params: &Value) -> Option<Value>;
    /// After `plugin.closed`: the transport's own end (nothing more comes, posts refused or
    /// the process gone with status 0).
    fn assert_ended(&self);
}

type Open = fn(&SimEnv) -> Box<dyn Transport>;

fn options() -> String {
    json!({"ackTimeoutMs": ACK_TIMEOUT_MS}).to_string()
}

// ---- (a) the abi_stable host path --------------------------------------------------------

struct AbiHost(host_chp::Instance);

fn abi_host(_env: &SimEnv) -> Box<dyn Transport> {
    let plugin = plugin_abi::host::load(&common::plugin_library("imessage"))
        .unwrap_or_else(|e| panic!("libimessage loads: {e}"));
    let options = Options::parse(Some(&options())).expect("valid options");
    let instance = host_chp::Instance::new(options, |callbacks| {
        plugin.instantiate(callbacks).map(|client| client.0)
    })
    .unwrap_or_else(|e| panic!("instantiating libimessage: {e}"));
    Box::new(AbiHost(instance))
}

impl Transport for AbiHost {
    fn post(&self, message: &str) -> i32 {
        self.0.post(message).map_or_else(|e| e.code(), |()| 0)
    }

    fn next_message(&self, timeout: Duration) -> Option<String> {
        self.0.next_message(Some(timeout))
    }

    fn call(&self, method: &str, params: &Value) -> Option<Value> {
        Some(parse(&self.0.call(method, params)))
    }

    fn assert_ended(&self) {
        let started = Instant::now();
        assert_eq!(
            self.0.next_message(None),
            None,
            "nothing after plugin.closed"
        );
        assert!(started.elapsed() < WAIT / 2, "next_message returns at once");
        assert_eq!(self.post(&status_request("late")), -1, "a post after stop");
    }
}

// ---- (b) the C ABI -----------------------------------------------------------------------

struct CAbi(*mut Instance);

// SAFETY: every chp_* function except chp_free may be called from any thread (spec §2), and
// chp_free runs only in Drop, when no other reference is left.
unsafe impl Send for CAbi {}
unsafe impl Sync for CAbi {}

fn chp() -> &'static Chp {
    common::chp::library("imessage")
}

fn c_abi(_env: &SimEnv) -> Box<dyn Transport> {
    let options = CString::new(options()).unwrap();
    // SAFETY: a live C string.
    let h = unsafe { (chp().new)(options.as_ptr()) };
    assert!(
        !h.is_null(),
        "chp_new: {:?}",
        chp().take((chp().last_error)())
    );
    Box::new(CAbi(h))
}

impl Transport for CAbi {
    fn post(&self, message: &str) -> i32 {
        let c = CString::new(message).expect("no NUL in test messages");
        // SAFETY: a live instance and C string.
        unsafe { (chp().post)(self.0, c.as_ptr()) }
    }

    fn next_message(&self, timeout: Duration) -> Option<String> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: a live instance.
        chp().take(unsafe { (chp().next_message)(self.0, ms) })
    }

    fn call(&self, method: &str, params: &Value) -> Option<Value> {
        let m = CString::new(method).unwrap();
        let p = CString::new(params.to_string()).unwrap();
        // SAFETY: a live instance and C strings.
        let text = chp().take(unsafe { (chp().call)(self.0, m.as_ptr(), p.as_ptr()) });
        Some(parse(&text.expect("chp_call returns a response")))
    }

    fn assert_ended(&self) {
        let started = Instant::now();
        // SAFETY: a live instance; -1 would wait forever were the instance not closed.
        let next = chp().take(unsafe { (chp().next_message)(self.0, -1) });
        assert_eq!(next, None, "nothing after plugin.closed");
        assert!(
            started.elapsed() < WAIT / 2,
            "chp_next_message returns at once"
        );
        assert_eq!(self.post(&status_request("late")), -1, "a post after stop");
    }
}

impl Drop for CAbi {
    fn drop(&mut self) {
        // SAFETY: the last call on this instance.
        unsafe { (chp().free)(self.0) }
    }
}

// ---- (c) the stdio bridge ----------------------------------------------------------------

struct Stdio {
    child: Mutex<Child>,
    /// Shared by every writer: one whole line per lock, as a host with writer threads does.
    stdin: Mutex<ChildStdin>,
    lines: Mutex<Receiver<String>>,
}

fn stdio_bridge(env: &SimEnv) -> Box<dyn Transport> {
    let serve = common::serve::spawn(&env.gw, &options());
    Box::new(Stdio {
        child: Mutex::new(serve.child),
        stdin: Mutex::new(serve.stdin),
        lines: Mutex::new(serve.lines),
    })
}

impl Transport for Stdio {
    fn post(&self, message: &str) -> i32 {
        let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        let written = writeln!(stdin, "{message}").and_then(|()| stdin.flush());
        // The bridge reads every line; a closed pipe is the only refusal it has.
        written.map_or(-1, |()| 0)
    }

    fn next_message(&self, timeout: Duration) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.recv_timeout(timeout).ok()
    }

    fn call(&self, _method: &str, _params: &Value) -> Option<Value> {
        None
    }

    fn assert_ended(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let mut status = None;
        wait_until("serve to exit after plugin.closed", WAIT, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "serve's exit status"
        );
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let after = lines.recv_timeout(WAIT);
        assert_eq!(
            after,
            Err(RecvTimeoutError::Disconnected),
            "stdout ends after plugin.closed"
        );
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---- the host side of the protocol, once for every transport -----------------------------

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("a message that is not JSON: {e}: {text}"))
}

fn status_request(id: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "status", "params": {}}).to_string()
}

fn is_response(m: &Value) -> bool {
    m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some())
}

/// A host on one transport: numbers its requests, keeps messages no wait asked for yet.
struct Session {
    name: &'static str,
    t: Box<dyn Transport>,
    /// Messages taken off the transport before a wait asked for them, in arrival order.
    held: Mutex<VecDeque<Value>>,
    logs: Mutex<Vec<Value>>,
    ids: AtomicU64,
}

impl Session {
    fn new(name: &'static str, t: Box<dyn Transport>) -> Session {
        Session {
            name,
            t,
            held: Mutex::new(VecDeque::new()),
            logs: Mutex::new(Vec::new()),
            ids: AtomicU64::new(0),
        }
    }

    fn post(&self, message: &Value) {
        assert_eq!(self.t.post(&message.to_string()), 0, "post {message}");
    }

    /// A request posted with a fresh id (strings, so they never look like the plugin's own
    /// integer ids), and its response.
    fn request(&self, method: &str, params: Value) -> Value {
        let id = format!("host-{}", self.ids.fetch_add(1, Ordering::Relaxed) + 1);
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id, &format!("the response to {method}"))
    }

    fn response(&self, id: &str, what: &str) -> Value {
        self.next_where(what, |m| is_response(m) && m["id"] == id)
    }

    /// `chp_call` where the transport has it, else a posted request.
    fn call(&self, method: &str, params: Value) -> Value {
        self.t
            .call(method, &params)
            .unwrap_or_else(|| self.request(method, params))
    }

    fn answer(&self, request: &Value, outcome: Result<Value, Value>) {
        let message = match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
            Err(error) => json!({"jsonrpc": "2.0", "id": request["id"], "error": error}),
        };
        self.post(&message);
    }

    /// The first message (held, or next from the transport within WAIT) that `want` takes;
    /// `log` notifications it does not take are kept aside, anything else is held.
    fn next_where(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        {
            let mut held = self.held.lock().unwrap();
            if let Some(at) = held.iter().position(&want) {
                return held.remove(at).expect("position is in range");
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let logs = self.logs.lock().unwrap();
                let recent = &logs[logs.len().saturating_sub(20)..];
                panic!(
                    "timed out waiting for {what}; held: {:?}; last logs: {recent:?}",
                    self.held.lock().unwrap()
                );
            }
            let Some(text) = self.t.next_message(left) else {
                continue;
            };
            let message = parse(&text);
            if want(&message) {
                return message;
            }
            if message["method"] == "log" {
                self.logs.lock().unwrap().push(message);
            } else {
                self.held.lock().unwrap().push_back(message);
            }
        }
    }

    fn deliver(&self, what: &str) -> Value {
        self.next_where(what, |m| m["method"] == "deliver")
    }

    /// Takes whatever is queued now and fails when a delivery is among it or held: after a
    /// positive marker, "nothing else was delivered".
    fn assert_no_delivery(&self, why: &str) {
        while let Some(text) = self.t.next_message(Duration::ZERO) {
            let message = parse(&text);
            if message["method"] == "log" {
                self.logs.lock().unwrap().push(message);
            } else {
                self.held.lock().unwrap().push_back(message);
            }
        }
        let held = self.held.lock().unwrap();
        let delivered: Vec<&Value> = held.iter().filter(|m| m["method"] == "deliver").collect();
        assert!(delivered.is_empty(), "{why}: {delivered:?}");
    }

    /// The first account's status row (through `chp_call` where there is one).
    fn account(&self) -> Value {
        let status = self.call("status", json!({}));
        status["result"]["accounts"][0].clone()
    }

    fn wait_account(&self, what: &str, ok: impl Fn(&Value) -> bool) {
        let mut last = Value::Null;
        let ready = catch_unwind(AssertUnwindSafe(|| {
            wait_until(what, WAIT, || {
                last = self.account();
                ok(&last)
            })
        }));
        if ready.is_err() {
            panic!("timed out waiting for {what}; last status row: {last}");
        }
    }
}

/// Runs one scenario, naming the transport and scenario in its failure and timing it.
fn step(s: &Session, scenario: &str, run: impl FnOnce()) {
    let started = Instant::now();
    if let Err(payload) = catch_unwind(AssertUnwindSafe(run)) {
        let why = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("[{}] {scenario}: FAILED: {why}", s.name);
    }
    eprintln!(
        "conformance [{}] {scenario}: ok ({} ms)",
        s.name,
        started.elapsed().as_millis()
    );
}

/// A gateway folder on imsg-sim with history from before the plugin (so "just before the
/// first new row" is a row id imsg can replay from) and `config` merged in.
fn sim_env(config: Value) -> SimEnv {
    let env = SimEnv::new(json!({}), config);
    env.merge_scenario(json!({
        "messages": [{"id": 9001, "chat_id": 8, "handle": STRANGER, "text": "old"}]
    }));
    env
}

fn start_params(env: &SimEnv, config: Value, host: Value) -> Value {
    json!({
        "config": config,
        "stateDir": env.path("state").display().to_string(),
        "logLevel": "info",
        "host": host,
    })
}

fn env_config(env: &SimEnv) -> Value {
    let text = std::fs::read_to_string(env.gw.config_path()).expect("the env's config");
    serde_json::from_str(&text).expect("the env's config is JSON")
}

fn dm(env: &SimEnv, text: &str) {
    env.insert(json!({"chat_id": 7, "handle": OWNER, "text": text}));
}

// ---- the scenarios ------------------------------------------------------------------------

fn describe(s: &Session) {
    let described = s.request("describe", json!({}));
    let result = &described["result"];
    assert_eq!(result["id"], "imessage", "{described}");
    assert_eq!(result["protocolVersion"], "1.0");
    let schema = &result["configSchema"];
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["properties"]["dmPolicy"].is_object(), "{schema}");
    let methods = result["methods"].as_array().cloned().unwrap_or_default();
    assert!(methods.contains(&json!("pairing.list")), "{methods:?}");
}

fn malformed_json(s: &Session) {
    assert_eq!(
        s.t.post("{this is not json"),
        0,
        "malformed JSON is accepted"
    );
    let answer = s.next_where("the parse error", |m| is_response(m) && m["id"].is_null());
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
}

fn unknown_method(s: &Session) {
    let answer = s.request("teleport", json!({}));
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("teleport"), "names the method: {answer}");
}

fn bad_config(s: &Session, env: &SimEnv) {
    let mut config = env_config(env);
    config["channels"]["imessage"]["dmPolicy"] = json!("sometimes");
    let answer = s.request("start", start_params(env, config, json!({})));
    let error = &answer["error"];
    assert_eq!(error["code"], -32000, "{answer}");
    assert_eq!(error["data"]["code"], "config_invalid", "{answer}");
    let errors = error["data"]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with("channels.imessage.dmPolicy: "))),
        "an error names the field: {answer}"
    );
}

fn start(s: &Session, env: &SimEnv, host: Value) {
    let answer = s.request("start", start_params(env, env_config(env), host));
    let account = &answer["result"]["accounts"][0];
    assert_eq!(account["accountId"], "default", "{answer}");
    assert_eq!(account["watching"], true, "{answer}");
    s.wait_account("the watcher", |a| a["state"] == "watching");
}

fn delivered_and_acknowledged(s: &Session, env: &SimEnv) {
    dm(env, "conformance dm");
    let deliver = s.deliver("the DM's delivery");
    let event = &deliver["params"];
    assert_eq!(event["type"], "message", "{deliver}");
    assert_eq!(event["text"], "conformance dm");
    assert_eq!(event["to"], "chat_id:7");
    assert_eq!(event["senderId"], OWNER);
    assert!(event["messageId"].as_str().is_some_and(|id| !id.is_empty()));
    s.answer(&deliver, Ok(json!({})));
    // The acknowledgement is what counts the message as routed.
    s.wait_account("the acknowledged DM routed", |a| a["routed"] == 1);
}

fn refused_comes_again_in_order(s: &Session, env: &SimEnv) {
    dm(env, "order 1");
    dm(env, "order 2");
    let first = s.deliver("order 1");
    assert_eq!(first["params"]["text"], "order 1", "{first}");
    s.answer(
        &first,
        Err(json!({"code": 1, "message": "disk busy (test)"})),
    );
    let again = s.deliver("order 1 again");
    assert_eq!(
        again["params"]["text"], "order 1",
        "the refused DM comes again before the next: {again}"
    );
    assert_eq!(again["params"]["messageId"], first["params"]["messageId"]);
    assert_ne!(again["id"], first["id"], "a new request id");
    s.answer(&again, Ok(json!({})));
    let second = s.deliver("order 2");
    assert_eq!(second["params"]["text"], "order 2", "{second}");
    s.answer(&second, Ok(json!({})));
    s.wait_account("both routed", |a| a["routed"] == 3);
}

fn unanswered_comes_again(s: &Session, env: &SimEnv) {
    dm(env, "anyone there");
    let first = s.deliver("the DM");
    let asked = Instant::now();
    let again = s.deliver("the DM again after ackTimeoutMs");
    let waited = asked.elapsed();
    assert_eq!(again["params"]["messageId"], first["params"]["messageId"]);
    assert_ne!(again["id"], first["id"]);
    assert!(
        waited >= Duration::from_millis(ACK_TIMEOUT_MS),
        "came again after {waited:?}, before ackTimeoutMs"
    );
    s.answer(&again, Ok(json!({})));
    // The late answer to the first finds no waiter: ignored, and said so.
    s.answer(&first, Ok(json!({})));
    let warning = format!("ignored a response to id {}", first["id"]);
    s.next_where("the ignored-late-response warning", |m| {
        m["method"] == "log"
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.starts_with(&warning))
    });
    s.wait_account("routed once", |a| a["routed"] == 4);
}

fn unknown_response_ignored(s: &Session) {
    s.post(&json!({"jsonrpc": "2.0", "id": 987654, "result": {}}));
    s.next_where("the ignored-response warning", |m| {
        m["method"] == "log"
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.starts_with("ignored a response to id 987654"))
    });
    let status = s.request("status", json!({}));
    assert_eq!(
        status["result"]["accounts"][0]["state"], "watching",
        "the instance keeps working: {status}"
    );
}

fn idempotent_send(s: &Session, env: &SimEnv) {
    let request =
        json!({"to": "chat_id:7", "text": "conformance once", "idempotencyKey": "conformance-1"});
    let first = s.request("send", request.clone());
    assert_eq!(first["result"]["ok"], true, "{first}");
    assert_eq!(
        first["result"]["idempotencyKey"], "conformance-1",
        "{first}"
    );
    assert!(first["result"].get("replayed").is_none(), "{first}");
    let once = |env: &SimEnv| {
        env.sends()
            .iter()
            .filter(|p| p["text"] == "conformance once")
            .count()
    };
    // imsg records a send before it answers: the receipt is the marker.
    assert_eq!(once(env), 1, "imsg sent it: {:?}", env.sends());
    let second = s.request("send", request);
    assert_eq!(second["result"]["ok"], true, "{second}");
    assert_eq!(second["result"]["replayed"], true, "{second}");
    assert_eq!(
        second["result"]["messageIds"], first["result"]["messageIds"],
        "the replay returns the first receipt's ids"
    );
    assert_eq!(once(env), 1, "imsg sent it once: {:?}", env.sends());
}

fn pairing_list(s: &Session, env: &SimEnv) {
    env.insert(json!({"chat_id": 8, "handle": STRANGER, "text": "hello?"}));
    let mut reply = None;
    wait_until("the pairing reply to the stranger", WAIT, || {
        reply = env.sends().into_iter().find(|p| p["chat_id"] == 8);
        reply.is_some()
    });
    let listed = s.call("call", json!({"method": "pairing.list", "payload": {}}));
    let pending = listed["result"].as_array().cloned().unwrap_or_default();
    let entry = pending
        .iter()
        .find(|r| r["senderId"] == STRANGER)
        .unwrap_or_else(|| panic!("the stranger is pending: {listed}"));
    assert_eq!(entry["accountId"], "default");
    let code = entry["code"].as_str().unwrap_or("no code");
    let text = reply
        .as_ref()
        .map(|r| r["text"].to_string())
        .unwrap_or_default();
    assert!(text.contains(code), "the reply carries code {code}: {text}");
    s.assert_no_delivery("a stranger's DM is not delivered");
}

fn config_write(s: &Session, env: &SimEnv) {
    dm(env, "/config set channels.imessage.textChunkLimit 3000");
    let deliver = s.deliver("the /config DM");
    assert_eq!(deliver["params"]["commandAuthorized"], true, "{deliver}");
    s.answer(&deliver, Ok(json!({})));
    let asked = s.next_where("host.request config.write", |m| {
        m["method"] == "host.request"
    });
    let params = &asked["params"];
    assert_eq!(params["method"], "config.write", "{asked}");
    assert_eq!(
        params["payload"],
        json!({"op": "set", "path": "channels.imessage.textChunkLimit", "value": 3000, "accountId": "default"})
    );
    let reason = "channels.imessage.textChunkLimit: refused by the conformance host";
    let refusal = json!({"code": -32000, "message": "config not written",
        "data": {"code": "config_invalid", "message": "config not written", "errors": [reason]}});
    s.answer(&asked, Err(refusal));
    let said = format!("Config not changed: {reason}");
    wait_until("the plugin's refusal reply", WAIT, || {
        env.sends().iter().any(|p| p["text"] == said.as_str())
    });
    s.wait_account("the /config DM routed", |a| a["routed"] == 5);
}

fn eight_threads(s: &Session) {
    let barrier = Barrier::new(8);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                assert_eq!(s.t.post(&status_request(&format!("thread-{i}"))), 0);
            });
        }
    });
    for i in 0..8 {
        let id = format!("thread-{i}");
        let answer = s.response(&id, &format!("the answer to {id}"));
        assert_eq!(
            answer["result"]["accounts"][0]["state"], "watching",
            "{answer}"
        );
    }
}

fn status(s: &Session) {
    let answer = s.request("status", json!({}));
    let account = &answer["result"]["accounts"][0];
    assert_eq!(account["accountId"], "default", "{answer}");
    assert_eq!(account["state"], "watching", "{answer}");
    assert_eq!(
        account["routed"], 5,
        "each acknowledged DM counted once: {answer}"
    );
}

fn stop(s: &Session) {
    let answer = s.request("stop", json!({}));
    assert_eq!(answer["result"], json!({}), "{answer}");
    let closed = s.next_where("plugin.closed", |m| m["method"] == "plugin.closed");
    assert!(closed.get("id").is_none(), "a notification: {closed}");
    let held = s.held.lock().unwrap().clone();
    assert!(held.is_empty(), "nothing left unanswered: {held:?}");
    s.t.assert_ended();
}

/// Events of one delivery: a batch's, or the one event.
fn events_of(deliver: &Value) -> Vec<Value> {
    match deliver["params"]["type"].as_str() {
        Some("batch") => deliver["params"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        _ => vec![deliver["params"].clone()],
    }
}

fn bounded_ordered_batches(s: &Session, env: &SimEnv) {
    let texts: Vec<String> = (1..=5).map(|i| format!("batch {i}")).collect();
    for text in &texts {
        dm(env, text);
    }
    // Refused: by the time it comes again every DM is ready, so the batches must be bounded.
    let refused = s.deliver("the first delivery");
    let first_id = events_of(&refused)[0]["messageId"].clone();
    s.answer(
        &refused,
        Err(json!({"code": 1, "message": "disk busy (test)"})),
    );
    let mut taken: Vec<Value> = Vec::new();
    let mut sizes = Vec::new();
    while taken.len() < texts.len() {
        let deliver = s.deliver("the next batch");
        let events = events_of(&deliver);
        assert!(
            !events.is_empty() && events.len() <= MAX_BATCH,
            "1 to maxBatch events: {deliver}"
        );
        sizes.push(events.len());
        taken.extend(events);
        s.answer(&deliver, Ok(json!({})));
    }
    assert_eq!(taken[0]["messageId"], first_id, "the refused event first");
    let got: Vec<&str> = taken.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(
        got, texts,
        "every DM once, in order (batch sizes {sizes:?})"
    );
    assert!(
        sizes.contains(&MAX_BATCH),
        "ready DMs share a batch: {sizes:?}"
    );
    s.wait_account("all routed", |a| a["routed"] == 5);
}

/// The code the pairing host hands out (the plugin must show the host's, not its own).
const HOST_CODE: &str = "HOSTK7M2";

/// The next `host.request` (any other message is held): its method must be `method`.
fn host_request(s: &Session, method: &str) -> Value {
    let asked = s.next_where(&format!("host.request {method}"), |m| {
        m["method"] == "host.request"
    });
    assert_eq!(asked["params"]["method"], method, "{asked}");
    asked
}

fn answer_allow_from(s: &Session, allow: &[&str]) {
    let asked = host_request(s, "pairing.allowFrom");
    assert_eq!(
        asked["params"]["payload"]["accountId"], "default",
        "{asked}"
    );
    s.answer(&asked, Ok(json!({ "allowFrom": allow })));
}

fn stranger_dm(env: &SimEnv, text: &str) {
    env.insert(json!({"chat_id": 8, "handle": STRANGER, "text": text}));
}

fn pairing_replies(env: &SimEnv) -> Vec<Value> {
    env.sends()
        .into_iter()
        .filter(|p| p["chat_id"] == 8)
        .collect()
}

/// Issue 24 item 5: under `pairing.host` the host records the request and keeps the allow
/// store; the plugin shows the host's code once and admits the sender once the host lists it.
fn host_kept_pairing(s: &Session, env: &SimEnv) {
    stranger_dm(env, "hello?");
    answer_allow_from(s, &[]);
    let upsert = host_request(s, "pairing.upsert");
    assert_eq!(
        upsert["params"]["payload"],
        json!({"senderId": STRANGER, "chatId": 8, "meta": {}, "accountId": "default"})
    );
    s.answer(&upsert, Ok(json!({"code": HOST_CODE, "created": true})));
    wait_until("the pairing reply with the host's code", WAIT, || {
        !pairing_replies(env).is_empty()
    });
    let text = pairing_replies(env)[0]["text"].to_string();
    assert!(text.contains(HOST_CODE), "the host's code: {text}");
    assert!(text.contains(STRANGER), "the sender id: {text}");
    // Pending: the host answers `created: false`, and no second reply goes out.
    stranger_dm(env, "still there?");
    answer_allow_from(s, &[]);
    let again = host_request(s, "pairing.upsert");
    s.answer(&again, Ok(json!({"code": HOST_CODE, "created": false})));
    // The host keeps pairing: the plugin's own pairing calls say so.
    for (method, payload) in [
        ("pairing.list", json!({})),
        ("pairing.approve", json!({"code": HOST_CODE})),
        ("pairing.revoke", json!({"senderId": STRANGER})),
    ] {
        let answer = s.call("call", json!({"method": method, "payload": payload}));
        assert_eq!(answer["error"]["data"]["code"], "unsupported", "{answer}");
        let why = answer["error"]["data"]["message"].as_str().unwrap_or("");
        assert!(why.contains("pairing.host"), "{answer}");
    }
    // Approved in the host: the sender's next DM is read against the host's new list (within
    // the 5 s cache too) and delivered, its commands authorized as a paired sender's.
    stranger_dm(env, "/status");
    answer_allow_from(s, &[STRANGER]);
    let deliver = s.deliver("the approved sender's DM");
    let event = &deliver["params"];
    assert_eq!(
        (&event["senderId"], &event["text"]),
        (&json!(STRANGER), &json!("/status")),
        "{deliver}"
    );
    assert_eq!(event["commandAuthorized"], true, "{deliver}");
    assert_eq!(event["senderIsOwner"], false, "{deliver}");
    s.answer(&deliver, Ok(json!({})));
    s.wait_account("the approved DM routed", |a| a["routed"] == 1);
    assert_eq!(pairing_replies(env).len(), 1, "one pairing reply in all");
    assert!(
        !std::fs::exists(env.path("state/imessage/default/pairing.json")).unwrap_or(true),
        "the plugin kept no pairing file of its own"
    );
    let logs = s.logs.lock().unwrap();
    let leaked: Vec<&Value> = logs
        .iter()
        .filter(|l| l.to_string().contains(STRANGER))
        .collect();
    assert!(leaked.is_empty(), "no handle in info logs: {leaked:?}");
}

// ---- the suites ---------------------------------------------------------------------------

/// Every scenario of §3 but batches, on one started instance.
fn suite(name: &'static str, open: Open) {
    let env = sim_env(json!({"commands": {"config": true}}));
    let s = Session::new(name, open(&env));
    step(&s, "describe", || describe(&s));
    step(&s, "malformed JSON -> -32700", || malformed_json(&s));
    step(&s, "unknown method -> -32601", || unknown_method(&s));
    step(&s, "start with a bad config", || bad_config(&s, &env));
    step(&s, "start", || start(&s, &env, json!({})));
    step(&s, "a DM delivered and acknowledged", || {
        delivered_and_acknowledged(&s, &env)
    });
    step(&s, "a refused delivery comes again, in order", || {
        refused_comes_again_in_order(&s, &env)
    });
    step(&s, "an unanswered delivery comes again", || {
        unanswered_comes_again(&s, &env)
    });
    step(&s, "a response to an unknown id is ignored", || {
        unknown_response_ignored(&s)
    });
    step(&s, "send with an idempotency key twice", || {
        idempotent_send(&s, &env)
    });
    step(&s, "call pairing.list", || pairing_list(&s, &env));
    step(&s, "host.request config.write answered", || {
        config_write(&s, &env)
    });
    step(&s, "8 threads posting status", || eight_threads(&s));
    step(&s, "status", || status(&s));
    step(&s, "stop ends with plugin.closed", || stop(&s));
}

/// A host that lists `deliver.batch` with a small `maxBatch`.
fn batch_suite(name: &'static str, open: Open) {
    let env = sim_env(json!({}));
    let s = Session::new(name, open(&env));
    let host = json!({"features": [features::BATCH_DELIVERY], "maxBatch": MAX_BATCH});
    step(&s, "start as a batch host", || start(&s, &env, host));
    step(&s, "bounded, ordered batches", || {
        bounded_ordered_batches(&s, &env)
    });
    step(&s, "stop ends with plugin.closed", || stop(&s));
}

/// A host that lists `pairing.host` and answers `pairing.upsert` and `pairing.allowFrom`.
fn pairing_host_suite(name: &'static str, open: Open) {
    let env = sim_env(json!({}));
    let s = Session::new(name, open(&env));
    let host = json!({"features": [features::PAIRING_HOST]});
    step(&s, "start as a pairing host", || start(&s, &env, host));
    step(&s, "pairing kept by the host", || {
        host_kept_pairing(&s, &env)
    });
    step(&s, "stop ends with plugin.closed", || stop(&s));
}

/// The answers that need no started plugin, as one transport gives them (ids left out).
fn unstarted_answers(s: &Session, env: &SimEnv) -> Vec<Value> {
    let mut bad = env_config(env);
    bad["channels"]["imessage"]["dmPolicy"] = json!("sometimes");
    assert_eq!(s.t.post("{this is not json"), 0);
    let parse_error = s.next_where("the parse error", |m| is_response(m) && m["id"].is_null());
    let answers = [
        s.request("describe", json!({})),
        parse_error,
        s.request("teleport", json!({})),
        s.request("status", json!({"accountId": 7})),
        s.request("start", start_params(env, bad, json!({}))),
    ];
    answers
        .into_iter()
        .map(|mut a| {
            a.as_object_mut().map(|o| o.remove("id"));
            a
        })
        .collect()
}

/// A divergence between transports is a bug in one of them: the same requests get the same
/// answers, byte for byte as JSON values.
#[test]
fn every_transport_answers_alike() {
    let env = sim_env(json!({}));
    let opens: [(&'static str, Open); 3] = [
        ("abi_stable", abi_host),
        ("C ABI", c_abi),
        ("stdio", stdio_bridge),
    ];
    let answers: Vec<(&str, Vec<Value>)> = opens
        .iter()
        .map(|(name, open)| {
            let s = Session::new(name, open(&env));
            (*name, unstarted_answers(&s, &env))
        })
        .collect();
    let (first, expected) = &answers[0];
    // Wrong params: -32602 naming the field, on every transport alike.
    assert_eq!(expected[3]["error"]["code"], -32602, "{}", expected[3]);
    assert_eq!(expected[3]["error"]["data"]["path"], "accountId");
    for (name, got) in &answers[1..] {
        for (want, got) in expected.iter().zip(got) {
            assert_eq!(got, want, "{name} differs from {first}");
        }
    }
}

#[test]
fn abi_stable_host_passes_every_scenario() {
    suite("abi_stable", abi_host);
}

#[test]
fn c_abi_passes_every_scenario() {
    suite("C ABI", c_abi);
}

#[test]
fn stdio_bridge_passes_every_scenario() {
    suite("stdio", stdio_bridge);
}

#[test]
fn abi_stable_host_gets_bounded_ordered_batches() {
    batch_suite("abi_stable", abi_host);
}

#[test]
fn c_abi_gets_bounded_ordered_batches() {
    batch_suite("C ABI", c_abi);
}

#[test]
fn stdio_bridge_gets_bounded_ordered_batches() {
    batch_suite("stdio", stdio_bridge);
}

#[test]
fn abi_stable_host_keeps_pairing() {
    pairing_host_suite("abi_stable", abi_host);
}

#[test]
fn c_abi_host_keeps_pairing() {
    pairing_host_suite("C ABI", c_abi);
}

#[test]
fn stdio_bridge_host_keeps_pairing() {
    pairing_host_suite("stdio", stdio_bridge);
}
