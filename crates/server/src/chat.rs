//! Running a chat for any dialect: template, grammar and output parsing
//! come from the engine's one chat model; each dialect only translates its
//! request into a [`Chat`] and these events into its own shapes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use futures::stream::{self, StreamExt};
use shelf_engine::chat::{self, Answer, Chat, OutputParser, Piece};
use shelf_engine::{
    Completion, EngineError, Event, FinishReason, GenerateRequest, SamplingParams,
    SpeculativeRequest, TokenLogprob,
};
use shelf_scheduler::{KeepAlive, Resident};

use crate::running::Running;
use crate::{AppError, AppState};

/// Generation settings every dialect has some name for.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stops: Vec<String>,
    /// Alternatives per token when log probabilities are asked for.
    pub logprobs: Option<u32>,
    /// Score the prompt's tokens too.
    pub prompt_logprobs: bool,
    pub ignore_eos: bool,
    pub cache_prompt: bool,
    /// Background work: it steps only while the model has nothing else.
    pub background: bool,
    /// Ollama's per-request keep-alive.
    pub keep_alive: Option<KeepAlive>,
    pub speculative: SpeculativeRequest,
    /// Text the answer is expected to repeat (OpenAI's predicted
    /// outputs): prompt lookup searches it too.
    pub prediction: Option<String>,
}

/// How a chat turn ended, in the terms every dialect maps from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
}

/// One step of a chat's output.
#[derive(Debug)]
pub enum ChatEvent {
    Piece(Piece),
    Logprob(TokenLogprob),
    /// The prompt's tokens, scored (`echo` with `logprobs`).
    PromptLogprobs(Vec<TokenLogprob>),
    Done(Completion, Finish),
    Failed(EngineError),
}

/// A chat in progress.
pub struct ChatRun {
    running: Running,
    parser: OutputParser,
    pending: VecDeque<ChatEvent>,
    called: bool,
    ended: bool,
}

/// A whole chat answer.
pub struct Collected {
    pub answer: Answer,
    pub logprobs: Vec<TokenLogprob>,
    pub prompt_logprobs: Vec<TokenLogprob>,
    pub completion: Completion,
    pub finish: Finish,
}

/// Wait for a slot of `model`, then prepare and submit `chat` off the
/// async threads.
pub async fn start(
    state: &AppState,
    model: &str,
    chat: Chat,
    params: Params,
) -> Result<ChatRun, AppError> {
    let (running, parser) = submit(state, model, params, move |resident, request| {
        let prepared = chat::prepare(&chat, &resident.template)?;
        request.prompt = resident.model.tokenize(&prepared.prompt)?;
        request.grammar = prepared.grammar;
        if resident.template.is_fallback {
            request
                .stop
                .extend(shelf_engine::template::FALLBACK_STOPS.map(String::from));
        }
        Ok(prepared.parser)
    })
    .await?;
    Ok(ChatRun::new(running, parser))
}

/// Submit a raw prompt (completions, Ollama's generate with `raw`).
pub async fn start_raw(
    state: &AppState,
    model: &str,
    prompt: String,
    params: Params,
) -> Result<ChatRun, AppError> {
    let (running, parser) = submit(state, model, params, move |resident, request| {
        request.prompt = resident.model.tokenize(&prompt)?;
        Ok(OutputParser::plain())
    })
    .await?;
    Ok(ChatRun::new(running, parser))
}

/// Wait for a slot of `model` (loading it if needed), then let `build`
/// fill the request's prompt, and submit it, off the async threads (long
/// prompts take milliseconds to template and tokenize).
pub async fn submit<T: Send + 'static>(
    state: &AppState,
    model: &str,
    params: Params,
    build: impl FnOnce(&Resident, &mut GenerateRequest) -> Result<T, EngineError> + Send + 'static,
) -> Result<(Running, T), AppError> {
    if model.is_empty() {
        return Err(AppError::invalid("model must not be empty", "model"));
    }
    let arrived = Instant::now();
    crate::auth::check_model(model)?;
    let lease = state.host.acquire(model).await?;
    if let Some(keep_alive) = params.keep_alive {
        lease.keep_alive(keep_alive);
    }
    state.metrics.queue_wait(model, lease.waited());
    let resident = Arc::clone(lease.resident());
    // Task-locals do not cross into the blocking pool: take the ledger now.
    let ledger = crate::audit::Ledger::current();
    let (generation, extra) = tokio::task::spawn_blocking(move || {
        let mut request = GenerateRequest::new(Vec::new());
        request.sampling = params.sampling;
        request.max_tokens = params.max_tokens;
        request.stop = params.stops;
        request.ignore_eos = params.ignore_eos;
        request.cache_prompt = params.cache_prompt;
        request.background = params.background;
        request.logprobs = params.logprobs;
        request.prompt_logprobs = params.prompt_logprobs;
        request.speculative = params.speculative;
        if let Some(prediction) = &params.prediction {
            request.prediction = resident.model.tokenize(prediction)?;
        }
        let extra = build(&resident, &mut request)?;
        if let Some(ledger) = ledger {
            ledger.prompt(request.prompt.len() as u64);
        }
        Ok::<_, EngineError>((resident.model.submit(request)?, extra))
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;
    let running = Running::new(
        generation,
        lease,
        model,
        arrived,
        Arc::clone(&state.metrics),
    );
    Ok((running, extra))
}

impl ChatRun {
    fn new(running: Running, parser: OutputParser) -> Self {
        Self {
            running,
            parser,
            pending: VecDeque::new(),
            called: false,
            ended: false,
        }
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<ChatEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.running.next().await {
                Some(Event::Text(text)) => {
                    let pieces = self.parser.push(&text);
                    self.queue(pieces);
                }
                Some(Event::Logprob(logprob)) => {
                    self.pending.push_back(ChatEvent::Logprob(logprob))
                }
                Some(Event::PromptLogprobs(scores)) => {
                    self.pending.push_back(ChatEvent::PromptLogprobs(scores));
                }
                Some(Event::Done(completion)) => {
                    let pieces = self.parser.finish();
                    self.queue(pieces);
                    // A call cut off by the length limit is reported as cut off.
                    let finish = match (self.called, completion.finish_reason) {
                        (_, FinishReason::Length) => Finish::Length,
                        (true, _) => Finish::ToolCalls,
                        (false, _) => Finish::Stop,
                    };
                    self.pending.push_back(ChatEvent::Done(completion, finish));
                    self.ended = true;
                }
                Some(Event::Failed(error)) => {
                    self.pending.push_back(ChatEvent::Failed(error));
                    self.ended = true;
                }
                None => {
                    self.pending
                        .push_back(ChatEvent::Failed(EngineError::Unavailable));
                    self.ended = true;
                }
            }
        }
    }

    fn queue(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            self.called |= matches!(piece, Piece::Call(_));
            self.pending.push_back(ChatEvent::Piece(piece));
        }
    }

    /// The whole answer, for non-streamed responses.
    pub async fn collect(mut self) -> Result<Collected, AppError> {
        let mut answer = Answer::default();
        let mut logprobs = Vec::new();
        let mut prompt_logprobs = Vec::new();
        while let Some(event) = self.next().await {
            match event {
                ChatEvent::Piece(piece) => answer.add(piece),
                ChatEvent::Logprob(logprob) => logprobs.push(logprob),
                ChatEvent::PromptLogprobs(scores) => prompt_logprobs.extend(scores),
                ChatEvent::Done(completion, finish) => {
                    return Ok(Collected {
                        answer,
                        logprobs,
                        prompt_logprobs,
                        completion,
                        finish,
                    })
                }
                ChatEvent::Failed(error) => return Err(error.into()),
            }
        }
        Err(EngineError::Unavailable.into())
    }
}

/// How a dialect writes a streamed answer: the bytes to send for each event.
pub trait Frames: Send + 'static {
    /// Bytes before any output.
    fn start(&mut self) -> Vec<Bytes>;
    /// Bytes for one event; after `Done` or `Failed` the stream ends.
    fn event(&mut self, event: ChatEvent) -> Vec<Bytes>;
}

/// A streamed response of `run`'s events in `frames`' format. Dropping
/// it (the client went away) drops the run, which cancels generation.
pub fn stream(run: ChatRun, frames: impl Frames, content_type: &'static str) -> Response {
    struct State<F> {
        run: ChatRun,
        frames: F,
        started: bool,
    }
    let state = State {
        run,
        frames,
        started: false,
    };
    let chunks = stream::unfold(state, |mut state| async move {
        if !state.started {
            state.started = true;
            let bytes = state.frames.start();
            return Some((stream::iter(bytes), state));
        }
        let event = state.run.next().await?;
        let bytes = state.frames.event(event);
        Some((stream::iter(bytes), state))
    })
    .flat_map(|bytes| bytes.map(Ok::<_, std::convert::Infallible>));
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}

/// One server-sent event: `data:` only, or named.
pub fn sse(event: Option<&str>, value: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {json}\n\n")),
        None => Bytes::from(format!("data: {json}\n\n")),
    }
}

/// One line of newline-delimited JSON.
pub fn ndjson(value: &impl serde::Serialize) -> Bytes {
    let mut json = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json.push(b'\n');
    Bytes::from(json)
}

/// A token's bytes as text for the wire (lossy for partial characters).
pub fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
