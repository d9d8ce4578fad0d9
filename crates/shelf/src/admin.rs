//! The server's store operations (Ollama's pull, copy and delete) over the
//! model store and the puller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use shelf_pull::Progress;
use shelf_server::{AdminError, ModelAdmin, PullUpdate, Pulling};
use shelf_store::{Layers, ModelName};
use tokio::sync::mpsc::UnboundedSender;

/// Store operations on these layers (writes go to the local store), and
/// the planner for this box.
pub struct StoreAdmin {
    pub layers: Layers,
    /// `--threads` and `--ctx`, which the planner's estimates follow.
    pub threads: Option<u32>,
    pub ctx: Option<u32>,
}

impl StoreAdmin {
    /// An error's text for a remote client: the store's paths replaced, the
    /// whole text logged here.
    fn redact(&self, error: &dyn std::fmt::Display) -> String {
        let text = error.to_string();
        tracing::warn!(error = %text, "a model store operation failed");
        self.layers.stores().fold(text, |text, store| {
            text.replace(&store.root().display().to_string(), "<store>")
        })
    }
}

fn parse(name: &str) -> Result<ModelName, AdminError> {
    ModelName::parse(name).map_err(|e| AdminError::Invalid(e.to_string()))
}

impl ModelAdmin for StoreAdmin {
    fn copy(&self, from: &str, to: &str) -> Result<(), AdminError> {
        let source = parse(from)?;
        let destination = parse(to)?;
        let failed = |e: shelf_store::StoreError| AdminError::Failed(self.redact(&e));
        let entry = self
            .layers
            .get(&source)
            .map_err(failed)?
            .ok_or_else(|| AdminError::NotFound(from.to_string()))?;
        if self
            .layers
            .local()
            .get(&destination)
            .ok()
            .flatten()
            .is_some()
        {
            return Err(AdminError::Invalid(format!(
                "model '{destination}' already exists"
            )));
        }
        self.layers
            .local()
            .copy(&entry, &destination)
            .map_err(failed)
    }

    fn delete(&self, name: &str) -> Result<(), AdminError> {
        let parsed = parse(name)?;
        let found = self
            .layers
            .get(&parsed)
            .map_err(|e| AdminError::Failed(self.redact(&e)))?;
        if found.is_none() {
            return Err(AdminError::NotFound(name.to_string()));
        }
        self.layers
            .remove(&parsed)
            .map_err(|e| AdminError::Invalid(self.redact(&e)))
    }

    fn pull(&self, name: &str, insecure: bool, updates: UnboundedSender<PullUpdate>) -> Pulling {
        let store = self.layers.local().clone();
        let root = store.root().display().to_string();
        let parsed = parse(name);
        Box::pin(async move {
            let name = parsed?;
            let _ = updates.send(PullUpdate {
                status: "pulling manifest".into(),
                ..PullUpdate::default()
            });
            let options = crate::pull::options_from_env(insecure);
            let progress = Arc::new(Updates {
                updates: updates.clone(),
                current: Mutex::default(),
                completed: AtomicU64::new(0),
            });
            shelf_pull::pull(&store, &name, &options, progress)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "a pull from the API failed");
                    AdminError::Failed(e.to_string().replace(&root, "<store>"))
                })?;
            for status in ["verifying sha256 digest", "writing manifest"] {
                let _ = updates.send(PullUpdate {
                    status: status.into(),
                    ..PullUpdate::default()
                });
            }
            Ok(())
        })
    }

    fn fit(&self) -> Result<serde_json::Value, AdminError> {
        Ok(crate::fit::this_box_json(self.threads, self.ctx))
    }
}

/// Pull progress as Ollama's status lines, one blob at a time.
struct Updates {
    updates: UnboundedSender<PullUpdate>,
    /// The blob being fetched: its label and size.
    current: Mutex<(String, u64)>,
    completed: AtomicU64,
}

/// Bytes between two progress lines for one blob.
const STEP: u64 = 4 << 20;

impl Updates {
    fn send(&self, completed: u64) {
        let (label, total) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Registry blobs are labelled by the start of their digest, Hugging
        // Face files by their path.
        let label = label.trim_end_matches('…');
        let is_digest = !label.is_empty() && label.chars().all(|c| c.is_ascii_hexdigit());
        let _ = self.updates.send(PullUpdate {
            status: format!("pulling {label}"),
            digest: is_digest.then(|| format!("sha256:{label}")),
            total: Some(total),
            completed: Some(completed.min(total)),
        });
    }
}

impl Progress for Updates {
    fn blob_started(&self, label: &str, total: u64, done: u64) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = (label.to_string(), total);
        self.completed.store(done, Ordering::Relaxed);
        self.send(done);
    }

    fn advanced(&self, bytes: u64) {
        let before = self.completed.fetch_add(bytes, Ordering::Relaxed);
        if (before + bytes) / STEP != before / STEP {
            self.send(before + bytes);
        }
    }

    fn blob_finished(&self, _: &str) {
        let total = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        self.send(total);
    }

    fn message(&self, text: &str) {
        let _ = self.updates.send(PullUpdate {
            status: text.to_string(),
            ..PullUpdate::default()
        });
    }
}
