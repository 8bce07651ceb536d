//! Ferry: a background file-transfer host with the job semantics of BITS,
//! whose transports are sandboxed WebAssembly components.
//!
//! - `cli`: the `ferry` command line;
//! - `error`: the typed error every failed transfer ends in;
//! - `files`: temporary files and their atomic, symlink-proof finalisation;
//! - `plugin`: the plugin runtime (WIT bindings, sandbox, network, streams).

pub mod cli;
pub mod error;
pub mod files;
pub mod plugin;

pub use error::{ErrorClass, ErrorContext, TransferError};
