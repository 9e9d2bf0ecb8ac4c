//! Talking to `imsg rpc`: framing, frame classification and the client that owns the child.

pub mod client;
pub mod framing;
pub mod wire;

pub use client::{CallError, Event, RpcClient, SpawnConfig, Started};
pub use wire::RpcError;

#[cfg(test)]
mod tests;
