//! The timers of SPEC §2: retry delays, the no-progress and inactivity
//! timeouts, the maximum download time; they advance by the monotonic clock.

use super::*;

impl Engine {
    pub(super) fn tick_timers(&self) {
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
                if job.state() == JobState::TransientError {
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
                    } else if *retry == Duration::ZERO && job.step(EngineEvent::RetryDue) {
                        job.timers.retry_in = None;
                        changed.push((job.clone(), EventKind::State));
                    }
                }
                if job.timers.idle >= inner.config.inactivity_timeout && !job.state().is_final() {
                    // The table has the row for every state that is not final.
                    job.step(EngineEvent::Abandoned);
                    if let Some(r) = slot.running.take() {
                        r.cancel.cancel();
                    }
                    changed.push((job.clone(), EventKind::State));
                    continue;
                }
                if let Some((step, error)) = event
                    && job.step(step)
                {
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
                if job.state() != JobState::Cancelled {
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
            if job.state() == JobState::Cancelled {
                self.forget(&job);
                delete_temp_files(&job);
            }
            inner.publish(&job, kind);
        }
    }
}

impl Engine {
    /// Cuts short the retry delay of every job waiting in `transient_error`
    /// on a plugin failure: a changed plugin set (`ferry plugins reload`,
    /// SIGHUP) is the cure such a job waits for, so an author who fixed a
    /// plugin does not wait out the delay. Returns the jobs queued again.
    pub fn retry_plugin_failures(&self) -> Vec<String> {
        let inner = &self.inner;
        let mut queued = Vec::new();
        let mut saved = Vec::new();
        {
            let mut jobs = inner.lock();
            for slot in jobs.values_mut().filter(|s| !s.completing) {
                let job = &mut slot.job;
                let on_plugin = job
                    .error
                    .as_ref()
                    .is_some_and(|e| e.error.context == ErrorContext::Plugin);
                if job.state() != JobState::TransientError || !on_plugin {
                    continue;
                }
                if job.step(EngineEvent::RetryDue) {
                    job.timers.retry_in = None;
                    saved.push((job.clone(), inner.store.stage_save(job)));
                }
            }
        }
        for (job, ticket) in saved {
            if let Err(e) = ticket.wait() {
                tracing::error!(job = %job.id, "saving failed: {e}");
            }
            inner.publish(&job, EventKind::State);
            queued.push(job.id);
        }
        if !queued.is_empty() {
            tracing::info!(
                ?queued,
                "plugins changed: jobs waiting on a plugin failure retry now"
            );
            self.schedule();
        }
        queued
    }
}
