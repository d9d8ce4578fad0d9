//! Cancellation shared between a request's owner and the decode thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag the decode thread checks before every token and every prefill chunk.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, uncancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the work to stop; it stops within one token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
