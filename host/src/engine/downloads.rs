//! Downloads: file by file, segment by segment, into temporary files that
//! are synced before their progress is recorded; lengths and checksums are
//! checked before a file counts as transferred.

use super::*;
use crate::files::{UNTRUSTED_TEMP, random_tag};
use std::collections::VecDeque;

/// Marks as transferred whose flush a job's download goes on without.
const MARKS_OUTSTANDING: usize = 64;

/// A file marked transferred whose mark is not yet known to be durable:
/// its event waits for that.
struct Marked {
    index: usize,
    ticket: Ticket,
    snapshot: Snapshot,
}

impl Engine {
    /// Downloads the job's files one after another. A file's mark as
    /// transferred is staged, not waited for, before the next file starts:
    /// its flush runs while the next files transfer (marks of several files
    /// share one), and its `file-transferred` event goes out, in order, once
    /// that flush is known to be done (seen at a later file's mark, or waited
    /// for when the last file is in, or when too many are outstanding).
    pub(super) async fn download_files(
        &self,
        job: &Job,
        context: &JobContext,
        generation: u64,
    ) -> Result<(), JobError> {
        let mut marked = VecDeque::new();
        let result = self
            .download_each(job, context, generation, &mut marked)
            .await;
        let settled = marked.into_iter().try_for_each(|m| self.announce_marked(m));
        result.and(settled)
    }
    /// Waits for a file's mark to be durable, then counts and announces it.
    fn announce_marked(&self, marked: Marked) -> Result<(), JobError> {
        marked.ticket.wait().map_err(|e| JobError {
            error: store_error(&e),
            file: Some(marked.index),
        })?;
        self.inner.metrics.add_file(JobType::Download);
        self.inner.announce(
            marked.snapshot,
            EventKind::FileTransferred { file: marked.index },
        );
        Ok(())
    }
    async fn download_each(
        &self,
        job: &Job,
        context: &JobContext,
        generation: u64,
        marked: &mut VecDeque<Marked>,
    ) -> Result<(), JobError> {
        for (index, file) in job.files.iter().enumerate() {
            if file.complete {
                continue;
            }
            let attach = |error: TransferError| JobError {
                error,
                file: Some(index),
            };
            let tag = file_tag(&job.id, file);
            let (temp, shorter) = match as_job_owner(job, || open_temp(file, &tag, job)) {
                // What is at the file's temporary name is not this job's (a
                // file or link someone planted, or the former owner's after
                // `take-ownership`): it is never written, and the file starts
                // over under a new random name, recorded first.
                Err(error) if error.code == UNTRUSTED_TEMP => {
                    tracing::warn!(job = %job.id, file = index, "{}; the file starts over under a new name", error.message);
                    let tag = random_tag();
                    let recorded = self
                        .save_if_running(&job.id, generation, |slot| {
                            let f = &mut slot.job.files[index];
                            f.temp_tag = Some(tag.clone());
                            f.bytes_transferred = 0;
                            f.validator = None;
                            f.served_sha256 = None;
                            true
                        })
                        .map_err(|e| attach(store_error(&e)))?;
                    if recorded.is_none() {
                        // The job moved on meanwhile: nothing to create.
                        return Ok(());
                    }
                    let fresh = JobFile {
                        bytes_transferred: 0,
                        ..file.clone()
                    };
                    as_job_owner(job, || open_temp(&fresh, &tag, job)).map_err(attach)?
                }
                opened => opened.map_err(attach)?,
            };
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
            self.verify_checksums(job, index, &temp, generation)
                .await
                .map_err(attach)?;
            let mut mismatch = None;
            let staged = self.stage_if_running(&job.id, generation, |slot| {
                let f = &mut slot.job.files[index];
                match f.bytes_total {
                    Some(total) if total != f.bytes_transferred => {
                        mismatch = Some((total, f.bytes_transferred));
                        return Saving::Nothing;
                    }
                    _ => {}
                }
                f.complete = true;
                f.bytes_total = Some(f.bytes_transferred);
                // The file's record alone, as its checkpoints.
                Saving::Checkpoint(index)
            });
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
            if let Some((snapshot, Some(ticket))) = staged {
                marked.push_back(Marked {
                    index,
                    ticket,
                    snapshot,
                });
                while let Some(first) = marked.front()
                    && (first.ticket.is_settled() || marked.len() > MARKS_OUTSTANDING)
                {
                    let first = marked.pop_front().expect("a first mark");
                    self.announce_marked(first)?;
                }
            }
        }
        Ok(())
    }
    /// Checks a file whose last byte is in against the SHA-256 the owner
    /// gave and the one the server declared (`Repr-Digest`), hashing it once
    /// when there is either. What disagrees is not kept: the file starts
    /// over, and the job stops in `error` (fatal: fetching the same bytes
    /// again on every retry would waste the link; `resume` tries once more).
    async fn verify_checksums(
        &self,
        job: &Job,
        index: usize,
        temp: &TempFile,
        generation: u64,
    ) -> Result<(), TransferError> {
        let file = &job.files[index];
        let served = self
            .current_file(&job.id, index)
            .and_then(|f| f.served_sha256)
            .filter(|_| file.ranges.is_empty());
        if file.sha256.is_none() && served.is_none() {
            return Ok(());
        }
        let actual = sha256_of(temp.file()).await?;
        let expected = [
            (file.sha256.as_deref(), "the job asked for"),
            (served.as_deref(), "its server declared (Repr-Digest)"),
        ];
        let Some((expected, whose)) = expected
            .into_iter()
            .find_map(|(digest, whose)| digest.filter(|d| *d != actual).map(|d| (d, whose)))
        else {
            return Ok(());
        };
        let mismatch = TransferError::fatal(
            ErrorContext::RemoteFile,
            "checksum-mismatch",
            format!(
                "{} arrived with SHA-256 {actual}, not the {expected} {whose}",
                file.remote
            ),
        );
        self.restart_file(&job.id, generation, index, temp)?;
        Err(mismatch)
    }
    /// Starts file `index` over: its recorded progress and validator are
    /// durably reset first, then its temporary file is cut, so a crash in
    /// between never leaves a record pointing past the bytes on disk.
    pub(super) fn restart_file(
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
    pub(super) fn record_restart(
        &self,
        id: &str,
        generation: u64,
        index: usize,
    ) -> Result<(), TransferError> {
        self.save_if_running(id, generation, |slot| {
            let f = &mut slot.job.files[index];
            let changed =
                f.bytes_transferred != 0 || f.validator.is_some() || f.served_sha256.is_some();
            f.bytes_transferred = 0;
            f.validator = None;
            f.served_sha256 = None;
            changed
        })
        .map(|_| ())
        .map_err(|e| store_error(&e))
    }
    /// Downloads what is left of file `index`: the rest of the whole file,
    /// or each range not yet done, packed one after another.
    pub(super) async fn download_segments(
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
            self.checkpointed(
                call,
                || progress.written_to.load(Ordering::Acquire),
                || progress.restarted.load(Ordering::Acquire),
                |ended| self.checkpoint(&job.id, index, temp, &progress, generation, ended),
            )
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
    pub(super) fn check_length(
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
    /// Syncs the temporary file, then records the bytes that were written
    /// before the sync: the recorded offset never points past durable bytes.
    /// Once the transfer is under way this is the file's checkpoint (its
    /// bytes and what the server said of it), not the whole job. The one
    /// taken when a call `ended` is not waited for: what follows the call
    /// waits for a write that comes after it (the file's mark as
    /// transferred, which overwrites the same record, or the job's error),
    /// so one flush covers both; it is durable no later than that.
    pub(super) fn checkpoint(
        &self,
        id: &str,
        index: usize,
        temp: &TempFile,
        progress: &DownloadProgress,
        generation: u64,
        ended: bool,
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
        let staged = self.stage_if_running(id, generation, |slot| {
            let job = &mut slot.job;
            let before = (job.state(), job.timers.without_progress);
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
                    // The digest of the response the bytes came with; a
                    // response that declares none keeps the one recorded
                    // (the validator guards that it is the same resource).
                    if restarted || remote.served_sha256.is_some() {
                        file.served_sha256 = remote.served_sha256.clone();
                    }
                }
            }
            if !moved {
                return Saving::Nothing;
            }
            job.timers.idle = Duration::ZERO;
            job.timers.without_progress = None;
            job.step(EngineEvent::BytesMoving);
            notify = slot.coalesced_progress(now, self.inner.config.notification_interval);
            // The file's own record once the job is under way; the whole
            // job when its state or its no-progress timer moved.
            if slot.job.state() == before.0 && before.1.is_none() {
                Saving::Checkpoint(index)
            } else {
                Saving::Whole
            }
        });
        let Some((snapshot, saved)) = staged else {
            return Ok(());
        };
        if let Some(saved) = saved {
            if ended {
                // Covered by the flush of the next write (above).
                drop(saved);
            } else {
                saved.wait().map_err(|e| store_error(&e))?;
            }
        }
        if notify {
            self.inner.announce(snapshot, EventKind::Progress);
        }
        Ok(())
    }
}

/// Opens a file's temporary file: creates it for a fresh transfer, reopens
/// and cuts it to the recorded progress after an interruption. The flag is
/// set when the file holds fewer bytes than its record (lost in a crash):
/// the caller then starts the file over rather than pad it.
/// A fresh transfer creates the file exclusively; a file already at its name
/// is used only if it is this job's own (a regular file of one link, the
/// owner's: an earlier attempt's), and anything else there is
/// [`UNTRUSTED_TEMP`], as it is when resuming ([`TempFile::reopen`]).
/// A daemon running as root gives the file to the job's owner; a new file
/// gets the permissions the job's umask leaves.
pub(super) fn open_temp(
    file: &JobFile,
    tag: &str,
    job: &Job,
) -> Result<(TempFile, bool), TransferError> {
    let owner = job.owner;
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
                if let Some(umask) = job.umask {
                    temp.apply_umask(umask)?;
                }
                return Ok((temp, false));
            }
            Err(e) if e.code == "cannot-create-file" => {
                let temp = match TempFile::reopen(&file.local, tag, owner) {
                    Ok(temp) => temp,
                    Err(untrusted) if untrusted.code == UNTRUSTED_TEMP => return Err(untrusted),
                    Err(_) => return Err(e),
                };
                temp.truncate(0)?;
                return Ok((temp, false));
            }
            Err(e) => return Err(e),
        }
    }
    let temp = TempFile::reopen(&file.local, tag, owner)?;
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
pub(super) async fn sha256_of(file: Arc<std::fs::File>) -> Result<String, TransferError> {
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
/// One download call's part of a file.
pub(super) struct Segment {
    offset: u64,
    end: Option<u64>,
    position: u64,
}
/// What is left of a file to download, given `done` bytes already in the
/// temporary file: the rest of the whole file, or the ranges not yet done.
pub(super) fn segments(file: &JobFile, done: u64) -> Vec<Segment> {
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
