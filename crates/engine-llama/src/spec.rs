//! Speculative decoding on llama.cpp: each request's drafting state, the
//! draft model's side of the decode thread, prompt lookup, and the checks
//! made at load (the draft's vocabulary against the target's; how many
//! tokens one decode may hold while each is computed exactly as alone).
//!
//! The decisions (draft lengths, rests, judging sampled tokens) are
//! `shelf_engine::speculate`'s; the loop that drafts, verifies and rolls
//! back is `decode.rs`'s. Nothing here knows HTTP or processes.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::speculate::{self, Costs, Edits, Runs, Source, Tuner, Uniform};
use shelf_engine::{GenerateRequest, SpeculativeConfig, Token};

use crate::sampler;

/// Prompt lookup matches as many of the last tokens as repeat, up to 16
/// (enough to tell copying from chance), and at least 2: one token repeats
/// too often by chance to be worth verifying.
const LOOKUP_LONGEST: usize = 16;
const LOOKUP_SHORTEST: usize = 2;

/// The draft model's side of a decode thread: its own context, with one
/// sequence per slot of the target.
pub struct DraftSide<'m> {
    pub ctx: LlamaContext<'m>,
    pub batch: LlamaBatch<'static>,
}

/// A request's speculative decoding.
pub struct JobSpec {
    pub ngram: bool,
    /// The draft model may draft for it.
    pub model: bool,
    /// Most tokens drafted in one step.
    pub max: usize,
    /// Greedy and held to plain decode's answer: drafts stay within the
    /// backend's exact batch size, and only when it has the batch alone.
    pub exact: bool,
    /// `None`: always draft `max` (not adaptive).
    pub tuner: Option<Tuner>,
    /// Where steps keep one shape: whether this request is in a run of
    /// drafting steps (with a tuner; without one it always drafts).
    pub runs: Runs,
    /// For temperature above 0: the distributions speculative sampling
    /// compares.
    pub sampled: Option<Sampled>,
    pub drafted: u32,
    pub accepted: u32,
    /// Text the answer is expected to repeat, searched by lookup first.
    pub prediction: Vec<LlamaToken>,
    /// Edits the answer made to text it copies, made again in lookup drafts.
    pub edits: Edits,
}

/// What speculative sampling needs beyond the plain sampler.
pub struct Sampled {
    /// The target's chain before its final pick.
    pub filter: LlamaSampler,
    /// The same for the draft (without penalties, which need a history).
    pub draft_filter: LlamaSampler,
    pub uniform: Uniform,
}

/// The context a request's speculation is set up in.
pub struct Context<'a> {
    pub config: &'a SpeculativeConfig,
    pub has_draft: bool,
    pub exact: Envelope,
    pub n_ctx: u32,
    pub costs: &'a Costs,
    /// A seed for requests that give none.
    pub seed: u64,
}

impl JobSpec {
    /// `None` when the request does not speculate: it turned speculation
    /// off, no source is available, or exactness leaves no room to draft.
    pub fn new(
        at: &Context<'_>,
        model: &LlamaModel,
        request: &GenerateRequest,
        prompt: &[LlamaToken],
    ) -> Option<Self> {
        let asked = request.speculative;
        let max = asked
            .max_draft
            .unwrap_or(at.config.max_draft)
            .min(SpeculativeConfig::MAX_DRAFT) as usize;
        // A prediction is only of use to lookup: it turns lookup on.
        let predicted = !request.prediction.is_empty();
        let ngram = asked.ngram.unwrap_or(at.config.ngram || predicted);
        let use_model = at.has_draft && asked.draft.unwrap_or(true);
        let params = &request.sampling;
        let exact = params.is_greedy() && asked.exact.unwrap_or(at.config.exact);
        if max == 0 || !(ngram || use_model) || (exact && at.exact.rows < 2) {
            return None;
        }
        let sampled = (!params.is_greedy()).then(|| {
            let mut filter = sampler::filter(model, params, at.n_ctx, true);
            if sampler::has_penalties(params) {
                filter.accept_many(prompt);
            }
            let seed = params.seed.map_or(at.seed, u64::from);
            Sampled {
                filter,
                draft_filter: sampler::filter(model, params, at.n_ctx, false),
                uniform: Uniform::new(seed),
            }
        });
        Some(Self {
            ngram,
            model: use_model,
            max,
            exact,
            tuner: at.config.adaptive.then(|| Tuner::new(at.costs)),
            runs: Runs::default(),
            sampled,
            drafted: 0,
            accepted: 0,
            prediction: request.prediction.iter().map(|t| LlamaToken(t.0)).collect(),
            edits: Edits::default(),
        })
    }
}

/// Tokens proposed for one slot this step.
pub struct Proposal {
    pub source: Source,
    pub tokens: Vec<LlamaToken>,
    /// For a sampled draft model's tokens, the distribution each was drawn
    /// from; empty for deterministic drafts (lookup, or greedy arg-max).
    pub q: Vec<Vec<(Token, f32)>>,
    /// Of `tokens`, how many at the end only pad the draft to a steady
    /// length: not predictions, so not counted as drafted in usage.
    pub filler: usize,
    /// Made in a run of one batch shape ([`speculate::Runs`] judges it, not
    /// the tuner, whose acceptance would learn from padding).
    pub steady: bool,
}

/// The text prompt lookup searches: `prediction` (text the answer should
/// repeat), then `history` (the tokens so far), then `last`, the one not
/// yet decoded.
pub fn lookup_text(
    prediction: &[LlamaToken],
    history: &[LlamaToken],
    last: LlamaToken,
) -> Vec<Token> {
    prediction
        .iter()
        .chain(history)
        .chain(std::iter::once(&last))
        .map(|t| Token(t.0))
        .collect()
}

/// What followed the longest (then latest) earlier repeat of `text`'s last
/// tokens, with the request's learnt `edits` made; how many it matched;
/// and whether it copies the first `given` tokens of `text` (the
/// request's own).
pub fn lookup(
    text: &[Token],
    given: usize,
    max: usize,
    edits: &mut Edits,
) -> (Vec<LlamaToken>, usize, bool) {
    let found = speculate::ngram_draft(text, LOOKUP_SHORTEST, LOOKUP_LONGEST, max);
    let tokens = edits.draft(text, &found, max);
    (
        tokens.into_iter().map(|t| LlamaToken(t.0)).collect(),
        found.matched,
        found.from < given,
    )
}

/// Where in a lookup `draft` its first end-of-generation token is (copied
/// from where an earlier turn ended).
pub fn end_of(model: &LlamaModel, draft: &[LlamaToken]) -> Option<usize> {
    draft.iter().position(|&t| model.vocab().is_eog(t))
}

/// Continue a lookup `draft` up to `max` tokens with weaker lookups
/// ([`speculate::ngram_extend`]) over the same `text`.
pub fn extend(text: &[Token], draft: &mut Vec<LlamaToken>, max: usize) {
    let mut tokens: Vec<Token> = draft.iter().map(|t| Token(t.0)).collect();
    speculate::ngram_extend(text, &mut tokens, LOOKUP_LONGEST, max);
    draft.extend(tokens[draft.len()..].iter().map(|t| LlamaToken(t.0)));
}

/// The longest start of `tokens` a grammar in its present state allows,
/// checked on a copy so the request's own grammar does not move.
pub fn allowed_prefix(grammar: &LlamaSampler, tokens: &mut Vec<LlamaToken>) {
    let mut copy = grammar.clone();
    let allowed = tokens
        .iter()
        .take_while(|&&t| {
            let ok = sampler::allows(&mut copy, t);
            if ok {
                copy.accept(t);
            }
            ok
        })
        .count();
    tokens.truncate(allowed);
}

/// Why a draft model cannot draft for a target.
pub fn check_vocab(target: &LlamaModel, draft: &LlamaModel) -> Result<(), String> {
    /// llama.cpp allows vocabularies this much apart (padding rows).
    const MAX_SIZE_DIFFERENCE: i32 = 128;
    let (tv, dv) = (target.vocab(), draft.vocab());
    if tv.vocab_type() != dv.vocab_type() {
        return Err(format!(
            "the draft's tokenizer is {:?} and the target's {:?}",
            dv.vocab_type(),
            tv.vocab_type()
        ));
    }
    let (tn, dn) = (tv.n_tokens(), dv.n_tokens());
    if (tn - dn).abs() > MAX_SIZE_DIFFERENCE {
        return Err(format!(
            "the draft's vocabulary has {dn} tokens and the target's {tn}"
        ));
    }
    let specials = [
        ("BOS", tv.bos(), dv.bos()),
        ("EOS", tv.eos(), dv.eos()),
        ("EOT", tv.eot(), dv.eot()),
    ];
    for (name, t, d) in specials {
        if t != d {
            return Err(format!(
                "the {name} token is {} in the target and {} in the draft",
                t.0, d.0
            ));
        }
    }
    if tv.should_add_bos() != dv.should_add_bos() {
        return Err("one model adds a BOS token to prompts and the other does not".into());
    }
    for id in 0..tn.min(dn) {
        let token = LlamaToken(id);
        let (a, b) = (tv.text(token), dv.text(token));
        if a != b || tv.is_eog(token) != dv.is_eog(token) {
            let show = |t: Option<&std::ffi::CStr>| {
                t.map_or_else(String::new, |t| {
                    t.to_string_lossy().escape_debug().to_string()
                })
            };
            return Err(format!(
                "token {id} is \"{}\" in the target and \"{}\" in the draft",
                show(a),
                show(b)
            ));
        }
    }
    Ok(())
}

/// Where a verification batch is computed bit for bit as its tokens would
/// be decoded one at a time, so greedy answers stay plain decode's.
///
/// Backends pick kernels by batch size and KV length, and the kernels
/// round differently: enough to flip a greedy near tie. llama.cpp's CPU
/// runs repacked quants through a matrix-vector kernel below 4 rows and a
/// matrix-matrix one from 4, and a lone query row's attention over 512 or
/// more KV cells (used cells are padded to 256) is split across threads and
/// reduced, while several rows' is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Most tokens in one decode (1: speculation cannot be exact).
    pub rows: usize,
    /// Every token's position must be below this, if anything.
    pub below: Option<usize>,
}

impl Envelope {
    pub const NONE: Self = Self {
        rows: 1,
        below: Some(0),
    };

    /// Most tokens to draft after a pending token at `position`.
    pub fn drafts_at(&self, position: usize) -> usize {
        let by_rows = self.rows.saturating_sub(1);
        match self.below {
            Some(limit) => by_rows.min(limit.saturating_sub(position + 1)),
            None => by_rows,
        }
    }
}

/// KV cells are padded to this many: kernels may change where it steps.
const KV_STEP: usize = 256;

/// Measure the envelope on sequence 0, then empty it: up to `max` rows
/// after a short prefix, then the same rows past the first KV step.
pub fn exact_envelope(ctx: &mut LlamaContext<'_>, n_vocab: i32, max: usize) -> Envelope {
    let token = |i: usize| probe_token(i, n_vocab);
    let short = exact_rows(ctx, &token, 4, max).unwrap_or(1);
    let envelope = match short {
        0 | 1 => Envelope::NONE,
        rows => match exact_rows(ctx, &token, KV_STEP + 2, rows).unwrap_or(1) {
            long if long >= rows => Envelope { rows, below: None },
            _ => Envelope {
                rows,
                below: Some(KV_STEP),
            },
        },
    };
    let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
    envelope
}

/// The `i`th token of the made-up text load-time probes decode: spread over
/// the vocabulary, the same on every run.
fn probe_token(i: usize, n_vocab: i32) -> LlamaToken {
    LlamaToken((1000 + 37 * i as i32).rem_euclid(n_vocab.max(1)))
}

/// Seconds a decode of each of `sizes` tokens takes (every row asking for
/// logits, as verification does), the least of `reps` tries, after a short
/// prefix; measured once at load so drafting is priced from the first
/// request, and lengths the tuner would never try unmeasured (a CPU's
/// matrix kernels take 16 rows for less than 13) are known. Sizes past
/// `n_batch` (llama.cpp aborts on those) or the slot's window are skipped.
pub fn step_costs(
    ctx: &mut LlamaContext<'_>,
    n_vocab: i32,
    (n_batch, n_ctx_slot): (usize, usize),
    sizes: &[usize],
    reps: usize,
) -> Vec<(usize, f64)> {
    let prefix = 64.min(n_batch).min(n_ctx_slot / 2);
    let token = |i: usize| probe_token(i, n_vocab);
    let fits = |rows: usize| rows <= n_batch && prefix + rows <= n_ctx_slot;
    let most = sizes
        .iter()
        .copied()
        .filter(|&r| fits(r))
        .max()
        .unwrap_or(1);
    let mut batch = LlamaBatch::new(prefix.max(most), 1);
    let mut costs = Vec::with_capacity(sizes.len());
    let prefilled = prefix > 0
        && (0..prefix).all(|i| batch.add(token(i), i as i32, &[0], false).is_ok())
        && ctx.decode(&mut batch).is_ok();
    if prefilled {
        for &rows in sizes.iter().filter(|&&r| fits(r)) {
            let least = (0..reps.max(1))
                .filter_map(|_| timed_decode(ctx, &mut batch, &token, prefix, rows))
                .reduce(f64::min);
            if let Some(seconds) = least {
                costs.push((rows, seconds));
            }
        }
    }
    let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
    costs
}

/// One decode of `rows` tokens after `prefix`, timed, then cut back off.
fn timed_decode(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    token: &dyn Fn(usize) -> LlamaToken,
    prefix: usize,
    rows: usize,
) -> Option<f64> {
    batch.clear();
    for j in 0..rows {
        let at = prefix + j;
        batch.add(token(at), at as i32, &[0], true).ok()?;
    }
    let started = std::time::Instant::now();
    ctx.decode(batch).ok()?;
    let _ = ctx.get_logits_ith(rows as i32 - 1);
    let seconds = started.elapsed().as_secs_f64();
    ctx.clear_kv_cache_seq(Some(0), Some(prefix as u32), None)
        .ok()?;
    Some(seconds)
}

/// The most tokens (up to `max`) one decode may hold after `prefix` tokens
/// while each comes out as it does decoded alone; 1 if none.
fn exact_rows(
    ctx: &mut LlamaContext<'_>,
    token: &dyn Fn(usize) -> LlamaToken,
    prefix: usize,
    max: usize,
) -> Option<usize> {
    ctx.clear_kv_cache_seq(Some(0), None, None).ok()?;
    let mut batch = LlamaBatch::new(prefix.max(max), 1);
    for i in 0..prefix {
        batch.add(token(i), i as i32, &[0], false).ok()?;
    }
    ctx.decode(&mut batch).ok()?;
    let mut alone = Vec::with_capacity(max);
    for j in 0..max {
        batch.clear();
        batch
            .add(token(prefix + j), (prefix + j) as i32, &[0], true)
            .ok()?;
        ctx.decode(&mut batch).ok()?;
        alone.push(ctx.get_logits_ith(0).to_vec());
    }
    for n in 2..=max {
        ctx.clear_kv_cache_seq(Some(0), Some(prefix as u32), None)
            .ok()?;
        batch.clear();
        for j in 0..n {
            batch
                .add(token(prefix + j), (prefix + j) as i32, &[0], true)
                .ok()?;
        }
        ctx.decode(&mut batch).ok()?;
        let same = (0..n).all(|j| {
            let row = ctx.get_logits_ith(j as i32);
            row.len() == alone[j].len()
                && row
                    .iter()
                    .zip(&alone[j])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        });
        if !same {
            return Some(n - 1);
        }
    }
    Some(max)
}
