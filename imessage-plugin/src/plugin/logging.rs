//! Forwards the plugin's tracing events to the host's log callback.
//!
//! The library has its own copy of `tracing`, so a subscriber the host installs never sees the
//! plugin's events. The plugin never installs a global subscriber either: it builds one
//! [`Dispatch`] per instance and sets it as the thread default on its runtime's threads and
//! around every host → plugin call.

use std::collections::BTreeMap;
use std::sync::Arc;

use plugin_abi::guard::HostHandle;
use plugin_abi::types::LogRecord;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::Registry;

struct Forward {
    host: Arc<HostHandle>,
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .insert(field.name().to_string(), Value::from(value));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .insert(field.name().to_string(), Value::from(format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        self.host.log(&LogRecord {
            level: level_name(*meta.level()).to_string(),
            target: meta.target().to_string(),
            message: fields.message,
            fields: fields.fields,
        });
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Parses a host log level; unknown or absent → `info`.
pub fn parse_level(level: Option<&str>) -> LevelFilter {
    match level.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
        Some("off") => LevelFilter::OFF,
        Some("error") => LevelFilter::ERROR,
        Some("warn") | Some("warning") => LevelFilter::WARN,
        Some("debug") => LevelFilter::DEBUG,
        Some("trace") => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

/// The dispatcher that forwards events at or above `max_level` to the host.
pub fn dispatch(host: Arc<HostHandle>, max_level: LevelFilter) -> Dispatch {
    Dispatch::new(Registry::default().with(max_level).with(Forward { host }))
}
