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

use ferry::plugin::{Destination, DownloadRequest, JobContext, PluginRuntime};
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

/// CPU time used so far by this process and by its waited-for children, from
/// `/proc/self/stat` (Linux, in ticks of 1/100 s); `None` where that is missing.
fn cpu_times() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name: state, ppid, … then utime, stime, cutime, cstime.
    let ticks: Vec<u64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let time = |t: u64| Duration::from_millis(t * 10);
    Some((time(ticks[0] + ticks[1]), time(ticks[2] + ticks[3])))
}

/// CPU time spent between two [`cpu_times`], by this process and its children.
fn cpu_spent(
    before: Option<(Duration, Duration)>,
    after: Option<(Duration, Duration)>,
) -> Option<Duration> {
    let ((own0, children0), (own1, children1)) = (before?, after?);
    Some(own1.saturating_sub(own0) + children1.saturating_sub(children0))
}

/// One timed download: wall-clock time, and the CPU time of the client and
/// the loopback server together (the server runs in this process).
struct Timing {
    wall: Duration,
    cpu: Option<Duration>,
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
fn curl_round(dir: &Path, url: &str, size: u64) -> Timing {
    let out = tempfile::NamedTempFile::new_in(dir).expect("a temporary file for curl");
    let cpu_before = cpu_times();
    let started = Instant::now();
    let status = Command::new("curl")
        .arg("-s")
        .arg("-o")
        .arg(out.path())
        .arg(url)
        .status()
        .expect("curl runs");
    let wall = started.elapsed();
    let cpu = cpu_spent(cpu_before, cpu_times());
    assert!(status.success(), "curl failed: {status}");
    verify("curl", out.as_file(), size);
    Timing { wall, cpu }
}

/// Ferry's download of `url` into a fresh file, timed from call to return.
fn ferry_round(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<PluginRuntime>,
    dir: &Path,
    url: &str,
    size: u64,
) -> Timing {
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
    let (result, timing) = rt.block_on(async move {
        tokio::spawn(async move {
            let job = JobContext::new("bench");
            let cpu_before = cpu_times();
            let started = Instant::now();
            let result = runtime.download(request, &job, destination).await;
            let wall = started.elapsed();
            let cpu = cpu_spent(cpu_before, cpu_times());
            (result, Timing { wall, cpu })
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
    timing
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
        PluginRuntime::with_builtins(ferry_tests::fixtures::loopback_config())
            .expect("the plugin runtime starts"),
    );
    println!(
        "plugin runtime with built-ins ready in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "downloading {size} bytes ({:.1} MiB) over loopback, {rounds} rounds; MB/s = 10^6 bytes/s",
        size as f64 / (1u64 << 20) as f64
    );

    let mut rows: Vec<Row> = Vec::new();
    for round in 1..=rounds {
        let ferry_first = round % 2 == 0;
        let (mut curl_timing, mut ferry_timing) = (None, None);
        for ferry_turn in [ferry_first, !ferry_first] {
            if ferry_turn {
                ferry_timing = Some(ferry_round(&rt, &runtime, dir.path(), &url, size));
            } else if curl {
                curl_timing = Some(curl_round(dir.path(), &url, size));
            }
        }
        let ferry_timing = ferry_timing.expect("ferry ran");
        let row = Row {
            round,
            curl: curl_timing.as_ref().map(|t| mb_per_s(size, t.wall)),
            ferry: mb_per_s(size, ferry_timing.wall),
            curl_cpu: curl_timing.and_then(|t| t.cpu).map(|c| c.as_secs_f64()),
            ferry_cpu: ferry_timing.cpu.map(|c| c.as_secs_f64()),
        };
        let order = if ferry_first {
            "ferry first"
        } else {
            "curl first"
        };
        let cpu = match (row.curl_cpu, row.ferry_cpu) {
            (Some(c), Some(f)) => format!("   CPU s: curl {c:.2}, ferry {f:.2}"),
            (None, Some(f)) => format!("   CPU s: ferry {f:.2}"),
            _ => String::new(),
        };
        match (row.curl, row.ratio()) {
            (Some(c), Some(r)) => println!(
                "round {round}: curl {c:7.1} MB/s   ferry {:7.1} MB/s   ferry/curl {r:.3}{cpu}   ({order})",
                row.ferry
            ),
            _ => println!("round {round}: ferry {:7.1} MB/s{cpu}", row.ferry),
        }
        rows.push(row);
    }

    // Medians over the rounds of each column (`None` when a column is empty).
    let column = |f: &dyn Fn(&Row) -> Option<f64>| {
        let values: Vec<f64> = rows.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(&values))
    };
    let ferry_median = column(&|r| Some(r.ferry)).expect("at least one round");
    let curl_median = column(&|r| r.curl);
    let median_ratio = column(&Row::ratio);
    let ratio_of_medians = curl_median.map(|c| ferry_median / c);
    let curl_cpu_median = column(&|r| r.curl_cpu);
    let ferry_cpu_median = column(&|r| r.ferry_cpu);
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
        "instantiate(\"http\") x{instantiations}: median {inst_median:.1} µs, p90 {inst_p90:.1} µs; \
         pooling allocator: {pooling}"
    );

    let fmt = |v: Option<f64>, precision: usize| match v {
        Some(v) => format!("{v:.precision$}"),
        None => "n/a".to_string(),
    };
    println!();
    println!("| round | curl MB/s | ferry MB/s | ferry/curl | curl CPU s | ferry CPU s |");
    println!("|------:|----------:|-----------:|-----------:|-----------:|------------:|");
    for row in &rows {
        println!(
            "| {} | {} | {:.1} | {} | {} | {} |",
            row.round,
            fmt(row.curl, 1),
            row.ferry,
            fmt(row.ratio(), 3),
            fmt(row.curl_cpu, 2),
            fmt(row.ferry_cpu, 2)
        );
    }
    println!(
        "| **median** | {} | {ferry_median:.1} | {} | {} | {} |",
        fmt(curl_median, 1),
        fmt(median_ratio, 3),
        fmt(curl_cpu_median, 2),
        fmt(ferry_cpu_median, 2)
    );
    println!();
    println!(
        "- ferry/curl: median of the per-round ratios {}, ratio of the medians {}",
        fmt(median_ratio, 3),
        fmt(ratio_of_medians, 3)
    );
    println!(
        "- body: {size} bytes, {rounds} rounds, order alternated (odd rounds curl first); \
         MB/s = 10^6 bytes/s"
    );
    println!(
        "- CPU s: CPU time of the download, the loopback server's included \
         (it runs in the benchmark's process)"
    );
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

/// One round's results.
struct Row {
    round: usize,
    /// curl's MB/s, when curl is installed.
    curl: Option<f64>,
    ferry: f64,
    curl_cpu: Option<f64>,
    ferry_cpu: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.curl.map(|c| self.ferry / c)
    }
}
