//! Compiles the built-in plugins (`plugins/*`) for wasm32-wasip2 and embeds
//! them, with their manifests, in the `ferry` binary.

#[path = "build_plugins.rs"]
mod build_plugins;

use std::path::Path;

/// The built-in plugins: (crate, directory under `plugins/`).
const BUILTINS: &[(&str, &str)] = &[
    ("ferry-plugin-http", "http"),
    ("ferry-plugin-json-value", "json-value"),
    ("ferry-plugin-digest-verify", "digest-verify"),
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let workspace = Path::new(&manifest_dir)
        .parent()
        .expect("host/ is inside the workspace");
    build_plugins::rerun_if_changed(
        workspace,
        &["plugins", "guest-sdk/src", "guest-sdk/Cargo.toml", "wit"],
    );
    println!("cargo:rerun-if-changed=build_plugins.rs");
    let packages: Vec<&str> = BUILTINS.iter().map(|(package, _)| *package).collect();
    let wasm = build_plugins::build(workspace, &packages);
    let mut code = String::from(
        "/// The plugins compiled into this binary.\npub static BUILTINS: &[Builtin] = &[\n",
    );
    for ((_, dir), wasm) in BUILTINS.iter().zip(wasm) {
        let manifest = workspace.join("plugins").join(dir).join("manifest.toml");
        code.push_str(&format!(
            "    Builtin {{ manifest: include_str!({:?}), component: include_bytes!({:?}) }},\n",
            manifest.display().to_string(),
            wasm.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("builtin_plugins.rs"), code).expect("OUT_DIR is writable");
}
