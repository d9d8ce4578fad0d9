//! OpenAI-compatible handlers: chat completions, completions, models, health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shelf_api::openai as wire;
use shelf_engine::template::FALLBACK_STOPS;
use shelf_engine::GenerateRequest;
use shelf_scheduler::Resident;

use crate::running::Running;
use crate::stream::{self, ChunkFormat};
use crate::{convert, json, status_body, AppError, AppState};

/// What OpenAI's completions API does when `max_tokens` is absent.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;
const FINGERPRINT: &str = "shelf";

/// `GET /health`: 503 while the models named at start-up load, then 200:
/// the server is up even while some model loads or restarts.
pub async fn health(State(state): State<AppState>) -> Response {
    if state.starting.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            status_body("loading model"),
        )
            .into_response()
    } else {
        status_body("ok").into_response()
    }
}

/// `GET /v1/models`: every model the store offers.
pub async fn list_models(State(state): State<AppState>) -> Result<Json<wire::ModelList>, AppError> {
    let names = model_names(&state).await?;
    let created = now();
    Ok(Json(wire::ModelList {
        object: "list",
        data: names
            .into_iter()
            .map(|id| wire::Model {
                id,
                object: "model",
                created,
                owned_by: "shelf",
            })
            .collect(),
    }))
}

/// The catalog's names, read off the async threads (it walks the store).
async fn model_names(state: &AppState) -> Result<Vec<String>, AppError> {
    state.host.list().await.map_err(AppError::from)
}

/// `GET /v1/models/{id}`: one model, or 404.
pub async fn get_model(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<wire::Model>, AppError> {
    let names = model_names(&state).await?;
    let found = names.into_iter().find(|name| *name == id);
    let id = found.ok_or(AppError::ModelNotFound(id))?;
    Ok(Json(wire::Model {
        id,
        object: "model",
        created: now(),
        owned_by: "shelf",
    }))
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let request: wire::ChatCompletionRequest = json::parse(body)?;
    let messages = convert::messages(&request.messages)?;
    let sampling = convert::sampling(&request.sampling)?;
    let user_stops = convert::stops(&request.sampling)?;
    let max_tokens = match request.max_completion_tokens {
        Some(n) => convert::max_tokens(Some(n), "max_completion_tokens")?,
        None => convert::max_tokens(request.max_tokens, "max_tokens")?,
    };
    let ignore_eos = request.sampling.ignore_eos;
    let cache_prompt = request.sampling.cache_prompt.unwrap_or(true);
    let generation = start(&state, &request.model, move |resident| {
        let prompt = resident.template.render(&messages, true)?;
        let mut engine_request = GenerateRequest::new(resident.model.tokenize(&prompt)?);
        engine_request.sampling = sampling;
        engine_request.max_tokens = max_tokens;
        engine_request.stop = user_stops;
        engine_request.ignore_eos = ignore_eos;
        engine_request.cache_prompt = cache_prompt;
        if resident.template.is_fallback {
            engine_request.stop.extend(FALLBACK_STOPS.map(String::from));
        }
        Ok(engine_request)
    })
    .await?;
    let format = ChatFormat {
        id: new_id("chatcmpl"),
        created: now(),
        model: request.model,
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream::sse(generation, format, include_usage).into_response());
    }
    let (text, completion) = generation.collect().await?;
    Ok(Json(wire::ChatCompletion {
        id: format.id,
        object: "chat.completion",
        created: format.created,
        model: format.model,
        choices: vec![wire::ChatChoice {
            index: 0,
            message: wire::AssistantMessage {
                role: "assistant",
                content: text,
            },
            logprobs: None,
            finish_reason: convert::finish_reason(completion.finish_reason),
        }],
        usage: convert::usage(completion.usage),
        system_fingerprint: FINGERPRINT,
    })
    .into_response())
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let request: wire::CompletionRequest = json::parse(body)?;
    let prompt = match request.prompt {
        wire::Prompt::One(text) => text,
        wire::Prompt::Many(mut texts) if texts.len() == 1 => texts.remove(0),
        wire::Prompt::Many(_) => {
            return Err(AppError::invalid(
                "prompt must be one string (batches are not supported)",
                "prompt",
            ))
        }
    };
    if prompt.is_empty() {
        return Err(AppError::invalid("prompt must not be empty", "prompt"));
    }
    let sampling = convert::sampling(&request.sampling)?;
    let stops = convert::stops(&request.sampling)?;
    let max_tokens = convert::max_tokens(request.max_tokens, "max_tokens")?
        .unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS);
    let echo = request.echo.then(|| prompt.clone());
    let ignore_eos = request.sampling.ignore_eos;
    let cache_prompt = request.sampling.cache_prompt.unwrap_or(true);
    let generation = start(&state, &request.model, move |resident| {
        let mut engine_request = GenerateRequest::new(resident.model.tokenize(&prompt)?);
        engine_request.sampling = sampling;
        engine_request.max_tokens = Some(max_tokens);
        engine_request.stop = stops;
        engine_request.ignore_eos = ignore_eos;
        engine_request.cache_prompt = cache_prompt;
        Ok(engine_request)
    })
    .await?;
    let format = TextFormat {
        id: new_id("cmpl"),
        created: now(),
        model: request.model,
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream::sse(generation, format, include_usage).into_response());
    }
    let (text, completion) = generation.collect().await?;
    let text = echo.map_or(text.clone(), |prompt| prompt + &text);
    let mut body = format.chunk(vec![wire::TextChoice {
        index: 0,
        text,
        logprobs: None,
        finish_reason: Some(convert::finish_reason(completion.finish_reason)),
    }]);
    body.usage = Some(Some(convert::usage(completion.usage)));
    Ok(Json(body).into_response())
}

/// Wait for a slot of the model (loading it if needed), then template,
/// tokenize and submit off the async threads (long prompts take
/// milliseconds to tokenize).
async fn start(
    state: &AppState,
    model: &str,
    build: impl FnOnce(&Resident) -> Result<GenerateRequest, shelf_engine::EngineError> + Send + 'static,
) -> Result<Running, AppError> {
    if model.is_empty() {
        return Err(AppError::invalid("model must not be empty", "model"));
    }
    let arrived = Instant::now();
    let lease = state.host.acquire(model).await?;
    state.metrics.queue_wait(model, lease.waited());
    let resident = Arc::clone(lease.resident());
    let generation = tokio::task::spawn_blocking(move || {
        let request = build(&resident)?;
        resident.model.submit(request)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;
    Ok(Running::new(
        generation,
        lease,
        model,
        arrived,
        Arc::clone(&state.metrics),
    ))
}

struct ChatFormat {
    id: String,
    created: u64,
    model: String,
}

impl ChatFormat {
    fn chunk(
        &self,
        delta: wire::Delta,
        finish_reason: Option<&'static str>,
    ) -> wire::ChatCompletionChunk {
        wire::ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: FINGERPRINT,
            choices: vec![wire::ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: None,
        }
    }
}

impl ChunkFormat for ChatFormat {
    type Chunk = wire::ChatCompletionChunk;

    fn start(&self) -> Option<Self::Chunk> {
        let delta = wire::Delta {
            role: Some("assistant"),
            content: Some(String::new()),
        };
        Some(self.chunk(delta, None))
    }

    fn text(&self, text: String) -> Self::Chunk {
        self.chunk(
            wire::Delta {
                role: None,
                content: Some(text),
            },
            None,
        )
    }

    fn finish(&self, reason: &'static str) -> Self::Chunk {
        self.chunk(wire::Delta::default(), Some(reason))
    }

    fn usage(&self, usage: wire::Usage) -> Self::Chunk {
        let mut chunk = self.chunk(wire::Delta::default(), None);
        chunk.choices.clear();
        chunk.usage = Some(Some(usage));
        chunk
    }

    fn with_usage_field(chunk: &mut Self::Chunk) {
        chunk.usage.get_or_insert(None);
    }
}

struct TextFormat {
    id: String,
    created: u64,
    model: String,
}

impl TextFormat {
    fn chunk(&self, choices: Vec<wire::TextChoice>) -> wire::TextCompletion {
        wire::TextCompletion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: FINGERPRINT,
            choices,
            usage: None,
        }
    }

    fn choice(text: String, finish_reason: Option<&'static str>) -> Vec<wire::TextChoice> {
        vec![wire::TextChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason,
        }]
    }
}

impl ChunkFormat for TextFormat {
    type Chunk = wire::TextCompletion;

    fn start(&self) -> Option<Self::Chunk> {
        None
    }

    fn text(&self, text: String) -> Self::Chunk {
        self.chunk(Self::choice(text, None))
    }

    fn finish(&self, reason: &'static str) -> Self::Chunk {
        self.chunk(Self::choice(String::new(), Some(reason)))
    }

    fn usage(&self, usage: wire::Usage) -> Self::Chunk {
        let mut chunk = self.chunk(Vec::new());
        chunk.usage = Some(Some(usage));
        chunk
    }

    fn with_usage_field(chunk: &mut Self::Chunk) {
        chunk.usage.get_or_insert(None);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unique id: the prefix, the time in nanoseconds and a process counter.
fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{prefix}-{nanos:x}{:04x}",
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}
