//! Running a transfer: its plugin call's context, the checkpoint loop
//! downloads and uploads share, and recording how the transfer ended.

use super::*;

impl Engine {
    /// Carries one job's transfer out, then records how it ended.
    pub(super) async fn run_transfer(self, job: Job, cancel: CancellationToken, generation: u64) {
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
    pub(super) fn job_context(&self, job: &Job, cancel: CancellationToken) -> JobContext {
        JobContext {
            job_id: job.id.clone(),
            headers: job.settings.headers.clone(),
            credentials: job.settings.credentials.clone(),
            max_redirects: self.inner.config.max_redirects,
            cancel,
        }
    }
    /// Runs a plugin call for `url`, counting it and its duration by plugin.
    pub(super) async fn timed<R>(
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
    /// Records how a transfer ended, unless the job moved on meanwhile
    /// (suspended, cancelled, completed or preempted).
    pub(super) async fn finish_transfer(
        &self,
        id: &str,
        generation: u64,
        outcome: Result<(), JobError>,
    ) {
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
                    if job.step(EngineEvent::AllTransferred) {
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
                    if job.step(step) {
                        let next = job.state();
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
                    Some(slot) => Snapshot::of(&slot.job),
                    None => return,
                }
            }
        };
        self.inner.announce(job, kind);
        self.schedule();
    }

    /// Runs a transfer call, checkpointing its progress as it goes: after
    /// `checkpoint_bytes` more, after `checkpoint_interval` with any, at once
    /// when `urgent` says so (a restart, a new upload session), and once
    /// more when the call ends, whatever its outcome. `position` is the
    /// progress so far (bytes written, or acknowledged by the server);
    /// `checkpoint` is told whether the call ended.
    pub(super) async fn checkpointed<R>(
        &self,
        call: impl Future<Output = Result<R, TransferError>>,
        position: impl Fn() -> u64,
        mut urgent: impl FnMut() -> bool,
        checkpoint: impl Fn(bool) -> Result<(), TransferError>,
    ) -> Result<R, TransferError> {
        tokio::pin!(call);
        let config = &self.inner.config;
        let mut recorded = position();
        let mut last = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    let now = position();
                    let due = urgent()
                        || now.saturating_sub(recorded) >= config.checkpoint_bytes
                        || (now != recorded && last.elapsed() >= config.checkpoint_interval);
                    if due {
                        checkpoint(false)?;
                        recorded = now;
                        last = tokio::time::Instant::now();
                    }
                }
            }
        };
        checkpoint(true)?;
        result
    }
}
