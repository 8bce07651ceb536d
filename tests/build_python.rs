//! Builds the Python example plugin (`examples/python-plugin`) into a
//! component with componentize-py, from the test suite's build script.
//!
//! The tool comes from PyPI at an exact version, installed by this build
//! with `python3 -m pip install --target` into `target/python/`, once: a
//! warm rebuild finds it there. (`--target` needs no venv module, and a
//! system Python that refuses installs into itself, PEP 668, allows it.) The component is
//! rebuilt only when the app or the contract is newer than it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The componentize-py release the example is built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The world the example targets.
const WORLD: &str = "ferry:transfer/downloader@0.2.0";

/// Builds the example into `out_dir` and returns the component's path.
pub fn build(workspace: &Path, out_dir: &Path) -> PathBuf {
    let app_dir = workspace.join("examples/python-plugin");
    let wit = workspace.join("wit");
    let tool = install(&workspace.join("target/python"));
    let wasm = out_dir.join("pymirror.wasm");
    let inputs = [app_dir.join("app.py"), wit.clone()];
    if newer_than_all(&wasm, &inputs) {
        return wasm;
    }
    // componentize-py compiles the app where it finds it: give it a copy, so
    // the source tree gets no `__pycache__`.
    let src = out_dir.join("python-plugin");
    std::fs::create_dir_all(&src).expect("the build's output directory is writable");
    std::fs::copy(app_dir.join("app.py"), src.join("app.py"))
        .expect("examples/python-plugin/app.py");
    let output = Command::new("python3")
        .env("PYTHONPATH", &tool)
        .args([
            "-c",
            "import sys, componentize_py; sys.exit(componentize_py.script())",
        ])
        .arg("--wit-path")
        .arg(&wit)
        .args(["--world", WORLD, "componentize", "app", "--python-path"])
        .arg(&src)
        .arg("--output")
        .arg(&wasm)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 does not run ({e}); the Python example plugin needs it")
        });
    assert!(
        output.status.success(),
        "componentize-py {COMPONENTIZE_PY} failed to build examples/python-plugin: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    wasm
}

/// Installs componentize-py into `root` unless it is there, and returns the
/// directory to put on `PYTHONPATH`. Installs into a fresh directory renamed
/// into place, so two builds at once cannot leave half an install.
fn install(root: &Path) -> PathBuf {
    let dir = root.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    if dir.join("componentize_py").is_dir() {
        return dir;
    }
    std::fs::create_dir_all(root).expect("target/ is writable");
    let staging = root.join(format!(
        "componentize-py-{COMPONENTIZE_PY}.{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
        ])
        .args(["--no-deps", "--target"])
        .arg(&staging)
        .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
        .output();
    let failed = |why: String| -> ! {
        let _ = std::fs::remove_dir_all(&staging);
        panic!(
            "installing componentize-py=={COMPONENTIZE_PY} from PyPI with `python3 -m pip` failed: {why}\n\
             The test suite builds examples/python-plugin with it; it needs python3 (3.9 or later) \
             with pip, and PyPI reachable."
        )
    };
    match output {
        Err(e) => failed(format!("python3 does not run: {e}")),
        Ok(o) if !o.status.success() => failed(format!(
            "{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Ok(_) => {}
    }
    if std::fs::rename(&staging, &dir).is_err() && !dir.join("componentize_py").is_dir() {
        failed(format!("cannot move {} into place", staging.display()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    dir
}

/// Whether `output` exists and is newer than every file under `inputs`.
fn newer_than_all(output: &Path, inputs: &[PathBuf]) -> bool {
    let Some(built) = modified(output) else {
        return false;
    };
    fn newest(path: &Path) -> Option<SystemTime> {
        let mut time = modified(path)?;
        if path.is_dir() {
            for entry in std::fs::read_dir(path).ok()?.flatten() {
                time = time.max(newest(&entry.path())?);
            }
        }
        Some(time)
    }
    inputs
        .iter()
        .all(|input| newest(input).is_some_and(|t| t < built))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
