//! Write Ferry plugins.
//!
//! A Ferry plugin is a WebAssembly component (`wasm32-wasip2`) that exports
//! one or more interfaces of the `ferry:transfer@0.2.0` WIT package. This
//! crate is everything a Rust plugin needs and nothing it has to configure:
//! one trait per interface, one macro per trait that exports it, typed
//! errors, logging, and an HTTP client over `wasi:http` with a complete,
//! resumable download ([`http::download`]).
//!
//! The host learns what a plugin can do from what it exports, and a plugin
//! exports exactly what its macros name:
//!
//! | trait | macro | exports |
//! |---|---|---|
//! | [`Download`] | [`export_download!`] | `download` |
//! | [`Upload`] | [`export_upload!`] | `upload` |
//! | [`UploadReply`] (and [`Upload`]) | [`export_upload_reply!`] | `upload` and `upload-reply` |
//! | [`ReplyProcessor`] | [`export_reply_processor!`] | `reply-processing` |
//!
//! A plugin may use several macros (a transport that downloads and uploads
//! uses [`export_download!`] and [`export_upload!`]), each at most once.
//!
//! A download transport for a new scheme, complete:
//!
//! ```no_run
//! use ferry_guest_sdk::{Destination, Download, DownloadRequest, JobContext, TransferError};
//!
//! struct Mirror;
//!
//! impl Download for Mirror {
//!     fn download(
//!         job: JobContext,
//!         request: DownloadRequest,
//!         destination: &Destination,
//!     ) -> Result<(), TransferError> {
//!         // mirror://HOST/PATH is http://HOST/PATH.
//!         let url = request.url.replacen("mirror://", "http://", 1);
//!         ferry_guest_sdk::http::download(&job, &DownloadRequest { url, ..request }, destination)
//!     }
//! }
//!
//! ferry_guest_sdk::export_download!(Mirror);
//! ```
//!
//! Every call gets a fresh instance and everything it needs in its
//! arguments: the [`JobContext`] (the owner's headers and credentials, the
//! operator's network settings), the request, and host resources for the
//! bytes ([`Destination`], [`Source`], [`ReplySink`], [`ReplyFile`]), which
//! are streams the plugin can splice into without copying.

#![deny(missing_docs)]

/// The bindings of `ferry:transfer@0.2.0` and the WASI interfaces it uses,
/// generated from the WIT package (world `imports`). Every type of the
/// contract lives here once; the crate re-exports the ones plugins name.
///
/// The generated items are documented by the WIT's doc comments where it has
/// them (its package modules and some record fields have none).
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "ferry:transfer/imports@0.2.0",
        generate_all,
    });
}

/// Generates the export glue of one interface against the shared bindings.
macro_rules! export_module {
    ($($config:tt)*) => {
        wit_bindgen::generate!({
            path: "wit",
            $($config)*
            with: {
                "ferry:transfer/types@0.2.0": crate::bindings::ferry::transfer::types,
                "ferry:transfer/host@0.2.0": crate::bindings::ferry::transfer::host,
                "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
                "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
                "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
                "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
                "wasi:http/types@0.2.12": crate::bindings::wasi::http::types,
                "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::http::outgoing_handler,
            },
            pub_export_macro: true,
        });
    };
}

// One module per export interface, each of a world that exports only that
// interface: a module's component type is linked into a plugin only when its
// export macro is used, so a plugin exports exactly what it names.

#[doc(hidden)]
pub mod __download {
    export_module! {
        world: "ferry:transfer/downloader@0.2.0",
        export_macro_name: "__export_download_glue",
        default_bindings_module: "ferry_guest_sdk::__download",
    }
}

#[doc(hidden)]
pub mod __upload {
    export_module! {
        world: "ferry:transfer/uploader@0.2.0",
        export_macro_name: "__export_upload_glue",
        default_bindings_module: "ferry_guest_sdk::__upload",
    }
}

#[doc(hidden)]
pub mod __upload_reply {
    export_module! {
        inline: "
            package ferry:sdk;
            world upload-reply-only {
                include ferry:transfer/imports@0.2.0;
                export ferry:transfer/upload-reply@0.2.0;
            }
        ",
        world: "ferry:sdk/upload-reply-only",
        export_macro_name: "__export_upload_reply_glue",
        default_bindings_module: "ferry_guest_sdk::__upload_reply",
    }
}

#[doc(hidden)]
pub mod __reply_processing {
    wit_bindgen::generate!({
        path: "wit",
        world: "ferry:transfer/reply-processor@0.2.0",
        with: {
            "ferry:transfer/types@0.2.0": crate::bindings::ferry::transfer::types,
            "ferry:transfer/host@0.2.0": crate::bindings::ferry::transfer::host,
            "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
        },
        pub_export_macro: true,
        export_macro_name: "__export_reply_processing_glue",
        default_bindings_module: "ferry_guest_sdk::__reply_processing",
    });
}

mod error;
mod export;
pub mod http;
pub mod stream;

pub use error::{http_status_is_transient, is_valid_other_code};
pub use export::{Download, ReplyProcessor, Upload, UploadReply};

pub use bindings::ferry::transfer::host::{Destination, ReplyFile, ReplySink, Source};
pub use bindings::ferry::transfer::types::{
    BasicCredentials, Credentials, Digest, DownloadRequest, ErrorClass, ErrorCode, ErrorContext,
    Header, JobContext, LogLevel, NetworkSettings, RemoteInfo, ReplyContext, ReplyHead,
    TransferError, UploadRequest, Validator,
};
pub use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

use bindings::ferry::transfer::host;

/// True once the host wants the current call to stop (the job was suspended
/// or cancelled, or the daemon is shutting down). Check it between chunks
/// and return [`TransferError::cancelled`]; the host stops a call that does
/// not by force.
pub fn is_cancelled() -> bool {
    host::is_cancelled()
}

/// [`TransferError::cancelled`] once the host wants the call to stop, so a
/// loop can say `ferry_guest_sdk::check_cancelled()?;`.
pub fn check_cancelled() -> Result<(), TransferError> {
    if is_cancelled() {
        Err(TransferError::cancelled())
    } else {
        Ok(())
    }
}

/// Writes a line to the host's log, tagged with the plugin's name and the
/// job. The host keeps at most 1,024 characters of it.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Logs at trace level.
pub fn trace(message: &str) {
    log(LogLevel::Trace, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}
