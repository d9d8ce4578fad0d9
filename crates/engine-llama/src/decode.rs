//! The decode thread: one per loaded model, owning its llama.cpp context.
//!
//! Jobs arrive on a channel and run in order. Each job prefills its prompt in
//! batch-sized chunks, then samples and decodes one token at a time, checking
//! for cancellation before every chunk and every token.
//!
//! Parallel slots will change one thing here: instead of one job at a time,
//! the loop will gather one token from each active slot (each its own
//! sequence id in the KV cache) into a single batch per step.

use std::sync::mpsc;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::{
    Completion, EngineError, Event, FinishReason, GenerateRequest, GenerationSink, StopMatcher,
    StopOutcome, Timings, Usage, Utf8Decoder,
};

use crate::sampler;

/// A queued generation.
pub struct Job {
    pub request: GenerateRequest,
    pub sink: GenerationSink,
}

/// The thread's body: create the context, report readiness, serve jobs until
/// the model is dropped.
pub fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    params: LlamaContextParams,
    queue: mpsc::Receiver<Job>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "llama.cpp could not create a context ({e}); the context size may be too large for memory"
            )));
            return;
        }
    };
    let n_batch = ctx.n_batch() as usize;
    let mut batch = LlamaBatch::new(n_batch, 1);
    let _ = ready.send(Ok(()));
    for job in queue {
        let outcome = Decoder {
            ctx: &mut ctx,
            model,
            batch: &mut batch,
        }
        .generate(&job.request, &job.sink);
        let event = match outcome {
            Ok(completion) => Event::Done(completion),
            Err(error) => Event::Failed(error),
        };
        job.sink.send(event);
    }
}

struct Decoder<'a, 'm> {
    ctx: &'a mut LlamaContext<'m>,
    model: &'m LlamaModel,
    batch: &'a mut LlamaBatch<'static>,
}

/// Per-generation state of the output side: text assembly and limits.
struct Output<'r> {
    request: &'r GenerateRequest,
    text: Utf8Decoder,
    stops: StopMatcher,
    produced: u32,
}

impl Decoder<'_, '_> {
    fn generate(
        &mut self,
        request: &GenerateRequest,
        sink: &GenerationSink,
    ) -> Result<Completion, EngineError> {
        let started = Instant::now();
        // Dropping the sequence's cells is enough; clearing the whole cache
        // would also zero its buffers, a memset of the full KV size per request.
        if !matches!(self.ctx.clear_kv_cache_seq(None, None, None), Ok(true)) {
            self.ctx.clear_kv_cache();
        }
        let prompt: Vec<LlamaToken> = request.prompt.iter().map(|t| LlamaToken(t.0)).collect();
        let usage = |produced| Usage {
            prompt_tokens: prompt.len() as u32,
            completion_tokens: produced,
        };
        if !self.prefill(&prompt, sink)? {
            return Ok(Completion {
                finish_reason: FinishReason::Cancelled,
                usage: usage(0),
                timings: Timings::default(),
            });
        }
        let mut sampler = sampler::chain(self.model, &request.sampling);
        if sampler::has_penalties(&request.sampling) {
            sampler.accept_many(&prompt);
        }
        let mut output = Output {
            request,
            text: Utf8Decoder::default(),
            stops: StopMatcher::new(&request.stop),
            produced: 0,
        };
        let mut timings = Timings::default();
        let mut first_token_at = None;
        let finish = self.decode_loop(&mut sampler, &mut output, prompt.len(), sink, |now| {
            let first = *first_token_at.get_or_insert(now);
            timings.prefill_ms = ms(first - started);
            timings.decode_ms = ms(now - first);
        })?;
        timings.decoded_tokens = output.produced.saturating_sub(1);
        Ok(Completion {
            finish_reason: finish,
            usage: usage(output.produced),
            timings,
        })
    }

    /// Decode the prompt in batch-sized chunks. `false` if cancelled.
    fn prefill(
        &mut self,
        prompt: &[LlamaToken],
        sink: &GenerationSink,
    ) -> Result<bool, EngineError> {
        let chunk_len = self.ctx.n_batch() as usize;
        for (i, chunk) in prompt.chunks(chunk_len).enumerate() {
            if sink.is_cancelled() {
                return Ok(false);
            }
            self.batch.clear();
            let start = i * chunk_len;
            for (j, &token) in chunk.iter().enumerate() {
                let pos = start + j;
                let last = pos + 1 == prompt.len();
                self.batch
                    .add(token, pos as i32, &[0], last)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(self.batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        Ok(true)
    }

    /// Sample, emit and decode until a stop condition. `on_token` is told
    /// the time each token was sampled, for the timings.
    fn decode_loop(
        &mut self,
        sampler: &mut LlamaSampler,
        output: &mut Output<'_>,
        mut n_past: usize,
        sink: &GenerationSink,
        mut on_token: impl FnMut(Instant),
    ) -> Result<FinishReason, EngineError> {
        let vocab = self.model.vocab();
        let n_ctx = self.ctx.n_ctx() as usize;
        let max_tokens = output.request.max_tokens.unwrap_or(u32::MAX);
        let mut logits_at = self.batch.n_tokens() - 1;
        let plain_greedy = sampler::is_plain_greedy(&output.request.sampling);
        loop {
            if sink.is_cancelled() {
                return Ok(FinishReason::Cancelled);
            }
            let token = if plain_greedy {
                LlamaToken(sampler::arg_max(self.ctx.get_logits_ith(logits_at)))
            } else {
                sampler.sample(self.ctx, logits_at)
            };
            on_token(Instant::now());
            output.produced += 1;
            if !output.request.ignore_eos && vocab.is_eog(token) {
                return Ok(output.finish(sink, FinishReason::Stop));
            }
            let piece = vocab.token_to_piece(token, false, None);
            let text = output.text.push(&piece);
            match output.stops.push(&text) {
                StopOutcome::Stop(text) => {
                    send_text(sink, text);
                    return Ok(FinishReason::Stop);
                }
                StopOutcome::Continue(text) => {
                    if !send_text(sink, text) {
                        return Ok(FinishReason::Cancelled);
                    }
                }
            }
            if output.produced >= max_tokens || n_past + 1 >= n_ctx {
                return Ok(output.finish(sink, FinishReason::Length));
            }
            self.batch.clear();
            self.batch
                .add(token, n_past as i32, &[0], true)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            self.ctx
                .decode(self.batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            n_past += 1;
            logits_at = 0;
        }
    }
}

impl Output<'_> {
    /// Flush held-back text and report why generation ended.
    fn finish(&mut self, sink: &GenerationSink, reason: FinishReason) -> FinishReason {
        let mut rest = self.text.finish();
        rest = match self.stops.push(&rest) {
            StopOutcome::Stop(text) => return finish_with(sink, text, FinishReason::Stop),
            StopOutcome::Continue(text) => text + &self.stops.finish(),
        };
        finish_with(sink, rest, reason)
    }
}

fn finish_with(sink: &GenerationSink, text: String, reason: FinishReason) -> FinishReason {
    send_text(sink, text);
    reason
}

/// Send non-empty text; `false` when the caller has gone away.
fn send_text(sink: &GenerationSink, text: String) -> bool {
    text.is_empty() || sink.send(Event::Text(text))
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
