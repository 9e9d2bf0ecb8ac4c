//! One plugin instance behind the protocol: posts in, messages out, `stop` ending with
//! `plugin.closed`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::outbox::{host_error, Outbox};
use super::pool::Pool;
use super::router::dispatch;
use super::rpc::{self, Incoming, RpcError};
use crate::guard::panic_text;
use crate::host::{self, Host};
use crate::types::PluginError;
use crate::{HostBox, PluginBox};

/// How long `stop` waits for requests still running (a send) before `plugin.closed`, and how
/// long dropping an instance waits for its threads.
const STOP_BOUND: Duration = Duration::from_secs(15);

/// `chp_new`'s options (spec §2), all optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Options {
    /// How long a `deliver` or `host.request` waits for the host's response before it counts
    /// as refused.
    pub ack_timeout_ms: u64,
    /// The most host requests queued or running at once (more: `post` answers -3), and the
    /// most `log` notifications kept for a host that does not drain them.
    pub max_queued: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ack_timeout_ms: 30_000,
            max_queued: 10_000,
        }
    }
}

impl Options {
    /// Parses the options JSON (`None`, empty or `null`: the defaults). Errors name the field.
    pub fn parse(text: Option<&str>) -> Result<Options, PluginError> {
        let text = text
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "null");
        let Some(text) = text else {
            return Ok(Options::default());
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let options: Options = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| PluginError::invalid_request(format!("options: {e}")))?;
        if options.ack_timeout_ms == 0 {
            return Err(PluginError::invalid_request(
                "options: ackTimeoutMs: must be at least 1",
            ));
        }
        if options.max_queued == 0 {
            return Err(PluginError::invalid_request(
                "options: maxQueued: must be at least 1",
            ));
        }
        Ok(options)
    }
}

/// Why [`Instance::post`] did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    /// `stop` ran (`-1`). Responses are still taken while it runs.
    Closed,
    /// `maxQueued` requests are queued or running, or the host is not draining (`-3`).
    TooMany,
}

impl PostError {
    /// The `chp_post` return code.
    pub fn code(self) -> i32 {
        match self {
            PostError::Closed => -1,
            PostError::TooMany => -3,
        }
    }
}

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const CLOSED: u8 = 2;

struct Core {
    plugin: PluginBox,
    out: Arc<Outbox>,
    options: Options,
    phase: AtomicU8,
    /// Host requests queued or running; `plugin.closed` waits until it is 0.
    busy: Mutex<usize>,
    idle: Condvar,
    call_ids: AtomicU64,
}

/// A channel plugin speaking the host protocol (spec §1): the host posts JSON-RPC messages
/// and pulls the plugin's. Every method may be called from any thread at once; dropping it
/// stops the plugin (bounded) and joins its threads.
pub struct Instance {
    core: Arc<Core>,
    pool: Pool,
}

/// The callbacks the plugin gets: every one turns into a message on the queue.
struct QueueHost(Arc<Outbox>);

impl Host for QueueHost {
    fn deliver(&self, event: &str) -> Result<(), String> {
        let params = RawValue::from_string(event.to_string())
            .map_err(|e| format!("the event is not JSON: {e}"))?;
        self.0
            .request("deliver", &params)
            .map(|_| ())
            .map_err(|e| host_error(&e).message)
    }

    fn log(&self, record: &str) {
        self.0.push_log(record);
    }

    fn request(&self, method: &str, payload: &str) -> Result<String, PluginError> {
        let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let params = json!({"method": method, "payload": payload}).to_string();
        let params = RawValue::from_string(params)
            .map_err(|e| PluginError::internal(format!("encoding host.request: {e}")))?;
        self.0
            .request("host.request", &params)
            .map_err(|e| host_error(&e))
    }
}

impl Instance {
    /// Creates the plugin through `make`, which gets the host callbacks this instance answers
    /// with: `|cb| loaded.instantiate(cb).map(|c| c.0)` in a host that loaded the library,
    /// `|cb| guard::new_ffi(cb, make).into_result()…` inside the plugin's own library.
    pub fn new(
        options: Options,
        make: impl FnOnce(HostBox) -> Result<PluginBox, PluginError>,
    ) -> Result<Instance, PluginError> {
        let out = Arc::new(Outbox::new(
            options.max_queued,
            Duration::from_millis(options.ack_timeout_ms),
        ));
        let callbacks = host::callbacks(QueueHost(out.clone()));
        let plugin = match catch_unwind(AssertUnwindSafe(|| make(callbacks))) {
            Ok(made) => made?,
            Err(p) => {
                return Err(PluginError::new(
                    "panic",
                    format!("plugin panicked in new: {}", panic_text(p.as_ref())),
                ))
            }
        };
        let core = Core {
            plugin,
            out,
            options,
            phase: AtomicU8::new(RUNNING),
            busy: Mutex::new(0),
            idle: Condvar::new(),
            call_ids: AtomicU64::new(0),
        };
        Ok(Instance {
            core: Arc::new(core),
            pool: Pool::default(),
        })
    }

    /// Hands the plugin one JSON-RPC message. Never blocks on the plugin: requests run on
    /// worker threads and answer on the queue; malformed JSON is answered there with -32700.
    pub fn post(&self, message: &str) -> Result<(), PostError> {
        let core = &self.core;
        if core.phase.load(Ordering::Acquire) == CLOSED {
            return Err(PostError::Closed);
        }
        let (id, method, params) = match rpc::decode(message) {
            Incoming::Invalid { id, error } => {
                core.out.push(rpc::response_text(&id, Err(error)));
                return Ok(());
            }
            Incoming::Response { id, reply } => {
                if !core.out.resolve(&id, reply) {
                    core.out.warn(format!(
                        "ignored a response to id {id}: no request of the plugin has it"
                    ));
                }
                return Ok(());
            }
            Incoming::Request { id, method, params } => (id, method, params),
        };
        if core.phase.load(Ordering::Acquire) != RUNNING {
            return Err(PostError::Closed);
        }
        let max = core.options.max_queued;
        {
            let mut busy = core.lock_busy();
            if *busy >= max || core.out.len() >= max {
                return Err(PostError::TooMany);
            }
            *busy += 1;
        }
        let job_core = self.core.clone();
        let job = Box::new(move || job_core.run(id, &method, &params));
        self.pool.spawn(job).map_err(|_| {
            core.done();
            PostError::TooMany
        })
    }

    /// The next plugin → host message: `Some(Duration::ZERO)` does not wait, `None` waits
    /// until one comes. After `plugin.closed` was taken, `None` at once.
    pub fn next_message(&self, timeout: Option<Duration>) -> Option<String> {
        self.core.out.pop(timeout)
    }

    /// The read end of the wakeup pipe (-1 where there is none): readable while messages are
    /// queued.
    pub fn wakeup_fd(&self) -> i32 {
        self.core.out.wakeup_fd()
    }

    /// A blocking host → plugin request on the caller's thread. Its ids are a space of their
    /// own (`"call-1"`, …), and its response is returned, never queued.
    pub fn call(&self, method: &str, params: &Value) -> String {
        let n = self.core.call_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let id = json!(format!("call-{n}"));
        if self.core.phase.load(Ordering::Acquire) != RUNNING {
            return rpc::response_text(&id, Err(closed_error()));
        }
        *self.core.lock_busy() += 1;
        let (outcome, stopped_here) = self.core.handle(method, params);
        self.core.done();
        let text = rpc::response_text(&id, outcome);
        if stopped_here {
            self.core.finish_stop();
        }
        text
    }

    /// Stops the plugin if nothing did yet and waits (bounded) for `plugin.closed` to be
    /// queued.
    pub fn stop(&self) {
        let (_, stopped_here) = self.core.handle("stop", &Value::Null);
        if stopped_here {
            self.core.finish_stop();
        } else {
            self.core.wait_closed(STOP_BOUND);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
        self.pool.shutdown(STOP_BOUND);
    }
}

fn closed_error() -> RpcError {
    RpcError::plugin(PluginError::new("closed", "the instance is stopped"))
}

impl Core {
    fn lock_busy(&self) -> std::sync::MutexGuard<'_, usize> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self) {
        let mut busy = self.lock_busy();
        *busy = busy.saturating_sub(1);
        self.idle.notify_all();
    }

    /// One posted request on a worker: its response (for a request with an id) is queued
    /// before `plugin.closed`.
    fn run(&self, id: Option<Value>, method: &str, params: &Value) {
        let (outcome, stopped_here) = self.handle(method, params);
        if let Some(id) = id {
            self.out.push(rpc::response_text(&id, outcome));
        } else if let Err(e) = outcome {
            if e.code == rpc::METHOD_NOT_FOUND {
                self.out
                    .warn(format!("ignored notification {method}: {}", e.message));
            }
        }
        self.done();
        if stopped_here {
            self.finish_stop();
        }
    }

    /// Runs one request; the flag says this call began `stop` (and must finish it).
    fn handle(&self, method: &str, params: &Value) -> (Result<String, RpcError>, bool) {
        if method != "stop" {
            return (dispatch(&self.plugin, method, params), false);
        }
        if self
            .phase
            .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return (Ok("{}".into()), false);
        }
        // The host may be gone (EOF on the bridge): waiting deliveries are refused now and
        // come again after the next start, so stop never waits out an ack timeout.
        self.out.refuse_requests();
        let stopped = catch_unwind(AssertUnwindSafe(|| self.plugin.stop().into_result()));
        let outcome = match stopped {
            Ok(Ok(())) => Ok("{}".into()),
            Ok(Err(e)) => Err(RpcError::plugin(PluginError::from_wire(e.as_str()))),
            Err(p) => Err(RpcError::plugin(PluginError::new(
                "panic",
                format!("plugin panicked in stop: {}", panic_text(p.as_ref())),
            ))),
        };
        (outcome, true)
    }

    /// After the stop response is queued: waits (bounded) for requests still running, then
    /// queues `plugin.closed` as the last message.
    fn finish_stop(&self) {
        let deadline = Instant::now() + STOP_BOUND;
        let mut busy = self.lock_busy();
        while *busy > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            busy = self
                .idle
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.out.close();
        self.phase.store(CLOSED, Ordering::Release);
        self.idle.notify_all();
    }

    fn wait_closed(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let mut busy = self.lock_busy();
        while self.phase.load(Ordering::Acquire) != CLOSED {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            busy = self
                .idle
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
