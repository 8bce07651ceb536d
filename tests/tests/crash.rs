//! Crash safety with a real process: the engine runs in `engine-runner`,
//! which is killed with SIGKILL at random moments during a multi-file
//! download and started again, until the job is done.

use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FILES: u64 = 4;
const SIZE: u64 = 3 << 20;
/// The server's pace, so that a run is long enough to be killed in.
const RATE: u64 = 6 << 20;
const CHECKPOINT_BYTES: u64 = 256 << 10;

fn runner(state: &std::path::Path, pairs: &[(String, std::path::PathBuf)]) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engine-runner"));
    command
        .arg(state)
        .env("FERRY_CHECKPOINT_BYTES", CHECKPOINT_BYTES.to_string());
    for (url, path) in pairs {
        command.arg(url).arg(path);
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the runner starts")
}

/// Body bytes the server sent for all files so far.
fn sent(server: &TestServer) -> u64 {
    (0..FILES)
        .map(|i| server.bytes_sent(&format!("/f{i}")))
        .sum()
}

/// A small pseudo-random sequence (no extra dependency; seeded by the clock
/// and printed so a failing run can be told apart).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_engine_at_random_moments_loses_nothing() {
    let server = TestServer::start().await;
    let downloads = ferry_tests::fixtures::shared_dir();
    let state = tempfile::tempdir().unwrap();
    let mut pairs = Vec::new();
    for i in 0..FILES {
        let path = format!("/f{i}");
        server.put(&path, Resource::pattern(SIZE + i * 1000).slow(RATE));
        pairs.push((server.url(&path), downloads.path().join(format!("f{i}"))));
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut random = Lcg(seed);
    let mut crashes = 0u64;
    let finished = loop {
        let mut child = runner(state.path(), &pairs);
        if crashes >= 8 {
            break child;
        }
        // Kill it at a random moment once bytes are moving.
        let before = sent(&server);
        for _ in 0..1500 {
            if sent(&server) > before || child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(random.below(600))).await;
        if child.try_wait().unwrap().is_some() {
            // Finished before it could be killed.
            break child;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        crashes += 1;
        // What the store says after the crash is what the next run trusts:
        // it is checked by the final comparison below.
    };
    let output = tokio::task::spawn_blocking(move || finished.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "the last run failed");
    assert!(String::from_utf8_lossy(&output.stdout).contains("done"));
    for (i, (_, path)) in pairs.iter().enumerate() {
        let len = SIZE + i as u64 * 1000;
        assert_eq!(
            std::fs::read(path).unwrap(),
            pattern_bytes(0..len),
            "file {i} differs"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(downloads.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let total: u64 = (0..FILES).map(|i| SIZE + i * 1000).sum();
    let refetched = sent(&server) - total;
    // One checkpoint interval is CHECKPOINT_BYTES or 100 ms of transfer at
    // RATE, whichever comes first; add the server's 256 KiB write chunk and
    // the checkpoint poll (50 ms) as transport slack.
    let per_crash = CHECKPOINT_BYTES.max(RATE / 10) + (256 << 10) + RATE / 20;
    println!(
        "{crashes} crashes, {refetched} bytes fetched again (bound {} per crash)",
        per_crash
    );
    assert!(crashes > 0, "the run was never interrupted");
    assert!(
        refetched <= crashes * per_crash,
        "{refetched} bytes fetched again after {crashes} crashes"
    );
}
