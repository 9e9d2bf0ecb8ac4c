//! A config object as one table of its fields. The parser dispatches on the table (and
//! refuses keys it does not list) and the JSON Schema of `config.schema` is generated from the
//! same table, so the two cannot disagree on a key, a type, a bound or an enum name.

use serde_json::{Map, Value};

use super::read::{self, Diag};

/// What a field holds: how the parser reads it and what the schema says about it.
pub enum Kind<T: 'static> {
    Bool {
        default: Option<bool>,
        set: fn(&mut T, bool),
    },
    /// An integer from `min` to `max`, both included.
    Int {
        min: i64,
        max: i64,
        default: Option<i64>,
        set: fn(&mut T, i64),
    },
    /// One of `names`, exactly.
    Enum {
        names: &'static [&'static str],
        default: Option<&'static str>,
        set: fn(&mut T, String),
    },
    /// A value with rules of its own: its reader, and its schema (with its default, if any).
    Custom {
        schema: fn() -> Value,
        read: fn(&Value, &str, &mut Diag, &mut T),
    },
}

/// One key of a config object.
pub struct Field<T: 'static> {
    pub name: &'static str,
    /// One line for a person (the schema's `description`).
    pub doc: &'static str,
    pub kind: Kind<T>,
}

/// The keys of one config object.
pub struct Table<T: 'static> {
    pub fields: &'static [Field<T>],
    /// Keys from the reference system's configs: any value, a warning, no effect.
    pub compat: &'static [&'static str],
    /// Every key the table does not list is a compatibility key (`streaming`).
    pub open: bool,
}

impl<T> Field<T> {
    fn read(&self, value: &Value, at: &str, diag: &mut Diag, target: &mut T) {
        match &self.kind {
            Kind::Bool { set, .. } => {
                if let Some(b) = read::boolean(value, at, diag) {
                    set(target, b);
                }
            }
            Kind::Int { min, max, set, .. } => {
                if let Some(n) = read::integer_in(value, at, *min, *max, diag) {
                    set(target, n);
                }
            }
            Kind::Enum { names, set, .. } => {
                if let Some(s) = read::one_of(value, at, names, &read::one_of_reason(names), diag) {
                    set(target, s);
                }
            }
            Kind::Custom { read: custom, .. } => custom(value, at, diag, target),
        }
    }
}

/// The warning for a key that is accepted and ignored.
pub fn compat_warning(path: &str) -> String {
    format!("{path} is accepted for compatibility but has no effect in this plugin")
}

impl<T> Table<T> {
    pub fn field(&self, name: &str) -> Option<&Field<T>> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Reads every key of `map` (at `at`) into `target`. `null` reads as absent. A key the
    /// table does not know goes to `reserved` first (keys the caller reads itself); when that
    /// declines it, the key is `unknown field`.
    pub fn read_into(
        &self,
        map: &Map<String, Value>,
        at: &str,
        diag: &mut Diag,
        target: &mut T,
        mut reserved: impl FnMut(&str, &str, &mut Diag) -> bool,
    ) {
        for (key, value) in map {
            let path = read::field(at, key);
            if value.is_null() {
                continue;
            }
            match self.field(key) {
                Some(field) => field.read(value, &path, diag, target),
                None if reserved(key, &path, diag) => {}
                None if self.open || self.compat.contains(&key.as_str()) => {
                    diag.warn(compat_warning(&path))
                }
                None => diag.error(&path, "unknown field"),
            }
        }
    }

    /// A nested object: `None` (and an error) when `value` is not an object.
    pub fn read_object(&self, value: &Value, at: &str, diag: &mut Diag) -> Option<T>
    where
        T: Default,
    {
        let map = read::object(value, at, diag)?;
        let mut target = T::default();
        self.read_into(map, at, diag, &mut target, |_, _, _| false);
        Some(target)
    }
}
