//! Ferry's full download path against curl, on the same machine, in the same run.
//!
//! The project's target is that a download through the sandboxed `http` plugin
//! (plugin instance, `wasi:http` through the host's client, body spliced into a
//! host file) runs at no less than 0.9 × the speed of `curl` fetching the same
//! body from the same loopback server into the same filesystem. Absolute numbers
//! on a shared machine are noise; the ratio, measured round by round with the
//! order alternated, is what this benchmark is for. It also measures what every
//! plugin call pays before doing any work: a fresh instance.
//!
//! Run with `cargo bench -p ferry-tests --bench download`. Environment:
//! `FERRY_BENCH_BYTES` (body size, default 1 GiB), `FERRY_BENCH_ROUNDS`
//! (default 5), `FERRY_BENCH_INSTANTIATIONS` (default 200).

use ferry::plugin::{Destination, DownloadRequest, JobContext, PluginRuntime, RuntimeConfig};
use ferry_tests::server::{Resource, fill_pattern, start_with};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_INSTANTIATIONS: usize = 200;
const WARM_UP_INSTANTIATIONS: usize = 10;
/// Size of the windows of the output compared with the pattern.
const WINDOW: u64 = 4096;
const PATH: &str = "/bench.bin";

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// Decimal megabytes per second.
fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0–100) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Panics unless `file` holds exactly `size` bytes of the pattern, checking a
/// few windows: both ends, a 1 MiB block boundary and some odd offsets.
fn verify(who: &str, file: &File, size: u64) {
    let len = file.metadata().expect("the output's metadata").len();
    assert_eq!(len, size, "{who} wrote {len} bytes, expected {size}");
    let last = size.saturating_sub(WINDOW);
    let offsets = [
        0,
        (1 << 20) - WINDOW / 2,
        size / 3 + 1,
        size / 2 + 4099,
        size * 7 / 8 + 12_345,
        last,
    ];
    let mut got = vec![0u8; WINDOW as usize];
    let mut want = vec![0u8; WINDOW as usize];
    for offset in offsets.into_iter().map(|o| o.min(last)) {
        let n = WINDOW.min(size - offset) as usize;
        file.read_exact_at(&mut got[..n], offset)
            .expect("the output is readable");
        fill_pattern(offset, &mut want[..n]);
        assert!(
            got[..n] == want[..n],
            "{who}'s output differs from the served content in bytes {offset}..{}",
            offset + n as u64
        );
    }
}

/// Whether `curl` can be run from `PATH`.
fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `curl -s -o FILE URL`, timed from spawn to exit.
fn curl_round(dir: &Path, url: &str, size: u64) -> Duration {
    let out = tempfile::NamedTempFile::new_in(dir).expect("a temporary file for curl");
    let started = Instant::now();
    let status = Command::new("curl")
        .arg("-s")
        .arg("-o")
        .arg(out.path())
        .arg(url)
        .status()
        .expect("curl runs");
    let elapsed = started.elapsed();
    assert!(status.success(), "curl failed: {status}");
    verify("curl", out.as_file(), size);
    elapsed
}

/// Ferry's download of `url` into a fresh file, timed from call to return.
fn ferry_round(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<PluginRuntime>,
    dir: &Path,
    url: &str,
    size: u64,
) -> Duration {
    let out = tempfile::NamedTempFile::new_in(dir).expect("a temporary file for ferry");
    let file = Arc::new(out.reopen().expect("the temporary file reopens"));
    let destination = Destination::new(file, 0, 0, true);
    let progress = destination.progress();
    let request = DownloadRequest {
        url: url.to_string(),
        offset: 0,
        end: None,
        validator: None,
    };
    let runtime = runtime.clone();
    // On a worker of the runtime, as a job engine would run it.
    let (result, elapsed) = rt.block_on(async move {
        tokio::spawn(async move {
            let job = JobContext::new("bench");
            let started = Instant::now();
            let result = runtime.download(request, &job, destination).await;
            (result, started.elapsed())
        })
        .await
        .expect("the download task completes")
    });
    if let Err(e) = result {
        panic!("ferry's download failed: {e}");
    }
    let written = progress
        .written_to
        .load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(written, size, "ferry reports {written} bytes written");
    verify("ferry", out.as_file(), size);
    elapsed
}

fn main() {
    let size: u64 = env_number("FERRY_BENCH_BYTES", DEFAULT_BYTES);
    let rounds: usize = env_number("FERRY_BENCH_ROUNDS", DEFAULT_ROUNDS);
    let instantiations: usize = env_number("FERRY_BENCH_INSTANTIATIONS", DEFAULT_INSTANTIATIONS);
    assert!(size > 0 && rounds > 0 && instantiations > 0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let server = rt.block_on(start_with(PATH, Resource::pattern(size)));
    let url = server.url(PATH);
    let dir = tempfile::tempdir().expect("a temporary directory");

    let curl = curl_available();
    if !curl {
        println!("curl was not found on PATH: measuring ferry alone, without a ratio.");
    }
    let started = Instant::now();
    let runtime = Arc::new(
        PluginRuntime::with_builtins(RuntimeConfig::default()).expect("the plugin runtime starts"),
    );
    println!(
        "plugin runtime with built-ins ready in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "downloading {size} bytes ({:.1} MiB) over loopback, {rounds} rounds; MB/s = 10^6 bytes/s",
        size as f64 / (1u64 << 20) as f64
    );

    let (mut curl_rates, mut ferry_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for round in 0..rounds {
        let ferry_first = round % 2 == 1;
        let (mut curl_time, mut ferry_time) = (None, None);
        for ferry_turn in [ferry_first, !ferry_first] {
            if ferry_turn {
                ferry_time = Some(ferry_round(&rt, &runtime, dir.path(), &url, size));
            } else if curl {
                curl_time = Some(curl_round(dir.path(), &url, size));
            }
        }
        let ferry_rate = mb_per_s(size, ferry_time.expect("ferry ran"));
        ferry_rates.push(ferry_rate);
        let curl_rate = curl_time.map(|t| mb_per_s(size, t));
        let ratio = curl_rate.map(|c| ferry_rate / c);
        curl_rates.extend(curl_rate);
        ratios.extend(ratio);
        let order = if ferry_first {
            "ferry, curl"
        } else {
            "curl, ferry"
        };
        match (curl_rate, ratio) {
            (Some(c), Some(r)) => println!(
                "round {}: curl {c:8.1} MB/s   ferry {ferry_rate:8.1} MB/s   ferry/curl {r:.3}   ({order})",
                round + 1
            ),
            _ => println!("round {}: ferry {ferry_rate:8.1} MB/s", round + 1),
        }
        rows.push((round + 1, curl_rate, ferry_rate, ratio));
    }

    let ferry_median = median(&ferry_rates);
    let curl_median = curl.then(|| median(&curl_rates));
    let median_ratio = curl.then(|| median(&ratios));
    let ratio_of_medians = curl_median.map(|c| ferry_median / c);
    match (curl_median, median_ratio, ratio_of_medians) {
        (Some(c), Some(mr), Some(rm)) => println!(
            "median: curl {c:.1} MB/s   ferry {ferry_median:.1} MB/s   \
             median of ratios {mr:.3}   ratio of medians {rm:.3}"
        ),
        _ => println!("median: ferry {ferry_median:.1} MB/s"),
    }

    // What every plugin call pays before its work.
    let mut instantiation_us = Vec::with_capacity(instantiations);
    rt.block_on(async {
        for i in 0..WARM_UP_INSTANTIATIONS + instantiations {
            let started = Instant::now();
            runtime
                .instantiate("http")
                .await
                .expect("the http plugin instantiates");
            if i >= WARM_UP_INSTANTIATIONS {
                instantiation_us.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
    });
    let inst_median = median(&instantiation_us);
    let inst_p90 = percentile(&instantiation_us, 90.0);
    let pooling = runtime.uses_pooling();
    println!(
        "instantiate(\"http\") x{instantiations}: median {inst_median:.1} µs, p90 {inst_p90:.1} µs; pooling allocator: {pooling}"
    );

    let fmt = |v: Option<f64>, precision: usize| match v {
        Some(v) => format!("{v:.precision$}"),
        None => "n/a".to_string(),
    };
    println!();
    println!("| round | curl MB/s | ferry MB/s | ferry/curl |");
    println!("|------:|----------:|-----------:|-----------:|");
    for (round, curl_rate, ferry_rate, ratio) in &rows {
        println!(
            "| {round} | {} | {ferry_rate:.1} | {} |",
            fmt(*curl_rate, 1),
            fmt(*ratio, 3)
        );
    }
    println!(
        "| **median** | {} | {ferry_median:.1} | {} (median of ratios) |",
        fmt(curl_median, 1),
        fmt(median_ratio, 3)
    );
    println!();
    println!(
        "- ratio of medians, ferry/curl: {}",
        fmt(ratio_of_medians, 3)
    );
    println!("- body: {size} bytes, {rounds} rounds, order alternated (odd rounds curl first)");
    println!(
        "- `instantiate(\"http\")`, {instantiations} calls after {WARM_UP_INSTANTIATIONS} warm-up: \
         median {inst_median:.1} µs, p90 {inst_p90:.1} µs"
    );
    println!(
        "- pooling allocator: {}",
        if pooling { "yes" } else { "no" }
    );
    drop(server);
}
