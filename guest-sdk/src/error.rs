//! Typed errors: a constructor for each code the host acts on, free-form
//! `other` codes kept kebab-case, and the SPEC's mapping of HTTP statuses, so
//! that every plugin classifies the same failure the same way.

use crate::{ErrorClass, ErrorCode, ErrorContext, TransferError};
use std::fmt;

/// The longest `other` code the contract allows.
const MAX_OTHER_CODE: usize = 64;

impl TransferError {
    /// A failure that retrying later may cure.
    pub fn transient(context: ErrorContext, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, context, code, message)
    }

    /// A failure that retrying will not cure until something changes.
    pub fn fatal(context: ErrorContext, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Fatal, context, code, message)
    }

    /// A failure of the given class, context and code.
    pub fn new(
        class: ErrorClass,
        context: ErrorContext,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        TransferError {
            class,
            context,
            code,
            http_status: None,
            message: message.into(),
        }
    }

    /// A failure with a free-form code ([`ErrorCode::other`]), shown to
    /// people and programs; the host acts on its class alone.
    pub fn other(
        class: ErrorClass,
        context: ErrorContext,
        code: &str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(class, context, ErrorCode::other(code), message)
    }

    /// The error for an HTTP status that ends a call, classified as the SPEC
    /// says: 4xx are fatal except 408, 409, 425 and 429; 5xx are transient
    /// except 501 and 505; any other unexpected status is fatal. 404, 410 and
    /// 416 concern the remote file, the others the remote application.
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
            code: ErrorCode::HttpStatus,
            http_status: Some(status),
            message: format!("the server answered {status} for {url}"),
        }
    }

    /// `resource-changed` (transient, remote file): the resource's validator
    /// no longer matches; the host starts that file over from zero.
    pub fn resource_changed(message: impl Into<String>) -> Self {
        Self::transient(
            ErrorContext::RemoteFile,
            ErrorCode::ResourceChanged,
            message,
        )
    }

    /// `range-mismatch` (fatal, remote file): the server answered with
    /// another byte range than the one asked for.
    pub fn range_mismatch(message: impl Into<String>) -> Self {
        Self::fatal(ErrorContext::RemoteFile, ErrorCode::RangeMismatch, message)
    }

    /// `length-mismatch` (transient, transport): a body was shorter or longer
    /// than the server declared; the host keeps the bytes that fit.
    pub fn length_mismatch(message: impl Into<String>) -> Self {
        Self::transient(ErrorContext::Transport, ErrorCode::LengthMismatch, message)
    }

    /// `connection-dropped` (transient, transport): the connection broke off
    /// before the response was whole; the host asks again from there.
    pub fn connection_dropped(message: impl Into<String>) -> Self {
        Self::transient(
            ErrorContext::Transport,
            ErrorCode::ConnectionDropped,
            message,
        )
    }

    /// `session-expired` (transient, remote application): the recorded upload
    /// session is no longer known to the server; the host forgets it and
    /// starts over with a new one.
    pub fn session_expired(message: impl Into<String>) -> Self {
        Self::transient(
            ErrorContext::RemoteApplication,
            ErrorCode::SessionExpired,
            message,
        )
    }

    /// `cancelled` (transient, plugin): the plugin stopped because the host
    /// asked ([`crate::is_cancelled`]).
    pub fn cancelled() -> Self {
        Self::transient(
            ErrorContext::Plugin,
            ErrorCode::Cancelled,
            "the host cancelled the call",
        )
    }

    /// `unsupported` (fatal, plugin): the plugin cannot do what the call asks.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::fatal(ErrorContext::Plugin, ErrorCode::Unsupported, message)
    }

    /// `host-not-granted` (fatal, policy): the host's network policy refused
    /// a request. The host replaces the message with its own.
    pub fn host_not_granted(message: impl Into<String>) -> Self {
        Self::fatal(ErrorContext::Policy, ErrorCode::HostNotGranted, message)
    }

    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self.class, ErrorClass::Transient)
    }
}

impl ErrorCode {
    /// An `other` code: shown to people and programs, never acted on.
    ///
    /// The contract wants kebab-case of at most 64 characters (`dns-failed`,
    /// `too-many-redirects`). A valid code is kept as it is; anything else is
    /// made valid: lower-cased, every run of other characters turned into one
    /// `-`, trimmed of leading and trailing `-`, cut to 64 characters, and
    /// `unknown` when nothing is left.
    pub fn other(code: &str) -> ErrorCode {
        if is_valid_other_code(code) {
            return ErrorCode::Other(code.to_string());
        }
        let mut kebab = String::with_capacity(code.len());
        for c in code.chars() {
            if c.is_ascii_alphanumeric() {
                kebab.push(c.to_ascii_lowercase());
            } else if !kebab.is_empty() && !kebab.ends_with('-') {
                kebab.push('-');
            }
        }
        kebab.truncate(MAX_OTHER_CODE);
        let kebab = kebab.trim_end_matches('-');
        ErrorCode::Other(if kebab.is_empty() {
            "unknown".to_string()
        } else {
            kebab.to_string()
        })
    }
}

/// Whether `code` is a valid `other` code: 1 to 64 characters of lower-case
/// ASCII letters and digits in words joined by single `-`.
pub fn is_valid_other_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_OTHER_CODE
        && code.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The SPEC's status classes: 4xx fatal but 408, 409, 425, 429; 5xx transient
/// but 501, 505. Any other status is not transient.
pub fn http_status_is_transient(status: u16) -> bool {
    match status {
        408 | 409 | 425 | 429 => true,
        400..=499 => false,
        501 | 505 => false,
        500..=599 => true,
        _ => false,
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::ResourceChanged => "resource-changed",
            ErrorCode::RangeMismatch => "range-mismatch",
            ErrorCode::LengthMismatch => "length-mismatch",
            ErrorCode::ConnectionDropped => "connection-dropped",
            ErrorCode::SessionExpired => "session-expired",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::HostNotGranted => "host-not-granted",
            ErrorCode::HttpStatus => "http-status",
            ErrorCode::Other(code) => code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        for status in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert!(http_status_is_transient(status), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 416, 499, 501, 505, 200, 304] {
            assert!(!http_status_is_transient(status), "{status}");
        }
        let error = TransferError::from_http_status(404, "http://x/");
        assert!(matches!(error.code, ErrorCode::HttpStatus));
        assert_eq!(error.http_status, Some(404));
        assert_eq!(error.context, ErrorContext::RemoteFile);
        assert!(!error.is_transient());
        let error = TransferError::from_http_status(503, "http://x/");
        assert_eq!(error.context, ErrorContext::RemoteApplication);
        assert!(error.is_transient());
    }

    #[test]
    fn other_codes_are_kebab_case() {
        assert!(is_valid_other_code("dns-failed"));
        assert!(is_valid_other_code("tls1-3"));
        for bad in ["", "-a", "a-", "a--b", "DNS", "a_b", "a b", &"a".repeat(65)] {
            assert!(!is_valid_other_code(bad), "{bad:?}");
        }
        assert_eq!(ErrorCode::other("dns-failed").to_string(), "dns-failed");
        assert_eq!(
            ErrorCode::other("  Too Many__Redirects! ").to_string(),
            "too-many-redirects"
        );
        assert_eq!(ErrorCode::other("!!").to_string(), "unknown");
        let ErrorCode::Other(long) = ErrorCode::other(&"ab-".repeat(40)) else {
            unreachable!()
        };
        assert!(is_valid_other_code(&long), "{long}");
    }
}
