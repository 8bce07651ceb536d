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
    // One build per world: cargo unifies the features of the packages it
    // builds together, and the guest SDK refuses both worlds at once.
    let builds: [&[(&str, &str)]; 2] = [
        &[
            ("ferry-test-plugin-hostile", "FERRY_HOSTILE_PLUGIN"),
            ("ferry-test-plugin-upload", "FERRY_UPLOAD_PLUGIN"),
        ],
        &[("ferry-test-plugin-reply-upper", "FERRY_REPLY_UPPER_PLUGIN")],
    ];
    for plugins in builds {
        let packages: Vec<&str> = plugins.iter().map(|(package, _)| *package).collect();
        let wasm = build_plugins::build(workspace, &packages);
        for ((_, variable), wasm) in plugins.iter().zip(wasm) {
            println!("cargo:rustc-env={variable}={}", wasm.display());
        }
    }
}
