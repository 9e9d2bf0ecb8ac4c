//! The example hosts of issue 23 item 4, run as a user runs them: `examples/c-host` compiled
//! with `cc -std=c99 -Wall -Werror`, `examples/python-host` with `python3`, each loading a
//! library through the C ABI (plugin-abi/include/channel_plugin.h).
//!
//! Against the fixture library (green today): the C host starts and stops on SIGTERM; the
//! Python binding's calls and the gateway's delivery handling. Against libimessage and
//! imsg-sim: a DM is printed, stored, acknowledged and answered by the echo agent; these
//! fail loudly until libimessage exports the `chp_*` functions.
//!
//! A missing `cc` or `python3` is one loud line, and a failure when `CI` is set.

use crate::common;

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::sim::{wait_until, SimEnv};
use serde_json::{json, Value};

use crate::common::WAIT;

fn examples() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).to_path_buf()
}

/// Whether `tool` runs; when it does not, one loud line, and a failure in CI.
fn have(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    let line = format!("NO `{tool}` ON PATH: the {tool} host test did not run");
    assert!(
        std::env::var_os("CI").is_none(),
        "{line}, and CI must have it"
    );
    eprintln!("!!!!!!!! {line} !!!!!!!!");
    false
}

/// `examples/c-host/c_host.c` compiled into `dir` the way the README says.
fn compile_c_host(dir: &Path) -> PathBuf {
    let binary = dir.join("c-host");
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../plugin-abi/include"
        ))
        .arg(examples().join("c-host/c_host.c"))
        .arg("-o")
        .arg(&binary)
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(out.status.success(), "cc failed:\n{}", common::stderr(&out));
    binary
}

fn python_gateway() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(examples().join("python-host/gateway.py"));
    cmd
}

/// Fails the test, loudly, when `library` does not export the C ABI yet.
fn require_chp_exports(library: &Path) {
    let path = CString::new(library.to_str().unwrap()).unwrap();
    // SAFETY: loads a library built by this workspace; it is never unloaded (spec §2).
    let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen {}", library.display());
    // SAFETY: a live handle and a NUL-terminated name.
    let found = unsafe { libc::dlsym(lib, c"chp_new".as_ptr()) };
    if found.is_null() {
        let line = format!(
            "libimessage ({}) DOES NOT EXPORT chp_new YET: this host test fails until \
             imessage-plugin's plugin/ffi.rs exports the chp_* functions",
            library.display()
        );
        eprintln!("!!!!!!!! {line} !!!!!!!!");
        panic!("{line}");
    }
}

/// A running host: its stdout lines as they come, its stderr in a file.
struct Host {
    child: Child,
    lines: Receiver<String>,
    stderr: PathBuf,
}

impl Host {
    fn spawn(mut cmd: Command, stderr: PathBuf) -> Host {
        let file = std::fs::File::create(&stderr).unwrap();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(file)
            .env_remove("RUST_LOG")
            .spawn()
            .expect("start the host");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Host {
            child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_stderr(&self, text: &str) {
        wait_until(&format!("{text:?} on the host's stderr"), WAIT, || {
            self.stderr().contains(text)
        });
    }

    /// The next routed message the host printed.
    fn next_routed(&self) -> Value {
        let line = self.lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no routed message within {WAIT:?}; stderr:\n{}",
                self.stderr()
            )
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is JSON lines: {e}: {line}"))
    }

    /// How the host was told to stop: a signal, or EOF on stdin.
    fn stop(&mut self, signal: Option<i32>) -> ExitStatus {
        match signal {
            // SAFETY: signalling our own child.
            Some(sig) => unsafe {
                libc::kill(self.child.id() as i32, sig);
            },
            None => drop(self.child.stdin.take()),
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_c_host_compiles_starts_and_stops_on_sigterm_with_the_fixture() {
    if !have("cc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c_host(dir.path());
    std::fs::write(dir.path().join("gateway.json"), r#"{"channels": {}}"#).unwrap();
    let mut cmd = Command::new(binary);
    cmd.current_dir(dir.path())
        .args(["gateway.json", "state", "delivered.jsonl"])
        .env("CHP_LIBRARY", common::plugin_library("fixture"));
    let mut host = Host::spawn(cmd, dir.path().join("stderr.txt"));
    host.wait_stderr("c-host: started:");
    assert_eq!(host.stop(Some(libc::SIGTERM)).code(), Some(0));
    assert!(
        host.stderr().contains("c-host: plugin.closed"),
        "{}",
        host.stderr()
    );
}

/// The binding's calls, and the gateway's handling of what the fixture delivers on request:
/// a batch stored with one fsync, then acknowledged, then echoed; a `host.request` refused
/// with -32601.
const PYTHON_WITH_FIXTURE: &str = r#"
import asyncio, json, sys
import chp, gateway

library_path, delivered = sys.argv[1], sys.argv[2]
lib = chp.Library(library_path)
assert lib.abi_version() == 1 << 16, lib.abi_version()
assert lib.describe()["id"] == "fixture"
try:
    lib.new({"ackTimeoutMs": "soon"})
    raise AssertionError("bad options accepted")
except chp.ChpError as e:
    assert "ackTimeoutMs" in str(e), e

def message(mid, text):
    return {"type": "message", "accountId": "default", "to": "chat_id:7",
            "messageId": mid, "text": text}

async def drive(h):
    g = gateway.Gateway(h, delivered)
    fd = h.wakeup_fd()
    asyncio.get_running_loop().add_reader(fd, g.on_wakeup, fd)
    batch = {"type": "batch", "events": [message("A", "one"), {"type": "typing"}, message("B", "two")]}
    acked = await g.request("call", {"method": "deliver", "payload": batch})
    print("acked", json.dumps(acked["result"]))
    # The echo agent's two sends (posted after the ack): the fixture's `send` panics.
    for sent in await asyncio.gather(*g.pending.values()):
        print("sent", json.dumps(sent["error"]["code"]))
    asked = await g.request("call", {"method": "request",
                                     "payload": {"method": "config.write", "payload": {}}})
    print("host.request", json.dumps(asked["error"]))
    g.stop()
    await g.closed

with lib.new({"ackTimeoutMs": 10000}) as h:
    assert h.call("status", {})["accounts"][0]["accountId"] == "default"
    try:
        h.call("teleport")
        raise AssertionError("unknown method answered")
    except chp.RpcError as e:
        assert e.code == -32601, e
    asyncio.run(drive(h))
    try:
        h.post({"jsonrpc": "2.0", "id": 9, "method": "status"})
        raise AssertionError("post after stop accepted")
    except chp.ChpError as e:
        assert e.code == -1, e
print("ok")
"#;

#[test]
fn the_python_binding_and_gateway_work_with_the_fixture() {
    if !have("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let delivered = dir.path().join("delivered.jsonl");
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_WITH_FIXTURE)
        .arg(common::plugin_library("fixture"))
        .arg(&delivered)
        .env("PYTHONPATH", examples().join("python-host"))
        .output()
        .unwrap();
    let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // The two messages of the batch (not the unknown event), printed before the ack.
    let printed: Vec<Value> = lines[..2]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (
            printed[0]["messageId"].as_str(),
            printed[1]["messageId"].as_str()
        ),
        (Some("A"), Some("B"))
    );
    assert_eq!(
        lines[2..5],
        [r#"acked {"delivered": true}"#, "sent -32001", "sent -32001"]
    );
    // The host's -32601 reaches the plugin as `unknown_method`.
    let asked: Value = serde_json::from_str(lines[5].trim_start_matches("host.request ")).unwrap();
    assert_eq!(
        (asked["data"]["code"].as_str(), asked["message"].as_str()),
        (
            Some("unknown_method"),
            Some("this host does not implement config.write")
        ),
        "{stdout}"
    );
    assert_eq!(lines[6..], ["ok"]);
    let stored = std::fs::read_to_string(&delivered).unwrap();
    assert_eq!(stored.lines().count(), 2, "{stored}");
    assert!(
        stderr.contains("fixture send always panics (target chat_id:7)"),
        "the echo replies go to the delivery's `to`: {stderr}"
    );
}

/// A DM through imsg-sim: printed, stored, acknowledged (the cursor moves), answered once by
/// the echo agent; then the host stops with `plugin.closed` and exits 0.
fn a_dm_is_stored_acknowledged_and_echoed(
    mut host_cmd: Command,
    stop_with: Option<i32>,
    closed: &str,
) {
    let env = SimEnv::new(json!({}), json!({}));
    let library = env
        .path("plugins")
        .join(common::plugin_library("imessage").file_name().unwrap());
    require_chp_exports(&library);
    let delivered = env.path("delivered.jsonl");
    host_cmd
        .arg(env.gw.config_path())
        .arg(env.path("state"))
        .arg(&delivered)
        .arg(&library);
    let mut host = Host::spawn(host_cmd, env.path("host.stderr"));
    host.wait_stderr("watching for messages");

    let started = Instant::now();
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello host"}));
    let routed = host.next_routed();
    assert_eq!(
        (routed["to"].as_str(), routed["text"].as_str()),
        (Some("chat_id:7"), Some("hello host"))
    );
    let stored: Vec<Value> = std::fs::read_to_string(&delivered)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        stored[0], routed,
        "stored (and fsynced) before it was printed"
    );
    wait_until("the echo reply", WAIT, || !env.sends().is_empty());
    let round_trip = started.elapsed();
    assert_eq!(env.sends()[0]["text"], "echo: hello host");
    assert_eq!(env.sends()[0]["chat_id"], 7);
    eprintln!("{closed}: insert → echo sent: {round_trip:?}");

    let status = host.stop(stop_with);
    assert_eq!(status.code(), Some(0), "{}", host.stderr());
    assert!(host.stderr().contains(closed), "{}", host.stderr());
    assert_eq!(env.sends().len(), 1, "answered once");
    assert!(host.lines.try_recv().is_err(), "routed once");
    // Acknowledged: the catch-up cursor moved past the message.
    let cursor = std::fs::read_to_string(env.path("state/imessage/default/cursor.json"))
        .unwrap_or_else(|e| panic!("no cursor.json, so nothing was acknowledged: {e}"));
    let cursor: Value = serde_json::from_str(&cursor).unwrap();
    assert!(cursor["rowid"].as_i64().unwrap() >= 1, "{cursor}");
}

#[test]
fn the_c_host_gets_a_dm_from_imsg_sim_acknowledges_and_echoes() {
    if !have("cc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c_host(dir.path());
    a_dm_is_stored_acknowledged_and_echoed(
        Command::new(binary),
        Some(libc::SIGTERM),
        "c-host: plugin.closed",
    );
}

#[test]
fn the_python_host_gets_a_dm_from_imsg_sim_acknowledges_and_echoes() {
    if !have("python3") {
        return;
    }
    a_dm_is_stored_acknowledged_and_echoed(python_gateway(), None, "gateway: plugin.closed");
}

/// examples/python-host/test_gateway.py: the gateway stores and prints each routed message as
/// the plugin's own JSON text, byte for byte, and decodes everything else as json.loads does.
#[test]
fn the_python_gateway_keeps_the_plugins_json_text() {
    if !have("python3") {
        return;
    }
    let out = Command::new("python3")
        .args(["-B", "-m", "unittest", "test_gateway"])
        .current_dir(examples().join("python-host"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
}
