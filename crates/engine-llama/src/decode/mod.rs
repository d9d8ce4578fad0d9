//! The decode thread: one per loaded model, owning its llama.cpp context and
//! every slot of it.
//!
//! Each turn of the loop is one step: admit queued jobs into free slots
//! (reusing the longest cached prefix), end cancelled jobs, then build one
//! batch holding the next token of every generating slot and a chunk of any
//! pending prompt, decode it once, and sample each slot's next token from
//! its own sampler chain. Prompt chunks are sized by [`Pace`] so a long new
//! prompt never stalls the running streams for more than about one step.
//!
//! On a GPU, `llama_decode` only launches the work; the text of the tokens
//! just fed in is detokenized and sent while the GPU computes, so host work
//! does not add to each token's time.
//!
//! A slot that speculates puts drafted tokens after its pending token in
//! the same batch; `speculate.rs` drafts them (prompt lookup, or the draft
//! model's own context on this thread) and verifies them.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::speculate::{Costs, Prices};
use shelf_engine::{
    Completion, EngineError, Event, FinishReason, GenerateRequest, GenerationSink,
    SpeculativeConfig, Timings, Usage,
};

use crate::pace::Pace;
use crate::prefix::{self, Candidate, RamCache};
use crate::sampler;
use crate::slot::{Active, Output, Slot};
use crate::spec::{self, DraftSide, Envelope, JobSpec, Proposal};

mod speculate;

/// Largest batch the load-time exactness check tries.
const EXACT_PROBE_ROWS: usize = 8;

/// Decode sizes timed at load where speculation is on: plain decode, the
/// short drafts of a probe, and the sizes matrix kernels favour.
const CALIBRATED_ROWS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// The draft model's: one slot drafting, and a few drafting at once.
const CALIBRATED_DRAFT_ROWS: [usize; 3] = [1, 2, 4];

/// Tries per calibrated size: a GPU's first steps of a new shape capture
/// its graph and say nothing of what the shape costs once it repeats.
fn calibration_reps(setup: &Setup) -> usize {
    match setup.steady_shapes {
        true => 4,
        false => 2,
    }
}

/// From this many greedy outputs in a step, on a GPU, arg-maxes run on
/// several threads.
const PARALLEL_ARG_MAX: usize = 8;
const ARG_MAX_THREADS: usize = 4;

/// Most prompt tokens scored in one step (each needs its logits read back
/// and a softmax over the vocabulary).
const SCORED_CHUNK: usize = 256;

/// A queued generation.
pub struct Job {
    pub request: GenerateRequest,
    pub sink: GenerationSink,
}

/// How the loop runs, fixed at load.
#[derive(Debug, Clone)]
pub struct Setup {
    pub slots: u32,
    /// Context window of each slot.
    pub n_ctx_slot: u32,
    /// Most tokens in one batch.
    pub n_batch: usize,
    pub cache_ram_bytes: u64,
    pub step_target: Duration,
    /// The model's attention window on its sliding-window layers, if any:
    /// their cache may no longer hold old positions.
    pub sliding_window: Option<u32>,
    /// `llama_decode` returns before the work is done (a GPU): emit text
    /// while the next step computes.
    pub overlap: bool,
    /// A step shaped like the one before runs far faster than one of a new
    /// shape (CUDA replays the graph it captured): speculating requests
    /// pad their lookup drafts to one length (at most 7, within the
    /// small-batch kernels) so their steps keep one shape, and step costs
    /// are learnt only from steps whose shape has settled.
    pub steady_shapes: bool,
    pub speculative: SpeculativeConfig,
    /// Draft model size over the target's: drafting's price until measured.
    pub draft_ratio: f64,
}

/// Whether a request that is not background work holds a slot: background
/// work then waits.
fn has_foreground(slots: &[Slot]) -> bool {
    slots
        .iter()
        .any(|s| s.job.as_ref().is_some_and(|j| !j.request.background))
}

/// The drafting costs a model starts from: on a backend where steps keep
/// one shape, verification is assumed cheap until measured.
fn costs(setup: &Setup) -> Costs {
    let mut costs = Costs::new(setup.draft_ratio);
    if setup.steady_shapes {
        costs.unknown_verify = Prices::UNKNOWN_VERIFY_STEADY;
    }
    costs
}

/// The thread's body: create the context, report readiness, serve jobs until
/// the model is dropped.
pub fn run(
    backend: &LlamaBackend,
    models: Models<'_>,
    params: impl Fn() -> LlamaContextParams,
    setup: Setup,
    queue: mpsc::Receiver<Job>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut ctx = match context(backend, models.target, params(), "a") {
        Ok(ctx) => ctx,
        Err(reason) => {
            let _ = ready.send(Err(reason));
            return;
        }
    };
    let mut draft = match models.draft {
        None => None,
        Some(model) => match context(backend, model, params(), "the draft model's") {
            Ok(draft_ctx) => Some(DraftSide {
                ctx: draft_ctx,
                batch: LlamaBatch::new(setup.n_batch, 1),
            }),
            Err(reason) => {
                let _ = ready.send(Err(reason));
                return;
            }
        },
    };
    let exact = match setup.speculative.enabled() && setup.speculative.exact {
        true => spec::exact_envelope(&mut ctx, models.target.n_vocab(), EXACT_PROBE_ROWS),
        false => Envelope::NONE,
    };
    if setup.speculative.enabled() {
        tracing::debug!(rows = exact.rows, below = ?exact.below, "speculative decoding ready; exact greedy verification within this");
    }
    let (target_costs, draft_costs) = match setup.speculative.enabled() {
        true => calibrate(&mut ctx, draft.as_mut(), &models, &setup),
        false => Default::default(),
    };
    let mut engine = Loop::new(ctx, models.target, draft, setup, exact);
    for (rows, seconds) in target_costs {
        engine.costs.target.record(rows, seconds);
    }
    for (rows, seconds) in draft_costs {
        engine.costs.draft.record(rows, seconds);
    }
    let _ = ready.send(Ok(()));
    engine.serve(&queue);
}

/// Seconds a decode takes, by the tokens in its batch.
type StepCosts = Vec<(usize, f64)>;

/// Decode costs by batch size, timed at load: the target's at
/// [`CALIBRATED_ROWS`], the draft model's at [`CALIBRATED_DRAFT_ROWS`]
/// (without its real price, a draft model looks as cheap as its size, and
/// the tuner keeps probing one that loses, each probe catching the draft's
/// cache up with the whole text).
fn calibrate(
    ctx: &mut LlamaContext<'_>,
    draft: Option<&mut DraftSide<'_>>,
    models: &Models<'_>,
    setup: &Setup,
) -> (StepCosts, StepCosts) {
    let limits = (setup.n_batch, setup.n_ctx_slot as usize);
    let reps = calibration_reps(setup);
    let target = spec::step_costs(ctx, models.target.n_vocab(), limits, &CALIBRATED_ROWS, reps);
    let draft = match (draft, models.draft) {
        (Some(side), Some(model)) => spec::step_costs(
            &mut side.ctx,
            model.n_vocab(),
            limits,
            &CALIBRATED_DRAFT_ROWS,
            reps,
        ),
        _ => Vec::new(),
    };
    (target, draft)
}

fn context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    params: LlamaContextParams,
    what: &str,
) -> Result<LlamaContext<'m>, String> {
    model.new_context(backend, params).map_err(|e| {
        format!(
            "llama.cpp could not create {what} context ({e}); the context size may be too large for memory"
        )
    })
}

/// The models a decode thread runs: the target, and a draft model if any.
pub struct Models<'m> {
    pub target: &'m LlamaModel,
    pub draft: Option<&'m LlamaModel>,
}

/// Where one slot's logits are in the batch being decoded.
struct Logits {
    slot: usize,
    serial: u64,
    index: i32,
    /// The slot's drafted tokens follow at the next indices: this
    /// proposal in the plan's list.
    draft: Option<usize>,
}

/// What one step put in its batch.
#[derive(Default)]
struct Plan {
    outputs: Vec<Logits>,
    proposals: Vec<Proposal>,
    generated: usize,
    prompt: usize,
    /// Prompt chunks whose every logit is wanted (prompt log probabilities):
    /// slot, job serial, first prompt position, its batch index, length.
    scored: Vec<(usize, u64, usize, i32, usize)>,
}

struct Loop<'m> {
    ctx: LlamaContext<'m>,
    model: &'m LlamaModel,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
    ram: RamCache,
    pace: Pace,
    setup: Setup,
    /// Steps taken, the clock for least-recently-used choices.
    clock: u64,
    /// Jobs admitted, numbering them.
    serial: u64,
    /// Tokens sampled and being decoded whose text is not yet sent
    /// (overlap mode): slot, job serial, token.
    deferred: Vec<(usize, u64, LlamaToken)>,
    /// The draft model's side, when one is loaded.
    draft: Option<DraftSide<'m>>,
    /// What drafting and verifying cost here, and the acceptance seen.
    costs: Costs,
    /// Where verification is computed exactly as plain decode, for exact
    /// greedy speculation.
    exact: Envelope,
    /// The last two steps' (generated, prompt) tokens.
    last_shapes: [(usize, usize); 2],
}

impl<'m> Loop<'m> {
    fn new(
        ctx: LlamaContext<'m>,
        model: &'m LlamaModel,
        draft: Option<DraftSide<'m>>,
        setup: Setup,
        exact: Envelope,
    ) -> Self {
        let slots = (0..setup.slots.max(1))
            .map(|seq| Slot {
                seq: seq as i32,
                cached: Vec::new(),
                draft_cached: Vec::new(),
                last_used: 0,
                job: None,
            })
            .collect();
        Self {
            batch: LlamaBatch::new(setup.n_batch, 1),
            ctx,
            model,
            slots,
            waiting: VecDeque::new(),
            ram: RamCache::new(setup.cache_ram_bytes),
            pace: Pace::new(setup.step_target),
            costs: costs(&setup),
            setup,
            clock: 0,
            serial: 0,
            deferred: Vec::new(),
            draft,
            exact,
            last_shapes: [(0, 0); 2],
        }
    }

    fn serve(&mut self, queue: &mpsc::Receiver<Job>) {
        loop {
            if self.is_idle() {
                // Blocks until a job comes; returns when the model is dropped.
                match queue.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = queue.try_recv() {
                self.waiting.push_back(job);
            }
            self.step();
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(|s| s.job.is_none())
    }

    fn step(&mut self) {
        self.clock += 1;
        self.admit();
        self.end_cancelled();
        let proposals = self.propose();
        let plan = match self.fill_batch(proposals) {
            Ok(plan) if plan.outputs.is_empty() && plan.prompt == 0 => return,
            Ok(plan) => plan,
            Err(error) => return self.fail_active(&error),
        };
        let started = Instant::now();
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            let error = EngineError::Decode(e.to_string());
            return self.fail_active(&error);
        }
        let decoded = started.elapsed();
        self.emit_deferred();
        self.score_prompts(&plan);
        self.sample(&plan);
        let elapsed = started.elapsed();
        tracing::trace!(
            generated = plan.generated,
            prompt = plan.prompt,
            ms = elapsed.as_secs_f64() * 1000.0,
            decode_ms = decoded.as_secs_f64() * 1000.0,
            "step"
        );
        // A drafting step says nothing of what the generating slots' plain
        // tokens cost beside a prompt chunk (the pace's base).
        if plan.proposals.is_empty() {
            self.pace.record(plan.generated, plan.prompt, elapsed);
        }
        // Where shapes must hold still, a step of a new shape (and the one
        // after, which captures the graph) says nothing of what that shape
        // costs once it repeats.
        let shape = (plan.generated, plan.prompt);
        let settled = !self.setup.steady_shapes || self.last_shapes == [shape; 2];
        self.last_shapes = [self.last_shapes[1], shape];
        if plan.prompt == 0 && plan.generated > 0 && settled {
            self.costs
                .target
                .record(plan.generated, elapsed.as_secs_f64());
        }
    }

    /// Move queued jobs into free slots.
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let free: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].job.is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            // A caller that went away while queued never uses the model;
            // it still gets its end, so whoever routes its events (a
            // runner's client) can let it go.
            if job.sink.is_cancelled() {
                job.sink.send(Event::Done(Completion {
                    finish_reason: FinishReason::Cancelled,
                    stop_index: None,
                    usage: Usage {
                        prompt_tokens: job.request.prompt.len() as u32,
                        ..Usage::default()
                    },
                    timings: Timings::default(),
                }));
                continue;
            }
            let prompt: Vec<LlamaToken> =
                job.request.prompt.iter().map(|t| LlamaToken(t.0)).collect();
            let candidates: Vec<Candidate> = free
                .iter()
                .map(|&index| {
                    let slot = &self.slots[index];
                    Candidate {
                        index,
                        shared: if job.request.cache_prompt {
                            prefix::common_prefix(&slot.cached, &prompt)
                        } else {
                            0
                        },
                        cached: slot.cached.len(),
                        last_used: slot.last_used,
                    }
                })
                .collect();
            let grammar = match &job.request.grammar {
                None => None,
                Some(grammar) => match sampler::grammar(self.model, grammar) {
                    Ok(sampler) => Some(sampler),
                    Err(error) => {
                        job.sink.send(Event::Failed(error));
                        continue;
                    }
                },
            };
            if let Some(index) = prefix::choose(&candidates, prompt.len()) {
                self.start(index, job, prompt, grammar);
            }
        }
    }

    /// Put `job` in slot `index`, keeping as much of the slot's (or a saved)
    /// KV as the prompt shares and the cache really holds.
    fn start(
        &mut self,
        index: usize,
        job: Job,
        prompt: Vec<LlamaToken>,
        grammar: Option<llama_cpp_2::sampling::LlamaSampler>,
    ) {
        let use_cache = job.request.cache_prompt && !job.request.prompt_logprobs;
        if !use_cache {
            self.forget_draft(index);
        }
        let mut reuse = if use_cache {
            prefix::common_prefix(&self.slots[index].cached, &prompt)
        } else {
            0
        };
        let saved = match use_cache && self.ram.enabled() {
            true => self.ram.take_best(&prompt, reuse),
            false => None,
        };
        // A restore replaces everything the slot holds; otherwise at most
        // all but the prompt's last token is kept.
        let keep = match saved {
            Some(_) => 0,
            None => reuse.min(prompt.len().saturating_sub(1)),
        };
        self.save_slot(index, keep);
        if let Some((tokens, state)) = saved {
            let slot = &mut self.slots[index];
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cached.clear();
            if self.ctx.state_seq_set(&state, slot.seq).is_ok() {
                reuse = prefix::common_prefix(&tokens, &prompt);
                slot.cached = tokens;
            } else {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                reuse = 0;
            }
        }
        // The last prompt token is always decoded: its logits give the first token.
        reuse = reuse.min(prompt.len().saturating_sub(1));
        reuse = self.keep_prefix(index, reuse);
        let sampling = &job.request.sampling;
        let sampler = match sampler::is_plain_greedy(sampling) {
            true => None,
            false => {
                let mut chain = sampler::chain(self.model, sampling, self.setup.n_ctx_slot);
                if sampler::has_penalties(sampling) {
                    chain.accept_many(&prompt);
                }
                Some(chain)
            }
        };
        self.serial += 1;
        let context = spec::Context {
            config: &self.setup.speculative,
            has_draft: self.draft.is_some(),
            exact: self.exact,
            n_ctx: self.setup.n_ctx_slot,
            costs: &self.costs,
            seed: random_seed(self.serial),
        };
        let speculation = JobSpec::new(&context, self.model, &job.request, &prompt);
        self.slots[index].job = Some(Active {
            output: Output::new(&job.request),
            sink: job.sink,
            request: job.request,
            prompt,
            next_prompt: reuse,
            pending: None,
            sampler,
            grammar,
            cached_tokens: reuse as u32,
            started: Instant::now(),
            first_token_at: None,
            last_token_at: None,
            serial: self.serial,
            spec: speculation,
        });
    }

    /// Empty slot `index`'s sequence in the draft model's context.
    fn forget_draft(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(draft) = self.draft.as_mut() {
            let _ = draft
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        }
        slot.draft_cached.clear();
    }

    /// Copy the slot's state to RAM before a prompt keeping only `keep` of
    /// its tokens overwrites it, if enough would be lost.
    fn save_slot(&mut self, index: usize, keep: usize) {
        let slot = &self.slots[index];
        if !self.ram.enabled() || slot.cached.len() < keep + prefix::MIN_SAVED_TOKENS {
            return;
        }
        match self
            .ctx
            .state_seq_get(slot.seq, LlamaStateSeqFlags::empty())
        {
            Ok(state) => self.ram.insert(slot.cached.clone(), state),
            Err(error) => tracing::warn!(%error, "could not save a slot's state to RAM"),
        }
    }

    /// Drop the slot's KV past `reuse` tokens and return how many it keeps:
    /// fewer when the cache no longer holds what those tokens need.
    fn keep_prefix(&mut self, index: usize, mut reuse: usize) -> usize {
        let slot = &mut self.slots[index];
        let seq = slot.seq;
        if let (Some(window), true) = (self.setup.sliding_window, reuse > 0) {
            // The next token attends to the window before it; the
            // sliding-window cache may have dropped those positions.
            let needed = (reuse as i64 - i64::from(window)).max(0);
            if i64::from(self.ctx.kv_cache_seq_pos_min(seq)) > needed {
                reuse = 0;
            }
        }
        let kept = self
            .ctx
            .clear_kv_cache_seq(Some(seq as u32), Some(reuse as u32), None);
        if !matches!(kept, Ok(true)) {
            // Recurrent state cannot always be cut back: start over.
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            reuse = 0;
        }
        slot.cached.truncate(reuse);
        reuse
    }

    /// End the jobs whose callers cancelled or went away.
    fn end_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot.job.as_ref().is_some_and(|j| j.sink.is_cancelled()) {
                if let Some(job) = slot.job.take() {
                    job.finish(FinishReason::Cancelled);
                }
                slot.last_used = self.clock;
            }
        }
    }

    /// Build the step's batch: every generating slot's pending token (and
    /// its drafted tokens), then prompt chunks for the oldest jobs first,
    /// within the pace's budget.
    fn fill_batch(&mut self, mut proposals: Vec<(usize, Proposal)>) -> Result<Plan, EngineError> {
        let Self {
            batch,
            slots,
            pace,
            setup,
            ..
        } = self;
        batch.clear();
        let mut plan = Plan::default();
        let foreground = has_foreground(slots);
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            if foreground && job.request.background {
                continue;
            }
            let Some(token) = job.pending.take() else {
                continue;
            };
            add(batch, token, slot.cached.len(), slot.seq, true)?;
            slot.cached.push(token);
            let index = batch.n_tokens() - 1;
            let mut draft = None;
            if let Some(at) = proposals.iter().position(|(s, _)| *s == i) {
                let (_, proposal) = proposals.swap_remove(at);
                for &drafted in &proposal.tokens {
                    add(batch, drafted, slot.cached.len(), slot.seq, true)?;
                    slot.cached.push(drafted);
                }
                plan.generated += proposal.tokens.len();
                draft = Some(plan.proposals.len());
                plan.proposals.push(proposal);
            }
            plan.outputs.push(Logits {
                slot: i,
                serial: job.serial,
                index,
                draft,
            });
            plan.generated += 1;
        }
        let room = setup.n_batch.saturating_sub(plan.generated);
        let mut budget = pace.prompt_budget(plan.generated, room);
        let mut prefilling: Vec<(u64, usize)> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.job
                    .as_ref()
                    .filter(|j| j.prefilling() && !(foreground && j.request.background))
                    .map(|j| (j.serial, i))
            })
            .collect();
        prefilling.sort_unstable();
        for (_, i) in prefilling {
            if budget == 0 {
                break;
            }
            let slot = &mut slots[i];
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            let scored = job.request.prompt_logprobs;
            // Every scored token's logits are read back: a bounded chunk.
            let mut chunk = if scored {
                budget.min(SCORED_CHUNK)
            } else {
                budget
            };
            // Background prompts go in steps a newcomer can wait out.
            if job.request.background {
                chunk = chunk.min(pace.background_budget(room));
            }
            let left = job.prompt.len() - job.next_prompt;
            let chunk = crate::pace::chunk(chunk, left, room.saturating_sub(plan.prompt));
            let end = job.prompt.len().min(job.next_prompt + chunk);
            if scored {
                plan.scored.push((
                    i,
                    job.serial,
                    job.next_prompt,
                    batch.n_tokens(),
                    end - job.next_prompt,
                ));
            }
            for at in job.next_prompt..end {
                let last = at + 1 == job.prompt.len();
                add(
                    batch,
                    job.prompt[at],
                    slot.cached.len(),
                    slot.seq,
                    last || scored,
                )?;
                slot.cached.push(job.prompt[at]);
                if last {
                    plan.outputs.push(Logits {
                        slot: i,
                        serial: job.serial,
                        index: batch.n_tokens() - 1,
                        draft: None,
                    });
                }
            }
            // A chunk may run past the budget to take a prompt's short rest.
            budget = budget.saturating_sub(end - job.next_prompt);
            plan.prompt += end - job.next_prompt;
            job.next_prompt = end;
        }
        Ok(plan)
    }

    /// Sample each output's next token, ending jobs at end-of-generation,
    /// `max_tokens` or a full window.
    fn sample(&mut self, plan: &Plan) {
        let n_ctx = self.setup.n_ctx_slot as usize;
        let greedy = self.greedy_tokens(plan);
        for (out, greedy) in plan.outputs.iter().zip(greedy) {
            if let Some(at) = out.draft {
                self.verify(out, &plan.proposals[at]);
                continue;
            }
            let slot = &mut self.slots[out.slot];
            // A job that ended after this batch was built (a stop string).
            let Some(job) = slot.job.as_mut().filter(|j| j.serial == out.serial) else {
                continue;
            };
            let token = match pick(&self.ctx, job, out.index, greedy.map(LlamaToken)) {
                Ok(token) => token,
                Err(error) => {
                    if let Some(job) = slot.job.take() {
                        job.fail(error);
                    }
                    slot.last_used = self.clock;
                    continue;
                }
            };
            if let Some(sampled) = job.spec.as_mut().and_then(|s| s.sampled.as_mut()) {
                sampled.filter.accept(token);
            }
            let at = Position {
                index: out.index,
                kv_len: slot.cached.len(),
                n_ctx,
            };
            match take(self.model, &self.ctx, job, token, at, self.setup.overlap) {
                Taken::Ended(reason) => finish(slot, reason, self.clock),
                Taken::Deferred => self.deferred.push((out.slot, out.serial, token)),
                Taken::Emitted => {}
            }
        }
    }

    /// Send the log probability of each prompt token the step computed
    /// the logits before.
    fn score_prompts(&mut self, plan: &Plan) {
        for &(index, serial, start, batch_at, len) in &plan.scored {
            let Some(job) = self.slots[index]
                .job
                .as_ref()
                .filter(|j| j.serial == serial)
            else {
                continue;
            };
            let top = job.request.logprobs.unwrap_or(0);
            let mut scores = Vec::with_capacity(len + 1);
            if start == 0 {
                let first = job.prompt[0];
                scores.push(shelf_engine::TokenLogprob {
                    token: shelf_engine::TokenProb {
                        bytes: self.model.vocab().token_to_piece(first, false, None),
                        logprob: f32::NAN,
                    },
                    top: Vec::new(),
                });
            }
            for k in 0..len {
                let Some(&next) = job.prompt.get(start + k + 1) else {
                    break;
                };
                let logits = self.ctx.get_logits_ith(batch_at + k as i32);
                scores.push(sampler::logprobs(self.model, logits, next, top));
            }
            job.sink.send(Event::PromptLogprobs(scores));
        }
    }

    /// The arg-max of every plain greedy output's logits. Each reads a whole
    /// vocabulary's logits, so with many slots on a GPU (where this is all
    /// the host does between two decodes) they are shared among threads.
    fn greedy_tokens(&self, plan: &Plan) -> Vec<Option<i32>> {
        let logits: Vec<Option<&[f32]>> = plan
            .outputs
            .iter()
            .map(|out| {
                let job = self.slots[out.slot].job.as_ref();
                job.filter(|j| j.serial == out.serial && j.sampler.is_none() && out.draft.is_none())
                    .map(|_| self.ctx.get_logits_ith(out.index))
            })
            .collect();
        if !self.setup.overlap || logits.len() < PARALLEL_ARG_MAX {
            return logits.iter().map(|l| l.map(sampler::arg_max)).collect();
        }
        let per_thread = logits.len().div_ceil(ARG_MAX_THREADS);
        std::thread::scope(|scope| {
            let parts: Vec<_> = logits
                .chunks(per_thread)
                .map(|part| {
                    let handle = scope.spawn(move || {
                        part.iter()
                            .map(|l| l.map(sampler::arg_max))
                            .collect::<Vec<_>>()
                    });
                    (part.len(), handle)
                })
                .collect();
            // A part that failed leaves its outputs to the sequential path.
            parts
                .into_iter()
                .flat_map(|(len, handle)| handle.join().unwrap_or_else(|_| vec![None; len]))
                .collect()
        })
    }

    /// Send the text of tokens now being decoded (overlap mode).
    fn emit_deferred(&mut self) {
        for (index, serial, token) in std::mem::take(&mut self.deferred) {
            let slot = &mut self.slots[index];
            let Some(job) = slot.job.as_mut().filter(|j| j.serial == serial) else {
                continue;
            };
            if let Some(reason) = emit(self.model, job, token) {
                finish(slot, reason, self.clock);
            }
        }
    }

    /// A failed decode leaves the KV of everything in the batch unknown:
    /// fail the running jobs and forget their slots' caches.
    fn fail_active(&mut self, error: &EngineError) {
        tracing::error!(%error, "decode failed; failing the running requests");
        self.deferred.clear();
        for slot in &mut self.slots {
            if let Some(job) = slot.job.take() {
                job.fail(error.clone());
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                slot.cached.clear();
            }
        }
        for index in 0..self.slots.len() {
            self.forget_draft(index);
        }
    }
}

/// The token plain decode takes from the logits at batch `index`: under a
/// grammar the grammar's (the unconstrained choice checked first), else
/// the sampler chain's, else the arg-max (`greedy`, when computed already).
/// Grammar and chain accept it.
fn pick(
    ctx: &LlamaContext<'_>,
    job: &mut Active,
    index: i32,
    greedy: Option<LlamaToken>,
) -> Result<LlamaToken, EngineError> {
    match (job.grammar.as_mut(), job.sampler.as_mut(), greedy) {
        (Some(grammar), chain, _) => sampler::constrained(ctx, index, grammar, chain, greedy),
        (None, Some(chain), _) => Ok(chain.sample(ctx, index)),
        (None, None, Some(token)) => Ok(token),
        (None, None, None) => Ok(LlamaToken(sampler::arg_max(ctx.get_logits_ith(index)))),
    }
}

/// Where a taken token came from: its logits' batch index, the KV length
/// at that point, and the slot's window.
struct Position {
    index: i32,
    kv_len: usize,
    n_ctx: usize,
}

/// What became of a taken token.
enum Taken {
    /// The job ends here, its text (if any) sent.
    Ended(FinishReason),
    /// Its text is to be sent after the next decode is launched.
    Deferred,
    Emitted,
}

/// Take `token` for `job`: send its log probability if asked for, move the
/// job on, and send its text, unless `defer` and the job goes on.
fn take(
    model: &LlamaModel,
    ctx: &LlamaContext<'_>,
    job: &mut Active,
    token: LlamaToken,
    at: Position,
    defer: bool,
) -> Taken {
    let eog = model.vocab().is_eog(token) && !job.request.ignore_eos;
    if let (Some(top), false) = (job.request.logprobs, eog) {
        let logits = ctx.get_logits_ith(at.index);
        job.sink
            .send(Event::Logprob(sampler::logprobs(model, logits, token, top)));
    }
    let end = match job.sampled(token, eog, at.kv_len, at.n_ctx) {
        Some(reason) if eog => Some(reason),
        Some(reason) => Some(emit(model, job, token).unwrap_or(reason)),
        None if defer => return Taken::Deferred,
        None => emit(model, job, token),
    };
    end.map_or(Taken::Emitted, Taken::Ended)
}

/// Detokenize and send one token's text; `Some` when that ends the job.
fn emit(model: &LlamaModel, job: &mut Active, token: LlamaToken) -> Option<FinishReason> {
    let piece = model.vocab().token_to_piece(token, false, None);
    job.output.emit(&job.sink, &piece)
}

/// A seed for a request that gives none: the clock's nanoseconds, mixed
/// with the job's number.
fn random_seed(serial: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ serial.rotate_left(32)
}

fn finish(slot: &mut Slot, reason: FinishReason, clock: u64) {
    if let Some(job) = slot.job.take() {
        job.finish(reason);
    }
    slot.last_used = clock;
}

fn add(
    batch: &mut LlamaBatch<'static>,
    token: LlamaToken,
    pos: usize,
    seq: i32,
    logits: bool,
) -> Result<(), EngineError> {
    batch
        .add(token, pos as i32, &[seq], logits)
        .map_err(|e| EngineError::Decode(e.to_string()))
}
