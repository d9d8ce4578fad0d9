//! The catalog seam: names to files, and what the store offers.

use std::path::PathBuf;
use std::time::Duration;

use crate::HostError;

/// Resolves model names to files and lists what can be served. Both calls
/// may block on a slow disk or a network store; the host runs them on a
/// blocking thread with a time limit.
pub trait Catalog: Send + Sync {
    /// The file behind a name.
    fn resolve(&self, name: &str) -> Result<Resolution, CatalogError>;
    /// Every servable model name.
    fn list(&self) -> Result<Vec<String>, CatalogError>;
}

/// What the catalog knows of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Ready to load from this file.
    Ready(PathBuf),
    /// No such model.
    Missing,
    /// Not yet available, but on its way (being pulled); the text says how far.
    Preparing(String),
}

/// Why the catalog could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The store could not be read now (a slow or absent mount); retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// Getting the model failed for good (its pull failed); retrying will not help.
    #[error("{0}")]
    Failed(String),
}

/// How long a catalog call may take before the request gets a 503.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Run a catalog call on a blocking thread, giving up after [`CATALOG_TIMEOUT`]
/// so a hung network store cannot hang the server.
pub(crate) async fn bounded<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, HostError> {
    let task = tokio::task::spawn_blocking(call);
    match tokio::time::timeout(CATALOG_TIMEOUT, task).await {
        Ok(Ok(result)) => result.map_err(|error| match error {
            CatalogError::Unavailable(text) => HostError::StoreUnavailable(text),
            CatalogError::Failed(text) => HostError::PullFailed(text),
        }),
        Ok(Err(join)) => Err(HostError::StoreUnavailable(join.to_string())),
        Err(_) => Err(HostError::StoreUnavailable(format!(
            "the model store did not answer within {} s",
            CATALOG_TIMEOUT.as_secs()
        ))),
    }
}
