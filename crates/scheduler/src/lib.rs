//! Model residency: which models are loaded, loading them on first use, and
//! evicting the least recently used when the limit is reached.
//!
//! The host knows names and paths, not files or HTTP: resolving a name is
//! the [`Catalog`]'s job and loading is the [`Loader`]'s, both injected by
//! the binary, so tests swap in fakes. Requests to one model run in order
//! because the engine's decode thread takes them one at a time; parallel
//! slots and a memory budget come with the planner.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use shelf_engine::template::ChatTemplate;
use shelf_engine::{EngineError, LoadedModel};
use std::time::Duration;

use tokio::sync::watch;

/// Resolves model names to files and lists what can be served. Both calls
/// may block on a slow disk or a network store; the host runs them on a
/// blocking thread with a time limit.
pub trait Catalog: Send + Sync {
    /// The file behind a name.
    fn resolve(&self, name: &str) -> Result<Resolution, String>;
    /// Every servable model name.
    fn list(&self) -> Result<Vec<String>, String>;
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

/// How long a catalog call may take before the request gets a 503.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads a model file. Blocking: it is called on a blocking thread.
pub type Loader =
    dyn Fn(&std::path::Path) -> Result<Arc<dyn LoadedModel>, EngineError> + Send + Sync;

/// A loaded model, with what the server needs next to it.
pub struct Resident {
    /// The name it was requested by.
    pub name: String,
    pub model: Arc<dyn LoadedModel>,
    /// The model's chat template, parsed once.
    pub template: ChatTemplate,
}

/// Why a model could not be handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("model '{0}' is loading; retry shortly")]
    Loading(String),
    #[error("{0}")]
    Preparing(String),
    #[error("the model store failed: {0}")]
    Catalog(String),
    #[error(transparent)]
    Load(EngineError),
}

/// Settings for the host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Most models resident at once; the least recently used is unloaded
    /// (once its last request finishes) to make room.
    pub max_loaded: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self { max_loaded: 1 }
    }
}

/// Set once a load ends: `Ok` when the slot is ready, the error otherwise.
type LoadOutcome = Option<Result<(), EngineError>>;

enum Slot {
    Loading,
    Ready {
        resident: Arc<Resident>,
        last_used: Instant,
    },
}

/// Owns the set of resident models.
pub struct ModelHost {
    catalog: Arc<dyn Catalog>,
    loader: Arc<Loader>,
    config: HostConfig,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl ModelHost {
    /// A host with nothing loaded.
    pub fn new(catalog: Arc<dyn Catalog>, loader: Arc<Loader>, config: HostConfig) -> Self {
        Self {
            catalog,
            loader,
            config,
            slots: Arc::default(),
        }
    }

    /// Model names the catalog offers.
    pub async fn list(&self) -> Result<Vec<String>, HostError> {
        let catalog = Arc::clone(&self.catalog);
        bounded(move || catalog.list()).await
    }

    /// Whether any model is loading now.
    pub fn is_loading(&self) -> bool {
        lock(&self.slots)
            .values()
            .any(|slot| matches!(slot, Slot::Loading))
    }

    /// The resident model for `name`, loading it if needed.
    ///
    /// The request that finds a model absent starts its load and waits for
    /// it. Others that arrive during that load get [`HostError::Loading`]
    /// (HTTP 503), so clients retry rather than pile up.
    pub async fn get(&self, name: &str) -> Result<Arc<Resident>, HostError> {
        if let Some(resident) = self.ready_or_loading(name)? {
            return Ok(resident);
        }
        let catalog = Arc::clone(&self.catalog);
        let wanted = name.to_string();
        let path = match bounded(move || catalog.resolve(&wanted)).await? {
            Resolution::Ready(path) => path,
            Resolution::Missing => return Err(HostError::NotFound(name.to_string())),
            Resolution::Preparing(status) => return Err(HostError::Preparing(status)),
        };
        let mut done = self.start_load(name, path)?;
        // The load runs in its own task: a client that gives up while
        // waiting does not leave the slot stuck in Loading.
        let _ = done.changed().await;
        let outcome = done.borrow().clone();
        match outcome {
            Some(Err(error)) => Err(HostError::Load(error)),
            _ => self
                .ready_or_loading(name)?
                .ok_or_else(|| HostError::Loading(name.to_string())),
        }
    }

    fn ready_or_loading(&self, name: &str) -> Result<Option<Arc<Resident>>, HostError> {
        let mut slots = lock(&self.slots);
        match slots.get_mut(name) {
            Some(Slot::Ready {
                resident,
                last_used,
            }) => {
                *last_used = Instant::now();
                Ok(Some(Arc::clone(resident)))
            }
            Some(Slot::Loading) => Err(HostError::Loading(name.to_string())),
            None => Ok(None),
        }
    }

    fn start_load(
        &self,
        name: &str,
        path: PathBuf,
    ) -> Result<watch::Receiver<LoadOutcome>, HostError> {
        let (tx, rx) = watch::channel(None);
        {
            let mut slots = lock(&self.slots);
            if slots.contains_key(name) {
                return Err(HostError::Loading(name.to_string()));
            }
            evict_for_one_more(&mut slots, self.config.max_loaded);
            slots.insert(name.to_string(), Slot::Loading);
        }
        let loader = Arc::clone(&self.loader);
        let slots = Arc::clone(&self.slots);
        let name = name.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let load_path = path.clone();
            let result = tokio::task::spawn_blocking(move || loader(&load_path))
                .await
                .unwrap_or_else(|e| {
                    Err(EngineError::Load {
                        path: path.clone(),
                        reason: format!("the loader panicked: {e}"),
                    })
                });
            let mut guard = lock(&slots);
            let outcome = match result {
                Ok(model) => {
                    tracing::info!(model = %name, secs = started.elapsed().as_secs_f64(), "model loaded");
                    let template = template_for(&name, model.as_ref());
                    let resident = Arc::new(Resident {
                        name: name.clone(),
                        model,
                        template,
                    });
                    guard.insert(
                        name,
                        Slot::Ready {
                            resident,
                            last_used: Instant::now(),
                        },
                    );
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(model = %name, %error, "model failed to load");
                    guard.remove(&name);
                    Err(error)
                }
            };
            drop(guard);
            let _ = tx.send(Some(outcome));
        });
        Ok(rx)
    }
}

/// Drop least recently used ready models until one more fits.
fn evict_for_one_more(slots: &mut HashMap<String, Slot>, max_loaded: usize) {
    while slots.len() >= max_loaded.max(1) {
        let oldest = slots
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Ready { last_used, .. } => Some((name.clone(), *last_used)),
                Slot::Loading => None,
            })
            .min_by_key(|(_, used)| *used);
        let Some((name, _)) = oldest else { break };
        tracing::info!(model = %name, "unloading to make room");
        slots.remove(&name);
    }
}

fn template_for(name: &str, model: &dyn LoadedModel) -> ChatTemplate {
    let info = model.info();
    let own = ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    );
    let template = match own {
        Ok(template) => template,
        Err(error) => {
            tracing::warn!(model = %name, %error, "the model's chat template does not parse; using ChatML");
            ChatTemplate::fallback(&info.bos_token, &info.eos_token)
        }
    };
    if template.is_fallback {
        tracing::warn!(model = %name, "the model has no chat template; chat prompts use ChatML");
    }
    template
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Run a catalog call on a blocking thread, giving up after [`CATALOG_TIMEOUT`]
/// so a hung network store cannot hang the server.
async fn bounded<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, HostError> {
    let task = tokio::task::spawn_blocking(call);
    match tokio::time::timeout(CATALOG_TIMEOUT, task).await {
        Ok(Ok(result)) => result.map_err(HostError::Catalog),
        Ok(Err(join)) => Err(HostError::Catalog(join.to_string())),
        Err(_) => Err(HostError::Catalog(format!(
            "the model store did not answer within {} s",
            CATALOG_TIMEOUT.as_secs()
        ))),
    }
}
