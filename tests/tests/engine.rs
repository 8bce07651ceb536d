//! The job engine with its real store (sled), the real plugin runtime and a
//! real HTTP server on loopback; time comes from a clock the tests move.

use ferry::clock::{Clock, ManualClock};
use ferry::engine::{Caller, Engine, EngineConfig, Setting};
use ferry::job::{ByteRange, JobState, JobType, Priority};
use ferry::plugin::PluginRuntime;
use ferry_tests::fixtures::{StateDir, open_to_all, shared_dir};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const ALICE: Caller = Caller {
    uid: 1000,
    admin: false,
};
const BOB: Caller = Caller {
    uid: 1001,
    admin: false,
};
const ROOT: Caller = Caller {
    uid: 0,
    admin: true,
};
const DAY: Duration = Duration::from_secs(24 * 3600);

/// An engine on a store in a temporary directory, downloading into another.
struct Harness {
    engine: Option<Engine>,
    clock: Arc<ManualClock>,
    runtime: Arc<PluginRuntime>,
    state: StateDir,
    downloads: tempfile::TempDir,
    config: EngineConfig,
}

impl Harness {
    fn new(config: EngineConfig) -> Harness {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let runtime = Arc::new(
            PluginRuntime::with_builtins(ferry_tests::fixtures::loopback_config()).unwrap(),
        );
        let state = StateDir::new();
        let store = state.open_store().unwrap();
        let engine = Engine::open(
            config.clone(),
            Box::new(store),
            runtime.clone(),
            clock.clone(),
        )
        .unwrap();
        Harness {
            engine: Some(engine),
            clock,
            runtime,
            state,
            downloads: shared_dir(),
            config,
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the engine is open")
    }

    fn default() -> Harness {
        Harness::new(EngineConfig::default())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.downloads.path().join(name)
    }

    /// Shuts the engine down and opens a new one on the same store, as a
    /// restarted daemon would.
    async fn restart(&mut self) {
        self.engine().shutdown().await;
        self.engine = None;
        self.engine = Some(self.open_again().await);
    }

    async fn open_again(&self) -> Engine {
        // The old engine's last tasks let go of the store's lock shortly.
        for _ in 0..500 {
            if let Ok(store) = self.state.open_store() {
                return Engine::open(
                    self.config.clone(),
                    Box::new(store),
                    self.runtime.clone(),
                    self.clock.clone(),
                )
                .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the store stayed locked");
    }

    /// Waits (up to a minute) until job `id` is in `state`.
    async fn wait_for(&self, id: &str, state: JobState) {
        for _ in 0..3000 {
            match self.engine().get(ROOT, id) {
                Ok(job) if job.state() == state => return,
                Err(_) if state.is_final() => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let job = self.engine().get(ROOT, id).ok();
        panic!("job never reached {state:?}: {job:#?}");
    }

    fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.downloads.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }
}

fn download_job(h: &Harness, files: &[(&str, &Path)]) -> String {
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "test", Priority::Normal)
        .unwrap();
    for (url, path) in files {
        h.engine()
            .add_file(ALICE, &id, url, path, Vec::new())
            .unwrap();
    }
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_job_runs_from_create_to_complete() {
    let server = TestServer::start().await;
    server.put("/a", Resource::pattern(300_000));
    server.put("/b", Resource::pattern(5_000_000));
    let h = Harness::default();
    let (a, b) = (h.path("a.bin"), h.path("b.bin"));
    let id = download_job(&h, &[(&server.url("/a"), &a), (&server.url("/b"), &b)]);
    let mut events = h.engine().subscribe();
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap().state(),
        JobState::Suspended,
        "new jobs start suspended"
    );
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    let job = h.engine().get(ALICE, &id).unwrap();
    assert!(job.files.iter().all(|f| f.complete));
    assert_eq!(job.progress().bytes_transferred, 5_300_000);
    assert_eq!(job.progress().bytes_total, Some(5_300_000));
    assert!(job.transfer_completed.is_some());
    assert!(
        !a.exists() && !b.exists(),
        "nothing is in place before complete"
    );

    let completion = h.engine().complete(ALICE, &id).unwrap();
    assert!(!completion.partial);
    assert_eq!(std::fs::read(&a).unwrap(), pattern_bytes(0..300_000));
    assert_eq!(std::fs::read(&b).unwrap(), pattern_bytes(0..5_000_000));
    assert!(h.temp_files().is_empty());
    assert!(
        h.engine().list(ALICE, false).unwrap().is_empty(),
        "a completed job leaves the queue"
    );
    assert_eq!(h.engine().get(ALICE, &id).unwrap_err().code(), "not-found");

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    let states: Vec<_> = seen.iter().map(|e| e.state).collect();
    for state in [
        JobState::Queued,
        JobState::Connecting,
        JobState::Transferring,
        JobState::Transferred,
    ] {
        assert!(
            states.contains(&state),
            "no event for {state:?}: {states:?}"
        );
    }
    let files_done = seen
        .iter()
        .filter(|e| matches!(e.kind, ferry::events::EventKind::FileTransferred { .. }))
        .count();
    assert_eq!(files_done, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_in_the_middle_keeps_exactly_the_finished_files() {
    let server = TestServer::start().await;
    server.put("/done", Resource::pattern(100_000));
    server.put("/slow", Resource::pattern(20_000_000).slow(200_000));
    server.put("/never", Resource::pattern(1_000));
    let h = Harness::default();
    let (done, slow, never) = (h.path("done"), h.path("slow"), h.path("never"));
    let id = download_job(
        &h,
        &[
            (&server.url("/done"), &done),
            (&server.url("/slow"), &slow),
            (&server.url("/never"), &never),
        ],
    );
    h.engine().resume(ALICE, &id).unwrap();
    for _ in 0..3000 {
        let job = h.engine().get(ALICE, &id).unwrap();
        if job.files[0].complete && job.files[1].bytes_transferred > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let completion = h.engine().complete(ALICE, &id).unwrap();
    assert!(completion.partial);
    assert_eq!(completion.files, vec![done.clone()]);
    assert_eq!(std::fs::read(&done).unwrap(), pattern_bytes(0..100_000));
    assert!(!slow.exists() && !never.exists());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.temp_files().is_empty(),
        "partial files are deleted: {:?}",
        h.temp_files()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_leaves_no_temporary_file_behind() {
    let server = TestServer::start().await;
    server.put("/slow", Resource::pattern(20_000_000).slow(500_000));
    let h = Harness::default();
    let id = download_job(&h, &[(&server.url("/slow"), &h.path("x"))]);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferring).await;
    assert_eq!(h.temp_files().len(), 1);
    h.engine().cancel(ALICE, &id).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.temp_files().is_empty(), "{:?}", h.temp_files());
    assert!(!h.path("x").exists());
    assert!(h.engine().list(ALICE, false).unwrap().is_empty());
    assert_eq!(
        h.engine().resume(ALICE, &id).unwrap_err().code(),
        "not-found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_and_resume_continue_where_the_bytes_stopped() {
    let server = TestServer::start().await;
    let len = 8_000_000;
    server.put("/f", Resource::pattern(len).slow(2_000_000));
    let config = EngineConfig {
        checkpoint_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let h = Harness::new(config);
    let id = download_job(&h, &[(&server.url("/f"), &h.path("f"))]);
    h.engine().resume(ALICE, &id).unwrap();
    for _ in 0..3000 {
        if h.engine().get(ALICE, &id).unwrap().files[0].bytes_transferred > 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.engine().suspend(ALICE, &id).unwrap();
    let kept = h.engine().get(ALICE, &id).unwrap().files[0].bytes_transferred;
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap().state(),
        JobState::Suspended
    );
    server.update("/f", |r| r.apply(|r| r.slow(u64::MAX / 4)));
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    assert_eq!(std::fs::read(h.path("f")).unwrap(), pattern_bytes(0..len));
    let ranged = server
        .requests_for("/f")
        .into_iter()
        .filter(|r| r.header("range").is_some())
        .count();
    assert!(
        ranged >= 1,
        "the second run resumed with a range (kept {kept})"
    );
    assert!(server.bytes_sent("/f") < 2 * len - kept + 4_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_continues_from_the_checkpoint() {
    let server = TestServer::start().await;
    let len = 6_000_000;
    server.put("/f", Resource::pattern(len).slow(2_000_000));
    let config = EngineConfig {
        checkpoint_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let mut h = Harness::new(config);
    let id = download_job(&h, &[(&server.url("/f"), &h.path("f"))]);
    h.engine().resume(ALICE, &id).unwrap();
    for _ in 0..3000 {
        if h.engine().get(ALICE, &id).unwrap().files[0].bytes_transferred > 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.restart().await;
    let job = h.engine().get(ALICE, &id).unwrap();
    assert_eq!(
        job.state(),
        JobState::Queued,
        "an interrupted transfer is queued again"
    );
    let recorded = job.files[0].bytes_transferred;
    assert!(recorded > 1_000_000);
    server.update("/f", |r| r.apply(|r| r.slow(u64::MAX / 4)));
    h.engine().tick();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    assert_eq!(std::fs::read(h.path("f")).unwrap(), pattern_bytes(0..len));
    let last = server.requests_for("/f").into_iter().last().unwrap();
    assert_eq!(
        last.header("range"),
        Some(format!("bytes={recorded}-").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn byte_ranges_are_packed_in_the_order_given() {
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(1_000_000));
    let h = Harness::default();
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "ranges", Priority::High)
        .unwrap();
    let ranges = vec![
        ByteRange {
            offset: 500_000,
            length: 1_000,
        },
        ByteRange {
            offset: 10,
            length: 20,
        },
        ByteRange {
            offset: 900_000,
            length: 100_000,
        },
    ];
    h.engine()
        .add_file(ALICE, &id, &server.url("/f"), &h.path("r"), ranges)
        .unwrap();
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap().files[0].bytes_total,
        Some(101_020)
    );
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    let mut expected = pattern_bytes(500_000..501_000);
    expected.extend(pattern_bytes(10..30));
    expected.extend(pattern_bytes(900_000..1_000_000));
    assert_eq!(std::fs::read(h.path("r")).unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_files_and_ranges_is_checked() {
    let h = Harness::new(EngineConfig {
        max_files_per_job: 2,
        max_ranges_per_file: 2,
        ..EngineConfig::default()
    });
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "", Priority::Normal)
        .unwrap();
    let url = "http://127.0.0.1:9/x";
    let code = |r: Result<(), ferry::job::JobRefusal>| r.unwrap_err().code().to_string();
    assert_eq!(code(h.engine().resume(ALICE, &id)), "empty");
    assert_eq!(
        code(
            h.engine()
                .add_file(ALICE, &id, url, Path::new("relative"), vec![])
        ),
        "invalid-local-path"
    );
    assert_eq!(
        code(
            h.engine()
                .add_file(ALICE, &id, "nota url", &h.path("a"), vec![])
        ),
        "invalid-url"
    );
    assert_eq!(
        code(
            h.engine()
                .add_file(ALICE, &id, "gopher://x/y", &h.path("a"), vec![])
        ),
        "unsupported-scheme"
    );
    let r = |offset, length| ByteRange { offset, length };
    assert_eq!(
        code(
            h.engine()
                .add_file(ALICE, &id, url, &h.path("a"), vec![r(0, 5), r(3, 5)])
        ),
        "overlapping-ranges"
    );
    assert_eq!(
        code(h.engine().add_file(
            ALICE,
            &id,
            url,
            &h.path("a"),
            vec![r(0, 1), r(2, 1), r(4, 1)]
        )),
        "too-many-ranges"
    );
    h.engine()
        .add_file(ALICE, &id, url, &h.path("a"), vec![])
        .unwrap();
    h.engine()
        .add_file(ALICE, &id, url, &h.path("b"), vec![])
        .unwrap();
    assert_eq!(
        code(h.engine().add_file(ALICE, &id, url, &h.path("c"), vec![])),
        "too-many-files"
    );

    let source = h.path("source");
    std::fs::write(&source, b"payload").unwrap();
    let up = h
        .engine()
        .create(ALICE, JobType::Upload, "", Priority::Normal)
        .unwrap();
    h.engine()
        .add_file(ALICE, &up, url, &source, vec![])
        .unwrap();
    assert_eq!(
        h.engine().get(ALICE, &up).unwrap().files[0].bytes_total,
        Some(7)
    );
    assert_eq!(
        code(h.engine().add_file(ALICE, &up, url, &source, vec![])),
        "too-many-files"
    );
    assert_eq!(
        code(h.engine().complete(ALICE, &up).map(|_| ())),
        "invalid-state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_per_user_and_per_machine() {
    let h = Harness::new(EngineConfig {
        max_jobs_per_user: 2,
        max_jobs_per_machine: 4,
        ..EngineConfig::default()
    });
    let create = |caller| {
        h.engine()
            .create(caller, JobType::Download, "", Priority::Normal)
    };
    create(ALICE).unwrap();
    create(ALICE).unwrap();
    assert_eq!(create(ALICE).unwrap_err().code(), "too-many-jobs-per-user");
    create(BOB).unwrap();
    create(ROOT).unwrap();
    assert_eq!(
        create(ROOT).unwrap_err().code(),
        "too-many-jobs-per-machine"
    );
    let h = Harness::new(EngineConfig {
        max_jobs_per_user: 1,
        ..EngineConfig::default()
    });
    for _ in 0..3 {
        h.engine()
            .create(ROOT, JobType::Download, "", Priority::Normal)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_see_and_change_only_their_own_jobs() {
    let h = Harness::default();
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "mine", Priority::Normal)
        .unwrap();
    assert_eq!(
        h.engine().get(BOB, &id).unwrap_err().code(),
        "access-denied"
    );
    assert_eq!(
        h.engine().cancel(BOB, &id).unwrap_err().code(),
        "access-denied"
    );
    assert_eq!(
        h.engine().complete(BOB, &id).unwrap_err().code(),
        "access-denied"
    );
    assert_eq!(
        h.engine()
            .set(BOB, &id, Setting::Name("x".into()))
            .unwrap_err()
            .code(),
        "access-denied"
    );
    assert!(h.engine().list(BOB, false).unwrap().is_empty());
    assert_eq!(
        h.engine().list(BOB, true).unwrap_err().code(),
        "access-denied"
    );
    assert_eq!(h.engine().list(ROOT, true).unwrap().len(), 1);
    assert_eq!(
        h.engine().take_ownership(BOB, &id).unwrap_err().code(),
        "access-denied"
    );
    h.engine().take_ownership(ROOT, &id).unwrap();
    assert_eq!(h.engine().get(ROOT, &id).unwrap().owner, 0);
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap_err().code(),
        "access-denied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn final_states_refuse_everything() {
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(10));
    let h = Harness::default();
    let id = download_job(&h, &[(&server.url("/f"), &h.path("f"))]);
    h.engine().cancel(ALICE, &id).unwrap();
    for result in [
        h.engine().resume(ALICE, &id),
        h.engine().suspend(ALICE, &id),
        h.engine().cancel(ALICE, &id),
        h.engine()
            .set(ALICE, &id, Setting::Priority(Priority::High)),
    ] {
        // A job in a final state has left the queue: it is not found.
        assert_eq!(result.unwrap_err().code(), "not-found");
    }
}

/// Waits (up to 10 s) until `path` has had `count` requests.
async fn wait_for_requests(server: &TestServer, path: &str, count: usize) {
    for _ in 0..500 {
        if server.requests_for(path).len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{path} had only {} requests, not {count}",
        server.requests_for(path).len()
    );
}

/// A job that keeps failing with 503 (transient), under the manual clock.
async fn failing_job(h: &Harness, server: &TestServer) -> String {
    server.put("/down", Resource::status(503));
    let id = download_job(h, &[(&server.url("/down"), &h.path("down"))]);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::TransientError).await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_delay_holds_a_transient_error_then_retries() {
    let server = TestServer::start().await;
    let h = Harness::default();
    let id = failing_job(&h, &server).await;
    let job = h.engine().get(ALICE, &id).unwrap();
    let error = job.error.unwrap();
    assert_eq!((error.error.http_status, error.file), (Some(503), Some(0)));
    let tries = server.requests_for("/down").len();
    h.clock.advance(Duration::from_secs(599));
    h.engine().tick();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap().state(),
        JobState::TransientError
    );
    assert_eq!(
        server.requests_for("/down").len(),
        tries,
        "no retry before 600 s"
    );
    h.clock.advance(Duration::from_secs(2));
    h.engine().tick();
    wait_for_requests(&server, "/down", tries + 1).await;
    h.wait_for(&id, JobState::TransientError).await;
    // The floor: a retry delay below 5 s is raised to 5 s.
    h.engine()
        .set(ALICE, &id, Setting::RetryDelay(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap().settings.retry_delay,
        Duration::from_secs(5)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_progress_past_the_timeout_is_an_error_and_zero_makes_every_error_fatal() {
    let server = TestServer::start().await;
    let h = Harness::default();
    let id = failing_job(&h, &server).await;
    h.engine()
        .set(
            ALICE,
            &id,
            Setting::NoProgressTimeout(Duration::from_secs(3600)),
        )
        .unwrap();
    h.clock.advance(Duration::from_secs(3601));
    h.engine().tick();
    let job = h.engine().get(ALICE, &id).unwrap();
    assert_eq!(job.state(), JobState::Error);
    assert_eq!(job.error.unwrap().error.code, "no-progress-timeout");

    let zero = download_job(&h, &[(&server.url("/down"), &h.path("zero"))]);
    h.engine()
        .set(ALICE, &zero, Setting::NoProgressTimeout(Duration::ZERO))
        .unwrap();
    h.engine().resume(ALICE, &zero).unwrap();
    h.wait_for(&zero, JobState::Error).await;
    assert_eq!(
        h.engine()
            .get(ALICE, &zero)
            .unwrap()
            .error
            .unwrap()
            .error
            .http_status,
        Some(503)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_job_is_cancelled_after_the_inactivity_timeout() {
    let h = Harness::default();
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "idle", Priority::Normal)
        .unwrap();
    h.clock.advance(89 * DAY);
    h.engine().tick();
    h.engine()
        .set(ALICE, &id, Setting::Description("touched".into()))
        .unwrap();
    h.clock.advance(89 * DAY);
    h.engine().tick();
    assert!(
        h.engine().get(ALICE, &id).is_ok(),
        "a modification resets the inactivity timer"
    );
    h.clock.advance(2 * DAY);
    h.engine().tick();
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap_err().code(),
        "not-found",
        "cancelled and gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_max_download_time_of_active_transfer_is_an_error() {
    let server = TestServer::start().await;
    server.put("/slow", Resource::pattern(50_000_000).slow(200_000));
    let h = Harness::default();
    let id = download_job(&h, &[(&server.url("/slow"), &h.path("x"))]);
    let hour = Duration::from_secs(3600);
    h.engine()
        .set(ALICE, &id, Setting::MaxDownloadTime(hour))
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferring).await;
    h.clock.advance(hour / 2);
    h.engine().tick();
    // Time spent suspended is not active transfer time.
    h.engine().suspend(ALICE, &id).unwrap();
    h.clock.advance(10 * hour);
    h.engine().tick();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferring).await;
    assert_eq!(
        h.engine().get(ALICE, &id).unwrap().state(),
        JobState::Transferring
    );
    h.clock.advance(hour / 2 + Duration::from_secs(1));
    h.engine().tick();
    let job = h.engine().get(ALICE, &id).unwrap();
    assert_eq!(job.state(), JobState::Error);
    let error = job.error.unwrap().error;
    assert_eq!(error.code, "max-download-time");
    assert_eq!(error.class, ferry::ErrorClass::Fatal);
    assert_eq!(error.context, ferry::ErrorContext::Policy);
}

#[tokio::test(flavor = "multi_thread")]
async fn wall_clock_jumps_while_running_move_no_timer() {
    let server = TestServer::start().await;
    let h = Harness::default();
    let failing = failing_job(&h, &server).await;
    let tries = server.requests_for("/down").len();
    let idle = h
        .engine()
        .create(ALICE, JobType::Download, "idle", Priority::Normal)
        .unwrap();
    let now = SystemTime::now();
    h.clock.set_wall(now + 365 * DAY);
    h.engine().tick();
    h.clock.set_wall(now - 365 * DAY);
    h.engine().tick();
    assert_eq!(
        h.engine().get(ALICE, &failing).unwrap().state(),
        JobState::TransientError,
        "no retry fired"
    );
    assert!(h.engine().get(ALICE, &idle).is_ok(), "no inactivity fired");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests_for("/down").len(), tries);
}

#[tokio::test(flavor = "multi_thread")]
async fn timers_are_restored_after_a_restart() {
    let server = TestServer::start().await;
    let mut h = Harness::default();
    let failing = failing_job(&h, &server).await;
    let tries = server.requests_for("/down").len();
    let idle = h
        .engine()
        .create(ALICE, JobType::Download, "idle", Priority::Normal)
        .unwrap();
    h.clock.advance(Duration::from_secs(300));
    h.engine().tick();
    h.restart().await;
    assert_eq!(
        h.engine().get(ALICE, &failing).unwrap().timers.retry_in,
        Some(Duration::from_secs(300))
    );
    // Down for 200 s of wall time, then 100 s more running: the retry is due.
    h.engine().shutdown().await;
    h.engine = None;
    h.clock.set_wall(h.clock.wall() + Duration::from_secs(200));
    h.engine = Some(h.open_again().await);
    let job = h.engine().get(ALICE, &failing).unwrap();
    assert_eq!(job.timers.retry_in, Some(Duration::from_secs(100)));
    h.clock.advance(Duration::from_secs(99));
    h.engine().tick();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests_for("/down").len(), tries, "not yet");
    h.clock.advance(Duration::from_secs(1));
    h.engine().tick();
    wait_for_requests(&server, "/down", tries + 1).await;
    // A wall clock set back across a restart never makes timers go backwards.
    h.engine().shutdown().await;
    h.engine = None;
    h.clock.set_wall(SystemTime::UNIX_EPOCH);
    h.engine = Some(h.open_again().await);
    assert!(h.engine().get(ALICE, &idle).unwrap().timers.idle >= Duration::from_secs(300));
}

#[tokio::test(flavor = "multi_thread")]
async fn foreground_jobs_run_beside_the_background_slot() {
    let server = TestServer::start().await;
    server.put("/slow", Resource::pattern(50_000_000).slow(1_000_000));
    server.put("/fast", Resource::pattern(1_000));
    let h = Harness::new(EngineConfig {
        max_concurrent_transfers: 1,
        ..EngineConfig::default()
    });
    let background = download_job(&h, &[(&server.url("/slow"), &h.path("bg"))]);
    let waiting = download_job(&h, &[(&server.url("/fast"), &h.path("wait"))]);
    let foreground = download_job(&h, &[(&server.url("/fast"), &h.path("fg"))]);
    h.engine()
        .set(ALICE, &foreground, Setting::Priority(Priority::Foreground))
        .unwrap();
    h.engine().resume(ALICE, &background).unwrap();
    h.wait_for(&background, JobState::Transferring).await;
    h.engine().resume(ALICE, &waiting).unwrap();
    h.engine().resume(ALICE, &foreground).unwrap();
    h.wait_for(&foreground, JobState::Transferred).await;
    assert_eq!(
        h.engine().get(ALICE, &waiting).unwrap().state(),
        JobState::Queued,
        "the one slot is taken"
    );
    h.engine()
        .set(ALICE, &waiting, Setting::Priority(Priority::High))
        .unwrap();
    h.wait_for(&waiting, JobState::Transferred).await;
    // The background job gave its slot up and took it back afterwards.
    wait_for_requests(&server, "/slow", 2).await;
    h.engine().cancel(ALICE, &background).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_move_leaves_the_job_completable_again() {
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(1_000));
    let h = Harness::default();
    let dest = h.path("f");
    let id = download_job(&h, &[(&server.url("/f"), &dest)]);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    // A directory where the file should go: the rename fails.
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("blocker"), b"x").unwrap();
    let error = h.engine().complete(ALICE, &id).unwrap_err();
    assert_eq!(error.code(), "rename-failed");
    let job = h.engine().get(ALICE, &id).unwrap();
    assert_eq!(job.state(), JobState::Error);
    assert_eq!(
        job.error.unwrap().error.context,
        ferry::ErrorContext::LocalFile
    );
    std::fs::remove_dir_all(&dest).unwrap();
    h.engine().complete(ALICE, &id).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..1_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn files_already_moved_stay_moved_when_complete_goes_on_after_a_restart() {
    let server = TestServer::start().await;
    server.put("/a", Resource::pattern(1_000));
    server.put("/b", Resource::pattern(2_000));
    let mut h = Harness::default();
    let (a, b) = (h.path("a"), h.path("b"));
    let id = download_job(&h, &[(&server.url("/a"), &a), (&server.url("/b"), &b)]);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("blocker"), b"x").unwrap();
    assert_eq!(
        h.engine().complete(ALICE, &id).unwrap_err().code(),
        "rename-failed"
    );
    assert_eq!(std::fs::read(&a).unwrap(), pattern_bytes(0..1_000));
    // The first file is in place and the store knows it.
    h.restart().await;
    std::fs::remove_dir_all(&b).unwrap();
    let done = h.engine().complete(ALICE, &id).unwrap();
    assert!(!done.partial);
    assert_eq!(done.files, vec![a.clone(), b.clone()]);
    assert_eq!(std::fs::read(&a).unwrap(), pattern_bytes(0..1_000));
    assert_eq!(std::fs::read(&b).unwrap(), pattern_bytes(0..2_000));
    assert!(h.temp_files().is_empty(), "{:?}", h.temp_files());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_swapped_in_for_the_destination_directory_is_not_followed() {
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(1_000));
    let h = Harness::default();
    let real = h.downloads.path().join("real");
    let elsewhere = h.downloads.path().join("elsewhere");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    open_to_all(&real);
    let id = download_job(&h, &[(&server.url("/f"), &real.join("f"))]);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    std::fs::remove_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = h.downloads.path().join("moved");
    std::fs::rename(&real, &moved).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
    let result = h.engine().complete(ALICE, &id);
    assert!(
        !elsewhere.join("f").exists(),
        "nothing was written through the symlink"
    );
    assert!(result.is_err(), "the swapped directory is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn as_root_files_are_created_with_the_owners_rights() {
    if !nix_is_root() {
        println!("skipped: only a root engine acts for other users");
        return;
    }
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(1_000));
    let h = Harness::default();
    // A directory only root may write: root could, the job's owner may not.
    let closed = h.downloads.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let id = download_job(&h, &[(&server.url("/f"), &closed.join("f"))]);
    h.engine()
        .set(ALICE, &id, Setting::NoProgressTimeout(Duration::ZERO))
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Error).await;
    let error = h.engine().get(ALICE, &id).unwrap().error.unwrap().error;
    assert_eq!(
        (error.context, error.code.as_str()),
        (ferry::ErrorContext::LocalFile, "cannot-create-file")
    );
    assert_eq!(
        std::fs::read_dir(&closed).unwrap().count(),
        0,
        "nothing was written with root's rights"
    );

    // Nor with the daemon's supplementary groups: a directory its group may
    // write stays closed to the owner.
    let daemon_groups = nix::unistd::getgroups().unwrap();
    let group = nix::unistd::Gid::from_raw(4242);
    nix::unistd::setgroups(&[group]).unwrap();
    let grouped = h.downloads.path().join("grouped");
    std::fs::create_dir(&grouped).unwrap();
    std::os::unix::fs::chown(&grouped, Some(0), Some(group.as_raw())).unwrap();
    std::fs::set_permissions(
        &grouped,
        std::os::unix::fs::PermissionsExt::from_mode(0o770),
    )
    .unwrap();
    let id = download_job(&h, &[(&server.url("/f"), &grouped.join("f"))]);
    h.engine()
        .set(ALICE, &id, Setting::NoProgressTimeout(Duration::ZERO))
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Error).await;
    nix::unistd::setgroups(&daemon_groups).unwrap();
    let error = h.engine().get(ALICE, &id).unwrap().error.unwrap().error;
    assert_eq!(error.context, ferry::ErrorContext::LocalFile, "{error:?}");
    assert_eq!(
        std::fs::read_dir(&grouped).unwrap().count(),
        0,
        "nothing was written with the daemon's groups"
    );

    // In a directory the owner may write, the file is the owner's.
    let open = h.path("open.bin");
    let id = download_job(&h, &[(&server.url("/f"), &open)]);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&open).unwrap().uid(), ALICE.uid);
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_of_a_resource_that_changed_start_the_file_over() {
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(2_000_000).slow(1_000_000));
    let h = Harness::new(EngineConfig {
        checkpoint_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    });
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "ranges", Priority::High)
        .unwrap();
    let ranges = vec![
        ByteRange {
            offset: 0,
            length: 400_000,
        },
        ByteRange {
            offset: 1_000_000,
            length: 800_000,
        },
    ];
    h.engine()
        .add_file(ALICE, &id, &server.url("/f"), &h.path("r"), ranges)
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    for _ in 0..3000 {
        if h.engine().get(ALICE, &id).unwrap().files[0].bytes_transferred > 500_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.engine().suspend(ALICE, &id).unwrap();
    server.update("/f", |r| {
        r.change_content();
        r.apply(|r| r.slow(u64::MAX / 4));
    });
    let new = server.resource("/f").unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    let mut expected = new.content(0..400_000);
    expected.extend(new.content(1_000_000..1_800_000));
    assert_eq!(
        std::fs::read(h.path("r")).unwrap(),
        expected,
        "every range is of the new version"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_of_files_is_added_all_or_nothing() {
    use ferry::engine::NewFile;
    let server = TestServer::start().await;
    for n in 0..5 {
        server.put(&format!("/{n}"), Resource::pattern(10_000 + n));
    }
    let h = Harness::new(EngineConfig {
        max_files_per_job: 5,
        ..EngineConfig::default()
    });
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "set", Priority::Normal)
        .unwrap();
    let file = |n: u64| NewFile {
        remote: server.url(&format!("/{n}")),
        local: h.path(&format!("{n}.bin")),
        ranges: Vec::new(),
        sha256: None,
    };
    let code = |r: Result<(), ferry::job::JobRefusal>| r.unwrap_err().code().to_string();
    // One bad file refuses the whole set, and nothing of it is added.
    let mut bad = vec![file(0), file(1)];
    bad.push(NewFile {
        remote: "gopher://x/y".into(),
        ..file(2)
    });
    assert_eq!(
        code(h.engine().add_files(ALICE, &id, bad)),
        "unsupported-scheme"
    );
    let twice = vec![
        file(0),
        NewFile {
            remote: server.url("/1"),
            ..file(0)
        },
    ];
    assert_eq!(
        code(h.engine().add_files(ALICE, &id, twice)),
        "invalid-argument"
    );
    let too_many: Vec<_> = (0..6).map(|n| file(n % 5)).collect();
    assert_eq!(
        code(h.engine().add_files(ALICE, &id, too_many)),
        "too-many-files"
    );
    assert!(h.engine().get(ALICE, &id).unwrap().files.is_empty());

    h.engine()
        .add_files(ALICE, &id, (0..4).map(file).collect())
        .unwrap();
    // The limit counts the files already there.
    assert_eq!(
        code(h.engine().add_files(ALICE, &id, vec![file(4), file(4)])),
        "too-many-files"
    );
    h.engine().add_files(ALICE, &id, vec![file(4)]).unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    for n in 0..5 {
        assert_eq!(
            std::fs::read(h.path(&format!("{n}.bin"))).unwrap(),
            pattern_bytes(0..10_000 + n)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checksum_is_verified_before_the_file_counts_as_transferred() {
    use ferry::engine::NewFile;
    use sha2::{Digest, Sha256};
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(300_000));
    let h = Harness::default();
    let right: String = Sha256::digest(pattern_bytes(0..300_000))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let job = |name: &str, sha256: &str| {
        let id = h
            .engine()
            .create(ALICE, JobType::Download, name, Priority::Normal)
            .unwrap();
        h.engine()
            .add_files(
                ALICE,
                &id,
                vec![NewFile {
                    remote: server.url("/f"),
                    local: h.path(name),
                    ranges: Vec::new(),
                    sha256: Some(sha256.to_string()),
                }],
            )
            .map(|()| id)
    };
    let refused = job("bad", "not hex").unwrap_err();
    assert_eq!(refused.code(), "invalid-argument");

    let good = job("good", &right.to_uppercase()).unwrap();
    h.engine().resume(ALICE, &good).unwrap();
    h.wait_for(&good, JobState::Transferred).await;
    h.engine().complete(ALICE, &good).unwrap();
    assert_eq!(
        std::fs::read(h.path("good")).unwrap(),
        pattern_bytes(0..300_000)
    );

    let wrong = job("wrong", &"0".repeat(64)).unwrap();
    h.engine().resume(ALICE, &wrong).unwrap();
    h.wait_for(&wrong, JobState::Error).await;
    checksum_mismatch_kept_nothing(&h, &wrong);
}

/// Job `id` stopped on a fatal `checksum-mismatch` with none of its file
/// kept; returns the error's message.
fn checksum_mismatch_kept_nothing(h: &Harness, id: &str) -> String {
    let failed = h.engine().get(ALICE, id).unwrap();
    let error = failed.error.unwrap().error;
    assert_eq!(
        (error.code.as_str(), error.class),
        ("checksum-mismatch", ferry::ErrorClass::Fatal),
        "{error}"
    );
    assert!(!failed.files[0].complete);
    assert_eq!(failed.files[0].bytes_transferred, 0, "none of it is kept");
    error.message
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repr_digest_the_server_declares_is_verified_across_a_resume() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let len = 3_000_000;
    let declared = |bytes: &[u8]| {
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes));
        format!("sha-256=:{digest}:")
    };
    let data = pattern_bytes(0..len);
    let right_hex = hex_of(&Sha256::digest(&data));
    let server = TestServer::start().await;
    // The first response is cut a third of the way; the retry's 206 finishes it.
    server.put(
        "/right",
        Resource::pattern(len)
            .header("repr-digest", &declared(&data))
            .drop_after_times(1_000_000, 1),
    );
    server.put(
        "/wrong",
        Resource::pattern(len).header("repr-digest", &declared(b"another file")),
    );
    let h = Harness::default();
    let job = |path: &str, local: &str, ranges: Vec<ByteRange>| {
        let id = h
            .engine()
            .create(ALICE, JobType::Download, local, Priority::Normal)
            .unwrap();
        h.engine()
            .add_file(ALICE, &id, &server.url(path), &h.path(local), ranges)
            .unwrap();
        h.engine().resume(ALICE, &id).unwrap();
        id
    };

    let right = job("/right", "right", Vec::new());
    loop {
        let state = h.engine().get(ALICE, &right).unwrap().state();
        match state {
            JobState::Transferred => break,
            JobState::TransientError => {
                let held = h.engine().get(ALICE, &right).unwrap().files[0].clone();
                assert!(held.bytes_transferred < len, "{held:?}");
                assert_eq!(
                    held.served_sha256.as_deref(),
                    Some(right_hex.as_str()),
                    "the declared digest is recorded with the file"
                );
                h.clock.advance(Duration::from_secs(601));
                h.engine().tick();
                h.wait_for(&right, JobState::Transferred).await;
            }
            JobState::Error => panic!("{:?}", h.engine().get(ALICE, &right).unwrap().error),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let ranged = server
        .requests_for("/right")
        .iter()
        .filter(|r| r.header("range").is_some())
        .count();
    assert!(ranged >= 1, "the second response was a resume");
    h.engine().complete(ALICE, &right).unwrap();
    assert_eq!(std::fs::read(h.path("right")).unwrap(), data);

    let wrong = job("/wrong", "wrong", Vec::new());
    h.wait_for(&wrong, JobState::Error).await;
    let message = checksum_mismatch_kept_nothing(&h, &wrong);
    assert!(message.contains("Repr-Digest"), "{message}");

    // A range is not the whole representation the digest is of.
    let part = job(
        "/wrong",
        "part",
        vec![ByteRange {
            offset: 10,
            length: 1000,
        }],
    );
    h.wait_for(&part, JobState::Transferred).await;
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_calls_a_short_or_long_body_whole_is_not_believed() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let mut runtime =
        PluginRuntime::with_builtins(ferry_tests::fixtures::loopback_config()).unwrap();
    let (manifest, wasm) = ferry_tests::fixtures::liar_plugin();
    runtime.load(&manifest, &wasm, false).unwrap();
    let state = StateDir::new();
    let engine = Engine::open(
        EngineConfig::default(),
        Box::new(state.open_store().unwrap()),
        Arc::new(runtime),
        clock,
    )
    .unwrap();
    let downloads = shared_dir();
    for url in ["liar://short/", "liar://long/"] {
        let id = engine
            .create(ALICE, JobType::Download, url, Priority::Normal)
            .unwrap();
        engine
            .add_file(ALICE, &id, url, &downloads.path().join("f"), Vec::new())
            .unwrap();
        engine.resume(ALICE, &id).unwrap();
        let mut job = engine.get(ALICE, &id).unwrap();
        for _ in 0..3000 {
            if job.state() == JobState::TransientError {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            job = engine.get(ALICE, &id).unwrap();
        }
        let error = job.error.expect("the job failed").error;
        assert_eq!(error.code, "length-mismatch", "{url}: {error}");
        assert!(!job.files[0].complete, "{url}");
        assert_eq!(
            job.files[0].bytes_total,
            Some(if url.contains("short") { 10 } else { 3 })
        );
        if url.contains("long") {
            assert_eq!(job.files[0].bytes_transferred, 0, "a long body is not kept");
        }
        engine.cancel(ALICE, &id).unwrap();
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_temporary_file_shorter_than_its_record_starts_the_file_over() {
    let server = TestServer::start().await;
    let len = 6_000_000;
    server.put("/f", Resource::pattern(len).slow(2_000_000));
    let mut h = Harness::new(EngineConfig {
        checkpoint_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    });
    let id = download_job(&h, &[(&server.url("/f"), &h.path("f"))]);
    h.engine().resume(ALICE, &id).unwrap();
    for _ in 0..3000 {
        if h.engine().get(ALICE, &id).unwrap().files[0].bytes_transferred > 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.engine().shutdown().await;
    h.engine = None;
    // As after a crash that lost what the file system had not written yet.
    let temp = h.downloads.path().join(&h.temp_files()[0]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&temp)
        .unwrap()
        .set_len(1000)
        .unwrap();
    server.update("/f", |r| r.apply(|r| r.slow(u64::MAX / 4)));
    h.engine = Some(h.open_again().await);
    h.engine().tick();
    h.wait_for(&id, JobState::Transferred).await;
    h.engine().complete(ALICE, &id).unwrap();
    assert_eq!(
        std::fs::read(h.path("f")).unwrap(),
        pattern_bytes(0..len),
        "no zeros were padded in"
    );
    let last = server.requests_for("/f").into_iter().last().unwrap();
    assert_eq!(last.header("range"), None, "the file started over");
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_racing_cancel_ends_one_way_and_never_brings_the_job_back() {
    let server = TestServer::start().await;
    server.put("/f", Resource::pattern(20_000));
    let mut h = Harness::default();
    let mut outcomes = (0, 0);
    for round in 0..12 {
        let dest = h.path(&format!("f{round}"));
        let id = download_job(&h, &[(&server.url("/f"), &dest)]);
        h.engine().resume(ALICE, &id).unwrap();
        h.wait_for(&id, JobState::Transferred).await;
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (completed, cancelled) = std::thread::scope(|scope| {
            let complete = scope.spawn(|| {
                barrier.wait();
                h.engine().complete(ALICE, &id).map(|_| ())
            });
            let cancel = scope.spawn(|| {
                barrier.wait();
                h.engine().cancel(ALICE, &id)
            });
            (complete.join().unwrap(), cancel.join().unwrap())
        });
        match (&completed, &cancelled) {
            (Ok(()), Err(e)) => {
                assert!(matches!(e.code(), "invalid-state" | "not-found"), "{e}");
                assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..20_000));
                outcomes.0 += 1;
            }
            (Err(e), Ok(())) => {
                assert!(matches!(e.code(), "invalid-state" | "not-found"), "{e}");
                assert!(!dest.exists(), "a cancelled job leaves no file");
                outcomes.1 += 1;
            }
            other => panic!("round {round}: complete and cancel both {other:?}"),
        }
        assert_eq!(h.engine().get(ALICE, &id).unwrap_err().code(), "not-found");
        assert!(h.temp_files().is_empty(), "{:?}", h.temp_files());
    }
    // Nothing of the twelve jobs comes back after a restart.
    h.restart().await;
    assert!(h.engine().list(ALICE, false).unwrap().is_empty());
    eprintln!("complete won {} rounds, cancel {}", outcomes.0, outcomes.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_transfer_starts_while_complete_moves_the_files() {
    let server = TestServer::start().await;
    let h = Harness::default();
    let mut files = Vec::new();
    for n in 0..30 {
        server.put(&format!("/done{n}"), Resource::pattern(4_000));
        files.push((
            server.url(&format!("/done{n}")),
            h.path(&format!("done{n}")),
        ));
    }
    server.put("/slow", Resource::pattern(50_000_000).slow(100_000));
    files.push((server.url("/slow"), h.path("slow")));
    let refs: Vec<(&str, &Path)> = files
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_path()))
        .collect();
    let id = download_job(&h, &refs);
    h.engine().resume(ALICE, &id).unwrap();
    for _ in 0..3000 {
        let job = h.engine().get(ALICE, &id).unwrap();
        if job.files[30].bytes_transferred > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let completion = std::thread::scope(|scope| {
        // The scheduler runs as often as it can while complete moves files.
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                h.engine().tick();
            }
        });
        let completion = h.engine().complete(ALICE, &id);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        completion
    })
    .unwrap();
    assert!(completion.partial);
    assert_eq!(completion.files.len(), 30);
    assert_eq!(
        server.requests_for("/slow").len(),
        1,
        "the slow file's transfer was not started again"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.temp_files().is_empty(), "{:?}", h.temp_files());
    assert!(!h.path("slow").exists());
    for n in 0..30 {
        assert_eq!(
            std::fs::read(h.path(&format!("done{n}"))).unwrap(),
            pattern_bytes(0..4_000)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_job_for_a_download_only_plugin_fails_typed_not_trapped() {
    let mut runtime =
        PluginRuntime::with_builtins(ferry_tests::fixtures::loopback_config()).unwrap();
    let (manifest, wasm) = ferry_tests::fixtures::hostile_plugin();
    runtime.load(&manifest, &wasm, false).unwrap();
    let state = StateDir::new();
    let engine = Engine::open(
        EngineConfig::default(),
        Box::new(state.open_store().unwrap()),
        Arc::new(runtime),
        Arc::new(ManualClock::new(SystemTime::now())),
    )
    .unwrap();
    let files = shared_dir();
    let source = files.path().join("source");
    std::fs::write(&source, b"payload").unwrap();
    let id = engine
        .create(ALICE, JobType::Upload, "up", Priority::Normal)
        .unwrap();
    engine
        .add_file(ALICE, &id, "hostile://ok/", &source, Vec::new())
        .unwrap();
    engine.resume(ALICE, &id).unwrap();
    let mut job = engine.get(ALICE, &id).unwrap();
    for _ in 0..3000 {
        if job.state() == JobState::Error {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        job = engine.get(ALICE, &id).unwrap();
    }
    let error = job.error.expect("the job failed").error;
    assert_eq!(
        (error.code.as_str(), error.class, error.context),
        (
            "unsupported",
            ferry::ErrorClass::Fatal,
            ferry::ErrorContext::Policy
        ),
        "{error}"
    );
    assert!(error.message.contains("hostile"), "{error}");
    engine.shutdown().await;
}
