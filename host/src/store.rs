//! The job store: where jobs live across restarts, behind a narrow interface.
//!
//! The engine needs few things of a store: write a job, forget a job, make
//! what was written durable, and list every job at start. Writes and the
//! flush are apart so that the engine's group commit (`commit`) can write
//! many changes and flush once; a change is never acknowledged before a
//! flush covers it. A transfer's checkpoints are written apart from the job's
//! record (a file's progress, tens of bytes each). The embedded default is sled; a PostgreSQL
//! store for fleets sharing one queue would implement the same trait (a
//! write an upsert of the job's row that also deletes its checkpoint rows, a
//! checkpoint an upsert into a table of its own keyed by job and file, both
//! in an open transaction; a flush its commit; `load_all` a join).

use crate::job::{Checkpoint, Job};
use std::path::Path;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job store at {path} cannot be opened: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the job store failed: {0}")]
    Io(#[from] sled::Error),
    #[error("job {id} in the store is unreadable: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
    /// A group of changes could not be made durable.
    #[error("the job store could not write: {0}")]
    Commit(String),
}

/// What the engine needs of a store.
pub trait JobStore: Send + Sync {
    /// Writes `job`, whole and atomically; durable after the next `flush`.
    fn write(&self, job: &Job) -> Result<(), StoreError>;
    /// Writes a checkpoint of job `id`, apart from its record and much
    /// smaller; durable after the next `flush`. `load_all` applies it to the
    /// record, and the next `write` of the job supersedes it.
    fn write_checkpoint(&self, id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError>;
    /// Forgets job `id` (and its checkpoints); durable after the next `flush`.
    fn erase(&self, id: &str) -> Result<(), StoreError>;
    /// Makes every write and erase before it durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Every stored job, with the ids of records that could not be read.
    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError>;

    /// Writes `job` and makes it durable before returning.
    fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.write(job)?;
        self.flush()
    }

    /// Forgets job `id` durably.
    fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.erase(id)?;
        self.flush()
    }
}

/// The embedded default store.
pub struct SledStore {
    /// Taken only by `drop`.
    open: Option<Open>,
}

struct Open {
    jobs: sled::Tree,
    db: sled::Db,
}

/// sled's page cache (its default is 1 GiB). The engine keeps every job in
/// its own table and reads the store only when it opens, so the cache only
/// serves writes: a small one keeps the daemon's memory small.
const CACHE_BYTES: u64 = 8 << 20;

/// How long closing the store may take (see `Drop for SledStore`).
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let jobs = db.open_tree("jobs")?;
        Ok(SledStore {
            open: Some(Open { jobs, db }),
        })
    }

    fn jobs(&self) -> &sled::Tree {
        &self.open.as_ref().expect("open until dropped").jobs
    }
}

impl Drop for SledStore {
    /// sled flushes once more as it closes. Every save was flushed already,
    /// so nothing the engine acknowledged depends on that flush: it gets
    /// [`CLOSE_WAIT`] on a thread of its own and is left behind if it stalls
    /// (sled 0.34 does when a write failed under it, for instance when its
    /// directory was removed), so that closing never hangs the daemon.
    fn drop(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel();
        let closing = std::thread::Builder::new()
            .name("ferry-store-close".into())
            .spawn(move || {
                drop(open);
                let _ = closed.send(());
            });
        if closing.is_ok() && wait.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::error!(
                "the job store did not close within {CLOSE_WAIT:?}; every change was flushed before"
            );
        }
    }
}

/// A job's record is kept in chunks of at most this many bytes, so that no
/// page of sled's tree takes its separate path for large pages (a file of its
/// own for every page over 128 KiB with the default segment size; a leaf page
/// holds up to 17 values). A failed write there (no space left, the directory
/// gone) leaves sled 0.34 waiting for good in every later flush, and the
/// engine flushes while it holds its job table. Small pages go to sled's log
/// file. A job with a 1 MiB upload reply is about 350 chunks, written in one
/// atomic batch; a job without one, a chunk or two.
const CHUNK_BYTES: usize = 4 * 1024;

/// The key of chunk `index` of job `id`: the id, a zero byte (ids never hold
/// one), and the index big-endian, so sled's key order is the chunks' order.
fn chunk_key(id: &str, index: usize) -> Vec<u8> {
    let mut key = chunk_prefix(id);
    key.extend_from_slice(&(index as u32).to_be_bytes());
    key
}

fn chunk_prefix(id: &str) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.push(0);
    key
}

/// The key of the checkpoint of file `index` of job `id`: the id, a one
/// byte, and the index big-endian, so it sorts after the job's chunks.
fn checkpoint_key(id: &str, index: usize) -> Vec<u8> {
    let mut key = checkpoint_prefix(id);
    key.extend_from_slice(&(index as u32).to_be_bytes());
    key
}

fn checkpoint_prefix(id: &str) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.push(1);
    key
}

/// A checkpoint as stored: JSON, its file's index being in the key.
fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    serde_json::to_vec(c).expect("a checkpoint always serialises")
}

/// A stored checkpoint, or none when it does not decode: the job's record
/// then stands, whose progress is older (never ahead of the bytes on disk),
/// so the bytes after it are fetched again.
fn decode_checkpoint(index: u32, value: &[u8]) -> Option<Checkpoint> {
    let mut checkpoint: Checkpoint = serde_json::from_slice(value).ok()?;
    checkpoint.file = index as usize;
    Some(checkpoint)
}

/// What a stored key is: a chunk of a job's record, or a checkpoint.
enum Key<'a> {
    Chunk(&'a [u8]),
    Checkpoint(&'a [u8], u32),
}

fn kind_of(key: &[u8]) -> Key<'_> {
    match key.iter().position(|&b| b <= 1) {
        Some(at) if key[at] == 1 && key.len() == at + 5 => {
            let index: [u8; 4] = key[at + 1..].try_into().expect("4 bytes");
            Key::Checkpoint(&key[..at], u32::from_be_bytes(index))
        }
        Some(at) => Key::Chunk(&key[..at]),
        None => Key::Chunk(key),
    }
}

/// Splits a stored key into its job id and chunk index.
fn split_key(key: &[u8]) -> Option<(&[u8], u32)> {
    let at = key.iter().position(|&b| b == 0)?;
    let index: [u8; 4] = key[at + 1..].try_into().ok()?;
    Some((&key[..at], u32::from_be_bytes(index)))
}

impl SledStore {
    /// Adds to `batch` the removal of every chunk of `id` from `first` on.
    fn remove_chunks_from(
        &self,
        batch: &mut sled::Batch,
        id: &str,
        first: usize,
    ) -> Result<(), StoreError> {
        for key in self.jobs().scan_prefix(chunk_prefix(id)).keys() {
            let key = key?;
            if split_key(&key).is_none_or(|(_, index)| index as usize >= first) {
                batch.remove(key);
            }
        }
        Ok(())
    }
}

impl SledStore {
    /// Adds to `batch` the removal of every checkpoint of `id`.
    fn remove_checkpoints(&self, batch: &mut sled::Batch, id: &str) -> Result<(), StoreError> {
        for key in self.jobs().scan_prefix(checkpoint_prefix(id)).keys() {
            batch.remove(key?);
        }
        Ok(())
    }
}

impl JobStore for SledStore {
    fn write(&self, job: &Job) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(job).expect("a job always serialises");
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for (index, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            batch.insert(chunk_key(&job.id, index), chunk);
            count = index + 1;
        }
        self.remove_chunks_from(&mut batch, &job.id, count)?;
        self.remove_checkpoints(&mut batch, &job.id)?;
        self.jobs().apply_batch(batch)?;
        Ok(())
    }

    fn write_checkpoint(&self, id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.jobs().insert(
            checkpoint_key(id, checkpoint.file),
            encode_checkpoint(checkpoint),
        )?;
        Ok(())
    }

    fn erase(&self, id: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        self.remove_chunks_from(&mut batch, id, 0)?;
        self.remove_checkpoints(&mut batch, id)?;
        self.jobs().apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.open.as_ref().expect("open until dropped").db.flush()?;
        Ok(())
    }

    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        let (mut jobs, mut unreadable) = (Vec::new(), Vec::new());
        let mut batch = Vec::with_capacity(DECODE_BATCH);
        // Chunks of one job are adjacent in key order; a record is complete
        // when the next key belongs to another job.
        let mut current: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut checkpoints = std::collections::HashMap::<Vec<u8>, Vec<Checkpoint>>::new();
        for entry in self.jobs().iter() {
            let (key, value) = entry?;
            let id = match kind_of(&key) {
                Key::Chunk(id) => id,
                Key::Checkpoint(id, index) => {
                    if let Some(c) = decode_checkpoint(index, &value) {
                        checkpoints.entry(id.to_vec()).or_default().push(c);
                    }
                    continue;
                }
            };
            match &mut current {
                Some((open, bytes)) if open.as_slice() == id => bytes.extend_from_slice(&value),
                _ => {
                    if let Some(record) = current.take() {
                        batch.push(record);
                        if batch.len() == DECODE_BATCH {
                            decode(&mut batch, &mut jobs, &mut unreadable);
                        }
                    }
                    current = Some((id.to_vec(), value.to_vec()));
                }
            }
        }
        batch.extend(current);
        decode(&mut batch, &mut jobs, &mut unreadable);
        if !checkpoints.is_empty() {
            for job in &mut jobs {
                for c in checkpoints.remove(job.id.as_bytes()).into_iter().flatten() {
                    job.apply_checkpoint(c);
                }
            }
        }
        Ok((jobs, unreadable))
    }
}

/// Records decoded together while opening, on every CPU: decoding is most of
/// a restart's time, and a batch bounds the raw bytes held meanwhile.
const DECODE_BATCH: usize = 4096;

/// Decodes and empties `batch` (id, record) into `jobs`, keeping its order;
/// records that do not decode go to `unreadable`.
fn decode(
    batch: &mut Vec<(Vec<u8>, Vec<u8>)>,
    jobs: &mut Vec<Job>,
    unreadable: &mut Vec<StoreError>,
) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let share = batch.len().div_ceil(workers).max(1);
    let one = |records: &[(Vec<u8>, Vec<u8>)]| -> Vec<Result<Job, StoreError>> {
        records
            .iter()
            .map(|(id, bytes)| {
                serde_json::from_slice::<Job>(bytes).map_err(|source| StoreError::Corrupt {
                    id: String::from_utf8_lossy(id).into_owned(),
                    source,
                })
            })
            .collect()
    };
    let decoded: Vec<Vec<Result<Job, StoreError>>> = if workers == 1 || batch.len() < 64 {
        vec![one(batch)]
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .chunks(share)
                .map(|records| scope.spawn(move || one(records)))
                .collect();
            running
                .into_iter()
                .map(|worker| {
                    worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    };
    for result in decoded.into_iter().flatten() {
        match result {
            Ok(job) => jobs.push(job),
            Err(e) => unreadable.push(e),
        }
    }
    batch.clear();
}

/// Byte strings (upload replies, up to 1 MiB) are stored as base64 text, not
/// as JSON arrays of numbers (which would be 3.5 times their size).
pub mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional byte string.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            bytes: &Option<Vec<u8>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => serializer.serialize_some(&STANDARD.encode(bytes)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobType, Priority};
    use std::time::SystemTime;

    /// Opens the store again after an earlier one was dropped: sled lets go
    /// of its lock file from a background thread shortly after the drop.
    fn reopen(dir: &Path) -> SledStore {
        for _ in 0..250 {
            if let Ok(store) = SledStore::open(dir) {
                return store;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        SledStore::open(dir).expect("the store opens again")
    }

    /// A checkpoint is applied to its job's record on load, superseded by
    /// the next write of the whole job, and forgotten with the job.
    #[test]
    fn checkpoints_apply_until_the_next_whole_write() {
        let dir = tempfile::tempdir().unwrap();
        let created = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let mut job = Job::new(
            "c".into(),
            JobType::Download,
            1000,
            "n".into(),
            Priority::Normal,
            created,
        );
        job.files.push(crate::job::JobFile {
            remote: "http://h/f".into(),
            local: "/tmp/f".into(),
            ranges: Vec::new(),
            bytes_total: Some(100),
            bytes_transferred: 10,
            complete: false,
            finalized: false,
            moving: false,
            validator: None,
            source_modified: None,
            sha256: None,
            served_sha256: None,
            temp_tag: None,
        });
        job.timers.idle = std::time::Duration::from_secs(50);
        let at = created + std::time::Duration::from_secs(60);
        let checkpoint = Checkpoint {
            file: 0,
            bytes_transferred: 70,
            bytes_total: Some(100),
            validator: Some(crate::plugin::Validator::Etag("\"v2\"".into())),
            served_sha256: Some("ab".repeat(32)),
            complete: false,
            at,
            active: std::time::Duration::from_millis(4_500),
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.save(&job).unwrap();
            store.write_checkpoint("c", &checkpoint).unwrap();
            store.flush().unwrap();
        }
        let store = reopen(dir.path());
        let (jobs, _) = store.load_all().unwrap();
        let loaded = &jobs[0];
        assert_eq!(loaded.files[0].bytes_transferred, 70);
        assert_eq!(loaded.files[0].validator, checkpoint.validator);
        assert_eq!(loaded.files[0].served_sha256, checkpoint.served_sha256);
        assert!(!loaded.files[0].complete);
        assert_eq!(loaded.timers.idle, std::time::Duration::ZERO);
        assert_eq!(
            loaded.timers.active,
            std::time::Duration::from_millis(4_500)
        );
        assert_eq!(loaded.timers_at, at);
        // A restart from zero is written whole: the checkpoint must not
        // bring the old bytes back.
        job.files[0].bytes_transferred = 0;
        store.save(&job).unwrap();
        drop(store);
        let store = reopen(dir.path());
        let (jobs, _) = store.load_all().unwrap();
        assert_eq!(jobs[0].files[0].bytes_transferred, 0);
        // A file's last checkpoint says it is in.
        let last = Checkpoint {
            bytes_transferred: 100,
            complete: true,
            ..checkpoint.clone()
        };
        store.write_checkpoint("c", &last).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = reopen(dir.path());
        let (jobs, _) = store.load_all().unwrap();
        assert_eq!(jobs[0].files[0].bytes_transferred, 100);
        assert!(jobs[0].files[0].complete);
        // One that does not decode (written by another version) leaves the
        // record's older progress standing.
        store
            .jobs()
            .insert(checkpoint_key("c", 0), &[0u8; 28][..])
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let store = reopen(dir.path());
        let (jobs, _) = store.load_all().unwrap();
        assert_eq!(jobs[0].files[0].bytes_transferred, 0);
        assert!(!jobs[0].files[0].complete);
        store.write_checkpoint("c", &checkpoint).unwrap();
        store.remove("c").unwrap();
        assert!(store.load_all().unwrap().0.is_empty());
        assert_eq!(store.jobs().iter().count(), 0, "nothing of the job is left");
    }

    #[test]
    fn jobs_survive_reopening_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job::new(
            "a".into(),
            JobType::Download,
            1000,
            "n".into(),
            Priority::High,
            SystemTime::now(),
        );
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.save(&job).unwrap();
            let mut other = job.clone();
            other.id = "b".into();
            store.save(&other).unwrap();
            store.remove("b").unwrap();
        }
        let store = reopen(dir.path());
        let (jobs, unreadable) = store.load_all().unwrap();
        assert_eq!(jobs, vec![job]);
        assert!(unreadable.is_empty());
    }

    #[test]
    fn a_record_that_shrinks_leaves_no_stale_chunk_and_ids_sharing_a_prefix_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = Job::new(
            "a".into(),
            JobType::UploadReply,
            1,
            "n".into(),
            Priority::Normal,
            SystemTime::now(),
        );
        big.description = "x".repeat(5 * CHUNK_BYTES);
        let mut longer = big.clone();
        longer.id = "ab".into();
        longer.description = "y".repeat(3 * CHUNK_BYTES);
        let store = SledStore::open(dir.path()).unwrap();
        store.save(&big).unwrap();
        store.save(&longer).unwrap();
        big.description = "short".into();
        store.save(&big).unwrap();
        assert_eq!(store.jobs().scan_prefix(chunk_prefix("a")).count(), 1);
        let (jobs, unreadable) = store.load_all().unwrap();
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(jobs, vec![big, longer.clone()]);
        store.remove("a").unwrap();
        assert_eq!(store.load_all().unwrap().0, vec![longer]);
    }

    #[test]
    fn large_records_stay_in_the_log_and_a_store_that_lost_its_directory_still_closes() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let store = SledStore::open(dir.path()).unwrap();
        let mut job = Job::new(
            "big".into(),
            JobType::UploadReply,
            1,
            "n".into(),
            Priority::Normal,
            SystemTime::now(),
        );
        job.description = "x".repeat(1 << 20);
        store.save(&job).unwrap();
        let blob_files = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
        assert_eq!(blob_files, 0, "no value of its own in {}", blobs.display());

        // With its directory gone, a value of its own could not be written
        // (and sled would then wait for good in every later flush). On a
        // thread, so that a stall fails the test instead of hanging it.
        let (report, reports) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(dir);
            for (id, len) in [("big-2", 1 << 20), ("small", 10)] {
                job.id = id.into();
                job.description = "y".repeat(len);
                let saved = store.save(&job).map_err(|e| e.to_string());
                report.send(format!("{id}: {saved:?}")).unwrap();
            }
            drop(store);
            report.send("closed".into()).unwrap();
        });
        let wait = CLOSE_WAIT + std::time::Duration::from_secs(30);
        for expected in ["big-2: Ok(())", "small: Ok(())", "closed"] {
            assert_eq!(reports.recv_timeout(wait).as_deref(), Ok(expected));
        }
    }

    #[test]
    fn a_reply_at_the_1_mib_limit_is_stored_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = Job::new(
            "r".into(),
            JobType::UploadReply,
            1,
            "n".into(),
            Priority::Normal,
            SystemTime::now(),
        );
        let body: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
        job.reply = Some(crate::job::ReplyRecord {
            reply: crate::plugin::UploadReply {
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
                size: body.len() as u64,
                body: body.clone(),
            },
            data: Some(body[..1000].to_vec()),
            in_file: false,
        });
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.save(&job).unwrap();
        }
        let store = reopen(dir.path());
        let (jobs, _) = store.load_all().unwrap();
        assert_eq!(jobs, vec![job]);
    }
}
