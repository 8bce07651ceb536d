//! 1 GiB uploaded to a real tus server (`@tus/server` with `@tus/file-store`,
//! as the tests install it), through the real daemon (`ferry upload SRC URL
//! --protocol tus`, `complete` included), against curl sending the same
//! bytes as one tus `PATCH` to an upload it created with one `POST`, in the
//! same run, rounds alternated.
//!
//! Run: `cargo bench -p ferry-tests --bench upload` (`FERRY_BENCH_BYTES`,
//! `FERRY_BENCH_ROUNDS`).

use ferry_tests::bench::setting;
use ferry_tests::daemon::Daemon;
use ferry_tests::tus::TusServer;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// curl: create the upload (`POST`), then send every byte in one `PATCH`.
fn curl_round(server: &TusServer, file: &Path, size: u64) -> Duration {
    let started = Instant::now();
    let created = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST"])
        .args(["-H", "Tus-Resumable: 1.0.0"])
        .args(["-H", &format!("Upload-Length: {size}")])
        .arg(server.url())
        .output()
        .expect("curl runs");
    let head = String::from_utf8_lossy(&created.stdout);
    let location = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("the server created an upload");
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{}{location}", server.addr())
    };
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-f", "-X", "PATCH"])
        .args(["-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0"])
        .args(["-H", "Content-Type: application/offset+octet-stream"])
        // `-T` streams the file (`--data-binary @FILE` would read it into memory).
        .arg("-T")
        .arg(file)
        .arg(&location)
        .status()
        .expect("curl runs");
    assert!(status.success(), "curl's PATCH failed");
    started.elapsed()
}

/// Ferry: `ferry upload` through the daemon, `complete` included.
fn ferry_round(daemon: &Daemon, server: &TusServer, file: &Path) -> Duration {
    let started = Instant::now();
    let run = daemon.run(
        ferry(),
        &[
            "upload",
            file.to_str().unwrap(),
            &server.url(),
            "--protocol",
            "tus",
        ],
    );
    let elapsed = started.elapsed();
    assert_eq!(run.status, 0, "ferry upload failed: {}", run.stderr);
    elapsed
}

fn main() {
    let size: u64 = setting("FERRY_BENCH_BYTES", 1 << 30);
    let rounds: u64 = setting("FERRY_BENCH_ROUNDS", 5);
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("this benchmark needs curl: apt-get install -y curl");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("source.bin");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for n in 0..size.div_ceil(1 << 20) {
            for (i, b) in block.iter_mut().enumerate() {
                *b = ((n as usize * 7 + i * 31) % 251) as u8;
            }
            let take = (size - n * (1 << 20)).min(1 << 20) as usize;
            out.write_all(&block[..take]).unwrap();
        }
    }
    let server = TusServer::start();
    let mut daemon = Daemon::new("\n[plugins.grants]\nhttp = [\"127.0.0.1\"]\n");
    daemon.start(ferry());
    println!(
        "uploading {size} bytes ({:.1} MiB) to @tus/server on loopback, {rounds} rounds; MB/s = 10^6 bytes/s",
        size as f64 / (1 << 20) as f64
    );
    let mb_s = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Each side starts with the server's disk clean: the other side's
        // gigabyte written back (`sync`) and deleted, so that neither pays for
        // the other's writeback.
        let settle = || {
            server.delete_uploads();
            let _ = Command::new("sync").status();
        };
        let (ferry_time, curl_time) = if round % 2 == 0 {
            settle();
            let c = curl_round(&server, &file, size);
            settle();
            (ferry_round(&daemon, &server, &file), c)
        } else {
            settle();
            let f = ferry_round(&daemon, &server, &file);
            settle();
            (f, curl_round(&server, &file, size))
        };
        server.delete_uploads();
        let ratio = mb_s(ferry_time) / mb_s(curl_time);
        ratios.push(ratio);
        println!(
            "round {}: curl {:>7.1} MB/s   ferry {:>7.1} MB/s   ferry/curl {ratio:.3}   ({} first)",
            round + 1,
            mb_s(curl_time),
            mb_s(ferry_time),
            if round % 2 == 0 { "curl" } else { "ferry" }
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ferry/curl: median {:.3}, lowest {:.3}, highest {:.3}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    let _ = daemon.terminate();
}
