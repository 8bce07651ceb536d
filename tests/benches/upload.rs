//! 1 GiB uploaded to a real tus server (`@tus/server` with `@tus/file-store`,
//! as the tests install it), through the real daemon (`ferry upload SRC URL
//! --protocol tus`, `complete` included), against curl sending the same
//! bytes as one tus `PATCH` to an upload it created with one `POST`, in the
//! same run, rounds alternated.
//!
//! Each round also prints what the server (node, the bottleneck of both
//! sides) spent on each side's bytes: CPU time and `read` calls, from
//! `/proc`.
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

/// What a process used so far: CPU seconds in user space and in the kernel,
/// `read`-family calls, bytes those calls returned.
#[derive(Clone, Copy)]
struct Usage {
    user: f64,
    system: f64,
    reads: u64,
    read_bytes: u64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server runs");
        // The fields after the command's closing parenthesis; utime and
        // stime are the 14th and 15th of the whole line.
        let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks = |i: usize| fields[i].parse::<f64>().unwrap_or(0.0);
        // SAFETY: sysconf only reads a setting.
        let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Usage {
            user: ticks(11) / hz,
            system: ticks(12) / hz,
            reads: field("syscr:"),
            read_bytes: field("rchar:"),
        }
    }

    fn since(self, before: Usage) -> Usage {
        Usage {
            user: self.user - before.user,
            system: self.system - before.system,
            reads: self.reads - before.reads,
            read_bytes: self.read_bytes - before.read_bytes,
        }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s CPU ({:.2} user, {:.2} kernel), {} reads of {:.0} KiB on average",
            self.user + self.system,
            self.user,
            self.system,
            self.reads,
            self.read_bytes as f64 / self.reads.max(1) as f64 / 1024.0
        )
    }
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
        let measured = |side: &dyn Fn() -> Duration| {
            let before = Usage::of(server.pid());
            let took = side();
            (took, Usage::of(server.pid()).since(before))
        };
        let by_curl = || curl_round(&server, &file, size);
        let by_ferry = || ferry_round(&daemon, &server, &file);
        let ((ferry_time, ferry_use), (curl_time, curl_use)) = if round % 2 == 0 {
            settle();
            let c = measured(&by_curl);
            settle();
            (measured(&by_ferry), c)
        } else {
            settle();
            let f = measured(&by_ferry);
            settle();
            (f, measured(&by_curl))
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
        println!("  the server on curl's bytes:  {curl_use}");
        println!("  the server on ferry's bytes: {ferry_use}");
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
