//! The error every layer speaks: a stable code, a message a user can act on, the offending field.

use serde::Serialize;

/// What kind of rejection this is; the API maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed or out-of-range input (400).
    Invalid,
    /// The thing named does not exist (404).
    NotFound,
    /// The request clashes with current state (409).
    Conflict,
    /// A quota or count limit would be exceeded (422).
    Limit,
}

/// A rejected request. Nothing has been changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub kind: ErrorKind,
    /// Stable machine-readable code, e.g. `invalid_name`.
    pub code: &'static str,
    pub message: String,
    /// The input field at fault, e.g. `service` or `traffic.split`.
    pub field: Option<String>,
}

impl ModelError {
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn not_found(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn conflict(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorKind::Conflict,
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn limit(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Limit,
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}
