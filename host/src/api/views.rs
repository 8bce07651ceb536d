//! What crosses the API: the JSON views the daemon answers with and the
//! requests it accepts.
//!
//! Views are separate from the engine's model on purpose: the wire format is
//! an interface (SPEC §4 fixes its names), and a view never carries a secret
//! (credentials show only their scheme, headers only their names, URLs lose
//! their passwords). Requests refuse unknown fields.

use crate::error::{ErrorClass, ErrorContext};
use crate::job::{ByteRange, Job, JobError, JobState, JobType, Priority, Progress};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// One job, as `info` and `list` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub state: JobState,
    pub owner: u32,
    pub name: String,
    pub description: String,
    pub priority: Priority,
    pub files: Vec<FileView>,
    pub progress: Progress,
    pub error: Option<ErrorView>,
    pub error_count: u32,
    /// RFC 3339, UTC.
    pub created: String,
    pub modified: String,
    pub transfer_completed: Option<String>,
    pub settings: SettingsView,
    /// For a transferred upload-reply job: the reply's HTTP status and size.
    pub reply: Option<ReplyView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub remote: String,
    pub local: PathBuf,
    pub bytes_total: Option<u64>,
    pub bytes_transferred: u64,
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<ByteRange>,
    /// The SHA-256 the owner asked for (`--sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The SHA-256 the server declared for the whole file (`Repr-Digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_sha256: Option<String>,
}

/// A typed error: the job's last error, or why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub class: ErrorClass,
    pub context: ErrorContext,
    pub code: String,
    pub message: String,
    pub http_status: Option<u16>,
    /// Index of the file concerned, if any.
    pub file: Option<usize>,
}

/// A job's settings, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    pub retry_delay_secs: u64,
    pub no_progress_timeout_secs: u64,
    pub max_download_time_secs: u64,
    /// Header names only: values may carry tokens.
    pub headers: Vec<String>,
    /// `basic`, `bearer` or null: never the secret.
    pub credentials: Option<String>,
    pub notify_command: Option<String>,
    pub reply_processor: Option<String>,
    /// Where an upload-reply job's reply file goes on `complete`.
    #[serde(default)]
    pub reply_file: Option<PathBuf>,
    /// The reply processor's options, as `[key, value]` pairs.
    #[serde(default)]
    pub reply_options: Vec<(String, String)>,
    /// The upload protocol chosen for the job, if any.
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyView {
    pub status: u16,
    /// The size of the whole reply body.
    pub bytes: u64,
    /// Whether the reply waits for `complete` to move it to the reply file.
    #[serde(default)]
    pub in_file: bool,
}

impl JobView {
    pub fn of(job: &Job) -> JobView {
        let s = &job.settings;
        JobView {
            id: job.id.clone(),
            job_type: job.job_type,
            state: job.state(),
            owner: job.owner,
            name: job.name.clone(),
            description: job.description.clone(),
            priority: job.priority,
            files: job
                .files
                .iter()
                .map(|f| FileView {
                    remote: redact_url(&f.remote),
                    local: f.local.clone(),
                    bytes_total: f.bytes_total,
                    bytes_transferred: f.bytes_transferred,
                    complete: f.complete,
                    ranges: f.ranges.clone(),
                    sha256: f.sha256.clone(),
                    served_sha256: f.served_sha256.clone(),
                })
                .collect(),
            progress: job.progress(),
            error: job.error.as_ref().map(ErrorView::of_job),
            error_count: job.error_count,
            created: rfc3339(job.created),
            modified: rfc3339(job.modified),
            transfer_completed: job.transfer_completed.map(rfc3339),
            settings: SettingsView {
                retry_delay_secs: s.retry_delay.as_secs(),
                no_progress_timeout_secs: s.no_progress_timeout.as_secs(),
                max_download_time_secs: s.max_download_time.as_secs(),
                headers: s.headers.iter().map(|(n, _)| n.clone()).collect(),
                credentials: s.credentials.as_ref().map(|c| match c {
                    crate::plugin::Credentials::Basic { .. } => "basic".to_string(),
                    crate::plugin::Credentials::Bearer { .. } => "bearer".to_string(),
                }),
                notify_command: s.notify_command.clone(),
                reply_processor: s.reply_processor.clone(),
                reply_file: s.reply_file.clone(),
                reply_options: s.reply_options.clone(),
                protocol: s.protocol.clone(),
            },
            reply: job.reply.as_ref().map(|r| ReplyView {
                status: r.reply.status,
                bytes: r.reply.size.max(r.reply.body.len() as u64),
                in_file: r.in_file,
            }),
        }
    }
}

impl ErrorView {
    pub fn of_job(e: &JobError) -> ErrorView {
        ErrorView {
            class: e.error.class,
            context: e.error.context,
            code: e.error.code.clone(),
            message: e.error.message.clone(),
            http_status: e.error.http_status,
            file: e.file,
        }
    }
}

/// A URL without its password, if it had one.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// `time` as RFC 3339 in UTC, to the second.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    #[serde(rename = "type", default)]
    pub job_type: Option<JobType>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedView {
    pub id: String,
}

/// One file of `POST /v1/jobs/{id}/files`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFileRequest {
    pub remote: String,
    pub local: PathBuf,
    #[serde(default)]
    pub ranges: Vec<RangeRequest>,
    /// Downloads: the SHA-256 (64 hex digits) the whole file must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST /v1/jobs/{id}/files` with a set of files (BITS `AddFileSet`):
/// all of them are added, or none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFileSetRequest {
    pub files: Vec<AddFileRequest>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    pub offset: u64,
    pub length: u64,
}

impl From<RangeRequest> for ByteRange {
    fn from(r: RangeRequest) -> ByteRange {
        ByteRange {
            offset: r.offset,
            length: r.length,
        }
    }
}

/// `PATCH /v1/jobs/{id}`: every field optional; `null` clears the nullable
/// ones (credentials, notify command, reply processor).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_progress_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_download_time_secs: Option<u64>,
    /// Replaces every custom header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderRequest>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub credentials: Option<Option<CredentialsRequest>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub notify_command: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub reply_processor: Option<Option<String>>,
    /// An absolute path, or null to keep the reply as data only.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub reply_file: Option<Option<PathBuf>>,
    /// Replaces the reply processor's options (`[key, value]` pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_options: Option<Vec<(String, String)>>,
    /// The upload protocol, or null to let the plugin choose.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol: Option<Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRequest {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialsRequest {
    Basic { user: String, password: String },
    Bearer { token: String },
}

impl std::fmt::Debug for CredentialsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialsRequest::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            CredentialsRequest::Bearer { .. } => write!(f, "Bearer(***)"),
        }
    }
}

/// A present field: `Some(None)` for `null`, `Some(Some(v))` for a value.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `GET /v1/jobs/{id}/reply`: the reply of a transferred upload-reply job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyDataView {
    pub id: String,
    /// The HTTP status of the server's final answer.
    pub status: u16,
    /// The answer's headers, as `[name, value]` pairs.
    pub headers: Vec<(String, String)>,
    /// The size of the whole reply body.
    pub bytes: u64,
    /// Whether the reply waits for `complete` to move it to the reply file.
    pub in_file: bool,
    /// The reply processor that made the data, if one ran.
    pub processor: Option<String>,
    /// The reply data (the processor's output, else the body when it is at
    /// most 1 MiB) as UTF-8 text; null when it is not text.
    pub data: Option<String>,
    /// The reply data, base64.
    pub data_base64: String,
}

impl ReplyDataView {
    /// The reply of `job`, if it has one.
    pub fn of(job: &Job) -> Option<ReplyDataView> {
        use base64::Engine as _;
        let record = job.reply.as_ref()?;
        let data = record.data.as_ref().unwrap_or(&record.reply.body);
        Some(ReplyDataView {
            id: job.id.clone(),
            status: record.reply.status,
            headers: record.reply.headers.clone(),
            bytes: record.reply.size.max(record.reply.body.len() as u64),
            in_file: record.in_file,
            processor: record
                .data
                .as_ref()
                .and(job.settings.reply_processor.clone()),
            data: String::from_utf8(data.clone()).ok(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(data),
        })
    }
}

/// What resume, suspend and cancel answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    pub id: String,
    pub state: JobState,
}

/// What complete answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionView {
    pub id: String,
    pub state: JobState,
    /// Some files were not fully transferred and were deleted.
    pub partial: bool,
    /// The files moved into place.
    pub files: Vec<PathBuf>,
    /// Upload-reply jobs: the reply's status, and its body (or the reply
    /// processor's output) as UTF-8 text when it is text.
    pub reply: Option<CompletedReply>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedReply {
    pub status: u16,
    pub body: Option<String>,
    pub data: Option<String>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub version: String,
    /// The caller, as the daemon sees them.
    pub uid: u32,
    pub admin: bool,
    /// The daemon's process id (to signal it).
    pub pid: u32,
}

/// `GET /v1/plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub schemes: Vec<String>,
    pub builtin: bool,
    /// The `ferry:transfer` version the component was built against.
    #[serde(default)]
    pub contract: String,
    /// What it can do, read from its exports: `download`, `ranges`,
    /// `upload`, `upload-reply`, `reply-processing`.
    #[serde(default)]
    pub abilities: Vec<String>,
    /// `loaded`, or `refused` (a third-party plugin that did not load).
    #[serde(default)]
    pub state: PluginState,
    /// Why a refused plugin did not load: a stable code...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// ...and a sentence naming the file and what to fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The refused plugin's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// Whether a plugin of `GET /v1/plugins` loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    #[default]
    Loaded,
    Refused,
}

/// `POST /v1/plugins/reload`: what changed, and the plugins as they are now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadView {
    /// Third-party plugins loaded by the reload.
    pub loaded: Vec<String>,
    /// Third-party plugins that were loaded and are gone.
    pub removed: Vec<String>,
    /// Every plugin now, as `GET /v1/plugins` lists them.
    pub plugins: Vec<PluginView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29T12:34:56Z"
        );
    }

    #[test]
    fn passwords_leave_urls() {
        assert_eq!(
            redact_url("http://u:secret@h/x"),
            "http://u:***@h/x".to_string()
        );
        assert_eq!(redact_url("http://h/x"), "http://h/x");
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        let r: SetRequest = serde_json::from_str(r#"{"notify_command": null}"#).unwrap();
        assert!(matches!(r.notify_command, Some(None)));
        assert!(r.credentials.is_none());
        let r: SetRequest =
            serde_json::from_str(r#"{"credentials": {"scheme": "bearer", "token": "t"}}"#).unwrap();
        assert!(matches!(
            r.credentials,
            Some(Some(CredentialsRequest::Bearer { .. }))
        ));
        assert!(serde_json::from_str::<SetRequest>(r#"{"colour": 1}"#).is_err());
    }
}
