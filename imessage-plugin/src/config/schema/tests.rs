//! The schema and the parser agree: every config the repository and the spec show validates;
//! each refused config is refused by the schema at the path the plugin's error names; the
//! string rules accept exactly what the parser accepts; the defaults are the parser's.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::config::parse;

/// The compiled schema.
fn compiled() -> &'static (boon::Schemas, boon::SchemaIndex) {
    static SCHEMA: OnceLock<(boon::Schemas, boon::SchemaIndex)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let url = "https://example.invalid/imessage-config.schema.json";
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource(url, schema())
            .expect("the schema is a JSON document");
        let mut schemas = boon::Schemas::new();
        let index = compiler
            .compile(url, &mut schemas)
            .unwrap_or_else(|e| panic!("the schema compiles as draft 2020-12: {e:#}"));
        (schemas, index)
    })
}

/// Where the schema refuses `section` (`channels.imessage`): the instance location of each
/// innermost error, as path segments.
fn schema_errors(section: &Value) -> Vec<Vec<String>> {
    let (schemas, index) = compiled();
    let Err(error) = schemas.validate(section, *index) else {
        return Vec::new();
    };
    let mut leaves = Vec::new();
    let mut stack = vec![&error];
    while let Some(e) = stack.pop() {
        if e.causes.is_empty() {
            let segments = e.instance_location.tokens.iter().map(|t| match t {
                boon::InstanceToken::Prop(p) => p.to_string(),
                boon::InstanceToken::Item(i) => i.to_string(),
            });
            leaves.push(segments.collect());
        }
        stack.extend(e.causes.iter());
    }
    leaves.sort();
    leaves.dedup();
    leaves
}

/// Fails unless the schema accepts `section`; used by the config tests on every config the
/// parser accepts.
pub(crate) fn assert_valid(section: &Value, what: &str) {
    let errors = schema_errors(section);
    assert!(
        errors.is_empty(),
        "{what}: the parser accepts it but the schema refuses it at {errors:?}: {section}"
    );
}

/// The segments of a plugin error path under `channels.imessage`
/// (`channels.imessage.groups["42"].requireMention` → `groups`, `42`, `requireMention`);
/// `None` for an error elsewhere.
fn plugin_path(error: &str) -> Option<Vec<String>> {
    let mut rest = error.strip_prefix("channels.imessage")?;
    let mut segments = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            segments.push(after[..end].to_string());
            rest = &after[end..];
        } else if let Some(quoted) = rest.strip_prefix('[').filter(|r| r.starts_with('"')) {
            // A JSON string: read with serde so its escapes come out right.
            let mut de = serde_json::Deserializer::from_str(quoted).into_iter::<String>();
            segments.push(de.next()?.ok()?);
            rest = quoted.get(de.byte_offset()..)?.strip_prefix(']')?;
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            segments.push(after[..end].to_string());
            rest = &after[end + 1..];
        } else {
            return rest.starts_with(": ").then_some(segments);
        }
    }
}

fn section(channel: Value) -> Value {
    json!({ "channels": { "imessage": channel } })
}

/// The refusals of a field-level rule: the plugin's error and the schema's name the same
/// field, and nothing else.
#[test]
fn each_refused_config_names_the_field_the_schema_names() {
    let cases = [
        // unknown keys, at every level
        (json!({"teleport": true}), "teleport"),
        (
            json!({"accounts": {"work": {"teleport": 1}}}),
            "accounts.work.teleport",
        ),
        (json!({"rateLimit": {"foo": 1}}), "rateLimit.foo"),
        (json!({"actions": {"fly": true}}), "actions.fly"),
        (json!({"catchup": {"later": 5}}), "catchup.later"),
        (json!({"groups": {"42": {"mute": true}}}), "groups.42.mute"),
        (
            json!({"accounts": {"work": {"accounts": {}}}}),
            "accounts.work.accounts",
        ),
        // wrong types
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"allowFrom": "+15550001111"}), "allowFrom"),
        (json!({"allowFrom": ["+15550001111", true]}), "allowFrom.1"),
        (json!({"mediaMaxMb": "16"}), "mediaMaxMb"),
        (json!({"rateLimit": 5}), "rateLimit"),
        (json!({"groups": {"*": true}}), "groups.*"),
        (
            json!({"accounts": {"work": {"includeAttachments": 1}}}),
            "accounts.work.includeAttachments",
        ),
        (json!({"streaming": "block"}), "streaming"),
        // enums
        (json!({"dmPolicy": "friends"}), "dmPolicy"),
        (
            json!({"accounts": {"work": {"chunkMode": "words"}}}),
            "accounts.work.chunkMode",
        ),
        (
            json!({"streaming": {"chunkMode": "paragraph"}}),
            "streaming.chunkMode",
        ),
        (json!({"trackedSends": "on"}), "trackedSends"),
        (
            json!({"reactionNotifications": "some"}),
            "reactionNotifications",
        ),
        // integer ranges
        (json!({"textChunkLimit": 10}), "textChunkLimit"),
        (json!({"mediaMaxMb": 1.5}), "mediaMaxMb"),
        (
            json!({"rateLimit": {"chatBurst": 0}}),
            "rateLimit.chatBurst",
        ),
        (
            json!({"catchup": {"maxAgeMinutes": 2000}}),
            "catchup.maxAgeMinutes",
        ),
        (
            json!({"accounts": {"work": {"sendTimeoutMs": 600_001}}}),
            "accounts.work.sendTimeoutMs",
        ),
        // string rules
        (json!({"region": "USA"}), "region"),
        (json!({"name": ""}), "name"),
        (json!({"cliPath": "imsg; rm -rf ~"}), "cliPath"),
        (json!({"dbPath": "a\nb"}), "dbPath"),
        (json!({"remoteHost": "-oProxyCommand=x"}), "remoteHost"),
        (json!({"responsePrefix": "x".repeat(65)}), "responsePrefix"),
        (
            json!({"attachmentRoots": ["/Users/*/Library", "/a/../b"]}),
            "attachmentRoots.1",
        ),
        (
            json!({"mediaLocalRoots": ["relative/dir"]}),
            "mediaLocalRoots.0",
        ),
    ];
    for (channel, want) in cases {
        let want: Vec<String> = want.split('.').map(str::to_string).collect();
        let errors = parse(&section(channel.clone())).expect_err("the plugin refuses it");
        let ours: Vec<Vec<String>> = errors
            .iter()
            .map(|e| plugin_path(e).unwrap_or_else(|| panic!("an error under the section: {e}")))
            .collect();
        assert_eq!(
            ours,
            vec![want.clone()],
            "the plugin's error for {channel}: {errors:?}"
        );
        assert_eq!(
            schema_errors(&channel),
            vec![want],
            "the schema's error for {channel}"
        );
    }
}

#[test]
fn plugin_paths_are_read_as_segments() {
    let path = |e: &str| plugin_path(e).map(|s| s.join("|"));
    assert_eq!(
        path("channels.imessage.groups[\"chat_guid:a]b\"].requireMention: x").as_deref(),
        Some("groups|chat_guid:a]b|requireMention")
    );
    assert_eq!(
        path("channels.imessage.accounts.work.allowFrom[3]: x").as_deref(),
        Some("accounts|work|allowFrom|3")
    );
    assert_eq!(path("session.dmScope: x"), None);
}

/// Every property default, nested objects included (`rateLimit.chatBurst`, …).
fn defaults(object: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (key, property) in object["properties"].as_object().into_iter().flatten() {
        if let Some(d) = property.get("default") {
            out.insert(key.clone(), d.clone());
        } else if property.get("properties").is_some() {
            let nested = defaults(property);
            if nested.as_object().is_some_and(|m| !m.is_empty()) {
                out.insert(key.clone(), nested);
            }
        }
    }
    Value::Object(out)
}

#[test]
fn the_schema_defaults_are_the_parsers() {
    let schema = schema();
    let written = defaults(&schema);
    // Enough keys to mean something: the booleans, integers, enums and nested objects.
    for key in [
        "enabled",
        "cliPath",
        "dmPolicy",
        "mediaMaxMb",
        "rateLimit",
        "catchup",
        "actions",
    ] {
        assert!(written.get(key).is_some(), "{key} has a default: {written}");
    }
    assert_eq!(written["rateLimit"]["chatPerMinute"], 20);
    let explicit = parse(&section(written.clone())).expect("the defaults load");
    let implicit = parse(&section(json!({}))).unwrap();
    assert_eq!(
        format!("{:?}", explicit.accounts),
        format!("{:?}", implicit.accounts),
        "writing every default changes nothing: {written}"
    );
    assert_eq!(
        explicit.channel_config_writes,
        implicit.channel_config_writes
    );
}

#[test]
fn every_key_is_described_and_typed() {
    let schema = schema();
    assert_eq!(schema["$schema"], DIALECT);
    let account = &schema["$defs"]["account"];
    for object in [&schema, account, &account["properties"]["rateLimit"]] {
        for (key, property) in object["properties"].as_object().unwrap() {
            let description = property["description"].as_str().unwrap_or("");
            assert!(
                !description.is_empty() && !description.contains('\n'),
                "{key}: one line of description"
            );
            let compat = property["deprecated"] == true;
            assert!(
                compat || property.get("type").is_some() || property.get("$ref").is_some(),
                "{key} has a type"
            );
        }
    }
    assert!(account["properties"].get("accounts").is_none());
    assert_eq!(schema["properties"]["historyLimit"]["deprecated"], true);
    assert_eq!(
        account["properties"]["rateLimit"]["properties"]["accountBurst"]["maximum"],
        100
    );
}

/// A config file: JSON5, or JSON.
fn read_config(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    json5::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loads `config` as the plugin does, then validates its section.
fn check_example(config: &Value, what: &str) {
    if let Err(errors) = parse(config) {
        panic!("{what}: the plugin refuses it: {errors:?}");
    }
    let channel = config["channels"]["imessage"].clone();
    assert_valid(&channel, what);
}

#[test]
fn the_example_configs_validate() {
    let example = workspace().join("examples/gateway.json5");
    let config = read_config(&example);
    check_example(&config, &example.display().to_string());
    // Its commented-out keys too, as a reader would enable them.
    let text = std::fs::read_to_string(&example).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("// ") {
            Some(code) if is_key_line(code) => code.to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config: Value = json5::from_str(&uncommented).expect("the uncommented example is JSON5");
    assert!(config["channels"]["imessage"]["accounts"]["work"].is_object());
    check_example(&config, "examples/gateway.json5 with its commented keys");
}

/// `key: value,` lines of a `channels.imessage` key (not prose, not other sections).
fn is_key_line(code: &str) -> bool {
    let key: String = code
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let ours = SECTION.field(&key).is_some() || CHANNEL_ONLY.contains(&key.as_str());
    ours && code[key.len()..].starts_with(": ") && code.trim_end().ends_with(',')
}

/// The configs in the spec's code blocks (the shared spec folder beside the repository, as
/// CI lays it out): every block that parses as JSON5 and has `channels.imessage`.
#[test]
fn the_spec_configs_validate() {
    let spec = workspace().join("../shared/spec");
    let Ok(entries) = std::fs::read_dir(&spec) else {
        eprintln!(
            "NOTE: {} is not here; the spec's configs were not checked",
            spec.display()
        );
        return;
    };
    let mut checked = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for block in text.split("```").skip(1).step_by(2) {
            let body = block.split_once('\n').map_or("", |(_, b)| b);
            let Ok(config) = json5::from_str::<Value>(body) else {
                continue;
            };
            if config["channels"]["imessage"].is_object() {
                check_example(&config, &format!("a config block of {}", path.display()));
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no config found in {}", spec.display());
}

/// Strings over the characters the rules care about.
fn tricky() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        'a', 'Z', '0', '9', '/', '\\', '.', '*', '-', '_', '+', '~', '@', '[', ']', ':', '%', ' ',
        '\t', '\u{a0}', '\u{85}', '\n', '\r', '\u{2028}', '\u{feff}', ';', '$', '\'', '"', '`',
        '&', '|', '<', '\0', 'é',
    ]);
    prop::collection::vec(chars, 0..10).prop_map(|c| c.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// For each string rule, the schema's pattern accepts exactly what the parser does.
    #[test]
    fn the_string_rules_agree(value in tricky(), field in 0usize..8) {
        let channel = match field {
            0 => json!({"name": value}),
            1 => json!({"cliPath": value}),
            2 => json!({"dbPath": value}),
            3 => json!({"remoteHost": value}),
            4 => json!({"region": value}),
            5 => json!({"responsePrefix": value}),
            6 => json!({"attachmentRoots": [value]}),
            _ => json!({"mediaLocalRoots": [value]}),
        };
        let plugin_accepts = parse(&section(channel.clone())).is_ok();
        let schema_accepts = schema_errors(&channel).is_empty();
        prop_assert_eq!(plugin_accepts, schema_accepts, "{}", channel);
    }
}
