//! A step's speculation: propose tokens for each generating slot (prompt
//! lookup, or the draft model decoding on this thread, all drafting slots
//! in one draft batch per round), then verify a slot's drafted tokens
//! from the target's logits at their batch positions, keep what the
//! target agrees with, emit it as plain decode would, and cut both KV
//! caches back to what was kept.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::speculate::{self, Draft, Judged, Offer, Prices, Source};
use shelf_engine::{EngineError, Token};

use super::{add, finish, pick, take, Logits, Loop, Position, Taken};
use crate::prefix;
use crate::sampler;
use crate::slot::Active;
use crate::spec::{self, JobSpec, Proposal};

/// Most tokens a padded draft holds: with the pending token, 8 rows, the
/// most ggml-cuda's small-batch kernels (MMVQ) take. Measured on an H100
/// with SmolLM2 (medians): a settled 8-row step costs about 1.5 plain steps, a
/// settled 33-row one 3.8 (MMQ), and a step of a new shape 2.9 or more.
const STEADY_MOST: usize = 7;

/// What a slot drafts this step.
enum Wanted {
    /// Tokens found by lookup.
    Lookup(Proposal),
    /// At most this many tokens from the draft model.
    Model(usize),
}

/// A lookup draft of `tokens`, the last `filler` of them only padding.
fn looked_up(source: Source, tokens: Vec<LlamaToken>, filler: usize, steady: bool) -> Wanted {
    Wanted::Lookup(Proposal {
        source,
        tokens,
        q: Vec::new(),
        filler,
        steady,
    })
}

/// A slot drafting from the draft model this step.
struct Drafting {
    slot: usize,
    /// Most tokens to draft.
    budget: usize,
    /// Tokens to decode in the draft's next round (the first round also
    /// catches the draft's sequence up with the text).
    feed: Vec<LlamaToken>,
    tokens: Vec<LlamaToken>,
    q: Vec<Vec<(Token, f32)>>,
    /// Product of the draft's probabilities for its tokens so far.
    confidence: f64,
    /// A copy of the request's grammar, moved along the drafted tokens.
    grammar: Option<LlamaSampler>,
    done: bool,
}

impl Loop<'_> {
    /// The drafted tokens of each generating slot that speculates this step.
    pub(super) fn propose(&mut self) -> Vec<(usize, Proposal)> {
        let foreground = super::has_foreground(&self.slots);
        let in_turn = |j: &Active| !(foreground && j.request.background);
        // A prompt being read is real work: drafting waits until it is in,
        // so guesses never hold back a newcomer's first token. (On a
        // 2-core CPU, steps reading a prompt beside drafts took 316–327 ms
        // on average, 248–279 ms without; docs/benchmarks.md.)
        if self
            .slots
            .iter()
            .any(|s| s.job.as_ref().is_some_and(|j| j.prefilling() && in_turn(j)))
        {
            return Vec::new();
        }
        let generating: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .job
                    .as_ref()
                    .is_some_and(|j| j.pending.is_some() && in_turn(j))
            })
            .collect();
        // Plain decode pays nothing for speculation being possible.
        let speculating = generating
            .iter()
            .any(|&i| self.slots[i].job.as_ref().is_some_and(|j| j.spec.is_some()));
        if !speculating {
            return Vec::new();
        }
        let rows = generating.len();
        let mut room = self.setup.n_batch.saturating_sub(rows);
        let prices = self.costs.prices(rows, rows);
        let alone = rows == 1;
        let mut proposals = Vec::new();
        let mut wanted = Vec::new();
        // Tokens the slots planned so far put in the batch: each later
        // slot's draft is priced on top of them.
        let mut committed = 0;
        for i in generating {
            let beside = match committed {
                0 => std::borrow::Cow::Borrowed(&prices),
                _ => std::borrow::Cow::Owned(self.costs.prices_beside(rows, committed, rows)),
            };
            let tokens = match self.plan(i, room, (alone, rows), &beside) {
                Some(Wanted::Model(tokens)) => {
                    wanted.push((i, tokens));
                    tokens
                }
                Some(Wanted::Lookup(proposal)) => {
                    let tokens = proposal.tokens.len();
                    proposals.push((i, proposal));
                    tokens
                }
                None => 0,
            };
            room = room.saturating_sub(tokens);
            committed += tokens;
        }
        if !wanted.is_empty() {
            proposals.extend(self.draft_with_model(wanted, &prices));
        }
        proposals.retain(|(_, p)| !p.tokens.is_empty());
        proposals
    }

    /// What slot `i` drafts this step, within `room` batch places, in a
    /// step of `rows` generating slots (`alone`: one, and no prompt).
    fn plan(
        &mut self,
        i: usize,
        room: usize,
        (alone, rows): (bool, usize),
        prices: &Prices,
    ) -> Option<Wanted> {
        let n_ctx = self.setup.n_ctx_slot as usize;
        let exact = self.exact;
        let slot = &mut self.slots[i];
        let job = slot.job.as_mut()?;
        let pending = job.pending?;
        let spec = job.spec.as_mut()?;
        // Where a new shape costs several steps, lookup drafts are padded
        // out to one length and made in runs, so a speculating request's
        // steps keep one shape ([`steady_draft`]). Only for a request
        // generating alone: padded drafts of several would take the batch
        // past the small-batch kernels. (Not beside a draft model, whose
        // drafts end where its confidence does.)
        let steady =
            self.setup.steady_shapes && alone && spec.ngram && !spec.model && job.grammar.is_none();
        // Beside other requests on such a backend, lookup drafts change the
        // batch's shape nearly every step, and the tuner sees only settled
        // steps' costs: on an H100 with four streams lookup drafting ran at
        // 0.92x plain decode (docs/benchmarks.md), so these decode plainly.
        if self.setup.steady_shapes && !alone && !spec.model {
            return None;
        }
        let left = match (job.request.max_tokens, steady) {
            (Some(most), false) => most.saturating_sub(job.output.produced) as usize,
            _ => usize::MAX,
        };
        // Drafts end before the window does, and are worth nothing past
        // the answer's last token (unless they keep the shape).
        let mut max = spec
            .max
            .min(room)
            .min(n_ctx.saturating_sub(slot.cached.len() + 2))
            .min(left.saturating_sub(1));
        if steady {
            max = max.min(STEADY_MOST);
        }
        if spec.exact {
            // Exact answers need the batch alone, within the exact size.
            if !alone {
                return None;
            }
            max = max.min(exact.drafts_at(slot.cached.len()));
        }
        if max == 0 {
            return None;
        }
        // Lookup finds nothing in an empty text.
        let text = match spec.ngram {
            true => spec::lookup_text(&spec.prediction, &slot.cached, pending),
            false => Vec::new(),
        };
        // The request's own text: what it predicted, then its prompt.
        let given = spec.prediction.len() + job.prompt.len();
        let (mut looked, matched, given) = spec::lookup(&text, given, max, &mut spec.edits);
        if let Some(grammar) = job.grammar.as_ref() {
            spec::allowed_prefix(grammar, &mut looked);
        }
        // Where lookup copies the end of an earlier turn, the answer ends
        // there if the rest is kept: the row before the end predicts it,
        // and no row from it on can be kept.
        let end = match job.request.ignore_eos {
            false => spec::end_of(self.model, &looked),
            true => None,
        };
        if let Some(end) = end {
            looked.truncate(end);
        }
        if steady {
            return steady_draft(spec, &text, looked, (matched, pending), max);
        }
        // The draft model drafts only once its cache has caught up.
        let prices = match spec.model {
            true => {
                let behind =
                    slot.cached.len() + 1 - prefix::common_prefix(&slot.draft_cached, &slot.cached);
                let mut prices = prices.clone();
                prices.catch_up = self.costs.catch_up(rows, behind);
                std::borrow::Cow::Owned(prices)
            }
            false => std::borrow::Cow::Borrowed(prices),
        };
        let draft = match spec.tuner.as_mut() {
            Some(tuner) => tuner.plan(
                job.output.produced,
                &prices,
                Offer {
                    tokens: looked.len(),
                    matched,
                    given,
                },
                spec.model,
                max,
            ),
            None if !looked.is_empty() => Some(Draft {
                source: Source::Ngram,
                tokens: looked.len(),
            }),
            None if spec.model => Some(Draft {
                source: Source::Model,
                tokens: max,
            }),
            None => None,
        }?;
        Some(match draft.source {
            Source::Model => Wanted::Model(draft.tokens),
            lookup => {
                // The tuner may ask for more than lookup found, where a
                // longer draft costs no more to verify.
                looked.truncate(draft.tokens);
                spec::extend(&text, &mut looked, draft.tokens);
                if let Some(grammar) = job.grammar.as_ref() {
                    spec::allowed_prefix(grammar, &mut looked);
                }
                looked.truncate(prices.up_to_end(end, looked.len()));
                looked_up(lookup, looked, 0, false)
            }
        })
    }

    /// Draft with the draft model for each `(slot, most tokens)`: catch each
    /// slot's draft sequence up with its text, then one draft decode per
    /// round for all of them until each has its tokens.
    fn draft_with_model(
        &mut self,
        wanted: Vec<(usize, usize)>,
        prices: &Prices,
    ) -> Vec<(usize, Proposal)> {
        let Some(draft) = self.draft.as_mut() else {
            return Vec::new();
        };
        let mut drafting: Vec<Drafting> = wanted
            .into_iter()
            .filter_map(|(i, budget)| {
                let slot = &mut self.slots[i];
                let job = slot.job.as_ref()?;
                let mut text = slot.cached.clone();
                text.push(job.pending?);
                // Keep what the draft's sequence shares with the text, less
                // the last token: its logits are needed.
                let keep = prefix::common_prefix(&slot.draft_cached, &text).min(text.len() - 1);
                let _ =
                    draft
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq as u32), Some(keep as u32), None);
                slot.draft_cached.truncate(keep);
                Some(Drafting {
                    slot: i,
                    budget,
                    feed: text.split_off(keep),
                    tokens: Vec::new(),
                    q: Vec::new(),
                    confidence: 1.0,
                    grammar: job.grammar.clone(),
                    done: false,
                })
            })
            .collect();
        let n_batch = self.setup.n_batch;
        while drafting.iter().any(|d| !d.done) {
            draft.batch.clear();
            let mut outputs = Vec::new();
            for (d, one) in drafting.iter_mut().enumerate().filter(|(_, d)| !d.done) {
                let slot = &mut self.slots[one.slot];
                let room = n_batch.saturating_sub(draft.batch.n_tokens() as usize);
                let take = one.feed.len().min(room);
                let chunk: Vec<LlamaToken> = one.feed.drain(..take).collect();
                let caught_up = one.feed.is_empty();
                for (k, token) in chunk.into_iter().enumerate() {
                    let logits = caught_up && k + 1 == take;
                    if add(
                        &mut draft.batch,
                        token,
                        slot.draft_cached.len(),
                        slot.seq,
                        logits,
                    )
                    .is_err()
                    {
                        one.done = true;
                        break;
                    }
                    slot.draft_cached.push(token);
                    if logits {
                        outputs.push((d, draft.batch.n_tokens() - 1));
                    }
                }
            }
            if draft.batch.n_tokens() == 0 {
                break;
            }
            let started = Instant::now();
            if let Err(error) = draft.ctx.decode(&mut draft.batch) {
                tracing::warn!(%error, "the draft model's decode failed; drafting stops");
                for one in &drafting {
                    let slot = &mut self.slots[one.slot];
                    let _ = draft
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                    slot.draft_cached.clear();
                }
                return Vec::new();
            }
            for (d, index) in outputs {
                let one = &mut drafting[d];
                let job = self.slots[one.slot].job.as_mut();
                let Some(job) = job else {
                    one.done = true;
                    continue;
                };
                pick_draft(&draft.ctx, index, job, one);
                let tuner = job.spec.as_ref().and_then(|s| s.tuner.as_ref());
                let more =
                    tuner.is_none_or(|t| t.draft_more(one.confidence, prices, one.tokens.len()));
                if one.done || one.tokens.len() >= one.budget || !more {
                    one.done = true;
                } else if let Some(&last) = one.tokens.last() {
                    one.feed.push(last);
                }
            }
            let tokens = draft.batch.n_tokens() as usize;
            self.costs
                .draft
                .record(tokens, started.elapsed().as_secs_f64());
        }
        drafting
            .into_iter()
            .map(|one| {
                let proposal = Proposal {
                    source: Source::Model,
                    tokens: one.tokens,
                    q: one.q,
                    filler: 0,
                    steady: false,
                };
                (one.slot, proposal)
            })
            .collect()
    }

    /// Judge slot `out.slot`'s drafted tokens, emit what is kept and the
    /// target's own next token, and cut the caches back.
    pub(super) fn verify(&mut self, out: &Logits, proposal: &Proposal) {
        let n_ctx = self.setup.n_ctx_slot as usize;
        let slot = &mut self.slots[out.slot];
        let Some(job) = slot.job.as_mut().filter(|j| j.serial == out.serial) else {
            return;
        };
        let drafted = proposal.tokens.len();
        // Position of the pending token: the drafted ones follow it.
        let base = slot.cached.len() - 1 - drafted;
        let (kept, next) = match decide(&self.ctx, job, out.index, proposal) {
            Ok(decided) => decided,
            Err(error) => {
                if let Some(job) = slot.job.take() {
                    job.fail(error);
                }
                slot.last_used = self.clock;
                return;
            }
        };
        let held = base + kept + 1;
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot.seq as u32), Some(held as u32), None);
        slot.cached.truncate(held);
        if let Some(draft) = self.draft.as_mut() {
            let shared = prefix::common_prefix(&slot.draft_cached, &slot.cached);
            let _ = draft
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), Some(shared as u32), None);
            slot.draft_cached.truncate(shared);
        }
        tracing::trace!(source = ?proposal.source, drafted, kept, "verified");
        if let Some(spec) = job.spec.as_mut() {
            // Usage counts predictions, not padding.
            let predicted = drafted - proposal.filler;
            spec.drafted += predicted as u32;
            spec.accepted += kept.min(predicted) as u32;
            if proposal.source != Source::Model {
                spec.edits.verified(kept);
            }
            if proposal.steady {
                spec.runs.record(kept);
            } else if let Some(tuner) = spec.tuner.as_mut() {
                tuner.record(proposal.source, drafted, kept, &mut self.costs);
            }
        }
        let emitted = proposal.tokens[..kept].iter().copied().chain([next]);
        for (i, token) in emitted.enumerate() {
            let at = Position {
                index: out.index + i as i32,
                kv_len: base + i + 1,
                n_ctx,
            };
            if let Taken::Ended(reason) = take(self.model, &self.ctx, job, token, at, false) {
                finish(slot, reason, self.clock);
                return;
            }
        }
    }
}

/// A lookup draft for a request whose steps keep one shape: made in runs
/// ([`speculate::Runs`]; every step without a tuner), continued by weaker
/// lookups and then padded with the pending token out to `max` (the target
/// refuses padding at no extra cost: the step's shape is paid for either
/// way). `text` is what lookup searched; `found` is the lookup's match
/// length and the pending token.
fn steady_draft(
    spec: &mut JobSpec,
    text: &[Token],
    mut looked: Vec<LlamaToken>,
    found: (usize, LlamaToken),
    max: usize,
) -> Option<Wanted> {
    let (matched, pending) = found;
    let drafting = spec.tuner.is_none() || spec.runs.plan(matched, looked.len());
    if !drafting {
        return None;
    }
    spec::extend(text, &mut looked, max);
    let source = match matched >= speculate::LONG_MATCH {
        true => Source::NgramLong,
        false => Source::Ngram,
    };
    let predicted = looked.len();
    looked.resize(max, pending);
    Some(looked_up(source, looked, max - predicted, true))
}

/// The draft model's next token for `one`, from its logits at `index`:
/// drawn from its distribution when the request samples, else its arg-max.
/// A token the grammar refuses ends the draft instead.
fn pick_draft(ctx: &LlamaContext<'_>, index: i32, job: &mut Active, one: &mut Drafting) {
    let sampled = job.spec.as_mut().and_then(|s| s.sampled.as_mut());
    let (token, p, q) = match sampled {
        Some(sampled) => {
            let q =
                sampler::distribution(ctx, index, one.grammar.as_mut(), &mut sampled.draft_filter);
            let Some(token) = speculate::draw(&q, sampled.uniform.draw()) else {
                one.done = true;
                return;
            };
            let p = q.iter().find(|(t, _)| *t == token).map_or(0.0, |(_, p)| *p);
            (LlamaToken(token.0), p, q)
        }
        None => {
            let (token, p) = sampler::confident_arg_max(ctx.get_logits_ith(index));
            (LlamaToken(token), p, Vec::new())
        }
    };
    if let Some(grammar) = one.grammar.as_mut() {
        if !sampler::allows(grammar, token) {
            one.done = true;
            return;
        }
        grammar.accept(token);
    }
    one.tokens.push(token);
    one.q.push(q);
    one.confidence *= f64::from(p);
}

/// How many of `proposal`'s tokens the target keeps, and its own token
/// after them, from its logits at `index` and the following indices.
///
/// Greedy requests take at each position exactly the token plain decode
/// would (the arg-max, or the grammar's or penalties' choice) and keep a
/// drafted token while it matches. Sampling requests judge each drafted
/// token by speculative sampling against the distribution plain decode
/// would draw from.
fn decide(
    ctx: &LlamaContext<'_>,
    job: &mut Active,
    index: i32,
    proposal: &Proposal,
) -> Result<(usize, LlamaToken), EngineError> {
    let drafted = &proposal.tokens;
    if job.spec.as_ref().is_some_and(|s| s.sampled.is_some()) {
        return decide_sampled(ctx, job, index, proposal);
    }
    for i in 0..=drafted.len() {
        let token = pick(ctx, job, index + i as i32, None)?;
        if drafted.get(i) != Some(&token) {
            return Ok((i, token));
        }
    }
    // The last position always decides: no drafted token follows it.
    Err(EngineError::Decode(
        "verification ran past the draft".into(),
    ))
}

fn decide_sampled(
    ctx: &LlamaContext<'_>,
    job: &mut Active,
    index: i32,
    proposal: &Proposal,
) -> Result<(usize, LlamaToken), EngineError> {
    let refused = || EngineError::Decode("the output's grammar allows no token here".into());
    let Some(sampled) = job.spec.as_mut().and_then(|s| s.sampled.as_mut()) else {
        return Err(refused());
    };
    let mut uniform = || sampled.uniform.draw();
    for i in 0..=proposal.tokens.len() {
        let p = sampler::distribution(
            ctx,
            index + i as i32,
            job.grammar.as_mut(),
            &mut sampled.filter,
        );
        let judged = match proposal.tokens.get(i) {
            Some(&drafted) => {
                let q = proposal.q.get(i).filter(|q| !q.is_empty());
                speculate::judge(Token(drafted.0), &p, q.map(Vec::as_slice), &mut uniform)
            }
            None => speculate::draw(&p, uniform()).map(Judged::Replaced),
        };
        let (token, kept) = match judged.ok_or_else(refused)? {
            Judged::Kept => (proposal.tokens[i], true),
            Judged::Replaced(t) => (LlamaToken(t.0), false),
        };
        // Every emitted token moves the grammar and the penalties' history.
        if let Some(grammar) = job.grammar.as_mut() {
            grammar.accept(token);
        }
        sampled.filter.accept(token);
        if let Some(chain) = job.sampler.as_mut() {
            chain.accept(token);
        }
        if !kept {
            return Ok((i, token));
        }
    }
    Err(EngineError::Decode(
        "verification ran past the draft".into(),
    ))
}
