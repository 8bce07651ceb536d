//! Typed errors for plugins: constructors for each class and context, and the
//! SPEC's mapping from HTTP statuses, so that every plugin classifies the same
//! status the same way.

use crate::types::{ErrorClass, ErrorContext, TransferError};

impl TransferError {
    /// A failure that retrying later may cure.
    pub fn transient(context: ErrorContext, code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, context, code, message)
    }

    /// A failure that retrying will not cure.
    pub fn fatal(context: ErrorContext, code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Fatal, context, code, message)
    }

    fn new(
        class: ErrorClass,
        context: ErrorContext,
        code: &str,
        message: impl Into<String>,
    ) -> Self {
        TransferError {
            class,
            context,
            code: code.to_string(),
            http_status: None,
            message: message.into(),
        }
    }

    /// The error for an HTTP status that ends a transfer, classified as the
    /// SPEC says: 4xx are fatal except 408, 409, 425 and 429; 5xx are
    /// transient except 501 and 505. Anything else unexpected is fatal.
    pub fn from_http_status(status: u16, url: &str) -> Self {
        let class = if http_status_is_transient(status) {
            ErrorClass::Transient
        } else {
            ErrorClass::Fatal
        };
        let context = match status {
            404 | 410 | 416 => ErrorContext::RemoteFile,
            _ => ErrorContext::RemoteApplication,
        };
        TransferError {
            class,
            context,
            code: "http-status".to_string(),
            http_status: Some(status),
            message: format!("the server answered {status} for {url}"),
        }
    }

    /// Whether the error is worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(self.class, ErrorClass::Transient)
    }
}

/// The SPEC's status classes: 4xx fatal but 408, 409, 425, 429; 5xx transient
/// but 501, 505.
pub fn http_status_is_transient(status: u16) -> bool {
    match status {
        408 | 409 | 425 | 429 => true,
        400..=499 => false,
        501 | 505 => false,
        500..=599 => true,
        _ => false,
    }
}
