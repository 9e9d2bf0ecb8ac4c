//! The scenario file (imsg-protocol.md §B9): JSON5, every key optional, defaults reproduce
//! fixture F (§C2).

use serde_json::{json, Map, Value};

/// Fixture F's chats and rows, as scenario JSON.
pub fn fixture_f() -> Value {
    json!({
        "profile": "lenient",
        "version": null,
        "platform": "macos",
        "self_handle": "+15559990000",
        "home": "/Users/me",
        "db_path": "/Users/me/Library/Messages/chat.db",
        "clock": {"start": "2026-05-16T09:50:00.000Z", "mode": "frozen"},
        "contacts": [],
        "files": ["/Users/me/Pictures/map.png"],
        "bridge": "absent",
        "send": {"mode": "ok", "latency_ms": 0},
        "watch": {"fallback_poll_ms": 5000, "batch_limit": 100, "join_hold_ms": 1000},
        "methods": null,
        "chats": [
            {"id": 1, "identifier": "chat493817265", "guid": "iMessage;+;chat493817265", "name": "Family",
             "service": "iMessage", "participants": ["+15551230001", "+15551230002"]},
            {"id": 2, "identifier": "+15551230001", "guid": "iMessage;-;+15551230001", "service": "iMessage",
             "participants": ["+15551230001"]},
            {"id": 3, "identifier": "+15551230003", "guid": "SMS;-;+15551230003", "service": "SMS",
             "participants": ["+15551230003"]}
        ],
        "messages": [
            {"id": 9001, "chat_id": 2, "handle": "+15551230001", "text": "hey, are you around?", "date": "2026-05-16T09:40:00.000Z"},
            {"id": 9002, "chat_id": 2, "handle": "+15551230001", "from_me": true, "text": "yes, what's up?", "date": "2026-05-16T09:41:30.250Z"},
            {"id": 9003, "chat_id": 1, "handle": "+15551230002", "text": "dinner at 7?", "date": "2026-05-16T09:42:05.000Z"},
            {"id": 9004, "chat_id": 1, "handle": "+15551230001", "text": "works for me", "date": "2026-05-16T09:43:10.000Z",
             "thread_originator_guid": "0A1B2C3D-0000-4000-8000-000000009003"},
            {"id": 9005, "chat_id": 1, "handle": "+15551230001", "text": "Loved \u{201c}dinner at 7?\u{201d}", "date": "2026-05-16T09:43:30.000Z",
             "reaction": {"type": "love", "target_guid": "0A1B2C3D-0000-4000-8000-000000009003", "remove": false}},
            {"id": 9006, "chat_id": 2, "handle": "+15551230001", "text": "\u{fffc}", "date": "2026-05-16T09:44:00.000Z",
             "attachments": [{"filename": "~/Library/Messages/Attachments/4f/15/7E3F9B20-1111-4222-8333-944455556666/IMG_0042.HEIC",
                              "transfer_name": "IMG_0042.HEIC", "uti": "public.heic", "mime_type": "image/heic",
                              "total_bytes": 1843200, "is_sticker": false, "missing": false}]},
            {"id": 9007, "chat_id": 3, "handle": "+15551230003", "text": "Your code is 123456", "date": "2026-05-16T09:45:00.000Z"}
        ],
        "events": [],
        "faults": {},
        "control": {}
    })
}

/// Shallow merge: every top-level key of `over` replaces F's; `faults`, `send`, `watch`,
/// `clock` and `control` merge one level deeper so a scenario can set one knob.
pub fn merge(base: &mut Value, over: &Value) {
    let (Some(base), Some(over)) = (base.as_object_mut(), over.as_object()) else {
        return;
    };
    for (key, value) in over {
        let nested = matches!(
            key.as_str(),
            "faults" | "send" | "watch" | "clock" | "control"
        );
        match (nested, base.get_mut(key), value) {
            (true, Some(Value::Object(existing)), Value::Object(new)) => {
                for (k, v) in new {
                    existing.insert(k.clone(), v.clone());
                }
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Loads a JSON5 scenario file; errors name the file (and line and column for syntax).
pub fn load(path: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let value: Value = json5::from_str(&text).map_err(|e| match e {
        json5::Error::Message { msg, location } => {
            let reason = msg
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or("invalid JSON5")
                .to_string();
            match location {
                Some(l) => format!("{path}:{}:{}: {reason}", l.line, l.column),
                None => format!("{path}: {reason}"),
            }
        }
    })?;
    if !value.is_object() {
        return Err(format!("{path}: a scenario must be an object"));
    }
    Ok(value)
}

pub fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub fn get_obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}
