//! OpenAI-compatible handlers: chat completions, completions, models, health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shelf_api::openai as wire;
use shelf_engine::chat::Piece;

use crate::{chat, convert, json, status_body, AppError, AppState};

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
/// The models this request's key may use.
async fn model_names(state: &AppState) -> Result<Vec<String>, AppError> {
    let mut names = state.host.list().await.map_err(AppError::from)?;
    // The assistant answers as a model of its own when one is set for it.
    if state.assistant.as_ref().is_some_and(|a| a.model.is_some()) {
        names.push(crate::assistant::MODEL.to_owned());
    }
    names.retain(|name| crate::auth::may_see(name));
    Ok(names)
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
    let chat = convert::chat(&request)?;
    if crate::assistant::target(&request.model).is_some() {
        return assistant_completion(&state, request, &chat).await;
    }
    let params = chat::Params {
        sampling: convert::sampling(&request.sampling)?,
        max_tokens: match request.max_completion_tokens {
            Some(n) => convert::max_tokens(Some(n), "max_completion_tokens")?,
            None => convert::max_tokens(request.max_tokens, "max_tokens")?,
        },
        stops: convert::stops(&request.sampling)?,
        logprobs: convert::chat_logprobs(request.logprobs, request.top_logprobs)?,
        prompt_logprobs: false,
        ignore_eos: request.sampling.ignore_eos,
        cache_prompt: request.sampling.cache_prompt.unwrap_or(true),
        keep_alive: None,
        background: false,
        speculative: convert::openai_speculative(&request.sampling)?,
        prediction: convert::prediction(request.prediction.as_ref())?,
    };
    let run = chat::start(&state, &request.model, chat, params).await?;
    let format = ChatFormat {
        id: new_id("chatcmpl"),
        created: now(),
        model: request.model,
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let frames = ChatFrames {
            format,
            include_usage,
            calls: 0,
            call_open: false,
        };
        return Ok(chat::stream(run, frames, "text/event-stream"));
    }
    let collected = run.collect().await?;
    let answer = collected.answer;
    let content = match (answer.content.is_empty(), answer.tool_calls.is_empty()) {
        (true, false) => None,
        _ => Some(answer.content),
    };
    Ok(Json(wire::ChatCompletion {
        id: format.id,
        object: "chat.completion",
        created: format.created,
        model: format.model,
        choices: vec![wire::ChatChoice {
            index: 0,
            message: wire::AssistantMessage {
                role: "assistant",
                content,
                reasoning_content: answer.reasoning,
                tool_calls: answer.tool_calls.iter().map(convert::tool_call).collect(),
            },
            logprobs: (!collected.logprobs.is_empty() || request.logprobs)
                .then(|| convert::chat_logprobs_body(&collected.logprobs)),
            finish_reason: convert::finish(collected.finish),
        }],
        usage: convert::usage(collected.completion.usage),
        system_fingerprint: FINGERPRINT,
        timings: Some(convert::timings(&collected.completion)),
    })
    .into_response())
}

/// A chat with the `assistant` model: the agent's answer, whole or
/// streamed as it is written.
async fn assistant_completion(
    state: &AppState,
    request: wire::ChatCompletionRequest,
    chat: &shelf_engine::chat::Chat,
) -> Result<Response, AppError> {
    let asking = crate::assistant::prepare(state, &request.model, chat)?;
    let format = ChatFormat {
        id: new_id("chatcmpl"),
        created: now(),
        model: request.model,
    };
    if request.stream {
        return Ok(assistant_stream(asking.stream(state), format));
    }
    let outcome = asking.run(state, &mut |_| {}).await?;
    Ok(Json(wire::ChatCompletion {
        id: format.id,
        object: "chat.completion",
        created: format.created,
        model: format.model,
        choices: vec![wire::ChatChoice {
            index: 0,
            message: wire::AssistantMessage {
                role: "assistant",
                content: Some(outcome.answer),
                reasoning_content: None,
                tool_calls: Vec::new(),
            },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: convert::usage(shelf_engine::Usage::default()),
        system_fingerprint: FINGERPRINT,
        timings: None,
    })
    .into_response())
}

/// The assistant's answer as OpenAI's chunks: the role first, then text as
/// it comes, then the finish (or the error).
fn assistant_stream(
    said: impl futures::Stream<Item = crate::assistant::Said> + Send + 'static,
    format: ChatFormat,
) -> Response {
    use crate::assistant::Said;
    use futures::StreamExt as _;
    let opening = wire::Delta {
        role: Some("assistant"),
        content: Some(String::new()),
        ..wire::Delta::default()
    };
    let first = chat::sse(None, &format.chunk(opening, None));
    let frames = said.map(move |said| {
        let bytes = match said {
            Said::Text(text) => {
                let delta = wire::Delta {
                    content: Some(text),
                    ..wire::Delta::default()
                };
                vec![chat::sse(None, &format.chunk(delta, None))]
            }
            Said::Done(_) => vec![
                chat::sse(None, &format.chunk(wire::Delta::default(), Some("stop"))),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
            Said::Failed(error) => vec![
                chat::sse(None, &error.body()),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
        };
        futures::stream::iter(bytes.into_iter().map(Ok::<_, std::convert::Infallible>))
    });
    let chunks = futures::stream::once(async move { Ok(first) }).chain(frames.flatten());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|e| AppError::Internal(e.to_string()).into_response())
}

/// OpenAI's chat chunks for a streamed answer.
struct ChatFrames {
    format: ChatFormat,
    include_usage: bool,
    /// Tool calls sent so far: the next one's index.
    calls: u32,
    /// A call is streaming: its start is sent, its whole form is not needed.
    call_open: bool,
}

impl ChatFrames {
    fn send(&self, mut chunk: wire::ChatCompletionChunk) -> Bytes {
        if self.include_usage {
            chunk.usage.get_or_insert(None);
        }
        chat::sse(None, &chunk)
    }
}

impl chat::Frames for ChatFrames {
    fn start(&mut self) -> Vec<Bytes> {
        let delta = wire::Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..wire::Delta::default()
        };
        vec![self.send(self.format.chunk(delta, None))]
    }

    fn event(&mut self, event: chat::ChatEvent) -> Vec<Bytes> {
        use chat::ChatEvent as E;
        let delta = match event {
            E::Piece(Piece::Content(text)) => wire::Delta {
                content: Some(text),
                ..wire::Delta::default()
            },
            E::Piece(Piece::Reasoning(text)) => wire::Delta {
                reasoning_content: Some(text),
                ..wire::Delta::default()
            },
            E::Piece(Piece::CallStart { id, name }) => {
                self.call_open = true;
                let start = convert::tool_call_start(self.calls, id, name);
                wire::Delta {
                    tool_calls: Some(vec![start]),
                    ..wire::Delta::default()
                }
            }
            E::Piece(Piece::CallArguments(fragment)) => wire::Delta {
                tool_calls: Some(vec![convert::tool_call_fragment(self.calls, fragment)]),
                ..wire::Delta::default()
            },
            E::Piece(Piece::Call(call)) => {
                let index = self.calls;
                self.calls += 1;
                if std::mem::take(&mut self.call_open) {
                    return Vec::new();
                }
                wire::Delta {
                    tool_calls: Some(vec![convert::tool_call_delta(index, &call)]),
                    ..wire::Delta::default()
                }
            }
            E::PromptLogprobs(_) => return Vec::new(),
            E::Logprob(logprob) => {
                let mut chunk = self.format.chunk(wire::Delta::default(), None);
                chunk.choices[0].logprobs = Some(convert::chat_logprobs_body(&[logprob]));
                return vec![self.send(chunk)];
            }
            E::Done(completion, finish) => {
                let mut last = self
                    .format
                    .chunk(wire::Delta::default(), Some(convert::finish(finish)));
                last.timings = Some(convert::timings(&completion));
                let mut frames = vec![self.send(last)];
                if self.include_usage {
                    let mut chunk = self.format.chunk(wire::Delta::default(), None);
                    chunk.choices.clear();
                    chunk.usage = Some(Some(convert::usage(completion.usage)));
                    frames.push(chat::sse(None, &chunk));
                }
                frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
                return frames;
            }
            E::Failed(error) => {
                return vec![
                    chat::sse(None, &AppError::from(error).body()),
                    Bytes::from_static(b"data: [DONE]\n\n"),
                ]
            }
        };
        vec![self.send(self.format.chunk(delta, None))]
    }
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
    let logprobs = match request.logprobs {
        Some(n) if n > 5 => {
            return Err(AppError::invalid("logprobs must be at most 5", "logprobs"))
        }
        other => other,
    };
    // `echo` with `max_tokens: 0` scores the prompt and generates nothing
    // (as evaluation harnesses ask): one token is generated and dropped.
    let score_only = request.echo && request.max_tokens == Some(0) && !request.stream;
    let max_tokens = match score_only {
        true => Some(1),
        false => convert::max_tokens(request.max_tokens, "max_tokens")?,
    };
    let params = chat::Params {
        sampling: convert::sampling(&request.sampling)?,
        max_tokens: Some(max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)),
        stops: convert::stops(&request.sampling)?,
        logprobs,
        prompt_logprobs: request.echo && logprobs.is_some(),
        ignore_eos: request.sampling.ignore_eos,
        cache_prompt: request.sampling.cache_prompt.unwrap_or(true),
        keep_alive: None,
        background: false,
        speculative: convert::openai_speculative(&request.sampling)?,
        prediction: None,
    };
    let echo = request.echo.then(|| prompt.clone());
    let run = chat::start_raw(&state, &request.model, prompt, params).await?;
    let format = TextFormat {
        id: new_id("cmpl"),
        created: now(),
        model: request.model,
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let offset = echo.as_ref().map_or(0, String::len);
        let frames = TextFrames {
            format,
            include_usage,
            echo,
            logprobs: logprobs.map(|_| (Vec::new(), offset)),
        };
        return Ok(chat::stream(run, frames, "text/event-stream"));
    }
    let mut collected = run.collect().await?;
    if score_only {
        collected.answer.content.clear();
        collected.logprobs.clear();
        collected.finish = chat::Finish::Length;
        collected.completion.usage.completion_tokens = 0;
    }
    let offset = echo.as_ref().map_or(0, String::len);
    let text = echo.unwrap_or_default() + &collected.answer.content;
    let scored = match collected.prompt_logprobs.is_empty() {
        true => convert::text_logprobs(&collected.logprobs, offset),
        false => {
            let mut all = std::mem::take(&mut collected.prompt_logprobs);
            all.append(&mut collected.logprobs);
            convert::text_logprobs(&all, 0)
        }
    };
    let mut body = format.chunk(vec![wire::TextChoice {
        index: 0,
        text,
        logprobs: logprobs.map(|_| scored),
        finish_reason: Some(convert::finish(collected.finish)),
    }]);
    body.usage = Some(Some(convert::usage(collected.completion.usage)));
    Ok(Json(body).into_response())
}

/// Legacy completion chunks for a streamed answer.
struct TextFrames {
    format: TextFormat,
    include_usage: bool,
    /// The prompt, sent first when `echo` is set.
    echo: Option<String>,
    /// With `logprobs`: tokens whose text has not been sent yet, and the
    /// text's length so far (their offsets).
    logprobs: Option<(Vec<shelf_engine::TokenLogprob>, usize)>,
}

impl TextFrames {
    /// The log probabilities of the tokens behind `text`, about to be sent.
    fn take_logprobs(&mut self, text: &str) -> Option<wire::TextLogprobs> {
        let (pending, offset) = self.logprobs.as_mut()?;
        let body = convert::text_logprobs(pending, *offset);
        pending.clear();
        *offset += text.len();
        Some(body)
    }

    fn send(&self, mut chunk: wire::TextCompletion) -> Bytes {
        if self.include_usage {
            chunk.usage.get_or_insert(None);
        }
        chat::sse(None, &chunk)
    }
}

impl chat::Frames for TextFrames {
    fn start(&mut self) -> Vec<Bytes> {
        match self.echo.take() {
            Some(prompt) => vec![self.send(self.format.chunk(TextFormat::choice(prompt, None)))],
            None => Vec::new(),
        }
    }

    fn event(&mut self, event: chat::ChatEvent) -> Vec<Bytes> {
        use chat::ChatEvent as E;
        match event {
            E::Piece(Piece::Content(text) | Piece::Reasoning(text)) => {
                let mut choice = TextFormat::choice(text, None);
                choice[0].logprobs = self.take_logprobs(&choice[0].text);
                vec![self.send(self.format.chunk(choice))]
            }
            E::Logprob(logprob) => {
                if let Some((pending, _)) = &mut self.logprobs {
                    pending.push(logprob);
                }
                Vec::new()
            }
            E::Piece(Piece::Call(_) | Piece::CallStart { .. } | Piece::CallArguments(_))
            | E::PromptLogprobs(_) => Vec::new(),
            E::Done(completion, finish) => {
                let mut last = TextFormat::choice(String::new(), Some(convert::finish(finish)));
                last[0].logprobs = self.take_logprobs("");
                let mut frames = vec![self.send(self.format.chunk(last))];
                if self.include_usage {
                    let mut chunk = self.format.chunk(Vec::new());
                    chunk.usage = Some(Some(convert::usage(completion.usage)));
                    frames.push(chat::sse(None, &chunk));
                }
                frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
                frames
            }
            E::Failed(error) => vec![
                chat::sse(None, &AppError::from(error).body()),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
        }
    }
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
            timings: None,
        }
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
