//! Errors the engine reports.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong loading a model or generating with it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineError {
    /// The file is missing, unreadable, not a GGUF, or llama.cpp refused it.
    Load { path: PathBuf, reason: String },
    /// The prompt does not fit the context window.
    PromptTooLong { prompt_tokens: usize, n_ctx: u32 },
    /// The prompt has no tokens.
    EmptyPrompt,
    /// A sampling parameter is out of range.
    InvalidParam { param: &'static str, reason: String },
    /// The chat template could not be rendered.
    Template(String),
    /// The model's decode thread has stopped.
    Unavailable,
    /// llama.cpp failed while decoding.
    Decode(String),
    /// The model cannot do what was asked (embeddings from a chat model,
    /// a chat with an embedding model, a grammar llama.cpp refuses).
    Unsupported(String),
    /// The process running the model died (an abort, out of memory, a kill);
    /// the text says how it ended.
    Crashed(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load { path, reason } => {
                write!(f, "cannot load model {}: {reason}", path.display())
            }
            Self::PromptTooLong {
                prompt_tokens,
                n_ctx,
            } => write!(
                f,
                "the prompt is {prompt_tokens} tokens, which does not fit the context window of {n_ctx} tokens"
            ),
            Self::EmptyPrompt => f.write_str("the prompt is empty"),
            Self::InvalidParam { param, reason } => write!(f, "invalid {param}: {reason}"),
            Self::Template(reason) => write!(f, "cannot render the chat template: {reason}"),
            Self::Unavailable => f.write_str("the model is no longer running"),
            Self::Decode(reason) => write!(f, "decoding failed: {reason}"),
            Self::Unsupported(what) => f.write_str(what),
            Self::Crashed(how) => write!(f, "the model's runner process stopped: {how}"),
        }
    }
}

impl std::error::Error for EngineError {}
