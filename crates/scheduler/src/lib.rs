//! Model residency: which models are loaded, within one memory budget, and
//! who gets their slots.
//!
//! A request [`ModelHost::acquire`]s a model by name and gets a [`Lease`]
//! on one of its slots: at once if one is free, else after the requests
//! queued before it (a bounded FIFO per model). A model that is not loaded
//! is resolved by the [`Catalog`], sized by the [`Sizer`] (the planner's
//! estimate for its slots) and admitted only when its bytes fit the budget,
//! after unloading least recently used idle models if needed. A model with
//! a running or queued request is never unloaded, and unloading never
//! blocks: it runs in its own task, and its bytes count against the budget
//! until the model has let them go. Idle models unload after the
//! keep-alive; pinned ones never do. A model whose runner dies is dropped,
//! and the next request for it loads it again.
//!
//! The host knows names, paths and byte counts, not files, GGUF or HTTP:
//! resolving, sizing and loading are seams the binary fills, so tests use
//! fakes and paused time.

mod catalog;
mod host;
mod status;

pub use catalog::{Catalog, CatalogError, Resolution, CATALOG_TIMEOUT};
pub use host::{Lease, ModelHost};
pub use status::{ModelCounts, ModelStatus};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shelf_engine::template::ChatTemplate;
use shelf_engine::{EngineError, LoadedModel};

/// What to load: the file, and how many slots to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    pub name: String,
    pub path: PathBuf,
    pub slots: u32,
}

/// Loads a model. Blocking: it is called on a blocking thread.
pub type Loader = dyn Fn(&LoadPlan) -> Result<Arc<dyn LoadedModel>, EngineError> + Send + Sync;

/// What a model costs in memory at the served context: a fixed part
/// (weights, compute buffers, runtime) and a part per slot (its KV cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCost {
    pub fixed: u64,
    pub per_slot: u64,
}

impl ModelCost {
    /// Bytes with `slots` slots.
    pub fn with_slots(&self, slots: u32) -> u64 {
        self.fixed
            .saturating_add(self.per_slot.saturating_mul(u64::from(slots)))
    }
}

/// Sizes a model file. Blocking: it reads the file's header.
pub type Sizer = dyn Fn(&Path) -> Result<ModelCost, String> + Send + Sync;

/// A loaded model, with what the server needs next to it.
pub struct Resident {
    /// The name it was requested by.
    pub name: String,
    pub model: Arc<dyn LoadedModel>,
    /// The model's chat template, parsed once.
    pub template: ChatTemplate,
}

/// When idle models are unloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// This long after their last request ends (zero: at once).
    After(Duration),
    /// Never.
    Forever,
}

/// Settings for the host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Bytes all loaded models may take together.
    pub budget: u64,
    /// Slots per model; `None` gives each model as many as fit the budget,
    /// up to [`HostConfig::AUTO_MAX_SLOTS`].
    pub slots: Option<u32>,
    pub keep_alive: KeepAlive,
    /// Requests that may wait for a model's slots; more get
    /// [`HostError::Overloaded`].
    pub max_queue: usize,
    /// Most models loaded at once, whatever their size.
    pub max_loaded: Option<usize>,
    /// Models that are never unloaded (but reloaded if their runner dies).
    pub pinned: Vec<String>,
}

impl HostConfig {
    /// The most slots a model gets when the number is left to the budget.
    pub const AUTO_MAX_SLOTS: u32 = 4;
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            budget: u64::MAX,
            slots: None,
            keep_alive: KeepAlive::After(Duration::from_secs(300)),
            max_queue: 64,
            max_loaded: None,
            pinned: Vec::new(),
        }
    }
}

/// Why a model could not be handed out.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("model '{0}' not found")]
    NotFound(String),
    /// Being pulled; the text says how far.
    #[error("{0}")]
    Preparing(String),
    /// The store could not be read now; retrying may help.
    #[error("the model store failed: {0}")]
    StoreUnavailable(String),
    /// Fetching the model failed for good; retrying will not help.
    #[error("{0}")]
    PullFailed(String),
    #[error(transparent)]
    Load(EngineError),
    /// The model's queue is full.
    #[error("model '{model}' has {queued} requests waiting, its limit")]
    Overloaded { model: String, queued: usize },
    /// The model needs more than the budget can ever give it.
    #[error("model '{model}' needs {needed} bytes with one slot; the memory budget has {available} bytes for it")]
    TooLarge {
        model: String,
        needed: u64,
        available: u64,
    },
    /// The model's runner died while the request waited, more than once.
    #[error("model '{model}' keeps failing: its runner process stopped: {how}")]
    Crashed { model: String, how: String },
}
