//! Host bindings of the `ferry:transfer` WIT packages this host loads,
//! generated from `wit/` (0.2.0, the current contract) and `wit/0.1.0/` (the
//! frozen first contract, for plugins built before 0.2).
//!
//! `wasi:io` and `wasi:http` are wasmtime's own implementations; the
//! resources are the host objects of `streams`, shared by both versions.
//! Exports are looked up one interface at a time (`GuestIndices`), since a
//! plugin exports only what it implements.

/// `ferry:transfer@0.2.0`: the world that lists every interface a plugin may
/// export.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:transfer/plugin",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "ferry:transfer/host.destination": crate::plugin::streams::Destination,
            "ferry:transfer/host.source": crate::plugin::streams::Source,
            "ferry:transfer/host.reply-sink": crate::plugin::streams::ReplySink,
            "ferry:transfer/host.reply-file": crate::plugin::streams::ReplyFile,
        },
    });
}

/// `ferry:transfer@0.1.0`, frozen: its `transport` world.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "ferry:transfer/transport@0.1.0",
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

    /// `ferry:transfer@0.1.0`'s `reply-processor` world, sharing the types
    /// above.
    pub mod reply_processor {
        wasmtime::component::bindgen!({
            path: "../wit/0.1.0",
            world: "ferry:transfer/reply-processor@0.1.0",
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
}
