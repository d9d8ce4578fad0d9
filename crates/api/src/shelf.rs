//! shelf's own endpoints. `GET /api/ps` answers in Ollama's shape (so its
//! clients can read it) with shelf's serving fields added.

use serde::{Deserialize, Serialize};

/// `GET /api/ps`: the models loaded now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessList {
    pub models: Vec<RunningModel>,
}

/// One loaded (or loading) model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningModel {
    pub name: String,
    pub model: String,
    /// Bytes it was admitted with against the memory budget.
    pub size: u64,
    /// Of those, bytes on a GPU (0 when unknown or none).
    pub size_vram: u64,
    /// When the keep-alive unloads it (RFC 3339); absent while busy,
    /// pinned, or kept forever.
    pub expires_at: Option<String>,
    pub context_length: Option<u32>,
    /// Requests it can run at once.
    pub slots: u32,
    pub busy_slots: u32,
    /// Requests waiting for a slot.
    pub queued: u32,
    pub loading: bool,
    pub pinned: bool,
    pub unloads_in_seconds: Option<u64>,
    /// The runner process serving it.
    pub pid: Option<u32>,
}
