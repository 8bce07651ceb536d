//! The job engine: carries jobs out with BITS semantics, durably.
//!
//! It holds every job in memory and in the store, applies the owner's
//! operations through the state machine of `job`, runs transfers through the
//! plugin runtime one file at a time, checkpoints progress (the temporary
//! file is synced before the offset recorded for it advances), keeps the
//! timers of SPEC §2, and publishes events. Every change of state is saved
//! before the operation returns.
//!
//! This module owns the job table (`Inner::jobs`) and the only ways to
//! change it under its lock (`modify`, `save_if_running`, `save_if_present`,
//! `with_job`); each write is staged under the lock and waited for after it
//! (`commit`). The rest is split by concern:
//! - `operations`: what owners and administrators ask (create, add, set, ...);
//! - `finalise`: `complete`, and deleting temporary files;
//! - `timers`: retry delays, no-progress and inactivity timeouts;
//! - `transfers`: starting a transfer, the checkpoint loop, how it ended;
//! - `downloads` and `uploads`: the two kinds of transfer;
//! - `server_cancels`: cancelling an upload's session on the server.

mod downloads;
mod finalise;
mod operations;
mod server_cancels;
mod timers;
mod transfers;
mod uploads;

use finalise::{delete_temp_files, hand_over_temp_files};
pub use server_cancels::SERVER_CANCEL_WINDOW;
use server_cancels::server_cancel_remaining;
use uploads::reply_tag;

use crate::clock::Clock;
use crate::commit::{Committer, Ticket};
use crate::error::{ErrorClass, ErrorContext, TransferError, code};
use crate::events::{Event, EventBus, EventKind};
use crate::files::{ReplySpool, TempFile};
use crate::identity::{Identity, as_owner};
use crate::job::{
    ByteRange, EngineEvent, Job, JobError, JobFile, JobRefusal, JobSettings, JobState, JobType,
    MIN_RETRY_DELAY, Operation, Priority, Progress, ReplyRecord, check_local_path, check_ranges,
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

/// What the kernel said of the process that creates or takes a job: the
/// job acts with its umask and never with a group it did not have. The
/// default (`None`s): the daemon's umask, the user database's groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub umask: Option<u32>,
    pub groups: Option<crate::job::OwnerGroups>,
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
            if job.state().is_final() {
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
            // A transfer cut short by the daemon's stop is queued again.
            job.step(EngineEvent::Preempted);
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
            .map(|slot| (slot.job.state(), slot.job.job_type))
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
    /// The events `wants` accepts, none dropped however far the listener
    /// falls behind (see [`crate::events::EventBus::subscribe_lossless`]).
    pub fn subscribe_lossless(
        &self,
        wants: crate::events::Filter,
    ) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        self.inner.events.subscribe_lossless(wants)
    }
    /// Advances every timer by the monotonic time since the last tick, then
    /// schedules. The ticker calls it; tests call it after moving a clock.
    pub fn tick(&self) {
        self.tick_timers();
        self.schedule();
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
            .filter(|s| s.job.state().is_active() && !s.completing)
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
                slot.job.step(EngineEvent::Preempted);
            }
        }
        for id in decision.start {
            let Some(slot) = jobs.get_mut(&id) else {
                continue;
            };
            if !slot.job.step(EngineEvent::Started) {
                continue;
            }
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
    /// Applies an owner operation: checks ownership and the state machine,
    /// runs `change`, saves durably, publishes. Returns the job as saved.
    fn modify(
        &self,
        caller: Caller,
        id: &str,
        operation: Operation,
        change: impl FnOnce(&mut Job) -> Refusal<()>,
    ) -> Refusal<Job> {
        self.modify_as(caller, id, operation, Access::Change, change)
    }
    /// [`Self::modify`] for a caller allowed `access`.
    fn modify_as(
        &self,
        caller: Caller,
        id: &str,
        operation: Operation,
        access: Access,
        change: impl FnOnce(&mut Job) -> Refusal<()>,
    ) -> Refusal<Job> {
        let inner = &self.inner;
        let mut jobs = inner.lock();
        let slot = inner.owned_slot(&mut jobs, caller, id, access)?;
        if slot.completing {
            return Err(JobRefusal::Completing);
        }
        let before = slot.job.clone();
        let had_files = !before.files.is_empty();
        // Refused before anything changes.
        owner_operation(before.job_type, before.state(), operation, had_files)?;
        let mut job = before.clone();
        change(&mut job)?;
        let next = job.operate(operation, had_files)?;
        job.modified = inner.clock.wall();
        job.timers.idle = Duration::ZERO;
        if next != before.state() && !next.is_active() {
            job.timers.retry_in = None;
            if let Some(running) = slot.running.take() {
                running.cancel.cancel();
            }
        }
        if next == JobState::Queued && before.state() != JobState::Queued {
            job.error = None;
        }
        let saved = (!next.is_final()).then(|| inner.store.stage_save(&job));
        slot.job = job.clone();
        drop(jobs);
        if let Some(saved) = saved {
            durable(saved)?;
        }
        let kind = if next != before.state() {
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
    ) -> Result<Option<Snapshot>, StoreError> {
        self.write_if_running(id, generation, |slot| {
            if change(slot) {
                Saving::Whole
            } else {
                Saving::Nothing
            }
        })
    }
    /// The same, writing what `change` says it changed: the whole job, or a
    /// file's checkpoint alone.
    fn write_if_running(
        &self,
        id: &str,
        generation: u64,
        change: impl FnOnce(&mut Slot) -> Saving,
    ) -> Result<Option<Snapshot>, StoreError> {
        let Some((snapshot, saved)) = self.stage_if_running(id, generation, change) else {
            return Ok(None);
        };
        if let Some(saved) = saved {
            saved.wait()?;
        }
        Ok(Some(snapshot))
    }
    /// The same, staging the write without waiting for it: its ticket is
    /// the caller's.
    fn stage_if_running(
        &self,
        id: &str,
        generation: u64,
        change: impl FnOnce(&mut Slot) -> Saving,
    ) -> Option<(Snapshot, Option<Ticket>)> {
        let mut jobs = self.inner.lock();
        let slot = jobs.get_mut(id)?;
        if slot
            .running
            .as_ref()
            .is_none_or(|r| r.generation != generation)
        {
            return None;
        }
        let saved = match change(slot) {
            Saving::Nothing => None,
            Saving::Whole => Some(self.inner.store.stage_save(&slot.job)),
            Saving::Checkpoint(file) => {
                let checkpoint = slot.job.checkpoint(file, self.inner.clock.wall());
                Some(self.inner.store.stage_checkpoint(id, checkpoint))
            }
        };
        Some((Snapshot::of(&slot.job), saved))
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
        self.announce(Snapshot::of(job), kind);
    }

    fn announce(&self, job: Snapshot, kind: EventKind) {
        self.events.publish(Event {
            job: job.id,
            owner: job.owner,
            state: job.state,
            progress: job.progress,
            error: job.error,
            kind,
        });
    }

    /// The slot of job `id`, if `caller` may do `what` to it: only the
    /// owner changes a job (an administrator takes it first, or a change
    /// would be carried out with the owner's identity); administrators
    /// also see it and take it.
    fn owned_slot<'a>(
        &self,
        jobs: &'a mut HashMap<String, Slot>,
        caller: Caller,
        id: &str,
        what: Access,
    ) -> Refusal<&'a mut Slot> {
        let slot = jobs
            .get_mut(id)
            .ok_or_else(|| JobRefusal::NotFound(id.to_string()))?;
        let admin_may = what == Access::SeeOrTake && caller.admin;
        if slot.job.owner != caller.uid && !admin_may {
            return Err(JobRefusal::AccessDenied(id.to_string()));
        }
        Ok(slot)
    }
}
/// What a caller asks of another user's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any change: the owner's alone.
    Change,
    /// Reading it, or `take-ownership`: administrators too.
    SeeOrTake,
}
/// Runs `op` with the identity `job` acts as ([`Identity::acting_for`]).
fn as_job_owner<T>(
    job: &Job,
    op: impl FnOnce() -> Result<T, TransferError>,
) -> Result<T, TransferError> {
    if !crate::identity::running_as_root() || job.owner == 0 {
        return op();
    }
    let who = Identity::acting_for(job.owner, job.owner_groups.as_ref());
    crate::identity::as_identity(&who, op)
}
/// The tag in the temporary name of file `file` of job `id`: the random one
/// recorded with the file, or, for a record from before there was one, the
/// job's (see [`temp_tag`]).
fn file_tag(id: &str, file: &JobFile) -> String {
    file.temp_tag.clone().unwrap_or_else(|| temp_tag(id))
}
/// The tag that names a job's temporary files when its file records carry
/// none of their own (the reply file's, and records of older versions).
fn temp_tag(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect()
}
/// What an event tells of a job, taken under the table's lock: a job of
/// many files is not cloned for each checkpoint that announces progress.
struct Snapshot {
    id: String,
    owner: u32,
    state: JobState,
    progress: Progress,
    error: Option<JobError>,
}

impl Snapshot {
    fn of(job: &Job) -> Snapshot {
        Snapshot {
            id: job.id.clone(),
            owner: job.owner,
            state: job.state(),
            progress: job.progress(),
            error: job.error.clone(),
        }
    }
}

/// What a change to a running job needs written.
enum Saving {
    Nothing,
    /// Only file `.0`'s transfer (its record: bytes, size, validator,
    /// digest, completion, and the timers that go with them) moved.
    Checkpoint(usize),
    Whole,
}
/// Waits for a staged change, as an operation's refusal when it failed.
fn durable(ticket: Ticket) -> Refusal<()> {
    ticket.wait().map_err(|e| JobRefusal::Store(e.to_string()))
}
fn store_error(e: &impl std::fmt::Display) -> TransferError {
    TransferError::transient(ErrorContext::LocalFile, "store-failed", e.to_string())
}
