//! The whole-process benchmark (issue 12): what a user running `host-stub gateway` gets.
//!
//! ```sh
//! cargo build --release --workspace && target/release/bench-gateway
//! ```
//!
//! Each run starts `host-stub gateway` with the built `libimessage` and an `imsg-sim` that
//! writes N `message` notifications right after `watch.subscribe` (burst mode), and times the
//! first byte of the burst to the N-th routed line on host-stub's stdout, every delivery made
//! durable (host-stub fsyncs its delivered-id log before it acknowledges). Beside it, in the
//! same run, a bare loop over the same bytes: read a line, parse it with serde_json, print one
//! line. Then latency: the same gateway paced at 20,000 msg/s (notification → routed line),
//! and the echo round trip (notification → the `send` of the `--reply echo` answer).
//!
//! Python rows (issue 23), the same burst through a Python host as a user runs one, by
//! `tests/bench/python_host.py`: through the C ABI (examples/python-host's chp.py and asyncio
//! gateway.py) and through the stdio bridge (a Python process driving `host-stub serve` over
//! its stdin/stdout). Each asks for batched delivery (`maxBatch` 256, as host-stub gateway),
//! makes every delivery durable with one write and one fsync, prints the routed lines, then
//! acknowledges. Their ratio is to a Python loop that reads the same routed lines from a file,
//! parses each, and writes + fsyncs + prints them per 256: the floor for Python doing the same
//! durable work, and the same JSON work as the hosts (each parses every message once and
//! stores the plugin's own text of it), so the ratio is what the transport adds.
//! Each host reports its mean batch and its main thread's CPU. The echo round trip is
//! measured through both Python hosts too.
//!
//! First, start-up: launching the gateway → imsg-sim answering the first `watch.subscribe`,
//! and how many imsg processes started before it (`STARTS` runs, default 3; 0 skips it).
//!
//! Knobs (environment): `MESSAGES` (default 100,000), `RUNS` (5), `PACED` (100,000 messages
//! at 20,000/s), `ECHOES` (200 at 50/s), `RSS_MESSAGES` (1,000,000: peak RSS sampled at 200k,
//! 600k and 1M; 0 skips it), `PYTHON` (the interpreter, `python3`), `PYTHON_ROWS` (`0` skips
//! the Python rows; without it a missing interpreter stops the benchmark before it starts),
//! `RUST_ROWS` (`0` skips the host-stub gateway burst rows, to iterate on the Python ones).
//! Medians are over `RUNS`; the machine is noisy, so compare numbers from one run of this
//! binary.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn release_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn artifact(name: &str) -> PathBuf {
    let path = release_dir().join(name);
    if !path.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release --workspace` first",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

fn library_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libimessage.dylib"
    } else {
        "libimessage.so"
    }
}

/// Peak and current resident set of a process, in KiB (Linux `/proc`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A scratch gateway folder: plugins, config, scenario, state.
struct Gateway {
    dir: tempfile::TempDir,
}

impl Gateway {
    fn new(burst: Value) -> Gateway {
        let mut dir = tempfile::tempdir().expect("tempdir");
        // For profilers that resolve symbols after the run (perf report).
        if std::env::var_os("BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
        }
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(artifact(library_name()), plugins.join(library_name())).unwrap();
        let scenario = dir.path().join("scenario.json");
        std::fs::write(
            &scenario,
            json!({
                "clock": {"start": "now", "mode": "running"},
                "chats": [{"id": 7, "identifier": "+15550001111", "guid": "iMessage;-;+15550001111",
                           "service": "iMessage", "participants": ["+15550001111"]}],
                "messages": [],
                "control": {"shared": dir.path().join("chat.journal")},
                "burst": burst,
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("gateway.json5"),
            json!({"channels": {"imessage": {
                "cliPath": artifact("imsg-sim").display().to_string(),
                "dbPath": scenario.display().to_string(),
                "dmPolicy": "open",
                "allowFrom": ["*"],
                // The echo measure replies 50 times a second in one chat; the outbound rate
                // limits (20 a minute per chat by default) would measure themselves instead.
                "rateLimit": {"enabled": false},
            }}})
            .to_string(),
        )
        .unwrap();
        Gateway { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self, echo: bool) -> Child {
        self.start_with_env(echo, &[])
    }

    fn start_with_env(&self, echo: bool, vars: &[(&str, &Path)]) -> Child {
        let mut cmd = Command::new(artifact("host-stub"));
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.arg("--config")
            .arg(self.path("gateway.json5"))
            .arg("--plugins")
            .arg(self.path("plugins"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--log-level", "warn", "gateway"]);
        if echo {
            cmd.args(["--reply", "echo"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.path("host-stub.stderr")).unwrap())
            .spawn()
            .expect("start host-stub")
    }
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let _ = child.wait();
}

/// Reads `stdout` until `n` lines; calls `at(lines_so_far)` after every read. Returns the
/// unix time of the n-th line.
fn count_lines(stdout: &mut impl Read, n: u64, mut at: impl FnMut(u64)) -> u128 {
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    while lines < n {
        let got = stdout.read(&mut buf).expect("reading stdout");
        assert!(got > 0, "the process ended after {lines} of {n} lines");
        lines += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
        at(lines);
    }
    unix_ns()
}

fn started_ns(path: &Path) -> u128 {
    wait_for_stamp(path, 1000)
}

/// The unix-ns stamp imsg-sim writes to `path`, polled every 5 ms up to `tries` times.
fn wait_for_stamp(path: &Path, tries: u32) -> u128 {
    for _ in 0..tries {
        if let Some(t) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return t;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{} was never written", path.display());
}

struct Sample {
    seconds: f64,
    peak_kib: u64,
    /// (lines read, current RSS KiB) at the checkpoints asked for.
    rss: Vec<(u64, u64)>,
}

/// A scratch gateway whose imsg-sim writes N messages in a burst and notes when it began.
fn burst_gateway(n: u64) -> Gateway {
    let gw = Gateway::new(json!({"messages": n, "started": "STARTED"}));
    let started = gw.path("started");
    let scenario_path = gw.path("scenario.json");
    let scenario = std::fs::read_to_string(&scenario_path).unwrap().replace(
        "\"STARTED\"",
        &Value::from(started.display().to_string()).to_string(),
    );
    std::fs::write(&scenario_path, scenario).unwrap();
    gw
}

/// Times a started gateway (`child`, routed lines on its stdout) through the burst of `gw`.
fn timed_burst(gw: &Gateway, mut child: Child, n: u64, checkpoints: &[u64]) -> Sample {
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut rss = Vec::new();
    let mut next = 0;
    let end = count_lines(&mut stdout, n, |lines| {
        while next < checkpoints.len() && lines >= checkpoints[next] {
            rss.push((checkpoints[next], memory_kib(pid).1));
            next += 1;
        }
    });
    let (peak_kib, _) = memory_kib(pid);
    let seconds = (end - started_ns(&gw.path("started"))) as f64 / 1e9;
    stop(child);
    Sample {
        seconds,
        peak_kib,
        rss,
    }
}

/// One whole-process run: host-stub + libimessage + imsg-sim, N messages in a burst.
fn whole_process(n: u64, checkpoints: &[u64]) -> Sample {
    let gw = burst_gateway(n);
    let child = gw.start(false);
    timed_burst(&gw, child, n, checkpoints)
}

/// One start-up: launching `host-stub gateway` → imsg-sim answering the first
/// `watch.subscribe` (the burst's `started` stamp, written then), in ms, and how many imsg
/// processes started before the request reached it (imsg-sim notes every start and every
/// request in its record).
fn launch_to_subscribe() -> (f64, usize) {
    let gw = Gateway::new(json!({"messages": 0, "started": "STARTED"}));
    let started = gw.path("started");
    let record = gw.path("record.jsonl");
    let scenario_path = gw.path("scenario.json");
    let scenario = std::fs::read_to_string(&scenario_path).unwrap().replace(
        "\"STARTED\"",
        &Value::from(started.display().to_string()).to_string(),
    );
    std::fs::write(&scenario_path, scenario).unwrap();
    let launched = unix_ns();
    let child = gw.start_with_env(false, &[("IMSG_SIM_RECORD", &record)]);
    // Up to 30 s: a loaded machine must not fail the run, only slow it.
    let subscribed = wait_for_stamp(&started, 6000);
    stop(child);
    // In file order: starts are noted as each process begins, requests as they arrive.
    let starts = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .take_while(|r| !(r["dir"] == "in" && r["line"].as_str().is_some_and(is_subscribe)))
        .filter(|r| r.get("invocation").is_some())
        .count();
    ((subscribed - launched) as f64 / 1e6, starts)
}

fn is_subscribe(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["method"] == "watch.subscribe")
}

fn start_row(runs: u64) {
    let mut ms = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..runs {
        let (t, n) = launch_to_subscribe();
        ms.push(t);
        starts.push(n);
    }
    let runs_text: Vec<String> = ms
        .iter()
        .zip(&starts)
        .map(|(t, n)| format!("{t:.0} ms ({n} starts)"))
        .collect();
    println!(
        "start: launch → first watch.subscribe answered, median {:.0} ms over {runs} runs; imsg processes started before it: {} [{}]",
        median(&ms),
        starts.iter().max().copied().unwrap_or(0),
        runs_text.join(", ")
    );
}

/// The bare loop over the same bytes: `imsg-sim burst N | bench-gateway --bare[-println]`.
fn bare(n: u64, mode: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut sim = Command::new(artifact("imsg-sim"))
        .args(["burst", &n.to_string(), &started.display().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("imsg-sim burst");
    let mut bare = Command::new(std::env::current_exe().unwrap())
        .arg(mode)
        .stdin(sim.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bare loop");
    let mut stdout = bare.stdout.take().unwrap();
    let end = count_lines(&mut stdout, n, |_| {});
    let seconds = (end - started_ns(&started)) as f64 / 1e9;
    let _ = sim.wait();
    let _ = bare.wait();
    seconds
}

/// `--bare-println`: the same with `println!`, one write per line (Rust's stdout is
/// line-buffered): the loop as most people would write it.
fn bare_println_loop() {
    let stdin = std::io::stdin().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        println!("{}", v["params"]["message"]);
    }
}

/// `--bare`: read a line, parse it with serde_json, print one line; flush whenever no more
/// input is buffered (as host-stub writes once per delivery). The stricter baseline.
fn bare_loop() {
    let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let _ = serde_json::to_writer(&mut out, &v["params"]["message"]);
        let _ = out.write_all(b"\n");
        if input.buffer().is_empty() {
            let _ = out.flush();
        }
    }
    let _ = out.flush();
}

/// The most events per delivery the Python hosts ask for, and the baseline's batch: host-stub
/// gateway's `maxBatch` (plugin_abi's `DEFAULT_MAX_BATCH`), so every row batches alike.
const PY_MAX_BATCH: u64 = 256;

/// How to run the Python rows: the interpreter and tests/bench/python_host.py.
struct Python {
    interpreter: String,
    script: PathBuf,
}

/// The Python rows need python3; without it the benchmark stops unless `PYTHON_ROWS=0` says
/// to skip them, so a missing interpreter never passes as "no Python rows" unnoticed.
fn python() -> Option<Python> {
    if std::env::var("PYTHON_ROWS").as_deref() == Ok("0") {
        println!("!!!!!!!! PYTHON_ROWS=0: the Python host rows (C ABI, stdio bridge) are skipped !!!!!!!!");
        return None;
    }
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let runs = Command::new(&interpreter)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        eprintln!("!!!!!!!! `{interpreter}` DOES NOT RUN: the Python host rows need it; install it, point PYTHON at one, or set PYTHON_ROWS=0 to skip them !!!!!!!!");
        std::process::exit(2);
    }
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/python_host.py"));
    if !script.exists() {
        eprintln!(
            "{} is missing: the Python host rows need it",
            script.display()
        );
        std::process::exit(2);
    }
    Some(Python {
        interpreter,
        script: script.to_path_buf(),
    })
}

/// The two ways a Python host loads the plugin.
#[derive(Clone, Copy)]
enum PyHost {
    /// examples/python-host (chp.py + gateway.py's asyncio Gateway) over the `chp_*` C ABI.
    CAbi,
    /// A Python process driving `host-stub serve` over its stdin/stdout.
    Stdio,
}

impl Python {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.interpreter);
        cmd.arg(&self.script);
        cmd
    }

    /// Starts a Python host on `gw`: routed lines on its stdout, its stderr in `python.stderr`.
    fn start(&self, gw: &Gateway, host: PyHost, echo: bool) -> Child {
        let mut cmd = self.command();
        match host {
            PyHost::CAbi => cmd.arg("chp").arg(gw.path("plugins").join(library_name())),
            PyHost::Stdio => cmd
                .arg("serve")
                .arg(artifact("host-stub"))
                .arg(gw.path("plugins")),
        };
        cmd.arg(gw.path("gateway.json5"))
            .arg(gw.path("state"))
            .arg(gw.path("delivered.jsonl"))
            .arg(PY_MAX_BATCH.to_string());
        if echo {
            cmd.arg("--echo");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(gw.path("python.stderr")).unwrap())
            .spawn()
            .expect("start the Python host")
    }

    /// One burst through a Python host: seconds and what the host reported (NaN when it
    /// reported nothing). With `keep_routed`, its durable file (the routed lines) is copied
    /// there.
    fn burst(&self, n: u64, host: PyHost, keep_routed: Option<&Path>) -> (f64, HostReport) {
        let gw = burst_gateway(n);
        let sample = timed_burst(&gw, self.start(&gw, host, false), n, &[]);
        let stderr = std::fs::read_to_string(gw.path("python.stderr")).unwrap_or_default();
        if let Some(to) = keep_routed {
            std::fs::copy(gw.path("delivered.jsonl"), to).expect("keeping the routed lines");
        }
        let report = HostReport::parse(&stderr).unwrap_or(HostReport {
            mean_batch: f64::NAN,
            cpu: f64::NAN,
        });
        (sample.seconds, report)
    }

    /// The baseline: a Python loop reading the routed lines from a file, parsing each,
    /// writing and fsyncing them per `PY_MAX_BATCH` and printing them.
    fn baseline(&self, routed: &Path, n: u64) -> f64 {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let mut child = self
            .command()
            .arg("baseline")
            .arg(routed)
            .arg(dir.path().join("durable.jsonl"))
            .arg(&started)
            .arg(PY_MAX_BATCH.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python baseline");
        let mut stdout = child.stdout.take().unwrap();
        let end = count_lines(&mut stdout, n, |_| {});
        let seconds = (end - started_ns(&started)) as f64 / 1e9;
        let _ = child.wait();
        seconds
    }
}

/// What a Python host reported on stderr at exit (`deliveries D messages M cpu S`).
#[derive(Clone, Copy)]
struct HostReport {
    /// Events per delivery.
    mean_batch: f64,
    /// CPU seconds of the host's main thread: its own Python work.
    cpu: f64,
}

impl HostReport {
    fn parse(stderr: &str) -> Option<HostReport> {
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("deliveries "))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<f64>().ok());
        Some(HostReport {
            mean_batch: number(3)? / number(1)?.max(1.0),
            cpu: number(5)?,
        })
    }
}

/// One Python host's run, as printed: time, rate, its report, its ratio.
fn host_row(name: &str, n: u64, seconds: f64, r: HostReport, base: f64) -> String {
    format!(
        "{name} {seconds:.3} s ({:.0} msg/s, mean batch {:.0}, host CPU {:.2} s, ratio {:.2})",
        n as f64 / seconds,
        r.mean_batch,
        r.cpu,
        seconds / base,
    )
}

/// The Python rows: both hosts and the baseline, `runs` times, then their medians.
fn python_rows(py: &Python, n: u64, runs: u64) {
    println!("Python hosts: {n} messages in a burst, batched delivery (maxBatch {PY_MAX_BATCH}), one write + fsync per batch before the ack; baseline: a Python loop over the same routed lines from a file, parse each, write + fsync per {PY_MAX_BATCH}; {runs} runs");
    let routed_dir = tempfile::tempdir().unwrap();
    let routed = routed_dir.path().join("routed.jsonl");
    let mut times: [Vec<f64>; 3] = Default::default();
    for run in 1..=runs {
        let keep = (run == 1).then_some(routed.as_path());
        let (c, cr) = py.burst(n, PyHost::CAbi, keep);
        let (s, sr) = py.burst(n, PyHost::Stdio, None);
        let b = py.baseline(&routed, n);
        println!(
            "  run {run}: {}; {}; baseline {b:.3} s ({:.0} msg/s)",
            host_row("C ABI host", n, c, cr, b),
            host_row("stdio bridge host", n, s, sr, b),
            n as f64 / b,
        );
        for (all, t) in times.iter_mut().zip([c, s, b]) {
            all.push(t);
        }
    }
    let [c, s, b] = times.map(|t| median(&t));
    println!(
        "median: Python via C ABI {c:.3} s = {:.0} msg/s, ratio {:.2} | Python via host-stub serve {s:.3} s = {:.0} msg/s, ratio {:.2} | Python baseline loop {b:.3} s = {:.0} msg/s",
        n as f64 / c,
        c / b,
        n as f64 / s,
        s / b,
        n as f64 / b,
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// The `t=<ns>` stamp imsg-sim put in a text.
fn stamp(text: &[u8]) -> Option<u128> {
    let at = text.windows(2).position(|w| w == b"t=")?;
    let digits: String = text[at + 2..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| *b as char)
        .collect();
    digits.parse().ok()
}

/// Notification → routed line at a fixed rate; latencies in µs, sorted.
fn paced(n: u64, rate: u64) -> Vec<f64> {
    let gw = Gateway::new(json!({"messages": n, "rate": rate}));
    let mut child = gw.start(false);
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut latencies = Vec::with_capacity(n as usize);
    for line in stdout.split(b'\n').take(n as usize) {
        let line = line.expect("stdout");
        let now = unix_ns();
        if let Some(t) = stamp(&line) {
            latencies.push((now.saturating_sub(t)) as f64 / 1000.0);
        }
    }
    stop(child);
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// Notification → the `send` of the echo agent's answer; latencies in µs, sorted. `start`
/// runs the gateway with its echo agent on.
fn echo_round_trip(n: u64, rate: u64, start: impl FnOnce(&Gateway) -> Child) -> Vec<f64> {
    let gw = Gateway::new(json!({"messages": n, "rate": rate, "sends": "SENDS"}));
    let sends = gw.path("sends.log");
    let scenario_path = gw.path("scenario.json");
    let scenario = std::fs::read_to_string(&scenario_path).unwrap().replace(
        "\"SENDS\"",
        &Value::from(sends.display().to_string()).to_string(),
    );
    std::fs::write(&scenario_path, scenario).unwrap();
    let mut child = start(&gw);
    // Routed lines must be read, or a full pipe stalls host-stub after ~64 KiB.
    let mut stdout = child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30 + 2 * n / rate.max(1));
    let mut latencies = Vec::new();
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(&sends).unwrap_or_default();
        latencies = text
            .lines()
            .filter_map(|l| {
                let (at, rest) = l.split_once(' ')?;
                let at: u128 = at.parse().ok()?;
                Some((at.saturating_sub(stamp(rest.as_bytes())?)) as f64 / 1000.0)
            })
            .collect();
        if latencies.len() as u64 >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(child);
    let _ = drain.join();
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// host-stub gateway beside the two bare loops, `runs` times, then their medians.
fn rust_rows(n: u64, runs: u64) {
    println!("whole process: host-stub gateway + libimessage + imsg-sim, {n} messages in a burst, every delivery fsynced; {runs} runs");
    let mut whole = Vec::new();
    let mut bares = Vec::new();
    let mut printlns = Vec::new();
    let mut peaks = Vec::new();
    for run in 1..=runs {
        let sample = whole_process(n, &[]);
        let b = bare(n, "--bare");
        let p = bare(n, "--bare-println");
        println!(
            "  run {run}: gateway {:.3} s ({:.0} msg/s, peak RSS {:.1} MiB); bare loop {:.3} s (ratio {:.2}); println! loop {:.3} s (ratio {:.2})",
            sample.seconds,
            n as f64 / sample.seconds,
            sample.peak_kib as f64 / 1024.0,
            b,
            sample.seconds / b,
            p,
            sample.seconds / p,
        );
        whole.push(sample.seconds);
        bares.push(b);
        printlns.push(p);
        peaks.push(sample.peak_kib as f64 / 1024.0);
    }
    let (w, b, p) = (median(&whole), median(&bares), median(&printlns));
    println!(
        "median: gateway {:.3} s = {:.0} msg/s, peak RSS {:.1} MiB | bare loop (buffered) {:.3} s = {:.0} msg/s, ratio {:.2} | println! loop {:.3} s = {:.0} msg/s, ratio {:.2}",
        w,
        n as f64 / w,
        median(&peaks),
        b,
        n as f64 / b,
        w / b,
        p,
        n as f64 / p,
        w / p,
    );
}

fn print_echo(what: &str, sorted: &[f64]) {
    println!(
        "echo round trip, {what}, {} messages at 50/s: notification → send of the reply p50 {:.2} ms, p99 {:.2} ms",
        sorted.len(),
        percentile(sorted, 0.5) / 1000.0,
        percentile(sorted, 0.99) / 1000.0
    );
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--bare") => return bare_loop(),
        Some("--bare-println") => return bare_println_loop(),
        _ => {}
    }
    let n = env_number("MESSAGES", 100_000);
    let runs = env_number("RUNS", 5).max(1);
    // Before anything runs: a missing python3 stops the benchmark now, not after minutes.
    let py = python();
    let starts = env_number("STARTS", 3);
    if starts > 0 {
        start_row(starts);
    }
    if std::env::var("RUST_ROWS").as_deref() != Ok("0") {
        rust_rows(n, runs);
    }

    if let Some(py) = &py {
        python_rows(py, n, runs);
    }

    let paced_n = env_number("PACED", 100_000);
    if paced_n > 0 {
        let l = paced(paced_n, 20_000);
        println!(
            "paced 20,000 msg/s, {} messages: notification → routed line p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            l.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(f64::NAN)
        );
    }
    let echoes = env_number("ECHOES", 200);
    if echoes > 0 {
        let l = echo_round_trip(echoes, 50, |gw| gw.start(true));
        print_echo("host-stub gateway --reply echo", &l);
        if let Some(py) = &py {
            for (host, what) in [
                (PyHost::Stdio, "Python host via host-stub serve"),
                (PyHost::CAbi, "Python host via the C ABI"),
            ] {
                let l = echo_round_trip(echoes, 50, |gw| py.start(gw, host, true));
                print_echo(what, &l);
            }
        }
    }
    let rss_n = env_number("RSS_MESSAGES", 1_000_000);
    if rss_n > 0 {
        let checkpoints = [rss_n / 5, rss_n * 3 / 5, rss_n];
        let sample = whole_process(rss_n, &checkpoints);
        let points: Vec<String> = sample
            .rss
            .iter()
            .map(|(at, kib)| format!("{:.1} MiB at {at}", *kib as f64 / 1024.0))
            .collect();
        println!(
            "RSS over {rss_n} messages: {}; peak {:.1} MiB ({:.0} msg/s)",
            points.join(", "),
            sample.peak_kib as f64 / 1024.0,
            rss_n as f64 / sample.seconds
        );
    }
}
