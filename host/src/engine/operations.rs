//! What an owner (or an administrator) asks of a job: create, add files,
//! set, resume, suspend, cancel, take ownership, and reading jobs back.

use super::*;

impl Engine {
    /// Creates a job in `suspended`; returns its id. It acts with the
    /// daemon's umask and the user database's groups (see
    /// [`Self::create_from`]).
    pub fn create(
        &self,
        caller: Caller,
        job_type: JobType,
        name: &str,
        priority: Priority,
    ) -> Refusal<String> {
        self.create_from(caller, job_type, name, priority, Origin::default())
    }
    /// Creates a job that acts with what `origin` says of the process that
    /// asked: its umask, and no group it did not have.
    pub fn create_from(
        &self,
        caller: Caller,
        job_type: JobType,
        name: &str,
        priority: Priority,
        origin: Origin,
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
        job.umask = origin.umask.map(|m| m & 0o777);
        job.owner_groups = origin.groups;
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
                        if job.reply_temp_tag.is_none() {
                            job.reply_temp_tag = Some(crate::files::random_tag());
                        }
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
    /// Makes `caller` the owner of job `id` (administrators only), as BITS
    /// `TakeOwnership`: what the former owner set to act as them (the
    /// notify command, credentials, custom headers, their umask and
    /// groups) is dropped, the job's temporary files become the new owner's, and a
    /// running transfer starts again as the new owner.
    pub fn take_ownership(&self, caller: Caller, id: &str) -> Refusal<()> {
        self.take_ownership_from(caller, id, Origin::default())
    }
    /// [`Self::take_ownership`] by the process `origin` describes: the job
    /// then acts with its umask and groups.
    pub fn take_ownership_from(&self, caller: Caller, id: &str, origin: Origin) -> Refusal<()> {
        if !caller.admin {
            return Err(JobRefusal::AccessDenied(id.to_string()));
        }
        let mut former = caller.uid;
        let job = self.modify_as(caller, id, Operation::Set, Access::SeeOrTake, |job| {
            former = job.owner;
            if job.owner != caller.uid {
                job.owner = caller.uid;
                job.umask = origin.umask.map(|m| m & 0o777);
                job.owner_groups = origin.groups.clone();
                job.settings.notify_command = None;
                job.settings.credentials = None;
                job.settings.headers.clear();
            }
            Ok(())
        })?;
        if former != job.owner {
            hand_over_temp_files(&job, former);
        }
        let mut jobs = self.inner.lock();
        if let Some(slot) = jobs.get_mut(&job.id)
            && let Some(running) = slot.running.take()
        {
            running.cancel.cancel();
            slot.job.step(EngineEvent::Preempted);
        }
        drop(jobs);
        self.schedule();
        Ok(())
    }
    /// One job, if the caller may see it.
    pub fn get(&self, caller: Caller, id: &str) -> Refusal<Job> {
        let mut jobs = self.inner.lock();
        Ok(self
            .inner
            .owned_slot(&mut jobs, caller, id, Access::SeeOrTake)?
            .job
            .clone())
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
}

/// A file for a job of `job_type`, checked against the job's limits: byte
/// ranges for downloads only, an upload source that is a regular file (its
/// size and modification time recorded), a checksum of 64 hex digits.
pub(super) fn new_job_file(
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
        moving: false,
        validator: None,
        source_modified,
        sha256,
        served_sha256: None,
        temp_tag: (!upload).then(crate::files::random_tag),
    })
}
/// A SHA-256 given as 64 hex digits, in lower case.
pub(super) fn parse_sha256(hex: &str) -> Refusal<String> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(JobRefusal::InvalidArgument(format!(
            "{hex:?} is not a SHA-256 (64 hex digits)"
        )));
    }
    Ok(hex)
}
