//! Builds the test suite's own plugins (`tests/plugins/*`) for wasm32-wasip2
//! and tells the tests where they are.

#[path = "../host/build_plugins.rs"]
mod build_plugins;

use std::path::Path;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let workspace = Path::new(&manifest_dir)
        .parent()
        .expect("tests/ is inside the workspace");
    build_plugins::rerun_if_changed(
        workspace,
        &[
            "tests/plugins",
            "guest-sdk/src",
            "guest-sdk/Cargo.toml",
            "wit",
        ],
    );
    println!("cargo:rerun-if-changed=../host/build_plugins.rs");
    let wasm = build_plugins::build(workspace, &["ferry-test-plugin-hostile"]);
    println!("cargo:rustc-env=FERRY_HOSTILE_PLUGIN={}", wasm[0].display());
}
