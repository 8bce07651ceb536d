//! A process that runs the job engine on a state directory, for the crash
//! tests: they kill it at random moments and start it again.
//!
//! `engine-runner STATE_DIR [URL DEST]...`: on a store without jobs, creates
//! one download job with the given files and resumes it; then runs the
//! engine until every job is transferred, completes them, prints `done` and
//! exits. Checkpoints are small and frequent (`FERRY_CHECKPOINT_BYTES`,
//! default 256 KiB; every 100 ms) so the tests can bound what a crash costs.

use ferry::clock::SystemClock;
use ferry::engine::{Caller, Engine, EngineConfig};
use ferry::job::{JobState, JobType, Priority};
use ferry::plugin::{PluginRuntime, RuntimeConfig};
use ferry::store::SledStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state = PathBuf::from(&args[0]);
    let checkpoint_bytes = std::env::var("FERRY_CHECKPOINT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 * 1024);
    let config = EngineConfig {
        checkpoint_bytes,
        checkpoint_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let runtime = PluginRuntime::with_builtins(RuntimeConfig {
        cache_dir: Some(state.join("plugin-cache")),
        ..RuntimeConfig::default()
    })
    .expect("the plugin runtime starts");
    let store = SledStore::open(&state.join("store")).expect("the store opens");
    let engine = Engine::open(
        config,
        Box::new(store),
        Arc::new(runtime),
        Arc::new(SystemClock::new()),
    )
    .expect("the engine opens");
    let me = Caller::user(1000);
    if engine.list(me, false).unwrap().is_empty() {
        let id = engine
            .create(me, JobType::Download, "crash", Priority::Normal)
            .unwrap();
        for pair in args[1..].chunks(2) {
            engine
                .add_file(me, &id, &pair[0], &PathBuf::from(&pair[1]), Vec::new())
                .unwrap();
        }
        engine.resume(me, &id).unwrap();
        println!("created {id}");
    }
    let _ticker = engine.spawn_ticker(Duration::from_millis(100));
    loop {
        let jobs = engine.list(me, false).unwrap();
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            match job.state {
                JobState::Transferred => {
                    engine.complete(me, &job.id).unwrap();
                }
                JobState::Error => panic!("job failed: {:?}", job.error),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown().await;
    println!("done");
}
