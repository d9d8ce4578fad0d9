//! Store operations the server offers through Ollama's API (pull, copy,
//! delete). The binary implements them over the model store and puller;
//! this crate knows neither.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

/// Why a store operation failed.
#[derive(Debug, Clone)]
pub enum AdminError {
    /// No such model.
    NotFound(String),
    /// A bad name, or a destination that exists.
    Invalid(String),
    /// The operation itself failed (network, disk, digest).
    Failed(String),
}

/// One step of a pull, in Ollama's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullUpdate {
    pub status: String,
    /// `sha256:...` of the blob being fetched.
    pub digest: Option<String>,
    pub total: Option<u64>,
    pub completed: Option<u64>,
}

/// A pull in progress; resolves when it ends.
pub type Pulling = Pin<Box<dyn Future<Output = Result<(), AdminError>> + Send>>;

/// What the server may do to the model store.
pub trait ModelAdmin: Send + Sync {
    /// Copy `from` to the new name `to` (blobs are shared).
    fn copy(&self, from: &str, to: &str) -> Result<(), AdminError>;
    /// Remove `name` from the writable store.
    fn delete(&self, name: &str) -> Result<(), AdminError>;
    /// Fetch `name` into the store, reporting progress on `updates`.
    fn pull(
        &self,
        name: &str,
        insecure: bool,
        updates: mpsc::UnboundedSender<PullUpdate>,
    ) -> Pulling;
}
