//! What the host reports about its models, for `shelf ps` and `/metrics`.

use std::time::Duration;

/// One model the host holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    pub name: String,
    /// Bytes it was admitted with (the planner's estimate).
    pub bytes: u64,
    pub slots: u32,
    /// Context window of each slot, once loaded.
    pub context_length: Option<u32>,
    /// Slots running a request.
    pub busy: u32,
    /// Requests waiting for a slot (or for the model to load).
    pub queued: u32,
    /// Still loading.
    pub loading: bool,
    pub pinned: bool,
    /// Time until the keep-alive unloads it, when idle.
    pub unloads_in: Option<Duration>,
    /// The process serving it, if it runs in one.
    pub pid: Option<u32>,
}

/// Lifetime counts for one model name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelCounts {
    /// Successful loads (runner starts).
    pub loads: u64,
    pub load_failures: u64,
    /// Unloads for room, for the keep-alive, or at shutdown.
    pub unloads: u64,
    /// Times its runner died.
    pub crashes: u64,
}
