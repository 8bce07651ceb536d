//! Host bindings of the `ferry:transfer` WIT package, generated from `wit/`.
//!
//! `wasi:io` and `wasi:http` are wasmtime's own implementations; the
//! `destination` and `source` resources are the host objects of `streams`.

mod transport_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:transfer/transport",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "ferry:transfer/host.destination": crate::plugin::streams::Destination,
            "ferry:transfer/host.source": crate::plugin::streams::Source,
        },
    });
}

pub use transport_world::{Transport, TransportPre, exports, ferry};

/// Bindings of the `reply-processor` world, sharing the types above.
pub mod reply_processor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:transfer/reply-processor",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "ferry:transfer/types": super::ferry::transfer::types,
            "ferry:transfer/host": super::ferry::transfer::host,
        },
    });
}
