//! A slot: one llama.cpp sequence, the tokens its KV holds, and the job it
//! is running, if any.

use std::time::Instant;

use crate::spec::JobSpec;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::{
    Completion, EngineError, Event, FinishReason, GenerateRequest, GenerationSink, StopMatcher,
    StopOutcome, Timings, Usage, Utf8Decoder,
};

/// One sequence of the context.
pub struct Slot {
    pub seq: i32,
    /// Tokens whose KV the sequence holds, at positions `0..len`; it
    /// includes tokens in the batch being decoded.
    pub cached: Vec<LlamaToken>,
    /// The same for this slot's sequence in the draft model's context.
    pub draft_cached: Vec<LlamaToken>,
    /// Step at which it last ran a job, for least-recently-used choices.
    pub last_used: u64,
    pub job: Option<Active>,
}

/// A job in a slot: prefilling its prompt, then generating.
pub struct Active {
    pub sink: GenerationSink,
    pub request: GenerateRequest,
    pub prompt: Vec<LlamaToken>,
    /// Index of the next prompt token to decode; `prompt.len()` once done.
    pub next_prompt: usize,
    /// The token sampled last, to be decoded in the next step.
    pub pending: Option<LlamaToken>,
    /// `None` for plain greedy requests, which take the arg-max directly.
    pub sampler: Option<LlamaSampler>,
    /// The request's grammar, checked against each chosen token.
    pub grammar: Option<LlamaSampler>,
    pub output: Output,
    pub cached_tokens: u32,
    pub started: Instant,
    pub first_token_at: Option<Instant>,
    pub last_token_at: Option<Instant>,
    /// Order of admission: earlier jobs' prompts are decoded first.
    pub serial: u64,
    /// Speculative decoding, when the job uses it.
    pub spec: Option<JobSpec>,
}

impl Active {
    pub fn prefilling(&self) -> bool {
        self.next_prompt < self.prompt.len()
    }

    /// Note a sampled token; returns why generation must end now, if it
    /// must, before the token is decoded.
    pub fn sampled(
        &mut self,
        token: LlamaToken,
        is_eog: bool,
        kv_len: usize,
        n_ctx: usize,
    ) -> Option<FinishReason> {
        let now = Instant::now();
        self.first_token_at.get_or_insert(now);
        self.last_token_at = Some(now);
        self.output.produced += 1;
        if is_eog && !self.request.ignore_eos {
            return Some(FinishReason::Stop);
        }
        self.pending = Some(token);
        let max_tokens = self.request.max_tokens.unwrap_or(u32::MAX);
        (self.output.produced >= max_tokens || kv_len + 1 >= n_ctx).then_some(FinishReason::Length)
    }

    /// The completion record for a job ending with `reason`.
    pub fn completion(&self, reason: FinishReason) -> Completion {
        let mut timings = Timings::default();
        if let Some(first) = self.first_token_at {
            timings.prefill_ms = ms(first - self.started);
            timings.decode_ms = self.last_token_at.map_or(0.0, |last| ms(last - first));
        }
        timings.decoded_tokens = self.output.produced.saturating_sub(1);
        Completion {
            finish_reason: reason,
            stop_index: shelf_engine::stop_index(&self.request.stop, self.output.stops.matched()),
            usage: Usage {
                prompt_tokens: self.prompt.len() as u32,
                completion_tokens: self.output.produced,
                cached_tokens: self.cached_tokens,
                drafted_tokens: self.spec.as_ref().map_or(0, |s| s.drafted),
                accepted_tokens: self.spec.as_ref().map_or(0, |s| s.accepted),
            },
            timings,
        }
    }

    /// Send the end of the job: held-back text, then Done.
    pub fn finish(mut self, reason: FinishReason) {
        let reason = self.output.flush(&self.sink, reason);
        let completion = self.completion(reason);
        self.sink.send(Event::Done(completion));
    }

    pub fn fail(self, error: EngineError) {
        self.sink.send(Event::Failed(error));
    }
}

/// Text assembly for one job: whole UTF-8 characters, stop strings held back.
pub struct Output {
    text: Utf8Decoder,
    pub stops: StopMatcher,
    /// A stop string matched: nothing more is emitted.
    stopped: bool,
    pub produced: u32,
}

impl Output {
    pub fn new(request: &GenerateRequest) -> Self {
        Self {
            text: Utf8Decoder::default(),
            stops: StopMatcher::new(&request.stop),
            stopped: false,
            produced: 0,
        }
    }

    /// Emit a token's bytes. `Some` when generation ends here: a stop
    /// string matched (`Stop`) or the caller went away (`Cancelled`).
    pub fn emit(&mut self, sink: &GenerationSink, piece: &[u8]) -> Option<FinishReason> {
        let text = self.text.push(piece);
        match self.stops.push(&text) {
            StopOutcome::Stop(text) => {
                self.stopped = true;
                send_text(sink, text);
                Some(FinishReason::Stop)
            }
            StopOutcome::Continue(text) => {
                (!send_text(sink, text)).then_some(FinishReason::Cancelled)
            }
        }
    }

    /// Flush held-back text and report why generation ended.
    fn flush(&mut self, sink: &GenerationSink, reason: FinishReason) -> FinishReason {
        if reason == FinishReason::Cancelled || self.stopped {
            return reason;
        }
        let rest = self.text.finish();
        let rest = match self.stops.push(&rest) {
            StopOutcome::Stop(text) => {
                send_text(sink, text);
                return FinishReason::Stop;
            }
            StopOutcome::Continue(text) => text + &self.stops.finish(),
        };
        send_text(sink, rest);
        reason
    }
}

/// Send non-empty text; `false` when the caller has gone away.
fn send_text(sink: &GenerationSink, text: String) -> bool {
    text.is_empty() || sink.send(Event::Text(text))
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
