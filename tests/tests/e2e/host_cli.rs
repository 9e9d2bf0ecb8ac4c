//! host-stub's command-line contract (spec/host-stub-cli.md) with real plugin libraries.

use crate::common;

use common::Gateway;
use serde_json::Value;

#[test]
fn plugins_list_reports_plugins_and_foreign_libraries() {
    let gw = Gateway::new(&["imessage"]);
    // An unrelated shared library (a copy of one the system ships) and a non-ELF file.
    let foreign = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .copied();
    if let Some(src) = foreign {
        std::fs::copy(src, gw.path().join("plugins/libz.so")).unwrap();
    }
    std::fs::write(gw.path().join("plugins/libnotes.so"), "not a library").unwrap();
    gw.write_config("{}");

    let out = gw.run(&["plugins", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let rows: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    let find = |name: &str| {
        rows.iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {rows:?}"))
    };
    let imessage = find("libimessage.so");
    assert_eq!(imessage["loaded"], true);
    assert_eq!(imessage["id"], "imessage");
    assert_eq!(imessage["abiVersion"], plugin_abi::ABI_VERSION);
    assert!(imessage["version"].is_string());
    assert_eq!(imessage["error"], Value::Null);

    let notes = find("libnotes.so");
    assert_eq!(notes["loaded"], false);
    assert!(notes["error"]
        .as_str()
        .unwrap()
        .contains("cannot be opened"));
    if foreign.is_some() {
        let z = find("libz.so");
        assert_eq!(z["loaded"], false);
        assert_eq!(
            z["error"],
            "not a channel plugin (no abi_stable root module)"
        );
        assert_eq!(z["id"], Value::Null);
    }
}

#[test]
fn json5_syntax_error_names_file_line_and_column() {
    let gw = Gateway::new(&["imessage"]);
    gw.write_config("{\n  // comment\n  channels: { imessage: { dmPolicy: 'pairing', } },\n  session: { dmScope: },\n}\n");
    let out = gw.run(&["gateway"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    let want = format!("{}:4:", gw.config_path().display());
    assert!(err.contains(&want), "want {want} in {err}");
}

#[test]
fn bad_config_value_exits_2_naming_the_field_and_allowed_values() {
    let gw = Gateway::new(&["imessage"]);
    gw.write_config("{ channels: { imessage: { dmPolicy: \"sometimes\" } } }");
    let out = gw.run(&["gateway"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("channels.imessage.dmPolicy"), "{err}");
    assert!(
        err.contains("\"pairing\", \"allowlist\", \"open\", \"disabled\""),
        "{err}"
    );
    assert!(
        common::stdout(&out).is_empty(),
        "stdout carries only machine output"
    );
}

#[test]
fn panicking_plugin_is_reported_not_fatal() {
    let gw = Gateway::new(&["fixture"]);
    gw.write_config("{ channels: { fixture: {} } }");
    let out = gw.run(&[
        "message",
        "send",
        "--channel",
        "fixture",
        "--target",
        "x",
        "--text",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1), "an error exit, not a crash");
    let err = common::stderr(&out);
    assert!(err.contains("plugin panicked in send"), "{err}");
    // The stub still works with the same library afterwards.
    let status = gw.run(&["channels", "status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", common::stderr(&status));
}

#[test]
fn config_schema_prints_the_plugins_schema() {
    let gw = Gateway::new(&["imessage", "fixture"]);
    // An empty config: the schema needs no channel settings, and nothing is started.
    gw.write_config("{}");
    let out = gw.run(&["config", "schema"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let printed: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(printed, imessage::config::schema::schema());
    assert_eq!(printed["properties"]["dmPolicy"]["default"], "pairing");

    // A plugin that does not list config.schema has none: said, exit 1.
    let out = gw.run(&["config", "schema", "--channel", "fixture"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = common::stderr(&out);
    assert!(stderr.contains("has no config schema"), "{stderr}");
}

/// The OpenClaw package's `channelConfigs.imessage.schema` is the library's generated schema,
/// committed (OpenClaw reads the manifest before any code runs): it may not drift. Regenerate:
/// `host-stub --plugins target/debug config schema` into that key.
#[test]
fn the_openclaw_manifest_carries_the_generated_schema() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/openclaw-channel/openclaw.plugin.json");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        manifest["channelConfigs"]["imessage"]["schema"],
        imessage::config::schema::schema(),
        "{} is out of date: regenerate its channelConfigs.imessage.schema with `host-stub config schema`",
        path.display()
    );
}
