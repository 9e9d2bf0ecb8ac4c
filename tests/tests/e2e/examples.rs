//! The shipped examples stay true: the commented config is accepted by the plugin as it is,
//! and the demo scenario loads in the simulator.

use crate::common;

use std::path::Path;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

#[test]
fn the_example_gateway_config_is_valid() {
    let text = std::fs::read_to_string(examples().join("gateway.json5")).unwrap();
    let config: serde_json::Value = json5::from_str(&text).expect("valid JSON5");
    let parsed = imessage::config::parse(&config).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(parsed.accounts.len(), 1);
    assert_eq!(parsed.accounts[0].allow_from.len(), 1);
}

#[test]
fn the_demo_scenario_loads_in_the_simulator() {
    let out = std::process::Command::new(common::imsg_sim())
        .args(["rpc", "--scenario"])
        .arg(examples().join("demo/scenario.json5"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_ssh_wrapper_example_names_its_host() {
    let text = std::fs::read_to_string(examples().join("imsg-ssh")).unwrap();
    assert_eq!(
        imessage::remote::detect_in(&text),
        imessage::remote::Detection::Host("bot@mac-mini.tailnet-1234.ts.net".into())
    );
}
