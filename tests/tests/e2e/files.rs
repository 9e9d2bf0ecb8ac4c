//! The state folder is private (issue 21 item 6): after a run every file in it is 0600 and
//! every folder 0700, and a folder others may write to is refused at start, by host-stub and
//! by the plugin (which other hosts load too), naming the folder and the fix.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::sim::{wait_until, SimEnv};
use serde_json::json;

use crate::common::WAIT;

/// Every entry under `dir` with its permission bits, folders included.
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, meta.mode() & 0o7777, meta.is_dir()));
        }
    }
    out
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn after_a_run_every_state_file_is_0600_in_0700_folders() {
    let env = SimEnv::new(json!({}), json!({}));
    let state = env.path("state");
    // A state folder host-stub creates itself is 0700.
    std::fs::remove_dir(&state).unwrap();
    let gateway = env.start(true);
    env.insert(json!({"chat_id": 7, "handle": "+15550001111", "text": "hello"}));
    gateway.wait_messages(1, WAIT);
    wait_until("the echo reply", WAIT, || !env.sends().is_empty());
    assert!(gateway.stop().success());
    let delivered = state.join("host-stub/imessage/default.delivered");
    assert!(std::fs::read_to_string(&delivered).unwrap().lines().count() >= 1);
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o7777, 0o700);
    let found = modes_under(&state);
    let wrong: Vec<_> = found
        .iter()
        .filter(|(_, mode, is_dir)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .collect();
    assert!(wrong.is_empty(), "not private: {wrong:#?}");
    assert!(found.iter().any(|(p, _, _)| p == &delivered), "{found:#?}");
}

#[test]
fn a_state_folder_others_can_write_is_refused_by_host_stub() {
    let env = SimEnv::new(json!({}), json!({}));
    let state = env.path("state");
    chmod(&state, 0o777);
    let expected = format!(
        "state folder {0} is writable by group or others (mode 0777); run chmod 700 {0}",
        state.display()
    );
    let out = env.gw.run(&["gateway"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains(&expected),
        "{}",
        common::stderr(&out)
    );
    // host-stub refuses before loading any plugin (a plugin may not check).
    assert!(
        !common::stderr(&out).contains("failed to start"),
        "{}",
        common::stderr(&out)
    );
    // One-shot commands start the plugin on the same folder: refused the same way.
    let out = env.gw.run(&["channels", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains(&expected),
        "{}",
        common::stderr(&out)
    );
    assert!(env.record().is_empty(), "no imsg process was started");
    assert!(
        !state.join("host-stub").exists(),
        "nothing was written there"
    );
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        chmod(&state, 0o700);
        std::os::unix::fs::chown(&state, Some(4321), Some(4321)).unwrap();
        let out = env.gw.run(&["gateway"]);
        assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
        assert!(
            common::stderr(&out).contains(&format!(
                "state folder {} belongs to uid 4321, not to you (uid 0)",
                state.display()
            )),
            "{}",
            common::stderr(&out)
        );
    }
}

#[test]
fn the_plugin_refuses_its_own_folder_when_others_can_write_it() {
    let env = SimEnv::new(json!({}), json!({}));
    let account = env.path("state/imessage/default");
    std::fs::create_dir_all(&account).unwrap();
    chmod(&account, 0o757);
    let out = env.gw.run(&["gateway"]);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("channel imessage failed to start"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "state folder {0} is writable by group or others (mode 0757); run chmod 700 {0}",
            account.display()
        )),
        "{stderr}"
    );
    assert!(env.record().is_empty(), "no imsg process was started");
}
