//! imsg-sim against every Part C transcript, on each profile the transcript names.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::transcript::{self, Step, Transcript};
use serde_json::{json, Value};

use crate::common::WAIT;

struct Run {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    dir: tempfile::TempDir,
    acks: usize,
    strict: bool,
    both: bool,
    log: Vec<String>,
}

impl Run {
    fn start(t: &Transcript, strict: bool) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let mut scenario = json!({});
        for step in &t.steps {
            if let Step::Action(name, arg) = step {
                if name == "scenario" {
                    scenario = serde_json::from_str(arg).expect("scenario JSON");
                }
            }
        }
        let inbox = dir.path().join("inbox.jsonl");
        let record = dir.path().join("record.jsonl");
        std::fs::write(&inbox, "").unwrap();
        scenario["control"] = json!({"inbox": inbox, "record": record});
        let file = dir.path().join("scenario.json");
        std::fs::write(&file, scenario.to_string()).unwrap();
        let mut child = Command::new(common::imsg_sim())
            .arg("rpc")
            .arg("--scenario")
            .arg(&file)
            .env(
                "IMSG_SIM_PROFILE",
                if strict { "strict" } else { "lenient" },
            )
            .env_remove("IMSG_VERSION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn imsg-sim");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            dir,
            acks: 0,
            strict,
            both: t.lenient && t.strict,
            log: Vec::new(),
        }
    }

    fn fail(&self, why: String) -> ! {
        panic!("{why}\n--- transcript so far ---\n{}", self.log.join("\n"));
    }

    fn send(&mut self, bytes: &[u8]) {
        self.log
            .push(format!("> {}", String::from_utf8_lossy(bytes).trim_end()));
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.log.push(format!("< {line}"));
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    fn expected(&self, text: &str) -> Value {
        let v: Value = serde_json::from_str(text).expect("expected line is JSON");
        if self.strict && self.both {
            transcript::adjust_for_strict(v)
        } else {
            v
        }
    }

    fn expect(&mut self, text: &str) {
        let want = self.expected(text);
        let Some(line) = self.next_line(WAIT) else {
            self.fail(format!("timed out waiting for {want}"));
        };
        let got: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| self.fail(format!("not JSON: {line}")));
        if !transcript::matches(&want, &got) {
            self.fail(format!("mismatch\n want {want}\n  got {got}"));
        }
    }

    fn expect_group(&mut self, texts: &[String]) {
        let mut wanted: Vec<Value> = texts.iter().map(|t| self.expected(t)).collect();
        while !wanted.is_empty() {
            let Some(line) = self.next_line(WAIT) else {
                self.fail(format!("timed out waiting for group member(s) {wanted:?}"));
            };
            let got: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| self.fail(format!("not JSON: {line}")));
            match wanted.iter().position(|w| transcript::matches(w, &got)) {
                Some(i) => {
                    wanted.remove(i);
                }
                None => self.fail(format!("unexpected line in group: {got}")),
            }
        }
    }

    /// Appends an op to the inbox and waits for its ack in the record file.
    fn op(&mut self, op: Value) {
        let inbox = self.dir.path().join("inbox.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&inbox)
            .unwrap();
        writeln!(f, "{op}").unwrap();
        self.acks += 1;
        let record = self.dir.path().join("record.jsonl");
        let deadline = Instant::now() + WAIT;
        loop {
            let acked = std::fs::read_to_string(&record)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v.get("ack").and_then(Value::as_u64))
                .max()
                .unwrap_or(0);
            if acked as usize >= self.acks {
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!("op not acknowledged: {op}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn run_transcript(t: &Transcript, strict: bool) {
    let mut run = Run::start(t, strict);
    let mut expect_exit = 0;
    let mut skip_rest = false;
    for step in &t.steps {
        match step {
            Step::Send(line) => run.send(format!("{line}\n").as_bytes()),
            Step::Expect { line, lenient, strict: s } => {
                if (strict && *s) || (!strict && *lenient) {
                    run.expect(line);
                }
            }
            Step::Group(lines) => run.expect_group(lines),
            Step::StrictNothing => {}
            Step::Text(text) => {
                let Some(line) = run.next_line(WAIT) else {
                    run.fail(format!("timed out waiting for text {text:?}"));
                };
                if line != *text {
                    run.fail(format!("want text {text:?}, got {line:?}"));
                }
            }
            Step::Action(name, arg) => match name.as_str() {
                "scenario" => {}
                "set" => {
                    let mut op: Value = serde_json::from_str(arg).unwrap();
                    op["op"] = json!("set");
                    run.op(op);
                }
                "insert" => run.op(json!({"op": "insert", "row": serde_json::from_str::<Value>(arg).unwrap()})),
                "insert_many" => run.op(json!({"op": "insert_many", "rows": serde_json::from_str::<Value>(arg).unwrap()})),
                "db_error" => run.op(json!({"op": "db_error", "message": serde_json::from_str::<Value>(arg).unwrap()})),
                "overflow" => {
                    let mut op: Value = serde_json::from_str(arg).unwrap();
                    op["op"] = json!("overflow");
                    run.op(op);
                }
                "raw" => {
                    let bytes: String = serde_json::from_str(arg).unwrap();
                    run.send(bytes.as_bytes());
                }
                "silence" => {
                    let ms: u64 = arg.trim().parse().unwrap();
                    if let Some(line) = run.next_line(Duration::from_millis(ms)) {
                        run.fail(format!("expected silence, got {line}"));
                    }
                }
                "skip_rest" => skip_rest = true,
                "close_stdin" => run.stdin = None,
                "expect_exit" => expect_exit = arg.trim().parse().unwrap(),
                other => panic!("unknown action {other}"),
            },
        }
    }
    run.stdin = None;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.child.kill();
            run.fail("did not exit after stdin closed".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !skip_rest {
        if let Some(extra) = run.next_line(Duration::from_millis(200)) {
            run.fail(format!("unexpected extra line {extra}"));
        }
    }
    if status.code() != Some(expect_exit) {
        run.fail(format!("exit status {status:?}, want {expect_exit}"));
    }
}

fn run_profile(strict: bool) {
    let all = transcript::parse_all();
    assert_eq!(all.len(), 40, "C01–C40");
    run_all(&all, strict);
}

fn run_all(all: &[transcript::Transcript], strict: bool) {
    let mut failures = Vec::new();
    for t in all
        .iter()
        .filter(|t| if strict { t.strict } else { t.lenient })
    {
        let outcome = std::panic::catch_unwind(|| run_transcript(t, strict));
        if let Err(e) = outcome {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{} {}: {why}", t.id, t.title));
        }
    }
    assert!(
        failures.is_empty(),
        "{} transcript(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn lenient_profile_passes_part_c() {
    run_profile(false);
}

#[test]
fn strict_profile_passes_part_c() {
    run_profile(true);
}

#[test]
fn the_action_transcripts_pass_on_both_profiles() {
    let all = transcript::parse(transcript::ACTIONS_TRANSCRIPTS);
    assert_eq!(all.len(), 12, "C41–C52");
    run_all(&all, false);
    run_all(&all, true);
}

#[test]
fn action_transcripts_match_the_spec() {
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/actions.md");
    let Ok(text) = std::fs::read_to_string(&spec) else {
        return;
    };
    for line in transcript::ACTIONS_TRANSCRIPTS
        .lines()
        .filter(|l| !l.is_empty())
    {
        assert!(
            text.contains(line),
            "actions_transcripts.txt line not in the spec: {line}"
        );
    }
}

#[test]
fn transcripts_match_the_spec() {
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/imsg-protocol.md");
    let Ok(text) = std::fs::read_to_string(&spec) else {
        return; // The spec folder is beside the repo in CI and dev; nothing to compare otherwise.
    };
    for line in transcript::TRANSCRIPTS.lines().filter(|l| !l.is_empty()) {
        assert!(
            text.contains(line),
            "transcripts.txt line not in the spec: {line}"
        );
    }
}
