//! Pulling models into the store: Hugging Face repositories through their
//! resolve URLs, and Ollama-style (OCI v2) registries through manifests and
//! blobs.
//!
//! Every blob is downloaded to `tmp/` in the store, in parallel byte ranges
//! whose progress is recorded beside it so a killed pull resumes exactly where
//! it stopped, hashed while it downloads, and renamed into `blobs/` only after
//! its sha256 checks out. The manifest is written last, so a model is never
//! visible before all its blobs are. This crate reads no environment: the
//! binary fills in [`PullOptions`].

mod download;
mod error;
mod hf;
mod http;
mod registry;
mod resume;

use std::sync::Arc;
use std::time::Duration;

pub use error::PullError;
use shelf_store::{Digest, ModelEntry, ModelName, Store};

/// Public Hugging Face, used unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Base URL of the Hugging Face hub (`HF_ENDPOINT`).
    pub hf_endpoint: String,
    /// Bearer token for Hugging Face (`HF_TOKEN`).
    pub hf_token: Option<String>,
    /// Talk plain http to registries named in model names.
    pub insecure: bool,
    /// Parallel connections per large blob.
    pub connections: usize,
    /// Bytes per range request.
    pub chunk_size: u64,
    /// A connection that delivers nothing for this long is retried.
    pub stall_timeout: Duration,
    /// Attempts per range before giving up, reset whenever bytes arrive.
    pub retries: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            hf_endpoint: DEFAULT_HF_ENDPOINT.into(),
            hf_token: None,
            insecure: false,
            connections: 4,
            chunk_size: 16 << 20,
            stall_timeout: Duration::from_secs(30),
            retries: 5,
        }
    }
}

/// What a pull reports as it goes. Called from download tasks; keep it cheap.
pub trait Progress: Send + Sync {
    /// A blob starts downloading; `done` bytes were already there from an earlier try.
    fn blob_started(&self, label: &str, total: u64, done: u64);
    /// More bytes arrived.
    fn advanced(&self, bytes: u64);
    /// The blob is verified and in the store.
    fn blob_finished(&self, label: &str);
    /// A status line: waiting for another pull, retrying, already present.
    fn message(&self, text: &str);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn blob_started(&self, _: &str, _: u64, _: u64) {}
    fn advanced(&self, _: u64) {}
    fn blob_finished(&self, _: &str) {}
    fn message(&self, _: &str) {}
}

/// One blob to fetch.
#[derive(Debug, Clone)]
pub(crate) struct BlobSource {
    pub url: String,
    pub expected: Option<Digest>,
    pub size: Option<u64>,
    /// Shown in progress and errors: a file name or a short digest.
    pub label: String,
    /// Check the result parses as GGUF before it is committed.
    pub is_gguf: bool,
}

/// What a pull fetches, and how its manifest is made.
#[derive(Debug)]
pub(crate) struct Plan {
    pub blobs: Vec<BlobSource>,
    /// The registry's own manifest, kept byte for byte; `None` builds one
    /// from the GGUF blobs in order.
    pub manifest: Option<Vec<u8>>,
    /// Headers for every request (authorization).
    pub auth: Option<String>,
}

/// Pull `name` into `store` and return its entry.
pub async fn pull(
    store: &Store,
    name: &ModelName,
    options: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<ModelEntry, PullError> {
    let clients = http::Clients::new()?;
    let plan = match name {
        ModelName::Registry(r) => registry::plan(&clients, r, options).await?,
        ModelName::HuggingFace(h) => hf::plan(&clients, h, options).await?,
    };
    download::check_space(store, &plan.blobs)?;
    let known: Vec<Digest> = plan
        .blobs
        .iter()
        .filter_map(|b| b.expected.clone())
        .collect();
    let record_store = store.clone();
    let _record = tokio::task::spawn_blocking(move || record_store.begin_pull(&known))
        .await
        .map_err(PullError::task)??;

    let mut got = Vec::new();
    for blob in &plan.blobs {
        let fetched = download::fetch_blob(
            &clients,
            store,
            blob,
            plan.auth.as_deref(),
            options,
            &*progress,
        )
        .await;
        match fetched {
            Ok(blob_done) => got.push((blob.is_gguf, blob_done)),
            // A config, template or license layer the registry lacks does not
            // stop the model from running; the weights must all be there.
            Err(PullError::NotFound(what)) if !blob.is_gguf => {
                progress.message(&format!("{what}: not on the registry; skipped"));
            }
            Err(e) => return Err(e),
        }
    }
    match &plan.manifest {
        Some(bytes) => store.write_manifest_bytes(name, bytes)?,
        None => {
            let parts = got.into_iter().filter(|(gguf, _)| *gguf).map(|(_, d)| d);
            store.write_manifest(name, &shelf_store::Manifest::for_gguf(parts))?
        }
    }
    store
        .get(name)?
        .ok_or_else(|| PullError::NotFound(format!("{name} after writing its manifest")))
}
