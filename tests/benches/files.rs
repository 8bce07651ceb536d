//! Many small files, end to end, against real peers: 2,000 files of 16 KiB
//! in 10 jobs through the real daemon and its socket (batch add, resume,
//! wait for `transferred`, `complete`), against `aria2c -j16` fetching the
//! same files from the same nginx, in the same run, rounds alternated.
//!
//! nginx and aria2c are found on `PATH` (or in `/usr/sbin`); when either is
//! missing the benchmark says how to install it and stops. Run:
//! `cargo bench -p ferry-tests --bench files` (`FERRY_BENCH_FILES`,
//! `FERRY_BENCH_FILE_BYTES`, `FERRY_BENCH_ROUNDS` change the sizes).

use ferry::cli::client::Client;
use ferry_tests::bench::{find, setting, store_counters};
use ferry_tests::daemon::{Daemon, wait_for_job};
use ferry_tests::nginx::Nginx;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const JOBS: usize = 10;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// Ferry: the files in `JOBS` jobs, each added in one batch, all resumed,
/// waited for and completed through the CLI against the real daemon.
fn ferry_round(daemon: &Daemon, urls: &[String], into: &Path) -> Duration {
    std::fs::create_dir_all(into).unwrap();
    let started = Instant::now();
    let per_job = urls.len().div_ceil(JOBS);
    let mut ids = Vec::new();
    for (j, chunk) in urls.chunks(per_job).enumerate() {
        let id = daemon.run(ferry(), &["create", "--json"]).ok().json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let list: String = chunk
            .iter()
            .enumerate()
            .map(|(n, url)| format!("{url} {}\n", into.join(format!("{j}-{n}")).display()))
            .collect();
        let list_file = into.join(format!("list-{j}"));
        std::fs::write(&list_file, list).unwrap();
        daemon
            .run(
                ferry(),
                &["add", &id, "--list", list_file.to_str().unwrap()],
            )
            .ok();
        daemon.run(ferry(), &["resume", &id]).ok();
        ids.push(id);
    }
    for id in &ids {
        wait_for_job(daemon, ferry(), id, |v| v["state"] == "transferred");
        daemon.run(ferry(), &["complete", id]).ok();
    }
    started.elapsed()
}

/// aria2c with 16 parallel downloads, from an input file.
fn aria2_round(aria2: &Path, urls: &[String], into: &Path) -> Duration {
    std::fs::create_dir_all(into).unwrap();
    let list = into.join("aria2-input");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let started = Instant::now();
    let status = Command::new(aria2)
        .args([
            "-q",
            "-j16",
            "--file-allocation=none",
            "--allow-overwrite=true",
        ])
        .arg("-d")
        .arg(into)
        .arg("-i")
        .arg(&list)
        .status()
        .expect("aria2c runs");
    let elapsed = started.elapsed();
    assert!(status.success(), "aria2c failed");
    elapsed
}

fn main() {
    let files: usize = setting("FERRY_BENCH_FILES", 2000);
    let bytes: usize = setting("FERRY_BENCH_FILE_BYTES", 16 << 10);
    let rounds: usize = setting("FERRY_BENCH_ROUNDS", 3);
    let (Some(nginx), Some(aria2)) = (find("nginx"), find("aria2c")) else {
        eprintln!("this benchmark needs nginx and aria2c: apt-get install -y nginx aria2");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    for n in 0..files {
        let body: Vec<u8> = (0..bytes).map(|i| ((i * 31 + n) % 251) as u8).collect();
        std::fs::write(root.join(format!("f{n}")), body).unwrap();
    }
    let server = Nginx::start(&nginx, &root, &work.path().join("nginx"));
    let urls: Vec<String> = (0..files)
        .map(|n| format!("http://127.0.0.1:{}/f{n}", server.port))
        .collect();
    let mut daemon = Daemon::new(&format!(
        "\n[limits]\nmax-files-per-job = {}\nmax-jobs-per-user = 10000\nmax-jobs-per-machine = 10000\nmax-concurrent-transfers = 16\n\
         \n[plugins.grants]\nhttp = [\"127.0.0.1\"]\n",
        files.div_ceil(JOBS)
    ));
    daemon.start(ferry());
    println!("{files} files of {bytes} bytes in {JOBS} jobs, {rounds} rounds, order alternated");
    // One untimed round of each first: the first fetches from a fresh nginx
    // ran at about half the speed of the later ones, whoever made them.
    let warm_up = work.path().join("warm-up");
    aria2_round(&aria2, &urls, &warm_up.join("aria2"));
    ferry_round(&daemon, &urls, &warm_up.join("ferry"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let counters = || {
        runtime.block_on(async {
            let mut client = Client::connect(&daemon.socket).await.unwrap();
            store_counters(&mut client).await
        })
    };
    let before = counters();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let out = work.path().join(format!("round{round}"));
        let (ferry_time, aria2_time) = if round % 2 == 0 {
            let a = aria2_round(&aria2, &urls, &out.join("aria2"));
            (ferry_round(&daemon, &urls, &out.join("ferry")), a)
        } else {
            let f = ferry_round(&daemon, &urls, &out.join("ferry"));
            (f, aria2_round(&aria2, &urls, &out.join("aria2")))
        };
        for n in [0, files / 2, files - 1] {
            let want = std::fs::read(root.join(format!("f{n}"))).unwrap();
            let per_job = files.div_ceil(JOBS);
            let got = std::fs::read(out.join("ferry").join(format!(
                "{}-{}",
                n / per_job,
                n % per_job
            )));
            assert_eq!(got.unwrap(), want, "ferry's file {n}");
            assert_eq!(
                std::fs::read(out.join("aria2").join(format!("f{n}"))).unwrap(),
                want
            );
        }
        let rate = |d: Duration| files as f64 / d.as_secs_f64();
        let ratio = rate(ferry_time) / rate(aria2_time);
        ratios.push(ratio);
        println!(
            "round {}: ferry {:>7.0} files/s   aria2 -j16 {:>7.0} files/s   ferry/aria2 {ratio:.3}   ({} first)",
            round + 1,
            rate(ferry_time),
            rate(aria2_time),
            if round % 2 == 0 { "aria2" } else { "ferry" }
        );
        // The outputs stay until the end: on ext4 without a journal, an
        // inode freed in the last minutes is skipped, one by one, by every
        // file created after it (`recently_deleted`), so deleting 4,000
        // files here made the next round's side pay for it.
    }
    let after = counters();
    let (writes, flushes) = (after.0 - before.0, after.1 - before.1);
    if flushes > 0.0 {
        println!(
            "store over ferry's rounds: {writes} changes in {flushes} flushes ({:.1} a file, {:.2} flushes a file)",
            writes / (files * rounds) as f64,
            flushes / (files * rounds) as f64
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ferry/aria2: median {:.3}, lowest {:.3}, highest {:.3}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    let _ = daemon.terminate();
}
