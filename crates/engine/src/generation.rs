//! What comes back from a generation: a stream of events, ending in one
//! [`Event::Done`] or [`Event::Failed`].

use tokio::sync::mpsc;

use crate::{CancelToken, EngineError};

/// One step of a generation's progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Generated text: whole UTF-8 characters, with stop strings held back.
    Text(String),
    /// A generated token's log probability, sent before its text when the
    /// request asked for them.
    Logprob(TokenLogprob),
    /// Prompt tokens' log probabilities, in order, as the prompt is
    /// computed; the first token's is NaN (nothing precedes it).
    PromptLogprobs(Vec<TokenLogprob>),
    /// The generation finished; nothing follows.
    Done(Completion),
    /// The generation failed; nothing follows.
    Failed(EngineError),
}

/// One token's log probability and its most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: TokenProb,
    /// Most likely first.
    pub top: Vec<TokenProb>,
}

/// A token's bytes (not always whole UTF-8) and natural-log probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProb {
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context window filled up.
    Length,
    /// The caller cancelled it.
    Cancelled,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens whose KV was reused from the prefix cache, not computed.
    pub cached_tokens: u32,
    /// Tokens speculative decoding drafted and the target verified.
    pub drafted_tokens: u32,
    /// Drafted tokens the target kept (each saved a decode step).
    pub accepted_tokens: u32,
}

/// Wall-clock time spent in prefill and decode.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Time to process the prompt, up to the first sampled token.
    pub prefill_ms: f64,
    /// Time spent producing tokens after the first.
    pub decode_ms: f64,
    /// Tokens produced in `decode_ms` (completion tokens less the first).
    pub decoded_tokens: u32,
}

impl Timings {
    /// Prompt tokens per second.
    pub fn prefill_tps(&self, prompt_tokens: u32) -> f64 {
        per_second(prompt_tokens, self.prefill_ms)
    }

    /// Generated tokens per second, excluding the first token (which rides on prefill).
    pub fn decode_tps(&self) -> f64 {
        per_second(self.decoded_tokens, self.decode_ms)
    }
}

fn per_second(tokens: u32, ms: f64) -> f64 {
    if ms > 0.0 {
        f64::from(tokens) * 1000.0 / ms
    } else {
        0.0
    }
}

/// How a generation ended, with its accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    pub finish_reason: FinishReason,
    /// Which of the request's `stop` strings ended it (its index), if one did.
    pub stop_index: Option<u8>,
    pub usage: Usage,
    pub timings: Timings,
}

/// The caller's end of a generation. Dropping it cancels the work, so a
/// client that goes away frees the model at its next token.
#[derive(Debug)]
pub struct Generation {
    events: mpsc::UnboundedReceiver<Event>,
    cancel: CancelToken,
}

/// The engine's end of a generation.
#[derive(Debug)]
pub struct GenerationSink {
    events: Target,
    cancel: CancelToken,
}

/// Where a sink's events go: its own channel, or a channel shared by many
/// generations with each event tagged by its generation's id (a runner
/// forwards every generation's events through one writer that way).
#[derive(Debug)]
enum Target {
    Own(mpsc::UnboundedSender<Event>),
    Tagged(u64, mpsc::UnboundedSender<(u64, Event)>),
}

impl Target {
    fn send(&self, event: Event) -> bool {
        match self {
            Self::Own(tx) => tx.send(event).is_ok(),
            Self::Tagged(id, tx) => tx.send((*id, event)).is_ok(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Self::Own(tx) => tx.is_closed(),
            Self::Tagged(_, tx) => tx.is_closed(),
        }
    }
}

impl Generation {
    /// A connected pair: the caller keeps the [`Generation`], the engine the sink.
    pub fn channel() -> (Generation, GenerationSink) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancelToken::new();
        (
            Generation {
                events: rx,
                cancel: cancel.clone(),
            },
            GenerationSink {
                events: Target::Own(tx),
                cancel,
            },
        )
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event, blocking the thread (for non-async callers).
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }

    /// A token that cancels this generation, for use from another task.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Collect the whole text and the completion, for non-streamed callers.
    pub async fn collect(mut self) -> Result<(String, Completion), EngineError> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event {
                Event::Text(piece) => text.push_str(&piece),
                Event::Logprob(_) | Event::PromptLogprobs(_) => {}
                Event::Done(completion) => return Ok((text, completion)),
                Event::Failed(error) => return Err(error),
            }
        }
        Err(EngineError::Unavailable)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl GenerationSink {
    /// A sink whose events go to a shared channel as `(id, event)`; the
    /// token cancels it.
    pub fn tagged(id: u64, events: mpsc::UnboundedSender<(u64, Event)>) -> (CancelToken, Self) {
        let cancel = CancelToken::new();
        let sink = Self {
            events: Target::Tagged(id, events),
            cancel: cancel.clone(),
        };
        (cancel, sink)
    }

    /// The token the caller cancels with, to wait on it.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Whether the caller cancelled or went away.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }

    /// Send an event; `false` when the caller has gone away.
    pub fn send(&self, event: Event) -> bool {
        self.events.send(event)
    }
}
