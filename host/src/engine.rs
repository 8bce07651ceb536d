//! The job engine: carries jobs out with BITS semantics, durably.
//!
//! It holds every job in memory and in the store, applies the owner's
//! operations through the state machine of `job`, runs transfers through the
//! plugin runtime one file at a time, checkpoints progress (the temporary
//! file is synced before the offset recorded for it advances), keeps the
//! timers of SPEC §2, and publishes events. Every change of state is saved
//! before the operation returns.

use crate::clock::Clock;
use crate::commit::{Committer, Ticket};
use crate::error::{ErrorClass, ErrorContext, TransferError, code};
use crate::events::{Event, EventBus, EventKind};
use crate::files::{ReplySpool, TempFile};
use crate::identity::as_owner;
use crate::job::{
    ByteRange, EngineEvent, Job, JobError, JobFile, JobRefusal, JobSettings, JobState, JobType,
    MIN_RETRY_DELAY, Operation, Priority, ReplyRecord, check_local_path, check_ranges, engine_step,
    owner_operation,
};
use crate::metrics::{MeasuredStore, Metrics};
use crate::plugin::{
    Credentials, Destination, DownloadProgress, DownloadRequest, JobContext, MAX_REPLY_DATA,
    PluginRuntime, ReplyContext, ReplyFile, ReplyProgress, ReplySink, Source, UploadProgress,
};
use crate::scheduler::{Candidate, plan};
use crate::store::{JobStore, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The engine's policies (SPEC §2's named defaults).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_jobs_per_user: usize,
    pub max_jobs_per_machine: usize,
    pub max_files_per_job: usize,
    pub max_ranges_per_file: usize,
    /// A job idle this long is cancelled.
    pub inactivity_timeout: Duration,
    /// Background jobs transferring at once (foreground jobs always run).
    pub max_concurrent_transfers: usize,
    /// How long a background job keeps its slot when others of its priority wait.
    pub time_slice: Duration,
    /// Progress is checkpointed after this many bytes...
    pub checkpoint_bytes: u64,
    /// ...or this much time, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Progress events of one job are at least this far apart.
    pub notification_interval: Duration,
    /// Settings new jobs start with.
    pub job_defaults: JobSettings,
    /// How many redirects a plugin may follow.
    pub max_redirects: u32,
    /// The first pause before cancelling an upload on the server is tried
    /// again (it doubles up to 10 minutes, for up to 24 hours).
    pub upload_cancel_retry: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_jobs_per_user: 60,
            max_jobs_per_machine: 300,
            max_files_per_job: 200,
            max_ranges_per_file: 500,
            inactivity_timeout: Duration::from_secs(90 * 24 * 3600),
            max_concurrent_transfers: 4,
            time_slice: Duration::from_secs(60),
            checkpoint_bytes: 32 << 20,
            checkpoint_interval: Duration::from_secs(1),
            notification_interval: Duration::from_millis(500),
            job_defaults: JobSettings::default(),
            max_redirects: 10,
            upload_cancel_retry: Duration::from_secs(5),
        }
    }
}

/// Who asks: the caller's uid, and whether it may act on every job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub admin: bool,
}

impl Caller {
    pub fn user(uid: u32) -> Caller {
        Caller {
            uid,
            admin: uid == 0,
        }
    }
}

/// A setter of SPEC §2 / §4.
#[derive(Debug, Clone)]
pub enum Setting {
    Name(String),
    Description(String),
    Priority(Priority),
    RetryDelay(Duration),
    NoProgressTimeout(Duration),
    MaxDownloadTime(Duration),
    Headers(Vec<(String, String)>),
    Credentials(Option<Credentials>),
    NotifyCommand(Option<String>),
    ReplyProcessor(Option<String>),
    /// Where the reply file of an upload-reply job goes on `complete`.
    ReplyFile(Option<PathBuf>),
    /// The reply processor's options (upload-reply jobs).
    ReplyOptions(Vec<(String, String)>),
    /// The upload protocol (upload jobs), for schemes with several.
    Protocol(Option<String>),
}

/// A file to add to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub remote: String,
    pub local: PathBuf,
    /// Downloads: only these byte ranges.
    pub ranges: Vec<ByteRange>,
    /// Downloads: the SHA-256 the whole file must have, as hex.
    pub sha256: Option<String>,
}

/// What `complete` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Completion {
    /// Some files were not fully transferred and were deleted.
    pub partial: bool,
    /// The files moved into place.
    pub files: Vec<PathBuf>,
    /// For upload-reply jobs: the reply.
    pub reply: Option<ReplyRecord>,
}

struct Slot {
    job: Job,
    running: Option<Running>,
    last_started: Option<Duration>,
    last_progress_event: Option<Duration>,
    /// A `complete` is moving the job's files: no transfer starts, no timer
    /// fires, and every other operation is refused until it is done.
    completing: bool,
}

impl Slot {
    /// Whether a progress event is due at `now` (SPEC §2: progress events of
    /// one job are at least `interval` apart); if so, it counts as sent.
    fn coalesced_progress(&mut self, now: Duration, interval: Duration) -> bool {
        let due = self
            .last_progress_event
            .is_none_or(|t| now.saturating_sub(t) >= interval);
        if due {
            self.last_progress_event = Some(now);
        }
        due
    }
}

struct Running {
    cancel: CancellationToken,
    generation: u64,
    since: Duration,
}

struct Inner {
    config: EngineConfig,
    /// Every write goes through it: staged under the job table, waited
    /// for after the table is released.
    store: Committer,
    metrics: Arc<Metrics>,
    runtime: Arc<PluginRuntime>,
    clock: Arc<dyn Clock>,
    events: EventBus,
    jobs: Mutex<HashMap<String, Slot>>,
    last_tick: Mutex<Duration>,
    generation: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
}

/// The job engine. Cheap to clone; all clones are the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

type Refusal<T> = Result<T, JobRefusal>;

impl Engine {
    /// Opens the engine on `store`: loads every job, puts interrupted
    /// transfers back in the queue, and brings timers up to date by the wall
    /// time that passed while the engine was down (never backwards).
    pub fn open(
        config: EngineConfig,
        store: Box<dyn JobStore>,
        runtime: Arc<PluginRuntime>,
        clock: Arc<dyn Clock>,
    ) -> Refusal<Engine> {
        let (jobs, unreadable) = store
            .load_all()
            .map_err(|e| JobRefusal::Store(e.to_string()))?;
        for e in unreadable {
            tracing::error!("a stored job was skipped: {e}");
        }
        let now_wall = clock.wall();
        let mut slots = HashMap::new();
        let mut server_cancels = Vec::new();
        for mut job in jobs {
            if job.state.is_final() {
                // A cancelled upload whose session the server still holds:
                // cancelling it there goes on, unless its window closed
                // while the daemon was down.
                if let Some(remaining) = server_cancel_remaining(&job, now_wall) {
                    server_cancels.push((job, remaining));
                } else if let Err(e) = store.remove(&job.id) {
                    tracing::error!(job = %job.id, "removing from the store failed: {e}");
                }
                continue;
            }
            let down = now_wall.duration_since(job.timers_at).unwrap_or_default();
            job.timers.idle += down;
            if let Some(w) = job.timers.without_progress.as_mut() {
                *w += down;
            }
            if let Some(r) = job.timers.retry_in.as_mut() {
                *r = r.saturating_sub(down);
            }
            job.timers_at = now_wall;
            if matches!(job.state, JobState::Connecting | JobState::Transferring) {
                job.state = JobState::Queued;
            }
            slots.insert(
                job.id.clone(),
                Slot {
                    job,
                    running: None,
                    last_started: None,
                    last_progress_event: None,
                    completing: false,
                },
            );
        }
        let metrics = Arc::new(Metrics::default());
        let store = Committer::start(Box::new(MeasuredStore {
            inner: store,
            metrics: metrics.clone(),
        }));
        let engine = Engine {
            inner: Arc::new(Inner {
                last_tick: Mutex::new(clock.monotonic()),
                config,
                store,
                metrics,
                runtime,
                clock,
                events: EventBus::new(),
                jobs: Mutex::new(slots),
                generation: Default::default(),
                shutdown: CancellationToken::new(),
            }),
        };
        for (job, remaining) in server_cancels {
            engine.cancel_upload_in_background(&job, remaining);
        }
        Ok(engine)
    }

    /// The engine's metrics as Prometheus text (`GET /v1/metrics`).
    pub fn metrics_text(&self) -> String {
        let jobs: Vec<(JobState, JobType)> = self
            .inner
            .lock()
            .values()
            .map(|slot| (slot.job.state, slot.job.job_type))
            .collect();
        self.inner.metrics.render(&jobs)
    }

    /// Runs the timers and the scheduler every `period` until `shutdown`.
    pub fn spawn_ticker(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = interval.tick() => engine.tick(),
                    () = engine.inner.shutdown.cancelled() => break,
                }
            }
        })
    }

    /// Stops every transfer, checkpoints, and saves every job's timers.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tokens: Vec<_> = {
            let jobs = self.inner.lock();
            jobs.values()
                .filter_map(|s| s.running.as_ref().map(|r| r.cancel.clone()))
                .collect()
        };
        for token in tokens {
            token.cancel();
        }
        // Let workers write their final checkpoints.
        for _ in 0..200 {
            if self.inner.lock().values().all(|s| s.running.is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.tick_timers();
        let saved: Vec<(String, Ticket)> = self
            .inner
            .lock()
            .values()
            .map(|slot| (slot.job.id.clone(), self.inner.store.stage_save(&slot.job)))
            .collect();
        for (id, ticket) in saved {
            if let Err(e) = ticket.wait() {
                tracing::error!(job = %id, "saving at shutdown failed: {e}");
            }
        }
    }

    /// The event stream of every job.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Creates a job in `suspended`; returns its id.
    pub fn create(
        &self,
        caller: Caller,
        job_type: JobType,
        name: &str,
        priority: Priority,
    ) -> Refusal<String> {
        let inner = &self.inner;
        let mut jobs = inner.lock();
        if jobs.len() >= inner.config.max_jobs_per_machine {
            return Err(JobRefusal::TooManyJobsPerMachine(
                inner.config.max_jobs_per_machine,
            ));
        }
        let own = jobs.values().filter(|s| s.job.owner == caller.uid).count();
        if caller.uid != 0 && own >= inner.config.max_jobs_per_user {
            return Err(JobRefusal::TooManyJobsPerUser(
                inner.config.max_jobs_per_user,
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut job = Job::new(
            id.clone(),
            job_type,
            caller.uid,
            name.to_string(),
            priority,
            inner.clock.wall(),
        );
        job.settings = inner.config.job_defaults.clone();
        let saved = inner.store.stage_save(&job);
        jobs.insert(
            id.clone(),
            Slot {
                job,
                running: None,
                last_started: None,
                last_progress_event: None,
                completing: false,
            },
        );
        drop(jobs);
        durable(saved)?;
        Ok(id)
    }

    /// Adds a file. Downloads may name byte ranges; uploads hold one file.
    pub fn add_file(
        &self,
        caller: Caller,
        id: &str,
        remote: &str,
        local: &Path,
        ranges: Vec<ByteRange>,
    ) -> Refusal<()> {
        self.add_files(
            caller,
            id,
            vec![NewFile {
                remote: remote.to_string(),
                local: local.to_path_buf(),
                ranges,
                sha256: None,
            }],
        )
    }

    /// Adds a set of files at once (BITS `AddFileSet`): all of them or none,
    /// in one durable write, with the job's limits checked for the whole set.
    pub fn add_files(&self, caller: Caller, id: &str, files: Vec<NewFile>) -> Refusal<()> {
        let config = &self.inner.config;
        if files.is_empty() {
            return Err(JobRefusal::InvalidArgument("no file to add".into()));
        }
        let mut checked = Vec::with_capacity(files.len());
        for file in files {
            check_local_path(&file.local)?;
            let parsed = url::Url::parse(&file.remote).map_err(|e| {
                JobRefusal::Transfer(TransferError::fatal(
                    ErrorContext::RemoteFile,
                    "invalid-url",
                    format!("{:?} is not a URL: {e}", file.remote),
                ))
            })?;
            self.inner.runtime.transport_for(parsed.as_str())?;
            checked.push((parsed.to_string(), file));
        }
        self.modify(caller, id, Operation::AddFile, |job| {
            let upload = job.job_type != JobType::Download;
            if upload && job.files.len() + checked.len() > 1 {
                return Err(JobRefusal::TooManyFiles);
            }
            if job.files.len() + checked.len() > config.max_files_per_job {
                return Err(JobRefusal::FileLimit(config.max_files_per_job));
            }
            for (remote, file) in checked {
                if job.files.iter().any(|f| f.local == file.local) {
                    return Err(JobRefusal::InvalidArgument(format!(
                        "two files of the job would be written to {}",
                        file.local.display()
                    )));
                }
                job.files
                    .push(new_job_file(job.job_type, remote, file, config)?);
            }
            Ok(())
        })
        .map(|_| ())
    }

    pub fn resume(&self, caller: Caller, id: &str) -> Refusal<()> {
        self.modify(caller, id, Operation::Resume, |job| {
            job.timers.retry_in = None;
            Ok(())
        })?;
        self.schedule();
        Ok(())
    }

    pub fn suspend(&self, caller: Caller, id: &str) -> Refusal<()> {
        self.modify(caller, id, Operation::Suspend, |_| Ok(()))?;
        self.schedule();
        Ok(())
    }

    pub fn set(&self, caller: Caller, id: &str, setting: Setting) -> Refusal<()> {
        let schedule = matches!(setting, Setting::Priority(_));
        self.modify(caller, id, Operation::Set, |job| {
            let s = &mut job.settings;
            match setting {
                Setting::Name(v) => job.name = v,
                Setting::Description(v) => job.description = v,
                Setting::Priority(v) => job.priority = v,
                Setting::RetryDelay(v) => s.retry_delay = v.max(MIN_RETRY_DELAY),
                Setting::NoProgressTimeout(v) => s.no_progress_timeout = v,
                Setting::MaxDownloadTime(v) => s.max_download_time = v,
                Setting::Headers(v) => s.headers = v,
                Setting::Credentials(v) => s.credentials = v,
                Setting::NotifyCommand(v) => s.notify_command = v,
                Setting::ReplyProcessor(v) => {
                    if job.job_type != JobType::UploadReply && v.is_some() {
                        return Err(JobRefusal::InvalidArgument(
                            "only upload-reply jobs have a reply processor".into(),
                        ));
                    }
                    s.reply_processor = v;
                }
                Setting::ReplyFile(v) => {
                    if job.job_type != JobType::UploadReply && v.is_some() {
                        return Err(JobRefusal::InvalidArgument(
                            "only upload-reply jobs have a reply file".into(),
                        ));
                    }
                    if let Some(path) = &v {
                        check_local_path(path)?;
                    }
                    s.reply_file = v;
                }
                Setting::ReplyOptions(v) => {
                    if job.job_type != JobType::UploadReply && !v.is_empty() {
                        return Err(JobRefusal::InvalidArgument(
                            "only upload-reply jobs have reply processor options".into(),
                        ));
                    }
                    s.reply_options = v;
                }
                Setting::Protocol(v) => {
                    if job.job_type == JobType::Download && v.is_some() {
                        return Err(JobRefusal::InvalidArgument(
                            "only upload jobs choose an upload protocol".into(),
                        ));
                    }
                    s.protocol = v;
                }
            }
            Ok(())
        })?;
        if schedule {
            self.schedule();
        }
        Ok(())
    }

    /// Cancels the job: stops it, deletes its temporary files, and (for an
    /// unfinished upload with a server session) cancels it on the server in
    /// the background. The job leaves the queue.
    pub fn cancel(&self, caller: Caller, id: &str) -> Refusal<()> {
        let job = self.modify(caller, id, Operation::Cancel, |_| Ok(()))?;
        if let Some(remaining) = server_cancel_remaining(&job, self.inner.clock.wall()) {
            // The cancelled record stays in the store until the server has
            // cancelled the session too, so that a restart goes on with it.
            // (No transfer writes it meanwhile: `modify` took its slot.)
            self.inner.save(&job)?;
            self.stop_and_drop(&job.id);
            self.cancel_upload_in_background(&job, remaining);
        } else {
            self.forget(&job);
        }
        delete_temp_files(&job);
        self.schedule();
        Ok(())
    }

    /// Completes the job (SPEC §2): downloads move every fully transferred
    /// file into place and delete partial ones; uploads hand over the reply.
    /// If a move fails the job stays, in `error`, and can be completed again.
    pub fn complete(&self, caller: Caller, id: &str) -> Refusal<Completion> {
        let job = {
            let mut jobs = self.inner.lock();
            let slot = self.inner.owned_slot(&mut jobs, caller, id)?;
            owner_operation(
                slot.job.job_type,
                slot.job.state,
                Operation::Complete,
                !slot.job.files.is_empty(),
            )?;
            if slot.completing {
                return Err(JobRefusal::Completing);
            }
            slot.completing = true;
            if let Some(running) = slot.running.take() {
                running.cancel.cancel();
            }
            slot.job.clone()
        };
        // Whatever way this ends, the job is released again (on success it
        // is gone already).
        let _completing = Completing { engine: self, id };
        let mut completion = Completion {
            partial: false,
            files: Vec::new(),
            reply: job.reply.clone(),
        };
        if job.job_type == JobType::Download {
            let tag = temp_tag(&job.id);
            for (index, file) in job.files.iter().enumerate() {
                if file.finalized {
                    completion.files.push(file.local.clone());
                    continue;
                }
                if !file.complete {
                    completion.partial = true;
                    as_owner(job.owner, || {
                        TempFile::reopen(&file.local, &tag).and_then(|t| t.remove())
                    })
                    .ok();
                    continue;
                }
                let moved = as_owner(job.owner, || {
                    TempFile::reopen(&file.local, &tag).and_then(|t| t.finish())
                });
                match moved {
                    Ok(path) => {
                        completion.files.push(path);
                        // Durable at once: a `complete` cut short by a crash
                        // goes on with the files not yet in place.
                        if let Some(job) =
                            self.with_job(id, |job| job.files[index].finalized = true)
                        {
                            self.inner.save(&job)?;
                        }
                    }
                    Err(error) => {
                        let failed = self.with_job(id, |job| {
                            job.state = JobState::Error;
                            job.error = Some(JobError {
                                error: error.clone(),
                                file: Some(index),
                            });
                            job.error_count += 1;
                        });
                        if let Some(job) = failed {
                            self.inner.save(&job)?;
                            self.inner.publish(&job, EventKind::Error);
                        }
                        return Err(JobRefusal::Transfer(error));
                    }
                }
            }
        }
        if let (Some(reply), Some(reply_file)) = (&job.reply, &job.settings.reply_file)
            && reply.in_file
        {
            let moved = as_owner(job.owner, || {
                TempFile::reopen(reply_file, &reply_tag(&job.id)).and_then(|t| t.finish())
            });
            match moved {
                Ok(path) => completion.files.push(path),
                // Moved already by a `complete` cut short: nothing to do.
                Err(e) if e.code == "cannot-open-file" && reply_file.exists() => {
                    completion.files.push(reply_file.clone());
                }
                // The job stays `transferred`, its reply kept: `complete`
                // can be called again once the owner mended the directory.
                Err(error) => return Err(JobRefusal::Transfer(error)),
            }
        }
        let job = self
            .with_job(id, |job| job.state = JobState::Acknowledged)
            .ok_or_else(|| JobRefusal::NotFound(id.to_string()))?;
        self.forget(&job);
        self.inner.publish(&job, EventKind::State);
        self.schedule();
        Ok(completion)
    }

    /// Makes `caller` the owner of job `id` (administrators only).
    pub fn take_ownership(&self, caller: Caller, id: &str) -> Refusal<()> {
        if !caller.admin {
            return Err(JobRefusal::AccessDenied(id.to_string()));
        }
        self.modify(caller, id, Operation::Set, |job| {
            job.owner = caller.uid;
            Ok(())
        })
        .map(|_| ())
    }

    /// One job, if the caller may see it.
    pub fn get(&self, caller: Caller, id: &str) -> Refusal<Job> {
        let mut jobs = self.inner.lock();
        Ok(self.inner.owned_slot(&mut jobs, caller, id)?.job.clone())
    }

    /// The caller's jobs, or every job for an administrator asking for all,
    /// oldest first.
    pub fn list(&self, caller: Caller, all_users: bool) -> Refusal<Vec<Job>> {
        if all_users && !caller.admin {
            return Err(JobRefusal::AccessDenied("all users' jobs".into()));
        }
        let jobs = self.inner.lock();
        let mut list: Vec<Job> = jobs
            .values()
            .filter(|s| all_users || s.job.owner == caller.uid)
            .map(|s| s.job.clone())
            .collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Advances every timer by the monotonic time since the last tick, then
    /// schedules. The ticker calls it; tests call it after moving a clock.
    pub fn tick(&self) {
        self.tick_timers();
        self.schedule();
    }

    fn tick_timers(&self) {
        let inner = &self.inner;
        let now = inner.clock.monotonic();
        let delta = {
            let mut last = inner.last_tick.lock().unwrap_or_else(|e| e.into_inner());
            let delta = now.saturating_sub(*last);
            *last = now;
            delta
        };
        let wall = inner.clock.wall();
        let mut changed = Vec::new();
        let mut saved = Vec::new();
        {
            let mut jobs = inner.lock();
            for slot in jobs.values_mut().filter(|s| !s.completing) {
                let job = &mut slot.job;
                job.timers.idle += delta;
                job.timers_at = wall;
                let mut event = None;
                if slot.running.is_some() {
                    job.timers.active += delta;
                    if job.timers.active >= job.settings.max_download_time {
                        event = Some((
                            EngineEvent::FatalFailure,
                            TransferError::fatal(
                                ErrorContext::Policy,
                                "max-download-time",
                                "the job reached its maximum download time",
                            ),
                        ));
                    }
                }
                if job.state == JobState::TransientError {
                    let without = job.timers.without_progress.get_or_insert(Duration::ZERO);
                    *without += delta;
                    let retry = job.timers.retry_in.get_or_insert(Duration::ZERO);
                    *retry = retry.saturating_sub(delta);
                    if *without >= job.settings.no_progress_timeout {
                        event = Some((
                            EngineEvent::FatalFailure,
                            TransferError::fatal(
                                ErrorContext::Policy,
                                "no-progress-timeout",
                                "no progress within the no-progress timeout",
                            ),
                        ));
                    } else if *retry == Duration::ZERO {
                        job.state = JobState::Queued;
                        job.timers.retry_in = None;
                        changed.push((job.clone(), EventKind::State));
                    }
                }
                if job.timers.idle >= inner.config.inactivity_timeout && !job.state.is_final() {
                    job.state = engine_step(job.state, EngineEvent::Abandoned)
                        .unwrap_or(JobState::Cancelled);
                    if let Some(r) = slot.running.take() {
                        r.cancel.cancel();
                    }
                    changed.push((job.clone(), EventKind::State));
                    continue;
                }
                if let Some((step, error)) = event
                    && let Some(next) = engine_step(job.state, step)
                {
                    job.state = next;
                    job.error = Some(JobError { error, file: None });
                    job.error_count += 1;
                    if let Some(r) = slot.running.take() {
                        r.cancel.cancel();
                    }
                    changed.push((job.clone(), EventKind::Error));
                }
            }
            // Staged under the lock, like every write: no stale copy can
            // land after an owner's operation.
            for (job, _) in &changed {
                if job.state != JobState::Cancelled {
                    saved.push((job.id.clone(), inner.store.stage_save(job)));
                }
            }
        }
        for (id, ticket) in saved {
            if let Err(e) = ticket.wait() {
                tracing::error!(job = %id, "saving failed: {e}");
            }
        }
        for (job, kind) in changed {
            if job.state == JobState::Cancelled {
                self.forget(&job);
                delete_temp_files(&job);
            }
            inner.publish(&job, kind);
        }
    }

    /// Starts and preempts transfers as the scheduler decides.
    fn schedule(&self) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let now = self.inner.clock.monotonic();
        let mut jobs = self.inner.lock();
        let candidates: Vec<Candidate> = jobs
            .values()
            .filter(|s| s.job.state.is_active() && !s.completing)
            .map(|s| Candidate {
                id: s.job.id.clone(),
                priority: s.job.priority,
                running_since: s.running.as_ref().map(|r| r.since),
                last_started: s.last_started,
            })
            .collect();
        let decision = plan(
            &candidates,
            self.inner.config.max_concurrent_transfers,
            self.inner.config.time_slice,
            now,
        );
        for id in decision.preempt {
            if let Some(slot) = jobs.get_mut(&id)
                && let Some(running) = slot.running.take()
            {
                running.cancel.cancel();
                if let Some(next) = engine_step(slot.job.state, EngineEvent::Preempted) {
                    slot.job.state = next;
                }
            }
        }
        for id in decision.start {
            let Some(slot) = jobs.get_mut(&id) else {
                continue;
            };
            let Some(next) = engine_step(slot.job.state, EngineEvent::Started) else {
                continue;
            };
            slot.job.state = next;
            let cancel = CancellationToken::new();
            let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
            slot.running = Some(Running {
                cancel: cancel.clone(),
                generation,
                since: now,
            });
            slot.last_started = Some(now);
            let job = slot.job.clone();
            let engine = self.clone();
            self.inner.publish(&job, EventKind::State);
            tokio::spawn(async move { engine.run_transfer(job, cancel, generation).await });
        }
    }

    /// Carries one job's transfer out, then records how it ended.
    async fn run_transfer(self, job: Job, cancel: CancellationToken, generation: u64) {
        let context = self.job_context(&job, cancel);
        let outcome = match job.job_type {
            JobType::Download => self.download_files(&job, &context, generation).await,
            JobType::Upload | JobType::UploadReply => {
                self.upload_file(&job, &context, generation).await
            }
        };
        self.finish_transfer(&job.id, generation, outcome).await;
    }

    /// What a plugin call working for `job` may know of it.
    fn job_context(&self, job: &Job, cancel: CancellationToken) -> JobContext {
        JobContext {
            job_id: job.id.clone(),
            headers: job.settings.headers.clone(),
            credentials: job.settings.credentials.clone(),
            max_redirects: self.inner.config.max_redirects,
            cancel,
        }
    }

    async fn download_files(
        &self,
        job: &Job,
        context: &JobContext,
        generation: u64,
    ) -> Result<(), JobError> {
        let tag = temp_tag(&job.id);
        for (index, file) in job.files.iter().enumerate() {
            if file.complete {
                continue;
            }
            let attach = |error: TransferError| JobError {
                error,
                file: Some(index),
            };
            let (temp, shorter) =
                as_owner(job.owner, || open_temp(file, &tag, job.owner)).map_err(attach)?;
            if shorter {
                // Bytes counted before a crash are gone: the file starts over,
                // its record lowered before the file is cut.
                tracing::warn!(job = %job.id, file = index, "the temporary file is shorter than its record; starting the file over");
                self.restart_file(&job.id, generation, index, &temp)
                    .map_err(attach)?;
            }
            let mut started_over = false;
            loop {
                match self
                    .download_segments(job, index, &temp, context, generation)
                    .await
                {
                    // The ranges held belong to another version of the
                    // resource: this file (only) starts over, once per run.
                    Err(error) if error.code == code::RESOURCE_CHANGED && !started_over => {
                        started_over = true;
                        self.restart_file(&job.id, generation, index, &temp)
                            .map_err(attach)?;
                    }
                    result => break result.map_err(attach)?,
                }
            }
            if let Some(expected) = &file.sha256 {
                let actual = sha256_of(temp.file()).await.map_err(attach)?;
                if &actual != expected {
                    // What arrived is not the file asked for: none of it is kept.
                    self.restart_file(&job.id, generation, index, &temp)
                        .map_err(attach)?;
                    return Err(attach(TransferError::fatal(
                        ErrorContext::RemoteFile,
                        "checksum-mismatch",
                        format!(
                            "{} arrived with SHA-256 {actual}, not the {expected} the job asked for",
                            file.remote
                        ),
                    )));
                }
            }
            let mut mismatch = None;
            let updated = self
                .save_if_running(&job.id, generation, |slot| {
                    let f = &mut slot.job.files[index];
                    match f.bytes_total {
                        Some(total) if total != f.bytes_transferred => {
                            mismatch = Some((total, f.bytes_transferred));
                            return false;
                        }
                        _ => {}
                    }
                    f.complete = true;
                    f.bytes_total = Some(f.bytes_transferred);
                    true
                })
                .map_err(|e| JobError {
                    error: store_error(&e),
                    file: Some(index),
                })?;
            if let Some((total, transferred)) = mismatch {
                return Err(attach(TransferError::transient(
                    ErrorContext::Transport,
                    code::LENGTH_MISMATCH,
                    format!(
                        "{} has {transferred} bytes where {total} were expected",
                        file.remote
                    ),
                )));
            }
            if let Some(updated) = updated {
                self.inner.metrics.add_file(JobType::Download);
                self.inner
                    .publish(&updated, EventKind::FileTransferred { file: index });
            }
        }
        Ok(())
    }

    /// Runs a plugin call for `url`, counting it and its duration by plugin.
    async fn timed<R>(
        &self,
        url: &str,
        call: impl Future<Output = Result<R, TransferError>>,
    ) -> Result<R, TransferError> {
        let start = std::time::Instant::now();
        let result = call.await;
        if let Ok(plugin) = self.inner.runtime.transport_for(url) {
            self.inner.metrics.add_plugin_call(
                &plugin.manifest.name,
                result.is_ok(),
                start.elapsed(),
            );
        }
        result
    }

    /// Starts file `index` over: its recorded progress and validator are
    /// durably reset first, then its temporary file is cut, so a crash in
    /// between never leaves a record pointing past the bytes on disk.
    fn restart_file(
        &self,
        id: &str,
        generation: u64,
        index: usize,
        temp: &TempFile,
    ) -> Result<(), TransferError> {
        self.record_restart(id, generation, index)?;
        temp.truncate(0)
    }

    /// The durable half of a restart: file `index` has no bytes and no
    /// validator.
    fn record_restart(&self, id: &str, generation: u64, index: usize) -> Result<(), TransferError> {
        self.save_if_running(id, generation, |slot| {
            let f = &mut slot.job.files[index];
            let changed = f.bytes_transferred != 0 || f.validator.is_some();
            f.bytes_transferred = 0;
            f.validator = None;
            changed
        })
        .map(|_| ())
        .map_err(|e| store_error(&e))
    }

    /// Downloads what is left of file `index`: the rest of the whole file,
    /// or each range not yet done, packed one after another.
    async fn download_segments(
        &self,
        job: &Job,
        index: usize,
        temp: &TempFile,
        context: &JobContext,
        generation: u64,
    ) -> Result<(), TransferError> {
        let file = &job.files[index];
        let done = self
            .current_file(&job.id, index)
            .map_or(0, |f| f.bytes_transferred);
        for segment in segments(file, done) {
            let validator = self.current_file(&job.id, index).and_then(|f| f.validator);
            let request = DownloadRequest {
                url: file.remote.clone(),
                offset: segment.offset,
                end: segment.end,
                validator,
            };
            let engine = self.clone();
            let id = job.id.clone();
            let destination = Destination::new(
                temp.file(),
                segment.offset,
                segment.position,
                segment.end.is_none(),
            )
            .stop_on(context.cancel.clone())
            .before_restart(Box::new(move || {
                engine.record_restart(&id, generation, index)
            }));
            let progress = destination.progress();
            let call = self.timed(
                &file.remote,
                self.inner.runtime.download(request, context, destination),
            );
            self.with_checkpoints(job, index, temp, &progress, generation, call)
                .await?;
            self.check_length(job, index, temp, &segment, &progress, generation)?;
        }
        Ok(())
    }

    /// Checks what a download call that returned successfully wrote against
    /// what the server declared: the resource's size for a whole file, the
    /// range's span for a range. A plugin's word that the body was whole is
    /// not enough. A body that fell short is retried from where it ended; a
    /// longer one starts the file over.
    fn check_length(
        &self,
        job: &Job,
        index: usize,
        temp: &TempFile,
        segment: &Segment,
        progress: &DownloadProgress,
        generation: u64,
    ) -> Result<(), TransferError> {
        let written = progress.written_to.load(Ordering::Acquire);
        let size = progress
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|r| r.size);
        let expected = match segment.end {
            None => size,
            Some(end) => {
                let end = size.map_or(end, |size| end.min(size));
                Some(segment.position + end.saturating_sub(segment.offset))
            }
        };
        let Some(expected) = expected else {
            return Ok(());
        };
        let url = &job.files[index].remote;
        if written < expected {
            return Err(TransferError::transient(
                ErrorContext::Transport,
                code::LENGTH_MISMATCH,
                format!(
                    "the body of {url} ended after byte {written}; the server declared {expected}"
                ),
            ));
        }
        if written > expected {
            self.restart_file(&job.id, generation, index, temp)?;
            return Err(TransferError::transient(
                ErrorContext::Transport,
                code::LENGTH_MISMATCH,
                format!("the body of {url} ran to byte {written}; the server declared {expected}"),
            ));
        }
        Ok(())
    }

    /// Runs a download call, checkpointing its progress as it goes and once
    /// more when it ends, whatever the outcome.
    async fn with_checkpoints(
        &self,
        job: &Job,
        index: usize,
        temp: &TempFile,
        progress: &Arc<DownloadProgress>,
        generation: u64,
        call: impl Future<Output = Result<(), TransferError>>,
    ) -> Result<(), TransferError> {
        tokio::pin!(call);
        let config = &self.inner.config;
        let mut recorded = progress.written_to.load(Ordering::Acquire);
        let mut last = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    let written = progress.written_to.load(Ordering::Acquire);
                    let due = written.saturating_sub(recorded) >= config.checkpoint_bytes
                        || (written != recorded && last.elapsed() >= config.checkpoint_interval)
                        || progress.restarted.load(Ordering::Acquire);
                    if due {
                        self.checkpoint(&job.id, index, temp, progress, generation)?;
                        recorded = written;
                        last = tokio::time::Instant::now();
                    }
                }
            }
        };
        self.checkpoint(&job.id, index, temp, progress, generation)?;
        result
    }

    /// Syncs the temporary file, then records the bytes that were written
    /// before the sync: the recorded offset never points past durable bytes.
    fn checkpoint(
        &self,
        id: &str,
        index: usize,
        temp: &TempFile,
        progress: &DownloadProgress,
        generation: u64,
    ) -> Result<(), TransferError> {
        let written = progress.written_to.load(Ordering::Acquire);
        let restarted = progress.restarted.swap(false, Ordering::AcqRel);
        let remote = progress
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        temp.sync()?;
        let now = self.inner.clock.monotonic();
        let metrics = &self.inner.metrics;
        let mut notify = false;
        let updated = self.save_if_running(id, generation, |slot| {
            let job = &mut slot.job;
            let file = &mut job.files[index];
            let moved = written != file.bytes_transferred || restarted;
            metrics.add_bytes(
                JobType::Download,
                written.saturating_sub(file.bytes_transferred),
            );
            file.bytes_transferred = written;
            if let Some(remote) = &remote {
                if file.validator.is_none() || restarted {
                    file.validator = remote.validator.clone();
                }
                if file.ranges.is_empty() {
                    file.bytes_total = remote.size;
                }
            }
            if moved {
                job.timers.idle = Duration::ZERO;
                job.timers.without_progress = None;
                if let Some(next) = engine_step(job.state, EngineEvent::BytesMoving) {
                    job.state = next;
                }
                notify = slot.coalesced_progress(now, self.inner.config.notification_interval);
            }
            moved
        });
        if let Some(job) = updated.map_err(|e| store_error(&e))?
            && notify
        {
            self.inner.publish(&job, EventKind::Progress);
        }
        Ok(())
    }

    /// Records what an upload call reported: the bytes the server
    /// acknowledged and its session. The session is recorded even when the
    /// call was stopped meanwhile (suspended, preempted): it is a fact about
    /// the server, and the next attempt resumes it.
    fn upload_checkpoint(
        &self,
        id: &str,
        generation: u64,
        progress: &UploadProgress,
    ) -> Result<(), TransferError> {
        let acknowledged = progress.acknowledged.load(Ordering::Acquire);
        let session = progress
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = self.inner.clock.monotonic();
        let metrics = &self.inner.metrics;
        let mut notify = false;
        let mut running = false;
        let updated = self.save_if_running(id, generation, |slot| {
            running = true;
            let job = &mut slot.job;
            let moved = job.files[0].bytes_transferred != acknowledged;
            metrics.add_bytes(
                job.job_type,
                acknowledged.saturating_sub(job.files[0].bytes_transferred),
            );
            let changed = moved || (session.is_some() && job.upload_session != session);
            job.files[0].bytes_transferred = acknowledged;
            if session.is_some() {
                job.upload_session = session.clone();
            }
            if !changed {
                return false;
            }
            job.timers.idle = Duration::ZERO;
            job.timers.without_progress = None;
            if let Some(next) = engine_step(job.state, EngineEvent::BytesMoving) {
                job.state = next;
            }
            notify = moved && slot.coalesced_progress(now, self.inner.config.notification_interval);
            true
        });
        let updated = updated.map_err(|e| store_error(&e))?;
        if !running && let Some(session) = session {
            self.save_if_present(id, |job| {
                let changed = job.upload_session.as_ref() != Some(&session);
                job.upload_session = Some(session);
                changed
            })
            .map_err(|e| store_error(&e))?;
        }
        if let Some(job) = updated
            && notify
        {
            self.inner.publish(&job, EventKind::Progress);
        }
        Ok(())
    }

    async fn upload_file(
        &self,
        job: &Job,
        context: &JobContext,
        generation: u64,
    ) -> Result<(), JobError> {
        let file = job.files.first().ok_or_else(|| JobError {
            error: TransferError::fatal(ErrorContext::Policy, "empty", "the job has no file"),
            file: None,
        })?;
        let attach = |error: TransferError| JobError {
            error,
            file: Some(0),
        };
        let size = file.bytes_total.unwrap_or(0);
        let handle = Arc::new(as_owner(job.owner, || open_source(&file.local)).map_err(attach)?);
        let want_reply = job.job_type == JobType::UploadReply;
        let mut session_expired = false;
        let (reply, digest) = loop {
            let mut source = Source::new(handle.clone(), size, file.source_modified);
            if want_reply && job.settings.reply_processor.is_some() {
                source = source.with_digest();
            }
            let progress = source.progress();
            let spool = if want_reply {
                Some(as_owner(job.owner, || reply_spool(job)).map_err(attach)?)
            } else {
                None
            };
            let sink = spool
                .as_ref()
                .map(|spool| ReplySink::new(spool.file(), context.cancel.clone()));
            let reply_progress = sink.as_ref().map(ReplySink::progress);
            let session = self.current_session(&job.id);
            let request = crate::plugin::UploadRequest {
                url: file.remote.clone(),
                size,
                name: file
                    .local
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                session: session.clone(),
                protocol: job.settings.protocol.clone(),
            };
            let call = self.timed(
                &file.remote,
                self.inner.runtime.upload(request, context, source, sink),
            );
            match self
                .with_upload_checkpoints(job, generation, &progress, session, call)
                .await
            {
                // The server forgot the session: start over with a new one,
                // once per attempt.
                Err(error) if error.code == code::SESSION_EXPIRED && !session_expired => {
                    session_expired = true;
                    self.save_if_running(&job.id, generation, |slot| {
                        slot.job.upload_session = None;
                        slot.job.files[0].bytes_transferred = 0;
                        true
                    })
                    .map_err(|e| attach(store_error(&e)))?;
                }
                result => {
                    result.map_err(attach)?;
                    break (spool.zip(reply_progress), progress.sha256());
                }
            }
        };
        let reply = match reply {
            Some((spool, progress)) => Some(
                self.take_reply(job, context, spool, &progress, digest)
                    .await
                    .map_err(attach)?,
            ),
            None => None,
        };
        let saved = self
            .save_if_running(&job.id, generation, |slot| {
                let job = &mut slot.job;
                job.reply = reply;
                job.files[0].bytes_transferred = job.files[0].bytes_total.unwrap_or(0);
                job.files[0].complete = true;
                true
            })
            .map_err(|e| attach(store_error(&e)))?;
        if saved.is_some() {
            self.inner.metrics.add_file(job.job_type);
        }
        Ok(())
    }

    /// Runs an upload call, checkpointing what the server acknowledged and
    /// its session as they come, and once more when the call ends.
    async fn with_upload_checkpoints(
        &self,
        job: &Job,
        generation: u64,
        progress: &Arc<UploadProgress>,
        session: Option<String>,
        call: impl Future<Output = Result<(), TransferError>>,
    ) -> Result<(), TransferError> {
        tokio::pin!(call);
        let config = &self.inner.config;
        let mut recorded = (0, session);
        let mut last = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    let acknowledged = progress.acknowledged.load(Ordering::Acquire);
                    let session = progress.session.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    // A new session is saved at once: it is what lets an
                    // interrupted upload resume instead of starting over.
                    let due = (session.is_some() && session != recorded.1)
                        || acknowledged.saturating_sub(recorded.0) >= config.checkpoint_bytes
                        || (acknowledged != recorded.0 && last.elapsed() >= config.checkpoint_interval);
                    if due {
                        self.upload_checkpoint(&job.id, generation, progress)?;
                        recorded = (acknowledged, session);
                        last = tokio::time::Instant::now();
                    }
                }
            }
        };
        self.upload_checkpoint(&job.id, generation, progress)?;
        result
    }

    /// Turns what an upload-reply call wrote into the job's reply: the head,
    /// the data the owner reads (the body when it is at most 1 MiB, or what
    /// the reply processor made of it), and the reply file waiting for
    /// `complete`.
    async fn take_reply(
        &self,
        job: &Job,
        context: &JobContext,
        spool: ReplySpool,
        progress: &ReplyProgress,
        source_sha256: Option<Vec<u8>>,
    ) -> Result<ReplyRecord, TransferError> {
        let plugin_error =
            |what: &str| TransferError::plugin("plugin-bug", format!("the upload plugin {what}"));
        let head = progress
            .head
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| plugin_error("returned without handing over the server's reply"))?;
        let size = progress.body.written_to.load(Ordering::Acquire);
        spool.sync()?;
        let body = Source::new(spool.file(), size, None);
        let data = if size <= MAX_REPLY_DATA as u64 {
            body.read_all()?
        } else if spool.is_reply_file() {
            Vec::new()
        } else {
            return Err(TransferError::fatal(
                ErrorContext::RemoteApplication,
                "reply-too-large",
                format!(
                    "the server's reply has {size} bytes: without a reply file \
                     (`ferry set JOB --reply-file PATH`) at most {MAX_REPLY_DATA} are kept"
                ),
            ));
        };
        let processed = match &job.settings.reply_processor {
            Some(processor) => {
                let scratch = tempfile::tempfile().map_err(|e| {
                    TransferError::local_file("write-failed", &e, "the processed reply file")
                })?;
                let scratch = Arc::new(scratch);
                let file = ReplyFile::new(scratch.clone());
                let opened = file.opened();
                let reply_context = ReplyContext {
                    job_id: job.id.clone(),
                    url: job.files[0].remote.clone(),
                    source_size: job.files[0].bytes_total.unwrap_or(0),
                    source_sha256,
                    options: job.settings.reply_options.clone(),
                };
                let data = self
                    .inner
                    .runtime
                    .process_reply(processor, reply_context, head.clone(), body, file, context)
                    .await?;
                if opened.load(Ordering::Acquire) {
                    spool.replace_with(&scratch)?;
                }
                Some(data)
            }
            None => None,
        };
        let in_file = spool.keep()?;
        Ok(ReplyRecord {
            reply: crate::plugin::UploadReply {
                status: head.status,
                headers: head.headers,
                body: data,
                size,
            },
            data: processed,
            in_file,
        })
    }

    /// Records how a transfer ended, unless the job moved on meanwhile
    /// (suspended, cancelled, completed or preempted).
    async fn finish_transfer(&self, id: &str, generation: u64, outcome: Result<(), JobError>) {
        let wall = self.inner.clock.wall();
        let mut kind = EventKind::State;
        if self.inner.shutdown.is_cancelled() {
            // Interrupted by shutdown: the job stays as it is and is queued
            // again when the engine next opens.
            // Saves nothing, so it cannot fail.
            self.save_if_running(id, generation, |slot| {
                slot.running = None;
                false
            })
            .ok();
            return;
        }
        let updated = self.save_if_running(id, generation, |slot| {
            slot.running = None;
            let job = &mut slot.job;
            match &outcome {
                Ok(()) => {
                    if let Some(next) = engine_step(job.state, EngineEvent::AllTransferred) {
                        job.state = next;
                        job.transfer_completed = Some(wall);
                        job.error = None;
                    }
                }
                Err(error) => {
                    self.inner.metrics.add_error(&error.error.code);
                    let fatal = error.error.class == ErrorClass::Fatal
                        || job.settings.no_progress_timeout.is_zero();
                    let step = if fatal {
                        EngineEvent::FatalFailure
                    } else {
                        EngineEvent::TransientFailure
                    };
                    if let Some(next) = engine_step(job.state, step) {
                        job.state = next;
                        job.error = Some(error.clone());
                        job.error_count += 1;
                        kind = EventKind::Error;
                        if next == JobState::TransientError {
                            job.timers.retry_in =
                                Some(job.settings.retry_delay.max(MIN_RETRY_DELAY));
                            job.timers.without_progress.get_or_insert(Duration::ZERO);
                        }
                    }
                }
            }
            true
        });
        let job = match updated {
            Ok(Some(job)) => job,
            Ok(None) => {
                // The job moved on: its slot is another transfer's or gone.
                self.schedule();
                return;
            }
            Err(e) => {
                tracing::error!(job = %id, "saving failed: {e}");
                match self.inner.lock().get(id) {
                    Some(slot) => slot.job.clone(),
                    None => return,
                }
            }
        };
        self.inner.publish(&job, kind);
        self.schedule();
    }

    /// Cancels a cancelled upload's server session, retrying transient
    /// failures for `remaining` (what is left of [`SERVER_CANCEL_WINDOW`]
    /// after the cancel). The request
    /// carries the job's headers and credentials: the server that took the
    /// upload may well want them to delete it. The job's record leaves the
    /// store when the server answered (or the window closed); a shutdown
    /// leaves it for the next start.
    fn cancel_upload_in_background(&self, job: &Job, remaining: Duration) {
        let (Some(session), Some(file)) = (job.upload_session.clone(), job.files.first()) else {
            return;
        };
        let Ok(tokio) = tokio::runtime::Handle::try_current() else {
            tracing::error!(job = %job.id, "no runtime to cancel the upload on the server");
            return;
        };
        let url = file.remote.clone();
        let engine = self.clone();
        let mut pause = self.inner.config.upload_cancel_retry;
        let context = self.job_context(job, CancellationToken::new());
        let id = job.id.clone();
        tokio.spawn(async move {
            let shutdown = engine.inner.shutdown.clone();
            let deadline = tokio::time::Instant::now() + remaining;
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(job = %id, "gave up cancelling the upload on the server");
                    break;
                }
                let cancelled = engine.inner.runtime.cancel_upload(&url, &session, &context);
                match cancelled.await {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => {
                        tracing::info!(job = %id, "cancelling the upload on the server failed, retrying: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        pause = (pause * 2).min(Duration::from_secs(600));
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, "the server refused to cancel the upload: {e}");
                        break;
                    }
                }
            }
            if let Err(e) = engine.inner.store.remove(&id) {
                tracing::error!(job = %id, "removing from the store failed: {e}");
            }
        });
    }

    /// Applies an owner operation: checks ownership and the state machine,
    /// runs `change`, saves durably, publishes. Returns the job as saved.
    fn modify(
        &self,
        caller: Caller,
        id: &str,
        operation: Operation,
        change: impl FnOnce(&mut Job) -> Refusal<()>,
    ) -> Refusal<Job> {
        let inner = &self.inner;
        let mut jobs = inner.lock();
        let slot = inner.owned_slot(&mut jobs, caller, id)?;
        if slot.completing {
            return Err(JobRefusal::Completing);
        }
        let before = slot.job.clone();
        let next = owner_operation(
            before.job_type,
            before.state,
            operation,
            !before.files.is_empty(),
        )?;
        let mut job = before.clone();
        change(&mut job)?;
        job.state = next;
        job.modified = inner.clock.wall();
        job.timers.idle = Duration::ZERO;
        if next != before.state && !next.is_active() {
            job.timers.retry_in = None;
            if let Some(running) = slot.running.take() {
                running.cancel.cancel();
            }
        }
        if next == JobState::Queued && before.state != JobState::Queued {
            job.error = None;
        }
        let saved = (!next.is_final()).then(|| inner.store.stage_save(&job));
        slot.job = job.clone();
        drop(jobs);
        if let Some(saved) = saved {
            durable(saved)?;
        }
        let kind = if next != before.state {
            EventKind::State
        } else {
            EventKind::Modified
        };
        inner.publish(&job, kind);
        Ok(job)
    }

    /// Removes a job that reached a final state from memory and the store
    /// (the caller publishes the final state).
    fn forget(&self, job: &Job) {
        self.stop_and_drop(&job.id);
        if let Err(e) = self.inner.store.remove(&job.id) {
            tracing::error!(job = %job.id, "removing from the store failed: {e}");
        }
    }

    /// Takes job `id` out of the queue (stopping its transfer); the store
    /// keeps it.
    fn stop_and_drop(&self, id: &str) {
        if let Some(slot) = self.inner.lock().remove(id)
            && let Some(running) = slot.running
        {
            running.cancel.cancel();
        }
    }

    fn with_job(&self, id: &str, change: impl FnOnce(&mut Job)) -> Option<Job> {
        let mut jobs = self.inner.lock();
        let slot = jobs.get_mut(id)?;
        change(&mut slot.job);
        Some(slot.job.clone())
    }

    /// Changes the job only if transfer `generation` still runs it.
    /// Applies `change` to job `id` while transfer `generation` still runs
    /// it, and saves the job when `change` says it changed. Both happen under
    /// the table lock, as every owner operation's save does: a transfer's
    /// write can never land after a `cancel` or `complete` forgot the job.
    fn save_if_running(
        &self,
        id: &str,
        generation: u64,
        change: impl FnOnce(&mut Slot) -> bool,
    ) -> Result<Option<Job>, StoreError> {
        let mut jobs = self.inner.lock();
        let Some(slot) = jobs.get_mut(id) else {
            return Ok(None);
        };
        if slot
            .running
            .as_ref()
            .is_none_or(|r| r.generation != generation)
        {
            return Ok(None);
        }
        let saved = change(slot).then(|| self.inner.store.stage_save(&slot.job));
        let job = slot.job.clone();
        drop(jobs);
        if let Some(saved) = saved {
            saved.wait()?;
        }
        Ok(Some(job))
    }

    /// The same for job `id` whatever runs it (or nothing does).
    fn save_if_present(
        &self,
        id: &str,
        change: impl FnOnce(&mut Job) -> bool,
    ) -> Result<(), StoreError> {
        let mut jobs = self.inner.lock();
        let mut saved = None;
        if let Some(slot) = jobs.get_mut(id)
            && change(&mut slot.job)
        {
            saved = Some(self.inner.store.stage_save(&slot.job));
        }
        drop(jobs);
        match saved {
            Some(saved) => saved.wait(),
            None => Ok(()),
        }
    }

    fn current_file(&self, id: &str, index: usize) -> Option<JobFile> {
        self.inner
            .lock()
            .get(id)
            .and_then(|s| s.job.files.get(index).cloned())
    }

    fn current_session(&self, id: &str) -> Option<String> {
        self.inner
            .lock()
            .get(id)
            .and_then(|s| s.job.upload_session.clone())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, job: &Job) -> Refusal<()> {
        self.store
            .save(job)
            .map_err(|e| JobRefusal::Store(e.to_string()))
    }

    fn publish(&self, job: &Job, kind: EventKind) {
        self.events.publish(Event {
            job: job.id.clone(),
            owner: job.owner,
            state: job.state,
            progress: job.progress(),
            error: job.error.clone(),
            kind,
        });
    }

    /// The slot of job `id`, if `caller` owns it or is an administrator.
    fn owned_slot<'a>(
        &self,
        jobs: &'a mut HashMap<String, Slot>,
        caller: Caller,
        id: &str,
    ) -> Refusal<&'a mut Slot> {
        let slot = jobs
            .get_mut(id)
            .ok_or_else(|| JobRefusal::NotFound(id.to_string()))?;
        if slot.job.owner != caller.uid && !caller.admin {
            return Err(JobRefusal::AccessDenied(id.to_string()));
        }
        Ok(slot)
    }
}

/// Marks the end of a `complete`: the job's slot, if it is still there (the
/// complete failed), takes operations again.
struct Completing<'a> {
    engine: &'a Engine,
    id: &'a str,
}

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.engine.inner.lock().get_mut(self.id) {
            slot.completing = false;
        }
    }
}

/// The tag that names a job's temporary files.
fn temp_tag(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect()
}

/// Deletes every temporary file of a download job (cancel, abandonment).
/// How long a cancelled upload's session is cancelled on the server, retrying
/// while the server is unreachable (SPEC §2: up to 24 h).
pub const SERVER_CANCEL_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// For a cancelled upload whose session is still open on the server: how much
/// of [`SERVER_CANCEL_WINDOW`] is left, counted from the cancel (`modified`).
fn server_cancel_remaining(job: &Job, now: std::time::SystemTime) -> Option<Duration> {
    let unfinished = job.files.first().is_some_and(|f| !f.complete);
    if job.state != JobState::Cancelled
        || job.job_type == JobType::Download
        || job.upload_session.is_none()
        || !unfinished
    {
        return None;
    }
    let since = now.duration_since(job.modified).unwrap_or_default();
    SERVER_CANCEL_WINDOW
        .checked_sub(since)
        .filter(|left| !left.is_zero())
}

fn delete_temp_files(job: &Job) {
    if let Some(reply_file) = &job.settings.reply_file {
        let removed = as_owner(job.owner, || {
            TempFile::reopen(reply_file, &reply_tag(&job.id)).and_then(|t| t.remove())
        });
        if let Err(e) = removed
            && e.code != "cannot-open-file"
        {
            tracing::warn!(job = %job.id, "cannot delete the temporary reply file of {}: {e}", reply_file.display());
        }
    }
    if job.job_type != JobType::Download {
        return;
    }
    let tag = temp_tag(&job.id);
    for file in &job.files {
        let removed = as_owner(job.owner, || {
            TempFile::reopen(&file.local, &tag).and_then(|t| t.remove())
        });
        if let Err(e) = removed
            && e.code != "cannot-open-file"
        {
            tracing::warn!(job = %job.id, "cannot delete the temporary file of {}: {e}", file.local.display());
        }
    }
}

/// Opens a file's temporary file: creates it for a fresh transfer, reopens
/// and cuts it to the recorded progress after an interruption. The flag is
/// set when the file holds fewer bytes than its record (lost in a crash):
/// the caller then starts the file over rather than pad it.
/// A daemon running as root gives the file to the job's owner.
fn open_temp(file: &JobFile, tag: &str, owner: u32) -> Result<(TempFile, bool), TransferError> {
    if file.bytes_transferred == 0 {
        match TempFile::create(&file.local, tag) {
            Ok(temp) => {
                crate::identity::give_to_owner(&temp.file(), owner).map_err(|e| {
                    TransferError::local_file(
                        "cannot-create-file",
                        &e,
                        &temp.path().display().to_string(),
                    )
                })?;
                return Ok((temp, false));
            }
            Err(e) if e.code == "cannot-create-file" => {
                let temp = TempFile::reopen(&file.local, tag).map_err(|_| e)?;
                temp.truncate(0)?;
                return Ok((temp, false));
            }
            Err(e) => return Err(e),
        }
    }
    let temp = TempFile::reopen(&file.local, tag)?;
    let held = temp
        .file()
        .metadata()
        .map_err(|e| {
            TransferError::local_file("read-failed", &e, &temp.path().display().to_string())
        })?
        .len();
    if held < file.bytes_transferred {
        return Ok((temp, true));
    }
    temp.truncate(file.bytes_transferred)?;
    Ok((temp, false))
}

/// The SHA-256 of a whole file, as lower-case hex, read off the async
/// workers.
async fn sha256_of(file: Arc<std::fs::File>) -> Result<String, TransferError> {
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        use std::os::unix::fs::FileExt;
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut position = 0u64;
        loop {
            let n = file
                .read_at(&mut buffer, position)
                .map_err(|e| TransferError::local_file("read-failed", &e, "the downloaded file"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            position += n as u64;
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| TransferError::plugin("internal", format!("the checksum task failed: {e}")))?
}

/// The temporary-file tag of job `id`'s reply file.
fn reply_tag(id: &str) -> String {
    format!("{}-reply", temp_tag(id))
}

/// A fresh spool for an upload-reply job's reply; a daemon running as root
/// gives its reply file to the job's owner.
fn reply_spool(job: &Job) -> Result<ReplySpool, TransferError> {
    let spool = ReplySpool::create(job.settings.reply_file.as_deref(), &reply_tag(&job.id))?;
    if spool.is_reply_file() {
        crate::identity::give_to_owner(&spool.file(), job.owner)
            .map_err(|e| TransferError::local_file("cannot-create-file", &e, "the reply file"))?;
    }
    Ok(spool)
}

/// A file for a job of `job_type`, checked against the job's limits: byte
/// ranges for downloads only, an upload source that is a regular file (its
/// size and modification time recorded), a checksum of 64 hex digits.
fn new_job_file(
    job_type: JobType,
    remote: String,
    file: NewFile,
    config: &EngineConfig,
) -> Refusal<JobFile> {
    let upload = job_type != JobType::Download;
    let NewFile {
        local,
        ranges,
        sha256,
        ..
    } = file;
    if upload && !ranges.is_empty() {
        return Err(JobRefusal::RangesNotAllowed);
    }
    check_ranges(&ranges, config.max_ranges_per_file)?;
    let sha256 = match sha256 {
        Some(_) if upload => {
            return Err(JobRefusal::InvalidArgument(
                "checksums are for downloads".into(),
            ));
        }
        Some(_) if !ranges.is_empty() => {
            return Err(JobRefusal::InvalidArgument(
                "a checksum covers a whole file, not byte ranges".into(),
            ));
        }
        Some(hex) => Some(parse_sha256(&hex)?),
        None => None,
    };
    let mut source_modified = None;
    let bytes_total = if upload {
        let meta = std::fs::symlink_metadata(&local).map_err(|e| {
            JobRefusal::Transfer(TransferError::local_file(
                "cannot-open-file",
                &e,
                &local.display().to_string(),
            ))
        })?;
        if !meta.is_file() {
            return Err(JobRefusal::Transfer(TransferError::fatal(
                ErrorContext::LocalFile,
                "invalid-local-path",
                format!("{} is not a regular file", local.display()),
            )));
        }
        source_modified = meta.modified().ok();
        Some(meta.len())
    } else if ranges.is_empty() {
        None
    } else {
        Some(ranges.iter().map(|r| r.length).sum())
    };
    Ok(JobFile {
        remote,
        local,
        ranges,
        bytes_total,
        bytes_transferred: 0,
        complete: false,
        finalized: false,
        validator: None,
        source_modified,
        sha256,
    })
}

/// Waits for a staged change, as an operation's refusal when it failed.
fn durable(ticket: Ticket) -> Refusal<()> {
    ticket.wait().map_err(|e| JobRefusal::Store(e.to_string()))
}

/// A SHA-256 given as 64 hex digits, in lower case.
fn parse_sha256(hex: &str) -> Refusal<String> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(JobRefusal::InvalidArgument(format!(
            "{hex:?} is not a SHA-256 (64 hex digits)"
        )));
    }
    Ok(hex)
}

/// Opens an upload source without following a symlink.
fn open_source(path: &Path) -> Result<std::fs::File, TransferError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| TransferError::local_file("cannot-open-file", &e, &path.display().to_string()))
}

/// One download call's part of a file.
struct Segment {
    offset: u64,
    end: Option<u64>,
    position: u64,
}

/// What is left of a file to download, given `done` bytes already in the
/// temporary file: the rest of the whole file, or the ranges not yet done.
fn segments(file: &JobFile, done: u64) -> Vec<Segment> {
    if file.ranges.is_empty() {
        return vec![Segment {
            offset: done,
            end: None,
            position: done,
        }];
    }
    let mut position = 0;
    let mut out = Vec::new();
    for range in &file.ranges {
        let range_done = done.saturating_sub(position).min(range.length);
        if range_done < range.length {
            out.push(Segment {
                offset: range.offset + range_done,
                end: Some(range.offset + range.length),
                position: position + range_done,
            });
        }
        position += range.length;
    }
    out
}

fn store_error(e: &impl std::fmt::Display) -> TransferError {
    TransferError::transient(ErrorContext::LocalFile, "store-failed", e.to_string())
}
