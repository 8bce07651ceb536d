//! The host's own types for what crosses the plugin boundary.
//!
//! The generated bindings are an implementation detail of the runtime; the
//! job engine, the store and the API speak these serialisable types instead,
//! and the conversions live here, next to them.

use crate::error::{ErrorClass, ErrorContext, TransferError};
use crate::plugin::bindings::ferry::transfer::types as wit;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What proves a remote resource unchanged: a strong ETag, else Last-Modified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validator {
    Etag(String),
    LastModified(String),
}

/// What a server says about a remote resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInfo {
    pub size: Option<u64>,
    pub validator: Option<Validator>,
    pub accepts_ranges: bool,
    /// The URL after redirects.
    pub location: String,
}

/// One download call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequest {
    pub url: String,
    pub offset: u64,
    pub end: Option<u64>,
    pub validator: Option<Validator>,
}

/// One upload call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub url: String,
    pub size: u64,
    pub session: Option<String>,
    pub want_reply: bool,
}

/// The server's answer to a finished upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "crate::store::base64_bytes")]
    pub body: Vec<u8>,
}

/// Credentials the job's owner attached to a job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer { token: String },
}

impl std::fmt::Debug for Credentials {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Credentials::Bearer { .. } => write!(f, "Bearer(***)"),
        }
    }
}

/// What a plugin may know of the job a call works for, plus the host's
/// handle to stop the call.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    pub headers: Vec<(String, String)>,
    pub credentials: Option<Credentials>,
    pub max_redirects: u32,
    /// Cancelling it makes `is-cancelled` true and stops the call by force
    /// if the plugin does not return.
    pub cancel: CancellationToken,
}

impl JobContext {
    pub fn new(job_id: &str) -> JobContext {
        JobContext {
            job_id: job_id.to_string(),
            headers: Vec::new(),
            credentials: None,
            max_redirects: 10,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a transport implements, as the component itself reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub download: bool,
    pub upload: bool,
    pub upload_reply: bool,
    pub ranges: bool,
}

impl From<wit::Capabilities> for Capabilities {
    fn from(c: wit::Capabilities) -> Self {
        Capabilities {
            download: c.contains(wit::Capabilities::DOWNLOAD),
            upload: c.contains(wit::Capabilities::UPLOAD),
            upload_reply: c.contains(wit::Capabilities::UPLOAD_REPLY),
            ranges: c.contains(wit::Capabilities::RANGES),
        }
    }
}

impl From<wit::Validator> for Validator {
    fn from(v: wit::Validator) -> Self {
        match v {
            wit::Validator::Etag(t) => Validator::Etag(t),
            wit::Validator::LastModified(d) => Validator::LastModified(d),
        }
    }
}

impl From<Validator> for wit::Validator {
    fn from(v: Validator) -> Self {
        match v {
            Validator::Etag(t) => wit::Validator::Etag(t),
            Validator::LastModified(d) => wit::Validator::LastModified(d),
        }
    }
}

impl From<wit::RemoteInfo> for RemoteInfo {
    fn from(r: wit::RemoteInfo) -> Self {
        RemoteInfo {
            size: r.size,
            validator: r.validator.map(Into::into),
            accepts_ranges: r.accepts_ranges,
            location: r.location,
        }
    }
}

impl From<DownloadRequest> for wit::DownloadRequest {
    fn from(r: DownloadRequest) -> Self {
        wit::DownloadRequest {
            url: r.url,
            offset: r.offset,
            end: r.end,
            validator: r.validator.map(Into::into),
        }
    }
}

impl From<UploadRequest> for wit::UploadRequest {
    fn from(r: UploadRequest) -> Self {
        wit::UploadRequest {
            url: r.url,
            size: r.size,
            session: r.session,
            want_reply: r.want_reply,
        }
    }
}

impl From<wit::UploadReply> for UploadReply {
    fn from(r: wit::UploadReply) -> Self {
        UploadReply {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }
    }
}

impl From<UploadReply> for wit::UploadReply {
    fn from(r: UploadReply) -> Self {
        wit::UploadReply {
            status: r.status,
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| wit::Header { name, value })
                .collect(),
            body: r.body,
        }
    }
}

impl From<&Credentials> for wit::Credentials {
    fn from(c: &Credentials) -> Self {
        match c {
            Credentials::Basic { user, password } => {
                wit::Credentials::Basic(wit::BasicCredentials {
                    user: user.clone(),
                    password: password.clone(),
                })
            }
            Credentials::Bearer { token } => wit::Credentials::Bearer(token.clone()),
        }
    }
}

impl From<wit::TransferError> for TransferError {
    fn from(e: wit::TransferError) -> Self {
        TransferError {
            class: match e.class {
                wit::ErrorClass::Transient => ErrorClass::Transient,
                wit::ErrorClass::Fatal => ErrorClass::Fatal,
            },
            context: match e.context {
                wit::ErrorContext::LocalFile => ErrorContext::LocalFile,
                wit::ErrorContext::RemoteFile => ErrorContext::RemoteFile,
                wit::ErrorContext::RemoteApplication => ErrorContext::RemoteApplication,
                wit::ErrorContext::Transport => ErrorContext::Transport,
                wit::ErrorContext::Plugin => ErrorContext::Plugin,
                wit::ErrorContext::Policy => ErrorContext::Policy,
            },
            code: e.code,
            http_status: e.http_status,
            message: e.message,
        }
    }
}

impl From<TransferError> for wit::TransferError {
    fn from(e: TransferError) -> Self {
        wit::TransferError {
            class: match e.class {
                ErrorClass::Transient => wit::ErrorClass::Transient,
                ErrorClass::Fatal => wit::ErrorClass::Fatal,
            },
            context: match e.context {
                ErrorContext::LocalFile => wit::ErrorContext::LocalFile,
                ErrorContext::RemoteFile => wit::ErrorContext::RemoteFile,
                ErrorContext::RemoteApplication => wit::ErrorContext::RemoteApplication,
                ErrorContext::Transport => wit::ErrorContext::Transport,
                ErrorContext::Plugin => wit::ErrorContext::Plugin,
                ErrorContext::Policy => wit::ErrorContext::Policy,
            },
            code: e.code,
            http_status: e.http_status,
            message: e.message,
        }
    }
}
