//! A gateway wired to imsg-sim: scenario, shared journal, inbox and record files in one
//! scratch folder, and host-stub running in the background with its stdout collected.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{imsg_sim, Gateway, WAIT};

pub struct SimEnv {
    pub gw: Gateway,
}

/// Deep-merges `over` into `base` (objects recursively, everything else replaced).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Chats the tests use: the owner's DM (7), the stranger's DM (8), a group (42).
pub fn chats() -> Value {
    json!([
        {"id": 7, "identifier": "+15550001111", "guid": "iMessage;-;+15550001111", "service": "iMessage", "participants": ["+15550001111"]},
        {"id": 8, "identifier": "+15550002222", "guid": "iMessage;-;+15550002222", "service": "iMessage", "participants": ["+15550002222"]},
        {"id": 42, "identifier": "chat4242", "guid": "iMessage;+;chat4242", "name": "Team", "service": "iMessage", "participants": ["+15550001111", "+15550003333"]}
    ])
}

impl SimEnv {
    /// `scenario` is merged over a running-clock scenario with `chats()`; `config` over a
    /// gateway config whose imessage channel points at the simulator.
    pub fn new(scenario: Value, config: Value) -> SimEnv {
        let gw = Gateway::new(&["imessage"]);
        let dir = gw.path().to_path_buf();
        let mut s = json!({
            "clock": {"start": "now", "mode": "running"},
            "chats": chats(),
            "messages": [],
            "control": {
                "inbox": dir.join("inbox.jsonl"),
                "record": dir.join("record.jsonl"),
                "shared": dir.join("chat.journal"),
            },
        });
        merge(&mut s, &scenario);
        std::fs::write(dir.join("inbox.jsonl"), "").unwrap();
        let scenario_path = dir.join("scenario.json");
        std::fs::write(&scenario_path, s.to_string()).unwrap();
        let mut c = json!({
            "channels": {"imessage": {
                "cliPath": imsg_sim().display().to_string(),
                "dbPath": scenario_path.display().to_string(),
                "allowFrom": ["+15550001111"],
            }},
            "messages": {"groupChat": {"mentionPatterns": ["@bot\\b"]}},
        });
        merge(&mut c, &config);
        gw.write_config(&c.to_string());
        SimEnv { gw }
    }

    /// Deep-merges `over` into the scenario file (before the gateway starts).
    pub fn merge_scenario(&self, over: Value) {
        let path = self.path("scenario.json");
        let mut s: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        merge(&mut s, &over);
        std::fs::write(&path, s.to_string()).unwrap();
    }

    /// Deep-merges `over` into the gateway config file; returns the result.
    pub fn merge_config(&self, over: Value) -> Value {
        let mut c: Value =
            serde_json::from_str(&std::fs::read_to_string(self.gw.config_path()).unwrap()).unwrap();
        merge(&mut c, &over);
        self.gw.write_config(&c.to_string());
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.gw.path().join(name)
    }

    /// Starts `host-stub gateway` (with `--reply echo` when asked) and waits until every
    /// enabled account is watching.
    pub fn start(&self, echo: bool) -> Running {
        self.start_with_env(echo, &[])
    }

    /// [`SimEnv::start`] with extra environment variables for host-stub (and so the plugin
    /// and every imsg child).
    pub fn start_with_env(&self, echo: bool, vars: &[(&str, &str)]) -> Running {
        let running = self.spawn(echo, vars);
        self.wait_watching();
        running
    }

    /// Starts `host-stub gateway` without waiting for anything: for a gateway that is not
    /// expected to reach `watching`, or whose start-up is itself under test.
    pub fn spawn(&self, echo: bool, vars: &[(&str, &str)]) -> Running {
        let mut cmd = self.gw.command();
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(["--log-level", "debug", "gateway"]);
        if echo {
            cmd.args(["--reply", "echo"]);
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("host-stub.stderr"))
            .unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start host-stub");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Appends an op to the simulator's inbox (every sim process sees it; row ops apply once).
    pub fn inbox(&self, op: Value) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path("inbox.jsonl"))
            .unwrap();
        writeln!(f, "{op}").unwrap();
    }

    /// Appends an op and waits until every simulator process that has read the inbox before
    /// (the running children) acknowledged it, so what follows sees it applied.
    pub fn inbox_applied(&self, op: Value) {
        let lines = std::fs::read_to_string(self.path("inbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .count() as u64;
        let readers: std::collections::BTreeSet<i64> = self
            .record()
            .iter()
            .filter(|r| r.get("ack").is_some())
            .filter_map(|r| r["pid"].as_i64())
            // Only the ones still running (a one-shot CLI's simulator has exited).
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        self.inbox(op);
        wait_until("the inbox op applied", WAIT, || {
            let record = self.record();
            readers.iter().all(|pid| {
                record.iter().any(|r| {
                    r["pid"].as_i64() == Some(*pid) && r["ack"].as_u64().is_some_and(|a| a > lines)
                })
            })
        });
    }

    pub fn insert(&self, row: Value) {
        self.inbox(json!({"op": "insert", "row": row}));
    }

    pub fn record(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("record.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The params of every `send` the simulators executed, in order.
    pub fn sends(&self) -> Vec<Value> {
        self.record()
            .into_iter()
            .filter(|r| r.get("effect").and_then(Value::as_str) == Some("send"))
            .map(|r| r["params"].clone())
            .collect()
    }

    /// `send` requests written to any simulator's stdin.
    pub fn send_requests(&self) -> Vec<Value> {
        self.record()
            .into_iter()
            .filter(|r| r.get("dir").and_then(Value::as_str) == Some("in"))
            .filter_map(|r| serde_json::from_str::<Value>(r["line"].as_str()?).ok())
            .filter(|v| v.get("method").and_then(Value::as_str) == Some("send"))
            .collect()
    }

    /// The gateway's control socket (present while a gateway runs).
    pub fn socket(&self) -> PathBuf {
        self.path("state/host-stub/control.sock")
    }

    /// `channels status --json`: the running gateway's live state when there is one.
    pub fn status(&self) -> Value {
        let out = self.gw.run(&["channels", "status", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", super::stderr(&out));
        serde_json::from_str(&super::stdout(&out)).expect("status JSON")
    }

    /// The live status row of `account`.
    pub fn account_status(&self, account: &str) -> Value {
        let status = self.status();
        status["channels"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["accountId"] == account))
            .cloned()
            .unwrap_or_else(|| panic!("no account {account} in {status}"))
    }

    /// How many rows the running gateway dropped for `reason` (published with the watcher's
    /// 100 ms flush), summed over accounts.
    pub fn drops(&self, reason: &str) -> u64 {
        self.status()["channels"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["drops"][reason].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Waits until the running gateway reports every enabled account `watching` (readiness
    /// from status, not from log text). The socket is looked for first: without it
    /// `channels status` would start the plugin one-shot instead of asking the gateway.
    pub fn wait_watching(&self) {
        let mut last = Value::Null;
        wait_until("the control socket", WAIT, || self.socket().exists());
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until("every enabled account watching", WAIT, || {
                last = self.status();
                let rows = last["channels"].as_array().cloned().unwrap_or_default();
                let enabled: Vec<&Value> = rows.iter().filter(|r| r["enabled"] == true).collect();
                last["gateway"]["running"] == true
                    && !enabled.is_empty()
                    && enabled.iter().all(|r| r["state"] == "watching")
            })
        }));
        if ready.is_err() {
            panic!("never watching; last status: {last}\n{}", self.stderr());
        }
    }

    /// Waits until the running gateway reports `account` in `state`.
    pub fn wait_state(&self, account: &str, state: &str) {
        wait_until("the control socket", WAIT, || self.socket().exists());
        wait_until(&format!("{account} {state}"), WAIT, || {
            self.account_status(account)["state"] == state
        });
    }

    /// The pids of the simulators that received a `watch.subscribe`, one per subscription.
    pub fn subscriptions(&self) -> Vec<i64> {
        self.requests_with_pid("watch.subscribe")
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("host-stub.stderr")).unwrap_or_default()
    }

    /// The params of every request of `method` written to any simulator, in order, with the
    /// pid of the simulator that received it.
    pub fn requests_with_pid(&self, method: &str) -> Vec<(i64, Value)> {
        self.record()
            .into_iter()
            .filter(|r| r["dir"] == "in")
            .filter_map(|r| {
                let v: Value = serde_json::from_str(r["line"].as_str()?).ok()?;
                (v["method"] == method)
                    .then(|| (r["pid"].as_i64().unwrap_or(0), v["params"].clone()))
            })
            .collect()
    }

    /// The params of every request of `method` written to any simulator, in order.
    pub fn requests(&self, method: &str) -> Vec<Value> {
        self.requests_with_pid(method)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// A cursor at `rowid` for this env's source, as an earlier run leaves it.
    pub fn write_cursor(&self, rowid: i64) {
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(self.gw.config_path()).unwrap()).unwrap();
        let source = format!(
            "{}|{}|",
            config["channels"]["imessage"]["cliPath"].as_str().unwrap(),
            config["channels"]["imessage"]["dbPath"].as_str().unwrap()
        );
        let dir = self.path("state/imessage/default");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cursor.json"),
            json!({"version": 1, "source": source, "rowid": rowid, "newestCreatedAt": null})
                .to_string(),
        )
        .unwrap();
    }

    /// `message send … --json` with `extra` arguments: the process output and the receipt
    /// (`null` when none was printed).
    pub fn send_json(
        &self,
        target: &str,
        text: &str,
        extra: &[&str],
    ) -> (std::process::Output, Value) {
        let mut args = super::send_args(target, text);
        args.push("--json");
        args.extend_from_slice(extra);
        let out = self
            .gw
            .command()
            .env("IMSG_SIM_SCENARIO", self.path("scenario.json"))
            .args(&args)
            .output()
            .expect("run host-stub");
        let receipt = serde_json::from_str(&super::stdout(&out)).unwrap_or(Value::Null);
        (out, receipt)
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub struct Running {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn messages(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("stdout lines are JSON"))
            .collect()
    }

    /// Waits until at least `n` routed messages were printed.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{n} routed message(s)"), timeout, || {
            self.lines.lock().unwrap().len() >= n
        });
        self.messages()
    }

    /// Waits until a routed line carries `text`; returns every line printed before it. Rows
    /// are handled and delivered in order, so once a row inserted last is printed, every
    /// row inserted before it has been handled: the positive marker after which "nothing
    /// else was routed" can be asserted.
    pub fn wait_text(&self, text: &str) -> Vec<Value> {
        wait_until(&format!("a routed line {text:?}"), WAIT, || {
            self.messages().iter().any(|m| m["text"] == text)
        });
        let all = self.messages();
        let at = all.iter().position(|m| m["text"] == text).unwrap_or(0);
        all[..at].to_vec()
    }

    /// SIGINT, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("host-stub did not stop within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash. Returns every line it printed (read to the end of its stdout).
    pub fn kill(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.messages()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
