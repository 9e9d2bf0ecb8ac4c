//! The JSON Schema (draft 2020-12) of `channels.imessage` (host-protocol.md §5), generated
//! from the field tables the parser reads with ([`super::section::SECTION`] and the nested
//! ones), so a key, type, bound, enum name or default cannot differ between the two.
//!
//! `null` reads as absent everywhere, so every key also takes `null`, and a key the plugin
//! does not know is refused unless it is `null`: `additionalProperties` is `{"type":"null"}`
//! rather than `false`, which also makes a validator name the unknown key itself (the path
//! the plugin's `unknown field` error names). Keys kept for compatibility take any value and
//! are marked `deprecated`.

use serde_json::{json, Map, Value};

use super::fields::{Field, Kind, Table};
use super::section::{CHANNEL_ONLY, SECTION};

pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The schema of the whole `channels.imessage` section, accounts included.
pub fn schema() -> Value {
    let mut channel = object(&SECTION);
    let account = channel.clone();
    if let Some(properties) = channel["properties"].as_object_mut() {
        for key in CHANNEL_ONLY {
            properties.insert((*key).to_string(), channel_only(key));
        }
    }
    let mut root = json!({
        "$schema": DIALECT,
        "title": "channels.imessage",
        "description": "The iMessage channel: settings of every account, and the accounts. An account's key replaces the channel's value wholesale (lists and maps too).",
    });
    merge(&mut root, nullable(channel));
    root["$defs"] = json!({ "account": nullable(account) });
    root["$defs"]["account"]["description"] =
        json!("One account: any key of channels.imessage except accounts and defaultAccount.");
    root
}

fn channel_only(key: &str) -> Value {
    match key {
        "accounts" => json!({
            "type": ["object", "null"],
            "description": "The accounts by id (trimmed, lower-cased: 1-64 of a-z, 0-9, _ and -); without it, one account \"default\" uses this section.",
            "additionalProperties": {"$ref": "#/$defs/account"},
        }),
        _ => json!({
            "type": ["string", "null"],
            "description": "The account used when a request names none (default: \"default\" when it exists, else the first id in order); must name a key of accounts.",
        }),
    }
}

/// The schema of one config object: its fields, its compatibility keys, and what happens to
/// any other key.
pub fn object<T>(table: &Table<T>) -> Value {
    let mut properties = Map::new();
    for field in table.fields {
        properties.insert(field.name.to_string(), property(field));
    }
    for key in table.compat {
        properties.insert((*key).to_string(), compat());
    }
    let others = if table.open {
        compat()
    } else {
        json!({"type": "null", "description": "Unknown keys are refused (null reads as absent)."})
    };
    json!({"type": "object", "properties": properties, "additionalProperties": others})
}

fn compat() -> Value {
    json!({
        "description": "Accepted for compatibility with OpenClaw configs; no effect in this plugin (a warning at load).",
        "deprecated": true,
    })
}

fn property<T>(field: &Field<T>) -> Value {
    let mut schema = match &field.kind {
        Kind::Bool { default, .. } => with_default(json!({"type": "boolean"}), default),
        Kind::Int {
            min, max, default, ..
        } => with_default(
            json!({"type": "integer", "minimum": min, "maximum": max}),
            default,
        ),
        Kind::Enum { names, default, .. } => {
            with_default(json!({"type": "string", "enum": names}), default)
        }
        Kind::Custom { schema, .. } => schema(),
    };
    schema["description"] = json!(field.doc);
    nullable(schema)
}

fn with_default<D: serde::Serialize>(mut schema: Value, default: &Option<D>) -> Value {
    if let Some(d) = default {
        schema["default"] = json!(d);
    }
    schema
}

/// `schema` that also takes `null` (absent).
fn nullable(mut schema: Value) -> Value {
    if let Some(Value::String(t)) = schema.get("type") {
        schema["type"] = json!([t, "null"]);
    }
    if let Some(Value::Array(names)) = schema.get_mut("enum") {
        names.push(Value::Null);
    }
    schema
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

#[cfg(test)]
pub(crate) mod tests;
