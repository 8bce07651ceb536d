//! Group commit: the engine's durable writes, shared by concurrent callers.
//!
//! Every change the engine makes is *staged* while it holds its job table
//! (so changes reach the store in the order they were made, and no stale
//! copy can overtake a newer one), and *waited for* after it let go of the
//! table. One writer thread takes every change staged so far, writes them,
//! and flushes once: callers that staged while a flush was running share the
//! next one. A caller is answered only after a flush that covers its change,
//! so nothing is acknowledged before it is durable.
//!
//! A change nobody waits for yet (a transfer's last checkpoint, a file's
//! mark as transferred, waited for a file later) need not be flushed at
//! once: the writer flushes as soon as someone waits, and otherwise lets
//! such changes gather for up to [`LINGER`]. A job of many small files then
//! costs one flush every few files, not one each.

use crate::job::{Checkpoint, Job};
use crate::store::{JobStore, StoreError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a change nobody waits for may stay unflushed.
pub const LINGER: Duration = Duration::from_millis(10);

/// A change to the store.
enum Change {
    Write(Box<Job>),
    Checkpoint(String, Checkpoint),
    Erase(String),
}

/// What the callers and the writer share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer: the first change staged, a caller waiting, or
    /// closing.
    staged: Condvar,
    linger: Duration,
    /// Wakes the waiters: a flush finished. Apart from `staged`, so staging
    /// a change does not wake every caller waiting for an earlier one.
    flushed: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(u64, Change)>,
    /// When the oldest pending change was staged.
    oldest: Option<Instant>,
    /// The latest change a caller is blocked on: the writer flushes at once
    /// while it is not durable.
    wanted: u64,
    /// The sequence number of the last change staged.
    staged: u64,
    /// Every change up to this one is durable.
    durable: u64,
    /// Changes in `(after, up_to]` failed with this error.
    failed: Vec<(u64, u64, String)>,
    closing: bool,
}

/// A staged change, to wait for once the job table is released.
#[must_use = "a staged change is durable only once its ticket was waited for"]
pub struct Ticket {
    sequence: u64,
    shared: Arc<Shared>,
}

impl Ticket {
    /// Whether a flush covering the change finished (waiting would not block).
    pub fn is_settled(&self) -> bool {
        lock(&self.shared.queue).durable >= self.sequence
    }

    /// Blocks until the change is durable, or fails with the store's error.
    /// On an async worker the wait hands the worker's other tasks to another
    /// thread, so the callers who stage meanwhile share the next flush.
    pub fn wait(self) -> Result<(), StoreError> {
        let mut queue = lock(&self.shared.queue);
        if queue.durable < self.sequence {
            drop(queue);
            queue = crate::blocking::off_the_async_workers(|| {
                let mut queue = lock(&self.shared.queue);
                queue.wanted = queue.wanted.max(self.sequence);
                // The writer may be letting changes gather: someone waits now.
                self.shared.staged.notify_one();
                while queue.durable < self.sequence {
                    queue = self
                        .shared
                        .flushed
                        .wait(queue)
                        .unwrap_or_else(|e| e.into_inner());
                }
                queue
            });
        }
        match queue
            .failed
            .iter()
            .find(|(after, up_to, _)| *after < self.sequence && self.sequence <= *up_to)
        {
            Some((_, _, message)) => Err(StoreError::Commit(message.clone())),
            None => Ok(()),
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine's store, written by one thread in groups.
pub struct Committer {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// How many failed groups are remembered for waiters that have not looked
/// yet; older ones are long answered.
const FAILURES_KEPT: usize = 64;

impl Committer {
    /// Starts the writer thread over `store`.
    pub fn start(store: Box<dyn JobStore>) -> Committer {
        Committer::lingering(store, LINGER)
    }

    /// The same, letting unwaited changes gather for up to `linger`.
    fn lingering(store: Box<dyn JobStore>, linger: Duration) -> Committer {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            staged: Condvar::new(),
            flushed: Condvar::new(),
            linger,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ferry-commit".into())
                .spawn(move || write_groups(&shared, store))
                .expect("the commit thread starts")
        };
        Committer {
            shared,
            writer: Some(writer),
        }
    }

    fn stage(&self, change: Change) -> Ticket {
        let mut queue = lock(&self.shared.queue);
        queue.staged += 1;
        let sequence = queue.staged;
        queue.pending.push((sequence, change));
        let first = queue.oldest.is_none();
        queue.oldest.get_or_insert_with(Instant::now);
        drop(queue);
        // A writer with changes pending already knows when to flush them.
        if first {
            self.shared.staged.notify_one();
        }
        Ticket {
            sequence,
            shared: self.shared.clone(),
        }
    }

    /// Stages `job` as it is now (call it while the job table is held).
    pub fn stage_save(&self, job: &Job) -> Ticket {
        self.stage(Change::Write(Box::new(job.clone())))
    }

    /// Stages a checkpoint of job `id` (a few bytes, not the job's record).
    pub fn stage_checkpoint(&self, id: &str, checkpoint: Checkpoint) -> Ticket {
        self.stage(Change::Checkpoint(id.to_string(), checkpoint))
    }

    /// Stages forgetting job `id`.
    pub fn stage_remove(&self, id: &str) -> Ticket {
        self.stage(Change::Erase(id.to_string()))
    }

    /// Saves `job` and waits until it is durable.
    pub fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.stage_save(job).wait()
    }

    /// Forgets job `id` and waits until that is durable.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.stage_remove(id).wait()
    }
}

impl Drop for Committer {
    /// Writes what is staged, then closes the store.
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.staged.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer: every change staged so far, written in order, then one
/// flush, as soon as someone waits for one of them (or the store closes), or
/// once the oldest has waited `linger`.
fn write_groups(shared: &Shared, store: Box<dyn JobStore>) {
    loop {
        let group = {
            let mut queue = lock(&shared.queue);
            loop {
                let due = match queue.oldest {
                    None if queue.closing => return,
                    None => None,
                    Some(_) if queue.closing || queue.wanted > queue.durable => break,
                    Some(oldest) => match shared.linger.checked_sub(oldest.elapsed()) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => break,
                    },
                };
                queue = match due {
                    None => shared.staged.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    Some(left) => {
                        let waited = shared.staged.wait_timeout(queue, left);
                        waited.unwrap_or_else(|e| e.into_inner()).0
                    }
                };
            }
            queue.oldest = None;
            std::mem::take(&mut queue.pending)
        };
        let up_to = group.last().map_or(0, |(sequence, _)| *sequence);
        let written = group.into_iter().try_for_each(|(_, change)| match change {
            Change::Write(job) => store.write(&job),
            Change::Checkpoint(id, checkpoint) => store.write_checkpoint(&id, &checkpoint),
            Change::Erase(id) => store.erase(&id),
        });
        let result = written.and_then(|()| store.flush());
        let mut queue = lock(&shared.queue);
        if let Err(e) = result {
            tracing::error!(
                "the job store failed to write {} change(s): {e}",
                up_to - queue.durable
            );
            let after = queue.durable;
            queue.failed.push((after, up_to, e.to_string()));
            if queue.failed.len() > FAILURES_KEPT {
                queue.failed.remove(0);
            }
        }
        queue.durable = up_to;
        drop(queue);
        shared.flushed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobType, Priority};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    /// A store that records what it was asked, flushing slowly.
    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<String>>,
        flushes: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    struct Recording(Arc<Recorder>);

    impl JobStore for Recording {
        fn write(&self, job: &Job) -> Result<(), StoreError> {
            self.0.writes.lock().unwrap().push(job.name.clone());
            Ok(())
        }
        fn write_checkpoint(&self, id: &str, c: &Checkpoint) -> Result<(), StoreError> {
            let bytes = c.bytes_transferred;
            self.0.writes.lock().unwrap().push(format!("{id}@{bytes}"));
            Ok(())
        }
        fn erase(&self, id: &str) -> Result<(), StoreError> {
            self.0.writes.lock().unwrap().push(format!("-{id}"));
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.flushes.fetch_add(1, Ordering::SeqCst);
            if self.0.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Commit("the disk is gone".into()));
            }
            Ok(())
        }
        fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
            Ok((Vec::new(), Vec::new()))
        }
    }

    fn job(name: &str) -> Job {
        Job::new(
            name.into(),
            JobType::Download,
            1,
            name.into(),
            Priority::Normal,
            SystemTime::now(),
        )
    }

    #[test]
    fn concurrent_callers_share_flushes_and_keep_their_order() {
        let recorder = Arc::new(Recorder::default());
        let committer = Arc::new(Committer::start(Box::new(Recording(recorder.clone()))));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let committer = committer.clone();
                std::thread::spawn(move || {
                    for n in 0..10 {
                        committer.save(&job(&format!("{t}-{n}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let writes = recorder.writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 80);
        for t in 0..8 {
            let mine: Vec<_> = writes
                .iter()
                .filter(|w| w.starts_with(&format!("{t}-")))
                .cloned()
                .collect();
            let expected: Vec<_> = (0..10).map(|n| format!("{t}-{n}")).collect();
            assert_eq!(mine, expected, "one caller's changes stay in order");
        }
        let flushes = recorder.flushes.load(Ordering::SeqCst);
        assert!(flushes < 80, "{flushes} flushes for 80 writes: none shared");
    }

    #[test]
    fn a_failed_flush_fails_the_callers_it_covered_and_only_those() {
        let recorder = Arc::new(Recorder::default());
        let committer = Committer::start(Box::new(Recording(recorder.clone())));
        committer.save(&job("before")).unwrap();
        recorder.fail.store(true, Ordering::SeqCst);
        let error = committer.remove("x").unwrap_err();
        assert!(error.to_string().contains("the disk is gone"), "{error}");
        recorder.fail.store(false, Ordering::SeqCst);
        committer.save(&job("after")).unwrap();
        drop(committer);
        assert_eq!(*recorder.writes.lock().unwrap(), ["before", "-x", "after"]);
    }

    /// Changes nobody waits for gather: the next caller who waits shares
    /// their flush.
    #[test]
    fn unwaited_changes_join_the_flush_of_the_next_one_waited_for() {
        let recorder = Arc::new(Recorder::default());
        let committer = Committer::lingering(
            Box::new(Recording(recorder.clone())),
            Duration::from_secs(600),
        );
        let unwaited: Vec<_> = (0..5)
            .map(|n| committer.stage_save(&job(&n.to_string())))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(recorder.flushes.load(Ordering::SeqCst), 0);
        committer.save(&job("waited")).unwrap();
        assert_eq!(recorder.flushes.load(Ordering::SeqCst), 1);
        assert_eq!(recorder.writes.lock().unwrap().len(), 6);
        for ticket in unwaited {
            ticket.wait().unwrap();
        }
        assert_eq!(recorder.flushes.load(Ordering::SeqCst), 1);
    }

    /// ... and are flushed all the same, once they have lingered.
    #[test]
    fn unwaited_changes_are_flushed_after_lingering() {
        let recorder = Arc::new(Recorder::default());
        let committer = Committer::lingering(
            Box::new(Recording(recorder.clone())),
            Duration::from_millis(50),
        );
        let _unwaited = committer.stage_save(&job("alone"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder.flushes.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*recorder.writes.lock().unwrap(), ["alone"]);
    }

    #[test]
    fn what_is_staged_is_written_before_the_store_closes() {
        let recorder = Arc::new(Recorder::default());
        let committer = Committer::start(Box::new(Recording(recorder.clone())));
        let tickets: Vec<_> = (0..5)
            .map(|n| committer.stage_save(&job(&n.to_string())))
            .collect();
        drop(committer);
        assert_eq!(recorder.writes.lock().unwrap().len(), 5);
        for ticket in tickets {
            ticket.wait().unwrap();
        }
    }
}
