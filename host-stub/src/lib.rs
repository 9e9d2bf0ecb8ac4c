//! host-stub's reusable parts: the durable delivery sink and the delivered-id log, shared by
//! the `host-stub` binary and the pipeline benchmark (which delivers into this very code).

pub mod delivered;
pub mod private;
pub mod scan;
pub mod sink;
