//! Parameter decoding per profile (imsg-protocol.md §B3): lenient coercion that never fails
//! on type, or strict decoding with exact types, allow-lists and alias clashes.

use serde_json::{Map, Value};

pub struct Params<'a> {
    pub map: &'a Map<String, Value>,
    pub strict: bool,
}

pub type Check<T> = Result<T, String>;

impl<'a> Params<'a> {
    pub fn new(map: &'a Map<String, Value>, strict: bool) -> Self {
        Params { map, strict }
    }

    /// Strict: the alphabetically first key outside `allowed` is refused.
    pub fn allow(&self, method: &str, allowed: &[&str]) -> Check<()> {
        if !self.strict {
            return Ok(());
        }
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(k) => Err(format!("unknown {method} param: {k}")),
            None => Ok(()),
        }
    }

    fn raw(&self, key: &str) -> Check<Option<&'a Value>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) if self.strict => Err(format!("{key} must not be null")),
            Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(v)),
        }
    }

    /// The value of `a`, or of its alias `b` when `a` is absent; strict refuses both.
    pub fn pick<'k>(&self, a: &'k str, b: &'k str) -> Check<&'k str> {
        let has = |k: &str| self.map.get(k).is_some_and(|v| !v.is_null() || self.strict);
        if self.strict && has(a) && has(b) {
            return Err(format!("use only one of {a}, {b}"));
        }
        Ok(if self.map.contains_key(a) || !self.map.contains_key(b) {
            a
        } else {
            b
        })
    }

    pub fn string(&self, key: &str) -> Check<Option<String>> {
        let Some(v) = self.raw(key)? else {
            return Ok(None);
        };
        match v {
            Value::String(s) => Ok(Some(s.clone())),
            _ if self.strict => Err(format!("{key} must be a string")),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(if *b { "1" } else { "0" }.to_string())),
            _ => Ok(None),
        }
    }

    pub fn int(&self, key: &str) -> Check<Option<i64>> {
        let Some(v) = self.raw(key)? else {
            return Ok(None);
        };
        if self.strict {
            return match v.as_i64() {
                Some(n) => Ok(Some(n)),
                None => Err(format!("{key} must be an integer")),
            };
        }
        Ok(lenient_int(v))
    }

    pub fn bool(&self, key: &str) -> Check<Option<bool>> {
        let Some(v) = self.raw(key)? else {
            return Ok(None);
        };
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            _ if self.strict => Err(format!("{key} must be a boolean")),
            Value::Number(n) => Ok(Some(n.as_f64().unwrap_or(0.0) != 0.0)),
            Value::String(s) if s == "true" => Ok(Some(true)),
            Value::String(s) if s == "false" => Ok(Some(false)),
            _ => Ok(None),
        }
    }

    pub fn strings(&self, key: &str) -> Check<Vec<String>> {
        let Some(v) = self.raw(key)? else {
            return Ok(Vec::new());
        };
        match v {
            Value::Array(items) => {
                if self.strict && !items.iter().all(Value::is_string) {
                    return Err(format!("{key} must be an array of strings"));
                }
                Ok(items
                    .iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect())
            }
            _ if self.strict => Err(format!("{key} must be an array of strings")),
            Value::String(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()),
            _ => Ok(Vec::new()),
        }
    }
}

pub fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(*b as i64),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}
