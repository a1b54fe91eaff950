//! Errors shared by every layer. A leaf module.

/// An error the user caused (bad input): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
