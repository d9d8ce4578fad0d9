//! The engine interface: what a loaded model can do, independent of llama.cpp.
//!
//! This crate owns the request and event types, sampling parameters,
//! cancellation, stop-string matching and chat-template rendering. It knows no
//! C++, no HTTP and no store: `shelf-engine-llama` implements [`LoadedModel`]
//! on llama.cpp, and [`fake::FakeModel`] implements it deterministically for
//! tests of the layers above.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

mod cancel;
pub mod chat;
mod error;
pub mod fake;
mod generation;
mod request;
pub mod schema;
pub mod speculate;
mod stop;
pub mod template;
mod utf8;

pub use cancel::CancelToken;
pub use error::EngineError;
pub use generation::{
    Completion, Event, FinishReason, Generation, GenerationSink, Timings, TokenLogprob, TokenProb,
    Usage,
};
pub use request::{
    GenerateRequest, GpuLayers, Grammar, LoadConfig, SamplingParams, SpeculativeConfig,
    SpeculativeRequest, MAX_TOP_LOGPROBS,
};
pub use stop::{stop_index, StopMatcher, StopOutcome};
pub use utf8::Utf8Decoder;

/// A token id in a model's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub i32);

/// Facts about a loaded model that the layers above need.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// Parameter count.
    pub n_params: u64,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
    /// Context window of each slot.
    pub n_ctx: u32,
    /// Sequences this instance generates at once.
    pub slots: u32,
    /// Tokens in the vocabulary.
    pub n_vocab: u32,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Layers offloaded to a GPU.
    pub gpu_layers: u32,
    /// Threads used for decoding.
    pub threads: u32,
    /// The Jinja chat template from the GGUF, if any.
    pub chat_template: Option<String>,
    /// Text of the BOS token, passed to templates as `bos_token`.
    pub bos_token: String,
    /// Text of the EOS token, passed to templates as `eos_token`.
    pub eos_token: String,
    /// An embedding model (its GGUF names a pooling type): it answers
    /// [`LoadedModel::embed`], not [`LoadedModel::submit`].
    pub embedding: bool,
    /// Width of the embeddings it makes.
    pub n_embd: u32,
}

/// A model loaded into memory, ready to generate.
///
/// Implementations own one decode thread per model; [`LoadedModel::submit`]
/// only enqueues. Tokenization runs on the caller's thread, so request
/// preparation never waits behind decoding.
pub trait LoadedModel: Send + Sync {
    /// What the model is and how it was loaded.
    fn info(&self) -> &ModelInfo;

    /// Tokenize text, adding BOS where the model wants it and parsing special
    /// tokens (templates emit them as text).
    fn tokenize(&self, text: &str) -> Result<Vec<Token>, EngineError>;

    /// Queue a generation. Events arrive on the returned [`Generation`];
    /// dropping it cancels the work.
    fn submit(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let (generation, sink) = Generation::channel();
        self.submit_to(request, sink)?;
        Ok(generation)
    }

    /// Queue a generation whose events go to `sink` (a runner passes sinks
    /// that share one channel to its writer).
    fn submit_to(&self, request: GenerateRequest, sink: GenerationSink) -> Result<(), EngineError>;

    /// Embed each input (a tokenized text) as one pooled, L2-normalised
    /// vector, all inputs in one batch where they fit. Blocking: call it
    /// off the async threads.
    fn embed(&self, inputs: Vec<Vec<Token>>) -> Result<Vec<Vec<f32>>, EngineError> {
        let _ = inputs;
        Err(EngineError::Unsupported(
            "this model does not make embeddings".into(),
        ))
    }

    /// The process the model runs in, when it has one of its own.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Resolves when the model can no longer serve (its runner process
    /// died), with how it ended. An in-process model never ends this way.
    fn ended(&self) -> Ended {
        Box::pin(std::future::pending())
    }

    /// Release the model and resolve once its memory is back with the
    /// system (a runner process has exited, a decode thread has joined).
    /// Called once, when nothing else uses the model.
    fn unload(self: Arc<Self>) -> Unloaded;
}

/// Scale a vector to unit length (Euclidean), as OpenAI and Ollama return
/// embeddings; a zero vector stays zero.
pub fn normalize(vector: &mut [f32]) {
    let norm = vector
        .iter()
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for v in vector.iter_mut() {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
}

/// See [`LoadedModel::ended`].
pub type Ended = Pin<Box<dyn Future<Output = String> + Send>>;

/// An [`Ended`] that resolves when `crashed` is set, with how. If the
/// sender goes away unset, the model is gone and nothing can end it any more.
pub fn ended_when(mut crashed: tokio::sync::watch::Receiver<Option<String>>) -> Ended {
    Box::pin(async move {
        let how = crashed
            .wait_for(Option::is_some)
            .await
            .map(|how| how.clone().unwrap_or_default());
        match how {
            Ok(how) => how,
            Err(_) => std::future::pending().await,
        }
    })
}

/// See [`LoadedModel::unload`].
pub type Unloaded = Pin<Box<dyn Future<Output = ()> + Send>>;
