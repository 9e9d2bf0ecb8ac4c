//! The Part C transcripts replayed against the plugin's rpc client with the roles swapped
//! (imsg-protocol.md §C1 rule 4): this harness plays imsg, writing the `<` lines with the
//! client's request ids substituted, and checks every request the client writes (as parsed
//! JSON), every result it returns and every notification it hands on. Transcripts made of
//! requests the client never sends (C03–C10, C37) exercise the simulator only.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::transcript::{self, Step, Transcript};
use imessage::rpc::{CallError, Event, RpcClient};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SIMULATOR_ONLY: &[&str] = &[
    "C03", "C04", "C05", "C06", "C07", "C08", "C09", "C10", "C37",
];
/// Transcripts whose last request is never answered on purpose (a lost reply, actions.md C50).
const NEVER_ANSWERED: &[&str] = &["C50"];
use crate::common::WAIT;

type Pending = tokio::task::JoinHandle<Result<Value, CallError>>;

struct Replay {
    client: RpcClient,
    events: tokio::sync::mpsc::Receiver<Event>,
    requests: tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
    out: tokio::io::DuplexStream,
    /// transcript id (as JSON text) → (client id, the call awaiting its reply)
    ids: HashMap<String, (i64, Pending)>,
    log: Vec<String>,
}

impl Replay {
    fn fail(&self, why: String) -> ! {
        panic!("{why}\n--- so far ---\n{}", self.log.join("\n"))
    }

    /// A `>` line: the client sends it (when it is a request the client can make).
    async fn send(&mut self, line: &str) {
        let Ok(want) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let (Some(id), Some(method)) = (want.get("id"), want.get("method").and_then(Value::as_str))
        else {
            return; // notifications and malformed lines: the client never writes those
        };
        if id.is_null() {
            return;
        }
        let params = want.get("params").cloned().unwrap_or(json!({}));
        let client = self.client.clone();
        let m = method.to_string();
        let call =
            tokio::spawn(async move { client.request(&m, params, Duration::from_secs(5)).await });
        let written = tokio::time::timeout(WAIT, self.requests.next_line())
            .await
            .unwrap_or_else(|_| self.fail(format!("the client did not write {line}")))
            .unwrap()
            .unwrap();
        self.log.push(format!("> {written}"));
        let got: Value = serde_json::from_str(&written).unwrap();
        let client_id = got["id"]
            .as_i64()
            .unwrap_or_else(|| self.fail("client ids are integers".into()));
        let mut expected = want.clone();
        expected["id"] = json!(client_id);
        if !transcript::matches(&expected, &got) {
            self.fail(format!("request mismatch\n want {expected}\n  got {got}"));
        }
        self.ids.insert(id.to_string(), (client_id, call));
    }

    /// A `<` line: written to the client, then its effect checked.
    async fn receive(&mut self, line: &str) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let reply_to = v.get("id").filter(|i| !i.is_null()).map(|i| i.to_string());
        let pending = reply_to.as_ref().and_then(|id| self.ids.remove(id));
        if let Some((client_id, _)) = &pending {
            v["id"] = json!(client_id);
        }
        let text = v.to_string();
        self.log.push(format!("< {text}"));
        self.out
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        if let Some((_, call)) = pending {
            let result = tokio::time::timeout(WAIT, call)
                .await
                .unwrap_or_else(|_| self.fail(format!("the call for {text} did not finish")))
                .unwrap();
            match (v.get("result"), v.get("error"), result) {
                (Some(want), _, Ok(got)) if transcript::matches(want, &got) => {}
                (_, Some(want), Err(CallError::Rpc(e))) if want["code"] == e.code => {}
                (_, _, other) => self.fail(format!("unexpected outcome {other:?} for {text}")),
            }
        } else if v.get("method").is_some() {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| self.fail(format!("no event for {text}")))
                .unwrap();
            let method = v["method"].as_str().unwrap();
            match event {
                Event::Message {
                    subscription,
                    message,
                } => {
                    assert_eq!(method, "message");
                    assert_eq!(subscription, v["params"]["subscription"].as_i64());
                    let message = message.unwrap_or_else(|bad| {
                        self.fail(format!("a transcript message did not parse: {bad:?}"))
                    });
                    assert_eq!(message.id, v["params"]["message"]["id"].as_i64());
                    assert_eq!(
                        message.guid.as_deref(),
                        v["params"]["message"]["guid"].as_str()
                    );
                    assert_eq!(
                        message.text.as_deref(),
                        v["params"]["message"]["text"].as_str()
                    );
                    // Tapback rows (actions.md C41): the reaction members parse too.
                    let want = &v["params"]["message"];
                    assert_eq!(message.is_reaction, want["is_reaction"].as_bool());
                    assert_eq!(
                        message.reaction_type.as_deref(),
                        want["reaction_type"].as_str()
                    );
                    assert_eq!(
                        message.reaction_emoji.as_deref(),
                        want["reaction_emoji"].as_str()
                    );
                    assert_eq!(message.is_reaction_add, want["is_reaction_add"].as_bool());
                    assert_eq!(
                        message.reacted_to_guid.as_deref(),
                        want["reacted_to_guid"].as_str()
                    );
                }
                Event::Notification {
                    method: got,
                    params,
                } => {
                    assert_eq!(got, method);
                    let params: Value = serde_json::from_str(params.unwrap().get()).unwrap();
                    assert!(transcript::matches(&v["params"], &params), "{params}");
                }
            }
        }
    }
}

async fn replay(t: &Transcript, strict: bool) {
    let (client_out, imsg_in) = tokio::io::duplex(1 << 20);
    let (imsg_out, client_in) = tokio::io::duplex(1 << 20);
    let started = RpcClient::from_io(client_in, client_out);
    let mut r = Replay {
        client: started.client,
        events: started.events,
        requests: BufReader::new(imsg_in).lines(),
        out: imsg_out,
        ids: HashMap::new(),
        log: vec![format!(
            "== {} {} ({})",
            t.id,
            t.title,
            if strict { "strict" } else { "lenient" }
        )],
    };
    let both = t.lenient && t.strict;
    let adjust = |line: &str| -> String {
        if strict && both {
            transcript::adjust_for_strict(serde_json::from_str(line).unwrap()).to_string()
        } else {
            line.to_string()
        }
    };
    let mut banner = false;
    for step in &t.steps {
        match step {
            Step::Send(line) => r.send(line).await,
            Step::Expect {
                line,
                lenient,
                strict: s,
            } if (strict && *s) || (!strict && *lenient) => r.receive(&adjust(line)).await,
            Step::Group(lines) => {
                for line in lines {
                    r.receive(&adjust(line)).await;
                }
            }
            Step::Text(text) => {
                banner = true;
                r.out
                    .write_all(format!("{text}\n").as_bytes())
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    if banner {
        // A permission banner makes every call fail at once (§A9, channel-behaviour §10.2).
        let deadline = tokio::time::Instant::now() + WAIT;
        while r.client.dead().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            matches!(r.client.dead(), Some(CallError::PermissionDenied(_))),
            "{}: the banner was not read as a permission failure: {:?}",
            t.id,
            r.client.dead()
        );
    }
    assert!(
        r.ids.is_empty() || NEVER_ANSWERED.contains(&t.id.as_str()),
        "{}: requests left without a reply",
        t.id
    );
}

fn run_all(strict: bool) -> usize {
    run_these(transcript::parse_all(), strict)
}

fn run_these(transcripts: Vec<Transcript>, strict: bool) -> usize {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut n = 0;
    for t in transcripts {
        if SIMULATOR_ONLY.contains(&t.id.as_str()) || !(if strict { t.strict } else { t.lenient }) {
            continue;
        }
        rt.block_on(replay(&t, strict));
        n += 1;
    }
    n
}

#[test]
fn the_client_speaks_every_transcript_lenient() {
    assert!(run_all(false) >= 25);
}

#[test]
fn the_client_speaks_the_action_transcripts() {
    // actions.md C41: the subscription the watcher writes with include_reactions, and the
    // tapback rows (a removal, a custom emoji) arriving as parsed message events; C42–C52:
    // the action, tracked-send, send-status and paging requests and their answers, both ways
    // (explicit nulls of message.send_status included, §10 E10).
    let actions = || transcript::parse(transcript::ACTIONS_TRANSCRIPTS);
    assert_eq!(run_these(actions(), false), 4, "C41, C43–C45");
    assert_eq!(run_these(actions(), true), 12, "C41–C52");
}

#[test]
fn the_client_speaks_every_transcript_strict() {
    assert!(run_all(true) >= 25);
}
