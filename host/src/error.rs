//! The typed error every failed transfer ends in (SPEC §2, "Errors").
//!
//! Plugins report failures in the WIT's `transfer-error`; the host adds its
//! own (a plugin that trapped, a host not granted, a local file that cannot be
//! written). All of them become this one type, so the job engine, the API and
//! the CLI show the same class, context, stable code and message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether retrying later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    Transient,
    Fatal,
}

/// Where a failure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorContext {
    LocalFile,
    RemoteFile,
    RemoteApplication,
    Transport,
    Plugin,
    Policy,
}

/// A typed transfer failure: class, context, stable code, HTTP status where
/// there is one, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct TransferError {
    pub class: ErrorClass,
    pub context: ErrorContext,
    /// Stable, kebab-case; programs match on it.
    pub code: String,
    pub http_status: Option<u16>,
    pub message: String,
}

impl TransferError {
    pub fn new(
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

    pub fn transient(context: ErrorContext, code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, context, code, message)
    }

    pub fn fatal(context: ErrorContext, code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Fatal, context, code, message)
    }

    /// A plugin misbehaved (trap, deadline, memory): transient, as the SPEC says.
    pub fn plugin(code: &str, message: impl Into<String>) -> Self {
        Self::transient(ErrorContext::Plugin, code, message)
    }

    /// A local file could not be read or written.
    pub fn local_file(code: &str, err: &std::io::Error, what: &str) -> Self {
        let class = match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::Interrupted => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Fatal,
        };
        Self::new(
            class,
            ErrorContext::LocalFile,
            code,
            format!("{what}: {err}"),
        )
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(status) = self.http_status {
            write!(f, " (HTTP {status})")?;
        }
        Ok(())
    }
}

/// The stable codes a plugin's typed `error-code` maps to, and the ones the
/// host acts on (a free-form plugin code can never be one of those).
pub mod code {
    pub const RESOURCE_CHANGED: &str = "resource-changed";
    pub const RANGE_MISMATCH: &str = "range-mismatch";
    pub const LENGTH_MISMATCH: &str = "length-mismatch";
    pub const CONNECTION_DROPPED: &str = "connection-dropped";
    pub const SESSION_EXPIRED: &str = "session-expired";
    pub const CANCELLED: &str = "cancelled";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const HOST_NOT_GRANTED: &str = "host-not-granted";
    pub const HTTP_STATUS: &str = "http-status";
    /// A free-form plugin code the host could not keep as it was.
    pub const PLUGIN_ERROR: &str = "plugin-error";

    /// The codes with a fixed meaning: only the contract's typed cases (or
    /// the host itself) produce them.
    pub const ACTED_ON: &[&str] = &[
        RESOURCE_CHANGED,
        RANGE_MISMATCH,
        LENGTH_MISMATCH,
        CONNECTION_DROPPED,
        SESSION_EXPIRED,
        CANCELLED,
        UNSUPPORTED,
        HOST_NOT_GRANTED,
        HTTP_STATUS,
        PLUGIN_ERROR,
        "reply-too-large",
        "local-file-changed",
        "plugin-trap",
        "plugin-deadline",
        "plugin-memory",
    ];
}
