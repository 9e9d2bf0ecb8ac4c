//! The running server: one writer for stdout (so lines never interleave) that applies the
//! output faults, the request pipeline (§B3), the scheduling per profile (§B2), and the
//! ticker that runs polls, inbox ops and timed events (§B5, §B8, §B9).

use std::fs::File;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::faults::Faults;
use crate::params::Params;
use crate::state::{overflow_line, RpcError, Sim};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reply,
    Notification,
    Raw,
}

pub struct Out {
    stdout: std::io::Stdout,
    faults: Faults,
    replies: u64,
    notifications: u64,
    lines: u64,
    hung: bool,
}

pub struct Shared {
    pub state: Mutex<Sim>,
    pub out: Mutex<Out>,
    record: Option<Mutex<File>>,
    start: Instant,
    in_flight: AtomicUsize,
    pub closing: AtomicBool,
    /// Burst mode (benchmark): started once, after the first `watch.subscribe` answer.
    pub burst: Mutex<Option<crate::burst::Burst>>,
    /// Burst mode: where received `send`s are noted.
    pub send_log: Option<String>,
}

impl Shared {
    pub fn new(sim: Sim, record: Option<File>, burst: Option<crate::burst::Burst>) -> Arc<Shared> {
        let faults = sim.faults.clone();
        let send_log = burst.as_ref().and_then(|b| b.sends.clone());
        Arc::new(Shared {
            state: Mutex::new(sim),
            out: Mutex::new(Out {
                stdout: std::io::stdout(),
                faults,
                replies: 0,
                notifications: 0,
                lines: 0,
                hung: false,
            }),
            record: record.map(Mutex::new),
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            burst: Mutex::new(burst),
            send_log,
        })
    }

    pub fn t_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn record(&self, entry: Value) {
        if let Some(file) = &self.record {
            if let Ok(mut f) = file.lock() {
                let mut entry = entry;
                entry["t_ms"] = json!(self.t_ms());
                // Which simulator process: tests tell a gateway's sender from a CLI's.
                entry["pid"] = json!(std::process::id());
                // One write per line: several simulator processes append to this file, and a
                // line written in pieces can interleave with another's and be lost to the reader.
                let line = format!("{entry}\n");
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut out) = self.out.lock() {
            out.faults = faults;
        }
    }

    pub fn replies_written(&self) -> u64 {
        self.out.lock().map(|o| o.replies).unwrap_or(0)
    }

    fn raw_write(&self, out: &mut Out, line: &str) {
        let split = out.faults.split_writes.clone();
        let bytes = format!("{line}\n").into_bytes();
        match split {
            Some(cfg) => {
                let chunk = cfg.chunk_bytes.unwrap_or(7).max(1) as usize;
                let pause = cfg.pause_ms.unwrap_or(5);
                for piece in bytes.chunks(chunk) {
                    let _ = out.stdout.write_all(piece);
                    let _ = out.stdout.flush();
                    std::thread::sleep(Duration::from_millis(pause));
                }
            }
            None => {
                let _ = out.stdout.write_all(&bytes);
                let _ = out.stdout.flush();
            }
        }
        self.record(json!({"dir": "out", "line": line}));
    }

    /// Writes one protocol line, applying the output faults.
    pub fn write(&self, kind: Kind, value: &Value) {
        let Ok(mut out) = self.out.lock() else { return };
        if out.hung {
            return;
        }
        let mut value = value.clone();
        if kind == Kind::Reply {
            out.replies += 1;
            let n = out.replies;
            let malformed: Vec<String> = out
                .faults
                .malformed
                .iter()
                .filter(|m| m.before_reply == n)
                .map(|m| m.line.clone())
                .collect();
            for line in malformed {
                self.raw_write(&mut out, &line);
            }
            let failed = out.faults.write_failed.contains(&n);
            if failed {
                value =
                    json!({"jsonrpc": "2.0", "error": {"code": -32603, "message": "write failed"}});
            }
        } else if kind == Kind::Notification {
            out.notifications += 1;
        }
        let mut line = match kind {
            Kind::Raw => value.as_str().unwrap_or_default().to_string(),
            _ => serde_json::to_string(&value).unwrap_or_default(),
        };
        let escape = out.faults.escape_slashes.unwrap_or(true);
        if escape && kind != Kind::Raw {
            // '/' can only occur inside JSON strings, so this is exactly `\/` escaping.
            line = line.replace('/', "\\/");
        }
        self.raw_write(&mut out, &line);
        out.lines += 1;
        let lines = out.lines;
        if let Some(noise) = out.faults.stdout_noise.clone() {
            if let Some(every) = noise.every.filter(|n| *n > 0) {
                if lines % every == 0 {
                    let text = noise.line.unwrap_or_else(|| "imsg-sim: noise".into());
                    self.raw_write(&mut out, &text);
                }
            }
        }
        if let Some(every) = out.faults.unknown_notifications.filter(|n| *n > 0) {
            if lines % every == 0 {
                let event =
                    r#"{"jsonrpc":"2.0","method":"bridge.event","params":{"event":"heartbeat"}}"#;
                self.raw_write(&mut out, event);
            }
        }
        if let Some(exit) = out.faults.exit_after.clone() {
            let count = match kind {
                Kind::Reply => exit.replies.map(|n| (n, out.replies)),
                Kind::Notification => exit.notifications.map(|n| (n, out.notifications)),
                Kind::Raw => None,
            }
            .or_else(|| exit.lines.map(|n| (n, lines)));
            if let Some((limit, seen)) = count {
                if seen >= limit {
                    let _ = out.stdout.flush();
                    if exit.signal.as_deref() == Some("KILL") {
                        // SAFETY: sending a signal to our own pid.
                        unsafe {
                            libc::kill(libc::getpid(), libc::SIGKILL);
                        }
                    }
                    std::process::exit(exit.code.unwrap_or(1) as i32);
                }
            }
        }
        if kind == Kind::Reply {
            if let Some(n) = out.faults.hang_after_requests {
                if out.replies >= n {
                    out.hung = true;
                }
            }
        }
    }

    /// Raw bytes plus `\n`, outside the protocol (the `stdout` op with `hex`).
    pub fn write_bytes(&self, bytes: &[u8]) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.stdout.write_all(bytes);
            let _ = out.stdout.write_all(b"\n");
            let _ = out.stdout.flush();
        }
        self.record(json!({"dir": "out", "line": String::from_utf8_lossy(bytes)}));
    }

    fn reply(&self, id: &Value, result: Result<Value, RpcError>) {
        let line = match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
        };
        self.write(Kind::Reply, &line);
    }

    fn notify_all(&self, lines: Vec<Value>) {
        for line in lines {
            self.write(Kind::Notification, &line);
        }
    }
}

/// A request that passed the framing and profile checks.
struct Request {
    /// `None`: the request had no `id` key (a notification).
    id: Option<Value>,
    method: String,
    params: Map<String, Value>,
}

const READS: &[&str] = &[
    "chats.list",
    "messages.history",
    "messages.after",
    "message.send_status",
];
const MUTATIONS: &[&str] = &[
    "send",
    "send.tracked",
    "typing",
    "read",
    "tapback",
    "message.edit",
    "message.unsend",
];
/// Methods that need the database (`send` does not: §10 E6; its chat_id lookups do).
const DB_METHODS: &[&str] = &[
    "chats.list",
    "messages.history",
    "messages.after",
    "watch.subscribe",
    "message.send_status",
    "send.tracked",
];

pub struct Server {
    shared: Arc<Shared>,
    mutations: mpsc::Sender<Request>,
}

impl Server {
    pub fn new(shared: Arc<Shared>) -> Server {
        let (tx, rx) = mpsc::channel::<Request>();
        let worker = shared.clone();
        std::thread::spawn(move || {
            for request in rx {
                // A slow mutation holds up the ones behind it: one lane, as in imsg.
                std::thread::sleep(delay_for(&worker, &request.method));
                execute(&worker, request);
                worker.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Server {
            shared,
            mutations: tx,
        }
    }

    /// Reads stdin until EOF; returns the exit status.
    pub fn run(&self) -> i32 {
        let (strict, style, prompt) = {
            let sim = self.shared.state.lock().expect("state");
            (
                sim.strict,
                sim.fda_style(),
                sim.faults.contacts_prompt_ms.clone(),
            )
        };
        if let (false, Some(wait)) = (strict, prompt) {
            match wait.as_u64() {
                Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
        }
        let stdin = std::io::stdin();
        let mut reader = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).to_string();
            let line = line.trim_end_matches('\n').to_string();
            self.shared.record(json!({"dir": "in", "line": line}));
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            if style.as_deref() == Some("internal_error") {
                self.startup_error_reply(trimmed);
                continue;
            }
            self.handle_line(trimmed, strict);
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        // A hung server ignores EOF: the client has to kill it.
        if self.shared.out.lock().map(|o| o.hung).unwrap_or(false) {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if style.as_deref() == Some("internal_error") {
            1
        } else {
            0
        }
    }

    fn startup_error_reply(&self, line: &str) {
        let text = self.shared.state.lock().expect("state").permission_text();
        match serde_json::from_str::<Value>(line) {
            Err(_) => self.shared.reply(&Value::Null, Err(parse_error())),
            Ok(Value::Object(obj)) => {
                let id = obj.get("id").cloned().unwrap_or(Value::Null);
                self.shared.reply(&id, Err(RpcError::internal(text)));
            }
            Ok(_) => self
                .shared
                .reply(&Value::Null, Err(invalid("request must be an object"))),
        }
    }

    fn handle_line(&self, line: &str, strict: bool) {
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => return self.shared.reply(&Value::Null, Err(parse_error())),
        };
        let Value::Object(obj) = value else {
            return self
                .shared
                .reply(&Value::Null, Err(invalid("request must be an object")));
        };
        let id = obj.get("id").cloned();
        let echo = id.clone().unwrap_or(Value::Null);
        // Strict answers nothing to a request without id; lenient answers errors with id null.
        let has_id = id.is_some();
        let fail = |e: RpcError, reply_id: &Value| {
            if has_id || !strict {
                self.shared.reply(reply_id, Err(e));
            }
        };
        if strict {
            if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                return fail(invalid("jsonrpc must be exactly 2.0"), &echo);
            }
            if matches!(
                id,
                Some(Value::Bool(_)) | Some(Value::Object(_)) | Some(Value::Array(_))
            ) {
                return fail(
                    invalid("id must be a string, number, or null"),
                    &Value::Null,
                );
            }
        } else if let Some(Value::String(v)) = obj.get("jsonrpc") {
            if v != "2.0" {
                return fail(invalid("jsonrpc must be 2.0"), &echo);
            }
        }
        let params = match obj.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) if strict => {
                return fail(
                    RpcError::params("params must be an object when present"),
                    &echo,
                )
            }
            Some(_) => Map::new(),
        };
        let method = obj
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if method.is_empty() {
            return fail(invalid("method is required"), &echo);
        }
        let has = self.shared.state.lock().expect("state").has_method(&method);
        if !has {
            return fail(
                RpcError::new(-32601, "Method not found", Some(Value::String(method))),
                &echo,
            );
        }
        let request = Request { id, method, params };
        let lenient_delay = delay_for(&self.shared, &request.method);
        if !strict {
            std::thread::sleep(lenient_delay);
            return execute(&self.shared, request);
        }
        let outstanding = self.shared.in_flight.load(Ordering::SeqCst);
        if outstanding >= 128 {
            return fail(
                RpcError::new(
                    -32000,
                    "Server busy",
                    Some(json!("too many outstanding requests")),
                ),
                &echo,
            );
        }
        if READS.contains(&request.method.as_str()) {
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let shared = self.shared.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay_for(&shared, &request.method));
                execute(&shared, request);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        } else if MUTATIONS.contains(&request.method.as_str()) {
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let _ = self.mutations.send(request);
        } else {
            execute(&self.shared, request);
        }
    }
}

fn delay_for(shared: &Shared, method: &str) -> Duration {
    let sim = shared.state.lock().expect("state");
    Duration::from_millis(sim.faults.delay_ms(method))
}

fn parse_error() -> RpcError {
    RpcError::new(
        -32700,
        "Parse error",
        Some(json!(
            "The data couldn\u{2019}t be read because it isn\u{2019}t in the correct format."
        )),
    )
}

fn invalid(text: &str) -> RpcError {
    RpcError::new(-32600, "Invalid Request", Some(json!(text)))
}

/// Runs one request and writes what it produces.
fn execute(shared: &Arc<Shared>, request: Request) {
    let Request { id, method, params } = request;
    let mut sim = shared.state.lock().expect("state");
    let strict = sim.strict;
    let p = Params::new(&params, strict);
    let reply_id = id.clone().unwrap_or(Value::Null);
    let answer = |shared: &Shared, result: Result<Value, RpcError>| {
        let silent = id.is_none() && (strict || result.is_ok());
        if !silent {
            shared.reply(&reply_id, result);
        }
    };
    if DB_METHODS.contains(&method.as_str()) {
        let unreadable = sim.faults.take_database_unavailable(&method);
        let was = sim.db_available;
        sim.db_available = was && !unreadable;
        let guard = sim.db_guard();
        sim.db_available = was;
        if let Err(e) = guard {
            drop(sim);
            return answer(shared, Err(e));
        }
    }
    if sim.faults.take_bridge_unavailable(&method) {
        let e = sim.bridge_unavailable();
        drop(sim);
        return answer(shared, Err(e));
    }
    match method.as_str() {
        "chats.list" => {
            let r = sim.chats_list(&p);
            drop(sim);
            answer(shared, r)
        }
        "messages.history" => {
            let r = sim.messages_history(&p);
            drop(sim);
            answer(shared, r)
        }
        "messages.after" => {
            let r = sim.messages_after(&p);
            drop(sim);
            answer(shared, r)
        }
        "initialize" | "status" => {
            let r = sim.snapshot(&p, &method);
            drop(sim);
            answer(shared, r)
        }
        "watch.unsubscribe" => {
            let r = sim.watch_unsubscribe(&p);
            drop(sim);
            answer(shared, r)
        }
        "watch.subscribe" => match sim.watch_subscribe(&p) {
            Err(e) => {
                drop(sim);
                answer(shared, Err(e))
            }
            Ok((result, sub)) => {
                let (lines, _) = sim.poll(sub);
                let replay_first = !strict && sim.faults.replay_before_result.unwrap_or(true);
                // Keep the state lock while writing, so no ticker poll slips in between.
                let mut out_lines = lines;
                if replay_first {
                    shared.notify_all(std::mem::take(&mut out_lines));
                    answer(shared, Ok(result));
                } else {
                    answer(shared, Ok(result));
                    shared.notify_all(out_lines);
                }
                drop(sim);
                let burst = shared.burst.lock().ok().and_then(|mut b| b.take());
                if let Some(burst) = burst {
                    let writer = shared.clone();
                    std::thread::spawn(move || {
                        crate::burst::run(&burst, Some(sub), |bytes| {
                            if let Ok(mut out) = writer.out.lock() {
                                let _ = out.stdout.write_all(bytes);
                                let _ = out.stdout.flush();
                            }
                        })
                    });
                }
            }
        },
        "send" => {
            if let (Some(path), Some(text)) =
                (&shared.send_log, params.get("text").and_then(Value::as_str))
            {
                crate::burst::note_send(path, text);
            }
            let latency = sim
                .send_cfg
                .get("latency_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let formatting = sim.formatting_effect(&p);
            sim.begin_mutation();
            let outcome = sim.send(&p);
            sim.end_mutation();
            drop(sim);
            let rows = match &outcome {
                Ok((_, rows)) | Err((_, rows)) => rows.clone(),
            };
            let mut effect =
                json!({"effect": "send", "params": Value::Object(params.clone()), "rows": rows});
            if let (Some(f), true) = (formatting, outcome.is_ok()) {
                effect["formatting"] = json!(f);
            }
            shared.record(effect);
            std::thread::sleep(Duration::from_millis(latency));
            if lost_reply(shared) && outcome.is_ok() {
                return; // Written, never answered (§7.5).
            }
            answer(shared, outcome.map(|(v, _)| v).map_err(|(e, _)| e))
        }
        "send.tracked" => {
            sim.begin_mutation();
            let outcome = sim.send_tracked(&p);
            sim.end_mutation();
            drop(sim);
            let rows = match &outcome {
                Ok((_, rows)) | Err((_, rows)) => rows.clone(),
            };
            shared.record(
                json!({"effect": "send", "params": Value::Object(params.clone()), "rows": rows}),
            );
            match outcome {
                Ok((Some(result), _)) => answer(shared, Ok(result)),
                Ok((None, _)) => {} // lost reply
                Err((e, _)) => answer(shared, Err(e)),
            }
        }
        "message.send_status" => {
            let r = sim.send_status(&p);
            drop(sim);
            answer(shared, r)
        }
        "typing" | "read" => {
            let r = if method == "typing" {
                sim.typing(&p)
            } else {
                sim.read(&p)
            };
            drop(sim);
            shared.record(
                json!({"effect": method, "params": Value::Object(params.clone()), "rows": []}),
            );
            answer(shared, r)
        }
        "tapback" | "message.edit" | "message.unsend" => {
            sim.begin_mutation();
            let r = match method.as_str() {
                "tapback" => sim.tapback(&p),
                "message.edit" => sim.message_edit(&p),
                _ => sim.message_unsend(&p),
            };
            sim.end_mutation();
            drop(sim);
            let effect = match method.as_str() {
                "tapback" => "tapback",
                "message.edit" => "edit",
                _ => "unsend",
            };
            shared.record(
                json!({"effect": effect, "params": Value::Object(params.clone()), "rows": []}),
            );
            answer(shared, r)
        }
        other => {
            drop(sim);
            answer(
                shared,
                Err(RpcError::new(
                    -32601,
                    "Method not found",
                    Some(json!(other)),
                )),
            )
        }
    }
}

/// Whether sends are written but never answered (scenario `send.mode: "lost_reply"`).
fn lost_reply(shared: &Shared) -> bool {
    let sim = shared.state.lock().expect("state");
    sim.send_cfg.get("mode").and_then(Value::as_str) == Some("lost_reply")
}

/// Applies one control op (§B9). `once`: with a shared journal, ops that create rows are
/// applied by the first process only (timed events and inbox lines reach every process).
pub fn apply_op(shared: &Arc<Shared>, op: &Value, once: Option<&str>) {
    let name = op.get("op").and_then(Value::as_str).unwrap_or("");
    let mut sim = shared.state.lock().expect("state");
    if matches!(name, "insert" | "insert_many" | "join") {
        sim.begin_mutation();
        if let Some(key) = once {
            if sim.marker_seen(key) {
                sim.end_mutation();
                return;
            }
            sim.add_marker(key);
        }
        apply_row_op(&mut sim, name, op);
        sim.end_mutation();
        return;
    }
    // Row state changes (§7.5): idempotent, so every process may apply them.
    if matches!(name, "send_state" | "reserve" | "edit" | "unsend") {
        sim.begin_mutation();
        let id = op.get("id").and_then(Value::as_i64).unwrap_or(0);
        match name {
            "send_state" => {
                let state = op["state"].as_str().unwrap_or("delivered").to_string();
                let at = sim.clock.now_ms();
                sim.set_send_state(id, &state, at);
            }
            "reserve" => {
                let guid = op["guid"].as_str().unwrap_or("").to_lowercase();
                sim.db.reserved.insert(guid.clone());
                if sim.journal.is_some() {
                    sim.journal_out.push(json!({"reserve": guid}));
                }
            }
            "edit" => sim.rewrite_row(id, op["text"].as_str().unwrap_or("")),
            _ => sim.rewrite_row(id, ""),
        }
        sim.end_mutation();
        return;
    }
    match name {
        "db_error" => {
            let message = op
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("database error")
                .to_string();
            let ids: Vec<i64> = sim
                .subs
                .values()
                .filter(|s| !s.dead)
                .map(|s| s.id)
                .collect();
            for id in &ids {
                if let Some(s) = sim.subs.get_mut(id) {
                    s.dead = true;
                }
            }
            for id in ids {
                shared.write(
                    Kind::Notification,
                    &json!({"jsonrpc": "2.0", "method": "error",
                        "params": {"subscription": id, "error": {"message": message}}}),
                );
            }
        }
        "overflow" => {
            let id = op.get("subscription").and_then(Value::as_i64).unwrap_or(0);
            match op.get("deliver").and_then(Value::as_u64) {
                Some(k) => {
                    if let Some(s) = sim.subs.get_mut(&id) {
                        s.overflow_after = Some(k as usize);
                    }
                }
                None => {
                    if let Some(s) = sim.subs.remove(&id) {
                        shared.write(
                            Kind::Notification,
                            &overflow_line(id, s.cursor.unwrap_or(0)),
                        );
                    }
                }
            }
        }
        "set" => {
            let mut changes = op.clone();
            if let Some(o) = changes.as_object_mut() {
                o.remove("op");
            }
            apply_set(&mut sim, &changes);
            shared.set_faults(sim.faults.clone());
        }
        "stdout" => {
            drop(sim);
            if let Some(hex) = op.get("hex").and_then(Value::as_str) {
                // Raw bytes (for invalid UTF-8): pairs of hex digits, spaces ignored.
                let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes: Vec<u8> = (0..digits.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok())
                    .collect();
                shared.write_bytes(&bytes);
            } else {
                let line = op
                    .get("line")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                shared.write(Kind::Raw, &Value::String(line));
            }
        }
        // One diagnostic line on stderr, as imsg writes them (they may quote a handle).
        "stderr" => {
            let line = op.get("line").and_then(Value::as_str).unwrap_or("");
            let mut err = std::io::stderr();
            let _ = writeln!(err, "{line}");
            let _ = err.flush();
        }
        "exit" => {
            let code = op.get("code").and_then(Value::as_i64).unwrap_or(0);
            let _ = std::io::stdout().flush();
            std::process::exit(code as i32);
        }
        _ => {}
    }
}

fn apply_row_op(sim: &mut Sim, name: &str, op: &Value) {
    match name {
        "insert" => {
            if let Some(row) = op.get("row") {
                let row = sim.db.row_from_json(row, sim.clock.now_ms());
                sim.insert_row(row);
            }
        }
        "insert_many" => {
            for row in op
                .get("rows")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let row = sim.db.row_from_json(row, sim.clock.now_ms());
                sim.insert_row(row);
            }
        }
        _ => {
            let id = op.get("message_id").and_then(Value::as_i64).unwrap_or(0);
            let chat = op.get("chat_id").and_then(Value::as_i64);
            if let Some(row) = sim.db.rows.get_mut(&id) {
                row.chat_id = chat;
            }
            sim.journal_join(id, chat);
        }
    }
}

fn apply_set(sim: &mut Sim, changes: &Value) {
    let Some(map) = changes.as_object() else {
        return;
    };
    for (key, value) in map {
        match key.as_str() {
            "db" => sim.db_available = value.as_str() == Some("available"),
            "faults" => {
                if let Some(f) = value.as_object() {
                    let mut raw = sim.faults_raw.clone();
                    for (k, v) in f {
                        raw.insert(k.clone(), v.clone());
                    }
                    match crate::faults::Faults::from_map(&raw) {
                        Ok(faults) => {
                            sim.faults = faults;
                            sim.faults_raw = raw;
                        }
                        Err(e) => eprintln!("imsg-sim: set: {e}; faults unchanged"),
                    }
                }
            }
            "send" => sim.send_cfg = value.clone(),
            "bridge" => sim.bridge = value.clone(),
            "platform" => sim.linux = value.as_str() == Some("linux"),
            "methods" => {
                sim.methods = value.as_array().map(|m| {
                    m.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
            }
            "files" => {
                sim.files = value
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => {}
        }
    }
}

/// A timed event with its position in the scenario (its once-only key).
type Indexed = (usize, Value);

/// The control inbox as read so far: one op per complete line, acknowledged in the record.
struct Inbox {
    path: String,
    offset: u64,
    line: u64,
    partial: String,
}

impl Inbox {
    fn apply_new(&mut self, shared: &Arc<Shared>) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut text = String::new();
        if let Ok(n) = f.read_to_string(&mut text) {
            self.offset += n as u64;
            self.partial.push_str(&text);
            while let Some(pos) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=pos).collect();
                self.line += 1;
                if let Ok(op) = serde_json::from_str::<Value>(line.trim()) {
                    apply_op(shared, &op, Some(&format!("inbox:{}", self.line)));
                }
                shared.record(json!({"ack": self.line}));
            }
        }
    }
}

/// Runs polls, timed events and the inbox, every 10 ms, until the process ends. What the
/// inbox already holds is applied before this returns, so a process started later (a CLI
/// call, a restarted or idle-closed child) answers its first request with the state earlier
/// `set` ops made, not the scenario's.
pub fn spawn_ticker(shared: Arc<Shared>, events: Vec<Value>, inbox: Option<String>) {
    let mut inbox = inbox.map(|path| Inbox {
        path,
        offset: 0,
        line: 0,
        partial: String::new(),
    });
    if let Some(inbox) = &mut inbox {
        inbox.apply_new(&shared);
    }
    std::thread::spawn(move || {
        let mut pending: Vec<(usize, Value)> = events.into_iter().enumerate().collect();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            // Timed events.
            let elapsed = shared.t_ms();
            let replies = shared.replies_written();
            let (due, rest): (Vec<Indexed>, Vec<Indexed>) =
                pending.into_iter().partition(|(_, e)| {
                    e.get("at_ms")
                        .and_then(Value::as_u64)
                        .is_some_and(|t| t <= elapsed)
                        || e.get("after_replies")
                            .and_then(Value::as_u64)
                            .is_some_and(|n| n <= replies)
                });
            pending = rest;
            for (i, e) in due {
                apply_op(&shared, &e, Some(&format!("event:{i}")));
            }
            if let Some(inbox) = &mut inbox {
                inbox.apply_new(&shared);
            }
            // Polls: debounced after inserts, and the fallback poll.
            let mut sim = shared.state.lock().expect("state");
            sim.sync_journal();
            let now = Instant::now();
            let fallback = sim.fallback_poll;
            let due: Vec<i64> = sim
                .subs
                .values()
                .filter(|s| !s.dead)
                .filter(|s| s.next_poll.is_some_and(|t| t <= now) || s.last_poll + fallback <= now)
                .map(|s| s.id)
                .collect();
            for id in due {
                let (lines, _) = sim.poll(id);
                // Written under the state lock, so subscribe replies and polls stay ordered.
                shared.notify_all(lines);
            }
            drop(sim);
        }
    });
}
