//! The host protocol (spec/host-protocol.md): any channel plugin, driven by JSON-RPC 2.0
//! messages instead of trait calls, for hosts that cannot link Rust. The C ABI (`chp_*`, one
//! line each over [`ffi`]) and `host-stub serve` both carry it.
//!
//! [`Instance`] wraps one [`crate::ChannelPlugin`] trait object, however it was made: loaded
//! from a library by a host, or built by the plugin for its own C exports.
//!
//! # Host → plugin requests
//!
//! | method | params | result |
//! |---|---|---|
//! | `describe` | `{}` | `PluginDescription` + `protocolVersion` + `configSchema` (when the plugin answers `config.schema`) |
//! | `start` | `StartContext` | `StartReport` |
//! | `stop` | `{}` | `{}`, then the notification `plugin.closed` as the last message |
//! | `send` | `SendRequest` | `SendReceipt` (other requests are served meanwhile) |
//! | `status` | `StatusRequest` | `StatusReport` |
//! | `call` | `{"method", "payload"}` | the method's result |
//!
//! # Plugin → host
//!
//! - request `deliver` (params `InboundEvent`): any `result` acknowledges, an `error` or no
//!   response within `ackTimeoutMs` refuses (the events come again, same `messageId`). Ids
//!   are integers from 1, a space of the plugin's own.
//! - request `host.request` (params `{"method", "payload"}`): the host's result or error.
//! - notification `log` (params `LogRecord`, plus `dropped`: records dropped before this one
//!   because the host did not drain).
//! - notification `plugin.closed`: the last message.
//!
//! # Errors
//!
//! `-32700` not JSON, `-32600` not a JSON-RPC message (batches are not supported), `-32601`
//! unknown method, `-32602` params that do not fit (the message and `data.path` name the
//! field), `-32000` the plugin's error (`data` = `PluginError`), `-32001` it panicked (the
//! instance keeps serving). A response to an id the plugin never used (or that timed out) is
//! ignored and reported as a `warn` log notification with target `chp`.
//!
//! Decided where the spec is silent: a notification (no `id`) runs without an answer; `stop`
//! refuses deliveries still waiting for the host (they come again after the next start), so
//! it never waits out an ack timeout; after `stop` began, requests are refused with `-1` but
//! responses are still taken; `chp_call` ids are strings `"call-N"`.

pub mod ffi;
mod instance;
mod outbox;
mod pool;
mod router;
pub mod rpc;
mod wakeup;

pub use instance::{Instance, Options, PostError};
pub use router::{describe_result, CONFIG_SCHEMA_METHOD, PROTOCOL_VERSION};

#[cfg(test)]
mod tests;
