//! What the benchmarks share besides their servers: their settings from the
//! environment, finding the peer programs they compare Ferry with, and the
//! daemon's store counters.

use bytes::Bytes;
use ferry::cli::client::Client;
use http::Method;
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

/// The daemon's store counters from `/v1/metrics`: changes written, flushes,
/// seconds flushing (zeros when the caller may not read them).
pub async fn store_counters(client: &mut Client) -> (f64, f64, f64) {
    let (status, body) = client
        .raw(Method::GET, "/v1/metrics", Bytes::new())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    if !status.is_success() {
        return (0.0, 0.0, 0.0);
    }
    (
        value("ferry_store_writes_total"),
        value("ferry_store_flushes_total"),
        value("ferry_store_flush_seconds_total"),
    )
}
