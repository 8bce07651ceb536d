//! The host's own types for what crosses the plugin boundary.
//!
//! The generated bindings are an implementation detail of the runtime; the
//! job engine, the store and the API speak these serialisable types instead.
//! The conversions to and from the current contract (`ferry:transfer@0.2.0`)
//! live here, next to them; those of the frozen 0.1 contract live in
//! `legacy`.

use crate::error::{ErrorClass, ErrorContext, TransferError, code};
use crate::plugin::bindings::v0_2::ferry::transfer::types as wit;
use crate::plugin::network::NetworkConfig;
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
    /// The SHA-256 (hex) of the whole resource, as the server declared it
    /// in the response the body came with (`Repr-Digest`, or an RFC 3230
    /// `Digest` on a 200). The host reads it off the response itself: a
    /// plugin cannot set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_sha256: Option<String>,
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
    /// The source's file name, for protocols that send one.
    pub name: String,
    pub session: Option<String>,
    /// The owner's choice of protocol, for schemes that have several.
    pub protocol: Option<String>,
}

/// The status and headers of a server's reply to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// The server's answer to a finished upload, as the job keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The reply body when it is at most 1 MiB; empty for a larger reply,
    /// which only the job's reply file holds.
    #[serde(with = "crate::store::base64_bytes")]
    pub body: Vec<u8>,
    /// The size of the whole reply body in bytes.
    #[serde(default)]
    pub size: u64,
}

/// What a reply processor may know of the upload whose reply it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    pub job_id: String,
    pub url: String,
    pub source_size: u64,
    /// SHA-256 of the whole source, when the host read all of it.
    pub source_sha256: Option<Vec<u8>>,
    /// The owner's options for the processor, in order.
    pub options: Vec<(String, String)>,
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

    /// The WIT view of the job, with the operator's network settings.
    pub(crate) fn to_wit(&self, network: &NetworkConfig) -> wit::JobContext {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        wit::JobContext {
            job_id: self.job_id.clone(),
            headers: self.headers.iter().map(header).collect(),
            credentials: self.credentials.as_ref().map(Into::into),
            network: wit::NetworkSettings {
                max_redirects: self.max_redirects,
                connect_timeout_ms: millis(network.connect_timeout),
                first_byte_timeout_ms: millis(network.first_byte_timeout),
                between_bytes_timeout_ms: millis(network.read_timeout),
            },
        }
    }
}

fn header((name, value): &(String, String)) -> wit::Header {
    wit::Header {
        name: name.clone(),
        value: value.clone(),
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
            served_sha256: None,
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
            name: r.name,
            session: r.session,
            protocol: r.protocol,
        }
    }
}

impl From<wit::ReplyHead> for ReplyHead {
    fn from(h: wit::ReplyHead) -> Self {
        ReplyHead {
            status: h.status,
            headers: h.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        }
    }
}

impl From<&ReplyHead> for wit::ReplyHead {
    fn from(h: &ReplyHead) -> Self {
        wit::ReplyHead {
            status: h.status,
            headers: h.headers.iter().map(header).collect(),
        }
    }
}

impl From<ReplyContext> for wit::ReplyContext {
    fn from(c: ReplyContext) -> Self {
        wit::ReplyContext {
            job_id: c.job_id,
            url: c.url,
            source_size: c.source_size,
            source_digests: c
                .source_sha256
                .map(|value| wit::Digest {
                    algorithm: "sha-256".into(),
                    value,
                })
                .into_iter()
                .collect(),
            options: c.options,
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

/// The most characters of a plugin's error message the host keeps.
const MAX_MESSAGE: usize = 1024;
/// The longest free-form code the host keeps.
const MAX_CODE: usize = 64;

/// The host's stable code for a plugin's typed code. A free-form code is
/// kept only when it is kebab-case, short, and not one of the codes the host
/// acts on: a plugin cannot trigger a host reaction with a string.
fn code_of(code: wit::ErrorCode) -> String {
    use wit::ErrorCode as C;
    let fixed = match code {
        C::ResourceChanged => code::RESOURCE_CHANGED,
        C::RangeMismatch => code::RANGE_MISMATCH,
        C::LengthMismatch => code::LENGTH_MISMATCH,
        C::ConnectionDropped => code::CONNECTION_DROPPED,
        C::SessionExpired => code::SESSION_EXPIRED,
        C::Cancelled => code::CANCELLED,
        C::Unsupported => code::UNSUPPORTED,
        C::HostNotGranted => code::HOST_NOT_GRANTED,
        C::HttpStatus => code::HTTP_STATUS,
        C::Other(free) => {
            let kebab = !free.is_empty()
                && free.len() <= MAX_CODE
                && free
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            return if kebab && !code::ACTED_ON.contains(&free.as_str()) {
                free
            } else {
                code::PLUGIN_ERROR.to_string()
            };
        }
    };
    fixed.to_string()
}

/// The longest validator (ETag, Last-Modified) the host records; a longer
/// one, or one with control characters, is not recorded at all.
pub const MAX_VALIDATOR: usize = 1024;
/// The longest location or upload session the host keeps.
pub const MAX_URL: usize = 8 * 1024;
/// The most reply headers the host keeps, and the longest name and value.
pub const MAX_REPLY_HEADERS: usize = 100;
pub const MAX_HEADER_NAME: usize = 256;
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// `text` without control characters (each becomes a space), cut to at
/// most `max` bytes on a character boundary.
pub(crate) fn clean_field(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether a plugin-chosen token may be kept as it is: short enough and
/// free of control characters.
pub(crate) fn is_clean_token(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

impl RemoteInfo {
    /// What a plugin said, made safe to store, broadcast and log: a
    /// validator that is too long or holds control characters is dropped
    /// (the host then knows no validator, and a resume starts over), the
    /// location is cleaned and cut to [`MAX_URL`].
    pub(crate) fn sanitized(self) -> RemoteInfo {
        let validator = self.validator.filter(|v| match v {
            Validator::Etag(t) | Validator::LastModified(t) => is_clean_token(t, MAX_VALIDATOR),
        });
        RemoteInfo {
            validator,
            location: clean_field(&self.location, MAX_URL),
            ..self
        }
    }
}

impl ReplyHead {
    /// A plugin's reply head, made safe to store and hand to the owner: at
    /// most [`MAX_REPLY_HEADERS`] headers, names and values cleaned and cut.
    pub(crate) fn sanitized(self) -> ReplyHead {
        ReplyHead {
            status: self.status,
            headers: self
                .headers
                .into_iter()
                .take(MAX_REPLY_HEADERS)
                .map(|(n, v)| {
                    (
                        clean_field(&n, MAX_HEADER_NAME),
                        clean_field(&v, MAX_HEADER_VALUE),
                    )
                })
                .collect(),
        }
    }
}

/// A plugin's message, cut to a line of at most [`MAX_MESSAGE`] characters.
pub(crate) fn clean_message(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect()
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
            code: code_of(e.code),
            http_status: e.http_status,
            message: clean_message(&e.message),
        }
    }
}

impl From<TransferError> for wit::TransferError {
    fn from(e: TransferError) -> Self {
        use wit::ErrorCode as C;
        let typed = match e.code.as_str() {
            code::RESOURCE_CHANGED => C::ResourceChanged,
            code::RANGE_MISMATCH => C::RangeMismatch,
            code::LENGTH_MISMATCH => C::LengthMismatch,
            code::CONNECTION_DROPPED => C::ConnectionDropped,
            code::SESSION_EXPIRED => C::SessionExpired,
            code::CANCELLED => C::Cancelled,
            code::UNSUPPORTED => C::Unsupported,
            code::HOST_NOT_GRANTED => C::HostNotGranted,
            code::HTTP_STATUS => C::HttpStatus,
            other => C::Other(other.to_string()),
        };
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
            code: typed,
            http_status: e.http_status,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin_error(code: wit::ErrorCode) -> TransferError {
        TransferError::from(wit::TransferError {
            class: wit::ErrorClass::Transient,
            context: wit::ErrorContext::Transport,
            code,
            http_status: None,
            message: "line one\nline two".into(),
        })
    }

    #[test]
    fn plugin_chosen_fields_are_cut_and_cleaned() {
        let forged = "\"x\"\n\x1b[31mforged: header\r\n".repeat(1 << 12);
        let info = RemoteInfo {
            size: None,
            validator: Some(Validator::Etag(forged.clone())),
            accepts_ranges: true,
            location: forged.clone(),
            served_sha256: None,
        }
        .sanitized();
        assert_eq!(info.validator, None);
        assert!(info.location.len() <= MAX_URL);
        assert!(!info.location.chars().any(char::is_control));
        let head = ReplyHead {
            status: 200,
            headers: vec![(forged.clone(), forged); 1000],
        }
        .sanitized();
        assert_eq!(head.headers.len(), MAX_REPLY_HEADERS);
        let (name, value) = &head.headers[0];
        assert!(name.len() <= MAX_HEADER_NAME && value.len() <= MAX_HEADER_VALUE);
        assert!(!name.chars().chain(value.chars()).any(char::is_control));
        assert_eq!(clean_field("é", 1), "", "never cut inside a character");
    }

    #[test]
    fn typed_codes_become_the_hosts_stable_codes() {
        let e = plugin_error(wit::ErrorCode::ResourceChanged);
        assert_eq!(e.code, "resource-changed");
        assert_eq!(e.message, "line one line two");
        assert_eq!(
            plugin_error(wit::ErrorCode::SessionExpired).code,
            "session-expired"
        );
    }

    #[test]
    fn a_free_form_code_cannot_pose_as_one_the_host_acts_on() {
        assert_eq!(
            plugin_error(wit::ErrorCode::Other("too-many-redirects".into())).code,
            "too-many-redirects"
        );
        for fake in ["resource-changed", "session-expired", "Not Kebab", ""] {
            assert_eq!(
                plugin_error(wit::ErrorCode::Other(fake.into())).code,
                "plugin-error",
                "{fake:?}"
            );
        }
        let long = "a".repeat(65);
        assert_eq!(
            plugin_error(wit::ErrorCode::Other(long)).code,
            "plugin-error"
        );
    }
}
