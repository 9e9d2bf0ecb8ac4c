//! The protocol edge: everything that speaks to `imsg` (spec/imsg-protocol.md). The rpc
//! client and its framing, the typed message a watch delivers, what a server can do
//! (capabilities), the remote-Mac helpers (SSH wrapper detection, scp), and the readiness
//! probe. Nothing here knows about accounts, policy or the host.

pub mod capabilities;
pub mod child;
pub mod message;
pub mod probe;
pub mod remote;
pub mod rpc;
pub mod source;
