//! imsg-sim: a protocol-faithful simulator of `imsg rpc` (imsg-protocol.md Part B), so the
//! plugin and its tests run on machines without a Mac.
//!
//! `imsg-sim rpc [--db PATH] [--scenario FILE]` serves JSON-RPC on stdio from an in-memory
//! Messages database seeded from a scenario (fixture F by default), with hooks to inject
//! inbound messages, delays, malformed lines, permission failures and crashes.

mod bridge_actions;
mod burst;
mod db;
mod faults;
mod journal;
mod methods;
mod params;
mod scenario;
mod server;
mod state;
mod tracked;

use std::io::Write;

use serde_json::Value;

use state::Sim;

const IGNORED_FLAGS: &[&str] = &[
    "-v",
    "--verbose",
    "--json",
    "-j",
    "--json-output",
    "--jsonOutput",
];

fn rpc_help() -> String {
    [
        "imsg rpc",
        "Run JSON-RPC over stdin/stdout",
        "",
        "Usage:",
        "  imsg rpc [options]",
        "",
        "Options:",
        "  --db <value>\tPath to chat.db (defaults to ~/Library/Messages/chat.db)",
        "  --log-level, --logLevel <value>\tSet log level (trace|verbose|debug|info|warning|error|critical)",
        "  -v, --verbose\tEnable verbose logging",
        "  --json, -j, --json-output, --jsonOutput\tEmit machine-readable JSON output",
        "",
        "Examples:",
        "  imsg rpc",
        "  imsg rpc --db ~/Library/Messages/chat.db",
    ]
    .join("\n")
}

fn root_help(version: &str, has_rpc: bool) -> String {
    let mut lines = vec![
        format!("imsg {version}"),
        "Send and read iMessage / SMS from the terminal (imsg-sim)".to_string(),
        String::new(),
        "Usage: imsg <command> [options]".to_string(),
        String::new(),
        "Commands:".to_string(),
        "  chats\tList recent chats".to_string(),
        "  history\tShow messages for a chat".to_string(),
        "  send\tSend a message".to_string(),
        "  status\tShow feature status".to_string(),
    ];
    if has_rpc {
        lines.push("  rpc\tRun JSON-RPC over stdin/stdout".to_string());
    }
    lines.join("\n")
}

struct Args {
    command: Option<String>,
    help: bool,
    version: bool,
    db: Option<String>,
    scenario: Option<String>,
    unknown_flag: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        command: None,
        help: false,
        version: false,
        db: None,
        scenario: None,
        unknown_flag: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => args.help = true,
            "--version" | "-V" => args.version = true,
            "--db" => args.db = it.next(),
            "--scenario" => args.scenario = it.next(),
            "--log-level" | "--logLevel" => {
                it.next();
            }
            f if IGNORED_FLAGS.contains(&f) => {}
            f if f.starts_with('-') => {
                if args.unknown_flag.is_none() {
                    args.unknown_flag = Some(f.to_string());
                }
            }
            c => {
                if args.command.is_none() {
                    args.command = Some(c.to_string());
                }
            }
        }
    }
    args
}

fn load_scenario(args: &Args) -> Result<Value, String> {
    let mut base = scenario::fixture_f();
    let file = args
        .scenario
        .clone()
        .or_else(|| std::env::var("IMSG_SIM_SCENARIO").ok())
        .or_else(|| {
            args.db
                .clone()
                .filter(|d| d.ends_with(".json") || d.ends_with(".json5"))
        });
    if let Some(path) = file {
        let over = scenario::load(&path)?;
        scenario::merge(&mut base, &over);
    } else if let Some(db) = &args.db {
        base["db_path"] = Value::String(db.clone());
    }
    Ok(base)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("burst") {
        std::process::exit(burst::dump(&argv[1..]));
    }
    let args = parse_args();
    let scenario = match load_scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("imsg-sim: scenario: {e}");
            std::process::exit(2);
        }
    };
    record_invocation(&scenario);
    let sim = match Sim::from_scenario(&scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("imsg-sim: scenario: {e}");
            std::process::exit(2);
        }
    };
    let shown_version = std::env::var("IMSG_VERSION").unwrap_or_else(|_| sim.version_text.clone());
    let has_rpc = sim.at_least((0, 3, 0));
    let mut stdout = std::io::stdout();
    if args.version {
        let _ = writeln!(stdout, "{shown_version}");
        return;
    }
    if let Some(flag) = &args.unknown_flag {
        let _ = writeln!(stdout, "Error: Unknown option '{flag}'");
        std::process::exit(1);
    }
    match args.command.as_deref() {
        None => {
            let _ = writeln!(stdout, "{}", root_help(&shown_version, has_rpc));
        }
        Some(_) if args.help && !(args.command.as_deref() == Some("rpc") && has_rpc) => {
            let _ = writeln!(stdout, "{}", root_help(&shown_version, has_rpc));
        }
        Some("rpc") if args.help => {
            let _ = writeln!(stdout, "{}", rpc_help());
        }
        Some("rpc") if has_rpc => run_rpc(sim, &scenario),
        Some("status") if sim.at_least((0, 6, 0)) => {
            let _ = writeln!(stdout, "{}", status_json(&sim));
        }
        Some(_) => {
            let _ = writeln!(stdout, "Unknown command");
            let _ = writeln!(stdout, "{}", root_help(&shown_version, has_rpc));
            std::process::exit(1);
        }
    }
}

/// Notes this process start in the record (`IMSG_SIM_RECORD`, else the scenario's), so tests
/// can count every start, the one-shot `--version`, `rpc --help` and `status --json` ones
/// included (they have no rpc server to record their requests).
fn record_invocation(scenario: &Value) {
    let path = std::env::var("IMSG_SIM_RECORD").ok().or_else(|| {
        let record = scenario.pointer("/control/record")?;
        record.as_str().map(str::to_string)
    });
    let Some(path) = path else { return };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let entry = serde_json::json!({"invocation": argv, "pid": std::process::id(),
        "unix_ns": unix_ns.to_string()});
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: several simulator processes append to this file.
        let _ = f.write_all(format!("{entry}\n").as_bytes());
    }
}

fn status_json(sim: &Sim) -> Value {
    let macos = !sim.linux;
    let bridge_ready = sim.bridge.as_str() == Some("ready");
    // `advanced_features` and `v2_ready` say the bridge is up (actions.md §3.9).
    let mut v = serde_json::json!({
        "basic_features": true, "advanced_features": bridge_ready, "typing_indicators": macos,
        "read_receipts": macos, "sip": "unknown", "message": "imsg-sim: simulated Messages database",
    });
    if sim.at_least((0, 7, 0)) {
        v["bridge_version"] = 2.into();
        v["v2_ready"] = bridge_ready.into();
        v["selectors"] = serde_json::json!({});
    }
    if sim.at_least((0, 7, 3)) {
        let methods: Vec<&str> = state::ALL_METHODS
            .iter()
            .copied()
            .filter(|m| sim.has_method(m))
            .collect();
        v["rpc_methods"] = serde_json::json!(methods);
    }
    if sim.at_least((0, 9, 0)) {
        v["version"] = sim.version_text.clone().into();
    }
    v
}

fn run_rpc(sim: Sim, scenario: &Value) {
    let control = scenario.get("control").cloned().unwrap_or(Value::Null);
    let path = |env: &str, key: &str| {
        std::env::var(env)
            .ok()
            .or_else(|| control.get(key).and_then(Value::as_str).map(str::to_string))
    };
    let inbox = path("IMSG_SIM_INBOX", "inbox");
    let record = path("IMSG_SIM_RECORD", "record").and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    if let Some(n) = sim.faults.stderr_bytes {
        let line = "imsg-sim: simulated diagnostic output on stderr\n";
        let text: String = line.chars().cycle().take(n as usize).collect();
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    if let Some(noise) = &sim.faults.stdout_noise {
        let mut out = std::io::stdout();
        for line in &noise.startup {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    if sim.fda_style().as_deref() == Some("banner") {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", sim.permission_text());
        let _ = out.flush();
        std::process::exit(1);
    }
    let mut sim = sim;
    if let Some(path) = path("IMSG_SIM_SHARED", "shared") {
        match journal::Journal::open(&path) {
            Ok(j) => {
                sim.journal = Some(j);
                sim.sync_journal();
            }
            Err(e) => {
                eprintln!("imsg-sim: shared journal {path}: {e}");
                std::process::exit(2);
            }
        }
    }
    if sim.fda_style().as_deref() == Some("db_unavailable") {
        sim.db_available = false;
    }
    let events: Vec<Value> = scenario
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let shared = server::Shared::new(sim, record, burst::Burst::from_scenario(scenario));
    server::spawn_ticker(shared.clone(), events, inbox);
    let server = server::Server::new(shared);
    let code = server.run();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
