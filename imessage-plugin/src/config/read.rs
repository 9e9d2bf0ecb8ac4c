//! Reading JSON values with `<path>: <reason>` diagnostics (channel-behaviour.md §1.1).

use serde_json::{Map, Value};

/// Collected errors and warnings of one config load.
#[derive(Debug, Default)]
pub struct Diag {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Diag {
    pub fn error(&mut self, path: &str, reason: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {reason}"));
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }
}

/// `a.b` for plain identifiers, `a["k"]` otherwise.
pub fn field(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    } else {
        bracket(path, key)
    }
}

pub fn bracket(path: &str, key: &str) -> String {
    format!("{path}[{}]", Value::String(key.to_string()))
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `null` reads as absent everywhere.
pub fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

pub fn object<'a>(value: &'a Value, path: &str, diag: &mut Diag) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => {
            diag.error(path, "expected an object");
            None
        }
    }
}

pub fn array<'a>(value: &'a Value, path: &str, diag: &mut Diag) -> Option<&'a Vec<Value>> {
    match value {
        Value::Array(items) => Some(items),
        _ => {
            diag.error(path, "expected an array");
            None
        }
    }
}

pub fn boolean(value: &Value, path: &str, diag: &mut Diag) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        _ => {
            diag.error(path, "expected true or false");
            None
        }
    }
}

pub fn string<'a>(value: &'a Value, path: &str, diag: &mut Diag) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        _ => {
            diag.error(path, "expected a string");
            None
        }
    }
}

/// An integer, whether JSON5 produced it as an integer or as a float without fraction.
pub fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

pub fn integer_in(value: &Value, path: &str, lo: i64, hi: i64, diag: &mut Diag) -> Option<i64> {
    match as_integer(value) {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        _ => {
            diag.error(path, format!("must be an integer from {lo} to {hi}"));
            None
        }
    }
}

/// One of `allowed`, exactly; any other value (or type) gets `reason`.
pub fn one_of(
    value: &Value,
    path: &str,
    allowed: &[&str],
    reason: &str,
    diag: &mut Diag,
) -> Option<String> {
    match value.as_str() {
        Some(s) if allowed.contains(&s) => Some(s.to_string()),
        _ => {
            diag.error(path, reason);
            None
        }
    }
}

/// `must be one of "a", "b", "c"`, or `must be "a" or "b"` for two.
pub fn one_of_reason(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    match quoted.as_slice() {
        [a, b] => format!("must be {a} or {b}"),
        _ => format!("must be one of {}", quoted.join(", ")),
    }
}

/// Follows `keys` through nested objects; `None` when any step is absent or not an object.
pub fn lookup<'a>(root: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let mut at = root;
    for key in keys {
        at = present(at.as_object()?.get(*key))?;
    }
    Some(at)
}
