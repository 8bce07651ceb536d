//! The crate Ferry plugin authors depend on.
//!
//! It owns the bindings of the `ferry:transfer` WIT package (so that every
//! plugin is built against the same contract) and adds what each plugin would
//! otherwise write again: typed errors with the SPEC's HTTP status mapping,
//! the job context, logging through the host, and a small HTTP client over
//! `wasi:http` whose bodies are spliced straight into the host's streams.
//!
//! A transport plugin enables the `transport` feature (the default),
//! implements [`Transport`] and exports it:
//!
//! ```ignore
//! use ferry_guest_sdk::{Transport, TransferError, types::*};
//!
//! struct MyPlugin;
//! impl Transport for MyPlugin { /* ... */ }
//! ferry_guest_sdk::export_transport!(MyPlugin);
//! ```
//!
//! A reply processor enables only the `reply-processor` feature, implements
//! [`ReplyProcessor`] and exports it with `export_reply_processor!`.

#[cfg(all(feature = "transport", feature = "reply-processor"))]
compile_error!(
    "a plugin is built against one world: enable `transport` or `reply-processor`, not both"
);

/// Raw bindings of the `transport` world, generated from `wit/`.
#[cfg(feature = "transport")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferry:transfer/transport",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_transport",
        default_bindings_module: "ferry_guest_sdk::bindings",
    });
}

/// Raw bindings of the `reply-processor` world, generated from `wit/`.
#[cfg(feature = "reply-processor")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferry:transfer/reply-processor",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_reply_processor",
        default_bindings_module: "ferry_guest_sdk::bindings",
    });
}

pub mod error;
#[cfg(feature = "transport")]
pub mod http;

#[cfg(feature = "transport")]
pub use bindings::ferry::transfer::host::Source;
pub use bindings::ferry::transfer::host::{Destination, JobContext};
pub use bindings::ferry::transfer::types;
pub use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
pub use types::TransferError;

/// Exports a [`Transport`] implementation as the plugin's `transfers`.
#[cfg(feature = "transport")]
pub use bindings::export_transport;
/// The trait a transport plugin implements (the `transfers` export).
#[cfg(feature = "transport")]
pub use bindings::exports::ferry::transfer::transfers::Guest as Transport;

/// Exports a [`ReplyProcessor`] implementation as the plugin's `replies`.
#[cfg(feature = "reply-processor")]
pub use bindings::export_reply_processor;
/// The trait a reply processor implements (the `replies` export).
#[cfg(feature = "reply-processor")]
pub use bindings::exports::ferry::transfer::replies::Guest as ReplyProcessor;

use bindings::ferry::transfer::host;
use types::LogLevel;

/// The job the current call works for: headers, credentials, redirect limit.
pub fn job_context() -> JobContext {
    host::context()
}

/// True once the host wants the current call to stop; check it between chunks.
pub fn is_cancelled() -> bool {
    host::is_cancelled()
}

/// Writes a line to the host's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}
