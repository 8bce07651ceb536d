//! Upload and upload-reply jobs, end to end: the job engine with its real
//! store (sled), the real plugin runtime with the test suite's upload plugin
//! (`testup`, tus-style) and reply processor (`reply-upper`), and the test
//! server's resumable upload endpoint on loopback.

use ferry::clock::{Clock, ManualClock, SystemClock};
use ferry::engine::{Caller, Engine, EngineConfig, Setting};
use ferry::error::{ErrorClass, ErrorContext};
use ferry::events::EventKind;
use ferry::job::{Checkpoint, Job, JobState, JobType, Priority};
use ferry::plugin::{PluginRuntime, RuntimeConfig};
use ferry::store::{JobStore, StoreError};
use ferry_tests::fixtures::{StateDir, StoreInDir, reply_upper_plugin, upload_plugin};
use ferry_tests::server::{RecordedRequest, Resource, TestServer, UploadEndpoint, pattern_bytes};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

const ALICE: Caller = Caller {
    uid: 1000,
    admin: false,
};
const MIB: u64 = 1 << 20;

/// The sled store, counting how often the engine saves a job (whole, or a
/// checkpoint of it).
struct CountingStore {
    store: StoreInDir,
    saves: Arc<AtomicUsize>,
    checkpoints: Arc<AtomicUsize>,
}

impl JobStore for CountingStore {
    fn write(&self, job: &Job) -> Result<(), StoreError> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        self.store.write(job)
    }

    fn write_checkpoint(&self, id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.store.write_checkpoint(id, checkpoint)
    }

    fn erase(&self, id: &str) -> Result<(), StoreError> {
        self.store.erase(id)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }

    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        self.store.load_all()
    }
}

/// An engine on a store in a temporary directory, with the test plugins
/// loaded and granted loopback, uploading files of another directory.
struct Harness {
    engine: Option<Engine>,
    clock: Arc<dyn Clock>,
    runtime: Arc<PluginRuntime>,
    state: StateDir,
    files: tempfile::TempDir,
    config: EngineConfig,
    saves: Arc<AtomicUsize>,
    checkpoints: Arc<AtomicUsize>,
}

impl Harness {
    fn new(config: EngineConfig) -> Harness {
        Harness::with_clock(config, Arc::new(ManualClock::new(SystemTime::now())))
    }

    fn with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> Harness {
        let grants = HashMap::from([("testup".to_string(), vec!["127.0.0.1".to_string()])]);
        let mut runtime = PluginRuntime::with_builtins(RuntimeConfig {
            grants,
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
            ..ferry_tests::fixtures::loopback_config()
        })
        .unwrap();
        for (manifest, wasm) in [upload_plugin(), reply_upper_plugin()] {
            runtime.load(&manifest, &wasm, false).unwrap();
        }
        let mut h = Harness {
            engine: None,
            clock,
            runtime: Arc::new(runtime),
            state: StateDir::new(),
            files: ferry_tests::fixtures::shared_dir(),
            config,
            saves: Arc::default(),
            checkpoints: Arc::default(),
        };
        let store = h.state.open_store().unwrap();
        h.engine = Some(h.open(store));
        h
    }

    fn open(&self, store: StoreInDir) -> Engine {
        let store = CountingStore {
            store,
            saves: self.saves.clone(),
            checkpoints: self.checkpoints.clone(),
        };
        Engine::open(
            self.config.clone(),
            Box::new(store),
            self.runtime.clone(),
            self.clock.clone(),
        )
        .unwrap()
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the engine is open")
    }

    fn job(&self, id: &str) -> Job {
        self.engine().get(ALICE, id).unwrap()
    }

    /// Writes `len` bytes of the test pattern to a file to upload.
    fn source(&self, name: &str, len: u64) -> PathBuf {
        let path = self.files.path().join(name);
        std::fs::write(&path, pattern_bytes(0..len)).unwrap();
        path
    }

    /// Shuts the engine down and opens a new one on the same store, as a
    /// restarted daemon would.
    async fn restart(&mut self) {
        self.engine().shutdown().await;
        self.engine = None;
        for _ in 0..500 {
            // The old engine's last tasks let go of the store's lock shortly.
            if let Ok(store) = self.state.open_store() {
                self.engine = Some(self.open(store));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the store stayed locked");
    }

    /// Waits (up to a minute) until job `id` is in `state`.
    async fn wait_for(&self, id: &str, state: JobState) -> Job {
        self.wait_until(id, &format!("{state:?}"), |job| job.state() == state)
            .await
    }

    /// Waits (up to a minute) until job `id` has `bytes` acknowledged.
    async fn wait_for_bytes(&self, id: &str, bytes: u64) -> Job {
        self.wait_until(id, &format!("{bytes} bytes"), |job| {
            job.files[0].bytes_transferred >= bytes
        })
        .await
    }

    async fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        for _ in 0..3000 {
            let job = self.job(id);
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job never reached {what}: {:#?}", self.job(id));
    }
}

fn fast_checkpoints() -> EngineConfig {
    EngineConfig {
        checkpoint_interval: Duration::from_millis(50),
        upload_cancel_retry: Duration::from_millis(100),
        ..EngineConfig::default()
    }
}

/// An upload server at `/up`.
async fn upload_server(endpoint: UploadEndpoint) -> TestServer {
    let server = TestServer::start().await;
    server.accept_uploads_with("/up", endpoint);
    server
}

fn testup_url(server: &TestServer) -> String {
    format!("testup://{}/up", server.addr())
}

fn upload_job(h: &Harness, job_type: JobType, url: &str, file: &Path) -> String {
    let id = h
        .engine()
        .create(ALICE, job_type, "upload", Priority::Normal)
        .unwrap();
    h.engine()
        .add_file(ALICE, &id, url, file, Vec::new())
        .unwrap();
    id
}

fn requests(server: &TestServer, method: &str) -> Vec<RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == method)
        .collect()
}

/// The `Upload-Offset` of every PATCH, in order.
fn patch_offsets(server: &TestServer) -> Vec<u64> {
    requests(server, "PATCH")
        .iter()
        .map(|r| r.header("upload-offset").unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_reply_job_hands_the_reply_over_on_complete() {
    let server = upload_server(UploadEndpoint::default()).await;
    let h = Harness::new(fast_checkpoints());
    let len = 3 * MIB + 5;
    let file = h.source("data", len);
    let id = upload_job(&h, JobType::UploadReply, &testup_url(&server), &file);
    assert_eq!(h.job(&id).files[0].bytes_total, Some(len));
    let second = h
        .engine()
        .add_file(ALICE, &id, &testup_url(&server), &file, Vec::new());
    assert_eq!(second.unwrap_err().code(), "too-many-files");

    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::Transferred).await;
    assert_eq!(job.files[0].bytes_transferred, len);
    assert!(job.files[0].complete);
    let stored = job.reply.expect("the reply is kept until complete");
    assert_eq!(stored.reply.status, 200);

    let uploads = server.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].received, pattern_bytes(0..len));
    assert!(!uploads[0].deleted);
    assert_eq!(requests(&server, "POST").len(), 1);
    assert_eq!(patch_offsets(&server), [0, MIB, 2 * MIB, 3 * MIB]);
    assert_eq!(
        job.upload_session.as_deref(),
        Some(format!("http://{}/up/1", server.addr()).as_str())
    );

    let completion = h.engine().complete(ALICE, &id).unwrap();
    let reply = completion.reply.expect("complete returns the reply");
    assert_eq!(reply.reply.status, 200);
    assert_eq!(
        String::from_utf8(reply.reply.body).unwrap(),
        format!("{{\"upload\":\"/up/1\",\"received\":{len}}}")
    );
    assert_eq!(reply.data, None, "no reply processor was set");
    assert_eq!(h.engine().get(ALICE, &id).unwrap_err().code(), "not-found");
    assert!(
        !server.uploads()[0].deleted,
        "complete leaves the upload be"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_is_refused_until_the_upload_is_transferred() {
    let server = upload_server(UploadEndpoint::default().slow(2 * MIB)).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 4 * MIB);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    let refused = h.engine().complete(ALICE, &id).unwrap_err();
    assert_eq!(refused.code(), "invalid-state", "suspended");

    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for_bytes(&id, MIB).await;
    let refused = h.engine().complete(ALICE, &id).unwrap_err();
    assert_eq!(refused.code(), "invalid-state", "while transferring");
    assert!(
        h.job(&id).state().is_active(),
        "a refused complete changes nothing"
    );

    server.update_uploads("/up", |e| e.apply(|e| e.fast()));
    h.wait_for(&id, JobState::Transferred).await;
    let completion = h.engine().complete(ALICE, &id).unwrap();
    assert_eq!(completion.reply, None, "a plain upload has no reply");
    assert_eq!(server.uploads()[0].received, pattern_bytes(0..4 * MIB));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reply_is_kept_across_a_restart_until_complete() {
    let server = upload_server(UploadEndpoint::default().reply("kept")).await;
    let mut h = Harness::new(fast_checkpoints());
    let file = h.source("data", 1000);
    let id = upload_job(&h, JobType::UploadReply, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    h.restart().await;
    assert_eq!(h.job(&id).state(), JobState::Transferred);
    let reply = h.engine().complete(ALICE, &id).unwrap().reply.unwrap();
    assert_eq!(reply.reply.body, b"kept");
    assert_eq!(
        requests(&server, "POST").len(),
        1,
        "nothing was uploaded again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_error_resumes_from_the_servers_offset() {
    let server = upload_server(UploadEndpoint::default().drop_patch_after(300_000)).await;
    let h = Harness::new(fast_checkpoints());
    let len = 2 * MIB + 10;
    let file = h.source("data", len);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::TransientError).await;
    let error = job.error.unwrap().error;
    assert_eq!(
        (error.class, error.context),
        (ErrorClass::Transient, ErrorContext::Transport)
    );
    assert!(job.upload_session.is_some(), "the session was recorded");
    assert_eq!(server.uploads()[0].received.len(), 300_000);

    // The retry (here: the owner's resume) asks the server where it stands.
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    assert_eq!(
        requests(&server, "POST").len(),
        1,
        "the session was resumed"
    );
    assert_eq!(requests(&server, "HEAD").len(), 1);
    assert_eq!(patch_offsets(&server), [0, 300_000, 300_000 + MIB]);
    assert_eq!(server.uploads()[0].received, pattern_bytes(0..len));
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_and_resume_continue_from_the_servers_offset() {
    let server = upload_server(UploadEndpoint::default().slow(2 * MIB)).await;
    let h = Harness::new(fast_checkpoints());
    let len = 6 * MIB;
    let file = h.source("data", len);
    let id = upload_job(&h, JobType::UploadReply, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for_bytes(&id, MIB).await;
    h.engine().suspend(ALICE, &id).unwrap();
    let job = h.job(&id);
    assert_eq!(job.state(), JobState::Suspended);
    assert!(job.upload_session.is_some());
    let patches_before = patch_offsets(&server).len();

    server.update_uploads("/up", |e| e.apply(|e| e.fast()));
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    assert_went_on_from_the_server_offset(&server, patches_before, len);
    let reply = h.engine().complete(ALICE, &id).unwrap().reply.unwrap();
    assert_eq!(reply.reply.status, 200);
}

/// One session only, the PATCHes after `patches_before` went on from at
/// least 1 MiB, and the server holds the whole source.
fn assert_went_on_from_the_server_offset(server: &TestServer, patches_before: usize, len: u64) {
    assert_eq!(requests(server, "POST").len(), 1, "the session was resumed");
    let after = patch_offsets(server)[patches_before];
    assert!(
        after >= MIB,
        "the upload went on from {after}, not from zero"
    );
    assert_eq!(server.uploads()[0].received, pattern_bytes(0..len));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_the_upload_from_the_servers_offset() {
    let server = upload_server(UploadEndpoint::default().slow(2 * MIB)).await;
    let mut h = Harness::new(fast_checkpoints());
    let len = 6 * MIB;
    let file = h.source("data", len);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for_bytes(&id, MIB).await;
    h.restart().await;
    let job = h.job(&id);
    assert_eq!(
        job.state(),
        JobState::Queued,
        "an interrupted upload is queued again"
    );
    assert!(
        job.upload_session.is_some(),
        "the session survived the restart"
    );
    assert!(job.files[0].bytes_transferred >= MIB);
    let patches_before = patch_offsets(&server).len();

    server.update_uploads("/up", |e| e.apply(|e| e.fast()));
    h.engine().tick();
    h.wait_for(&id, JobState::Transferred).await;
    assert_went_on_from_the_server_offset(&server, patches_before, len);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_of_1_mib_is_kept_as_data_and_a_larger_one_needs_a_reply_file() {
    let server = TestServer::start().await;
    server.accept_uploads_with(
        "/fits",
        UploadEndpoint::default().reply(vec![b'a'; MIB as usize]),
    );
    server.accept_uploads_with(
        "/big",
        UploadEndpoint::default().reply(vec![b'a'; MIB as usize + 1]),
    );
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 1000);
    let base = format!("testup://{}", server.addr());

    let fits = upload_job(&h, JobType::UploadReply, &format!("{base}/fits"), &file);
    h.engine().resume(ALICE, &fits).unwrap();
    h.wait_for(&fits, JobState::Transferred).await;
    let reply = h.engine().complete(ALICE, &fits).unwrap().reply.unwrap();
    assert_eq!(reply.reply.body.len(), MIB as usize);
    assert_eq!(reply.reply.size, MIB);
    assert!(!reply.in_file);

    // Without a reply file, more than 1 MiB cannot be handed over.
    let id = upload_job(&h, JobType::UploadReply, &format!("{base}/big"), &file);
    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::Error).await;
    let error = job.error.unwrap().error;
    assert_eq!(error.code, "reply-too-large", "{error:?}");
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(error.message.contains("--reply-file"), "{error}");
    assert!(job.reply.is_none());
    assert_eq!(
        h.engine().complete(ALICE, &id).unwrap_err().code(),
        "invalid-state"
    );
    h.engine().cancel(ALICE, &id).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5_mib_reply_lands_whole_in_the_reply_file_on_complete() {
    let reply: Vec<u8> = pattern_bytes(0..5 * MIB);
    let server = upload_server(UploadEndpoint::default().reply(reply.clone())).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 2 * MIB);
    let id = upload_job(&h, JobType::UploadReply, &testup_url(&server), &file);
    let reply_path = h.files.path().join("reply.bin");
    let download = h
        .engine()
        .create(ALICE, JobType::Download, "d", Priority::Normal)
        .unwrap();
    let refused = h.engine().set(
        ALICE,
        &download,
        Setting::ReplyFile(Some(reply_path.clone())),
    );
    assert_eq!(refused.unwrap_err().code(), "invalid-argument");
    h.engine()
        .set(ALICE, &id, Setting::ReplyFile(Some(reply_path.clone())))
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::Transferred).await;
    let stored = job.reply.unwrap();
    assert_eq!(stored.reply.size, 5 * MIB);
    assert!(stored.reply.body.is_empty(), "no reply data past 1 MiB");
    assert!(stored.in_file);
    assert!(!reply_path.exists(), "nothing is in place before complete");

    let completion = h.engine().complete(ALICE, &id).unwrap();
    assert_eq!(completion.files, std::slice::from_ref(&reply_path));
    assert_eq!(std::fs::read(&reply_path).unwrap(), reply);
    let leftovers: Vec<_> = std::fs::read_dir(h.files.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ferry-part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_deletes_the_waiting_reply_file() {
    let server = upload_server(UploadEndpoint::default().reply("to be dropped")).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 1000);
    let id = upload_job(&h, JobType::UploadReply, &testup_url(&server), &file);
    let reply_path = h.files.path().join("reply.txt");
    h.engine()
        .set(ALICE, &id, Setting::ReplyFile(Some(reply_path.clone())))
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    let parts = || {
        std::fs::read_dir(h.files.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".ferry-part")
            })
            .count()
    };
    assert_eq!(parts(), 1, "the reply waits beside its reply file");
    h.engine().cancel(ALICE, &id).unwrap();
    assert_eq!(parts(), 0);
    assert!(!reply_path.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_server_forgot_starts_over_with_a_new_one() {
    let server = upload_server(UploadEndpoint::default().slow(2 * MIB)).await;
    let h = Harness::new(fast_checkpoints());
    let len = 3 * MIB;
    let file = h.source("data", len);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for_bytes(&id, MIB).await;
    h.engine().suspend(ALICE, &id).unwrap();
    h.wait_until(&id, "idle", |job| job.state() == JobState::Suspended)
        .await;
    server.forget_upload("/up/1");
    server.update_uploads("/up", |e| e.apply(|e| e.fast()));
    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::Transferred).await;
    assert_eq!(
        job.upload_session.as_deref(),
        Some(format!("http://{}/up/2", server.addr()).as_str()),
        "a new session replaced the forgotten one"
    );
    let uploads = server.uploads();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[1].received, pattern_bytes(0..len));
    assert_eq!(job.error_count, 0, "no error was shown to the owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_deletes_an_unfinished_upload_and_retries_while_the_server_is_unavailable() {
    let server = upload_server(UploadEndpoint::default().slow(MIB)).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 8 * MIB);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    h.engine()
        .set(
            ALICE,
            &id,
            Setting::Headers(vec![("x-owner".into(), "alice".into())]),
        )
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for_bytes(&id, MIB).await;
    server.update_uploads("/up", |e| e.apply(|e| e.unavailable_once()));
    h.engine().cancel(ALICE, &id).unwrap();
    assert_eq!(h.engine().get(ALICE, &id).unwrap_err().code(), "not-found");

    wait_until_deleted(&server).await;
    let upload = server.uploads().remove(0);
    assert!(upload.deleted, "the session was cancelled on the server");
    let deletes = requests(&server, "DELETE");
    assert_eq!(deletes.len(), 2, "a 503 is retried: {deletes:?}");
    assert!(deletes.iter().all(|d| d.path == "/up/1"));
    assert!(
        deletes.iter().all(|d| d.header("x-owner") == Some("alice")),
        "the DELETE carries the job's headers"
    );
    assert!(file.exists(), "the source is the owner's, never deleted");
}

/// Starts an 8 MiB upload at `/up`, makes the server unavailable once 1 MiB
/// is in, cancels the job and waits for the first (refused) DELETE.
async fn cancel_while_the_server_is_unavailable(h: &Harness, server: &TestServer) -> String {
    let file = h.source("data", 8 * MIB);
    let id = upload_job(h, JobType::Upload, &testup_url(server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for_bytes(&id, MIB).await;
    server.update_uploads("/up", |e| e.apply(|e| e.unavailable(u32::MAX)));
    h.engine().cancel(ALICE, &id).unwrap();
    while requests(server, "DELETE").is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    id
}

/// Waits (up to 10 s) until the server saw the first upload deleted.
async fn wait_until_deleted(server: &TestServer) {
    for _ in 0..500 {
        if server.uploads()[0].deleted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_owed_to_the_server_goes_on_after_a_restart() {
    let server = upload_server(UploadEndpoint::default().slow(MIB)).await;
    let mut h = Harness::new(fast_checkpoints());
    let id = cancel_while_the_server_is_unavailable(&h, &server).await;
    h.restart().await;
    assert_eq!(h.engine().get(ALICE, &id).unwrap_err().code(), "not-found");
    assert!(h.engine().list(ALICE, false).unwrap().is_empty());
    server.update_uploads("/up", |e| e.apply(|e| e.unavailable(0)));
    wait_until_deleted(&server).await;
    assert!(
        server.uploads()[0].deleted,
        "the restarted daemon cancelled it"
    );
    // Done with the server, the record leaves the store: a further restart
    // sends nothing more.
    let deletes = requests(&server, "DELETE").len();
    h.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests(&server, "DELETE").len(), deletes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_owed_to_the_server_is_given_up_24_hours_after_the_cancel() {
    let server = upload_server(UploadEndpoint::default().slow(MIB)).await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let mut h = Harness::with_clock(fast_checkpoints(), clock.clone());
    cancel_while_the_server_is_unavailable(&h, &server).await;
    h.engine().shutdown().await;
    // The daemon stays down past the window: the next start lets it go.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    server.update_uploads("/up", |e| e.apply(|e| e.unavailable(0)));
    let deletes = requests(&server, "DELETE").len();
    h.restart().await;
    h.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests(&server, "DELETE").len(), deletes);
    assert!(!server.uploads()[0].deleted);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_finished_upload_drops_the_reply_and_keeps_the_upload() {
    let server = upload_server(UploadEndpoint::default()).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 1000);
    for job_type in [JobType::UploadReply, JobType::Upload] {
        let id = upload_job(&h, job_type, &testup_url(&server), &file);
        h.engine().resume(ALICE, &id).unwrap();
        h.wait_for(&id, JobState::Transferred).await;
        h.engine().cancel(ALICE, &id).unwrap();
        assert_eq!(h.engine().get(ALICE, &id).unwrap_err().code(), "not-found");
        assert_eq!(
            h.engine().complete(ALICE, &id).unwrap_err().code(),
            "not-found",
            "the reply is gone with the job"
        );
    }
    // A DELETE would be sent at once, in the background: give it the time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(requests(&server, "DELETE").is_empty());
    let uploads = server.uploads();
    assert_eq!(uploads.len(), 2);
    assert!(uploads.iter().all(|u| u.is_complete() && !u.deleted));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_changes_during_the_upload_is_an_error() {
    // Grown, and rewritten in place with the same size.
    for same_size in [false, true] {
        let server = upload_server(UploadEndpoint::default().slow(2 * MIB)).await;
        let h = Harness::new(fast_checkpoints());
        let file = h.source("data", 5 * MIB);
        let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
        h.engine().resume(ALICE, &id).unwrap();
        h.wait_for_bytes(&id, MIB).await;
        let mut data = std::fs::read(&file).unwrap();
        if same_size {
            data[4 * MIB as usize] ^= 0xff;
        } else {
            data.extend_from_slice(b"more");
        }
        std::fs::write(&file, data).unwrap();
        let job = h.wait_for(&id, JobState::Error).await;
        let error = job.error.unwrap();
        assert_eq!(
            error.error.code, "local-file-changed",
            "same size: {same_size}"
        );
        assert_eq!(error.error.context, ErrorContext::LocalFile);
        assert_eq!(error.file, Some(0));
        assert!(!server.uploads()[0].is_complete());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_changed_between_attempts_is_an_error() {
    let server = upload_server(UploadEndpoint::default().drop_patch_after(1000)).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 100_000);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::TransientError).await;
    std::fs::write(&file, b"shorter").unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::Error).await;
    assert_eq!(job.error.unwrap().error.code, "local-file-changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_rewritten_with_the_same_size_between_attempts_is_an_error() {
    let server = upload_server(UploadEndpoint::default().drop_patch_after(1000)).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 100_000);
    let id = upload_job(&h, JobType::Upload, &testup_url(&server), &file);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::TransientError).await;
    // Same size, other bytes, a later modification time.
    std::fs::write(&file, vec![b'z'; 100_000]).unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    let job = h.wait_for(&id, JobState::Error).await;
    assert_eq!(job.error.unwrap().error.code, "local-file-changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reply_processor_makes_the_reply_data() {
    let server = upload_server(UploadEndpoint::default().reply("hello, reply")).await;
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 1000);
    let id = upload_job(&h, JobType::UploadReply, &testup_url(&server), &file);
    let download = h
        .engine()
        .create(ALICE, JobType::Download, "d", Priority::Normal)
        .unwrap();
    let refused = h.engine().set(
        ALICE,
        &download,
        Setting::ReplyProcessor(Some("reply-upper".into())),
    );
    assert_eq!(refused.unwrap_err().code(), "invalid-argument");
    h.engine()
        .set(
            ALICE,
            &id,
            Setting::ReplyProcessor(Some("reply-upper".into())),
        )
        .unwrap();
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    let reply = h.engine().complete(ALICE, &id).unwrap().reply.unwrap();
    assert_eq!(reply.reply.body, b"hello, reply");
    assert_eq!(reply.data.as_deref(), Some(&b"HELLO, REPLY"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reply_processor_writes_the_reply_file_and_its_data_is_capped_at_1_mib() {
    let server = TestServer::start().await;
    server.accept_uploads_with("/small", UploadEndpoint::default().reply("small reply"));
    server.accept_uploads_with(
        "/large",
        UploadEndpoint::default().reply(vec![b'x'; 2 * MIB as usize]),
    );
    let h = Harness::new(fast_checkpoints());
    let file = h.source("data", 1000);
    let base = format!("testup://{}", server.addr());
    let processed = |url: &str, reply_file: &Path| {
        let id = upload_job(&h, JobType::UploadReply, url, &file);
        h.engine()
            .set(
                ALICE,
                &id,
                Setting::ReplyProcessor(Some("reply-upper".into())),
            )
            .unwrap();
        h.engine()
            .set(
                ALICE,
                &id,
                Setting::ReplyFile(Some(reply_file.to_path_buf())),
            )
            .unwrap();
        h.engine().resume(ALICE, &id).unwrap();
        id
    };
    let small_file = h.files.path().join("small.txt");
    let id = processed(&format!("{base}/small"), &small_file);
    h.wait_for(&id, JobState::Transferred).await;
    let reply = h.engine().complete(ALICE, &id).unwrap().reply.unwrap();
    assert_eq!(reply.data.as_deref(), Some(&b"SMALL REPLY"[..]));
    assert_eq!(std::fs::read(&small_file).unwrap(), b"SMALL REPLY");

    // The processor returns the 2 MiB reply upper-cased as data: refused.
    let large_file = h.files.path().join("large.txt");
    let id = processed(&format!("{base}/large"), &large_file);
    let job = h.wait_for(&id, JobState::Error).await;
    let error = job.error.unwrap().error;
    assert_eq!(
        (error.code.as_str(), error.context),
        ("reply-too-large", ErrorContext::Plugin),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_events_are_coalesced_to_the_notification_interval() {
    let server = TestServer::start().await;
    let len = 12 * MIB;
    server.put("/f", Resource::pattern(len).slow(6 * MIB));
    let config = EngineConfig {
        // A checkpoint at every look (every 50 ms) that finds new bytes.
        checkpoint_bytes: 1,
        checkpoint_interval: Duration::ZERO,
        ..EngineConfig::default()
    };
    let h = Harness::with_clock(config, Arc::new(SystemClock::new()));
    let id = h
        .engine()
        .create(ALICE, JobType::Download, "d", Priority::Normal)
        .unwrap();
    h.engine()
        .add_file(
            ALICE,
            &id,
            &server.url("/f"),
            &h.files.path().join("f"),
            Vec::new(),
        )
        .unwrap();
    let mut events = h.engine().subscribe();
    let saves_before = h.saves.load(Ordering::Relaxed);
    h.engine().resume(ALICE, &id).unwrap();
    h.wait_for(&id, JobState::Transferred).await;
    let saves = h.saves.load(Ordering::Relaxed) - saves_before;
    let mut progress = 0;
    while let Ok(event) = events.try_recv() {
        if event.kind == EventKind::Progress {
            progress += 1;
        }
    }
    assert!(progress >= 1, "progress is reported");
    assert!(
        progress * 4 <= saves,
        "{progress} progress events for {saves} checkpoints"
    );
    // Once bytes move, a checkpoint writes the file's bytes alone, not the
    // job's record: the whole job is written only at the start, at the
    // first bytes and at the end.
    let checkpoints = h.checkpoints.load(Ordering::Relaxed);
    assert!(
        checkpoints >= 10 && saves - checkpoints <= 6,
        "{checkpoints} checkpoints and {} whole writes",
        saves - checkpoints
    );
}
