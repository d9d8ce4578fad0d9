//! The model store: blobs named by their sha256, and one manifest per name
//! pointing at them, in Ollama's layout so an Ollama models directory reads
//! as a store.
//!
//! ```text
//! <root>/blobs/sha256-<hex>                          immutable content, written once
//! <root>/manifests/<host>/<namespace>/<model>/<tag>  JSON: the layers of one model
//! <root>/links/<hex>/model-0000N-of-0000M.gguf       split models, named as llama.cpp wants
//! <root>/tmp/                                        writes, downloads and locks in progress
//! ```
//!
//! Every write goes to `tmp/`, is fsynced, then renamed, so a crash never
//! leaves a half-written blob or manifest visible. Several processes, on one
//! box or several sharing the root over a network filesystem, coordinate
//! through lock files (`lock`). The store knows nothing of llama.cpp or HTTP;
//! it checks GGUF structure with `shelf-gguf`.

mod fsutil;
mod gc;
mod layers;
pub mod lock;
mod name;
mod store;

pub use fsutil::write_atomic;
pub use gc::{GcReport, PullRecord};
pub use layers::{Layers, Listing};
pub use name::{
    HfName, HfTarget, ModelName, NameError, RegistryName, DEFAULT_NAMESPACE, DEFAULT_REGISTRY,
    DEFAULT_TAG, HF_HOST,
};
pub use store::{
    Descriptor, Digest, ImportMode, Manifest, ModelEntry, Store, StoreError, MANIFEST_MEDIA_TYPE,
    MODEL_MEDIA_TYPE,
};
