//! A panic hook that keeps a panic's message out of the logs (issue 21 item 6).
//!
//! The default hook prints `thread 'x' panicked at <file:line>: <message>` to stderr, and the
//! message may quote what it choked on: a message's text, a handle, a file name. For a panic
//! in the plugin's code, this hook reports the location only (at error level through the
//! plugin's log when its dispatcher is the thread's default, else on stderr) and the message
//! at debug level only. A plugin is a guest in the host's process, so the host's own panics
//! keep the hook that was there before: it is taken once and called for every other panic.
//! The catches (`supervise`, the FFI guard) still turn the panic into an error afterwards.

use std::cell::Cell;
use std::panic::PanicHookInfo;
use std::sync::Once;

/// Every thread the plugin starts has a name with this prefix (the runtime's workers and
/// blocking threads, the cursor writer).
pub const THREAD_PREFIX: &str = "imessage";

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

thread_local! {
    /// How deep this thread is in calls from the host into the plugin.
    static IN_PLUGIN: Cell<u32> = const { Cell::new(0) };
}

/// Installs the hook, once per process, chained to the hook that was there before.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| on_panic(&previous, info)));
    });
}

/// Runs `f` (a host call into the plugin, on a host thread) with this thread's panics counted
/// as the plugin's.
pub fn in_plugin<T>(f: impl FnOnce() -> T) -> T {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_PLUGIN.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    IN_PLUGIN.with(|d| d.set(d.get().saturating_add(1)));
    let _leave = Leave;
    f()
}

/// Whether a panic on a thread named `name` (with `depth` host calls into the plugin under
/// way on it) is the plugin's.
pub fn is_plugin_thread(name: Option<&str>, depth: u32) -> bool {
    depth > 0 || name.is_some_and(|n| n.starts_with(THREAD_PREFIX))
}

fn on_panic(previous: &Hook, info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let depth = IN_PLUGIN.try_with(Cell::get).unwrap_or(0);
    if !is_plugin_thread(thread.name(), depth) {
        return previous(info);
    }
    let name = thread.name().unwrap_or("unnamed");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "an unknown location".into());
    let logged = tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>());
    if logged {
        tracing::error!(
            thread = name,
            "plugin thread panicked at {location}; its message is logged at debug level"
        );
        let payload = plugin_abi::guard::panic_text(info.payload());
        tracing::debug!(thread = name, "panic message: {payload}");
    } else {
        // No log to write to: stderr, as the default hook does, without the message.
        eprintln!("imessage plugin: thread '{name}' panicked at {location}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_threads_are_told_apart_by_name_or_a_host_call_under_way() {
        assert!(is_plugin_thread(Some("imessage-plugin"), 0));
        assert!(is_plugin_thread(Some("imessage-cursor"), 0));
        assert!(!is_plugin_thread(Some("main"), 0));
        assert!(!is_plugin_thread(None, 0));
        assert!(is_plugin_thread(Some("main"), 1));
    }

    #[test]
    fn the_depth_counts_nested_host_calls_and_unwinds() {
        let depth = || IN_PLUGIN.with(Cell::get);
        in_plugin(|| {
            assert_eq!(depth(), 1);
            in_plugin(|| assert_eq!(depth(), 2));
            let caught = std::panic::catch_unwind(|| in_plugin(|| panic!("inside")));
            assert!(caught.is_err());
            assert_eq!(depth(), 1, "a panic leaves the count as it was");
        });
        assert_eq!(depth(), 0);
    }

    /// Collects (level, message) of every event.
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            if let Ok(mut events) = self.0.lock() {
                events.push((*event.metadata().level(), m.0));
            }
        }
    }

    #[test]
    fn a_plugin_thread_panic_logs_its_location_and_keeps_the_message_at_debug() {
        use tracing_subscriber::layer::SubscriberExt;
        install();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::Registry::default().with(Capture(events.clone())),
        );
        let joined = std::thread::Builder::new()
            .name("imessage-test".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    panic!("secret text from +15550001111");
                })
            })
            .expect("spawn")
            .join();
        assert!(joined.is_err());
        let events = events.lock().expect("events").clone();
        let above_debug: Vec<&String> = events
            .iter()
            .filter(|(level, _)| *level <= tracing::Level::INFO)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(above_debug.len(), 1, "{events:?}");
        assert!(above_debug[0].contains("panic_hook.rs:"), "{events:?}");
        assert!(!above_debug[0].contains("+1555"), "{events:?}");
        assert!(events
            .iter()
            .any(|(level, m)| *level == tracing::Level::DEBUG && m.contains("secret text")));
    }
}
