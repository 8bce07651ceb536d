//! The in-process event stream: every state change, coalesced progress step,
//! file transferred, modification and error of every job, for the API to
//! expose and for tests to follow.

use crate::job::{JobError, JobState, Progress};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

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
///
/// Most listeners (event streams) may fall behind and miss events: the
/// broadcast channel keeps the last 4,096. A listener that must see every
/// event of a kind (the notifier) subscribes losslessly with a filter: the
/// events it wants queue for it without bound (they are few: a filter keeps
/// it to the events it acts on).
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    lossless: Arc<Mutex<Vec<Lossless>>>,
}

/// Which events a lossless listener wants.
pub type Filter = fn(&Event) -> bool;

/// A lossless listener: what it wants, and its queue.
type Lossless = (Filter, mpsc::UnboundedSender<Event>);

impl EventBus {
    pub fn new() -> EventBus {
        EventBus {
            sender: broadcast::channel(4096).0,
            lossless: Arc::default(),
        }
    }

    pub fn publish(&self, event: Event) {
        {
            let mut lossless = self.lossless.lock().unwrap_or_else(|e| e.into_inner());
            // A listener that went away is dropped.
            lossless.retain(|(wants, sender)| !wants(&event) || sender.send(event.clone()).is_ok());
        }
        // Nobody listening is fine.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Every event from now on that `wants` accepts, none ever dropped.
    pub fn subscribe_lossless(&self, wants: Filter) -> mpsc::UnboundedReceiver<Event> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lossless
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((wants, sender));
        receiver
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}
