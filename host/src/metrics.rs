//! What an operator graphs, as Prometheus text: jobs by state, bytes and
//! files transferred by job type, transfer errors by code, store writes and
//! their latency, plugin calls and their durations.
//!
//! The engine counts as it goes (a few atomic additions per checkpoint, a
//! short lock per error or plugin call); `GET /v1/metrics` renders. Store
//! writes and flushes are counted apart: group commit makes one flush serve
//! many writes.

use crate::job::{Checkpoint, Job, JobState, JobType};
use crate::store::{JobStore, StoreError};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const JOB_TYPES: [JobType; 3] = [JobType::Download, JobType::Upload, JobType::UploadReply];

/// The counters of one engine.
#[derive(Debug, Default)]
pub struct Metrics {
    bytes: [AtomicU64; 3],
    files: [AtomicU64; 3],
    errors: Mutex<BTreeMap<String, u64>>,
    store_writes: AtomicU64,
    store_flushes: AtomicU64,
    store_flush_failures: AtomicU64,
    store_flush_nanos: AtomicU64,
    plugin_calls: Mutex<BTreeMap<(String, &'static str), PluginCalls>>,
}

/// How often a plugin was called with one outcome, and for how long.
#[derive(Debug, Default, Clone, Copy)]
struct PluginCalls {
    count: u64,
    nanos: u128,
}

fn slot(job_type: JobType) -> usize {
    match job_type {
        JobType::Download => 0,
        JobType::Upload => 1,
        JobType::UploadReply => 2,
    }
}

fn type_name(job_type: JobType) -> &'static str {
    match job_type {
        JobType::Download => "download",
        JobType::Upload => "upload",
        JobType::UploadReply => "upload-reply",
    }
}

fn state_name(state: JobState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A label value as Prometheus text wants it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// `bytes` more moved for a job of `job_type` (durably, as recorded).
    pub fn add_bytes(&self, job_type: JobType, bytes: u64) {
        self.bytes[slot(job_type)].fetch_add(bytes, Ordering::Relaxed);
    }

    /// One more file transferred for a job of `job_type`.
    pub fn add_file(&self, job_type: JobType) {
        self.files[slot(job_type)].fetch_add(1, Ordering::Relaxed);
    }

    /// A transfer ended in an error with `code`.
    pub fn add_error(&self, code: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(code.to_string()).or_default() += 1;
    }

    /// A plugin call returned, well or not, after `elapsed`.
    pub fn add_plugin_call(&self, plugin: &str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        let mut calls = self.plugin_calls.lock().unwrap_or_else(|e| e.into_inner());
        let entry = calls.entry((plugin.to_string(), outcome)).or_default();
        entry.count += 1;
        entry.nanos += elapsed.as_nanos();
    }

    fn add_store_flush(&self, elapsed: Duration, ok: bool) {
        self.store_flushes.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.store_flush_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.store_flush_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The Prometheus text exposition of everything, with the jobs the
    /// engine holds now counted by state and type.
    pub fn render(&self, jobs: &[(JobState, JobType)]) -> String {
        let mut out = String::new();
        let mut by_state: BTreeMap<(String, &str), u64> = BTreeMap::new();
        for state in JobState::ALL.iter().filter(|s| !s.is_final()) {
            for job_type in JOB_TYPES {
                by_state.insert((state_name(*state), type_name(job_type)), 0);
            }
        }
        for (state, job_type) in jobs {
            *by_state
                .entry((state_name(*state), type_name(*job_type)))
                .or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP ferry_jobs Jobs the daemon holds, by state and type."
        );
        let _ = writeln!(out, "# TYPE ferry_jobs gauge");
        for ((state, job_type), n) in &by_state {
            let _ = writeln!(
                out,
                "ferry_jobs{{state=\"{state}\",type=\"{job_type}\"}} {n}"
            );
        }
        for (name, help, values) in [
            (
                "ferry_transferred_bytes_total",
                "Bytes durably transferred (downloaded to disk, or acknowledged by the server).",
                &self.bytes,
            ),
            (
                "ferry_transferred_files_total",
                "Files transferred.",
                &self.files,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for job_type in JOB_TYPES {
                let n = values[slot(job_type)].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{type=\"{}\"}} {n}", type_name(job_type));
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferry_transfer_errors_total Transfers that ended in an error, by code."
        );
        let _ = writeln!(out, "# TYPE ferry_transfer_errors_total counter");
        for (code, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "ferry_transfer_errors_total{{code=\"{}\"}} {n}",
                label(code)
            );
        }
        let writes = self.store_writes.load(Ordering::Relaxed);
        let flushes = self.store_flushes.load(Ordering::Relaxed);
        let failures = self.store_flush_failures.load(Ordering::Relaxed);
        let seconds = self.store_flush_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        for (name, kind, help, value) in [
            (
                "ferry_store_writes_total",
                "counter",
                "Jobs written to (or erased from) the store.",
                writes.to_string(),
            ),
            (
                "ferry_store_flushes_total",
                "counter",
                "Flushes of the store: each makes a group of writes durable.",
                flushes.to_string(),
            ),
            (
                "ferry_store_flush_failures_total",
                "counter",
                "Flushes that failed.",
                failures.to_string(),
            ),
            (
                "ferry_store_flush_seconds_total",
                "counter",
                "Time spent in store flushes.",
                format!("{seconds:.6}"),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        let calls = self
            .plugin_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP ferry_plugin_calls_total Transfer calls into plugins, by plugin and outcome."
        );
        let _ = writeln!(out, "# TYPE ferry_plugin_calls_total counter");
        for ((plugin, outcome), c) in &calls {
            let _ = writeln!(
                out,
                "ferry_plugin_calls_total{{plugin=\"{}\",outcome=\"{outcome}\"}} {}",
                label(plugin),
                c.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferry_plugin_call_seconds_total Time spent in transfer calls into plugins."
        );
        let _ = writeln!(out, "# TYPE ferry_plugin_call_seconds_total counter");
        for ((plugin, outcome), c) in &calls {
            let _ = writeln!(
                out,
                "ferry_plugin_call_seconds_total{{plugin=\"{}\",outcome=\"{outcome}\"}} {:.6}",
                label(plugin),
                c.nanos as f64 / 1e9
            );
        }
        out
    }
}

/// A job store whose writes and flushes are counted, and flushes timed.
pub struct MeasuredStore {
    pub inner: Box<dyn JobStore>,
    pub metrics: std::sync::Arc<Metrics>,
}

impl JobStore for MeasuredStore {
    fn write(&self, job: &Job) -> Result<(), StoreError> {
        self.metrics.store_writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write(job)
    }

    fn write_checkpoint(&self, id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.metrics.store_writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_checkpoint(id, checkpoint)
    }

    fn erase(&self, id: &str) -> Result<(), StoreError> {
        self.metrics.store_writes.fetch_add(1, Ordering::Relaxed);
        self.inner.erase(id)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let start = Instant::now();
        let result = self.inner.flush();
        self.metrics
            .add_store_flush(start.elapsed(), result.is_ok());
        result
    }

    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        self.inner.load_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels() {
        let metrics = Metrics::default();
        metrics.add_bytes(JobType::Download, 1000);
        metrics.add_file(JobType::Download);
        metrics.add_error("http-status");
        metrics.add_error("http-status");
        metrics.add_plugin_call("http", true, Duration::from_millis(1500));
        metrics.add_store_flush(Duration::from_millis(2), true);
        let text = metrics.render(&[
            (JobState::Queued, JobType::Download),
            (JobState::Queued, JobType::Download),
            (JobState::Error, JobType::Upload),
        ]);
        for line in [
            "ferry_jobs{state=\"queued\",type=\"download\"} 2",
            "ferry_jobs{state=\"error\",type=\"upload\"} 1",
            "ferry_jobs{state=\"transferred\",type=\"upload-reply\"} 0",
            "ferry_transferred_bytes_total{type=\"download\"} 1000",
            "ferry_transferred_files_total{type=\"download\"} 1",
            "ferry_transfer_errors_total{code=\"http-status\"} 2",
            "ferry_store_flushes_total 1",
            "ferry_plugin_calls_total{plugin=\"http\",outcome=\"ok\"} 1",
            "ferry_plugin_call_seconds_total{plugin=\"http\",outcome=\"ok\"} 1.500000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("state=\"acknowledged\""),
            "final states are not held"
        );
    }
}
