//! Builds plugin crates of this workspace for `wasm32-wasip2` from a build
//! script. Shared by the host's build script (built-in plugins) and the test
//! suite's (its hostile plugins) with `#[path]`.
//!
//! It installs the `wasm32-wasip2` target through rustup when the toolchain
//! lacks it, so a fresh machine needs no set-up, and it builds in a target
//! directory of its own so the outer cargo's lock is never waited on.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "wasm-plugin";

/// Builds `packages` and returns each one's `.wasm` path, in order.
pub fn build(workspace: &Path, packages: &[&str]) -> Vec<PathBuf> {
    ensure_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = workspace.join("target").join("plugins");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    // The outer build's settings are for the host target, not for wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the plugins {packages:?} for {TARGET} failed"
    );
    packages
        .iter()
        .map(|p| {
            target_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect()
}

/// Tells cargo to rebuild when anything a plugin is built from changes.
pub fn rerun_if_changed(workspace: &Path, dirs: &[&str]) {
    for dir in dirs {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
}

/// Installs the wasm target with rustup when the sysroot lacks it.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(sysroot) = sysroot
        && Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .exists()
    {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let status = rustup
        .status()
        .expect("rustup runs to add the wasm32-wasip2 target");
    assert!(status.success(), "`rustup target add {TARGET}` failed");
}
