//! `host-stub serve` (spec/host-protocol.md §4) as a child process: stdin to write lines to,
//! stdout's lines arriving on a channel.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};

use super::Gateway;

/// A started `host-stub serve`; the caller kills or waits for `child`.
pub struct Serve {
    pub child: Child,
    pub stdin: ChildStdin,
    /// Every stdout line, in order, until EOF.
    pub lines: Receiver<String>,
}

/// Starts `host-stub serve --channel imessage --options <options>` with `gw`'s plugins and
/// state folders; its stderr goes to the test's.
pub fn spawn(gw: &Gateway, options: &str) -> Serve {
    let mut child = gw
        .command()
        .args(["serve", "--channel", "imessage", "--options", options])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start host-stub serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Serve {
        child,
        stdin,
        lines,
    }
}
