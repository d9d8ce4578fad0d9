//! Resolving a MODEL argument, and the catalog the server serves from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context};
use shelf_pull::{Progress, PullOptions};
use shelf_scheduler::{Catalog, CatalogError, Resolution};
use shelf_store::{Layers, ModelName};

/// Whether a MODEL argument names a file rather than a store entry: it
/// exists, or is written as a path (`./x`, `/x`, `x.gguf`). `hf.co/…/F.gguf`
/// is a name.
pub fn looks_like_path(model: &str) -> bool {
    let is_hf = model.starts_with("hf.co/") || model.starts_with("huggingface.co/");
    Path::new(model).exists()
        || model.starts_with(['.', '/', '~'])
        || (model.ends_with(".gguf") && !is_hf)
}

/// The file behind a MODEL argument: a path as given, or a store name.
pub fn resolve(layers: &Layers, model: &str) -> anyhow::Result<PathBuf> {
    if looks_like_path(model) {
        let path = PathBuf::from(model);
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
        return Ok(path);
    }
    let name = ModelName::parse(model)?;
    match layers.get(&name).context("reading the model store")? {
        Some(entry) => Ok(layers.model_path(&entry)?),
        None => bail!(
            "model '{name}' is not in the store at {}; `shelf pull {model}` downloads it, `shelf import FILE` adds a GGUF",
            roots(layers)
        ),
    }
}

fn roots(layers: &Layers) -> String {
    layers
        .stores()
        .map(|s| s.root().display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store layers, plus files named on the command line.
pub struct StoreCatalog {
    pub layers: Layers,
    /// (name, path) pairs served besides the store's models.
    pub files: Vec<(String, PathBuf)>,
    /// Set when requests may pull missing models.
    pub puller: Option<Puller>,
}

impl Catalog for StoreCatalog {
    fn resolve(&self, name: &str) -> Result<Resolution, CatalogError> {
        if let Some((_, path)) = self.files.iter().find(|(n, _)| n == name) {
            return Ok(Resolution::Ready(path.clone()));
        }
        let Ok(parsed) = ModelName::parse(name) else {
            return Ok(Resolution::Missing);
        };
        let unavailable = |e: shelf_store::StoreError| CatalogError::Unavailable(e.to_string());
        let found = self.layers.get(&parsed).map_err(unavailable)?;
        match (found, &self.puller) {
            (Some(entry), _) => self
                .layers
                .model_path(&entry)
                .map(Resolution::Ready)
                .map_err(unavailable),
            (None, Some(puller)) => puller.status_or_start(&self.layers, parsed),
            (None, None) => Ok(Resolution::Missing),
        }
    }

    fn list(&self) -> Result<Vec<String>, CatalogError> {
        let mut names: Vec<String> = self.files.iter().map(|(n, _)| n.clone()).collect();
        let listing = self.layers.list();
        for problem in &listing.problems {
            tracing::warn!(%problem, "part of the model store could not be read");
        }
        names.extend(listing.entries.into_iter().map(|e| e.name.to_string()));
        Ok(names)
    }
}

/// Pulls started by requests, one per model, in the background.
pub struct Puller {
    pub options: PullOptions,
    pub runtime: tokio::runtime::Handle,
    pulls: Mutex<HashMap<String, Arc<ServerPull>>>,
}

impl Puller {
    pub fn new(options: PullOptions, runtime: tokio::runtime::Handle) -> Self {
        Self {
            options,
            runtime,
            pulls: Mutex::default(),
        }
    }

    /// How far the pull of `name` is, starting it if none is running. A
    /// failed pull is reported once; the next request starts a new one.
    fn status_or_start(
        &self,
        layers: &Layers,
        name: ModelName,
    ) -> Result<Resolution, CatalogError> {
        let key = name.to_string();
        let mut pulls = self.pulls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pull) = pulls.get(&key).cloned() {
            let outcome = pull
                .outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return match outcome {
                None => Ok(Resolution::Preparing(pull.status(&key))),
                // Reported once, as final: the next request starts afresh.
                Some(Err(error)) => {
                    pulls.remove(&key);
                    Err(CatalogError::Failed(format!(
                        "pulling {key} failed: {error}"
                    )))
                }
                // Finished between the store lookup and now.
                Some(Ok(())) => {
                    pulls.remove(&key);
                    Ok(Resolution::Preparing(format!("{key} is pulled; retry")))
                }
            };
        }
        let pull = Arc::new(ServerPull::default());
        pulls.insert(key.clone(), pull.clone());
        let store = layers.local().clone();
        let options = self.options.clone();
        self.runtime.spawn(async move {
            tracing::info!(model = %name, "pulling a requested model");
            let result = shelf_pull::pull(&store, &name, &options, pull.clone()).await;
            if let Err(error) = &result {
                tracing::warn!(model = %name, %error, "pull failed");
            }
            *pull.outcome.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(result.map(drop).map_err(|e| e.to_string()));
        });
        Ok(Resolution::Preparing(format!(
            "pulling {key}; retry shortly"
        )))
    }
}

/// Progress of one server-side pull, as request errors report it.
#[derive(Default)]
struct ServerPull {
    total: AtomicU64,
    done: AtomicU64,
    outcome: Mutex<Option<Result<(), String>>>,
}

impl ServerPull {
    fn status(&self, name: &str) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        if total == 0 {
            return format!("pulling {name}; retry shortly");
        }
        format!(
            "pulling {name}: {}% of {}; retry shortly",
            done * 100 / total,
            crate::store_cmds::human_bytes(total)
        )
    }
}

impl Progress for ServerPull {
    fn blob_started(&self, _: &str, total: u64, done: u64) {
        self.total.fetch_add(total, Ordering::Relaxed);
        self.done.fetch_add(done, Ordering::Relaxed);
    }
    fn advanced(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn blob_finished(&self, _: &str) {}
    fn message(&self, _: &str) {}
}

/// The name a file is served under: its file name without `.gguf`.
pub fn file_model_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| "model".into())
}
