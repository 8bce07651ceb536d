//! 1 GiB fetched with `ferry get URL DEST` through the real daemon and its
//! socket (the job created, resumed, followed and completed by the CLI, so
//! `complete`'s rename and syncs are in), against curl fetching the same
//! file from the same nginx in the same run (`curl -s -o FILE URL`), and
//! against curl followed by an `fsync` of its file: Ferry's file is durable
//! when `ferry get` returns, curl's is not until it is synced. The order
//! alternates from round to round, and the machine's dirty pages are
//! written out (untimed) before each download, so no contender pays for
//! the last one's writeback.
//!
//! nginx and curl are found on `PATH` (or in `/usr/sbin`); when either is
//! missing the benchmark says how to install them and stops. Run:
//! `cargo bench -p ferry-tests --bench get` (`FERRY_BENCH_BYTES`,
//! `FERRY_BENCH_ROUNDS`; files go to the system temporary directory, set
//! `TMPDIR` to choose the filesystem).

use ferry_tests::bench::{find, setting};
use ferry_tests::daemon::Daemon;
use ferry_tests::nginx::Nginx;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// The served file's bytes: a 1 MiB block of varied bytes, each copy
/// stamped with its index, so a misplaced block shows.
fn block(index: u64) -> Vec<u8> {
    let mut block: Vec<u8> = (0..1u64 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    block[..8].copy_from_slice(&index.to_le_bytes());
    block
}

fn write_source(path: &Path, bytes: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for index in 0..bytes.div_ceil(1 << 20) {
        let block = block(index);
        let left = (bytes - (index << 20)).min(1 << 20) as usize;
        file.write_all(&block[..left]).unwrap();
    }
    file.flush().unwrap();
}

/// The size, and the first bytes of the first, middle and last blocks.
fn check(source: &Path, copy: &Path, who: &str) {
    let (a, b) = (
        std::fs::File::open(source).unwrap(),
        std::fs::File::open(copy).unwrap(),
    );
    let len = a.metadata().unwrap().len();
    assert_eq!(
        b.metadata().unwrap().len(),
        len,
        "{who}'s file has the size"
    );
    let blocks = len.div_ceil(1 << 20);
    for index in [0, blocks / 2, blocks - 1] {
        let (mut x, mut y) = (vec![0; 4096], vec![0; 4096]);
        let n = a.read_at(&mut x, index << 20).unwrap();
        b.read_at(&mut y, index << 20).unwrap();
        assert_eq!(x[..n], y[..n], "{who}'s block {index}");
    }
}

/// Writes every dirty page out, so the next download starts clean.
fn settle() {
    Command::new("sync").status().expect("sync runs");
}

/// curl's time, and the time of the `fsync` after it.
fn curl_round(url: &str, dest: &Path) -> (Duration, Duration) {
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["-s", "-f", "-o"])
        .arg(dest)
        .arg(url)
        .status()
        .expect("curl runs");
    let fetched = started.elapsed();
    assert!(status.success(), "curl failed");
    let synced = Instant::now();
    std::fs::File::open(dest).unwrap().sync_all().unwrap();
    (fetched, synced.elapsed())
}

fn ferry_round(daemon: &Daemon, url: &str, dest: &Path) -> Duration {
    let started = Instant::now();
    daemon
        .run(ferry(), &["get", url, dest.to_str().unwrap()])
        .ok();
    started.elapsed()
}

fn main() {
    let bytes: u64 = setting("FERRY_BENCH_BYTES", 1 << 30);
    let rounds: usize = setting("FERRY_BENCH_ROUNDS", 5);
    let (Some(nginx), Some(_)) = (find("nginx"), find("curl")) else {
        eprintln!("this benchmark needs nginx and curl: apt-get install -y nginx curl");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let source = root.join("big");
    write_source(&source, bytes);
    let server = Nginx::start(&nginx, &root, &work.path().join("nginx"));
    let url = format!("http://127.0.0.1:{}/big", server.port);
    let mut daemon = Daemon::new("\n[plugins.grants]\nhttp = [\"127.0.0.1\"]\n");
    daemon.start(ferry());
    let mb_s = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!("{bytes} bytes, {rounds} rounds, order alternated; MB/s = 10^6 bytes/s");
    println!(
        "round | curl MB/s | curl+fsync MB/s | ferry get MB/s | ferry/curl | ferry/(curl+fsync) | first"
    );
    let (mut over_curl, mut over_synced) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (ferry_dest, curl_dest) = (work.path().join("ferry.out"), work.path().join("curl.out"));
        let ferry_first = round % 2 == 1;
        let mut ferry_time = Duration::ZERO;
        if ferry_first {
            settle();
            ferry_time = ferry_round(&daemon, &url, &ferry_dest);
        }
        settle();
        let (curl_time, fsync_time) = curl_round(&url, &curl_dest);
        if !ferry_first {
            settle();
            ferry_time = ferry_round(&daemon, &url, &ferry_dest);
        }
        check(&source, &curl_dest, "curl");
        check(&source, &ferry_dest, "ferry");
        std::fs::remove_file(&ferry_dest).unwrap();
        std::fs::remove_file(&curl_dest).unwrap();
        let synced_time = curl_time + fsync_time;
        let (a, b) = (
            curl_time.as_secs_f64() / ferry_time.as_secs_f64(),
            synced_time.as_secs_f64() / ferry_time.as_secs_f64(),
        );
        over_curl.push(a);
        over_synced.push(b);
        println!(
            "{:>5} | {:>9.1} | {:>15.1} | {:>14.1} | {a:>10.3} | {b:>18.3} | {}",
            round + 1,
            mb_s(curl_time),
            mb_s(synced_time),
            mb_s(ferry_time),
            if ferry_first { "ferry" } else { "curl" }
        );
    }
    for (name, ratios) in [
        ("ferry/curl", &mut over_curl),
        ("ferry/(curl+fsync)", &mut over_synced),
    ] {
        ratios.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.3}, lowest {:.3}, highest {:.3}",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    let _ = daemon.terminate();
}
