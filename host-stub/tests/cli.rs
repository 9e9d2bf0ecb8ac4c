//! host-stub's own command-line behaviour, without plugins. (Its presence also makes
//! `cargo test --workspace` build the host-stub binary the end-to-end tests drive.)

use std::process::Command;

fn host_stub() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-stub"));
    cmd.env_remove("HOST_STUB_CONFIG").env_remove("RUST_LOG");
    cmd
}

#[test]
fn bad_usage_exits_2() {
    let out = host_stub().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json5");
    let out = host_stub()
        .arg("--config")
        .arg(&missing)
        .arg("gateway")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn empty_plugins_folder_lists_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = host_stub()
        .current_dir(dir.path())
        .arg("--plugins")
        .arg(dir.path())
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn missing_plugins_folder_is_a_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = host_stub()
        .current_dir(dir.path())
        .arg("--plugins")
        .arg(dir.path().join("absent"))
        .args(["plugins", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
