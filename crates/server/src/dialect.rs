//! Which API dialect a request speaks, judged from its path and headers, so
//! that refusals made before any handler runs (keys, Host, CORS, limits)
//! come back in the shape that dialect's clients parse.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::anthropic::AnthropicError;
use crate::ollama::OllamaError;
use crate::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Ollama,
    Anthropic,
}

impl Dialect {
    pub fn of(path: &str, headers: &HeaderMap) -> Self {
        if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
            Dialect::Anthropic
        } else if path.starts_with("/api/") || path == "/" {
            Dialect::Ollama
        } else {
            Dialect::OpenAi
        }
    }
}

/// `error` as the dialect of `path` renders it.
pub fn render(path: &str, headers: &HeaderMap, error: AppError) -> Response {
    match Dialect::of(path, headers) {
        Dialect::OpenAi => error.into_response(),
        Dialect::Ollama => OllamaError::from(error).into_response(),
        Dialect::Anthropic => AnthropicError::from(error).into_response(),
    }
}
