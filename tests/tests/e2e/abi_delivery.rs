//! Delivery across the real library boundary (issue 12): a host that does not opt in gets one
//! `message` event per call; a host that lists `deliver.batch` gets `batch` events when
//! several messages are ready, bounded by its `maxBatch`, in order, one account per batch; a
//! refused delivery acknowledges nothing and comes again whole.

use crate::common;
use crate::common::WAIT;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_abi::host::{self, Host, PluginClient};
use plugin_abi::types::{features, HostFeatures, StartContext};
use serde_json::{json, Value};

/// Records every delivery as it arrived; refuses the first `refuse` of them; takes `pause` to
/// accept each, so messages pile up behind it as behind a host that syncs to disk.
#[derive(Clone, Default)]
struct Gate {
    deliveries: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<Vec<Value>>>,
    refuse: Arc<Mutex<usize>>,
    pause: Duration,
}

impl Host for Gate {
    fn deliver(&self, event: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(event).map_err(|e| e.to_string())?;
        std::thread::sleep(self.pause);
        let mut refuse = self.refuse.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            self.refused.lock().unwrap().push(value);
            return Err("disk full (test)".into());
        }
        self.deliveries.lock().unwrap().push(value);
        Ok(())
    }
    fn log(&self, _record: &str) {}
}

impl Gate {
    /// The messages in the order they were acknowledged.
    fn messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for d in self.deliveries.lock().unwrap().iter() {
            match d["type"].as_str() {
                Some("batch") => out.extend(d["events"].as_array().unwrap().iter().cloned()),
                _ => out.push(d.clone()),
            }
        }
        out
    }
}

struct Run {
    _dir: tempfile::TempDir,
    inbox: std::path::PathBuf,
    client: PluginClient,
}

fn start(gate: &Gate, host: HostFeatures) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.json");
    let inbox = dir.path().join("inbox.jsonl");
    std::fs::write(&inbox, "").unwrap();
    std::fs::write(
        &scenario,
        json!({
            "clock": {"start": "now", "mode": "running"},
            "chats": common::sim::chats(),
            // History from before the plugin, as any real chat.db has: new rows then start
            // past 1, so "just before the first new row" is a row id imsg can replay from
            // (`since_rowid` 0 means the live tail).
            "messages": [{"id": 9001, "chat_id": 8, "handle": "+15550002222", "text": "old"}],
            "control": {"inbox": inbox},
        })
        .to_string(),
    )
    .unwrap();
    let plugin = host::load(&common::plugin_library("imessage")).unwrap();
    let client = plugin.instantiate(host::callbacks(gate.clone())).unwrap();
    client
        .start(&StartContext {
            config: json!({"channels": {"imessage": {
                "cliPath": common::imsg_sim().display().to_string(),
                "dbPath": scenario.display().to_string(),
                "allowFrom": ["+15550001111"],
            }}, "messages": {"groupChat": {"mentionPatterns": ["@bot\\b"]}}}),
            state_dir: dir.path().join("state").display().to_string(),
            watch: true,
            log_level: None,
            host,
        })
        .unwrap();
    let began = Instant::now();
    while client.status(&Default::default()).unwrap().accounts[0].state != "watching" {
        assert!(began.elapsed() < WAIT, "never watching");
        std::thread::sleep(Duration::from_millis(20));
    }
    Run {
        _dir: dir,
        inbox,
        client,
    }
}

/// `n` rows alternating between the owner's DM and the group; text ends with the sequence.
fn burst(run: &Run, n: usize) {
    let rows: Vec<Value> = (0..n)
        .map(|i| match i % 2 {
            0 => json!({"chat_id": 7, "handle": "+15550001111", "text": format!("dm {i}")}),
            _ => {
                json!({"chat_id": 42, "handle": "+15550001111", "text": format!("@bot group {i}")})
            }
        })
        .collect();
    append(run, json!({"op": "insert_many", "rows": rows}));
}

/// Appends an op to the simulator's inbox.
fn append(run: &Run, op: Value) {
    use std::io::Write;
    let mut inbox = std::fs::OpenOptions::new()
        .append(true)
        .open(&run.inbox)
        .unwrap();
    writeln!(inbox, "{op}").unwrap();
}

/// Waits for `n` messages, then for one more row inserted after them (the owner's `dm <n>`):
/// messages are delivered in order, so once it is acknowledged nothing of the first `n` can
/// still come again. Returns all `n + 1`.
fn wait_for(gate: &Gate, run: &Run, n: usize) -> Vec<Value> {
    let wait = |n: usize| {
        let began = Instant::now();
        while gate.messages().len() < n {
            assert!(
                began.elapsed() < WAIT,
                "{} of {n} messages",
                gate.messages().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(n);
    let marker = format!("dm {n}");
    append(
        run,
        json!({"op": "insert", "row": {"chat_id": 7, "handle": "+15550001111", "text": marker}}),
    );
    wait(n + 1);
    let messages = gate.messages();
    assert_eq!(messages.last().map(|m| &m["text"]), Some(&json!(marker)));
    messages
}

fn assert_once_in_order(messages: &[Value], n: usize) {
    let seqs: Vec<usize> = messages
        .iter()
        .map(|m| common::seq_of(m) as usize)
        .collect();
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "each message once, in stream order"
    );
}

fn batching(max: u32) -> HostFeatures {
    HostFeatures {
        features: vec![features::BATCH_DELIVERY.into()],
        max_batch: Some(max),
        command_names: None,
        media_local_roots: None,
    }
}

#[test]
fn a_host_that_does_not_opt_in_gets_one_message_per_call() {
    let gate = Gate {
        pause: Duration::from_millis(2),
        ..Default::default()
    };
    let run = start(&gate, HostFeatures::default());
    burst(&run, 300);
    let messages = wait_for(&gate, &run, 300);
    assert_once_in_order(&messages, 301);
    let deliveries = gate.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 301);
    assert!(deliveries.iter().all(|d| d["type"] == "message"));
    run.client.stop().unwrap();
}

#[test]
fn a_batching_host_gets_bounded_batches_in_order() {
    let gate = Gate {
        pause: Duration::from_millis(20),
        ..Default::default()
    };
    let run = start(&gate, batching(64));
    burst(&run, 2000);
    let messages = wait_for(&gate, &run, 2000);
    assert_once_in_order(&messages, 2001);
    let deliveries = gate.deliveries.lock().unwrap().clone();
    let sizes: Vec<usize> = deliveries
        .iter()
        .map(|d| d["events"].as_array().map_or(1, Vec::len))
        .collect();
    assert!(sizes.iter().all(|&n| (1..=64).contains(&n)), "{sizes:?}");
    assert!(
        deliveries.len() < 2000 / 4,
        "a slow host gets the burst in batches: {} deliveries",
        deliveries.len()
    );
    for d in deliveries.iter().filter(|d| d["type"] == "batch") {
        let events = d["events"].as_array().unwrap();
        assert!(
            events.len() > 1,
            "one ready message goes as a plain message event"
        );
        assert!(events
            .iter()
            .all(|e| e["accountId"] == "default" && e["type"] == "message"));
    }
    run.client.stop().unwrap();
}

#[test]
fn a_refused_batch_is_acknowledged_not_at_all_and_comes_again_whole() {
    let gate = Gate {
        pause: Duration::from_millis(20),
        refuse: Arc::new(Mutex::new(1)),
        ..Default::default()
    };
    let run = start(&gate, batching(256));
    burst(&run, 500);
    let messages = wait_for(&gate, &run, 500);
    assert_once_in_order(&messages, 501);
    let refused = gate.refused.lock().unwrap()[0].clone();
    let first_accepted = gate.deliveries.lock().unwrap()[0].clone();
    assert_eq!(
        refused, first_accepted,
        "the same delivery came again after the refusal"
    );
    // Nothing of the refused delivery was finished: the status counts each message once
    // (published with the watcher's 100 ms flush).
    let routed = || run.client.status(&Default::default()).unwrap().accounts[0].routed;
    common::sim::wait_until("the routed count published", WAIT, || routed() >= 501);
    assert_eq!(routed(), 501);
    run.client.stop().unwrap();
}

#[test]
fn status_counts_panics_and_shows_the_quarantine_file_issue_10() {
    let gate = Gate::default();
    let run = start(&gate, HostFeatures::default());
    // The library these tests load is built with `fault-injection`: this text panics.
    let panic = "__imessage_fault_injection_panic__";
    let rows = json!([
        {"chat_id": 7, "handle": "+15550001111", "text": panic},
        {"chat_id": 7, "handle": "+15550001111", "text": "dm 0"},
    ]);
    append(&run, json!({"op": "insert_many", "rows": rows}));
    let messages = wait_for(&gate, &run, 1);
    assert_eq!(messages[0]["text"], "dm 0", "the next message routes");
    let began = Instant::now();
    let account = loop {
        let status = run.client.status(&Default::default()).unwrap();
        let account = status.accounts.into_iter().next().unwrap();
        if account.quarantine.is_some() && account.drops.contains_key("quarantined") {
            break account;
        }
        assert!(began.elapsed() < WAIT, "{account:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        account.panics, 2,
        "the first panic restarted the watch, the second quarantined"
    );
    let quarantine = account.quarantine.unwrap();
    assert_eq!(quarantine.count, 1);
    assert!(quarantine
        .file
        .ends_with("imessage/default/quarantine.jsonl"));
    assert!(std::path::Path::new(&quarantine.file).exists());
    assert!(account.last_error.unwrap().contains("quarantined"));
    assert_eq!(account.drops["quarantined"], 1);
    run.client.stop().unwrap();
}
