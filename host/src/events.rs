//! The in-process event stream: every state change, coalesced progress step,
//! file transferred, modification and error of every job, for the API to
//! expose and for tests to follow.

use crate::job::{JobError, JobState, Progress};
use serde::Serialize;
use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    /// The job moved to another state.
    State,
    /// Bytes moved (at most one per job per notification interval).
    Progress,
    /// File `file` of the job is fully transferred.
    FileTransferred { file: usize },
    /// The owner changed the job (a setter, a file added).
    Modified,
    /// The job failed; the error is in `error`.
    Error,
}

/// One event about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub job: String,
    pub owner: u32,
    pub state: JobState,
    pub progress: Progress,
    pub error: Option<JobError>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The publishing side; cloning shares the stream.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus {
            sender: broadcast::channel(4096).0,
        }
    }

    pub fn publish(&self, event: Event) {
        // Nobody listening is fine.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}
