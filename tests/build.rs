//! Builds the test suite's own plugins (`tests/plugins/*`) and the example
//! plugin (`examples/`) for wasm32-wasip2, in one cargo run, and the Python
//! example (`examples/python-plugin`, see `build_python.rs`), and tells the
//! tests where they are.

#[path = "../host/build_plugins.rs"]
mod build_plugins;
mod build_python;

use std::path::Path;

/// The test plugins: (crate, the variable the tests read its path from).
const PLUGINS: &[(&str, &str)] = &[
    ("ferry-test-plugin-hostile", "FERRY_HOSTILE_PLUGIN"),
    (
        "ferry-test-plugin-hostile-0-1",
        "FERRY_HOSTILE_LEGACY_PLUGIN",
    ),
    ("ferry-test-plugin-upload", "FERRY_UPLOAD_PLUGIN"),
    ("ferry-test-plugin-reply-upper", "FERRY_REPLY_UPPER_PLUGIN"),
    ("ferry-test-plugin-legacy-0-1", "FERRY_LEGACY_PLUGIN"),
    (
        "ferry-test-plugin-future-major",
        "FERRY_FUTURE_MAJOR_PLUGIN",
    ),
    (
        "ferry-test-plugin-unknown-exports",
        "FERRY_UNKNOWN_EXPORTS_PLUGIN",
    ),
    ("ferry-test-plugin-liar", "FERRY_LIAR_PLUGIN"),
    // The example for plugin authors, so CI builds and runs it too.
    ("ferry-example-mirror", "FERRY_MIRROR_EXAMPLE"),
    // The conformance suite's broken transports (one flaw each, by scheme).
    ("ferry-test-plugin-broken", "FERRY_BROKEN_PLUGIN"),
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let workspace = Path::new(&manifest_dir)
        .parent()
        .expect("tests/ is inside the workspace");
    build_plugins::rerun_if_changed(
        workspace,
        &[
            "tests/plugins",
            "examples",
            "guest-sdk/src",
            "guest-sdk/Cargo.toml",
            "wit",
        ],
    );
    println!("cargo:rerun-if-changed=../host/build_plugins.rs");
    println!("cargo:rerun-if-changed=build_python.rs");
    let packages: Vec<&str> = PLUGINS.iter().map(|(package, _)| *package).collect();
    let wasm = build_plugins::build(workspace, &packages);
    for ((_, variable), wasm) in PLUGINS.iter().zip(wasm) {
        println!("cargo:rustc-env={variable}={}", wasm.display());
    }
    // The example in a second language: Python, built with componentize-py.
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let python = build_python::build(workspace, Path::new(&out_dir));
    println!("cargo:rustc-env=FERRY_PYTHON_EXAMPLE={}", python.display());
}
