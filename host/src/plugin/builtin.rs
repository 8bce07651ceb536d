//! The plugins carried inside the `ferry` binary, compiled for wasm32-wasip2
//! by the build script (see `host/build.rs`).

/// One built-in plugin: its manifest text and its component bytes.
pub struct Builtin {
    pub manifest: &'static str,
    pub component: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
