//! Small helpers every layer may use and that use nothing of the plugin: lock poisoning,
//! panics in spawned tasks, time formatting, backoff, the fixed timers, and handle normalisation (shared by
//! config, inbound, outbound and actions, so it sits below all of them).

pub mod backoff;
pub mod handle;
pub mod sync;
pub mod task;
pub mod timeutil;
pub mod timings;
