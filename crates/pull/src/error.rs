//! Why a pull failed, in words a user can act on.

use shelf_store::{NameError, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url}: {message}")]
    Connection { url: String, message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{what}: access denied (HTTP {status}); {hint}")]
    Unauthorized {
        what: String,
        status: u16,
        hint: &'static str,
    },
    #[error(
        "{what}: sha256 mismatch: expected {expected}, got {actual}; the download was discarded"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: the server sent {actual} bytes, expected {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "not enough disk space in {root}: the pull needs {needed} more bytes, {available} are free"
    )]
    NotEnoughSpace {
        root: String,
        needed: u64,
        available: u64,
    },
    #[error("{repo}: no GGUF file matches '{quant}'; the repository has: {}", available.join(", "))]
    NoMatch {
        repo: String,
        quant: String,
        available: Vec<String>,
    },
    #[error("{repo}: '{quant}' matches several files: {}; name one with hf.co/{repo}/FILE.gguf", candidates.join(", "))]
    Ambiguous {
        repo: String,
        quant: String,
        candidates: Vec<String>,
    },
    #[error("{url}: bad manifest: {reason}")]
    BadManifest { url: String, reason: String },
    #[error("{what}: not a usable GGUF: {reason}; the download was discarded")]
    NotGguf { what: String, reason: String },
    #[error("{url}: stalled for {secs} s, {attempts} times; try again later")]
    Stalled {
        url: String,
        secs: u64,
        attempts: u32,
    },
    #[error("{url}: the server ignored the Range header")]
    RangesIgnored { url: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl PullError {
    pub(crate) fn task(e: tokio::task::JoinError) -> Self {
        Self::Internal(e.to_string())
    }

    /// Whether trying the same request again may help.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Connection { .. } | Self::Stalled { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}
