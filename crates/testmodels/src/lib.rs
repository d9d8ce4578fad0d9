//! Paths of the real small GGUF models that `scripts/fetch-models.sh` caches.
//!
//! Tests call [`path`]; a model that is missing is a test failure with a message
//! saying how to fetch it, never a skip.

use std::path::PathBuf;

/// SmolLM2 135M Instruct, Q4_1, llama architecture, ChatML template.
pub const SMOLLM2: &str = "smollm2-135m-instruct-q4_1";
/// Gemma 3 270M base, Q4_K_M: no chat template.
pub const GEMMA3: &str = "gemma3-270m-q4_k_m";
/// Qwen2.5-Coder 0.5B Instruct, Q4_K_M.
pub const QWEN_05B: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";

/// Qwen2.5-Coder 1.5B Instruct, Q4_K_M: tools and JSON.
pub const QWEN_15B: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m";
/// all-MiniLM-L6-v2, F16, BERT: embeddings (`scripts/convert-minilm.py`).
pub const MINILM: &str = "all-minilm-l6-v2-f16";

/// Directory the fetch script writes to: `$SHELF_TEST_MODELS`, else
/// `$XDG_CACHE_HOME/shelf/test-models`, else `~/.cache/shelf/test-models`.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHELF_TEST_MODELS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("shelf").join("test-models")
}

/// The path of a fetched model.
///
/// # Panics
/// When the model is missing: tests that need a model fail without it.
pub fn path(name: &str) -> PathBuf {
    let path = dir().join(format!("{name}.gguf"));
    assert!(
        path.is_file(),
        "test model {} is missing; run scripts/setup.sh",
        path.display()
    );
    path
}
