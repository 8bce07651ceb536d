//! Ferry: a background file-transfer host with the job semantics of BITS,
//! whose transports are sandboxed WebAssembly components.
//!
//! - `error`: the typed error every failed transfer ends in;
//! - `plugin`: the plugin runtime (WIT bindings, sandbox, network, streams).

pub mod error;
pub mod plugin;

pub use error::{ErrorClass, ErrorContext, TransferError};
