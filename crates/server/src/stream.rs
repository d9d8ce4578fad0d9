//! Server-sent events for streamed completions, ending with `[DONE]`.
//!
//! The stream owns the [`Running`] generation: when a client disconnects,
//! hyper drops the stream, which drops the generation (cancelling it) and
//! its slot lease, so the model is free again within one token.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use futures::stream::{self, Stream};
use serde::Serialize;
use shelf_api::openai::Usage;
use shelf_engine::Event;

use crate::running::Running;
use crate::{convert, AppError};

/// How one API shapes its chunks.
pub trait ChunkFormat: Send + 'static {
    type Chunk: Serialize;
    /// A chunk sent before any text, if the API has one.
    fn start(&self) -> Option<Self::Chunk>;
    /// A chunk carrying generated text.
    fn text(&self, text: String) -> Self::Chunk;
    /// The chunk that carries the finish reason.
    fn finish(&self, reason: &'static str) -> Self::Chunk;
    /// The trailing usage-only chunk.
    fn usage(&self, usage: Usage) -> Self::Chunk;
    /// With `include_usage`, every chunk carries `"usage": null`.
    fn with_usage_field(chunk: &mut Self::Chunk);
}

enum Phase {
    Start,
    Body,
    Usage(Usage),
    Done,
    Closed,
}

struct Run<F> {
    generation: Running,
    format: F,
    include_usage: bool,
    phase: Phase,
}

/// An SSE response streaming `generation` in `format`.
pub fn sse<F: ChunkFormat>(
    generation: Running,
    format: F,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let run = Run {
        generation,
        format,
        include_usage,
        phase: Phase::Start,
    };
    Sse::new(stream::unfold(run, |mut run| async move {
        let event = run.next().await?;
        Some((Ok(event), run))
    }))
}

impl<F: ChunkFormat> Run<F> {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Body) {
                Phase::Start => {
                    if let Some(chunk) = self.format.start() {
                        return Some(self.event(chunk));
                    }
                }
                Phase::Body => return self.body_event().await,
                Phase::Usage(usage) => {
                    self.phase = Phase::Done;
                    let chunk = self.format.usage(usage);
                    return Some(json_event(&chunk));
                }
                Phase::Done => {
                    self.phase = Phase::Closed;
                    return Some(SseEvent::default().data("[DONE]"));
                }
                Phase::Closed => {
                    self.phase = Phase::Closed;
                    return None;
                }
            }
        }
    }

    async fn body_event(&mut self) -> Option<SseEvent> {
        match self.generation.next().await {
            Some(Event::Text(text)) => Some(self.event(self.format.text(text))),
            Some(Event::Done(completion)) => {
                self.phase = if self.include_usage {
                    Phase::Usage(convert::usage(completion.usage))
                } else {
                    Phase::Done
                };
                let chunk = self
                    .format
                    .finish(convert::finish_reason(completion.finish_reason));
                Some(self.event(chunk))
            }
            Some(Event::Failed(error)) => {
                self.phase = Phase::Done;
                Some(json_event(&AppError::from(error).body()))
            }
            None => {
                self.phase = Phase::Done;
                Some(json_event(
                    &AppError::Internal("the generation ended without finishing".into()).body(),
                ))
            }
        }
    }

    fn event(&self, mut chunk: F::Chunk) -> SseEvent {
        if self.include_usage {
            F::with_usage_field(&mut chunk);
        }
        json_event(&chunk)
    }
}

fn json_event(value: &impl Serialize) -> SseEvent {
    match serde_json::to_string(value) {
        Ok(json) => SseEvent::default().data(json),
        Err(e) => SseEvent::default().data(format!("{{\"error\":{{\"message\":\"{e}\"}}}}")),
    }
}
