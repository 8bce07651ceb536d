//! The API's typed errors: every refusal carries its stable code, and the
//! code decides the HTTP status, in one table ([`status_for`]).

use crate::error::{ErrorClass, ErrorContext, TransferError};
use crate::job::JobRefusal;
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The body of every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiErrorView,
}

/// A refusal as the client sees it: the stable code and a message; for
/// transfer errors also their class, context and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorView {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ErrorContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

impl ApiErrorView {
    /// A refusal with only a code and a message.
    pub fn new(code: &str, message: impl Into<String>) -> ApiErrorView {
        ApiErrorView {
            code: code.to_string(),
            message: message.into(),
            class: None,
            context: None,
            http_status: None,
        }
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", view.code, view.message)]
pub struct ApiError {
    pub status: StatusCode,
    pub view: ApiErrorView,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_for(code),
            view: ApiErrorView::new(code, message),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> ApiError {
        ApiError::new("invalid-argument", message)
    }

    pub fn code(&self) -> &str {
        &self.view.code
    }
}

impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> ApiError {
        ApiError {
            status: status_for(&e.code),
            view: ApiErrorView {
                code: e.code,
                message: e.message,
                class: Some(e.class),
                context: Some(e.context),
                http_status: e.http_status,
            },
        }
    }
}

impl From<JobRefusal> for ApiError {
    fn from(r: JobRefusal) -> ApiError {
        match r {
            JobRefusal::Transfer(e) => e.into(),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

/// The HTTP status of each stable code. Job-count quotas are 429 (try again
/// once jobs finish); limits of one job are 409 (the job is full).
pub fn status_for(code: &str) -> StatusCode {
    match code {
        "not-found" | "no-such-route" => StatusCode::NOT_FOUND,
        "access-denied" | "permission-denied" => StatusCode::FORBIDDEN,
        "invalid-state" | "empty" | "too-many-files" | "too-many-ranges" => StatusCode::CONFLICT,
        "too-many-jobs-per-user" | "too-many-jobs-per-machine" => StatusCode::TOO_MANY_REQUESTS,
        "body-too-large" => StatusCode::PAYLOAD_TOO_LARGE,
        "method-not-allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "unsupported-media-type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "store-failed" | "internal" => StatusCode::INTERNAL_SERVER_ERROR,
        // `complete` could not move a file into place: the job is now in
        // `error` and can be completed again.
        "rename-failed" | "sync-failed" => StatusCode::INTERNAL_SERVER_ERROR,
        "shutting-down" => StatusCode::SERVICE_UNAVAILABLE,
        // invalid-argument, invalid-json, invalid-url, invalid-local-path,
        // unsupported-scheme, overlapping-ranges, cannot-open-file, ...
        _ => StatusCode::BAD_REQUEST,
    }
}
