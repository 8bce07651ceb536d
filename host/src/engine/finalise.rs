//! `complete` (SPEC §2): files moved into place atomically and durably, the
//! job held while it happens; and deleting temporary files.

use super::*;

impl Engine {
    /// Completes the job (SPEC §2): downloads move every fully transferred
    /// file into place and delete partial ones; uploads hand over the reply.
    /// If a move fails the job stays, in `error`, and can be completed again.
    pub fn complete(&self, caller: Caller, id: &str) -> Refusal<Completion> {
        let job = {
            let mut jobs = self.inner.lock();
            let slot = self
                .inner
                .owned_slot(&mut jobs, caller, id, Access::Change)?;
            // Refused before anything moves.
            owner_operation(
                slot.job.job_type,
                slot.job.state(),
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
            self.move_files_into_place(&job, &mut completion)?;
        }
        if let (Some(reply), Some(reply_file)) = (&job.reply, &job.settings.reply_file)
            && reply.in_file
        {
            let moved = as_job_owner(&job, || {
                TempFile::reopen(reply_file, &reply_tag(&job), job.owner).and_then(|t| t.finish())
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
        // No transfer and no other operation ran meanwhile (`completing`):
        // the job still stands where the check above found it.
        let mut done = Ok(JobState::Acknowledged);
        let job = self
            .with_job(id, |job| done = job.operate(Operation::Complete, true))
            .ok_or_else(|| JobRefusal::NotFound(id.to_string()))?;
        done?;
        self.forget(&job);
        self.inner.publish(&job, EventKind::State);
        self.schedule();
        Ok(completion)
    }

    /// Moves every transferred file of download `job` into place and
    /// deletes the partial ones, durably, with one save before the moves
    /// (which files move) and one after (which are in place), and one
    /// `fsync` per directory rather than per file.
    fn move_files_into_place(&self, job: &Job, completion: &mut Completion) -> Refusal<()> {
        let id = job.id.as_str();
        let to_move = |f: &JobFile| f.complete && !f.finalized;
        if job.files.iter().any(|f| to_move(f) && !f.moving)
            && let Some(marked) = self.with_job(id, |job| {
                for file in job.files.iter_mut().filter(|f| to_move(f)) {
                    file.moving = true;
                }
            })
        {
            self.inner.save(&marked)?;
        }
        let mut moved = Vec::new();
        // One moved file per directory, to sync the directory through.
        let mut dirs = std::collections::BTreeMap::new();
        let mut failure = None;
        for (index, file) in job.files.iter().enumerate() {
            let tag = file_tag(id, file);
            if file.finalized {
                completion.files.push(file.local.clone());
                continue;
            }
            if !file.complete {
                completion.partial = true;
                as_job_owner(job, || {
                    TempFile::reopen(&file.local, &tag, job.owner).and_then(|t| t.remove())
                })
                .ok();
                continue;
            }
            let renamed = as_job_owner(job, || {
                let temp = TempFile::reopen(&file.local, &tag, job.owner)?;
                temp.rename_into_place().map(|path| (temp, path))
            });
            match renamed {
                Ok((temp, path)) => {
                    completion.files.push(path);
                    if let Some(dir) = file.local.parent() {
                        dirs.entry(dir.to_path_buf()).or_insert(temp);
                    }
                }
                // Marked by a `complete` that a crash cut short after its
                // move: the file is in place already.
                Err(e) if e.code == "cannot-open-file" && file.moving && file.local.exists() => {
                    completion.files.push(file.local.clone());
                    // Its directory may not have been synced before the
                    // crash.
                    if let Some(dir) = file.local.parent() {
                        let synced = std::fs::File::open(dir).and_then(|d| d.sync_all());
                        if let Err(e) = synced {
                            tracing::warn!(job = %id, "syncing {} failed: {e}", dir.display());
                        }
                    }
                }
                Err(error) => {
                    failure = Some((Some(index), error));
                    break;
                }
            }
            moved.push(index);
        }
        for temp in dirs.values() {
            if let Err(error) = temp.sync_dir() {
                // Nothing is known to be in place: the next `complete`
                // finds the marked files there and finishes.
                moved.clear();
                failure.get_or_insert((None, error));
                break;
            }
        }
        if !moved.is_empty()
            && let Some(placed) = self.with_job(id, |job| {
                for &index in &moved {
                    job.files[index].finalized = true;
                    job.files[index].moving = false;
                }
            })
        {
            self.inner.save(&placed)?;
        }
        let Some((index, error)) = failure else {
            return Ok(());
        };
        let failed = self.with_job(id, |job| {
            job.step(EngineEvent::MoveFailed);
            job.error = Some(JobError {
                error: error.clone(),
                file: index,
            });
            job.error_count += 1;
        });
        if let Some(job) = failed {
            self.inner.save(&job)?;
            self.inner.publish(&job, EventKind::Error);
        }
        Err(JobRefusal::Transfer(error))
    }
}

/// Marks the end of a `complete`: the job's slot, if it is still there (the
/// complete failed), takes operations again.
pub(super) struct Completing<'a> {
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
/// Deletes every temporary file of a job: a download's files and an
/// upload-reply job's waiting reply file (cancel, abandonment).
pub(super) fn delete_temp_files(job: &Job) {
    if let Some(reply_file) = &job.settings.reply_file {
        let removed = as_job_owner(job, || {
            TempFile::reopen(reply_file, &reply_tag(job), job.owner).and_then(|t| t.remove())
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
    for file in &job.files {
        let tag = file_tag(&job.id, file);
        let removed = as_job_owner(job, || {
            TempFile::reopen(&file.local, &tag, job.owner).and_then(|t| t.remove())
        });
        if let Err(e) = removed
            && e.code != "cannot-open-file"
        {
            tracing::warn!(job = %job.id, "cannot delete the temporary file of {}: {e}", file.local.display());
        }
    }
}
/// Gives the temporary files of job `job` (a download's files, an
/// upload-reply job's waiting reply file), made for its former owner
/// `former`, to its owner now (`take-ownership`), so that the transfer
/// resumes and `complete` moves them as the new owner. Only files that are
/// the former owner's own are handed over (each opened as them, never
/// through a link); a daemon not running as root has only its own user's.
pub(super) fn hand_over_temp_files(job: &Job, former: u32) {
    if !crate::identity::running_as_root() {
        // Every file is the daemon's user's already.
        return;
    }
    let mut temps = Vec::new();
    if let Some(reply_file) = &job.settings.reply_file {
        temps.push((reply_file, reply_tag(job)));
    }
    if job.job_type == JobType::Download {
        for file in job.files.iter().filter(|f| !f.finalized) {
            temps.push((&file.local, file_tag(&job.id, file)));
        }
    }
    for (local, tag) in temps {
        let who = Identity::acting_for(job.owner, job.owner_groups.as_ref());
        let handed = as_owner(former, || TempFile::reopen(local, &tag, former)).and_then(|t| {
            std::os::unix::fs::fchown(&*t.file(), Some(who.uid), Some(who.gid)).map_err(|e| {
                TransferError::local_file("cannot-create-file", &e, &t.path().display().to_string())
            })
        });
        if let Err(e) = handed
            && e.code != "cannot-open-file"
        {
            tracing::warn!(job = %job.id, "the temporary file of {} stays its former owner's: {e}", local.display());
        }
    }
}
