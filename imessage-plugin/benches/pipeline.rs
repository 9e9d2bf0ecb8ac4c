//! The inbound hot path, measured in one process: a writer standing in for imsg's stdout → the
//! rpc client (framing, dispatch) → the watcher and inbound pipeline → the host's deliver
//! callback through the ABI trait object → host-stub's real durable sink (the code `host-stub
//! gateway` runs: lines written, ids recorded and fsynced before the acknowledgement), with
//! batched delivery as host-stub asks for it. A second row delivers into a stand-in host that
//! makes nothing durable: the plugin alone. Also the policy overhead of a realistic config,
//! and chunking a 100 KB reply. What a user gets as a whole process is `bench-gateway`.
//!
//! Run: `cargo bench -p imessage-plugin --bench pipeline`. Environment: MESSAGES (per run,
//! default 200000), RUNS (default 3), RSS_MESSAGES (the RSS run, default 1000000),
//! PACED_MESSAGES (the 20,000 msg/s latency run, default MESSAGES).
//! Medians of several runs are reported; the numbers are for the machine they ran on.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imessage::account::Account;
use imessage::config::{self, ChunkMode};
use imessage::outbound::chunk;
use imessage::rpc::{CallError, RpcClient, Started};
use plugin_abi::guard::HostHandle;
use plugin_abi::host::{self, Host};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Shared {
    start: Instant,
    sent_ns: Vec<AtomicU64>,
    /// Per message, the time the host saw it (0 = not yet): a store per message, so the
    /// stand-in host costs the plugin's thread as little as a real host's queue push would.
    delivered_ns: Vec<AtomicU64>,
    delivered: AtomicUsize,
    rss_samples: Mutex<Vec<(usize, u64)>>,
    total: usize,
}

/// The stand-in host: nothing durable, one atomic store per message (the plugin alone).
struct BenchHost(Arc<Shared>);

/// host-stub's durable sink, then the bookkeeping of the stand-in.
struct DurableHost {
    sink: host_stub::sink::Sink,
    shared: Arc<Shared>,
}

impl Host for DurableHost {
    fn deliver(&self, event: &str) -> Result<(), String> {
        let taken = self.sink.take("imessage", event)?;
        let now = self.shared.start.elapsed().as_nanos() as u64;
        for id in taken {
            let index: usize = id
                .strip_prefix('B')
                .and_then(|i| i.parse().ok())
                .ok_or("bad id")?;
            self.shared.mark(index, now);
        }
        Ok(())
    }
    fn log(&self, _record: &str) {}
}

impl Shared {
    fn mark(&self, index: usize, now: u64) {
        if let Some(slot) = self.delivered_ns.get(index) {
            slot.store(now.max(1), Ordering::Relaxed);
        }
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(200_000) || n == self.total {
            self.rss_samples
                .lock()
                .unwrap()
                .push((n, rss_kib("VmRSS:")));
        }
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

impl Host for BenchHost {
    fn deliver(&self, event: &str) -> Result<(), String> {
        let now = self.0.start.elapsed().as_nanos() as u64;
        // Message ids are `B<index>`: find them without parsing the event (a batch has many).
        for at in memchr::memmem::find_iter(event.as_bytes(), b"\"messageId\":\"B") {
            let at = at + 14;
            let end = event[at..].find('"').ok_or("no end")? + at;
            let index: usize = event[at..end].parse().map_err(|_| "bad id")?;
            self.0.mark(index, now);
        }
        Ok(())
    }
    fn log(&self, _record: &str) {}
}

fn open_config() -> Value {
    json!({"channels": {"imessage": {"dmPolicy": "open", "allowFrom": ["*"], "groupPolicy": "open"}}})
}

/// Pairing + allowlists + 3 mention patterns + 20 groups.
fn realistic_config() -> Value {
    let mut groups = serde_json::Map::new();
    for i in 0..20 {
        groups.insert(
            format!("{}", 100 + i),
            json!({"requireMention": i % 2 == 0}),
        );
    }
    groups.insert("42".into(), json!({}));
    json!({
        "channels": {"imessage": {
            "dmPolicy": "pairing",
            "allowFrom": ["+15550001111", "+15550001112", "+15550001113", "bob@example.com", "chat_id:7"],
            "groupAllowFrom": ["+15550001111", "+15550003333", "chat_id:42"],
            "groups": groups,
        }},
        "messages": {"groupChat": {"mentionPatterns": ["@bot\\b", "^hey (bot|assistant)", "\\bassistant[,:]"]}},
        "agents": {"list": [{"id": "main", "default": true}, {"id": "family"}]},
        "bindings": [{"agentId": "family", "match": {"channel": "imessage", "peer": {"kind": "group", "id": "42"}}}],
    })
}

fn notification(i: usize, created: &str) -> String {
    if i.is_multiple_of(2) {
        format!(
            r#"{{"jsonrpc":"2.0","method":"message","params":{{"subscription":1,"message":{{"id":{id},"chat_id":7,"guid":"B{i}","sender":"+15550001111","is_from_me":false,"text":"message number {i} from the owner","created_at":"{created}","attachments":[],"reactions":[],"destination_caller_id":"+15559990000","chat_identifier":"+15550001111","chat_guid":"iMessage;-;+15550001111","chat_name":"+15550001111","participants":["+15550001111"],"is_group":false}}}}}}"#,
            id = i + 1
        )
    } else {
        format!(
            r#"{{"jsonrpc":"2.0","method":"message","params":{{"subscription":1,"message":{{"id":{id},"chat_id":42,"guid":"B{i}","sender":"+15550003333","is_from_me":false,"text":"@bot group message number {i}","created_at":"{created}","attachments":[],"reactions":[],"destination_caller_id":"+15559990000","chat_identifier":"chat4242","chat_guid":"iMessage;+;chat4242","chat_name":"Team","participants":["+15550001111","+15550003333"],"is_group":true}}}}}}"#,
            id = i + 1
        )
    }
}

struct Outcome {
    secs: f64,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    rss: Vec<(usize, u64)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    /// host-stub's durable sink (fsync per delivery).
    Durable,
    /// The stand-in: nothing durable.
    StandIn,
}

/// Pushes `n` notifications through the pipeline; `rate` paces the writer (msgs/s).
fn run(config: &Value, n: usize, rate: Option<u64>, sink: Sink) -> Outcome {
    let shared = Arc::new(Shared {
        start: Instant::now(),
        sent_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        delivered_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicUsize::new(0),
        rss_samples: Mutex::new(Vec::new()),
        total: n,
    });
    // Write every slot now: freshly mapped zero pages would otherwise become resident as the
    // run goes, and the bench's own bookkeeping would read as growth of the plugin's RSS.
    for slot in shared.sent_ns.iter().chain(&shared.delivered_ns) {
        slot.store(u64::MAX, Ordering::Relaxed);
        slot.store(0, Ordering::Relaxed);
    }
    let state = tempfile::tempdir().unwrap();
    let parsed = Arc::new(config::parse(config).unwrap());
    let settings = parsed.accounts[0].clone();
    let callbacks = match sink {
        Sink::Durable => host::callbacks(DurableHost {
            sink: host_stub::sink::Sink::new(
                Box::new(std::fs::File::create("/dev/null").unwrap()),
                &state.path().join("host-stub"),
                None,
            ),
            shared: shared.clone(),
        }),
        Sink::StandIn => host::callbacks(BenchHost(shared.clone())),
    };
    let host = Arc::new(HostHandle::new(callbacks));
    // Batched delivery, as host-stub asks for it.
    let features = plugin_abi::types::HostFeatures {
        features: vec![plugin_abi::types::features::BATCH_DELIVERY.into()],
        max_batch: Some(plugin_abi::types::features::DEFAULT_MAX_BATCH),
        command_names: None,
        media_local_roots: None,
    };
    let account = Arc::new(Account::new(
        state.path(),
        parsed,
        settings,
        host,
        Arc::new(features),
        Default::default(),
    ));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (client_out, imsg_in) = tokio::io::duplex(1 << 20);
    let (mut imsg_out, client_in) = tokio::io::duplex(1 << 20);
    let streams = Mutex::new(Some((client_in, client_out)));
    let connect = move || -> Result<Started, CallError> {
        let (r, w) = streams
            .lock()
            .unwrap()
            .take()
            .ok_or(CallError::Spawn("once".into()))?;
        Ok(RpcClient::from_io(r, w))
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    // Saturating runs up to 200k messages get a pre-generated stream.
    let pregenerated = rate.is_none() && n <= 200_000;
    let blocks: Vec<Vec<u8>> = if pregenerated {
        let created = imessage::timeutil::format_ms(imessage::timeutil::now_ms());
        (0..n)
            .collect::<Vec<_>>()
            .chunks(64)
            .map(|c| {
                let mut b = String::with_capacity(64 * 600);
                for &j in c {
                    b.push_str(&notification(j, &created));
                    b.push('\n');
                }
                b.into_bytes()
            })
            .collect()
    } else {
        Vec::new()
    };
    let began = Instant::now();
    runtime.block_on(async {
        let watcher = tokio::spawn(imessage::watcher::run_with(
            account.watcher_parts(),
            cancel.clone(),
            false,
            connect,
        ));
        let writer_shared = shared.clone();
        let writer = tokio::spawn(async move {
            let mut requests = BufReader::new(imsg_in).lines();
            let subscribe: Value =
                serde_json::from_str(&requests.next_line().await.unwrap().unwrap()).unwrap();
            let reply = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"subscription\":1}}}}\n",
                subscribe["id"]
            );
            imsg_out.write_all(reply.as_bytes()).await.unwrap();
            // Keep reading (and ignoring) whatever else the client writes.
            tokio::spawn(async move { while let Ok(Some(_)) = requests.next_line().await {} });
            let mut created = imessage::timeutil::format_ms(imessage::timeutil::now_ms());
            if pregenerated {
                // imsg's cost of producing its output is not the plugin's: hand over bytes
                // produced before the clock started, 64 messages per write.
                let mut i = 0;
                for block in blocks {
                    let t = writer_shared.start.elapsed().as_nanos() as u64;
                    for j in i..(i + 64).min(n) {
                        writer_shared.sent_ns[j].store(t, Ordering::Relaxed);
                    }
                    imsg_out.write_all(&block).await.unwrap();
                    i += 64;
                }
                return imsg_out;
            }
            let batch = 64;
            let mut buf = String::with_capacity(batch * 600);
            let mut i = 0;
            let paced_start = Instant::now();
            while i < n {
                if i % 4096 == 0 {
                    created = imessage::timeutil::format_ms(imessage::timeutil::now_ms());
                }
                if let Some(rate) = rate {
                    let due = paced_start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                buf.clear();
                let end = (i + if rate.is_some() { 1 } else { batch }).min(n);
                let t = writer_shared.start.elapsed().as_nanos() as u64;
                for j in i..end {
                    buf.push_str(&notification(j, &created));
                    buf.push('\n');
                    writer_shared.sent_ns[j].store(t, Ordering::Relaxed);
                }
                imsg_out.write_all(buf.as_bytes()).await.unwrap();
                i = end;
            }
            imsg_out
        });
        while shared.delivered.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _out = writer.await.unwrap();
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;
    });
    let secs = began.elapsed().as_secs_f64();
    let mut lat: Vec<u64> = shared
        .sent_ns
        .iter()
        .zip(&shared.delivered_ns)
        .filter_map(|(s, d)| {
            let (s, d) = (s.load(Ordering::Relaxed), d.load(Ordering::Relaxed));
            (s > 0 && d > 0).then(|| d.saturating_sub(s) / 1000)
        })
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let rss = shared.rss_samples.lock().unwrap().clone();
    Outcome {
        secs,
        per_sec: n as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rss,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n: usize = std::env::var("MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut out = std::io::stdout();

    writeln!(
        out,
        "inbound pipeline, {n} notifications per run, median of {runs} runs"
    )
    .unwrap();

    // First, so no earlier run's buffers sit in the baseline.
    let long = std::env::var("RSS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let big = run(&open_config(), long, None, Sink::Durable);
    let samples: Vec<String> = big
        .rss
        .iter()
        .map(|(n, kib)| format!("{}k: {:.1} MiB", n / 1000, *kib as f64 / 1024.0))
        .collect();
    writeln!(
        out,
        "  RSS over {long} messages ({:.0} msg/s): {}",
        big.per_sec,
        samples.join(", ")
    )
    .unwrap();
    writeln!(
        out,
        "  peak RSS (VmHWM): {:.1} MiB",
        rss_kib("VmHWM:") as f64 / 1024.0
    )
    .unwrap();

    let mut open = Vec::new();
    let mut realistic = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..runs {
        // Interleaved, so machine noise hits every row alike.
        open.push(run(&open_config(), n, None, Sink::Durable).per_sec);
        realistic.push(run(&realistic_config(), n, None, Sink::Durable).per_sec);
        alone.push(run(&open_config(), n, None, Sink::StandIn).per_sec);
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        format!("runs {lo:.0}–{hi:.0}")
    };
    let (so, sr, sa) = (spread(&open), spread(&realistic), spread(&alone));
    let (o, r, a) = (median(open), median(realistic), median(alone));
    writeln!(
        out,
        "  throughput into host-stub's durable sink, open policy:      {o:>10.0} msg/s  ({so})"
    )
    .unwrap();
    writeln!(
        out,
        "  throughput into host-stub's durable sink, realistic policy: {r:>10.0} msg/s  ({sr}; policy costs {:.1} %)",
        (1.0 - r / o) * 100.0
    )
    .unwrap();
    writeln!(
        out,
        "  throughput, plugin alone (stand-in host, nothing durable):  {a:>10.0} msg/s  ({sa})"
    )
    .unwrap();

    let paced_n = std::env::var("PACED_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    let paced = run(&open_config(), paced_n, Some(20_000), Sink::Durable);
    writeln!(
        out,
        "  latency at 20,000 msg/s paced, into the durable sink:  p50 {} µs, p99 {} µs ({:.1} s)",
        paced.p50_us, paced.p99_us, paced.secs
    )
    .unwrap();

    let text: String = "The quick brown fox jumps over the lazy dog. ".repeat(100_000 / 45 + 1)
        [..100_000]
        .to_string();
    let mut times = Vec::new();
    for _ in 0..51 {
        let t = Instant::now();
        let chunks = chunk::chunk(&text, 4000, ChunkMode::Length);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(chunks.len(), 26);
    }
    writeln!(
        out,
        "  chunking a 100 KB text (limit 4000): median {:.0} µs",
        median(times)
    )
    .unwrap();
}
