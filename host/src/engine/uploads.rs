//! Uploads and upload-reply jobs: one file, a server session resumed across
//! interruptions, and the reply spooled to a file and handed over on
//! `complete`.

use super::*;

impl Engine {
    /// Records what an upload call reported: the bytes the server
    /// acknowledged and its session. The session is recorded even when the
    /// call was stopped meanwhile (suspended, preempted): it is a fact about
    /// the server, and the next attempt resumes it.
    pub(super) fn upload_checkpoint(
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
        let updated = self.write_if_running(id, generation, |slot| {
            running = true;
            let job = &mut slot.job;
            let before = (job.state(), job.timers.without_progress);
            let moved = job.files[0].bytes_transferred != acknowledged;
            metrics.add_bytes(
                job.job_type,
                acknowledged.saturating_sub(job.files[0].bytes_transferred),
            );
            let new_session = session.is_some() && job.upload_session != session;
            job.files[0].bytes_transferred = acknowledged;
            if session.is_some() {
                job.upload_session = session.clone();
            }
            if !moved && !new_session {
                return Saving::Nothing;
            }
            job.timers.idle = Duration::ZERO;
            job.timers.without_progress = None;
            job.step(EngineEvent::BytesMoving);
            let same_state = job.state() == before.0;
            notify = moved && slot.coalesced_progress(now, self.inner.config.notification_interval);
            // Bytes alone once the upload is under way: a checkpoint.
            if !new_session && same_state && before.1.is_none() {
                Saving::Checkpoint(0)
            } else {
                Saving::Whole
            }
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
            self.inner.announce(job, EventKind::Progress);
        }
        Ok(())
    }
    pub(super) async fn upload_file(
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
        let handle = Arc::new(as_job_owner(job, || open_source(&file.local)).map_err(attach)?);
        let want_reply = job.job_type == JobType::UploadReply;
        let mut session_expired = false;
        let (reply, digest) = loop {
            let mut source = Source::new(handle.clone(), size, file.source_modified);
            if want_reply && job.settings.reply_processor.is_some() {
                source = source.with_digest();
            }
            let progress = source.progress();
            let spool = if want_reply {
                Some(as_job_owner(job, || reply_spool(job)).map_err(attach)?)
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
                .checkpointed(
                    call,
                    || progress.acknowledged.load(Ordering::Acquire),
                    {
                        // A new session is saved at once: it is what lets an
                        // interrupted upload resume instead of starting over.
                        let (mut seen, progress) = (session, &progress);
                        move || {
                            let now = progress
                                .session
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .clone();
                            let new = now.is_some() && now != seen;
                            seen = now;
                            new
                        }
                    },
                    |_| self.upload_checkpoint(&job.id, generation, &progress),
                )
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
        // A resumed upload read only the rest of its source: the digest a
        // reply processor is given is then taken from the whole file, once
        // more, if it is still what the job recorded.
        let digest = match digest {
            None if reply.is_some() && job.settings.reply_processor.is_some() => {
                whole_source_sha256(handle.clone(), size, file.source_modified).await
            }
            digest => digest,
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
    /// Turns what an upload-reply call wrote into the job's reply: the head,
    /// the data the owner reads (the body when it is at most 1 MiB, or what
    /// the reply processor made of it), and the reply file waiting for
    /// `complete`.
    pub(super) async fn take_reply(
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
}

/// The temporary-file tag of `job`'s reply file: random (drawn when the
/// reply file was set), or, in a record from before, the job id's.
pub(super) fn reply_tag(job: &Job) -> String {
    let tag = job
        .reply_temp_tag
        .clone()
        .unwrap_or_else(|| temp_tag(&job.id));
    format!("{tag}-reply")
}
/// A fresh spool for an upload-reply job's reply; a daemon running as root
/// gives its reply file to the job's owner.
pub(super) fn reply_spool(job: &Job) -> Result<ReplySpool, TransferError> {
    let spool = ReplySpool::create(
        job.settings.reply_file.as_deref(),
        &reply_tag(job),
        job.owner,
        job.umask,
    )?;
    if spool.is_reply_file() {
        crate::identity::give_to_owner(&spool.file(), job.owner)
            .map_err(|e| TransferError::local_file("cannot-create-file", &e, "the reply file"))?;
    }
    Ok(spool)
}
/// Opens an upload source without following a symlink.
pub(super) fn open_source(path: &Path) -> Result<std::fs::File, TransferError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| TransferError::local_file("cannot-open-file", &e, &path.display().to_string()))
}

/// The SHA-256 of a whole upload source, when it still has the size and
/// modification time the job recorded before and after it is read.
async fn whole_source_sha256(
    file: Arc<std::fs::File>,
    size: u64,
    modified: Option<std::time::SystemTime>,
) -> Option<Vec<u8>> {
    let unchanged = |file: &std::fs::File| {
        file.metadata()
            .is_ok_and(|m| m.len() == size && (modified.is_none() || m.modified().ok() == modified))
    };
    if !unchanged(&file) {
        return None;
    }
    let digest = super::downloads::sha256_of(file.clone()).await.ok()?;
    unchanged(&file).then(|| hex::decode(digest).ok()).flatten()
}
