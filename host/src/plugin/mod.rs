//! The plugin runtime: every transport and reply processor is a sandboxed
//! WebAssembly component loaded through the `ferry:transfer` WIT package.
//!
//! - `manifest`: what a plugin declares; `grants`: which hosts it may reach;
//! - `bindings`: the generated WIT bindings; `transfer`: the host's types for
//!   what crosses the boundary;
//! - `sandbox`: the per-call store (nothing granted, limits enforced);
//! - `network`: `wasi:http` through the host's policy, on a pooled client;
//! - `streams`: the destination and source resources (bytes stay on the host);
//! - `runtime`: loading, caching, instantiating and calling plugins;
//! - `builtin`: the plugins compiled into the binary.

pub mod bindings;
pub mod builtin;
pub mod grants;
pub mod manifest;
pub mod network;
pub mod runtime;
pub mod sandbox;
pub mod streams;
pub mod transfer;

pub use runtime::{Plugin, PluginRuntime, RuntimeConfig, RuntimeError};
pub use streams::{Destination, DownloadProgress, Source, UploadProgress};
pub use transfer::{
    Credentials, DownloadRequest, JobContext, RemoteInfo, UploadReply, UploadRequest, Validator,
};
