//! Issue 21, item 7, end to end: outbound media must lie under `mediaLocalRoots` or the
//! host's roots when either is set, and a file sent through a remote Mac travels as a 0600
//! copy in its own 0700 folder there, removed once the send has its answer.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::sim::SimEnv;
use plugin_abi::host::{self, Host};
use plugin_abi::types::{HostFeatures, SendRequest, StartContext, StatusRequest};
use serde_json::{json, Value};

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `<env>/out/ok.jpg` (inside the roots these tests set) and `<env>/secret.txt` (outside),
/// canonical paths.
fn files(env: &SimEnv) -> (PathBuf, PathBuf, PathBuf) {
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("ok.jpg"), b"jpeg bytes").unwrap();
    std::fs::write(env.path("secret.txt"), b"not for sending").unwrap();
    let out = std::fs::canonicalize(out).unwrap();
    let secret = std::fs::canonicalize(env.path("secret.txt")).unwrap();
    (out.clone(), out.join("ok.jpg"), secret)
}

fn send_media(env: &SimEnv, media: &Path, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = env.gw.command();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.args([
        "message",
        "send",
        "--channel",
        "imessage",
        "--target",
        "chat_id:42",
    ])
    .args(["--media", media.to_str().unwrap(), "--json"])
    .output()
    .expect("run host-stub")
}

#[test]
fn media_outside_media_local_roots_is_refused_and_nothing_is_sent() {
    let env = SimEnv::new(json!({}), json!({}));
    let (out, ok, secret) = files(&env);
    env.merge_config(
        json!({"channels": {"imessage": {"mediaLocalRoots": [out.display().to_string()]}}}),
    );

    let refused = send_media(&env, &secret, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = common::stderr(&refused);
    assert!(err.contains("media outside the allowed roots"), "{err}");
    assert!(
        err.contains(&secret.display().to_string()),
        "names the path: {err}"
    );
    assert!(
        err.contains(&out.display().to_string()),
        "names the roots: {err}"
    );
    assert!(env.send_requests().is_empty(), "nothing written to imsg");

    // A link inside the root to the file outside is refused too.
    let link = out.join("link.jpg");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let err = common::stderr(&send_media(&env, &link, &[]));
    assert!(err.contains("media is a symbolic link"), "{err}");
    assert!(env.send_requests().is_empty(), "nothing written to imsg");

    let sent = send_media(&env, &ok, &[]);
    assert_eq!(sent.status.code(), Some(0), "{}", common::stderr(&sent));
    assert_eq!(env.sends()[0]["file"], ok.display().to_string());
}

#[derive(Clone, Default)]
struct Quiet;

impl Host for Quiet {
    fn deliver(&self, _event: &str) -> Result<(), String> {
        Ok(())
    }
    fn log(&self, _record: &str) {}
}

/// The host's own roots, passed at start, bind a send exactly like `mediaLocalRoots`, and
/// the refusal is an `invalid_request`.
#[test]
fn the_host_roots_refuse_media_outside_with_invalid_request() {
    let env = SimEnv::new(json!({}), json!({}));
    let (out, ok, secret) = files(&env);
    let plugin = host::load(&common::plugin_library("imessage")).expect("libimessage loads");
    let client = plugin
        .instantiate(host::callbacks(Quiet))
        .expect("instance");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(env.gw.config_path()).unwrap()).unwrap();
    let ctx = StartContext {
        config,
        state_dir: env.path("state").display().to_string(),
        watch: false,
        log_level: Some("debug".into()),
        host: HostFeatures {
            media_local_roots: Some(vec![out.display().to_string()]),
            ..Default::default()
        },
    };
    client.start(&ctx).expect("start");
    let status = client.status(&StatusRequest::default()).expect("status");
    assert_eq!(
        status.accounts[0].settings["mediaLocalRoots"],
        json!([out.display().to_string()])
    );

    let request = |media: &Path| SendRequest {
        to: "chat_id:42".into(),
        text: Some("look".into()),
        media: vec![media.display().to_string()],
        ..Default::default()
    };
    let e = client.send(&request(&secret)).unwrap_err();
    assert_eq!(e.code, "invalid_request", "{e}");
    assert!(e.message.contains(&secret.display().to_string()), "{e}");
    assert!(e.message.contains(&out.display().to_string()), "{e}");
    assert!(env.send_requests().is_empty(), "not even the text was sent");

    let receipt = client.send(&request(&ok)).expect("inside the host's root");
    assert!(receipt.ok, "{receipt:?}");
    client.stop().expect("stop");
}

/// A stand-in Mac on the local disk: scp copies `host:path` locally and notes the modes it
/// produced; ssh runs its command locally. Returns the environment for `host-stub`.
fn fake_mac(env: &SimEnv) -> Vec<(&'static str, String)> {
    let scp = env.path("scp");
    script(
        &scp,
        &format!(
            "for last; do :; done\nsrc=$(eval echo \\${{$(($#-1))}})\ndst=\"${{last#bot@mac:}}\"\n\
             printf '%s\\n' \"$*\" >> '{argv}'\ncp -Rp \"$src\" \"$dst\" || exit 1\n\
             stat -c '%a' \"$dst\" \"$dst\"/* >> '{modes}'",
            argv = env.path("scp.argv").display(),
            modes = env.path("scp.modes").display(),
        ),
    );
    let ssh = env.path("ssh");
    script(
        &ssh,
        &format!(
            "printf '%s\\n' \"$*\" >> '{}'\nwhile [ \"$1\" != \"--\" ]; do shift; done\nshift 2\n\"$@\"",
            env.path("ssh.log").display()
        ),
    );
    vec![
        ("IMESSAGE_SCP", scp.display().to_string()),
        ("IMESSAGE_SSH", ssh.display().to_string()),
    ]
}

fn read(env: &SimEnv, name: &str) -> String {
    std::fs::read_to_string(env.path(name)).unwrap_or_default()
}

/// The remote file a `send` named, checked for the `/tmp/imsg-out-<16 hex>/<name>` form.
fn remote_folder(file: &str, name: &str) -> String {
    let dir = file
        .strip_suffix(&format!("/{name}"))
        .unwrap_or_else(|| panic!("{file} ends in /{name}"));
    let hex = dir
        .strip_prefix("/tmp/imsg-out-")
        .unwrap_or_else(|| panic!("{file}"));
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{file}"
    );
    dir.to_string()
}

#[test]
fn a_remote_upload_is_private_and_removed_after_the_answer() {
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"remoteHost": "bot@mac"}}}),
    );
    let photo = env.path("my photo.jpg");
    std::fs::write(&photo, b"jpeg bytes").unwrap();
    std::fs::set_permissions(&photo, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vars = fake_mac(&env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let out = send_media(&env, &photo, &vars);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let receipt: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(receipt["ok"], true, "{receipt}");
    // The simulator found the file when it sent it: the copy was there until the answer.
    let file = env.sends()[0]["file"].as_str().unwrap().to_string();
    let dir = remote_folder(&file, "my_photo.jpg");
    assert_eq!(
        read(&env, "scp.modes"),
        "700\n600\n",
        "folder 0700, copy 0600"
    );
    assert!(
        read(&env, "scp.argv")
            .starts_with("-r -p -o BatchMode=yes -o StrictHostKeyChecking=yes -- "),
        "{}",
        read(&env, "scp.argv")
    );
    assert!(
        read(&env, "ssh.log").ends_with(&format!("-- bot@mac rm -rf -- {dir}\n")),
        "{}",
        read(&env, "ssh.log")
    );
    assert!(!Path::new(&dir).exists(), "{dir} removed after the send");
    let staged: Vec<_> = std::fs::read_dir(env.path("state/imessage/media/default"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "no local copy left: {staged:?}");
}

#[test]
fn a_remote_upload_is_removed_when_the_send_fails() {
    let env = SimEnv::new(
        json!({"faults": {"bridge_unavailable": {"send": 1}}}),
        json!({"channels": {"imessage": {"remoteHost": "bot@mac"}}}),
    );
    let photo = env.path("a.jpg");
    std::fs::write(&photo, b"jpeg bytes").unwrap();
    let vars = fake_mac(&env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let out = send_media(&env, &photo, &vars);
    let receipt: Value = serde_json::from_str(&common::stdout(&out)).unwrap_or(Value::Null);
    assert_eq!(
        receipt["parts"][0]["outcome"],
        "failed",
        "{receipt} {}",
        common::stderr(&out)
    );
    let file = env.send_requests()[0]["params"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = remote_folder(&file, "a.jpg");
    assert!(read(&env, "ssh.log").contains(&format!("rm -rf -- {dir}")));
    assert!(
        !Path::new(&dir).exists(),
        "{dir} removed after the failed send"
    );
}
