//! The job model and its state machine (SPEC §2), in one place.
//!
//! A job is data: its type, owner, files, settings, progress, times and last
//! error. What may happen to it is one table, [`owner_operation`] for what
//! the owner asks and [`engine_step`] for what the engine does, so that a
//! reader can check both against the SPEC line by line.

use crate::error::{ErrorContext, TransferError};
use crate::plugin::{Credentials, UploadReply, Validator};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    Download,
    Upload,
    UploadReply,
}

/// Where a job is in its life (SPEC §2, "States").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Suspended,
    Queued,
    Connecting,
    Transferring,
    TransientError,
    Error,
    Transferred,
    Acknowledged,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Suspended,
        JobState::Queued,
        JobState::Connecting,
        JobState::Transferring,
        JobState::TransientError,
        JobState::Error,
        JobState::Transferred,
        JobState::Acknowledged,
        JobState::Cancelled,
    ];

    /// `acknowledged` and `cancelled`: the job has left the queue.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Acknowledged | JobState::Cancelled)
    }

    /// Queued, connecting or transferring: the scheduler owns the job.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Connecting | JobState::Transferring
        )
    }
}

/// How urgently a job runs. Foreground jobs run at once, side by side;
/// background jobs take turns by priority.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    Foreground,
    High,
    #[default]
    Normal,
    Low,
}

/// A byte range of a remote file: `length` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

/// One file of a job: remote URL ↔ local path, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    pub remote: String,
    pub local: PathBuf,
    /// For downloads: only these ranges, written packed in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<ByteRange>,
    /// The bytes this file will have locally, once known.
    pub bytes_total: Option<u64>,
    /// Bytes durably on disk (downloads) or acknowledged by the server
    /// (uploads): never more than what survives a crash.
    pub bytes_transferred: u64,
    pub complete: bool,
    /// Set once `complete` moved the file into place (so a second
    /// `complete` after a failed one does not move it again).
    #[serde(default)]
    pub finalized: bool,
    /// Set durably before `complete` moves the file into place: a `complete`
    /// cut short by a crash then knows that a marked file whose temporary
    /// file is gone and whose final name exists was moved already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moving: bool,
    /// The validator recorded when the transfer began.
    pub validator: Option<Validator>,
    /// For uploads: the source's modification time when it was added. A
    /// source whose size or modification time moved has changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_modified: Option<SystemTime>,
    /// For downloads: the SHA-256 (hex) the file must have before it counts
    /// as transferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For whole-file downloads: the SHA-256 (hex) the server declared for
    /// the resource (`Repr-Digest`), verified like `sha256` when the last
    /// byte is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_sha256: Option<String>,
    /// For downloads: the random part of the temporary file's name, so no
    /// other user can guess it before it exists (records written before it
    /// was kept have none: their name comes from the job's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_tag: Option<String>,
}

/// Settings an owner may change per job (SPEC §2, "Timers and quotas").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSettings {
    /// Wait in `transient_error` before retrying (floor 5 s).
    pub retry_delay: Duration,
    /// From the first transient error without progress to `error`; zero
    /// makes every error fatal.
    pub no_progress_timeout: Duration,
    /// Active transfer time after which the job goes to `error`.
    pub max_download_time: Duration,
    pub headers: Vec<(String, String)>,
    pub credentials: Option<Credentials>,
    /// Run as the owner when the job reaches `transferred` or `error`.
    pub notify_command: Option<String>,
    /// The reply processor of an upload-reply job, if any.
    pub reply_processor: Option<String>,
    /// Where an upload-reply job's reply file goes on `complete` (BITS
    /// `SetReplyFileName`); none keeps the reply as data only.
    #[serde(default)]
    pub reply_file: Option<std::path::PathBuf>,
    /// The owner's options for the reply processor, in order.
    #[serde(default)]
    pub reply_options: Vec<(String, String)>,
    /// The upload protocol, for schemes with several (`tus`, `bits`, `put`,
    /// ... as the scheme's plugin documents); none lets the plugin choose.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// The floor of the retry delay.
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(5);

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            retry_delay: Duration::from_secs(600),
            no_progress_timeout: Duration::from_secs(14 * 24 * 3600),
            max_download_time: Duration::from_secs(90 * 24 * 3600),
            headers: Vec::new(),
            credentials: None,
            notify_command: None,
            reply_processor: None,
            reply_file: None,
            reply_options: Vec::new(),
            protocol: None,
        }
    }
}

/// The last error of a job: the typed error and which file it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    #[serde(flatten)]
    pub error: TransferError,
    /// Index of the file in `files`, when the error concerns one.
    pub file: Option<usize>,
}

/// The clocks of a job, kept as ages rather than wall-clock instants, so a
/// wall clock changed while the daemon runs moves no timer. They advance by
/// the monotonic clock while the daemon runs; across a restart by the wall
/// time that passed meanwhile, never backwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTimers {
    /// Since the owner last modified the job or a byte last moved.
    pub idle: Duration,
    /// Since the first transient error without progress, if in one.
    pub without_progress: Option<Duration>,
    /// Time spent actively transferring.
    pub active: Duration,
    /// Left to wait before retrying, while in `transient_error`.
    pub retry_in: Option<Duration>,
}

/// What a transfer checkpoint records of one file as its transfer goes:
/// its bytes, what its server said of it (size, validator, digest) and
/// whether its last byte is in, with the job's timers. Stored apart from the
/// job's record (tens of bytes, where the whole document of a job of many
/// files is tens of kilobytes); the next write of the whole job supersedes
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The file's index in the job (the store keeps it in the key).
    #[serde(skip)]
    pub file: usize,
    pub bytes_transferred: u64,
    pub bytes_total: Option<u64>,
    pub validator: Option<Validator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_sha256: Option<String>,
    pub complete: bool,
    /// When the bytes were recorded: the job was last active then.
    pub at: SystemTime,
    /// The job's active transfer time then.
    pub active: Duration,
}

impl Job {
    /// File `file`'s checkpoint as the job stands now, at wall time `at`.
    pub fn checkpoint(&self, file: usize, at: SystemTime) -> Checkpoint {
        let f = &self.files[file];
        Checkpoint {
            file,
            bytes_transferred: f.bytes_transferred,
            bytes_total: f.bytes_total,
            validator: f.validator.clone(),
            served_sha256: f.served_sha256.clone(),
            complete: f.complete,
            at,
            active: self.timers.active,
        }
    }

    /// Applies a stored checkpoint newer than the record it was read with.
    pub fn apply_checkpoint(&mut self, checkpoint: Checkpoint) {
        let Some(file) = self.files.get_mut(checkpoint.file) else {
            return;
        };
        file.bytes_transferred = checkpoint.bytes_transferred;
        file.bytes_total = checkpoint.bytes_total;
        file.validator = checkpoint.validator;
        file.served_sha256 = checkpoint.served_sha256;
        file.complete = checkpoint.complete;
        self.timers.idle = Duration::ZERO;
        self.timers.active = self.timers.active.max(checkpoint.active);
        self.timers_at = checkpoint.at;
    }
}

/// What an upload-reply job got back, kept until `complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRecord {
    pub reply: UploadReply,
    /// What the reply processor made of it (at most 1 MiB), if one ran.
    #[serde(with = "crate::store::base64_bytes::option")]
    pub data: Option<Vec<u8>>,
    /// Whether the reply waits in a temporary file beside the job's reply
    /// file, to be moved into place on `complete`.
    #[serde(default)]
    pub in_file: bool,
}

/// A gid and supplementary groups, as the kernel gave them to a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerGroups {
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// A transfer job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The Unix uid that created (or took) the job.
    pub owner: u32,
    /// The umask of the process that created the job (read from the kernel
    /// when it asked): files of the job are created with it. `None` (a job
    /// created in process, from a record of an older version, or just
    /// taken by another owner): the daemon's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// The gid and groups of the process that created (or took) the job,
    /// as the kernel said: the job never acts with a group outside them.
    /// `None`: the user database's alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_groups: Option<OwnerGroups>,
    pub name: String,
    pub description: String,
    pub priority: Priority,
    pub files: Vec<JobFile>,
    pub settings: JobSettings,
    state: JobState,
    pub error: Option<JobError>,
    pub created: SystemTime,
    pub modified: SystemTime,
    pub transfer_completed: Option<SystemTime>,
    pub timers: JobTimers,
    /// Wall-clock time the timers were last brought up to date.
    pub timers_at: SystemTime,
    /// The server session of an unfinished upload.
    pub upload_session: Option<String>,
    /// For upload-reply jobs with a reply file: the random part of the name
    /// of the reply's temporary file (drawn when the reply file is set;
    /// records without it use the job's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_temp_tag: Option<String>,
    pub reply: Option<ReplyRecord>,
    /// How many errors the job has had (for `info`).
    pub error_count: u32,
}

impl Job {
    pub fn new(
        id: String,
        job_type: JobType,
        owner: u32,
        name: String,
        priority: Priority,
        now: SystemTime,
    ) -> Job {
        Job {
            id,
            job_type,
            owner,
            umask: None,
            owner_groups: None,
            name,
            description: String::new(),
            priority,
            files: Vec::new(),
            settings: JobSettings::default(),
            state: JobState::Suspended,
            error: None,
            created: now,
            modified: now,
            transfer_completed: None,
            timers: JobTimers::default(),
            timers_at: now,
            upload_session: None,
            reply_temp_tag: None,
            reply: None,
            error_count: 0,
        }
    }

    /// Bytes and files, transferred and total (a total is `None` until every
    /// file's size is known).
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_total: self.files.iter().map(|f| f.bytes_total).sum(),
            bytes_transferred: self.files.iter().map(|f| f.bytes_transferred).sum(),
            files_total: self.files.len(),
            files_transferred: self.files.iter().filter(|f| f.complete).count(),
        }
    }
}

/// A job's progress counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub bytes_total: Option<u64>,
    pub bytes_transferred: u64,
    pub files_total: usize,
    pub files_transferred: usize,
}

/// What the owner (or an administrator) asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Resume,
    Suspend,
    Complete,
    Cancel,
    AddFile,
    /// Any setter: name, description, priority, timers, headers, ...
    Set,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Resume,
        Operation::Suspend,
        Operation::Complete,
        Operation::Cancel,
        Operation::AddFile,
        Operation::Set,
    ];
}

impl Job {
    /// Where the job stands. Only the two tables below move it: owner
    /// operations through [`Job::operate`], engine events through
    /// [`Job::step`].
    pub fn state(&self) -> JobState {
        self.state
    }

    /// Moves the job where owner operation `operation` leads
    /// ([`owner_operation`]), or refuses it. `had_files`: whether the job
    /// had a file before the operation began.
    pub fn operate(
        &mut self,
        operation: Operation,
        had_files: bool,
    ) -> Result<JobState, JobRefusal> {
        let next = owner_operation(self.job_type, self.state, operation, had_files)?;
        self.state = next;
        Ok(next)
    }

    /// Moves the job where engine event `event` leads ([`engine_step`]);
    /// `false`, and nothing changes, where the table has no such row.
    pub fn step(&mut self, event: EngineEvent) -> bool {
        match engine_step(self.state, event) {
            Some(next) => {
                self.state = next;
                true
            }
            None => false,
        }
    }
}

/// The state an owner operation leads to, or its typed refusal.
///
/// `has_files` is whether the job has at least one file. This is SPEC §2,
/// "Operations and their rules", as a table.
pub fn owner_operation(
    job_type: JobType,
    state: JobState,
    operation: Operation,
    has_files: bool,
) -> Result<JobState, JobRefusal> {
    use JobState::*;
    use Operation::*;
    if state.is_final() {
        return Err(JobRefusal::InvalidState { state, operation });
    }
    Ok(match (operation, state) {
        (Resume, Suspended | Error | TransientError) if !has_files => {
            return Err(JobRefusal::Empty);
        }
        (Resume, Suspended | Error | TransientError) => Queued,
        (Resume, _) => state,
        (Suspend, _) => Suspended,
        (Complete, _) if job_type == JobType::Download => Acknowledged,
        (Complete, Transferred) => Acknowledged,
        (Complete, _) => return Err(JobRefusal::InvalidState { state, operation }),
        (Cancel, _) => Cancelled,
        // A new file for a job that had finished sends it back to the queue.
        (AddFile, Transferred) => Queued,
        (AddFile, _) => state,
        (Set, _) => state,
    })
}

/// What the engine reports while it carries a job out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    /// The scheduler picked the job; a plugin is opening the transfer.
    Started,
    /// The first bytes moved.
    BytesMoving,
    /// Every file (and, for upload-reply, the reply) is done.
    AllTransferred,
    /// A failure that retrying may cure.
    TransientFailure,
    /// A failure that needs the owner (or a timer made it so).
    FatalFailure,
    /// The retry delay passed.
    RetryDue,
    /// The scheduler took the slot back (a higher priority, a shutdown).
    Preempted,
    /// The job was idle past the inactivity timeout.
    Abandoned,
    /// `complete` could not move a finished file into place: the job waits
    /// for its owner, with the files already moved in place.
    MoveFailed,
}

/// The state an engine event leads to; `None` when the event does not apply
/// in that state (the engine ignores it).
pub fn engine_step(state: JobState, event: EngineEvent) -> Option<JobState> {
    use EngineEvent::*;
    use JobState::*;
    match (event, state) {
        (Abandoned, s) if !s.is_final() => Some(Cancelled),
        (MoveFailed, s) if !s.is_final() => Some(Error),
        (Started, Queued) => Some(Connecting),
        (BytesMoving, Connecting) => Some(Transferring),
        (AllTransferred, Connecting | Transferring) => Some(Transferred),
        (TransientFailure, Connecting | Transferring) => Some(TransientError),
        (FatalFailure, Connecting | Transferring | TransientError) => Some(Error),
        (RetryDue, TransientError) => Some(Queued),
        (Preempted, Connecting | Transferring) => Some(Queued),
        _ => None,
    }
}

/// Why an operation was refused. Each has a stable code (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobRefusal {
    #[error("{operation:?} is not allowed in state {state:?}")]
    InvalidState {
        state: JobState,
        operation: Operation,
    },
    #[error("the job has no files")]
    Empty,
    #[error("a complete is moving the job's files; try again once it is done")]
    Completing,
    #[error("an upload job holds exactly one file")]
    TooManyFiles,
    #[error("the job already has the maximum of {0} files")]
    FileLimit(usize),
    #[error("a file may have at most {0} ranges")]
    TooManyRanges(usize),
    #[error("the ranges overlap or are empty")]
    OverlappingRanges,
    #[error("ranges are for download jobs only")]
    RangesNotAllowed,
    #[error("you already have the maximum of {0} jobs")]
    TooManyJobsPerUser(usize),
    #[error("the machine already has the maximum of {0} jobs")]
    TooManyJobsPerMachine(usize),
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {0} belongs to another user")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("the job store failed: {0}")]
    Store(String),
}

impl JobRefusal {
    /// The stable code users and programs see.
    pub fn code(&self) -> &str {
        match self {
            JobRefusal::InvalidState { .. } => "invalid-state",
            JobRefusal::Empty => "empty",
            JobRefusal::Completing => "invalid-state",
            JobRefusal::TooManyFiles => "too-many-files",
            JobRefusal::FileLimit(_) => "too-many-files",
            JobRefusal::TooManyRanges(_) => "too-many-ranges",
            JobRefusal::OverlappingRanges => "overlapping-ranges",
            JobRefusal::RangesNotAllowed => "invalid-argument",
            JobRefusal::TooManyJobsPerUser(_) => "too-many-jobs-per-user",
            JobRefusal::TooManyJobsPerMachine(_) => "too-many-jobs-per-machine",
            JobRefusal::NotFound(_) => "not-found",
            JobRefusal::AccessDenied(_) => "access-denied",
            JobRefusal::InvalidArgument(_) => "invalid-argument",
            JobRefusal::Transfer(e) => &e.code,
            JobRefusal::Store(_) => "store-failed",
        }
    }
}

/// Checks a file's ranges: at most `max`, none empty, none overlapping.
pub fn check_ranges(ranges: &[ByteRange], max: usize) -> Result<(), JobRefusal> {
    if ranges.len() > max {
        return Err(JobRefusal::TooManyRanges(max));
    }
    let mut sorted: Vec<_> = ranges
        .iter()
        .map(|r| (r.offset, r.offset.checked_add(r.length)))
        .collect();
    sorted.sort();
    for window in sorted.windows(2) {
        if let ((_, Some(end)), (start, _)) = (window[0], window[1])
            && end > start
        {
            return Err(JobRefusal::OverlappingRanges);
        }
    }
    if ranges
        .iter()
        .any(|r| r.length == 0 || r.offset.checked_add(r.length).is_none())
    {
        return Err(JobRefusal::OverlappingRanges);
    }
    Ok(())
}

/// A local path must be absolute and name a file.
pub fn check_local_path(path: &std::path::Path) -> Result<(), JobRefusal> {
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(JobRefusal::Transfer(TransferError::fatal(
            ErrorContext::LocalFile,
            "invalid-local-path",
            format!("{} must be an absolute path to a file", path.display()),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §2, written out by hand for every state, operation and type.
    /// `Ok(s)`: the state after; `Err(code)`: the refusal's code.
    fn expected(
        job_type: JobType,
        state: JobState,
        operation: Operation,
        has_files: bool,
    ) -> Result<JobState, &'static str> {
        use JobState::*;
        use Operation::*;
        let upload = job_type != JobType::Download;
        match state {
            Acknowledged | Cancelled => Err("invalid-state"),
            _ => match operation {
                Resume => match state {
                    Suspended | Error | TransientError if !has_files => Err("empty"),
                    Suspended | Error | TransientError => Ok(Queued),
                    other => Ok(other),
                },
                Suspend => Ok(Suspended),
                Complete if upload && state != Transferred => Err("invalid-state"),
                Complete => Ok(Acknowledged),
                Cancel => Ok(Cancelled),
                AddFile if state == Transferred => Ok(Queued),
                AddFile | Set => Ok(state),
            },
        }
    }

    #[test]
    fn every_state_operation_and_type_follows_the_spec() {
        let mut checked = 0;
        for job_type in [JobType::Download, JobType::Upload, JobType::UploadReply] {
            for state in JobState::ALL {
                for operation in Operation::ALL {
                    for has_files in [false, true] {
                        let got = owner_operation(job_type, state, operation, has_files)
                            .map_err(|e| e.code().to_string());
                        let want =
                            expected(job_type, state, operation, has_files).map_err(str::to_string);
                        assert_eq!(
                            got, want,
                            "{job_type:?} {state:?} {operation:?} files={has_files}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 9 * 6 * 2);
    }

    #[test]
    fn engine_steps_only_apply_where_the_spec_allows() {
        use EngineEvent::*;
        use JobState::*;
        // Every (state, event) pair, written out by hand from SPEC §2.
        let expected = |state: JobState, event: EngineEvent| -> Option<JobState> {
            match (event, state) {
                (_, Acknowledged | Cancelled) => None,
                (Abandoned, _) => Some(Cancelled),
                (MoveFailed, _) => Some(Error),
                (Started, Queued) => Some(Connecting),
                (BytesMoving, Connecting) => Some(Transferring),
                (AllTransferred, Connecting | Transferring) => Some(Transferred),
                (TransientFailure, Connecting | Transferring) => Some(TransientError),
                (FatalFailure, Connecting | Transferring | TransientError) => Some(Error),
                (RetryDue, TransientError) => Some(Queued),
                (Preempted, Connecting | Transferring) => Some(Queued),
                _ => None,
            }
        };
        let events = [
            Started,
            BytesMoving,
            AllTransferred,
            TransientFailure,
            FatalFailure,
            RetryDue,
            Preempted,
            Abandoned,
            MoveFailed,
        ];
        for state in JobState::ALL {
            for event in events {
                assert_eq!(
                    engine_step(state, event),
                    expected(state, event),
                    "{state:?} {event:?}"
                );
            }
        }
        assert_eq!(
            engine_step(Suspended, Started),
            None,
            "a suspended job never starts"
        );
    }

    #[test]
    fn ranges_are_checked() {
        let r = |offset, length| ByteRange { offset, length };
        assert!(check_ranges(&[r(0, 10), r(10, 5), r(100, 1)], 500).is_ok());
        assert_eq!(
            check_ranges(&[r(0, 10), r(5, 10)], 500).unwrap_err().code(),
            "overlapping-ranges"
        );
        assert_eq!(
            check_ranges(&[r(0, 0)], 500).unwrap_err().code(),
            "overlapping-ranges"
        );
        assert_eq!(
            check_ranges(&[r(0, 1), r(1, 1), r(2, 1)], 2)
                .unwrap_err()
                .code(),
            "too-many-ranges"
        );
        assert_eq!(
            check_ranges(&[r(u64::MAX, 2)], 500).unwrap_err().code(),
            "overlapping-ranges"
        );
    }
}
