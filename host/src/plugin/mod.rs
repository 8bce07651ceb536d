//! The plugin runtime: every transport and reply processor is a sandboxed
//! WebAssembly component loaded through the `ferry:transfer` WIT package.
//!
//! - `manifest`: what a plugin declares; `grants`: which hosts it may reach;
//! - `bindings`: the generated WIT bindings (0.2 and the frozen 0.1);
//!   `transfer`: the host's types for what crosses the boundary;
//! - `sandbox`: the per-call store (nothing granted, limits enforced);
//!   `host_api`: what the host gives a plugin (`ferry:transfer/host@0.2.0`);
//!   `legacy`: the adapter that keeps 0.1 plugins loading;
//! - `network`: `wasi:http` through the host's policy, on a pooled client;
//! - `streams`: the destination and source resources (bytes stay on the host);
//! - `runtime`: loading, caching, instantiating and calling plugins;
//! - `builtin`: the plugins compiled into the binary.

pub mod bindings;
pub mod builtin;
pub mod grants;
mod host_api;
pub mod legacy;
pub mod manifest;
pub mod network;
pub mod runtime;
pub mod sandbox;
mod stderr;
pub mod streams;
pub mod transfer;

pub use manifest::Capability;
pub use runtime::{Contract, MAX_REPLY_DATA, Plugin, PluginRuntime, RuntimeConfig, RuntimeError};
pub use streams::{
    Destination, DownloadProgress, ReplyFile, ReplyProgress, ReplySink, Source, UploadProgress,
};
pub use transfer::{
    Credentials, DownloadRequest, JobContext, RemoteInfo, ReplyContext, ReplyHead, UploadReply,
    UploadRequest, Validator,
};
