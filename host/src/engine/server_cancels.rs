//! Cancelling an unfinished upload's session on the server, in the
//! background, retried for up to a day while the server is unreachable.

use super::*;

impl Engine {
    /// Cancels a cancelled upload's server session, retrying transient
    /// failures for `remaining` (what is left of [`SERVER_CANCEL_WINDOW`]
    /// after the cancel). The request
    /// carries the job's headers and credentials: the server that took the
    /// upload may well want them to delete it. The job's record leaves the
    /// store when the server answered (or the window closed); a shutdown
    /// leaves it for the next start.
    pub(super) fn cancel_upload_in_background(&self, job: &Job, remaining: Duration) {
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
}

/// How long a cancelled upload's session is cancelled on the server, retrying
/// while the server is unreachable (SPEC §2: up to 24 h).
pub const SERVER_CANCEL_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// For a cancelled upload whose session is still open on the server: how much
/// of [`SERVER_CANCEL_WINDOW`] is left, counted from the cancel (`modified`).
pub(super) fn server_cancel_remaining(job: &Job, now: std::time::SystemTime) -> Option<Duration> {
    let unfinished = job.files.first().is_some_and(|f| !f.complete);
    if job.state() != JobState::Cancelled
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
