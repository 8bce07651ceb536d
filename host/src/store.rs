//! The job store: where jobs live across restarts, behind a narrow interface.
//!
//! The engine needs four things of a store: save a job durably, forget a
//! job, list every job at start, and nothing else. The embedded default is
//! sled; a PostgreSQL store for fleets sharing one queue would implement the
//! same trait. `save` returns only once the job is on disk: a state change is
//! never acknowledged before it is durable.

use crate::job::Job;
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
}

/// What the engine needs of a store.
pub trait JobStore: Send + Sync {
    /// Writes `job` and makes it durable before returning.
    fn save(&self, job: &Job) -> Result<(), StoreError>;
    /// Forgets job `id` durably.
    fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Every stored job, with the ids of records that could not be read.
    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError>;
}

/// The embedded default store.
pub struct SledStore {
    jobs: sled::Tree,
    db: sled::Db,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let jobs = db.open_tree("jobs")?;
        Ok(SledStore { jobs, db })
    }
}

impl JobStore for SledStore {
    fn save(&self, job: &Job) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(job).expect("a job always serialises");
        self.jobs.insert(job.id.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.jobs.remove(id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        let (mut jobs, mut unreadable) = (Vec::new(), Vec::new());
        for entry in self.jobs.iter() {
            let (key, value) = entry?;
            match serde_json::from_slice::<Job>(&value) {
                Ok(job) => jobs.push(job),
                Err(source) => unreadable.push(StoreError::Corrupt {
                    id: String::from_utf8_lossy(&key).into_owned(),
                    source,
                }),
            }
        }
        Ok((jobs, unreadable))
    }
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
        let store = SledStore::open(dir.path()).unwrap();
        let (jobs, unreadable) = store.load_all().unwrap();
        assert_eq!(jobs, vec![job]);
        assert!(unreadable.is_empty());
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
                body: body.clone(),
            },
            data: Some(body[..1000].to_vec()),
        });
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.save(&job).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let (jobs, _) = store.load_all().unwrap();
        assert_eq!(jobs, vec![job]);
    }
}
