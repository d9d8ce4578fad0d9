//! The model store: GGUF blobs named by their sha256, and one manifest per
//! `name:tag` pointing at them.
//!
//! ```text
//! <root>/blobs/sha256-<hex>        immutable content, written once
//! <root>/manifests/<name>/<tag>    JSON: the layers of one model
//! <root>/tmp/                      writes in progress, renamed into place
//! ```
//!
//! Every write goes to `tmp/`, is fsynced, then renamed, so a crash never
//! leaves a half-written blob or manifest visible. The store knows nothing of
//! llama.cpp or HTTP; it checks GGUF structure with `shelf-gguf`.

mod fsutil;
mod name;
mod store;

pub use name::{ModelName, NameError};
pub use store::{Digest, Layer, Manifest, ModelEntry, Store, StoreError, GGUF_MEDIA_TYPE};
