//! Part C transcripts (imsg-protocol.md §C1): parsing and comparison.

#![allow(dead_code)]

use serde_json::Value;

pub const TRANSCRIPTS: &str = include_str!("../../../conformance/transcripts.txt");
/// The transcripts of actions.md §11.
pub const ACTIONS_TRANSCRIPTS: &str = include_str!("../../../conformance/actions_transcripts.txt");

#[derive(Debug, Clone)]
pub enum Step {
    /// `> ` the client writes this line.
    Send(String),
    /// `<`, `<L`, `<S`: the next stdout line, on these profiles.
    Expect {
        line: String,
        lenient: bool,
        strict: bool,
    },
    /// `<*` lines: all arrive, in any order among themselves.
    Group(Vec<String>),
    /// `<!`: a non-JSON line, exact text.
    Text(String),
    /// `<S -`: strict writes nothing here.
    StrictNothing,
    /// `! action rest`.
    Action(String, String),
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub id: String,
    pub title: String,
    pub lenient: bool,
    pub strict: bool,
    pub steps: Vec<Step>,
}

pub fn parse_all() -> Vec<Transcript> {
    parse(TRANSCRIPTS)
}

/// actions.md §10 overrides the base transcripts in places: E6 and §3.9 in the
/// `initialize`/`status` answers (real imsg keeps `send` without a database; the method lists
/// gain `message.send_status` and the bridge actions), E7 in C39 (`messages.after` fills
/// `reactions` arrays always). Applied as the transcripts are read, so `transcripts.txt` stays
/// the spec's own text, checked line by line against it.
const ERRATA: &[(&str, &str, &str)] = &[
    (
        "C39",
        r#""text":"dinner at 7?","created_at":"2026-05-16T09:42:05.000Z","attachments":[],"reactions":[],"chat_identifier":"chat493817265","chat_guid":"iMessage;+;chat493817265","chat_name":"Family","participants":["+15551230001","+15551230002"],"is_group":true}"#,
        r#""text":"dinner at 7?","created_at":"2026-05-16T09:42:05.000Z","attachments":[],"reactions":[{"id":9005,"type":"love","emoji":"❤️","sender":"+15551230001","is_from_me":false,"created_at":"2026-05-16T09:43:30.000Z"}],"chat_identifier":"chat493817265","chat_guid":"iMessage;+;chat493817265","chat_name":"Family","participants":["+15551230001","+15551230002"],"is_group":true}"#,
    ),
    (
        "*",
        r#""supported_methods":["initialize","status","chats.list","messages.history","messages.after","watch.subscribe","watch.unsubscribe","send","typing","read","tapback"]"#,
        r#""supported_methods":["initialize","status","chats.list","messages.history","messages.after","watch.subscribe","watch.unsubscribe","message.send_status","send","typing","read","tapback","message.edit","message.unsend"]"#,
    ),
    (
        "C36",
        r#""methods":["initialize","status","watch.unsubscribe","typing","read"]"#,
        r#""methods":["initialize","status","watch.unsubscribe","send","typing","read"]"#,
    ),
    (
        "C38",
        r#""methods":["initialize","status","chats.list","messages.history","messages.after","watch.subscribe","watch.unsubscribe","send","typing","read"]"#,
        r#""methods":["initialize","status","chats.list","messages.history","messages.after","watch.subscribe","watch.unsubscribe","message.send_status","send","typing","read"]"#,
    ),
];

fn with_errata(transcript: &str, line: &str) -> String {
    ERRATA
        .iter()
        .filter(|(id, _, _)| *id == "*" || *id == transcript)
        .fold(line.to_string(), |l, (_, base, actual)| {
            l.replace(base, actual)
        })
}

pub fn parse(text: &str) -> Vec<Transcript> {
    let mut out: Vec<Transcript> = Vec::new();
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("== ") {
            let parts: Vec<&str> = head.split(" \u{b7} ").collect();
            let profiles = parts.last().copied().unwrap_or("both").trim();
            out.push(Transcript {
                id: parts[0].trim().to_string(),
                title: parts.get(1).copied().unwrap_or("").to_string(),
                lenient: profiles != "strict",
                strict: profiles != "lenient",
                steps: Vec::new(),
            });
            continue;
        }
        let Some(t) = out.last_mut() else { continue };
        let step = if let Some(rest) = line.strip_prefix("> ") {
            Step::Send(rest.to_string())
        } else if let Some(rest) = line.strip_prefix("<* ") {
            if let Some(Step::Group(g)) = t.steps.last_mut() {
                g.push(rest.to_string());
                continue;
            }
            Step::Group(vec![rest.to_string()])
        } else if line == "<S -" {
            Step::StrictNothing
        } else if let Some(rest) = line.strip_prefix("<L ") {
            Step::Expect {
                line: rest.into(),
                lenient: true,
                strict: false,
            }
        } else if let Some(rest) = line.strip_prefix("<S ") {
            Step::Expect {
                line: with_errata(&t.id, rest),
                lenient: false,
                strict: true,
            }
        } else if let Some(rest) = line.strip_prefix("< ") {
            Step::Expect {
                line: with_errata(&t.id, rest),
                lenient: true,
                strict: true,
            }
        } else if line == "<!" {
            Step::Text(String::new())
        } else if let Some(rest) = line.strip_prefix("<! ") {
            Step::Text(rest.to_string())
        } else if let Some(rest) = line.strip_prefix("! ") {
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            Step::Action(name.to_string(), arg.to_string())
        } else {
            continue;
        };
        t.steps.push(step);
    }
    out
}

/// Parsed-JSON comparison; an expected string ending in `…` matches any string with that
/// prefix.
pub fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) => match e.strip_suffix('\u{2026}') {
            Some(prefix) => a.starts_with(prefix),
            None => e == a,
        },
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av)))
        }
        _ => expected == actual,
    }
}

/// §C1 rule 3: on the strict profile, `both` transcripts' lines gain the strict members.
pub fn adjust_for_strict(mut v: Value) -> Value {
    if let Some(result) = v.get_mut("result").and_then(Value::as_object_mut) {
        if result.len() == 1 && result.contains_key("subscription") {
            result.insert("buffer_limit".into(), 256.into());
        }
        if result.get("ok") == Some(&Value::Bool(true)) {
            if let Some(guid) = result.get("guid").cloned() {
                result.insert("message_id".into(), guid);
            }
        }
    }
    if v.get("method").and_then(Value::as_str) == Some("message") {
        if let Some(message) = v
            .pointer_mut("/params/message")
            .and_then(Value::as_object_mut)
        {
            if let Some(id) = message.get("id").cloned() {
                message.insert("cursor".into(), id);
            }
        }
    }
    v
}
