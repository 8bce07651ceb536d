//! Benchmarks of the job engine (issue: the job engine), recorded in
//! BENCHMARKS.md: job lifecycles per second (create, add, resume, complete of
//! a tiny file from a loopback server), the process's memory with 10,000
//! queued jobs, and how long opening the engine takes with 10,000 and
//! 100,000 stored jobs.
//!
//! `cargo bench -p ferry-tests --bench engine`; `FERRY_BENCH_LIFECYCLES`,
//! `FERRY_BENCH_QUEUED` and `FERRY_BENCH_STORED` (comma-separated) change
//! the sizes.

use ferry::clock::SystemClock;
use ferry::engine::{Caller, Engine, EngineConfig};
use ferry::job::{JobState, JobType, Priority};
use ferry::plugin::PluginRuntime;
use ferry::store::SledStore;
use ferry_tests::bench::setting;
use ferry_tests::server::{Resource, TestServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ME: Caller = Caller {
    uid: 1000,
    admin: false,
};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open(dir: &std::path::Path, runtime: &Arc<PluginRuntime>, config: EngineConfig) -> Engine {
    let store = SledStore::open(dir).expect("the store opens");
    Engine::open(
        config,
        Box::new(store),
        runtime.clone(),
        Arc::new(SystemClock::new()),
    )
    .expect("the engine opens")
}

fn big_config(jobs: usize) -> EngineConfig {
    EngineConfig {
        max_jobs_per_user: jobs + 1,
        max_jobs_per_machine: jobs + 1,
        // Keep them queued: nothing transfers while we measure memory.
        max_concurrent_transfers: 0,
        ..EngineConfig::default()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runtime =
        Arc::new(PluginRuntime::with_builtins(ferry_tests::fixtures::loopback_config()).unwrap());
    let server = TestServer::start().await;
    server.put("/tiny", Resource::pattern(1024));
    let url = server.url("/tiny");

    // 1. Lifecycles per second.
    let lifecycles: usize = setting("FERRY_BENCH_LIFECYCLES", 300);
    let state = tempfile::tempdir().unwrap();
    let downloads = ferry_tests::fixtures::shared_dir();
    let engine = open(state.path(), &runtime, EngineConfig::default());
    let started = Instant::now();
    for i in 0..lifecycles {
        let id = engine
            .create(ME, JobType::Download, "bench", Priority::Foreground)
            .unwrap();
        let dest = downloads.path().join(format!("f{i}"));
        engine.add_file(ME, &id, &url, &dest, Vec::new()).unwrap();
        engine.resume(ME, &id).unwrap();
        loop {
            let job = engine.get(ME, &id).unwrap();
            match job.state() {
                JobState::Transferred => break,
                JobState::Error => panic!("{:?}", job.error),
                _ => tokio::task::yield_now().await,
            }
        }
        engine.complete(ME, &id).unwrap();
    }
    let elapsed = started.elapsed();
    let per_second = lifecycles as f64 / elapsed.as_secs_f64();
    engine.shutdown().await;
    drop(engine);

    // 2. Memory with many queued jobs.
    let queued: usize = setting("FERRY_BENCH_QUEUED", 10_000);
    let state = tempfile::tempdir().unwrap();
    let before = rss_kib();
    let engine = open(state.path(), &runtime, big_config(queued));
    for i in 0..queued {
        let id = engine
            .create(ME, JobType::Download, "queued", Priority::Normal)
            .unwrap();
        let dest = downloads.path().join(format!("q{i}"));
        engine.add_file(ME, &id, &url, &dest, Vec::new()).unwrap();
        engine.resume(ME, &id).unwrap();
    }
    let after = rss_kib();
    engine.shutdown().await;
    drop(engine);

    // 3. Opening the engine on many stored jobs.
    let sizes: Vec<usize> = std::env::var("FERRY_BENCH_STORED")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let mut restarts = Vec::new();
    for stored in sizes {
        let state = tempfile::tempdir().unwrap();
        let engine = open(state.path(), &runtime, big_config(stored));
        let filling = Instant::now();
        for i in 0..stored {
            let id = engine
                .create(ME, JobType::Download, "stored", Priority::Low)
                .unwrap();
            engine
                .add_file(
                    ME,
                    &id,
                    &url,
                    &downloads.path().join(format!("s{i}")),
                    Vec::new(),
                )
                .unwrap();
        }
        let fill = filling.elapsed();
        engine.shutdown().await;
        drop(engine);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let opening = Instant::now();
        let engine = open(state.path(), &runtime, big_config(stored));
        let open_time = opening.elapsed();
        assert_eq!(engine.list(ME, false).unwrap().len(), stored);
        drop(engine);
        // Where the time goes: the store's own opening, then reading and
        // decoding every record; the rest of `open` is the engine's.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let opening = Instant::now();
        let store = SledStore::open(state.path()).expect("the store opens");
        let store_open = opening.elapsed();
        let loading = Instant::now();
        let (jobs, _) = ferry::store::JobStore::load_all(&store).expect("the jobs load");
        let load = loading.elapsed();
        assert_eq!(jobs.len(), stored);
        drop((jobs, store));
        restarts.push((stored, open_time, fill, store_open, load));
    }

    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| job lifecycles (create, add, resume, complete of 1 KiB) | {per_second:.0} per second ({lifecycles} in {elapsed:.2?}) |"
    );
    println!(
        "| memory with {queued} queued jobs | +{} MiB RSS ({} KiB per job) |",
        (after.saturating_sub(before)) / 1024,
        after.saturating_sub(before) / queued.max(1) as u64
    );
    for (stored, open_time, fill, store_open, load) in restarts {
        println!(
            "| opening the engine on {stored} stored jobs | {open_time:.2?} (storing them took {fill:.2?}; again: sled opens in {store_open:.2?}, reading and decoding every record {load:.2?}) |"
        );
    }
}
