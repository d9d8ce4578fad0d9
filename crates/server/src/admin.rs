//! Store operations the server offers through Ollama's API (pull, copy,
//! delete), and the planner's answer to "will it fit?" (`/api/fit`). The
//! binary implements them over the model store, puller and planner; this
//! crate knows none of them.

use std::future::Future;
use std::pin::Pin;

use axum::extract::State;
use axum::Json;
use tokio::sync::mpsc;

use crate::{AppError, AppState};

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
    /// The planner's estimates for the catalog's models on this box, as
    /// `shelf fit --json` gives them: `{"hardware": ..., "rows": [...]}`.
    fn fit(&self) -> Result<serde_json::Value, AdminError> {
        Err(AdminError::Failed("this server has no planner".into()))
    }
}

/// `GET /api/fit`: will each catalog model fit this box, and how fast.
pub async fn fit(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    let admin = state.admin.clone().ok_or(AppError::RouteNotFound)?;
    let rows = tokio::task::spawn_blocking(move || admin.fit())
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    rows.map(Json).map_err(|e| match e {
        AdminError::NotFound(what) | AdminError::Invalid(what) | AdminError::Failed(what) => {
            AppError::Internal(what)
        }
    })
}
