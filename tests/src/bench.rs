//! What the benchmarks share besides their servers: their settings from the
//! environment, and finding the peer programs they compare Ferry with.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The benchmark setting `name` from the environment (`FERRY_BENCH_...`),
/// or `default` when it is unset or does not parse.
pub fn setting<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A program on `PATH` or in the usual system directories.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
